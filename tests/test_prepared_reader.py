"""The one reader of a prepared folder (data_util.load_prepared) refuses values no prepare writes,
naming the file and the face (issue 17 item 3): NaN/inf landmarks, ground truth or crop boxes,
float images, crop sides <= 0, landmarks far outside the crop, a manifest whose "complete" is not a
real JSON true, ids that do not match the faces. A sound folder reads back exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import data_util as du
from errors import DataFormatError

S, N, M = 32, 68, 5


def write_prepared(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        d = root / split
        d.mkdir(parents=True)
        np.save(d / "images.npy", rng.integers(0, 256, (M, S, S, 3), dtype=np.uint8))
        np.save(d / "landmarks.npy", rng.uniform(-0.4, 0.4, (M, N, 2)).astype(np.float32))
        np.save(d / "landmarks_px.npy", rng.uniform(10, 90, (M, N, 2)).astype(np.float32))
        np.save(d / "crop_boxes.npy", np.tile(np.array([3, 4, 50], np.float32), (M, 1)))
        (d / "meta.json").write_text(json.dumps({"ids": [f"{split}/face{i}" for i in range(M)]}))
    (root / "manifest.json").write_text(json.dumps(
        {"complete": True, "dataset": "300w", "num_points": N, "input_size": S,
         "counts": {"train": M, "test": M}}))
    return root


@pytest.fixture
def prepared(tmp_path) -> Path:
    return write_prepared(tmp_path / "prep")


def damage(path: Path, fn) -> None:
    arr = np.load(path)
    np.save(path, fn(arr))


def test_a_sound_folder_reads_back_exactly(prepared):
    split = du.load_prepared(prepared, "test")
    assert len(split) == M and split.num_points == N and split.input_size == S
    np.testing.assert_array_equal(split.landmarks, np.load(prepared / "test" / "landmarks.npy"))
    assert split.ids == [f"test/face{i}" for i in range(M)]
    assert du.prepared_complete(prepared) and not du.prepared_complete(prepared, "train_aug")


def _set(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name, fn, words", [
    ("landmarks", lambda a: _set(a, (3, 10, 0), np.nan), "NaN or infinite"),
    ("landmarks_px", lambda a: _set(a, (3, 0, 1), np.inf), "NaN or infinite"),
    ("crop_boxes", lambda a: _set(a, (3, 1), np.nan), "NaN or infinite"),
    ("crop_boxes", lambda a: _set(a, (3, 2), 0.0), "crop side <= 0"),
    ("landmarks", lambda a: _set(a, (3, 5, 1), 7.5), "outside the crop"),
])
def test_bad_values_name_the_file_and_the_face(prepared, split, name, fn, words):
    damage(prepared / split / f"{name}.npy", fn)
    with pytest.raises(DataFormatError) as err:
        du.load_prepared(prepared, split)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{prepared / split / name}.npy" in msg and words in msg
    assert f"face 3 ({split}/face3)" in msg and "data_util.py prepare" in msg


def test_float_images_and_float64_landmarks_are_refused(prepared):
    damage(prepared / "train" / "images.npy", lambda a: a.astype(np.float32) / 255.0)
    with pytest.raises(DataFormatError, match=r"images\.npy: float32 pixels, expected uint8"):
        du.load_prepared(prepared, "train")
    damage(prepared / "test" / "landmarks.npy", lambda a: a.astype(np.float64))
    with pytest.raises(DataFormatError, match=r"landmarks\.npy: float64 values, expected float32"):
        du.load_prepared(prepared, "test")


@pytest.mark.parametrize("complete", ["true", 1, "false", None])
def test_complete_must_be_a_real_json_true(prepared, complete):
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["complete"] = complete
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match="incomplete"):
        du.load_prepared(prepared, "train")
    assert not du.prepared_complete(prepared)


def test_ids_must_match_the_faces(prepared):
    (prepared / "test" / "meta.json").write_text(json.dumps({"ids": ["a", "b"]}))
    with pytest.raises(DataFormatError, match=r"meta\.json: 2 ids for 5 faces"):
        du.load_prepared(prepared, "test")
