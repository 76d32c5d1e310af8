"""--freeze-batchnorm-epochs K: the last K epochs train with BatchNorm frozen (training.py,
cnn_model.set_batchnorm_frozen).

* In the frozen epochs no BatchNorm variable moves (moving statistics, scale, offset) while the
  other weights train; the optimizer goes on at its step count.
* A run stopped at the boundary and one stopped inside the frozen epochs resume (the frozen
  checkpoint reloads frozen, with its optimizer state) and end bit-identical to a straight run.
* The output model is a plain one (BatchNorm trainable), the checkpoints are frozen.
* The KD student (the Distiller, recompiled at the boundary) freezes the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import keras

import configuration as C
import student_trainer
import teacher_trainer
from errors import ConfigError
from test_trainers import SIZE, make_prepared, tiny_builder, tiny_cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prep-freeze-bn"), n_train=10)


def bn_builder(num_points: int, input_size: int) -> keras.Model:
    inp = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(2 * num_points, name="landmarks")(x)
    return keras.Model(inp, out, name="tiny_bn")


def _bn_and_rest(path: Path):
    model = keras.models.load_model(path, compile=False)
    bn = model.get_layer("bn")
    return ([np.array(w) for w in bn.weights], [np.array(w) for w in model.get_layer("conv").weights],
            bn.trainable)


def _teacher(prepared, run, out, epochs, frozen):
    # constant learning rate (tiny_cfg): the first epochs do not depend on --epochs
    return teacher_trainer.train_teacher(
        tiny_cfg(prepared, run, epochs=epochs, freeze_batchnorm_epochs=frozen, bn_recalibration=8),
        "tough", output=out, builder=bn_builder, verbose=0)


def test_frozen_epochs_keep_batchnorm_and_resume_bit_identically(prepared, tmp_path):
    straight, staged = tmp_path / "straight", tmp_path / "staged"
    _teacher(prepared, straight, tmp_path / "straight.keras", epochs=4, frozen=2)

    _teacher(prepared, staged, tmp_path / "staged.keras", epochs=2, frozen=0)
    bn_before, conv_before, trainable = _bn_and_rest(staged / "last.keras")
    assert trainable
    _teacher(prepared, staged, tmp_path / "staged.keras", epochs=3, frozen=1)     # at the boundary
    bn_mid, conv_mid, trainable = _bn_and_rest(staged / "last.keras")
    assert not trainable                                   # the checkpoint is saved frozen
    result = _teacher(prepared, staged, tmp_path / "staged.keras", epochs=4, frozen=2)  # inside
    assert result.initial_epoch == 3
    bn_after, conv_after, _ = _bn_and_rest(staged / "last.keras")

    for a, b, c in zip(bn_before, bn_mid, bn_after):      # statistics, scale and offset kept
        assert np.array_equal(a, b) and np.array_equal(a, c)
    for a, b, c in zip(conv_before, conv_mid, conv_after):   # the rest trains
        assert not np.array_equal(a, b) and not np.array_equal(b, c)

    state = json.loads((staged / "state.json").read_text())
    ckpt = keras.models.load_model(staged / "last.keras", compile=True)
    assert int(ckpt.optimizer.iterations.numpy()) == 4 * state["steps_per_epoch"]
    # the moments went on: Adam's state of the conv kernel is not a fresh one
    moments = [v for v in ckpt.optimizer.variables if "conv_kernel_momentum" in v.path]
    assert moments and np.any(np.array(moments[0]) != 0)

    for a, b in zip(keras.models.load_model(staged / "last.keras", compile=False).weights,
                    keras.models.load_model(straight / "last.keras", compile=False).weights):
        assert np.array_equal(np.array(a), np.array(b))
    # the output is a plain model: fine-tuning it trains BatchNorm again
    assert keras.models.load_model(tmp_path / "staged.keras", compile=False).get_layer("bn").trainable


def test_kd_student_freezes_through_the_distiller(prepared, tmp_path):
    teacher = tiny_builder(68, SIZE)
    run = tmp_path / "kd"
    cfg = tiny_cfg(prepared, run, epochs=1, student_mode="kd", bn_recalibration=8)
    student_trainer.train_student(cfg, tough=teacher, tolerant=teacher, output=tmp_path / "kd.keras",
                                  builder=bn_builder, verbose=0)
    bn_before, conv_before, _ = _bn_and_rest(run / "last.keras")
    cfg = tiny_cfg(prepared, run, epochs=2, student_mode="kd", bn_recalibration=8,
                   freeze_batchnorm_epochs=1)
    student_trainer.train_student(cfg, tough=teacher, tolerant=teacher, output=tmp_path / "kd.keras",
                                  builder=bn_builder, verbose=0)
    bn_after, conv_after, trainable = _bn_and_rest(run / "last.keras")
    assert not trainable
    assert all(np.array_equal(a, b) for a, b in zip(bn_before, bn_after))
    assert not np.array_equal(conv_before[0], conv_after[0])


def test_more_frozen_epochs_than_epochs_is_refused(prepared, tmp_path):
    with pytest.raises(ConfigError, match="--freeze-batchnorm-epochs 3: must lie in 0 .. --epochs"):
        C.TrainConfig(epochs=2, freeze_batchnorm_epochs=3).validate()


def _flat_bn_model(num_points: int = 68) -> keras.Model:
    inp = keras.Input((4, 4, 3), name="image")
    x = keras.layers.Flatten()(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    out = keras.layers.Dense(2 * num_points, name="landmarks")(x)
    return keras.Model(inp, out)


def _statistics(model):
    bn = model.get_layer("bn")
    return np.array(bn.moving_mean), np.array(bn.moving_variance)


@pytest.mark.parametrize("own_is_right", [True, False])
def test_a_frozen_fine_tune_keeps_whichever_statistics_validate_better(own_is_right):
    """Before epochs frozen from the first step, the statistics are re-estimated only when that
    scores better on the validation faces: a model already trained frozen keeps its own (the shipped
    Tough teacher: 6.06% validation NME with its own, 28% re-estimated)."""
    import training
    info = C.dataset_info("300w")
    rng = np.random.default_rng(0)
    model = _flat_bn_model()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(48, 100.0, np.float32))   # the statistics the model was frozen at
    bn.moving_variance.assign(np.full(48, 900.0, np.float32))
    val_images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    pool = rng.integers(0, 64, (32, 4, 4, 3), dtype=np.uint8)       # crops darker than validation
    recalibrator = training.RecalibrateBatchNorm(model, pool, batch_size=8)
    own = _statistics(model)
    if own_is_right:
        target = training.predict_images(model, val_images)
    else:   # the validation landmarks are what the re-estimated statistics predict
        recalibrator.recalibrate()
        target = training.predict_images(model, val_images)
        renewed = _statistics(model)
        assert not np.allclose(renewed[0], own[0])   # the two choices differ
        bn.moving_mean.assign(own[0])
        bn.moving_variance.assign(own[1])
    landmarks = target.reshape(len(val_images), 68, 2)

    kept_new = training.recalibrate_unless_worse(recalibrator, model, val_images, landmarks, info,
                                                 batch_size=8)
    assert kept_new is (not own_is_right)
    expected = own if own_is_right else renewed
    for got, want in zip(_statistics(model), expected):
        np.testing.assert_array_equal(got, want)
