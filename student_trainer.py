"""Train the student (METHOD.md sections 1, 5, 6): MobileNetV2 distilled from two frozen
EfficientNet-B3 teachers with KD-Loss, or the ablations and the L2 baseline.

    python student_trainer.py --dataset 300w                        (KD-Loss, both teachers)
    python student_trainer.py --dataset 300w --student-mode l2      (plain MSE baseline)
    python student_trainer.py --student-mode tough-only | tolerant-only
    python student_trainer.py --tough PATH --tolerant PATH --loss-preset paper

Teachers default to models/teachers/<dataset>_{tough,tolerant}.keras (teacher_trainer.py writes
them). With --augment offline (default) or none and --cache-teacher-predictions (default), each
teacher predicts every stored training image once before training (cached as .npy in the run folder,
keyed by the teacher file's size and modification time), so a KD epoch costs about an L2 epoch; with
--augment online the teachers run on every augmented batch. The best student (validation NME) is
written to <run folder>/model.keras (or --output; a shipped model in models/ is never replaced by
default).

The KD training step is `kd_loss.Distiller` (keras-io style; also importable as
student_trainer.Distiller): it holds the student and the frozen teachers, updates only the student,
logs the total loss and its main / tough / tolerant parts, and its call() and save() are the
student's. It lives beside KD-Loss, which needs no TensorFlow, so a GPU machine with only JAX can
train KD students (bench/gpu_models.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

from errors import ConfigError, ModelError, run_cli
from runtime import quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402
import keras  # noqa: E402

import configuration as C  # noqa: E402
import image_utility as iu  # noqa: E402
import training  # noqa: E402
from kd_loss import MODE_TEACHERS, MODES, Distiller, check_mode  # noqa: E402,F401  (Distiller: re-exported)
from safe_io import atomic_save_npy, atomic_write_json  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Teachers
# ----------------------------------------------------------------------------------------------


def default_teacher_path(dataset: str, kind: str, cfg: Optional[C.TrainConfig] = None) -> Path:
    """models/teachers/<dataset>_<kind>.keras (shipped), else the final model of the default
    teacher run folder (teacher_trainer.py without --output writes it there)."""
    shipped = C.MODELS_DIR / "teachers" / f"{dataset.lower()}_{kind}.keras"
    if shipped.is_file() or cfg is None:
        return shipped
    trained = C.RUNS_DIR / f"{dataset.lower()}-teacher-{kind}" / training.FINAL
    return trained if trained.is_file() else shipped


def _teacher_command(cfg: C.TrainConfig, kind: str) -> str:
    data = f"--custom-spec {cfg.custom_spec}" if cfg.custom_spec else f"--dataset {cfg.dataset}"
    cmd = f"python teacher_trainer.py {data} --teacher {kind}"   # runnable as printed, custom data too
    if cfg.input_size != 224:
        cmd += f" --input-size {cfg.input_size}"
    if cfg.root:
        cmd += f" --root {cfg.root}"
    if cfg.prepared_dir:
        cmd += f" --prepared-dir {cfg.prepared_dir}"
    return cmd


def load_teacher(cfg: C.TrainConfig, kind: str, path, num_points: int) -> keras.Model:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: the {kind.capitalize()} teacher is missing; train it with "
                         f"`{_teacher_command(cfg, kind)}` or pass --{kind} PATH")
    import cnn_model  # noqa: PLC0415

    model = cnn_model.load_model(path, expect_points=num_points, expect_input_size=cfg.input_size)
    model.trainable = False
    return model


def _teacher_key(path: Optional[Path], data: training.TrainData) -> dict:
    manifest = data.train.manifest
    key = {"pool": data.pool_key(), "prepared_dir": str(Path(data.prepared_dir).resolve()),
           "prepared": manifest.get("created"), "train_aug": manifest.get("train_aug"),
           "input_size": int(data.cfg.input_size)}
    if path is not None:
        st = Path(path).stat()
        key.update({"teacher": str(Path(path).resolve()), "size": int(st.st_size),
                    "mtime_ns": int(st.st_mtime_ns)})
    return json.loads(json.dumps(key, default=str))


def flip_test_predictions(teacher: keras.Model, images: np.ndarray, flip_permutation,
                          batch_size: int = 64) -> np.ndarray:
    """(P, 2N) normalised predictions: the mean of the teacher's landmarks on each crop and, mirrored
    back and re-indexed with the layout's flip permutation, on the crop's mirror image (the flip
    test of test.py --flip-test, here for the teachers' cached predictions)."""
    size = int(images.shape[2])
    n = len(flip_permutation)
    plain = training.predict_images(teacher, images, batch_size).reshape(len(images), n, 2)
    mirrored = training.predict_images(teacher, np.ascontiguousarray(images[:, :, ::-1]),
                                       batch_size).reshape(len(images), n, 2)
    return iu.flip_test_mean(plain, mirrored, size, flip_permutation).reshape(len(images), 2 * n)


def cached_teacher_predictions(run_dir: Path, kind: str, teacher: keras.Model,
                               teacher_path: Optional[Path], data: training.TrainData,
                               batch_size: int = 64, verbose: int = 1,
                               flip_test: bool = False) -> np.ndarray:
    """The teacher's predictions (P, 2N) for every image of the training pool, computed once and
    stored in <run>/teacher_cache/<kind>.npy (+ .json key: teacher file size/mtime, data, flip
    test). flip_test: the flip test's predictions (flip_test_predictions)."""
    cache_dir = Path(run_dir) / "teacher_cache"
    npy, meta = cache_dir / f"{kind}.npy", cache_dir / f"{kind}.json"
    key = {**_teacher_key(teacher_path, data), **({"flip_test": True} if flip_test else {})}
    if flip_test and not data.info.flip_pairs:
        raise ConfigError(f"--teacher-flip-test: the {data.info.name} layout has no flip pairs, so "
                          f"the mirrored crop's points cannot be matched back; add \"flip_pairs\" "
                          f"to the spec, or leave out --teacher-flip-test")
    if teacher_path is not None and npy.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()) == key:
                arr = np.load(npy)
                if arr.shape == (data.size, 2 * data.info.num_points) and np.all(np.isfinite(arr)):
                    return arr.astype(np.float32)
        except (OSError, ValueError):
            pass
    if verbose:
        print(f"caching the {kind} teacher's predictions on {data.size} training images ...",
              flush=True)
    chunk = max(int(batch_size), 1) * 8
    outs = []
    for i in range(0, data.size, chunk):
        images = data.pool_images(np.arange(i, min(i + chunk, data.size)))
        outs.append(flip_test_predictions(teacher, images, data.info.flip_permutation, batch_size)
                    if flip_test else training.predict_images(teacher, images, batch_size))
    arr = np.concatenate(outs, axis=0).astype(np.float32) if outs else \
        np.zeros((0, 2 * data.info.num_points), np.float32)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{teacher_path or kind}: the {kind} teacher predicts NaN/inf; retrain it")
    if teacher_path is not None:
        meta.unlink(missing_ok=True)          # the key is written after the array, never before
        atomic_save_npy(npy, arr)
        atomic_write_json(meta, key)
    return arr


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def default_output(cfg: C.TrainConfig, mode: str) -> Path:
    """The final model when no --output is given: in the run folder, never a shipped model."""
    return training.default_run_dir(cfg, f"student-{mode}") / training.FINAL


def train_student(cfg: C.TrainConfig, tough=None, tolerant=None, output=None,
                  builder: Optional[Callable] = None, verbose: Optional[int] = None,
                  checkpoint_every: int = 0, info: Optional[C.DatasetInfo] = None, overwrite: bool = False) -> training.TrainResult:
    """Train (or resume) the student in cfg.student_mode; returns the run's result.

    `tough` / `tolerant`: teacher paths (default models/teachers/...) or keras.Model objects.
    `builder(num_points, input_size)` replaces MobileNetV2 (tests use a tiny network). `info`: the
    dataset as main read it (training.run_dataset), else read here from cfg."""
    mode = check_mode(cfg.student_mode)
    info = training.run_dataset(cfg, info)   # a custom spec names cfg.dataset
    needs = dict(zip(("tough", "tolerant"), MODE_TEACHERS[mode]))
    given = {"tough": tough, "tolerant": tolerant}
    paths = {}
    for kind in ("tough", "tolerant"):   # fail fast, before any data or model work
        if not needs[kind] or isinstance(given[kind], keras.Model):
            continue
        paths[kind] = Path(given[kind]) if given[kind] else default_teacher_path(cfg.dataset, kind, cfg)
        if not paths[kind].is_file():
            raise ModelError(f"{paths[kind]}: the {kind.capitalize()} teacher is missing; train it "
                             f"with `{_teacher_command(cfg, kind)}` or pass --{kind} PATH")
    out = Path(output) if output else None     # default: model.keras in the run folder
    training.check_outputs(cfg, f"student-{mode}", out)

    strategy = training.setup_runtime(cfg)
    # the run folder (lock, resume check: the teacher files are part of what is trained) first
    run = training.Run(cfg, f"student-{mode}", strategy, info=info,
                       identity={k: training.file_identity(paths.get(k)) for k in needs if needs[k]},
                       output=out, overwrite=overwrite,
                       inputs={"--weights": training.weights_file(cfg),
                               **{f"--{k}": p for k, p in paths.items()}})
    try:
        data = training.load_training_data(cfg, info=info)
    except BaseException:
        run.release()
        raise
    v = training.verbosity(verbose)

    def build():
        if builder is not None:
            return builder(info.num_points, cfg.input_size)
        import cnn_model  # noqa: PLC0415
        return cnn_model.build_student(info.num_points, cfg.input_size,
                                       width_multiplier=cfg.width_multiplier, weights=cfg.weights)

    teachers = {}
    try:
        with strategy.scope():
            for kind in ("tough", "tolerant"):
                if not needs[kind]:
                    continue
                teachers[kind] = given[kind] if isinstance(given[kind], keras.Model) else \
                    load_teacher(cfg, kind, paths[kind], info.num_points)
                teachers[kind].trainable = False
    except BaseException:
        run.release()
        raise

    augment_fn = training.online_augment(cfg, info)
    student = training.restore_or_build(cfg, run, strategy, build,
                                       steps_per_epoch=data.steps_per_epoch())
    fit_on, extra = student, None
    try:
        if mode != "l2":
            with strategy.scope():
                fit_on = Distiller(student, teachers.get("tough"), teachers.get("tolerant"),
                                   loss_config=C.loss_config(cfg.loss_preset), mode=mode)
                fit_on.compile(optimizer=student.optimizer, jit_compile=bool(cfg.jit_compile))
            cached = cfg.cache_teacher_predictions and cfg.augment in ("offline", "none")
            if cfg.teacher_flip_test and not cached:
                raise ConfigError("--teacher-flip-test applies to cached teacher predictions: keep "
                                  "--cache-teacher-predictions and use --augment offline or none")
            if cached:
                extra = {kind: cached_teacher_predictions(run.dir, kind, model, paths.get(kind), data,
                                                          batch_size=max(int(cfg.batch_size), 32),
                                                          verbose=v, flip_test=cfg.teacher_flip_test)
                         for kind, model in teachers.items()}
    except BaseException:
        run.release()
        raise
    result = training.fit_model(cfg=cfg, run=run, data=data, strategy=strategy, model=student,
                                fit_on=fit_on, targets="landmarks" if mode == "l2" else "dict",
                                extra=extra, augment_fn=augment_fn, output=run.output, verbose=verbose,
                                checkpoint_every=checkpoint_every)
    result.report(f"student ({mode})", verbose)
    return result


def main(argv=None, builder: Optional[Callable] = None) -> int:
    parser = training.build_parser(__doc__.split("\n\n")[0],
                                   skip=("teacher_dropout", "teacher_stochastic_depth", "asm_variance",
                                         "asm_align"),
                                   choices={"student_mode": MODES})
    parser.add_argument("--tough", metavar="PATH", default=None,
                        help="Tough teacher (default models/teachers/<dataset>_tough.keras, else "
                             "runs/<dataset>-teacher-tough/model.keras)")
    parser.add_argument("--tolerant", metavar="PATH", default=None,
                        help="Tolerant teacher (default models/teachers/<dataset>_tolerant.keras, "
                             "else runs/<dataset>-teacher-tolerant/model.keras)")
    args = parser.parse_args(argv)
    cfg = training.config_from_args(args)
    info = training.run_dataset(cfg)          # the dataset (a custom spec) read once, here
    train_student(cfg, tough=args.tough, tolerant=args.tolerant, output=args.output, info=info,
                  builder=builder, verbose=args.verbose, checkpoint_every=args.checkpoint_every,
                  overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
