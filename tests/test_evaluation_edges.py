"""evaluation.py value by value (issue 37 item 3, mutmut's survivors): the predictions file's
fields and every one-line error, the normaliser-is-zero message, subsets from short or missing
metadata, the mean-shape floor computed by hand from a different training split, the report read
back line by line, and the two figures inspected as drawn (what is plotted where, in which colour,
with which limits, labels and size). Fast: hand-made prepared folders of a few faces."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import configuration as C
import data_util as du
import evaluation as ev
import metrics
from errors import DataFormatError, LandmarkError
from test_evaluation import S, make_prepared

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def prepared(tmp_path):
    return make_prepared(tmp_path / "300w-synthetic-64")


def _items(path):
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------- predictions files


def test_write_and_read_keep_every_field(tmp_path, prepared):
    split = du.load_prepared(prepared, "test")
    gt = np.asarray(split.landmarks_px, np.float64) + 0.123456789
    p = ev.write_predictions(tmp_path / "p.json", "300W", prepared, "my model", split.ids, gt)
    obj = _items(p)
    assert obj["dataset"] == "300w" and obj["model"] == "my model" and obj["prepared_dir"] == str(prepared)
    assert obj["items"][0]["landmarks_px"][0] == [round(gt[0, 0, 0], 4), round(gt[0, 0, 1], 4)]
    assert obj["items"][0]["landmarks_px"][0] != [round(gt[0, 0, 0], 5), round(gt[0, 0, 1], 5)]
    back = ev.read_predictions(p)
    assert (back.dataset, back.model, back.prepared_dir, back.path) == ("300w", "my model", str(prepared), str(p))
    assert back.ids == split.ids and back.landmarks_px.dtype == np.float32
    np.testing.assert_allclose(back.landmarks_px, gt, atol=1e-4)


def test_a_file_without_model_or_folder_reads_as_empty_strings(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"format": ev.PREDICTIONS_FORMAT, "dataset": "COFW",
                             "items": [{"id": 3, "landmarks_px": [[1, 2], [3, 4]]}]}))
    back = ev.read_predictions(p)
    assert (back.dataset, back.model, back.prepared_dir, back.ids) == ("cofw", "", "", ["3"])
    assert back.landmarks_px.dtype == np.float32 and back.landmarks_px.tolist() == [[[1, 2], [3, 4]]]


@pytest.mark.parametrize("pts,ids", [(np.zeros((2, 5, 3)), ["a", "b"]), (np.zeros((2, 2)), ["a", "b"]),
                                     (np.zeros((2, 5, 2)), ["a"]), (np.zeros((5, 2)), ["a"])])
def test_write_refuses_points_that_are_not_one_array_per_id(tmp_path, pts, ids):
    with pytest.raises(LandmarkError) as err:
        ev.write_predictions(tmp_path / "p.json", "300w", "x", "m", ids, pts)
    assert str(err.value) == (f"{tmp_path / 'p.json'}: need one (N, 2) array of points per id; got "
                              f"{pts.shape} for {len(ids)} ids")
    assert not (tmp_path / "p.json").exists()


def _bad(tmp_path, obj):
    p = tmp_path / "bad.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    with pytest.raises(DataFormatError) as err:
        ev.read_predictions(p)
    return str(err.value).replace(str(p), "P")


def test_read_errors_word_by_word(tmp_path):
    ok = {"format": ev.PREDICTIONS_FORMAT, "dataset": "300w"}
    missing = tmp_path / "nowhere.json"
    with pytest.raises(DataFormatError) as err:
        ev.read_predictions(missing)
    assert str(err.value) == f"{missing}: predictions file not found; check the path"
    msg = _bad(tmp_path, "{not json")
    assert msg.startswith("P: not valid JSON") and msg.endswith("; write it with evaluation.write_predictions")
    assert _bad(tmp_path, {**ok, "items": [{"id": "a", "landmarks_px": [[1, 2]]}], "dataset": None}) == \
        'P: "dataset" missing; name the dataset (300w, cofw, wflw)'
    assert _bad(tmp_path, {**ok, "items": [{"id": "a", "landmarks_px": [[1, 2, 3]]}]}) == \
        "P: item 0 (a): landmarks_px must be finite [[x, y], ...], got shape (1, 3)"
    assert _bad(tmp_path, {**ok, "items": [{"id": "a", "landmarks_px": [1, 2]}]}) == \
        "P: item 0 (a): landmarks_px must be finite [[x, y], ...], got shape (2,)"
    assert _bad(tmp_path, '{"format": "%s", "dataset": "300w", "items": [{"id": "a", "landmarks_px": '
                          '[[1, NaN]]}]}' % ev.PREDICTIONS_FORMAT) == \
        "P: item 0 (a): landmarks_px must be finite [[x, y], ...], got shape (1, 2)"
    assert _bad(tmp_path, {**ok, "items": [{"id": "a", "landmarks_px": [[1, 2]] * 3},
                                           {"id": "b", "landmarks_px": [[1, 2]] * 4}]}) == \
        "P: item 1 (b) has 4 points, the first item 3; every face needs the same point count"
    assert _bad(tmp_path, {**ok, "items": [{"id": i, "landmarks_px": [[1, 2]]} for i in "abcb"]}) == \
        "P: id 'b' appears twice; one item per test face"
    assert _bad(tmp_path, {**ok, "items": [{"id": "a", "landmarks_px": [["x", 2]]}]}) == \
        'P: item 0 needs "id" and "landmarks_px" [[x, y], ...] of numbers'


def test_a_large_predictions_file_is_read(tmp_path):
    """Above the 1 MiB bound of a configuration file (WFLW's test set is about 5 MB): read."""
    pts = np.full((800, 98, 2), 123.4567)
    p = ev.write_predictions(tmp_path / "p.json", "wflw", "x", "m", [f"face_{i}" for i in range(800)], pts)
    assert p.stat().st_size > (1 << 20)
    assert ev.read_predictions(p).landmarks_px.shape == (800, 98, 2)


def test_align_errors_word_by_word(tmp_path, prepared):
    split = du.load_prepared(prepared, "test")
    gt = np.asarray(split.landmarks_px, np.float32)

    def msg(pred):
        with pytest.raises(DataFormatError) as err:
            ev.align_predictions(pred, split)
        return str(err.value)

    pred = ev.Predictions("300w", "", "m", list(split.ids), gt[:, :29])          # no path: "predictions"
    assert msg(pred) == (f"predictions: 29 points per face but the test split {split.path} has 68; "
                         f"score against the right dataset")
    ids = ["x1", "x2"] + split.ids[2:]
    pred = ev.Predictions("300w", "", "m", ids, gt, path="p.json")
    assert msg(pred) == (f"p.json: 2 ids not in the test split {split.path} (first: 'x1'); predictions "
                         f"and prepared data disagree")
    pred = ev.Predictions("300w", "", "m", split.ids[:4], gt[:4], path="p.json")
    assert msg(pred) == f"p.json: 4 faces predicted, the test split {split.path} has 6; predict every test face"
    order = [5, 4, 3, 2, 1, 0]
    out = ev.align_predictions(ev.Predictions("300w", "", "m", [split.ids[i] for i in order], gt[order] + 0.25),
                               split)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, gt + np.float32(0.25))


# ---------------------------------------------------------------------------- scoring


def test_a_zero_normaliser_is_named_with_the_first_face(prepared):
    split = du.load_prepared(prepared, "test")
    gt = np.asarray(split.landmarks_px, np.float64)
    bad = gt.copy()
    bad[[2, 4], 45] = bad[[2, 4], 36]                       # outer eye corners coincide on faces 2, 4
    masks = {"full": np.ones(6, bool)}
    with pytest.raises(DataFormatError) as err:
        ev.score_arrays(bad, bad, "300w", masks)
    assert str(err.value) == (
        "300w: the interocular normaliser [[36], [45]] is 0 for 2 of 6 test faces (first: face 2); "
        "its two groups of points coincide, so the NME is undefined; fix \"interocular\" in the "
        "dataset spec (two groups of points apart on every face, e.g. the outer eye corners) or the "
        "annotations")
    bad = gt.copy()
    bad[3, 42:48] = bad[3, 36:42]                           # the pupils' groups coincide on face 3
    with pytest.raises(DataFormatError) as err:
        ev.score_arrays(bad, bad, "300w", masks)
    assert str(err.value).startswith(f"300w: the interpupil normaliser {[list(range(36, 42)), list(range(42, 48))]} "
                                     f"is 0 for 1 of 6 test faces (first: face 3)")
    assert 'fix "interpupil"' in str(err.value)


def test_the_auc_threshold_is_the_modules(monkeypatch, prepared):
    split = du.load_prepared(prepared, "test")
    gt = np.asarray(split.landmarks_px, np.float64)
    pred = gt + np.array([3.0, 0.0])
    monkeypatch.setattr(ev, "AUC_THRESHOLD", 0.08)
    row = ev.score_arrays(pred, gt, "300w", {"full": np.ones(6, bool)})["full"]
    io = ev.per_image_nme(pred, gt, "300w")
    assert row["auc@0.08"] == metrics.auc(io, 0.08) and row["auc_authors@0.08"] == metrics.auc_authors(io, 0.08)
    assert row["auc@0.08"] != metrics.auc(io, 0.1)


def test_masks_of_an_empty_split_are_boolean():
    split = du.PreparedSplit.in_memory("300w", np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 68, 2)))
    split.meta.update(subsets=[], attributes=[])
    for how in (("subset", "common"), ("attribute", "pose"), ("all",)):
        m = ev.subset_mask(split, how)
        assert m.dtype == bool and m.shape == (0,)


def test_per_image_nme_and_nmes_for_ced_by_hand(tmp_path, prepared):
    split = du.load_prepared(prepared, "test")
    gt = np.asarray(split.landmarks_px, np.float64)
    shift = np.array([3.0, 4.0])                            # 5 px on every point
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    ip = np.linalg.norm(gt[:, 36:42].mean(1) - gt[:, 42:48].mean(1), axis=1)
    np.testing.assert_allclose(ev.per_image_nme(gt + shift, gt, "300w"), 5 / io, rtol=1e-9)
    np.testing.assert_allclose(ev.per_image_nme(gt + shift, gt, "300w", "ip"), 5 / ip, rtol=1e-9)
    p = ev.write_predictions(tmp_path / "p.json", "300w", prepared, "m", split.ids[::-1], (gt + shift)[::-1])
    np.testing.assert_allclose(ev.nmes_for_ced(p, prepared), 5 / io, rtol=1e-5)
    np.testing.assert_allclose(ev.nmes_for_ced(ev.read_predictions(p), split, "interpupil"), 5 / ip, rtol=1e-5)


def test_subset_rules_and_their_errors(prepared):
    split = du.load_prepared(prepared, "test")
    m = ev.subset_mask(split, ("subset", "challenging"))
    assert m.dtype == bool and m.tolist() == [False] * 4 + [True] * 2
    assert ev.subset_mask(split, ("all",)).tolist() == [True] * 6
    split.meta["subsets"] = ["common"] * 5                  # one short
    with pytest.raises(DataFormatError) as err:
        ev.subset_mask(split, ("subset", "common"))
    assert str(err.value) == f'{split.path}/meta.json: "subsets" missing; prepare the data again'
    split.meta["attributes"] = None
    with pytest.raises(DataFormatError) as err:
        ev.subset_mask(split, ("attribute", "pose"))
    assert str(err.value) == f'{split.path}/meta.json: "attributes" missing; prepare the data again'
    # rows too short for the column, or missing, are "not in the subset"
    split.meta["attributes"] = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], None, [1], [0] * 6, [0, 0, 0, 0, 0, 2]]
    assert ev.subset_mask(split, ("attribute", "blur")).tolist() == [False, True, False, False, False, True]
    assert ev.subset_mask(split, ("attribute", "pose")).tolist() == [False, False, False, True, False, False]
    split.meta["attributes"] = [[1]] * 5
    with pytest.raises(DataFormatError):
        ev.subset_mask(split, ("attribute", "pose"))
    with pytest.raises(LandmarkError) as err:
        ev.subset_mask(split, ("hair", "red"))
    assert str(err.value) == "unknown test subset rule ('hair', 'red')"


def test_mean_shape_floor_is_the_training_mean_by_hand(tmp_path):
    """The floor is the mean normalised training shape placed in each test crop; the training faces
    here differ from the test faces, so a floor from the test faces would differ."""
    prepared = make_prepared(tmp_path / "p", seed=0)
    assert ev.mean_shape_scores(prepared, prepared, "300w") is None          # no train split yet
    other = make_prepared(tmp_path / "other", m=4, seed=7)
    shutil.copytree(other / "test", prepared / "train")
    train = np.load(prepared / "train" / "landmarks.npy").astype(np.float64)
    split = du.load_prepared(prepared, "test")
    boxes = np.asarray(split.crop_boxes, np.float64)
    mean = train.mean(axis=0)
    pred = boxes[:, None, :2] + (S / 2 - S * mean)[None] * boxes[:, None, 2:] / S
    gt = np.asarray(split.landmarks_px, np.float64)
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    ip = np.linalg.norm(gt[:, 36:42].mean(1) - gt[:, 42:48].mean(1), axis=1)
    nme_io = np.linalg.norm(pred - gt, axis=2).mean(1) / io
    nme_ip = np.linalg.norm(pred - gt, axis=2).mean(1) / ip
    got = ev.mean_shape_scores(prepared, str(prepared), "300w")
    assert list(got) == ["common", "challenging", "full"]
    assert got["full"]["count"] == 6 and got["challenging"]["count"] == 2
    assert got["full"]["nme_interocular"] == pytest.approx(100 * nme_io.mean(), rel=1e-4)
    assert got["full"]["nme_interpupil"] == pytest.approx(100 * nme_ip.mean(), rel=1e-4)
    assert got["challenging"]["nme_interocular"] == pytest.approx(100 * nme_io[4:].mean(), rel=1e-4)
    assert got["full"]["fr@0.1"] == pytest.approx(100 * np.mean(nme_io > 0.1))
    test_mean = np.load(prepared / "test" / "landmarks.npy").astype(np.float64).mean(0)
    assert np.abs(test_mean - mean).max() > 1e-3                               # the two floors differ


def test_mean_shape_warning_wording():
    worse = ev.mean_shape_warning({"full": {"nme_interocular": 12.345678}}, {"full": {"nme_interocular": 9.5}})
    assert worse == ("the model: NME 12.35% on the full test set is worse than the mean training shape's "
                     "9.50% (no model at all); train longer, or check the model matches this data")
    assert ev.mean_shape_warning({"full": {"nme_interocular": 3.0}}, {"full": {"nme_interocular": 9.5}}) is None
    got = ev.mean_shape_warning({"pose": {"nme_interocular": 15.01}, "full": {"nme_interocular": 1.0}},
                                {"pose": {"nme_interocular": 10.0}, "full": {"nme_interocular": 9.0}},
                                "kd.keras", "pose")
    assert got.startswith("kd.keras: NME 15.01% on the pose test set is worse than the mean training shape's 10.00%")
    assert ev.mean_shape_warning({"full": {"nme_interocular": 30.0}}, {"full": {"nme_interocular": 9.5}},
                                 "m").startswith("m: NME 30% on the full test set is far worse than")
    for scores, base in (({}, {"full": {"nme_interocular": 1.0}}), ({"full": {"nme_interocular": 5.0}}, None),
                         ({"full": {"count": 0}}, {"full": {"nme_interocular": 1.0}}),
                         ({"full": {"nme_interocular": 5.0}}, {"full": {"count": 0}})):
        assert ev.mean_shape_warning(scores, base) is None


# ---------------------------------------------------------------------------- reports


def test_fmt():
    assert ev._fmt(3.14159) == "3.14" and ev._fmt(3.14159, 4) == "3.1416" and ev._fmt(2) == "2.00"
    assert ev._fmt(None) == "-" and ev._fmt(float("nan")) == "-"


INTRO = ("computed in original-image pixels; FR in % of faces with io NME above the threshold; "
         "AUC@0.1 is the standard area under the CED (0..1); the authors' AUC (their trapz over 20 "
         "thresholds, 0.95 for a perfect set) is only for comparison with their tables.")
BENCH = "NME in % of the inter-ocular (outer eye corners) or inter-pupil distance, " + INTRO
TAIL = ["", "Published numbers come from full-size training on the official data; a run on the "
        "embedded synthetic faces or with the quick preset is not comparable.", ""]

REPORT_300W = [
    "# Results: student on 300w", "", BENCH, "",
    "| subset | faces | NME io % | NME ip % | FR@0.08 % | FR@0.1 % | AUC@0.1 | authors' AUC |",
    "|---|---|---|---|---|---|---|---|",
    "| common | 4 | 3.14 | 2.50 | 25.00 | 0.00 | 0.6123 | 0.5000 |",
    "| challenging | 0 | - | - | - | - | - | - |",
    "| full | 6 | 4.00 | - | 50.00 | 16.67 | 0.5555 | 0.4444 |", "",
    "The mean training shape (no model: the average training face placed in each test crop), the "
    "floor a trained model should beat:", "",
    "| subset | faces | NME io % | NME ip % | FR@0.08 % | FR@0.1 % | AUC@0.1 | authors' AUC |",
    "|---|---|---|---|---|---|---|---|",
    "| common | 0 | - | - | - | - | - | - |",
    "| challenging | 0 | - | - | - | - | - | - |",
    "| full | 6 | 9.50 | - | - | - | - | - |", "",
    "## Beside the published numbers (METHOD.md section 8)", "",
    "| model | normaliser | NME common | NME challenging | NME full | FR@0.1 full |",
    "|---|---|---|---|---|---|",
    "| **student (this run)** | interocular | **3.14** | **-** | **4.00** | 16.67 |",
    "| MobileNetV2, L2 only (paper) | interocular | 3.93 | 6.84 | 4.50 | - |",
    "| MobileNetV2 + KD-Loss, the student (paper) (same setting) | interocular | 3.56 | 6.13 | 4.06 | - |",
    "| student, Tough teacher only (paper) | interocular | 3.85 | 6.59 | 4.39 | - |",
    "| student, Tolerant teacher only (paper) | interocular | 3.73 | 6.41 | 4.25 | - |",
    "| EfficientNet-B3 Tough teacher (paper) | interocular | 3.34 | 5.80 | 3.82 | - |",
    "| PIPNet, MobileNetV2 backbone | interocular | - | - | 3.40 | - |",
    "| STAR | interocular | - | - | 2.87 | - |",
    "| HRNetV2-W18 | interocular | - | - | 3.32 | - |", *TAIL]


def test_300w_report_line_by_line():
    scores = {"common": {"count": 4, "nme_interocular": 3.14159, "nme_interpupil": 2.5, "fr@0.08": 25.0,
                         "fr@0.1": 0.0, "auc@0.1": 0.61234, "auc_authors@0.1": 0.5},
              "challenging": {"count": 0},
              "full": {"count": 6, "nme_interocular": 4.0, "nme_interpupil": float("nan"), "fr@0.08": 50.0,
                       "fr@0.1": 16.666666, "auc@0.1": 0.55555, "auc_authors@0.1": 0.44444}}
    got = ev.markdown_report(scores, "300w", "student", "kd", mean_shape={"full": {"count": 6, "nme_interocular": 9.5}})
    assert got.split("\n") == REPORT_300W


def test_wflw_report_puts_ours_in_each_published_normaliser_interocular_first():
    scores = {"full": {"count": 2, "nme_interocular": 5.0, "nme_interpupil": 7.0, "fr@0.1": 50.0,
                       "auc@0.1": 0.5, "auc_authors@0.1": 0.4}}
    got = ev.markdown_report(scores, "wflw").split("\n")
    assert got[:4] == ["# Results: ours on wflw", "", BENCH, ""]
    assert got[4:8] == ["| subset | faces | NME io % | NME ip % | FR@0.1 % | AUC@0.1 | authors' AUC |",
                        "|---|---|---|---|---|---|---|",
                        "| full | 2 | 5.00 | 7.00 | 50.00 | 0.5000 | 0.4000 |",
                        "| pose | 0 | - | - | - | - | - |"]
    assert got[14:] == [
        "## Beside the published numbers (METHOD.md section 8)", "",
        "| model | normaliser | NME full | NME pose | FR@0.1 full |", "|---|---|---|---|---|",
        "| **ours (this run)** | interocular | **5.00** | **-** | 50.00 |",
        "| PIPNet, MobileNetV2 backbone | interocular | 4.79 | - | - |",
        "| STAR | interocular | 4.02 | - | - |",
        "| HRNetV2-W18 | interocular | 4.60 | - | - |",
        "| **ours (this run)** | interpupil | **7.00** | **-** | - |",
        "| MobileNetV2 + KD-Loss, the student (paper) | interpupil | 8.57 | 15.06 | - |", *TAIL]


def test_a_report_without_a_full_row():
    lines = ev.markdown_report({}, "cofw", "s").split("\n")
    assert "| full | 0 | - | - | - | - | - |" in lines and "| **s (this run)** | interocular | **-** | - |" in lines


def test_cofw_report_has_the_published_failure_rates():
    got = ev.markdown_report({"full": {"count": 1, "nme_interocular": 4.5, "fr@0.1": 0.0}}, "COFW", "s", "l2")
    lines = got.split("\n")
    assert "| **s (this run)** | interocular | **4.50** | 0.00 |" in lines
    assert "| MobileNetV2, L2 only (paper) (same setting) | interocular | 5.04 | 3.74 |" in lines
    assert "| MobileNetV2 + KD-Loss, the student (paper) | interocular | 4.11 | 2.37 |" in lines
    assert "| PIPNet, MobileNetV2 backbone | interocular | 3.43 | - |" in lines


def test_custom_report_names_its_own_normalisers_and_nothing_published():
    info = C.DatasetInfo.from_spec({"name": "Five", "num_points": 5, "interocular": [[0], [1]],
                                    "interpupil": [[2, 3], [4]]})
    got = ev.markdown_report({"full": {"count": 1, "nme_interocular": 1.0}}, info, "m")
    assert got.split("\n") == [
        "# Results: m on five (custom dataset)", "",
        "NME in % of the distance between the two point groups of the spec's \"interocular\" [[0], [1]] "
        "(io) or \"interpupil\" [[2, 3], [4]] (ip), " + INTRO, "",
        "| subset | faces | NME io % | NME ip % | FR@0.1 % | AUC@0.1 | authors' AUC |",
        "|---|---|---|---|---|---|---|",
        "| full | 1 | 1.00 | - | - | - | - |", ""]


# ---------------------------------------------------------------------------- figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions close (the figure as drawn, before it is discarded)."""
    figs = []
    real = plt.close

    def close(fig=None):
        figs.append(fig)
        real(fig)
    monkeypatch.setattr(plt, "close", close)
    return figs


def _png_size(path):
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_ced_plot_as_drawn(tmp_path, drawn):
    a = np.array([0.01, 0.05, 0.03])
    b = np.array([0.02, np.nan, 0.2])
    path = ev.save_ced_plot({"a": a, "b": b}, tmp_path / "ced.png")
    assert path == tmp_path / "ced.png" and _png_size(path) == (605, 462)      # 5.5 x 4.2 in at 110 dpi
    assert list(tmp_path.iterdir()) == [path]
    fig = drawn[0]
    assert tuple(fig.get_size_inches()) == (5.5, 4.2) and fig.dpi == 110
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (0.0, 1.0)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == \
        ("NME (%)", "fraction of test faces", "Cumulative error distribution")
    la, lb = ax.get_lines()
    x, y = metrics.ced_curve(a, 0.1, 1e-4)
    np.testing.assert_array_equal(la.get_xdata(), 100 * x)
    np.testing.assert_array_equal(la.get_ydata(), y)
    x, y = metrics.ced_curve(b[np.isfinite(b)], 0.1, 1e-4)                     # the nan is left out
    np.testing.assert_array_equal(lb.get_ydata(), y)
    assert lb.get_ydata()[-1] == 0.5
    assert la.get_label() == f"a (AUC@0.1 {metrics.auc(a, 0.1):.3f})"
    assert lb.get_label() == f"b (AUC@0.1 {metrics.auc(b[np.isfinite(b)], 0.1):.3f})"
    leg = ax.get_legend()
    assert [t.get_text() for t in leg.get_texts()] == [la.get_label(), lb.get_label()]
    assert leg._loc == 4 and leg.get_texts()[0].get_fontsize() == 8                # "lower right"
    assert ax.xaxis.get_gridlines()[0].get_visible() and ax.xaxis.get_gridlines()[0].get_alpha() == 0.3


def test_ced_plot_threshold_and_title(tmp_path, drawn):
    ev.save_ced_plot({"a": [0.01, 0.2]}, tmp_path / "c.png", threshold=0.08, title="mine")
    ax = drawn[0].axes[0]
    assert ax.get_xlim() == (0.0, 8.0) and ax.get_title() == "mine"
    x, y = metrics.ced_curve(np.array([0.01, 0.2]), 0.08, 1e-4)
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), 100 * x)
    assert ax.get_lines()[0].get_label() == f"a (AUC@0.08 {metrics.auc([0.01, 0.2], 0.08):.3f})"


def test_sample_grid_as_drawn(tmp_path, drawn):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 40, 48, 3), dtype=np.uint8)     # 40 rows, 48 columns
    gt = rng.uniform(0, 40, (5, 40, 2))
    gt[:, 0] = (-9.0, -7.0)                                           # outside the crop: clipped,
    gt[:, 1] = (60.0, 50.0)                                           # the limits stay the crop's
    pred = gt + np.array([1.0, -2.0])
    path = ev.save_sample_grid(images, gt, pred, tmp_path / "g.png", titles=[f"t{i}" for i in range(5)])
    fig = drawn[0]
    assert fig.dpi == 100 and tuple(fig.get_size_inches()) == pytest.approx((2.6 * 4, 2.6 * 2 + 0.4))
    assert _png_size(path) == (1040, 560) and list(tmp_path.iterdir()) == [path]
    axes = fig.axes
    assert len(axes) == 8                                            # 4 columns, 2 rows
    assert [a.axison for a in axes] == [False] * 8
    marker = max(2.0, 12.0 / np.sqrt(40 / 10))                       # 6.0 for 40 points
    for i, a in enumerate(axes[:5]):
        g, p = a.collections
        np.testing.assert_array_equal(g.get_offsets(), gt[i])
        np.testing.assert_array_equal(p.get_offsets(), pred[i])
        assert matplotlib.colors.to_hex(g.get_facecolors()[0]) == "#00d000"
        assert matplotlib.colors.to_hex(p.get_edgecolors()[0]) == "#ff2020"
        assert g.get_sizes().tolist() == [marker] and p.get_sizes().tolist() == [marker]
        assert p.get_linewidths()[0] == 0.8
        x_style, o_style = matplotlib.markers.MarkerStyle("x"), matplotlib.markers.MarkerStyle("o")
        x_path = x_style.get_path().transformed(x_style.get_transform())
        o_path = o_style.get_path().transformed(o_style.get_transform())
        assert np.array_equal(p.get_paths()[0].vertices, x_path.vertices)      # crosses
        assert np.array_equal(g.get_paths()[0].vertices, o_path.vertices)      # dots
        assert (g.get_label(), p.get_label()) == ("ground truth", "prediction")
        assert a.get_xlim() == (-0.5, 47.5) and a.get_ylim() == (39.5, -0.5)
        assert a.get_title() == f"t{i}" and a.title.get_fontsize() == 7
        assert np.array_equal(a.get_images()[0].get_array(), images[i])
    assert all(not a.collections and not a.get_images() for a in axes[5:])
    leg = fig.legends[0]
    assert [t.get_text() for t in leg.get_texts()] == ["ground truth", "prediction"]
    assert leg._ncols == 2 and leg._loc == 8 and not leg.get_frame_on()          # "lower center"
    assert leg.get_texts()[0].get_fontsize() == 8
    assert axes[0].get_position().x0 < 0.05 and axes[0].get_position().y1 <= 1.0
    assert min(a.get_position().y0 for a in axes) >= 0.05 - 1e-9     # the legend's strip is kept free


def test_sample_grid_sizes(tmp_path, drawn):
    img = np.zeros((1, 20, 20, 3), np.uint8)
    pts = np.full((1, 98, 2), 5.0)
    ev.save_sample_grid(img, pts, pts, tmp_path / "one.png")
    fig = drawn[0]
    assert len(fig.axes) == 1 and tuple(fig.get_size_inches()) == pytest.approx((2.6, 3.0))
    assert fig.axes[0].get_title() == ""
    assert fig.axes[0].collections[0].get_sizes().tolist() == [max(2.0, 12.0 / np.sqrt(9.8))]
    ev.save_sample_grid(np.zeros((3, 20, 20, 3), np.uint8), np.full((3, 5, 2), 5.0), np.full((3, 5, 2), 6.0),
                        tmp_path / "three.png", cols=2)
    fig = drawn[1]
    assert len(fig.axes) == 4 and tuple(fig.get_size_inches()) == pytest.approx((5.2, 5.6))
    assert fig.axes[0].collections[0].get_sizes().tolist() == [12.0]            # few points: 12
    ev.save_sample_grid(np.zeros((2, 20, 20, 3), np.uint8), np.full((2, 2000, 2), 5.0),
                        np.full((2, 2000, 2), 6.0), tmp_path / "many.png", cols=0)
    fig = drawn[2]
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == pytest.approx((2.6, 5.6))   # one column
    assert fig.axes[0].collections[0].get_sizes().tolist() == [2.0]             # at least 2
    with pytest.raises(LandmarkError) as err:
        ev.save_sample_grid(np.zeros((0, 20, 20, 3), np.uint8), [], [], tmp_path / "none.png")
    assert str(err.value) == f"{tmp_path / 'none.png'}: no faces to draw"
