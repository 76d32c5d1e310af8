"""tf.data pipeline (data_util.build_dataset): shapes, dtypes, order, and that online augmentation
keeps every target array on the image's dots (one transform for all targets of a face)."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import data_util as du  # noqa: E402
import image_utility as iu  # noqa: E402
from test_geometry import blob_centroids  # noqa: E402

S, N = 48, 3


@pytest.fixture(scope="module")
def dots():
    """M images with N white dots each at the ground-truth landmarks."""
    rng = np.random.default_rng(0)
    m = 6
    px = rng.uniform(12, 36, (m, N, 2)).astype(np.float32)
    # keep the dots apart
    px[:, 0] = [14, 16]
    px[:, 1] = [34, 15]
    px[:, 2] += [0, 10]
    px[:, 2] = np.clip(px[:, 2], 12, 38)
    images = np.zeros((m, S, S, 3), np.uint8)
    for i in range(m):
        images[i] = iu.draw_landmarks(images[i], px[i], color=(255, 255, 255), radius=2)
    gt = iu.normalize_landmarks(px, S)
    return images, gt, px


def test_shapes_dtypes_and_order_without_augmentation(dots):
    images, gt, _ = dots
    soft = gt * 0.9
    ds = du.build_dataset(images, {"gt": gt, "soft": soft}, batch_size=4, shuffle=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 2]
    x, y = batches[0]
    assert x.dtype == tf.float32 and x.shape == (4, S, S, 3)
    assert y["gt"].dtype == tf.float32 and y["gt"].shape == (4, 2 * N)
    np.testing.assert_allclose(x.numpy(), images[:4] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y["gt"].numpy(), gt[:4].reshape(4, 2 * N))
    np.testing.assert_array_equal(y["soft"].numpy(), soft[:4].reshape(4, 2 * N))
    assert ds.element_spec[0].shape.as_list() == [None, S, S, 3]


def test_indices_shuffle_repeat_drop_remainder(dots):
    images, gt, _ = dots
    ds = du.build_dataset(images, {"gt": gt}, batch_size=2, shuffle=True, seed=3, indices=[5, 1, 3],
                          drop_remainder=True)
    got = [b[1]["gt"].numpy() for b in ds]
    assert len(got) == 1 and got[0].shape == (2, 2 * N)
    rows = {tuple(r) for r in got[0]}
    assert rows <= {tuple(gt[i].reshape(-1)) for i in (5, 1, 3)}
    # shuffling covers every index once per epoch and is reproducible for a seed
    def order(seed):
        ds = du.build_dataset(images, {"gt": gt}, batch_size=6, shuffle=True, seed=seed)
        first = next(iter(ds))[1]["gt"].numpy()
        return [int(np.argmin(np.abs(gt.reshape(6, -1) - r).sum(1))) for r in first]

    assert sorted(order(1)) == list(range(6)) and order(1) == order(1)
    ds = du.build_dataset(images, {"gt": gt}, batch_size=4, repeat=True)
    assert len(list(ds.take(5))) == 5


def test_memmap_input(dots, tmp_path):
    images, gt, _ = dots
    np.save(tmp_path / "i.npy", images)
    mm = np.load(tmp_path / "i.npy", mmap_mode="r")
    x, _ = next(iter(du.build_dataset(mm, {"gt": gt}, batch_size=3, shuffle=True, seed=0)))
    assert x.shape == (3, S, S, 3)


def test_augmentation_keeps_every_target_on_the_dots(dots):
    images, gt, _ = dots
    other = gt[:, ::-1]                                   # a second target: same points, reversed
    cfg = iu.AugmentConfig(p_flip=0.5, p_affine=1.0, max_rotation=0.5, p_noise=0.0, p_median=0.0,
                           p_gamma=0.5)
    perm = [1, 0, 2]
    ds = du.build_dataset(images, {"gt": gt, "rev": other}, batch_size=6, shuffle=False, seed=1,
                          augment=cfg, flip_permutation=perm)
    x, y = next(iter(ds))
    assert x.shape == (6, S, S, 3) and x.dtype == tf.float32 and y["gt"].shape == (6, 2 * N)
    changed = 0
    for i in range(6):
        img = (x[i].numpy() * 255).round().astype(np.uint8)
        pts = iu.denormalize_landmarks(y["gt"][i].numpy().reshape(N, 2), S)
        rev = iu.denormalize_landmarks(y["rev"][i].numpy().reshape(N, 2), S)
        found = blob_centroids(img, thresh=40)
        assert len(found) == N
        d = np.linalg.norm(found[:, None] - pts[None], axis=2)
        assert d.min(axis=1).max() < 1.5, f"face {i}: landmarks left their dots"
        # the same transform moved the second target: its points are the same set
        np.testing.assert_allclose(np.sort(rev, axis=0), np.sort(pts, axis=0), atol=1e-4)
        changed += not np.array_equal(img, images[i])
    assert changed == 6
    # reproducible for a seed
    x2, _ = next(iter(du.build_dataset(images, {"gt": gt, "rev": other}, batch_size=6, shuffle=False,
                                       seed=1, augment=cfg, flip_permutation=perm)))
    np.testing.assert_array_equal(x.numpy(), x2.numpy())
