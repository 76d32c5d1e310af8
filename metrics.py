"""Landmark metrics (METHOD.md section 7), pure numpy.

* `normaliser_distance(gt, groups)`: the per-image distance d between two groups of points of the
  ground truth; each side of the normaliser is the mean of its indices, e.g. ((36,), (45,)) for the
  300W inter-ocular distance and (range(36, 42), range(42, 48)) for the inter-pupil one.
* `nme_per_image(pred, gt, groups)`: mean Euclidean point error divided by d, per image (a fraction;
  multiply by 100 for the usual %).
* `failure_rate(nmes, threshold)`: fraction of images with NME strictly above the threshold.
* `ced_curve`, `auc`: the cumulative error distribution and the standard AUC@threshold (area under the
  CED from 0 to the threshold divided by the threshold, trapezoid rule on a fine grid).
* `auc_authors`: the authors' non-standard AUC (their trapz over 20 thresholds, not divided by the
  threshold; a perfect set scores 0.95), for comparison with their tables only.
* `compare_to_mean_shape(nme, floor)`: whether an NME is worse than the mean training shape's.

Every function accepts a single image too: (N, 2) arrays are treated as a batch of one.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def _as_batch(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (M, N, 2) or (N, 2), got {a.shape}")
    return a


def normaliser_distance(gt, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-image normaliser d (M,): distance between the mean of groups[0] and the mean of groups[1]."""
    gt = _as_batch(gt)
    if len(groups) != 2:
        raise ValueError(f"a normaliser needs two groups of indices, got {groups!r}")
    left = gt[:, list(groups[0]), :].mean(axis=1)
    right = gt[:, list(groups[1]), :].mean(axis=1)
    return np.linalg.norm(left - right, axis=-1)


def nme_per_image(pred, gt, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-image NME (M,): mean over points of ||pred - gt|| divided by normaliser_distance(gt).

    A ground truth whose normaliser is 0 (degenerate annotation) gives NaN for that image rather than
    infinity; callers decide what to do with it.
    """
    pred, gt = _as_batch(pred), _as_batch(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    err = np.linalg.norm(pred - gt, axis=-1).mean(axis=1)
    d = normaliser_distance(gt, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, err / np.where(d > 0, d, 1.0), np.nan)


def failure_rate(nmes, threshold: float = 0.1) -> float:
    """Fraction (0..1) of images whose NME is strictly greater than `threshold`."""
    nmes = np.asarray(nmes, dtype=np.float64).ravel()
    if nmes.size == 0:
        return float("nan")
    return float(np.mean(nmes > threshold))


def ced_curve(nmes, threshold: float = 0.1, step: float = 1e-4):
    """Cumulative error distribution: x = 0, step, ..., threshold; y = fraction of NMEs <= x."""
    nmes = np.sort(np.asarray(nmes, dtype=np.float64).ravel())
    n_steps = int(round(threshold / step))
    x = np.linspace(0.0, threshold, n_steps + 1)
    if nmes.size == 0:
        return x, np.full_like(x, np.nan)
    y = np.searchsorted(nmes, x, side="right") / nmes.size
    return x, y


def auc(nmes, threshold: float = 0.1, step: float = 1e-4) -> float:
    """Standard AUC@threshold: area under the CED on [0, threshold] divided by threshold (0..1).

    All errors 0 -> 1; all errors c (0 < c < threshold) -> 1 - c / threshold (up to one grid step);
    all errors above threshold -> 0.
    """
    x, y = ced_curve(nmes, threshold, step)
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)
    return area / threshold


def auc_authors(nmes, threshold: float = 0.1, steps: int = 20) -> float:
    """The authors' non-standard "AUC" (METHOD.md section 7): for comparison with their tables only.

    Exactly their computation: t = linspace(0, threshold, steps), c_k = fraction of images with
    NME <= t_k, C = cumsum(c), value = numpy trapz(t, C) with the arguments in (y, x) order. Since
    C_k - C_(k-1) = c_k this is sum over k >= 1 of (t_k + t_(k-1)) / 2 * c_k: a sum of threshold
    midpoints weighted by the CED, not divided by the threshold. So it is not a fraction of 1: all
    errors 0 give (steps - 1) * threshold / 2 (0.95 for 0.1 and 20), all errors above the threshold
    give 0, and log-normal errors with mean 4.06% give about 0.78 (the paper's 300W student: 0.79)
    where the standard `auc` gives about 0.60. Never report it as the headline AUC.
    """
    nmes = np.sort(np.asarray(nmes, dtype=np.float64).ravel())
    if nmes.size == 0:
        return float("nan")
    t = np.linspace(0.0, threshold, int(steps))
    ced = np.searchsorted(nmes, t, side="right") / nmes.size
    # trapz(y=t, x=cumsum(ced)): the x steps are ced[1:], the y means the threshold midpoints
    return float(np.sum((t[1:] + t[:-1]) / 2.0 * ced[1:]))


def compare_to_mean_shape(nme: Optional[float], floor: Optional[float]) -> Optional[str]:
    """How an NME stands against the mean training shape's (`floor`, in the same unit), the score
    of predicting the average face for every image: None when it is no worse or the floor is
    unknown; "far worse than" above twice the floor or not finite; else "worse than"."""
    if nme is None or floor is None or not math.isfinite(floor) or floor <= 0:
        return None
    if math.isfinite(nme) and nme <= floor:
        return None
    return "far worse than" if not math.isfinite(nme) or nme > 2 * floor else "worse than"
