"""Predictions files, scoring against a prepared test split, reports and figures.

* `write_predictions` / `read_predictions`: the SPIGA-style JSON of ARCHITECTURE.md,
  `{"format": "kd-landmarks-predictions/1", "dataset", "prepared_dir", "model",
  "items": [{"id", "landmarks_px": [[x, y], ...]}]}`, points in original-image pixels.
* `predictions_from_norm`: model outputs (normalised crop coordinates) -> original-image pixels;
  `to_crop_px`: original-image pixels -> crop pixels of the prepared crops (for drawing).
* `score_predictions(predictions, split)`: per test subset of the dataset (dataset_info.test_subsets),
  NME inter-ocular and inter-pupil (%), FR at each failure threshold (%), AUC@0.1 (standard, 0..1),
  the authors' AUC (0..0.95, metrics.auc_authors; for comparison with their tables only) and the
  face count. Scoring is in
  original-image pixels.
* `markdown_report(scores, dataset)`: our numbers (and the mean training shape's,
  `mean_shape_scores`) beside the paper's (METHOD.md section 8, `PAPER_RESULTS`) and stronger
  published systems; a custom dataset's report has its own numbers only.
* `save_ced_plot`, `save_sample_grid`: the CED figure and a grid of test faces with the ground truth
  and the prediction drawn in different colours (like the paper's figures).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import data_util as du
import image_utility as iu
import metrics
from configuration import WFLW_ATTRIBUTES, dataset_info
from errors import DataFormatError, LandmarkError
from safe_io import MAX_PREDICTIONS_BYTES, atomic_path, atomic_write_json, read_json

PREDICTIONS_FORMAT = "kd-landmarks-predictions/1"
AUC_THRESHOLD = 0.1

# ----------------------------------------------------------------------------------------------
# Published numbers (METHOD.md section 8): inter-ocular NME % unless "normaliser" says otherwise.
# Keys of "nme"/"fr" are our test-subset names.
# ----------------------------------------------------------------------------------------------
PAPER_RESULTS: dict[str, list[dict]] = {
    "300w": [
        {"model": "MobileNetV2, L2 only (paper)", "mode": "l2", "normaliser": "interocular",
         "nme": {"common": 3.93, "challenging": 6.84, "full": 4.50}},
        {"model": "MobileNetV2 + KD-Loss, the student (paper)", "mode": "kd", "normaliser": "interocular",
         "nme": {"common": 3.56, "challenging": 6.13, "full": 4.06}},
        {"model": "student, Tough teacher only (paper)", "mode": "tough-only", "normaliser": "interocular",
         "nme": {"common": 3.85, "challenging": 6.59, "full": 4.39}},
        {"model": "student, Tolerant teacher only (paper)", "mode": "tolerant-only",
         "normaliser": "interocular", "nme": {"common": 3.73, "challenging": 6.41, "full": 4.25}},
        {"model": "EfficientNet-B3 Tough teacher (paper)", "mode": "teacher", "normaliser": "interocular",
         "nme": {"common": 3.34, "challenging": 5.80, "full": 3.82}},
        {"model": "PIPNet, MobileNetV2 backbone", "mode": "other", "normaliser": "interocular",
         "nme": {"full": 3.40}},
        {"model": "STAR", "mode": "other", "normaliser": "interocular", "nme": {"full": 2.87}},
        {"model": "HRNetV2-W18", "mode": "other", "normaliser": "interocular", "nme": {"full": 3.32}},
    ],
    "cofw": [
        {"model": "MobileNetV2, L2 only (paper)", "mode": "l2", "normaliser": "interocular",
         "nme": {"full": 5.04}, "fr": {"full": 3.74}},
        {"model": "MobileNetV2 + KD-Loss, the student (paper)", "mode": "kd", "normaliser": "interocular",
         "nme": {"full": 4.11}, "fr": {"full": 2.37}},
        {"model": "EfficientNet-B3 teacher (paper)", "mode": "teacher", "normaliser": "interocular",
         "nme": {"full": 3.81}, "fr": {"full": 1.97}},
        {"model": "PIPNet, MobileNetV2 backbone", "mode": "other", "normaliser": "interocular",
         "nme": {"full": 3.43}},
        {"model": "HRNetV2-W18", "mode": "other", "normaliser": "interocular", "nme": {"full": 3.45}},
    ],
    "wflw": [
        {"model": "MobileNetV2 + KD-Loss, the student (paper)", "mode": "kd", "normaliser": "interpupil",
         "nme": {"full": 8.57, "pose": 15.06}},
        {"model": "PIPNet, MobileNetV2 backbone", "mode": "other", "normaliser": "interocular",
         "nme": {"full": 4.79}},
        {"model": "STAR", "mode": "other", "normaliser": "interocular", "nme": {"full": 4.02}},
        {"model": "HRNetV2-W18", "mode": "other", "normaliser": "interocular", "nme": {"full": 4.60}},
    ],
}


# ----------------------------------------------------------------------------------------------
# Prepared test split (read by data_util.load_prepared)
# ----------------------------------------------------------------------------------------------


def _test_split(split) -> du.PreparedSplit:
    """`split` as given (a data_util.PreparedSplit) or the test split of a prepared folder."""
    return du.load_prepared(split, "test") if isinstance(split, (str, Path)) else split


def predictions_from_norm(norm, crop_boxes, size: int) -> np.ndarray:
    """Model outputs (M, N, 2) normalised -> original-image pixels float32: c = S/2 - S v, then
    orig = (x0, y0) + c * side / S (crop_boxes (M, 3))."""
    return iu.crop_to_original(iu.denormalize_landmarks(norm, size), crop_boxes, size)


def to_crop_px(points_px, crop_boxes, size: int) -> np.ndarray:
    """Original-image pixels (M, N, 2) -> crop pixels of the prepared crops float32:
    (p - (x0, y0)) * S / side (crop_boxes (M, 3)); the inverse of predictions_from_norm's last step,
    e.g. to draw ground truth and predictions on the stored crops (save_sample_grid)."""
    return iu.landmarks_to_crop(points_px, crop_boxes, size)


# ----------------------------------------------------------------------------------------------
# Predictions files
# ----------------------------------------------------------------------------------------------


def write_predictions(path, dataset: str, prepared_dir, model_name: str, ids: Sequence[str],
                      landmarks_px) -> Path:
    """Write a predictions file (atomically). landmarks_px: (M, N, 2) original-image pixels."""
    pts = np.asarray(landmarks_px, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 2 or len(pts) != len(ids):
        raise LandmarkError(f"{path}: need one (N, 2) array of points per id; got {pts.shape} for "
                            f"{len(ids)} ids")
    payload = {"format": PREDICTIONS_FORMAT, "dataset": str(dataset).lower(),
               "prepared_dir": str(prepared_dir), "model": str(model_name),
               "items": [{"id": str(i), "landmarks_px": [[round(float(x), 4), round(float(y), 4)]
                                                         for x, y in p]}
                         for i, p in zip(ids, pts)]}
    atomic_write_json(path, payload)
    return Path(path)


@dataclass
class Predictions:
    dataset: str
    prepared_dir: str
    model: str
    ids: list
    landmarks_px: np.ndarray   # float32 (M, N, 2)
    path: str = ""


def read_predictions(path) -> Predictions:
    """Read and validate a predictions file; every problem is one DataFormatError line."""
    path = Path(path)
    # bounded (--predictions /dev/zero read until memory ran out) and one line for any JSON problem
    obj = read_json(path, what="predictions file", error=DataFormatError,
                    hint="write it with evaluation.write_predictions", max_bytes=MAX_PREDICTIONS_BYTES)
    if not isinstance(obj, dict) or obj.get("format") != PREDICTIONS_FORMAT:
        raise DataFormatError(f"{path}: not a predictions file (needs \"format\": "
                              f"\"{PREDICTIONS_FORMAT}\"); see docs/ARCHITECTURE.md")
    items = obj.get("items")
    if not isinstance(items, list) or not items:
        raise DataFormatError(f"{path}: \"items\" must be a non-empty list of {{id, landmarks_px}}")
    if not isinstance(obj.get("dataset"), str):
        raise DataFormatError(f"{path}: \"dataset\" missing; name the dataset (300w, cofw, wflw)")
    ids, pts, n_points = [], [], None
    for k, it in enumerate(items):
        try:
            i = str(it["id"])
            p = np.asarray(it["landmarks_px"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(f"{path}: item {k} needs \"id\" and \"landmarks_px\" [[x, y], ...] "
                                  f"of numbers") from None
        if p.ndim != 2 or p.shape[1] != 2 or not np.all(np.isfinite(p)):
            raise DataFormatError(f"{path}: item {k} ({i}): landmarks_px must be finite [[x, y], ...], "
                                  f"got shape {p.shape}")
        if n_points is None:
            n_points = p.shape[0]
        elif p.shape[0] != n_points:
            raise DataFormatError(f"{path}: item {k} ({i}) has {p.shape[0]} points, the first item "
                                  f"{n_points}; every face needs the same point count")
        ids.append(i)
        pts.append(p)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataFormatError(f"{path}: id {dup!r} appears twice; one item per test face")
    return Predictions(dataset=obj["dataset"].lower(), prepared_dir=str(obj.get("prepared_dir", "")),
                       model=str(obj.get("model", "")), ids=ids,
                       landmarks_px=np.stack(pts).astype(np.float32), path=str(path))


def align_predictions(predictions: Predictions, split) -> np.ndarray:
    """Predictions reordered to the split's ids (M, N, 2). Unknown ids, missing ids or a wrong point
    count raise DataFormatError."""
    split = _test_split(split)
    src = predictions.path or "predictions"
    n = split.num_points
    if predictions.landmarks_px.shape[1] != n:
        raise DataFormatError(f"{src}: {predictions.landmarks_px.shape[1]} points per face but the "
                              f"test split {split.path} has {n}; score against the right dataset")
    index = {i: k for k, i in enumerate(split.ids)}
    unknown = [i for i in predictions.ids if i not in index]
    if unknown:
        raise DataFormatError(f"{src}: {len(unknown)} ids not in the test split {split.path} "
                              f"(first: {unknown[0]!r}); predictions and prepared data disagree")
    if len(predictions.ids) != len(split):
        raise DataFormatError(f"{src}: {len(predictions.ids)} faces predicted, the test split "
                              f"{split.path} has {len(split)}; predict every test face")
    out = np.zeros((len(split), n, 2), np.float32)
    for i, p in zip(predictions.ids, predictions.landmarks_px):
        out[index[i]] = p
    return out


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def subset_mask(split, how: tuple) -> np.ndarray:
    """Boolean mask of the test faces in a subset: ("all",), ("subset", X), ("attribute", name)."""
    split = _test_split(split)
    m = len(split)
    if how[0] == "all":
        return np.ones(m, bool)
    if how[0] == "subset":
        subsets = split.meta.get("subsets")
        if not isinstance(subsets, list) or len(subsets) != m:
            raise DataFormatError(f"{split.path}/meta.json: \"subsets\" missing; prepare the data again")
        return np.array([s == how[1] for s in subsets], bool)
    if how[0] == "attribute":
        attrs = split.meta.get("attributes")
        if attrs is None or len(attrs) != m:
            raise DataFormatError(f"{split.path}/meta.json: \"attributes\" missing; prepare the data again")
        col = WFLW_ATTRIBUTES.index(how[1])
        return np.array([bool(a is not None and len(a) > col and int(a[col])) for a in attrs], bool)
    raise LandmarkError(f"unknown test subset rule {how!r}")


# `dataset` below: a built-in name or a DatasetInfo (a custom spec as the command read it).
def per_image_nme(pred_px, gt_px, dataset, normaliser: str = "interocular") -> np.ndarray:
    info = dataset_info(dataset)
    return metrics.nme_per_image(pred_px, gt_px, info.normaliser(normaliser))


def score_arrays(pred_px, gt_px, dataset, masks: dict[str, np.ndarray]) -> dict:
    """Scores for aligned arrays (M, N, 2) in the same pixel frame; masks: subset -> bool (M,)."""
    info = dataset_info(dataset)
    nme_io = metrics.nme_per_image(pred_px, gt_px, info.interocular)
    nme_ip = metrics.nme_per_image(pred_px, gt_px, info.interpupil)
    for name, groups, values in (("interocular", info.interocular, nme_io),
                                 ("interpupil", info.interpupil, nme_ip)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:   # a zero normaliser: NME nan% and FR 0% would be reported without a word
            raise DataFormatError(
                f"{info.name}: the {name} normaliser {[list(g) for g in groups]} is 0 for {bad.size} "
                f"of {len(values)} test faces (first: face {int(bad[0])}); its two groups of points "
                f"coincide, so the NME is undefined; fix \"{name}\" in the dataset spec (two groups "
                f"of points apart on every face, e.g. the outer eye corners) or the annotations")
    out = {}
    for name, mask in masks.items():
        count = int(mask.sum())
        row: dict = {"count": count}
        if count == 0:
            out[name] = row
            continue
        io, ip = nme_io[mask], nme_ip[mask]
        row["nme_interocular"] = 100.0 * float(np.nanmean(io))
        row["nme_interpupil"] = 100.0 * float(np.nanmean(ip))
        for t in info.failure_thresholds:
            row[f"fr@{t:g}"] = 100.0 * metrics.failure_rate(io, t)
        row[f"auc@{AUC_THRESHOLD:g}"] = metrics.auc(io, AUC_THRESHOLD)
        row[f"auc_authors@{AUC_THRESHOLD:g}"] = metrics.auc_authors(io, AUC_THRESHOLD)
        out[name] = row
    return out


def score_predictions(predictions, split, dataset=None) -> dict:
    """{subset: {"count", "nme_interocular" %, "nme_interpupil" %, "fr@t" % (inter-ocular NME > t),
    "auc@0.1" (0..1), "auc_authors@0.1" (0..0.95, metrics.auc_authors)}} over dataset_info(dataset).test_subsets.

    predictions: a Predictions (read_predictions) or a path to a predictions file; split: a
    data_util.PreparedSplit or a prepared dir (its test split). Subsets with no face get only "count": 0.
    """
    if isinstance(predictions, (str, Path)):
        predictions = read_predictions(predictions)
    split = _test_split(split)
    info = dataset_info(dataset if dataset is not None else predictions.dataset)
    pred = align_predictions(predictions, split)
    gt = np.asarray(split.landmarks_px, dtype=np.float64)
    masks = {name: subset_mask(split, how) for name, how in info.test_subsets.items()}
    return score_arrays(pred, gt, info, masks)


def nmes_for_ced(predictions, split, normaliser: str = "interocular") -> np.ndarray:
    """Per-image NMEs (fraction) of a predictions file over the whole split, for save_ced_plot."""
    if isinstance(predictions, (str, Path)):
        predictions = read_predictions(predictions)
    split = _test_split(split)
    pred = align_predictions(predictions, split)
    return per_image_nme(pred, np.asarray(split.landmarks_px), predictions.dataset, normaliser)


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def mean_shape_scores(prepared_dir, split, dataset) -> Optional[dict]:
    """Scores of the mean training shape (no model): the mean normalised landmarks of the prepared
    training faces placed in every test crop; the floor any trained model should beat. None when
    the folder holds no training split (a predictions file needs only the test split)."""
    if not du.prepared_complete(prepared_dir, "train"):
        return None
    split = _test_split(split)
    train = du.load_prepared(prepared_dir, "train")
    mean = np.asarray(train.landmarks, np.float64).mean(axis=0)
    norm = np.broadcast_to(mean, (len(split),) + mean.shape)
    pred = predictions_from_norm(norm, np.asarray(split.crop_boxes), split.input_size)
    info = dataset_info(dataset)
    masks = {name: subset_mask(split, how) for name, how in info.test_subsets.items()}
    return score_arrays(pred, np.asarray(split.landmarks_px, np.float64), info, masks)


def mean_shape_warning(scores: dict, baseline: dict, model_name: str = "the model",
                       subset: str = "full") -> Optional[str]:
    """A warning when the model's inter-ocular NME on `subset` is above the mean training shape's
    (it has learnt less than the average face); None otherwise."""
    ours = (scores.get(subset) or {}).get("nme_interocular")
    floor = ((baseline or {}).get(subset) or {}).get("nme_interocular")
    how = metrics.compare_to_mean_shape(ours, floor)
    if how is None:
        return None
    return (f"{model_name}: NME {ours:.4g}% on the {subset} test set is {how} the mean training "
            f"shape's {floor:.2f}% (no model at all); train longer, or check the model matches "
            f"this data")


def markdown_report(scores: dict, dataset, model_name: str = "ours", mode: Optional[str] = None,
                    mean_shape: Optional[dict] = None) -> str:
    """Our scores per subset (and the mean training shape's, when given), then, for the benchmark
    datasets, a table with the paper's published numbers and ours side by side (ours in the
    normaliser of each published row: the paper's WFLW numbers are inter-pupil). A custom dataset
    gets its own table only: nothing was published on it."""
    info = dataset_info(dataset)
    custom = info.official_format == "custom"
    subsets = list(info.test_subsets)
    frs = [f"fr@{t:g}" for t in info.failure_thresholds]
    auc_k, auca_k = f"auc@{AUC_THRESHOLD:g}", f"auc_authors@{AUC_THRESHOLD:g}"
    if custom:
        normalisers = (f"NME in % of the distance between the two point groups of the spec's "
                       f"\"interocular\" {[list(g) for g in info.interocular]} (io) or "
                       f"\"interpupil\" {[list(g) for g in info.interpupil]} (ip)")
    else:
        normalisers = "NME in % of the inter-ocular (outer eye corners) or inter-pupil distance"
    header = ["| subset | faces | NME io % | NME ip % | " + " | ".join(f.upper() + " %" for f in frs)
              + " | AUC@0.1 | authors' AUC |", "|---|---|---|---|" + "---|" * len(frs) + "---|---|"]
    lines = [f"# Results: {model_name} on {info.name}" + (" (custom dataset)" if custom else ""), "",
             f"{normalisers}, computed in original-image pixels; FR in % of faces with io NME above "
             "the threshold; AUC@0.1 is the standard area under the CED (0..1); the authors' AUC "
             "(their trapz over 20 thresholds, 0.95 for a perfect set) is only for comparison with "
             "their tables.", "", *header]

    def row(label, r):
        return (f"| {label} | {r.get('count', 0)} | {_fmt(r.get('nme_interocular'))} | "
                f"{_fmt(r.get('nme_interpupil'))} | " + " | ".join(_fmt(r.get(f)) for f in frs)
                + f" | {_fmt(r.get(auc_k), 4)} | {_fmt(r.get(auca_k), 4)} |")

    lines += [row(name, scores.get(name, {})) for name in subsets]
    if mean_shape:
        lines += ["", "The mean training shape (no model: the average training face placed in each "
                      "test crop), the floor a trained model should beat:", "", *header]
        lines += [row(name, mean_shape.get(name, {})) for name in subsets]
    rows = [] if custom else PAPER_RESULTS.get(info.name, [])
    if rows:
        cols = [s for s in subsets if any(s in r.get("nme", {}) for r in rows)]
        lines += ["", "## Beside the published numbers (METHOD.md section 8)", "",
                  "| model | normaliser | " + " | ".join(f"NME {c}" for c in cols) + " | FR@0.1 full |",
                  "|---|---|" + "---|" * len(cols) + "---|"]
        for norm in sorted({r["normaliser"] for r in rows}):      # interocular, then interpupil
            key = "nme_interocular" if norm == "interocular" else "nme_interpupil"
            full = scores.get("full", {})
            lines.append(f"| **{model_name} (this run)** | {norm} | "
                         + " | ".join(f"**{_fmt(scores.get(c, {}).get(key))}**" for c in cols)
                         + f" | {_fmt(full.get('fr@0.1')) if norm == 'interocular' else '-'} |")
            for r in rows:
                if r["normaliser"] != norm:
                    continue
                mark = " (same setting)" if mode and r.get("mode") == mode else ""
                lines.append(f"| {r['model']}{mark} | {norm} | "
                             + " | ".join(_fmt(r["nme"].get(c)) for c in cols)
                             + f" | {_fmt(r.get('fr', {}).get('full'))} |")
        lines += ["", "Published numbers come from full-size training on the official data; a run on "
                      "the embedded synthetic faces or with the quick preset is not comparable."]
    return "\n".join(lines) + "\n"


def save_ced_plot(curves: dict, path, threshold: float = AUC_THRESHOLD, title: str = "") -> Path:
    """One CED curve per entry of `curves` (name -> per-image NMEs as fractions), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    for name, nmes in curves.items():
        nmes = np.asarray(nmes, dtype=np.float64)
        nmes = nmes[np.isfinite(nmes)]
        x, y = metrics.ced_curve(nmes, threshold, 1e-4)
        ax.plot(100 * x, y, label=f"{name} (AUC@{threshold:g} {metrics.auc(nmes, threshold):.3f})")
    ax.set_xlim(0, 100 * threshold)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of test faces")
    ax.set_title(title or "Cumulative error distribution")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def save_sample_grid(images, gt_px, pred_px, path, cols: int = 4, titles: Optional[Sequence[str]] = None) -> Path:
    """A grid of face crops (uint8 (K, S, S, 3)) with the ground truth (green) and the prediction
    (red) drawn, both in crop pixels (K, N, 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    k = len(images)
    if k == 0:
        raise LandmarkError(f"{path}: no faces to draw")
    cols = max(1, min(cols, k))
    rows = int(math.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.4), dpi=100, squeeze=False)
    marker = max(2.0, 12.0 / max(1.0, math.sqrt(np.asarray(gt_px).shape[1] / 10)))
    for a in axes.ravel():
        a.axis("off")
    for i in range(k):
        a = axes.ravel()[i]
        a.imshow(images[i])
        g, p = np.asarray(gt_px[i]), np.asarray(pred_px[i])
        a.scatter(g[:, 0], g[:, 1], s=marker, c="#00d000", label="ground truth")
        a.scatter(p[:, 0], p[:, 1], s=marker, c="#ff2020", marker="x", linewidths=0.8, label="prediction")
        a.set_xlim(-0.5, images.shape[2] - 0.5)      # points outside the crop are clipped, the
        a.set_ylim(images.shape[1] - 0.5, -0.5)      # picture keeps its size
        if titles is not None:
            a.set_title(str(titles[i]), fontsize=7)
    h, lab = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
