"""Synthetic faces with exact ground truth, written in the official 300W / WFLW / COFW formats.

The real archives are not shipped with the repository; this module renders the embedded default
data so that the official readers and the whole pipeline run on it exactly as on real data.

Face model
----------
One procedural 3D face (units: distance between the outer eye corners = 1; x to the image right,
y down, z towards the camera; eye line at y = 0, face centre x = 0):

* a frontal outline (forehead arc + a super-elliptic jaw) and a depth field over it
  (a dome that falls back to the rim, plus nose, alae, eye sockets, lips, chin and cheek bumps);
* feature curves drawn on that surface: brows (upper and lower contour), eyelids, irises/pupils,
  nose bridge and base, outer and inner lips;
* identity modes (face width/length, jaw squareness, eye size/spacing, nose length/width, mouth
  width, lip thickness, brow shape) and expression modes (mouth open, smile, brow raise, eye
  openness, gaze).

The 68-point (iBUG 300-W), 98-point (WFLW) and 29-point (COFW) layouts are all sampled from the
same curves (`layouts_3d`), so e.g. 68-pt 36/45 == WFLW 60/72 == COFW 8/9 exactly. The face is posed
(yaw +-60, pitch +-25, roll +-30 degrees) around the head centre and projected with a perspective
camera. Contour (jaw) points are put on the visible silhouette of the face, as human annotators
do; points hidden by the nose or by the turned-away cheek keep their projected position (as 300W).

Rendering (OpenCV): background (gradients, blobs, shapes, noise), hair/head, ears, neck, clothes;
the skin as a painter-sorted quad mesh with Lambertian + ambient + specular shading from the 3D
normals; then brows, eyes (sclera, iris, pupil, lids, lashes), nose overlay (so it hides the far
eye under yaw), nostrils, lips (mouth cavity and teeth when open), make-up, occluders (hands,
rectangles, ellipses, sunglasses, bars), lighting colour, blur, noise, JPEG.

Randomized style (`style="randomized"`, CLI `--style randomized`; issue #16), opt-in: domain
randomisation for transfer to photographs. Backgrounds, clothes, occluders and skin/hair detail take
random warped, colour-shifted crops of the two real non-face photographs shipped with scikit-learn
(sklearn/datasets/images/china.jpg and flower.jpg, CC BY 2.0, by danielbuechele and vultilion on
Flickr: attribute them when publishing randomized renders) or fractal noise; the skin gets
multi-scale texture, hair gets strands; locks of hair fall over the face border; soft cast shadows;
wider lighting, exposure, contrast, gamma, white-balance and saturation ranges (25% grey images);
Gaussian, motion and defocus blur, down-sampling, signal-dependent noise and a JPEG round trip; wider
roll (std 0.8 x the difficulty's roll range, clipped at that range + 20 deg) and wider face
proportions (chin, nose length, brow height, mouth width). The default style's draws are untouched,
so the default output (the embedded benchmark data) is byte-identical (tests/test_synthetic_randomize.py).
Statistics of both styles against real photographs: bench/studies/sim_to_real/domain_gap.py.

Pixel convention: landmark coordinates are 0-based pixel coordinates (pixel (r, c) has its centre
at x = c, y = r), written into the files as they are.

API
---
* `render_face(rng, image_size=None, difficulty="normal", clean=False, frontal=False,
  occluder=None, return_debug=False, pose=None, style="default") -> (image RGB uint8, {68: (68,2), 98: (98,2), 29: (29,2)}, flags)`
* `generate(dataset, root, num_train, num_test, seed=0, image_size=None, workers=None, progress=False,
  style="default")`
* `generate_default(dataset, root=None)`: the embedded default sizes (`DEFAULT_SIZES`: 300W 3000
  train / 300 test (the demo's students learn from 3000 faces far better than from 600),
  COFW 500 / 150, WFLW 600 / 200; seed 0), skipped when `root/SYNTHETIC.json`
  already records the same request. Cost: about 0.12-0.15 CPU-seconds per face (2 worker
  processes), i.e. about 1 minute per dataset on 2 free cores.
* CLI: `python synthetic_faces.py --dataset 300w|cofw|wflw|all --out data/synthetic --train N
  --test M --seed S [--style randomized]`.

Splits: 300W train faces go to lfpw/trainset (.png), helen/trainset, afw (811:2000:337); test faces
to lfpw/testset + helen/testset ("common", easy poses) and ibug ("challenging": pose up to 60 deg,
more occluders, blur, expressions) in the 554:135 proportion. WFLW: one face per image under
WFLW_images/<event>/, 30% hard faces. COFW: images 200-320 px (a few grayscale, stored 2D as in the
real file), occluders on about half of the faces; the occlusion flags mark points inside an occluder.

The files are written by dataset_formats' writers (write_pts, write_wflw_list, write_cofw_mat; points
with 3 decimals, as the official files), so the readers read back exactly what was rendered.
Every dataset is written into a temporary sibling folder and renamed into place when complete;
`SYNTHETIC.json` (seed, counts, version) marks a finished dataset.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

import dataset_formats as fmt
from errors import LandmarkError, run_cli

# GENERATOR_VERSION: data_util._resolve_root regenerates the embedded data when the marker's version
# differs (is_complete), so it changes only when the *default* output changes. The randomized style
# (issue #16) is opt-in and leaves the default output byte-identical: the version stays 1, and the
# marker records "style" for non-default sets (is_complete checks it).
GENERATOR_VERSION = 1
STYLES = ("default", "randomized")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise LandmarkError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")

MARKER = "SYNTHETIC.json"
DEFAULT_SIZES = {"300w": (3000, 300), "cofw": (500, 150), "wflw": (600, 200)}
DATASET_NAMES = ("300w", "cofw", "wflw")

cv2.setNumThreads(1)

# ================================================================================================
# Face model
# ================================================================================================

_C = np.array([0.0, 0.15])          # centre of the polar parametrisation of the face outline


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class FaceShape:
    """Identity + expression parameters and every 3D curve of one face."""

    def __init__(self, rng: np.random.Generator, expressive: float = 1.0, wide: bool = False):
        u = rng.uniform
        # ---- identity (wide: the randomized style's wider ranges of chin, nose, brow and mouth,
        # covering the proportions measured on real faces, bench/studies/sim_to_real/domain_gap.md; the same
        # number of draws either way)
        self.W = u(0.80, 0.97)              # half width at eye level
        self.C = u(1.10, 1.52) if wide else u(1.22, 1.52)   # chin below the eye line
        self.H = u(0.95, 1.25)              # hairline above the eye line
        self.jaw_a = u(1.8, 3.2)            # jaw squareness
        self.jaw_b = u(1.4, 1.9)
        self.eye_out = u(0.48, 0.52)        # outer corner x (the unit is ~1)
        self.eye_w = u(0.26, 0.33)          # eye width
        self.eye_tilt = u(-0.03, 0.05)      # outer corner raised (+) or lowered
        self.eye_h = u(0.045, 0.075)        # upper lid height
        self.brow_y = u(-0.30, -0.15) if wide else u(-0.30, -0.20)
        self.brow_th = u(0.055, 0.11)
        self.brow_arch = u(0.03, 0.09)
        self.brow_len = u(0.95, 1.1)
        self.nose_len = u(0.32, 0.50) if wide else u(0.38, 0.50)   # tip y
        self.nose_w = u(0.13, 0.19)         # half width of the base (31/35)
        self.nose_h = u(0.18, 0.30)         # tip protrusion
        self.mouth_y = u(0.72, 0.86)
        self.mouth_w = u(0.21, 0.37) if wide else u(0.26, 0.37)
        self.lip_up = u(0.05, 0.10)
        self.lip_lo = u(0.08, 0.14)
        self.iris_r = u(0.055, 0.066)
        # ---- expression
        e = expressive
        self.open = float(np.clip(rng.exponential(0.07 * e) if u() < 0.55 else 0.0, 0, 0.45))
        self.smile = float(np.clip(rng.normal(0.15, 0.35 * e), -0.4, 1.0))
        self.brow_raise = float(np.clip(rng.normal(0.0, 0.03 * e), -0.05, 0.09))
        self.eye_open = float(np.clip(rng.normal(1.0, 0.2), 0.35, 1.45))
        if u() < 0.04 * e:
            self.eye_open = u(0.05, 0.3)    # (nearly) closed eyes
        self.gaze = rng.normal(0, [0.18, 0.12])
        self.asym = rng.normal(0, 0.01, size=8)
        self._outline()

    # ---------------------------------------------------------------- outline and depth field
    def jaw_x(self, y):
        return self.W * np.power(np.clip(1 - np.power(np.clip(y / self.C, 0, 1), self.jaw_a), 0, 1),
                                 1.0 / self.jaw_b)

    def _outline(self):
        # jaw (left half, from the eye line down to the chin) by arclength
        y = np.linspace(-0.02, self.C, 400)
        x = -self.jaw_x(np.maximum(y, 0))
        jaw = np.stack([x, y], 1)
        # the contour polyline used by the landmarks starts higher (WFLW's contour begins between
        # the eye and brow levels, the 68-point one at the eye level)
        ye = np.linspace(-0.35, self.C, 500)
        re_ = np.abs(np.minimum(ye, 0)) / self.H
        xe = np.where(ye < 0, -self.W * (1 - 0.08 * re_) * np.power(np.clip(1 - np.power(re_, 2.4), 0, 1), 0.5),
                      -self.jaw_x(np.maximum(ye, 0)))
        ext = np.stack([xe, ye], 1)
        self._jaw_left = ext
        self._jaw_len = np.r_[0, np.cumsum(np.linalg.norm(np.diff(ext, axis=0), axis=1))]
        # forehead (left half, from the eye line up to the hairline top)
        yf = np.linspace(0, -self.H, 200)
        r = np.abs(yf) / self.H
        xf = -self.W * (1 - 0.08 * r) * np.power(np.clip(1 - np.power(r, 2.4), 0, 1), 0.5)
        pts = np.concatenate([np.stack([xf[::-1], yf[::-1]], 1), jaw])
        pts = np.concatenate([pts, pts[::-1] * [-1, 1]])
        d = pts - _C
        phi = np.arctan2(d[:, 1], d[:, 0])
        rad = np.hypot(d[:, 0], d[:, 1])
        order = np.argsort(phi)
        phi, rad = phi[order], rad[order]
        self._phi_tab = np.r_[phi[-1] - 2 * np.pi, phi, phi[0] + 2 * np.pi]
        self._rad_tab = np.r_[rad[-1], rad, rad[0]]

    def radius(self, phi):
        return np.interp(phi, self._phi_tab, self._rad_tab)

    def surface_z(self, x, y):
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        dx, dy = x - _C[0], y - _C[1]
        phi = np.arctan2(dy, dx)
        t = np.clip(np.hypot(dx, dy) / self.radius(phi), 0, 1)
        s = np.sin(phi)
        down, up = np.maximum(s, 0) ** 2, np.maximum(-s, 0) ** 2
        zr = 0.45 * down + 0.25 * up
        hd = 0.66 - 0.25 * down
        z = zr + hd * np.clip(1 - t ** 3, 0, 1) ** 0.7
        return z + self.bumps(x, y)

    def nose_bump(self, x, y):
        root, tip, sub = -0.03, self.nose_len, self.nose_len + 0.15
        f = np.clip((y - root) / (tip - root), 0, 1)
        h = (0.10 + (self.nose_h - 0.10) * f ** 1.4) * _smoothstep(root - 0.12, root, y)
        h = h * (1 - _smoothstep(tip, sub, y))
        sig = 0.05 + 0.05 * f ** 2
        z = h * np.exp(-0.5 * (x / sig) ** 2)
        for sx in (-1, 1):   # alae
            z = z + 0.06 * np.exp(-0.5 * (((x - sx * (self.nose_w - 0.04)) / 0.045) ** 2
                                         + ((y - (tip + 0.06)) / 0.05) ** 2))
        return z

    def bumps(self, x, y):
        z = self.nose_bump(x, y)
        ex = self.eye_out - self.eye_w / 2
        for sx in (-1, 1):
            z = z - 0.09 * np.exp(-0.5 * (((x - sx * ex) / 0.17) ** 2 + ((y + 0.01) / 0.10) ** 2))
            z = z + 0.05 * np.exp(-0.5 * (((x - sx * 0.30) / 0.25) ** 2 + ((y - self.brow_y) / 0.07) ** 2))
            z = z + 0.05 * np.exp(-0.5 * (((x - sx * 0.52) / 0.18) ** 2 + ((y - 0.30) / 0.15) ** 2))
        z = z + 0.07 * np.exp(-0.5 * ((x / 0.25) ** 2 + ((y - self.mouth_y - 0.03) / 0.11) ** 2))
        z = z + 0.05 * np.exp(-0.5 * ((x / 0.22) ** 2 + ((y - self.C + 0.17) / 0.12) ** 2))
        return z

    def lift(self, xy, dz=0.0):
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.c_[xy, self.surface_z(xy[:, 0], xy[:, 1]) + dz]

    # ---------------------------------------------------------------- feature curves (frontal 2D)
    def jaw_point(self, s, top=-0.02):
        """Frontal outline point at arclength fraction s of the contour that starts at height `top`
        on the image-left side (s = 0), passes the chin (s = 0.5) and ends at `top` on the right."""
        s = np.atleast_1d(np.asarray(s, float))
        left = s <= 0.5
        ss = np.where(left, s * 2, (1 - s) * 2)
        L = self._jaw_len
        l0 = np.interp(top, self._jaw_left[:, 1], L)
        ll = l0 + ss * (L[-1] - l0)
        x = np.interp(ll, L, self._jaw_left[:, 0])
        y = np.interp(ll, L, self._jaw_left[:, 1])
        x = np.where(left, x, -x)
        # jaw lowered when the mouth opens
        y = y + self.open * 0.55 * _smoothstep(self.mouth_y - 0.2, self.C, y)
        return np.stack([x, y], 1)

    def eye(self, side, u, upper=True):
        """Eyelid point; side -1 (image left, 36-41) or +1; u from the outer (0) to inner (1) corner."""
        u = np.asarray(u, float)
        xo = side * self.eye_out
        xi = side * (self.eye_out - self.eye_w)
        yo = -self.eye_tilt - self.smile * 0.01
        yi = 0.012
        x = xo + (xi - xo) * u
        y = yo + (yi - yo) * u
        squint = 1 - 0.15 * max(self.smile, 0)
        if upper:
            uu = np.clip(u, 0, 1) ** 0.9
            h = self.eye_h * self.eye_open * squint * np.sin(np.pi * uu) ** 0.85
            y = y - h
        else:
            uu = np.clip(u, 0, 1) ** 1.15
            h = 0.55 * self.eye_h * min(self.eye_open, 1.1) * squint * np.sin(np.pi * uu) ** 0.9
            y = y + h
        return np.stack([x, y], -1)

    def pupil(self, side):
        c = self.eye(side, 0.5, True) * 0.5 + self.eye(side, 0.5, False) * 0.5
        gx = self.gaze[0] * self.eye_w * 0.5 * side * -1
        up = self.eye(side, 0.5, True)[1]
        lo = self.eye(side, 0.5, False)[1]
        gy = float(np.clip(self.gaze[1] * self.eye_h, -(lo - up) * 0.3, (lo - up) * 0.3))
        return c + np.array([gx, gy - 0.1 * (lo - up)])

    def brow(self, side, u, which):
        """Brow point; u from the outer (0) to inner (1) end; which 'up', 'lo' or 'mid'."""
        u = np.asarray(u, float)
        xo = side * (self.eye_out + 0.16) * self.brow_len
        xi = side * 0.13
        x = xo + (xi - xo) * u
        base = self.brow_y - self.brow_raise + 0.07 * (1 - u) ** 2 * 0.6 - 0.02 * u
        y = base - self.brow_arch * np.sin(np.pi * np.clip(u, 0, 1) ** 0.8) + 0.03
        th = self.brow_th * (0.35 + 0.65 * np.clip(u, 0, 1) ** 0.7)
        if which == "up":
            return np.stack([x, y], -1)
        if which == "lo":
            return np.stack([x, y + th], -1)
        return np.stack([x, y + th / 2], -1)

    def nose_bridge(self, f):
        f = np.asarray(f, float)
        return np.stack([np.zeros_like(f), -0.02 + (self.nose_len + 0.02) * f], -1)

    def nose_base(self, k):
        """Points 31..35 (k = -2..2) of the nose base."""
        k = np.asarray(k, float)
        x = k / 2 * self.nose_w
        y = self.nose_len + 0.15 - 0.06 * (np.abs(k) / 2) ** 1.5
        return np.stack([x, y], -1)

    def alar(self, side):
        return np.array([side * (self.nose_w + 0.035), self.nose_len + 0.05])

    def _mouth_frame(self):
        w = self.mouth_w * (1 + 0.18 * self.smile)
        cy = self.mouth_y + 0.02
        corner_y = cy - 0.07 * self.smile
        return w, cy, corner_y

    def lip(self, u, which):
        """Lip contour point; u in [-1, 1] from the image-left corner; which in
        'uo' (upper outer), 'lo' (lower outer), 'ui' (upper inner), 'li' (lower inner)."""
        u = np.asarray(u, float)
        w, cy, corner_y = self._mouth_frame()
        open_ = self.open
        a = np.abs(u)
        if which in ("uo", "lo"):
            x = u * w
            base = corner_y + (cy - corner_y) * (1 - a ** 2)
            if which == "uo":
                bow = self.lip_up * np.sin(np.pi / 2 * np.clip((1 - a) / 0.7, 0, 1)) ** 0.8
                bow = bow * (1 - 0.2 * np.exp(-(u / 0.12) ** 2))
                return np.stack([x, base - bow], -1)
            h = (self.lip_lo + open_) * np.power(np.clip(1 - a ** 2, 0, 1), 0.7)
            return np.stack([x, base + h + 0.0 * u], -1)
        wi = w - 0.05 - 0.02 * max(self.smile, 0)
        x = u * wi
        base = corner_y + (cy - corner_y) * (1 - (u * wi / w) ** 2)
        if which == "ui":
            return np.stack([x, base + 0.004 * (1 - a ** 2)], -1)
        h = open_ * np.power(np.clip(1 - a ** 2, 0, 1), 0.6)
        return np.stack([x, base + 0.004 * (1 - a ** 2) + h], -1)


# WFLW's 33-point contour starts higher than the 68-point one (between the eye and brow levels,
# measured on the real WFLW samples in tests/data); the 68-point contour starts at the eye line.
WFLW_JAW_TOP = -0.28

# Eye-related 3D offsets (the eyeball bulges out of the socket)
_EYE_DZ = 0.05


def layouts_3d(f: FaceShape) -> dict:
    """3D points of the three layouts (jaw points as frontal outline points, silhouetted later).

    Returns {"68": (68,3), "98": (98,3), "29": (29,3)} and the index lists of contour points
    `jaw_s` (arclength fractions) per layout."""
    L, R = -1, 1
    lift = f.lift

    def eye_pts(side, ups, los):
        return lift(f.eye(side, np.array(ups), True), _EYE_DZ), lift(f.eye(side, np.array(los), False), _EYE_DZ)

    # ---- 68 points (iBUG)
    p68 = np.zeros((68, 3))
    jaw68 = np.linspace(0, 1, 17)
    p68[0:17] = lift(f.jaw_point(jaw68))
    p68[17:22] = lift(f.brow(L, np.linspace(0, 1, 5), "up"))
    p68[22:27] = lift(f.brow(R, np.linspace(1, 0, 5), "up"))
    p68[27:31] = lift(f.nose_bridge(np.linspace(0, 1, 4)))
    p68[31:36] = lift(f.nose_base(np.arange(-2, 3)))
    up, lo = eye_pts(L, [0, 1 / 3, 2 / 3, 1], [2 / 3, 1 / 3])
    p68[36:40], p68[40:42] = up, lo
    up, lo = eye_pts(R, [1, 2 / 3, 1 / 3, 0], [1 / 3, 2 / 3])
    p68[42:46], p68[46:48] = up, lo
    ou = np.array([-1, -0.62, -0.28, 0, 0.28, 0.62, 1])
    p68[48:55] = lift(f.lip(ou, "uo"))
    p68[55:60] = lift(f.lip(np.array([0.62, 0.28, 0, -0.28, -0.62]), "lo"))
    p68[60:65] = lift(f.lip(np.array([-1, -0.42, 0, 0.42, 1]), "ui"))
    p68[65:68] = lift(f.lip(np.array([0.42, 0, -0.42]), "li"))
    # inner corners 60 and 64 on both inner curves (identical by construction)

    # ---- 98 points (WFLW)
    p98 = np.zeros((98, 3))
    jaw98 = np.linspace(0, 1, 33)
    p98[0:33] = lift(f.jaw_point(jaw98, WFLW_JAW_TOP))
    p98[33:38] = p68[17:22]
    p98[38:42] = lift(f.brow(L, np.array([0.95, 0.74, 0.5, 0.27]), "lo"))
    p98[42:47] = p68[22:27]
    p98[47:51] = lift(f.brow(R, np.array([0.27, 0.5, 0.74, 0.95]), "lo"))
    p98[51:55] = p68[27:31]
    p98[55:60] = p68[31:36]
    up, lo = eye_pts(L, [0, 0.25, 0.5, 0.75, 1], [0.75, 0.5, 0.25])
    p98[60:65], p98[65:68] = up, lo
    up, lo = eye_pts(R, [1, 0.75, 0.5, 0.25, 0], [0.25, 0.5, 0.75])
    p98[68:73], p98[73:76] = up, lo
    p98[76:96] = p68[48:68]
    p98[96] = lift(f.pupil(L), _EYE_DZ + 0.01)[0]
    p98[97] = lift(f.pupil(R), _EYE_DZ + 0.01)[0]

    # ---- 29 points (COFW)
    p29 = np.zeros((29, 3))
    p29[0] = lift(f.brow(L, 0.0, "mid"))[0]
    p29[1] = lift(f.brow(R, 0.0, "mid"))[0]
    p29[2] = lift(f.brow(L, 1.0, "mid"))[0]
    p29[3] = lift(f.brow(R, 1.0, "mid"))[0]
    p29[4] = lift(f.brow(L, 0.5, "up"))[0]
    p29[5] = lift(f.brow(L, 0.5, "lo"))[0]
    p29[6] = lift(f.brow(R, 0.5, "up"))[0]
    p29[7] = lift(f.brow(R, 0.5, "lo"))[0]
    p29[8], p29[9] = p68[36], p68[45]
    p29[10], p29[11] = p68[39], p68[42]
    p29[12] = p98[62]
    p29[13] = p98[66]
    p29[14] = p98[70]
    p29[15] = p98[74]
    p29[16], p29[17] = p98[96], p98[97]
    p29[18] = lift(f.alar(L))[0]
    p29[19] = lift(f.alar(R))[0]
    p29[20] = p68[30]
    p29[21] = p68[33]
    p29[22], p29[23] = p68[48], p68[54]
    p29[24] = p68[51]
    p29[25] = p68[62]
    p29[26] = p68[66]
    p29[27] = p68[57]
    p29[28] = p68[8]
    jaw = {68: (np.arange(17), jaw68, -0.02), 98: (np.arange(33), jaw98, WFLW_JAW_TOP),
           29: (np.array([28]), np.array([0.5]), -0.02)}
    return {68: p68, 98: p98, 29: p29}, jaw


# ================================================================================================
# Camera
# ================================================================================================

def rotation(yaw, pitch, roll):
    """Rotation matrix (degrees) applied to face coordinates (x right, y down, z to the camera)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


class Camera:
    """Pose about the head centre, then perspective projection to image pixels."""

    PIVOT = np.array([0.0, 0.35, -0.55])

    def __init__(self, yaw, pitch, roll, dist, scale=1.0, offset=(0.0, 0.0)):
        self.R = rotation(yaw, pitch, roll)
        self.dist = float(dist)
        self.scale = float(scale)
        self.offset = np.asarray(offset, float)
        self.yaw, self.pitch, self.roll = yaw, pitch, roll

    def to_cam(self, p):
        p = np.asarray(p, float).reshape(-1, 3)
        return (p - self.PIVOT) @ self.R.T + [0, 0, self.PIVOT[2]]

    def project_cam(self, pc):
        d = self.dist - pc[:, 2]
        uv = pc[:, :2] * (self.dist / d)[:, None]
        return uv * self.scale + self.offset

    def project(self, p):
        return self.project_cam(self.to_cam(p))


def silhouette(face: FaceShape, cam: Camera, outline_xy: np.ndarray, n: int = 24) -> np.ndarray:
    """For each frontal outline point, the visible silhouette point along its ray from the centre:
    the candidate (on the face surface) projected farthest outwards. Returns projected (K, 2) and
    the 3D points (K, 3)."""
    outline_xy = np.asarray(outline_xy, float).reshape(-1, 2)
    t = np.linspace(0.45, 1.0, n)
    d = outline_xy - _C
    cand = _C + t[None, :, None] * d[:, None, :]               # (K, n, 2)
    c3 = face.lift(cand.reshape(-1, 2))
    uv = cam.project(c3).reshape(len(outline_xy), n, 2)
    centre = cam.project(face.lift(_C[None]))[0]
    d3 = np.c_[d, np.zeros(len(d))] @ cam.R.T
    direc = d3[:, :2] / (np.linalg.norm(d3[:, :2], axis=1, keepdims=True) + 1e-9)
    score = ((uv - centre) * direc[:, None, :]).sum(-1)
    k = np.argmax(score, axis=1)
    idx = np.arange(len(outline_xy))
    return uv[idx, k], c3.reshape(len(outline_xy), n, 3)[idx, k]


# ================================================================================================
# Rendering helpers
# ================================================================================================

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 132], [198, 140, 105],
                  [160, 106, 74], [120, 78, 52], [86, 56, 40]], float)
_HAIR = np.array([[20, 16, 14], [45, 30, 22], [80, 55, 35], [120, 85, 50], [170, 130, 80],
                  [200, 170, 120], [110, 110, 110], [200, 200, 200], [130, 50, 30]], float)
_IRIS = np.array([[70, 40, 20], [100, 60, 30], [45, 30, 20], [80, 110, 150], [90, 120, 90],
                  [120, 100, 60]], float)
_SHIFT = 4
_SF = float(1 << _SHIFT)


def _ipts(p):
    return np.round(np.asarray(p) * _SF).astype(np.int32).reshape(-1, 1, 2)


def _box(pts, pad, W, H):
    """(slices, offset) of the padded bounding box of pts clipped to the image; None if empty."""
    p = np.asarray(pts, float).reshape(-1, 2)
    x0 = int(max(0, np.floor(p[:, 0].min() - pad)))
    y0 = int(max(0, np.floor(p[:, 1].min() - pad)))
    x1 = int(min(W, np.ceil(p[:, 0].max() + pad) + 1))
    y1 = int(min(H, np.ceil(p[:, 1].max() + pad) + 1))
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), np.array([x0, y0], float)


def _mesh_quads(cam, v3, flip, ldir, amb, kd, gain, spec):
    """Quads of a vertex grid v3 (n, m+1, 3) in face coordinates, wrapping along the first axis.
    flip(normals_cam, centres_cam) -> bool array: where to reverse a normal so it points out.
    Returns (fixed-point quad polygons (K, 4, 2), shade (n, m), specular (n, m), facing (n, m),
    painter order (far first))."""
    n, m1 = v3.shape[:2]
    vc = cam.to_cam(v3.reshape(-1, 3)).reshape(n, m1, 3)
    vuv = cam.project_cam(vc.reshape(-1, 3)).reshape(n, m1, 2)
    nxt = np.roll(vc, -1, axis=0)
    A, B, Cc, D = vc[:, :-1], nxt[:, :-1], nxt[:, 1:], vc[:, 1:]
    nrm = np.cross(Cc - A, D - B)
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True) + 1e-12
    cen = (A + B + Cc + D) / 4
    nrm = np.where(flip(nrm, cen)[..., None], -nrm, nrm)
    view = np.array([0, 0, cam.dist]) - cen
    view /= np.linalg.norm(view, axis=-1, keepdims=True)
    facing = (nrm * view).sum(-1)
    lam = np.clip(nrm @ ldir, 0, 1)
    hv = ldir + view
    hv /= np.linalg.norm(hv, axis=-1, keepdims=True)
    sp = np.clip((nrm * hv).sum(-1), 0, 1) ** 20 * spec
    shade = (amb + kd * lam) * gain
    un = np.roll(vuv, -1, axis=0)
    quv = np.stack([vuv[:, :-1], un[:, :-1], un[:, 1:], vuv[:, 1:]], 2)
    order = np.argsort(cen[..., 2].ravel())   # far (small z) first
    return np.round(quv.reshape(-1, 4, 2) * _SF).astype(np.int32), shade, sp, facing, order


def _fill(img, pts, color, lt=cv2.LINE_AA):
    cv2.fillPoly(img, [_ipts(pts)], color, lt, _SHIFT)


def _mask_poly(shape, polys, aa=True):
    m = np.zeros(shape[:2], np.float32)
    cv2.fillPoly(m, [_ipts(p) for p in polys], 1.0, cv2.LINE_AA if aa else cv2.LINE_8, _SHIFT)
    return m


def _blend(img, mask, color, alpha=1.0):
    """img float32 HxWx3 (modified in place); mask float32 HxW in [0,1]; color (3,) or HxWx3.
    Works on the bounding box of the mask only."""
    nz = (mask > 1e-3).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(nz)
    if w == 0 or h == 0:
        return img
    sl = (slice(y, y + h), slice(x, x + w))
    a = (mask[sl] * np.float32(alpha))[..., None]
    col = np.asarray(color, np.float32)
    if col.ndim == 3:
        col = col[sl]
    sub = img[sl]
    sub += a * (col - sub)
    return img


def _line_kernel(rng, k):
    """A k x k filter kernel (sum 1): a straight line through the centre at a random angle."""
    ker = np.zeros((k, k), np.float32)
    ang = rng.uniform(0, np.pi)
    c0 = k // 2
    cv2.line(ker, (int(c0 - np.cos(ang) * c0), int(c0 - np.sin(ang) * c0)),
             (int(c0 + np.cos(ang) * c0), int(c0 + np.sin(ang) * c0)), 1.0, 1)
    return ker / ker.sum()


def _motion_blur(rng, img, blur):
    """A straight motion-blur streak about 3 * blur pixels long at a random angle."""
    return cv2.filter2D(img, -1, _line_kernel(rng, int(blur * 3) | 1))


def _smooth_noise(rng, h, w, scale, octaves=2):
    """Low-frequency noise in [-1, 1]."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        s = max(2, int(round(max(h, w) / (scale / (2 ** o)))))
        g = rng.standard_normal((s, s)).astype(np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= 0.5
    return out / (np.abs(out).max() + 1e-6)


def _background(rng, h, w):
    kind = rng.integers(0, 4)
    c1, c2 = rng.uniform(10, 245, 3), rng.uniform(10, 245, 3)
    hs, ws = max(8, h // 4), max(8, w // 4)
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * xx + np.sin(ang) * yy)
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    small = (c1 * (1 - g[..., None]) + c2 * g[..., None]).astype(np.float32)
    if kind >= 1:  # coloured blobs (out-of-focus scene)
        for _ in range(rng.integers(3, 9)):
            n = _smooth_noise(rng, hs, ws, rng.uniform(10, 50), 1)
            _blend(small, np.clip(n, 0, 1) * rng.uniform(0.3, 0.9), rng.uniform(0, 255, 3))
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind >= 2:  # shapes: walls, windows, furniture, people
        for _ in range(rng.integers(2, 10)):
            col = tuple(float(c) for c in rng.uniform(0, 255, 3))
            t = rng.integers(0, 3)
            if t == 0:
                x0, y0 = rng.uniform(-0.2, 1, 2) * [w, h]
                x1, y1 = (x0, y0) + rng.uniform(0.1, 0.7, 2) * [w, h]
                cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), col, -1)
            elif t == 1:
                cv2.ellipse(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                            (int(rng.uniform(10, w / 2)), int(rng.uniform(10, h / 2))),
                            rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
            else:
                cv2.line(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                         (int(rng.uniform(0, w)), int(rng.uniform(0, h))), col,
                         int(rng.integers(1, 12)), cv2.LINE_AA)
        k = int(rng.choice([1, 3, 5, 9, 15]))
        if k > 1:
            img = cv2.GaussianBlur(img, (k, k), 0)
    return img


# ------------------------------------------------------------------------------------------------
# Randomized style (issue #16): real-photo textures, procedural detail, photometric ranges
# ------------------------------------------------------------------------------------------------

_PHOTOS = None


def _photos():
    """Real non-face photographs shipped inside a dependency (scikit-learn's sample images
    china.jpg and flower.jpg), RGB float32, loaded once per process; [] when not found (the
    randomized style then uses procedural textures only)."""
    global _PHOTOS
    if _PHOTOS is None:
        _PHOTOS = []
        try:
            import sklearn  # noqa: PLC0415

            folder = Path(sklearn.__file__).parent / "datasets" / "images"
            for name in ("china.jpg", "flower.jpg"):
                im = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
                if im is not None:
                    _PHOTOS.append(np.ascontiguousarray(im[:, :, ::-1]).astype(np.float32))
        except ImportError:       # pragma: no cover (scikit-learn is a requirement)
            pass
    return _PHOTOS


def _fractal(rng, h, w, scale, octaves=5):
    """1/f-like noise in [-1, 1]: octaves of smooth noise from `scale` px down to a few px."""
    out = np.zeros((h, w), np.float32)
    amp, sc = 1.0, float(scale)
    for _ in range(octaves):
        s = max(2, int(round(max(h, w) / max(sc, 1.5))))
        g = rng.standard_normal((s, s)).astype(np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= 0.6
        sc /= 2
    return out / (np.abs(out).max() + 1e-6)


def _photo_patch(rng, h, w, colour=True):
    """A random warped crop (h, w, 3) float32 0-255 of a shipped photograph, colour-shifted
    (channel order, per-channel gain, saturation, brightness); a procedural colour texture when no
    photograph is available."""
    photos = _photos()
    if not photos:
        base = rng.uniform(20, 235, 3).astype(np.float32)
        tex = np.stack([_fractal(rng, h, w, max(h, w) / 2, 4) for _ in range(3)], -1)
        return np.clip(base + tex * rng.uniform(20, 80), 0, 255)
    ph = photos[int(rng.integers(len(photos)))]
    H0, W0 = ph.shape[:2]
    zoom = rng.uniform(0.2, 1.0) * min(H0, W0) / max(h, w)       # photo px per output px
    ang = np.radians(rng.uniform(-25, 25) if rng.uniform() < 0.7 else rng.uniform(-180, 180))
    c, s_ = np.cos(ang) * zoom, np.sin(ang) * zoom
    fx = -1.0 if rng.uniform() < 0.5 else 1.0
    cx, cy = rng.uniform(0.2, 0.8) * W0, rng.uniform(0.2, 0.8) * H0
    # output (u, v) -> photo (x, y): centred rotation + zoom (+ mirror)
    M = np.array([[c * fx, -s_, cx - (c * fx * w / 2 - s_ * h / 2)],
                  [s_ * fx, c, cy - (s_ * fx * w / 2 + c * h / 2)]], np.float32)
    out = cv2.warpAffine(ph, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT101)
    if colour:
        if rng.uniform() < 0.5:
            out = out[:, :, rng.permutation(3)]
        out = out * rng.uniform(0.7, 1.3, 3).astype(np.float32)
        g = out.mean(-1, keepdims=True)
        out = g + (out - g) * np.float32(rng.uniform(0.3, 1.4))
        out = (out - 128) * np.float32(rng.uniform(0.8, 1.5)) + 128 + np.float32(rng.uniform(-30, 40))
    return np.ascontiguousarray(np.clip(out, 0, 255), dtype=np.float32)


def _detail(rng, h, w, sigma):
    """Zero-mean fine detail (h, w) of unit standard deviation at the scale of `sigma` px: the
    high-pass luminance of a photo crop (edges, foliage, wrinkles) or fractal noise."""
    if _photos() and rng.uniform() < 0.6:
        g = _photo_patch(rng, h, w, colour=False).mean(-1)
    else:
        g = _fractal(rng, h, w, sigma * 8, 4)
    d = g - cv2.GaussianBlur(g, (0, 0), max(0.8, 2.0 * sigma))
    if sigma > 1.2:
        d = cv2.GaussianBlur(d, (0, 0), 0.5 * sigma)
    return (d / (d.std() + 1e-6)).astype(np.float32)


def _skin_detail(rng, h, w, px):
    """Multiplicative skin texture to add to the albedo: blotches, pores, wrinkle-like detail."""
    t = rng.uniform(0.03, 0.15) * _smooth_noise(rng, h, w, max(6.0, px * rng.uniform(0.1, 0.5)), 3)
    t += rng.uniform(0.02, 0.12) * _detail(rng, h, w, max(1.0, px * rng.uniform(0.01, 0.04)))
    t += rng.uniform(0.0, 0.05) * rng.standard_normal((h, w), dtype=np.float32)
    return t.astype(np.float32)


def _hair_texture(rng, h, w, px):
    """Hair brightness factor (h, w): strands (noise smeared along a direction, made at half
    resolution) + clumps."""
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    n = rng.standard_normal((h2, w2), dtype=np.float32)
    ker = _line_kernel(rng, int(max(3, px * rng.uniform(0.04, 0.12))) | 1)
    strands = cv2.resize(cv2.filter2D(n, -1, ker), (w, h), interpolation=cv2.INTER_LINEAR)
    strands /= strands.std() + 1e-6
    clumps = _smooth_noise(rng, h, w, max(8.0, px * 0.2), 2)
    f = 0.7 + rng.uniform(0.08, 0.25) * strands + 0.2 * clumps
    return np.clip(f, 0.2, 1.6).astype(np.float32)


def _background_randomized(rng, h, w, px):
    """Background of the randomized style: a warped, colour-shifted photo crop (often defocused),
    a fractal texture, or the default procedural scene with photo detail; sometimes clutter
    (photo-textured shapes: other people, furniture, foliage)."""
    r = rng.uniform()
    if r < 0.55:
        img = _photo_patch(rng, h, w)
        if rng.uniform() < 0.35:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 4.0))
    elif r < 0.75:
        base = rng.uniform(10, 245, 3).astype(np.float32)
        img = np.stack([base[i] + rng.uniform(15, 90) * _fractal(rng, h, w, max(h, w) * rng.uniform(0.1, 1.0))
                        for i in range(3)], -1)
    else:
        img = _background(rng, h, w)
        img += rng.uniform(5, 30) * _detail(rng, h, w, rng.uniform(1.0, 4.0))[..., None]
    for _ in range(int(rng.integers(0, 4))):
        m = np.zeros((h, w), np.float32)
        if rng.uniform() < 0.5:
            x0, y0 = rng.uniform(-0.2, 1, 2) * [w, h]
            x1, y1 = (x0, y0) + rng.uniform(0.1, 0.6, 2) * [w, h]
            cv2.rectangle(m, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, -1)
        else:
            cv2.ellipse(m, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                        (int(rng.uniform(10, w / 2)), int(rng.uniform(10, h / 2))),
                        rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        _blend(img, m, _photo_patch(rng, h, w))
    return np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.float32)


def _paint_side_hair(rng, img, s):
    """Randomized style: locks of hair falling over one or both sides of the face (temples,
    cheeks, the upper jaw line), as in many photographs; the contour points keep their true
    position (annotators mark the jaw under the hair)."""
    if rng.uniform() >= 0.35:
        return
    p68, px, W, H = s.lm[68], s.px, s.W, s.H
    centre = p68[27:48].mean(0)
    col = np.clip(s.hair * rng.uniform(0.7, 1.1), 0, 255).astype(np.float32)
    sides = [0, 1] if rng.uniform() < 0.5 else [int(rng.integers(0, 2))]
    for side in sides:
        jaw = p68[0:17] if side == 0 else p68[16::-1]
        k_end = int(rng.integers(2, 8))                   # how far down the jaw the lock falls
        top = p68[17] if side == 0 else p68[26]
        top = top + (top - centre) * 0.3 - np.array([0, px * 0.3])
        inner = [top + (centre - top) * rng.uniform(0.0, 0.25)]
        for k in range(k_end + 1):
            inner.append(jaw[k] + (centre - jaw[k]) * rng.uniform(0.0, 0.18))
        outer = [jaw[k] + (jaw[k] - centre) * rng.uniform(0.25, 0.6) for k in range(k_end, -1, -1)]
        outer.append(top + (top - centre) * 0.4)
        poly = np.array(inner + outer)
        m = _mask_poly(img.shape, [poly])
        kb = int(max(3, px * 0.04)) | 1
        m = cv2.GaussianBlur(m, (kb, kb), 0)
        layer = col[None, None, :] * _hair_texture(rng, H, W, px)[..., None] * np.float32(s.gain)
        _blend(img, m, layer, rng.uniform(0.8, 1.0))


def _paint_cast_shadow(rng, img, s):
    """Randomized style: a soft cast shadow (a half plane of darker light) across the picture."""
    if rng.uniform() >= 0.3:
        return
    H, W, px = s.H, s.W, s.px
    c = s.lm[68][27:36].mean(0) + rng.normal(0, px * 0.3, 2)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dist = (xx - c[0]) * np.cos(ang) + (yy - c[1]) * np.sin(ang)
    soft = max(1.0, px * rng.uniform(0.03, 0.3))
    m = 1.0 / (1.0 + np.exp(-dist / soft))
    f = rng.uniform(0.35, 0.8)
    img *= (1.0 - (1.0 - f) * m)[..., None].astype(np.float32)


def _paint_camera_randomized(rng, img, s, d):
    """Randomized style: white balance, exposure, contrast, gamma, saturation (grey 25%), blur
    (Gaussian, motion, defocus), down-sampling, sensor noise, JPEG; returns (image, blur sigma)."""
    px = s.px
    img *= rng.uniform(0.75, 1.25, 3).astype(np.float32)
    m = float(img.mean())
    img = (img - m) * np.float32(rng.uniform(0.8, 1.8)) + np.float32(m + rng.uniform(-10, 40))
    img = 255.0 * np.power(np.clip(img / 255.0, 0, 1), np.float32(np.exp(rng.uniform(-0.5, 0.4))))
    g = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    sat = 0.0 if rng.uniform() < 0.25 else rng.uniform(0.3, 1.4)
    img = (g + (img - g) * np.float32(sat)).astype(np.float32)
    blur = 0.0
    r = rng.uniform()
    scale = max(1.0, px / 120)
    if r < 0.15:
        blur = float(rng.uniform(0.8, 3.0) * scale)
        img = cv2.GaussianBlur(img, (0, 0), blur)
    elif r < 0.22:
        blur = float(rng.uniform(1.0, 3.0) * scale)
        img = _motion_blur(rng, img, blur)
    elif r < 0.28:
        blur = float(rng.uniform(1.0, 3.0) * scale)
        rad = max(1, int(round(blur)))
        ker = np.zeros((2 * rad + 1, 2 * rad + 1), np.float32)
        cv2.circle(ker, (rad, rad), rad, 1.0, -1)
        img = cv2.filter2D(img, -1, ker / ker.sum())
    elif r < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9))
    if rng.uniform() < 0.15:        # a low-resolution camera / a small face up-sampled
        H, W = img.shape[:2]
        f = rng.uniform(0.25, 0.7)
        small = cv2.resize(img, (max(8, int(W * f)), max(8, int(H * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    sig = rng.uniform(0.5, 10.0)
    noise = rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None]
    if rng.uniform() < 0.5:        # colour noise
        noise = noise * 0.6 + rng.standard_normal(img.shape, dtype=np.float32) * 0.6
    img = img + noise * np.float32(sig) * np.sqrt(np.clip(img, 1, 255) / 128.0)
    img = np.clip(img, 0, 255)
    if rng.uniform() < 0.5:
        bgr = np.ascontiguousarray(img[:, :, ::-1].astype(np.uint8))
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 85))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32)
    return img, blur


# ================================================================================================
# Face rendering
# ================================================================================================

DIFFICULTY = {
    "easy": dict(yaw=25, pitch=12, roll=10, occl=0.05, blur=0.08, expr=0.6, light=0.1),
    "normal": dict(yaw=45, pitch=20, roll=20, occl=0.22, blur=0.2, expr=1.0, light=0.25),
    "hard": dict(yaw=60, pitch=25, roll=30, occl=0.5, blur=0.4, expr=1.6, light=0.45),
}


def _sample_pose(rng, d, wide_roll=False):
    yaw = float(np.clip(rng.normal(0, d["yaw"] * 0.5), -d["yaw"], d["yaw"]))
    if rng.uniform() < 0.25:
        yaw = float(rng.uniform(-d["yaw"], d["yaw"]))
    pitch = float(np.clip(rng.normal(0, d["pitch"] * 0.45), -d["pitch"], d["pitch"]))
    if wide_roll:   # randomized style: in-the-wild photos hold more tilted heads
        lim = d["roll"] + 20
        roll = float(np.clip(rng.normal(0, d["roll"] * 0.8), -lim, lim))
    else:
        roll = float(np.clip(rng.normal(0, d["roll"] * 0.4), -d["roll"], d["roll"]))
    return yaw, pitch, roll


def render_face(rng: np.random.Generator, image_size=None, difficulty: str = "normal",
                clean: bool = False, frontal: bool = False, occluder: Optional[bool] = None,
                return_debug: bool = False, pose=None, style: str = "default"):
    """Render one face.

    rng: numpy Generator (use np.random.default_rng(seed + index) for reproducible datasets).
    image_size: None (random 256-450 per side), an int (square) or (width, height).
    difficulty: "easy", "normal" or "hard" (pose range, occluder/blur/extreme light probability).
    clean: no blur, noise, colour cast, make-up, occluder (for tests of feature placement).
    frontal: yaw = pitch = roll = 0 (and a neutral-ish expression, eyes open).
    occluder: force (True) or forbid (False) an occluder; None draws one at random.
    pose: optional (yaw, pitch, roll) in degrees.
    style: "default" (the embedded data's look; its output never changes) or "randomized" (domain
    randomisation for transfer to photographs, issue #16: real-photo backgrounds and textures,
    textured skin, hair and clothes, side hair over the face border, cast shadows, wider lighting,
    colour, contrast, blur, noise and JPEG ranges, grey images, wider roll and face proportions;
    see STYLES). With clean=True the style is ignored.

    Returns (image RGB uint8 (H, W, 3), {68: (68,2), 98: (98,2), 29: (29,2)} float32 pixel
    coordinates, flags) where flags = {"occluded": {68,98,29: bool arrays}, "attributes": int8 (6,)
    in WFLW order (pose, expression, illumination, makeup, occlusion, blur), "yaw", "pitch",
    "roll", "blur", ...}; with return_debug, flags["debug"] holds the occluder mask, skin mask
    and colours used.
    """
    d = DIFFICULTY[difficulty]
    _check_style(style)
    rnd = style == "randomized" and not clean
    if image_size is None:
        W_img, H_img = (int(v) for v in rng.integers(256, 451, 2))
    elif np.isscalar(image_size):
        W_img = H_img = int(image_size)
    else:
        W_img, H_img = (int(v) for v in image_size)

    face = FaceShape(rng, expressive=0.0 if frontal else d["expr"], wide=rnd)
    if frontal:
        face.eye_open = max(face.eye_open, 1.0)
        face.open = 0.0
        face.smile = 0.0
        face.gaze = np.zeros(2)
    if pose is not None:
        yaw, pitch, roll = pose
    elif frontal:
        yaw = pitch = roll = 0.0
    else:
        yaw, pitch, roll = _sample_pose(rng, d, wide_roll=rnd)
    dist = float(rng.uniform(4.5, 14.0))
    cam = Camera(yaw, pitch, roll, dist)

    # ---- landmarks (unit image coordinates first, then fit into the image)
    pts3, jaw = layouts_3d(face)
    lm = {}
    for n, p in pts3.items():
        uv = cam.project(p)
        idx, s, top = jaw[n]
        sil, _ = silhouette(face, cam, face.jaw_point(s, top))
        uv[idx] = sil
        lm[n] = uv
    allp = np.concatenate(list(lm.values()))
    lo, hi = allp.min(0), allp.max(0)
    ext = hi - lo
    frac = rng.uniform(0.35, 0.72) if not clean else 0.55
    scale = frac * min(W_img / ext[0], H_img / ext[1])
    scale = min(scale, 0.85 * W_img / ext[0], 0.85 * H_img / ext[1])
    margin = 0.06
    free = np.array([W_img, H_img]) * (1 - 2 * margin) - ext * scale
    off = np.array([W_img, H_img]) * margin + rng.uniform(0, 1, 2) * np.maximum(free, 0) - lo * scale
    cam.scale, cam.offset = scale, off
    for n in lm:
        lm[n] = lm[n] * scale + off
    px = scale  # pixels per face unit (approximately)

    img, info = _paint(rng, face, cam, lm, W_img, H_img, px, d, clean, frontal, occluder, rnd)

    occluded = {}
    omask = info["occluder_mask"]
    for n, p in lm.items():
        ij = np.round(p).astype(int)
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < W_img) & (ij[:, 1] >= 0) & (ij[:, 1] < H_img)
        o = np.zeros(len(p), bool)
        o[inside] = omask[ij[inside, 1], ij[inside, 0]] > 0
        occluded[n] = o
    attrs = np.zeros(6, np.int8)
    attrs[0] = abs(yaw) > 40 or abs(pitch) > 20
    attrs[1] = face.open > 0.14 or face.smile > 0.65
    attrs[2] = info["light_attr"]
    attrs[3] = info["makeup"]
    attrs[4] = bool(occluded[98].any())
    attrs[5] = info["blur"] > 1.6
    flags = {"occluded": occluded, "attributes": attrs, "yaw": yaw, "pitch": pitch, "roll": roll,
             "blur": info["blur"], "mouth_open": face.open, "smile": face.smile,
             "image_size": (W_img, H_img)}
    if return_debug:
        flags["debug"] = info
    return img, {n: v.astype(np.float32) for n, v in lm.items()}, flags


class _Scene:
    """What the painting steps share: the face, the camera and the image frame, then the colours,
    the lighting and the skin's shading maps as the steps produce them."""

    def __init__(self, face, cam, lm, W, H, px, clean, rnd=False):
        self.face, self.cam, self.lm, self.W, self.H, self.px, self.clean = face, cam, lm, W, H, px, clean
        self.rnd = bool(rnd)    # the randomized style

    def P(self, p):
        return self.cam.project(p)

    def lw(self, f):
        return max(1, int(round(self.px * f)))

    def shade_at(self, p):
        ij = np.clip(np.round(p).astype(int), 0, [self.W - 1, self.H - 1])
        return float(self.shade_img[ij[1], ij[0]]) if self.face_m[ij[1], ij[0]] > 0 else \
            self.amb * self.gain + 0.2


def _paint_colours(rng, s, info):
    """Skin, hair, brow and lip colours; make-up."""
    clean = s.clean
    # ---- colours
    t = rng.uniform(0, len(_SKIN) - 1)
    i0 = int(t)
    skin = _SKIN[i0] * (1 - (t - i0)) + _SKIN[min(i0 + 1, len(_SKIN) - 1)] * (t - i0)
    skin = np.clip(skin * rng.uniform(0.9, 1.1, 3), 0, 255)
    if s.rnd:   # wider skin tones: per-channel tint, sometimes pale / desaturated
        skin = np.clip(skin * rng.uniform(0.85, 1.15, 3) * rng.uniform(0.8, 1.15), 0, 255)
        if rng.uniform() < 0.3:
            skin = skin.mean() + (skin - skin.mean()) * rng.uniform(0.3, 0.9)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    hair = np.clip(hair, 0, 255)
    brow_col = np.clip(np.minimum(hair, skin * 0.55) * rng.uniform(0.6, 1.0), 0, 255)
    makeup = (not clean) and rng.uniform() < 0.12
    lip_col = np.clip(skin * [0.78, 0.50, 0.50] + [25, 0, 5], 0, 255)
    if makeup:
        lip_col = np.array(rng.choice([[170, 20, 40], [200, 40, 80], [120, 20, 30], [220, 90, 110]]),
                           float) * rng.uniform(0.8, 1.1)
    info.update(skin=skin, lip=lip_col, makeup=bool(makeup))
    s.skin, s.hair, s.brow_col, s.makeup, s.lip_col = skin, hair, brow_col, makeup, lip_col


def _paint_lighting(rng, s, d, info):
    """Light direction, ambient / diffuse / specular strength, exposure gain."""
    clean = s.clean
    # ---- lighting
    strong = (not clean) and rng.uniform() < (max(d["light"], 0.35) if s.rnd else d["light"])
    if clean:
        ldir = np.array([0.0, -0.3, 1.0])
        amb, kd = 0.55, 0.5
    elif strong:
        ldir = np.array([rng.choice([-1, 1]) * rng.uniform(1.2, 3.0), rng.uniform(-1, 0.5), 1.0])
        amb, kd = rng.uniform(0.12, 0.3), rng.uniform(0.8, 1.1)
    else:
        ldir = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.3), 1.0])
        amb, kd = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.65)
    ldir = ldir / np.linalg.norm(ldir)
    gain = 1.0 if clean else (rng.uniform(0.35, 0.6) if strong and rng.uniform() < 0.3
                              else rng.uniform(0.8, 1.15))
    if s.rnd:    # wider exposure and ambient ranges
        gain *= rng.uniform(0.75, 1.3)
        amb = amb * rng.uniform(0.7, 1.3)
    info["light_attr"] = bool(strong)
    spec = 0.0 if clean else rng.uniform(0.0, 0.25)
    s.ldir, s.amb, s.kd, s.gain, s.spec = ldir, amb, kd, gain, spec


def _paint_head(rng, img, s):
    """Hair behind the head, clothes, neck, the head (skin and hair) and the ears; returns the hair
    that falls over the forehead (mask, colour) or None."""
    face, cam, W, H, px, skin, hair, ldir, amb, kd, gain = s.face, s.cam, s.W, s.H, s.px, s.skin, s.hair, s.ldir, s.amb, s.kd, s.gain
    # ---- head (skin, hair), ears, neck, clothes (behind the face)
    head_c = np.array([0.0, -0.40 - 0.5 * (face.H - 1.1), -0.55])
    head_r = np.array([face.W * 1.16, 1.1, 1.1]) * rng.uniform(0.98, 1.04)
    uu, vv = np.meshgrid(np.linspace(0, 2 * np.pi, 40, endpoint=False), np.linspace(-np.pi / 2, np.pi / 2, 19))
    sph = np.stack([np.cos(vv) * np.cos(uu), np.sin(vv), np.cos(vv) * np.sin(uu)], -1).reshape(-1, 3)
    head3 = head_c + sph * head_r
    cloth = rng.uniform(0, 255, 3)
    sh = np.array([[-2.4, 3.2, -0.8], [-1.9, 2.2, -0.6], [-0.6, 1.75, -0.3], [0.6, 1.75, -0.3],
                   [1.9, 2.2, -0.6], [2.4, 3.2, -0.8], [2.4, 6.0, -0.8], [-2.4, 6.0, -0.8]])
    sh[:, 0] *= rng.uniform(0.8, 1.2)
    neck = np.array([[-0.62, 0.5, -0.5], [0.62, 0.5, -0.5], [0.6, 2.2, -0.6], [-0.6, 2.2, -0.6]])
    neck[:, 0] *= face.W / 0.88
    bald = rng.uniform() < 0.06
    long_hair = (not bald) and rng.uniform() < 0.35
    hair_layer = None
    if not bald:
        hn = _smooth_noise(rng, H, W, max(8.0, px * 0.15), 2)
        streak = cv2.resize(rng.random((max(2, H // 6), 1), dtype=np.float32), (W, H))
        hair_layer = hair.astype(np.float32) * (0.7 + 0.2 * hn + 0.2 * streak)[..., None]
        if s.rnd:
            hair_layer = hair.astype(np.float32) * _hair_texture(rng, H, W, px)[..., None]
    if long_hair:  # hair falling behind the neck to the shoulders
        lh = np.array([[-head_r[0] * 1.02, -0.2, -0.7], [head_r[0] * 1.02, -0.2, -0.7],
                       [head_r[0] * 1.15, 2.4, -0.8], [-head_r[0] * 1.15, 2.4, -0.8]])
        _blend(img, _mask_poly(img.shape, [cam.project(lh)]), hair_layer * 0.8)
    cm = _mask_poly(img.shape, [cam.project(sh)])
    cloth_layer = cloth.astype(np.float32) * (0.75 + 0.25 * _smooth_noise(rng, H, W, max(8.0, px * 0.5), 2))[..., None]
    if s.rnd and rng.uniform() < 0.7:    # clothes with a real texture (photo crop, tinted)
        cloth_layer = _photo_patch(rng, H, W) * (cloth / 255.0 * 0.8 + 0.4).astype(np.float32)
    _blend(img, cm, cloth_layer)
    # neck: a shaded cylinder, darker under the chin
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ny = np.linspace(0.4, 2.4, 5)
    nr = 0.6 * face.W / 0.88
    neck3 = np.stack([np.repeat(nr * np.cos(ang)[:, None], 5, 1), np.repeat(ny[None], 24, 0),
                      np.repeat(-0.55 + nr * 0.9 * np.sin(ang)[:, None], 5, 1)], -1)
    nc_cam = cam.to_cam(np.array([[0, 1.0, -0.55]]))[0]
    ipq, nsh, _, nfac, nord = _mesh_quads(cam, neck3, lambda n, c: ((c - nc_cam) * n).sum(-1) < 0,
                                          ldir, amb, kd, gain, 0.0)
    # head and neck shading maps are smooth: render them at half resolution (shift + 1)
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    nacc = np.zeros((h2, w2, 2), np.float32)
    nvals = np.stack([nsh.ravel() * 0.8, np.ones(nsh.size)], 1)
    for k in nord[nfac.ravel()[nord] > 0]:
        cv2.fillConvexPoly(nacc, ipq[k], nvals[k].tolist(), cv2.LINE_8, _SHIFT + 1)
    kk = int(max(3, px * 0.04)) | 1
    nacc = cv2.resize(cv2.GaussianBlur(nacc, (kk, kk), 0), (W, H))
    _blend(img, np.clip(nacc[..., 1] * 1.5, 0, 1), skin.astype(np.float32)[None, None]
           * (nacc[..., 0] / np.maximum(nacc[..., 1], 1e-3))[..., None])
    hv3 = head3.reshape(19, 40, 3).transpose(1, 0, 2)          # (u around, v pole to pole)
    hc_cam = cam.to_cam(head_c[None])[0]
    ipq, hshade, _, hfacing, horder = _mesh_quads(
        cam, hv3, lambda n, c: ((c - hc_cam) * n).sum(-1) < 0, ldir, amb, kd, gain, 0.0)
    yl_front = -face.H + 0.12 + rng.uniform(-0.1, 0.1)
    yl_back = rng.uniform(0.1, 0.7)
    cen3 = (hv3[:, :-1] + np.roll(hv3, -1, 0)[:, 1:]) / 2           # quad centres (face coords)
    hacc = np.zeros((h2, w2, 4), np.float32)      # shade, mask, y, z (face coordinates)
    hvals = np.stack([hshade.ravel(), np.ones(hshade.size), cen3[..., 1].ravel(), cen3[..., 2].ravel()], 1)
    for k in horder[hfacing.ravel()[horder] > 0]:
        cv2.fillConvexPoly(hacc, ipq[k], hvals[k].tolist(), cv2.LINE_8, _SHIFT + 1)
    kk = int(max(3, px * 0.08)) | 1
    hm = cv2.resize(hacc[..., 1], (W, H))
    hb = cv2.resize(cv2.GaussianBlur(hacc, (kk, kk), 0), (W, H))
    den = np.maximum(hb[..., 1], 1e-3)
    hs = hb[..., 0] / den
    ymap, zmap = hb[..., 2] / den, hb[..., 3] / den
    ylim = yl_front + (yl_back - yl_front) * _smoothstep(-0.05, -0.35, zmap)
    edge = max(1.0, px * 0.02)
    hf = 0.0 if bald else np.clip((ylim - ymap) * px / edge + 0.5, 0, 1)
    head_col = skin.astype(np.float32)[None, None] * hs[..., None]
    if hair_layer is not None:
        hf = hf * np.ones((H, W), np.float32)
        head_col = head_col * (1 - hf[..., None]) + hair_layer * (0.35 + 0.65 * hs)[..., None] * hf[..., None]
    _blend(img, np.clip(hm, 0, 1), head_col)
    hair_over = None
    if hair_layer is not None:
        hair_col = hair_layer * (0.35 + 0.65 * hs)[..., None]
        front = 1 - _smoothstep(-0.05, -0.25, zmap)
        hair_over = (np.clip(hm, 0, 1) * hf * front, hair_col)
    # ears (visible when the side faces the camera)
    for sx in (-1, 1):
        n = cam.R @ np.array([sx, 0, 0.25])
        if n[2] > -0.35:
            ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
            ear = np.stack([np.full(20, sx * (face.W + 0.02)), 0.18 + 0.22 * np.sin(ang),
                            -0.45 + 0.12 * np.cos(ang)], 1)
            ear[:, 0] += sx * 0.06 * (np.cos(ang) + 1)
            _fill(img, cam.project(ear), tuple(float(c) for c in skin * (0.5 + 0.3 * amb)))
    return hair_over


def _paint_skin(rng, img, s, hair_over, info):
    """The face's skin: a painter-sorted quad mesh with Lambertian + specular shading and texture."""
    face, cam, W, H, px, clean, skin, ldir, amb, kd, gain, spec = s.face, s.cam, s.W, s.H, s.px, s.clean, s.skin, s.ldir, s.amb, s.kd, s.gain, s.spec
    # ---- skin mesh, painter-sorted quads with Lambertian shading
    nphi, nt = 72, 16
    phis = np.linspace(-np.pi, np.pi, nphi, endpoint=False)
    ts = np.linspace(0, 1, nt + 1) ** 0.85
    rad = face.radius(phis)
    gx = _C[0] + np.cos(phis)[:, None] * rad[:, None] * ts[None, :]
    gy = _C[1] + np.sin(phis)[:, None] * rad[:, None] * ts[None, :]
    v3 = face.lift(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(nphi, nt + 1, 3)
    nose_v = face.nose_bump(gx, gy) > 0.035
    qnose = nose_v[:, :-1] | np.roll(nose_v, -1, axis=0)[:, 1:]
    fwd = cam.R @ np.array([0, 0, 1.0])
    ipq, shade, sp, facing, order = _mesh_quads(
        cam, v3, lambda n, c: (n @ fwd) < 0, ldir, amb, kd, gain, spec)
    acc = np.zeros((H, W, 4), np.float32)          # shade, specular, face mask, nose mask
    # rim quads of the forehead and temples fade into the head behind them (no mask-like seam);
    # the jaw and chin rim stay sharp (that is the annotated contour)
    tq = (ts[:-1] + ts[1:]) / 2
    upper = np.clip(-np.sin(phis + np.pi / nphi) + 0.35, 0, 1)[:, None] / 1.35
    rimw = np.clip((tq[None, :] - 0.8) / 0.2, 0, 1) * upper
    ch3 = np.where(qnose, 1.0, -rimw)
    vals = np.stack([shade.ravel(), sp.ravel(), np.ones(shade.size), ch3.ravel()], 1)
    for k in order[facing.ravel()[order] > 0]:
        cv2.fillConvexPoly(acc, ipq[k], vals[k].tolist(), cv2.LINE_8, _SHIFT)
    shade_img, spec_img = acc[..., 0].copy(), acc[..., 1].copy()
    face_m, nose_m = acc[..., 2].copy(), np.maximum(acc[..., 3], 0)
    rim_m = np.maximum(-acc[..., 3], 0)
    ks = int(max(3, px * 0.06)) | 1
    den = cv2.GaussianBlur(face_m, (ks, ks), 0)
    shade_img = cv2.GaussianBlur(shade_img * face_m, (ks, ks), 0) / np.maximum(den, 1e-3)
    spec_img = cv2.GaussianBlur(spec_img, (ks, ks), 0)
    ke = int(max(3, px * 0.035)) | 1
    face_aa = cv2.GaussianBlur(face_m, (ke, ke), 0)
    # skin albedo texture: large blotches, redness, fine pores
    tex = 1 + 0.06 * _smooth_noise(rng, H, W, max(6.0, px * 0.4), 3)
    if not clean:
        tex += 0.02 * rng.standard_normal((H, W), dtype=np.float32)
    if s.rnd:
        tex += _skin_detail(rng, H, W, px)
    skin_img = skin.astype(np.float32)[None, None, :] * tex[..., None]
    for sx in (-1, 1):   # cheek redness
        c = cam.project(face.lift([[sx * 0.45, 0.42]]))[0]
        sig = px * 0.16
        r = _box(c[None], 3 * sig, W, H)
        if r is None:
            continue
        sl, o = r
        yy, xx = np.mgrid[sl]
        g = np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * sig * sig)).astype(np.float32)
        _blend(skin_img[sl], g * rng.uniform(0.0, 0.25), skin * [1.0, 0.75, 0.75])
    skin_lit = skin_img * shade_img[..., None] + 255 * spec_img[..., None]
    face_pre = img.copy()
    _blend(img, face_aa * (1 - 0.5 * cv2.GaussianBlur(rim_m, (ke, ke), 0)), skin_lit)
    if hair_over is not None:   # hair falls over the top of the forehead (hides the face rim)
        _blend(img, hair_over[0], hair_over[1])
    info["skin_mask"] = face_m > 0.5
    info["nose_mask"] = nose_m > 0.5
    (s.shade_img, s.face_m, s.nose_m, s.face_aa, s.skin_lit, s.face_pre) = \
        (shade_img, face_m, nose_m, face_aa, skin_lit, face_pre)


def _paint_facial_hair(rng, img, s):
    """Stubble, moustache or beard (sometimes), under the lips."""
    face, lm, W, H, px, clean, hair, shade_img, P = s.face, s.lm, s.W, s.H, s.px, s.clean, s.hair, s.shade_img, s.P
    # ---- facial hair (beard / moustache / stubble), under the lips
    if (not clean) and rng.uniform() < 0.15:
        p68 = lm[68]
        kind = rng.integers(0, 3)          # 0 stubble, 1 moustache, 2 full beard
        bcol = np.minimum(hair, 90).astype(np.float32)
        polys = []
        mo = np.concatenate([P(face.lift(face.lip(np.linspace(-1.1, 1.1, 12), "uo") - [0, 0.015])),
                             P(face.lift(np.stack([np.linspace(face.mouth_w + 0.05, -face.mouth_w - 0.05, 12),
                                                   np.full(12, face.nose_len + 0.17)], 1)))])
        polys.append(mo)
        if kind != 1:
            jl = p68[3:14]
            low = P(face.lift(face.lip(np.linspace(1.05, -1.05, 12), "lo") + [0, 0.02]))
            polys.append(np.concatenate([jl, low]))
        r = _box(np.concatenate(polys), px * 0.05 + 3, W, H)
        if r is not None:
            sl, o = r
            m = _mask_poly(img[sl].shape, [p - o for p in polys])
            kb = int(max(3, px * 0.05)) | 1
            m = cv2.GaussianBlur(m, (kb, kb), 0)
            grain = rng.random(m.shape, dtype=np.float32)
            alpha = (0.3 if kind == 0 else 0.7) * (0.4 + 0.6 * grain)
            _blend(img[sl], m * alpha, bcol * (0.7 + 0.3 * shade_img[sl][..., None].clip(0, 1.3)))


def _paint_brows(rng, img, s):
    """Both brows, textured, over the shading."""
    face, W, H, px, brow_col, shade_img, P = s.face, s.W, s.H, s.px, s.brow_col, s.shade_img, s.P
    f32 = np.float32
    # ---- brows
    for sx in (-1, 1):
        u = np.linspace(0, 1, 16)
        poly = np.concatenate([P(face.lift(face.brow(sx, u, "up"))),
                               P(face.lift(face.brow(sx, u[::-1], "lo")))])
        bk = int(max(1, px * 0.012)) * 2 + 1
        r = _box(poly, bk + 2, W, H)
        if r is None:
            continue
        sl, o = r
        m = _mask_poly(img[sl].shape, [poly - o])
        m = cv2.GaussianBlur(m, (bk, bk), 0)
        hair_tex = 0.85 + 0.3 * rng.random(m.shape, dtype=f32)
        c = brow_col.astype(f32) * (hair_tex * shade_img[sl].clip(0.3, 1.5))[..., None]
        _blend(img[sl], m, c, rng.uniform(0.75, 0.95))


def _paint_eyes(rng, img, s, info):
    """Both eyes: crease shadow, sclera, iris, pupil, lid shadow, lashes, canthi."""
    face, W, H, px, clean, skin, makeup, shade_img, P, lw, shade_at = s.face, s.W, s.H, s.px, s.clean, s.skin, s.makeup, s.shade_img, s.P, s.lw, s.shade_at
    f32 = np.float32
    # ---- eyes
    eye_col = np.array([236, 228, 222.0]) * rng.uniform(0.85, 1.0)
    iris_col = _IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.7, 1.2)
    shadow_col = np.array([60, 40, 70.0]) if makeup and rng.uniform() < 0.6 else skin * 0.6
    info["eye"] = eye_col
    for sx in (-1, 1):
        u = np.linspace(0, 1, 24)
        upper = P(face.lift(face.eye(sx, u, True), _EYE_DZ))
        lower = P(face.lift(face.eye(sx, u[::-1], False), _EYE_DZ))
        poly = np.concatenate([upper, lower])
        crease = P(face.lift(face.eye(sx, u, True) - [0, 0.035 + 0.02 * face.eye_h / 0.06], _EYE_DZ))
        k3 = lw(0.04) * 2 + 1
        r = _box(np.concatenate([poly, crease]), k3 + lw(0.03) + 2, W, H)
        if r is None:
            continue
        sl, o = r
        sub = img[sl]
        hh, ww = sub.shape[:2]
        upper_o, lower_o, poly_o, crease_o = upper - o, lower - o, poly - o, crease - o
        # lid crease / eye shadow above the upper lid
        sm = np.zeros((hh, ww), f32)
        cv2.polylines(sm, [_ipts(crease_o)], False, 1.0, lw(0.03), cv2.LINE_AA, _SHIFT)
        sm = cv2.GaussianBlur(sm, (k3, k3), 0)
        _blend(sub, sm, shadow_col.astype(f32) * shade_img[sl][..., None], 0.35 if not makeup else 0.7)
        em = _mask_poly(sub.shape, [poly_o])
        sl_ = shade_at(P(face.lift(face.pupil(sx)[None]))[0])
        lid_sh = np.clip(0.55 + 0.45 * min(sl_, 1.2), 0.35, 1.1)
        eye_layer = np.empty((hh, ww, 3), f32)
        eye_layer[:] = eye_col * lid_sh
        # iris and pupil: a 3D circle on the eyeball tangent plane
        pc = face.pupil(sx)
        ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        circ = pc + face.iris_r * np.stack([np.cos(ang), np.sin(ang)], 1)
        zc = face.lift(pc[None], _EYE_DZ + 0.01)[0, 2]
        iris2 = P(np.c_[circ, np.full(len(ang), zc)]) - o
        pup2 = P(np.c_[pc + 0.42 * face.iris_r * np.stack([np.cos(ang), np.sin(ang)], 1),
                       np.full(len(ang), zc)]) - o
        cv2.fillPoly(eye_layer, [_ipts(iris2)], tuple(float(c) for c in iris_col * lid_sh), cv2.LINE_AA, _SHIFT)
        ring = np.zeros((hh, ww), f32)
        cv2.polylines(ring, [_ipts(iris2)], True, 1.0, lw(0.012), cv2.LINE_AA, _SHIFT)
        _blend(eye_layer, ring, iris_col * 0.4 * lid_sh, 0.8)
        cv2.fillPoly(eye_layer, [_ipts(pup2)], (12.0, 10.0, 10.0), cv2.LINE_AA, _SHIFT)
        if not clean:
            hl = P(np.array([[pc[0] + 0.3 * face.iris_r, pc[1] - 0.35 * face.iris_r, zc]]))[0] - o
            cv2.circle(eye_layer, tuple(int(v) for v in hl), max(1, int(px * 0.012)), (245, 245, 245), -1, cv2.LINE_AA)
        # upper lid shadow on the eyeball
        ls = np.zeros((hh, ww), f32)
        cv2.polylines(ls, [_ipts(upper_o)], False, 1.0, lw(0.035), cv2.LINE_AA, _SHIFT)
        ls = cv2.GaussianBlur(ls, (k3, k3), 0)
        _blend(eye_layer, ls * em, np.array([40, 30, 30.0]), 0.5)
        _blend(sub, em, eye_layer)
        # lashes / lid lines and canthi
        lash = (20.0, 15.0, 15.0) if not makeup else (5.0, 5.0, 5.0)
        cv2.polylines(sub, [_ipts(upper_o)], False, lash, max(2, lw(0.02 if not makeup else 0.028)), cv2.LINE_AA, _SHIFT)
        low_line = tuple(float(c) for c in skin * 0.45 * min(sl_, 1.0))
        cv2.polylines(sub, [_ipts(lower_o)], False, low_line, max(2, lw(0.012)), cv2.LINE_AA, _SHIFT)
        for cpt, col in ((upper_o[0], lash), (upper_o[-1], (150.0, 80.0, 80.0))):   # outer, inner corner
            cv2.circle(sub, tuple(int(round(v)) for v in cpt), max(2, lw(0.012)), col, -1, cv2.LINE_AA)


def _paint_nose(img, s):
    """The nose over the far eye under yaw; nostrils and alar creases."""
    face, W, H, skin, amb, gain, nose_m, face_m, face_pre, face_aa, skin_lit, P, lw = s.face, s.W, s.H, s.skin, s.amb, s.gain, s.nose_m, s.face_m, s.face_pre, s.face_aa, s.skin_lit, s.P, s.lw
    f32 = np.float32
    # ---- nose overlays the far eye under yaw; nostrils and alar creases
    r = _box(np.argwhere(nose_m > 0.5)[:, ::-1], 3, W, H) if nose_m.any() else None
    if r is not None:
        sl, o = r
        nm = cv2.GaussianBlur(nose_m[sl], (3, 3), 0) * face_m[sl]
        fp = face_pre[sl].copy()
        _blend(fp, face_aa[sl], skin_lit[sl])
        _blend(img[sl], nm, fp)
    nost_col = skin * 0.25 * min(1.0, amb * gain + 0.4)
    for sx in (-1, 1):
        cx = sx * face.nose_w * 0.45
        cy = face.nose_len + 0.13
        ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        ell = np.stack([cx + 0.045 * np.cos(ang) * (face.nose_w / 0.16), cy + 0.018 * np.sin(ang)], 1)
        ell = P(face.lift(ell, 0.01))
        a_ = np.linspace(-0.2, 1.3, 12)
        crease = np.stack([sx * (face.nose_w + 0.02 - 0.05 * (1 - np.cos(a_))),
                           face.nose_len + 0.02 + 0.07 * np.sin(a_)], 1)
        crease = P(face.lift(crease))
        r = _box(np.concatenate([ell, crease]), lw(0.012) + 4, W, H)
        if r is None:
            continue
        sl, o = r
        sub = img[sl]
        m = cv2.GaussianBlur(_mask_poly(sub.shape, [ell - o]), (3, 3), 0)
        _blend(sub, m, nost_col, 0.85)
        cm = np.zeros(sub.shape[:2], f32)
        cv2.polylines(cm, [_ipts(crease - o)], False, 1.0, lw(0.012), cv2.LINE_AA, _SHIFT)
        _blend(sub, cv2.GaussianBlur(cm, (3, 3), 0), skin * 0.45 * min(1.0, amb * gain + 0.3), 0.5)


def _paint_mouth(rng, img, s, info):
    """Lips, and the mouth cavity with teeth when open."""
    face, W, H, lip_col, P, lw, shade_at = s.face, s.W, s.H, s.lip_col, s.P, s.lw, s.shade_at
    f32 = np.float32
    # ---- mouth
    u = np.linspace(-1, 1, 25)
    uo = P(face.lift(face.lip(u, "uo")))
    lo_ = P(face.lift(face.lip(u[::-1], "lo")))
    ui = P(face.lift(face.lip(u, "ui")))
    li = P(face.lift(face.lip(u[::-1], "li")))
    info["mouth_corners"] = (uo[0], uo[-1])
    r = _box(np.concatenate([uo, lo_]), 4, W, H)
    if r is not None:
        sl, o = r
        sub = img[sl]
        uo, lo_, ui, li = uo - o, lo_ - o, ui - o, li - o
        lm_mask = _mask_poly(sub.shape, [np.concatenate([uo, lo_])])
        ms = shade_at(P(face.lift(face.lip(np.array([0.0]), "lo")))[0])
        lip_layer = np.empty(sub.shape, f32)
        lip_layer[:] = lip_col * np.clip(ms, 0.2, 1.5)
        up_mask = _mask_poly(sub.shape, [np.concatenate([uo, ui[::-1]])])
        _blend(lip_layer, up_mask, lip_col * 0.82 * np.clip(ms, 0.2, 1.5))
        inner = np.concatenate([ui, li])
        if face.open > 0.01:
            im = _mask_poly(sub.shape, [inner])
            cav = np.empty(sub.shape, f32)
            cav[:] = (45, 18, 20)
            teeth_h = rng.uniform(0.3, 0.6) * face.open
            tu = np.linspace(-0.75, 0.75, 15)
            tpoly = np.concatenate([P(face.lift(face.lip(tu, "ui"), -0.01)),
                                    P(face.lift(face.lip(tu[::-1], "ui") + [0, teeth_h], -0.01))]) - o
            tm = _mask_poly(sub.shape, [tpoly])
            _blend(cav, tm, np.array([225, 220, 205.0]) * np.clip(ms, 0.3, 1.2))
            _blend(lip_layer, im, cav)
        _blend(sub, cv2.GaussianBlur(lm_mask, (3, 3), 0), lip_layer)
        cv2.polylines(sub, [_ipts(ui if face.open <= 0.01 else inner)], face.open > 0.01,
                      tuple(float(c) for c in lip_col * 0.35), lw(0.008), cv2.LINE_AA, _SHIFT)


def _paint_eyeglasses(rng, img, s):
    """Eyeglasses (sometimes): transparent frames, so the points stay visible and unflagged."""
    face, cam, clean, P, lw = s.face, s.cam, s.clean, s.P, s.lw
    # ---- eyeglasses (transparent frames: the points stay visible, no occlusion flag)
    if (not clean) and rng.uniform() < 0.12:
        fcol = tuple(float(c) for c in rng.uniform(0, 80, 3))
        th = max(1, lw(rng.uniform(0.012, 0.03)))
        hw, hh = rng.uniform(0.2, 0.25), rng.uniform(0.12, 0.17)
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        for sx in (-1, 1):
            c = np.array([sx * (face.eye_out - face.eye_w / 2), -0.01])
            zc = face.surface_z(c[0], c[1]) + 0.16
            ring = np.stack([c[0] + hw * np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** 0.6,
                             c[1] + hh * np.sign(np.sin(ang)) * np.abs(np.sin(ang)) ** 0.6,
                             np.full(32, zc)], 1)
            cv2.polylines(img, [_ipts(P(ring))], True, fcol, th, cv2.LINE_AA, _SHIFT)
            temple = np.array([[c[0] + sx * hw, c[1] - hh * 0.5, zc], [sx * face.W * 1.02, 0.05, -0.45]])
            if (cam.R @ np.array([sx, 0, 0.3]))[2] > 0.2:   # near-side temple only
                cv2.polylines(img, [_ipts(P(temple))], False, fcol, th, cv2.LINE_AA, _SHIFT)
        zb = face.surface_z(0.0, -0.03) + 0.06
        bridge = np.array([[-(face.eye_out - face.eye_w / 2) + hw, -0.05, zb - 0.03], [0, -0.08, zb],
                           [(face.eye_out - face.eye_w / 2) - hw, -0.05, zb - 0.03]])
        cv2.polylines(img, [_ipts(P(bridge))], False, fcol, th, cv2.LINE_AA, _SHIFT)


def _paint_occluder(rng, img, s, d, occluder):
    """An occluder (at random, or as asked); returns the mask of its pixels."""
    lm, W, H, px, clean, skin = s.lm, s.W, s.H, s.px, s.clean, s.skin
    # ---- occluders
    omask = np.zeros((H, W), np.uint8)
    want = (rng.uniform() < d["occl"]) if occluder is None else occluder
    if clean and occluder is None:
        want = False
    if want:
        _occluder(rng, img, omask, lm, px, skin, W, H, photo=s.rnd)
    return omask


def _paint_camera(rng, img, s, d):
    """Colour cast, (motion) blur, sensor noise, sometimes grey; returns (image, blur sigma)."""
    px, clean = s.px, s.clean
    # ---- global colour, blur, noise
    blur = 0.0
    if not clean:
        cast = rng.uniform(0.85, 1.15, 3)
        img *= cast
        if rng.uniform() < d["blur"]:
            blur = float(rng.uniform(1.0, 3.5) * max(1.0, px / 120))
            if rng.uniform() < 0.4:   # motion blur
                img = _motion_blur(rng, img, blur)
            else:
                img = cv2.GaussianBlur(img, (0, 0), blur)
        else:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 6.0))
        if rng.uniform() < 0.05:
            g = img @ np.array([0.299, 0.587, 0.114], np.float32)
            img = np.repeat(g[..., None], 3, axis=2)
    return img, blur


def _paint(rng, face: FaceShape, cam: Camera, lm, W, H, px, d, clean, frontal, occluder, rnd=False):
    """Render the posed face into a W x H float image, one feature after the other (the order of
    the random draws is the order of the steps); returns (RGB uint8, info). rnd: the randomized
    style (its extra draws happen only then, so the default output stays as it was)."""
    info = {}
    s = _Scene(face, cam, lm, W, H, px, clean, rnd)
    img = _background_randomized(rng, H, W, px) if rnd else _background(rng, H, W)
    _paint_colours(rng, s, info)
    _paint_lighting(rng, s, d, info)
    hair_over = _paint_head(rng, img, s)
    _paint_skin(rng, img, s, hair_over, info)
    if rnd:
        _paint_side_hair(rng, img, s)
    _paint_facial_hair(rng, img, s)
    _paint_brows(rng, img, s)
    _paint_eyes(rng, img, s, info)
    _paint_nose(img, s)
    _paint_mouth(rng, img, s, info)
    _paint_eyeglasses(rng, img, s)
    info["occluder_mask"] = _paint_occluder(rng, img, s, d, occluder)
    if rnd:
        _paint_cast_shadow(rng, img, s)
        img, info["blur"] = _paint_camera_randomized(rng, img, s, d)
    else:
        img, info["blur"] = _paint_camera(rng, img, s, d)
    return np.clip(img, 0, 255).astype(np.uint8), info


def _occluder(rng, img, omask, lm, px, skin, W, H, photo=False):
    """Draw one occluding object and mark its pixels in omask."""
    kind = rng.choice(["hand", "rect", "ellipse", "glasses", "bar"], p=[0.3, 0.2, 0.2, 0.15, 0.15])
    p68 = lm[68]
    col = rng.uniform(0, 255, 3)
    m = np.zeros((H, W), np.uint8)
    target = p68[rng.integers(17, 68)] + rng.normal(0, px * 0.15, 2)
    if kind == "hand":
        col = skin * rng.uniform(0.75, 1.05)
        c = target
        ax = (int(px * rng.uniform(0.25, 0.4)), int(px * rng.uniform(0.3, 0.5)))
        ang = rng.uniform(0, 180)
        cv2.ellipse(m, tuple(int(v) for v in c), ax, ang, 0, 360, 1, -1)
        for f in range(4):   # fingers
            a = np.radians(ang - 90 + (f - 1.5) * 14)
            p0 = c + ax[1] * 0.5 * np.array([np.cos(a), np.sin(a)])
            p1 = c + ax[1] * rng.uniform(1.4, 1.9) * np.array([np.cos(a), np.sin(a)])
            cv2.line(m, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1, max(2, int(px * 0.11)))
    elif kind == "rect":
        c = target
        sz = px * rng.uniform(0.3, 0.9, 2)
        box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(sz[0]), float(sz[1])), float(rng.uniform(0, 180))))
        cv2.fillConvexPoly(m, np.round(box).astype(np.int32), 1)
    elif kind == "ellipse":
        cv2.ellipse(m, tuple(int(v) for v in target), (int(px * rng.uniform(0.15, 0.45)),
                    int(px * rng.uniform(0.15, 0.45))), rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == "glasses":
        col = rng.uniform(0, 60, 3)
        for a, b in ((36, 39), (42, 45)):
            c = (p68[a] + p68[b]) / 2 + [0, px * 0.02]
            w = np.linalg.norm(p68[b] - p68[a]) * rng.uniform(0.65, 0.85)
            ang = np.degrees(np.arctan2(*(p68[b] - p68[a])[::-1]))
            cv2.ellipse(m, tuple(int(v) for v in c), (int(w), int(w * rng.uniform(0.6, 0.85))), ang, 0, 360, 1, -1)
        cv2.line(m, tuple(int(v) for v in p68[39]), tuple(int(v) for v in p68[42]), 1, max(2, int(px * 0.04)))
    else:  # a bar (microphone, pen, scarf) across the lower or upper face
        a, b = p68[rng.integers(0, 17)], p68[rng.integers(27, 68)]
        p0 = a + (a - b) * rng.uniform(0.5, 1.5)
        cv2.line(m, tuple(int(v) for v in p0), tuple(int(v) for v in b), 1, max(3, int(px * rng.uniform(0.08, 0.25))))
    n = _smooth_noise(rng, H, W, max(6.0, px * 0.3), 2)
    layer = col[None, None, :] * (0.8 + 0.2 * n)[..., None]
    if kind != "hand" and rng.uniform() < 0.5:   # stripes / pattern
        yy, xx = np.mgrid[0:H, 0:W]
        per = rng.uniform(4, 20)
        stripe = (np.sin((xx * rng.uniform(-1, 1) + yy) / per) > 0)
        layer = np.where(stripe[..., None], layer, rng.uniform(0, 255, 3)[None, None, :])
    if photo and kind != "hand" and rng.uniform() < 0.6:   # randomized style: a real texture
        layer = _photo_patch(rng, H, W)
    mf = m.astype(np.float32)
    _blend(img, mf, layer.astype(np.float32))
    omask |= m


# ================================================================================================
# Dataset generation
# ================================================================================================

_WFLW_EVENTS = ["0--Parade", "1--Handshaking", "2--Demonstration", "4--Dancing", "7--Cheering",
                "12--Group", "20--Family_Group", "36--Football", "51--Dresses", "61--Street_Battle"]


def _split_300w(num_train, num_test):
    """(folder, subset, difficulty, ext) per face: train split 811:2000:337 over lfpw/helen/afw;
    test: common (lfpw 224 : helen 330) and challenging (ibug) in the 554:135 proportion."""
    jobs = []
    w = np.array([811, 2000, 337], float)
    n = np.floor(w / w.sum() * num_train).astype(int)
    if num_train >= 3:          # every official train folder holds at least one face
        n = np.maximum(n, 1)
    n[1] += num_train - n.sum()
    for folder, k, ext in (("lfpw/trainset", n[0], ".png"), ("helen/trainset", n[1], ".jpg"),
                           ("afw", n[2], ".jpg")):
        jobs += [(folder, "train", "normal", ext)] * int(k)
    n_ch = max(1, int(round(num_test * 135 / 689))) if num_test >= 2 else 0
    n_common = num_test - n_ch
    n_lfpw = int(round(n_common * 224 / 554))
    if n_common >= 2:           # both common-subset folders hold at least one face
        n_lfpw = min(max(n_lfpw, 1), n_common - 1)
    jobs += [("lfpw/testset", "common", "easy", ".png")] * n_lfpw
    jobs += [("helen/testset", "common", "easy", ".jpg")] * (n_common - n_lfpw)
    jobs += [("ibug", "challenging", "hard", ".jpg")] * n_ch
    return jobs


def _job_list(dataset, num_train, num_test):
    if dataset == "300w":
        return _split_300w(num_train, num_test)
    diff_tr = "normal"
    out = []
    for split, num in (("train", num_train), ("test", num_test)):
        out += [(split, split, diff_tr, ".jpg")] * num
    return out


def _render_job(args):
    """Worker: render face `index`; returns what the writer needs (encoded image or array)."""
    dataset, index, seed, image_size, job, style = args
    rng = np.random.default_rng(seed + index)
    folder, subset, difficulty, ext = job
    if dataset == "wflw":
        # roughly the WFLW test attribute mix: more pose / occlusion / blur / illumination
        difficulty = "hard" if rng.uniform() < 0.3 else "normal"
    if dataset == "cofw":
        difficulty = "normal"
    size = image_size
    if size is None and dataset == "cofw":
        size = (int(rng.integers(200, 321)), int(rng.integers(220, 341)))
    img, lm, flags = render_face(rng, image_size=size, difficulty=difficulty,
                                 occluder=True if dataset == "cofw" and rng.uniform() < 0.45 else None,
                                 style=style)
    out = {"index": index, "lm": lm, "flags": {k: flags[k] for k in ("attributes", "occluded", "yaw")}}
    if dataset == "cofw":
        if rng.uniform() < 0.02:    # a few grayscale images, stored 2D as in the real file
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        out["image"] = img
    else:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if ext == ".png":
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        else:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
        out["bytes"] = buf.tobytes()
        out["shape"] = img.shape
    return out


def _iter_results(tasks, workers, progress, desc):
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415
        bar = tqdm(total=len(tasks), desc=desc, unit="face")
    if workers and workers > 1 and (not hasattr(os, "fork") or "tensorflow" in sys.modules):
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if not (main_file and os.path.exists(main_file)):
            workers = 1        # spawn cannot re-import an interactive / stdin main module
    if workers and workers > 1 and len(tasks) > 8:
        import multiprocessing as mp

        # fork is fastest, but forking a process that already runs TensorFlow threads can hang
        method = "fork" if hasattr(os, "fork") and "tensorflow" not in sys.modules else "spawn"
        ctx = mp.get_context(method)
        with ctx.Pool(workers) as pool:
            for r in pool.imap(_render_job, tasks, chunksize=4):
                if bar:
                    bar.update(1)
                yield r
    else:
        for t in tasks:
            r = _render_job(t)
            if bar:
                bar.update(1)
            yield r
    if bar:
        bar.close()


def _box_xywh(p, image_shape, pad_frac):
    """The face box the annotation files carry: the points' extent padded by pad_frac, rounded
    outwards to whole pixels and clipped to the image; (x, y, w, h)."""
    lo, hi = p.min(0), p.max(0)
    pad = (hi - lo) * pad_frac
    lo = np.maximum(np.floor(lo - pad).astype(int), 0)
    hi = np.minimum(np.ceil(hi + pad).astype(int), [image_shape[1] - 1, image_shape[0] - 1])
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float64)


def generate(dataset: str, root, num_train: int, num_test: int, seed: int = 0, image_size=None,
             workers: Optional[int] = None, progress: bool = False, style: str = "default") -> Path:
    """Write one synthetic dataset in its official layout into `root` (atomically).

    Face k of the dataset (train faces first, then test faces) is rendered with
    np.random.default_rng(seed + k); the output is identical for the same arguments.
    style: "default" or "randomized" (render_face); recorded in the marker when not the default.
    """
    _check_style(style)
    dataset = str(dataset).lower()
    if dataset not in DATASET_NAMES:
        raise LandmarkError(f"unknown dataset {dataset!r}; choose 300w, cofw or wflw")
    if num_train < 0 or num_test < 0:
        raise LandmarkError("--train and --test must be >= 0")
    root = Path(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    except OSError as err:
        raise LandmarkError(f"{root.parent}: cannot write here ({err.strerror}); choose a writable "
                            f"output folder") from None
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    jobs = _job_list(dataset, num_train, num_test)
    tasks = [(dataset, k, int(seed), image_size, job, style) for k, job in enumerate(jobs)]
    t0 = time.time()
    try:
        results = _iter_results(tasks, workers, progress, f"synthetic {dataset}")
        if dataset == "300w":
            _write_300w(tmp, jobs, results)
        elif dataset == "wflw":
            _write_wflw(tmp, jobs, results)
        else:
            _write_cofw(tmp, jobs, results, num_train)
        marker = {"generator": "synthetic_faces.py", "version": GENERATOR_VERSION, "dataset": dataset,
                  "seed": int(seed), "num_train": int(num_train), "num_test": int(num_test),
                  "image_size": image_size, "seconds": round(time.time() - t0, 1),
                  "coordinates": "0-based pixel coordinates (pixel centres at integers), as written"}
        if style != "default":
            marker["style"] = style
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = None
        if root.exists():
            old = root.with_name(f".{root.name}.old-{os.getpid()}")
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write_300w(tmp: Path, jobs, results):
    for folder in sorted({j[0] for j in jobs}):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    counters = {}
    for r in results:
        folder, subset, _, ext = jobs[r["index"]]
        k = counters.get(folder, 0) + 1
        counters[folder] = k
        if folder.startswith("lfpw"):
            name = f"image_{k:04d}"
        elif folder.startswith("helen"):
            name = f"{100000 + 7919 * k % 900000}_{1 + k % 3}"
        elif folder == "afw":
            name = f"{1000000 + 104729 * k % 9000000}_{1 + k % 2}"
        else:
            name = f"image_{k:03d}_1"
        d = tmp / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / (name + ext)).write_bytes(r["bytes"])
        fmt.write_pts(d / (name + ".pts"), r["lm"][68], decimals=3)


def _write_wflw(tmp: Path, jobs, results):
    samples = {"train": [], "test": []}
    img_root = tmp / fmt.WFLW_IMAGE_DIR
    for r in results:
        split = jobs[r["index"]][1]
        k = r["index"]
        ev = _WFLW_EVENTS[k % len(_WFLW_EVENTS)]
        num, name = ev.split("--")
        rel = f"{ev}/{num}_{name}_{name.lower()}_{num}_{k}.jpg"
        (img_root / ev).mkdir(parents=True, exist_ok=True)
        (img_root / rel).write_bytes(r["bytes"])
        p = r["lm"][98]
        samples[split].append(fmt.Sample(id=rel, image_path=str(img_root / rel), landmarks_px=p,
                                         box_xywh=_box_xywh(p, r["shape"], 0.05),
                                         attributes=r["flags"]["attributes"]))
    for split in ("train", "test"):
        path = fmt.wflw_list_path(tmp, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt.write_wflw_list(path, samples[split], img_root, decimals=3)


def _write_cofw(tmp: Path, jobs, results, num_train):
    samples = {"train": [], "test": []}
    for r in results:
        split = jobs[r["index"]][1]
        p = r["lm"][29].astype(np.float64)
        samples[split].append(fmt.Sample(id=str(r["index"]), image_path="", landmarks_px=p,
                                         box_xywh=_box_xywh(p, r["image"].shape, 0.1),
                                         occluded=r["flags"]["occluded"][29], image=r["image"]))
    for split in ("train", "test"):
        fmt.write_cofw_mat(tmp / fmt.COFW_FILES[split][0], samples[split], split)


def is_complete(root, dataset=None, num_train=None, num_test=None, seed=None,
                style: Optional[str] = "default") -> bool:
    """True when root holds a finished synthetic dataset (matching the request when given).
    style: the rendering style asked for ("default" unless given; None accepts any); a marker
    without "style" holds the default style, so a randomized set never passes for the default one."""
    try:
        m = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    want = {"dataset": dataset, "num_train": num_train, "num_test": num_test, "seed": seed,
            "version": GENERATOR_VERSION}
    if style is not None and m.get("style", "default") != style:
        return False
    return all(v is None or m.get(k) == v for k, v in want.items())


def generate_default(dataset: str, root=None, progress: bool = True) -> Path:
    """The embedded default data of one dataset (sizes in DEFAULT_SIZES, seed 0), in
    configuration.SYNTHETIC_DIR/<dataset> unless root is given. Returns the folder. A folder
    already holding the same request is kept as it is."""
    dataset = str(dataset).lower()
    if dataset not in DEFAULT_SIZES:
        raise LandmarkError(f"unknown dataset {dataset!r}; choose 300w, cofw or wflw")
    if root is None:
        from configuration import SYNTHETIC_DIR
        root = SYNTHETIC_DIR / dataset
    n_tr, n_te = DEFAULT_SIZES[dataset]
    if is_complete(root, dataset, n_tr, n_te, 0):
        return Path(root)
    return generate(dataset, root, n_tr, n_te, seed=0, progress=progress and sys.stderr.isatty())


# ================================================================================================
# CLI
# ================================================================================================

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Render synthetic faces in the official 300W/COFW/WFLW formats.")
    ap.add_argument("--dataset", default="all", choices=["300w", "cofw", "wflw", "all"],
                    help="which dataset to render: 300w, cofw, wflw or all three (default: all)")
    ap.add_argument("--out", default=None, help="output folder (default: data/synthetic); "
                    "each dataset goes into OUT/<dataset>")
    ap.add_argument("--train", type=int, default=None,
                    help="training faces per dataset (default: 3000 300W, 500 COFW, 600 WFLW)")
    ap.add_argument("--test", type=int, default=None,
                    help="test faces per dataset (default: 300 300W, 150 COFW, 200 WFLW)")
    ap.add_argument("--seed", type=int, default=0,
                    help="random seed; face k is drawn from seed + k, so the same arguments give "
                         "the same images (default: 0)")
    ap.add_argument("--image-size", type=int, default=None, help="square images of this side "
                    "(default: random 256-450)")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes rendering faces in parallel (default: min(2, cores))")
    ap.add_argument("--style", default="default", choices=list(STYLES),
                    help="default (the embedded data's look) or randomized (domain randomisation for "
                         "photographs: real-photo backgrounds and textures, lighting, colour, blur, "
                         "noise, JPEG, hair at the face border; issue #16)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.out is None:
        from configuration import SYNTHETIC_DIR
        out = SYNTHETIC_DIR
    else:
        out = Path(a.out)
    names = DATASET_NAMES if a.dataset == "all" else (a.dataset,)
    for name in names:
        n_tr = a.train if a.train is not None else DEFAULT_SIZES[name][0]
        n_te = a.test if a.test is not None else DEFAULT_SIZES[name][1]
        t0 = time.time()
        root = generate(name, out / name, n_tr, n_te, seed=a.seed, image_size=a.image_size,
                        workers=a.workers, progress=not a.no_progress, style=a.style)
        dt = time.time() - t0
        print(f"{name}: {n_tr} train + {n_te} test faces in {root} ({dt:.1f} s, "
              f"{(n_tr + n_te) / max(dt, 1e-6):.1f} faces/s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
