"""Soft landmarks from an Active Shape Model (METHOD.md section 3), the Tolerant teacher's targets.

`ActiveShapeModel().fit(shapes, variance=p)` stacks the training shapes (normalised crop
coordinates, docs/ARCHITECTURE.md) as vectors of length 2N (x0, y0, x1, y1, ...), fits a PCA and
keeps the smallest number k of components whose cumulative explained variance reaches p. It keeps
the mean shape m, the eigenvectors V (2N x k) and the eigenvalues lambda (the variance of the data
along each component). `project(shapes)` computes b = V^T (x - m), clips each b_i to
[-3 sqrt(lambda_i), +3 sqrt(lambda_i)] and returns the soft shapes m + V b.

Variance 1.0 is defined, as in the paper ("100% gives back the hard landmarks"), as the identity:
all components are kept and no clipping is applied (clipping at 3 standard deviations would move
the rare outlying training shapes even with every component kept). Pass `clip=True` to `project`
to force clipping anyway.

Alignment (`align`, `--align`; METHOD.md section 3.4, "a documented option, not the default"): by
default no Procrustes alignment is applied (the original's setting: shapes stay in crop coordinates,
so the PCA also models where the face sits in the crop, its size and roll). With `align=True` the
model is fitted on the shapes after a similarity alignment (generalized Procrustes: centroid, scale,
rotation) onto their mean, and `project` aligns a shape, projects it and undoes that shape's own
similarity: the soft shape keeps the face's position, size and roll exactly and smooths only its
non-rigid shape. On the teachers' 20,000-face pool at 90% variance that lowers the floor of a
perfect Tolerant teacher on the test faces from 6.70% to 3.49% (models/README.md).

Which shapes the model is fitted on (`fit_on`): "augmented" (the default, as the original) stacks
the whole training pool the Tolerant teacher trains on, the plain crops in train/ and their
augmented copies in train_aug/ (flipped and rotated shapes included); "plain" fits on train/ only.
asm.npz records the choice and the number of shapes, so `soft_landmarks_current` can tell when a
rewritten train_aug/ needs a new fit.

Command line (after `python data_util.py prepare ...` and, for the published pool,
`python data_util.py augment ...`):
    python asm_soft_landmarks.py --dataset 300w --variance 0.90 [--fit-on augmented|plain] [--align]
        [--prepared-dir D] [--input-size S]
writes <prepared>/asm.npz and soft_landmarks.npy beside landmarks.npy in train/ and train_aug/ (if
present), and prints how far the soft shapes moved from the hard ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

import data_util as du
from configuration import DatasetInfo, PrepareConfig, dataset_info
from dataset_formats import resolve_dataset
from errors import ConfigError, DataFormatError, ModelError, run_cli
from safe_io import atomic_path, atomic_save_npy

CLIP_SIGMAS = 3.0
ASM_FILE = "asm.npz"
SOFT_FILE = "soft_landmarks.npy"
FIT_ON = ("augmented", "plain")            # the training pool (train + train_aug), or train/ only


def _as_vectors(shapes) -> tuple[np.ndarray, tuple]:
    """(M, N, 2) or (M, 2N) -> float64 (M, 2N), plus the shape to give results back in."""
    arr = np.asarray(shapes, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 2:
        return arr.reshape(arr.shape[0], 2 * arr.shape[1]), arr.shape
    if arr.ndim == 2:
        return arr, arr.shape
    raise ConfigError(f"shapes of shape {arr.shape}: expected (M, N, 2) or (M, 2N)")


def similarity_align(shapes, reference) -> tuple[np.ndarray, tuple]:
    """Least-squares similarity (translation, scale, rotation; no reflection) of each shape onto
    `reference` (N, 2). shapes (M, N, 2) -> (aligned (M, N, 2), transform) where transform =
    (centroids (M, 1, 2), scales (M,), rotations (M, 2, 2)) for `undo_similarity`. Closed form
    (Procrustes): with centred x and r, the rotation angle is atan2(sum x^r, sum x.r) and the scale
    |(sum x.r, sum x^r)| / sum |x|^2."""
    x = np.asarray(shapes, np.float64)
    ref = np.asarray(reference, np.float64)
    centroids = x.mean(axis=1, keepdims=True)
    xc, rc = x - centroids, ref - ref.mean(axis=0)
    dot = np.einsum("mnk,nk->m", xc, rc)
    cross = np.einsum("mn,n->m", xc[..., 0], rc[:, 1]) - np.einsum("mn,n->m", xc[..., 1], rc[:, 0])
    norm2 = np.maximum(np.einsum("mnk,mnk->m", xc, xc), np.finfo(np.float64).tiny)
    scales = np.hypot(dot, cross) / norm2
    angle = np.arctan2(cross, dot)
    cos, sin = np.cos(angle), np.sin(angle)
    rotations = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)   # row vectors: p @ R
    aligned = scales[:, None, None] * np.einsum("mnk,mkj->mnj", xc, rotations) + ref.mean(axis=0)
    return aligned, (centroids, scales, rotations)


def undo_similarity(aligned, transform) -> np.ndarray:
    """Inverse of `similarity_align`: the shapes back in their own frames, (M, N, 2)."""
    centroids, scales, rotations = transform
    a = np.asarray(aligned, np.float64)
    return np.einsum("mnk,mjk->mnj", a / scales[:, None, None], rotations) + centroids


def _centred_unit(shape: np.ndarray) -> np.ndarray:
    """A shape (N, 2) moved to centroid 0 and scaled to unit Frobenius norm."""
    centred = shape - shape.mean(axis=0)
    return centred / max(np.linalg.norm(centred), np.finfo(np.float64).tiny)


def procrustes_reference(shapes, iterations: int = 5) -> np.ndarray:
    """Generalized Procrustes mean of shapes (M, N, 2): centred, unit Frobenius norm, (N, 2)."""
    x = np.asarray(shapes, np.float64)
    ref = x.mean(axis=0)
    for _ in range(max(1, int(iterations))):
        ref = similarity_align(x, _centred_unit(ref))[0].mean(axis=0)
    return _centred_unit(ref)


class ActiveShapeModel:
    """PCA shape model: mean (2N,), components V (2N, k), eigenvalues (k,), variance p; with
    `align`, fitted in the frame of `reference` (N, 2) after a similarity alignment (module doc)."""

    def __init__(self):
        self.mean: Optional[np.ndarray] = None
        self.components: Optional[np.ndarray] = None
        self.eigenvalues: Optional[np.ndarray] = None
        self.variance: Optional[float] = None
        self.explained_ratio: Optional[np.ndarray] = None   # per kept component
        self.fit_on: Optional[str] = None                   # make_soft_landmarks: FIT_ON entry
        self.fit_shapes: Optional[int] = None               # how many shapes it was fitted on
        self.reference: Optional[np.ndarray] = None         # (N, 2) frame of an aligned model

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, shapes, variance: float = 0.90, align: bool = False) -> "ActiveShapeModel":
        from sklearn.decomposition import PCA

        if not 0.0 < float(variance) <= 1.0:
            raise ConfigError(f"variance {variance}: must lie in (0, 1]")
        x, _ = _as_vectors(shapes)
        if x.shape[0] < 2:
            raise ConfigError(f"an Active Shape Model needs at least 2 training shapes, got {x.shape[0]}")
        if not np.all(np.isfinite(x)):
            raise DataFormatError("training shapes contain NaN or infinite values; re-run prepare")
        self.reference = None
        if align:
            points = x.reshape(x.shape[0], -1, 2)
            self.reference = procrustes_reference(points)
            x = similarity_align(points, self.reference)[0].reshape(x.shape)
        pca = PCA(n_components=min(x.shape), svd_solver="full")
        pca.fit(x)
        ratios = pca.explained_variance_ratio_
        if float(variance) >= 1.0:
            k = len(ratios)
        else:
            cum = np.cumsum(ratios)
            k = int(np.searchsorted(cum, float(variance) - 1e-12) + 1)
            k = max(1, min(k, len(ratios)))
        self.mean = pca.mean_.astype(np.float64)
        self.components = pca.components_[:k].T.astype(np.float64)      # (2N, k)
        self.eigenvalues = np.maximum(pca.explained_variance_[:k], 0.0).astype(np.float64)
        self.explained_ratio = ratios[:k].astype(np.float64)
        self.variance = float(variance)
        self.fit_shapes = int(x.shape[0])
        return self

    @property
    def align(self) -> bool:
        """Whether the shapes are Procrustes-aligned onto `reference` before the PCA."""
        return self.reference is not None

    @property
    def k(self) -> int:
        self._check_fitted()
        return int(self.components.shape[1])

    @property
    def num_points(self) -> int:
        self._check_fitted()
        return int(self.mean.shape[0]) // 2

    def _check_fitted(self):
        if self.mean is None:
            raise ModelError("the Active Shape Model is not fitted; call fit() or load() first")

    # -- projection -------------------------------------------------------------------------
    def _coefficients(self, shapes, clip: Optional[bool]) -> tuple[np.ndarray, Optional[tuple]]:
        """`coefficients`, and, for an aligned model, each shape's similarity back to its own
        frame (None otherwise)."""
        self._check_fitted()
        x, _ = _as_vectors(shapes)
        if x.shape[1] != self.mean.shape[0]:
            raise ConfigError(f"shapes have {x.shape[1] // 2} points but the shape model has "
                              f"{self.num_points}")
        transform = None
        if self.align:
            aligned, transform = similarity_align(x.reshape(x.shape[0], -1, 2), self.reference)
            x = aligned.reshape(x.shape)
        b = (x - self.mean) @ self.components
        if clip is None:
            clip = self.variance is None or self.variance < 1.0
        if clip:
            limit = CLIP_SIGMAS * np.sqrt(self.eigenvalues)
            b = np.clip(b, -limit, limit)
        return b, transform

    def coefficients(self, shapes, clip: Optional[bool] = None) -> np.ndarray:
        """b = V^T (x - m), (M, k); clipped to +-3 sqrt(lambda) unless variance is 1.0 (see module).
        For an aligned model x is the shape aligned onto the reference."""
        return self._coefficients(shapes, clip)[0]

    def reconstruct(self, b) -> np.ndarray:
        self._check_fitted()
        return self.mean + np.asarray(b, dtype=np.float64) @ self.components.T

    def project(self, shapes, clip: Optional[bool] = None) -> np.ndarray:
        """Soft shapes m + V b, in the input's layout ((M, N, 2) or (M, 2N)), float64; for an
        aligned model put back into each shape's own frame (its similarity undone)."""
        _, shape = _as_vectors(shapes)
        b, transform = self._coefficients(shapes, clip)
        soft = self.reconstruct(b)
        if transform is not None:
            soft = undo_similarity(soft.reshape(len(soft), -1, 2), transform)
        return soft.reshape(shape)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> Path:
        self._check_fitted()
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            extra = {} if self.fit_on is None else {"fit_on": np.str_(self.fit_on)}
            if self.fit_shapes is not None:
                extra["fit_shapes"] = np.int64(self.fit_shapes)
            if self.align:
                extra["reference"] = self.reference
            np.savez(tmp, mean=self.mean, components=self.components, eigenvalues=self.eigenvalues,
                     variance=np.float64(self.variance), explained_ratio=self.explained_ratio,
                     **extra)
        return path

    @classmethod
    def load(cls, path) -> "ActiveShapeModel":
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: shape model not found; run python asm_soft_landmarks.py "
                             f"--dataset NAME first")
        try:
            with np.load(path, allow_pickle=False) as z:
                asm = cls()
                asm.mean = z["mean"].astype(np.float64)
                asm.components = z["components"].astype(np.float64)
                asm.eigenvalues = z["eigenvalues"].astype(np.float64)
                asm.variance = float(z["variance"])
                asm.explained_ratio = (z["explained_ratio"].astype(np.float64)
                                       if "explained_ratio" in z.files else None)
                asm.fit_on = str(z["fit_on"]) if "fit_on" in z.files else None
                asm.fit_shapes = int(z["fit_shapes"]) if "fit_shapes" in z.files else None
                asm.reference = z["reference"].astype(np.float64) if "reference" in z.files else None
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"{path}: not a shape model written by asm_soft_landmarks.py "
                             f"({err}); delete it and run the command again") from None
        if (asm.components.ndim != 2 or asm.components.shape[0] != asm.mean.shape[0]
                or asm.eigenvalues.shape != (asm.components.shape[1],)):
            raise ModelError(f"{path}: inconsistent array shapes; delete it and run "
                             f"asm_soft_landmarks.py again")
        if asm.align and asm.reference.shape != (asm.mean.shape[0] // 2, 2):
            raise ModelError(f"{path}: its alignment reference has shape {asm.reference.shape}, not "
                             f"({asm.mean.shape[0] // 2}, 2); delete it and run asm_soft_landmarks.py again")
        return asm


# ----------------------------------------------------------------------------------------------
# Prepared data
# ----------------------------------------------------------------------------------------------


def _eye_distance(shapes: np.ndarray, groups: tuple) -> np.ndarray:
    """Per-face distance between the means of two index groups; shapes (M, N, 2)."""
    left = shapes[:, list(groups[0]), :].mean(axis=1)
    right = shapes[:, list(groups[1]), :].mean(axis=1)
    return np.linalg.norm(left - right, axis=1)


def movement_stats(hard: np.ndarray, soft: np.ndarray, interocular: Optional[tuple] = None) -> dict:
    """How far soft shapes are from hard ones: per-point Euclidean distance (normalised units) and
    in % of each face's inter-ocular distance (when the normaliser indices are given)."""
    hard = np.asarray(hard, np.float64).reshape(len(hard), -1, 2)
    soft = np.asarray(soft, np.float64).reshape(len(soft), -1, 2)
    dist = np.linalg.norm(soft - hard, axis=2)                  # (M, N)
    stats = {"mean": float(dist.mean()), "max": float(dist.max())}
    if interocular is not None:
        io = _eye_distance(hard, interocular)
        io = np.where(io > 0, io, np.nan)
        rel = 100.0 * dist / io[:, None]
        stats["mean_pct_io"] = float(np.nanmean(rel)) if np.isfinite(rel).any() else float("nan")
        stats["max_pct_io"] = float(np.nanmax(rel)) if np.isfinite(rel).any() else float("nan")
    return stats


def _recorded_fit(prepared: Path) -> Optional[ActiveShapeModel]:
    """The shape model in asm.npz, or None when there is none or it cannot be read."""
    try:
        return ActiveShapeModel.load(prepared / ASM_FILE)
    except ModelError:
        return None


def _row_count(path: Path) -> Optional[int]:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, EOFError, IndexError):
        return None


def soft_landmarks_current(prepared_dir, variance: float, align: bool = False) -> bool:
    """True when asm.npz and every split's soft_landmarks.npy belong to the present data: the model
    was fitted at `variance`, aligned or not as `align` asks, records what it was fitted on
    (fit_on), and on as many shapes as that choice gives now; each soft file has one row per face
    of its split."""
    prepared = Path(prepared_dir)
    asm = _recorded_fit(prepared)
    if asm is None or asm.fit_on not in FIT_ON or abs(asm.variance - float(variance)) > 1e-9 \
            or asm.align != bool(align):
        return False
    splits = ["train"] + (["train_aug"] if du.prepared_complete(prepared, "train_aug") else [])
    try:
        rows = {s: len(du.load_prepared(prepared, s, soft=False)) for s in splits}
    except DataFormatError:         # make_soft_landmarks will say what is wrong
        return False
    if any(_row_count(prepared / s / SOFT_FILE) != rows[s] for s in splits):
        return False
    expected = sum(rows.values()) if asm.fit_on == "augmented" else rows.get("train")
    return asm.fit_shapes == expected


def make_soft_landmarks(prepared_dir, variance: float = 0.90, dataset=None,
                        verbose: bool = True, input_size: Optional[int] = None,
                        fit_on: Optional[str] = None, align: bool = False) -> dict:
    """Fit the ASM (Procrustes-aligned first with `align`) and write asm.npz and
    soft_landmarks.npy (train, train_aug).

    fit_on: "augmented" (train/ and train_aug/ stacked: the Tolerant teacher's pool, the original's
    choice), "plain" (train/ only) or None (the choice recorded in an existing asm.npz, else
    "augmented"). Without train_aug/ both fit on train/. dataset: a built-in name or a DatasetInfo
    (a custom spec as read by dataset_formats.read_custom_spec); None skips the point-count check.
    """
    prepared = Path(prepared_dir)
    info: Optional[DatasetInfo] = dataset_info(dataset) if dataset is not None else None
    if fit_on is not None and fit_on not in FIT_ON:
        raise ConfigError(f"--fit-on {fit_on!r}: choose augmented (train + train_aug, as the "
                          f"original) or plain (train only)")
    size = f"--input-size {input_size}" if input_size else "[--input-size S]"
    # the folder is named in the command (with or without --prepared-dir it is this one): the hint
    # never suggests an option that was already given (issue 36)
    hint = (f"run python data_util.py prepare --dataset {info.name if info else 'NAME'} [--root PATH] {size} "
            f"--out-dir {prepared} first")
    if not prepared.is_dir():
        why = "no such folder" if not prepared.exists() else "not a folder"
        raise DataFormatError(f"{prepared}: {why} (prepared data not found); {hint}")
    # Read and check every split before writing anything (du.load_prepared: a complete manifest,
    # finite float32 landmarks of its shape), so that a bad train_aug/ leaves no soft_landmarks.npy
    # behind that belongs to a run that failed. A train_aug/ that manifest.json does not list is an
    # interrupted augment: load_prepared refuses it (run augment again) rather than fit without it.
    splits = ["train"] + (["train_aug"] if (prepared / "train_aug").is_dir() else [])
    hards = {s: du.load_prepared(prepared, s, soft=False).landmarks for s in splits}
    train = hards["train"]
    if train.shape[0] < 2:
        raise DataFormatError(f"{prepared / 'train' / 'landmarks.npy'}: {train.shape[0]} training "
                              f"shape(s); an Active Shape Model needs at least 2; prepare more faces")
    n = train.shape[1]
    interocular = None
    if info is not None:
        if info.num_points != n:
            raise DataFormatError(f"{prepared}: train landmarks have {n} points but {info.name} has "
                                  f"{info.num_points}; pass the right --dataset or --prepared-dir")
        interocular = info.interocular
    if fit_on is None:
        recorded = _recorded_fit(prepared)
        fit_on = recorded.fit_on if recorded is not None and recorded.fit_on in FIT_ON else "augmented"
    shapes = hards["train"] if fit_on == "plain" or "train_aug" not in hards else \
        np.concatenate([hards["train"], hards["train_aug"]], axis=0)
    asm = ActiveShapeModel().fit(shapes, variance, align=align)
    asm.fit_on = fit_on
    # the old soft landmarks go first: a crash between the shape model and the soft files then
    # leaves them missing (refitted next time), never stale files that the new asm.npz would vouch
    # for (soft_landmarks_current checks the model's settings and the row counts only)
    for split in hards:
        (prepared / split / SOFT_FILE).unlink(missing_ok=True)
    asm.save(prepared / ASM_FILE)
    report = {"k": asm.k, "max_k": min(shapes.shape[0], 2 * n), "variance": float(variance),
              "explained": float(asm.explained_ratio.sum()), "fit_on": fit_on,
              "fit_shapes": int(shapes.shape[0]), "align": bool(align), "splits": {}}
    if verbose:
        what = ("train + train_aug" if shapes is not hards["train"] else "train") + (", aligned" if align else "")
        print(f"shape model: {shapes.shape[0]} shapes ({what}) of {n} points; kept k={asm.k} of "
              f"{report['max_k']} components ({100 * report['explained']:.2f}% of the variance, "
              f"target {100 * float(variance):.1f}%) -> {prepared / ASM_FILE}")
    for split, hard in hards.items():
        soft = asm.project(hard).astype(np.float32)
        atomic_save_npy(prepared / split / SOFT_FILE, soft)
        stats = movement_stats(hard, soft, interocular)
        report["splits"][split] = stats
        if verbose:
            line = (f"{split:9s} {len(hard)} shapes -> {prepared / split / SOFT_FILE}: soft moved "
                    f"mean {stats['mean']:.5f}, max {stats['max']:.5f} (normalised units)")
            if "mean_pct_io" in stats:
                line += (f"; mean {stats['mean_pct_io']:.2f}%, max {stats['max_pct_io']:.2f}% of "
                         f"the inter-ocular distance")
            print(line)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fit the Active Shape Model on prepared training shapes and write soft landmarks "
                    "(the Tolerant teacher's targets).")
    parser.add_argument("--dataset", default="300w",
                        help="dataset name: 300w, cofw or wflw (a custom dataset: pass --custom-spec "
                             "instead; default: 300w)")
    parser.add_argument("--variance", type=float, default=0.90,
                        help="fraction of shape variance to keep (1.0 gives the hard landmarks; "
                             "default: 0.90)")
    parser.add_argument("--fit-on", choices=FIT_ON, default=None,
                        help="augmented: fit on train/ and train_aug/, the Tolerant teacher's pool "
                             "(the original's choice); plain: train/ only (default: the choice in "
                             "an existing asm.npz, else augmented)")
    parser.add_argument("--align", action="store_true",
                        help="Procrustes-align the shapes before the PCA and give each soft shape "
                             "back its own position, size and roll (METHOD.md 3.4's option; "
                             "default: crop coordinates, as the original)")
    parser.add_argument("--prepared-dir", default=None,
                        help="prepared data to fit on and write soft landmarks into (default: "
                             "data/prepared/<dataset>[-synthetic]-<input size>)")
    parser.add_argument("--root", default=None,
                        help="official dataset folder the data was prepared from (only names the "
                             "default prepared folder; omit for the embedded synthetic data)")
    parser.add_argument("--input-size", type=int, default=224,
                        help="side in pixels of the prepared crops; only names the default prepared "
                             "folder (default: 224)")
    parser.add_argument("--custom-spec", default=None, help="JSON spec of a custom dataset")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    info = resolve_dataset(args.dataset, args.custom_spec)   # a custom spec read once, here
    prepared = PrepareConfig(dataset=info.name, root=args.root, input_size=args.input_size,
                             custom_spec=args.custom_spec,
                             out_dir=args.prepared_dir).resolved_out_dir()
    make_soft_landmarks(prepared, args.variance, info, input_size=args.input_size,
                        fit_on=args.fit_on, align=args.align)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
