"""`prepare` and offline `augment` end to end on DERIVED fixtures (the real annotated faces of
tests/data/real_samples written in the official formats by tests/fixtures.py): layout, coordinate
frames, idempotence, failures that leave nothing complete-looking, and the command line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import configuration
import data_util as du
import dataset_formats as fmt
import fixtures as fx
import image_utility as iu
from configuration import PrepareConfig
from errors import ConfigError, DataFormatError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree_300w(tmp_path_factory):
    root = tmp_path_factory.mktemp("w300")
    return root, fx.make_300w_tree(root)


@pytest.fixture(scope="module")
def prepared_300w(tree_300w, tmp_path_factory):
    root, _ = tree_300w
    out = tmp_path_factory.mktemp("prep") / "300w-64"
    du.prepare(PrepareConfig(dataset="300w", root=str(root), input_size=64, out_dir=str(out)),
               progress=False)
    return out


def test_prepared_layout_and_frames(prepared_300w, tree_300w):
    _, expected = tree_300w
    manifest = json.loads((prepared_300w / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["counts"] == {"train": 4, "test": 3}
    assert manifest["skipped"] == {"train": [], "test": []} and manifest["num_points"] == 68
    assert json.loads((prepared_300w / "prepare_config.json").read_text())["input_size"] == 64
    for split, m in (("train", 4), ("test", 3)):
        p = du.load_prepared(prepared_300w, split)
        assert isinstance(p.images, np.memmap) and len(p) == m
        assert p.images.shape == (m, 64, 64, 3) and p.images.dtype == np.uint8
        assert p.landmarks.shape == p.landmarks_px.shape == (m, 68, 2)
        assert p.landmarks.dtype == p.landmarks_px.dtype == p.crop_boxes.dtype == np.float32
        assert p.crop_boxes.shape == (m, 3) and p.num_points == 68 and p.input_size == 64
        assert set(p.meta) >= {"ids", "image_paths", "subsets", "attributes", "occluded"}
        for i, sid in enumerate(p.meta["ids"]):
            np.testing.assert_array_equal(p.landmarks_px[i], expected[sid])
            # crop px -> original px: orig = (x0, y0) + crop_px * side / S
            crop_px = iu.denormalize_landmarks(p.landmarks[i], 64)
            x0, y0, side = p.crop_boxes[i]
            np.testing.assert_allclose(np.array([x0, y0]) + crop_px * side / 64, expected[sid],
                                       rtol=1e-4, atol=0.02)
            # the landmark box with margin 0.25: points fill 1/1.25 of the crop
            extent = (crop_px.max(0) - crop_px.min(0)).max()
            assert extent == pytest.approx(64 / 1.25, rel=1e-3)
        assert np.abs(p.landmarks).max() <= 0.5
    test = du.load_prepared(prepared_300w, "test")
    assert sorted(test.meta["subsets"]) == ["challenging", "common", "common"]


def test_prepared_crop_matches_image(prepared_300w):
    """The stored crop equals crop_and_resize of the original image with the stored box."""
    p = du.load_prepared(prepared_300w, "train")
    for i in range(len(p)):
        img = fmt.load_image(p.meta["image_paths"][i])
        again = iu.crop_and_resize(img, p.crop_boxes[i], 64)
        np.testing.assert_array_equal(again, p.images[i])


def test_prepare_is_idempotent_and_rebuilds(tree_300w, tmp_path, capsys):
    root, _ = tree_300w
    cfg = dict(dataset="300w", root=str(root), input_size=40, out_dir=str(tmp_path / "o"))
    out = du.prepare(PrepareConfig(**cfg), progress=False)
    first = (out / "train" / "images.npy").stat().st_mtime_ns
    assert "train 4, test 3" in capsys.readouterr().out
    du.prepare(PrepareConfig(**cfg), progress=False)
    assert "reusing" in capsys.readouterr().out
    assert (out / "train" / "images.npy").stat().st_mtime_ns == first
    # an incomplete folder (interrupted run) is rebuilt
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**man, "complete": False}))
    (out / "train" / "images.npy").write_bytes(b"half")
    du.prepare(PrepareConfig(**cfg), progress=False)
    assert "reusing" not in capsys.readouterr().out
    assert du.load_prepared(out, "train").images.shape == (4, 40, 40, 3)
    # another configuration into this complete folder is refused (issue 36: a rerun with another
    # setting emptied a complete folder), and rebuilt with overwrite (--overwrite)
    with pytest.raises(ConfigError, match="another configuration .*margin 0.25, now 0.5"):
        du.prepare(PrepareConfig(**{**cfg, "margin": 0.5}), progress=False)
    assert du.load_prepared(out, "train").images.shape == (4, 40, 40, 3)
    du.prepare(PrepareConfig(**{**cfg, "margin": 0.5}), progress=False, overwrite=True)
    assert "reusing" not in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["margin"] == 0.5


def test_failure_leaves_nothing_complete(tree_300w, tmp_path):
    root, _ = tree_300w
    out = tmp_path / "o"
    du.prepare(PrepareConfig(dataset="300w", root=str(root), input_size=32, out_dir=str(out)),
               progress=False)
    broken = tmp_path / "broken"
    fx.make_300w_tree(broken)
    import shutil

    for folder in ("ibug", "lfpw/testset", "helen/testset"):   # the test split fails after train
        shutil.rmtree(broken / folder)
    with pytest.raises(DataFormatError, match="300-W test folders"):
        du.prepare(PrepareConfig(dataset="300w", root=str(broken), input_size=32, out_dir=str(out)),
                   progress=False, force=True)
    # the annotations are read before anything is cleared (issue 36): the folder keeps its data
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.scratch"))
    assert du.load_prepared(out, "train").images.shape == (4, 32, 32, 3)
    # a failure while writing leaves nothing complete
    (out / "manifest.json").unlink()
    with pytest.raises(DataFormatError, match="data_util.py prepare"):
        du.load_prepared(out, "train")
    with pytest.raises(DataFormatError, match="data_util.py prepare"):
        du.load_prepared(tmp_path / "never", "test")


def test_bad_sample_is_skipped_and_counted(tmp_path):
    root = tmp_path / "d"
    fx.make_300w_tree(root)
    (root / "helen" / "trainset" / "232194_1.jpg").write_bytes(b"")        # zero-byte image
    good = fmt.read_pts(root / "lfpw" / "trainset" / "image_0001.pts")
    fmt.write_pts(root / "lfpw" / "trainset" / "image_0001.pts", good * 50)  # far outside
    with pytest.warns(UserWarning):
        out = du.prepare(PrepareConfig(dataset="300w", root=str(root), input_size=32,
                                       out_dir=str(tmp_path / "o")), progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["train"] == 2
    files = sorted(Path(s["file"]).name for s in man["skipped"]["train"])
    assert files == ["232194_1.jpg", "image_0001.ppm"]
    assert "zero-byte" in " ".join(s["reason"] for s in man["skipped"]["train"])
    with pytest.raises(DataFormatError, match="image_0001.ppm: landmarks lie far outside"):
        du.prepare(PrepareConfig(dataset="300w", root=str(root), input_size=32,
                                 out_dir=str(tmp_path / "o2")), strict=True, progress=False)
    assert not (tmp_path / "o2" / "manifest.json").exists()


@pytest.mark.parametrize("version", ["7.3", "5"])
def test_prepare_cofw_with_dataset_box(tmp_path, version):
    fx.make_cofw_files(tmp_path / "c", version)
    out = du.prepare(PrepareConfig(dataset="cofw", root=str(tmp_path / "c"), input_size=48,
                                   box="dataset", margin=0.1, out_dir=str(tmp_path / "o")),
                     progress=False)
    p = du.load_prepared(out, "train")
    src = fx.cofw_samples()
    assert p.images.shape == (2, 48, 48, 3) and p.meta["image_paths"] == ["", ""]
    np.testing.assert_array_equal(np.asarray(p.meta["occluded"][0]), src[0].occluded)
    np.testing.assert_allclose(p.crop_boxes[0], iu.square_box_from_xywh(src[0].box_xywh, 0.1),
                               rtol=1e-6)


def test_prepare_wflw_and_custom(tmp_path):
    fx.make_wflw_tree(tmp_path / "w")
    out = du.prepare(PrepareConfig(dataset="wflw", root=str(tmp_path / "w"), input_size=33,
                                   out_dir=str(tmp_path / "ow")), progress=False)
    p = du.load_prepared(out, "train")
    assert p.images.shape == (3, 33, 33, 3) and len(p.meta["attributes"][0]) == 6
    spec = fx.make_custom(tmp_path / "c")
    out = du.prepare(PrepareConfig(custom_spec=str(spec), input_size=32,
                                   out_dir=str(tmp_path / "oc")), progress=False)
    p = du.load_prepared(out, "test")
    assert p.dataset == "five" and p.landmarks.shape[1:] == (5, 2)
    with pytest.raises(ConfigError, match="five"):
        du.prepare(PrepareConfig(dataset="wflw", custom_spec=str(spec), out_dir=str(tmp_path / "x")),
                   progress=False)


def test_prepare_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="box"):
        du.prepare(PrepareConfig(dataset="300w", root=str(tmp_path), box="dataset"), progress=False)
    with pytest.raises(ConfigError, match="input-size"):
        du.prepare(PrepareConfig(dataset="300w", root=str(tmp_path), input_size=4), progress=False)
    with pytest.raises(ConfigError, match="nosuch"):
        du.prepare(PrepareConfig(dataset="nosuch", root=str(tmp_path)), progress=False)
    with pytest.raises(DataFormatError, match=str(tmp_path / "missing")):
        du.prepare(PrepareConfig(dataset="300w", root=str(tmp_path / "missing"),
                                 out_dir=str(tmp_path / "o")), progress=False)


def test_default_root_generates_synthetic_data(tmp_path, monkeypatch):
    """No --root: data/synthetic/<dataset>, generated by synthetic_faces.generate_default if absent."""
    monkeypatch.setattr(configuration, "SYNTHETIC_DIR", tmp_path / "synthetic")
    calls = []

    sizes = {"300w": (4, 2)}

    def generate_default(dataset, root):
        calls.append(dataset)
        fx.make_300w_tree(Path(root))
        (Path(root) / "SIZES").write_text(repr(sizes[dataset]))

    def is_complete(root, dataset, num_train, num_test, seed):
        marker = Path(root) / "SIZES"
        return marker.is_file() and marker.read_text() == repr((num_train, num_test))

    fake = types.SimpleNamespace(generate_default=generate_default, is_complete=is_complete,
                                 DEFAULT_SIZES=sizes)
    monkeypatch.setitem(sys.modules, "synthetic_faces", fake)
    cfg = PrepareConfig(dataset="300w", input_size=32, out_dir=str(tmp_path / "o"))
    out = du.prepare(cfg, progress=False)
    assert calls == ["300w"] and du.load_prepared(out, "train").images.shape[0] == 4
    assert du.read_manifest(out)["config"]["synthetic_sizes"] == [4, 2]
    du.prepare(cfg, progress=False)                  # same default sizes: data and crops reused
    assert calls == ["300w"]
    sizes["300w"] = (5, 2)                           # a new default set: regenerated, crops rebuilt
    du.prepare(cfg, progress=False)
    assert calls == ["300w", "300w"]
    assert du.read_manifest(out)["config"]["synthetic_sizes"] == [5, 2]


def test_offline_augment(prepared_300w, capsys):
    out = du.augment_prepared(prepared_300w, copies=3, seed=5, progress=False)
    a = du.load_prepared(prepared_300w, "train_aug")
    t = du.load_prepared(prepared_300w, "train")
    assert a.images.shape == (12, 64, 64, 3) and a.landmarks.shape == (12, 68, 2)
    assert a.meta["source_index"] == [0, 1, 2, 3] * 3
    assert a.meta["ids"][5] == t.meta["ids"][1] + "#aug1"
    assert np.abs(a.landmarks).max() <= 0.5                            # kept inside the crop
    assert not np.array_equal(a.images[0], t.images[0])
    first = (out / "images.npy").stat().st_mtime_ns
    du.augment_prepared(prepared_300w, copies=3, seed=5, progress=False)
    assert "reusing" in capsys.readouterr().out
    assert (out / "images.npy").stat().st_mtime_ns == first
    # deterministic for a seed
    again = np.array(a.images)
    du.augment_prepared(prepared_300w, copies=1, seed=5, progress=False)
    np.testing.assert_array_equal(du.load_prepared(prepared_300w, "train_aug").images, again[:4])


def test_offline_copies_flip_every_other(prepared_300w, tmp_path):
    import shutil

    out = tmp_path / "p"
    shutil.copytree(prepared_300w, out)
    shutil.rmtree(out / "train_aug", ignore_errors=True)
    cfg = iu.AugmentConfig(p_affine=0, p_gamma=0, p_noise=0, p_median=0)   # the flip alone
    du.augment_prepared(out, copies=4, seed=0, cfg=cfg, progress=False)
    a, t = du.load_prepared(out, "train_aug"), du.load_prepared(out, "train")
    perm = configuration.dataset_info("300w").flip_permutation
    for k, (i, c) in enumerate(zip(a.meta["source_index"], a.meta["copy"])):
        img = np.asarray(t.images[i])
        crop = iu.denormalize_landmarks(t.landmarks[i], 64)
        if c % 2 == 0:                                           # copies 0 and 2: mirrored
            img, crop = iu.flip_horizontal(img, crop, perm)
        np.testing.assert_array_equal(a.images[k], img)
        np.testing.assert_allclose(a.landmarks[k], iu.normalize_landmarks(crop, 64), atol=1e-6)
    assert sorted(set(a.meta["copy"])) == [0, 1, 2, 3]


def test_augment_permutes_cofw_occlusion_on_flip(tmp_path):
    fx.make_cofw_files(tmp_path / "c")
    out = du.prepare(PrepareConfig(dataset="cofw", root=str(tmp_path / "c"), input_size=32,
                                   out_dir=str(tmp_path / "o")), progress=False)
    du.augment_prepared(out, copies=6, seed=0, cfg=iu.AugmentConfig(p_flip=0.5), progress=False)
    a = du.load_prepared(out, "train_aug")
    src = du.load_prepared(out, "train")
    perm = configuration.dataset_info("cofw").flip_permutation
    seen = set()
    for k, i in enumerate(a.meta["source_index"]):
        occ = np.asarray(a.meta["occluded"][k])
        orig = np.asarray(src.meta["occluded"][i])
        seen.add("same" if np.array_equal(occ, orig) else "flipped")
        assert np.array_equal(occ, orig) or np.array_equal(occ, orig[perm])
    assert "flipped" in seen


def test_cli_prepare_and_errors(tmp_path):
    fx.make_wflw_tree(tmp_path / "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "o"
    run = subprocess.run([sys.executable, str(ROOT / "data_util.py"), "prepare", "--dataset", "wflw",
                          "--root", str(tmp_path / "w"), "--input-size", "32", "--out-dir", str(out),
                          "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "prepared wflw: train 3, test 1" in run.stdout
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    bad = subprocess.run([sys.executable, str(ROOT / "data_util.py"), "prepare", "--dataset", "wflw",
                          "--root", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o2")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]
