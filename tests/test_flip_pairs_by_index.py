"""A custom spec's flip pairs are used wherever a face is mirrored (issue 37): the offline copies
(data_util.augment_prepared), the online flips of the training pipeline and the flip test
(inference.with_flip_test). Each landmark is matched to its dot BY INDEX, not to the nearest dot of
any index, so a mirror that keeps the left and right labels fails.

The faces: a 3-point custom layout, "left eye" 0 (a red dot), "right eye" 1 (a green dot) and
"mouth" 2 (a blue dot), flip pairs [[0, 1]]. After a correct mirror, point 0 is the mirrored point 1:
it sits on the GREEN dot, now on the left; point 1 on the red dot; point 2 stays on the blue dot. A
mirrored image is recognised by its red dot lying right of its green one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import configuration as C
import data_util as du
import fixtures as fx
import image_utility as iu

S, N, M = 48, 3, 6
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))     # point 0 red, 1 green, 2 blue (RGB)
SPEC = {"name": "eyes3_flip", "num_points": N, "flip_pairs": [[0, 1]], "interocular": [[0], [1]]}


def _faces(rng, m=M):
    px = np.zeros((m, N, 2))
    px[:, 0] = rng.uniform(13, 17, (m, 2))                         # left eye
    px[:, 1] = np.c_[rng.uniform(31, 35, m), rng.uniform(13, 17, m)]   # right eye
    px[:, 2] = np.c_[rng.uniform(22, 26, m), rng.uniform(31, 35, m)]   # mouth
    images = np.zeros((m, S, S, 3), np.uint8)
    for i in range(m):
        for k in range(N):
            images[i] = iu.draw_landmarks(images[i], px[i, k:k + 1], color=COLOURS[k], radius=2)
    return px.astype(np.float32), images


def _dot(img, k) -> np.ndarray:
    """Centroid of the dot of colour k (its own channel high, the other two low)."""
    im = img.astype(np.float64)
    others = [c for c in range(3) if c != k]
    w = np.clip(im[..., k] - im[..., others].max(axis=2), 0, None)
    w[w < 40] = 0
    assert w.sum() > 0, f"dot {k} disappeared"
    ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def check_by_index(img, pts_px, tol=1.5) -> bool:
    """Each landmark index on ITS dot; returns whether the image is mirrored."""
    red, green, blue = (_dot(img, k) for k in range(3))
    mirrored = red[0] > green[0]
    want = [green, red, blue] if mirrored else [red, green, blue]
    for k in range(N):
        d = float(np.linalg.norm(pts_px[k] - want[k]))
        assert d < tol, (f"point {k} is {d:.1f} px from its dot (mirrored image: {mirrored}); "
                         f"a mirror must swap the flip pairs' labels")
    return bool(mirrored)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("flip3")
    spec = root / "eyes3_flip.json"
    spec.write_text(json.dumps(SPEC))
    px, images = _faces(np.random.default_rng(3))
    out = root / "prepared"
    meta = {"ids": [f"face_{i}" for i in range(M)], "image_paths": [""] * M,
            "subsets": ["train"] * M, "attributes": [None] * M, "occluded": [None] * M}
    fx.write_prepared_split(out / "train", iu.normalize_landmarks(px, S), S, images=images, meta=meta)
    fx.write_manifest(out, SPEC["name"], N, S, {"train": M}, config={"custom_spec": str(spec)})
    return out, spec, px, images


def test_check_by_index_rejects_a_mirror_that_keeps_the_labels():
    """The checker itself: a mirrored image with the labels kept (x -> W-1-x, no re-indexing) fails,
    the same mirror re-indexed passes."""
    px, images = _faces(np.random.default_rng(0), 1)
    img, pts = images[0][:, ::-1], px[0].copy()
    pts[:, 0] = S - 1 - pts[:, 0]
    with pytest.raises(AssertionError, match="point 0"):
        check_by_index(img, pts)
    assert check_by_index(img, pts[[1, 0, 2]])
    assert not check_by_index(images[0], px[0])


def test_offline_copies_swap_the_custom_flip_pairs(prepared):
    out, _, _, _ = prepared
    cfg = iu.AugmentConfig(p_noise=0.0, p_median=0.0)    # no dots added or blurred away
    du.augment_prepared(out, copies=2, seed=1, cfg=cfg, progress=False)
    aug = du.load_prepared(out, "train_aug")
    flips = [check_by_index(np.asarray(aug.images[i]), iu.denormalize_landmarks(aug.landmarks[i], S))
             for i in range(len(aug))]
    assert len(aug) == 2 * M
    assert flips == [c % 2 == 0 for c in aug.meta["copy"]]     # every even copy is mirrored


def test_online_flips_swap_the_custom_flip_pairs(prepared):
    pytest.importorskip("tensorflow")
    out, spec, _, _ = prepared
    cfg = C.TrainConfig(dataset=SPEC["name"], custom_spec=str(spec), input_size=S, batch_size=3,
                        val_fraction=0.0, augment="none", seed=2).validate()
    data = du.TrainData(cfg, out, du.load_prepared(out, "train"))
    augment = du.default_online_augment(data.info, iu.AugmentConfig(p_noise=0.0, p_median=0.0))
    flips = []
    for epoch in range(3):
        for x, y in data.dataset(epoch, epoch + 1, augment_fn=augment):
            for img, pts in zip(x.numpy(), y.numpy()):
                flips.append(check_by_index((img * 255).round().astype(np.uint8),
                                            iu.denormalize_landmarks(pts.reshape(N, 2), S)))
    assert 0 < sum(flips) < len(flips)          # both mirrored and plain faces were served


class _SemanticDotModel:
    """A stand-in for a trained model: point 0 on the upper dot further left, 1 on the upper dot
    further right, 2 on the lower dot, whatever their colours (as a network trained with flips
    predicts the left eye on the left)."""

    path, input_size, num_points = "dots", S, N

    def predict_norm(self, images, batch_size=32):
        out = []
        for img in np.asarray(images):
            u8 = (img * 255).round().astype(np.uint8)
            dots = sorted((_dot(u8, k) for k in range(3)), key=lambda p: p[1])   # by y
            upper = sorted(dots[:2], key=lambda p: p[0])
            out.append(iu.normalize_landmarks(np.stack([upper[0], upper[1], dots[2]]), S))
        return np.asarray(out, np.float32)


def test_flip_test_reindexes_with_the_custom_flip_pairs(prepared):
    import inference

    _, _, px, images = prepared
    base = _SemanticDotModel()
    base.__class__ = type("SemanticDotPredictor", (_SemanticDotModel, inference.Predictor), {})
    flip = inference.with_flip_test(base, C.DatasetInfo.from_spec(SPEC))
    got = iu.denormalize_landmarks(flip.predict_norm(images.astype(np.float32) / 255), S)
    for img, pts in zip(images, got):
        assert check_by_index(img, pts, tol=1.0) is False
    # the mirrored half alone re-indexed lands on the same dots as the plain prediction
    np.testing.assert_allclose(got, iu.denormalize_landmarks(base.predict_norm(images / 255.0), S),
                               atol=0.75)
