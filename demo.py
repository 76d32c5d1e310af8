"""The main job in one command: data, soft landmarks, both teachers, the KD student and the L2
baseline, evaluation, and the report (results table, CED plot, sample grid).

    python demo.py                 # quick configuration, sized for 2 CPU cores (see README for the time)
    python demo.py --full          # the published configuration (224 px, batch 70, 150 epochs)
    python demo.py --seed 1 --out results/demo-seed1
    python demo.py --ablations --seeds 0 1 2   # the paper's claim over seeds: one table, mean and spread

Steps (each a command of the repo, run as a subprocess so each is exactly what a user would type):
  1. generate the embedded synthetic 300W faces (official .pts layout) if missing;
  2. `data_util.py prepare` face crops at the input size;
  3. `asm_soft_landmarks.py` soft landmarks for the Tolerant teacher;
  4. `teacher_trainer.py` Tough and Tolerant teachers;
  5. `student_trainer.py` the KD student and the L2 baseline (and, with --ablations, the
     Tough-only and Tolerant-only students);
  6. `test.py` on every model, then one table, one CED plot and one sample grid for all of them.
Every step resumes: running the command again skips finished models and continues interrupted ones.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from errors import ConfigError, LandmarkError, malloc_env, quiet_tensorflow, run_cli, user_set_malloc

quiet_tensorflow()

from configuration import REPO_ROOT, PrepareConfig  # noqa: E402

# The quick configuration: small crops, a few hundred faces, few epochs (finishes on 2 CPU cores).
QUICK = {"input_size": 64, "batch_size": 32, "teacher_epochs": 3, "student_epochs": 10,
         "max_faces": None, "augment": "none"}
FULL = {"input_size": 224, "batch_size": 70, "teacher_epochs": 150, "student_epochs": 150,
        "max_faces": None, "augment": "offline"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the published configuration instead of the quick one")
    p.add_argument("--dataset", default="300w", choices=("300w", "cofw", "wflw"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run each seed (results/demo-<dataset>-seed<S>) and write one table of mean "
                        "and spread over them to results/demo-<dataset>-seeds/")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--student-epochs", type=int, default=None)
    p.add_argument("--max-faces", type=int, default=None, help="use only the first K training faces")
    p.add_argument("--ablations", action="store_true", help="also train the Tough-only and Tolerant-only students")
    p.add_argument("--out", default=None, help="results folder (default results/demo-<dataset>-seed<seed>)")
    p.add_argument("--models-dir", default=None,
                   help="where the trained models go (default: <out>/models; use models/ to ship them)")
    return p


# glibc allocator settings for the steps (errors.MALLOC_SETTINGS): set before a process starts they
# also cover what mallopt at run time cannot. Measured, 64 px student epoch: 15.5 s by default,
# 10.5 s with tune_malloc alone, 7.6 s with these variables; losses bit-identical.
MALLOC_ENV = malloc_env()


def step_env() -> dict:
    """The environment of each step: this one plus MALLOC_ENV, unless the user set any MALLOC_*."""
    env = dict(os.environ)
    if not user_set_malloc(env):
        env.update(MALLOC_ENV)
    return env


def _run(step: str, cmd: list, log: Path) -> float:
    """Run one repo command, echoing its output; stop the demo with one line if it fails."""
    print(f"\n=== {step}\n$ python {' '.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n=== {step}\n$ python {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=step_env())
    seconds = time.time() - t0
    with open(log, "a") as f:
        f.write(f"exit {proc.returncode} after {seconds:.0f} s\n")
    if proc.returncode != 0:
        raise LandmarkError(f"step '{step}' failed (exit {proc.returncode}); see the message above, "
                            f"fix it and run demo.py again: finished steps are kept")
    print(f"--- {step}: {seconds:.0f} s", flush=True)
    return seconds


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds:
        if args.out or args.models_dir:
            raise ConfigError("--seeds writes results/demo-<dataset>-seed<S> for each seed; drop --out "
                              "and --models-dir")
        outs = []
        for seed in dict.fromkeys(args.seeds):
            run_one(argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None}))
            outs.append(default_out(args.dataset, seed))
        folder = REPO_ROOT / "results" / f"demo-{args.dataset}-seeds"
        text = summarize_seeds(outs, args.dataset, folder)
        print(f"\n{text}\nwrote {folder}/results.md", flush=True)
        return 0
    return run_one(args)


def default_out(dataset: str, seed: int) -> Path:
    return REPO_ROOT / "results" / f"demo-{dataset}-seed{seed}"


def summarize_seeds(outs: list, dataset: str, folder: Path) -> str:
    """Mean, sample standard deviation and range over seeds of each model's NME per subset."""
    import numpy as np

    from safe_io import atomic_write_json, atomic_write_text  # noqa: PLC0415

    per_model: dict = {}
    for out in outs:
        for scores_file in sorted(Path(out).glob("*/scores.json")):
            scores = json.loads(scores_file.read_text())["scores"]
            per_model.setdefault(scores_file.parent.name, []).append(
                {k: v["nme_interocular"] for k, v in scores.items()})
    if not per_model:
        raise LandmarkError(f"no scores.json under {', '.join(map(str, outs))}; run the demo first")
    subsets = list(next(iter(per_model.values()))[0])
    lines = [f"# Over seeds on the synthetic {dataset} test set", "",
             f"Inter-ocular NME %: mean ± sample standard deviation [min-max] over "
             f"{len(outs)} seeds ({', '.join(Path(o).name for o in outs)}).", "",
             "| model | seeds | " + " | ".join(f"NME {s}" for s in subsets) + " |",
             "|---|---|" + "---|" * len(subsets)]
    summary = {}
    for name, runs in per_model.items():
        cells = []
        for sub in subsets:
            v = np.array([r[sub] for r in runs], np.float64)
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            summary.setdefault(name, {})[sub] = {"values": v.tolist(), "mean": float(v.mean()), "std": sd}
            cells.append(f"{v.mean():.2f} ± {sd:.2f} [{v.min():.2f}-{v.max():.2f}]")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.md", text)
    atomic_write_json(folder / "summary.json", summary)
    return text


def run_one(args) -> int:
    cfg = dict(FULL if args.full else QUICK)
    for key in ("input_size", "teacher_epochs", "student_epochs", "max_faces"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if cfg["input_size"] < 32:
        raise ConfigError(f"--input-size {cfg['input_size']}: the backbones need at least 32 pixels")
    ds, seed, size = args.dataset, args.seed, cfg["input_size"]
    out = Path(args.out) if args.out else default_out(ds, seed)
    models = Path(args.models_dir) if args.models_dir else out / "models"
    runs = out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    prepared = PrepareConfig(dataset=ds, input_size=size).resolved_out_dir()
    common = ["--dataset", ds, "--input-size", str(size), "--batch-size", str(cfg["batch_size"]),
              "--seed", str(seed), "--augment", cfg["augment"], "--verbose", "1"]
    if cfg["max_faces"]:
        common += ["--max-faces", str(cfg["max_faces"])]
    tough, tolerant = (models / "teachers" / f"{ds}_{t}.keras" for t in ("tough", "tolerant"))
    students = ["kd", "l2"] + (["tough-only", "tolerant-only"] if args.ablations else [])
    times = {}
    t_start = time.time()

    times["prepare"] = _run("generate (if missing) and prepare the synthetic faces",
                            ["data_util.py", "prepare", "--dataset", ds, "--input-size", str(size)], log)
    times["asm"] = _run("soft landmarks (ASM, 90% variance)",
                        ["asm_soft_landmarks.py", "--dataset", ds, "--input-size", str(size),
                         "--variance", "0.9"], log)
    for name, path in (("tough", tough), ("tolerant", tolerant)):
        times[f"teacher-{name}"] = _run(
            f"{name} teacher (EfficientNet-B3)",
            ["teacher_trainer.py", "--teacher", name, *common, "--epochs", str(cfg["teacher_epochs"]),
             "--run-dir", str(runs / f"teacher-{name}"), "--output", str(path)], log)
    for mode in students:
        times[f"student-{mode}"] = _run(
            f"{mode} student (MobileNetV2)",
            ["student_trainer.py", "--student-mode", mode, *common, "--epochs", str(cfg["student_epochs"]),
             "--tough", str(tough), "--tolerant", str(tolerant),
             "--run-dir", str(runs / f"student-{mode}"), "--output", str(models / "students" / f"{ds}_{mode}.keras")], log)
    evaluated = {f"student-{m}": models / "students" / f"{ds}_{m}.keras" for m in students}
    evaluated["teacher-tough"] = tough
    evaluated["teacher-tolerant"] = tolerant
    for name, path in evaluated.items():
        times[f"test-{name}"] = _run(
            f"evaluate {name}",
            ["test.py", "--dataset", ds, "--model", str(path), "--prepared-dir", str(prepared),
             "--out-dir", str(out / name), "--mode", name.split("-", 1)[1] if name.startswith("student")
             else "teacher"], log)
    report = write_report(out, ds, evaluated, prepared)
    total = time.time() - t_start
    times["total"] = total
    from safe_io import atomic_write_json  # noqa: PLC0415

    atomic_write_json(out / "timings.json", {"config": cfg, "seed": seed, "seconds": times})
    print(f"\n{report}\nwrote {out}/results.md, ced.png, samples.png; total {total / 60:.1f} min", flush=True)
    return 0


def write_report(out: Path, dataset: str, evaluated: dict, prepared_dir) -> str:
    """One table, one CED plot and one sample grid over every evaluated model."""
    import numpy as np

    import evaluation as ev

    split = ev.load_test_split(prepared_dir)
    rows, curves = [], {}
    for name in evaluated:
        scores = json.loads((out / name / "scores.json").read_text())["scores"]
        preds = ev.read_predictions(out / name / "predictions.json")
        curves[name] = ev.nmes_for_ced(preds, split)
        rows.append((name, scores))
    subsets = list(rows[0][1])
    lines = [f"# Demo results on the synthetic {dataset} test set", "",
             "Inter-ocular NME % per subset, FR@0.1 % and AUC@0.1 on the full test set.", "",
             "| model | " + " | ".join(f"NME {s}" for s in subsets) + " | FR@0.1 | AUC@0.1 |",
             "|---|" + "---|" * len(subsets) + "---|---|"]
    for name, scores in rows:
        full = scores.get("full", {})
        lines.append(f"| {name} | " + " | ".join(f"{scores[s]['nme_interocular']:.2f}" for s in subsets)
                     + f" | {full.get('fr@0.1', float('nan')):.2f} | {full.get('auc@0.1', float('nan')):.4f} |")
    text = "\n".join(lines) + "\n"
    from safe_io import atomic_write_text  # noqa: PLC0415

    atomic_write_text(out / "results.md", text)
    ev.save_ced_plot(curves, out / "ced.png", title=f"CED on synthetic {dataset} (test)")
    kd = "student-kd" if "student-kd" in evaluated else next(iter(evaluated))
    pred = ev.align_predictions(ev.read_predictions(out / kd / "predictions.json"), split)
    gt = np.asarray(split.landmarks_px, dtype=np.float64)
    idx = np.unique(np.linspace(0, len(split) - 1, min(8, len(split))).round().astype(int))
    boxes = np.asarray(split.crop_boxes)[idx]
    ev.save_sample_grid(np.asarray(split.images[idx]), ev.to_crop_px(gt[idx], boxes, split.input_size),
                        ev.to_crop_px(pred[idx], boxes, split.input_size),
                        out / "samples.png", titles=[f"{kd}: {split.ids[i][-20:]}" for i in idx])
    return text


if __name__ == "__main__":
    sys.exit(run_cli(main))
