"""Tests of synthetic_faces.py: determinism, official formats (strict), feature placement,
consistency of the three layouts and occlusion flags."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

import synthetic_faces as sf

# ------------------------------------------------------------------------------------------------
# small strict parsers of the official formats (independent of data_util)
# ------------------------------------------------------------------------------------------------


def parse_pts(path: Path) -> np.ndarray:
    text = path.read_text()
    assert text.endswith("}\n"), f"{path}: must end with a closing brace line"
    lines = text.split("\n")
    assert lines[0] == "version: 1"
    assert lines[1] == "n_points:  68"
    assert lines[2] == "{"
    assert lines[3 + 68] == "}"
    assert lines[3 + 69] == "" and len(lines) == 3 + 70
    pts = np.array([[float(v) for v in l.split(" ")] for l in lines[3:3 + 68]])
    assert pts.shape == (68, 2)
    return pts


def parse_wflw(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        f = line.split(" ")
        assert len(f) == 207, f"{len(f)} fields"
        pts = np.array([float(v) for v in f[:196]]).reshape(98, 2)
        box = np.array([int(v) for v in f[196:200]])
        attrs = np.array([int(v) for v in f[200:206]])
        assert set(attrs.tolist()) <= {0, 1}
        rows.append((pts, box, attrs, f[206]))
    return rows


def read_cofw(path: Path, split: str):
    sfx = "Tr" if split == "train" else "T"
    with open(path, "rb") as fh:
        head = fh.read(128)
    assert head.startswith(b"MATLAB 7.3 MAT-file")
    assert head[126:128] == b"IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        cell = f[f"Is{sfx}"]
        assert cell.attrs["MATLAB_class"] == b"cell"
        n = cell.shape[1]
        assert cell.shape == (1, n)
        images = []
        for r in cell[0]:
            d = f[r]
            assert d.name.startswith("/#refs#/")
            assert d.attrs["MATLAB_class"] == b"uint8" and d.dtype == np.uint8
            images.append(np.asarray(d[()]).T)          # (3, W, H) -> (H, W, 3)
        phis, boxes = f[f"phis{sfx}"], f[f"bboxes{sfx}"]
        assert phis.shape == (87, n) and boxes.shape == (4, n)
        assert phis.attrs["MATLAB_class"] == b"double" and phis.dtype == np.float64
        assert boxes.attrs["MATLAB_class"] == b"double"
        return images, phis[()].T, boxes[()].T


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------


def test_render_deterministic_and_shapes():
    a = sf.render_face(np.random.default_rng(7))
    b = sf.render_face(np.random.default_rng(7))
    assert a[0].dtype == np.uint8 and a[0].ndim == 3 and a[0].shape[2] == 3
    assert 256 <= a[0].shape[0] <= 450 and 256 <= a[0].shape[1] <= 450
    assert np.array_equal(a[0], b[0])
    for n in (68, 98, 29):
        assert a[1][n].shape == (n, 2)
        assert np.array_equal(a[1][n], b[1][n])
        h, w = a[0].shape[:2]
        assert np.all(a[1][n] >= 0) and np.all(a[1][n][:, 0] < w) and np.all(a[1][n][:, 1] < h)
    assert np.array_equal(a[2]["attributes"], b[2]["attributes"])
    c = sf.render_face(np.random.default_rng(8))
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layouts_consistent(seed):
    img, lm, _ = sf.render_face(np.random.default_rng(seed), image_size=300, difficulty="hard")
    p68, p98, p29 = lm[68], lm[98], lm[29]
    same = [  # (68 index, 98 index)
        (36, 60), (39, 64), (42, 68), (45, 72), (30, 54), (33, 57), (48, 76), (54, 82), (51, 79),
        (57, 85), (62, 90), (66, 94), (27, 51), (17, 33), (21, 37), (22, 42), (26, 46)]
    for i, j in same:
        assert np.allclose(p68[i], p98[j], atol=1e-3), (i, j)
    assert np.allclose(p68[8], p98[16], atol=1e-3)          # chin
    # jaw: WFLW's contour runs along the same outline, starting a little higher
    iod = np.linalg.norm(p68[36] - p68[45])
    for i in range(17):
        tol = 0.02 + 0.4 * abs(i - 8) / 8        # same chin, growing offset towards the top
        assert np.linalg.norm(p68[i] - p98[2 * i]) < tol * iod, i
    cofw = [(8, 36), (9, 45), (10, 39), (11, 42), (20, 30), (21, 33), (22, 48), (23, 54), (24, 51),
            (25, 62), (26, 66), (27, 57), (28, 8)]
    for k, i in cofw:
        assert np.allclose(p29[k], p68[i], atol=1e-3), (k, i)
    assert np.allclose(p29[16], p98[96]) and np.allclose(p29[17], p98[97])
    # image-left / image-right order of the mirror pairs on a face that is not turned away
    assert p68[36][0] < p68[45][0] and p98[96][0] < p98[97][0] and p29[0][0] < p29[1][0]


def test_flip_tables_match_the_geometry():
    """Mirroring a frontal synthetic face maps it onto its flipped version (METHOD.md tables)."""
    from configuration import dataset_info

    img, lm, _ = sf.render_face(np.random.default_rng(3), image_size=320, clean=True, frontal=True)
    for name, n in (("300w", 68), ("wflw", 98), ("cofw", 29)):
        p = lm[n].astype(float)
        perm = dataset_info(name).flip_permutation
        mirrored = p.copy()
        mirrored[:, 0] = 2 * p[:, 0].mean() - p[:, 0]
        iod = np.linalg.norm(p[dataset_info(name).interocular[0][0]] - p[dataset_info(name).interocular[1][0]])
        err = np.linalg.norm(mirrored[perm] - p, axis=1).max() / iod
        assert err < 0.15, (name, err)


def _px(img, p):
    x, y = int(round(p[0])), int(round(p[1]))
    return img[y - 0:y + 1, x - 0:x + 1].reshape(-1, 3).astype(float).mean(0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_features_drawn_at_their_landmarks(seed):
    img, lm, flags = sf.render_face(np.random.default_rng(seed), image_size=320, clean=True,
                                    frontal=True, return_debug=True)
    dbg = flags["debug"]
    assert not dbg["occluder_mask"].any()
    p68, p98 = lm[68], lm[98]
    cheek = _px(img, (p68[2] + p68[31]) / 2 * [1, 1])
    # pupils dark
    for k in (96, 97):
        assert _px(img, p98[k]).max() < 40, k
    # eye contour: the lid line / canthus / eyeball, never plain skin
    for k in range(36, 48):
        assert np.abs(_px(img, p68[k]) - cheek).sum() > 45, k
    # sclera between pupil and eye corners is brighter than the lids
    for a, b in ((36, 96), (45, 97)):
        s = _px(img, p68[a] * 0.55 + p98[b] * 0.45)
        assert s.mean() > 120, (a, s)
    # lips: points just inside the outer lip contour carry the lip colour, not the skin colour
    centre = (p68[62] + p68[66]) / 2
    lip = np.asarray(dbg["lip"], float)
    for k in (49, 50, 51, 52, 53, 55, 56, 57, 58, 59):
        c = _px(img, p68[k] + 0.2 * (centre - p68[k]))
        c_n = c / (c.sum() + 1e-6)
        assert np.abs(c_n - lip / lip.sum()).sum() < np.abs(c_n - cheek / cheek.sum()).sum(), k
    # brows: a point inside the brow band is darker than the forehead above it
    for up, lo in ((35, 40), (44, 49)):
        mid = (p98[up] + p98[lo]) / 2
        fore = p98[up] + 1.5 * (p98[up] - p98[lo])
        assert _px(img, mid).mean() < _px(img, fore).mean() - 15


@pytest.mark.parametrize("seed", range(6))
def test_occlusion_flags_exact(seed):
    img, lm, flags = sf.render_face(np.random.default_rng(seed), image_size=300, occluder=True,
                                    return_debug=True)
    m = flags["debug"]["occluder_mask"]
    assert m.any()
    for n in (68, 98, 29):
        ij = np.round(lm[n]).astype(int)
        inside = m[ij[:, 1].clip(0, m.shape[0] - 1), ij[:, 0].clip(0, m.shape[1] - 1)] > 0
        assert np.array_equal(flags["occluded"][n], inside)
    assert flags["attributes"][4] == int(flags["occluded"][98].any())


def test_no_occluder_no_flags():
    img, lm, flags = sf.render_face(np.random.default_rng(5), occluder=False)
    assert not any(flags["occluded"][n].any() for n in (68, 98, 29))
    assert flags["attributes"][4] == 0


def test_pose_attribute_and_hidden_points():
    img, lm, flags = sf.render_face(np.random.default_rng(4), pose=(55.0, 0.0, 0.0))
    assert flags["attributes"][0] == 1
    p = lm[68]
    # turned face: the near and far eye widths differ strongly (self-occlusion keeps positions)
    w_l, w_r = np.linalg.norm(p[39] - p[36]), np.linalg.norm(p[45] - p[42])
    assert max(w_l, w_r) / min(w_l, w_r) > 1.3
    assert np.isfinite(p).all()


# ------------------------------------------------------------------------------------------------
# datasets on disk
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def out300w(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "300w"
    sf.generate("300w", root, 6, 7, seed=3, workers=1)
    return root


def test_300w_layout_and_pts(out300w):
    root = out300w
    marker = json.loads((root / "SYNTHETIC.json").read_text())
    assert marker["seed"] == 3 and marker["num_train"] == 6 and marker["num_test"] == 7
    counts = {}
    for folder in ("lfpw/trainset", "helen/trainset", "afw", "lfpw/testset", "helen/testset", "ibug"):
        d = root / folder
        pts = sorted(d.glob("*.pts")) if d.is_dir() else []
        counts[folder] = len(pts)
        for p in pts:
            lm = parse_pts(p)
            imgs = [q for q in d.glob(p.stem + ".*") if q.suffix in (".jpg", ".png")]
            assert len(imgs) == 1
            im = cv2.imread(str(imgs[0]))
            assert im is not None
            assert lm[:, 0].max() < im.shape[1] and lm[:, 1].max() < im.shape[0] and lm.min() >= 0
    assert counts["lfpw/trainset"] + counts["helen/trainset"] + counts["afw"] == 6
    assert counts["lfpw/testset"] + counts["helen/testset"] + counts["ibug"] == 7
    assert counts["ibug"] >= 1 and counts["helen/trainset"] >= 1
    assert not list(root.parent.glob(".300w.tmp-*"))


def test_generation_deterministic(out300w, tmp_path):
    again = sf.generate("300w", tmp_path / "300w", 6, 7, seed=3, workers=2)
    files = sorted(p.relative_to(out300w) for p in out300w.rglob("*") if p.is_file()
                   and p.name != "SYNTHETIC.json")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()
                           and p.name != "SYNTHETIC.json")
    for f in files:
        assert (out300w / f).read_bytes() == (again / f).read_bytes(), f


def test_pts_matches_render(out300w):
    """The .pts of face k equals render_face(default_rng(seed + k)) (train faces first)."""
    _, lm, _ = sf.render_face(np.random.default_rng(3 + 0), difficulty="normal")
    first = sorted((out300w / "lfpw/trainset").glob("*.pts"))[0]
    assert np.allclose(parse_pts(first), lm[68], atol=1e-3)


def test_wflw_format(tmp_path):
    root = sf.generate("wflw", tmp_path / "wflw", 4, 3, seed=1, workers=1)
    ann = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    tr = parse_wflw(ann / "list_98pt_rect_attr_train.txt")
    te = parse_wflw(ann / "list_98pt_rect_attr_test.txt")
    assert len(tr) == 4 and len(te) == 3
    for pts, box, attrs, rel in tr + te:
        assert not rel.startswith("/") and "--" in rel.split("/")[0]
        im = cv2.imread(str(root / "WFLW_images" / rel))
        assert im is not None
        assert box[0] < box[2] and box[1] < box[3]
        assert box[0] <= pts[:, 0].min() + 1 and box[2] >= pts[:, 0].max() - 1
        assert box[1] <= pts[:, 1].min() + 1 and box[3] >= pts[:, 1].max() - 1
        assert pts[:, 0].max() < im.shape[1] and pts[:, 1].max() < im.shape[0]


def test_cofw_format(tmp_path):
    root = sf.generate("cofw", tmp_path / "cofw", 5, 3, seed=2, workers=1)
    for split, fname, n in (("train", "COFW_train_color.mat", 5), ("test", "COFW_test_color.mat", 3)):
        images, phis, boxes = read_cofw(root / fname, split)
        assert len(images) == n and phis.shape == (n, 87) and boxes.shape == (n, 4)
        for img, phi, box in zip(images, phis, boxes):
            h, w = img.shape[:2]
            x, y, occ = phi[:29], phi[29:58], phi[58:]
            assert set(np.unique(occ)) <= {0.0, 1.0}
            assert x.max() < w and y.max() < h and x.min() >= 0 and y.min() >= 0
            assert box[2] > 0 and box[3] > 0
    # MATLAB layout: an H x W x 3 image is stored as a (3, W, H) dataset
    with h5py.File(root / "COFW_train_color.mat", "r") as f:
        raws = [f[r][()] for r in f["IsTr"][0]]
    images = read_cofw(root / "COFW_train_color.mat", "train")[0]
    for raw, img in zip(raws, images):
        assert raw.shape == img.shape[::-1]
        if img.ndim == 3:
            assert raw.shape[0] == 3 and raw.shape[2] == img.shape[0]


def test_generate_default_and_cli(tmp_path, monkeypatch):
    monkeypatch.setitem(sf.DEFAULT_SIZES, "wflw", (2, 1))
    root = sf.generate_default("wflw", tmp_path / "wflw", progress=False)
    assert sf.is_complete(root, "wflw", 2, 1, 0)
    stamp = (root / "SYNTHETIC.json").stat().st_mtime_ns
    sf.generate_default("wflw", root, progress=False)   # complete: kept as it is
    assert (root / "SYNTHETIC.json").stat().st_mtime_ns == stamp
    assert sf.main(["--dataset", "300w", "--out", str(tmp_path / "cli"), "--train", "2", "--test", "2",
                    "--no-progress", "--workers", "1"]) == 0
    assert sf.is_complete(tmp_path / "cli" / "300w", "300w", 2, 2, 0)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "_write_wflw", boom)
    with pytest.raises(RuntimeError):
        sf.generate("wflw", tmp_path / "wflw", 1, 1, workers=1)
    assert not (tmp_path / "wflw").exists()
    assert list(tmp_path.iterdir()) == []
