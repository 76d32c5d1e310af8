"""metrics.py at its edges, written to kill the mutants mutmut left alive (docs/MUTATION.md): the
default thresholds and grid, normalisers shorter than 1 (normalised crop units), empty inputs, the
one-line errors and every branch of compare_to_mean_shape."""
from __future__ import annotations

import math

import numpy as np
import pytest

import metrics

IO = ((0,), (1,))


def test_defaults_are_the_published_threshold_and_grid():
    nmes = [0.05, 0.1, 0.1000001, 0.3]
    assert metrics.failure_rate(nmes) == 0.5                       # threshold 0.1, strictly above
    x, y = metrics.ced_curve([0.02])
    assert len(x) == 1001 and x[0] == 0.0 and x[-1] == pytest.approx(0.1)
    assert y[199] == 0.0 and y[200] == 1.0                         # 0.02 on the 1e-4 grid
    # 1 - 0.02 / 0.1, plus the trapezoid's half step where the CED jumps (0.5e-4 / 0.1)
    assert metrics.auc([0.02]) == pytest.approx(0.8005, abs=1e-9)
    t = np.linspace(0, 0.1, 20)
    want = sum((t[k] + t[k - 1]) / 2 * (t[k] >= 0.02) for k in range(1, 20))
    assert metrics.auc_authors([0.02]) == pytest.approx(want, rel=1e-12)


def test_nme_with_a_normaliser_below_one():
    """Normalised crop coordinates: an inter-ocular distance of 0.4 is a real face, not degenerate."""
    gt = np.array([[[0.1, 0.2], [0.5, 0.2], [0.3, 0.4]]])
    pred = gt + [0.03, 0.04]
    np.testing.assert_allclose(metrics.normaliser_distance(gt, IO), [0.4])
    np.testing.assert_allclose(metrics.nme_per_image(pred, gt, IO), [0.05 / 0.4])
    # one image with a zero normaliser is NaN, the others are scored
    gt2 = np.concatenate([gt, gt * [0, 1]])
    out = metrics.nme_per_image(gt2 + 0.01, gt2, IO)
    assert out[0] == pytest.approx(np.sqrt(2) * 0.01 / 0.4) and math.isnan(out[1])


def test_normaliser_distance_of_point_groups_per_image():
    gt = np.zeros((2, 4, 2))
    gt[0, 2], gt[0, 3] = (3.0, 0.0), (3.0, 8.0)       # image 0: group means (0, 0) and (3, 4)
    gt[1, 1], gt[1, 3] = (6.0, 0.0), (6.0, 16.0)      # image 1: (3, 0) and (3, 8)
    np.testing.assert_allclose(metrics.normaliser_distance(gt, ((0, 1), (2, 3))), [5.0, 8.0])


def test_empty_inputs_give_nan():
    assert math.isnan(metrics.failure_rate([]))
    assert math.isnan(metrics.auc_authors([]))
    x, y = metrics.ced_curve([], 0.1, 0.05)
    np.testing.assert_allclose(x, [0, 0.05, 0.1])
    assert np.isnan(y).all()


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"landmarks must have shape \(M, N, 2\) or \(N, 2\), got \(3,\)"):
        metrics.nme_per_image(np.zeros(3), np.zeros(3), IO)
    with pytest.raises(ValueError, match=r"prediction shape \(1, 3, 2\) does not match ground truth \(1, 4, 2\)"):
        metrics.nme_per_image(np.zeros((3, 2)), np.zeros((4, 2)), IO)
    with pytest.raises(ValueError, match=r"a normaliser needs two groups of indices, got \(\(0,\),\)"):
        metrics.normaliser_distance(np.zeros((4, 2)), ((0,),))


@pytest.mark.parametrize("nme, floor, want", [
    (None, 5.0, None), (5.0, None, None), (5.0, float("nan"), None), (5.0, 0.0, None),
    (5.0, -1.0, None), (4.0, 5.0, None), (5.0, 5.0, None),            # no worse than the floor
    (6.0, 5.0, "worse than"), (10.0, 5.0, "worse than"),              # up to twice the floor
    (10.5, 5.0, "far worse than"), (float("inf"), 5.0, "far worse than"),
    (float("nan"), 5.0, "far worse than"),
])
def test_compare_to_mean_shape_every_branch(nme, floor, want):
    assert metrics.compare_to_mean_shape(nme, floor) == want


def test_results_are_float64_and_float32_values_compare_exactly():
    """Inputs are converted to float64 first: a float32 NME of 0.1 is 0.10000000149 > 0.1, a
    failure (in float32 arithmetic it would equal the threshold and pass)."""
    gt = np.array([[[0.1, 0.2], [0.5, 0.2], [0.3, 0.4]]], np.float32)
    assert metrics.nme_per_image(gt + np.float32(0.01), gt, IO).dtype == np.float64
    assert metrics.normaliser_distance(gt, IO).dtype == np.float64
    assert metrics.failure_rate(np.float32([0.1, 0.05]), 0.1) == 0.5


def test_landmarks_of_the_wrong_last_dimension_are_refused():
    with pytest.raises(ValueError, match="got \\(1, 4, 3\\)"):
        metrics.nme_per_image(np.zeros((1, 4, 3)), np.zeros((1, 4, 3)), IO)
    with pytest.raises(ValueError, match="got \\(1, 4, 3\\)"):       # one image of 4 points
        metrics.normaliser_distance(np.zeros((4, 3)), IO)


def test_auc_uses_the_step_it_is_given():
    # grid 0, 0.05, 0.1 with the CED 0, 1, 1: (0 + 1) / 2 * 0.05 + 0.05 = 0.075 -> 0.75
    assert metrics.auc([0.02], 0.1, 0.05) == pytest.approx(0.75, abs=1e-12)


def test_a_floor_below_one_percent_still_counts():
    assert metrics.compare_to_mean_shape(1.0, 0.5) == "worse than"
    assert metrics.compare_to_mean_shape(1.5, 0.5) == "far worse than"
    assert metrics.compare_to_mean_shape(0.4, 0.5) is None
