"""Merge the demo's seed folders of one session with an earlier seed study, seed by seed.

A seed study trains only the students it needs (e.g. the L1 control); the others (KD, L2, the
single-teacher students) come from an earlier `demo.summarize_seeds` output whose teachers and
configuration are the same. This writes one file in summarize_seeds' layout where every model also
says which seeds it holds (`"seeds"`) and where each seed's value came from (`"from"`), so the
renderer pairs models seed by seed even when they ran different seeds.

    python bench/studies/demo_seeds/merge_seeds.py --runs /work/runs/s16/seeds \
        --fill bench/studies/demo_seeds/demo_seeds_182a34b.json --fill-seeds 0 1 2 3 4 \
        --out bench/studies/demo_seeds/demo_seeds_6d2dcad.json

A model found in both keeps the runs' value for the seeds the runs have (newer code, one thread).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from errors import ConfigError, run_cli  # noqa: E402
from safe_io import atomic_write_json  # noqa: E402


def runs_values(runs: Path) -> dict:
    """{model: {seed: {subset: NME}}} from <runs>/seed<S>/<model>/scores.json."""
    found: dict = {}
    for scores_file in sorted(runs.glob("seed*/*/scores.json")):
        seed = re.fullmatch(r"seed(\d+)", scores_file.parent.parent.name)
        if not seed:
            continue
        scores = json.loads(scores_file.read_text())["scores"]
        found.setdefault(scores_file.parent.name, {})[int(seed.group(1))] = \
            {sub: v["nme_interocular"] for sub, v in scores.items()}
    return found


def fill_values(summary: dict, seeds: list, label: str = "fill") -> tuple:
    """The same layout from a summarize_seeds output whose values are seeds `seeds` in order, or
    from an earlier merged file (its entries name their own "seeds"); and {model: {seed: where the
    value came from}}: `label`, or the merged file's own "from" for that seed."""
    found: dict = {}
    origin: dict = {}
    for model, subsets in summary.items():
        if model.startswith("paired_") or not isinstance(subsets, dict):
            continue
        model_seeds = subsets.get("seeds", seeds)
        froms = subsets.get("from") or [label] * len(model_seeds)
        for sub, cell in subsets.items():
            if sub in ("seeds", "from"):
                continue
            values = cell["values"]
            if len(values) != len(model_seeds):
                raise ConfigError(f"{model} {sub}: {len(values)} values for {len(model_seeds)} "
                                  f"{'seeds' if 'seeds' in subsets else '--fill-seeds'}")
            for seed, v in zip(model_seeds, values):
                found.setdefault(model, {}).setdefault(seed, {})[sub] = v
        origin[model] = dict(zip(model_seeds, froms))
    return found, origin


def merge(new: dict, old: dict, new_label: str, old_label) -> dict:
    """One entry per model: subsets with values/mean/std over its seeds (ascending), + seeds, from.
    old_label: one label for every earlier value, or {model: {seed: label}}."""
    import numpy as np

    out = {}
    for model in sorted(set(new) | set(old)):
        labels = old_label.get(model, {}) if isinstance(old_label, dict) else {}
        per_seed = {s: (v, labels.get(s, old_label if isinstance(old_label, str) else "fill"))
                    for s, v in old.get(model, {}).items()}
        per_seed.update({s: (v, new_label) for s, v in new.get(model, {}).items()})
        seeds = sorted(per_seed)
        entry = {"seeds": seeds, "from": [per_seed[s][1] for s in seeds]}
        for sub in per_seed[seeds[0]][0]:
            v = np.array([per_seed[s][0][sub] for s in seeds], np.float64)
            entry[sub] = {"values": v.tolist(), "mean": float(v.mean()),
                          "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan")}
        out[model] = entry
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="folder of seed<S>/ demo outputs (this session's)")
    p.add_argument("--fill", required=True, help="an earlier demo.summarize_seeds JSON, or a file this "
                                                 "script wrote, for the rest")
    p.add_argument("--fill-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="the seeds of --fill's values, in order (default: 0 1 2 3 4)")
    p.add_argument("--runs-label", default="runs", help="how the merged file names --runs' values")
    p.add_argument("--out", required=True, help="merged JSON to write (refuses an existing file)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; pass another --out (nothing is overwritten)")
    new = runs_values(Path(args.runs))
    if not new:
        raise ConfigError(f"{args.runs}: no seed*/*/scores.json; run demo.py --seeds first")
    old, origin = fill_values(json.loads(Path(args.fill).read_text()), args.fill_seeds, Path(args.fill).name)
    atomic_write_json(out, merge(new, old, args.runs_label, origin))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
