"""Wall time of one training epoch at the published scale, for a machine with a GPU.

300W-sized pool: 3148 training faces x 4 offline copies = 12,592 images at 224x224 (random pixels:
the cost of a step does not depend on the content), batch 70 (the paper's), fed by
the trainers' pipeline (data_util.TrainData.dataset) from memory. One configuration per process (the mixed-precision policy is
global): --mixed-precision and --jit-compile (XLA) as in TrainConfig; --all runs the four
combinations in subprocesses and prints one table. Each run trains --epochs epochs (default 2)
and reports the last one, so tracing and XLA compilation are left out.

    python bench/speed/gpu_epoch.py --all                       # on the GPU machine
    python bench/speed/gpu_epoch.py --what kd-cached --mixed-precision --jit-compile
    python bench/speed/gpu_epoch.py --quick --all               # CPU smoke test (tiny, meaningless)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import json
import os
import subprocess
import time

import _common as C

C.quiet_tf()

WHATS = ("l2", "kd-cached", "kd-teachers", "teacher")


def run_one(args) -> dict:
    import numpy as np
    import tensorflow as tf
    import keras

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    gpus = tf.config.list_physical_devices("GPU")
    size, batch, faces, copies = args.input_size, args.batch_size, args.faces, args.copies
    pool = faces * copies
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (pool, size, size, 3), dtype=np.uint8)
    pts = (rng.random((pool, 68, 2), dtype=np.float32) - 0.5) * 0.8
    arch = "tiny" if args.quick else "paper"
    extra = {}
    student, _ = C.build_student(68, size, 1.0, arch)
    opt = keras.optimizers.Adam(1e-3)
    if args.what == "teacher":
        model, _ = C.build_teacher(68, size, arch)
        model.compile(optimizer=opt, loss="mse", jit_compile=args.jit_compile)
    elif args.what == "l2":
        model = student
        model.compile(optimizer=opt, loss="mse", jit_compile=args.jit_compile)
    else:
        from student_trainer import Distiller
        tough, _ = C.build_teacher(68, size, arch)
        tolerant, _ = C.build_teacher(68, size, arch)
        if args.what == "kd-cached":   # the cache's content does not change the step's cost
            extra = {"tough": (pts + 0.01).reshape(pool, -1), "tolerant": (pts - 0.01).reshape(pool, -1)}
        model = Distiller(student, tough, tolerant, mode="kd")
        model.compile(optimizer=opt, jit_compile=args.jit_compile)
    import configuration
    import data_util
    cfg = configuration.TrainConfig(input_size=size, batch_size=batch, val_fraction=0.0)
    data = data_util.TrainData(cfg, C.REPO_ROOT, data_util.PreparedSplit.in_memory("300w", images, pts))
    ds = data.dataset(0, args.epochs, targets="landmarks" if args.what in ("l2", "teacher") else "dict",
                      extra=extra)   # the trainers' pipeline (data_util.TrainData.dataset)
    steps = data.steps_per_epoch()
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=0, callbacks=[EpochTimer()])
    return {"what": args.what, "mixed_precision": bool(args.mixed_precision),
            "xla": bool(args.jit_compile), "device": gpus[0].name if gpus else "CPU",
            "images": pool, "epoch_s": times[-1], "first_epoch_s": times[0],
            "images_per_s": pool / times[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=WHATS, default="kd-cached")
    ap.add_argument("--all", action="store_true",
                    help="every --what x {fp32, mixed} x {no XLA, XLA}, in subprocesses")
    ap.add_argument("--mixed-precision", action="store_true")
    ap.add_argument("--jit-compile", action="store_true")
    ap.add_argument("--input-size", type=int, default=None, help="default 224 (--quick: 32)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 70 (--quick: 8)")
    ap.add_argument("--faces", type=int, default=None, help="default 3148 (--quick: 16)")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON line (used by --all)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test with tiny stand-ins")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.input_size = args.input_size or (32 if args.quick else 224)
    args.batch_size = args.batch_size or (8 if args.quick else 70)
    args.faces = args.faces or (16 if args.quick else 3148)
    if not args.all:
        res = run_one(args)
        print(json.dumps(res) if args.json else res)
        return 0
    rows, failed = [], []
    common = [f"--input-size={args.input_size}", f"--batch-size={args.batch_size}",
              f"--faces={args.faces}", f"--copies={args.copies}", f"--epochs={args.epochs}"]
    common += ["--quick"] if args.quick else []
    whats = WHATS if args.what == "kd-cached" and not argv_has(argv, "--what") else (args.what,)
    for what in whats:
        for mp in (False, True):
            for xla in (False, True):
                cmd = [sys.executable, __file__, "--json", f"--what={what}"] + common
                cmd += (["--mixed-precision"] if mp else []) + (["--jit-compile"] if xla else [])
                C.phase(" ".join(cmd[2:]))
                p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
                line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
                if p.returncode or not line:
                    failed.append(f"{what} mp={mp} xla={xla}: {(p.stderr or p.stdout)[-300:]}")
                    continue
                r = json.loads(line[-1])
                rows.append([what, "mixed_float16" if mp else "float32", "on" if xla else "off",
                             r["device"], r["images"], C.fmt(r["epoch_s"], 1),
                             C.fmt(r["images_per_s"], 0), C.fmt(r["first_epoch_s"], 1)])
    notes = [f"pool {args.faces} faces x {args.copies} copies at {args.input_size}, batch "
             f"{args.batch_size}; epoch time = the last of {args.epochs} epochs (first one shown "
             f"for the tracing/XLA compile cost)"]
    if args.quick:
        notes.insert(0, "TINY stand-in networks on CPU (--quick): a smoke test only")
    notes += [f"FAILED {f}" for f in failed]
    table = C.md_table(["step", "precision", "XLA", "device", "images/epoch", "epoch s",
                        "images/s", "first epoch s"], rows)
    text = C.header_block("Training epoch at the published scale", sys.argv[1:], notes) + "\n" + table + "\n"
    print(text)
    C.write_results(text, C.results_path("gpu_epoch", args.quick, args.out))
    return 0 if rows else 1


def argv_has(argv, flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in (argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
