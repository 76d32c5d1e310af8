"""When `--checkpoint-every K` writes its mid-epoch checkpoints (issue 37): at every K-th optimizer
step that falls strictly inside an epoch, never at an epoch's last step. That step is the epoch end,
whose checkpoint comes after the BatchNorm recalibration, validation, best-model choice and log row;
a mid-epoch checkpoint written there first (state "step_in_epoch" = steps_per_epoch) would make a kill
in that window resume without them.

The Checkpointer callback is driven the way Keras' fit drives it (on_epoch_begin, then
on_train_batch_end after each optimizer step), with its writes recorded.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("tensorflow")

import training  # noqa: E402


def _drive(tmp_path, steps_per_epoch, every, epochs, start_iteration=0):
    """Run the callback over `epochs` epochs from optimizer step `start_iteration`; returns the
    mid-epoch writes as (epoch index, step in epoch, optimizer step)."""
    opt = SimpleNamespace(iterations=start_iteration)
    cb = training.Checkpointer(SimpleNamespace(optimizer=opt), tmp_path, epochs, steps_per_epoch,
                               every_steps=every)
    writes = []
    cb._write = lambda epoch_done, logs, mid_epoch_step=0: writes.append(
        (epoch_done, mid_epoch_step, opt.iterations))
    first_epoch, done_in_epoch = divmod(start_iteration, steps_per_epoch)
    for epoch in range(first_epoch, epochs):
        cb.on_epoch_begin(epoch)
        for batch in range(done_in_epoch if epoch == first_epoch else 0, steps_per_epoch):
            opt.iterations += 1
            cb.on_train_batch_end(batch, {"loss": 1.0})
    return writes


def test_mid_epoch_checkpoints_fall_strictly_inside_epochs(tmp_path):
    # 5 steps per epoch, every 2 steps: steps 2, 4 | 6, 8, (10 = the end of epoch 2) | 12, 14
    got = _drive(tmp_path, steps_per_epoch=5, every=2, epochs=3)
    assert got == [(0, 2, 2), (0, 4, 4), (1, 1, 6), (1, 3, 8), (2, 2, 12), (2, 4, 14)]


def test_every_epoch_length_gives_no_mid_epoch_checkpoint(tmp_path):
    # K = steps per epoch (or a divisor's multiple landing on epoch ends): the epoch end writes them
    assert _drive(tmp_path, steps_per_epoch=4, every=4, epochs=3) == []
    assert _drive(tmp_path, steps_per_epoch=3, every=6, epochs=4) == []


def test_after_a_mid_epoch_resume_the_same_steps_write(tmp_path):
    whole = _drive(tmp_path, steps_per_epoch=5, every=2, epochs=3)
    resumed = _drive(tmp_path, steps_per_epoch=5, every=2, epochs=3, start_iteration=7)
    assert resumed == [w for w in whole if w[2] > 7]


def test_no_mid_epoch_checkpoints_without_the_option(tmp_path):
    assert _drive(tmp_path, steps_per_epoch=5, every=0, epochs=2) == []
