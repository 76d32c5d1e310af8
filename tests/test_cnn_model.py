"""Networks of METHOD.md section 2: shapes, sizes, input scaling, persistence, errors."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import keras

import cnn_model
from errors import ConfigError, ModelError

keras = pytest.importorskip("keras")

SIZE = 32


@pytest.fixture(scope="module")
def student():
    return cnn_model.build_student(68, input_size=SIZE)


@pytest.fixture(scope="module")
def teacher():
    return cnn_model.build_teacher(68, input_size=SIZE)


def test_student_structure_and_size(student):
    assert student.name == "student"
    assert student.input_shape == (None, SIZE, SIZE, 3)
    assert student.output_shape == (None, 136)
    assert student.get_layer("landmarks").activation.__name__ == "linear"
    assert student.get_layer("gap").output.shape[-1] == 1280
    # MobileNetV2 without top 2,257,984 + Dense 1280 x 136 + 136 (METHOD.md: about 2.4 M)
    assert cnn_model.count_params(student) == 2_257_984 + 1280 * 136 + 136 == 2_432_200


def test_teacher_structure_and_size(teacher):
    assert teacher.name == "teacher"
    assert teacher.output_shape == (None, 136)
    assert teacher.get_layer("gap").output.shape[-1] == 1536
    assert teacher.get_layer("dropout").rate == 0.5
    assert 10.5e6 < cnn_model.count_params(teacher) < 11.5e6       # about 11 M
    assert cnn_model.model_flops(teacher) > cnn_model.model_flops(cnn_model.build_student(68, SIZE))


def test_outputs_float32_and_batch_layout(student, teacher):
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype(np.float32)
    for model in (student, teacher):
        y = model(x, training=False)
        assert y.shape == (2, 136) and y.dtype == "float32"
        assert np.all(np.isfinite(np.asarray(y)))


def test_input_scaling_layers(student, teacher):
    probe = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(np.asarray(student.get_layer("to_minus1_1")(probe)).ravel(),
                               [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(np.asarray(teacher.get_layer("to_0_255")(probe)).ravel(),
                               [0.0, 127.5, 255.0])
    # the first layer after the input is the scaling layer, then the backbone
    assert student.layers[1].name == "to_minus1_1"
    assert teacher.layers[1].name == "to_0_255"


def test_student_multiply_adds_at_224():
    model = cnn_model.build_student(68, input_size=224)
    macs = cnn_model.model_flops(model)
    assert 0.29e9 < macs < 0.31e9        # METHOD.md: about 0.3 G multiply-adds


@pytest.mark.parametrize("points,size", [(1, 32), (29, 48), (98, 40)])
def test_any_point_count_and_size(points, size):
    model = cnn_model.build_student(points, input_size=size, width_multiplier=0.35)
    assert model.output_shape == (None, 2 * points)
    y = model(np.zeros((1, size, size, 3), np.float32))
    assert y.shape == (1, 2 * points)


def test_too_small_input_and_bad_args():
    with pytest.raises(ConfigError):
        cnn_model.build_student(68, input_size=31)
    with pytest.raises(ConfigError):
        cnn_model.build_teacher(68, input_size=16)
    with pytest.raises(ConfigError):
        cnn_model.build_student(0, input_size=32)
    with pytest.raises(ConfigError):
        cnn_model.build_student(5, input_size=32, weights="no-such-weights")


def test_mixed_precision_output_is_float32():
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = cnn_model.build_student(5, input_size=32, width_multiplier=0.35)
        y = model(np.zeros((1, 32, 32, 3), np.float32))
        assert y.dtype == "float32"
        assert model.get_layer("landmarks").dtype_policy.compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(old)


def test_imagenet_download_failure_is_model_error(monkeypatch):
    def offline(*args, **kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                            "[Errno -3] Temporary failure in name resolution")
        raise AssertionError("unexpected call")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    monkeypatch.setattr(keras.applications, "EfficientNetB3", offline)
    for build in (cnn_model.build_student, cnn_model.build_teacher):
        with pytest.raises(ModelError) as info:
            build(68, input_size=224, weights="imagenet")
        msg = str(info.value)
        assert "\n" not in msg and "weights=None" in msg


def test_save_load_round_trip(student, tmp_path):
    path = cnn_model.save_model(student, tmp_path / "student.keras")
    assert path.exists() and zipfile.is_zipfile(path)
    assert [p.name for p in tmp_path.iterdir()] == ["student.keras"]     # no temporary left over
    loaded = cnn_model.load_model(path, expect_points=68, expect_input_size=SIZE)
    x = np.random.default_rng(1).random((2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(student(x)), atol=1e-5)
    assert loaded.name == "student"

    with pytest.raises(ModelError, match="predicts 68 points"):
        cnn_model.load_model(path, expect_points=98)
    with pytest.raises(ModelError, match="inputs"):
        cnn_model.load_model(path, expect_input_size=224)


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        cnn_model.load_model(tmp_path / "missing.keras")
    text = tmp_path / "text.keras"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="not a Keras"):
        cnn_model.load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelError):
        cnn_model.load_model(other_zip)


def test_save_requires_keras_suffix(student, tmp_path):
    with pytest.raises(ModelError, match=".keras"):
        cnn_model.save_model(student, tmp_path / "student.h5")


def test_summary_cli(capsys):
    assert cnn_model.main(["--summary", "--input-size", "32", "--num-points", "5"]) == 0
    out = capsys.readouterr().out
    assert "student" in out and "teacher" in out and "multiply-adds" in out


def test_student_batchnorm_momentum_is_short_run_friendly():
    """Keras's MobileNetV2 ships BN momentum 0.999; the student uses 0.99 and the value survives a
    save/load round trip (it is what inference-mode predictions depend on)."""
    import keras

    import cnn_model

    model = cnn_model.build_student(5, input_size=32, width_multiplier=0.35)
    bns = [l for l in model._flatten_layers(recursive=True)
           if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(abs(l.momentum - 0.99) < 1e-12 for l in bns)
    clone = keras.Model.from_config(model.get_config())
    bns2 = [l for l in clone._flatten_layers(recursive=True)
            if isinstance(l, keras.layers.BatchNormalization)]
    assert all(abs(l.momentum - 0.99) < 1e-12 for l in bns2)


def _bn_layers(model):
    return [l for l in model._flatten_layers(recursive=True)
            if isinstance(l, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_recalibrate_batchnorm_is_the_mean_of_batch_statistics(backend, monkeypatch):
    """Closed form: a Conv -> BN net; after recalibration on two batches the moving mean/variance
    are the means of the two batches' per-channel means/(biased) variances of the conv output; a
    shorter last batch (not the size the network trained on) is left out.
    Weights and momentum are left as found. "jax": the eager call the other backends get (run
    here under TensorFlow)."""
    if backend == "tensorflow" and keras.backend.backend() != "tensorflow":
        pytest.skip("the traced call needs the TensorFlow backend")
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.BatchNormalization(momentum=0.9, name="bn")(conv)))
    model = keras.Model(inp, out)
    conv_model = keras.Model(inp, conv)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (16, 6, 6, 3)).astype(np.float32)
    weights_before = [w.copy() for w in model.get_weights() if w.ndim > 1]
    assert cnn_model.recalibrate_batchnorm(model, images, batch_size=6) == 2   # 6 + 6; 4 left out
    feats = [np.asarray(conv_model(images[:6])), np.asarray(conv_model(images[6:12]))]
    want_mean = np.mean([f.mean(axis=(0, 1, 2)) for f in feats], axis=0)
    want_var = np.mean([f.var(axis=(0, 1, 2)) for f in feats], axis=0)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), want_var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.9
    for a, b in zip(weights_before, [w for w in model.get_weights() if w.ndim > 1]):
        np.testing.assert_array_equal(a, b)


def test_recalibrated_student_predicts_in_inference_mode_as_in_training_mode():
    """With one batch the re-estimated statistics are that batch's, so the whole MobileNetV2 in
    inference mode reproduces its training-mode output on the batch; before, it does not."""
    model = cnn_model.build_student(5, input_size=32, width_multiplier=0.35)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    train_mode = np.asarray(model(x, training=True))
    gap_before = np.abs(np.asarray(model(x, training=False)) - train_mode).max()
    cnn_model.recalibrate_batchnorm(model, x, batch_size=16)
    gap_after = np.abs(np.asarray(model(x, training=False)) - train_mode).max()
    assert gap_after < 1e-3 < gap_before
    assert all(abs(l.momentum - 0.99) < 1e-12 for l in _bn_layers(model))


def test_float16_weights_file_loads_with_plain_keras(tmp_path):
    """save_model(float16_weights=True): a smaller .keras that keras.models.load_model reads into
    float32 variables holding the float16-rounded weights; outputs stay within 1e-3."""
    model = cnn_model.build_student(5, input_size=32, width_multiplier=0.35)
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    model(x, training=True)   # non-trivial batch-norm statistics
    dense = model.get_layer(cnn_model.OUTPUT_LAYER)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 300.0, bias + 0.1])   # outputs of order 0.1-1, like a trained head
    full, half = tmp_path / "full.keras", tmp_path / "half.keras"
    cnn_model.save_model(model, full)
    cnn_model.save_model(model, half, float16_weights=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    loaded = keras.models.load_model(half, compile=False)
    for a, b in zip(model.weights, loaded.weights):
        a, b = np.asarray(a), np.asarray(b)
        assert b.dtype == np.float32
        np.testing.assert_array_equal(b, a.astype(np.float16).astype(np.float32))
    ref = np.asarray(model(x, training=False))
    assert np.abs(ref).max() > 0.05
    assert np.abs(np.asarray(loaded(x, training=False)) - ref).max() < 1e-3
    assert cnn_model.main(["--float16-weights", str(full), str(tmp_path / "cli.keras")]) == 0
    for a, b in zip(loaded.weights, keras.models.load_model(tmp_path / "cli.keras", compile=False).weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_weights_from_a_saved_landmark_model_start_every_layer_there(tmp_path):
    """--weights model.keras: a fine-tune starts from all of the saved model's weights (backbone,
    batch-norm statistics and output layer), so its predictions equal the saved model's; another
    input size is fine (no weight depends on it); another width, point count or network is a
    one-line ConfigError naming the file."""
    import cnn_model
    from errors import ConfigError

    saved = cnn_model.build_student(5, 32, width_multiplier=0.35)
    saved.get_layer("landmarks").bias.assign(np.linspace(0.1, 0.9, 10).astype(np.float32))
    path = tmp_path / "saved.keras"
    cnn_model.save_model(saved, path)
    again = cnn_model.build_student(5, 32, width_multiplier=0.35, weights=str(path))
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), saved.predict(x, verbose=0), atol=1e-6)
    bigger = cnn_model.build_student(5, 64, width_multiplier=0.35, weights=str(path))   # size-free weights
    np.testing.assert_array_equal(bigger.get_layer("landmarks").bias.numpy(), saved.get_layer("landmarks").bias.numpy())
    with pytest.raises(ConfigError, match="saved.keras.*does not fit"):
        cnn_model.build_student(5, 32, width_multiplier=0.5, weights=str(path))
    with pytest.raises(ConfigError, match="saved.keras.*does not fit"):
        cnn_model.build_student(7, 32, width_multiplier=0.35, weights=str(path))
    with pytest.raises(ConfigError, match="saved.keras.*does not fit"):
        cnn_model.build_teacher(5, 32, weights=str(path))


def _drop_rates(model) -> dict:
    return {layer.name: layer.rate for layer in model._flatten_layers(include_self=False, recursive=True)
            if layer.name.endswith("_drop")}


def test_stochastic_depth_follows_keras_rise_over_blocks(teacher):
    # the reference: keras.applications' own EfficientNet-B3 (drop_connect_rate 0.2, block b of
    # 26 blocks at 0.2 * b / 26); the first block has no residual branch to drop
    reference = keras.applications.EfficientNetB3(include_top=False, weights=None,
                                                  input_shape=(SIZE, SIZE, 3))
    expected = {layer.name: layer.rate for layer in reference.layers if layer.name.endswith("_drop")}
    assert len(expected) == 19 and expected["block2b_drop"] == pytest.approx(0.2 * 3 / 26)
    assert _drop_rates(teacher) == pytest.approx(expected)
    model = cnn_model.build_teacher(68, input_size=SIZE, dropout=0.0, stochastic_depth=0.3)
    assert _drop_rates(model) == pytest.approx({k: 1.5 * v for k, v in expected.items()})
    assert cnn_model.set_stochastic_depth(model, 0.0) == 19
    assert set(_drop_rates(model).values()) == {0.0}
    assert cnn_model.set_stochastic_depth(cnn_model.build_student(68, SIZE), 0.5) == 0
    with pytest.raises(ConfigError, match=r"stochastic depth 1.0: must lie in \[0, 1\)"):
        cnn_model.set_stochastic_depth(model, 1.0)
