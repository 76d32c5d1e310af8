"""How much compute a run needs: validation NME against images seen, read from training run folders.

    python bench/studies/learning_curves/learning_curves.py --runs runs/teachers_long/tough=Tough runs/teachers_long/tolerant=Tolerant \
        runs/student_curve/l2_2000="L2 student" --out samples/learning_curves.png \
        --table bench/studies/learning_curves/learning_curves.md

`--json FILE` also writes the curves (labels, images seen, val NME, batch, wall time), and a `--runs`
entry that is such a JSON file brings its curves back, so a plot can combine runs whose folders are
gone (`bench/studies/learning_curves/learning_curves_long.json` holds the curves of the README's plot of the long
runs, `samples/learning_curves_long.png`).

Each run folder is one written by teacher_trainer.py / student_trainer.py: `log.csv` (val NME per
epoch), `state.json` (steps per epoch) and `config.json` (batch size). Images seen after epoch e is
(e + 1) x steps per epoch x batch size (the last batch of an epoch may be short: an upper bound by
less than one batch per epoch). Wall time per epoch comes from `state.json`'s elapsed seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse
import csv
import json


from errors import ConfigError, run_cli  # noqa: E402


def read_curve(run_dir) -> dict:
    """(images seen, val NME %) per finished epoch of one run folder."""
    run_dir = Path(run_dir)
    try:
        state = json.loads((run_dir / "state.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        with open(run_dir / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError as err:
        raise ConfigError(f"{run_dir}: not a finished-epoch run folder ({err.filename} missing); "
                          f"pass a folder written by teacher_trainer.py or student_trainer.py") from None
    per_epoch = int(state["steps_per_epoch"]) * int(config["batch_size"])
    images = [(int(r["epoch"]) + 1) * per_epoch for r in rows]
    nme = [100.0 * float(r["val_nme"]) for r in rows]
    return {"images": images, "val_nme": nme, "batch_size": int(config["batch_size"]),
            "input_size": int(config["input_size"]), "elapsed_s": float(state.get("elapsed_s", 0.0)),
            "epochs": len(rows)}


def read_curves_json(path) -> dict:
    """{label: curve} from a file written by --json."""
    try:
        curves = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such curves file; write one with --json") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a curves file written by --json ({err.msg})") from None
    keys = ("images", "val_nme", "batch_size", "elapsed_s", "epochs")
    if not isinstance(curves, dict) or not all(isinstance(c, dict) and all(k in c for k in keys)
                                               for c in curves.values()):
        raise ConfigError(f"{path}: not a curves file written by --json (each label needs {', '.join(keys)})")
    return curves


def first_below(curve: dict, threshold: float):
    """Images seen when the validation NME first reached `threshold` % (None if never)."""
    for n, v in zip(curve["images"], curve["val_nme"]):
        if v <= threshold:
            return n
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True,
                   help="run folders, each optionally followed by =LABEL (default label: folder name), "
                        "or .json files written by --json (their curves, with their labels)")
    p.add_argument("--out", default="samples/learning_curves.png", help="the plot (PNG)")
    p.add_argument("--table", default=None, help="also write a Markdown table here")
    p.add_argument("--json", default=None, help="also write the curves here (JSON; --runs reads it back)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[20.0, 15.0, 10.0, 7.5, 5.0],
                   help="val NME levels (%%) whose first crossing the table reports")
    args = p.parse_args(argv)
    curves = {}
    for spec in args.runs:
        folder, _, label = spec.partition("=")
        if folder.endswith(".json"):
            curves.update(read_curves_json(folder))
        else:
            curves[label or Path(folder).name] = read_curve(folder)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, c in curves.items():
        ax.plot(c["images"], c["val_nme"], marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training images seen")
    ax.set_ylabel("validation NME, inter-ocular (%)")
    ax.set_ylim(0, min(40.0, max(max(c["val_nme"]) for c in curves.values()) * 1.05))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Synthetic 300W, 64 px: NME against images seen")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    if args.table:
        head = "| run | batch | epochs | images seen | wall (min) | best val NME | " + " | ".join(
            f"images to {t:g}%" for t in args.thresholds) + " |"
        lines = [head, "|---" * (6 + len(args.thresholds)) + "|"]
        for label, c in curves.items():
            cells = [str(first_below(c, t) or "-") for t in args.thresholds]
            lines.append(f"| {label} | {c['batch_size']} | {c['epochs']} | {c['images'][-1]} | "
                         f"{c['elapsed_s'] / 60:.0f} | {min(c['val_nme']):.2f}% | " + " | ".join(cells) + " |")
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text("\n".join(lines) + "\n")
        from results_json import record

        record(args.table)                           # its table, as data (results.json beside it)
        print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(curves, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
