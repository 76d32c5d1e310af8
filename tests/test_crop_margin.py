"""`prepare --margin` shapes the crop itself, and the crop is centred on the landmarks' BOX centre
(issue 37). Checked on the crop pixels and the stored landmarks, never on the manifest alone, with
faces whose landmark centroid lies far from their box centre (four points clustered at one corner,
one point at the opposite corner: centroid and box centre 26 and 20 px apart on a 180 px crop, so a
crop centred on the centroid moves every point by ~15% of the crop).
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import data_util as du
import dataset_formats as fmt
import image_utility as iu

S = 48
PTS = np.array([[100, 100], [120, 104], [104, 124], [124, 120], [220, 200]], np.float64)
# by hand: box x 100..220, y 100..200 -> extent 120, centre (160, 150); centroid (133.6, 129.6)
BOX_CENTRE = np.array([160.0, 150.0])
EXTENT = 120.0


def _image(shift):
    """A dim gradient background (so a shifted crop has other pixels) with a white dot per point."""
    h, w = 300, 320
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 90 // w, yy * 90 // h, (xx + yy) * 45 // (w + h)], axis=2).astype(np.uint8)
    return iu.draw_landmarks(img, PTS + shift, color=(255, 255, 255), radius=3)


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corner_faces")
    (root / "img").mkdir()
    samples = []
    for k, shift in enumerate([(0, 0), (-30, 20), (40, -25)]):
        path = root / "img" / f"f{k}.png"
        cv2.imwrite(str(path), _image(np.array(shift))[:, :, ::-1])      # RGB -> BGR for OpenCV
        samples.append(fmt.Sample(id="", image_path=str(path), landmarks_px=PTS + shift, box_xywh=None))
    fmt.write_custom_list(root / "train.txt", samples[:2])
    fmt.write_custom_list(root / "test.txt", samples[2:])
    spec = {"name": "corner5", "num_points": 5, "flip_pairs": [[0, 1]], "interocular": [[0], [1]],
            "train_list": "train.txt", "test_list": "test.txt"}
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def test_square_box_is_centred_on_the_landmark_box_not_the_centroid():
    assert np.linalg.norm(PTS.mean(0) - BOX_CENTRE) > 30          # far apart on purpose
    for margin in (0.0, 0.25, 0.5, 1.0):
        x0, y0, side = iu.square_box_from_landmarks(PTS, margin)
        assert side == pytest.approx((1 + margin) * EXTENT)
        assert (x0 + side / 2, y0 + side / 2) == pytest.approx(tuple(BOX_CENTRE))


@pytest.mark.parametrize("margin", [0.5, 0.1])
def test_prepare_margin_sets_the_crop_pixels_and_landmarks(tmp_path, custom_root, margin):
    out = tmp_path / "prepared"
    du.main(["prepare", "--custom-spec", str(custom_root / "spec.json"), "--input-size", str(S),
             "--margin", str(margin), "--out-dir", str(out), "--no-progress"])
    for split, shifts in (("train", [(0, 0), (-30, 20)]), ("test", [(40, -25)])):
        p = du.load_prepared(out, split)
        for i, shift in enumerate(shifts):
            # the crop by hand: side (1 + margin) x 120 px around the box centre (160, 150) + shift
            side = (1 + margin) * EXTENT
            x0, y0 = BOX_CENTRE + shift - side / 2
            want_px = (PTS + shift - [x0, y0]) * S / side                # crop pixels of the points
            crop_pts = iu.denormalize_landmarks(p.landmarks[i], S)
            np.testing.assert_allclose(crop_pts, want_px, atol=0.02)
            # the points' box: centred in the crop, 1 / (1 + margin) of its side
            assert (crop_pts.max(0) - crop_pts.min(0)).max() == pytest.approx(S / (1 + margin), rel=1e-3)
            np.testing.assert_allclose((crop_pts.max(0) + crop_pts.min(0)) / 2, [S / 2, S / 2], atol=0.02)
            # the pixels: the stored crop is that very square of the image, the dots under the points
            img = fmt.load_image(p.meta["image_paths"][i])
            np.testing.assert_array_equal(p.images[i], iu.crop_and_resize(img, (x0, y0, side), S))
            crop = np.asarray(p.images[i]).astype(np.float64)
            bright = np.clip(crop.min(axis=2) - 120, 0, None)          # the white dots only
            for q in want_px:
                ys, xs = np.mgrid[:S, :S]
                near = bright * (np.hypot(xs - q[0], ys - q[1]) < 3.5)
                assert near.sum() > 0, "no dot under a landmark"
                c = np.array([(near * xs).sum(), (near * ys).sum()]) / near.sum()
                assert np.linalg.norm(c - q) < 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["margin"] == margin
