"""Where each run of the converged-regime study stands (issue 33, item 4): the teachers continued
until the Tough one is ahead of the converged L2 student, then KD and L1 students with that
student's data and schedule. The runs take many CPU hours and span sessions; this reads their run
folders (config.json, state.json, log.csv, written by the trainers) and writes one table:

    python bench/studies/converged_regime/progress.py --run tough=/work/runs/s17/tough_c3 [--run ...]

Each run resumes by running its command again (the trainers continue from last.keras); the table
says how far it got. Output: progress.md and its tables in results.json beside this script
(bench/results_json.py), or --out FILE.md elsewhere."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))          # bench/ (_common, results_json)
sys.path.insert(0, str(HERE.parents[2]))          # the repository

from _common import publish, results_path  # noqa: E402
from results_json import record  # noqa: E402


def run_progress(run_dir: Path) -> dict:
    """The run folder's state: epochs done of planned, images seen, validation NME per epoch (%)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    val = []
    log = run_dir / "log.csv"
    if log.is_file():
        with open(log, newline="") as f:
            val = [100.0 * float(r["val_nme"]) for r in csv.DictReader(f) if r.get("val_nme")]
    steps = int(state.get("step", 0))
    return {"epochs_done": int(state.get("epoch", 0)), "epochs": int(cfg.get("epochs", 0)),
            "step": steps, "images": steps * int(cfg.get("batch_size", 0)),
            "val_nme": val, "finished": bool(state.get("finished", False)),
            "hours": float(state.get("elapsed_s", 0.0)) / 3600.0}


def test_nme(scores_file: Path) -> float:
    """Full-set inter-ocular NME % of a test.py scores.json."""
    return float(json.loads(Path(scores_file).read_text())["scores"]["full"]["nme_interocular"])


def table(runs: dict, tests: dict) -> str:
    lines = ["| run | epochs done / planned | images this run | hours of training | validation NME % by epoch "
             "| test NME % (full set) of its best.keras so far | finished |",
             "|---|---|---|---|---|---|---|"]
    for name, p in runs.items():
        by_epoch = ", ".join(f"{v:.2f}" for v in p["val_nme"]) or "-"
        test = f"{tests[name]:.2f}" if name in tests else "-"
        lines.append(f"| {name} | {p['epochs_done']} / {p['epochs']} | {p['images']:,} | {p['hours']:.2f} | "
                     f"{by_epoch} | {test} | {'yes' if p['finished'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                    help="a run of the study and its run folder (repeat for each run)")
    ap.add_argument("--scores", action="append", default=[], metavar="NAME=SCORES_JSON",
                    help="a run's test score: the scores.json of python test.py --model <run>/best.keras")
    ap.add_argument("--out", default=None,
                    help="results Markdown (default: progress.md beside this script, with its "
                         "tables in results.json)")
    args = ap.parse_args(argv)
    runs = {}
    for item in args.run:
        name, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "config.json").is_file():
            ap.error(f"--run {item}: give NAME=RUN_DIR, a folder a trainer wrote (config.json)")
        runs[name] = run_progress(Path(folder))
    tests = {}
    for item in args.scores:
        name, _, path = item.partition("=")
        if name not in runs or not Path(path).is_file():
            ap.error(f"--scores {item}: give NAME=FILE with a NAME of --run and a test.py scores.json")
        tests[name] = test_nme(Path(path))
    body = table(runs, tests) + "\n"
    publish("The converged regime: where each run stands", body, "progress", args.out,
            notes=["each run resumes by running its command again (README beside this script)"])
    record(results_path("progress", False, args.out))     # its table, as data
    return 0


if __name__ == "__main__":
    sys.exit(main())
