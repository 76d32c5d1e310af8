"""WFLW's hard-attribute oversampling in a prepared training pool: per attribute, how many training
faces carry the flag and how many images of the pool (plain crops + offline augmented copies) show
such a face, beside the shares before oversampling.

    python synthetic_faces.py --dataset wflw --out /tmp/synth --train 600 --test 200 --seed 0
    python data_util.py prepare --dataset wflw --root /tmp/synth/wflw --input-size 64 --out-dir /tmp/wflw-64
    python data_util.py augment --prepared-dir /tmp/wflw-64
    python bench/studies/wflw_oversampling/wflw_oversampling.py --prepared-dir /tmp/wflw-64

Reads train/ and train_aug/ only (no training). Also checks that every face has exactly the copies
data_util.copies_per_face gives it (exit status 1 if not). Writes bench/studies/wflw_oversampling/wflw_oversampling.md.
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
    "python synthetic_faces.py --dataset wflw --out /tmp/synth --train 600 --test 200 --seed 0",
    "python data_util.py prepare --dataset wflw --root /tmp/synth/wflw --input-size 64 --out-dir /tmp/wflw-64",
    "python data_util.py augment --prepared-dir /tmp/wflw-64",
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepared-dir", required=True, help="a prepared WFLW folder with train_aug/")
    p.add_argument("--out", default=None, help="results file (default: bench/studies/wflw_oversampling/wflw_oversampling.md)")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    import configuration
    import data_util

    prepared = Path(args.prepared_dir)
    train = data_util.load_prepared(prepared, "train")
    aug = data_util.load_prepared(prepared, "train_aug")
    manifest = train.manifest
    settings = manifest["train_aug"]["settings"]
    info = configuration.dataset_info(manifest["dataset"])
    if not info.attribute_copies:
        raise SystemExit(f"{prepared}: {info.name} has no hard-attribute oversampling (WFLW only)")
    attrs = np.array([a if a is not None else [0] * 6 for a in train.meta["attributes"]], np.int64)
    src = np.asarray(aug.meta["source_index"], np.int64)
    copy = np.asarray(aug.meta["copy"], np.int64)
    found = np.bincount(src, minlength=len(train))
    expected = data_util.copies_per_face(info, train.meta["attributes"], settings["copies"],
                                         oversample=bool(settings.get("oversample")))
    mismatched = int(np.sum(found != expected))
    pool_flags = np.concatenate([attrs, attrs[src]])          # plain crops, then their copies
    extra = dict(info.attribute_copies)
    rows = []
    for col, name in enumerate(configuration.WFLW_ATTRIBUTES):
        faces = int(attrs[:, col].sum())
        copies = int(attrs[src, col].sum())
        pool = int(pool_flags[:, col].sum())
        face_share = 100.0 * faces / len(train)      # also its pool share without oversampling
        pool_share = 100.0 * pool / len(pool_flags)
        rows.append([name, f"+{extra.get(name, 0)}", faces, f"{face_share:.1f}", copies, pool,
                     f"{pool_share:.1f}", f"{pool_share / face_share:.2f}x" if faces else "-"])
    none = ~attrs.astype(bool).any(axis=1)
    pool_none = int(np.sum(none) + np.sum(none[src]))
    rows.append(["(no flag)", "+0", int(none.sum()), f"{100.0 * none.mean():.1f}", int(none[src].sum()),
                 pool_none, f"{100.0 * pool_none / len(pool_flags):.1f}",
                 f"{100.0 * pool_none / len(pool_flags) / (100.0 * none.mean()):.2f}x" if none.any() else "-"])
    rows.append(["all", "", len(train), "100.0", len(aug), len(pool_flags), "100.0", ""])
    table = md_table(["attribute", "extra copies per flag", "train faces with it", "% of faces",
                      "augmented copies of them", "pool images (plain + copies)", "% of pool",
                      "share vs no oversampling"], rows)
    notes = [f"prepared folder: {prepared} ({len(train)} training faces, {settings['copies']} base "
             f"copies each, seed {settings['seed']})",
             f"pool = plain crops + train_aug copies = {len(train)} + {len(aug)} = {len(pool_flags)} images; "
             f"without oversampling it would be {len(train) * (settings['copies'] + 1)}",
             f"faces whose copy count differs from data_util.copies_per_face: {mismatched}",
             f"copies with an even index: {int(np.sum(copy % 2 == 0))} of {len(copy)} (flipped by the "
             f"published recipe)",
             "a face with several flags gets the extra copies of each; 'share vs no oversampling' is the "
             "attribute's share of the pool divided by its share of the faces"]
    publish("WFLW hard-attribute oversampling in the training pool", table, "wflw_oversampling",
            args.out, notes, BUILD_COMMANDS)
    record(results_path("wflw_oversampling", False, args.out))  # its table, as data
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
