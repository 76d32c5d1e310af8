"""Teacher and validation predictions are made in inference mode (issue 37), checked directly on
networks WITH Dropout and BatchNorm whose training-mode outputs differ a lot from their inference
outputs: training.predict_images (validation NME, precise-BN comparison), the ValidationNME
callback, the cached teacher predictions of the student trainer and the Distiller's on-the-batch
teacher predictions must all equal model(x, training=False).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import configuration as C  # noqa: E402
import data_util as du  # noqa: E402
import fixtures as fx  # noqa: E402

S, N, M = 32, 68, 10


def dropout_bn_net(seed: int):
    """Conv -> BatchNorm (moving statistics far from any batch's) -> Dropout(0.5) -> Dense(2N)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((S, S, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inp, keras.layers.Dense(2 * N)(x))
    rng = np.random.default_rng(seed)
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    g, b, _, _ = bn.get_weights()
    bn.set_weights([g, b, rng.normal(2.0, 0.5, g.shape), rng.uniform(4.0, 9.0, g.shape)])
    return model


def _images(seed=0, m=M):
    return np.random.default_rng(seed).integers(0, 256, (m, S, S, 3), dtype=np.uint8)


def _modes(model, images):
    x = images.astype(np.float32) / np.float32(255.0)
    infer = np.asarray(model(x, training=False))
    stats = [np.array(w) for w in model.non_trainable_weights]
    train = np.asarray(model(x, training=True))
    for w, v in zip(model.non_trainable_weights, stats):
        w.assign(v)                     # undo the training call's moving-average update
    assert np.abs(train - infer).mean() > 0.05, "the two modes must differ for the test to mean anything"
    return infer, train


def test_predict_images_is_inference_mode_with_dropout_and_batchnorm():
    import training

    model, images = dropout_bn_net(1), _images()
    infer, _ = _modes(model, images)
    got = training.predict_images(model, images, batch_size=4)
    np.testing.assert_allclose(got, infer, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(training.predict_images(model, images, batch_size=3), got)


def test_validation_nme_is_the_inference_mode_nme():
    import training

    model, images = dropout_bn_net(2), _images(1)
    gt = np.random.default_rng(5).uniform(-0.3, 0.3, (M, N, 2)).astype(np.float32)
    gt[:, 36], gt[:, 45] = (0.2, 0.1), (-0.2, 0.1)              # inter-ocular 0.4 in every face
    infer, train = _modes(model, images)

    def nme(pred):
        return float(np.mean(np.linalg.norm(pred.reshape(M, N, 2) - gt, axis=2).mean(1) / 0.4))

    cb = training.ValidationNME(model, images, gt, C.dataset_info("300w"), batch_size=4)
    logs = {}
    cb.on_epoch_end(0, logs)
    assert logs["val_nme"] == pytest.approx(nme(infer), rel=1e-5)
    assert abs(nme(train) - nme(infer)) > 0.05 * nme(infer)


@pytest.fixture
def pool(tmp_path):
    prepared = tmp_path / "p"
    norm = np.random.default_rng(0).uniform(-0.3, 0.3, (M, N, 2))
    meta = {"ids": [f"f{i}" for i in range(M)], "image_paths": [""] * M, "subsets": ["train"] * M,
            "attributes": [None] * M, "occluded": [None] * M}
    fx.write_prepared_split(prepared / "train", norm, S, images=_images(2), meta=meta)
    fx.write_manifest(prepared, "300w", N, S, {"train": M})
    cfg = C.TrainConfig(dataset="300w", input_size=S, batch_size=4, val_fraction=0.0,
                        augment="none", seed=0).validate()
    return du.TrainData(cfg, prepared, du.load_prepared(prepared, "train"))


def test_cached_teacher_predictions_are_inference_mode(tmp_path, pool):
    from student_trainer import cached_teacher_predictions

    teacher = dropout_bn_net(3)
    images = np.asarray(pool.pool_images(np.arange(pool.size)))
    infer, _ = _modes(teacher, images)
    got = cached_teacher_predictions(tmp_path / "run", "tough", teacher, None, pool, batch_size=4,
                                     verbose=0)
    np.testing.assert_allclose(got, infer, rtol=1e-5, atol=1e-5)


def test_distiller_on_the_batch_teacher_predictions_are_inference_mode():
    from student_trainer import Distiller

    tough, tolerant, student = dropout_bn_net(4), dropout_bn_net(5), dropout_bn_net(6)
    images = _images(3)
    x = images.astype(np.float32) / np.float32(255.0)
    want_a, _ = _modes(tough, images)
    want_s, _ = _modes(tolerant, images)
    d = Distiller(student, tough, tolerant, loss_config=C.LOSS_PRESETS["code"], mode="kd")
    g = np.zeros((M, 2 * N), np.float32)
    for _ in range(2):                      # deterministic: no Dropout draw, no batch statistics
        a, s = d.teacher_predictions(x, {"landmarks": g})
        np.testing.assert_allclose(np.asarray(a), want_a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(s), want_s, rtol=1e-5, atol=1e-5)
