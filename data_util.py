"""The data side: `prepare` (official formats -> crops), offline `augment`, the one reader of a
prepared folder and the one tf.data pipeline the trainers fit on.

* `prepare(cfg)` reads a dataset with dataset_formats.read_dataset (the official formats' readers and
  writers live there), crops, resizes and normalises every face and writes the prepared folder
  (docs/ARCHITECTURE.md), `manifest.json` ("complete": true) last.
* `augment_prepared(dir)` writes train_aug/: augmented copies of every training crop.
* `load_prepared(dir, split) -> PreparedSplit`: the only reader of a prepared folder (memory-mapped
  arrays, checked against the manifest and for values no prepare writes: NaN, wrong dtype, landmarks
  far outside the crop, crop sides <= 0); `read_manifest(dir)` the only reader of manifest.json.
* `TrainData(cfg, dir, train, aug)`: the training pool (train faces + their offline copies) with a
  seeded validation split of WHOLE faces; `TrainData.dataset(...)` is the tf.data pipeline: a
  per-epoch seeded shuffle (a resumed run sees the same batches) and optional online augmentation.

Command line:
  python data_util.py prepare --dataset 300w --root PATH [--input-size 224] [--box landmarks|dataset]
                              [--margin 0.25] [--out-dir D] [--custom-spec F] [--strict]
  python data_util.py augment --prepared-dir D [--copies K] [--seed S] [--no-oversample] [--jitter]
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

import image_utility as iu
from configuration import (DatasetInfo, PrepareConfig, add_dataclass_args, check_input_size,
                           config_record, dataclass_from_args, dataset_info)
from dataset_formats import (check_landmarks_in_image, error_reason, load_image, one_line,
                             read_custom_spec, read_dataset, report_bad_sample)
from errors import ConfigError, DataFormatError, LandmarkError, run_cli
from safe_io import (OWNER_FILE, OutputLock, atomic_path, atomic_save_npy, atomic_write_json,
                     claim_folder, folder_contents, read_owner)

def ensure_output_dir(path, option: str = "--out-dir") -> Path:
    """Create `path` and check that a file can be written in it; ConfigError naming the option."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot write there ({err.strerror or one_line(err)}); "
                          f"choose a writable folder") from None
    return path


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------

SPLIT_FILES = ("images.npy", "landmarks.npy", "landmarks_px.npy", "crop_boxes.npy", "meta.json")
# A face whose landmarks (or dataset box) span fewer pixels is an annotation error (points that
# coincide): its crop would be a pixel or two stretched to the input.
MIN_FACE_PX = 4.0


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

    @classmethod
    def in_memory(cls, dataset: str, images: np.ndarray, landmarks: np.ndarray) -> "PreparedSplit":
        """A train split held in memory (benchmarks): uint8 crops and their normalised landmarks;
        the crop boxes are the crops themselves."""
        m, size, n = len(images), int(images.shape[1]), int(landmarks.shape[1])
        landmarks = np.asarray(landmarks, np.float32)
        return cls(dataset=dataset, split="train", path=Path("<memory>"), images=images,
                   landmarks=landmarks, landmarks_px=size / 2 - size * landmarks,
                   crop_boxes=np.tile(np.array([0, 0, size], np.float32), (m, 1)),
                   meta={"ids": [str(i) for i in range(m)]}, num_points=n, input_size=size)

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
    if not Path(prepared_dir).exists():      # say so: not "no prepared data here" (issue 36)
        raise DataFormatError(f"{prepared_dir}: no such folder; {_prepare_hint(prepared_dir)}")
    if not path.is_file():
        raise DataFormatError(f"{prepared_dir}: no prepared data here (manifest.json missing); "
                              f"{_prepare_hint(prepared_dir)}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError):          # JSONDecodeError, UnicodeDecodeError, a folder
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
        raise DataFormatError(f"{path}: damaged manifest; {_prepare_hint(prepared_dir)}")
    if manifest.get("complete") is not True:     # a real JSON true, not "false" or 1
        raise DataFormatError(f"{path}: prepared data is incomplete (an interrupted run); "
                              f"{_prepare_hint(prepared_dir)}")
    missing = [k for k in ("dataset", "num_points", "input_size") if k not in manifest]
    if missing:
        raise DataFormatError(f"{path}: damaged manifest (no {', '.join(missing)}); "
                              f"{_prepare_hint(prepared_dir)}")
    return manifest


def prepared_complete(prepared_dir, split: str = "train") -> bool:
    """True when prepared_dir holds a complete prepared folder with the files of `split`."""
    try:
        manifest = read_manifest(prepared_dir)
    except DataFormatError:
        return False
    if split == "train_aug" and "train_aug" not in manifest:
        return False
    return all((Path(prepared_dir) / split / f).is_file() for f in SPLIT_FILES)


# Normalised landmarks beyond this magnitude lie more than 1.5 crop sides outside their crop: no
# prepare or augment writes them (the crop holds the face), so the folder is damaged.
LANDMARKS_NORM_LIMIT = 2.0


def _check_values(d: Path, arrays: dict, meta: dict, prepared_dir) -> None:
    """DataFormatError naming the file and the first face whose stored values no prepare writes."""
    ids = meta.get("ids") if isinstance(meta.get("ids"), list) else []

    def fail(name: str, bad_rows: np.ndarray, what: str):
        i = int(bad_rows[0])
        face = f"face {i}" + (f" ({ids[i]})" if i < len(ids) else "")
        raise DataFormatError(f"{d / (name + '.npy')}: {face} {what} ({len(bad_rows)} faces in all); "
                              f"{_prepare_hint(prepared_dir)}")

    if arrays["images"].dtype != np.uint8:
        raise DataFormatError(f"{d / 'images.npy'}: {arrays['images'].dtype} pixels, expected uint8 "
                              f"crops; {_prepare_hint(prepared_dir)}")
    for name in ("landmarks", "landmarks_px", "crop_boxes", "soft_landmarks"):
        arr = arrays.get(name)
        if arr is None:
            continue
        if arr.dtype != np.float32:
            raise DataFormatError(f"{d / (name + '.npy')}: {arr.dtype} values, expected float32; "
                                  f"{_prepare_hint(prepared_dir)}")
        rows = np.asarray(arr).reshape(len(arr), -1)
        bad = np.flatnonzero(~np.all(np.isfinite(rows), axis=1))
        if bad.size:
            fail(name, bad, "has NaN or infinite values")
        if name in ("landmarks", "soft_landmarks"):
            bad = np.flatnonzero(np.any(np.abs(rows) > LANDMARKS_NORM_LIMIT, axis=1))
            if bad.size:
                fail(name, bad, f"has landmarks more than 1.5 crop sides outside the crop "
                                f"(|normalised value| > {LANDMARKS_NORM_LIMIT:g})")
    bad = np.flatnonzero(np.asarray(arrays["crop_boxes"])[:, 2] <= 0)
    if bad.size:
        fail("crop_boxes", bad, "has a crop side <= 0")


def _load_npy(path: Path, prepared_dir) -> np.ndarray:
    """One memory-mapped .npy file of a prepared split; DataFormatError naming it when damaged."""
    try:
        with open(path, "rb") as f:
            is_npy = f.read(6) == b"\x93NUMPY"
        if not is_npy:
            raise DataFormatError(f"{path}: not a .npy file; {_prepare_hint(prepared_dir)}")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:      # truncated header or data, unreadable
        raise DataFormatError(f"{path}: not a valid .npy array ({one_line(err)}); "
                              f"{_prepare_hint(prepared_dir)}") from None


def load_prepared(prepared_dir, split: str, soft: bool = True) -> PreparedSplit:
    """One split ("train", "test" or "train_aug") of a prepared folder, arrays memory-mapped.

    The only reader of a prepared folder (trainers, evaluation, the ASM, bench). Checks the shapes
    against each other and the manifest, and the values (_check_values): uint8 images, finite
    float32 landmarks within LANDMARKS_NORM_LIMIT, crop sides > 0; an error names file and face.
    soft=False leaves soft_landmarks.npy unread (the ASM, which rewrites it, may find it stale)."""
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    if split == "train_aug" and "train_aug" not in manifest:
        raise DataFormatError(f"{prepared_dir / 'train_aug'}: not a complete split (manifest.json "
                              f"lists no train_aug: an interrupted augment); run python "
                              f"data_util.py augment --prepared-dir {prepared_dir}")
    d = prepared_dir / split
    missing = [f for f in SPLIT_FILES if not (d / f).is_file()]
    if missing:
        raise DataFormatError(f"{d}: missing {missing}; {_prepare_hint(prepared_dir)}")
    arrays = {f[:-4]: _load_npy(d / f, prepared_dir) for f in SPLIT_FILES if f.endswith(".npy")}
    soft = (_load_npy(d / "soft_landmarks.npy", prepared_dir)
            if soft and (d / "soft_landmarks.npy").is_file() else None)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (ValueError, OSError) as err:          # JSONDecodeError, UnicodeDecodeError
        raise DataFormatError(f"{d / 'meta.json'}: damaged ({one_line(err)}); "
                              f"{_prepare_hint(prepared_dir)}") from None
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
    ids = meta.get("ids")
    if not isinstance(ids, list) or len(ids) != m:
        raise DataFormatError(f"{d / 'meta.json'}: {len(ids) if isinstance(ids, list) else 'no'} ids "
                              f"for {m} faces; {_prepare_hint(prepared_dir)}")
    _check_values(d, arrays, meta, prepared_dir)
    return PreparedSplit(dataset=dataset, split=split, path=d, images=arrays["images"],
                         landmarks=arrays["landmarks"], landmarks_px=arrays["landmarks_px"],
                         crop_boxes=arrays["crop_boxes"], meta=meta, num_points=n,
                         input_size=size, soft_landmarks=soft, manifest=manifest)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(LandmarkError):
    """The output disk is (or would be) full; nothing partial is left behind."""


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:,.1f} MiB"


def check_free_space(folder: Path, needed: int, what: str, fix: str) -> None:
    """NoSpaceError before any writing when `folder`'s file system has less than `needed` bytes."""
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < needed:
        raise NoSpaceError(f"no space left on {folder}: {what} needs about {_mib(needed)}, "
                           f"{_mib(free)} free; {fix}")


def _allocate(path: Path, nbytes: int) -> None:
    """Give a memory-mapped file real blocks now: a full disk then fails here with ENOSPC
    (an OSError) instead of killing the process with SIGBUS at some later page write."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, int(nbytes))
    except OSError as err:
        if err.errno in NO_SPACE:
            raise
        # EOPNOTSUPP/EINVAL: this file system cannot preallocate; check_free_space guarded it
    except AttributeError:   # pragma: no cover - no posix_fallocate (not Linux)
        pass
    finally:
        os.close(fd)


def _open_filled_memmap(path: Path, dtype, shape: tuple):
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    _allocate(path, os.path.getsize(path))
    return arr


class _ArrayWriter:
    """Fill a large array in a scratch memmap, then write the first `count` rows atomically.
    Both files get their blocks when they are made (_allocate): a full disk is an OSError."""

    def __init__(self, path: Path, shape: tuple, dtype):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = self.path.with_name(f".{self.path.name}.scratch")
        self.array = None
        try:
            self.array = _open_filled_memmap(self.scratch, dtype,
                                             (max(shape[0], 1),) + tuple(shape[1:]))
        except BaseException:
            self.close()
            raise

    def finish(self, count: int) -> None:
        arr = self.array
        with atomic_path(self.path, suffix=".npy") as tmp:
            out = _open_filled_memmap(tmp, arr.dtype, (count,) + arr.shape[1:])
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
                box = _face_box(smp, cfg, where)
            except DataFormatError as err:
                if strict:
                    raise
                report_bad_sample(where, error_reason(err, where), False, skipped)   # a path may hold ": "
                continue
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


def _face_box(smp, cfg: PrepareConfig, where) -> tuple:
    """The square crop box of a sample; a face smaller than MIN_FACE_PX (points that coincide, a
    zero-size dataset box) is a bad sample: its crop would be a pixel stretched to the input."""
    extent = float(np.max(np.ptp(np.asarray(smp.landmarks_px, np.float64), axis=0)))
    if not extent >= MIN_FACE_PX:
        raise DataFormatError(f"{where}: the landmarks span only {extent:.2g} px (the points "
                              f"coincide); fix the annotation")
    if cfg.box == "dataset" and smp.box_xywh is not None:
        w, h = (float(v) for v in np.asarray(smp.box_xywh, np.float64).reshape(4)[2:])
        if not max(w, h) >= MIN_FACE_PX:
            raise DataFormatError(f"{where}: the dataset's face box is {w:g}x{h:g} px; fix the "
                                  f"box in the annotation or use --box landmarks")
        return iu.square_box_from_xywh(smp.box_xywh, cfg.margin)
    return iu.square_box_from_landmarks(smp.landmarks_px, cfg.margin)


def _prepare_bytes(counts: Sequence[int], size: int, num_points: int) -> int:
    """Peak disk use of prepare for splits of these face counts: each split's images live twice
    (scratch + final file) until the split is done; landmarks, boxes and meta are small."""
    face = size * size * 3
    peak, done = 0, 0
    for c in counts:
        peak = max(peak, done + 2 * c * face)
        done += c * face
    return peak + sum(counts) * (2 * num_points * 2 * 4 + 3 * 4 + 1024) + (1 << 20)


PREPARE_COMMAND = "data_util.py prepare"
# What a prepared folder holds (docs/ARCHITECTURE.md): a folder with only these, and a manifest.json
# a prepare wrote, is a prepared folder of an older version (before the owner marker).
PREPARED_NAMES = {"manifest.json", "prepare_config.json", "asm.npz", "train", "test", "train_aug"}


def looks_prepared(folder: Path) -> bool:
    """True for a prepared folder written before the owner marker existed: nothing but
    PREPARED_NAMES, and a manifest.json naming a dataset and its counts."""
    folder = Path(folder)
    if not set(folder_contents(folder)) <= PREPARED_NAMES:
        return False
    try:
        with open(folder / "manifest.json", "rb") as f:
            manifest = json.loads(f.read(1 << 22).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and "dataset" in manifest and isinstance(manifest.get("counts"), dict)


def _check_custom_name(cfg: PrepareConfig, info) -> None:
    """A custom spec's name becomes a folder name under data/prepared/: a plain name, not a path,
    and never the embedded data's own folder (<built-in>-synthetic-<size>)."""
    name = str(info.name)
    plain = name and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
    if not plain:
        raise ConfigError(f"{cfg.custom_spec}: name {name!r} must be a plain name (letters, digits, "
                          f"'-', '_', '.'; no '/' or leading '.'): it names the folder "
                          f"data/prepared/<name>-<size>; change \"name\" in the spec")
    if name.endswith("-synthetic") or any(name.startswith(f"{b}-synthetic") for b in ("300w", "cofw", "wflw")):
        raise ConfigError(f"{cfg.custom_spec}: name {name!r} would share the embedded data's prepared "
                          f"folder ({name}-{cfg.input_size}); change \"name\" in the spec")


def _clear_outputs(out_dir: Path) -> None:
    """Remove what a previous (incomplete or different) prepare wrote; manifest first. Called only
    on a folder this command claimed (claim_folder: its own, or --overwrite)."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for name in ("train", "test", "train_aug"):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)
    for name in ("asm.npz", "prepare_config.json"):
        (out_dir / name).unlink(missing_ok=True)


def _resolve_root(cfg: PrepareConfig) -> Path:
    root = cfg.resolved_root()
    if cfg.root or cfg.custom_spec:
        return root
    import synthetic_faces  # noqa: PLC0415  (renders with OpenCV: imported only when needed)

    # the embedded data: (re)generated unless the folder holds the current default sizes
    if not synthetic_faces.is_complete(root, cfg.dataset.lower(), *synthetic_faces.DEFAULT_SIZES[cfg.dataset.lower()], 0):
        print(f"generating the embedded synthetic {cfg.dataset} data in {root} ...", file=sys.stderr)
        synthetic_faces.generate_default(cfg.dataset.lower(), root)
    return root


def _synthetic_sizes(cfg: PrepareConfig) -> Optional[list]:
    """The embedded data's (train, test) face counts, recorded in the manifest: a prepared copy of
    an older default set is then rebuilt, not reused."""
    if cfg.root or cfg.custom_spec:
        return None
    import synthetic_faces  # noqa: PLC0415

    return list(synthetic_faces.DEFAULT_SIZES.get(cfg.dataset.lower(), ()))


def prepare(cfg: PrepareConfig, strict: bool = False, progress: bool = True,
            force: bool = False, info: Optional[DatasetInfo] = None, overwrite: bool = False) -> Path:
    """Crop, resize and normalise both splits into cfg.resolved_out_dir(); returns that folder.

    Idempotent: a complete folder prepared with the same configuration is reused. manifest.json
    ("complete": true) is written last, so an interrupted run is never mistaken for a finished one.
    `info`: the dataset as the command already read it (a custom spec: dataset_formats.
    read_custom_spec); by default read here from cfg.custom_spec or cfg.dataset. A custom layout is
    recorded in the manifest ("dataset_spec"), so the prepared data carry it.

    The output folder is claimed first (safe_io.claim_folder, under an OutputLock held until the
    end): a folder this command did not make is refused unless `overwrite`, a complete folder it
    made with another configuration is refused unless `force` or `overwrite`, and a second prepare
    into the same folder while one runs is refused.
    """
    check_input_size(cfg.input_size)
    if cfg.box not in ("landmarks", "dataset"):
        raise ConfigError(f"--box {cfg.box!r}: choose 'landmarks' or 'dataset'")
    if not (cfg.margin >= 0 and np.isfinite(cfg.margin)):
        raise ConfigError(f"--margin {cfg.margin}: must be a finite number >= 0")
    if cfg.custom_spec and Path(cfg.custom_spec).is_dir():
        raise ConfigError(f"--custom-spec {cfg.custom_spec}: is a folder; pass the JSON spec file "
                          f"inside it")
    if info is None:
        info = read_custom_spec(cfg.custom_spec) if cfg.custom_spec else dataset_info(cfg.dataset)
    if cfg.custom_spec and cfg.dataset.lower() != info.name:
        if cfg.dataset != PrepareConfig().dataset:
            raise ConfigError(f"--dataset {cfg.dataset} does not match the name {info.name!r} in "
                              f"{cfg.custom_spec}; pass --dataset {info.name} or leave it out")
        cfg.dataset = info.name           # --dataset left at its default: the spec names the data
    cfg.dataset = cfg.dataset.lower()
    if cfg.box == "dataset" and info.name == "300w":
        raise ConfigError("--box dataset: 300-W .pts files carry no face box; use --box landmarks")
    if cfg.custom_spec:
        _check_custom_name(cfg, info)
    out_dir = cfg.resolved_out_dir()
    config = dataclasses.asdict(cfg)
    sizes = _synthetic_sizes(cfg)
    if sizes:
        config["synthetic_sizes"] = sizes
    if not force and _reusable(out_dir, config, info):
        return out_dir
    # name --out-dir only when it was given (an error must not name an option never given)
    option = "--out-dir" if cfg.out_dir else "prepared folder"
    lock = OutputLock(out_dir, option).acquire()   # held until the end: one prepare per folder
    try:
        if not force and _reusable(out_dir, config, info):  # another prepare just wrote it
            return out_dir
        return _prepare_claimed(cfg, info, out_dir, config, strict, progress, force, overwrite,
                                option)
    finally:
        lock.release()


def _reusable(out_dir: Path, config: dict, info) -> bool:
    """A complete folder prepared with the same configuration (read only: nothing is written)."""
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        old = json.loads(manifest_path.read_text())
    except (ValueError, OSError, RecursionError):   # damaged: rebuilt (when the folder is ours)
        old = {}
    old = old if isinstance(old, dict) and isinstance(old.get("counts"), dict) else {}
    files_ok = all((out_dir / sp / f).is_file() for sp in ("train", "test") for f in SPLIT_FILES)
    if old.get("complete") is True and old.get("config") == config and files_ok:
        print(f"reusing prepared {info.name} data in {out_dir} (train {old['counts'].get('train')}, "
              f"test {old['counts'].get('test')} faces; same configuration)")
        return True
    return False


def _prepare_claimed(cfg: PrepareConfig, info, out_dir: Path, config: dict, strict: bool,
                     progress: bool, force: bool, overwrite: bool, option: str = "--out-dir") -> Path:
    """prepare() once its folder's lock is held: claim the folder, then write it."""
    created = not out_dir.exists()
    holds = f"prepared {info.name} faces at {cfg.input_size} px"
    if not overwrite and not force and out_dir.is_dir():
        try:
            old = read_manifest(out_dir)
        except DataFormatError:
            old = None
        before = old.get("config") if old is not None and isinstance(old.get("config"), dict) else {}
        # the embedded data's new default sizes: the project's own data changed, not a setting
        version_only = {k: v for k, v in before.items() if k != "synthetic_sizes"} == \
            {k: v for k, v in config.items() if k != "synthetic_sizes"}
        if old is not None and before != config and not version_only and (
                read_owner(out_dir) or looks_prepared(out_dir)):
            raise ConfigError(f"{option} {out_dir}: holds complete prepared {old.get('dataset')} data "
                              f"made with another configuration ({_config_change(old.get('config'), config)}); "
                              f"choose another --out-dir, or pass --overwrite to replace it")
    claim_folder(out_dir, PREPARE_COMMAND, holds, overwrite=overwrite, option=option,
                 recognise=looks_prepared)
    ensure_output_dir(out_dir, option)   # before reading anything: fail fast, not after the crops
    manifest_path = out_dir / "manifest.json"
    counts, skipped, samples = {}, {}, {}
    try:
        root = _resolve_root(cfg)
        # the annotations are read before anything is cleared: a misspelt list or a missing root
        # stops here, and the folder keeps what it held
        for split in ("train", "test"):
            skipped[split] = []
            samples[split] = read_dataset(info, root, split, custom_spec=cfg.custom_spec,
                                          strict=strict, skipped=skipped[split])
            if not samples[split]:
                raise DataFormatError(f"{root}: no usable {split} faces ({len(skipped[split])} "
                                      f"skipped); fix the data")
    except BaseException:
        if created and out_dir.is_dir() and not folder_contents(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)   # our own new, still empty folder
        raise
    _clear_outputs(out_dir)
    fix = "free disk space, lower --input-size, or pass --out-dir on a larger disk"
    try:
        check_free_space(out_dir, _prepare_bytes([len(v) for v in samples.values()],
                                                 cfg.input_size, info.num_points),
                         f"prepare ({sum(map(len, samples.values()))} faces at {cfg.input_size} px)",
                         fix)
        for split in ("train", "test"):
            counts[split] = _prepare_split(samples[split], out_dir / split, cfg, info, strict,
                                           skipped[split], progress)
        atomic_write_json(out_dir / "prepare_config.json", config_record(cfg))
        manifest = {"complete": True, "dataset": info.name, "num_points": info.num_points,
                    **({"dataset_spec": info.as_spec()} if info.official_format == "custom" else {}),
                    "input_size": cfg.input_size,
                    "source_root": str(Path(cfg.custom_spec).parent if cfg.custom_spec else root),
                    "counts": counts,
                    "skipped": skipped, "config": config,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_json(manifest_path, manifest)
    except BaseException as err:
        _clear_outputs(out_dir)          # nothing half-written stays behind
        if created and out_dir.is_dir() and not folder_contents(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)   # our own new folder: marker and all
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise NoSpaceError(f"no space left on {out_dir} (the disk filled while writing); "
                               f"{fix}; nothing was kept") from None
        raise
    n_skip = sum(len(v) for v in skipped.values())
    print(f"prepared {info.name}: train {counts['train']}, test {counts['test']} faces at "
          f"{cfg.input_size}x{cfg.input_size}, {n_skip} skipped -> {out_dir}")
    return out_dir


# ----------------------------------------------------------------------------------------------
# Offline augmentation
# ----------------------------------------------------------------------------------------------


def _config_change(old, new: dict) -> str:
    """'margin 0.25 -> 0.4' for the first setting that differs between two prepare configs."""
    old = old if isinstance(old, dict) else {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)!r}, now {new.get(key)!r}"
    return "same settings"


def dataset_of_manifest(manifest: dict) -> DatasetInfo:
    """The dataset a prepared folder holds: a custom layout as prepare recorded it ("dataset_spec":
    the spec's content when the crops were made), else the built-in dataset of that name. A folder
    prepared before the layout was recorded names its spec file, read here."""
    recorded = manifest.get("dataset_spec")
    if isinstance(recorded, dict):
        return DatasetInfo.from_spec(recorded, source="manifest.json \"dataset_spec\"")
    spec = (manifest.get("config") or {}).get("custom_spec")
    if spec:
        return read_custom_spec(spec)
    return dataset_info(manifest["dataset"])


def copies_per_face(info, attributes: Sequence, copies: int, oversample: bool = True) -> np.ndarray:
    """Augmented copies of each training face (M,): `copies` for every face, plus, with
    `oversample`, info.attribute_copies[a] for each hard-attribute flag a the face carries (WFLW:
    pose +20, expression +7, illumination +2, make-up +2, occlusion +8, blur +2; METHOD.md
    section 6). `attributes`: per face a list of flags in WFLW_ATTRIBUTES order, or None."""
    from configuration import WFLW_ATTRIBUTES  # noqa: PLC0415

    counts = np.full(len(attributes), int(copies), np.int64)
    if not oversample or not info.attribute_copies:
        return counts
    for name, extra in info.attribute_copies:
        col = WFLW_ATTRIBUTES.index(name)
        flags = np.array([bool(a is not None and len(a) > col and int(a[col])) for a in attributes], bool)
        counts += int(extra) * flags
    return counts


def augment_prepared(prepared_dir, copies: Optional[int] = None, seed: int = 0,
                     cfg: Optional[iu.AugmentConfig] = None, progress: bool = True,
                     oversample: bool = True) -> Path:
    """Write train_aug/: augmented versions of every train crop (meta source_index, copy).

    Each face gets `copies` copies (default: the dataset's aug_copies, the published factor minus
    the plain crop) plus, with `oversample`, WFLW's extra copies per hard attribute
    (copies_per_face). Copy c of a face is flipped when c is even (cfg.flip_every_other) and seeded
    by (seed, c, face), so fewer copies give a prefix of more. Rows are copy-major: copy 0 of every
    face, then copy 1 of the faces that have one, and so on.

    landmarks_px of an augmented copy are its crop points mapped through the source's crop box
    (the frame of the source image, as if the augmented crop had been cut from it); crop_boxes are
    the source's boxes. Idempotent for the same copies, seed, recipe and oversampling.
    """
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    info = dataset_of_manifest(manifest)
    copies = int(copies if copies is not None else info.aug_copies)
    if copies < 1:
        raise ConfigError(f"--copies {copies}: must be >= 1")
    if not 0 <= int(seed) < 2 ** 31:
        raise ConfigError(f"--seed {seed}: must lie in 0 .. {2 ** 31 - 1}")
    cfg = cfg or iu.AugmentConfig()
    settings = {"copies": copies, "seed": int(seed), "augment": dataclasses.asdict(cfg),
                "oversample": [list(x) for x in info.attribute_copies] if oversample else []}
    out = prepared_dir / "train_aug"

    def reusable(manifest) -> bool:
        done = manifest.get("train_aug")
        if done and done.get("settings") == json.loads(json.dumps(settings)) and all(
                (out / f).is_file() for f in SPLIT_FILES):
            print(f"reusing {out} ({done['count']} faces; same copies and seed)")
            return True
        return False

    if reusable(manifest):
        return out
    # the prepared folder's lock (the one prepare takes): one writer at a time
    with OutputLock(prepared_dir, "--prepared-dir"):
        manifest = read_manifest(prepared_dir)
        if reusable(manifest):            # another run just wrote the same copies
            return out
        return _augment_locked(prepared_dir, manifest, info, out, copies, seed, cfg, settings,
                               progress, oversample)


def _augment_locked(prepared_dir: Path, manifest: dict, info, out: Path, copies: int, seed: int,
                    cfg, settings: dict, progress: bool, oversample: bool) -> Path:
    """augment_prepared once the prepared folder's lock is held."""
    if "train_aug" in manifest:   # invalidate before touching the files
        manifest.pop("train_aug")
        atomic_write_json(prepared_dir / "manifest.json", manifest)
    if out.exists():
        shutil.rmtree(out)
    src = load_prepared(prepared_dir, "train")
    m, s, n = len(src), src.input_size, src.num_points
    per_face = copies_per_face(info, src.meta["attributes"], copies, oversample)
    total = int(per_face.sum())
    perm = info.flip_permutation
    fix = "free disk space or pass fewer --copies"
    check_free_space(prepared_dir, _prepare_bytes([total], s, n),
                     f"augment ({total} copies at {s} px)", fix)
    try:
        _write_augmented(src, out, per_face, total, seed, cfg, perm, progress)
    except BaseException as err:
        shutil.rmtree(out, ignore_errors=True)     # nothing half-written stays behind
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise NoSpaceError(f"no space left on {prepared_dir} (the disk filled while writing "
                               f"train_aug/); {fix}; nothing was kept") from None
        raise
    manifest["train_aug"] = {"count": total, "settings": settings}
    atomic_write_json(prepared_dir / "manifest.json", manifest)
    extra = total - m * copies
    print(f"augmented {m} training faces x {copies} copies"
          + (f" + {extra} hard-attribute copies" if extra else "") + f" = {total} -> {out}")
    return out


def _write_augmented(src, out: Path, per_face, total: int, seed: int, cfg, perm,
                     progress: bool) -> None:
    """The files of train_aug/ (augment_prepared), images through a scratch memmap."""
    from tqdm import tqdm

    s, n = src.input_size, src.num_points
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
        for c in range(int(per_face.max(initial=0))):
            for i in np.flatnonzero(per_face > c).tolist():
                rng = np.random.default_rng([int(seed), c, i])
                crop_pts = iu.denormalize_landmarks(src.landmarks[i], s)
                flip = (c % 2 == 0) if cfg.flip_every_other else None
                img, pts, params = iu.augment_sample(np.asarray(src.images[i]), crop_pts, rng, cfg,
                                                     perm, return_params=True, flip=flip)
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


# ----------------------------------------------------------------------------------------------
# The training pool and the tf.data pipeline
# ----------------------------------------------------------------------------------------------


def split_faces(n_faces: int, val_fraction: float, seed: int, max_faces: Optional[int] = None):
    """Seeded split of whole faces: (train_rows, val_rows), sorted indices into train/.

    At least one face goes to validation when val_fraction > 0 and there are two or more faces.
    """
    n = int(n_faces if max_faces is None else min(n_faces, max(1, int(max_faces))))
    n_val = int(round(float(val_fraction) * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng([int(seed), 7919]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


AugmentFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple]


def default_online_augment(info, cfg: Optional[iu.AugmentConfig] = None) -> AugmentFn:
    """Per-sample online augmentation: image_utility.augment_sample (cfg, default the published
    recipe) on crop pixels."""
    perm = info.flip_permutation

    def augment(image: np.ndarray, points_norm: np.ndarray, rng: np.random.Generator):
        size = image.shape[0]
        px = iu.denormalize_landmarks(points_norm, size)
        img, px = iu.augment_sample(image, px, rng, cfg, flip_permutation=perm)
        return img, iu.normalize_landmarks(px, size).astype(np.float32)

    return augment


class TrainData:
    """The training pool (train faces + their offline copies) and the validation faces."""

    def __init__(self, cfg, prepared_dir: Path, train: PreparedSplit,
                 aug: Optional[PreparedSplit] = None, info: Optional[DatasetInfo] = None):
        self.cfg = cfg
        # the trainer passes the dataset it read at its start; by default cfg's (built-in or spec)
        self.info = info if info is not None else (
            read_custom_spec(cfg.custom_spec) if cfg.custom_spec else dataset_info(cfg.dataset))
        self.prepared_dir = Path(prepared_dir)
        self.train = train
        self.aug = aug
        if train.landmarks.shape[1] != self.info.num_points:
            raise DataFormatError(f"{prepared_dir}: landmarks have {train.landmarks.shape[1]} points "
                                  f"but {cfg.dataset} has {self.info.num_points}; prepare again")
        if str(train.dataset).lower() != str(self.info.name).lower():
            # the same point count would train silently on another layout (issue 36)
            raise DataFormatError(f"{prepared_dir}: holds {train.dataset} faces, not "
                                  f"{self.info.name}; pass the --prepared-dir of {self.info.name} "
                                  f"data, or the --dataset / --custom-spec it was prepared for")
        if train.images.shape[1] != cfg.input_size:
            raise DataFormatError(f"{prepared_dir}: images are {train.images.shape[1]} px but "
                                  f"--input-size is {cfg.input_size}; use the matching prepared folder")
        self.train_rows, self.val_rows = split_faces(len(train), cfg.val_fraction, cfg.seed,
                                                     cfg.max_faces)
        if aug is not None and len(aug):
            if aug.source_index is None or len(aug.source_index) != len(aug):
                raise DataFormatError(f"{prepared_dir}/train_aug: meta.json lacks source_index; "
                                      f"write the augmented copies again (python data_util.py augment)")
            self.aug_rows = np.flatnonzero(np.isin(aug.source_index, self.train_rows))
        else:
            self.aug_rows = np.zeros((0,), np.int64)
        if len(self.train_rows) == 0:
            raise DataFormatError(f"{prepared_dir}: no training faces left after the validation split")

    # -- pool: index p < len(train_rows) -> train/ row, else a train_aug/ row -------------------
    @property
    def size(self) -> int:
        return int(len(self.train_rows) + len(self.aug_rows))

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.size / int(self.cfg.batch_size)))

    def pool_key(self) -> str:
        """A digest of which stored rows form the pool (for caches keyed on the data)."""
        h = hashlib.sha1()
        h.update(np.asarray(self.train_rows, np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(self.aug_rows, np.int64).tobytes())
        h.update(str((len(self.train), 0 if self.aug is None else len(self.aug))).encode())
        return h.hexdigest()[:16]

    def _gather(self, arrays_of, pool_idx: np.ndarray) -> np.ndarray:
        pool_idx = np.asarray(pool_idx, np.int64)
        n_tr = len(self.train_rows)
        in_tr = pool_idx < n_tr
        first = arrays_of(self.train)
        out = np.empty((len(pool_idx),) + first.shape[1:], first.dtype)
        if in_tr.any():
            out[in_tr] = first[self.train_rows[pool_idx[in_tr]]]
        if (~in_tr).any():
            out[~in_tr] = arrays_of(self.aug)[self.aug_rows[pool_idx[~in_tr] - n_tr]]
        return out

    def pool_images(self, pool_idx) -> np.ndarray:
        return self._gather(lambda s: s.images, pool_idx)

    def pool_landmarks(self, pool_idx, soft: bool = False) -> np.ndarray:
        def pick(s):
            if soft and s.soft_landmarks is None:
                raise DataFormatError(f"{self.prepared_dir}: soft_landmarks.npy missing; run "
                                      f"`python asm_soft_landmarks.py --prepared-dir "
                                      f"{self.prepared_dir}`")
            return s.soft_landmarks if soft else s.landmarks
        return self._gather(pick, pool_idx)

    def val_images(self) -> np.ndarray:
        return np.asarray(self.train.images[self.val_rows]) if len(self.val_rows) else \
            np.zeros((0,) + self.train.images.shape[1:], np.uint8)

    def val_landmarks(self) -> np.ndarray:
        return np.asarray(self.train.landmarks[self.val_rows], np.float32)

    def train_face_images(self) -> np.ndarray:
        return np.asarray(self.train.images[self.train_rows])

    def train_face_landmarks(self) -> np.ndarray:
        return np.asarray(self.train.landmarks[self.train_rows], np.float32)

    # -- tf.data --------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list:
        """The pool indices of each batch of an epoch: a shuffle seeded by (seed, epoch)."""
        perm = np.random.default_rng([int(self.cfg.seed), int(epoch), 104729]).permutation(self.size)
        b = int(self.cfg.batch_size)
        return [np.sort(perm[i:i + b]) for i in range(0, self.size, b)]

    def dataset(self, initial_epoch: int, epochs: int, targets: str = "landmarks",
                extra: Optional[dict] = None, augment_fn: Optional[AugmentFn] = None,
                start_step: int = 0):
        """Batches (x, y) for epochs initial_epoch..epochs-1 (then it ends), leaving out the first
        `start_step` batches of the first epoch (a resume in the middle of an epoch).

        targets: "landmarks" (y = hard landmarks (B, 2N)), "soft" (y = soft landmarks) or "dict"
        (y = {"landmarks": ..., **extra}) where `extra` maps names to arrays aligned with the pool
        (e.g. cached teacher predictions (P, 2N)). With `augment_fn` each sample is augmented
        online (then `extra` must be empty: cached predictions would not match the new image).
        """
        import tensorflow as tf  # noqa: PLC0415  (prepare and augment run without TensorFlow)

        n2 = 2 * self.info.num_points
        s = int(self.cfg.input_size)
        extra = dict(extra or {})
        if augment_fn is not None and extra:
            raise ConfigError("cached teacher predictions cannot be used with online augmentation")
        soft = targets == "soft"

        def gen():
            for epoch in range(int(initial_epoch), int(epochs)):
                skip = int(start_step) if epoch == int(initial_epoch) else 0
                for b, idx in enumerate(self.epoch_batches(epoch)):
                    if b < skip:
                        continue
                    # seeded per batch, so a resume in mid-epoch draws what it would have drawn
                    rng = np.random.default_rng([int(self.cfg.seed), int(epoch), b, 15485863])
                    images = self.pool_images(idx)
                    pts = self.pool_landmarks(idx, soft=soft)
                    if augment_fn is not None:
                        images = images.copy()
                        pts = pts.copy()
                        for i in range(len(idx)):
                            images[i], pts[i] = augment_fn(images[i], pts[i], rng)
                    x = images.astype(np.float32) / np.float32(255.0)
                    y = pts.reshape(len(idx), n2).astype(np.float32)
                    if targets == "dict":
                        yd = {"landmarks": y}
                        for k, arr in extra.items():
                            yd[k] = np.asarray(arr[idx], np.float32).reshape(len(idx), n2)
                        yield x, yd
                    else:
                        yield x, y

        x_spec = tf.TensorSpec((None, s, s, 3), tf.float32)
        y_vec = tf.TensorSpec((None, n2), tf.float32)
        if targets == "dict":
            y_spec = {"landmarks": y_vec, **{k: y_vec for k in extra}}
        else:
            y_spec = y_vec
        ds = tf.data.Dataset.from_generator(gen, output_signature=(x_spec, y_spec))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options).prefetch(2)



# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="data_util.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="crop and normalise a dataset into data/prepared/")
    add_dataclass_args(p, PrepareConfig)
    p.add_argument("--strict", action="store_true", help="stop at the first bad sample")
    p.add_argument("--force", action="store_true", help="rebuild even if a complete copy exists "
                   "(this command's own folder, also one made with another configuration)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out-dir this command did not make (deleting its train/, "
                        "test/, train_aug/); without it such a folder is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = sub.add_parser("augment", help="write train_aug/ with K augmented copies of each train face")
    a.add_argument("--prepared-dir", required=True, help="a folder written by `prepare`")
    a.add_argument("--copies", type=int, default=None,
                   help="augmented copies per face besides the plain crop (default: the dataset's, "
                        "3 for 300W/WFLW, 9 for COFW: the published 4x / 10x)")
    a.add_argument("--seed", type=int, default=0, help="random seed of the copies (default: 0)")
    a.add_argument("--no-oversample", action="store_true",
                   help="no extra copies of WFLW faces with hard attributes (published: pose +20, "
                        "expression +7, illumination +2, make-up +2, occlusion +8, blur +2)")
    a.add_argument("--jitter", action="store_true",
                   help="add scale (0.9-1.1) and shift (5%% of the side) jitter to the published "
                        "recipe (flip, rotation, gamma, noise, median blur)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        cfg = dataclass_from_args(PrepareConfig, args)
        prepare(cfg, strict=args.strict, progress=not args.no_progress, force=args.force,
                overwrite=args.overwrite)
    else:
        augment_prepared(args.prepared_dir, args.copies, args.seed,
                         cfg=iu.AugmentConfig.jitter() if args.jitter else None,
                         progress=not args.no_progress, oversample=not args.no_oversample)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
