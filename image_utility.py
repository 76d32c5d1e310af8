"""Pure geometry and augmentation on numpy arrays (OpenCV), and drawing.

Conventions (docs/ARCHITECTURE.md):
* landmarks in pixels are float32 (N, 2), 0-based, x right, y down; pixel i has its centre at i;
* a square crop box is (x0, y0, side) in original pixels; crop pixel c of a crop of size S maps to
  original pixel (x0, y0) + c * side / S, and no half-pixel shift is applied anywhere;
* normalised landmarks: v = (S/2 - c) / S, inverse c = S/2 - S v (METHOD.md section 4);
* mirroring maps x to W - 1 - x, then re-indexes the points with DatasetInfo.flip_permutation.

Every random function takes a `np.random.Generator`; the same seed gives the same result. Functions
that accept landmarks accept any array of shape (..., N, 2), so several target arrays of one face
(ground truth, soft landmarks, teacher predictions) can be moved by exactly the same transform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

# ----------------------------------------------------------------------------------------------
# Boxes, crops and coordinate frames
# ----------------------------------------------------------------------------------------------


def square_box_from_landmarks(landmarks_px: np.ndarray, margin: float = 0.25) -> tuple:
    """Square (x0, y0, side) centred on the points' bounding box; side = (1 + margin) * max extent."""
    pts = np.asarray(landmarks_px, dtype=np.float64).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return _square_around((lo + hi) / 2.0, float((hi - lo).max()), margin)


def square_box_from_xywh(box_xywh, margin: float = 0.25) -> tuple:
    """Square (x0, y0, side) centred on a dataset box (x, y, w, h); side = (1 + margin) * max(w, h)."""
    x, y, w, h = [float(v) for v in np.asarray(box_xywh, dtype=np.float64).reshape(4)]
    return _square_around(np.array([x + w / 2.0, y + h / 2.0]), max(w, h), margin)


def _square_around(centre: np.ndarray, extent: float, margin: float) -> tuple:
    side = max((1.0 + float(margin)) * float(extent), 1.0)
    return (float(centre[0] - side / 2.0), float(centre[1] - side / 2.0), float(side))


def crop_matrix(box, size: int) -> np.ndarray:
    """2x3 affine matrix taking original pixels to crop pixels for a square box (x0, y0, side)."""
    x0, y0, side = [float(v) for v in box]
    s = float(size) / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)


def crop_and_resize(image: np.ndarray, box, size: int) -> np.ndarray:
    """Cut the square `box` (x0, y0, side) out of `image` and resize it to (size, size).

    The aspect ratio is preserved (the box is square); the part of the box outside the image is
    filled with zeros. Down-scaling is anti-aliased by a Gaussian pre-blur of the source region
    (symmetric, so landmark positions are not shifted).
    """
    image = np.asarray(image)
    size = int(size)
    x0, y0, side = [float(v) for v in box]
    h, w = image.shape[:2]
    # Work on the part of the image the box touches (plus a border for interpolation and blur).
    scale = size / side
    pad = int(np.ceil(3.0 / scale)) + 2
    rx0, ry0 = max(int(np.floor(x0)) - pad, 0), max(int(np.floor(y0)) - pad, 0)
    rx1, ry1 = min(int(np.ceil(x0 + side)) + pad, w), min(int(np.ceil(y0 + side)) + pad, h)
    shape = (size, size) + image.shape[2:]
    if rx1 <= rx0 or ry1 <= ry0:
        return np.zeros(shape, dtype=image.dtype)
    roi = image[ry0:ry1, rx0:rx1]
    if scale < 0.67:
        sigma = 0.45 / scale
        roi = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, sigmaY=sigma)
    m = crop_matrix((x0 - rx0, y0 - ry0, side), size)
    out = cv2.warpAffine(np.ascontiguousarray(roi), m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(shape)


FAST_CROP_SIGMA = 0.55  # crop pixels: chosen on the real faces' landmark shift (crop_speed.md)
FAST_CROP_STAGE2 = 1.25  # the resize road's second shrink (stage-1 samples per crop pixel): chosen
                         # by time and the real faces' landmark shift (bench/speed/crop_speed.md)
_ROAD_MIN_SHRINK = 2.0  # the resize road takes upright crops shrinking the face at least this much
_ROAD_LEAD = 4          # stage-1 samples before the crop's first (its offset's granularity: 1/4)


def fast_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The inference crop: the (size, size) image of the 2x3 affine `matrix` (image pixels -> crop
    pixels, uniform scale, any rotation: crop_matrix or face_detection.rotated_crop_matrix), zeros
    outside the image, at a cost that does not grow with the face (bench/speed/crop_speed.py).

    An upright crop shrinking the face by r = source pixels per crop pixel >= 2 (inference.crop_face's
    usual case) takes the resize road: two cv2.resize
    INTER_LINEAR calls, the first from the image straight to about FAST_CROP_STAGE2 x the crop's
    size at a factor chosen so that its samples carry the crop's sub-pixel offset
    (_resize_road_axis), the second at the remaining factor, then the crop Gaussian below. Each
    resize reads 4 source pixels per output pixel, so the cost follows the output, not the face.
    A region the image clips (a box at or over its edge) takes it too: the stage-1 samples
    are then the image's bilinear samples with zero outside, as cv2.warpAffine's BORDER_CONSTANT
    gives the training crop and the warp road (_road_stage1).

    Otherwise (turned crops, r < 2, a stage-1 factor off its aim) the warp road: when r >= 2 the
    region under the crop is first shrunk by the even integer k = 2 floor(r / 2) with cv2.resize
    INTER_LINEAR (an exact 1/k resize: each pixel is the mean of the 2 x 2 source pixels at the
    centre of its k x k block, centre k d + (k - 1) / 2, so only 4 of every k^2 pixels are read),
    then the crop is warped from it bilinearly at r / k in [1, 2).

    Both roads blur the crop (Gaussian, sigma FAST_CROP_SIGMA crop pixels, where crop_and_resize
    blurs: r > 1 / 0.67). Training crops use crop_and_resize (Gaussian pre-blur, whole region
    read); the landmark shift between the two on the real faces is in bench/speed/crop_speed.md
    and pinned by tests/test_fast_crop.py."""
    image = np.asarray(image)
    size = int(size)
    # plain floats: this runs once a face, where numpy's per-call overhead would cost as much as
    # the resampling itself
    (a, b, c), (d, e, f) = np.asarray(matrix, dtype=np.float64).reshape(2, 3).tolist()
    if b == 0.0 and d == 0.0 and a == e and a > 0.0 and a <= 1.0 / _ROAD_MIN_SHRINK:
        out = _resize_road(image, -c / a, -f / a, 1.0 / a, size)
        if out is not None:
            return out.reshape((size, size) + image.shape[2:])
    return _warp_crop(image, (a, b, c, d, e, f), size)


def _warp_crop(image: np.ndarray, matrix6: tuple, size: int) -> np.ndarray:
    """fast_crop's warp road (the whole of fast_crop before the resize road): matrix6 = (a, b, c,
    d, e, f), the 2x3 matrix's entries as floats."""
    a, b, c, d, e, f = matrix6
    shape = (size, size) + image.shape[2:]
    h, w = image.shape[:2]
    det = a * e - b * d
    r = 1.0 / math.sqrt(abs(det))                                # source pixels per crop pixel
    k = 2 * int(r // 2.0) if r >= 2.0 else 1
    # the source points of the crop's corners (inverse affine), and the region they span
    xs, ys = [], []
    for u in (-0.5, size - 0.5):
        for v in (-0.5, size - 0.5):
            xs.append((e * (u - c) - b * (v - f)) / det)
            ys.append((a * (v - f) - d * (u - c)) / det)
    pad = 2 * k + 2
    rx0, ry0 = max(int(math.floor(min(xs))) - pad, 0), max(int(math.floor(min(ys))) - pad, 0)
    rx1, ry1 = min(int(math.ceil(max(xs))) + pad, w), min(int(math.ceil(max(ys))) + pad, h)
    if rx1 - rx0 < k or ry1 - ry0 < k:
        return np.zeros(shape, dtype=image.dtype)
    roi = image[ry0:ry1, rx0:rx1]
    c, f = c + a * rx0 + b * ry0, f + d * rx0 + e * ry0             # crop <- region
    if k > 1:
        hh, ww = (ry1 - ry0) // k * k, (rx1 - rx0) // k * k
        roi = cv2.resize(roi[:hh, :ww], (ww // k, hh // k), interpolation=cv2.INTER_LINEAR)
        # shrunk pixel q sits at region pixel k q + (k - 1) / 2
        half = (k - 1) / 2.0
        c, f = c + (a + b) * half, f + (d + e) * half
        a, b, d, e = a * k, b * k, d * k, e * k
    out = cv2.warpAffine(roi, np.array([[a, b, c], [d, e, f]]), (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if r * 0.67 > 1.0:      # crop_and_resize blurs when scale < 0.67: the same blur, on the crop
        out = cv2.GaussianBlur(out, (3, 3), sigmaX=FAST_CROP_SIGMA, sigmaY=FAST_CROP_SIGMA)
    return out.reshape(shape)


def _resize_road_axis(x0: float, r: float, size: int, extent: int):
    """One axis of fast_crop's resize road, where crop pixel c sits at source pixel x0 + c r.

    cv2.resize INTER_LINEAR at scale k (dsize from fx = 1 / k) puts output pixel q of a region
    starting at integer pixel i at i + (q + 0.5) k - 0.5. Two in a row, k1 from the image, then
    s2 = r / k1 from stage-1 sample `lead` on, put crop pixel c at
    i + (lead + (c + 0.5) s2) k1 - 0.5 = i + lead k1 + (c + 0.5) r - 0.5, which is x0 + c r when
    lead k1 = x0 + 0.5 - r / 2 - i: the sub-pixel offset goes into k1, within 0.5 / |lead| of the
    aim r / FAST_CROP_STAGE2.

    At the image's start, where no i >= 0 has a lead >= 1, the lead is negative, -m: the region
    starts m stage-1 samples after the first one stage 2 reads, and _road_stage1 makes those m
    apart (the last one by one more small resize, the others lie a pixel or more outside the
    image: zero). At its end stage 1 reads up to the image's last pixel and the samples past it
    are zero. Zero outside the image, as cv2.warpAffine's BORDER_CONSTANT in crop_and_resize and
    the warp road. Returns (i, source pixels, k1, s2, lead, stage-1 samples stage 2 reads after
    the lead, whether the region is clipped: lead < 0 or cut at the end), or None."""
    e0 = x0 + 0.5 - 0.5 * r
    aim = r / FAST_CROP_STAGE2
    for lead in range(_ROAD_LEAD, 0, -1):
        i = int(round(e0 - lead * aim))
        if i >= 0:
            break
    else:
        lead = -max(1, int(math.ceil((-0.5 - e0) / aim)))
        i = max(int(round(e0 - lead * aim)), 0)
    k1 = (e0 - i) / lead
    if not 0.75 * aim <= k1 <= 1.5 * aim:
        return None
    if lead < -1 and i - 1.5 * k1 - 0.5 > -1.0:     # a sample made apart but not the last is inside
        return None
    s2 = r / k1
    n2 = int(math.ceil((size - 0.5) * s2 + 1.5)) + 1     # stage-1 samples stage 2 reads after the lead
    n = int(math.ceil((lead + n2 - 0.5) * k1 + 1.5)) + 1  # source pixels stage 1 reads
    clipped = lead < 0 or i + n > extent
    n = min(n, extent - i)
    if n < 2:
        return None
    return i, n, k1, s2, lead, n2, clipped


def _road_stage1(image: np.ndarray, ax, ay) -> np.ndarray:
    """The resize road's stage 1 for a region the image clips (_resize_road_axis): the (n2y, n2x)
    stage-1 samples stage 2 reads, each the bilinear sample of the image with zeros outside (as
    cv2.warpAffine's BORDER_CONSTANT). Per axis: the region's part (output sample q is stage-1
    sample q - lead), up to its last sample inside the image; the sample just before it (negative
    lead) and the one just after it, each from the 2 source pixels around it (zero outside) resized
    at 2 (p - floor(p)) + 1, which puts the output's first sample at p; none for a sample a pixel
    or more outside the image (zero)."""
    parts = []
    for (i, n, k1, _, lead, n2, _), extent in ((ay, image.shape[0]), (ax, image.shape[1])):
        # main part: stage-1 samples j in [max(-lead, 0), j1), at source i + (j + lead + 1/2) k1 - 1/2
        j1 = min(int(math.floor((extent - 0.5 - i) / k1 - 0.5)) + 1 - lead, n2)
        p = [(i, i + n, k1, lead, j1)]       # (source start, stop, factor, lead, stage-1 end)
        for j in (-lead - 1, j1):
            x = i + (j + lead + 0.5) * k1 - 0.5
            if 0 <= j < n2 and -1.0 < x < extent:
                s = int(math.floor(x))
                p.append((s, s + 2, 2.0 * (x - s) + 1.0, -j, j + 1))
        parts.append(p)
    n2y, n2x = ay[5], ax[5]
    buf = np.zeros((n2y, n2x) + image.shape[2:], dtype=image.dtype)
    h, w = image.shape[:2]
    for ya, yb, yk, yl, ye in parts[0]:
        for xa, xb, xk, xl, xe in parts[1]:
            src = image[max(ya, 0):min(yb, h), max(xa, 0):min(xb, w)]
            pads = (max(-ya, 0), max(yb - h, 0), max(-xa, 0), max(xb - w, 0))
            if any(pads):
                src = cv2.copyMakeBorder(src, *pads, cv2.BORDER_CONSTANT, value=0)
            out = cv2.resize(src, None, fx=1.0 / xk, fy=1.0 / yk, interpolation=cv2.INTER_LINEAR)
            out = out.reshape(out.shape[:2] + image.shape[2:])
            jy, jx = max(-yl, 0), max(-xl, 0)        # the part's first stage-1 sample ...
            qy, qx = jy + yl, jx + xl                # ... is its output sample q
            hy, hx = min(out.shape[0] - qy, ye - jy), min(out.shape[1] - qx, xe - jx)
            if hy > 0 and hx > 0:
                buf[jy:jy + hy, jx:jx + hx] = out[qy:qy + hy, qx:qx + hx]
    return buf


def _resize_road(image: np.ndarray, x0: float, y0: float, r: float, size: int):
    """fast_crop's resize road (upright box (x0, y0, r size)), or None."""
    h, w = image.shape[:2]
    ax, ay = _resize_road_axis(x0, r, size, w), _resize_road_axis(y0, r, size, h)
    if ax is None or ay is None:
        return None
    (ix, nx, kx, sx, lx, mx, cx), (iy, ny, ky, sy, ly, my, cy) = ax, ay
    if cx or cy:
        one, lx, ly = _road_stage1(image, ax, ay), 0, 0
    else:
        one = cv2.resize(image[iy:iy + ny, ix:ix + nx], None, fx=1.0 / kx, fy=1.0 / ky,
                         interpolation=cv2.INTER_LINEAR)
    two = cv2.resize(one[ly:ly + my, lx:lx + mx], None, fx=1.0 / sx, fy=1.0 / sy,
                     interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(two[:size, :size], (3, 3), sigmaX=FAST_CROP_SIGMA, sigmaY=FAST_CROP_SIGMA)


def _box_origin_side(box):
    """(x0, y0) and side of one box (3,) or of one box per face (M, 3), shaped to broadcast against
    landmarks (N, 2) or (M, N, 2)."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape[-1:] != (3,) or b.ndim > 2:
        raise ValueError(f"a crop box is (x0, y0, side) or (M, 3), got shape {b.shape}")
    if b.ndim == 2:
        b = b[:, None, :]
    return b[..., :2], b[..., 2:3]


def landmarks_to_crop(landmarks_px: np.ndarray, box, size: int) -> np.ndarray:
    """Original-image pixels -> crop pixels: (p - (x0, y0)) * size / side. One box (3,) for any
    (..., N, 2), or one box per face (M, 3) for (M, N, 2)."""
    origin, side = _box_origin_side(box)
    pts = np.asarray(landmarks_px, dtype=np.float64)
    return ((pts - origin) * (float(size) / side)).astype(np.float32)


def crop_to_original(landmarks_crop: np.ndarray, box, size: int) -> np.ndarray:
    """Crop pixels -> original-image pixels: (x0, y0) + c * side / size (inverse of
    landmarks_to_crop; the same box shapes)."""
    origin, side = _box_origin_side(box)
    pts = np.asarray(landmarks_crop, dtype=np.float64)
    return (pts * (side / float(size)) + origin).astype(np.float32)


def normalize_landmarks(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels -> normalised coordinates v = (S/2 - c) / S (METHOD.md section 4)."""
    s = float(size)
    return ((s / 2.0 - np.asarray(landmarks_px, dtype=np.float64)) / s).astype(np.float32)


def denormalize_landmarks(landmarks_norm: np.ndarray, size: int) -> np.ndarray:
    """Normalised coordinates -> crop pixels c = S/2 - S v."""
    s = float(size)
    return (s / 2.0 - s * np.asarray(landmarks_norm, dtype=np.float64)).astype(np.float32)


def apply_affine(landmarks_px: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points of shape (..., 2)."""
    pts = np.asarray(landmarks_px, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Geometric transforms (image and landmarks together)
# ----------------------------------------------------------------------------------------------


def flip_landmarks(landmarks_px: np.ndarray, width: int, flip_permutation: Sequence[int]) -> np.ndarray:
    """The points of an image `width` pixels wide after mirroring it left-right: x' = W - 1 - x, then
    re-indexed (left eye <-> right eye). (N, 2) or (..., N, 2); the permutation acts on the point axis.
    Its own inverse."""
    pts = np.array(landmarks_px, dtype=np.float32, copy=True)
    pts[..., 0] = (width - 1) - pts[..., 0]
    perm = np.asarray(flip_permutation, dtype=np.int64)
    if perm.shape[0] != pts.shape[-2]:
        raise ValueError(f"flip permutation has {perm.shape[0]} entries for {pts.shape[-2]} points")
    return pts[..., perm, :]


def flip_test_mean(plain_norm: np.ndarray, mirrored_norm: np.ndarray, size: int,
                   flip_permutation: Sequence[int]) -> np.ndarray:
    """The flip test (as HRNet-Facial and mmpose evaluate): normalised landmarks (..., N, 2) on a
    crop averaged with those on its mirror image, mirrored back and re-indexed with the layout's
    flip permutation."""
    back = normalize_landmarks(flip_landmarks(denormalize_landmarks(mirrored_norm, size), size,
                                              flip_permutation), size)
    return (0.5 * (np.asarray(plain_norm) + back)).astype(np.float32)


def flip_horizontal(image: np.ndarray, landmarks_px: np.ndarray, flip_permutation: Sequence[int]):
    """Mirror the image left-right and its points with it (flip_landmarks)."""
    image = np.asarray(image)
    return np.ascontiguousarray(image[:, ::-1]), flip_landmarks(landmarks_px, image.shape[1], flip_permutation)


def affine_matrix(center, angle_rad: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """2x3 matrix: rotate by angle_rad (counter-clockwise on screen) and scale about `center`, then shift."""
    cx, cy = float(center[0]), float(center[1])
    m = cv2.getRotationMatrix2D((cx, cy), float(np.degrees(angle_rad)), float(scale))
    m[:, 2] += np.asarray(shift, dtype=np.float64)
    return m


BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


def warp_affine(image: np.ndarray, landmarks_px: np.ndarray, matrix: np.ndarray,
                size: Optional[tuple] = None, border: str = "constant"):
    """Apply one 2x3 matrix to the image and to landmarks of shape (..., N, 2). Outside the source
    the image is `border`: "constant" (zeros) or "replicate" (the nearest edge pixel)."""
    if border not in BORDERS:
        raise ValueError(f"border {border!r}: choose one of {sorted(BORDERS)}")
    image = np.asarray(image)
    h, w = image.shape[:2]
    dsize = (w, h) if size is None else (int(size[0]), int(size[1]))
    out = cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64), dsize,
                         flags=cv2.INTER_LINEAR, borderMode=BORDERS[border], borderValue=0)
    return out.reshape((dsize[1], dsize[0]) + image.shape[2:]), apply_affine(landmarks_px, matrix)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix of `outer` applied after `inner`."""
    outer, inner = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    linear = outer[:, :2] @ inner[:, :2]
    return np.concatenate([linear, (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def recrop_matrix(points_before: np.ndarray, points_after: np.ndarray) -> np.ndarray:
    """2x3 matrix that re-crops an image whose points moved from `points_before` (N, 2) to
    `points_after` so that they sit in the new crop as they sat in the old one: their bounding box
    keeps its centre and its larger extent (the plain crop around the landmarks, redone after a
    rotation; the crop grows by the ratio of the extents)."""
    b0, b1 = np.asarray(points_before, np.float64), np.asarray(points_after, np.float64)
    ext0 = float((b0.max(axis=0) - b0.min(axis=0)).max())
    ext1 = float((b1.max(axis=0) - b1.min(axis=0)).max())
    if not (ext0 > 0 and ext1 > 0):
        return np.eye(2, 3)
    ratio = ext1 / ext0                                   # new crop side / old crop side
    centre0 = (b0.min(axis=0) + b0.max(axis=0)) / 2.0
    centre1 = (b1.min(axis=0) + b1.max(axis=0)) / 2.0
    origin = centre1 - centre0 * ratio                    # new crop's corner in the current frame
    return np.array([[1.0 / ratio, 0.0, -origin[0] / ratio], [0.0, 1.0 / ratio, -origin[1] / ratio]])


# ----------------------------------------------------------------------------------------------
# Photometric transforms (image only)
# ----------------------------------------------------------------------------------------------


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """out = 255 * (in / 255) ** gamma (gamma < 1 brightens). The original's gamma g is the
    exponent 1 / g (augment_sample)."""
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** float(gamma) + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.asarray(image, dtype=np.uint8), lut)


def salt_and_pepper(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction `amount` of the pixels to black or white (half each)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    mask = rng.random((h, w))
    out[mask < amount / 2.0] = 0
    out[(mask >= amount / 2.0) & (mask < amount)] = 255
    return out


def median_blur(image: np.ndarray, ksize: int = 3) -> np.ndarray:
    ksize = int(ksize) | 1
    return cv2.medianBlur(np.ascontiguousarray(image, dtype=np.uint8), ksize)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def random_occlusion(image: np.ndarray, rng: np.random.Generator, size_range=(0.1, 0.4)) -> np.ndarray:
    """Fill one random rectangle (sides in size_range x image side) with a random colour."""
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    rw = max(1, int(round(rng.uniform(*size_range) * w)))
    rh = max(1, int(round(rng.uniform(*size_range) * h)))
    x = int(rng.integers(0, max(w - rw, 0) + 1))
    y = int(rng.integers(0, max(h - rh, 0) + 1))
    colour = rng.integers(0, 256, size=out.shape[2:] if out.ndim == 3 else ()).astype(out.dtype)
    out[y:y + rh, x:x + rw] = colour
    return out


# ----------------------------------------------------------------------------------------------
# Combined augmentation
# ----------------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the augmentation; the defaults are the published recipe
    (METHOD.md section 6), applied to each augmented copy of a face:

    1. horizontal flip with landmark re-indexing: on every other offline copy (even copy index,
       `flip_every_other`), with probability p_flip where there is no copy index (online);
    2. rotation by a uniform angle in [-max_rotation, max_rotation] rad, edge-replicated border, then
       the crop around the landmarks redone as for the plain crop (`recrop`); no scale or shift;
    3. gamma with probability p_gamma: out = 255 (v / 255) ^ (1 / g), g drawn in gamma_darken with
       probability p_gamma_darken, else in gamma_brighten;
    4. salt-and-pepper noise with probability p_noise; median blur (kernel 5) with probability p_median.

    Options that are not the published recipe: scale and shift jitter (`AugmentConfig.jitter()`:
    scale 0.9-1.1, shift 5% of the side), Gaussian blur and synthetic occlusion (all off).
    """

    p_flip: float = 0.5                   # online (no copy index) only
    flip_every_other: bool = True         # offline copies: flip the even-indexed ones
    p_affine: float = 1.0
    max_rotation: float = 0.5             # radians
    scale_range: tuple = (1.0, 1.0)       # jitter option: (0.9, 1.1)
    max_shift: float = 0.0                # jitter option: 0.05 (fraction of the image side)
    recrop: bool = True                   # re-crop around the rotated landmarks (the plain crop's framing)
    border: str = "replicate"             # "replicate" (the original's edge mode) or "constant" (zeros)
    keep_inside: bool = True              # retry the affine draw so every point stays in the image
    p_gamma: float = 0.5
    p_gamma_darken: float = 2.0 / 3.0
    gamma_darken: tuple = (0.3, 0.8)      # the original's g < 1: out = (v/255)^(1/g) darkens
    gamma_brighten: tuple = (1.5, 3.5)
    p_noise: float = 0.4
    noise_range: tuple = (0.005, 0.03)    # fraction of pixels set to 0 or 255 (METHOD.md gives none)
    p_median: float = 0.5
    median_ksizes: tuple = (5,)
    p_gaussian: float = 0.0
    gaussian_sigma: tuple = (0.5, 1.5)
    p_occlusion: float = 0.0
    occlusion_size: tuple = (0.1, 0.4)

    @classmethod
    def jitter(cls, **changes) -> "AugmentConfig":
        """The published recipe plus scale (0.9-1.1) and shift (up to 5% of the side) jitter."""
        return cls(**{"scale_range": (0.9, 1.1), "max_shift": 0.05, **changes})


def _draw_affine(rng: np.random.Generator, cfg: AugmentConfig, size_hw: tuple,
                 reference: np.ndarray) -> np.ndarray:
    """One random 2x3 matrix: rotation about the image centre, the re-crop around the rotated
    `reference` points (N, 2) if cfg.recrop, then the scale / shift jitter."""
    h, w = size_hw
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation) if cfg.max_rotation > 0 else 0.0
    m = affine_matrix(centre, angle)
    if cfg.recrop:
        m = compose_affine(recrop_matrix(reference, apply_affine(reference, m)), m)
    lo, hi = cfg.scale_range
    scale = rng.uniform(lo, hi) if hi > lo else float(lo)
    if scale != 1.0 or cfg.max_shift > 0:
        shift = (0.0, 0.0)
        if cfg.max_shift > 0:
            shift = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * np.array([w, h])
        m = compose_affine(affine_matrix(centre, 0.0, scale, shift), m)
    return m


def augment_sample(image: np.ndarray, landmarks_px: np.ndarray, rng: np.random.Generator,
                   cfg: Optional[AugmentConfig] = None, flip_permutation: Optional[Sequence[int]] = None,
                   return_params: bool = False, flip: Optional[bool] = None):
    """Flip, affine (rotation, re-crop, optional scale / shift), gamma, noise, blurs and occlusion.

    `landmarks_px` may be (N, 2) or (..., N, 2): every point set gets the same geometric transform;
    the first set (the ground truth by convention) frames the re-crop. `flip`: True / False forces
    the flip (offline copies: every other one), None draws it with cfg.p_flip. Without a flip
    permutation the flip is skipped (mirroring without re-indexing would swap sides).
    Returns (image, landmarks) or, with return_params, (image, landmarks, {"flipped", "matrix"}).
    """
    cfg = cfg or AugmentConfig()
    img = np.asarray(image)
    pts = np.asarray(landmarks_px, dtype=np.float32)
    h, w = img.shape[:2]
    flipped = False
    if flip is None:
        flip = cfg.p_flip > 0 and rng.random() < cfg.p_flip
    if flip_permutation is not None and flip:
        img, pts = flip_horizontal(img, pts, flip_permutation)
        flipped = True
    matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if cfg.p_affine > 0 and rng.random() < cfg.p_affine:
        reference = pts.reshape(-1, pts.shape[-2], 2)[0]
        for _ in range(10):
            m = _draw_affine(rng, cfg, (h, w), reference)
            moved = apply_affine(pts, m)
            if not cfg.keep_inside or (np.all(moved >= 0) and np.all(moved[..., 0] <= w - 1)
                                       and np.all(moved[..., 1] <= h - 1)):
                matrix = m
                break
        if not np.allclose(matrix, np.eye(2, 3)):
            img, pts = warp_affine(img, pts, matrix, border=cfg.border)
    if cfg.p_gamma > 0 and rng.random() < cfg.p_gamma:
        darken = rng.random() < cfg.p_gamma_darken
        g = rng.uniform(*(cfg.gamma_darken if darken else cfg.gamma_brighten))
        img = adjust_gamma(img, 1.0 / g)          # the original's convention: (v/255)^(1/g)
    if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
        img = salt_and_pepper(img, rng.uniform(*cfg.noise_range), rng)
    if cfg.p_median > 0 and rng.random() < cfg.p_median:
        img = median_blur(img, int(rng.choice(cfg.median_ksizes)))
    if cfg.p_gaussian > 0 and rng.random() < cfg.p_gaussian:
        img = gaussian_blur(img, rng.uniform(*cfg.gaussian_sigma))
    if cfg.p_occlusion > 0 and rng.random() < cfg.p_occlusion:
        img = random_occlusion(img, rng, cfg.occlusion_size)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    pts = pts.astype(np.float32)
    if return_params:
        return img, pts, {"flipped": flipped, "matrix": matrix}
    return img, pts


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def draw_landmarks(image: np.ndarray, landmarks_px: np.ndarray, color=(0, 255, 0),
                   radius: Optional[int] = None, thickness: int = -1) -> np.ndarray:
    """A copy of `image` (uint8, grey or RGB) with a filled dot at every landmark (sub-pixel placed).

    `color` is in the image's channel order (RGB for this project's images). The default radius grows
    with the image (1 px per 150 px of the larger side, at least 1).
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    if radius is None:
        radius = max(1, int(round(max(out.shape[:2]) / 150.0)))
    shift = 4
    f = 1 << shift
    col = tuple(int(c) for c in (color if np.ndim(color) else (color,) * 3))
    for x, y in np.asarray(landmarks_px, dtype=np.float64).reshape(-1, 2):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cv2.circle(out, (int(round(x * f)), int(round(y * f))), int(radius) * f, col,
                   thickness=thickness, lineType=cv2.LINE_AA, shift=shift)
    return out
