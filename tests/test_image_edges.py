"""image_utility.py value by value (issue 37 item 3, mutmut's survivors): the photometric functions
by closed form (the gamma table, salt-and-pepper shares, median kernel sizes), the crop against the
whole-image reference (blur, then warp), the re-crop's invariant (the landmarks' box keeps its centre
and larger extent), warp borders and output sizes, the dots drawn, and the augmentation's random
draws replayed with a twin generator: which step runs for which probability, in which order, with
which range. Fast: small synthetic images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import image_utility as iu

RNG_SEED = 3


def _image(h=48, w=64, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------- photometric


def test_gamma_table_by_hand():
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = iu.adjust_gamma(v, 2.0).ravel().astype(int)
    want = [min(255, int(255 * (i / 255) ** 2 + 0.5)) for i in range(256)]
    assert got.tolist() == want
    assert got[0] == 0 and got[255] == 255 and got[128] == 64 and got[1] == 0 and got[254] == 253
    assert iu.adjust_gamma(v, 1.0).tolist() == v.tolist()                      # identity
    dark = iu.adjust_gamma(v, 0.5).ravel().astype(int)                          # gamma < 1 brightens
    assert dark[64] == int(255 * (64 / 255) ** 0.5 + 0.5) == 128 and dark[255] == 255 and dark[0] == 0
    assert iu.adjust_gamma(v.astype(np.float64), 2.0).dtype == np.uint8         # any input: uint8 out


def test_salt_and_pepper_shares_replayed():
    img = np.full((200, 300, 3), 128, np.uint8)
    before = img.copy()
    out = iu.salt_and_pepper(img, 0.1, np.random.default_rng(RNG_SEED))
    mask = np.random.default_rng(RNG_SEED).random((200, 300))
    assert np.array_equal(out[..., 0] == 0, mask < 0.05)
    assert np.array_equal(out[..., 0] == 255, (mask >= 0.05) & (mask < 0.1))
    assert np.array_equal(out[..., 0] == 128, mask >= 0.1)
    assert np.array_equal(img, before) and out.dtype == np.uint8


def test_salt_and_pepper_at_the_thresholds():
    class Fixed:                                    # a generator that draws exactly these values
        def __init__(self, values):
            self.values = np.asarray(values, np.float64)

        def random(self, shape):
            return self.values.reshape(shape)

    img = np.full((1, 5), 100, np.uint8)
    out = iu.salt_and_pepper(img, 0.2, Fixed([0.0, 0.1, 0.15, 0.2, 0.5]))
    assert out.ravel().tolist() == [0, 255, 255, 100, 100]                     # [0, a/2) black, [a/2, a) white
    out = iu.salt_and_pepper(np.full((1, 2), 7.0), 0.2, Fixed([0.05, 0.3]))
    assert out.dtype == np.uint8 and out.ravel().tolist() == [0, 7]


@pytest.mark.parametrize("ksize,used", [(3, 3), (4, 5), (5, 5), (2, 3)])
def test_median_blur_kernel_is_odd(ksize, used):
    img = _image(20, 20)
    assert np.array_equal(iu.median_blur(img, ksize), cv2.medianBlur(img, used))
    assert np.array_equal(iu.median_blur(img), cv2.medianBlur(img, 3))
    assert iu.median_blur(img.astype(np.float64), ksize).dtype == np.uint8


def test_gaussian_blur_is_isotropic_with_the_given_sigma():
    img = np.zeros((41, 41), np.uint8)
    img[20, 20] = 255
    out = iu.gaussian_blur(img, 2.0)
    assert np.array_equal(out, cv2.GaussianBlur(img, (0, 0), 2.0, sigmaY=2.0))
    assert np.array_equal(out, out.T)                                           # same sigma in x and y
    assert out[20, 23] > 0 and out[23, 20] > 0 and out[20, 27] == 0                # 1.5 sigma: blurred


# ---------------------------------------------------------------------------- crop


def _reference_crop(image, box, size):
    """The definition: blur the whole image when shrinking below 0.67, then one affine warp."""
    scale = size / box[2]
    src = image
    if scale < 0.67:
        s = 0.45 / scale
        src = cv2.GaussianBlur(image, (0, 0), sigmaX=s, sigmaY=s)
    return cv2.warpAffine(src, iu.crop_matrix(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@pytest.mark.parametrize("box,size", [
    ((40.3, 30.7, 100.0), 32),        # shrunk 3x: blurred
    ((40.3, 30.7, 100.0), 66),        # 0.66: blurred
    ((40.3, 30.7, 100.0), 67),        # 0.67: not blurred
    ((50.0, 40.0, 64.0), 64),         # 1:1
    ((-20.5, -10.25, 90.0), 30),      # over the top-left edge
    ((150.0, 120.0, 80.0), 40),       # over the bottom-right edge
    ((60.0, 50.0, 20.0), 64),         # enlarged
    ((10.0, 10.0, 180.0), 20),        # shrunk 9x near the edge: the blur's border is the image's
])
def test_crop_and_resize_is_blur_then_warp_of_the_whole_image(box, size):
    img = _image(200, 240, seed=1)
    got = iu.crop_and_resize(img, box, size)
    want = _reference_crop(img, box, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)        # the region read around the box is wide enough for the blur


def test_a_one_to_one_crop_is_the_pixels_themselves():
    img = _image(100, 120, seed=2)
    assert np.array_equal(iu.crop_and_resize(img, (10, 20, 50), 50), img[20:70, 10:60])
    grey = img[..., 0]
    assert np.array_equal(iu.crop_and_resize(grey, (10, 20, 50), 50), grey[20:70, 10:60])


@pytest.mark.parametrize("box", [(300.0, 10.0, 50.0), (10.0, 300.0, 50.0), (-400.0, 10.0, 50.0),
                                 (10.0, -400.0, 50.0)])
def test_a_box_outside_the_image_gives_zeros_of_the_image_type(box):
    img = _image(100, 120).astype(np.float32)
    out = iu.crop_and_resize(img, box, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32 and not out.any()


@pytest.mark.parametrize("box", [(132.0, 10.0, 50.0), (10.0, 112.0, 50.0), (-62.5, 10.0, 50.0),
                                 (10.0, -62.5, 50.0)])
def test_a_box_whose_read_region_is_empty_gives_zeros(box):
    """120 x 100 image, a 50 px box shrunk to 16 (pad 12): the region read starts exactly at the
    image's right or bottom edge, or ends exactly at 0."""
    out = iu.crop_and_resize(_image(100, 120), box, 16)
    assert out.shape == (16, 16, 3) and not out.any()


def test_single_channel_images_keep_their_channel_axis():
    img = _image(30, 40, channels=1)
    assert iu.crop_and_resize(img, (5, 5, 20), 10).shape == (10, 10, 1)
    out, _ = iu.warp_affine(img, np.zeros((1, 2)), np.eye(2, 3))
    assert out.shape == (30, 40, 1) and np.array_equal(out, img)


def test_float32_inputs_give_the_float64_results():
    rng = np.random.default_rng(0)
    faces = rng.uniform(0, 500, (200, 68, 2)).astype(np.float32)
    for p in faces:
        q = p.astype(np.float64)
        lo, hi = q.min(0), q.max(0)
        side = 1.25 * float((hi - lo).max())
        c = (lo + hi) / 2
        assert iu.square_box_from_landmarks(p) == (float(c[0] - side / 2), float(c[1] - side / 2), side)
    boxes = (rng.uniform(0, 300, (200, 3)) + [0, 0, 50]).astype(np.float32)
    b64 = boxes.astype(np.float64)[:, None]
    want = ((faces.astype(np.float64) - b64[..., :2]) * (64.0 / b64[..., 2:3])).astype(np.float32)
    np.testing.assert_array_equal(iu.landmarks_to_crop(faces, boxes, 64), want)
    want = ((faces / 8).astype(np.float64) * (b64[..., 2:3] / 64.0) + b64[..., :2]).astype(np.float32)
    np.testing.assert_array_equal(iu.crop_to_original(faces / 8, boxes, 64), want)


def test_a_box_one_pixel_over_the_edge_is_still_cut():
    img = np.full((20, 20), 200, np.uint8)
    out = iu.crop_and_resize(img, (19.0, 0.0, 4.0), 4)     # one column of the image, then zeros
    assert out[:, 0].tolist() == [200] * 4 and not out[:, 1:].any()
    out = iu.crop_and_resize(img, (0.0, 19.0, 4.0), 4)
    assert out[0].tolist() == [200] * 4 and not out[1:].any()


# ---------------------------------------------------------------------------- affine helpers


def _box(p):
    lo, hi = p.min(0), p.max(0)
    return (lo + hi) / 2, (hi - lo).max()


@pytest.mark.parametrize("angle,scale", [(0.4, 1.0), (-0.3, 1.7), (1.2, 0.6)])
def test_recrop_keeps_the_landmark_box_centre_and_extent(angle, scale):
    pts = np.random.default_rng(0).uniform(20, 80, (30, 2))
    pts[0], pts[1] = (20.0, 35.0), (80.0, 60.0)          # x extent 60 > y extent
    moved = iu.apply_affine(pts, iu.affine_matrix((50.0, 50.0), angle, scale, (7.0, -3.0))).astype(np.float64)
    back = iu.apply_affine(moved, iu.recrop_matrix(pts, moved)).astype(np.float64)
    c0, e0 = _box(pts)
    c1, e1 = _box(back)
    np.testing.assert_allclose(c1, c0, atol=1e-3)
    assert e1 == pytest.approx(e0, abs=1e-3)
    m = iu.recrop_matrix(pts, moved)
    assert m.shape == (2, 3) and m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] == m[1, 1]


def test_recrop_of_a_moved_box_by_hand():
    before = np.array([[0.0, 50.0], [10.0, 54.0]])        # centre (5, 52), extent 10 (x)
    after = np.array([[100.0, 50.0], [120.0, 60.0]])      # centre (110, 55), extent 20
    m = iu.recrop_matrix(before, after)
    np.testing.assert_allclose(m, [[0.5, 0.0, -50.0], [0.0, 0.5, 24.5]])
    np.testing.assert_allclose(iu.apply_affine(after, m), [[0.0, 49.5], [10.0, 54.5]], atol=1e-6)


@pytest.mark.parametrize("before,after", [
    ([[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [2.0, 3.0]]),    # all points on one spot before
    ([[0.0, 0.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]),    # or after
    ([[0.0, 0.0], [0.5, 0.5]], [[0.0, 0.0], [0.9, 0.2]]),    # extents below one pixel still count
])
def test_recrop_of_degenerate_or_tiny_boxes(before, after):
    b, a = np.array(before), np.array(after)
    m = iu.recrop_matrix(b, a)
    if _box(b)[1] > 0 and _box(a)[1] > 0:
        ratio = _box(a)[1] / _box(b)[1]
        assert m[0, 0] == pytest.approx(1 / ratio)
    else:
        assert m.shape == (2, 3) and np.array_equal(m, np.eye(2, 3))


def test_warp_borders_and_sizes():
    img = np.arange(1, 1 + 6 * 8, dtype=np.uint8).reshape(6, 8)
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    out, pts = iu.warp_affine(img, np.array([[1.0, 2.0]]), shift)
    assert out.shape == (6, 8) and not out[:, :3].any() and np.array_equal(out[:, 3:], img[:, :5])
    assert pts.tolist() == [[4.0, 2.0]] and pts.dtype == np.float32
    out, _ = iu.warp_affine(img, np.zeros((1, 2)), shift, border="replicate")
    assert np.array_equal(out[:, :3], np.repeat(img[:, :1], 3, axis=1))
    out, _ = iu.warp_affine(np.dstack([img] * 3), np.zeros((1, 2)), np.eye(2, 3, dtype=np.float32), size=(5, 4))
    assert out.shape == (4, 5, 3) and np.array_equal(out[..., 0], img[:4, :5])   # size is (width, height)
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])                           # bilinear
    out, _ = iu.warp_affine(np.array([[0, 100, 200, 200]], np.uint8), np.zeros((1, 2)), half)
    assert out.tolist() == [[0, 50, 150, 200]]
    with pytest.raises(ValueError) as err:
        iu.warp_affine(img, np.zeros((1, 2)), shift, border="reflect")
    assert str(err.value) == "border 'reflect': choose one of ['constant', 'replicate']"


def test_jitter_preset():
    cfg = iu.AugmentConfig.jitter(p_gamma=0.0)
    assert cfg.scale_range == (0.9, 1.1) and cfg.max_shift == 0.05 and cfg.p_gamma == 0.0
    assert iu.AugmentConfig.jitter(max_shift=0.1).max_shift == 0.1


# ---------------------------------------------------------------------------- random draws replayed


def test_draw_affine_rotation_then_recrop_replayed():
    cfg = iu.AugmentConfig()
    ref = np.random.default_rng(1).uniform(10, 50, (12, 2))
    m = iu._draw_affine(np.random.default_rng(RNG_SEED), cfg, (60, 80), ref)
    twin = np.random.default_rng(RNG_SEED)
    angle = twin.uniform(-0.5, 0.5)
    rot = iu.affine_matrix((79 / 2, 59 / 2), angle)
    want = iu.compose_affine(iu.recrop_matrix(ref, iu.apply_affine(ref, rot)), rot)
    np.testing.assert_allclose(m, want, atol=1e-12)
    assert np.degrees(np.arctan2(m[1, 0], m[0, 0])) == pytest.approx(-np.degrees(angle), abs=1e-9)


def test_draw_affine_without_rotation_draws_no_angle():
    cfg = iu.AugmentConfig(max_rotation=0.0, recrop=False, scale_range=(0.8, 1.2), max_shift=0.1)
    m = iu._draw_affine(np.random.default_rng(RNG_SEED), cfg, (60, 80), np.zeros((3, 2)))
    twin = np.random.default_rng(RNG_SEED)
    scale = twin.uniform(0.8, 1.2)                                # the first draw is the scale
    shift = twin.uniform(-0.1, 0.1, size=2) * np.array([80, 60])
    want = iu.affine_matrix((79 / 2, 59 / 2), 0.0, scale, shift)
    np.testing.assert_allclose(m, want, atol=1e-12)


def test_draw_affine_fixed_scale_and_shift_only():
    ref = np.zeros((3, 2))
    for scale in (1.25, 2.0):
        rng = np.random.default_rng(RNG_SEED)
        m = iu._draw_affine(rng, iu.AugmentConfig(max_rotation=0.0, recrop=False, scale_range=(scale, scale)),
                            (60, 80), ref)
        np.testing.assert_allclose(m, iu.affine_matrix((39.5, 29.5), 0.0, scale), atol=1e-12)
        assert rng.random() == np.random.default_rng(RNG_SEED).random()     # a fixed scale draws nothing
    rng = np.random.default_rng(RNG_SEED)
    m = iu._draw_affine(rng, iu.AugmentConfig(max_rotation=0.0, recrop=False), (60, 80), ref)
    assert np.array_equal(m, np.eye(2, 3)) and rng.random() == np.random.default_rng(RNG_SEED).random()
    m = iu._draw_affine(np.random.default_rng(RNG_SEED), iu.AugmentConfig(
        max_rotation=0.0, recrop=False, max_shift=0.05), (60, 80), ref)
    shift = np.random.default_rng(RNG_SEED).uniform(-0.05, 0.05, size=2) * np.array([80, 60])
    np.testing.assert_allclose(m, [[1, 0, shift[0]], [0, 1, shift[1]]], atol=1e-12)


def test_draw_affine_angles_span_both_signs_within_the_bound():
    cfg = iu.AugmentConfig(recrop=False)
    angles = [np.arctan2(iu._draw_affine(np.random.default_rng(s), cfg, (60, 80), np.zeros((2, 2)))[1, 0],
                         1.0) for s in range(200)]
    assert min(angles) < -0.4 and max(angles) > 0.4 and max(np.abs(angles)) <= 0.5 + 1e-9


def test_occlusion_replayed():
    img = _image(40, 50)
    out = iu.random_occlusion(img, np.random.default_rng(RNG_SEED), (0.2, 0.5))
    twin = np.random.default_rng(RNG_SEED)
    rw = max(1, int(round(twin.uniform(0.2, 0.5) * 50)))
    rh = max(1, int(round(twin.uniform(0.2, 0.5) * 40)))
    x, y = int(twin.integers(0, 50 - rw + 1)), int(twin.integers(0, 40 - rh + 1))
    colour = twin.integers(0, 256, size=3).astype(np.uint8)
    want = img.copy()
    want[y:y + rh, x:x + rw] = colour
    assert np.array_equal(out, want) and not np.array_equal(img, want)
    grey = img[..., 0]
    out = iu.random_occlusion(grey, np.random.default_rng(RNG_SEED), (0.2, 0.5))
    twin = np.random.default_rng(RNG_SEED)
    rw = max(1, int(round(twin.uniform(0.2, 0.5) * 50)))
    rh = max(1, int(round(twin.uniform(0.2, 0.5) * 40)))
    x, y = int(twin.integers(0, 50 - rw + 1)), int(twin.integers(0, 40 - rh + 1))
    want = grey.copy()
    want[y:y + rh, x:x + rw] = twin.integers(0, 256)
    assert np.array_equal(out, want)


def test_occlusion_rectangles_stay_inside_and_cover_the_range():
    img = np.zeros((20, 30, 3), np.uint8)
    seen_x, seen_colour = set(), set()
    for s in range(300):
        out = iu.random_occlusion(img, np.random.default_rng(s), (0.1, 0.4))
        ys, xs = np.nonzero(out.any(-1))
        if xs.size:
            seen_x.add(int(xs.min()))
            assert xs.max() - xs.min() + 1 <= round(0.4 * 30) and ys.max() - ys.min() + 1 <= round(0.4 * 20)
        seen_colour |= set(out.reshape(-1, 3).max(0).tolist())
    assert 0 in seen_x and max(seen_x) >= 24                     # from the left edge to the right one
    assert min(seen_colour) < 20 and max(seen_colour) > 235
    tiny = iu.random_occlusion(np.zeros((4, 4), np.uint8) + 9, np.random.default_rng(0), (0.01, 0.01))
    assert (tiny != 9).sum() <= 1                                # at least one pixel wide and high
    for s in range(20):
        full = iu.random_occlusion(np.zeros((4, 5), np.uint8) + 1, np.random.default_rng(s), (1.0, 1.0))
        assert len(np.unique(full)) == 1                         # the whole image: one colour
    for s in range(300):                                         # 6 x 4 px, never cut by the edge
        out = iu.random_occlusion(np.zeros((20, 30), np.uint8), np.random.default_rng(s), (0.2, 0.2))
        cols = np.nonzero((out != 0).any(0))[0]
        rows = np.nonzero((out != 0).any(1))[0]
        if cols.size:                                            # colour 0 leaves no trace
            assert cols.size == 6 and rows.size == 4, s


def _twin_augment(img, pts, seed, cfg, perm=None, flip=None, rng=None):
    """augment_sample's documented order of draws, step by step, with a twin generator."""
    rng = np.random.default_rng(seed) if rng is None else rng
    h, w = img.shape[:2]
    if flip is None:
        flip = cfg.p_flip > 0 and rng.random() < cfg.p_flip
    if perm is not None and flip:
        img, pts = iu.flip_horizontal(img, pts, perm)
    if cfg.p_affine > 0 and rng.random() < cfg.p_affine:
        m = iu._draw_affine(rng, cfg, (h, w), pts.reshape(-1, pts.shape[-2], 2)[0])
        img, pts = iu.warp_affine(img, pts, m, border=cfg.border)
    if cfg.p_gamma > 0 and rng.random() < cfg.p_gamma:
        darken = rng.random() < cfg.p_gamma_darken
        g = rng.uniform(*(cfg.gamma_darken if darken else cfg.gamma_brighten))
        img = iu.adjust_gamma(img, 1.0 / g)
    if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
        img = iu.salt_and_pepper(img, rng.uniform(*cfg.noise_range), rng)
    if cfg.p_median > 0 and rng.random() < cfg.p_median:
        img = iu.median_blur(img, int(rng.choice(cfg.median_ksizes)))
    if cfg.p_gaussian > 0 and rng.random() < cfg.p_gaussian:
        img = iu.gaussian_blur(img, rng.uniform(*cfg.gaussian_sigma))
    if cfg.p_occlusion > 0 and rng.random() < cfg.p_occlusion:
        img = iu.random_occlusion(img, rng, cfg.occlusion_size)
    return img, pts


NONE = dict(p_flip=0.0, p_affine=0.0, p_gamma=0.0, p_noise=0.0, p_median=0.0, p_gaussian=0.0, p_occlusion=0.0)


@pytest.mark.parametrize("on", [
    {}, {"p_gamma": 1.0}, {"p_gamma": 1.0, "p_gamma_darken": 0.0}, {"p_gamma": 1.0, "p_gamma_darken": 1.0},
    {"p_noise": 1.0}, {"p_median": 1.0, "median_ksizes": (3, 7)}, {"p_gaussian": 1.0},
    {"p_occlusion": 1.0}, {"p_occlusion": 1.0, "occlusion_size": (0.5, 0.6)},
    {"p_gaussian": 1.0, "p_occlusion": 1.0}, {"p_noise": 1.0, "p_occlusion": 1.0},
    {"p_median": 1.0, "p_gaussian": 1.0}, {"p_gamma": 1.0, "p_noise": 1.0},
    {"p_affine": 1.0, "max_rotation": 0.3}, {"p_affine": 1.0, "p_noise": 1.0},
    {"p_flip": 1.0, "p_gamma": 1.0},
])
def test_each_step_runs_exactly_when_drawn(on):
    cfg = iu.AugmentConfig(**{**NONE, **on})
    img = _image(40, 48)
    pts = np.random.default_rng(2).uniform(12, 30, (2, 5, 2)).astype(np.float32)
    perm = [1, 0, 2, 4, 3]
    for seed in range(4):
        got_img, got_pts = iu.augment_sample(img, pts, np.random.default_rng(seed), cfg, perm)
        want_img, want_pts = _twin_augment(img, pts, seed, cfg, perm)
        assert got_img.dtype == np.uint8 and got_pts.dtype == np.float32
        assert np.array_equal(got_img, want_img), (on, seed)
        rng, twin = np.random.default_rng(seed), np.random.default_rng(seed)
        iu.augment_sample(img, pts, rng, cfg, perm)
        _twin_augment(img, pts, seed, cfg, perm, rng=twin)
        assert rng.random() == twin.random(), (on, seed)                 # the same number of draws
        np.testing.assert_array_equal(got_pts, want_pts.astype(np.float32))
    if not on:
        assert np.array_equal(iu.augment_sample(img, pts, np.random.default_rng(0), cfg, perm)[0], img)
        out = iu.augment_sample(img.astype(np.float64) + 0.7, pts, np.random.default_rng(0), cfg, perm)[0]
        assert out.dtype == np.uint8 and np.array_equal(out, img)       # uint8 whatever comes in


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_probabilities_are_the_share_of_draws(p):
    cfg = iu.AugmentConfig(**{**NONE, "p_gamma": p, "gamma_darken": (0.5, 0.5), "gamma_brighten": (0.5, 0.5)})
    img = np.full((4, 4, 3), 100, np.uint8)
    changed = [not np.array_equal(iu.augment_sample(img, np.zeros((3, 2)), np.random.default_rng(s), cfg)[0], img)
               for s in range(400)]
    assert abs(np.mean(changed) - p) < 0.08


def test_flip_is_forced_drawn_or_skipped_without_a_permutation():
    img = _image(20, 30)
    pts = np.array([[3.0, 4.0], [20.0, 5.0]], np.float32)
    cfg = iu.AugmentConfig(**NONE)
    out, p, par = iu.augment_sample(img, pts, np.random.default_rng(0), cfg, [1, 0], return_params=True, flip=True)
    assert par["flipped"] and np.array_equal(out, img[:, ::-1]) and p.tolist() == [[9.0, 5.0], [26.0, 4.0]]
    assert np.array_equal(par["matrix"], np.eye(2, 3))
    out, p, par = iu.augment_sample(img, pts, np.random.default_rng(0), cfg, None, return_params=True, flip=True)
    assert not par["flipped"] and np.array_equal(out, img)
    cfg = iu.AugmentConfig(**{**NONE, "p_flip": 1.0})
    assert iu.augment_sample(img, pts, np.random.default_rng(0), cfg, [1, 0], return_params=True)[2]["flipped"]
    cfg = iu.AugmentConfig(**{**NONE, "p_flip": 0.0, "p_gamma": 1.0})
    got = iu.augment_sample(img, pts, np.random.default_rng(0), cfg, [1, 0], return_params=True)
    assert not got[2]["flipped"]
    assert np.array_equal(got[0], _twin_augment(img, pts, 0, cfg, [1, 0])[0])   # p_flip 0 draws nothing


def test_the_affine_keeps_every_point_inside_the_image():
    """Points near the border and a large rotation: the accepted draw keeps them all in [0, W-1] x
    [0, H-1]; the returned matrix is the one applied (identity when no draw is accepted)."""
    img = _image(30, 40)
    pts = np.array([[[0.5, 0.5], [39.0, 1.0], [20.0, 29.0], [1.0, 28.5]]], np.float32)
    cfg = iu.AugmentConfig(**{**NONE, "p_affine": 1.0, "max_rotation": 0.6, "recrop": False})
    moved_any = False
    for s in range(40):
        out, p, par = iu.augment_sample(img, pts, np.random.default_rng(s), cfg, return_params=True)
        assert (p >= 0).all() and (p[..., 0] <= 39).all() and (p[..., 1] <= 29).all()
        np.testing.assert_allclose(p, iu.apply_affine(pts, par["matrix"]), atol=1e-5)
        moved_any |= not np.allclose(par["matrix"], np.eye(2, 3))
    assert moved_any
    loose = iu.AugmentConfig(**{**NONE, "p_affine": 1.0, "max_rotation": 0.6, "recrop": False, "keep_inside": False})
    outside = [iu.augment_sample(img, pts, np.random.default_rng(s), loose)[1] for s in range(40)]
    assert any((p < 0).any() or (p[..., 0] > 39).any() or (p[..., 1] > 29).any() for p in outside)


def test_ten_tries_then_no_affine():
    """Points on all four corners: every rotation moves one outside; after 10 draws the face is
    kept as it is, and exactly 1 + 10 numbers were drawn."""
    img = _image(30, 40)
    pts = np.array([[0.0, 0.0], [39.0, 0.0], [0.0, 29.0], [39.0, 29.0]], np.float32)
    cfg = iu.AugmentConfig(**{**NONE, "p_affine": 1.0, "max_rotation": 0.5, "recrop": False})
    rng = np.random.default_rng(4)
    out, p, par = iu.augment_sample(img, pts, rng, cfg, return_params=True)
    assert np.array_equal(par["matrix"], np.eye(2, 3)) and np.array_equal(out, img) and p.tolist() == pts.tolist()
    twin = np.random.default_rng(4)
    twin.random(11)
    assert rng.random() == twin.random()


def test_keep_inside_bounds_each_axis_separately():
    """A tall image: x may not pass W - 1 even where y could (x and y limits not swapped)."""
    img = _image(80, 20)
    pts = np.array([[10.0, 10.0], [19.0, 70.0]], np.float32)
    cfg = iu.AugmentConfig(**{**NONE, "p_affine": 1.0, "max_rotation": 0.3, "recrop": False})
    accepted = 0
    for s in range(30):
        p, par = iu.augment_sample(img, pts, np.random.default_rng(s), cfg, return_params=True)[1:]
        assert (p >= 0).all() and (p[:, 0] <= 19).all() and (p[:, 1] <= 79).all()
        accepted += not np.allclose(par["matrix"], np.eye(2, 3))
    assert accepted > 0                                        # y beyond W - 1 is fine in a tall image
    wide = _image(20, 80)
    pts = np.array([[10.0, 10.0], [70.0, 19.0]], np.float32)
    for s in range(30):
        p = iu.augment_sample(wide, pts, np.random.default_rng(s), cfg)[1]
        assert (p >= 0).all() and (p[:, 0] <= 79).all() and (p[:, 1] <= 19).all()


def test_points_exactly_on_the_border_are_inside():
    img = _image(30, 40)
    pts = np.array([[0.0, 0.0], [39.0, 29.0]], np.float32)
    cfg = iu.AugmentConfig(**{**NONE, "p_affine": 1.0, "max_rotation": 0.0, "recrop": False,
                              "scale_range": (1.0, 1.0)})
    out, p, par = iu.augment_sample(img, pts, np.random.default_rng(0), cfg, return_params=True)
    assert p.tolist() == pts.tolist() and np.array_equal(out, img)


# ---------------------------------------------------------------------------- drawing


def test_dots_are_drawn_where_the_points_are_in_the_given_colour():
    img = np.zeros((40, 60, 3), np.uint8)
    out = iu.draw_landmarks(img, np.array([[10.0, 20.0], [45.25, 5.75]]), color=(10, 200, 30), radius=2)
    assert out[20, 10].tolist() == [10, 200, 30] and out[6, 45].tolist() == [10, 200, 30]
    assert not img.any() and out[30:, :].sum() == 0 and out[:, 25:40].sum() == 0
    assert out[20, 14].sum() == 0 and out[24, 10].sum() == 0                # radius 2: not 4 px away


def test_default_radius_grows_with_the_image():
    for side, radius in ((100, 1), (300, 2), (600, 4), (75, 1), (225, 2)):
        out = iu.draw_landmarks(np.zeros((side, side), np.uint8), [[side // 2, side // 2]], color=255)
        row = out[side // 2, :, 0]
        assert out.shape == (side, side, 3) and out.dtype == np.uint8
        width = int((row == 255).sum())
        assert 2 * radius - 1 <= width <= 2 * radius + 1, (side, width)
    for side, radius in ((224, 1), (225, 2), (374, 2), (376, 3)):    # round(side / 150)
        img = np.zeros((side, side), np.uint8)
        assert np.array_equal(iu.draw_landmarks(img, [[100.0, 100.0]]),
                              iu.draw_landmarks(img, [[100.0, 100.0]], radius=radius)), side
    tall = iu.draw_landmarks(np.zeros((600, 3), np.uint8), [[1, 300]], color=255)    # the larger side
    assert (tall[:, 1, 0] == 255).sum() >= 7


def test_grey_scalar_colour_and_points_not_finite():
    out = iu.draw_landmarks(np.zeros((20, 20), np.uint8), [[np.nan, 3.0], [5.0, 5.0], [np.inf, 1.0], [12.0, 12.0]],
                            color=77, radius=1)
    assert out[5, 5].tolist() == [77, 77, 77] and out[12, 12].tolist() == [77, 77, 77]   # after a nan: drawn
    out = iu.draw_landmarks(np.zeros((20, 20, 3), np.float64) + 3.9, np.array([[[5.0, 5.0]], [[9.0, 9.0]]]), radius=1)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [3, 3, 3]
    assert out[5, 5].tolist() == [0, 255, 0] and out[9, 9].tolist() == [0, 255, 0]


def test_dots_are_placed_to_a_sixteenth_of_a_pixel():
    img = np.zeros((20, 20), np.uint8)
    at = iu.draw_landmarks(img, [[10.0, 10.0]], color=255, radius=2)
    assert np.array_equal(iu.draw_landmarks(img, [[10.03, 9.97]], color=255, radius=2), at)
    assert not np.array_equal(iu.draw_landmarks(img, [[10.0625, 10.0]], color=255, radius=2), at)


def test_sub_pixel_dots_and_anti_aliasing():
    out = iu.draw_landmarks(np.zeros((20, 20), np.uint8), [[10.5, 10.0]], color=255, radius=1, thickness=-1)
    row = out[10, :, 0].astype(int)
    assert row[10] > 0 and row[11] > 0 and row[10] == row[11]                       # centred between 10 and 11
    assert 0 < row[9] < 255 or 0 < row[12] < 255                                     # anti-aliased edge


def test_float32_points_are_handled_in_float64():
    """recrop_matrix and augment_sample work on the float64 values of float32 points: the same
    matrix and the same points as for those values given in float64."""
    rng = np.random.default_rng(5)
    before = rng.uniform(0, 300, (68, 2)).astype(np.float32) + np.float32(0.1)
    after = iu.apply_affine(before, iu.affine_matrix((150.0, 150.0), 0.3, 1.1))
    assert np.array_equal(iu.recrop_matrix(before, after),
                          iu.recrop_matrix(before.astype(np.float64), after.astype(np.float64)))
    pts64 = rng.uniform(20, 28, (2, 68, 2))                        # not float32 values
    cfg = iu.AugmentConfig(**{**NONE, "p_affine": 1.0})
    img = _image(48, 48)
    a = iu.augment_sample(img, pts64, np.random.default_rng(1), cfg, return_params=True)
    b = iu.augment_sample(img, pts64.astype(np.float32), np.random.default_rng(1), cfg, return_params=True)
    assert np.array_equal(a[2]["matrix"], b[2]["matrix"]) and np.array_equal(a[1], b[1])
