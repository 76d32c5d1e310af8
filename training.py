"""Shared trainer machinery (docs/ARCHITECTURE.md): used by teacher_trainer.py and student_trainer.py.

* Configuration: `build_parser(description)` adds --preset, --config, --output and every
  TrainConfig field; `config_from_args(args)` builds the `TrainConfig` from the published defaults,
  then the preset (`--preset paper|quick`), then an optional `--config FILE.json`, then explicit
  options; `run_dataset(cfg)` reads the dataset (a custom spec) once, where a run starts, and the
  trainers pass that DatasetInfo down.
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
  written to the output path and a one-line summary is printed. fit runs inside
  `cnn_model.fused_batchnorm()`: BatchNormalization uses TensorFlow's fused kernel in training mode
  (same results, faster on CPU; LANDMARKS_FUSED_BN=0 turns it off).

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

from errors import ConfigError, DataFormatError, ModelError, TrainingError
from runtime import quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import cnn_model  # noqa: E402  (also registers the models' custom objects for load_model)
import configuration as C  # noqa: E402
import data_util as du  # noqa: E402
import dataset_formats as fmt  # noqa: E402
from configuration import TrainConfig  # noqa: E402
from metrics import compare_to_mean_shape, nme_per_image  # noqa: E402
from safe_io import (OutputLock, atomic_path, atomic_write_json, check_output_file, claim_folder,  # noqa: E402
                     file_digest, folder_contents, read_extra, read_json, read_owner, write_owner)

LAST = "last.keras"
BEST = "best.keras"
STATE = "state.json"
LOG = "log.csv"
TB_DIR = "tensorboard"

# Settings that change what is trained: they must match between a run folder's config.json and
# the current config to resume (learning rate, decay, epochs and speed settings may change).
# The run's kind (teacher-tough, student-kd, ...), the effective --aug-copies and the student's
# teacher files are compared too (run_identity).
RESUME_KEYS = ("dataset", "input_size", "batch_size", "seed", "val_fraction", "max_faces", "augment",
               "student_mode", "width_multiplier", "teacher_dropout", "prepared_dir", "root",
               "loss_preset", "asm_variance", "asm_align", "weights", "custom_spec", "bn_recalibration",
               "teacher_flip_test")
LOCK = ".lock"
FINAL = "model.keras"          # the final model when no --output is given: in the run folder
RUN_COMMAND = "training run"   # the owner marker's command for a run folder (safe_io.claim_folder)
# What a run folder holds: a folder with only these (and config.json of a TrainConfig) is a run
# folder written before the owner marker existed.
DATA = "data.json"             # content digests of what the run trains on (Run.check_data)
RUN_NAMES = {"config.json", "log.csv", TB_DIR, LAST, BEST, STATE, FINAL, DATA, "teacher_cache"}


# ----------------------------------------------------------------------------------------------
# Configuration from the command line
# ----------------------------------------------------------------------------------------------


def build_parser(description: str, skip=(), choices: Optional[dict] = None,
                 run_options: bool = True) -> argparse.ArgumentParser:
    """A parser with --preset, --config, every TrainConfig field not in `skip` and, for a trainer
    (`run_options`), --output, --checkpoint-every and --verbose."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=sorted(C.PRESETS), default="paper",
                        help="published settings ('paper', default) or a quick CPU run ('quick': "
                             f"{C.PRESETS['quick']['input_size']} px, no augmentation, a student's last "
                             f"{C.PRESETS['quick']['student_freeze_batchnorm_epochs']} epochs with BatchNorm "
                             f"frozen; demo.py's)")
    parser.add_argument("--config", metavar="FILE.json", default=None,
                        help="JSON experiment configuration (TrainConfig fields); explicit options win")
    if run_options:
        _add_run_options(parser)
    C.add_dataclass_args(parser, TrainConfig, skip=skip, choices=choices)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """What only a training run needs: where its model goes, how often it checkpoints, its output."""
    parser.add_argument("--output", metavar="FILE.keras", default=None,
                        help="where the final (best) model is written (default: model.keras in the "
                             "run folder; a shipped model in models/ is never a default output); "
                             "an existing file this run did not write is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output this run did not write, and write into "
                             "a --run-dir that holds files the trainers did not make")
    parser.add_argument("--checkpoint-every", metavar="K", type=int, default=0,
                        help="also write last.keras every K training steps (0: once per epoch)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal)")


def config_from_args(args: argparse.Namespace, trainer: str = "student", **fixed) -> TrainConfig:
    """Defaults < preset (configuration.PRESETS; the `trainer`'s epochs) < --config file < explicit
    options (< `fixed`, e.g. the CLI's own choices)."""
    base = C.preset_settings(getattr(args, "preset", None) or "paper", trainer)
    file_values: dict = {}
    if getattr(args, "config", None):
        file_values = load_config_file(args.config)
        if not isinstance(file_values, dict):
            raise ConfigError(f"{args.config}: a configuration file holds one JSON object")
        file_values.pop("type", None)
        file_values.pop("run", None)       # a run folder's config.json: its identity, not a setting
        file_values = check_config_types(args.config, file_values)
        base.update(file_values)
    cfg = C.dataclass_from_args(TrainConfig, args, base)
    # a preset's frozen epochs fit the run's epochs; a file's or an explicit value is taken as given
    if getattr(args, "freeze_batchnorm_epochs", None) is None and "freeze_batchnorm_epochs" in base \
            and "freeze_batchnorm_epochs" not in file_values:
        cfg.freeze_batchnorm_epochs = C.preset_frozen_epochs(cfg.freeze_batchnorm_epochs, cfg.epochs)
    for key, value in fixed.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.dataset = cfg.dataset.lower()   # a custom spec names its data: run_dataset(cfg)
    return cfg.validate()


def check_config_types(path, values: dict) -> dict:
    """The values of a --config file checked against TrainConfig's field types (issue 36: "abc",
    a list or null ended in a traceback, 2.7 epochs and true epochs were taken): bool for a bool
    field, a whole number for an int (2.0 is 2), a number for a float, a string for a str, null
    only for an Optional one. Unknown keys are left to the dataclass (its own error)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    out = dict(values)
    for key, value in values.items():
        kind = types.get(key)
        if kind is None:
            continue
        optional = kind.startswith("Optional[")
        base = kind[len("Optional["):-1] if optional else kind
        if value is None:
            ok = optional
        elif base == "bool":
            ok = isinstance(value, bool)
        elif base == "int":
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and \
                math.isfinite(value) and float(value).is_integer()
            if ok:
                out[key] = int(value)
        elif base == "float":
            ok = not isinstance(value, bool) and isinstance(value, (int, float))
        elif base == "str":
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            want = {"bool": "true or false", "int": "a whole number", "float": "a number",
                    "str": "a string"}.get(base, base)
            raise ConfigError(f"{path}: \"{key}\": {json.dumps(value)[:60]} is not {want}"
                              f"{' (or null)' if optional else ''}; fix the configuration file")
    return out


def load_config_file(path) -> dict:
    """Read a JSON experiment configuration (--config, one per experiment, HRNet-style)."""
    # bounded, and one line for any JSON problem (nested too deeply, not UTF-8, a device)
    return read_json(path, what="configuration file", error=ConfigError,
                     hint="a JSON object of TrainConfig fields (see a run folder's config.json)")


def run_dataset(cfg: TrainConfig, info: Optional[C.DatasetInfo] = None) -> C.DatasetInfo:
    """The run's dataset: `info` when the caller already read it, else cfg's custom spec
    (dataset_formats.read_custom_spec, read here) or its built-in dataset. cfg.dataset becomes its
    name (a spec names its data). The trainers call it once, first, and pass the result down."""
    if info is None:
        info = fmt.resolve_dataset(cfg.dataset, cfg.custom_spec)
    cfg.dataset = info.name
    return info


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
        _patch_keras_multiworker_logs()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy {name!r}: choose default, mirrored or multiworker")


def _patch_keras_multiworker_logs() -> None:
    """Keras 3 (3.15) averages each step's scalar logs over MultiWorkerMirroredStrategy replicas with
    strategy.reduce("MEAN", v, axis=0), which fails on a scalar ("Invalid reduction dimension 0";
    keras-team/keras#20585). Scalars are averaged with axis=None instead; everything else goes to
    Keras's own function. Idempotent."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "kd_multiworker_patch", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(
                strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(values, strategy, reduction)

        def mean(v):
            if not isinstance(v, tf.distribute.DistributedValues):
                return v
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica.kd_multiworker_patch = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def build_before_fit(model: keras.Model, strategy, element_spec) -> None:
    """Build the compiled loss and metrics from the batch's shapes before fit, under the strategy.

    Keras 3 (3.15) builds them in fit from a first batch that it averages across replicas with
    strategy.reduce, which raises under MultiWorkerMirroredStrategy ("unsupported type PerReplica";
    keras-team/keras#20585). Building from the dataset's element_spec first, then skipping that step,
    lets fit run under MultiWorkerMirroredStrategy (tests/test_multiworker.py)."""
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """Adam with inverse-time decay per step: lr / (1 + lr_decay * step) (METHOD.md section 6), or
    with --lr-schedule cosine a cosine decay to 0 over epochs x steps_per_epoch steps: for a fixed
    budget of steps the annealed model is the better one (the published schedule barely decays in
    a short run: lr x 0.91 after 1000 steps, and the validation NME swings by several points)."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.CosineDecay(
            float(cfg.learning_rate), decay_steps=max(1, int(cfg.epochs) * int(steps_per_epoch))))
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        initial_learning_rate=float(cfg.learning_rate), decay_steps=1,
        decay_rate=float(cfg.lr_decay))
    return keras.optimizers.Adam(learning_rate=schedule)


# ----------------------------------------------------------------------------------------------
# Prepared data (read by data_util.load_prepared, served by data_util.TrainData.dataset)
# ----------------------------------------------------------------------------------------------


def _prepare_command(cfg: TrainConfig) -> str:
    data = f"--custom-spec {cfg.custom_spec}" if cfg.custom_spec else f"--dataset {cfg.dataset}"
    return (f"python data_util.py prepare {data} --input-size {cfg.input_size}"
            + (f" --root {cfg.root}" if cfg.root else ""))


def ensure_prepared(cfg: TrainConfig, info: Optional[C.DatasetInfo] = None) -> Path:
    """The prepared folder of cfg; prepare it (generating the embedded synthetic data) if missing.
    `info`: the run's dataset (run_dataset)."""
    out = cfg.resolved_prepared_dir()
    if du.prepared_complete(out):
        return out
    hint = _prepare_command(cfg)
    if cfg.prepared_dir and not cfg.root and Path(cfg.prepared_dir).exists():
        raise DataFormatError(f"{out}: not a complete prepared folder (manifest.json missing); "
                              f"run `{hint} --out-dir {cfg.prepared_dir}` again")
    if cfg.prepared_dir and not cfg.root and not cfg.custom_spec:
        # a mistyped --prepared-dir used to be filled with the embedded synthetic faces, and the run
        # trained on them without a word (issue 36)
        raise DataFormatError(f"--prepared-dir {cfg.prepared_dir}: no such folder; prepare your data "
                              f"there with `{hint.replace(' --dataset', ' --root PATH --dataset', 1)} "
                              f"--out-dir {cfg.prepared_dir}`, or leave --prepared-dir out (the "
                              f"default folder of the data named by --dataset / --root)")
    print(f"preparing {cfg.dataset} at {cfg.input_size} px into {out} ...", flush=True)
    du.prepare(cfg.prepare_config(), progress=sys.stderr.isatty(), info=info)
    if not du.prepared_complete(out):
        raise DataFormatError(f"{out}: preparation did not complete; run `{hint}` and read its errors")
    return out


def augment_recipe(cfg: TrainConfig):
    """The augmentation of a run (offline copies and online batches): the published recipe, with
    scale and shift jitter when cfg.aug_jitter (image_utility.AugmentConfig.jitter)."""
    import image_utility as iu  # noqa: PLC0415

    return iu.AugmentConfig.jitter() if cfg.aug_jitter else iu.AugmentConfig()


def online_augment(cfg: TrainConfig, info: C.DatasetInfo) -> Optional[du.AugmentFn]:
    """The per-batch augmentation of a run (data_util.default_online_augment with the run's
    augment_recipe) when cfg.augment == 'online', else None: what the trainers train on and what
    the BatchNorm re-estimation draws (recalibration_images)."""
    return du.default_online_augment(info, augment_recipe(cfg)) if cfg.augment == "online" else None


def ensure_augmented(cfg: TrainConfig, prepared_dir: Path,
                     info: Optional[C.DatasetInfo] = None) -> Optional[Path]:
    """train_aug/ (offline augmented copies) when cfg.augment == 'offline'; written if missing.

    data_util.augment_prepared is idempotent: it reuses copies written with the same settings."""
    if cfg.augment != "offline":
        return None
    aug_dir = prepared_dir / "train_aug"
    copies = cfg.aug_copies if cfg.aug_copies is not None else run_dataset(cfg, info).aug_copies
    if int(copies) == 0:   # --aug-copies 0, or a custom spec's "aug_copies": 0: the faces as they are
        return None
    du.augment_prepared(prepared_dir, copies=copies, cfg=augment_recipe(cfg), progress=sys.stderr.isatty())
    if not du.prepared_complete(prepared_dir, "train_aug"):
        raise DataFormatError(f"{aug_dir}: augmentation did not complete; run `python data_util.py "
                              f"augment --prepared-dir {prepared_dir}` and read its errors")
    return aug_dir



def load_training_data(cfg: TrainConfig, need_soft: bool = False,
                       info: Optional[C.DatasetInfo] = None) -> du.TrainData:
    """Prepared (and, if asked, augmented) data with its validation split; `info`: the run's
    dataset (run_dataset; read from cfg when not given)."""
    info = run_dataset(cfg, info)
    prepared = ensure_prepared(cfg, info)
    aug_dir = ensure_augmented(cfg, prepared, info)
    if need_soft:
        ensure_soft_landmarks(cfg, prepared)
    train = du.load_prepared(prepared, "train")
    aug = du.load_prepared(prepared, "train_aug") if aug_dir is not None else None
    return du.TrainData(cfg, prepared, train, aug, info=info)


def ensure_soft_landmarks(cfg: TrainConfig, prepared_dir: Path) -> None:
    """soft_landmarks.npy beside landmarks.npy (train, train_aug), fitted at cfg.asm_variance
    (Procrustes-aligned first with cfg.asm_align) on the training pool (asm_soft_landmarks: train +
    train_aug unless asm.npz records --fit-on plain); written (asm_soft_landmarks.make_soft_landmarks)
    when missing, fitted at another variance or alignment or on other data
    (asm_soft_landmarks.soft_landmarks_current). Soft files without an asm.npz are taken as supplied."""
    prepared_dir = Path(prepared_dir)
    splits = ["train"] + (["train_aug"] if du.prepared_complete(prepared_dir, "train_aug") else [])
    have = all((prepared_dir / s / "soft_landmarks.npy").is_file() for s in splits)
    if have and not (prepared_dir / "asm.npz").is_file():
        return
    import asm_soft_landmarks as asm  # noqa: PLC0415  (a module above data_util: imported when used)

    if have and asm.soft_landmarks_current(prepared_dir, float(cfg.asm_variance), bool(cfg.asm_align)):
        return
    print(f"fitting the shape model ({100 * cfg.asm_variance:.0f}% variance"
          f"{', aligned' if cfg.asm_align else ''}) and writing soft landmarks into {prepared_dir} ...",
          flush=True)
    asm.make_soft_landmarks(prepared_dir, variance=float(cfg.asm_variance), align=bool(cfg.asm_align),
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
    fn = cnn_model.traced_call(model, training=False)   # one trace per model, any batch size
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
    statistics from a fixed set of training crops (recalibration_images,
    cnn_model.recalibrate_batchnorm), in batches of the size each replica trains on."""

    def __init__(self, model, images: np.ndarray, batch_size: int):
        super().__init__()
        self.target = model
        self.images = images
        self.batch_size = batch_size

    def recalibrate(self) -> None:
        if len(self.images):
            cnn_model.recalibrate_batchnorm(self.target, self.images.astype(np.float32) / np.float32(255.0),
                                  self.batch_size)

    def on_epoch_end(self, epoch, logs=None):
        self.recalibrate()


def recalibrate_unless_worse(recalibrator: RecalibrateBatchNorm, model, val_images, val_landmarks,
                             info, batch_size: int, verbose: int = 0) -> bool:
    """Re-estimate the BatchNorm statistics before a run that is frozen from its first step, unless
    the model's own statistics score better on the validation faces; returns whether the new ones
    were kept. A model already trained with BatchNorm frozen depends on the statistics it was frozen
    at: re-estimating those of the shipped Tough teacher (5.57% test NME) took it to 19.20%
    (bench/studies/batchnorm/freeze_batchnorm.md), and a frozen fine-tune from there spent its images
    recovering. Without validation faces the statistics are re-estimated."""
    if len(val_images) == 0:
        recalibrator.recalibrate()
        return True
    own = model.get_weights()   # recalibration changes only the moving statistics among them
    nme_own = mean_nme(predict_images(model, val_images, batch_size), val_landmarks, info)
    recalibrator.recalibrate()
    nme_new = mean_nme(predict_images(model, val_images, batch_size), val_landmarks, info)
    keep_new = bool(nme_new <= nme_own) or not np.isfinite(nme_own)
    if not keep_new:
        model.set_weights(own)
    if verbose:
        print(f"BatchNorm statistics before the frozen epochs: validation NME {100 * nme_own:.2f}% "
              f"with the model's own, {100 * nme_new:.2f}% re-estimated; keeping "
              f"{'the re-estimated' if keep_new else 'its own'}", flush=True)
    return keep_new


def replica_batch_size(cfg: TrainConfig, strategy=None) -> int:
    """The batch one replica normalises in a training step: the global batch over the replicas."""
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    return max(1, int(cfg.batch_size) // replicas)


def recalibration_images(data: du.TrainData, count: int,
                         augment_fn: Optional[du.AugmentFn] = None) -> np.ndarray:
    """`count` crops of the training pool (seeded draw over the faces and their offline copies,
    never validation faces), uint8, in random order; with online augmentation each is augmented as
    training does.

    Why the pool and not the plain faces: BatchNorm must normalise as it did in training, where every
    batch mixed plain and augmented crops. Statistics of plain faces alone shift every layer: the
    shipped Tough teacher (offline augmentation) scored test MSE 0.00143 with 256 plain faces and
    0.00098 with 1024 pool crops, the converged L2 student 0.00019 and 0.00016
    (bench/studies/batchnorm/precise_bn.md).
    Drawn rather than the first rows because official files are grouped by source (LFPW, HELEN...)."""
    if count <= 0 or data.size == 0:
        return np.zeros((0,), np.uint8)
    rng = np.random.default_rng([int(data.cfg.seed), 7919])
    pool = np.sort(rng.choice(data.size, min(int(count), data.size), replace=False))   # sorted: one pass over the files
    images = data.pool_images(pool)
    if augment_fn is not None:
        points = data.pool_landmarks(pool)
        aug_rng = np.random.default_rng([int(data.cfg.seed), 7919, 1])
        images = np.stack([augment_fn(img, pts, aug_rng)[0] for img, pts in zip(images, points)])
    # Shuffled, so that each re-estimation batch mixes plain faces and copies as a training batch
    # does (the pool lists the plain faces first; batches of one kind normalise differently).
    return np.asarray(images)[rng.permutation(len(pool))]


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
        self.step_offset = 0      # batches of this epoch done before a mid-epoch resume

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
            self._fail(self.step_offset + batch + 1)

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
        if not self.every_steps:
            return
        it = self._iterations()
        in_epoch = it - self.epoch * self.steps_per_epoch   # also right after a mid-epoch resume
        if 0 < in_epoch < self.steps_per_epoch and it % self.every_steps == 0:
            self._write(self.epoch, dict(logs or {}), mid_epoch_step=in_epoch)

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
    mean_shape_val_nme: Optional[float] = None   # the mean training shape on the validation faces

    def summary(self, what: str) -> str:
        nme = "n/a" if self.best_val_nme is None else f"{100 * self.best_val_nme:.2f}%"
        floor = "" if self.mean_shape_val_nme is None else \
            f" (mean training shape: {100 * self.mean_shape_val_nme:.2f}%)"
        return (f"{what}: best validation NME {nme} (inter-ocular){floor} at epoch {self.best_epoch}, "
                f"{self.epochs_done} epochs, {self.elapsed_s:.0f} s; model -> {self.output}")

    def warning(self, what: str) -> Optional[str]:
        """A line when the best model is no better than the mean training shape (or not finite)."""
        best, floor = self.best_val_nme, self.mean_shape_val_nme
        how = compare_to_mean_shape(best, floor)
        if how is None:
            return None
        return (f"{what}: best validation NME {100 * best:.4g}% is {how} the mean training shape's "
                f"{100 * floor:.2f}% (no model at all); train longer, lower --learning-rate, or "
                f"check the data")

    def report(self, what: str, verbose: Optional[int] = None) -> None:
        """The trainers' last words: the summary line (unless silent), and the mean-shape warning
        on stderr."""
        if verbosity(verbose):
            print(self.summary(what), flush=True)
        warning = self.warning(what)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)


def mean_shape_nme(data) -> Optional[float]:
    """Validation NME (fraction) of the mean training shape: the floor a trained model must beat."""
    val = data.val_landmarks()
    if len(val) == 0:
        return None
    mean = data.train_face_landmarks().mean(axis=0).reshape(1, -1)
    return mean_nme(np.repeat(mean, len(val), axis=0), val, data.info)


def is_chief(strategy) -> bool:
    """False on the non-chief workers of a MultiWorkerMirroredStrategy (they write elsewhere)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and
                                             int(resolver.task_id or 0) == 0)


def run_identity(cfg: TrainConfig, what: str, extra: Optional[dict] = None,
                 info: Optional[C.DatasetInfo] = None) -> dict:
    """What a run trains beyond RESUME_KEYS: its kind (teacher-tough, student-kd, ...), the
    effective number of offline copies, "aug_jitter": True when the augmentation is jittered (absent
    otherwise, as in runs recorded before the option) and `extra` (e.g. the student's teacher files)."""
    copies = None
    if cfg.augment == "offline":
        copies = cfg.aug_copies if cfg.aug_copies is not None else run_dataset(cfg, info).aug_copies
    jitter = {"aug_jitter": True} if cfg.aug_jitter and cfg.augment != "none" else {}
    return {"what": str(what), "aug_copies": copies, **jitter, **(extra or {})}


def _identity_name(key: str) -> str:
    return {"what": "kind", "aug_copies": "--aug-copies", "aug_jitter": "--aug-jitter"}.get(key, f"--{key}")


def file_identity(path) -> Optional[str]:
    """'<absolute path> sha1:<first 16 hex digits>' of a file (None for None): a teacher's
    identity in a student run (the same path holding another model is another teacher)."""
    if path is None:
        return None
    path = Path(path).resolve()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{path} sha1:{h.hexdigest()[:16]}"


class RunFolderLock(OutputLock):
    """The run folder's lock: flock on <run>/.lock (LOCK), inside the folder and kept there on
    release (a run folder's own file), released by the system when the process ends, even on kill
    -9; the lock file names the holder, host included. A held lock -> ConfigError naming the holder
    and --run-dir. A lock this process took for an earlier run of the same folder is taken over."""

    keep_file = True
    holder_host = True
    unknown_holder = "unknown process"

    def __init__(self, run_dir: Path):
        super().__init__(run_dir, "--run-dir")
        self.run_dir = Path(run_dir)
        self.path = (self.run_dir / LOCK).resolve()

    def unwritable_error(self, err: OSError) -> ConfigError:
        return ConfigError(run_dir_error(self.run_dir, err.strerror or str(err)))

    def busy_error(self, holder: str) -> ConfigError:
        return ConfigError(f"{self.run_dir}: another trainer is using this run folder ({holder}); "
                           f"wait for it to finish, or pass --run-dir NEW_FOLDER")


class Run:
    """A run folder: lock, config check, resume state, logs.

    The folder is locked (LOCK, flock) for as long as this process trains in it: a second trainer
    on the same folder stops with one line naming the holder. A resume is refused when a setting
    that changes what is trained differs (RESUME_KEYS and run_identity). `identity` adds entries
    to the run's identity (the student's teacher files).

    Under MultiWorkerMirroredStrategy every worker must save (collective ops), so non-chief
    workers write into <run>/.worker-<id>/ and do not export the final model."""

    def __init__(self, cfg: TrainConfig, what: str, strategy=None, identity: Optional[dict] = None,
                 info: Optional[C.DatasetInfo] = None,
                 output=None, overwrite: bool = False, inputs: Optional[dict] = None):
        self.cfg = cfg
        self.what = what
        self.identity = run_identity(cfg, what, identity, info)
        self.dir = default_run_dir(cfg, what)
        self.chief = True if strategy is None else is_chief(strategy)
        if not self.chief:
            self.dir = self.dir / f".worker-{int(strategy.cluster_resolver.task_id or 0)}"
        self._output_lock = self._lock = None
        existed = self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(run_dir_error(self.dir, _unwritable_reason(self.dir, err))) from None
        try:
            self._lock = RunFolderLock(self.dir).acquire()   # before touching anything another trainer owns
        except BaseException:
            if not existed and not folder_contents(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)
            raise
        try:
            # the run folder is written and cleared only when the trainers made it (safe_io)
            marked = read_owner(self.dir) is not None
            adopted = claim_folder(self.dir, RUN_COMMAND, f"{what} run", overwrite=overwrite,
                                   option="--run-dir", recognise=looks_like_run,
                                   conflicts=RUN_NAMES) and not marked
            self.output = None
            if self.chief:
                self.output = Path(output) if output else self.dir / FINAL
                self._output_lock = OutputLock(self.output, "--output").acquire()
                made = list(self.outputs_written().values())
                if adopted and self.output.is_file() and exported_from(
                        self.output, [self.dir / BEST, self.dir / LAST]):
                    # a run folder of an earlier version (no marker, so no record of its output):
                    # the output holding exactly its checkpoint's weights is its own export
                    made.append(file_digest(self.output))
                check_output_file(self.output, made_here=made, inputs=inputs, overwrite=overwrite)
            self._open()
        except BaseException:
            self.release()
            raise

    def check_data(self, prepared_dir=None, before_data_work: bool = False) -> None:
        """Refuse to resume on data or a spec that changed since the run began (content digests,
        data_digests); on a fresh start (or a run that recorded none) record them. Before the data
        work only the parts present on both sides are compared (soft landmarks being refitted are
        compared after); a failure releases the run folder's lock."""
        path = self.dir / DATA
        try:
            recorded = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError, RecursionError):
            recorded = None
        now = data_digests(self.cfg, self.what, prepared_dir)
        if isinstance(recorded, dict) and (self.state is not None or before_data_work):
            keys = sorted(set(recorded) & set(now)) if before_data_work else sorted(set(recorded) | set(now))
            changed = [k for k in keys if recorded.get(k) != now.get(k)]
            if changed:
                self.release()
                where = "the custom spec file" if changed[0] == "custom_spec" else \
                    f"{(prepared_dir or self.cfg.resolved_prepared_dir())}/{changed[0]}"
                raise ConfigError(f"{self.dir} holds a run on other data: {where} changed since it "
                                  f"began (content, not name, compared; e.g. prepared again with "
                                  f"another --margin, or the spec edited); pass --run-dir NEW_FOLDER, "
                                  f"or --no-resume to start this one again")
        if not before_data_work and (recorded != now):
            atomic_write_json(path, now)

    def outputs_written(self) -> dict:
        """{absolute path: content digest} of the final models this run folder's runs wrote."""
        out = read_extra(self.dir, RUN_COMMAND).get("outputs")
        return out if isinstance(out, dict) else {}

    def record_output(self, path: Path) -> None:
        """Note in the run folder's marker that this run wrote `path` (its content digest): the
        same command run again may write it again; any other file there is never replaced."""
        written = {**self.outputs_written(), str(Path(path).resolve()): file_digest(path)}
        write_owner(self.dir, RUN_COMMAND, f"{self.what} run", outputs=written)

    def _open(self):
        for stale in self.dir.glob(".*.tmp*"):   # safe_io temporaries of a run killed mid-write
            if stale.is_file():
                stale.unlink(missing_ok=True)
        self.state = None
        self.previous_config = None
        if self.cfg.resume and (self.dir / LAST).is_file():
            self._check_compatible()
            self.state = read_state(self.dir) or {}
        else:   # a fresh start: stale files of an earlier run must not mix with this one
            for name in (LAST, BEST, STATE, LOG, DATA):
                if (self.dir / name).exists():
                    (self.dir / name).unlink()
        atomic_write_json(self.dir / "config.json", C.config_record(self.cfg, {"run": self.identity}))

    def _check_compatible(self):
        try:
            old = json.loads((self.dir / "config.json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(old, dict):
            return
        self.previous_config = old
        new = dataclasses.asdict(self.cfg)
        fix = "pass --run-dir NEW_FOLDER, or --no-resume to start this one again"
        diff = [k for k in RESUME_KEYS if k in old and old.get(k) != new.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(f"{self.dir} holds a run with --{k.replace('_', '-')} {old.get(k)!r} "
                              f"(now {new.get(k)!r}); {fix}")
        self.check_data(before_data_work=True)
        old_id = old.get("run")
        if not isinstance(old_id, dict):    # a folder written before the identity was recorded
            return
        for k in sorted(set(old_id) | set(self.identity)):
            if old_id.get(k) != self.identity.get(k):
                raise ConfigError(f"{self.dir} holds a run with {_identity_name(k)} "
                                  f"{old_id.get(k)!r} (now {self.identity.get(k)!r}); {fix}")

    def release(self) -> None:
        """Give up the run folder's and the output's locks (also done by the system when the
        process ends)."""
        out_lock, self._output_lock = getattr(self, "_output_lock", None), None
        if out_lock is not None:
            out_lock.release()
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:     # a no-op when a later run of this folder took it over
            lock.release()

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
        return keras.models.load_model(path, compile=True)
    except Exception as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{path}: cannot resume from this checkpoint ({first[:200]}); delete it or "
                         f"pass --no-resume to start again") from None


def resumed_optimizer(model, cfg: TrainConfig, previous: Optional[dict], steps_per_epoch: int = 1):
    """The checkpoint's optimizer, or a new Adam with the current schedule carrying its state
    (moments and iteration count: a new schedule continues from the same step)."""
    old = getattr(model, "optimizer", None)
    changed = previous is not None and (any(
        float(previous.get(k, getattr(cfg, k))) != float(getattr(cfg, k))
        for k in ("learning_rate", "lr_decay"))
        or previous.get("lr_schedule", "inverse-time") != cfg.lr_schedule
        or (cfg.lr_schedule == "cosine" and int(previous.get("epochs", cfg.epochs)) != int(cfg.epochs)))
    if old is not None and not changed:
        return old
    new = make_optimizer(cfg, steps_per_epoch)
    new.build(model.trainable_variables)
    if old is not None and getattr(old, "built", False) and len(old.variables) == len(new.variables):
        cnn_model.carry_optimizer_state(old, new, model.trainable_variables)
        print(f"resuming with learning rate {cfg.learning_rate:g} ({cfg.lr_schedule}, decay "
              f"{cfg.lr_decay:g}, {cfg.epochs} epochs) at step "
              f"{int(keras.ops.convert_to_numpy(new.iterations))}", flush=True)
    return new


def freeze_batchnorm_and_recompile(cfg: TrainConfig, model: keras.Model, fit_on: keras.Model, strategy,
                                    frozen: bool, steps_per_epoch: int) -> bool:
    """Freeze (or release) the BatchNorm layers of `model` for --freeze-batchnorm-epochs and
    recompile `model` and `fit_on` with an optimizer over the new set of trainable variables that
    carries the old one's state (iteration count, so the schedule's position, and the moments of
    every variable still trained; a released layer's start at zero). Returns whether anything changed.
    A checkpoint written frozen reloads frozen (Keras saves `trainable`), with a matching optimizer."""
    if not cnn_model.set_batchnorm_frozen(model, frozen):
        return False
    old = model.optimizer
    with strategy.scope():
        new = make_optimizer(cfg, steps_per_epoch)
        cnn_model.carry_optimizer_state(old, new, model.trainable_variables)
        model.compile(optimizer=new, loss=model.loss, jit_compile=bool(cfg.jit_compile))
        if fit_on is not model:
            fit_on.compile(optimizer=new, jit_compile=bool(cfg.jit_compile))
    return True


def resume_position(state: dict, model, steps_per_epoch: int, run_dir: Path) -> tuple:
    """(epoch, step in that epoch) to resume at: the checkpoint's optimizer iteration count split
    into whole epochs and the steps done of the next one (a --checkpoint-every checkpoint written
    in mid-epoch resumes at its step, not at the epoch start). The iteration count is the model
    file's own, so a kill between writing last.keras and state.json changes nothing."""
    steps = max(1, int(steps_per_epoch))
    before = state.get("steps_per_epoch")
    if before is not None and int(before) != steps:
        raise ConfigError(f"{run_dir} holds a run of {int(before)} steps per epoch, the data now "
                          f"gives {steps} (the prepared or augmented faces changed); pass --run-dir "
                          f"NEW_FOLDER, or --no-resume to start this one again")
    try:
        it = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    except Exception:  # noqa: BLE001 - no optimizer state: trust state.json
        return int(state.get("epoch", 0)), int(state.get("step_in_epoch", 0))
    return divmod(it, steps)


def verbosity(verbose: Optional[int]) -> int:
    if verbose is not None:
        return int(verbose)
    return 1 if sys.stdout.isatty() else 2


def restore_or_build(cfg: TrainConfig, run: Run, strategy, build: Callable[[], keras.Model],
                     loss="mse", steps_per_epoch: int = 1) -> keras.Model:
    """The model to train, compiled once, in the strategy's scope: the run's last.keras when
    resuming (its optimizer state kept: moments and iteration count, the schedule position; a
    changed --learning-rate / --lr-decay takes effect from here on), else build() with a new
    optimizer. The run folder's lock is released if this fails."""
    try:
        with strategy.scope():
            if run.resuming:
                model = load_checkpoint(run.last)
                optimizer = resumed_optimizer(model, cfg, run.previous_config, steps_per_epoch)
            else:
                model = build()
                optimizer = make_optimizer(cfg, steps_per_epoch)
            model.compile(optimizer=optimizer, loss=loss, jit_compile=bool(cfg.jit_compile))
    except BaseException:
        run.release()
        raise
    return model


def fit_model(*, cfg: TrainConfig, run: Run, data: du.TrainData, strategy, model: keras.Model,
              fit_on: Optional[keras.Model] = None, targets: str = "landmarks",
              extra: Optional[dict] = None, augment_fn: Optional[du.AugmentFn] = None,
              output: Optional[Path] = None, verbose: Optional[int] = None,
              checkpoint_every: int = 0, extra_callbacks=()) -> TrainResult:
    """Train `model` (from restore_or_build) from where its run stands; write checkpoints, logs and
    the output. Releases the run folder's lock when done.

    fit_on: the keras.Model that fit() drives, compiled with model.optimizer (the student trainer's
    Distiller around the student); default the model itself. Checkpoints, validation and BatchNorm
    recalibration always use `model`. targets and extra: as data_util.TrainData.dataset (extra:
    pool-aligned arrays added to the batch's target dict, e.g. cached teacher predictions).
    """
    t_start = time.time()
    steps = data.steps_per_epoch()
    epochs = int(cfg.epochs)
    state = run.state
    fit_on = model if fit_on is None else fit_on
    run.check_data(data.prepared_dir)     # resume only on the data the run began with (content)
    try:
        if run.resuming:
            initial_epoch, start_step = resume_position(state, model, steps, run.dir)
        else:
            initial_epoch, start_step = 0, 0

        v = verbosity(verbose)
        if v and strategy.num_replicas_in_sync > 1:
            print(f"strategy {type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas",
                  flush=True)
        if run.resuming and (initial_epoch > 0 or start_step > 0) and v:
            at = f" step {start_step + 1}/{steps}" if start_step else ""
            print(f"resuming {run.dir} at epoch {initial_epoch + 1}/{epochs}{at}", flush=True)

        history = {}
        if initial_epoch < epochs:
            checkpointer = Checkpointer(model, run.dir, epochs, steps, state=state,
                                        every_steps=checkpoint_every, started=t_start)
            nan_guard = NaNGuard(run.dir, cfg.learning_rate)
            recalibrator = RecalibrateBatchNorm(model, recalibration_images(data, cfg.bn_recalibration,
                                                                            augment_fn),
                                                replica_batch_size(cfg, strategy))
            val_images, val_landmarks = data.val_images(), data.val_landmarks()
            # A mid-epoch resume first finishes that epoch (its remaining batches), then goes on;
            # the last --freeze-batchnorm-epochs run as a segment of their own, BatchNorm frozen.
            segments = [(initial_epoch, initial_epoch + 1, start_step)] if start_step else []
            if initial_epoch + (1 if start_step else 0) < epochs:
                segments.append((initial_epoch + (1 if start_step else 0), epochs, 0))
            freeze_at = epochs - int(cfg.freeze_batchnorm_epochs)
            segments = [part for first, end, skip in segments for part in (
                [(first, freeze_at, skip), (freeze_at, end, 0)] if first < freeze_at < end
                else [(first, end, skip)])]
            append = run.resuming and (initial_epoch > 0 or start_step > 0)
            # TensorFlow's fused batch-norm kernel for the training steps (and the BatchNorm
            # recalibration): same results, faster on CPU (cnn_model.fused_batchnorm)
            with cnn_model.fused_batchnorm():
                for first, end, skip in segments:
                    frozen = first >= freeze_at
                    if frozen and first == 0:
                        # frozen from the start (a fine-tune): statistics of these weights first
                        recalibrate_unless_worse(recalibrator, model, val_images, val_landmarks,
                                                 data.info, max(int(cfg.batch_size), 32), v)
                    # else the last epoch end re-estimated them (its checkpoint when resuming)
                    if freeze_batchnorm_and_recompile(cfg, model, fit_on, strategy, frozen, steps) and v:
                        print(f"epoch {first + 1}/{epochs}: BatchNorm "
                              f"{'frozen' if frozen else 'trained again'}", flush=True)
                    ds = data.dataset(first, end, targets=targets, extra=extra,
                                      augment_fn=augment_fn, start_step=skip)
                    nan_guard.step_offset = skip
                    callbacks = [
                        # must run before ValidationNME and the Checkpointer (list order)
                        recalibrator,
                        ValidationNME(model, val_images, val_landmarks, data.info,
                                      batch_size=max(int(cfg.batch_size), 32)),
                        nan_guard,
                        checkpointer,
                        keras.callbacks.CSVLogger(str(run.dir / LOG), append=append),
                        keras.callbacks.TensorBoard(log_dir=str(run.dir / TB_DIR),
                                                    write_graph=False, profile_batch=0,
                                                    update_freq="epoch"),
                        *extra_callbacks,
                    ]
                    if v == 2:
                        callbacks.append(EpochLine(epochs))
                    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                        build_before_fit(fit_on, strategy, ds.element_spec)
                    hist = fit_on.fit(ds, epochs=end, initial_epoch=first,
                                      steps_per_epoch=steps - skip, callbacks=callbacks,
                                      verbose=1 if v == 1 else 0)
                    for k, values in hist.history.items():
                        history.setdefault(k, []).extend(values)
                    append = True
        elif v:
            print(f"{run.dir}: already trained for {epochs} epochs; writing the final model again "
                  f"(raise --epochs to train longer)", flush=True)
        final_state = read_state(run.dir) or {}
        out = None
        output = output if output is not None else run.output
        if output is not None and run.chief and (run.best.is_file() or run.last.is_file()):
            out = export_final(run.best if run.best.is_file() else run.last, Path(output))
            run.record_output(out)
    finally:
        run.release()
    return TrainResult(run_dir=run.dir, output=out, best_val_nme=final_state.get("best_val_nme"),
                       best_epoch=final_state.get("best_epoch"),
                       epochs_done=int(final_state.get("epoch", 0)),
                       elapsed_s=float(final_state.get("elapsed_s", time.time() - t_start)),
                       initial_epoch=initial_epoch, history=history,
                       mean_shape_val_nme=mean_shape_nme(data))


def weights_file(cfg: TrainConfig) -> Optional[str]:
    """cfg.weights when it names a model file (not None or "imagenet")."""
    w = cfg.weights
    return w if w and str(w).lower() != "imagenet" and Path(w).exists() else None


def data_digests(cfg: TrainConfig, what: str, prepared_dir=None) -> dict:
    """Content digests of what a run trains on: the prepared faces (train/ landmarks, crop boxes
    and ids; train_aug/ when offline copies are used), the Tolerant teacher's soft landmarks and
    the custom spec file. Checked by content, not by name: data re-prepared with another margin
    into the same folder, or a spec edited in place, give other digests. Missing parts are left
    out (Run.check_data compares what both sides have before the data work, everything after)."""
    prepared = Path(prepared_dir) if prepared_dir is not None else cfg.resolved_prepared_dir()
    splits = ["train"]
    copies = cfg.aug_copies if cfg.aug_copies is not None else None
    if cfg.augment == "offline" and copies != 0:
        splits.append("train_aug")
    out = {}
    for split in splits:
        for name in ("landmarks.npy", "crop_boxes.npy", "meta.json") + (
                ("soft_landmarks.npy",) if what == "teacher-tolerant" else ()):
            digest = file_digest(prepared / split / name) if (prepared / split / name).is_file() else None
            if digest:
                out[f"{split}/{name}"] = digest
    if cfg.custom_spec and Path(cfg.custom_spec).is_file():
        out["custom_spec"] = file_digest(cfg.custom_spec)
    return out


def _layer_weights(path) -> Optional[list]:
    """[(name, array)] of the layer weights stored in a .keras file (its model.weights.h5, the
    optimizer's left out); None when it cannot be read."""
    import io  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    import h5py  # noqa: PLC0415

    try:
        with zipfile.ZipFile(path) as z:
            data = z.read("model.weights.h5")
        arrays = []
        with h5py.File(io.BytesIO(data), "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                    arrays.append((name, np.asarray(obj[()])))
            f.visititems(visit)
        return arrays
    except Exception:  # noqa: BLE001 - not a readable .keras file: not an export of ours
        return None


def exported_from(output: Path, checkpoints) -> bool:
    """True when `output` holds exactly the layer weights of one of `checkpoints` (export_final
    writes a checkpoint's model without its optimizer): how the final model of a run folder
    written before the owner marker is recognised as that run's own."""
    out = _layer_weights(output)
    if not out:
        return False
    for checkpoint in checkpoints:
        ref = _layer_weights(checkpoint) if Path(checkpoint).is_file() else None
        if ref and len(ref) == len(out) and all(
                a[0] == b[0] and a[1].shape == b[1].shape and np.array_equal(a[1], b[1])
                for a, b in zip(ref, out)):
            return True
    return False


def looks_like_run(folder: Path) -> bool:
    """True for a run folder written before the owner marker existed: only RUN_NAMES (and the
    workers' .worker-N folders), and a config.json of a TrainConfig when there is one."""
    names = [n for n in folder_contents(folder) if not n.startswith(".worker-")]
    if not set(names) <= RUN_NAMES:
        return False
    if "config.json" in names:
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(config, dict) and config.get("type") == "TrainConfig"
    return True


def export_final(checkpoint: Path, output: Path) -> Path:
    """Write the selected checkpoint's model (without optimizer state) to `output` atomically."""
    model = keras.models.load_model(checkpoint, compile=False)
    cnn_model.set_batchnorm_frozen(model, False)    # a plain model: fine-tuning it trains BatchNorm
    if output.suffix != ".keras":
        raise ConfigError(f"--output {output}: model files must end in .keras")
    cnn_model.save_model(model, output)
    return output
