"""bench/tools/gpu_models.py, the prepared GPU-lease script (issue #11): it and the Distiller load none of
the project's TensorFlow modules and, where JAX is installed, import with TensorFlow absent (the GPU
machine has only JAX); its time-based cosine schedule decays the learning rate to zero over the time
share and stops there; its split files join back into the same model."""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

BENCH = ROOT / "bench" / "tools"   # gpu_models.py


def _run(code: str, backend: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=120)


def test_distiller_and_gpu_script_leave_the_tensorflow_modules_alone():
    """Importing the GPU script and the Distiller loads none of the project modules that need
    TensorFlow (training.py and the trainers import it at the top)."""
    out = _run("import sys\n"
               "sys.path.insert(0, 'bench/tools')\n"
               "import gpu_models\n"
               "from kd_loss import Distiller\n"
               "print(sorted(m for m in ('training', 'student_trainer', 'teacher_trainer') if m in sys.modules))\n",
               "tensorflow")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_distiller_and_gpu_script_import_without_tensorflow():
    """As on the GPU machine: TensorFlow absent (an import hook refuses it), the JAX backend."""
    out = _run("import sys\n"
               "class NoTF:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'tensorflow':\n"
               "            raise ImportError('no tensorflow here')\n"
               "sys.meta_path.insert(0, NoTF())\n"
               "sys.path.insert(0, 'bench/tools')\n"
               "import gpu_models\n"
               "from kd_loss import Distiller\n"
               "assert 'tensorflow' not in sys.modules\n"
               "import keras; print(keras.backend.backend(), Distiller.__name__)\n", "jax")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["jax", "Distiller"]


def _tiny(num_points=68, size=8):
    import keras

    inp = keras.Input((size, size, 3))
    x = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(2 * num_points)(x))


def test_train_for_decays_the_learning_rate_over_its_time_share():
    import keras

    sys.path.insert(0, str(BENCH))
    import gpu_models

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 8, 8, 3)).astype(np.float32)
    gt = rng.uniform(0.3, 0.7, (64, 68, 2)).astype(np.float32)
    y = gt.reshape(64, -1)
    model = _tiny()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    args = argparse.Namespace(seed=0, batch_size=8, quick=True, learning_rate=1e-2)
    logged = []
    t0 = time.time()
    run = gpu_models.train_for(model, x, y, 6.0, args, x[:8], gt[:8], "tiny",
                               lambda *a, **k: logged.append(a))
    wall = time.time() - t0
    assert 6.0 <= wall < 30.0                        # it stops at its share (plus one chunk)
    assert run["images"] > 0 and run["images"] % 8 == 0
    lrs = [h["lr"] for h in run["history"]]
    assert len(lrs) >= 3
    assert lrs[0] == pytest.approx(1e-2)             # the first chunk runs at the full rate
    assert all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.25e-2                         # near the end of the cosine
    assert run["history"][-1]["val_nme"] < run["history"][0]["val_nme"]   # it learns
    assert logged and "first chunk" in logged[0][0]


def test_split_files_join_into_the_same_model(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    import cnn_model
    import gpu_models

    monkeypatch.setattr(gpu_models, "PART_BYTES", 1 << 18)
    model = cnn_model.build_student(68, 32, width_multiplier=0.35)
    names = gpu_models.save_split(model, tmp_path / "s.keras",
                                  lambda: cnn_model.build_student(68, 32, width_multiplier=0.35))
    assert len(names) >= 2 and all(n.startswith("s.keras.part") for n in names)
    assert all((tmp_path / n).stat().st_size <= 1 << 18 for n in names)
    assert not (tmp_path / "s.keras").exists()
    joined = tmp_path / "joined.keras"
    joined.write_bytes(b"".join((tmp_path / f"s.keras.part{k}").read_bytes() for k in range(len(names))))
    back = cnn_model.load_model(joined)
    for w, v in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_allclose(v, w, rtol=1e-3, atol=1e-6)   # float16-stored weights


def test_reestimate_repairs_lagging_batchnorm_statistics():
    """A BatchNorm whose moving statistics lag far behind (momentum 0.999, inputs far from 0 mean)
    predicts badly in inference mode; re-estimated on the pool it predicts as it trained."""
    import keras

    sys.path.insert(0, str(BENCH))
    import gpu_models

    rng = np.random.default_rng(0)
    gt = rng.uniform(0.3, 0.7, (256, 68, 2)).astype(np.float32)
    x = (5.0 + np.repeat(gt.reshape(256, 1, 1, -1)[..., :3], 8, 1).repeat(8, 2)).astype(np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    hidden = keras.layers.BatchNormalization(momentum=0.999)(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(136)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, gt.reshape(256, -1), batch_size=32, epochs=5, verbose=0)
    args = argparse.Namespace(seed=0, batch_size=32)
    got = gpu_models.reestimate(model, x, args, x[:64], gt[:64])
    assert got["val_nme_as_trained"] > 100.0                   # the stale statistics: far off
    assert got["val_nme_reestimated"] < 0.5 * got["val_nme_as_trained"]
    assert got["kept"] == "re-estimated"
    assert got["val_nme_reestimated"] == pytest.approx(gpu_models.val_nme(model, x[:64], gt[:64]))
    # statistics that score worse are not kept: re-estimated on one repeated crop, all variance is gone
    before = model.get_weights()
    worse = gpu_models.reestimate(model, np.repeat(x[:1], 64, 0), args, x[:64], gt[:64])
    assert worse["kept"] == "as trained" and worse["val_nme_reestimated"] > worse["val_nme_as_trained"]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_freeze_batchnorm_share_freezes_the_statistics_it_re_estimated():
    """--freeze-batchnorm-share 1: BatchNorm re-estimated on the pool (here better on validation
    than the initial statistics) and frozen before the first step; through training its statistics
    stay those, its scale and offset their initial values, the optimizer going on (a recompiled
    step), while the rest trains."""
    import keras

    sys.path.insert(0, str(BENCH))
    import cnn_model
    import gpu_models

    rng = np.random.default_rng(0)
    gt = rng.uniform(0.3, 0.7, (64, 68, 2)).astype(np.float32)
    x = (3.0 + rng.uniform(0, 1, (64, 8, 8, 3))).astype(np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    hidden = keras.layers.BatchNormalization(name="bn")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(136, name="out")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    args = argparse.Namespace(seed=0, batch_size=8, quick=True, learning_rate=1e-2,
                              freeze_batchnorm_share=1.0)
    expected = keras.models.clone_model(model)
    expected.set_weights(model.get_weights())
    cnn_model.recalibrate_batchnorm(expected, x[gpu_models._recal_rows(x, args)], 8)
    assert gpu_models.val_nme(expected, x[:8], gt[:8]) < gpu_models.val_nme(model, x[:8], gt[:8])
    dense_before = np.array(model.get_layer("out").kernel)
    run = gpu_models.train_for(model, x, gt.reshape(64, -1), 4.0, args, x[:8], gt[:8], "tiny",
                               lambda *a, **k: None)
    assert run["batchnorm_frozen_at_images"] == 0 and run["images"] > 0
    bn, want = model.get_layer("bn"), expected.get_layer("bn")
    assert not bn.trainable
    np.testing.assert_array_equal(np.array(bn.moving_mean), np.array(want.moving_mean))
    np.testing.assert_array_equal(np.array(bn.moving_variance), np.array(want.moving_variance))
    np.testing.assert_array_equal(np.array(bn.gamma), np.ones(bn.gamma.shape, np.float32))
    assert not np.array_equal(np.array(model.get_layer("out").kernel), dense_before)
    assert int(np.asarray(model.optimizer.iterations)) * 8 == run["images"]


def test_freezing_a_teacher_trained_frozen_keeps_its_own_statistics():
    """A --teacher-weights teacher trained with BatchNorm frozen validates better with the
    statistics it was frozen at than re-estimated: freeze_batchnorm keeps them (re-estimating those
    of the shipped Tough teacher took its validation NME from 6.06% to 28%)."""
    import keras

    sys.path.insert(0, str(BENCH))
    import gpu_models

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (64, 8, 8, 3)).astype(np.float32)
    inp = keras.Input((8, 8, 3))
    hidden = keras.layers.BatchNormalization(name="bn")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(136, name="out")(hidden))
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(192, 0.9, np.float32))      # statistics far from the pool's
    bn.moving_variance.assign(np.full(192, 4.0, np.float32))
    gt = np.asarray(model.predict(x[:8], verbose=0)).reshape(8, 68, 2)   # what they predict
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    args = argparse.Namespace(seed=0, batch_size=8, quick=True)
    assert gpu_models.freeze_batchnorm(model, x, args, x[:8], gt)
    assert not bn.trainable
    np.testing.assert_array_equal(np.array(bn.moving_mean), np.full(192, 0.9, np.float32))
    np.testing.assert_array_equal(np.array(bn.moving_variance), np.full(192, 4.0, np.float32))
