"""Geometry of image_utility: coordinate frames, crops, flips (and every flip table), affine
augmentation. Landmarks must follow the pixels: a dot drawn at a landmark is found, after the
transform, at the transformed landmark.

The flip-table tests use the real annotated faces of tests/data/real_samples (the points only).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import image_utility as iu
from configuration import dataset_info
import fixtures as fx


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def dot_image(h, w, point, radius=5.0, channels=3):
    img = np.zeros((h, w, channels), np.uint8)
    return iu.draw_landmarks(img, np.array([point]), color=(255, 255, 255), radius=radius)


def centroid(img):
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    total = g.sum()
    assert total > 0, "the dot disappeared"
    ys, xs = np.mgrid[:g.shape[0], :g.shape[1]]
    return np.array([(g * xs).sum() / total, (g * ys).sum() / total])


def blob_centroids(img, thresh=60):
    g = img.max(axis=2) if img.ndim == 3 else img
    n, labels = cv2.connectedComponents((g > thresh).astype(np.uint8))
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(labels == k)
        wts = g[ys, xs].astype(np.float64)
        out.append([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])
    return np.array(out)


# ----------------------------------------------------------------------------------------------
# coordinate frames
# ----------------------------------------------------------------------------------------------


def test_normalisation_convention_at_224():
    c = np.array([[112.0, 112.0], [0.0, 224.0]], np.float32)
    v = iu.normalize_landmarks(c, 224)
    np.testing.assert_allclose(v, [[0.0, 0.0], [0.5, -0.5]])
    np.testing.assert_allclose(iu.denormalize_landmarks(v, 224), c, atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(8, 512), st.lists(st.floats(-50, 600, allow_nan=False), min_size=2, max_size=20))
def test_normalise_roundtrip_any_size(size, values):
    pts = np.asarray(values[: len(values) // 2 * 2], np.float32).reshape(-1, 2)
    back = iu.denormalize_landmarks(iu.normalize_landmarks(pts, size), size)
    np.testing.assert_allclose(back, pts, atol=1e-3)


@settings(max_examples=50, deadline=None)
@given(st.floats(-100, 100), st.floats(-100, 100), st.floats(10, 900), st.integers(8, 300))
def test_crop_mapping_roundtrip(x0, y0, side, size):
    pts = np.array([[x0, y0], [x0 + side, y0 + side], [x0 + side / 3, y0 + side / 2]], np.float32)
    c = iu.landmarks_to_crop(pts, (x0, y0, side), size)
    np.testing.assert_allclose(c[0], [0, 0], atol=1e-3)
    np.testing.assert_allclose(c[1], [size, size], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(iu.crop_to_original(c, (x0, y0, side), size), pts, rtol=1e-5, atol=1e-3)


def test_crop_mapping_one_box_per_face():
    """(M, 3) boxes with (M, N, 2) points: face i moved by box i, the same as one call per face."""
    rng = np.random.default_rng(5)
    pts = rng.uniform(0, 500, (4, 7, 2)).astype(np.float32)
    boxes = np.column_stack([rng.uniform(-50, 50, (4, 2)), rng.uniform(100, 600, 4)])
    c = iu.landmarks_to_crop(pts, boxes, 64)
    assert c.shape == pts.shape and c.dtype == np.float32
    for i in range(4):
        np.testing.assert_allclose(c[i], iu.landmarks_to_crop(pts[i], boxes[i], 64), rtol=1e-6)
    np.testing.assert_allclose(iu.crop_to_original(c, boxes, 64), pts, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="crop box"):
        iu.landmarks_to_crop(pts, boxes[:, :2], 64)


def test_square_boxes():
    pts = np.array([[10, 20], [110, 60]], np.float32)      # extent 100 x 40, centre (60, 40)
    x0, y0, side = iu.square_box_from_landmarks(pts, 0.25)
    assert side == pytest.approx(125.0)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((60.0, 40.0))
    x0, y0, side = iu.square_box_from_xywh([10, 20, 40, 80], 0.5)
    assert side == pytest.approx(120.0)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((30.0, 60.0))


# ----------------------------------------------------------------------------------------------
# landmarks follow the pixels
# ----------------------------------------------------------------------------------------------


def test_draw_landmarks_subpixel():
    for p in [(40.3, 25.7), (10.5, 60.25)]:
        img = dot_image(80, 100, p, radius=4)
        np.testing.assert_allclose(centroid(img), p, atol=0.25)
    grey = iu.draw_landmarks(np.zeros((20, 20), np.uint8), np.array([[5.0, 5.0]]))
    assert grey.shape == (20, 20, 3)


@pytest.mark.parametrize("box,size", [((30.0, 20.0, 150.0), 64),       # down-scale
                                      ((-40.0, -30.0, 200.0), 96),     # partly outside: zero padding
                                      ((50.3, 40.7, 60.0), 120)])      # up-scale
def test_crop_and_resize_moves_dot_with_landmark(box, size):
    x0, y0, side = box
    for f, g in [(0.5, 0.5), (0.31, 0.7), (0.8, 0.27)]:
        p = (x0 + f * side, y0 + g * side)
        img = dot_image(180, 220, p, radius=6)
        crop = iu.crop_and_resize(img, box, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        expected = iu.landmarks_to_crop(np.array([p]), box, size)[0]
        np.testing.assert_allclose(centroid(crop), expected, atol=1.0)


def test_crop_outside_is_zero_and_grey_works():
    img = np.full((50, 60), 200, np.uint8)
    crop = iu.crop_and_resize(img, (-60.0, -50.0, 100.0), 50)
    assert crop.shape == (50, 50)
    assert crop[:20, :20].max() == 0 and crop[-5:, -5:].min() == 200
    assert iu.crop_and_resize(img, (500.0, 500.0, 10.0), 16).max() == 0


def test_flip_moves_dot_and_reindexes():
    p0, p1 = (20.4, 30.0), (70.0, 31.5)
    img = np.zeros((60, 100, 3), np.uint8)
    img = iu.draw_landmarks(img, np.array([p0]), color=(255, 0, 0), radius=4)
    img = iu.draw_landmarks(img, np.array([p1]), color=(0, 255, 0), radius=4)
    pts = np.array([p0, p1], np.float32)
    out, q = iu.flip_horizontal(img, pts, [1, 0])
    # new point 0 is the old point 1 (green), mirrored: x' = W - 1 - x
    np.testing.assert_allclose(q, [[99 - 70.0, 31.5], [99 - 20.4, 30.0]], atol=1e-5)
    np.testing.assert_allclose(centroid(out[..., 1:2]), q[0], atol=0.5)
    np.testing.assert_allclose(centroid(out[..., 0:1]), q[1], atol=0.5)
    back, q2 = iu.flip_horizontal(out, q, [1, 0])
    np.testing.assert_array_equal(back, img)
    np.testing.assert_allclose(q2, pts, atol=1e-5)


@pytest.mark.parametrize("angle,scale,shift", [(0.5, 1.0, (0, 0)), (-0.5, 1.1, (3, -4)),
                                               (0.3, 0.8, (-5, 2)), (0.0, 1.25, (0, 0))])
def test_rotation_and_scale_move_dot_with_landmark(angle, scale, shift):
    for p in [(50.0, 50.0), (30.5, 62.2), (70.2, 40.8)]:
        img = dot_image(100, 100, p, radius=4)
        m = iu.affine_matrix((49.5, 49.5), angle, scale, shift)
        out, q = iu.warp_affine(img, np.array([p], np.float32), m)
        np.testing.assert_allclose(centroid(out), q[0], atol=0.6)


def test_augment_sample_keeps_landmarks_on_dots():
    pts = np.array([[40.0, 45.0], [88.0, 44.0], [64.0, 90.0]], np.float32)
    img = np.zeros((128, 128, 3), np.uint8)
    img = iu.draw_landmarks(img, pts, color=(255, 255, 255), radius=4)
    cfg = iu.AugmentConfig(p_flip=0.5, p_affine=1.0, p_noise=0.0, p_median=0.5, p_gamma=0.5)
    perm = [1, 0, 2]
    flips = 0
    for seed in range(8):
        out, q, params = iu.augment_sample(img, pts, np.random.default_rng(seed), cfg, perm,
                                           return_params=True)
        flips += params["flipped"]
        found = blob_centroids(out)
        assert len(found) == 3
        d = np.linalg.norm(found[:, None] - q[None], axis=2)
        assert d.min(axis=1).max() < 1.0
        assert np.all(q >= 0) and np.all(q <= 127)      # keep_inside
    assert 0 < flips < 8


def test_augment_is_deterministic_and_moves_all_targets_together():
    rng_img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a = np.random.default_rng(2).uniform(10, 50, (5, 2)).astype(np.float32)
    stacked = np.stack([a, a + 2.0, a[::-1]])            # three target sets of one face
    perm = [4, 3, 2, 1, 0]
    cfg = iu.AugmentConfig(p_flip=1.0, p_affine=1.0, p_gaussian=0.5, p_occlusion=0.5)
    o1, q1 = iu.augment_sample(rng_img, stacked, np.random.default_rng(7), cfg, perm)
    o2, q2 = iu.augment_sample(rng_img, stacked, np.random.default_rng(7), cfg, perm)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(q1, q2)
    single, qs = iu.augment_sample(rng_img, a, np.random.default_rng(7), cfg, perm)
    np.testing.assert_array_equal(single, o1)
    np.testing.assert_allclose(qs, q1[0], atol=1e-4)
    # the same transform: differences are rotated and scaled, never altered differently
    m = iu.augment_sample(rng_img, a, np.random.default_rng(7), cfg, perm, return_params=True)[2]["matrix"]
    lin = m[:, :2]
    # target 1 = target 0 + (2, 2); after the flip the offset is (-2, 2), then M's linear part acts
    np.testing.assert_allclose(q1[1] - q1[0], np.tile(lin @ np.array([-2.0, 2.0]), (5, 1)), atol=1e-3)
    np.testing.assert_allclose(q1[2], q1[0][::-1], atol=1e-4)


# ----------------------------------------------------------------------------------------------
# The published augmentation recipe (METHOD.md section 6)
# ----------------------------------------------------------------------------------------------


def _recorded_ops(monkeypatch, cfg, draws=3000, flip=None):
    """Run augment_sample `draws` times on a small image, recording each photometric call."""
    calls = {"gamma": [], "noise": [], "median": [], "flip": 0}
    monkeypatch.setattr(iu, "adjust_gamma", lambda img, g: calls["gamma"].append(g) or img)
    monkeypatch.setattr(iu, "salt_and_pepper", lambda img, a, rng: calls["noise"].append(a) or img)
    monkeypatch.setattr(iu, "median_blur", lambda img, k=3: calls["median"].append(k) or img)
    img = np.full((16, 16, 3), 100, np.uint8)
    pts = np.array([[4.0, 5.0], [11.0, 5.0], [8.0, 12.0]], np.float32)
    for seed in range(draws):
        calls["flip"] += iu.augment_sample(img, pts, np.random.default_rng(seed), cfg, [1, 0, 2],
                                           return_params=True, flip=flip)[2]["flipped"]
    return calls


def test_published_photometric_probabilities_and_ranges(monkeypatch):
    n = 3000
    calls = _recorded_ops(monkeypatch, iu.AugmentConfig(), n)
    tol = 4 * np.sqrt(0.25 / n)                          # 4 binomial standard deviations
    assert len(calls["gamma"]) / n == pytest.approx(0.5, abs=tol)
    assert len(calls["noise"]) / n == pytest.approx(0.4, abs=tol)
    assert len(calls["median"]) / n == pytest.approx(0.5, abs=tol)
    assert set(calls["median"]) == {5}
    # adjust_gamma gets the exponent 1/g: g in [0.3, 0.8] darkens (exponent 1.25..3.33), about two
    # thirds of the draws; g in [1.5, 3.5] brightens (exponent 0.29..0.67)
    e = np.array(calls["gamma"])
    dark, bright = e[e > 1], e[e < 1]
    assert len(dark) + len(bright) == len(e)
    assert dark.min() >= 1 / 0.8 - 1e-9 and dark.max() <= 1 / 0.3 + 1e-9
    assert bright.min() >= 1 / 3.5 - 1e-9 and bright.max() <= 1 / 1.5 + 1e-9
    assert len(dark) / len(e) == pytest.approx(2 / 3, abs=4 * np.sqrt(2 / 9 / len(e)))
    # online (no copy index): flips with probability 0.5; a forced flip is always / never taken
    assert calls["flip"] / n == pytest.approx(0.5, abs=tol)
    assert _recorded_ops(monkeypatch, iu.AugmentConfig(), 20, flip=True)["flip"] == 20
    assert _recorded_ops(monkeypatch, iu.AugmentConfig(), 20, flip=False)["flip"] == 0


def test_published_rotation_has_no_scale_or_shift_and_jitter_is_an_option():
    img = np.zeros((64, 64, 3), np.uint8)
    pts = np.array([[20.0, 24.0], [44.0, 24.0], [32.0, 46.0]], np.float32)
    angles, dets = [], {"published": [], "jitter": []}
    for name, cfg in (("published", iu.AugmentConfig(recrop=False, keep_inside=False)),
                      ("jitter", iu.AugmentConfig.jitter(recrop=False, keep_inside=False))):
        for seed in range(300):
            m = iu.augment_sample(img, pts, np.random.default_rng(seed), cfg, None,
                                  return_params=True)[2]["matrix"]
            lin = m[:, :2]
            np.testing.assert_allclose(lin[0, 0], lin[1, 1], atol=1e-9)      # a similarity, no shear
            np.testing.assert_allclose(lin[0, 1], -lin[1, 0], atol=1e-9)
            dets[name].append(np.linalg.det(lin))
            if name == "published":
                angles.append(np.arctan2(lin[1, 0], lin[0, 0]))
                # rotation about the image centre: the centre stays put (no shift)
                np.testing.assert_allclose(iu.apply_affine(np.array([[31.5, 31.5]]), m), [[31.5, 31.5]],
                                           atol=1e-9)
    angles = np.abs(angles)
    assert angles.max() <= 0.5 + 1e-9 and angles.max() > 0.45          # uniform in +-0.5 rad
    np.testing.assert_allclose(dets["published"], 1.0, atol=1e-9)      # no scale
    d = np.sqrt(dets["jitter"])
    assert d.min() >= 0.9 - 1e-9 and d.max() <= 1.1 + 1e-9 and d.max() - d.min() > 0.1


def test_recrop_frames_the_rotated_face_as_the_plain_crop():
    # the rotated points' box lands where the plain crop had it, with the same extent
    s = 64
    pts = np.array([[12.8, 20.0], [51.2, 20.0], [32.0, 51.2], [20.0, 40.0]], np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    img = np.zeros((s, s, 3), np.uint8)
    cfg = iu.AugmentConfig(p_gamma=0, p_noise=0, p_median=0)
    for seed in range(20):
        _, q, params = iu.augment_sample(img, pts, np.random.default_rng(seed), cfg, None,
                                         return_params=True)
        qlo, qhi = q.min(axis=0), q.max(axis=0)
        np.testing.assert_allclose((qlo + qhi) / 2, (lo + hi) / 2, atol=1e-3)   # same place
        assert (qhi - qlo).max() == pytest.approx((hi - lo).max(), abs=1e-3)
        assert np.all(q >= 0) and np.all(q <= s - 1)


def test_offline_copies_use_edge_replicated_borders():
    img = np.full((32, 32, 3), 200, np.uint8)
    pts = np.array([[8.0, 10.0], [24.0, 10.0], [16.0, 24.0]], np.float32)
    cfg = iu.AugmentConfig(p_gamma=0, p_noise=0, p_median=0)
    out, _ = iu.augment_sample(img, pts, np.random.default_rng(3), cfg, None)
    assert out.min() == 200                          # no black corners from a rotation
    zeros, _ = iu.augment_sample(img, pts, np.random.default_rng(3), iu.AugmentConfig(
        p_gamma=0, p_noise=0, p_median=0, border="constant"), None)
    assert zeros.min() == 0


def test_photometric_ops_keep_shape_and_dtype():
    img = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for out in [iu.adjust_gamma(img, 0.5), iu.salt_and_pepper(img, 0.05, rng), iu.median_blur(img, 3),
                iu.gaussian_blur(img, 1.0), iu.random_occlusion(img, rng)]:
        assert out.shape == img.shape and out.dtype == np.uint8
    assert iu.adjust_gamma(img, 0.5).mean() > img.mean()
    sp = iu.salt_and_pepper(np.full((100, 100, 3), 128, np.uint8), 0.1, rng)
    frac = ((sp == 0) | (sp == 255)).all(axis=2).mean()
    assert 0.06 < frac < 0.14


# ----------------------------------------------------------------------------------------------
# flip tables (METHOD.md section 7): an involution, and a mirrored symmetric mean shape maps onto itself
# ----------------------------------------------------------------------------------------------

# Points on the facial midline of each layout (they must map to themselves), read off the published
# landmark charts independently of the tables in configuration.py.
MIDLINE = {"300w": {8, 27, 28, 29, 30, 33, 51, 57, 62, 66},
           "wflw": {16, 51, 52, 53, 54, 57, 79, 85, 90, 94},
           "cofw": {20, 21, 24, 25, 26, 27, 28}}


def _procrustes(target, moving):
    """Similarity-align `moving` onto `target` (both (N, 2))."""
    mt, mm = target.mean(0), moving.mean(0)
    a, b = target - mt, moving - mm
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    scale = (s * np.diag(d)).sum() / (b ** 2).sum()
    return scale * b @ r + mt


def _mean_shape(shapes):
    ref = shapes[0] - shapes[0].mean(0)
    ref = ref / np.linalg.norm(ref)
    for _ in range(5):
        m = np.mean([_procrustes(ref, s) for s in shapes], axis=0)
        m -= m.mean(0)
        ref = m / np.linalg.norm(m)
    return ref


def _mirror_residual(shape, perm):
    """Per-point distance (fraction of the face size) between a shape and its re-indexed mirror."""
    mir = shape.copy()
    mir[:, 0] *= -1.0
    aligned = _procrustes(shape, mir[np.asarray(perm)])
    return np.linalg.norm(aligned - shape, axis=1) / (shape.max(0) - shape.min(0)).max()


def _real_shapes(name):
    if name == "300w":
        return [np.asarray(p, float) for _, p in fx.all_68_point_faces()]
    return [f.landmarks.astype(float) for f in fx.mmpose_faces(name)]


@pytest.mark.parametrize("name", ["300w", "wflw", "cofw"])
def test_flip_table_is_an_involution_with_the_midline_fixed(name):
    info = dataset_info(name)
    perm = np.asarray(info.flip_permutation)
    assert sorted(perm.tolist()) == list(range(info.num_points))
    np.testing.assert_array_equal(perm[perm], np.arange(info.num_points))
    assert {i for i in range(info.num_points) if perm[i] == i} == MIDLINE[name]
    flat = [k for pair in info.flip_pairs for k in pair]
    assert len(flat) == len(set(flat)), "a point is paired twice"


@pytest.mark.parametrize("name", ["300w", "wflw", "cofw"])
def test_mirrored_mean_shape_maps_onto_itself(name):
    """Mean of the real annotated faces (derived from tests/data/real_samples)."""
    info = dataset_info(name)
    mean = _mean_shape(_real_shapes(name))
    assert mean.shape == (info.num_points, 2)
    res = _mirror_residual(mean, info.flip_permutation)
    assert res.max() < 0.15, f"points {np.argsort(res)[-3:]} do not map onto their mirror"
    # a symmetrised shape maps onto itself exactly, and is still close to the real mean
    mir = mean.copy()
    mir[:, 0] *= -1
    sym = (mean + _procrustes(mean, mir[info.flip_permutation])) / 2
    assert _mirror_residual(sym, info.flip_permutation).max() < 0.02


def test_the_check_catches_the_original_wflw_bug():
    """The original table paired 8 twice and never swapped 9-23: the mirror check must fail."""
    info = dataset_info("wflw")
    mean = _mean_shape(_real_shapes("wflw"))
    bad = list(info.flip_permutation)
    bad[9], bad[23] = 9, 23
    assert _mirror_residual(mean, bad).max() > 0.3
    swapped = list(info.flip_permutation)                 # a wrong pair among neighbours
    swapped[60], swapped[72], swapped[61], swapped[71] = 71, 61, 72, 60
    eye = [60, 61, 71, 72]                                # subtler: the residual there grows
    good = _mirror_residual(mean, info.flip_permutation)[eye].mean()
    assert _mirror_residual(mean, swapped)[eye].mean() > 2 * good
    assert _mirror_residual(mean, list(range(98))).max() > 0.3
