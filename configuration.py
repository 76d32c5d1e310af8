"""Dataset metadata (one table, used everywhere) and the typed configuration of every run.

* `DATASETS`: point count, flip pairs, normalisers, splits and test subsets of 300W, COFW and WFLW
  (METHOD.md section 7). `dataset_info(name)` is the only way the rest of the code reads it; a
  custom dataset registers its own entry from a JSON spec (see `register_custom_dataset`).
* `LOSS_PRESETS`: the two sets of KD-Loss constants (METHOD.md section 5); "code" is the default.
* `PrepareConfig`, `TrainConfig`: dataclasses with the published settings as defaults, overridable
  from the command line (`add_dataclass_args` / `dataclass_from_args`) and saved beside every run's
  outputs (`save_config`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent
DATA_DIR = REPO_ROOT / "data"
SYNTHETIC_DIR = DATA_DIR / "synthetic"    # embedded default data, in the official formats
PREPARED_DIR = DATA_DIR / "prepared"      # face crops written by `python data_util.py prepare`
MODELS_DIR = REPO_ROOT / "models"
RUNS_DIR = REPO_ROOT / "runs"             # one folder per training or evaluation run

# ----------------------------------------------------------------------------------------------
# Dataset metadata
# ----------------------------------------------------------------------------------------------


def _mirror_run(left: range, right: range):
    """Pairs (l, r) for two index runs that mirror each other in opposite order."""
    return list(zip(left, reversed(right)))


# 68 points (iBUG 300-W order).
_FLIP_68 = (
    _mirror_run(range(0, 8), range(9, 17))          # jaw 0-16 ... 7-9
    + _mirror_run(range(17, 22), range(22, 27))     # brows 17-26 ... 21-22
    + [(31, 35), (32, 34),                          # nostrils
       (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
       (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),            # outer lips
       (60, 64), (61, 63), (65, 67)]                                # inner lips
)

# 98 points (WFLW order). METHOD.md's corrected table: 8-24 and 9-23 are both swapped.
_FLIP_98 = (
    _mirror_run(range(0, 16), range(17, 33))        # jaw 0-32 ... 15-17
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42),            # upper brows
       (38, 50), (39, 49), (40, 48), (41, 47),                      # lower brows
       (55, 59), (56, 58),                                          # nostrils
       (60, 72), (61, 71), (62, 70), (63, 69), (64, 68),            # eye contours
       (65, 75), (66, 74), (67, 73),
       (76, 82), (77, 81), (78, 80), (83, 87), (84, 86),            # outer lips
       (88, 92), (89, 91), (93, 95),                                # inner lips
       (96, 97)]                                                    # pupils
)

# 29 points (COFW order).
_FLIP_29 = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17),
            (18, 19), (22, 23)]


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the code needs to know about one landmark layout and its benchmark protocol."""

    name: str
    num_points: int
    flip_pairs: tuple                  # ((i, j), ...) 0-based indices swapped after mirroring x
    interocular: tuple                 # ((indices of left point), (indices of right point))
    interpupil: tuple                  # same form; an eye centre is the mean of its indices
    train_splits: tuple                # reader-level source folders / files that form "train"
    test_subsets: dict                 # subset name -> how a prepared test sample is selected
    aug_copies: int                    # offline augmentation copies the paper used
    official_format: str
    download: str                      # where users obtain the official archive
    failure_thresholds: tuple = (0.1,)

    @property
    def flip_permutation(self) -> list:
        """Index permutation p such that mirrored_landmarks = landmarks[p] after x -> W-1-x."""
        perm = list(range(self.num_points))
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        return perm

    def normaliser(self, kind: str) -> tuple:
        if kind in ("interocular", "inter-ocular", "io"):
            return self.interocular
        if kind in ("interpupil", "inter-pupil", "ip"):
            return self.interpupil
        raise ConfigError(f"unknown normaliser {kind!r}; use 'interocular' or 'interpupil'")


# Test subsets: ("all",) takes every prepared test sample; ("subset", X) those whose `subset`
# field is X (300W: "common" or "challenging"); ("attribute", k) those with WFLW attribute flag k set.
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")

DATASETS: dict[str, DatasetInfo] = {
    "300w": DatasetInfo(
        name="300w", num_points=68, flip_pairs=tuple(_FLIP_68),
        interocular=((36,), (45,)),
        interpupil=(tuple(range(36, 42)), tuple(range(42, 48))),
        train_splits=("lfpw/trainset", "helen/trainset", "afw"),
        test_subsets={"common": ("subset", "common"), "challenging": ("subset", "challenging"),
                      "full": ("all",)},
        aug_copies=4, official_format="image + .pts per face in lfpw/, helen/, afw/, ibug/",
        download="https://ibug.doc.ic.ac.uk/resources/300-W/ (300-W 'indoor/outdoor' and the "
                 "LFPW, HELEN, AFW, iBUG folders with .pts)",
        failure_thresholds=(0.08, 0.1),
    ),
    "cofw": DatasetInfo(
        name="cofw", num_points=29, flip_pairs=tuple(_FLIP_29),
        interocular=((8,), (9,)), interpupil=((16,), (17,)),
        train_splits=("COFW_train_color.mat",),
        test_subsets={"full": ("all",)},
        aug_copies=10, official_format="COFW_train_color.mat / COFW_test_color.mat",
        download="https://data.caltech.edu/records/bc0bf-nc666 (COFW colour .mat files)",
    ),
    "wflw": DatasetInfo(
        name="wflw", num_points=98, flip_pairs=tuple(_FLIP_98),
        interocular=((60,), (72,)), interpupil=((96,), (97,)),
        train_splits=("list_98pt_rect_attr_train.txt",),
        test_subsets={"full": ("all",), **{a: ("attribute", a) for a in WFLW_ATTRIBUTES}},
        aug_copies=4,
        official_format="WFLW_annotations/list_98pt_rect_attr_train_test/"
                        "list_98pt_rect_attr_{train,test}.txt + WFLW_images/",
        download="https://wywu.github.io/projects/LAB/WFLW.html (WFLW_images.tar.gz, "
                 "WFLW_annotations.tar.gz)",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The metadata of a dataset by name (case-insensitive); one clear error for unknown names."""
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))} "
                          f"or register a custom one with --custom-spec FILE.json")
    return DATASETS[key]


def register_custom_dataset(spec_path) -> DatasetInfo:
    """Register a user's own landmark layout from a JSON spec (format in data/README.md).

    {"name": "mine", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]],
     "interocular": [[0], [1]], "interpupil": [[0], [1]],   # optional, defaults to interocular
     "train_list": "train.txt", "test_list": "test.txt"}
    """
    spec_path = Path(spec_path)
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{spec_path}: custom dataset spec not found; pass an existing JSON file") from None
    except IsADirectoryError:
        raise ConfigError(f"{spec_path}: is a folder; pass the dataset's JSON spec file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{spec_path}: not valid JSON ({err}); see data/README.md for the format") from None
    try:
        n = int(spec["num_points"])
        name = str(spec["name"]).lower()
        pairs = tuple((int(i), int(j)) for i, j in spec.get("flip_pairs", []))
        io = tuple(tuple(int(k) for k in g) for g in spec["interocular"])
        ip = tuple(tuple(int(k) for k in g) for g in spec.get("interpupil", spec["interocular"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{spec_path}: missing or invalid field {err}; needs name, num_points, "
                          f"interocular (flip_pairs, interpupil optional)") from None
    used = [k for pair in pairs for k in pair] + [k for g in io + ip for k in g]
    if n < 1 or any(k < 0 or k >= n for k in used) or len(io) != 2 or len(ip) != 2:
        raise ConfigError(f"{spec_path}: indices must lie in 0..{n - 1} and each normaliser needs "
                          f"two groups")
    flat = [k for pair in pairs for k in pair]
    if len(flat) != len(set(flat)):
        raise ConfigError(f"{spec_path}: a point appears in two flip pairs; each index may be "
                          f"swapped at most once")
    if name in DATASETS and DATASETS[name].official_format != "custom":
        raise ConfigError(f"{spec_path}: name {name!r} is a built-in dataset; choose another name")
    info = DatasetInfo(name=name, num_points=n, flip_pairs=pairs, interocular=io, interpupil=ip,
                       train_splits=(str(spec.get("train_list", "train.txt")),),
                       test_subsets={"full": ("all",)}, aug_copies=int(spec.get("aug_copies", 4)),
                       official_format="custom", download="(your own data)")
    DATASETS[name] = info
    return info


# ----------------------------------------------------------------------------------------------
# KD-Loss constants (METHOD.md section 5)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossConfig:
    beta: float
    alpha_tough: float
    alpha_tol: float
    alpha_neg_tough: float
    alpha_neg_tol: float
    low_region: str          # "zero" (code) or "ramp": 0 at G to alpha_neg at B (paper)
    main_slope: float        # c of the main loss core
    w_main: float
    w_tough: float
    w_tol: float


LOSS_PRESETS: dict[str, LossConfig] = {
    "code": LossConfig(beta=0.15, alpha_tough=1.9, alpha_tol=1.8, alpha_neg_tough=-0.45,
                       alpha_neg_tol=-0.40, low_region="zero", main_slope=3.0,
                       w_main=2.0, w_tough=1.0, w_tol=1.0),
    "paper": LossConfig(beta=0.4, alpha_tough=1.0, alpha_tol=1.0, alpha_neg_tough=-0.5,
                        alpha_neg_tol=-0.5, low_region="ramp", main_slope=1.0,
                        w_main=2.0, w_tough=1.0, w_tol=1.0),
}
DEFAULT_LOSS_PRESET = "code"


def loss_config(preset: str) -> LossConfig:
    if preset not in LOSS_PRESETS:
        raise ConfigError(f"unknown loss preset {preset!r}; choose one of {', '.join(LOSS_PRESETS)}")
    return LOSS_PRESETS[preset]


# ----------------------------------------------------------------------------------------------
# Run configuration
# ----------------------------------------------------------------------------------------------

MIN_INPUT_SIZE = 32   # the smallest input both backbones accept


@dataclass
class PrepareConfig:
    dataset: str = "300w"
    root: Optional[str] = None            # official dataset folder; None = embedded synthetic data
    input_size: int = 224
    box: str = "landmarks"                # "landmarks": square box around the GT points; "dataset": the file's box
    margin: float = 0.25                  # the square box side is (1 + margin) x the larger landmark extent
    custom_spec: Optional[str] = None     # JSON spec of a custom dataset (data/README.md)
    out_dir: Optional[str] = None         # default: data/prepared/<dataset>[-synthetic]-<input_size>

    def resolved_root(self) -> Path:
        return Path(self.root) if self.root else SYNTHETIC_DIR / self.dataset.lower()

    def resolved_out_dir(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        tag = "" if self.root else "-synthetic"
        return PREPARED_DIR / f"{self.dataset.lower()}{tag}-{self.input_size}"


@dataclass
class TrainConfig:
    dataset: str = "300w"
    root: Optional[str] = None            # as PrepareConfig.root
    prepared_dir: Optional[str] = None    # default: PrepareConfig(...).resolved_out_dir()
    input_size: int = 224
    batch_size: int = 70
    epochs: int = 150
    learning_rate: float = 1e-3
    lr_decay: float = 1e-4                # inverse-time decay per step: lr / (1 + decay * step)
    val_fraction: float = 0.05            # whole training faces held out for checkpoint selection
    seed: int = 0
    augment: str = "offline"              # "offline" (stored copies), "online" (tf.data), "none"
    aug_copies: Optional[int] = None      # default: the dataset's (4 for 300W/WFLW, 10 for COFW)
    width_multiplier: float = 1.0         # student MobileNetV2 alpha
    teacher_dropout: float = 0.5
    weights: Optional[str] = None         # None (from scratch, as published) or "imagenet"
    asm_variance: float = 0.90            # soft landmarks for the Tolerant teacher
    loss_preset: str = DEFAULT_LOSS_PRESET
    student_mode: str = "kd"              # "kd", "l2", "tough-only", "tolerant-only"
    cache_teacher_predictions: bool = True
    strategy: str = "default"             # "default", "mirrored", "multiworker"
    mixed_precision: bool = False         # GPUs only
    jit_compile: bool = False             # XLA: measured 3-4x slower on CPU, off by default
    deterministic: bool = True            # tf.config.experimental.enable_op_determinism
    custom_spec: Optional[str] = None
    run_dir: Optional[str] = None         # default: runs/<dataset>-<what>
    resume: bool = True
    max_faces: Optional[int] = None       # use only the first K training faces (quick runs, tests)
    bn_recalibration: int = 256           # training faces that re-estimate BatchNorm statistics at
                                          # each epoch end, before validation (0: off); see
                                          # cnn_model.recalibrate_batchnorm

    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(dataset=self.dataset, root=self.root, input_size=self.input_size,
                             custom_spec=self.custom_spec, out_dir=self.prepared_dir)

    def resolved_prepared_dir(self) -> Path:
        return self.prepare_config().resolved_out_dir()

    def validate(self) -> "TrainConfig":
        if self.input_size < MIN_INPUT_SIZE:
            raise ConfigError(f"--input-size {self.input_size} is too small; the backbones need at "
                              f"least {MIN_INPUT_SIZE} pixels")
        if self.augment not in ("offline", "online", "none"):
            raise ConfigError(f"--augment {self.augment!r}: choose offline, online or none")
        if self.student_mode not in ("kd", "l2", "tough-only", "tolerant-only"):
            raise ConfigError(f"--student-mode {self.student_mode!r}: choose kd, l2, tough-only "
                              f"or tolerant-only")
        if self.strategy not in ("default", "mirrored", "multiworker"):
            raise ConfigError(f"--strategy {self.strategy!r}: choose default, mirrored or multiworker")
        if not 0.0 < self.asm_variance <= 1.0:
            raise ConfigError(f"--asm-variance {self.asm_variance}: must lie in (0, 1]")
        if self.bn_recalibration < 0:
            raise ConfigError("--bn-recalibration must be >= 0 (0 turns it off)")
        if self.batch_size < 1 or self.epochs < 0:
            raise ConfigError("--batch-size must be >= 1 and --epochs >= 0")
        loss_config(self.loss_preset)
        dataset_info(self.dataset) if not self.custom_spec else None
        return self


# Reduced settings for a quick CPU run (demo.py and README); one flag (--preset paper) away from
# the published ones.
PRESETS: dict[str, dict] = {
    "paper": {},
    "quick": {"input_size": 96, "batch_size": 32, "epochs": 12},
}


# ----------------------------------------------------------------------------------------------
# Command line and persistence
# ----------------------------------------------------------------------------------------------


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """Add --field-name options for every field of a config dataclass (defaults come from cls)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        opt = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "bool":
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default: {default})")
        else:
            conv = int if kind in ("int", "Optional[int]") else float if kind in (
                "float", "Optional[float]") else str
            parser.add_argument(opt, dest=f.name, type=conv, default=None, help=f"(default: {default})")


def dataclass_from_args(cls, args: argparse.Namespace, base: Optional[dict] = None):
    """Build cls from its defaults, then `base` (a preset), then the options given on the command line."""
    values = dict(base or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown configuration keys {sorted(unknown)} for {cls.__name__}")
    for name in names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return cls(**values)


def load_config_file(path) -> dict:
    """Read a JSON experiment configuration (one per experiment, HRNet-style)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def save_config(config, run_dir, name: str = "config.json") -> Path:
    """Write the configuration a run used beside its outputs (atomically)."""
    from safe_io import atomic_write_json

    path = Path(run_dir) / name
    payload = {"type": type(config).__name__, **dataclasses.asdict(config)}
    atomic_write_json(path, payload)
    return path
