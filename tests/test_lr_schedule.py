"""--lr-schedule: the published inverse-time decay and the cosine decay to 0 over the run's steps,
and a resume that switches schedule continuing from the checkpoint's step."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import training
from configuration import TrainConfig
from errors import ConfigError


def _lr(optimizer, step: int) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate(step))) \
        if callable(optimizer.learning_rate) else float(optimizer.learning_rate)


def _lr_at(cfg, steps_per_epoch, step):
    opt = training.make_optimizer(cfg, steps_per_epoch)
    return float(keras.ops.convert_to_numpy(opt._learning_rate(step)))


def test_inverse_time_is_the_published_formula():
    cfg = TrainConfig(learning_rate=1e-3, lr_decay=1e-4, epochs=5)
    for step in (0, 1, 1000, 25000):
        assert _lr_at(cfg, 10, step) == pytest.approx(1e-3 / (1 + 1e-4 * step), rel=1e-6)


def test_cosine_goes_from_the_rate_to_zero_over_epochs_times_steps():
    cfg = TrainConfig(learning_rate=2e-3, lr_schedule="cosine", epochs=4)
    total = 4 * 25
    assert _lr_at(cfg, 25, 0) == pytest.approx(2e-3, rel=1e-6)
    assert _lr_at(cfg, 25, total // 2) == pytest.approx(1e-3, rel=1e-5)
    quarter = 2e-3 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert _lr_at(cfg, 25, total // 4) == pytest.approx(quarter, rel=1e-5)
    assert _lr_at(cfg, 25, total) == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule_is_a_one_line_error():
    with pytest.raises(ConfigError, match="--lr-schedule"):
        TrainConfig(lr_schedule="step").validate()


def test_resume_with_another_schedule_keeps_the_step_and_moments():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = TrainConfig(learning_rate=1e-3, epochs=10)
    model.compile(optimizer=training.make_optimizer(before, 5), loss="mse")
    model.fit(np.ones((20, 3), np.float32), np.zeros((20, 2), np.float32), batch_size=4, epochs=2, verbose=0)
    old = model.optimizer
    after = TrainConfig(learning_rate=1e-3, epochs=10, lr_schedule="cosine")
    new = training.resumed_optimizer(model, after, {"learning_rate": 1e-3, "lr_decay": 1e-4,
                                                    "epochs": 10}, steps_per_epoch=5)
    assert new is not old
    assert int(keras.ops.convert_to_numpy(new.iterations)) == 10
    for a, b in zip(new.variables, old.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # the same schedule and settings keep the checkpoint's optimizer object
    same = training.resumed_optimizer(model, before, {"learning_rate": 1e-3, "lr_decay": 1e-4,
                                                      "epochs": 10, "lr_schedule": "inverse-time"}, 5)
    assert same is old
