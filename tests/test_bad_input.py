"""Bad input at every entry point (issue "Robustness: bad input, interruption, determinism", part 1).

Each case checks what a user sees: exactly one line on stderr, "error: " + the file (or the
option) + the problem, exit status 2, no traceback, and nothing left behind that looks finished
(no manifest.json, no scores.json, no final .keras, no temporary files). Most cases call
`errors.run_cli(module.main, argv)` in-process (fast); a handful run the real scripts in a
subprocess to check the exit status and the absence of a traceback end to end.

The data are DERIVED fixtures (tests/fixtures.py): the real annotated faces of tests/data/real_samples
written in the official layouts, then damaged here one way at a time.
Unwritable folders: the tests run as root, for whom chmod 0o500 does not stop writes, so an
unwritable output folder is a path below a regular FILE (some_file/sub), unwritable for everyone.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

import asm_soft_landmarks
import cnn_model
import data_util as du
import dataset_formats as fmt
import fixtures as fx
from errors import DataFormatError, LandmarkError, ModelError, run_cli

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32          # the smallest input the backbones take; prepared crops of this size are tiny


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def error_line(err: str, *fragments) -> str:
    """The single 'error: ...' line of a failed command's stderr, naming every fragment."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for frag in fragments:
        assert str(frag) in line, f"{frag!r} not named in: {line}"
    return line


def run_main(main, argv, capsys, *fragments) -> str:
    """run_cli(main, argv) in-process: exit status 2 and one clear line naming the fragments."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}, stderr: {err}"
    return error_line(err, *fragments)


def run_script(script, *argv, timeout=180):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / script), *[str(a) for a in argv]],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=str(ROOT))


def leftovers(folder: Path) -> list:
    """Files that would look like (part of) a finished result, or temporaries left behind."""
    folder = Path(folder)
    if not folder.exists():
        return []
    bad = []
    for p in folder.rglob("*"):
        if p.name == "manifest.json" or p.name.endswith((".tmp", ".scratch")) or ".tmp." in p.name:
            bad.append(str(p.relative_to(folder)))
    return bad


def prepare_argv(root, out, *extra, dataset="300w"):
    return ["prepare", "--dataset", dataset, "--root", root, "--input-size", SIZE, "--out-dir", out,
            "--no-progress", *extra]


# ----------------------------------------------------------------------------------------------
# Fixtures: one clean copy of each layout, copied before each damage
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    fx.make_300w_tree(base / "300w")
    fx.make_wflw_tree(base / "wflw")
    fx.make_cofw_files(base / "cofw", version="7.3")
    return base


@pytest.fixture
def w300(clean, tmp_path):
    shutil.copytree(clean / "300w", tmp_path / "300w")
    return tmp_path / "300w"


@pytest.fixture
def wflw(clean, tmp_path):
    shutil.copytree(clean / "wflw", tmp_path / "wflw")
    return tmp_path / "wflw"


@pytest.fixture(scope="module")
def prepared(clean, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / f"300w-{SIZE}"
    assert run_cli(du.main, [str(a) for a in prepare_argv(clean / "300w", out)]) == 0
    return out


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a_regular_file"
    f.write_text("not a folder\n")
    return f


# ----------------------------------------------------------------------------------------------
# Readers and `python data_util.py prepare`
# ----------------------------------------------------------------------------------------------


def test_missing_root(tmp_path, capsys):
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(tmp_path / "no_such_folder", out), capsys,
             tmp_path / "no_such_folder", "not found")
    assert leftovers(out) == []


@pytest.mark.parametrize("dataset", ["300w", "wflw", "cofw"])
def test_empty_root_folder(tmp_path, capsys, dataset):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    line = run_main(du.main, prepare_argv(tmp_path / "empty", out, dataset=dataset), capsys,
                    tmp_path / "empty")
    assert "--root" in line or "not found" in line or "exist" in line
    assert leftovers(out) == []


def test_empty_300w_subfolder(w300, tmp_path, capsys):
    for f in (w300 / "afw").iterdir():
        f.unlink()
    with pytest.raises(DataFormatError, match="no .pts annotations"):
        fmt.read_300w(w300, "train")
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, w300 / "afw", "no .pts")
    assert leftovers(out) == []


def _pts_body(path: Path) -> list:
    return path.read_text().splitlines()


def test_pts_with_too_few_points(w300, tmp_path, capsys):
    pts = w300 / "afw" / "134212_1.pts"
    fmt.write_pts(pts, fmt.read_pts(pts)[:30])
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, pts, "expected 68 points, found 30")
    assert leftovers(out) == []
    # without --strict the face is skipped, counted, and the rest prepared
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["counts"] == {"train": 3, "test": 3}
    assert [s["file"] for s in manifest["skipped"]["train"]] == [str(pts)]


def test_pts_with_text(w300, tmp_path, capsys):
    pts = w300 / "helen" / "trainset" / "232194_1.pts"
    lines = _pts_body(pts)
    lines[10] = "12.5 left_eye"
    pts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, pts, "left_eye",
             "not two numbers")
    assert leftovers(out) == []


def test_pts_header_disagrees_with_points(w300, capsys, tmp_path):
    pts = w300 / "afw" / "134212_1.pts"
    lines = _pts_body(pts)
    del lines[20]                        # one point line lost, header still says 68
    pts.write_text("\n".join(lines) + "\n")
    run_main(du.main, prepare_argv(w300, tmp_path / "out", "--strict"), capsys, pts,
             "n_points 68 but 67")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_pts_nan_and_infinite(w300, tmp_path, capsys, value):
    pts = w300 / "afw" / "134212_1.pts"
    lines = _pts_body(pts)
    lines[5] = f"{value} 100.0"
    pts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, pts, "NaN or infinite")
    assert leftovers(out) == []


def test_pts_number_with_underscore_is_not_a_number(tmp_path):
    """Python's float() reads '1_0' as 10; an annotation file must not."""
    pts = tmp_path / "x.pts"
    pts.write_text("version: 1\nn_points: 1\n{\n1_0 2\n}\n")
    with pytest.raises(DataFormatError, match="not two numbers"):
        fmt.read_pts(pts)
    pts.write_text("version: 1\nn_points: 0\n{\n}\n")
    with pytest.raises(DataFormatError, match="no points"):
        fmt.read_pts(pts)


def test_wflw_line_with_a_missing_field(wflw, tmp_path, capsys):
    lst = fmt.wflw_list_path(wflw, "train")
    lines = lst.read_text().splitlines()
    tokens = lines[1].split()
    del tokens[100]
    lines[1] = " ".join(tokens)
    lst.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(wflw, out, "--strict", dataset="wflw"), capsys, f"{lst}:2",
             "206 fields, expected 207")
    assert leftovers(out) == []


@pytest.mark.parametrize("field,value,fragment", [
    (7, "inf", "NaN or infinite"),                  # a coordinate
    (196 + 4, "7", "attribute flags must be 0 or 1"),   # the first attribute flag
    (196 + 4, "nan", "attribute flags must be 0 or 1"),
    (196 + 2, "-5", "inverted"),                    # x_max left of x_min
])
def test_wflw_bad_values(wflw, tmp_path, capsys, field, value, fragment):
    lst = fmt.wflw_list_path(wflw, "train")
    lines = lst.read_text().splitlines()
    tokens = lines[0].split()
    tokens[field] = value
    lines[0] = " ".join(tokens)
    lst.write_text("\n".join(lines) + "\n")
    run_main(du.main, prepare_argv(wflw, tmp_path / "out", "--strict", dataset="wflw"), capsys,
             f"{lst}:1", fragment)


def test_mat_without_the_expected_arrays(tmp_path, capsys):
    root = tmp_path / "cofw"
    root.mkdir()
    scipy.io.savemat(str(root / "COFW_train_color.mat"), {"images": np.zeros((2, 1)),
                                                          "points": np.zeros((2, 87))})
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(root, out, dataset="cofw"), capsys,
             root / "COFW_train_color.mat", "lacks the variables", "IsTr")
    assert leftovers(out) == []


def test_mat_with_text_for_numbers(tmp_path, capsys):
    root = tmp_path / "cofw"
    root.mkdir()
    scipy.io.savemat(str(root / "COFW_train_color.mat"),
                     {"IsTr": np.zeros((2, 1)), "phisTr": "not numbers", "bboxesTr": np.zeros((2, 4))})
    run_main(du.main, prepare_argv(root, tmp_path / "out", dataset="cofw"), capsys,
             root / "COFW_train_color.mat", "malformed COFW variables")


def test_mat_truncated(clean, tmp_path, capsys):
    root = tmp_path / "cofw"
    shutil.copytree(clean / "cofw", root)
    mat = root / "COFW_train_color.mat"
    mat.write_bytes(mat.read_bytes()[:5000])
    run_main(du.main, prepare_argv(root, tmp_path / "out", dataset="cofw"), capsys, mat,
             "unreadable MATLAB")


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "not an image"])
def test_damaged_image(w300, tmp_path, capsys, damage):
    img = w300 / "helen" / "trainset" / "232194_1.jpg"
    data = img.read_bytes()
    img.write_bytes({"truncated": data[: len(data) // 2], "zero-byte": b"",
                     "not an image": b"<html>404 not found</html>\n"}[damage])
    out = tmp_path / "out"
    line = run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, img)
    assert any(w in line for w in ("zero-byte", "unreadable", "truncated", "damaged"))
    assert leftovers(out) == []
    # the lenient default skips it and says so in the manifest
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]["train"]
    assert [s["file"] for s in skipped] == [str(img)]


def test_grey_and_four_channel_images_work(w300, tmp_path, capsys):
    """Not errors: grey and RGBA images are converted to RGB and prepared like the others."""
    grey = w300 / "lfpw" / "trainset" / "image_0002.png"
    img = cv2.imread(str(grey), cv2.IMREAD_COLOR)
    cv2.imwrite(str(grey), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    rgba = w300 / "lfpw" / "testset" / "image_0001.png"
    img = cv2.imread(str(rgba), cv2.IMREAD_COLOR)
    cv2.imwrite(str(rgba), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    assert cv2.imread(str(grey), cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED).shape[2] == 4
    for path in (grey, rgba):
        loaded = fmt.load_image(path)
        assert loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3
    out = tmp_path / "out"
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out, "--strict")]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["counts"] == {"train": 4, "test": 3}
    train = du.load_prepared(out, "train")
    k = train.ids.index("lfpw/trainset/image_0002")
    crop = np.asarray(train.images[k])
    assert crop.shape == (SIZE, SIZE, 3)
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])


def test_landmarks_far_outside_the_image(w300, tmp_path, capsys):
    pts = w300 / "afw" / "134212_1.pts"
    fmt.write_pts(pts, fmt.read_pts(pts) + 5000.0)
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out, "--strict"), capsys, w300 / "afw" / "134212.jpg",
             "far outside")
    assert leftovers(out) == []


def test_unknown_dataset(w300, tmp_path, capsys):
    run_main(du.main, prepare_argv(w300, tmp_path / "out", dataset="300-w"), capsys,
             "unknown dataset '300-w'", "300w")
    run_main(asm_soft_landmarks.main, ["--dataset", "helen", "--prepared-dir", tmp_path], capsys,
             "unknown dataset 'helen'")


def test_unwritable_output_folder(w300, a_file, capsys):
    run_main(du.main, prepare_argv(w300, a_file / "sub"), capsys, "--out-dir", a_file / "sub",
             "cannot write")
    run_main(du.main, prepare_argv(w300, a_file), capsys, "--out-dir", a_file, "cannot write")


@pytest.mark.parametrize("argv,fragment", [
    (["--input-size", "4"], "--input-size 4"),
    (["--margin", "nan"], "--margin nan"),
    (["--box", "middle"], "--box 'middle'"),
    (["--box", "dataset"], "--box dataset"),          # 300-W has no face boxes
])
def test_bad_prepare_options(w300, tmp_path, capsys, argv, fragment):
    out = tmp_path / "out"
    run_main(du.main, prepare_argv(w300, out)[:5] + ["--out-dir", out] + argv, capsys, fragment)
    assert leftovers(out) == []


def test_custom_spec_problems(tmp_path, capsys):
    run_main(du.main, ["prepare", "--custom-spec", tmp_path, "--out-dir", tmp_path / "o"], capsys,
             "--custom-spec", "folder")
    spec = tmp_path / "spec.json"
    spec.write_bytes(b"\xff\xfe{not json")
    run_main(du.main, ["prepare", "--custom-spec", spec, "--out-dir", tmp_path / "o"], capsys,
             spec, "not valid JSON")
    spec = fx.make_custom(tmp_path / "custom")
    (spec.parent / "train.txt").write_bytes(b"\x00\xff\xfe binary junk")
    run_main(du.main, ["prepare", "--custom-spec", spec, "--out-dir", tmp_path / "o"], capsys,
             spec.parent / "train.txt", "UTF-8")
    assert leftovers(tmp_path / "o") == []


def test_failed_rebuild_leaves_nothing_complete(w300, tmp_path, capsys):
    """A complete folder rebuilt with --force that then fails keeps no complete-looking manifest."""
    out = tmp_path / "out"
    assert run_cli(du.main, [str(a) for a in prepare_argv(w300, out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    (w300 / "ibug" / "image_003_1.jpg").write_bytes(b"")
    run_main(du.main, prepare_argv(w300, out, "--strict", "--force"), capsys,
             w300 / "ibug" / "image_003_1.jpg", "zero-byte")
    assert leftovers(out) == []
    with pytest.raises(DataFormatError, match="manifest.json missing"):
        du.load_prepared(out, "train")


def test_augment_on_missing_prepared_folder(tmp_path, capsys):
    run_main(du.main, ["augment", "--prepared-dir", tmp_path / "nothing", "--no-progress"], capsys,
             tmp_path / "nothing", "data_util.py prepare")


@pytest.mark.parametrize("damage,where,fragment", [
    ("binary manifest", "manifest.json", "damaged manifest"),
    ("manifest is a list", "manifest.json", "damaged manifest"),
    ("manifest without sizes", "manifest.json", "damaged manifest"),
    ("truncated images.npy", "train/images.npy", "not a valid .npy array"),
    ("landmarks of another face count", "train", "do not match"),
    ("meta.json is a list", "train/meta.json", "not a JSON object"),
])
def test_damaged_prepared_folder(prepared, tmp_path, capsys, damage, where, fragment):
    prep = tmp_path / "prep"
    shutil.copytree(prepared, prep)
    manifest = json.loads((prep / "manifest.json").read_text())
    if damage == "binary manifest":
        (prep / "manifest.json").write_bytes(b"\xff\xfe\x00{")
    elif damage == "manifest is a list":
        (prep / "manifest.json").write_text("[1, 2]")
    elif damage == "manifest without sizes":
        (prep / "manifest.json").write_text(json.dumps({"complete": True, "counts": {}}))
    elif damage == "truncated images.npy":
        img = prep / "train" / "images.npy"
        img.write_bytes(img.read_bytes()[:1000])
    elif damage == "landmarks of another face count":
        lm = np.load(prep / "train" / "landmarks.npy")
        np.save(prep / "train" / "landmarks.npy", lm[:-1])
    else:
        (prep / "train" / "meta.json").write_text("[]")
    with pytest.raises(DataFormatError) as info:
        du.load_prepared(prep, "train")
    msg = str(info.value)
    assert str(prep / where) in msg and fragment in msg and "\n" not in msg
    run_main(du.main, ["augment", "--prepared-dir", prep, "--copies", "1", "--no-progress"], capsys,
             prep, fragment)
    assert not (prep / "train_aug").exists()
    if damage == "binary manifest":     # prepare rebuilds over a damaged manifest
        assert manifest["complete"] is True
        root = Path(manifest["config"]["root"])
        assert run_cli(du.main, [str(a) for a in prepare_argv(root, prep)]) == 0
        assert len(du.load_prepared(prep, "train")) == manifest["counts"]["train"]


# ----------------------------------------------------------------------------------------------
# `python asm_soft_landmarks.py`
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    shutil.copytree(prepared, tmp_path / "prep")
    return tmp_path / "prep"


def _no_soft(prep: Path) -> None:
    assert not (prep / "asm.npz").exists()
    assert not list(prep.rglob("soft_landmarks.npy"))


def test_asm_on_incomplete_prepared_folder(prepared_copy, capsys):
    m = prepared_copy / "manifest.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "complete": False}))
    run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy], capsys, m, "incomplete")
    _no_soft(prepared_copy)


@pytest.mark.parametrize("damage,fragment", [
    ("nan", "NaN or infinite"), ("text", "not a .npy file"), ("truncated", "not a valid .npy"),
    ("one face", "landmarks.npy (1, 68, 2)"), ("no faces", "landmarks.npy (0, 68, 2)"),
])
def test_asm_on_damaged_landmarks(prepared_copy, capsys, damage, fragment):
    """The ASM reads through du.load_prepared: the line names the file (or, for landmarks that do
    not match the images, the split folder and the file's shape)."""
    path = prepared_copy / "train" / "landmarks.npy"
    lm = np.load(path)
    if damage == "nan":
        lm[0, 3, 1] = np.nan
        np.save(path, lm)
    elif damage == "text":
        path.write_text("hello\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "one face":
        np.save(path, lm[:1])
    else:
        np.save(path, lm[:0])
    named = path.parent if damage in ("one face", "no faces") else path
    run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy], capsys, named, fragment)
    _no_soft(prepared_copy)


def test_asm_wrong_point_count_and_bad_train_aug(prepared_copy, capsys):
    run_main(asm_soft_landmarks.main, ["--dataset", "wflw", "--prepared-dir", prepared_copy], capsys,
             prepared_copy, "68 points but wflw has 98")
    # a train_aug/ that manifest.json does not list (an interrupted augment): augment again
    aug = prepared_copy / "train_aug"
    shutil.copytree(prepared_copy / "train", aug)
    run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy], capsys, aug,
             "data_util.py augment")
    # a listed train_aug/ whose landmarks have another point count
    manifest = json.loads((prepared_copy / "manifest.json").read_text())
    manifest["train_aug"] = {"count": manifest["counts"]["train"], "settings": {}}
    (prepared_copy / "manifest.json").write_text(json.dumps(manifest))
    np.save(aug / "landmarks.npy", np.load(aug / "landmarks.npy")[:, :5])
    run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy], capsys, aug,
             "landmarks.npy (", ", 5, 2)")
    _no_soft(prepared_copy)          # nothing written for train/ either: all checked first


def test_asm_unwritable(prepared_copy, a_file, capsys):
    run_main(asm_soft_landmarks.main, ["--prepared-dir", a_file / "sub"], capsys, a_file / "sub")
    (prepared_copy / "asm.npz").mkdir()           # something that is not a file is in the way
    run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy], capsys,
             prepared_copy / "asm.npz")
    assert not list(prepared_copy.rglob("*.tmp*"))


def test_asm_bad_variance(prepared_copy, capsys):
    for v in ("0", "1.5", "nan"):
        run_main(asm_soft_landmarks.main, ["--prepared-dir", prepared_copy, "--variance", v], capsys,
                 "variance")
    _no_soft(prepared_copy)


# ----------------------------------------------------------------------------------------------
# `python cnn_model.py` and model files (no network is built: the checks come first)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,fragment", [
    (["--summary", "--input-size", "16"], "--input-size 16"),
    (["--summary", "--num-points", "0"], "--num-points 0"),
    (["--summary", "--input-size", "64", "--width-multiplier", "nan"], "width_multiplier=nan"),
])
def test_cnn_model_cli_bad_options(capsys, argv, fragment):
    run_main(cnn_model.main, argv, capsys, fragment)


@pytest.mark.parametrize("content", [b"not a model\n", b"", b"PK\x03\x04 truncated zip"])
def test_model_file_of_the_wrong_kind(tmp_path, content):
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        cnn_model.load_model(path, expect_points=68)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "not a Keras" in msg
    folder = tmp_path / "dir.keras"
    folder.mkdir()
    with pytest.raises(ModelError, match="not a Keras"):
        cnn_model.load_model(folder)


# ----------------------------------------------------------------------------------------------
# `python test.py` (evaluation, inference) and the trainers: these need TensorFlow
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_cli():
    """test.py loaded under another module name (the standard library has a package 'test')."""
    spec = importlib.util.spec_from_file_location("kd_test_cli", ROOT / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Small .keras models of this project's shape: (B, 32, 32, 3) -> (B, 2N), N = 68 and 5."""
    keras = pytest.importorskip("keras")
    d = tmp_path_factory.mktemp("models")
    out = {}
    for n in (68, 5):
        model = keras.Sequential([keras.Input((SIZE, SIZE, 3), name="image"),
                                  keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(2 * n, name="landmarks")], name=f"tiny{n}")
        out[n] = cnn_model.save_model(model, d / f"tiny{n}.keras")
    (d / "text.keras").write_text("this is a text file, not a model\n")
    out["text"] = d / "text.keras"
    return out


def test_eval_with_a_model_of_the_wrong_kind(test_cli, tiny_models, prepared, tmp_path, capsys):
    out = tmp_path / "res"
    run_main(test_cli.main, ["--dataset", "300w", "--model", tiny_models["text"], "--prepared-dir",
                             prepared, "--out-dir", out], capsys, tiny_models["text"])
    assert not out.exists() or not any(out.iterdir())
    run_main(test_cli.main, ["--dataset", "300w", "--model", tmp_path / "model.h5",
                             "--prepared-dir", prepared, "--out-dir", out], capsys, "model.h5")


def test_eval_with_a_model_of_the_wrong_point_count(test_cli, tiny_models, prepared, tmp_path,
                                                    capsys):
    out = tmp_path / "res"
    run_main(test_cli.main, ["--dataset", "300w", "--model", tiny_models[5], "--prepared-dir",
                             prepared, "--out-dir", out], capsys, tiny_models[5], "5 points", "68")
    assert not (out / "predictions.json").exists() and not (out / "scores.json").exists()
    with pytest.raises(ModelError, match="predicts 5 points"):
        cnn_model.load_model(tiny_models[5], expect_points=68)


def test_eval_unknown_dataset(test_cli, tiny_models, prepared, tmp_path, capsys):
    run_main(test_cli.main, ["--dataset", "ibug", "--model", tiny_models[68], "--prepared-dir",
                             prepared, "--out-dir", tmp_path / "res"], capsys,
             "unknown dataset 'ibug'")


@pytest.mark.parametrize("content", [b"", b"GIF89a but not really", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_image_zero_byte_or_not_an_image(test_cli, tiny_models, tmp_path, capsys, content):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(content)
    out = tmp_path / "res"
    run_main(test_cli.main, ["--model", tiny_models[68], "--image", photo, "--box", 0, 0, 20, 20,
                             "--out-dir", out], capsys, photo)
    assert not list(out.glob("*_landmarks.json")) if out.exists() else True


@pytest.mark.parametrize("text,fragment", [
    ('{"format": ', "not valid JSON"),
    ('{"format": "something-else/1", "items": []}', "not a predictions file"),
    ('{"format": "kd-landmarks-predictions/1", "dataset": "300w", "items": '
     '[{"id": "a", "landmarks_px": [[1, "x"]]}]}', "item 0"),
    ('{"format": "kd-landmarks-predictions/1", "dataset": "300w", "items": '
     '[{"id": "a", "landmarks_px": [[1, NaN]]}]}', "finite"),
])
def test_predictions_malformed(test_cli, prepared, tmp_path, capsys, text, fragment):
    path = tmp_path / "predictions.json"
    path.write_text(text)
    out = tmp_path / "res"
    run_main(test_cli.main, ["--predictions", path, "--prepared-dir", prepared, "--out-dir", out],
             capsys, path, fragment)
    assert not (out / "scores.json").exists()


def _ground_truth_predictions(prepared: Path, path: Path) -> Path:
    test = du.load_prepared(prepared, "test")
    items = [{"id": i, "landmarks_px": np.asarray(p).tolist()}
             for i, p in zip(test.ids, test.landmarks_px)]
    path.write_text(json.dumps({"format": "kd-landmarks-predictions/1", "dataset": "300w",
                                "prepared_dir": str(prepared), "model": "gt", "items": items}))
    return path


def test_eval_unwritable_output_folder(test_cli, tiny_models, prepared, tmp_path, a_file, capsys):
    preds = _ground_truth_predictions(prepared, tmp_path / "gt.json")
    run_main(test_cli.main, ["--predictions", preds, "--out-dir", a_file / "sub"], capsys,
             a_file / "sub", "cannot write")
    run_main(test_cli.main, ["--dataset", "300w", "--model", tiny_models[68], "--prepared-dir",
                             prepared, "--out-dir", a_file / "sub"], capsys, a_file / "sub")
    # the same predictions score fine into a writable folder (the file itself was good)
    capsys.readouterr()
    assert run_cli(test_cli.main, ["--predictions", str(preds), "--out-dir",
                                   str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "scores.json").is_file()


@pytest.fixture(scope="module")
def trainers():
    import student_trainer
    import teacher_trainer

    return teacher_trainer, student_trainer


@pytest.mark.parametrize("which", [0, 1], ids=["teacher", "student"])
@pytest.mark.parametrize("argv,fragment", [
    (["--input-size", "16"], "--input-size 16"),
    (["--dataset", "lfpw"], "unknown dataset 'lfpw'"),
    (["--augment", "sometimes"], "--augment 'sometimes'"),
])
def test_trainer_bad_options(trainers, capsys, tmp_path, which, argv, fragment):
    out = tmp_path / "final.keras"
    run_main(trainers[which].main, argv + ["--run-dir", tmp_path / "run", "--output", out], capsys,
             fragment)
    assert not out.exists()


def _tiny_builder(num_points, input_size):
    import keras

    return keras.Sequential([keras.Input((input_size, input_size, 3)),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2 * num_points, name="landmarks")])


def test_trainer_data_of_the_wrong_point_count(trainers, prepared, tmp_path, capsys):
    out = tmp_path / "final.keras"
    argv = ["--dataset", "wflw", "--input-size", SIZE, "--prepared-dir", prepared, "--augment",
            "none", "--epochs", "1", "--batch-size", "2", "--verbose", "0", "--run-dir",
            tmp_path / "run", "--output", out]
    run_main(lambda a: trainers[0].main(a, builder=_tiny_builder), argv, capsys, prepared,
             "68 points", "98")
    assert not out.exists()


def test_trainer_unwritable_run_dir(trainers, prepared, a_file, tmp_path, capsys):
    out = tmp_path / "final.keras"
    argv = ["--dataset", "300w", "--input-size", SIZE, "--prepared-dir", prepared, "--augment",
            "none", "--epochs", "1", "--batch-size", "2", "--verbose", "0", "--run-dir",
            a_file / "sub", "--output", out]
    run_main(lambda a: trainers[0].main(a, builder=_tiny_builder), argv, capsys, a_file / "sub",
             "--run-dir")
    assert not out.exists()


def test_run_folder_below_a_file(a_file):
    """training.Run itself (used without the trainers' early check) says it in one line too."""
    import training
    from configuration import TrainConfig

    cfg = TrainConfig(dataset="300w", run_dir=str(a_file / "sub"))
    with pytest.raises(LandmarkError, match="cannot create the run folder") as info:
        training.Run(cfg, "teacher-tough")
    assert str(a_file / "sub") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("which", [0, 1], ids=["teacher", "student"])
def test_trainer_unwritable_output_fails_before_training(trainers, prepared, a_file, tmp_path,
                                                         capsys, monkeypatch, which):
    """--output below a file (or not .keras) is refused before any data or model work, not after
    a long run: fit_model is never reached and no run folder is made."""
    import training

    def no_training(*a, **k):
        raise AssertionError("training started although --output cannot be written")

    monkeypatch.setattr(training, "fit_model", no_training)
    monkeypatch.setattr(training, "load_training_data", no_training)
    run = tmp_path / "run"
    base = ["--dataset", "300w", "--input-size", SIZE, "--prepared-dir", prepared, "--augment",
            "none", "--epochs", "1", "--batch-size", "2", "--verbose", "0", "--run-dir", run,
            "--student-mode", "l2"][:None if which else -2]
    main = lambda a: trainers[which].main(a, builder=_tiny_builder)  # noqa: E731
    out = a_file / "sub" / "final.keras"
    run_main(main, base + ["--output", out], capsys, out, "cannot write", str(a_file))
    run_main(main, base + ["--output", tmp_path / "final.h5"], capsys, "final.h5", ".keras")
    (tmp_path / "dir.keras").mkdir()
    run_main(main, base + ["--output", tmp_path / "dir.keras"], capsys, "dir.keras", "folder")
    assert not run.exists()


# ----------------------------------------------------------------------------------------------
# End to end: the real scripts in a subprocess (exit status, no traceback)
# ----------------------------------------------------------------------------------------------


def test_script_prepare_truncated_image(w300, tmp_path):
    img = w300 / "afw" / "134212.jpg"
    img.write_bytes(img.read_bytes()[:3000])
    out = tmp_path / "out"
    run = run_script("data_util.py", *prepare_argv(w300, out, "--strict"))
    assert run.returncode == 2
    error_line(run.stderr, img)
    assert leftovers(out) == []


def test_script_prepare_unwritable_and_unknown(w300, a_file, tmp_path):
    run = run_script("data_util.py", *prepare_argv(w300, a_file / "sub"))
    assert run.returncode == 2
    error_line(run.stderr, a_file / "sub", "cannot write")
    run = run_script("data_util.py", *prepare_argv(w300, tmp_path / "o", dataset="afw"))
    assert run.returncode == 2
    error_line(run.stderr, "unknown dataset 'afw'")


def test_script_asm_incomplete(prepared_copy):
    (prepared_copy / "manifest.json").unlink()
    run = run_script("asm_soft_landmarks.py", "--prepared-dir", prepared_copy)
    assert run.returncode == 2
    error_line(run.stderr, prepared_copy, "data_util.py prepare")


def test_script_cnn_model_too_small():
    run = run_script("cnn_model.py", "--summary", "--input-size", "16")
    assert run.returncode == 2
    error_line(run.stderr, "--input-size 16", "32")


def test_script_test_py_malformed_predictions(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b"\x00\x01 binary")
    run = run_script("test.py", "--predictions", path, "--out-dir", tmp_path / "res")
    assert run.returncode == 2
    error_line(run.stderr, path)
    assert not (tmp_path / "res" / "scores.json").exists()


@pytest.mark.slow
def test_script_teacher_trainer_too_small(tmp_path):
    """Imports TensorFlow (about 10-20 s on 2 shared cores)."""
    run = run_script("teacher_trainer.py", "--input-size", "16", "--run-dir", tmp_path / "run")
    assert run.returncode == 2
    error_line(run.stderr, "--input-size 16")
    assert not (tmp_path / "run").exists()


def test_everything_raised_is_a_landmark_error():
    """The error family the CLIs rely on."""
    for cls in (DataFormatError, ModelError):
        assert issubclass(cls, LandmarkError)


def test_readers_start_without_tensorflow():
    """`python data_util.py prepare`, the ASM and cnn_model's argument checks answer fast: importing
    them does not import TensorFlow or Keras (they are imported where a network is built)."""
    code = ("import sys, data_util, asm_soft_landmarks, cnn_model; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_tune_malloc_respects_user_malloc_settings(monkeypatch):
    import runtime

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert runtime.tune_malloc() is False
