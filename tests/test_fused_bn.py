"""cnn_model.fused_batchnorm: TensorFlow's fused batch-norm kernel in training mode gives Keras 3's
BatchNormalization results (output, gradients, moving statistics) to float32 rounding, and leaves
everything else (inference mode, other inputs, saved files, the layer class) as Keras has it."""
from __future__ import annotations

import numpy as np
import pytest

import cnn_model

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the fused path exists on the TensorFlow backend only")

TOL = 1e-5


def _layer(shape, seed=0, **kwargs):
    """A built BatchNormalization with random gamma, beta and moving statistics."""
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    c = shape[-1]
    if layer.scale:
        layer.gamma.assign(rng.normal(1.0, 0.3, c).astype(np.float32))
    if layer.center:
        layer.beta.assign(rng.normal(0.0, 0.3, c).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0.0, 1.0, c).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    return layer


def _train_call(fused, shape, seed=0, training=True, **kwargs):
    """(output, d/dx, d/dgamma, d/dbeta, moving_mean, moving_variance, graph op types) of one traced
    call of a fresh layer on random inputs, with `fused` on or off."""
    layer = _layer(shape, seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    x = tf.constant(rng.normal(3.0, 2.0, shape).astype(np.float32))
    w = tf.constant(rng.normal(0.0, 1.0, shape).astype(np.float32))
    params = [v for v in (layer.gamma, layer.beta) if v is not None]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
        return y, tape.gradient(loss, [x] + params)

    with cnn_model.fused_batchnorm(fused, only_if_faster=False):
        y, grads = step(x)
        ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    out = [np.asarray(y), *[np.asarray(g) for g in grads],
           np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
    return out, ops


def _close(a, b):
    for p, q in zip(a, b):
        scale = max(1.0, float(np.max(np.abs(q))))
        np.testing.assert_allclose(p, q, rtol=0, atol=TOL * scale)


@pytest.mark.parametrize("shape,kwargs", [
    ((8, 7, 5, 16), {"momentum": 0.9}),
    ((4, 3, 3, 8), {"momentum": 0.99, "epsilon": 1.001e-3}),      # EfficientNet's epsilon
    ((2, 3, 3, 5), {"momentum": 0.5, "scale": False}),
    ((3, 2, 4, 6), {"momentum": 0.7, "center": False}),
    ((1, 1, 1, 4), {"momentum": 0.9}),                             # one value per channel
])
def test_fused_training_call_matches_keras(shape, kwargs):
    fused, fused_ops = _train_call(True, shape, **kwargs)
    plain, plain_ops = _train_call(False, shape, **kwargs)
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormGradV3" in fused_ops
    assert not any("FusedBatchNorm" in t for t in plain_ops)
    _close(fused, plain)


def test_moving_statistics_use_the_biased_batch_variance_as_keras_does():
    """momentum 0 (what recalibrate_batchnorm sets): the moving statistics become the batch's mean
    and its variance divided by n, not n - 1 (Keras 3 applies no Bessel correction; the kernel
    does, and _fused_bn_call undoes it)."""
    shape = (2, 3, 3, 4)                     # n = 18: n / (n - 1) would be 6% off
    layer = _layer(shape, momentum=0.0)
    x = np.random.default_rng(5).normal(1.0, 3.0, shape).astype(np.float32)
    with cnn_model.fused_batchnorm(only_if_faster=False):
        tf.function(lambda t: layer(t, training=True))(tf.constant(x))
    np.testing.assert_allclose(np.asarray(layer.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-5)


def test_other_calls_stay_keras_own():
    """Inference mode, a frozen layer and 2-D inputs take Keras' own code inside the context."""
    _, ops = _train_call(True, (4, 3, 3, 8), training=False)
    assert not any("FusedBatchNorm" in t for t in ops)
    layer = _layer((4, 3, 3, 8))
    layer.trainable = False
    with cnn_model.fused_batchnorm():
        fn = tf.function(lambda t: layer(t, training=True))
        ops = {op.type for op in fn.get_concrete_function(
            tf.TensorSpec((4, 3, 3, 8), tf.float32)).graph.get_operations()}
    assert not any("FusedBatchNorm" in t for t in ops)
    fused, _ = _train_call(True, (6, 10), momentum=0.9)
    plain, _ = _train_call(False, (6, 10), momentum=0.9)
    for p, q in zip(fused, plain):
        np.testing.assert_array_equal(p, q)


def test_context_restores_keras_call_and_can_be_switched_off(monkeypatch):
    original = keras.layers.BatchNormalization.call
    with cnn_model.fused_batchnorm() as on:
        assert on and keras.layers.BatchNormalization.call is not original
        with cnn_model.fused_batchnorm() as inner:          # nested: still on after the inner
            assert inner
        assert keras.layers.BatchNormalization.call is not original
    assert keras.layers.BatchNormalization.call is original
    with cnn_model.fused_batchnorm(False) as on:
        assert not on and keras.layers.BatchNormalization.call is original
    assert cnn_model._fast_fused_kernel()     # oneDNN is on by default (runtime.quiet_tensorflow)
    monkeypatch.setenv(cnn_model.FUSED_BN_ENV, "0")
    with cnn_model.fused_batchnorm() as on:
        assert not on and keras.layers.BatchNormalization.call is original
    monkeypatch.delenv(cnn_model.FUSED_BN_ENV)
    monkeypatch.setattr(cnn_model, "_fast_fused_kernel", lambda: False)   # oneDNN off, no GPU
    with cnn_model.fused_batchnorm() as on:
        assert not on and keras.layers.BatchNormalization.call is original
    with cnn_model.fused_batchnorm(only_if_faster=False) as on:
        assert on
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")    # other backends: Keras' own
    with cnn_model.fused_batchnorm() as on:
        assert not on and keras.layers.BatchNormalization.call is original


def _tiny_net(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization(momentum=0.8)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.8)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_fit_matches_keras_and_saves_a_plain_keras_model(tmp_path):
    """A few Adam steps of fit with the fused kernel give the weights and moving statistics of
    fit without it; the saved file holds keras BatchNormalization layers and loads without
    custom objects, outside the context."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3), dtype=np.float32)
    y = rng.normal(0.0, 1.0, (32, 4)).astype(np.float32)
    weights = []
    for fused in (True, False):
        model = _tiny_net(3)
        with cnn_model.fused_batchnorm(fused, only_if_faster=False):
            model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        weights.append([np.asarray(w) for w in model.weights])
        if fused:
            path = tmp_path / "m.keras"
            model.save(path)
            saved = model
    for p, q in zip(*weights):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)
    loaded = keras.models.load_model(path)
    assert sum(type(l) is keras.layers.BatchNormalization for l in loaded.layers) == 2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), saved.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
