"""Shared trainer machinery (docs/ARCHITECTURE.md): used by teacher_trainer.py and student_trainer.py.

* Configuration: `parse_config(argv)` builds a `TrainConfig` from the published defaults, then a
  preset (`--preset paper|quick`), then an optional `--config FILE.json`, then explicit options.
* Runtime: `setup_runtime(cfg)` seeds Python/NumPy/TensorFlow, turns on op determinism (bit-identical
  CPU runs for the same seed), sets the mixed-precision policy (GPUs only) and returns the
  `tf.distribute` strategy named by `cfg.strategy`.
* Data: `load_training_data(cfg)` prepares the data if needed (a no-argument run on a fresh clone
  writes and prepares the embedded synthetic faces), writes the offline augmented copies
  (`train_aug/`) if asked, carves a seeded validation split of WHOLE training faces (their augmented
  copies never enter training) and serves batches with `TrainData.dataset(...)`: a per-epoch seeded
  shuffle (so a resumed run sees the same batches as an uninterrupted one) and optional online
  augmentation (image_utility.augment_sample).
* Runs: `fit_model(...)` trains under a run folder (runs/<dataset>-<what> or `cfg.run_dir`) holding
  config.json, log.csv, TensorBoard logs (tensorboard/), last.keras + state.json written atomically
  every epoch (and every K steps if asked), best.keras chosen by validation NME (inter-ocular), and
  resumes from last.keras when the same command is run again. A NaN/inf loss stops the run with
  `errors.TrainingError` and never overwrites the last good checkpoint. The best model is finally
  written to the output path and a one-line summary is printed.

Checkpoints are plain Keras models (the teacher or the student, never the Distiller) compiled with the
training optimizer, so last.keras carries the Adam moments and the iteration count: the
InverseTimeDecay schedule (lr / (1 + decay * step)) resumes at the same position.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from errors import ConfigError, DataFormatError, ModelError, TrainingError, quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import configuration as C  # noqa: E402
from configuration import TrainConfig  # noqa: E402
from metrics import nme_per_image  # noqa: E402
from safe_io import atomic_path, atomic_write_json  # noqa: E402

LAST = "last.keras"
BEST = "best.keras"
STATE = "state.json"
LOG = "log.csv"
TB_DIR = "tensorboard"

# Fields that must match between a run folder's config.json and the current config to resume.
RESUME_KEYS = ("dataset", "input_size", "batch_size", "seed", "val_fraction", "max_faces", "augment",
               "student_mode", "width_multiplier", "teacher_dropout", "prepared_dir", "root",
               "loss_preset", "asm_variance")


# ----------------------------------------------------------------------------------------------
# Configuration from the command line
# ----------------------------------------------------------------------------------------------


def build_parser(description: str, skip=()) -> argparse.ArgumentParser:
    """A parser with --preset, --config, --output, --checkpoint-every and every TrainConfig field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=sorted(C.PRESETS), default="paper",
                        help="published settings ('paper', default) or a quick CPU run ('quick')")
    parser.add_argument("--config", metavar="FILE.json", default=None,
                        help="JSON experiment configuration (TrainConfig fields); explicit options win")
    parser.add_argument("--output", metavar="FILE.keras", default=None,
                        help="where the final (best) model is written (default under models/)")
    parser.add_argument("--checkpoint-every", metavar="K", type=int, default=0,
                        help="also write last.keras every K training steps (0: once per epoch)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal)")
    C.add_dataclass_args(parser, TrainConfig, skip=skip)
    return parser


def config_from_args(args: argparse.Namespace, **fixed) -> TrainConfig:
    """Defaults < preset < --config file < explicit options (< `fixed`, e.g. the CLI's own choices)."""
    base = dict(C.PRESETS[getattr(args, "preset", None) or "paper"])
    if getattr(args, "config", None):
        file_values = C.load_config_file(args.config)
        if not isinstance(file_values, dict):
            raise ConfigError(f"{args.config}: a configuration file holds one JSON object")
        file_values.pop("type", None)
        base.update(file_values)
    cfg = C.dataclass_from_args(TrainConfig, args, base)
    for key, value in fixed.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.custom_spec:
        cfg.dataset = C.register_custom_dataset(cfg.custom_spec).name
    cfg.dataset = cfg.dataset.lower()
    return cfg.validate()


# ----------------------------------------------------------------------------------------------
# Runtime: seeds, determinism, precision, strategy
# ----------------------------------------------------------------------------------------------


def setup_runtime(cfg: TrainConfig):
    """Seed everything, set determinism and precision; return the tf.distribute strategy."""
    keras.utils.set_random_seed(int(cfg.seed))
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            warnings.warn("--mixed-precision needs a GPU; training in float32 on this CPU")
            print("warning: --mixed-precision needs a GPU; training in float32 on this CPU",
                  file=sys.stderr)
    return make_strategy(cfg.strategy)


def make_strategy(name: str):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy {name!r}: choose default, mirrored or multiworker")


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with inverse-time decay per step: lr / (1 + lr_decay * step) (METHOD.md section 6)."""
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        initial_learning_rate=float(cfg.learning_rate), decay_steps=1,
        decay_rate=float(cfg.lr_decay))
    return keras.optimizers.Adam(learning_rate=schedule)


# ----------------------------------------------------------------------------------------------
# Prepared data
# ----------------------------------------------------------------------------------------------


@dataclass
class SplitArrays:
    """One prepared split (arrays read with mmap where possible)."""

    images: np.ndarray                     # uint8 (M, S, S, 3)
    landmarks: np.ndarray                  # float32 (M, N, 2) normalised
    soft: Optional[np.ndarray] = None      # float32 (M, N, 2) soft landmarks, if written
    source_index: Optional[np.ndarray] = None   # train_aug: row of train/ each copy comes from
    ids: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _manifest_complete(prepared_dir: Path) -> bool:
    try:
        return bool(json.loads((prepared_dir / "manifest.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _data_util():
    try:
        import data_util  # noqa: PLC0415
    except ImportError:
        return None
    return data_util


def ensure_prepared(cfg: TrainConfig) -> Path:
    """The prepared folder of cfg; prepare it (generating the embedded synthetic data) if missing."""
    out = cfg.resolved_prepared_dir()
    if _manifest_complete(out):
        return out
    du = _data_util()
    hint = (f"python data_util.py prepare --dataset {cfg.dataset} --input-size {cfg.input_size}"
            + (f" --root {cfg.root}" if cfg.root else ""))
    if du is None or not hasattr(du, "prepare"):
        raise DataFormatError(f"{out}: prepared data not found; run `{hint}` first")
    if cfg.prepared_dir and not cfg.root and Path(cfg.prepared_dir).exists():
        raise DataFormatError(f"{out}: not a complete prepared folder (manifest.json missing); "
                              f"run `{hint} --out-dir {cfg.prepared_dir}` again")
    print(f"preparing {cfg.dataset} at {cfg.input_size} px into {out} ...", flush=True)
    import inspect  # noqa: PLC0415

    kwargs = {"progress": sys.stderr.isatty()} if "progress" in inspect.signature(du.prepare).parameters else {}
    du.prepare(cfg.prepare_config(), **kwargs)
    if not _manifest_complete(out):
        raise DataFormatError(f"{out}: preparation did not complete; run `{hint}` and read its errors")
    return out


def _split_complete(split_dir: Path) -> bool:
    return (split_dir / "images.npy").is_file() and (split_dir / "landmarks.npy").is_file() and \
        (split_dir / "meta.json").is_file()


def ensure_augmented(cfg: TrainConfig, prepared_dir: Path) -> Optional[Path]:
    """train_aug/ (offline augmented copies) when cfg.augment == 'offline'; written if missing.

    data_util.augment_prepared is idempotent: it reuses copies written with the same settings."""
    if cfg.augment != "offline":
        return None
    aug_dir = prepared_dir / "train_aug"
    copies = cfg.aug_copies if cfg.aug_copies is not None else C.dataset_info(cfg.dataset).aug_copies
    du = _data_util()
    fn = None
    if du is not None:
        fn = getattr(du, "augment_prepared", None) or getattr(du, "augment", None)
    if fn is None:
        if _split_complete(aug_dir):
            return aug_dir
        raise DataFormatError(f"{aug_dir}: offline augmented copies not found; run `python "
                              f"data_util.py augment --prepared-dir {prepared_dir} --copies {copies}` "
                              f"or train with --augment online / none")
    if not _aug_matches(prepared_dir, copies):
        print(f"writing {copies} augmented copies per training face into {aug_dir} ...", flush=True)
    _call_augment(fn, prepared_dir, copies)
    if not _split_complete(aug_dir):
        raise DataFormatError(f"{aug_dir}: augmentation did not complete; run `python data_util.py "
                              f"augment --prepared-dir {prepared_dir}` and read its errors")
    return aug_dir


def _manifest(prepared_dir: Path) -> dict:
    try:
        return json.loads((Path(prepared_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _aug_matches(prepared_dir: Path, copies: int) -> bool:
    done = _manifest(prepared_dir).get("train_aug") or {}
    return (done.get("settings") or {}).get("copies") == copies and \
        _split_complete(Path(prepared_dir) / "train_aug")


def _call_augment(fn, prepared_dir: Path, copies: int):
    """Call data_util.augment_prepared(prepared_dir, copies=...) (quietly where it allows)."""
    import inspect  # noqa: PLC0415

    params = inspect.signature(fn).parameters
    kwargs = {"copies": copies} if "copies" in params else {}
    if "progress" in params:
        kwargs["progress"] = sys.stderr.isatty()
    return fn(prepared_dir, **kwargs)


def load_split(prepared_dir: Path, split: str) -> SplitArrays:
    """Read one prepared split (data_util.load_prepared: memory-mapped, checked against the
    manifest) as the trainers' SplitArrays."""
    import data_util  # noqa: PLC0415

    ps = data_util.load_prepared(prepared_dir, split)
    soft, src = ps.soft_landmarks, ps.source_index
    return SplitArrays(images=ps.images, landmarks=np.asarray(ps.landmarks, dtype=np.float32),
                       soft=None if soft is None else np.asarray(soft, dtype=np.float32),
                       source_index=src, ids=ps.ids)


def split_faces(n_faces: int, val_fraction: float, seed: int, max_faces: Optional[int] = None):
    """Seeded split of whole faces: (train_rows, val_rows), sorted indices into train/.

    At least one face goes to validation when val_fraction > 0 and there are two or more faces.
    """
    n = int(n_faces if max_faces is None else min(n_faces, max(1, int(max_faces))))
    n_val = int(round(float(val_fraction) * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng([int(seed), 7919]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


AugmentFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple]


def default_online_augment(info) -> AugmentFn:
    """Per-sample online augmentation: image_utility.augment_sample on crop pixels."""
    import image_utility as iu  # noqa: PLC0415

    perm = info.flip_permutation

    def augment(image: np.ndarray, points_norm: np.ndarray, rng: np.random.Generator):
        size = image.shape[0]
        px = iu.denormalize_landmarks(points_norm, size)
        img, px = iu.augment_sample(image, px, rng, flip_permutation=perm)
        return img, iu.normalize_landmarks(px, size).astype(np.float32)

    return augment


class TrainData:
    """The training pool (train faces + their offline copies) and the validation faces."""

    def __init__(self, cfg: TrainConfig, prepared_dir: Path, train: SplitArrays,
                 aug: Optional[SplitArrays] = None):
        self.cfg = cfg
        self.info = C.dataset_info(cfg.dataset)
        self.prepared_dir = Path(prepared_dir)
        self.train = train
        self.aug = aug
        if train.landmarks.shape[1] != self.info.num_points:
            raise DataFormatError(f"{prepared_dir}: landmarks have {train.landmarks.shape[1]} points "
                                  f"but {cfg.dataset} has {self.info.num_points}; prepare again")
        if train.images.shape[1] != cfg.input_size:
            raise DataFormatError(f"{prepared_dir}: images are {train.images.shape[1]} px but "
                                  f"--input-size is {cfg.input_size}; use the matching prepared folder")
        self.train_rows, self.val_rows = split_faces(len(train), cfg.val_fraction, cfg.seed,
                                                     cfg.max_faces)
        if aug is not None and len(aug):
            if aug.source_index is None or len(aug.source_index) != len(aug):
                raise DataFormatError(f"{prepared_dir}/train_aug: meta.json lacks source_index; "
                                      f"write the augmented copies again (python data_util.py augment)")
            self.aug_rows = np.flatnonzero(np.isin(aug.source_index, self.train_rows))
        else:
            self.aug_rows = np.zeros((0,), np.int64)
        if len(self.train_rows) == 0:
            raise DataFormatError(f"{prepared_dir}: no training faces left after the validation split")

    # -- pool: index p < len(train_rows) -> train/ row, else a train_aug/ row -------------------
    @property
    def size(self) -> int:
        return int(len(self.train_rows) + len(self.aug_rows))

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.size / int(self.cfg.batch_size)))

    def pool_key(self) -> str:
        """A digest of which stored rows form the pool (for caches keyed on the data)."""
        h = hashlib.sha1()
        h.update(np.asarray(self.train_rows, np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(self.aug_rows, np.int64).tobytes())
        h.update(str((len(self.train), 0 if self.aug is None else len(self.aug))).encode())
        return h.hexdigest()[:16]

    def _gather(self, arrays_of, pool_idx: np.ndarray) -> np.ndarray:
        pool_idx = np.asarray(pool_idx, np.int64)
        n_tr = len(self.train_rows)
        in_tr = pool_idx < n_tr
        first = arrays_of(self.train)
        out = np.empty((len(pool_idx),) + first.shape[1:], first.dtype)
        if in_tr.any():
            out[in_tr] = first[self.train_rows[pool_idx[in_tr]]]
        if (~in_tr).any():
            out[~in_tr] = arrays_of(self.aug)[self.aug_rows[pool_idx[~in_tr] - n_tr]]
        return out

    def pool_images(self, pool_idx) -> np.ndarray:
        return self._gather(lambda s: s.images, pool_idx)

    def pool_landmarks(self, pool_idx, soft: bool = False) -> np.ndarray:
        def pick(s):
            if soft and s.soft is None:
                raise DataFormatError(f"{self.prepared_dir}: soft_landmarks.npy missing; run "
                                      f"`python asm_soft_landmarks.py --prepared-dir "
                                      f"{self.prepared_dir}`")
            return s.soft if soft else s.landmarks
        return self._gather(pick, pool_idx)

    def val_images(self) -> np.ndarray:
        return np.asarray(self.train.images[self.val_rows]) if len(self.val_rows) else \
            np.zeros((0,) + self.train.images.shape[1:], np.uint8)

    def val_landmarks(self) -> np.ndarray:
        return np.asarray(self.train.landmarks[self.val_rows], np.float32)

    def train_face_images(self) -> np.ndarray:
        return np.asarray(self.train.images[self.train_rows])

    def train_face_landmarks(self) -> np.ndarray:
        return np.asarray(self.train.landmarks[self.train_rows], np.float32)

    # -- tf.data --------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list:
        """The pool indices of each batch of an epoch: a shuffle seeded by (seed, epoch)."""
        perm = np.random.default_rng([int(self.cfg.seed), int(epoch), 104729]).permutation(self.size)
        b = int(self.cfg.batch_size)
        return [np.sort(perm[i:i + b]) for i in range(0, self.size, b)]

    def dataset(self, initial_epoch: int, epochs: int, targets: str = "landmarks",
                extra: Optional[dict] = None, augment_fn: Optional[AugmentFn] = None):
        """Batches (x, y) for epochs initial_epoch..epochs-1 (then it ends).

        targets: "landmarks" (y = hard landmarks (B, 2N)), "soft" (y = soft landmarks) or "dict"
        (y = {"landmarks": ..., **extra}) where `extra` maps names to arrays aligned with the pool
        (e.g. cached teacher predictions (P, 2N)). With `augment_fn` each sample is augmented
        online (then `extra` must be empty: cached predictions would not match the new image).
        """
        n2 = 2 * self.info.num_points
        s = int(self.cfg.input_size)
        extra = dict(extra or {})
        if augment_fn is not None and extra:
            raise ConfigError("cached teacher predictions cannot be used with online augmentation")
        soft = targets == "soft"

        def gen():
            for epoch in range(int(initial_epoch), int(epochs)):
                rng = np.random.default_rng([int(self.cfg.seed), int(epoch), 15485863])
                for idx in self.epoch_batches(epoch):
                    images = self.pool_images(idx)
                    pts = self.pool_landmarks(idx, soft=soft)
                    if augment_fn is not None:
                        images = images.copy()
                        pts = pts.copy()
                        for i in range(len(idx)):
                            images[i], pts[i] = augment_fn(images[i], pts[i], rng)
                    x = images.astype(np.float32) / np.float32(255.0)
                    y = pts.reshape(len(idx), n2).astype(np.float32)
                    if targets == "dict":
                        yd = {"landmarks": y}
                        for k, arr in extra.items():
                            yd[k] = np.asarray(arr[idx], np.float32).reshape(len(idx), n2)
                        yield x, yd
                    else:
                        yield x, y

        x_spec = tf.TensorSpec((None, s, s, 3), tf.float32)
        y_vec = tf.TensorSpec((None, n2), tf.float32)
        if targets == "dict":
            y_spec = {"landmarks": y_vec, **{k: y_vec for k in extra}}
        else:
            y_spec = y_vec
        ds = tf.data.Dataset.from_generator(gen, output_signature=(x_spec, y_spec))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options).prefetch(2)


def load_training_data(cfg: TrainConfig, need_soft: bool = False) -> TrainData:
    """Prepared (and, if asked, augmented) data with its validation split."""
    prepared = ensure_prepared(cfg)
    aug_dir = ensure_augmented(cfg, prepared)
    if need_soft:
        ensure_soft_landmarks(cfg, prepared)
    train = load_split(prepared, "train")
    aug = load_split(prepared, "train_aug") if aug_dir is not None else None
    return TrainData(cfg, prepared, train, aug)


def ensure_soft_landmarks(cfg: TrainConfig, prepared_dir: Path) -> None:
    """soft_landmarks.npy beside landmarks.npy (train, train_aug), fitted at cfg.asm_variance;
    written (asm_soft_landmarks.make_soft_landmarks) when missing or fitted at another variance."""
    prepared_dir = Path(prepared_dir)
    splits = ["train"] + (["train_aug"] if _split_complete(prepared_dir / "train_aug") else [])
    have = all((prepared_dir / s / "soft_landmarks.npy").is_file() for s in splits)
    if have:
        variance = None
        try:
            with np.load(prepared_dir / "asm.npz") as z:
                variance = float(z["variance"]) if "variance" in z.files else None
        except (OSError, ValueError, KeyError):
            pass
        if variance is None or abs(variance - float(cfg.asm_variance)) < 1e-9:
            return
    try:
        import asm_soft_landmarks as asm  # noqa: PLC0415
    except ImportError:
        raise DataFormatError(f"{prepared_dir}: soft_landmarks.npy missing and asm_soft_landmarks.py "
                              f"is not available; write them with `python asm_soft_landmarks.py "
                              f"--prepared-dir {prepared_dir}`") from None
    print(f"fitting the shape model ({100 * cfg.asm_variance:.0f}% variance) and writing soft "
          f"landmarks into {prepared_dir} ...", flush=True)
    asm.make_soft_landmarks(prepared_dir, variance=float(cfg.asm_variance),
                            dataset=None if cfg.custom_spec else cfg.dataset, verbose=True)
    missing = [s for s in splits if not (prepared_dir / s / "soft_landmarks.npy").is_file()]
    if missing:
        raise DataFormatError(f"{prepared_dir}: soft landmarks were not written for {missing}; run "
                              f"`python asm_soft_landmarks.py --prepared-dir {prepared_dir}`")


# ----------------------------------------------------------------------------------------------
# Prediction and validation NME
# ----------------------------------------------------------------------------------------------


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Model outputs (M, 2N) float32 for uint8 images, in chunks (one traced function)."""
    from cnn_model import traced_call  # noqa: PLC0415

    fn = traced_call(model, training=False)   # one trace per model, any batch size
    outs = []
    for i in range(0, len(images), int(batch_size)):
        x = np.asarray(images[i:i + int(batch_size)]).astype(np.float32) / np.float32(255.0)
        outs.append(np.asarray(fn(tf.constant(x)), np.float32))
    if not outs:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(outs, axis=0)


def mean_nme(pred_flat: np.ndarray, gt: np.ndarray, info, normaliser: str = "interocular") -> float:
    """Mean per-image NME (a fraction) of flat predictions (M, 2N) against normalised GT (M, N, 2).

    NME is scale-free, so the normalised crop coordinates need no de-normalisation (the sign flip
    of the normalisation does not change distances)."""
    if len(gt) == 0:
        return float("nan")
    pred = np.asarray(pred_flat, np.float64).reshape(gt.shape)
    nmes = nme_per_image(pred, gt, info.normaliser(normaliser))
    return float(np.mean(nmes))


# ----------------------------------------------------------------------------------------------
# Run folder, checkpoints, callbacks
# ----------------------------------------------------------------------------------------------


def default_run_dir(cfg: TrainConfig, what: str) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else C.RUNS_DIR / f"{cfg.dataset}-{what}"


def _unwritable_reason(folder: Path, err: Optional[OSError] = None) -> Optional[str]:
    """Why `folder` cannot be created or written into (None when it can), without creating it:
    the nearest existing ancestor must be a folder that takes a new file."""
    folder = Path(folder)
    probe = folder
    while not os.path.exists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if err is not None:
        return err.strerror or str(err)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        return f"{probe}: {e.strerror or e}"
    return None


def run_dir_error(run_dir: Path, reason: str) -> str:
    return (f"{run_dir}: cannot create the run folder ({reason}); pass --run-dir with a writable "
            f"folder")


def check_outputs(cfg: TrainConfig, what: str, output=None) -> None:
    """Fail fast, before any data, model or training work: the run folder must be creatable and
    the final model's folder writable (otherwise a long run would fail only at its very end)."""
    run_dir = default_run_dir(cfg, what)
    reason = _unwritable_reason(run_dir)
    if reason:
        raise ConfigError(run_dir_error(run_dir, reason))
    if output is None:
        return
    output = Path(output)
    if output.suffix != ".keras":
        raise ConfigError(f"--output {output}: model files must end in .keras")
    if output.is_dir():
        raise ConfigError(f"--output {output}: is a folder; name a .keras file in it")
    reason = _unwritable_reason(output.parent)
    if reason:
        raise ConfigError(f"--output {output}: cannot write the model into {output.parent} "
                          f"({reason}); pass --output in a writable folder")


def read_state(run_dir: Path) -> Optional[dict]:
    try:
        return json.loads((Path(run_dir) / STATE).read_text())
    except (OSError, ValueError):
        return None


def _weights_finite(model) -> bool:
    for w in model.weights:
        v = np.asarray(keras.ops.convert_to_numpy(w))
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            return False
    return True


def save_checkpoint(model, path: Path) -> None:
    """model.save to a temporary .keras file beside `path`, then rename (never half-written)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst, suffix=dst.suffix) as tmp:
        shutil.copyfile(src, tmp)


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """At each epoch end, before validation and checkpoints, re-estimate the BatchNorm moving
    statistics from a fixed set of training faces (cnn_model.recalibrate_batchnorm)."""

    def __init__(self, model, images: np.ndarray, batch_size: int = 128):
        super().__init__()
        self.target = model
        self.images = images
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if len(self.images):
            from cnn_model import recalibrate_batchnorm  # noqa: PLC0415

            recalibrate_batchnorm(self.target, self.images.astype(np.float32) / np.float32(255.0),
                                  self.batch_size)


def recalibration_faces(data: "TrainData", count: int) -> np.ndarray:
    """`count` training faces (seeded draw; not augmented copies, not validation faces), uint8.
    Drawn rather than the first ones because official files are grouped by source (LFPW, HELEN...)."""
    if count <= 0 or len(data.train_rows) == 0:
        return np.zeros((0,), np.uint8)
    rng = np.random.default_rng([int(data.cfg.seed), 7919])
    rows = np.sort(rng.choice(data.train_rows, min(int(count), len(data.train_rows)), replace=False))
    return np.asarray(data.train.images[rows])


class ValidationNME(keras.callbacks.Callback):
    """Adds val_nme (mean inter-ocular NME on the validation faces, a fraction) to the epoch logs."""

    def __init__(self, predict_model, images, landmarks, info, batch_size=64):
        super().__init__()
        self.predict_model = predict_model
        self.images = images
        self.landmarks = landmarks
        self.info = info
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.images) == 0:
            return
        pred = predict_images(self.predict_model, self.images, self.batch_size)
        logs["val_nme"] = mean_nme(pred, self.landmarks, self.info)
        logs["val_mse"] = float(np.mean((pred - self.landmarks.reshape(len(pred), -1)) ** 2))


class NaNGuard(keras.callbacks.Callback):
    """Stops training with TrainingError as soon as the loss is NaN or infinite."""

    def __init__(self, run_dir: Path, learning_rate: float):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.learning_rate = learning_rate
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _fail(self, step):
        last = self.run_dir / LAST
        kept = (f"the last good checkpoint {last} is kept" if last.exists()
                else "no checkpoint had been written yet")
        raise TrainingError(f"loss became NaN at epoch {self.epoch + 1} step {step}; {kept}; lower "
                            f"--learning-rate (now {self.learning_rate:g}) and run the same "
                            f"command again to resume")

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._fail(batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._fail("end")


class Checkpointer(keras.callbacks.Callback):
    """last.keras + state.json every epoch (and every K steps), best.keras by validation NME.

    `save_model` is the plain model that is written (the teacher or the student, compiled with the
    training optimizer so the file carries the optimizer state)."""

    def __init__(self, save_model, run_dir: Path, epochs: int, steps_per_epoch: int,
                 state: Optional[dict] = None, every_steps: int = 0, started: float = None):
        super().__init__()
        self.save_model = save_model
        self.run_dir = Path(run_dir)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = int(every_steps or 0)
        state = state or {}
        self.best_nme = state.get("best_val_nme")
        self.best_epoch = state.get("best_epoch")
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.started = time.time() if started is None else started
        self.epoch = 0

    def _iterations(self) -> int:
        opt = getattr(self.save_model, "optimizer", None) or self.model.optimizer
        return int(keras.ops.convert_to_numpy(opt.iterations))

    def _write(self, epoch_done: int, logs: dict, mid_epoch_step: int = 0):
        if not _weights_finite(self.save_model):
            raise TrainingError(f"the weights became NaN/inf at epoch {self.epoch + 1}; the last "
                                f"good checkpoint {self.run_dir / LAST} is kept; lower "
                                f"--learning-rate and run the same command again to resume")
        save_checkpoint(self.save_model, self.run_dir / LAST)
        state = {
            "epoch": int(epoch_done), "step_in_epoch": int(mid_epoch_step),
            "step": self._iterations(), "optimizer_iterations": self._iterations(),
            "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
            "best_val_nme": self.best_nme, "best_epoch": self.best_epoch,
            "last_val_nme": logs.get("val_nme"), "loss": logs.get("loss"),
            "elapsed_s": self.elapsed_before + (time.time() - self.started),
            "finished": bool(epoch_done >= self.epochs and not mid_epoch_step),
        }
        atomic_write_json(self.run_dir / STATE, state)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and (batch + 1) < self.steps_per_epoch and \
                self._iterations() % self.every_steps == 0:
            self._write(self.epoch, dict(logs or {}), mid_epoch_step=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        nme = logs.get("val_nme")
        improved = False
        if nme is not None and np.isfinite(nme) and (self.best_nme is None or nme < self.best_nme):
            self.best_nme, self.best_epoch, improved = float(nme), int(epoch + 1), True
        if nme is None and self.best_nme is None:   # no validation faces: the last is the best
            improved = True
            self.best_epoch = int(epoch + 1)
        self._write(epoch + 1, logs)
        if improved:
            _copy_atomic(self.run_dir / LAST, self.run_dir / BEST)
        if self.best_nme is not None:
            logs["best_val_nme"] = self.best_nme


class EpochLine(keras.callbacks.Callback):
    """One compact line per epoch (used with verbose 2 instead of Keras' own line)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self.t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}", f"{time.time() - self.t0:.1f}s"]
        for k in ("loss", "main", "tough", "tolerant"):
            if k in logs:
                parts.append(f"{k} {float(logs[k]):.5f}")
        if "val_nme" in logs:
            parts.append(f"val NME {100 * float(logs['val_nme']):.2f}%")
        print("  ".join(parts), flush=True)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    output: Optional[Path]
    best_val_nme: Optional[float]
    best_epoch: Optional[int]
    epochs_done: int
    elapsed_s: float
    initial_epoch: int = 0
    history: dict = field(default_factory=dict)

    def summary(self, what: str) -> str:
        nme = "n/a" if self.best_val_nme is None else f"{100 * self.best_val_nme:.2f}%"
        return (f"{what}: best validation NME {nme} (inter-ocular) at epoch {self.best_epoch}, "
                f"{self.epochs_done} epochs, {self.elapsed_s:.0f} s; model -> {self.output}")


def is_chief(strategy) -> bool:
    """False on the non-chief workers of a MultiWorkerMirroredStrategy (they write elsewhere)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and
                                             int(resolver.task_id or 0) == 0)


class Run:
    """A run folder: config check, resume state, logs.

    Under MultiWorkerMirroredStrategy every worker must save (collective ops), so non-chief
    workers write into <run>/.worker-<id>/ and do not export the final model."""

    def __init__(self, cfg: TrainConfig, what: str, strategy=None):
        self.cfg = cfg
        self.what = what
        self.dir = default_run_dir(cfg, what)
        self.chief = True if strategy is None else is_chief(strategy)
        if not self.chief:
            self.dir = self.dir / f".worker-{int(strategy.cluster_resolver.task_id or 0)}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(run_dir_error(self.dir, _unwritable_reason(self.dir, err))) from None
        for stale in self.dir.glob(".*.tmp*"):   # safe_io temporaries of a run killed mid-write
            if stale.is_file():
                stale.unlink(missing_ok=True)
        self.state = None
        self.previous_config = None
        if cfg.resume and (self.dir / LAST).is_file():
            self._check_compatible()
            self.state = read_state(self.dir) or {}
        else:   # a fresh start: stale files of an earlier run must not mix with this one
            for name in (LAST, BEST, STATE, LOG):
                if (self.dir / name).exists():
                    (self.dir / name).unlink()
        C.save_config(cfg, self.dir)

    def _check_compatible(self):
        try:
            old = json.loads((self.dir / "config.json").read_text())
        except (OSError, ValueError):
            return
        self.previous_config = old
        new = dataclasses.asdict(self.cfg)
        diff = [k for k in RESUME_KEYS if k in old and old.get(k) != new.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(f"{self.dir} holds a run with {k}={old.get(k)!r} (now {new.get(k)!r}); "
                              f"pass --run-dir NEW_FOLDER, or --no-resume to start this one again")

    @property
    def resuming(self) -> bool:
        return self.state is not None

    @property
    def last(self) -> Path:
        return self.dir / LAST

    @property
    def best(self) -> Path:
        return self.dir / BEST


def load_checkpoint(path: Path) -> keras.Model:
    """A compiled checkpoint (optimizer state included)."""
    try:
        import cnn_model  # noqa: F401,PLC0415  (registers any custom objects)
    except ImportError:
        pass
    try:
        return keras.models.load_model(path, compile=True)
    except Exception as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{path}: cannot resume from this checkpoint ({first[:200]}); delete it or "
                         f"pass --no-resume to start again") from None


def resumed_optimizer(model, cfg: TrainConfig, previous: Optional[dict]):
    """The checkpoint's optimizer, or a new Adam with the current schedule carrying its state."""
    old = getattr(model, "optimizer", None)
    changed = previous is not None and any(
        float(previous.get(k, getattr(cfg, k))) != float(getattr(cfg, k))
        for k in ("learning_rate", "lr_decay"))
    if old is not None and not changed:
        return old
    new = make_optimizer(cfg)
    new.build(model.trainable_variables)
    if old is not None and getattr(old, "built", False) and len(old.variables) == len(new.variables):
        for dst, src in zip(new.variables, old.variables):
            dst.assign(src)
        print(f"resuming with learning rate {cfg.learning_rate:g} (decay {cfg.lr_decay:g}) at step "
              f"{int(keras.ops.convert_to_numpy(new.iterations))}", flush=True)
    return new


def initial_epoch_from(state: dict, model, steps_per_epoch: int) -> int:
    """The epoch to start at: state.json's, cross-checked against the optimizer's iteration count."""
    epoch = int(state.get("epoch", 0))
    try:
        it = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    except Exception:  # noqa: BLE001
        return epoch
    if state.get("optimizer_iterations") is None or it != int(state["optimizer_iterations"]):
        # last.keras was renamed into place but state.json not yet: trust the model file.
        epoch = it // max(1, int(steps_per_epoch))
    return epoch


def verbosity(verbose: Optional[int]) -> int:
    if verbose is not None:
        return int(verbose)
    return 1 if sys.stdout.isatty() else 2


def fit_model(*, cfg: TrainConfig, run: Run, data: TrainData, strategy,
              build: Callable[[], keras.Model], loss="mse",
              fit_wrapper: Optional[Callable] = None, targets: str = "landmarks",
              extra_targets: Optional[Callable] = None, augment_fn: Optional[AugmentFn] = None,
              output: Optional[Path] = None, verbose: Optional[int] = None,
              checkpoint_every: int = 0, extra_callbacks=()) -> TrainResult:
    """Train the model that `build()` makes (or resume it) and write checkpoints, logs and output.

    fit_wrapper(model) -> keras.Model trained by fit (e.g. the Distiller around the student); it
    must compile itself with model.optimizer. extra_targets(model_to_fit) -> dict of pool-aligned
    arrays to add to the batch's target dict (e.g. cached teacher predictions).
    """
    t_start = time.time()
    steps = data.steps_per_epoch()
    epochs = int(cfg.epochs)
    state = run.state
    with strategy.scope():
        if run.resuming:
            model = load_checkpoint(run.last)
            initial_epoch = initial_epoch_from(state, model, steps)
        else:
            model = build()
            model.compile(optimizer=make_optimizer(cfg), loss=loss, jit_compile=bool(cfg.jit_compile))
            initial_epoch = 0
        if run.resuming:
            # keep the saved optimizer state (moments, iteration count: the schedule position);
            # a changed --learning-rate / --lr-decay takes effect from here on.
            model.compile(optimizer=resumed_optimizer(model, cfg, run.previous_config), loss=loss,
                          jit_compile=bool(cfg.jit_compile))
        fit_on = fit_wrapper(model) if fit_wrapper is not None else model

    v = verbosity(verbose)
    if v and strategy.num_replicas_in_sync > 1:
        print(f"strategy {type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas",
              flush=True)
    if run.resuming and initial_epoch > 0 and v:
        print(f"resuming {run.dir} at epoch {initial_epoch + 1}/{epochs}", flush=True)

    if initial_epoch < epochs:
        extra = extra_targets(fit_on) if extra_targets is not None else None
        ds = data.dataset(initial_epoch, epochs, targets=targets, extra=extra, augment_fn=augment_fn)
        checkpointer = Checkpointer(model, run.dir, epochs, steps, state=state,
                                    every_steps=checkpoint_every, started=t_start)
        callbacks = [
            # must run before ValidationNME and the Checkpointer (callbacks run in list order)
            RecalibrateBatchNorm(model, recalibration_faces(data, cfg.bn_recalibration)),
            ValidationNME(model, data.val_images(), data.val_landmarks(), data.info,
                          batch_size=max(int(cfg.batch_size), 32)),
            NaNGuard(run.dir, cfg.learning_rate),
            checkpointer,
            keras.callbacks.CSVLogger(str(run.dir / LOG), append=run.resuming and initial_epoch > 0),
            keras.callbacks.TensorBoard(log_dir=str(run.dir / TB_DIR), write_graph=False,
                                        profile_batch=0, update_freq="epoch"),
            *extra_callbacks,
        ]
        if v == 2:
            callbacks.append(EpochLine(epochs))
        hist = fit_on.fit(ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                          callbacks=callbacks, verbose=1 if v == 1 else 0)
        history = dict(hist.history)
    else:
        history = {}
        if v:
            print(f"{run.dir}: already trained for {epochs} epochs; writing the final model again "
                  f"(raise --epochs to train longer)", flush=True)

    final_state = read_state(run.dir) or {}
    out = None
    if output is not None and run.chief and (run.best.is_file() or run.last.is_file()):
        out = export_final(run.best if run.best.is_file() else run.last, Path(output))
    return TrainResult(run_dir=run.dir, output=out, best_val_nme=final_state.get("best_val_nme"),
                       best_epoch=final_state.get("best_epoch"),
                       epochs_done=int(final_state.get("epoch", 0)),
                       elapsed_s=float(final_state.get("elapsed_s", time.time() - t_start)),
                       initial_epoch=initial_epoch, history=history)


def export_final(checkpoint: Path, output: Path) -> Path:
    """Write the selected checkpoint's model (without optimizer state) to `output` atomically."""
    model = keras.models.load_model(checkpoint, compile=False)
    try:
        from cnn_model import save_model  # noqa: PLC0415
    except ImportError:
        save_model = None
    if output.suffix != ".keras":
        raise ConfigError(f"--output {output}: model files must end in .keras")
    if save_model is not None:
        save_model(model, output)
    else:
        save_checkpoint(model, output)
    return output
