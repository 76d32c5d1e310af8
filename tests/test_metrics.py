"""metrics.py against hand-computed cases."""
import numpy as np
import pytest

import metrics
from configuration import dataset_info


def _face68(io=100.0):
    """A 68-point shape whose outer eye corners 36 and 45 are `io` px apart (horizontal)."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, io, size=(68, 2))
    pts[36] = (0.0, 0.0)
    pts[45] = (io, 0.0)
    return pts


def test_normaliser_interocular_and_interpupil():
    gt = _face68(100.0)
    info = dataset_info("300w")
    assert metrics.normaliser_distance(gt, info.interocular) == pytest.approx([100.0])
    # inter-pupil: the eye centres are the means of 36-41 and 42-47 (groups of 6)
    gt[36:42] = [(0, 0), (10, -5), (20, -5), (30, 0), (20, 5), (10, 5)]      # centre (15, 0)
    gt[42:48] = [(70, 0), (80, -5), (90, -5), (100, 0), (90, 5), (80, 5)]    # centre (85, 0)
    assert metrics.normaliser_distance(gt, info.interpupil) == pytest.approx([70.0])
    assert len(info.interpupil[0]) == 6 and len(info.interpupil[1]) == 6


def test_nme_of_known_offset():
    gt = np.stack([_face68(100.0), _face68(50.0)])
    pred = gt + np.array([3.0, 4.0])          # every point 5 px off
    nme = metrics.nme_per_image(pred, gt, ((36,), (45,)))
    assert nme == pytest.approx([0.05, 0.10])
    assert metrics.nme_per_image(gt, gt, ((36,), (45,))) == pytest.approx([0.0, 0.0])
    # a single (N, 2) image is a batch of one
    assert metrics.nme_per_image(pred[0], gt[0], ((36,), (45,))) == pytest.approx([0.05])


def test_nme_degenerate_normaliser_is_nan():
    gt = np.zeros((1, 68, 2))
    assert np.isnan(metrics.nme_per_image(gt + 1, gt, ((36,), (45,)))[0])


def test_nme_shape_mismatch():
    with pytest.raises(ValueError):
        metrics.nme_per_image(np.zeros((2, 68, 2)), np.zeros((2, 29, 2)), ((8,), (9,)))


def test_failure_rate_counts_strictly_above():
    nmes = [0.01, 0.05, 0.08, 0.1, 0.11, 0.5]
    assert metrics.failure_rate(nmes, 0.1) == pytest.approx(2 / 6)
    assert metrics.failure_rate(nmes, 0.08) == pytest.approx(3 / 6)
    assert metrics.failure_rate([0.0], 0.1) == 0.0


@pytest.mark.parametrize("nmes, expected", [
    ([0.0] * 10, 1.0),
    ([0.05] * 10, 0.5),
    ([0.2] * 10, 0.0),
    ([0.0] * 5 + [0.2] * 5, 0.5),
    ([0.025, 0.075], 0.5),      # CED = 0, 0.5 on [.025, .075), 1 after: 0.5*0.05 + 0.025 = 0.05
])
def test_auc_hand_computed(nmes, expected):
    assert metrics.auc(nmes, 0.1) == pytest.approx(expected, abs=2e-3)


def test_auc_uniform_errors_is_half():
    nmes = np.linspace(0.0, 0.1, 10001)
    assert metrics.auc(nmes, 0.1) == pytest.approx(0.5, abs=2e-3)


def test_auc_authors_hand_computed():
    # t_k = k * 0.1 / 19 (linspace(0, 0.1, 20)); each image counts (t_k + t_(k-1)) / 2 = (2k - 1) / 380
    # for every k >= 1 with NME <= t_k, and sum_(k=a..19) (2k - 1) = 361 - (a - 1)^2.
    # 0.0 counts from k = 1 (361), 0.02 from k = 4 (352), 0.05 from k = 10 (280), 0.2 never.
    assert metrics.auc_authors([0.0, 0.02, 0.05, 0.2], 0.1) == pytest.approx(993 / 1520, abs=1e-12)
    assert metrics.auc_authors([0.0] * 4, 0.1) == pytest.approx(361 / 380, abs=1e-12)   # 0.95, not 1
    assert metrics.auc_authors([0.1], 0.1) == pytest.approx(37 / 380, abs=1e-12)        # NME <= t_19
    assert metrics.auc_authors([0.2] * 4, 0.1) == 0.0
    assert np.isnan(metrics.auc_authors([], 0.1))


def test_auc_authors_matches_numpy_trapz_of_the_running_sum():
    nmes = np.random.default_rng(3).lognormal(np.log(0.04), 0.5, 300)
    t = np.linspace(0, 0.1, 20)
    running = np.cumsum((nmes[:, None] <= t).mean(axis=0))
    reference = np.sum(np.diff(running) * (t[1:] + t[:-1]) / 2)       # numpy trapz(t, running)
    assert metrics.auc_authors(nmes, 0.1) == pytest.approx(reference, abs=1e-12)


def test_auc_authors_on_the_papers_error_level():
    # log-normal errors with mean NME 4.06% (the 300W student): the paper publishes 0.79
    sigma = 0.45
    nmes = np.random.default_rng(0).lognormal(np.log(0.0406) - sigma ** 2 / 2, sigma, 20000)
    assert nmes.mean() == pytest.approx(0.0406, abs=5e-4)
    assert metrics.auc_authors(nmes, 0.1) == pytest.approx(0.79, abs=0.02)
    assert metrics.auc(nmes, 0.1) == pytest.approx(0.60, abs=0.03)


def test_ced_curve():
    x, y = metrics.ced_curve([0.02, 0.04, 0.2], 0.1, 0.01)
    assert len(x) == 11 and x[0] == 0 and x[-1] == pytest.approx(0.1)
    assert y[0] == 0 and y[2] == pytest.approx(1 / 3) and y[4] == pytest.approx(2 / 3)
    assert y[-1] == pytest.approx(2 / 3)
    assert np.all(np.diff(y) >= 0)
