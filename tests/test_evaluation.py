"""evaluation.py: predictions files, scoring on a hand-made prepared split, reports, figures, and
`test.py --predictions` as a subprocess."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_util as du
import evaluation as ev
import fixtures as fx
from configuration import WFLW_ATTRIBUTES
from errors import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
S = 64


def _shape(n_points, io, rng):
    """Points in a 100x100 box with the 300W/WFLW outer eye corners `io` px apart horizontally."""
    pts = rng.uniform(0, 100, size=(n_points, 2))
    if n_points == 68:
        pts[36], pts[45] = (0.0, 0.0), (io, 0.0)
        pts[36:42] = pts[36] + np.array([(0, 0), (4, -3), (8, -3), (12, 0), (8, 3), (4, 3)])   # mean +6
        pts[42:48] = pts[45] - np.array([(12, 0), (8, -3), (4, -3), (0, 0), (4, 3), (8, 3)])   # mean -6
    else:  # 98 points
        pts[60], pts[72] = (0.0, 0.0), (io, 0.0)
    return pts


def make_prepared(root: Path, dataset="300w", m=6, io=(100.0, 50.0), seed=0) -> Path:
    """Write the ARCHITECTURE.md prepared layout (test split only) with known geometry."""
    n = 68 if dataset == "300w" else 98
    rng = np.random.default_rng(seed)
    px = np.stack([_shape(n, io[i % len(io)], rng) + rng.uniform(50, 400, 2) for i in range(m)])
    lo, hi = px.min(1), px.max(1)
    side = 1.25 * (hi - lo).max(1)
    c = (lo + hi) / 2
    boxes = np.stack([c[:, 0] - side / 2, c[:, 1] - side / 2, side], 1).astype(np.float32)
    crop = (px - boxes[:, None, :2]) * (S / boxes[:, None, 2:3])
    norm = (S / 2 - crop) / S
    d = root / "test"
    d.mkdir(parents=True)
    np.save(d / "images.npy", rng.integers(0, 255, (m, S, S, 3), dtype=np.uint8))
    np.save(d / "landmarks.npy", norm.astype(np.float32))
    np.save(d / "landmarks_px.npy", px.astype(np.float32))
    np.save(d / "crop_boxes.npy", boxes)
    ids = [f"face_{i}" for i in range(m)]
    meta = {"ids": ids, "image_paths": [f"img_{i}.jpg" for i in range(m)]}
    if dataset == "300w":
        meta["subsets"] = ["common"] * (m - 2) + ["challenging"] * 2
        meta["attributes"] = None
    else:
        attrs = np.zeros((m, 6), int)
        attrs[0, 0] = attrs[1, 0] = 1   # 2 pose faces
        attrs[2, 5] = 1                 # 1 blur face
        meta["subsets"] = ["test"] * m
        meta["attributes"] = attrs.tolist()
    (d / "meta.json").write_text(json.dumps(meta))
    (root / "manifest.json").write_text(json.dumps({"complete": True, "dataset": dataset,
                                                    "num_points": int(px.shape[1]), "input_size": S,
                                                    "counts": {"test": m}}))
    return root


@pytest.fixture
def prepared300(tmp_path):
    return make_prepared(tmp_path / "300w-synthetic-64")


def _write(tmp_path, prepared, pts, ids=None, dataset="300w", name="pred.json"):
    split = du.load_prepared(prepared, "test")
    return ev.write_predictions(tmp_path / name, dataset, prepared, "hand-made", ids or split.ids, pts)


def test_perfect_predictions(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    p = _write(tmp_path, prepared300, np.asarray(split.landmarks_px))
    scores = ev.score_predictions(p, split)
    assert set(scores) == {"common", "challenging", "full"}
    assert scores["full"]["count"] == 6 and scores["common"]["count"] == 4
    for r in scores.values():
        assert r["nme_interocular"] == pytest.approx(0, abs=1e-3)
        assert r["nme_interpupil"] == pytest.approx(0, abs=1e-3)
        assert r["fr@0.1"] == 0 and r["fr@0.08"] == 0
        assert r["auc@0.1"] == pytest.approx(1.0, abs=1e-3)
        assert r["auc_authors@0.1"] == pytest.approx(0.95)   # their trapz: a perfect set gives 0.95


def test_constant_offset_gives_known_nme(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    gt = np.asarray(split.landmarks_px, dtype=np.float64)
    p = _write(tmp_path, prepared300, gt + np.array([3.0, 4.0]))          # 5 px everywhere
    s = ev.score_predictions(ev.read_predictions(p), prepared300)
    # faces alternate inter-ocular 100 px (NME 5%) and 50 px (NME 10%)
    assert s["full"]["nme_interocular"] == pytest.approx(7.5, abs=1e-3)
    assert s["common"]["nme_interocular"] == pytest.approx(7.5, abs=1e-3)
    # inter-pupil distances are io - 12: 88 and 38 px
    assert s["full"]["nme_interpupil"] == pytest.approx(100 * (5 / 88 + 5 / 38) / 2, abs=1e-3)
    # NME 0.1 exactly is not a failure (> threshold); 0.1 > 0.08 is
    assert s["full"]["fr@0.08"] == pytest.approx(50.0)
    assert s["full"]["auc@0.1"] == pytest.approx(((1 - 0.5) + (1 - 1.0)) / 2, abs=2e-3)


def test_predictions_from_norm_round_trip(prepared300):
    split = du.load_prepared(prepared300, "test")
    px = ev.predictions_from_norm(split.landmarks, split.crop_boxes, S)
    np.testing.assert_allclose(px, split.landmarks_px, atol=1e-3)


def test_to_crop_px_inverts_predictions_from_norm(prepared300):
    """to_crop_px (original -> crop pixels, used for the sample grid) undoes the crop step of
    predictions_from_norm: the stored ground truth lands on the stored normalised landmarks."""
    import image_utility as iu

    split = du.load_prepared(prepared300, "test")
    crop = ev.to_crop_px(split.landmarks_px, split.crop_boxes, S)
    assert crop.shape == split.landmarks_px.shape
    np.testing.assert_allclose(crop, iu.denormalize_landmarks(split.landmarks, S), atol=1e-3)
    px = ev.predictions_from_norm(split.landmarks, split.crop_boxes, S)
    np.testing.assert_allclose(ev.to_crop_px(px, split.crop_boxes, S), crop, atol=1e-3)


def test_order_of_items_does_not_matter(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    order = [5, 3, 1, 0, 2, 4]
    p = _write(tmp_path, prepared300, np.asarray(split.landmarks_px)[order], [split.ids[i] for i in order])
    assert ev.score_predictions(p, split)["full"]["nme_interocular"] == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize("mutate, match", [
    (lambda o: "{not json", "not valid JSON"),
    (lambda o: {**o, "format": "other"}, "not a predictions file"),
    (lambda o: {**o, "items": []}, "non-empty"),
    (lambda o: {**o, "items": o["items"][:1] + [{"id": "x", "landmarks_px": [[1, 2]] * 5}]}, "same point count"),
    (lambda o: {**o, "items": o["items"] + o["items"][:1]}, "appears twice"),
    (lambda o: {**o, "items": [{"id": "a"}]}, "needs"),
])
def test_malformed_files(tmp_path, prepared300, mutate, match):
    split = du.load_prepared(prepared300, "test")
    p = _write(tmp_path, prepared300, np.asarray(split.landmarks_px))
    obj = mutate(json.loads(p.read_text()))
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    with pytest.raises(DataFormatError, match=match) as err:
        ev.score_predictions(p, split)
    assert "\n" not in str(err.value)


def test_unknown_missing_ids_and_point_count(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    gt = np.asarray(split.landmarks_px)
    p = _write(tmp_path, prepared300, gt, ["nobody"] + split.ids[1:])
    with pytest.raises(DataFormatError, match="not in the test split"):
        ev.score_predictions(p, split)
    p = _write(tmp_path, prepared300, gt[:5], split.ids[:5])
    with pytest.raises(DataFormatError, match="predict every test face"):
        ev.score_predictions(p, split)
    p = _write(tmp_path, prepared300, gt[:, :29], dataset="300w")
    with pytest.raises(DataFormatError, match="29 points"):
        ev.score_predictions(p, split)
    with pytest.raises(DataFormatError, match="nowhere: no such folder; run python data_util.py prepare"):
        du.load_prepared(tmp_path / "nowhere", "test")


def test_wflw_attribute_subsets(tmp_path):
    prepared = make_prepared(tmp_path / "wflw", dataset="wflw", m=5, io=(100.0,))
    split = du.load_prepared(prepared, "test")
    p = ev.write_predictions(tmp_path / "p.json", "wflw", prepared, "m", split.ids,
                             np.asarray(split.landmarks_px) + np.array([0.0, 2.0]))
    s = ev.score_predictions(p, split)
    assert list(s) == ["full", *WFLW_ATTRIBUTES]
    assert s["full"]["count"] == 5 and s["pose"]["count"] == 2 and s["blur"]["count"] == 1
    assert s["makeup"] == {"count": 0}
    assert s["pose"]["nme_interocular"] == pytest.approx(2.0, abs=1e-3)
    md = ev.markdown_report(s, "wflw", "mine", "kd")
    assert "8.57" in md and "15.06" in md and "interpupil" in md


def test_markdown_report_has_paper_numbers(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    p = _write(tmp_path, prepared300, np.asarray(split.landmarks_px) + 1.0)
    md = ev.markdown_report(ev.score_predictions(p, split), "300w", "student", "kd")
    for number in ("3.56", "6.13", "4.06", "3.93", "4.50", "3.82", "3.40", "2.87", "3.32"):
        assert number in md
    assert "(same setting)" in md and "FR@0.08" in md
    md = ev.markdown_report({"full": {"count": 0}}, "cofw")
    assert "4.11" in md and "2.37" in md and "1.97" in md


def test_figures(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    ced = ev.save_ced_plot({"a": [0.01, 0.05], "b": np.array([0.02, np.nan, 0.2])}, tmp_path / "ced.png")
    crop = (S / 2 - S * np.asarray(split.landmarks))
    grid = ev.save_sample_grid(np.asarray(split.images[:5]), crop[:5], crop[:5] + 2, tmp_path / "g.png")
    for f in (ced, grid):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 1000


def _run_test_py(*args):
    return subprocess.run([sys.executable, str(ROOT / "test.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_scores_predictions_file(tmp_path, prepared300):
    split = du.load_prepared(prepared300, "test")
    p = _write(tmp_path, prepared300, np.asarray(split.landmarks_px) + np.array([3.0, 4.0]))
    out = tmp_path / "res"
    r = _run_test_py("--predictions", p, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    scores = json.loads((out / "scores.json").read_text())["scores"]
    assert scores["full"]["nme_interocular"] == pytest.approx(7.5, abs=1e-3)
    assert "4.06" in (out / "results.md").read_text()
    assert (out / "ced.png").stat().st_size > 1000 and (out / "samples.png").stat().st_size > 1000
    assert "full" in r.stdout
    # the fixture holds test/ only: scored all the same, with no mean-shape row and a note saying why
    saved = json.loads((out / "scores.json").read_text())
    assert saved["mean_shape_scores"] is None
    md = (out / "results.md").read_text()
    assert "mean training shape (no model" not in md
    assert f"no mean-training-shape row: {prepared300 / 'train'} is missing" in md
    assert "note: no mean-training-shape row" in r.stdout


def test_cli_mean_shape_row_with_a_train_split(tmp_path, prepared300):
    """With train/ present the report carries the mean training shape's row: the test faces' own
    mean shape, here written as the training split, scored like a model."""
    test = du.load_prepared(prepared300, "test")
    fx.write_prepared_split(prepared300 / "train", np.asarray(test.landmarks), test.input_size)
    manifest = json.loads((prepared300 / "manifest.json").read_text())
    manifest["counts"]["train"] = len(test)
    (prepared300 / "manifest.json").write_text(json.dumps(manifest))
    p = _write(tmp_path, prepared300, np.asarray(test.landmarks_px))
    r = _run_test_py("--predictions", p, "--out-dir", tmp_path / "res")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "res" / "scores.json").read_text())
    # by hand: the mean normalised shape mapped back into each test crop (norm = (S/2 - crop)/S,
    # crop = (px - box corner) * S / side), inter-ocular NME over the outer eye corners 36, 45
    mean = np.asarray(test.landmarks, np.float64).mean(axis=0)
    boxes = np.asarray(test.crop_boxes, np.float64)
    gt = np.asarray(test.landmarks_px, np.float64)
    pred = boxes[:, None, :2] + (S / 2 - S * mean)[None] * boxes[:, None, 2:3] / S
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    expected = 100 * np.mean(np.linalg.norm(pred - gt, axis=2).mean(axis=1) / io)
    assert saved["mean_shape_scores"]["full"]["nme_interocular"] == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0                          # the faces differ from their mean
    md = (tmp_path / "res" / "results.md").read_text()
    assert "mean training shape (no model" in md and "no mean-training-shape row" not in md


def test_cli_bad_predictions_one_line(tmp_path, prepared300):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "kd-landmarks-predictions/1", "items": 3}')
    r = _run_test_py("--predictions", bad, "--prepared-dir", prepared300, "--out-dir", tmp_path / "o")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:")
    assert "Traceback" not in r.stderr
