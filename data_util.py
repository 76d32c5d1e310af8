"""Readers and writers of the official dataset formats, `prepare`, offline `augment`, and tf.data.

Formats (METHOD.md section 7, data/README.md):
* 300-W: one image + `.pts` per face in lfpw/{trainset,testset}, helen/{trainset,testset}, afw, ibug.
  train = lfpw/trainset + helen/trainset + afw (subset "train"); test = lfpw/testset + helen/testset
  (subset "common") + ibug (subset "challenging"). `.pts` values are read as they are (0-based).
* COFW: COFW_train_color.mat / COFW_test_color.mat, MATLAB v7.3 (HDF5) or v5; variables
  IsTr/phisTr/bboxesTr (train) and IsT/phisT/bboxesT (test); phis rows = 29 x, 29 y, 29 occlusion
  flags; boxes x y w h. Images are kept in memory (`Sample.image`).
* WFLW: WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt, one face
  a line: 196 coordinates, box x_min y_min x_max y_max, 6 attribute flags, image path under WFLW_images/.
* custom: a JSON spec (configuration.register_custom_dataset) and list files of
  "relative/image/path x0 y0 ... x(N-1) y(N-1)", paths relative to the spec's folder.

Bad samples: every reader takes `strict` (default True: the first bad sample raises one
DataFormatError line naming the file) and `skipped` (a list; with strict=False a bad sample is skipped
with a warning and recorded there as {"file", "reason"}). Structural problems (missing root, folder or
list file, an empty folder, a .mat without its variables) always raise. `prepare` reads with
strict=False and records the skipped samples in manifest.json.

Command line:
  python data_util.py prepare --dataset 300w --root PATH [--input-size 224] [--box landmarks|dataset]
                              [--margin 0.25] [--out-dir D] [--custom-spec F] [--strict]
  python data_util.py augment --prepared-dir D [--copies K] [--seed S]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import image_utility as iu
from configuration import (PrepareConfig, add_dataclass_args, dataclass_from_args, dataset_info,
                           register_custom_dataset, save_config)
from errors import ConfigError, DataFormatError, run_cli
from safe_io import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".JPG", ".JPEG", ".PNG")
# Reader-level layout of the 300-W test folders (train folders come from DatasetInfo.train_splits).
_300W_TEST_FOLDERS = (("lfpw/testset", "common"), ("helen/testset", "common"), ("ibug", "challenging"))
WFLW_LIST_DIR = Path("WFLW_annotations") / "list_98pt_rect_attr_train_test"
WFLW_IMAGE_DIR = "WFLW_images"
COFW_FILES = {"train": ("COFW_train_color.mat", "IsTr", "phisTr", "bboxesTr"),
              "test": ("COFW_test_color.mat", "IsT", "phisT", "bboxesT")}
# A landmark farther than this fraction of the image size outside the image is an annotation error.
OUTSIDE_TOLERANCE = 0.5


@dataclass
class Sample:
    id: str                      # unique within the dataset, e.g. "helen/trainset/232194_1"
    image_path: str              # "" when the image lives in memory (COFW .mat)
    landmarks_px: np.ndarray     # float32 (N, 2)
    box_xywh: Optional[np.ndarray]  # float32 (4,), the dataset's own face box if it has one
    subset: str = ""             # 300W: "train", "common", "challenging"; others: "train"/"test"
    attributes: Optional[np.ndarray] = None  # WFLW int8 (6,) in WFLW_ATTRIBUTES order
    occluded: Optional[np.ndarray] = None    # COFW bool (N,)
    image: Optional[np.ndarray] = None       # RGB uint8 when in memory


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


def _bad(where, reason: str, strict: bool, skipped: Optional[list]) -> None:
    """Raise (strict) or warn and record one bad sample."""
    msg = f"{where}: {reason}"
    if strict:
        raise DataFormatError(msg)
    warnings.warn(f"skipping {msg}", stacklevel=3)
    if skipped is not None:
        skipped.append({"file": str(where), "reason": reason})


def _check_points(points: np.ndarray, expected: int, where) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float32)
    if pts.shape != (expected, 2):
        found = pts.size // 2 if pts.ndim == 2 and pts.shape[-1] == 2 else pts.shape
        raise DataFormatError(f"{where}: expected {expected} points, found {found}; check that "
                              f"the annotation matches the dataset's layout")
    if not np.all(np.isfinite(pts)):
        raise DataFormatError(f"{where}: NaN or infinite landmark coordinates; fix or remove this "
                              f"annotation")
    return pts


def check_landmarks_in_image(landmarks_px: np.ndarray, image_shape, where,
                             tolerance: float = OUTSIDE_TOLERANCE) -> None:
    """DataFormatError if a point lies more than `tolerance` x image size outside the image."""
    h, w = image_shape[:2]
    pts = np.asarray(landmarks_px, dtype=np.float64)
    lo = -tolerance * np.array([w, h])
    hi = np.array([w - 1, h - 1]) + tolerance * np.array([w, h])
    if np.any(pts < lo) or np.any(pts > hi):
        raise DataFormatError(f"{where}: landmarks lie far outside the {w}x{h} image (x in "
                              f"[{pts[:, 0].min():.0f}, {pts[:, 0].max():.0f}], y in "
                              f"[{pts[:, 1].min():.0f}, {pts[:, 1].max():.0f}]); the annotation "
                              f"does not belong to this image or uses another scale")


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataFormatError(f"{path}: {what} not found; pass --root pointing to the dataset folder "
                              f"(layout in data/README.md)")
    return path


def _one_line(err) -> str:
    """Another library's error text, squeezed onto one line."""
    return " ".join(str(err).split())[:300]


# A number as the annotation formats write it: decimal or exponent notation, or nan/inf (rejected
# later with a clear message). Python's float() also takes "1_000" and non-ASCII digits, which no
# annotation tool writes: a damaged file must not read as a silently different number.
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)",
                     re.IGNORECASE | re.ASCII)


def _parse_float(token: str) -> float:
    """float(token) for a plain ASCII number; ValueError for anything else."""
    if not _NUMBER.fullmatch(token):
        raise ValueError(f"not a number: {token!r}")
    return float(token)


def _show(text: str, limit: int = 60) -> str:
    """A piece of a damaged file, quoted on one line and shortened."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit - 4] + "...'"


def ensure_output_dir(path, option: str = "--out-dir") -> Path:
    """Create `path` and check that a file can be written in it; ConfigError naming the option."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot write there ({err.strerror or _one_line(err)}); "
                          f"choose a writable folder") from None
    return path


def _fmt(v) -> str:
    """Shortest text that reads back to the same float32."""
    return np.format_float_positional(np.float32(v), unique=True, trim="0")


# ----------------------------------------------------------------------------------------------
# 300-W (.pts)
# ----------------------------------------------------------------------------------------------


def read_pts(path, expected_points: Optional[int] = None) -> np.ndarray:
    """Read a 300-W .pts file -> float32 (N, 2), values as written (no 1-based shift)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: .pts file not found") from None
    except (UnicodeDecodeError, OSError) as err:
        raise DataFormatError(f"{path}: cannot read the .pts file ({_one_line(err)}); it is not a text "
                              f"annotation") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    n_declared = None
    body = None
    for k, ln in enumerate(lines):
        low = ln.lower()
        if low.startswith("n_points"):
            try:
                n_declared = int(ln.split(":", 1)[1])
            except (IndexError, ValueError):
                raise DataFormatError(f"{path}: bad header line {_show(ln)}; expected 'n_points: N'") from None
        elif ln == "{":
            try:
                end = lines.index("}", k + 1)
            except ValueError:
                raise DataFormatError(f"{path}: no closing '}}'; the .pts file is truncated") from None
            body = lines[k + 1:end]
            break
    if body is None:
        raise DataFormatError(f"{path}: no '{{' line; not a 300-W .pts file (expected 'version: 1', "
                              f"'n_points: N', '{{', one 'x y' a line, '}}')")
    pts = []
    for ln in body:
        parts = ln.split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts.append((_parse_float(parts[0]), _parse_float(parts[1])))
        except ValueError:
            raise DataFormatError(f"{path}: line {_show(ln)} is not two numbers 'x y'; fix the "
                                  f"annotation") from None
    n = len(pts)
    if n == 0:
        raise DataFormatError(f"{path}: no points between '{{' and '}}'; the annotation is empty")
    if n_declared is not None and n_declared != n:
        raise DataFormatError(f"{path}: header says n_points {n_declared} but {n} points follow; "
                              f"the file is truncated or edited")
    arr = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    return _check_points(arr, expected_points if expected_points else n, path)


def write_pts(path, landmarks_px: np.ndarray) -> None:
    """Write a 300-W .pts file (atomically); values read back exactly as float32."""
    pts = np.asarray(landmarks_px, dtype=np.float32).reshape(-1, 2)
    lines = ["version: 1", f"n_points:  {pts.shape[0]}", "{"]
    lines += [f"{_fmt(x)} {_fmt(y)}" for x, y in pts]
    lines.append("}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _find_image_for(pts_path: Path) -> Optional[Path]:
    stems = [pts_path.stem]
    base = re.sub(r"_\d+$", "", pts_path.stem)   # AFW/iBUG: 134212_1.pts annotates 134212.jpg
    if base != pts_path.stem:
        stems.append(base)
    for stem in stems:
        for ext in IMAGE_EXTENSIONS:
            cand = pts_path.with_name(stem + ext)
            if cand.is_file():
                return cand
    return None


def read_300w(root, split: str, strict: bool = True, skipped: Optional[list] = None) -> list:
    """300-W from its standard folders; see the module docstring for the split and subsets."""
    _check_split(split)
    info = dataset_info("300w")
    root = _need_dir(Path(root), "300-W root folder")
    folders = ([(f, "train") for f in info.train_splits] if split == "train"
               else list(_300W_TEST_FOLDERS))
    if not strict and not any((root / f).is_dir() for f, _ in folders):
        raise DataFormatError(f"{root}: none of the 300-W {split} folders "
                              f"({', '.join(f for f, _ in folders)}) exist; pass --root pointing "
                              f"to the 300-W folder (layout in data/README.md)")
    samples = []
    for folder, subset in folders:
        d = root / folder
        pts_files = sorted(d.glob("*.pts")) if d.is_dir() else []
        if not pts_files:
            what = "no .pts annotations in this folder" if d.is_dir() else "folder not found"
            msg = (f"{d}: {what}; expected 300-W's {folder}/ with an image and a .pts file per "
                   f"face (layout in data/README.md)")
            if strict:
                raise DataFormatError(msg)
            _bad(d, msg.split(": ", 1)[1], False, skipped)   # a subset may be absent from a small copy
            continue
        for pf in pts_files:
            image = _find_image_for(pf)
            if image is None:
                _bad(pf, "no image beside this .pts (looked for .jpg/.png with the same name)",
                     strict, skipped)
                continue
            try:
                pts = read_pts(pf, info.num_points)
            except DataFormatError as err:
                if strict:
                    raise
                _bad(pf, str(err).split(": ", 1)[-1], False, skipped)
                continue
            samples.append(Sample(id=f"{folder}/{pf.stem}", image_path=str(image), landmarks_px=pts,
                                  box_xywh=None, subset=subset))
    return samples


# ----------------------------------------------------------------------------------------------
# COFW (.mat, v7.3 HDF5 or v5)
# ----------------------------------------------------------------------------------------------


def _to_rgb_uint8(img: np.ndarray, where) -> np.ndarray:
    import cv2

    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise DataFormatError(f"{where}: image of type {img.dtype} is not a pixel array; expected "
                              f"grey, RGB or RGBA numbers")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))) or min(img.shape[:2],
                                                                                default=0) < 1:
        raise DataFormatError(f"{where}: unsupported image shape {img.shape}; expected a non-empty "
                              f"grey, RGB or RGBA image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        floating = np.issubdtype(img.dtype, np.floating)
        img = img.astype(np.float64)
        if floating and np.nanmax(np.where(np.isnan(img), -np.inf, img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(img[:, :, :3])


def _read_cofw_hdf5(f, path: Path, names: tuple):
    import h5py

    img_var, phis_var, box_var = names
    missing = [v for v in names if v not in f]
    if missing:
        raise DataFormatError(f"{path}: MATLAB file lacks the variables {missing} (has "
                              f"{sorted(k for k in f.keys() if not k.startswith('#'))}); "
                              f"expected the official COFW_*_color.mat")
    if (not isinstance(f[img_var], h5py.Dataset)
            or h5py.check_dtype(ref=f[img_var].dtype) is None):
        raise DataFormatError(f"{path}: variable {img_var} is not a cell array of images; "
                              f"expected the official COFW_*_color.mat")
    refs = np.asarray(f[img_var][()]).reshape(-1)
    # MATLAB stores arrays transposed: HDF5 (3, W, H) is the MATLAB (H, W, 3) image.
    images = [np.asarray(f[r][()]).T for r in refs]
    phis = np.asarray(f[phis_var][()], dtype=np.float64).T
    boxes = np.asarray(f[box_var][()], dtype=np.float64).T
    return images, np.atleast_2d(phis), np.atleast_2d(boxes)


def _read_cofw_arrays(path: Path, names: tuple):
    """-> (list of images as stored, MATLAB orientation), phis (M, 87), bboxes (M, 4)."""
    import h5py

    img_var, phis_var, box_var = names
    if h5py.is_hdf5(str(path)):
        try:
            f = h5py.File(str(path), "r")
        except (OSError, ValueError, RuntimeError) as err:
            raise DataFormatError(f"{path}: unreadable MATLAB v7.3 file ({_one_line(err)}); "
                                  f"download it again") from None
        try:
            with f:
                return _read_cofw_hdf5(f, path, names)
        except (KeyError, TypeError, ValueError, OSError, RuntimeError, AttributeError) as err:
            # a damaged HDF5 file fails at any step, not only when reading the arrays
            raise DataFormatError(f"{path}: malformed COFW variables ({_one_line(err)}); expected a "
                                  f"cell array of images and numeric phis/bboxes") from None
    else:
        import scipy.io

        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as err:   # noqa: BLE001 - scipy raises many types for damaged files
            raise DataFormatError(f"{path}: not a readable MATLAB file "
                                  f"({type(err).__name__}: {_one_line(err)}); download it again") from None
        missing = [v for v in names if v not in mat]
        if missing:
            raise DataFormatError(f"{path}: MATLAB file lacks the variables {missing} (has "
                                  f"{sorted(k for k in mat if not k.startswith('__'))}); "
                                  f"expected the official COFW_*_color.mat")
        try:
            cells = np.asarray(mat[img_var], dtype=object).reshape(-1)
            images = [np.asarray(c) for c in cells]
            phis = np.asarray(mat[phis_var], dtype=np.float64)
            boxes = np.asarray(mat[box_var], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"{path}: malformed COFW variables ({_one_line(err)}); expected a "
                                  f"cell array of images and numeric phis/bboxes") from None
    return images, np.atleast_2d(phis), np.atleast_2d(boxes)


def read_cofw(root, split: str, strict: bool = True, skipped: Optional[list] = None) -> list:
    """COFW from COFW_{train,test}_color.mat under root (v7.3 or v5); images kept in memory."""
    _check_split(split)
    n = dataset_info("cofw").num_points
    root = _need_dir(Path(root), "COFW root folder")
    fname, *names = COFW_FILES[split]
    path = root / fname
    if not path.is_file():
        raise DataFormatError(f"{path}: COFW file not found; put {fname} in the --root folder")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: empty file; download it again")
    images, phis, boxes = _read_cofw_arrays(path, tuple(names))
    if phis.ndim != 2 or boxes.ndim != 2:
        raise DataFormatError(f"{path}: phis {phis.shape} and bboxes {boxes.shape} must be "
                              f"matrices; expected the official COFW_*_color.mat")
    if phis.shape[1] != 3 * n and phis.shape[0] == 3 * n:
        phis = phis.T
    if boxes.shape[1] != 4 and boxes.shape[0] == 4:
        boxes = boxes.T
    if phis.shape[1] < 2 * n or phis.shape[0] != len(images) or boxes.shape != (len(images), 4):
        raise DataFormatError(f"{path}: {len(images)} images but phis {phis.shape} and bboxes "
                              f"{boxes.shape}; expected ({len(images)}, {3 * n}) and "
                              f"({len(images)}, 4)")
    if not images:
        raise DataFormatError(f"{path}: no faces in this file")
    samples = []
    for k, img in enumerate(images):
        where = f"{path}[{k}]"
        pts = np.stack([phis[k, :n], phis[k, n:2 * n]], axis=1)
        try:
            pts = _check_points(pts, n, where)
            if not np.all(np.isfinite(boxes[k])) or boxes[k][2] < 0 or boxes[k][3] < 0:
                raise DataFormatError(f"{where}: face box {boxes[k].tolist()} is not finite with a "
                                      f"positive size; the file is damaged")
            rgb = _to_rgb_uint8(img, where)
        except DataFormatError as err:
            if strict:
                raise
            _bad(where, str(err).split(": ", 1)[-1], False, skipped)
            continue
        occ = phis[k, 2 * n:3 * n] > 0.5 if phis.shape[1] >= 3 * n else np.zeros(n, bool)
        samples.append(Sample(id=f"{split}/{k:04d}", image_path="", landmarks_px=pts,
                              box_xywh=boxes[k].astype(np.float32), subset=split,
                              occluded=np.asarray(occ, dtype=bool), image=rgb))
    return samples


_MAT73_HEADER = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {} HDF5 schema 1.00 ."


def write_cofw_mat(path, samples: Sequence[Sample], split: str, version: str = "7.3") -> None:
    """Write samples (with in-memory images) in the official COFW .mat layout, atomically.

    version "7.3": HDF5 with a MATLAB header, MATLAB_class attributes, arrays transposed and the
    image cell array as object references into '#refs#'; version "5": scipy.io.savemat.
    """
    _check_split(split)
    _, img_var, phis_var, box_var = COFW_FILES[split]
    n = samples[0].landmarks_px.shape[0] if samples else dataset_info("cofw").num_points
    phis = np.zeros((len(samples), 3 * n), dtype=np.float64)
    boxes = np.zeros((len(samples), 4), dtype=np.float64)
    images = []
    for k, s in enumerate(samples):
        pts = np.asarray(s.landmarks_px, dtype=np.float64)
        phis[k, :n], phis[k, n:2 * n] = pts[:, 0], pts[:, 1]
        if s.occluded is not None:
            phis[k, 2 * n:] = np.asarray(s.occluded, dtype=np.float64)
        if s.box_xywh is not None:
            boxes[k] = np.asarray(s.box_xywh, dtype=np.float64)
        img = s.image if s.image is not None else load_image(s)
        images.append(np.asarray(img, dtype=np.uint8))
    if str(version) in ("5", "v5", "7", "6"):
        import scipy.io

        cell = np.empty((len(images), 1), dtype=object)
        for k, img in enumerate(images):
            cell[k, 0] = img
        with atomic_path(path, suffix=".mat") as tmp:
            scipy.io.savemat(str(tmp), {img_var: cell, phis_var: phis, box_var: boxes},
                             do_compression=True)
        return
    if str(version) not in ("7.3", "73", "v7.3"):
        raise ConfigError(f"unknown MATLAB version {version!r}; use '7.3' or '5'")
    import h5py

    with atomic_path(path, suffix=".mat") as tmp:
        with h5py.File(str(tmp), "w", userblock_size=512) as f:
            refs_group = f.create_group("#refs#")
            refs = f.create_dataset(img_var, shape=(1, len(images)), dtype=h5py.ref_dtype)
            refs.attrs["MATLAB_class"] = np.bytes_("cell")
            for k, img in enumerate(images):
                d = refs_group.create_dataset(f"img{k}", data=img.T, compression="gzip",
                                              compression_opts=1)
                d.attrs["MATLAB_class"] = np.bytes_("uint8")
                refs[0, k] = d.ref
            for var, arr in ((phis_var, phis), (box_var, boxes)):
                d = f.create_dataset(var, data=arr.T)
                d.attrs["MATLAB_class"] = np.bytes_("double")
        header = _MAT73_HEADER.format(time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime()))
        block = header.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as fh:
            fh.write(block)


# ----------------------------------------------------------------------------------------------
# WFLW (list_98pt_rect_attr_*.txt)
# ----------------------------------------------------------------------------------------------


def wflw_list_path(root, split: str) -> Path:
    return Path(root) / WFLW_LIST_DIR / f"list_98pt_rect_attr_{_check_split(split)}.txt"


def read_wflw(root, split: str, strict: bool = True, skipped: Optional[list] = None) -> list:
    """WFLW from its annotation list; images under root/WFLW_images."""
    n = dataset_info("wflw").num_points
    root = _need_dir(Path(root), "WFLW root folder")
    path = wflw_list_path(root, split)
    if not path.is_file():
        raise DataFormatError(f"{path}: WFLW annotation list not found; unpack "
                              f"WFLW_annotations.tar.gz into the --root folder")
    image_dir = root / WFLW_IMAGE_DIR
    n_fields = 2 * n + 4 + 6 + 1
    samples, seen = [], {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        tokens = line.split()
        try:
            if len(tokens) < n_fields:
                raise DataFormatError(f"{where}: {len(tokens)} fields, expected {n_fields} (196 "
                                      f"coordinates, 4 box values, 6 attributes, image path)")
            try:
                nums = np.asarray([_parse_float(t) for t in tokens[:n_fields - 1]], dtype=np.float64)
            except ValueError:
                raise DataFormatError(f"{where}: a coordinate, box or attribute field is not a "
                                      f"number; the line is damaged") from None
            pts = _check_points(nums[:2 * n].reshape(n, 2), n, where)
            box = nums[2 * n:2 * n + 4]
            if not np.all(np.isfinite(box)):
                raise DataFormatError(f"{where}: NaN or infinite face box")
            if box[2] < box[0] or box[3] < box[1]:
                raise DataFormatError(f"{where}: face box x_min {box[0]:g} y_min {box[1]:g} x_max "
                                      f"{box[2]:g} y_max {box[3]:g} is inverted; the line is damaged")
            flags = nums[2 * n + 4:2 * n + 10]
            if not np.all((flags == 0) | (flags == 1)):
                raise DataFormatError(f"{where}: the 6 attribute flags must be 0 or 1, found "
                                      f"{' '.join(f'{v:g}' for v in flags)}; the line is damaged")
            attrs = flags.astype(np.int8)
        except DataFormatError as err:
            if strict:
                raise
            _bad(where, str(err).split(": ", 1)[-1], False, skipped)
            continue
        rel = " ".join(tokens[n_fields - 1:])
        k = seen.get(rel, 0)
        seen[rel] = k + 1
        stem = os.path.splitext(rel)[0]
        samples.append(Sample(id=f"{stem}_{k}", image_path=str(image_dir / rel), landmarks_px=pts,
                              box_xywh=np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                                dtype=np.float32),
                              subset=split, attributes=attrs))
    if not samples and not skipped:
        raise DataFormatError(f"{path}: no faces in this list file")
    return samples


def write_wflw_list(path, samples: Sequence[Sample], image_root) -> None:
    """Write samples as a WFLW annotation list (atomically); image paths relative to image_root."""
    image_root = Path(image_root)
    out = []
    for s in samples:
        pts = np.asarray(s.landmarks_px, dtype=np.float32).reshape(-1)
        if s.box_xywh is not None:
            x, y, w, h = [float(v) for v in s.box_xywh]
        else:
            lp = np.asarray(s.landmarks_px, dtype=np.float32)
            (x, y), (x1, y1) = lp.min(axis=0), lp.max(axis=0)
            w, h = x1 - x, y1 - y
        box = (x, y, x + w, y + h)
        attrs = s.attributes if s.attributes is not None else np.zeros(6, np.int8)
        rel = os.path.relpath(s.image_path, image_root).replace(os.sep, "/")
        out.append(" ".join([_fmt(v) for v in pts] + [_fmt(v) for v in box]
                            + [str(int(a)) for a in attrs] + [rel]))
    atomic_write_text(path, "\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------
# Custom datasets
# ----------------------------------------------------------------------------------------------


def read_custom(spec_json, split: str, strict: bool = True, skipped: Optional[list] = None) -> list:
    """A user's dataset: JSON spec + list files of 'relative/image/path x0 y0 ...' (data/README.md)."""
    _check_split(split)
    spec_json = Path(spec_json)
    info = register_custom_dataset(spec_json)
    spec = json.loads(spec_json.read_text())
    key = "train_list" if split == "train" else "test_list"
    list_path = spec_json.parent / str(spec.get(key, f"{split}.txt"))
    if not list_path.is_file():
        raise DataFormatError(f"{list_path}: {split} list of custom dataset {info.name!r} not found; "
                              f"set {key!r} in {spec_json}")
    n = info.num_points
    samples, seen = [], {}
    try:
        text = list_path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise DataFormatError(f"{list_path}: cannot read the list file ({_one_line(err)}); expected "
                              f"UTF-8 text, one 'image x0 y0 ...' a line") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{list_path}:{lineno}"
        tokens = line.split()
        try:
            if len(tokens) < 2 * n + 1:
                raise DataFormatError(f"{where}: {len(tokens)} fields, expected an image path and "
                                      f"{2 * n} coordinates")
            try:
                nums = np.asarray([_parse_float(t) for t in tokens[-2 * n:]], dtype=np.float64)
            except ValueError:
                raise DataFormatError(f"{where}: a coordinate is not a number") from None
            pts = _check_points(nums.reshape(n, 2), n, where)
        except DataFormatError as err:
            if strict:
                raise
            _bad(where, str(err).split(": ", 1)[-1], False, skipped)
            continue
        rel = " ".join(tokens[:-2 * n])
        k = seen.get(rel, 0)
        seen[rel] = k + 1
        samples.append(Sample(id=f"{os.path.splitext(rel)[0]}_{k}",
                              image_path=str(list_path.parent / rel), landmarks_px=pts,
                              box_xywh=None, subset=split))
    if not samples and not skipped:
        raise DataFormatError(f"{list_path}: no faces in this list file")
    return samples


def write_custom_list(path, samples: Sequence[Sample]) -> None:
    """Write a custom-format list file (atomically); image paths relative to the list's folder."""
    base = Path(path).parent
    out = []
    for s in samples:
        rel = os.path.relpath(s.image_path, base).replace(os.sep, "/")
        out.append(" ".join([rel] + [_fmt(v) for v in np.asarray(s.landmarks_px).reshape(-1)]))
    atomic_write_text(path, "\n".join(out) + "\n")


READERS = {"300w": read_300w, "cofw": read_cofw, "wflw": read_wflw}


def read_dataset(name: str, root, split: str, custom_spec=None, strict: bool = True,
                 skipped: Optional[list] = None) -> list:
    """Dispatch to the reader of `name` (or of the custom spec) -> list[Sample]."""
    if custom_spec:
        return read_custom(custom_spec, split, strict=strict, skipped=skipped)
    info = dataset_info(name)
    if info.name not in READERS:
        raise ConfigError(f"dataset {name!r} is custom; pass --custom-spec FILE.json")
    return READERS[info.name](root, split, strict=strict, skipped=skipped)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def _looks_truncated(data: bytes) -> bool:
    tail = data[-64:].rstrip(b"\x00\r\n \t")
    if data[:2] == b"\xff\xd8":
        return not tail.endswith(b"\xff\xd9")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def _pil_verify(path: Path) -> Optional[str]:
    try:
        from PIL import Image
    except ImportError:   # pragma: no cover
        return None
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as err:   # noqa: BLE001 - any decoder failure means a damaged file
        return str(err)
    return None


def load_image(sample) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a Sample (or a path); grey, RGBA and 16-bit images are converted."""
    import cv2

    if isinstance(sample, Sample) and sample.image is not None:
        return _to_rgb_uint8(sample.image, sample.id)
    path = Path(sample.image_path if isinstance(sample, Sample) else sample)
    if not path.is_file():
        raise DataFormatError(f"{path}: image not found; check the dataset folder")
    data = path.read_bytes()
    if not data:
        raise DataFormatError(f"{path}: zero-byte image; download or copy it again")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataFormatError(f"{path}: unreadable image (not a format OpenCV decodes, or damaged); "
                              f"replace the file")
    if _looks_truncated(data):
        problem = _pil_verify(path)
        if problem:
            raise DataFormatError(f"{path}: truncated or damaged image ({_one_line(problem)}); replace the file")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return _to_rgb_uint8(img, path)


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------

SPLIT_FILES = ("images.npy", "landmarks.npy", "landmarks_px.npy", "crop_boxes.npy", "meta.json")


@dataclass
class PreparedSplit:
    dataset: str
    split: str
    path: Path
    images: np.ndarray          # uint8 (M, S, S, 3), memory-mapped
    landmarks: np.ndarray       # float32 (M, N, 2) normalised
    landmarks_px: np.ndarray    # float32 (M, N, 2) original-image pixels
    crop_boxes: np.ndarray      # float32 (M, 3) x0, y0, side
    meta: dict
    num_points: int
    input_size: int
    soft_landmarks: Optional[np.ndarray] = None
    manifest: Optional[dict] = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def ids(self) -> list:
        return list(self.meta.get("ids", []))

    @property
    def source_index(self) -> Optional[np.ndarray]:
        """train_aug only: the train/ row each augmented copy came from."""
        src = self.meta.get("source_index")
        return None if src is None else np.asarray(src, dtype=np.int64)


def _prepare_hint(prepared_dir) -> str:
    return (f"run python data_util.py prepare --dataset NAME [--root PATH] --out-dir {prepared_dir} "
            f"(or without --out-dir for the default folder)")


def read_manifest(prepared_dir) -> dict:
    path = Path(prepared_dir) / "manifest.json"
    if not path.is_file():
        raise DataFormatError(f"{prepared_dir}: no prepared data here (manifest.json missing); "
                              f"{_prepare_hint(prepared_dir)}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError):          # JSONDecodeError, UnicodeDecodeError, a folder
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
        raise DataFormatError(f"{path}: damaged manifest; {_prepare_hint(prepared_dir)}")
    if not manifest.get("complete"):
        raise DataFormatError(f"{prepared_dir}: prepared data is incomplete (an interrupted run); "
                              f"{_prepare_hint(prepared_dir)}")
    missing = [k for k in ("dataset", "num_points", "input_size") if k not in manifest]
    if missing:
        raise DataFormatError(f"{path}: damaged manifest (no {', '.join(missing)}); "
                              f"{_prepare_hint(prepared_dir)}")
    return manifest


def load_prepared(prepared_dir, split: str) -> PreparedSplit:
    """One split ("train", "test" or "train_aug") of a prepared folder, arrays memory-mapped."""
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    if split == "train_aug" and "train_aug" not in manifest:
        raise DataFormatError(f"{prepared_dir}: no complete train_aug/ split; run python "
                              f"data_util.py augment --prepared-dir {prepared_dir}")
    d = prepared_dir / split
    missing = [f for f in SPLIT_FILES if not (d / f).is_file()]
    if missing:
        raise DataFormatError(f"{d}: missing {missing}; {_prepare_hint(prepared_dir)}")
    try:
        arrays = {f[:-4]: np.load(d / f, mmap_mode="r") for f in SPLIT_FILES if f.endswith(".npy")}
        meta = json.loads((d / "meta.json").read_text())
        soft = np.load(d / "soft_landmarks.npy", mmap_mode="r") if (d / "soft_landmarks.npy").is_file() else None
    except (ValueError, OSError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{d}: damaged prepared files ({_one_line(err)}); {_prepare_hint(prepared_dir)}") from None
    try:
        m = int(arrays["images"].shape[0])
        n, size = int(manifest["num_points"]), int(manifest["input_size"])
        dataset = str(manifest["dataset"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise DataFormatError(f"{prepared_dir / 'manifest.json'}: damaged manifest (dataset, "
                              f"num_points, input_size); {_prepare_hint(prepared_dir)}") from None
    expected = {"images": (m, size, size, 3), "landmarks": (m, n, 2), "landmarks_px": (m, n, 2),
                "crop_boxes": (m, 3)}
    if soft is not None:
        arrays["soft_landmarks"] = soft
        expected["soft_landmarks"] = (m, n, 2)
    wrong = [f"{k}.npy {tuple(arrays[k].shape)} (expected {v})" for k, v in expected.items()
             if tuple(arrays[k].shape) != v]
    if wrong:
        raise DataFormatError(f"{d}: arrays do not match each other or the manifest: "
                              f"{'; '.join(wrong)}; {_prepare_hint(prepared_dir)}")
    if not isinstance(meta, dict):
        raise DataFormatError(f"{d / 'meta.json'}: damaged (not a JSON object); "
                              f"{_prepare_hint(prepared_dir)}")
    return PreparedSplit(dataset=dataset, split=split, path=d, images=arrays["images"],
                         landmarks=arrays["landmarks"], landmarks_px=arrays["landmarks_px"],
                         crop_boxes=arrays["crop_boxes"], meta=meta, num_points=n,
                         input_size=size, soft_landmarks=soft, manifest=manifest)


class _ArrayWriter:
    """Fill a large array in a scratch memmap, then write the first `count` rows atomically."""

    def __init__(self, path: Path, shape: tuple, dtype):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = self.path.with_name(f".{self.path.name}.scratch")
        self.array = np.lib.format.open_memmap(self.scratch, mode="w+", dtype=dtype,
                                               shape=(max(shape[0], 1),) + tuple(shape[1:]))

    def finish(self, count: int) -> None:
        arr = self.array
        with atomic_path(self.path, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=arr.dtype,
                                            shape=(count,) + arr.shape[1:])
            for i in range(0, count, 256):
                out[i:min(i + 256, count)] = arr[i:min(i + 256, count)]
            out.flush()
            del out
        self.close()

    def close(self) -> None:
        self.array = None
        if self.scratch.exists():
            self.scratch.unlink()


def _json_list(values):
    return [None if v is None else np.asarray(v).tolist() for v in values]


def _prepare_split(samples: list, out: Path, cfg: PrepareConfig, info, strict: bool,
                   skipped: list, progress: bool) -> int:
    """Crop every sample and write one split folder; returns the number of faces written."""
    from tqdm import tqdm

    s, n = cfg.input_size, info.num_points
    out.mkdir(parents=True, exist_ok=True)
    writer = _ArrayWriter(out / "images.npy", (len(samples), s, s, 3), np.uint8)
    try:
        lm = np.zeros((len(samples), n, 2), np.float32)
        lm_px = np.zeros((len(samples), n, 2), np.float32)
        boxes = np.zeros((len(samples), 3), np.float32)
        kept = []
        cache_path, cache_img = None, None
        for smp in tqdm(samples, desc=f"prepare {out.name}", unit="face", disable=not progress,
                        leave=False, file=sys.stderr):
            where = smp.image_path or smp.id
            try:
                if smp.image is None and smp.image_path == cache_path:
                    img = cache_img
                else:
                    img = load_image(smp)
                    cache_path, cache_img = smp.image_path, img
                check_landmarks_in_image(smp.landmarks_px, img.shape, where)
            except DataFormatError as err:
                if strict:
                    raise
                _bad(where, str(err).split(": ", 1)[-1], False, skipped)
                continue
            if cfg.box == "dataset" and smp.box_xywh is not None:
                box = iu.square_box_from_xywh(smp.box_xywh, cfg.margin)
            else:
                box = iu.square_box_from_landmarks(smp.landmarks_px, cfg.margin)
            k = len(kept)
            writer.array[k] = iu.crop_and_resize(img, box, s)
            lm[k] = iu.normalize_landmarks(iu.landmarks_to_crop(smp.landmarks_px, box, s), s)
            lm_px[k] = smp.landmarks_px
            boxes[k] = box
            kept.append(smp)
        m = len(kept)
        if m == 0:
            raise DataFormatError(f"{cfg.resolved_root()}: every {out.name} face was skipped "
                                  f"({skipped[0]['file']}: {skipped[0]['reason']} ...); fix the data")
        writer.finish(m)
    finally:
        writer.close()
    atomic_save_npy(out / "landmarks.npy", lm[:m])
    atomic_save_npy(out / "landmarks_px.npy", lm_px[:m])
    atomic_save_npy(out / "crop_boxes.npy", boxes[:m])
    meta = {"ids": [x.id for x in kept], "image_paths": [x.image_path for x in kept],
            "subsets": [x.subset for x in kept],
            "attributes": _json_list([x.attributes for x in kept]),
            "occluded": _json_list([x.occluded for x in kept]),
            "box_xywh": _json_list([x.box_xywh for x in kept])}
    atomic_write_json(out / "meta.json", meta)
    return m


def _clear_outputs(out_dir: Path) -> None:
    """Remove what a previous (incomplete or different) prepare wrote; manifest first."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for name in ("train", "test", "train_aug"):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)
    for name in ("asm.npz", "prepare_config.json"):
        (out_dir / name).unlink(missing_ok=True)


def _resolve_root(cfg: PrepareConfig) -> Path:
    root = cfg.resolved_root()
    if cfg.root or cfg.custom_spec or root.exists():
        return root
    try:
        import synthetic_faces
    except ImportError:
        raise DataFormatError(f"{root}: no embedded synthetic data and synthetic_faces.py is not "
                              f"available; pass --root pointing to the official dataset") from None
    print(f"generating the embedded synthetic {cfg.dataset} data in {root} ...", file=sys.stderr)
    synthetic_faces.generate_default(cfg.dataset.lower(), root)
    return root


def prepare(cfg: PrepareConfig, strict: bool = False, progress: bool = True,
            force: bool = False) -> Path:
    """Crop, resize and normalise both splits into cfg.resolved_out_dir(); returns that folder.

    Idempotent: a complete folder prepared with the same configuration is reused. manifest.json
    ("complete": true) is written last, so an interrupted run is never mistaken for a finished one.
    """
    if cfg.input_size < 8:
        raise ConfigError(f"--input-size {cfg.input_size} is too small; use at least 8 pixels")
    if cfg.box not in ("landmarks", "dataset"):
        raise ConfigError(f"--box {cfg.box!r}: choose 'landmarks' or 'dataset'")
    if not (cfg.margin >= 0 and np.isfinite(cfg.margin)):
        raise ConfigError(f"--margin {cfg.margin}: must be a finite number >= 0")
    if cfg.custom_spec and Path(cfg.custom_spec).is_dir():
        raise ConfigError(f"--custom-spec {cfg.custom_spec}: is a folder; pass the JSON spec file "
                          f"inside it")
    info = register_custom_dataset(cfg.custom_spec) if cfg.custom_spec else dataset_info(cfg.dataset)
    if cfg.custom_spec and cfg.dataset.lower() != info.name:
        if cfg.dataset != PrepareConfig().dataset:
            raise ConfigError(f"--dataset {cfg.dataset} does not match the name {info.name!r} in "
                              f"{cfg.custom_spec}; pass --dataset {info.name} or leave it out")
        cfg.dataset = info.name           # --dataset left at its default: the spec names the data
    cfg.dataset = cfg.dataset.lower()
    if cfg.box == "dataset" and info.name == "300w":
        raise ConfigError("--box dataset: 300-W .pts files carry no face box; use --box landmarks")
    out_dir = cfg.resolved_out_dir()
    config = dataclasses.asdict(cfg)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file() and not force:
        try:
            old = json.loads(manifest_path.read_text())
        except (ValueError, OSError):      # damaged (JSONDecodeError, UnicodeDecodeError): rebuild
            old = {}
        old = old if isinstance(old, dict) and isinstance(old.get("counts"), dict) else {}
        files_ok = all((out_dir / sp / f).is_file() for sp in ("train", "test") for f in SPLIT_FILES)
        if old.get("complete") and old.get("config") == config and files_ok:
            print(f"reusing prepared {info.name} data in {out_dir} (train {old['counts']['train']}, "
                  f"test {old['counts']['test']} faces; same configuration)")
            return out_dir
    ensure_output_dir(out_dir)        # before reading anything: fail fast, not after the crops
    root = _resolve_root(cfg)
    if out_dir.exists():
        _clear_outputs(out_dir)
    counts, skipped = {}, {}
    for split in ("train", "test"):
        skipped[split] = []
        samples = read_dataset(info.name, root, split, custom_spec=cfg.custom_spec, strict=strict,
                               skipped=skipped[split])
        if not samples:
            raise DataFormatError(f"{root}: no usable {split} faces ({len(skipped[split])} skipped); "
                                  f"fix the data")
        counts[split] = _prepare_split(samples, out_dir / split, cfg, info, strict, skipped[split],
                                       progress)
    save_config(cfg, out_dir, "prepare_config.json")
    manifest = {"complete": True, "dataset": info.name, "num_points": info.num_points,
                "input_size": cfg.input_size,
                "source_root": str(Path(cfg.custom_spec).parent if cfg.custom_spec else root),
                "counts": counts,
                "skipped": skipped, "config": config,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(manifest_path, manifest)
    n_skip = sum(len(v) for v in skipped.values())
    print(f"prepared {info.name}: train {counts['train']}, test {counts['test']} faces at "
          f"{cfg.input_size}x{cfg.input_size}, {n_skip} skipped -> {out_dir}")
    return out_dir


# ----------------------------------------------------------------------------------------------
# Offline augmentation
# ----------------------------------------------------------------------------------------------


def _info_from_manifest(manifest: dict):
    spec = (manifest.get("config") or {}).get("custom_spec")
    if spec:
        return register_custom_dataset(spec)
    return dataset_info(manifest["dataset"])


def augment_prepared(prepared_dir, copies: Optional[int] = None, seed: int = 0,
                     cfg: Optional[iu.AugmentConfig] = None, progress: bool = True) -> Path:
    """Write train_aug/: `copies` augmented versions of every train crop (meta source_index).

    landmarks_px of an augmented copy are its crop points mapped through the source's crop box
    (the frame of the source image, as if the augmented crop had been cut from it); crop_boxes are
    the source's boxes. Idempotent for the same copies and seed.
    """
    from tqdm import tqdm

    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    info = _info_from_manifest(manifest)
    copies = int(copies if copies is not None else info.aug_copies)
    if copies < 1:
        raise ConfigError(f"--copies {copies}: must be >= 1")
    cfg = cfg or iu.AugmentConfig()
    settings = {"copies": copies, "seed": int(seed), "augment": dataclasses.asdict(cfg)}
    out = prepared_dir / "train_aug"
    done = manifest.get("train_aug")
    if done and done.get("settings") == json.loads(json.dumps(settings)) and all(
            (out / f).is_file() for f in SPLIT_FILES):
        print(f"reusing {out} ({done['count']} faces; same copies and seed)")
        return out
    if "train_aug" in manifest:   # invalidate before touching the files
        manifest.pop("train_aug")
        atomic_write_json(prepared_dir / "manifest.json", manifest)
    if out.exists():
        shutil.rmtree(out)
    src = load_prepared(prepared_dir, "train")
    m, s, n = len(src), src.input_size, src.num_points
    total = m * copies
    perm = info.flip_permutation
    writer = _ArrayWriter(out / "images.npy", (total, s, s, 3), np.uint8)
    lm = np.zeros((total, n, 2), np.float32)
    lm_px = np.zeros((total, n, 2), np.float32)
    boxes = np.zeros((total, 3), np.float32)
    meta = {k: [] for k in ("ids", "image_paths", "subsets", "attributes", "occluded",
                            "source_index", "copy")}
    try:
        bar = tqdm(total=total, desc="augment", unit="face", disable=not progress, leave=False,
                   file=sys.stderr)
        k = 0
        for c in range(copies):
            for i in range(m):
                rng = np.random.default_rng([int(seed), c, i])
                crop_pts = iu.denormalize_landmarks(src.landmarks[i], s)
                img, pts, params = iu.augment_sample(np.asarray(src.images[i]), crop_pts, rng, cfg,
                                                     perm, return_params=True)
                writer.array[k] = img
                lm[k] = iu.normalize_landmarks(pts, s)
                lm_px[k] = iu.crop_to_original(pts, src.crop_boxes[i], s)
                boxes[k] = src.crop_boxes[i]
                occ = src.meta["occluded"][i]
                if occ is not None and params["flipped"]:
                    occ = list(np.asarray(occ)[perm].tolist())
                meta["ids"].append(f"{src.meta['ids'][i]}#aug{c}")
                meta["image_paths"].append(src.meta["image_paths"][i])
                meta["subsets"].append(src.meta["subsets"][i])
                meta["attributes"].append(src.meta["attributes"][i])
                meta["occluded"].append(occ)
                meta["source_index"].append(i)
                meta["copy"].append(c)
                k += 1
                bar.update(1)
        bar.close()
        writer.finish(total)
    finally:
        writer.close()
    atomic_save_npy(out / "landmarks.npy", lm)
    atomic_save_npy(out / "landmarks_px.npy", lm_px)
    atomic_save_npy(out / "crop_boxes.npy", boxes)
    atomic_write_json(out / "meta.json", meta)
    manifest["train_aug"] = {"count": total, "settings": settings}
    atomic_write_json(prepared_dir / "manifest.json", manifest)
    print(f"augmented {m} training faces x {copies} copies = {total} -> {out}")
    return out


# ----------------------------------------------------------------------------------------------
# tf.data pipeline
# ----------------------------------------------------------------------------------------------


def build_dataset(images, targets: dict, batch_size: int, shuffle: bool = True, seed: int = 0,
                  augment: Optional[iu.AugmentConfig] = None, flip_permutation=None, indices=None,
                  drop_remainder: bool = False, repeat: bool = False):
    """tf.data of (images float32 [0, 1] (B, S, S, 3), {name: (B, 2N) float32}).

    `images` uint8 (M, S, S, 3) (a memmap is fine: only the rows of each batch are read);
    `targets` maps names to normalised (M, N, 2) arrays. Without augmentation, whole batches of
    indices are gathered at once (no per-face Python). With `augment`, each face and all of its
    target arrays get one and the same random transform (image_utility.augment_sample), seeded by
    (seed, a per-element random stream that changes each epoch), so runs are reproducible.
    """
    import tensorflow as tf

    images_np = images
    m_all, s = int(images_np.shape[0]), int(images_np.shape[1])
    names = list(targets)
    if not names:
        raise ConfigError("build_dataset needs at least one target array")
    tarr = [np.asarray(targets[k], dtype=np.float32) for k in names]
    for k, t in zip(names, tarr):
        if t.shape[0] != m_all or t.ndim != 3 or t.shape[2] != 2:
            raise ConfigError(f"target {k!r} has shape {t.shape}; expected ({m_all}, N, 2)")
    n = tarr[0].shape[1]
    stacked = np.stack(tarr, axis=1)             # (M, K, N, 2)
    kt = len(names)
    idx = np.arange(m_all, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    if idx.size == 0:
        raise ConfigError("build_dataset: no samples selected")
    ds = tf.data.Dataset.from_tensor_slices(idx)
    if shuffle:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def split_targets(img_u8, tg):
        x = tf.cast(img_u8, tf.float32) / 255.0
        b = tf.shape(tg)[0]
        return x, {k: tf.reshape(tg[:, j], (b, 2 * n)) for j, k in enumerate(names)}

    if augment is None:
        def gather(batch_idx):
            bi = np.asarray(batch_idx)
            order = np.argsort(bi, kind="stable")
            inv = np.empty_like(order)
            inv[order] = np.arange(order.size)
            rows = bi[order]
            return (np.ascontiguousarray(np.asarray(images_np[rows])[inv]),
                    np.ascontiguousarray(stacked[bi]))

        def tf_gather(batch_idx):
            img, tg = tf.numpy_function(gather, [batch_idx], [tf.uint8, tf.float32])
            img.set_shape((None, s, s, 3))
            tg.set_shape((None, kt, n, 2))
            return split_targets(img, tg)

        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(tf_gather, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    cfg = augment

    def aug_one(i, r):
        i = int(i)
        rng = np.random.default_rng([int(seed), int(r) & 0x7FFFFFFFFFFFFFFF])
        pts = iu.denormalize_landmarks(stacked[i], s)             # (K, N, 2) crop pixels
        img, pts = iu.augment_sample(np.asarray(images_np[i]), pts, rng, cfg, flip_permutation)
        return img, iu.normalize_landmarks(pts, s)

    def tf_aug(i, r):
        img, tg = tf.numpy_function(aug_one, [i, r], [tf.uint8, tf.float32])
        img.set_shape((s, s, 3))
        tg.set_shape((kt, n, 2))
        return img, tg

    try:
        rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    except TypeError:   # older TensorFlow
        rand = tf.data.Dataset.random(seed=seed)
    ds = tf.data.Dataset.zip((ds, rand))
    ds = ds.map(tf_aug, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(split_targets, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="data_util.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="crop and normalise a dataset into data/prepared/")
    add_dataclass_args(p, PrepareConfig)
    p.add_argument("--strict", action="store_true", help="stop at the first bad sample")
    p.add_argument("--force", action="store_true", help="rebuild even if a complete copy exists")
    p.add_argument("--no-progress", action="store_true")
    a = sub.add_parser("augment", help="write train_aug/ with K augmented copies of each train face")
    a.add_argument("--prepared-dir", required=True)
    a.add_argument("--copies", type=int, default=None, help="default: the dataset's (4 or 10)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        cfg = dataclass_from_args(PrepareConfig, args)
        prepare(cfg, strict=args.strict, progress=not args.no_progress, force=args.force)
    else:
        augment_prepared(args.prepared_dir, args.copies, args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
