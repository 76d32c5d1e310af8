"""--aug-jitter (TrainConfig.aug_jitter): the trainers' offline copies and online batches get the
scale and shift jitter of `data_util.py augment --jitter` (image_utility.AugmentConfig.jitter), and a
trainer keeps jittered copies it is asked for instead of rewriting them with the published recipe."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import configuration
import data_util as du
import fixtures as fx
import image_utility as iu
import training
from configuration import PrepareConfig, TrainConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("w300")
    fx.make_300w_tree(root)
    out = tmp_path_factory.mktemp("prep") / "300w-64"
    du.prepare(PrepareConfig(dataset="300w", root=str(root), input_size=64, out_dir=str(out)), progress=False)
    return root, out


def _frames(landmarks):
    """Per copy: the landmark box's centre (2,) and its larger side, in normalised crop units."""
    lo, hi = landmarks.min(1), landmarks.max(1)
    return (lo + hi) / 2.0, (hi - lo).max(1)


def _config(prepared, jitter):
    root, out = prepared
    return TrainConfig(dataset="300w", root=str(root), prepared_dir=str(out), input_size=64, augment="offline",
                       aug_copies=6, aug_jitter=jitter)


def test_offline_copies_are_jittered_and_kept(prepared):
    _, out = prepared
    plain_cfg, jitter_cfg = _config(prepared, False), _config(prepared, True)
    training.ensure_augmented(plain_cfg, out)
    plain = np.asarray(du.load_prepared(out, "train_aug").landmarks, np.float64)
    assert du.read_manifest(out)["train_aug"]["settings"]["augment"]["max_shift"] == 0.0
    training.ensure_augmented(jitter_cfg, out)
    settings = du.read_manifest(out)["train_aug"]["settings"]["augment"]
    assert settings["scale_range"] == [0.9, 1.1] and settings["max_shift"] == 0.05
    jit = np.asarray(du.load_prepared(out, "train_aug").landmarks, np.float64)
    (pc, ps), (jc, js) = _frames(plain), _frames(jit)
    # the published recipe re-crops every copy around its points: one framing for all copies
    # (within a pixel of a 64-px crop); the jitter moves the face by up to 5% of the side and
    # scales it by 0.9-1.1 (the landmark box grows with the scale)
    assert np.ptp(pc, axis=0).max() < 1.5 / 64 and np.ptp(ps) / ps.mean() < 0.05
    off = jc - pc.mean(0)
    assert np.abs(off).max() <= 0.05 * 1.1 + 1.5 / 64
    assert np.abs(off).max() > 0.02 and np.std(off) > 0.01
    ratio = js / ps.mean()
    assert ratio.min() > 0.9 - 0.05 and ratio.max() < 1.1 + 0.05 and np.ptp(ratio) > 0.08
    # a second run with the same setting reuses the jittered copies (the files stay as they are)
    first = (out / "train_aug" / "images.npy").stat().st_mtime_ns
    training.ensure_augmented(jitter_cfg, out)
    assert (out / "train_aug" / "images.npy").stat().st_mtime_ns == first
    # copies written by `data_util.py augment --jitter` are what a --aug-jitter run trains on
    du.augment_prepared(out, copies=6, seed=0, cfg=iu.AugmentConfig.jitter(), progress=False)
    first = (out / "train_aug" / "images.npy").stat().st_mtime_ns
    training.ensure_augmented(jitter_cfg, out)
    assert (out / "train_aug" / "images.npy").stat().st_mtime_ns == first


def test_online_batches_are_jittered(prepared):
    _, out = prepared
    info = configuration.dataset_info("300w")
    t = du.load_prepared(out, "train")
    img, pts = np.asarray(t.images[0]), np.asarray(t.landmarks[0])
    frames = {}
    for jitter in (False, True):
        # the trainers' augment_fn: none unless --augment online, then with the run's recipe
        assert training.online_augment(_config(prepared, jitter), info) is None
        fn = training.online_augment(dataclasses.replace(_config(prepared, jitter), augment="online"), info)
        rng = np.random.default_rng(0)
        got = np.stack([fn(img, pts, rng)[1] for _ in range(40)]).astype(np.float64)
        frames[jitter] = _frames(got)
    (pc, ps), (jc, js) = frames[False], frames[True]
    assert np.ptp(pc, axis=0).max() < 1.5 / 64 and np.ptp(ps) / ps.mean() < 0.05
    assert np.std(jc - pc.mean(0)) > 0.01 and np.ptp(js / ps.mean()) > 0.08


def test_a_resume_with_the_jitter_toggled_is_refused_before_rewriting_train_aug(tmp_path):
    """The run's identity holds --aug-jitter: resuming a jittered run without it (or the reverse) is
    refused in one line and the jittered copies stay as they are; a run without it keeps the
    identity of runs recorded before the option."""
    import json

    import teacher_trainer
    from errors import ConfigError
    from test_trainers import make_prepared, tiny_builder, tiny_cfg

    prepared = make_prepared(tmp_path / "prep", n_train=6)

    def train(**kw):
        cfg = tiny_cfg(prepared, tmp_path / "run", augment="offline", aug_copies=1, **kw)
        return teacher_trainer.train_teacher(cfg, "tough", output=tmp_path / "tough.keras", builder=tiny_builder,
                                             verbose=0)

    assert "aug_jitter" not in training.run_identity(tiny_cfg(prepared, tmp_path / "r", augment="offline"), "x")
    train(epochs=1, aug_jitter=True)
    aug_images = (prepared / "train_aug" / "images.npy").read_bytes()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["aug_jitter"] is True
    with pytest.raises(ConfigError, match=r"--aug-jitter True \(now None\)"):
        train(epochs=2, aug_jitter=False)
    assert du.read_manifest(prepared)["train_aug"]["settings"]["augment"]["max_shift"] == 0.05
    assert (prepared / "train_aug" / "images.npy").read_bytes() == aug_images
