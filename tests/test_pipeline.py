"""The one tf.data pipeline (data_util.TrainData.dataset) over a prepared folder read by the one
reader (data_util.load_prepared): every pool face once per epoch with its own landmarks, a seeded
per-epoch shuffle that a resume (later epoch, or mid-epoch start_step) reproduces, pool-aligned extra
targets (cached teacher predictions), and online augmentation that keeps the landmarks on the dots."""
from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import configuration as C  # noqa: E402
import data_util as du  # noqa: E402
import image_utility as iu  # noqa: E402
from test_geometry import blob_centroids  # noqa: E402

S, N, M = 48, 3, 10


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    """A prepared folder (ARCHITECTURE.md layout) of a 3-point custom dataset: M images with a white
    dot at each landmark."""
    root = tmp_path_factory.mktemp("dots")
    spec = root / "dots3.json"
    spec.write_text(json.dumps({"name": "dots3", "num_points": N, "flip_pairs": [[0, 1]],
                                "interocular": [[0], [1]]}))
    rng = np.random.default_rng(0)
    px = np.zeros((M, N, 2), np.float32)
    px[:, 0] = rng.uniform(12, 18, (M, 2))
    px[:, 1] = rng.uniform(30, 36, (M, 2)) * [1, 0] + rng.uniform(12, 18, (M, 2)) * [0, 1]
    px[:, 2] = rng.uniform(21, 27, (M, 2)) * [1, 0] + rng.uniform(30, 36, (M, 2)) * [0, 1]
    images = np.zeros((M, S, S, 3), np.uint8)
    for i in range(M):
        images[i] = iu.draw_landmarks(images[i], px[i], color=(255, 255, 255), radius=2)
    prepared = root / "prepared"
    for split in ("train", "test"):
        d = prepared / split
        d.mkdir(parents=True)
        np.save(d / "images.npy", images)
        np.save(d / "landmarks.npy", iu.normalize_landmarks(px, S).astype(np.float32))
        np.save(d / "landmarks_px.npy", px)
        np.save(d / "crop_boxes.npy", np.tile(np.array([0, 0, S], np.float32), (M, 1)))
        (d / "meta.json").write_text(json.dumps({"ids": [f"{split}/{i}" for i in range(M)]}))
    (prepared / "manifest.json").write_text(json.dumps(
        {"complete": True, "dataset": "dots3", "num_points": N, "input_size": S,
         "counts": {"train": M, "test": M}, "config": {"custom_spec": str(spec)}}))
    return prepared, spec, images, px


def pool(dots, **kw) -> du.TrainData:
    prepared, spec, _, _ = dots
    values = dict(dataset="dots3", custom_spec=str(spec), input_size=S, batch_size=4,
                  val_fraction=0.0, augment="none", seed=5)
    values.update(kw)
    cfg = C.TrainConfig(**values).validate()
    return du.TrainData(cfg, prepared, du.load_prepared(prepared, "train"))


def batches(ds):
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()} if isinstance(y, dict) else y.numpy())
            for x, y in ds]


def test_an_epoch_serves_every_pool_face_once_with_its_own_landmarks(dots):
    _, _, images, px = dots
    data = pool(dots)
    got = batches(data.dataset(0, 1))
    assert [len(x) for x, _ in got] == [4, 4, 2]
    rows = np.concatenate(data.epoch_batches(0))
    assert sorted(rows.tolist()) == list(range(M))              # each face once
    x = np.concatenate([b[0] for b in got])
    y = np.concatenate([b[1] for b in got])
    assert x.dtype == np.float32 and y.shape == (M, 2 * N)
    np.testing.assert_array_equal(x, images[rows].astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(y, iu.normalize_landmarks(px[rows], S).reshape(M, 2 * N))


def test_shuffle_is_per_epoch_and_a_resume_sees_the_same_batches(dots):
    data = pool(dots)
    assert not all(np.array_equal(a, b) for a, b in zip(data.epoch_batches(0),
                                                          data.epoch_batches(1)))
    whole = batches(data.dataset(0, 3))
    resumed = batches(data.dataset(1, 3))
    mid = batches(data.dataset(1, 3, start_step=2))
    assert len(whole) == 9 and len(resumed) == 6 and len(mid) == 4
    for (xa, ya), (xb, yb) in zip(whole[3:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, _), (xb, _) in zip(whole[5:], mid):
        np.testing.assert_array_equal(xa, xb)
    again = batches(pool(dots).dataset(0, 3))                     # same seed, same order
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(whole, again))


def test_dict_targets_carry_the_extra_rows_of_the_same_faces(dots):
    data = pool(dots)
    code = np.repeat(np.arange(data.size, dtype=np.float32)[:, None], 2 * N, axis=1)
    got = batches(data.dataset(0, 1, targets="dict", extra={"tough": code}))
    for (x, y), idx in zip(got, data.epoch_batches(0)):
        assert set(y) == {"landmarks", "tough"}
        np.testing.assert_array_equal(y["tough"][:, 0], idx.astype(np.float32))
    with pytest.raises(C.ConfigError):
        data.dataset(0, 1, targets="dict", extra={"tough": code},
                     augment_fn=du.default_online_augment(data.info))


def test_online_augmentation_keeps_the_landmarks_on_the_dots(dots):
    _, _, images, _ = dots
    data = pool(dots)
    # flips, rotations and gamma; no salt-and-pepper noise or blur, which would add or blur dots
    cfg = iu.AugmentConfig(p_noise=0.0, p_median=0.0)
    augment = du.default_online_augment(data.info, cfg)
    got = batches(data.dataset(0, 1, augment_fn=augment))
    changed = 0
    for (x, y), idx in zip(got, data.epoch_batches(0)):
        for i in range(len(x)):
            img = (x[i] * 255).round().astype(np.uint8)
            pts = iu.denormalize_landmarks(y[i].reshape(N, 2), S)
            found = blob_centroids(img, thresh=40)
            assert len(found) == N
            d = np.linalg.norm(found[:, None] - pts[None], axis=2)
            assert d.min(axis=1).max() < 1.5, "landmarks left their dots"
            changed += not np.array_equal(img, images[idx[i]])
    assert changed >= M // 2
    again = batches(pool(dots).dataset(0, 1, augment_fn=augment))   # reproducible for a seed
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, again))


def test_batchnorm_recalibration_draws_the_training_pool_and_no_validation_face(dots):
    """Precise BN must see what training saw: the plain faces *and* their offline copies (a copy is
    told apart here by its inverted pixels), never a validation face or a copy of one."""
    import training

    prepared, spec, images, _ = dots
    cfg = C.TrainConfig(dataset="dots3", custom_spec=str(spec), input_size=S, batch_size=4,
                        val_fraction=0.2, augment="offline", seed=5).validate()
    train = du.load_prepared(prepared, "train")
    src = np.repeat(np.arange(M), 2)                       # two copies a face
    copies = (255 - images[src]).astype(np.uint8)
    aug = du.PreparedSplit(dataset="dots3", split="train_aug", path=prepared / "train_aug",
                           images=copies, landmarks=train.landmarks[src],
                           landmarks_px=train.landmarks_px[src], crop_boxes=train.crop_boxes[src],
                           meta={"source_index": src.tolist()}, num_points=N, input_size=S)
    data = du.TrainData(cfg, prepared, train, aug)
    assert len(data.val_rows) == 2 and data.size == 3 * (M - 2)
    drawn = training.recalibration_images(data, 1000)      # more than the pool: all of it, once
    expected = np.concatenate([images[data.train_rows], copies[data.aug_rows]])
    assert sorted(a.tobytes() for a in drawn) == sorted(a.tobytes() for a in expected)
    # mixed, as training batches are: the pool lists plain faces first, the draw must not
    plain = {a.tobytes() for a in images[data.train_rows]}
    is_plain = [a.tobytes() in plain for a in drawn]
    assert is_plain != sorted(is_plain, reverse=True)
    some = training.recalibration_images(data, 5)
    assert len({a.tobytes() for a in some}) == 5
    assert {a.tobytes() for a in some} <= {a.tobytes() for a in expected}
    assert training.recalibration_images(data, 0).size == 0


def test_batchnorm_recalibration_augments_online_as_training_does(dots):
    import training

    _, _, images, _ = dots
    data = pool(dots)

    def invert(image, points, rng):
        return 255 - image, points

    drawn = training.recalibration_images(data, M, augment_fn=invert)
    assert sorted(a.tobytes() for a in drawn) == sorted((255 - a).tobytes() for a in images)
