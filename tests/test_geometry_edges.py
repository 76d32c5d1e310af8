"""image_utility.py's coordinate geometry where mutmut found the tests silent (docs/MUTATION.md):
default margins, the one-pixel minimum crop, box shapes, dtypes (float64 arithmetic, float32
landmarks out), the affine helpers' defaults, centre and shift."""
from __future__ import annotations

import numpy as np
import pytest

import image_utility as iu

PTS = np.array([[10.0, 20.0], [110.0, 60.0], [40.0, 35.0]])


def test_default_margin_is_a_quarter():
    x0, y0, side = iu.square_box_from_landmarks(PTS)
    assert side == pytest.approx(125.0) and (x0, y0) == pytest.approx((60 - 62.5, 40 - 62.5))
    assert iu.square_box_from_xywh([10, 20, 40, 80]) == pytest.approx((30 - 50, 60 - 50, 100.0))
    # a box given as (1, 4) is read as one box
    assert iu.square_box_from_xywh(np.array([[10, 20, 40, 80]])) == pytest.approx((-20, 10, 100.0))


def test_a_tiny_face_gets_a_one_pixel_crop():
    x0, y0, side = iu.square_box_from_landmarks(np.array([[5.0, 5.0], [5.4, 5.2]]), 0.0)
    assert side == 1.0 and (x0, y0) == pytest.approx((4.7, 4.6))


def test_box_shapes():
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 3\)"):
        iu.landmarks_to_crop(PTS, np.zeros((1, 1, 3)), 64)
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        iu.crop_to_original(PTS, np.zeros(4), 64)


@pytest.mark.parametrize("size", [64, 224])
def test_float64_arithmetic_and_float32_results(size):
    rng = np.random.default_rng(0)
    pts32 = rng.uniform(-300, 900, (50, 7, 2)).astype(np.float32)
    pts64 = pts32.astype(np.float64)
    box = np.array([12.3, -7.7, 321.9])
    boxes = np.tile(box, (50, 1)) * rng.uniform(0.9, 1.1, (50, 1))
    s = float(size)
    checks = {
        "normalize": (iu.normalize_landmarks(pts32, size), (s / 2 - pts64) / s),
        "denormalize": (iu.denormalize_landmarks(pts32 / 1000, size), s / 2 - s * (pts32 / 1000).astype(np.float64)),
        "to_crop": (iu.landmarks_to_crop(pts32, boxes, size),
                    (pts64 - boxes[:, None, :2]) * (s / boxes[:, None, 2:3])),
        "to_original": (iu.crop_to_original(pts32, boxes, size),
                        pts64 * (boxes[:, None, 2:3] / s) + boxes[:, None, :2]),
    }
    m = np.array([[0.9, -0.3, 11.1], [0.31, 1.07, -4.3]], np.float32)
    checks["affine"] = (iu.apply_affine(pts32, m),
                        pts64 @ m[:, :2].astype(np.float64).T + m[:, 2].astype(np.float64))
    for name, (got, want) in checks.items():
        assert got.dtype == np.float32, name
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=name)
    assert iu.crop_matrix(box, size).dtype == np.float64


def test_flip_landmarks_keeps_float32_and_the_input():
    pts = np.array([[1.5, 2.0], [7.25, 3.0], [4.0, 9.0]], np.float64)
    before = pts.copy()
    out = iu.flip_landmarks(pts, 10, [1, 0, 2])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[1.75, 3.0], [7.5, 2.0], [5.0, 9.0]], np.float32))
    np.testing.assert_array_equal(pts, before)
    with pytest.raises(ValueError, match="flip permutation has 2 entries for 3 points"):
        iu.flip_landmarks(pts, 10, [1, 0])
    with pytest.raises(ValueError, match="flip permutation has 2 entries for 3 points"):
        iu.flip_landmarks(pts[None], 10, [1, 0])


def test_affine_matrix_default_centre_and_shift():
    # defaults: no rotation, no scale, no shift: the identity
    np.testing.assert_allclose(iu.affine_matrix((10.0, 50.0)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    # a rotation about (10, 50) keeps (10, 50) in place (x and y of the centre are not swapped)
    m = iu.affine_matrix((10.0, 50.0), 0.7, 1.3)
    np.testing.assert_allclose(iu.apply_affine(np.array([[10.0, 50.0]]), m), [[10.0, 50.0]], atol=1e-4)
    # the shift is added after the rotation
    shifted = iu.affine_matrix((10.0, 50.0), 0.7, 1.3, shift=(3.0, -2.0))
    np.testing.assert_allclose(iu.apply_affine(np.array([[10.0, 50.0]]), shifted), [[13.0, 48.0]], atol=1e-4)
    assert iu.affine_matrix((1, 2), shift=[1, 2]).dtype == np.float64


def test_compose_affine_of_float32_matrices_is_float64():
    a = np.array([[0.9, -0.3, 11.1], [0.31, 1.07, -4.3]], np.float32)
    b = np.array([[1.1, 0.2, -3.3], [-0.4, 0.95, 7.7]], np.float32)
    got = iu.compose_affine(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = np.concatenate([a64[:, :2] @ b64[:, :2], (a64[:, :2] @ b64[:, 2] + a64[:, 2])[:, None]], 1)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
