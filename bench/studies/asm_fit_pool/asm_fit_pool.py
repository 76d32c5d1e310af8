"""How far the soft landmarks move when the Active Shape Model is fitted on the augmented training
pool (train/ + train_aug/, the original's choice and now the default) instead of the plain crops
(train/ only): per split, the distance between the two fits' soft shapes, and each fit's distance to
the hard shapes, in normalised units and in % of the inter-ocular distance (NME-like).

    python synthetic_faces.py --dataset 300w --out /tmp/synth --train 600 --test 150 --seed 0
    python data_util.py prepare --dataset 300w --root /tmp/synth/300w --input-size 64 --out-dir /tmp/300w-64
    python data_util.py augment --prepared-dir /tmp/300w-64
    python bench/studies/asm_fit_pool/asm_fit_pool.py --prepared-dir /tmp/300w-64 --variance 0.90

Fits both models in memory; writes nothing into the prepared folder. Writes
bench/studies/asm_fit_pool/asm_fit_pool.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse

import numpy as np

from _common import md_table, publish, results_path
from results_json import record

# How the prepared folder of the published table was built (paths as in the docstring).
BUILD_COMMANDS = (
    "python synthetic_faces.py --dataset 300w --out /tmp/synth --train 600 --test 150 --seed 0",
    "python data_util.py prepare --dataset 300w --root /tmp/synth/300w --input-size 64 --out-dir /tmp/300w-64",
    "python data_util.py augment --prepared-dir /tmp/300w-64",
)


def _distances(a: np.ndarray, b: np.ndarray, hard: np.ndarray, interocular: tuple) -> dict:
    """Point distances between shape sets a and b (M, N, 2): normalised units, and per image in %
    of the hard shape's inter-ocular distance (the NME of a against b)."""
    dist = np.linalg.norm(a - b, axis=2)                                   # (M, N)
    left = hard[:, list(interocular[0])].mean(axis=1)
    right = hard[:, list(interocular[1])].mean(axis=1)
    io = np.linalg.norm(left - right, axis=1)
    nme = 100.0 * dist.mean(axis=1) / io
    return {"mean": dist.mean(), "max": dist.max(), "nme_mean": nme.mean(), "nme_max": nme.max(),
            "point_max_pct": 100.0 * (dist / io[:, None]).max()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepared-dir", required=True, help="a prepared folder with train_aug/")
    p.add_argument("--variance", type=float, default=0.90, help="shape variance the ASM keeps, in (0, 1]")
    p.add_argument("--out", default=None, help="results file (default: bench/studies/asm_fit_pool/asm_fit_pool.md)")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    import configuration
    import data_util
    from asm_soft_landmarks import ActiveShapeModel

    prepared = Path(args.prepared_dir)
    splits = {s: data_util.load_prepared(prepared, s) for s in ("train", "train_aug")}
    manifest = splits["train"].manifest
    info = configuration.dataset_info(manifest["dataset"])
    hard = {s: np.asarray(split.landmarks, np.float64) for s, split in splits.items()}
    fits = {"plain": hard["train"], "augmented": np.concatenate([hard["train"], hard["train_aug"]])}
    models = {name: ActiveShapeModel().fit(x, args.variance) for name, x in fits.items()}
    rows = []
    for split, h in hard.items():
        soft = {name: m.project(h) for name, m in models.items()}
        for what, a, b in (("augmented fit vs plain fit", soft["augmented"], soft["plain"]),
                           ("plain fit vs hard", soft["plain"], h),
                           ("augmented fit vs hard", soft["augmented"], h)):
            d = _distances(a, b, h, info.interocular)
            rows.append([split, len(h), what, f"{d['mean']:.5f}", f"{d['max']:.5f}",
                         f"{d['nme_mean']:.3f}", f"{d['nme_max']:.3f}", f"{d['point_max_pct']:.2f}"])
    table = md_table(["split", "shapes", "soft landmarks compared", "mean point distance (norm.)",
                      "max point distance (norm.)", "mean NME %", "max per-image NME %",
                      "max point distance % io"], rows)
    settings = manifest.get("train_aug", {}).get("settings", {})
    notes = [f"prepared folder: {prepared} ({info.name}, {manifest['input_size']} px; train_aug: "
             f"{len(hard['train_aug'])} copies, {settings.get('copies')} per face, seed {settings.get('seed')})",
             f"variance {args.variance:.2f}: the plain fit keeps k={models['plain'].k} components "
             f"({100 * models['plain'].explained_ratio.sum():.2f}%), the augmented fit k={models['augmented'].k} "
             f"({100 * models['augmented'].explained_ratio.sum():.2f}%)",
             "normalised units: crop side = 1; NME %: mean point distance / the hard shape's inter-ocular "
             "distance, per image"]
    publish("ASM fitted on the augmented pool vs on the plain crops", table, "asm_fit_pool", args.out,
            notes, BUILD_COMMANDS)
    record(results_path("asm_fit_pool", False, args.out))      # its table, as data
    return 0


if __name__ == "__main__":
    sys.exit(main())
