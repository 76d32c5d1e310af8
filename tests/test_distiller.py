"""student_trainer.Distiller: KD-Loss in compute_loss, trained by a plain fit after one compile, on
the TensorFlow backend (in this process) and the JAX backend (in a subprocess with
KERAS_BACKEND=jax; skipped where JAX is not installed). One step from known weights: the logged
loss and terms equal KD-Loss of the student's predictions before the step, only the student's
weights move, and the teachers stay frozen."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# Runs as a script under any backend; prints one JSON line.
STEP = textwrap.dedent('''
    import json
    import numpy as np
    import keras
    from kd_loss import KDLoss
    from student_trainer import Distiller

    def net(seed):
        keras.utils.set_random_seed(seed)
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Flatten()(inp)
        return keras.Model(inp, keras.layers.Dense(2 * 3)(x))

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    g = rng.uniform(-0.3, 0.3, (4, 6)).astype("float32")
    student, tough, tolerant = net(1), net(2), net(3)
    p0 = np.asarray(student.predict(x, verbose=0))
    a, s = (np.asarray(t.predict(x, verbose=0)) for t in (tough, tolerant))
    want = {k: float(v) for k, v in KDLoss("code", "kd").terms(g, p0, a, s).items()}
    teacher_before = [np.array(w) for w in tough.get_weights() + tolerant.get_weights()]
    student_before = [np.array(w) for w in student.get_weights()]
    distiller = Distiller(student, tough, tolerant, loss_config="code", mode="kd")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = distiller.fit(x, {"landmarks": g}, batch_size=4, epochs=1, verbose=0).history
    moved = any(not np.array_equal(b, w) for b, w in zip(student_before, student.get_weights()))
    frozen = all(np.array_equal(b, w) for b, w in
                 zip(teacher_before, tough.get_weights() + tolerant.get_weights()))
    print(json.dumps({"backend": keras.backend.backend(), "want": want,
                      "got": {k: float(v[0]) for k, v in hist.items()}, "moved": moved,
                      "frozen": frozen, "distiller_iterations": int(np.asarray(distiller.optimizer.iterations))}))
''')


def check(result: dict) -> None:
    want, got = result["want"], result["got"]
    assert got["loss"] == pytest.approx(want["total"], rel=1e-5)
    for term in ("main", "tough", "tolerant"):
        assert got[term] == pytest.approx(want[term], rel=1e-5), term
    assert want["tough"] != 0.0 and want["tolerant"] != 0.0
    assert result["moved"] and result["frozen"]
    assert result["distiller_iterations"] == 1


def run_step(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    out = subprocess.run([sys.executable, "-c", STEP], cwd=str(ROOT), env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    return result


def test_one_distiller_step_under_tensorflow():
    check(run_step("tensorflow"))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_one_distiller_step_under_jax():
    check(run_step("jax"))


def test_the_distiller_is_compiled_once_with_the_students_optimizer():
    """student_trainer hands fit a Distiller compiled once with the optimizer of the student it
    restored or built (so checkpoints of the student carry the optimizer's state); the student is
    not compiled again afterwards."""
    import ast

    src = (ROOT / "student_trainer.py").read_text()
    calls = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "compile"]
    assert len(calls) == 1
    assert ast.unparse(calls[0].func.value) == "fit_on"
    assert "optimizer=student.optimizer" in ast.unparse(calls[0])
