"""Tests of the randomized rendering style of synthetic_faces.py (issue #16) and of the guarantee
that comes with it: the default style's output is byte-identical to what it was before the style
existed (the embedded benchmark data must never change)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import synthetic_faces as sf
from errors import LandmarkError

REPO = Path(__file__).resolve().parent.parent
EMBEDDED_300W = REPO / "data" / "synthetic" / "300w"


def _digest(img, lm) -> str:
    h = hashlib.sha256(img.tobytes())
    for n in (68, 98, 29):
        h.update(lm[n].tobytes())
    return h.hexdigest()


# sha256 of (pixels, 68/98/29 points) of render_face(np.random.default_rng(seed), **kwargs), taken
# with the renderer as it was before the randomized style was added (OpenCV 4.12.0, numpy 2.2).
DEFAULT_DIGESTS = [
    (0, {}, "411052ae9a6b34b4f0b95afcac017b37d99fa1771641e2434444199a2b0a89c6"),
    (1, {}, "66b94df44c566e4bd5bf427ebdda60500b1608f6ef0564b616f6343f713c8d6f"),
    (7, dict(difficulty="hard"), "0c9b5f00e8ac7d774c7c6683f7487c0d6b1fcbf04bacde34f1580b4aed3f25f8"),
    (3000, dict(difficulty="easy"), "6b38405d4959cafce61463f826ed64dae59a664174aa64089824c3fc8741402b"),
    (11, dict(clean=True), "67fd62b9ea2bb8f0665a772f0ce7dd981a7d1f6d6fecdffc4027d4b13a129e98"),
    (12, dict(frontal=True, image_size=200), "ed3876a3a3f11d1d5385a4b8c7e6e243b744933f43fe35c215afc3310b69336b"),
    (13, dict(occluder=True), "ecbbbce5f55932a213752e01c7e460d4b121d384fcee2662c5d06f1c6599905b"),
]

pinned_opencv = pytest.mark.skipif(not cv2.__version__.startswith("4.12."),
                                   reason="digests recorded with OpenCV 4.12 (requirements.txt pins it)")


@pinned_opencv
@pytest.mark.parametrize("seed,kwargs,want", DEFAULT_DIGESTS)
def test_default_style_output_is_unchanged(seed, kwargs, want):
    img, lm, _ = sf.render_face(np.random.default_rng(seed), **kwargs)
    assert _digest(img, lm) == want
    img2, lm2, _ = sf.render_face(np.random.default_rng(seed), style="default", **kwargs)
    assert _digest(img2, lm2) == want


@pytest.mark.skipif(not (EMBEDDED_300W / sf.MARKER).is_file(), reason="embedded 300W data not generated")
def test_default_jobs_reproduce_the_embedded_files_byte_for_byte():
    """Faces of the embedded 300W set rendered again (default style, as generate_default does)
    give exactly the bytes of the image files on disk: PNG (lfpw) and JPEG (helen) faces."""
    n_tr, n_te = sf.DEFAULT_SIZES["300w"]
    jobs = sf._split_300w(n_tr, n_te)
    marker = json.loads((EMBEDDED_300W / sf.MARKER).read_text())
    assert "style" not in marker and marker["version"] == sf.GENERATOR_VERSION == 1
    n_lfpw = sum(1 for j in jobs if j[0] == "lfpw/trainset")
    cases = [(0, "lfpw/trainset/image_0001.png"), (1, "lfpw/trainset/image_0002.png"),
             (n_lfpw, f"helen/trainset/{100000 + 7919 % 900000}_2.jpg")]
    for index, rel in cases:
        r = sf._render_job(("300w", index, 0, None, jobs[index], "default"))
        assert r["bytes"] == (EMBEDDED_300W / rel).read_bytes(), rel


def test_randomized_is_deterministic_and_differs_from_default():
    a = sf.render_face(np.random.default_rng(5), style="randomized")
    b = sf.render_face(np.random.default_rng(5), style="randomized")
    d = sf.render_face(np.random.default_rng(5))
    assert _digest(a[0], a[1]) == _digest(b[0], b[1])
    assert _digest(a[0], a[1]) != _digest(d[0], d[1])
    img, lm, flags = a
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    h, w = img.shape[:2]
    for n in (68, 98, 29):
        assert lm[n].shape == (n, 2) and np.all(np.isfinite(lm[n]))
        assert np.all(lm[n] >= 0) and np.all(lm[n][:, 0] < w) and np.all(lm[n][:, 1] < h)
    assert set(flags["occluded"]) == {68, 98, 29}


def test_randomized_style_varies_the_photometry():
    """Over a few faces the randomized style gives grey images and a wider spread of brightness
    and contrast than the default style (the point of the option)."""
    def stats(style):
        out = []
        for k in range(12):
            img, _, _ = sf.render_face(np.random.default_rng(100 + k), image_size=160, style=style)
            f = img.astype(np.float32)
            out.append((f.mean(), f.std(), float(np.abs(f - f.mean(-1, keepdims=True)).max() < 3)))
        return np.array(out)

    r, d = stats("randomized"), stats("default")
    assert r[:, 2].sum() >= 1                      # at least one grey image (25% of them)
    assert np.ptp(r[:, 0]) > 0.8 * np.ptp(d[:, 0])


def test_clean_ignores_the_style():
    a = sf.render_face(np.random.default_rng(3), clean=True)
    b = sf.render_face(np.random.default_rng(3), clean=True, style="randomized")
    assert _digest(a[0], a[1]) == _digest(b[0], b[1])


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(LandmarkError, match="style"):
        sf.render_face(np.random.default_rng(0), style="photoreal")
    with pytest.raises(LandmarkError, match="style"):
        sf.generate("300w", tmp_path / "x", 3, 2, style="photoreal", workers=1)


def test_photos_come_from_a_dependency():
    photos = sf._photos()
    assert len(photos) == 2
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.float32 for p in photos)


def test_generate_randomized_marks_its_style(tmp_path):
    root = sf.generate("300w", tmp_path / "300w", 3, 2, seed=50, workers=1, style="randomized")
    marker = json.loads((root / sf.MARKER).read_text())
    assert marker["style"] == "randomized" and marker["version"] == sf.GENERATOR_VERSION
    # a randomized set never passes for the default request (data_util._resolve_root asks that)
    assert not sf.is_complete(root, "300w", 3, 2, 50)
    assert sf.is_complete(root, "300w", 3, 2, 50, style="randomized")
    assert sf.is_complete(root, "300w", 3, 2, 50, style=None)
    default = sf.generate("300w", tmp_path / "d300w", 3, 2, seed=50, workers=1)
    assert "style" not in json.loads((default / sf.MARKER).read_text())
    assert sf.is_complete(default, "300w", 3, 2, 50)
    assert not sf.is_complete(default, "300w", 3, 2, 50, style="randomized")
    a = sorted(p.name for p in root.rglob("*.pts"))
    assert a == sorted(p.name for p in default.rglob("*.pts")) and len(a) == 5


def test_cli_style_flag(tmp_path):
    assert sf.main(["--dataset", "300w", "--out", str(tmp_path), "--train", "3", "--test", "2",
                    "--style", "randomized", "--workers", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "300w" / sf.MARKER).read_text())["style"] == "randomized"
