"""The main job in one command: data, the KD student distilled from the shipped teachers, the L2
baseline, evaluation beside the teachers and the mean shape, and the report (results table, CED
plot, sample grid).

    python demo.py                     # quick configuration, sized for 2 CPU cores (time: README, set-up)
    python demo.py --train-teachers    # also fit the ASM and train both teachers here
    python demo.py --full              # the published configuration (224 px, batch 70, 150 epochs)
    python demo.py --seed 1 --out results/demo-seed1
    python demo.py --ablations --seeds 0 1 2 3 4   # the paper's claim over seeds, paired differences
    python demo.py --students tough-only tolerant-only --seeds 0 1 2 3 4   # only the two ablations
    python demo.py --students kd --loss-preset paper   # KD with the article's constants (student-kd-paper)

Steps (each a command of the repo, run as a subprocess so each is exactly what a user would type):
  1. generate the embedded synthetic 300W faces (official .pts layout) if missing, and
     `data_util.py prepare` the face crops at the input size;
  2. with --train-teachers (or --full): `asm_soft_landmarks.py` soft landmarks and
     `teacher_trainer.py` Tough and Tolerant teachers; otherwise the teachers shipped in
     models/teachers/ (trained long on a separate synthetic set; models/README.md);
  3. `student_trainer.py` the KD student, the L1 control (no teachers, the same shape of loss:
     KD - L1 is what the teachers add) and the L2 baseline (the paper's comparison); with
     --ablations also the Tough-only and Tolerant-only students;
  4. `test.py` on every model, then one table (with the mean training shape), one CED plot and one
     sample grid for all of them.
Steps 3 and 4 run two at a time on one TensorFlow thread each (`--jobs`, default 2), so both cores
work and the students are bit-identical to the one-thread seed studies (bench/studies/demo_seeds);
`--jobs 1` runs them one after another with TensorFlow's default threads.
Every step resumes: running the command again skips finished models and continues interrupted ones.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from errors import ConfigError, LandmarkError, run_cli
from runtime import malloc_env, quiet_tensorflow, user_set_malloc

quiet_tensorflow()

from configuration import (DEFAULT_LOSS_PRESET, LOSS_PRESETS, MODELS_DIR, PRESETS, REPO_ROOT,  # noqa: E402
                           PrepareConfig, check_input_size, preset_frozen_epochs)

# The quick and the published configurations: configuration.PRESETS (one table with the trainers'
# --preset).
from kd_loss import MODE_TEACHERS  # noqa: E402
from kd_loss import MODES as STUDENT_MODES  # noqa: E402  (the one list of student modes)

# KD, its control of the same shape without teachers (L1), and the paper's baseline (L2)
DEFAULT_STUDENTS = ("kd", "l1", "l2")
# the baselines every student is compared with over seeds: L1 isolates the teachers, L2 is the paper's
BASELINES = (("student-l1", "what the teachers add"), ("student-l2", "the paper's comparison"))

QUICK, FULL = PRESETS["quick"], PRESETS["paper"]


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(f"With no options (the quick configuration) it generates the embedded synthetic 300W "
                f"faces (3000 train / 300 test), prepares {QUICK['input_size']} px crops, trains the "
                f"KD student (from the teachers shipped in models/teachers/), the L1 control (no "
                f"teachers: KD - L1 is what the teachers add) and the L2 baseline for "
                f"{QUICK['student_epochs']} epochs each (batch {QUICK['batch_size']}, "
                f"{QUICK['lr_schedule']} schedule, the last {QUICK['student_freeze_batchnorm_epochs']} "
                f"with BatchNorm frozen, no augmentation), evaluates them beside the teachers "
                f"and the mean training shape and writes results/demo-300w-seed0/{{results.md,ced.png,"
                f"samples.png}} (the time measured on 2 CPU cores: README, set-up). --train-teachers "
                f"also trains both teachers here ({QUICK['teacher_epochs']} epochs each). --full trains "
                f"{FULL['teacher_epochs']} epochs at {FULL['input_size']} px with offline augmentation: a "
                f"job for a GPU. Running it again resumes and skips finished models.", 100))
    p.add_argument("--full", action="store_true", help="the published configuration instead of the quick one")
    p.add_argument("--dataset", default="300w", choices=("300w", "cofw", "wflw"),
                   help="which embedded synthetic dataset to run on (default: 300w)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the whole run (default: 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run each seed (results/demo-<dataset>-seed<S>) and write one table of mean "
                        "and spread over them to results/demo-<dataset>-seeds/")
    p.add_argument("--input-size", type=int, default=None,
                   help=f"crop side in pixels (default: {QUICK['input_size']}, --full {FULL['input_size']})")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help=f"epochs of each teacher (default: {QUICK['teacher_epochs']}, --full "
                        f"{FULL['teacher_epochs']})")
    p.add_argument("--student-epochs", type=int, default=None,
                   help=f"epochs of each student (default: {QUICK['student_epochs']}, --full "
                        f"{FULL['student_epochs']})")
    p.add_argument("--max-faces", type=int, default=None, help="use only the first K training faces")
    p.add_argument("--width-multiplier", type=float, default=None,
                   help="the students' MobileNetV2 width (default 1.0; the study of where the teachers "
                        "matter also runs 0.35 and 0.5)")
    p.add_argument("--train-teachers", action="store_true",
                   help="also fit the ASM and train both teachers here (default: distil from the "
                        "teachers shipped in models/teachers/; --full always trains them)")
    p.add_argument("--ablations", action="store_true", help="also train the Tough-only and Tolerant-only students")
    p.add_argument("--students", nargs="+", default=None, choices=STUDENT_MODES, metavar="MODE",
                   help="train only these students (choices: " + ", ".join(STUDENT_MODES) + "; default: "
                        + " ".join(DEFAULT_STUDENTS) + ", and tough-only tolerant-only with --ablations)")
    p.add_argument("--loss-preset", default=DEFAULT_LOSS_PRESET, choices=tuple(LOSS_PRESETS),
                   help="KD-Loss constants of the students that use teachers (choices: "
                        + ", ".join(LOSS_PRESETS) + f"; default {DEFAULT_LOSS_PRESET}); any other "
                        "than the default is named in the student's folder, e.g. student-kd-paper")
    p.add_argument("--teacher-flip-test", action="store_true",
                   help="the students with teachers learn from the teachers' flip-test predictions "
                        "(mean over each crop and its mirror; better teachers, same files); named "
                        "e.g. student-kd-flip")
    p.add_argument("--out", default=None, help="results folder (default results/demo-<dataset>-seed<seed>; "
                                               "with --seeds: the parent of one seed<S> folder per seed and seeds/)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="students (and evaluations) trained at a time, each on one TensorFlow thread "
                        "(default: 2 on 2 or more cores; 1: one after another with TensorFlow's "
                        "default threads)")
    p.add_argument("--models-dir", default=None,
                   help="where the trained models go (default: <out>/models; use models/ to ship them)")
    return p


# glibc allocator settings for the steps (runtime.MALLOC_SETTINGS): set before a process starts they
# also cover what mallopt at run time cannot. Measured, 64 px student epoch: 15.5 s by default,
# 10.5 s with tune_malloc alone, 7.6 s with these variables; losses bit-identical.
MALLOC_ENV = malloc_env()


def step_env() -> dict:
    """The environment of each step: this one plus MALLOC_ENV, unless the user set any MALLOC_*."""
    env = dict(os.environ)
    if not user_set_malloc(env):
        env.update(MALLOC_ENV)
    return env


# With --jobs 2 (the default on 2 or more cores) two steps run at a time, each on one TensorFlow
# thread: a 64 px student keeps about 1.5 cores busy with two threads, so two one-thread steps side by
# side use both cores, and one-thread runs are bit-identical from run to run (the seed studies').
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _run(step: str, cmd: list, log: Path, env: Optional[dict] = None, echo: bool = True) -> float:
    """Run one repo command, echoing its output (or, with echo=False, writing it to
    <log folder>/logs/<step>.log); stop the demo with one line if it fails."""
    print(f"\n=== {step}\n$ python {' '.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n=== {step}\n$ python {' '.join(cmd)}\n")
    step_log = log.parent / "logs" / (re.sub(r"[^A-Za-z0-9.-]+", "_", step).strip("_") + ".log")
    if echo:
        proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=env or step_env())
    else:
        step_log.parent.mkdir(exist_ok=True)
        with open(step_log, "w") as out:
            proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=env or step_env(),
                                  stdout=out, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    with open(log, "a") as f:
        f.write(f"exit {proc.returncode} after {seconds:.0f} s ({step})\n")
    if proc.returncode != 0:
        where = "the message above" if echo else f"{step_log}"
        raise LandmarkError(f"step '{step}' failed (exit {proc.returncode}); see {where}, "
                            f"fix it and run demo.py again: finished steps are kept")
    print(f"--- {step}: {seconds:.0f} s", flush=True)
    return seconds


def _run_steps(steps: list, log: Path, jobs: int) -> dict:
    """Run steps [(key, step, cmd), ...]; seconds per key. jobs 1: one after another, output on the
    console, TensorFlow's default threads; jobs > 1: that many at a time, each on one TensorFlow
    thread (unless the user set TF_NUM_*_THREADS), each step's output in <out>/logs/."""
    if jobs <= 1 or len(steps) < 2:
        return {key: _run(step, cmd, log) for key, step, cmd in steps}
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # noqa: PLC0415

    env = step_env()
    if not any(k in os.environ for k in ONE_THREAD):
        env.update(ONE_THREAD)
    with ThreadPoolExecutor(jobs) as pool:
        futures = {key: pool.submit(_run, step, cmd, log, env, False) for key, step, cmd in steps}
        done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in futures.values():
                f.cancel()                      # steps not started yet; running ones finish
            raise failed[0].exception()
        return {key: f.result() for key, f in futures.items()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds:
        if args.models_dir:
            raise ConfigError("--seeds keeps each seed's models in its own folder; drop --models-dir")
        parent = Path(args.out) if args.out else None
        outs = []
        for seed in dict.fromkeys(args.seeds):
            out = parent / f"seed{seed}" if parent else default_out(args.dataset, seed)
            run_one(argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "out": str(out)}))
            outs.append(out)
        folder = parent / "seeds" if parent else REPO_ROOT / "results" / f"demo-{args.dataset}-seeds"
        text = summarize_seeds(outs, args.dataset, folder)
        print(f"\n{text}\nwrote {folder}/results.md", flush=True)
        return 0
    return run_one(args)


def default_out(dataset: str, seed: int) -> Path:
    return REPO_ROOT / "results" / f"demo-{dataset}-seed{seed}"


def paired_difference(a, b) -> dict:
    """Mean of the paired differences a - b over seeds, its sample standard deviation and the 95%
    confidence interval of the mean (Student's t with n - 1 degrees of freedom)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "ci95": (float("nan"), float("nan"))}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    return {"n": n, "mean": mean, "std": sd, "ci95": (mean - half, mean + half), "values": d.tolist()}


def verdict(name: str, baseline: str, diff: dict) -> str:
    """A plain sentence on a paired difference (NME: lower is better)."""
    lo, hi = diff["ci95"]
    if hi < 0:
        return f"{name} beats {baseline} here: its NME is lower by {-diff['mean']:.2f} points (95% CI {-hi:.2f} to {-lo:.2f})."
    if lo > 0:
        return f"{name} is worse than {baseline} here: its NME is higher by {diff['mean']:.2f} points (95% CI {lo:.2f} to {hi:.2f})."
    return (f"{name} and {baseline} are not distinguishable here: the difference {diff['mean']:+.2f} points has a "
            f"95% CI of {lo:+.2f} to {hi:+.2f}, which contains 0.")


def summarize_seeds(outs: list, dataset: str, folder: Path) -> str:
    """Mean, sample standard deviation and range over seeds of each model's NME per subset, and
    each student's paired difference to the L1 control and to the L2 baseline (same seed) with its
    95% CI."""
    import numpy as np

    from safe_io import atomic_write_json, atomic_write_text  # noqa: PLC0415

    per_model: dict = {}     # model -> {seed folder: {subset: NME}}
    for out in outs:
        for scores_file in sorted(Path(out).glob("*/scores.json")):
            scores = json.loads(scores_file.read_text())["scores"]
            per_model.setdefault(scores_file.parent.name, {})[str(out)] = \
                {k: v["nme_interocular"] for k, v in scores.items()}
    if not per_model:
        raise LandmarkError(f"no scores.json under {', '.join(map(str, outs))}; run the demo first")
    subsets = list(next(iter(next(iter(per_model.values())).values())))
    lines = [f"# Over seeds on the synthetic {dataset} test set", "",
             f"Inter-ocular NME %: mean ± sample standard deviation [min-max] over "
             f"{len(outs)} seeds ({', '.join(Path(o).name for o in outs)}).", "",
             "| model | seeds | " + " | ".join(f"NME {s}" for s in subsets) + " |",
             "|---|---|" + "---|" * len(subsets)]
    summary = {}
    for name, runs in per_model.items():
        cells = []
        for sub in subsets:
            v = np.array([r[sub] for r in runs.values()], np.float64)
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            summary.setdefault(name, {})[sub] = {"values": v.tolist(), "mean": float(v.mean()), "std": sd}
            cells.append(f"{v.mean():.2f} ± {sd:.2f} [{v.min():.2f}-{v.max():.2f}]")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    for base, meaning in BASELINES:
        if base not in per_model:
            continue
        rows, sentences = [], []
        for name, runs in per_model.items():
            if not name.startswith("student-") or name == base:
                continue
            both = [o for o in runs if o in per_model[base]]
            if not both:
                continue
            diff = paired_difference([runs[o]["full"] for o in both], [per_model[base][o]["full"] for o in both])
            summary.setdefault(f"paired_vs_{base.split('-', 1)[1]}", {})[name] = diff
            lo, hi = diff["ci95"]
            rows.append(f"| {name} - {base} | {diff['n']} | {diff['mean']:+.2f} | {diff['std']:.2f} | "
                        f"{lo:+.2f} to {hi:+.2f} | " + ", ".join(f"{x:+.2f}" for x in diff.get("values", [])) + " |")
            sentences.append(verdict(name, base, diff))
        if rows:
            lines += ["", f"Paired differences of the full-set NME against {base} ({meaning}; same seed; "
                          f"negative: lower NME than {base}):", "",
                      "| difference | seeds | mean | sd | 95% CI of the mean | per seed |",
                      "|---|---|---|---|---|---|", *rows, "", *sentences]
    text = "\n".join(lines) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.md", text)
    atomic_write_json(folder / "summary.json", summary)
    return text


def student_name(mode: str, preset: str, teacher_flip_test: bool = False) -> str:
    """The student's name in folders and tables: its mode, then, for a student with a teacher, the
    KD-Loss preset where it is not the default and "flip" where the teachers' predictions are the
    flip test's (kd-paper-flip)."""
    if not any(MODE_TEACHERS[mode]):
        return mode
    return "-".join([mode, *([preset] if preset != DEFAULT_LOSS_PRESET else []),
                     *(["flip"] if teacher_flip_test else [])])


def shipped_teachers(dataset: str) -> tuple:
    """The teachers shipped in models/teachers/ (trained long on a larger synthetic set)."""
    return tuple(MODELS_DIR / "teachers" / f"{dataset}_{kind}.keras" for kind in ("tough", "tolerant"))


def run_one(args) -> int:
    cfg = dict(FULL if args.full else QUICK)
    for key in ("input_size", "teacher_epochs", "student_epochs", "max_faces"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    check_input_size(cfg["input_size"])
    ds, seed, size = args.dataset, args.seed, cfg["input_size"]
    train_teachers = bool(args.train_teachers or args.full)
    out = Path(args.out) if args.out else default_out(ds, seed)
    models = Path(args.models_dir) if args.models_dir else out / "models"
    runs = out / "runs"
    if train_teachers:
        tough, tolerant = (models / "teachers" / f"{ds}_{t}.keras" for t in ("tough", "tolerant"))
    else:
        tough, tolerant = shipped_teachers(ds)
        missing = [str(p) for p in (tough, tolerant) if not p.is_file()]
        if missing:
            raise ConfigError(f"no shipped teacher {' or '.join(missing)}; run python demo.py "
                              f"--dataset {ds} --train-teachers to train both first")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    prepared = PrepareConfig(dataset=ds, input_size=size).resolved_out_dir()
    common = ["--dataset", ds, "--input-size", str(size), "--batch-size", str(cfg["batch_size"]),
              "--seed", str(seed), "--augment", cfg["augment"], "--verbose", "1"]
    if cfg.get("lr_schedule"):
        common += ["--lr-schedule", cfg["lr_schedule"]]
    if cfg["max_faces"]:
        common += ["--max-faces", str(cfg["max_faces"])]
    width = getattr(args, "width_multiplier", None)
    student_width = ["--width-multiplier", str(width)] if width else []
    students = (list(dict.fromkeys(args.students)) if args.students
                else [*DEFAULT_STUDENTS] + (["tough-only", "tolerant-only"] if args.ablations else []))
    preset = getattr(args, "loss_preset", DEFAULT_LOSS_PRESET)
    times = {}
    t_start = time.time()

    times["prepare"] = _run("generate (if missing) and prepare the synthetic faces",
                            ["data_util.py", "prepare", "--dataset", ds, "--input-size", str(size)], log)
    if train_teachers:
        times["asm"] = _run("soft landmarks (ASM, 90% variance)",
                            ["asm_soft_landmarks.py", "--dataset", ds, "--input-size", str(size),
                             "--variance", "0.9"], log)
        for name, path in (("tough", tough), ("tolerant", tolerant)):
            times[f"teacher-{name}"] = _run(
                f"{name} teacher (EfficientNet-B3)",
                ["teacher_trainer.py", "--teacher", name, *common, "--epochs", str(cfg["teacher_epochs"]),
                 "--run-dir", str(runs / f"teacher-{name}"), "--output", str(path)], log)
    student_only = ["--freeze-batchnorm-epochs", str(preset_frozen_epochs(
        cfg.get("student_freeze_batchnorm_epochs", 0), cfg["student_epochs"]))]
    flip = bool(getattr(args, "teacher_flip_test", False))
    names = {mode: student_name(mode, preset, flip) for mode in students}
    jobs = getattr(args, "jobs", 1)
    times.update(_run_steps([(
        f"student-{name}", f"{name} student (MobileNetV2)",
        ["student_trainer.py", "--student-mode", mode, *common, "--epochs", str(cfg["student_epochs"]),
         *student_only, *student_width, "--loss-preset", preset,
         *(["--teacher-flip-test"] if flip and any(MODE_TEACHERS[mode]) else []),
         "--tough", str(tough), "--tolerant", str(tolerant),
         "--run-dir", str(runs / f"student-{name}"), "--output", str(models / "students" / f"{ds}_{name}.keras")])
        for mode, name in names.items()], log, jobs))
    evaluated = {f"student-{n}": models / "students" / f"{ds}_{n}.keras" for n in names.values()}
    modes = {f"student-{n}": m for m, n in names.items()}
    evaluated["teacher-tough"] = tough
    evaluated["teacher-tolerant"] = tolerant
    times.update(_run_steps([(
        f"test-{name}", f"evaluate {name}",
        ["test.py", "--dataset", ds, "--model", str(path), "--prepared-dir", str(prepared),
         "--out-dir", str(out / name), "--mode", modes.get(name, "teacher")])
        for name, path in evaluated.items()], log, jobs))
    report = write_report(out, ds, evaluated, prepared)
    total = time.time() - t_start
    times["total"] = total
    from safe_io import atomic_write_json  # noqa: PLC0415

    atomic_write_json(out / "timings.json", {"config": cfg, "seed": seed, "seconds": times,
                                             "teachers": {"tough": str(tough), "tolerant": str(tolerant),
                                                          "trained_here": train_teachers}})
    print(f"\n{report}\nwrote {out}/results.md, ced.png, samples.png; total {total / 60:.1f} min", flush=True)
    return 0


def comparison_lines(full: dict, mean_shape=None) -> list:
    """The sentences under the demo's table: KD against the L1 control and the L2 baseline, and
    against the mean shape; `full` maps model names to full-set NME."""
    if "student-kd" not in full:
        return []
    lines = [""]
    for base, meaning in BASELINES:
        if base in full:
            lines.append(f"KD - {base.split('-', 1)[1].upper()} ({meaning}): "
                         f"{full['student-kd'] - full[base]:+.2f} points of full-set NME (one seed: "
                         f"`--seeds` gives the confidence interval).")
    if mean_shape is not None:
        lines.append(f"KD student / mean shape (full set): "
                     f"{full['student-kd'] / mean_shape['full']['nme_interocular']:.2f}x.")
    return lines


def write_report(out: Path, dataset: str, evaluated: dict, prepared_dir) -> str:
    """One table, one CED plot and one sample grid over every evaluated model."""
    import numpy as np

    import data_util as du
    import evaluation as ev

    split = du.load_prepared(prepared_dir, "test")
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
    mean_shape = ev.mean_shape_scores(prepared_dir, split, dataset)
    if mean_shape is not None:
        rows.append(("mean training shape (no model)", mean_shape))
    for name, scores in rows:
        full = scores.get("full", {})
        lines.append(f"| {name} | " + " | ".join(f"{scores[s]['nme_interocular']:.2f}" for s in subsets)
                     + f" | {full.get('fr@0.1', float('nan')):.2f} | {full.get('auc@0.1', float('nan')):.4f} |")
    lines += comparison_lines({name: scores["full"]["nme_interocular"] for name, scores in rows
                               if "full" in scores}, mean_shape)
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
