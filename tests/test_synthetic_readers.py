"""The embedded default data, read back by the official readers (issue "embedded default").

synthetic_faces.generate writes each dataset in its official layout; data_util.read_dataset must
read back exactly the faces that were drawn: face k (train faces first, then test faces) is
render_face(default_rng(seed + k)) with the draws that synthetic_faces._render_job makes before it
(WFLW: one uniform for the difficulty; COFW: two integers for the image size when none is given, one
uniform for the forced occluder). The points must agree to the precision of the format (3 decimals
in .pts and the WFLW list, float64 of the float32 points in the COFW .mat), the COFW occlusion flags
and the WFLW attribute flags exactly, and every image must decode to the drawn size (lossless PNG
and the in-memory COFW images to the very same pixels). Then data_util.prepare turns the 300-W one
into the prepared layout with both test subsets.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import data_util as du
import dataset_formats as fmt
import synthetic_faces as sf
from configuration import PrepareConfig, WFLW_ATTRIBUTES, dataset_info

SEED = 11
NUM_TRAIN, NUM_TEST = 6, 3
IMAGE_SIZE = 128
POINTS = {"300w": 68, "wflw": 98, "cofw": 29}


def expected_face(dataset: str, k: int, job: tuple, image_size=IMAGE_SIZE):
    """What generate drew for face k: (image RGB, points (N, 2) float32, flags)."""
    rng = np.random.default_rng(SEED + k)
    difficulty = job[2]
    if dataset == "wflw":
        difficulty = "hard" if rng.uniform() < 0.3 else "normal"
    if dataset == "cofw":
        difficulty = "normal"
    size = image_size
    if size is None and dataset == "cofw":
        size = (int(rng.integers(200, 321)), int(rng.integers(220, 341)))
    occluder = True if dataset == "cofw" and rng.uniform() < 0.45 else None
    img, lm, flags = sf.render_face(rng, image_size=size, difficulty=difficulty, occluder=occluder)
    return img, lm[POINTS[dataset]], flags


@pytest.fixture(scope="module", params=["300w", "wflw", "cofw"])
def generated(request, tmp_path_factory):
    dataset = request.param
    root = sf.generate(dataset, tmp_path_factory.mktemp("syn") / dataset, NUM_TRAIN, NUM_TEST,
                       seed=SEED, image_size=IMAGE_SIZE, workers=1)
    jobs = sf._job_list(dataset, NUM_TRAIN, NUM_TEST)
    faces = [expected_face(dataset, k, job) for k, job in enumerate(jobs)]
    samples = {split: fmt.read_dataset(dataset, root, split) for split in ("train", "test")}
    return dataset, root, jobs, faces, samples


def _split_of(k: int) -> str:
    """generate draws the train faces first, then the test faces."""
    return "train" if k < NUM_TRAIN else "test"


def _match(sample, candidates, faces) -> int:
    """The one drawn face whose points the sample holds (to the 3-decimal precision)."""
    hits = [k for k in candidates
            if np.abs(sample.landmarks_px.astype(np.float64) - faces[k][1]).max() <= 5e-4 + 1e-4]
    assert len(hits) == 1, f"{sample.id}: matches drawn faces {hits}"
    return hits[0]


def _matched(generated):
    """(split, sample, k) for every face read back, k the drawn face it holds."""
    dataset, root, jobs, faces, samples = generated
    for split, items in samples.items():
        candidates = [k for k in range(len(jobs)) if _split_of(k) == split]
        for smp in items:
            yield split, smp, _match(smp, candidates, faces)


def test_counts_and_every_face_read_back_once(generated):
    dataset, root, jobs, faces, samples = generated
    assert len(samples["train"]) == NUM_TRAIN and len(samples["test"]) == NUM_TEST
    used = [k for _, _, k in _matched(generated)]
    assert sorted(used) == list(range(len(jobs)))          # a bijection: no face lost or doubled


def test_points_exact_to_the_format_precision(generated):
    dataset, faces = generated[0], generated[3]
    for _, smp, k in _matched(generated):
        drawn = faces[k][1]
        assert smp.landmarks_px.shape == (POINTS[dataset], 2)
        assert smp.landmarks_px.dtype == np.float32
        if dataset == "cofw":   # stored as float64 of the float32 points: no rounding at all
            np.testing.assert_array_equal(smp.landmarks_px, drawn)
        else:                   # "%.3f" in the .pts / WFLW list
            np.testing.assert_allclose(smp.landmarks_px, np.round(drawn.astype(np.float64), 3),
                                       rtol=0, atol=1e-4)


def test_subsets_flags_and_images(generated):
    dataset, root, jobs, faces, samples = generated
    info = dataset_info(dataset)
    for split, smp, k in _matched(generated):
        img, _, flags = faces[k]
        w, h = flags["image_size"]
        image = fmt.load_image(smp)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8, smp.id
        assert image.shape[:2] == img.shape[:2]
        if dataset == "300w":
            folder, subset = jobs[k][0], jobs[k][1]
            assert smp.id.startswith(folder + "/") and smp.subset == subset
            if smp.image_path.endswith(".png"):            # lossless: the very pixels
                np.testing.assert_array_equal(image, img)
        elif dataset == "wflw":
            assert smp.attributes is not None and smp.attributes.shape == (len(WFLW_ATTRIBUTES),)
            np.testing.assert_array_equal(smp.attributes.astype(np.int8), flags["attributes"])
            assert smp.box_xywh is not None
        else:   # cofw: occlusion flags and the in-memory image
            np.testing.assert_array_equal(smp.occluded, flags["occluded"][info.num_points])
            assert smp.box_xywh is not None and smp.subset == split
            stored_grey = np.array_equal(image[..., 0], image[..., 1]) and \
                np.array_equal(image[..., 1], image[..., 2]) and \
                not np.array_equal(img[..., 0], img[..., 1])      # 2% of the faces
            if stored_grey:
                np.testing.assert_array_equal(image[..., 0], cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
            else:
                np.testing.assert_array_equal(image, img)


@pytest.mark.parametrize("generated", ["wflw", "cofw"], indirect=True)
def test_cofw_occluders_and_wflw_attributes_present(generated):
    """Some flags are set (the comparison above is not only between empty arrays)."""
    dataset, root, jobs, faces, samples = generated
    if dataset == "cofw":
        assert any(s.occluded.any() for items in samples.values() for s in items)
    else:
        assert any(s.attributes.any() for items in samples.values() for s in items)


@pytest.mark.parametrize("generated", ["300w"], indirect=True)
def test_prepare_the_generated_300w(generated, tmp_path):
    dataset, root, jobs, faces, samples = generated
    out = tmp_path / "prepared"
    cfg = PrepareConfig(dataset="300w", root=str(root), input_size=32, out_dir=str(out))
    assert du.prepare(cfg, strict=True, progress=False) == out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"] == {"train": NUM_TRAIN, "test": NUM_TEST}
    assert not any(manifest["skipped"].values())
    test = du.load_prepared(out, "test")
    train = du.load_prepared(out, "train")
    assert len(train) == NUM_TRAIN and len(test) == NUM_TEST
    subsets = test.meta["subsets"]
    assert {"common", "challenging"} <= set(subsets)
    assert subsets.count("challenging") == sum(1 for j in jobs if j[1] == "challenging")
    assert set(train.meta["subsets"]) == {"train"}
    # the prepared ground truth is the read-back points, in original-image pixels
    by_id = {s.id: s for s in samples["test"]}
    for i, sid in enumerate(test.ids):
        np.testing.assert_allclose(test.landmarks_px[i], by_id[sid].landmarks_px, atol=1e-5)
        assert subsets[i] == by_id[sid].subset


# METHOD.md section 6: extra augmented copies per hard-attribute flag, written out here on purpose
# (not read from configuration) so that a wrong table there fails this test.
WFLW_EXTRA = {"pose": 20, "expression": 7, "illumination": 2, "makeup": 2, "occlusion": 8, "blur": 2}


@pytest.mark.parametrize("generated", ["wflw"], indirect=True)
def test_wflw_hard_attribute_oversampling(generated, tmp_path):
    import image_utility as iu

    dataset, root, jobs, faces, samples = generated
    out = tmp_path / "prepared"
    du.prepare(PrepareConfig(dataset="wflw", root=str(root), input_size=32, out_dir=str(out)),
               strict=True, progress=False)
    train = du.load_prepared(out, "train")
    flags = {s.id: np.asarray(s.attributes, int) for s in samples["train"]}
    attrs = np.array([flags[i] for i in train.ids])                 # (faces, 6) in train/ order
    assert attrs.any(), "the generated training faces carry no attribute flag: the test says nothing"
    extra = np.array([WFLW_EXTRA[a] for a in WFLW_ATTRIBUTES])
    want = 1 + attrs @ extra                                        # base copies 1, plus the extras
    cheap = iu.AugmentConfig(p_affine=0, p_gamma=0, p_noise=0, p_median=0)
    du.augment_prepared(out, copies=1, seed=0, cfg=cheap, progress=False)
    aug = du.load_prepared(out, "train_aug")
    src = np.asarray(aug.meta["source_index"])
    np.testing.assert_array_equal(np.bincount(src, minlength=len(train)), want)
    for col, name in enumerate(WFLW_ATTRIBUTES):                   # per attribute, in the pool
        assert int(attrs[src, col].sum()) == int(attrs[:, col] @ want), name
    # each face's copies are numbered 0..k-1, and the even ones are mirrored
    for i in range(len(train)):
        copies = np.asarray(aug.meta["copy"])[src == i]
        np.testing.assert_array_equal(np.sort(copies), np.arange(want[i]))
    # the table itself, one flag at a time (the faces above need not carry every attribute)
    one_hot = [list(row) for row in np.eye(6, dtype=int)]
    np.testing.assert_array_equal(du.copies_per_face(dataset_info("wflw"), one_hot, 3), 3 + extra)
    np.testing.assert_array_equal(du.copies_per_face(dataset_info("300w"), one_hot, 3), [3] * 6)
    # --no-oversample: the base copies only
    du.augment_prepared(out, copies=1, seed=0, cfg=cheap, progress=False, oversample=False)
    assert du.load_prepared(out, "train_aug").meta["source_index"] == list(range(len(train)))


@pytest.mark.parametrize("dataset", ["300w", "wflw", "cofw"])
def test_default_image_sizes_read_back(dataset, tmp_path):
    """As generate_default writes them (no image_size: the sizes are drawn from the same rng).
    3 test faces: the fewest that fill every 300-W test folder (lfpw, helen, ibug), which the
    strict reader requires."""
    root = sf.generate(dataset, tmp_path / dataset, 3, 3, seed=SEED, workers=1)
    jobs = sf._job_list(dataset, 3, 3)
    faces = [expected_face(dataset, k, job, image_size=None) for k, job in enumerate(jobs)]
    for split, first in (("train", 0), ("test", 3)):
        items = fmt.read_dataset(dataset, root, split)
        assert len(items) == 3
        for smp in items:
            k = _match(smp, range(first, first + 3), faces)
            w, h = faces[k][2]["image_size"]
            assert fmt.load_image(smp).shape == (h, w, 3)
