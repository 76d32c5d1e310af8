"""Resume, round two (issue 17 items 1, 4, 5): exact mid-epoch resume after Ctrl-C, the run-folder
lock, and resumes refused when a setting that changes what is trained differs.

* Ctrl-C right after a mid-epoch `--checkpoint-every` checkpoint, then the same command: the run
  goes on at that step (not at the epoch start) and ends with the weights, optimizer step count and
  log rows of an uninterrupted run, bit for bit (with online augmentation: the resumed batches
  get the random draws they would have had).
* A second trainer on a folder another one is training in stops with one line naming the holder
  (its pid) and writes nothing there.
* A resume with another teacher kind, another --aug-copies, another teacher file or another
  setting of RESUME_KEYS is refused in one line, before any data work (train_aug/ is untouched).
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

import cnn_model
import student_trainer
import teacher_trainer
import training
from conftest import ROOT
from errors import ConfigError, run_cli
from test_trainers import SIZE, make_prepared, tiny_builder, tiny_cfg

EPOCHS = 3
PAUSE_AT = 6      # 5 steps per epoch (9 training faces, batch 2): step 6 is epoch 2, step 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prep-resume2"), n_train=10)


def _script(prepared: Path, run: Path, out: Path, pause_at: int) -> str:
    """The teacher trainer CLI (tiny network). With pause_at > 0 it sleeps right after the first
    mid-epoch checkpoint at or beyond that optimizer step, so that the test's SIGINT (Ctrl-C)
    arrives while that checkpoint is the newest one."""
    return textwrap.dedent(f"""
        import signal, sys, time, teacher_trainer, training
        from errors import run_cli
        # Ctrl-C must raise KeyboardInterrupt even when this test runs as a background job,
        # whose children start with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from test_trainers import tiny_builder
        write = training.Checkpointer._write
        def paused_write(self, epoch_done, logs, mid_epoch_step=0):
            write(self, epoch_done, logs, mid_epoch_step)
            if {pause_at} and mid_epoch_step and self._iterations() >= {pause_at}:
                time.sleep(120)
        training.Checkpointer._write = paused_write
        argv = ["--prepared-dir", {str(prepared)!r}, "--input-size", "{SIZE}", "--batch-size", "2",
                "--epochs", "{EPOCHS}", "--augment", "online", "--learning-rate", "0.003",
                "--lr-decay", "0.05", "--val-fraction", "0.05", "--run-dir", {str(run)!r},
                "--output", {str(out)!r}, "--checkpoint-every", "3", "--verbose", "2"]
        sys.exit(run_cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), argv))
    """)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))


def _start_paused(prepared, run, out) -> subprocess.Popen:
    """A trainer subprocess, returned once it sleeps after its mid-epoch checkpoint."""
    proc = subprocess.Popen([sys.executable, "-c", _script(prepared, run, out, PAUSE_AT)],
                            cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        state = training.read_state(run)
        if state and state.get("step_in_epoch") and state["optimizer_iterations"] >= PAUSE_AT:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the trainer never paused: {proc.communicate()[1][-3000:]}")


def _weights(path: Path) -> list:
    return [np.array(w) for w in keras.models.load_model(path, compile=False).weights]


def _log_rows(run: Path) -> list:
    with open(run / "log.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_ctrl_c_mid_epoch_resumes_at_that_step_bit_identically(prepared, tmp_path):
    run, out = tmp_path / "run", tmp_path / "teacher.keras"
    proc = _start_paused(prepared, run, out)
    proc.send_signal(signal.SIGINT)                                     # Ctrl-C
    _, err = proc.communicate(timeout=240)           # an upper bound: a loaded machine is slow
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    state = training.read_state(run)
    steps = state["steps_per_epoch"]
    assert steps == 5 and state["step_in_epoch"] == 1 and state["epoch"] == 1
    assert state["optimizer_iterations"] == PAUSE_AT and not out.exists()

    again = subprocess.run([sys.executable, "-c", _script(prepared, run, out, 0)], cwd=str(ROOT),
                           env=_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {run} at epoch 2/{EPOCHS} step 2/{steps}" in again.stdout

    straight = subprocess.run([sys.executable, "-c", _script(prepared, tmp_path / "straight",
                                                                tmp_path / "straight.keras", 0)],
                              cwd=str(ROOT), env=_env(), capture_output=True, text=True,
                              timeout=240)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # no step done twice: the optimizer's count (the schedule position) is that of a straight run
    for d in (run, tmp_path / "straight"):
        ckpt = keras.models.load_model(d / "last.keras", compile=True)
        assert int(ckpt.optimizer.iterations.numpy()) == EPOCHS * steps
    for a, b in zip(_weights(run / "last.keras"), _weights(tmp_path / "straight" / "last.keras")):
        assert np.array_equal(a, b)
    for a, b in zip(_weights(out), _weights(tmp_path / "straight.keras")):
        assert np.array_equal(a, b)
    assert _log_rows(run) == list(range(EPOCHS)) == _log_rows(tmp_path / "straight")


def test_second_trainer_on_a_locked_run_folder_says_who_holds_it(prepared, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "teacher.keras"
    proc = _start_paused(prepared, run, out)
    try:
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        argv = ["--prepared-dir", str(prepared), "--input-size", str(SIZE), "--batch-size", "2",
                "--epochs", str(EPOCHS), "--augment", "online", "--run-dir", str(run), "--output",
                str(tmp_path / "second.keras"), "--verbose", "0"]
        capsys.readouterr()
        code = run_cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {run}: another trainer is using this run folder")
        assert f"pid {proc.pid} " in lines[0] and "--run-dir" in lines[0]
        # the second trainer wrote nothing: same files, untouched
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
        assert not (tmp_path / "second.keras").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=240)
    assert proc.returncode == 130
    # the holder is gone, so the lock is free: the same command now resumes and finishes
    assert run_cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), argv) == 0
    assert training.read_state(run)["finished"]


def test_lock_is_released_in_process_and_taken_over(prepared, tmp_path):
    """Sequential runs in one process (the API, the tests) take the folder again."""
    cfg = tiny_cfg(prepared, tmp_path / "run", epochs=1)
    first = training.Run(cfg, "teacher-tough")               # never released: taken over below
    second = training.Run(cfg, "teacher-tough")
    second.release()
    first.release()                                          # closes nothing it no longer owns
    training.Run(cfg, "teacher-tough").release()


def test_the_run_folder_lock_stays_in_the_folder_names_its_host_and_each_holder(tmp_path):
    """training.RunFolderLock (an OutputLock of its own kind): the lock file is <run>/.lock, kept
    on release (nothing is left beside the folder); it names the holder with its host; a held lock
    is refused in the run folder's words, "unknown process" when its file names no one; the same
    folder reached through a link is this process's own lock, taken over."""
    import fcntl
    import socket

    from safe_io import LOCK_SUFFIX

    run = tmp_path / "run"
    run.mkdir()
    lock = training.RunFolderLock(run).acquire()
    assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")
    (tmp_path / "link").symlink_to(run)
    again = training.RunFolderLock(tmp_path / "link").acquire()       # taken over, not refused
    assert lock.fd is None and again.fd is not None
    again.release()
    assert (run / ".lock").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["link", "run"]
    assert not list(tmp_path.glob(f"**/*{LOCK_SUFFIX}"))
    for text, named in [("pid 1 on elsewhere since 2026-01-01 00:00:00: teacher_trainer.py", None),
                        ("", "unknown process")]:
        (run / ".lock").write_text(text)
        fd = os.open(run / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)              # another holder
            with pytest.raises(ConfigError) as err:
                training.RunFolderLock(run).acquire()
            assert str(err.value) == (f"{run}: another trainer is using this run folder "
                                      f"({named or text}); wait for it to finish, or pass "
                                      f"--run-dir NEW_FOLDER")
        finally:
            os.close(fd)
        assert (run / ".lock").read_text() == text                     # the refused one wrote nothing


def _train(cfg, teacher="tough", out=None):
    # never the default output: that is the shipped models/teachers/<dataset>_<kind>.keras
    out = out or Path(cfg.run_dir).parent / f"{teacher}-{Path(cfg.run_dir).name}.keras"
    return teacher_trainer.train_teacher(cfg, teacher, output=out, builder=tiny_builder, verbose=0)


def test_resume_with_another_teacher_kind_is_refused(prepared, tmp_path):
    run = tmp_path / "run"
    _train(tiny_cfg(prepared, run, epochs=1), "tough", tmp_path / "tough.keras")
    config = (run / "config.json").read_bytes()
    with pytest.raises(ConfigError) as info:
        _train(tiny_cfg(prepared, run, epochs=2), "tolerant", tmp_path / "tolerant.keras")
    msg = str(info.value)
    assert "\n" not in msg and str(run) in msg
    assert "kind 'teacher-tough' (now 'teacher-tolerant')" in msg and "--run-dir" in msg
    assert not (tmp_path / "tolerant.keras").exists()
    assert (run / "config.json").read_bytes() == config
    assert not (prepared / "train" / "soft_landmarks.npy").exists()   # refused before the ASM


def test_resume_with_other_aug_copies_is_refused_before_rewriting_train_aug(tmp_path):
    prepared = make_prepared(tmp_path / "prep", n_train=6)
    run = tmp_path / "run"
    _train(tiny_cfg(prepared, run, epochs=1, augment="offline", aug_copies=1))
    aug_images = (prepared / "train_aug" / "images.npy").read_bytes()
    with pytest.raises(ConfigError, match=r"--aug-copies 1 \(now 2\)"):
        _train(tiny_cfg(prepared, run, epochs=2, augment="offline", aug_copies=2))
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["train_aug"]["settings"]["copies"] == 1
    assert (prepared / "train_aug" / "images.npy").read_bytes() == aug_images


@pytest.mark.parametrize("key,before,after", [
    ("seed", 0, 1), ("bn_recalibration", 256, 0), ("max_faces", None, 5),
    ("val_fraction", 0.2, 0.3),
])
def test_resume_with_another_training_setting_is_refused(prepared, tmp_path, key, before, after):
    run = tmp_path / "run"
    _train(tiny_cfg(prepared, run, epochs=1, **{key: before}))
    with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')} {before!r} "
                                          rf"\(now {after!r}\)"):
        _train(tiny_cfg(prepared, run, epochs=2, **{key: after}))
    # what may change on a resume: the learning rate, its decay and the epoch count
    _train(tiny_cfg(prepared, run, epochs=2, learning_rate=1e-3, lr_decay=0.01, **{key: before}))
    assert training.read_state(run)["epoch"] == 2


def test_student_resume_with_another_teacher_file_is_refused(prepared, tmp_path):
    teacher = cnn_model.save_model(tiny_builder(68, SIZE), tmp_path / "tough_a.keras")
    other = cnn_model.save_model(tiny_builder(68, SIZE), tmp_path / "tough_b.keras")
    run = tmp_path / "run"
    cfg = tiny_cfg(prepared, run, epochs=1, student_mode="tough-only")
    student_trainer.train_student(cfg, tough=teacher, output=tmp_path / "s.keras",
                                  builder=tiny_builder, verbose=0)
    identity = json.loads((run / "config.json").read_text())["run"]
    assert identity["what"] == "student-tough-only" and str(teacher.resolve()) in identity["tough"]
    cfg2 = tiny_cfg(prepared, run, epochs=2, student_mode="tough-only")
    with pytest.raises(ConfigError, match="--tough .*tough_a.keras.*now .*tough_b.keras"):
        student_trainer.train_student(cfg2, tough=other, output=tmp_path / "s.keras",
                                      builder=tiny_builder, verbose=0)
    student_trainer.train_student(cfg2, tough=teacher, output=tmp_path / "s.keras",
                                  builder=tiny_builder, verbose=0)
    assert training.read_state(run)["epoch"] == 2
