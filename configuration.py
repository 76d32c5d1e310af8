"""Dataset metadata (one table, used everywhere) and the typed configuration of every run.

* `DATASETS`: point count, flip pairs, normalisers, splits and test subsets of 300W, COFW and WFLW
  (METHOD.md section 7), read-only. `dataset_info(name)` is the only way the rest of the code reads
  it. A custom dataset is not added to it: its spec is read once, at the command-line edge
  (dataset_formats.read_custom_spec), into a `DatasetInfo` (`DatasetInfo.from_spec`) that is passed
  down as data (`dataset_info` hands a DatasetInfo back unchanged).
* `LOSS_PRESETS`: the two sets of KD-Loss constants (METHOD.md section 5); "code" is the default.
* `PrepareConfig`, `TrainConfig`: dataclasses with the published settings as defaults, overridable
  from the command line (`add_dataclass_args` / `dataclass_from_args`); `config_record` is what
  every run saves beside its outputs.

Pure: this module reads no file, writes none and keeps no state that changes (tests/test_configuration_pure.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional

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


def _whole(value, field: str) -> int:
    """A JSON whole number (68 or 68.0; not 68.9, "68" or true): 68.9 was read as 68."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not float(value).is_integer():
        raise ValueError(f"{field}: {value!r} is not a whole number")
    return int(value)


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
    aug_copies: int                    # augmented copies per training face besides its plain crop
    official_format: str
    download: str                      # where users obtain the official archive
    failure_thresholds: tuple = (0.1,)
    # Extra augmented copies of a face per hard-attribute flag it carries, on top of aug_copies
    # (WFLW's oversampling, METHOD.md section 6): ((attribute name in WFLW_ATTRIBUTES, copies), ...).
    attribute_copies: tuple = ()
    # A custom dataset's test list file (its train list is train_splits[0]); built-ins: ().
    test_splits: tuple = ()

    @classmethod
    def from_spec(cls, spec, source="custom spec") -> "DatasetInfo":
        """A user's own landmark layout from its parsed JSON spec (format in data/README.md); each
        error is one line starting with `source` (the spec file's path).

        {"name": "mine", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]],
         "interocular": [[0], [1]], "interpupil": [[0], [1]],   # optional, defaults to interocular
         "train_list": "train.txt", "test_list": "test.txt", "aug_copies": 3}
        """
        try:
            n = _whole(spec["num_points"], "num_points")
            name = str(spec["name"]).lower()
            pairs = tuple((_whole(i, "flip_pairs"), _whole(j, "flip_pairs"))
                          for i, j in spec.get("flip_pairs", []))
            io = tuple(tuple(_whole(k, "interocular") for k in g) for g in spec["interocular"])
            ip = tuple(tuple(_whole(k, "interpupil") for k in g)
                       for g in spec.get("interpupil", spec["interocular"]))
            lists = (str(spec.get("train_list", "train.txt")), str(spec.get("test_list", "test.txt")))
            copies = _whole(spec.get("aug_copies", 3), "aug_copies")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"{source}: missing or invalid field {err}; needs name, num_points, "
                              f"interocular (flip_pairs, interpupil optional)") from None
        used = [k for pair in pairs for k in pair] + [k for g in io + ip for k in g]
        if not 1 <= n <= MAX_POINTS:
            raise ConfigError(f"{source}: num_points {n} must lie in 1 .. {MAX_POINTS}")
        if any(k < 0 or k >= n for k in used) or len(io) != 2 or len(ip) != 2:
            raise ConfigError(f"{source}: indices must lie in 0..{n - 1} and each normaliser needs "
                              f"two groups")
        for what, groups in (("interocular", io), ("interpupil", ip)):
            if not groups[0] or not groups[1] or set(groups[0]) == set(groups[1]):
                raise ConfigError(f"{source}: {what} {[list(g) for g in groups]}: needs two different, "
                                  f"non-empty groups of points (the normaliser is the distance "
                                  f"between their means; the same group gives 0 and NME nan)")
        flat = [k for pair in pairs for k in pair]
        if len(flat) != len(set(flat)):
            raise ConfigError(f"{source}: a point appears in two flip pairs; each index may be "
                              f"swapped at most once")
        if name in DATASETS:
            raise ConfigError(f"{source}: name {name!r} is a built-in dataset; choose another name")
        return cls(name=name, num_points=n, flip_pairs=pairs, interocular=io, interpupil=ip,
                   train_splits=lists[:1], test_splits=lists[1:], test_subsets={"full": ("all",)},
                   aug_copies=copies, official_format="custom", download="(your own data)")

    def as_spec(self) -> dict:
        """The JSON spec of this layout: DatasetInfo.from_spec(info.as_spec()) == info for a custom
        dataset (prepare records it in the manifest, so the prepared data carry their own layout)."""
        return {"name": self.name, "num_points": self.num_points,
                "flip_pairs": [list(p) for p in self.flip_pairs],
                "interocular": [list(g) for g in self.interocular],
                "interpupil": [list(g) for g in self.interpupil],
                "train_list": self.train_splits[0] if self.train_splits else "train.txt",
                "test_list": self.test_splits[0] if self.test_splits else "test.txt",
                "aug_copies": self.aug_copies}

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

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({   # read-only: the built-in datasets only
    "300w": DatasetInfo(
        name="300w", num_points=68, flip_pairs=tuple(_FLIP_68),
        interocular=((36,), (45,)),
        interpupil=(tuple(range(36, 42)), tuple(range(42, 48))),
        train_splits=("lfpw/trainset", "helen/trainset", "afw"),
        test_subsets={"common": ("subset", "common"), "challenging": ("subset", "challenging"),
                      "full": ("all",)},
        aug_copies=3, official_format="image + .pts per face in lfpw/, helen/, afw/, ibug/",
        download="https://ibug.doc.ic.ac.uk/resources/300-W/ (300-W 'indoor/outdoor' and the "
                 "LFPW, HELEN, AFW, iBUG folders with .pts)",
        failure_thresholds=(0.08, 0.1),
    ),
    "cofw": DatasetInfo(
        name="cofw", num_points=29, flip_pairs=tuple(_FLIP_29),
        interocular=((8,), (9,)), interpupil=((16,), (17,)),
        train_splits=("COFW_train_color.mat",),
        test_subsets={"full": ("all",)},
        aug_copies=9, official_format="COFW_train_color.mat / COFW_test_color.mat",
        download="https://data.caltech.edu/records/bc0bf-nc666 (COFW colour .mat files)",
    ),
    "wflw": DatasetInfo(
        name="wflw", num_points=98, flip_pairs=tuple(_FLIP_98),
        interocular=((60,), (72,)), interpupil=((96,), (97,)),
        train_splits=("list_98pt_rect_attr_train.txt",),
        test_subsets={"full": ("all",), **{a: ("attribute", a) for a in WFLW_ATTRIBUTES}},
        aug_copies=3,
        attribute_copies=(("pose", 20), ("expression", 7), ("illumination", 2), ("makeup", 2),
                          ("occlusion", 8), ("blur", 2)),
        official_format="WFLW_annotations/list_98pt_rect_attr_train_test/"
                        "list_98pt_rect_attr_{train,test}.txt + WFLW_images/",
        download="https://wywu.github.io/projects/LAB/WFLW.html (WFLW_images.tar.gz, "
                 "WFLW_annotations.tar.gz)",
    ),
})


def dataset_info(name) -> DatasetInfo:
    """The metadata of a built-in dataset by name (case-insensitive); one clear error for unknown
    names. A DatasetInfo (a custom dataset read from its spec) is returned as it is."""
    if isinstance(name, DatasetInfo):
        return name
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))} "
                          f"or register a custom one with --custom-spec FILE.json")
    return DATASETS[key]


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

# Wing loss (the --student-mode wing baseline): Feng et al. (CVPR 2018) use w = 10 px and
# epsilon = 2 px on their 64 px CNN-6 input; in the crop-normalised units of this project (one unit
# is the crop side) that is 10/64 and 2/64, at any input size.
WING_WIDTH = 10 / 64
WING_CURVATURE = 2 / 64


def loss_config(preset: str) -> LossConfig:
    if preset not in LOSS_PRESETS:
        raise ConfigError(f"unknown loss preset {preset!r}; choose one of {', '.join(LOSS_PRESETS)}")
    return LOSS_PRESETS[preset]


# ----------------------------------------------------------------------------------------------
# Run configuration
# ----------------------------------------------------------------------------------------------

MIN_INPUT_SIZE = 32   # the smallest input both backbones accept
MAX_INPUT_SIZE = 1024  # crops above this only cost memory (a 1024 px crop is 3 MB per face)
TEACHER_STOCHASTIC_DEPTH = 0.2  # keras.applications EfficientNet's drop_connect_rate


def check_input_size(size: int, option: str = "--input-size") -> int:
    """`size` when it lies in MIN_INPUT_SIZE .. MAX_INPUT_SIZE, else ConfigError naming `option`
    (prepare, the trainers, the networks and demo.py all check it here)."""
    if int(size) < MIN_INPUT_SIZE:
        raise ConfigError(f"{option} {size} is too small; the backbones need at least "
                          f"{MIN_INPUT_SIZE} pixels")
    if int(size) > MAX_INPUT_SIZE:
        raise ConfigError(f"{option} {size} is too large; use at most {MAX_INPUT_SIZE} pixels "
                          f"(the published setting is 224)")
    return int(size)
MAX_POINTS = 1000      # landmarks per face a model may predict (the datasets have 29 to 98)


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
        tag = "" if self.root or self.custom_spec else "-synthetic"   # only the embedded data is synthetic
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
    lr_schedule: str = "inverse-time"     # "inverse-time" (published) or "cosine" (to 0 at the last epoch)
    val_fraction: float = 0.05            # whole training faces held out for checkpoint selection
    seed: int = 0
    augment: str = "offline"              # "offline" (stored copies), "online" (tf.data), "none"
    aug_copies: Optional[int] = None      # default: the dataset's (3 for 300W/WFLW, 9 for COFW)
    aug_jitter: bool = False              # the augmentation adds scale and shift jitter (AugmentConfig.jitter)
    width_multiplier: float = 1.0         # student MobileNetV2 alpha
    teacher_dropout: float = 0.5
    teacher_stochastic_depth: float = TEACHER_STOCHASTIC_DEPTH
    weights: Optional[str] = None         # None (from scratch, as published), "imagenet" or a .keras model
    asm_variance: float = 0.90            # soft landmarks for the Tolerant teacher
    asm_align: bool = False               # Procrustes-align before the ASM (METHOD.md 3.4's option)
    loss_preset: str = DEFAULT_LOSS_PRESET
    student_mode: str = "kd"              # kd_loss.MODES: "kd", "l2", "l1", "wing", "tough-only", "tolerant-only"
    cache_teacher_predictions: bool = True
    teacher_flip_test: bool = False       # teachers' predictions: mean over the crop and its mirror
    strategy: str = "default"             # "default", "mirrored", "multiworker"
    mixed_precision: bool = False         # GPUs only
    jit_compile: bool = False             # XLA: measured 3-4x slower on CPU, off by default
    deterministic: bool = True            # tf.config.experimental.enable_op_determinism
    custom_spec: Optional[str] = None
    run_dir: Optional[str] = None         # default: runs/<dataset>-<what>
    resume: bool = True
    max_faces: Optional[int] = None       # use only the first K training faces (quick runs, tests)
    bn_recalibration: int = 1024          # training crops that re-estimate BatchNorm statistics at
                                          # each epoch end, before validation (0: off); see
                                          # cnn_model.recalibrate_batchnorm
    freeze_batchnorm_epochs: int = 0      # the last K epochs with BatchNorm frozen (0: none)

    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(dataset=self.dataset, root=self.root, input_size=self.input_size,
                             custom_spec=self.custom_spec, out_dir=self.prepared_dir)

    def resolved_prepared_dir(self) -> Path:
        return self.prepare_config().resolved_out_dir()

    def validate(self) -> "TrainConfig":
        check_input_size(self.input_size)
        if self.augment not in ("offline", "online", "none"):
            raise ConfigError(f"--augment {self.augment!r}: choose offline, online or none")
        if self.strategy not in ("default", "mirrored", "multiworker"):
            raise ConfigError(f"--strategy {self.strategy!r}: choose default, mirrored or multiworker")
        if not 0.0 < self.asm_variance <= 1.0:
            raise ConfigError(f"--asm-variance {self.asm_variance}: must lie in (0, 1]")
        if self.bn_recalibration < 0:
            raise ConfigError("--bn-recalibration must be >= 0 (0 turns it off)")
        if self.aug_copies is not None and self.aug_copies < 0:
            raise ConfigError(f"--aug-copies {self.aug_copies}: must be >= 0 (0: no offline copies)")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: train at least 1 epoch")
        # NaN fails every comparison, so each check is written as "not (valid)"
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning-rate {self.learning_rate}: must be a finite number > 0 "
                              f"(the published setting is 1e-3)")
        if self.lr_schedule not in FIELD_CHOICES["lr_schedule"]:
            raise ConfigError(f"--lr-schedule {self.lr_schedule!r}: choose inverse-time or cosine")
        if not (math.isfinite(self.lr_decay) and self.lr_decay >= 0):
            raise ConfigError(f"--lr-decay {self.lr_decay}: must be a finite number >= 0 (0: a "
                              f"constant learning rate)")
        if not (0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"--val-fraction {self.val_fraction}: must lie in [0, 1) (0: no "
                              f"validation faces)")
        if not (0 <= self.seed < 2 ** 31):
            raise ConfigError(f"--seed {self.seed}: must lie in 0 .. {2 ** 31 - 1}")
        if not (math.isfinite(self.width_multiplier) and self.width_multiplier > 0):
            raise ConfigError(f"--width-multiplier {self.width_multiplier}: must be a finite "
                              f"number > 0")
        if not (0.0 <= self.teacher_dropout < 1.0):
            raise ConfigError(f"--teacher-dropout {self.teacher_dropout}: must lie in [0, 1)")
        if not (0.0 <= self.teacher_stochastic_depth < 1.0):
            raise ConfigError(f"--teacher-stochastic-depth {self.teacher_stochastic_depth}: must lie "
                              f"in [0, 1)")
        if not (0 <= self.freeze_batchnorm_epochs <= self.epochs):
            raise ConfigError(f"--freeze-batchnorm-epochs {self.freeze_batchnorm_epochs}: must lie "
                              f"in 0 .. --epochs ({self.epochs})")
        if self.max_faces is not None and self.max_faces < 1:
            raise ConfigError(f"--max-faces {self.max_faces}: must be >= 1")
        loss_config(self.loss_preset)
        dataset_info(self.dataset) if not self.custom_spec else None
        return self


# The run configurations, one table for the trainers' --preset and demo.py (its default is
# "quick", --full is "paper"). "paper" is TrainConfig's defaults (the published settings); "quick"
# finishes on 2 CPU cores. A key "teacher_X" / "student_X" is field X for that trainer only
# (epochs; the quick students' last 3 epochs train with BatchNorm frozen: 0.36 points better for
# the KD student over 5 seeds, bench/results/freeze_batchnorm.md).
_PUBLISHED = TrainConfig()
TRAINERS = ("teacher", "student")
PRESETS: dict[str, dict] = {
    "paper": {"input_size": _PUBLISHED.input_size, "batch_size": _PUBLISHED.batch_size,
              "augment": _PUBLISHED.augment, "max_faces": None, "lr_schedule": _PUBLISHED.lr_schedule,
              "teacher_epochs": _PUBLISHED.epochs, "student_epochs": _PUBLISHED.epochs},
    "quick": {"input_size": 64, "batch_size": 32, "augment": "none", "max_faces": None,
              "lr_schedule": "cosine", "teacher_epochs": 3, "student_epochs": 16,
              "student_freeze_batchnorm_epochs": 3},
}


def preset_settings(name: str, trainer: str) -> dict:
    """TrainConfig fields of preset `name` for the "teacher" or "student" trainer."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    prefixes = tuple(f"{t}_" for t in TRAINERS)
    values = {k: v for k, v in PRESETS[name].items() if not k.startswith(prefixes)}
    values.update({k[len(trainer) + 1:]: v for k, v in PRESETS[name].items() if k.startswith(f"{trainer}_")})
    return values


def preset_frozen_epochs(frozen: int, epochs: int) -> int:
    """A preset's "last K epochs with BatchNorm frozen" for a run of `epochs`: K when the run has
    more than K epochs, else none (a short run from scratch needs its BatchNorm layers to train)."""
    return int(frozen) if int(epochs) > int(frozen) else 0


# ----------------------------------------------------------------------------------------------
# Command line and persistence
# ----------------------------------------------------------------------------------------------


# One line of --help per PrepareConfig / TrainConfig field (the trainers' and prepare's options);
# fields with a fixed set of values list them (validate() checks them). A field missing here is
# caught by tests/test_cli_help.py.
FIELD_HELP: dict[str, str] = {
    "dataset": "dataset name: 300w, cofw or wflw (a custom dataset: pass --custom-spec instead)",
    "root": "folder of the official dataset archive (default: the embedded synthetic faces, "
            "generated on first use)",
    "prepared_dir": "prepared crops to train on (default: data/prepared/<dataset>[-synthetic]-<size> "
                    "as for prepare's --out-dir, prepared on first use)",
    "out_dir": "where the crops are written (default: data/prepared/<dataset>-synthetic-<size> for "
               "the embedded faces, data/prepared/<dataset>-<size> for --root or --custom-spec data)",
    "input_size": "side in pixels of the square face crop the network sees (at least 32 to train)",
    "box": "crop box: landmarks (square around the ground-truth points) or dataset (the file's "
           "own face box; not 300W)",
    "margin": "the crop side is (1 + margin) x the larger extent of the points",
    "batch_size": "faces per training step (the global batch over all replicas)",
    "epochs": "training epochs (a resumed run continues up to this number)",
    "learning_rate": "Adam learning rate at step 0",
    "lr_decay": "inverse-time decay per step: lr / (1 + decay * step) (--lr-schedule inverse-time)",
    "lr_schedule": "inverse-time (lr / (1 + lr_decay * step), as published) or cosine (from "
                   "--learning-rate down to 0 at the last of --epochs: the better model for a fixed budget)",
    "val_fraction": "share of whole training faces held out to choose best.keras",
    "seed": "random seed (data split, shuffling, initial weights)",
    "augment": "offline (stored augmented copies, as published), online (random per batch) or none",
    "aug_copies": "offline augmented copies per face besides the plain crop (default: the "
                  "dataset's, 3 for 300W/WFLW, 9 for COFW: the published 4x / 10x images per face, "
                  "plain crop included; a custom spec's aug_copies; 0 trains without them)",
    "aug_jitter": "the augmented copies (offline or online) also get scale (0.9-1.1) and shift (up to "
                  "5% of the side) jitter, as data_util.py augment --jitter: a model that finds the "
                  "face inside an imperfect crop (off by default, as published)",
    "width_multiplier": "MobileNetV2 width (alpha) of the student",
    "teacher_dropout": "dropout before the teacher's output layer",
    "teacher_stochastic_depth": "EfficientNet's stochastic depth: the last block's residual branch "
                                "is dropped with this probability, earlier blocks less (Keras' "
                                "default 0.2; without it a Tolerant teacher's inference-mode "
                                "predictions blew up sooner: models/README.md); may change when a "
                                "run resumes",
    "weights": "initial weights: imagenet (backbone), a .keras landmark model of the same network, "
               "points and size (all its weights: fine-tune a shipped model), or leave out to "
               "train from scratch (as published)",
    "asm_variance": "share of shape variance the Active Shape Model keeps for the Tolerant "
                    "teacher's soft landmarks, in (0, 1]",
    "asm_align": "Procrustes-align the shapes before the Active Shape Model, so soft landmarks keep "
                 "each face's position, size and roll (off by default, as the original)",
    "loss_preset": "KD-Loss constants: code (the authors' code, default) or paper (the article's)",
    "student_mode": "kd (KD-Loss with both teachers), l2 (plain L2 baseline), l1 (plain L1: the "
                    "teacher-free control of KD-Loss's shape), wing (Wing loss), tough-only or "
                    "tolerant-only (KD-Loss with one teacher: the ablations)",
    "cache_teacher_predictions": "let each teacher predict the stored training images once "
                                 "instead of at every step (not with --augment online)",
    "teacher_flip_test": "the teachers' predictions are the flip test's (the mean over each crop and "
                         "its mirror image, left and right points swapped back): better teachers for "
                         "the same files (needs --cache-teacher-predictions)",
    "strategy": "tf.distribute strategy: default (one device), mirrored (all GPUs of this "
                "machine) or multiworker (several machines, TF_CONFIG; docs/USAGE.md 'Several machines')",
    "mixed_precision": "float16 compute with float32 weights (GPUs only)",
    "jit_compile": "XLA compilation of the training step (3-4x slower on CPU)",
    "deterministic": "deterministic TensorFlow ops (bit-identical runs for one seed on CPU)",
    "custom_spec": "JSON spec of your own landmark dataset (data/README.md); sets --dataset to "
                   "its name",
    "run_dir": "run folder for checkpoints and logs (default: runs/<dataset>-<what>)",
    "resume": "continue from the run folder's last.keras if there is one (--no-resume starts "
              "again)",
    "max_faces": "train on the first K training faces only (quick runs, tests)",
    "bn_recalibration": "training crops (faces and their augmented copies) that re-estimate "
                        "BatchNorm statistics at each epoch end (0: off)",
    "freeze_batchnorm_epochs": "train the last K epochs with BatchNorm frozen: statistics as "
                               "re-estimated before them, scale and offset fixed (0: never)",
}

# Fields with a fixed set of values: shown as the option's metavar (validate() checks the value, so
# a wrong one gets the project's one-line error rather than argparse's usage dump).
FIELD_CHOICES: dict[str, tuple] = {
    "augment": ("offline", "online", "none"),
    "lr_schedule": ("inverse-time", "cosine"),
    "strategy": ("default", "mirrored", "multiworker"),
    "loss_preset": tuple(LOSS_PRESETS),
    "box": ("landmarks", "dataset"),
}


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip=(),
                       choices: Optional[dict] = None) -> None:
    """Add --field-name options for every field of a config dataclass (defaults come from cls;
    the one-line description from FIELD_HELP; the values listed from FIELD_CHOICES and `choices`,
    e.g. the student trainer's {"student_mode": kd_loss.MODES})."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        opt = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = str(f.type)    # postponed annotations: the type as written, e.g. "Optional[int]"
        text = FIELD_HELP.get(f.name, "").replace("%", "%%")
        if "default" not in text and default is not None:
            text = f"{text} (default: {default})".strip()
        if kind == "bool":
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        else:
            conv = int if kind in ("int", "Optional[int]") else float if kind in (
                "float", "Optional[float]") else str
            values = {**FIELD_CHOICES, **(choices or {})}.get(f.name)
            parser.add_argument(opt, dest=f.name, type=conv, default=None, help=text,
                                metavar="{" + ",".join(values) + "}" if values else None)


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


def config_record(config, extra: Optional[dict] = None) -> dict:
    """What a run saves beside its outputs (config.json, prepare_config.json): the configuration's
    type and fields, and `extra` (a training run's identity under "run")."""
    return {"type": type(config).__name__, **dataclasses.asdict(config), **(extra or {})}
