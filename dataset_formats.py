"""The official dataset formats: one reader and one writer per format, and image loading.

Formats (METHOD.md section 7, data/README.md):
* 300-W: one image + `.pts` per face in lfpw/{trainset,testset}, helen/{trainset,testset}, afw, ibug.
  train = lfpw/trainset + helen/trainset + afw (subset "train"); test = lfpw/testset + helen/testset
  (subset "common") + ibug (subset "challenging"). `.pts` values are read as they are (0-based).
* COFW: COFW_train_color.mat / COFW_test_color.mat, MATLAB v7.3 (HDF5) or v5; variables
  IsTr/phisTr/bboxesTr (train) and IsT/phisT/bboxesT (test); phis rows = 29 x, 29 y, 29 occlusion
  flags; boxes x y w h. Images are kept in memory (`Sample.image`).
* WFLW: WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt, one face
  a line: 196 coordinates, box x_min y_min x_max y_max, 6 attribute flags, image path under WFLW_images/.
* custom: a JSON spec (read once by `read_custom_spec` into a configuration.DatasetInfo, which the
  callers pass down) and list files of "relative/image/path x0 y0 ... x(N-1) y(N-1)", paths relative
  to the spec's folder.

Bad samples: every reader takes `strict` (default True: the first bad sample raises one
DataFormatError line naming the file) and `skipped` (a list; with strict=False a bad sample is skipped
with a warning and recorded there as {"file", "reason"}). Structural problems (missing root, folder or
list file, an empty folder, a .mat without its variables) always raise. `prepare` reads with
strict=False and records the skipped samples in manifest.json.

Writers (`write_pts`, `write_wflw_list`, `write_cofw_mat`, `write_custom_list`) are the only code that
writes these formats (synthetic_faces.py calls them too), so whatever they write the readers read
back to the same float32 values. `decimals` fixes the number of decimals written (the official files
use 3); by default each value is written with the fewest digits that read back to the same float32.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from configuration import DatasetInfo, dataset_info
from errors import ConfigError, DataFormatError
from safe_io import atomic_path, atomic_write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".JPG", ".JPEG", ".PNG")
# Reader-level layout of the 300-W test folders (train folders come from DatasetInfo.train_splits).
_300W_TEST_FOLDERS = (("lfpw/testset", "common"), ("helen/testset", "common"), ("ibug", "challenging"))
WFLW_LIST_DIR = Path("WFLW_annotations") / "list_98pt_rect_attr_train_test"
WFLW_IMAGE_DIR = "WFLW_images"
COFW_FILES = {"train": ("COFW_train_color.mat", "IsTr", "phisTr", "bboxesTr"),
              "test": ("COFW_test_color.mat", "IsT", "phisT", "bboxesT")}
# A landmark farther than this fraction of the image size outside the image is an annotation error.
OUTSIDE_TOLERANCE = 0.5
# Largest image decoded (width x height): 134 MP, above any camera's photo (a 100 MP frame is
# 1e8). A file claiming more (a decompression bomb, a damaged header) would cost gigabytes.
MAX_IMAGE_PIXELS = 1 << 27


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


def report_bad_sample(where, reason: str, strict: bool, skipped: Optional[list]) -> None:
    """Raise (strict) or warn and record one bad sample."""
    msg = f"{where}: {reason}"
    if strict:
        raise DataFormatError(msg)
    warnings.warn(f"skipping {msg}", stacklevel=3)
    if skipped is not None:
        skipped.append({"file": str(where), "reason": reason})


def error_reason(err, where) -> str:
    """The reason of an error raised as "<where>: <reason>": its text without the "<where>: " prefix
    (a path may itself hold ': '), for report_bad_sample; an error naming another place is kept whole."""
    text, prefix = str(err), f"{where}: "
    return text[len(prefix):] if text.startswith(prefix) else text


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


def one_line(err) -> str:
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


def _fmt(v, decimals: Optional[int] = None) -> str:
    """`decimals` fixed decimals, or (None) the shortest text that reads back to the same float32."""
    if decimals is not None:
        return f"{float(v):.{int(decimals)}f}"
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


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
        raise DataFormatError(f"{path}: cannot read the .pts file ({one_line(err)}); it is not a text "
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


def write_pts(path, landmarks_px: np.ndarray, decimals: Optional[int] = None) -> None:
    """Write a 300-W .pts file (atomically); values read back exactly as float32 (decimals=None)."""
    pts = np.asarray(landmarks_px, dtype=np.float64).reshape(-1, 2)
    lines = ["version: 1", f"n_points:  {pts.shape[0]}", "{"]
    lines += [f"{_fmt(x, decimals)} {_fmt(y, decimals)}" for x, y in pts]
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
            why = (("no .pts annotations in this folder" if d.is_dir() else "folder not found")
                   + f"; expected 300-W's {folder}/ with an image and a .pts file per face (layout in "
                     f"data/README.md)")
            if strict:
                raise DataFormatError(f"{d}: {why}")
            report_bad_sample(d, why, False, skipped)   # a subset may be absent from a small copy
            continue
        for pf in pts_files:
            image = _find_image_for(pf)
            if image is None:
                report_bad_sample(pf, "no image beside this .pts (looked for .jpg/.png with the same name)",
                     strict, skipped)
                continue
            try:
                pts = read_pts(pf, info.num_points)
            except DataFormatError as err:
                if strict:
                    raise
                report_bad_sample(pf, error_reason(err, pf), False, skipped)
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
            raise DataFormatError(f"{path}: unreadable MATLAB v7.3 file ({one_line(err)}); "
                                  f"download it again") from None
        try:
            with f:
                return _read_cofw_hdf5(f, path, names)
        except (KeyError, TypeError, ValueError, OSError, RuntimeError, AttributeError) as err:
            # a damaged HDF5 file fails at any step, not only when reading the arrays
            raise DataFormatError(f"{path}: malformed COFW variables ({one_line(err)}); expected a "
                                  f"cell array of images and numeric phis/bboxes") from None
    else:
        import scipy.io

        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as err:   # noqa: BLE001 - scipy raises many types for damaged files
            raise DataFormatError(f"{path}: not a readable MATLAB file "
                                  f"({type(err).__name__}: {one_line(err)}); download it again") from None
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
            raise DataFormatError(f"{path}: malformed COFW variables ({one_line(err)}); expected a "
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
            report_bad_sample(where, error_reason(err, where), False, skipped)
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
            report_bad_sample(where, error_reason(err, where), False, skipped)
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


def write_wflw_list(path, samples: Sequence[Sample], image_root,
                    decimals: Optional[int] = None) -> None:
    """Write samples as a WFLW annotation list (atomically); image paths relative to image_root."""
    image_root = Path(image_root)
    out = []
    for s in samples:
        pts = np.asarray(s.landmarks_px, dtype=np.float64).reshape(-1)
        if s.box_xywh is not None:
            x, y, w, h = [float(v) for v in s.box_xywh]
        else:
            lp = np.asarray(s.landmarks_px, dtype=np.float32)
            (x, y), (x1, y1) = lp.min(axis=0), lp.max(axis=0)
            w, h = x1 - x, y1 - y
        box = (x, y, x + w, y + h)
        attrs = s.attributes if s.attributes is not None else np.zeros(6, np.int8)
        rel = os.path.relpath(s.image_path, image_root).replace(os.sep, "/")
        out.append(" ".join([_fmt(v, decimals) for v in pts] + [_fmt(v) for v in box]
                            + [str(int(a)) for a in attrs] + [rel]))
    atomic_write_text(path, "\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------
# Custom datasets
# ----------------------------------------------------------------------------------------------


def read_custom_spec(spec_path) -> DatasetInfo:
    """The layout of a user's own dataset from its JSON spec file (format in data/README.md),
    checked by configuration.DatasetInfo.from_spec; every problem is one ConfigError line naming the
    file. Read once, where a command starts, and passed down."""
    from safe_io import MAX_JSON_BYTES, TooLarge, read_bounded  # noqa: PLC0415

    spec_path = Path(spec_path)
    try:
        spec = json.loads(read_bounded(spec_path, MAX_JSON_BYTES).decode("utf-8"))   # bounded: /dev/zero
    except TooLarge as err:
        raise ConfigError(f"{spec_path}: too large for a dataset spec ({err}); see data/README.md "
                          f"for the format") from None
    except FileNotFoundError:
        raise ConfigError(f"{spec_path}: custom dataset spec not found; pass an existing JSON file") from None
    except IsADirectoryError:
        raise ConfigError(f"{spec_path}: is a folder; pass the dataset's JSON spec file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{spec_path}: not valid JSON ({one_line(err)}); see data/README.md for "
                          f"the format") from None
    return DatasetInfo.from_spec(spec, source=spec_path)


def resolve_dataset(dataset: str, custom_spec=None) -> DatasetInfo:
    """The DatasetInfo of a command's --dataset / --custom-spec: the spec's layout when a spec is
    given (read_custom_spec), else the built-in dataset's."""
    return read_custom_spec(custom_spec) if custom_spec else dataset_info(dataset)


def read_custom(spec_json, split: str, strict: bool = True, skipped: Optional[list] = None,
                info: Optional[DatasetInfo] = None) -> list:
    """A user's dataset: JSON spec + list files of 'relative/image/path x0 y0 ...' (data/README.md).
    `info`: the spec as already read (read_custom_spec); list paths are relative to its folder."""
    _check_split(split)
    spec_json = Path(spec_json)
    info = info if info is not None else read_custom_spec(spec_json)
    key = "train_list" if split == "train" else "test_list"
    listed = info.train_splits if split == "train" else info.test_splits
    list_path = spec_json.parent / (listed[0] if listed else f"{split}.txt")
    if not list_path.is_file():
        raise DataFormatError(f"{list_path}: {split} list of custom dataset {info.name!r} not found; "
                              f"set {key!r} in {spec_json}")
    n = info.num_points
    samples, seen = [], {}
    try:
        text = list_path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise DataFormatError(f"{list_path}: cannot read the list file ({one_line(err)}); expected "
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
            report_bad_sample(where, error_reason(err, where), False, skipped)
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


def write_custom_list(path, samples: Sequence[Sample], decimals: Optional[int] = None) -> None:
    """Write a custom-format list file (atomically); image paths relative to the list's folder."""
    base = Path(path).parent
    out = []
    for s in samples:
        rel = os.path.relpath(s.image_path, base).replace(os.sep, "/")
        out.append(" ".join([rel] + [_fmt(v, decimals) for v in np.asarray(s.landmarks_px).reshape(-1)]))
    atomic_write_text(path, "\n".join(out) + "\n")


READERS = {"300w": read_300w, "cofw": read_cofw, "wflw": read_wflw}


def read_dataset(name, root, split: str, custom_spec=None, strict: bool = True,
                 skipped: Optional[list] = None) -> list:
    """Dispatch to the reader of `name` (a built-in name, or the DatasetInfo of the custom spec,
    read_custom_spec) -> list[Sample]."""
    if custom_spec:
        custom = name if isinstance(name, DatasetInfo) and name.official_format == "custom" else None
        return read_custom(custom_spec, split, strict=strict, skipped=skipped, info=custom)
    info = dataset_info(name)
    if info.name not in READERS:
        raise ConfigError(f"dataset {info.name!r} is custom; pass --custom-spec FILE.json")
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
    from PIL import Image  # noqa: PLC0415  (pillow is in requirements.txt)

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as err:   # noqa: BLE001 - any decoder failure means a damaged file
        return str(err)
    return None


def check_image_size(path, data: bytes) -> None:
    """Refuse an image whose header claims more than MAX_IMAGE_PIXELS before decoding it. PIL reads
    only the header here; formats PIL cannot read are left to OpenCV (which has its own limit)."""
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    too_big = f"{path}: image too large to decode"
    fix = f"(the limit is {MAX_IMAGE_PIXELS} pixels); resize it or leave it out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # PIL's DecompressionBombWarning
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Image.DecompressionBombError as err:   # above twice PIL's own limit
            raise DataFormatError(f"{too_big} ({one_line(err).split(',')[0]}) {fix}") from None
        except Exception:   # noqa: BLE001 - not a header PIL knows: OpenCV decides
            return
    if width * height > MAX_IMAGE_PIXELS:
        raise DataFormatError(f"{too_big}: its header says {width}x{height} pixels {fix}")


def decode_image(path, data: bytes) -> np.ndarray:
    """cv2.imdecode (IMREAD_UNCHANGED: BGR, BGRA, grey, 16-bit as stored) after check_image_size;
    anything OpenCV cannot decode -> one DataFormatError line naming the file."""
    import cv2

    if not data:
        raise DataFormatError(f"{path}: zero-byte image; download or copy it again")
    check_image_size(path, data)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:    # e.g. OpenCV's own size limit, a corrupt header
        raise DataFormatError(f"{path}: unreadable image ({one_line(err)[-160:]}); replace the "
                              f"file") from None
    if img is None:
        raise DataFormatError(f"{path}: unreadable image (not a format OpenCV decodes, or damaged); "
                              f"replace the file")
    return img


def load_image(sample) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a Sample (or a path); grey, RGBA and 16-bit images are converted."""
    import cv2

    if isinstance(sample, Sample) and sample.image is not None:
        return _to_rgb_uint8(sample.image, sample.id)
    path = Path(sample.image_path if isinstance(sample, Sample) else sample)
    if not path.is_file():
        raise DataFormatError(f"{path}: image not found; check the dataset folder")
    data = path.read_bytes()
    img = decode_image(path, data)
    if _looks_truncated(data):
        problem = _pil_verify(path)
        if problem:
            raise DataFormatError(f"{path}: truncated or damaged image ({one_line(problem)}); replace the file")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return _to_rgb_uint8(img, path)
