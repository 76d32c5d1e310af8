"""Bad input, round two (issue 17 items 2, 6 and 7): a full disk during prepare/augment, option
values that used to end in a traceback or be accepted silently, images too large to decode, points
that coincide, models with two inputs or NaN weights, and a bad video.

As in tests/test_bad_input.py each case checks what a user sees: one line on stderr starting with
"error: " and naming the option or file, exit status 2, no traceback, and nothing half-written left
behind (no manifest, no train_aug/, no scratch or temporary files, no output folder that was not
there before). The resume, lock and Ctrl-C cases are in tests/test_resume_round2.py.

The full-disk cases run twice: on a real 256 KiB tmpfs (mounted when the tests run as root, else
skipped) and with ENOSPC simulated where the disk would say it (posix_fallocate, a file write,
shutil.disk_usage), which needs no privileges.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import cnn_model
import data_util as du
import dataset_formats as fmt
import fixtures as fx
from errors import DataFormatError, run_cli
from test_bad_input import SIZE, error_line, leftovers, prepare_argv, run_main, run_script

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


# clean (the official-format trees), w300 (a copy to damage) and prepared (300W crops): the same
# fixtures as test_bad_input.py, imported so that both files build them one way.
from test_bad_input import clean, prepared, test_cli, w300  # noqa: E402,F401


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    shutil.copytree(prepared, tmp_path / "prep")
    return tmp_path / "prep"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny .keras files: a good 68-point model, the same with NaN weights, one with two inputs."""
    keras = pytest.importorskip("keras")
    d = tmp_path_factory.mktemp("models2")

    def tiny():
        return keras.Sequential([keras.Input((SIZE, SIZE, 3), name="image"),
                                 keras.layers.GlobalAveragePooling2D(),
                                 keras.layers.Dense(136, name="landmarks")], name="tiny")

    good = cnn_model.save_model(tiny(), d / "good.keras")
    bad = tiny()
    bad.set_weights([np.full_like(np.asarray(w), np.nan) for w in bad.get_weights()])
    nan = cnn_model.save_model(bad, d / "nan_weights.keras")
    a, b = keras.Input((SIZE, SIZE, 3), name="a"), keras.Input((SIZE, SIZE, 3), name="b")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    two = cnn_model.save_model(keras.Model([a, b], keras.layers.Dense(136, name="landmarks")(x)),
                               d / "two_inputs.keras")
    return {"good": good, "nan": nan, "two": two}


def png(width: int, height: int, full: bool) -> bytes:
    """An 8-bit grey PNG of width x height black pixels. full=False: only the header is right (the
    pixel data stops after one row), as in a damaged file or a crafted one."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height if full else 1)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _photo(path: Path) -> Path:
    import cv2

    img = (np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


# ----------------------------------------------------------------------------------------------
# Item 2: a full disk during prepare / augment
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A real 256 KiB file system (tmpfs), where mounting is allowed (root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:80]}); the simulated "
                    f"full-disk tests below cover the same code")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _nothing_in(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_script_prepare_on_a_small_disk(w300, small_fs):
    """The real command on a real small disk: checked before writing (no SIGBUS, exit 135)."""
    out = small_fs / "prep"
    argv = prepare_argv(w300, out)
    argv[argv.index("--input-size") + 1] = 128
    done = run_script("data_util.py", *argv)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr, f"no space left on {out}", "needs about", "MiB free")
    assert "--out-dir" in line
    assert _nothing_in(small_fs) == []


def test_prepare_disk_fills_while_writing_real(w300, small_fs, monkeypatch, capsys):
    """The disk fills after the space check (another program wrote there): the first memory-mapped
    file gets its blocks up front, so ENOSPC is an error, not a SIGBUS, and nothing stays."""
    monkeypatch.setattr(du, "check_free_space", lambda *a, **k: None)
    out = small_fs / "prep"
    argv = prepare_argv(w300, out)
    argv[argv.index("--input-size") + 1] = 128
    run_main(du.main, argv, capsys, f"no space left on {out}", "nothing was kept")
    assert _nothing_in(small_fs) == []


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["allocate", "write"])
def test_prepare_disk_fills_while_writing_simulated(w300, tmp_path, monkeypatch, capsys, where):
    out = tmp_path / "prep"
    if where == "allocate":      # the second memory-mapped file (train's final images.npy)
        calls = []
        real = os.posix_fallocate

        def fallocate(fd, offset, length):
            calls.append(length)
            if len(calls) == 2:
                _enospc()
            return real(fd, offset, length)

        monkeypatch.setattr(os, "posix_fallocate", fallocate)
    else:                       # a plain file write (landmarks.npy of the test split)
        real_save = du.atomic_save_npy

        def save(path, array):
            if Path(path).parent.name == "test":
                _enospc()
            return real_save(path, array)

        monkeypatch.setattr(du, "atomic_save_npy", save)
    run_main(du.main, prepare_argv(w300, out), capsys, f"no space left on {out}",
             "nothing was kept")
    assert not out.exists()


def test_prepare_space_check_comes_first(w300, tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    out = tmp_path / "prep"
    line = run_main(du.main, prepare_argv(w300, out), capsys, f"no space left on {out}",
                    "needs about", "0.0 MiB free")
    assert "7 faces at 32 px" in line
    assert not out.exists()


def test_prepare_space_estimate_covers_what_is_written(w300, tmp_path):
    """The check is not too strict either: the estimate covers the real peak, not much more."""
    out = tmp_path / "prep"
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    estimate = du._prepare_bytes([counts["train"], counts["test"]], SIZE, 68)
    assert written < estimate < written + 2 * 7 * SIZE * SIZE * 3 + (2 << 20)


def test_augment_disk_full_leaves_no_train_aug(prepared_copy, monkeypatch, capsys):
    manifest = (prepared_copy / "manifest.json").read_bytes()
    real_save = du.atomic_save_npy

    def save(path, array):
        if Path(path).name == "landmarks_px.npy":
            _enospc()
        return real_save(path, array)

    monkeypatch.setattr(du, "atomic_save_npy", save)
    run_main(du.main, ["augment", "--prepared-dir", prepared_copy, "--copies", "2", "--no-progress"],
             capsys, f"no space left on {prepared_copy}", "train_aug", "nothing was kept")
    assert not (prepared_copy / "train_aug").exists()
    assert (prepared_copy / "manifest.json").read_bytes() == manifest
    assert leftovers(prepared_copy / "train") == []


def test_augment_space_check(prepared_copy, monkeypatch, capsys):
    usage = shutil.disk_usage(prepared_copy)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10))
    run_main(du.main, ["augment", "--prepared-dir", prepared_copy, "--copies", "3", "--no-progress"],
             capsys, f"no space left on {prepared_copy}", "augment (", "--copies")
    assert not (prepared_copy / "train_aug").exists()


# ----------------------------------------------------------------------------------------------
# Items 6 and 7: option values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [["nan"] * 4, ["10", "10", "-5", "-5"], ["inf", "0", "10", "10"],
                                 ["0", "0", "0", "20"]], ids=["nan", "negative", "inf", "zero"])
@pytest.mark.parametrize("what", ["--image", "--folder"])
def test_eval_box_not_finite_or_not_positive(test_cli, models, tmp_path, capsys, box, what):
    photo = _photo(tmp_path / "pics" / "photo.png")
    target = photo if what == "--image" else photo.parent
    out = tmp_path / "res"
    line = run_main(test_cli.main, ["--model", models["good"], what, target, "--box", *box,
                                    "--out-dir", out], capsys, "--box", "w > 0 and h > 0")
    assert "np.float" not in line
    assert not out.exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--samples", "-1"], "--samples -1"),
])
def test_eval_bad_counts(test_cli, models, prepared, tmp_path, capsys, argv, fragment):
    out = tmp_path / "res"
    run_main(test_cli.main, ["--dataset", "300w", "--model", models["good"], "--prepared-dir",
                             prepared, "--out-dir", out, *argv], capsys, fragment)
    assert not out.exists()


@pytest.fixture(scope="module")
def trainers():
    import student_trainer
    import teacher_trainer

    return teacher_trainer, student_trainer


@pytest.mark.parametrize("which", [0, 1], ids=["teacher", "student"])
@pytest.mark.parametrize("argv,fragment", [
    (["--val-fraction", "nan"], "--val-fraction nan"),
    (["--val-fraction", "1"], "--val-fraction 1.0"),
    (["--seed", "-1"], "--seed -1"),
    (["--learning-rate", "-1"], "--learning-rate -1.0"),
    (["--learning-rate", "nan"], "--learning-rate nan"),
    (["--lr-decay", "nan"], "--lr-decay nan"),
    (["--epochs", "0"], "--epochs 0"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--input-size", "40000"], "--input-size 40000"),
])
def test_trainer_bad_values(trainers, tmp_path, capsys, which, argv, fragment):
    out, run = tmp_path / "final.keras", tmp_path / "run"
    # --root of no dataset: were the value let through, the run would stop at once on the data
    # (another error line), not prepare and train
    run_main(trainers[which].main, argv + ["--root", tmp_path / "no-dataset", "--run-dir", run,
                                           "--output", out], capsys, fragment)
    assert not out.exists() and not run.exists()


def test_augment_negative_seed_leaves_nothing(prepared_copy, capsys):
    manifest = (prepared_copy / "manifest.json").read_bytes()
    run_main(du.main, ["augment", "--prepared-dir", prepared_copy, "--seed", "-1", "--no-progress"],
             capsys, "--seed -1")
    assert not (prepared_copy / "train_aug").exists()
    assert (prepared_copy / "manifest.json").read_bytes() == manifest


def test_prepare_input_size_too_large(w300, tmp_path, capsys):
    out = tmp_path / "prep"
    argv = prepare_argv(w300, out)
    argv[argv.index("--input-size") + 1] = 40000
    run_main(du.main, argv, capsys, "--input-size 40000", "at most 1024")
    assert not out.exists()


@pytest.mark.parametrize("value", ["1e9", "1000000000", "1001"])
def test_cnn_model_too_many_points(capsys, value):
    run_main(cnn_model.main, ["--summary", "--input-size", "64", "--num-points", value], capsys,
             f"--num-points {int(float(value))}", "1 .. 1000")


def test_cnn_model_builders_refuse_too_many_points():
    with pytest.raises(Exception, match="must lie in 1 .. 1000"):
        cnn_model.build_student(10 ** 9, 64)


# ----------------------------------------------------------------------------------------------
# Items 6 and 7: models
# ----------------------------------------------------------------------------------------------


def test_model_with_two_inputs(test_cli, trainers, models, prepared, tmp_path, capsys):
    out = tmp_path / "res"
    run_main(test_cli.main, ["--dataset", "300w", "--model", models["two"], "--prepared-dir",
                             prepared, "--out-dir", out], capsys, models["two"], "2 inputs")
    assert not out.exists()
    final = tmp_path / "student.keras"
    run_main(trainers[1].main,
             ["--dataset", "300w", "--input-size", SIZE, "--prepared-dir", prepared, "--augment",
              "none", "--epochs", "1", "--batch-size", "2", "--verbose", "0", "--student-mode",
              "tough-only", "--tough", models["two"], "--run-dir", tmp_path / "run", "--output",
              final], capsys, models["two"], "2 inputs")
    assert not final.exists() and not (tmp_path / "run" / "last.keras").exists()


def test_model_with_nan_weights_is_blamed(test_cli, models, prepared, tmp_path, capsys):
    out = tmp_path / "res"
    run_main(test_cli.main, ["--dataset", "300w", "--model", models["nan"], "--prepared-dir",
                             prepared, "--out-dir", out], capsys, models["nan"], "NaN or infinite",
             "weights")
    assert not (out / "predictions.json").exists() and not (out / "scores.json").exists()
    photo = _photo(tmp_path / "pics" / "photo.png")
    for what, target in (("--image", photo), ("--folder", photo.parent)):
        line = run_main(test_cli.main, ["--model", models["nan"], what, target, "--box", 5, 5, 60,
                                        60, "--out-dir", out], capsys, models["nan"], "NaN")
        assert "no face found" not in line
    assert not list(out.glob("*_landmarks.json"))


def test_bad_video_prints_one_line(models, tmp_path):
    """FFmpeg's own complaint ("moov atom not found") no longer joins ours on stderr."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 4000)
    done = run_script("test.py", "--model", models["good"], "--video", video, "--box", 0, 0, 20,
                      20, "--out-dir", tmp_path / "res")
    assert done.returncode == 2
    error_line(done.stderr, video, "not a readable video")


# ----------------------------------------------------------------------------------------------
# Items 6 and 7: images too large to decode, points that coincide, zero-size boxes
# ----------------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused(tmp_path):
    """A 140 KB PNG that decodes to 12000 x 12000 pixels (144 MB): above MAX_IMAGE_PIXELS."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(12000, 12000, full=True))
    assert bomb.stat().st_size < 500_000
    with pytest.raises(DataFormatError, match="12000x12000 pixels") as info:
        fmt.load_image(bomb)
    assert str(bomb) in str(info.value) and "\n" not in str(info.value)
    ok = tmp_path / "ok.png"
    ok.write_bytes(png(300, 200, full=True))             # the same writer, a normal size: read
    assert fmt.load_image(ok).shape == (200, 300, 3)


def test_huge_header_image_is_skipped_by_a_lenient_prepare(w300, tmp_path, capsys):
    (w300 / "lfpw" / "trainset" / "image_0002.png").write_bytes(png(100_000, 100_000, full=False))
    out = tmp_path / "prep"
    capsys.readouterr()
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = manifest["skipped"]["train"]
    assert len(skipped) == 1 and skipped[0]["file"].endswith("image_0002.png")
    assert "too large to decode" in skipped[0]["reason"]
    assert manifest["counts"]["train"] == 3
    run_main(du.main, prepare_argv(w300, tmp_path / "strict", "--strict"), capsys,
             "image_0002.png", "too large to decode")
    assert leftovers(tmp_path / "strict") == []


def test_huge_header_image_in_a_folder_skips_that_image(test_cli, models, tmp_path, capsys):
    pics = tmp_path / "pics"
    _photo(pics / "a_good.png")
    (pics / "b_huge.png").write_bytes(png(100_000, 100_000, full=False))
    out = tmp_path / "res"
    capsys.readouterr()
    assert run_cli(test_cli.main, ["--model", str(models["good"]), "--folder", str(pics), "--box",
                                   "5", "5", "60", "60", "--out-dir", str(out)]) == 0
    summary = json.loads((out / "all.json").read_text())
    assert [Path(r["image"]).name for r in summary["images"]] == ["a_good.png"]
    assert len(summary["failed"]) == 1 and "too large to decode" in summary["failed"][0]["error"]


def test_coinciding_points_are_a_bad_sample(w300, tmp_path, capsys):
    pts = w300 / "lfpw" / "trainset" / "image_0002.pts"
    fmt.write_pts(pts, np.full((68, 2), [120.0, 130.0], np.float32))
    out = tmp_path / "prep"
    capsys.readouterr()
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]["train"]
    assert len(skipped) == 1 and "image_0002" in skipped[0]["file"]
    assert "coincide" in skipped[0]["reason"]
    run_main(du.main, prepare_argv(w300, tmp_path / "strict", "--strict"), capsys, "image_0002",
             "coincide")
    assert leftovers(tmp_path / "strict") == []


def test_zero_size_dataset_box_is_a_bad_sample(tmp_path, capsys):
    samples = fx.cofw_samples()
    x, y = (float(v) for v in samples[1].box_xywh[:2])
    samples[1].box_xywh = np.array([x, y, 0.0, 0.0], np.float32)
    root = tmp_path / "cofw"
    fmt.write_cofw_mat(root / "COFW_train_color.mat", samples, "train")
    fmt.write_cofw_mat(root / "COFW_test_color.mat", samples[:1], "test")
    out = tmp_path / "prep"
    capsys.readouterr()
    assert run_cli(du.main, [str(a) for a in prepare_argv(root, out, "--box", "dataset",
                                                          dataset="cofw")]) == 0
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]["train"]
    assert len(skipped) == 1 and "face box is 0x0 px" in skipped[0]["reason"]
