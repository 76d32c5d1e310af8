"""Training throughput (images/s) on this machine: the student's steps, the teacher's step and the
input pipeline, measured side by side in one run.

Steps (one optimizer update on one batch of B images, Adam, the project's models and step code):
  L2 student        student compiled with MSE (what student_trainer does for --student-mode l2)
  KD, teachers run  student_trainer.Distiller, both frozen teachers predict on the batch
  KD, cached        Distiller with the teachers' predictions given in the batch (the default with
                    offline or no augmentation: --cache-teacher-predictions)
  teacher           EfficientNet-B3 teacher compiled with MSE (teacher_trainer)
The steps are timed with keras `train_on_batch` on one constant batch (no input cost), interleaved
round by round; images/s = B / median step time.

Input pipeline alone (iterated as fast as possible, nothing consuming it but the loop), on real
face crops tiled to a pool of images:
  data_util.TrainData.dataset  the one tf.data pipeline the trainers feed to fit(), no augmentation /
                               online augmentation (data_util.default_online_augment)
Each is compared with what the student step consumes (KD cached, and KD with teachers run for the
online-augmented pipelines, where cached predictions cannot be used).

    python bench/speed/training_speed.py                           # 128 px, batch 32
    python bench/speed/training_speed.py --quick --input-size 32 --batch-size 4
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import time
from typing import Dict, List

import _common as C

C.quiet_tf()

import numpy as np  # noqa: E402

TARGET_KD_OVER_L2 = 1.15
TARGET_PIPELINE = 5.0


# ----------------------------------------------------------------------------------------------
# Data: real face crops, tiled
# ----------------------------------------------------------------------------------------------


def face_pool(size: int, count: int):
    """(images uint8 (count, S, S, 3), landmarks normalised (count, 68, 2)) from the 7 real faces
    (crop protocol of the project, margin 0.25), each copy with a little pixel noise."""
    faces = C.load_real_faces()
    rng = np.random.default_rng(0)
    imgs, pts = [], []
    for f in faces:
        box = C.square_box(f.box_xyxy, 0.25)
        imgs.append(C.crop_square(f.image, box, size))
        x0, y0, side = box
        crop_px = (f.landmarks - np.array([x0, y0])) * (size / side)
        pts.append((size / 2.0 - crop_px) / size)
    idx = np.arange(count) % len(faces)
    images = np.stack([imgs[i] for i in idx]).astype(np.int16)
    images = np.clip(images + rng.integers(-8, 9, images.shape), 0, 255).astype(np.uint8)
    return images, np.stack([pts[i] for i in idx]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Models and steps
# ----------------------------------------------------------------------------------------------


def make_optimizer():
    import configuration
    import training
    return training.make_optimizer(configuration.TrainConfig()), "training.make_optimizer"


def build_steps(size: int, batch: int, which=("l2", "kd-teachers", "kd-cached", "teacher"),
                jit: bool = False, width: float = 1.0, arch: str = "paper") -> tuple:
    """name -> zero-argument callable running one training step; plus notes.

    Every callable returns after the step has finished (train_on_batch returns Python numbers)."""
    import tensorflow as tf

    notes = []
    images, pts = face_pool(size, batch)
    x = tf.constant(images.astype(np.float32) / 255.0)
    g = tf.constant(pts.reshape(batch, -1))
    n = pts.shape[1]
    steps = {}
    opt_src = make_optimizer()[1]
    if "l2" in which:
        student, src = C.build_student(n, size, width, arch)
        student.compile(optimizer=make_optimizer()[0], loss="mse", jit_compile=jit)
        steps["l2"] = lambda m=student: m.train_on_batch(x, g)
        notes.append(f"student: {src}, {student.count_params() / 1e6:.2f} M parameters")
    need_teachers = any(k in which for k in ("kd-teachers", "kd-cached"))
    if need_teachers:
        tough, tsrc = C.build_teacher(n, size, arch)
        tolerant, _ = C.build_teacher(n, size, arch)
        a = tf.constant(tough.predict(x, verbose=0))
        s = tf.constant(tolerant.predict(x, verbose=0))
        from student_trainer import Distiller  # noqa: PLC0415
        dsrc = "student_trainer.Distiller"
        for kind, y in (("kd-teachers", {"landmarks": g}),
                        ("kd-cached", {"landmarks": g, "tough": a, "tolerant": s})):
            if kind not in which:
                continue
            student, _ = C.build_student(n, size, width, arch)
            model = Distiller(student, tough, tolerant, mode="kd")
            model.compile(optimizer=make_optimizer()[0], jit_compile=jit)
            steps[kind] = lambda m=model, y=y: m.train_on_batch(x, y)
        notes.append(f"KD step: {dsrc}, kd_loss.KDLoss (preset 'code'); teachers: {tsrc}")
    if "teacher" in which:
        teacher, tsrc = C.build_teacher(n, size, arch)
        teacher.compile(optimizer=make_optimizer()[0], loss="mse", jit_compile=jit)
        steps["teacher"] = lambda m=teacher: m.train_on_batch(x, g)
        notes.append(f"teacher: {tsrc}, {teacher.count_params() / 1e6:.2f} M parameters")
    notes.append(f"optimizer: {opt_src} (Adam, inverse-time decay); XLA jit_compile={jit}")
    return steps, notes


def time_steps(steps: Dict[str, callable], warmup: int, rounds: int, per_round: int):
    """name -> list of step seconds, interleaved round by round after `warmup` untimed steps."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    out: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------


def build_pipelines(size: int, batch: int, pool: int) -> tuple:
    """name -> infinite iterator of (x, y) batches; plus notes."""
    images, pts = face_pool(size, pool)
    out, notes = {}, []
    import configuration
    import data_util

    cfg = configuration.TrainConfig(input_size=size, batch_size=batch, val_fraction=0.0)
    data = data_util.TrainData(cfg, C.REPO_ROOT, data_util.PreparedSplit.in_memory("300w", images, pts))
    out["TrainData.dataset, no augmentation"] = iter(data.dataset(0, 10 ** 6))
    out["TrainData.dataset, online augmentation"] = iter(data.dataset(
        0, 10 ** 6, augment_fn=data_util.default_online_augment(data.info)))
    notes.append(f"pipelines: pool of {pool} images ({size}x{size} crops of the 7 real faces with "
                 f"pixel noise), in memory, batch {batch}")
    return out, notes


def time_pipeline(it, batch: int, warmup: int, chunks: int, per_chunk: int) -> List[float]:
    """Images/s of each chunk of `per_chunk` batches, after `warmup` batches."""
    for _ in range(warmup):
        next(it)
    rates = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        for _ in range(per_chunk):
            xb = next(it)[0]
        _ = xb.shape  # the batch exists (eager tensors are materialised)
        rates.append(per_chunk * batch / (time.perf_counter() - t0))
    return rates


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

STEP_LABELS = {"l2": "L2 student step", "kd-teachers": "KD step, teachers run on the batch",
               "kd-cached": "KD step, cached teacher predictions", "teacher": "teacher step (EfficientNet-B3)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, default=None, help="default 128 (--quick: 32)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (--quick: 4)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per configuration (default 20; --quick: 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    ap.add_argument("--width-multiplier", type=float, default=1.0)
    ap.add_argument("--jit-compile", action="store_true", help="XLA-compile the steps")
    ap.add_argument("--arch", choices=("paper", "tiny"), default=None,
                    help="paper: cnn_model's MobileNetV2 / EfficientNet-B3 (default); tiny: "
                         "two-convolution stand-ins (the --quick default: a smoke test only)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny and few repeats")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    size = args.input_size or (32 if args.quick else 128)
    batch = args.batch_size or (4 if args.quick else 32)
    n_steps = args.steps or (2 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    rounds = max(1, min(5, n_steps))
    per_round = max(1, n_steps // rounds)

    import tensorflow as tf  # noqa: F401

    arch = args.arch or ("tiny" if args.quick else "paper")
    C.phase(f"building the models ({arch})")
    steps, notes = build_steps(size, batch, jit=args.jit_compile, width=args.width_multiplier,
                               arch=arch)
    if arch == "tiny":
        notes.insert(0, "TINY stand-in networks (--arch tiny): a smoke test of the script, the "
                        "numbers say nothing about the project's models")
    C.phase(f"timing {len(steps)} steps x {rounds * per_round}")
    st = time_steps(steps, warmup, rounds, per_round)
    med = {k: C.median(v) for k, v in st.items()}
    ips = {k: batch / v for k, v in med.items()}

    pipes, pnotes = build_pipelines(size, batch, pool=max(8 * batch, 64))
    notes += pnotes
    C.phase(f"timing {len(pipes)} pipelines")
    p_chunks = 3 if args.quick else 7
    p_per = 2 if args.quick else max(10, 320 // batch)
    prates = {k: C.median(time_pipeline(it, batch, 2 if args.quick else 5, p_chunks, p_per))
              for k, it in pipes.items()}
    notes.append(f"steps: batch {batch}, {size}x{size}, median of {rounds * per_round} steps each "
                 f"({rounds} interleaved rounds) after {warmup} warm-up steps; pipelines: median "
                 f"of {p_chunks} chunks of {p_per} batches after a warm-up")

    rows = [[STEP_LABELS[k], C.fmt(med[k] * 1e3, 0), C.fmt(ips[k], 1),
             C.fmt(med[k] / med["l2"], 2) + "x" if "l2" in med else "-"] for k in steps]
    table1 = C.md_table(["training step", "ms/step", "images/s", "time vs L2 step"], rows)

    cons = ips.get("kd-cached", ips.get("l2"))
    cons_t = ips.get("kd-teachers", cons)
    rows2 = []
    for k, r in prates.items():
        online = "online" in k
        c = cons_t if online else cons
        what = "KD step, teachers run" if online else "KD step, cached"
        rows2.append([k, C.fmt(r, 0), f"{r / c:.1f}x ({what}: {c:.1f}/s)",
                      "MET" if r / c >= TARGET_PIPELINE else "MISSED"])
    table2 = C.md_table(["input pipeline alone", "images/s", "vs student step consumption",
                         f"target >= {TARGET_PIPELINE:g}x"], rows2)

    lines = []
    if "kd-cached" in med and "l2" in med:
        r = med["kd-cached"] / med["l2"]
        lines.append(f"- KD-cached / L2 step time = {r:.3f} (target <= {TARGET_KD_OVER_L2}): "
                     f"{'MET' if r <= TARGET_KD_OVER_L2 else 'MISSED'}")
    if "kd-teachers" in med and "l2" in med:
        lines.append(f"- KD with teachers run / L2 step time = {med['kd-teachers'] / med['l2']:.2f} "
                     f"(what caching saves)")
    for k, r in prates.items():
        if "online" not in k:
            lines.append(f"- pipeline / consumption ({k}) = {r / cons:.1f}x (target >= "
                         f"{TARGET_PIPELINE:g}x): {'MET' if r / cons >= TARGET_PIPELINE else 'MISSED'}")
    text = (C.header_block("Training throughput (CPU)", argv_used, notes) + "\n" + table1 + "\n\n"
            + table2 + "\n\nRatios (same run):\n" + "\n".join(lines) + "\n")
    print(text)
    C.write_results(text, C.results_path("training_speed", args.quick, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
