"""Checkpoints, resume and NaN handling of the trainers (training.py).

* an interrupted run resumes: in-process (2 epochs, then 4 with resume) and after a hard kill
  (SIGKILL of a trainer subprocess after its first checkpoint, then the same command again);
* a NaN/inf loss stops with TrainingError and the last good checkpoint stays loadable and unchanged.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import keras

import teacher_trainer
import training
from conftest import ROOT
from errors import ConfigError, DataFormatError, TrainingError
from test_trainers import SIZE, make_prepared, tiny_builder, tiny_cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prep-resume"), n_train=10)


def _log_epochs(run_dir: Path) -> list:
    with open(Path(run_dir) / "log.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _weights(path: Path) -> list:
    return [np.array(w) for w in keras.models.load_model(path, compile=False).weights]


def test_resume_continues_at_the_next_epoch(prepared, tmp_path):
    run = tmp_path / "run"
    first = teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=2), "tough",
                                          output=tmp_path / "a.keras", builder=tiny_builder,
                                          verbose=0)
    assert first.epochs_done == 2 and _log_epochs(run) == [0, 1]
    steps = json.loads((run / "state.json").read_text())["steps_per_epoch"]
    second = teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=4), "tough",
                                           output=tmp_path / "a.keras", builder=tiny_builder,
                                           verbose=0)
    assert second.initial_epoch == 2 and second.epochs_done == 4
    assert _log_epochs(run) == [0, 1, 2, 3]
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 4 and state["finished"]
    assert state["optimizer_iterations"] == 4 * steps        # the LR schedule's position
    ckpt = keras.models.load_model(run / "last.keras", compile=True)
    assert int(ckpt.optimizer.iterations.numpy()) == 4 * steps

    # the same 4 epochs without interruption give the same weights (same batches, same Adam state)
    straight = teacher_trainer.train_teacher(tiny_cfg(prepared, tmp_path / "straight", epochs=4),
                                             "tough", output=tmp_path / "b.keras",
                                             builder=tiny_builder, verbose=0)
    for a, b in zip(_weights(run / "last.keras"), _weights(straight.run_dir / "last.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # asking again for a finished run trains nothing and rewrites the final model
    third = teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=4), "tough",
                                          output=tmp_path / "c.keras", builder=tiny_builder,
                                          verbose=0)
    assert third.history == {} and (tmp_path / "c.keras").is_file()
    assert _log_epochs(run) == [0, 1, 2, 3]


def _trainer_cmd(prepared: Path, run: Path, out: Path, epochs: int) -> str:
    return textwrap.dedent(f"""
        import sys, teacher_trainer
        from errors import run_cli
        from test_trainers import tiny_builder
        argv = ["--prepared-dir", {str(prepared)!r}, "--input-size", "{SIZE}", "--batch-size", "2",
                "--epochs", "{epochs}", "--augment", "none", "--learning-rate", "0.001",
                "--run-dir", {str(run)!r}, "--output", {str(out)!r}, "--checkpoint-every", "3",
                "--verbose", "2"]
        sys.exit(run_cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), argv))
    """)


def test_killed_run_resumes_to_completion(prepared, tmp_path):
    run, out, epochs = tmp_path / "run", tmp_path / "teacher.keras", 12
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    cmd = [sys.executable, "-c", _trainer_cmd(prepared, run, out, epochs)]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed_at = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            state = training.read_state(run)
            if state and state.get("epoch", 0) >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = state
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert killed_at is not None, f"trainer ended before its first checkpoint: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    state = training.read_state(run)
    assert state["epoch"] < epochs and not state["finished"]
    keras.models.load_model(run / "last.keras", compile=True)     # the checkpoint is whole

    again = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    state = training.read_state(run)
    assert state["epoch"] == epochs and state["finished"]
    logged = _log_epochs(run)
    assert logged == sorted(set(logged)) and logged[-1] == epochs - 1
    assert len(logged) >= epochs - 1     # a kill between state.json and the CSV row loses one row
    assert out.is_file()
    assert not list(run.glob(".*.tmp*"))                           # no temporary files left


def test_run_folder_drops_temporaries_of_a_killed_write(prepared, tmp_path):
    """A SIGKILL while last.keras / state.json is being written leaves safe_io's hidden temporary
    beside it; the next run on the folder (resumed or fresh) removes it."""
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last.keras.px1s039k.tmp.keras", run / ".state.json.ab12cd.tmp"]
    for f in stale:
        f.write_bytes(b"half written")
    keep = run / "notes.txt"
    keep.write_text("mine")
    training.Run(tiny_cfg(prepared, run, epochs=1), "teacher-tough")
    assert not any(f.exists() for f in stale) and keep.is_file()


def test_nan_learning_rate_stops_with_training_error(prepared, tmp_path):
    cfg = tiny_cfg(prepared, tmp_path / "run", epochs=3, learning_rate=1e30)
    with pytest.raises(TrainingError, match=r"loss became NaN at epoch 1 step \d+.*--learning-rate"):
        teacher_trainer.train_teacher(cfg, "tough", output=tmp_path / "m.keras",
                                      builder=tiny_builder, verbose=0)
    assert not (tmp_path / "m.keras").exists()


def test_nan_targets_keep_the_last_good_checkpoint(tmp_path):
    prepared = make_prepared(tmp_path / "prep", n_train=8)
    run = tmp_path / "run"
    teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=2), "tough",
                                  output=tmp_path / "m.keras", builder=tiny_builder, verbose=0)
    good = (run / "last.keras").read_bytes()
    lm = np.load(prepared / "train" / "landmarks.npy")
    nan = lm.copy()
    nan[:] = np.nan                                  # every face now has NaN targets
    np.save(prepared / "train" / "landmarks.npy", nan)
    # the resume is refused: the data changed since the run began (content digests, issue 36)
    with pytest.raises(ConfigError, match=r"other data: .*train/landmarks.npy changed"):
        teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=4), "tough",
                                      output=tmp_path / "m.keras", builder=tiny_builder, verbose=0)
    assert (run / "last.keras").read_bytes() == good
    # the reader refuses them before any training step, naming the file and the face
    with pytest.raises(DataFormatError, match=r"train/landmarks.npy: face 0 \(train/0\) has NaN"):
        teacher_trainer.train_teacher(tiny_cfg(prepared, tmp_path / "fresh", epochs=4), "tough",
                                      output=tmp_path / "m2.keras", builder=tiny_builder, verbose=0)
    np.save(prepared / "train" / "landmarks.npy", lm)
    # a loss that becomes NaN/inf in training (a learning rate far too high) stops the run
    with pytest.raises(TrainingError, match=r"loss became NaN at epoch 3 step \d+; the last good "
                                            r"checkpoint .*last.keras is kept"):
        teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=4, learning_rate=1e30),
                                      "tough", output=tmp_path / "m.keras", builder=tiny_builder,
                                      verbose=0)
    assert (run / "last.keras").read_bytes() == good
    model = keras.models.load_model(run / "last.keras", compile=True)
    assert all(np.all(np.isfinite(np.array(w))) for w in model.weights)
    assert json.loads((run / "state.json").read_text())["epoch"] == 2


def test_resume_with_a_lower_learning_rate_keeps_the_schedule_position(prepared, tmp_path):
    run = tmp_path / "run"
    teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=1, learning_rate=3e-3), "tough",
                                  output=tmp_path / "m.keras", builder=tiny_builder, verbose=0)
    steps = json.loads((run / "state.json").read_text())["optimizer_iterations"]
    teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=2, learning_rate=1e-4), "tough",
                                  output=tmp_path / "m.keras", builder=tiny_builder, verbose=0)
    model = keras.models.load_model(run / "last.keras", compile=True)
    assert int(model.optimizer.iterations.numpy()) == 2 * steps
    schedule = model.optimizer.get_config()["learning_rate"]["config"]
    assert schedule["initial_learning_rate"] == pytest.approx(1e-4)
    assert _log_epochs(run) == [0, 1]


def _two_block_builder(num_points: int, input_size: int) -> keras.Model:
    """Named like keras.applications' EfficientNet: blocks 1a and 1b, 1b's residual branch dropped."""
    inp = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=4, padding="same", name="block1a_conv")(inp)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="block1b_conv")(x)
    branch = keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1), name="block1b_drop")(branch)
    x = keras.layers.Add(name="block1b_add")([x, branch])
    out = keras.layers.Dense(2 * num_points, name="landmarks")(keras.layers.Flatten()(x))
    return keras.Model(inp, out, name="teacher")


def test_resume_takes_the_current_stochastic_depth(prepared, tmp_path):
    # block 1b is block 1 of 2: its rate is half the setting, in the new run and after a resume
    run = tmp_path / "run"
    for epochs, depth in ((1, 0.4), (2, 0.0)):
        teacher_trainer.train_teacher(tiny_cfg(prepared, run, epochs=epochs,
                                               teacher_stochastic_depth=depth), "tough",
                                      output=tmp_path / "m.keras", builder=_two_block_builder,
                                      verbose=0)
        saved = keras.models.load_model(run / "last.keras", compile=False)
        assert saved.get_layer("block1b_drop").rate == pytest.approx(depth / 2)
    assert _log_epochs(run) == [0, 1]
