"""Every dataset's metrics pinned end to end (issue 37): 300W, COFW, WFLW and a custom layout, each
scored through the user-visible path (a predictions file -> evaluation.score_predictions and
`python test.py --predictions FILE`) against values computed here by hand.

The faces are built so that every number is known in closed form: each face's normaliser points
are placed at chosen distances (the indices of METHOD.md section 7 written out below, not read from
configuration.py), and each prediction is the ground truth moved by one constant vector of chosen
length e_i, so the per-image NME is exactly e_i / d_i. The inter-pupil distance is made different
from the inter-ocular one, and the errors are chosen so that FR@0.1 (and 300W's FR@0.08) differ
between the two normalisers: a failure rate counted on the wrong NME changes the number.

The mean-training-shape floor is pinned with training faces that differ from the test faces, so a
floor taken from the test faces (an optimistic floor) gives another number and a false warning.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_util as du
import evaluation as ev
import fixtures as fx
from configuration import DatasetInfo

ROOT = Path(__file__).resolve().parents[1]
S = 64                                    # crop side of the prepared split
T = 0.1                                   # AUC / FR threshold

# METHOD.md section 7, written out (0-based indices): inter-ocular and inter-pupil point groups.
METHOD_NORMALISERS = {
    "300w": {"io": ((36,), (45,)), "ip": ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))},
    "cofw": {"io": ((8,), (9,)), "ip": ((16,), (17,))},
    "wflw": {"io": ((60,), (72,)), "ip": ((96,), (97,))},
}
POINTS = {"300w": 68, "cofw": 29, "wflw": 98}
# A custom layout (7 points): each "eye" of the inter-ocular normaliser is the mean of two points.
CUSTOM_SPEC = {"name": "seven_e2e", "num_points": 7, "flip_pairs": [[0, 1], [2, 3], [4, 5]],
               "interocular": [[0, 2], [1, 3]], "interpupil": [[4], [5]]}

# Six test faces: inter-ocular NME per face (fractions) and the ratio d_io / d_ip of each layout.
NME_IO = np.array([0.02, 0.05, 0.07, 0.09, 0.12, 0.20])
IO_PX = np.array([90.0, 120.0, 75.0, 100.0, 60.0, 110.0])      # inter-ocular distance of each face


def _eye_group_points(centre, r):
    """Six eye-contour points (300W order: outer corner, two upper, inner corner, two lower) of an
    eye whose mean is `centre` and whose corners are `r` px left and right of it."""
    cx, cy = centre
    return np.array([(cx - r, cy), (cx - r / 2, cy - 4), (cx + r / 2, cy - 4), (cx + r, cy),
                     (cx + r / 2, cy + 4), (cx - r / 2, cy + 4)])


def _face(dataset: str, io: float, rng) -> tuple[np.ndarray, float]:
    """One ground-truth face (N, 2) px with inter-ocular distance `io`; returns it and its
    inter-pupil distance (chosen, not measured: the test's hand value)."""
    if dataset == "custom":
        n = CUSTOM_SPEC["num_points"]
    else:
        n = POINTS[dataset]
    pts = rng.uniform(0, 1.3 * io, size=(n, 2)) + [0, 0.2 * io]     # the rest of the face, anywhere
    if dataset == "300w":
        # outer corners 36 (x = 0) and 45 (x = io); eye centres (means of 36-41 and 42-47) at
        # x = r and x = io - r, so the inter-pupil distance is io - 2 r = 2/3 io
        r = io / 6.0
        pts[36:42] = _eye_group_points((r, 0.0), r)          # 36 outer corner, 39 inner corner
        pts[42:48] = _eye_group_points((io - r, 0.0), r)     # 42 inner corner, 45 outer corner
        ip = io - 2 * r
    elif dataset == "cofw":
        pts[8], pts[9] = (0.0, 0.0), (io, 0.0)                       # eye corners 8, 9
        ip = 0.6 * io
        pts[16], pts[17] = (0.2 * io, 3.0), (0.2 * io + ip, 3.0)     # pupils 16, 17
    elif dataset == "wflw":
        pts[60], pts[72] = (0.0, 0.0), (io, 0.0)                     # outer eye corners 60, 72
        ip = 0.7 * io
        pts[96], pts[97] = (0.15 * io, -2.0), (0.15 * io + ip, -2.0)  # pupils 96, 97
    else:
        # "eye" 0 = mean of points 0 and 2 at x = 0, "eye" 1 = mean of points 1 and 3 at x = io
        pts[0], pts[2] = (0.0, -5.0), (0.0, 5.0)
        pts[1], pts[3] = (io - 6.0, 0.0), (io + 6.0, 0.0)
        ip = 0.5 * io
        pts[4], pts[5] = (0.25 * io, 8.0), (0.25 * io + ip, 8.0)
    return pts, ip


def _write_split(d: Path, px: np.ndarray, meta: dict) -> None:
    """A prepared split as prepare writes it: square landmark box with margin 0.25, normalised
    crop coordinates (S/2 - crop) / S."""
    lo, hi = px.min(1), px.max(1)
    side = 1.25 * (hi - lo).max(1)
    c = (lo + hi) / 2
    boxes = np.stack([c[:, 0] - side / 2, c[:, 1] - side / 2, side], 1).astype(np.float32)
    crop = (px - boxes[:, None, :2]) * (S / boxes[:, None, 2:3])
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.zeros((len(px), S, S, 3), np.uint8))
    np.save(d / "landmarks.npy", ((S / 2 - crop) / S).astype(np.float32))
    np.save(d / "landmarks_px.npy", px.astype(np.float32))
    np.save(d / "crop_boxes.npy", boxes)
    (d / "meta.json").write_text(json.dumps(meta))


def _layout(tmp_path: Path, dataset: str, train_faces: int = 0):
    """A prepared folder of six test faces (and optionally training faces that differ from them);
    returns (prepared dir, dataset name, gt px, d_io, d_ip)."""
    rng = np.random.default_rng(7)
    name = CUSTOM_SPEC["name"] if dataset == "custom" else dataset
    faces, ips = zip(*[_face(dataset, io, rng) for io in IO_PX])
    offsets = rng.uniform(100, 300, size=(len(IO_PX), 1, 2))       # faces at different places
    gt = np.stack(faces) + offsets
    m = len(gt)
    meta = {"ids": [f"face_{i}" for i in range(m)], "image_paths": [f"img_{i}.png" for i in range(m)]}
    if dataset == "300w":
        meta["subsets"] = ["common"] * 4 + ["challenging"] * 2
    else:
        meta["subsets"] = ["test"] * m
    if dataset == "wflw":
        attrs = np.zeros((m, 6), int)
        attrs[[1, 4], 0] = 1             # pose: faces 1 and 4
        attrs[5, 5] = 1                  # blur: face 5
        meta["attributes"] = attrs.tolist()
    root = tmp_path / f"{name}-64"
    _write_split(root / "test", gt, meta)
    counts = {"test": m}
    manifest = {"complete": True, "dataset": name, "num_points": int(gt.shape[1]), "input_size": S,
                "counts": counts}
    if dataset == "custom":
        spec = tmp_path / "seven.json"
        spec.write_text(json.dumps(CUSTOM_SPEC))
        manifest["config"] = {"custom_spec": str(spec)}
    if train_faces:
        # other faces than the test ones: each test face's normalised shape moved by
        # (0.2, -0.15) of the crop side plus noise, in crops that are the whole image
        test_norm = np.load(root / "test" / "landmarks.npy")
        k = np.arange(train_faces) % m
        norm = test_norm[k] + [0.2, -0.15] + rng.normal(0, 0.01, test_norm[k].shape)
        fx.write_prepared_split(root / "train", norm, S, meta={"ids": [f"train_{i}" for i in
                                                                     range(train_faces)]})
        counts["train"] = train_faces
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root, name, gt, IO_PX.copy(), np.array(ips)


def _predictions(gt: np.ndarray, err_px: np.ndarray) -> np.ndarray:
    """gt moved by one vector of length err_px[i] per face (direction (0.6, 0.8))."""
    return gt + err_px[:, None, None] * np.array([0.6, 0.8])


def _authors_auc(nmes, threshold=T, steps=20) -> float:
    """METHOD.md section 7, by the letter: t = linspace(0, thr, 20), c_k = fraction <= t_k, value =
    sum over k >= 1 of (t_k + t_(k-1)) / 2 * c_k."""
    t = [threshold * k / (steps - 1) for k in range(steps)]
    c = [sum(1 for v in nmes if v <= tk) / len(nmes) for tk in t]
    return sum((t[k] + t[k - 1]) / 2 * c[k] for k in range(1, steps))


def _hand_scores(nme_io, nme_ip, thresholds) -> dict:
    """Scores of one subset from per-image NMEs (fractions), each formula written out."""
    row = {"count": len(nme_io), "nme_interocular": 100 * sum(nme_io) / len(nme_io),
           "nme_interpupil": 100 * sum(nme_ip) / len(nme_ip),
           # standard AUC@0.1: mean over images of the area of the CED step: max(0, 1 - e / 0.1)
           "auc@0.1": sum(max(0.0, 1 - v / T) for v in nme_io) / len(nme_io),
           "auc_authors@0.1": _authors_auc(nme_io)}
    for t in thresholds:
        row[f"fr@{t:g}"] = 100 * sum(1 for v in nme_io if v > t) / len(nme_io)
    return row


SUBSETS = {
    "300w": {"common": [0, 1, 2, 3], "challenging": [4, 5], "full": [0, 1, 2, 3, 4, 5]},
    "cofw": {"full": [0, 1, 2, 3, 4, 5]},
    "wflw": {"full": [0, 1, 2, 3, 4, 5], "pose": [1, 4], "blur": [5], "expression": []},
    "custom": {"full": [0, 1, 2, 3, 4, 5]},
}
THRESHOLDS = {"300w": (0.08, 0.1), "cofw": (0.1,), "wflw": (0.1,), "custom": (0.1,)}


def _normaliser_px(gt, groups) -> np.ndarray:
    """Distance between the means of two index groups, written out (not metrics.py's)."""
    a = np.mean([gt[:, i] for i in groups[0]], axis=0)
    b = np.mean([gt[:, i] for i in groups[1]], axis=0)
    return np.sqrt(((a - b) ** 2).sum(-1))


def _check(got: dict, dataset: str, nme_io, nme_ip):
    for subset, rows in SUBSETS[dataset].items():
        if not rows:
            assert got[subset] == {"count": 0}
            continue
        want = _hand_scores(nme_io[rows], nme_ip[rows], THRESHOLDS[dataset])
        assert set(got[subset]) == set(want), subset
        for k, v in want.items():
            tol = 2e-3 if k.startswith("auc@") else 1e-3     # the standard AUC is on a 1e-4 grid
            assert got[subset][k] == pytest.approx(v, abs=tol), (dataset, subset, k)


@pytest.mark.parametrize("dataset", ["300w", "cofw", "wflw", "custom"])
def test_scores_from_hand_computed_landmarks(tmp_path, dataset):
    prepared, name, gt, d_io, d_ip = _layout(tmp_path, dataset)
    # the faces hold the chosen distances at the METHOD.md indices (the custom ones at its spec's)
    groups = (METHOD_NORMALISERS[dataset] if dataset != "custom" else
              {"io": CUSTOM_SPEC["interocular"], "ip": CUSTOM_SPEC["interpupil"]})
    np.testing.assert_allclose(_normaliser_px(gt, groups["io"]), d_io, rtol=1e-9)
    np.testing.assert_allclose(_normaliser_px(gt, groups["ip"]), d_ip, rtol=1e-9)
    err = NME_IO * d_io
    nme_io, nme_ip = err / d_io, err / d_ip
    # the two normalisers disagree on the failures at every threshold of the dataset
    for t in THRESHOLDS[dataset]:
        assert np.mean(nme_io > t) != np.mean(nme_ip > t)
    path = ev.write_predictions(tmp_path / "pred.json", name, prepared, "hand-made",
                                [f"face_{i}" for i in range(len(gt))], _predictions(gt, err))
    split = du.load_prepared(prepared, "test")
    # a custom layout is passed as the command reads it (its spec); a built-in one by name
    info = DatasetInfo.from_spec(CUSTOM_SPEC) if dataset == "custom" else None
    _check(ev.score_predictions(path, split, info), dataset, nme_io, nme_ip)


def _run_test_py(*args):
    return subprocess.run([sys.executable, str(ROOT / "test.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dataset", ["300w", "cofw", "wflw", "custom"])
def test_test_py_predictions_scores_and_mean_shape_floor(tmp_path, dataset):
    """`test.py --predictions FILE`: scores.json holds the hand values; the mean-shape floor is the
    TRAINING faces' mean placed in each test crop (not the test faces' own mean)."""
    prepared, name, gt, d_io, d_ip = _layout(tmp_path, dataset, train_faces=5)
    train = du.load_prepared(prepared, "train")
    test = du.load_prepared(prepared, "test")
    boxes = np.asarray(test.crop_boxes, np.float64)
    io_groups = METHOD_NORMALISERS[dataset]["io"] if dataset != "custom" else CUSTOM_SPEC["interocular"]

    def floor(mean_norm):
        # the mean normalised shape in each test crop: crop px = S/2 - S v, orig = box + crop * side / S
        pred = boxes[:, None, :2] + (S / 2 - S * mean_norm)[None] * boxes[:, None, 2:3] / S
        return 100 * np.mean(np.sqrt(((pred - gt) ** 2).sum(-1)).mean(1) / _normaliser_px(gt, io_groups))

    floor_train = floor(np.asarray(train.landmarks, np.float64).mean(0))
    floor_test = floor(np.asarray(test.landmarks, np.float64).mean(0))
    assert floor_train > 1.2 * floor_test            # the two floors are far apart
    # the model: inter-ocular NME between the two floors (a floor from the test faces would warn)
    target = (floor_train + floor_test) / 2 / 100
    err = np.full(len(gt), target / np.mean(1 / d_io))
    nme_io, nme_ip = err / d_io, err / d_ip
    path = ev.write_predictions(tmp_path / "pred.json", name, prepared, "hand-made",
                                [f"face_{i}" for i in range(len(gt))], _predictions(gt, err))
    r = _run_test_py("--predictions", path, "--out-dir", tmp_path / "res", "--samples", 2)
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "res" / "scores.json").read_text())
    assert saved["dataset"] == name
    _check(saved["scores"], dataset, nme_io, nme_ip)
    assert saved["mean_shape_scores"]["full"]["nme_interocular"] == pytest.approx(floor_train, rel=1e-5)
    assert "worse than the mean training shape" not in r.stderr     # it beats the training floor
    # and a model just above the training floor is warned about
    worse = ev.write_predictions(tmp_path / "worse.json", name, prepared, "worse", test.ids,
                                 _predictions(gt, err * 1.05 * floor_train / 100 / target))
    r = _run_test_py("--predictions", worse, "--out-dir", tmp_path / "res2", "--samples", 0)
    assert r.returncode == 0, r.stderr
    assert "worse than the mean training shape" in r.stderr
