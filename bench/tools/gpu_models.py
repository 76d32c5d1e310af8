"""Teachers and students for the synthetic 300W benchmark in one GPU lease (issue #11): the repo's
own data pipeline and models, trained with the Keras JAX backend, for a machine without TensorFlow.

One call renders a larger synthetic 300W set (seed 100000: none of the demo's training or test
faces), prepares it at 64 px with the published offline augmentation (3 copies), fits the ASM soft
landmarks (90% variance), then trains, each for its share of the time budget: the Tough teacher
(EfficientNet-B3 on the ground truth), the Tolerant teacher (on the soft landmarks), the KD student
(`kd_loss.Distiller`, KD-Loss with both teachers' cached predictions) and the L2 student
(MobileNetV2). Adam with a cosine learning rate over each model's *time* share (the number of steps
a GPU manages is not known in advance; the schedule follows the wall clock from the end of the first,
compiling, chunk); the teachers without dropout (models/README.md, departures). At the end each
model's BatchNorm statistics are re-estimated on the pool, as the trainers do (kept if they score
better on validation). Every model is
written without optimizer state with float16-stored weights; files over 15 MiB are split into
`.partN` pieces (the device tool returns files of at most 16 MiB). run.json records per model the
images seen, seconds, the validation NME curve (5% of the faces held out) and the validation NME
before and after the re-estimation.

    # on the GPU machine (Keras carried as wheels: bench/tools/README.md)
    KERAS_BACKEND=jax python bench/tools/gpu_models.py --faces 12000 --minutes 9 --out $OUT
    # or go on from teachers trained elsewhere (the shipped ones, a CPU run's), at a lower rate
    KERAS_BACKEND=jax python bench/tools/gpu_models.py --faces 12000 --minutes 9 --out $OUT \
        --teacher-weights models/teachers/300w_tough.keras models/teachers/300w_tolerant.keras --teacher-learning-rate 5e-4
    # back here: join the pieces, then score on the demo's test set
    cat 300w_tough.keras.part* > 300w_tough.keras
    python test.py --dataset 300w --model 300w_tough.keras --prepared-dir data/prepared/300w-synthetic-64 --mode teacher

    # CPU smoke test (tiny and meaningless; also under TensorFlow)
    KERAS_BACKEND=jax python bench/tools/gpu_models.py --quick --out /tmp/gpu_models_quick
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import json
import math
import os
import platform
import shutil
import time

import numpy as np


from runtime import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import asm_soft_landmarks as asm  # noqa: E402
import configuration as C  # noqa: E402
import data_util as du  # noqa: E402
import synthetic_faces as sf  # noqa: E402
from _common import nme_io_68  # noqa: E402  (inter-ocular NME, a fraction)

INFO = C.dataset_info("300w")
MODELS = ("tough", "tolerant", "kd", "l2")
PART_BYTES = 15 * 1024 * 1024          # the device tool returns files of at most 16 MiB
CHUNK_IMAGES = 16384                   # at most this many crops copied out per fit call (0.8 GB at 64 px)
RECAL_CROPS = 1024                     # pool crops for the BatchNorm re-estimation (the trainers' default)


def make_data(args, work: Path, log) -> tuple:
    """Render, prepare, augment, fit the ASM; the training pool and validation faces as arrays."""
    t0 = time.time()
    root = work / "synthetic"
    sf.generate("300w", root, args.faces, 10, seed=args.seed_faces, workers=args.workers, style=args.style)
    log("render", time.time() - t0, faces=args.faces)
    t0 = time.time()
    prepared = work / f"prepared-{args.input_size}"
    du.prepare(C.PrepareConfig(dataset="300w", root=str(root), input_size=args.input_size,
                               out_dir=str(prepared)), progress=False)
    du.augment_prepared(prepared, copies=args.aug_copies, progress=False)
    asm.make_soft_landmarks(prepared, 0.90, dataset="300w", verbose=False)
    log("prepare, augment, ASM", time.time() - t0)
    cfg = C.TrainConfig(dataset="300w", input_size=args.input_size, batch_size=args.batch_size,
                        seed=args.seed)
    data = du.TrainData(cfg, prepared, du.load_prepared(prepared, "train"),
                        du.load_prepared(prepared, "train_aug") if args.aug_copies else None)
    pool = np.arange(data.size)
    x = data.pool_images(pool).astype(np.float32) / np.float32(255.0)
    n2 = 2 * INFO.num_points
    hard = data.pool_landmarks(pool).reshape(len(pool), n2).astype(np.float32)
    soft = data.pool_landmarks(pool, soft=True).reshape(len(pool), n2).astype(np.float32)
    val_x = data.val_images().astype(np.float32) / np.float32(255.0)
    val_gt = data.val_landmarks()
    return x, hard, soft, val_x, val_gt


def val_nme(net, val_x, val_gt) -> float:
    """Mean inter-ocular NME (%) of `net` in inference mode on the validation faces."""
    pred = net.predict(val_x, batch_size=512, verbose=0).reshape(len(val_gt), -1, 2)
    return 100.0 * float(np.mean(nme_io_68(pred, val_gt)))


def _recal_rows(x, args) -> np.ndarray:
    return np.random.default_rng([int(args.seed), 7919]).choice(len(x), min(RECAL_CROPS, len(x)), replace=False)


def freeze_batchnorm(model, x, args, val_x, val_gt) -> bool:
    """--freeze-batchnorm-share: as the trainers' --freeze-batchnorm-epochs, the statistics
    re-estimated on the pool unless the network's own validate better (`reestimate`: a
    --teacher-weights teacher trained frozen depends on the statistics it was frozen at), then every
    BatchNorm layer frozen (cnn_model.set_batchnorm_frozen) and `model` (a network or a Distiller)
    recompiled with its optimizer's state carried over."""
    import keras

    import cnn_model

    net = model.student if hasattr(model, "student") else model
    reestimate(net, x, args, val_x, val_gt)
    if not cnn_model.set_batchnorm_frozen(net, True):
        return False
    old = model.optimizer
    new = keras.optimizers.Adam(float(np.asarray(old.learning_rate)))
    cnn_model.carry_optimizer_state(old, new, model.trainable_variables)
    model.compile(optimizer=new, loss=getattr(model, "loss", None))
    return True


def reestimate(net, x, args, val_x, val_gt) -> dict:
    """Precise BatchNorm as the trainers do it at each epoch end: the statistics re-estimated on
    RECAL_CROPS crops of the pool in random order, in batches of the training size
    (cnn_model.recalibrate_batchnorm); the validation NME before and after. The statistics that
    score better on validation are kept (a network a few steps from scratch, as in --quick, can do
    worse re-estimated)."""
    import cnn_model

    saved = net.get_weights()
    before = val_nme(net, val_x, val_gt)
    cnn_model.recalibrate_batchnorm(net, x[_recal_rows(x, args)], int(args.batch_size))
    after = val_nme(net, val_x, val_gt)
    if not after <= before:
        net.set_weights(saved)
    return {"val_nme_as_trained": before, "val_nme_reestimated": after,
            "kept": "re-estimated" if after <= before else "as trained"}


def train_for(model, x, y, seconds: float, args, val_x, val_gt, label: str, log) -> dict:
    """Fit `model` (compiled by the caller) for about `seconds` of wall time in chunks of steps;
    before each chunk the learning rate is set on a cosine over the time left after the first chunk
    (which includes the compilation). y: an array or a dict of arrays aligned with x."""
    import keras

    rng = np.random.default_rng(args.seed)
    batch = int(args.batch_size)
    n = len(x) - len(x) % batch                 # whole batches only: one compiled step shape
    t_start = time.time()
    deadline = t_start + seconds
    t_sched = None
    steps = 5 if args.quick else 20
    images, pos, order = 0, 0, rng.permutation(len(x))[:n]
    history, next_val = [], 0.0
    freeze_from, frozen_at = 1.0 - float(getattr(args, "freeze_batchnorm_share", 0.0) or 0.0), None
    while time.time() < deadline:
        frac = 0.0 if t_sched is None else (time.time() - t_sched) / max(deadline - t_sched, 1e-9)
        if frozen_at is None and freeze_from < 1.0 and frac >= freeze_from:
            frozen_at = images
            if freeze_batchnorm(model, x, args, val_x, val_gt):
                print(f"  {label}: BatchNorm frozen after {images} images", flush=True)
        model.optimizer.learning_rate = float(args.learning_rate * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        if pos + steps * batch > n:             # a new epoch: a new order
            order, pos = rng.permutation(len(x))[:n], 0
        idx = np.sort(order[pos:pos + steps * batch])
        pos += len(idx)
        yb = {k: v[idx] for k, v in y.items()} if isinstance(y, dict) else y[idx]
        t_chunk = time.time()
        model.fit(x[idx], yb, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        chunk_s = time.time() - t_chunk
        images += len(idx)
        if t_sched is None:
            t_sched = time.time()
            log(f"{label}: first chunk (compilation included)", chunk_s, steps=steps)
        else:                                   # about 50 chunks in the time left
            rate = len(idx) / max(chunk_s, 1e-6)
            steps = int(np.clip(rate * (deadline - t_sched) / 50 / batch, 5, 5000))
            steps = min(steps, n // batch, CHUNK_IMAGES // batch)
        if frac >= next_val or time.time() >= deadline:
            nme = val_nme(model.student if hasattr(model, "student") else model, val_x, val_gt)
            history.append({"images": images, "seconds": round(time.time() - t_start, 1),
                            "lr": float(np.asarray(model.optimizer.learning_rate)), "val_nme": nme})
            print(f"  {label}: {images} images, {time.time() - t_start:.0f} s, val NME {nme:.2f}%",
                  flush=True)
            next_val = frac + 0.1
    train_s = time.time() - t_start
    return {"images": images, "seconds": round(train_s, 1), "epochs": round(images / len(x), 2),
            "images_per_s": round(images / max(train_s, 1e-9), 1), "history": history,
            "final_val_nme": history[-1]["val_nme"] if history else None,
            "batchnorm_frozen_at_images": frozen_at,
            "backend": keras.backend.backend()}


def save_split(model, path: Path, build) -> list:
    """A fresh (uncompiled) copy of `model`'s weights saved with float16-stored weights; pieces of
    at most PART_BYTES when larger."""
    import cnn_model

    clean = build()
    clean.set_weights(model.get_weights())
    cnn_model.save_model(clean, path, float16_weights=True)
    if path.stat().st_size <= PART_BYTES:
        return [path.name]
    data, names = path.read_bytes(), []
    for k in range(0, len(data), PART_BYTES):
        part = path.with_name(f"{path.name}.part{k // PART_BYTES}")
        part.write_bytes(data[k:k + PART_BYTES])
        names.append(part.name)
    path.unlink()
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=12000, help="synthetic training faces to render")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-time budget of the whole run")
    p.add_argument("--shares", type=float, nargs=4, default=(0.32, 0.32, 0.18, 0.18),
                   metavar=("TOUGH", "TOLERANT", "KD", "L2"),
                   help="shares of the training time of the Tough teacher, the Tolerant teacher, "
                        "the KD student and the L2 student")
    p.add_argument("--input-size", type=int, default=64, help="crop side in pixels")
    p.add_argument("--batch-size", type=int, default=128, help="faces per training step")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate at the start")
    p.add_argument("--teacher-stochastic-depth", type=float, default=C.TEACHER_STOCHASTIC_DEPTH,
                   help="EfficientNet's stochastic depth in the teachers (Keras' default 0.2)")
    p.add_argument("--teacher-weights", nargs=2, default=None, metavar=("TOUGH", "TOLERANT"),
                   help="start the two teachers from these .keras teachers (e.g. the shipped ones, or a "
                        "CPU run's) instead of from scratch")
    p.add_argument("--teacher-learning-rate", type=float, default=None,
                   help="the teachers' Adam learning rate at the start (default: --learning-rate; "
                        "lower for --teacher-weights, e.g. 5e-4)")
    p.add_argument("--freeze-batchnorm-share", type=float, default=0.0,
                   help="last share of each model's training time with BatchNorm frozen (statistics "
                        "re-estimated first), in [0, 1]; 0 never (the trainers' --freeze-batchnorm-epochs)")
    p.add_argument("--aug-copies", type=int, default=3, help="offline augmented copies per face (published: 3)")
    p.add_argument("--seed-faces", type=int, default=100000,
                   help="seed of the rendered faces (100000: disjoint from the demo's faces 0-3299)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffles and initial weights")
    p.add_argument("--style", default="default", choices=sf.STYLES,
                   help="renderer style: " + " or ".join(sf.STYLES) + " (domain randomisation for photographs, "
                        "about 10x slower to render; issue #16)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="rendering processes")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bfloat16 compute with float32 weights (GPUs; the output layers stay float32)")
    p.add_argument("--work", default=None, help="folder for the rendered and prepared data "
                                                "(default: a temporary folder, removed at the end)")
    p.add_argument("--out", required=True, help="where the models and run.json are written")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 24 faces, 32 px, 2 minutes (meaningless numbers)")
    args = p.parse_args(argv)
    if not 0.0 <= args.freeze_batchnorm_share <= 1.0:
        p.error(f"--freeze-batchnorm-share {args.freeze_batchnorm_share}: must lie in [0, 1]")
    if args.quick:
        args.faces, args.input_size, args.batch_size, args.aug_copies = 24, 32, 8, 1
        args.minutes = min(args.minutes, 2.0)
    t_run = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tempfile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_models-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = []

    def log(stage, seconds, **extra):
        stages.append({"stage": stage, "seconds": round(seconds, 1), **extra})
        print(f"{stage}: {seconds:.1f} s {extra or ''}", flush=True)

    x, hard, soft, val_x, val_gt = make_data(args, work, log)
    print(f"pool {len(x)} crops ({args.faces} faces, {args.aug_copies} copies), {len(val_x)} validation faces",
          flush=True)

    import keras

    import cnn_model
    from kd_loss import Distiller

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    n_pts, size = INFO.num_points, args.input_size

    def teacher(weights=None):
        return cnn_model.build_teacher(n_pts, size, dropout=0.0, weights=weights,
                                       stochastic_depth=args.teacher_stochastic_depth)

    def student():
        return cnn_model.build_student(n_pts, size)

    reserve = 20.0 if args.quick else 60.0         # teacher predictions, saving
    budget = args.minutes * 60 - (time.time() - t_run) - reserve
    if budget <= 0:
        raise SystemExit(f"--minutes {args.minutes}: the data took {time.time() - t_run:.0f} s and left "
                         f"no training time; give more minutes or fewer --faces")
    shares = dict(zip(MODELS, np.asarray(args.shares) / np.sum(args.shares)))
    runs, files, nets = {}, {}, {}
    starts = dict(zip(("tough", "tolerant"), args.teacher_weights or (None, None)))
    teacher_args = argparse.Namespace(**{**vars(args), "learning_rate": args.teacher_learning_rate
                                         or args.learning_rate})
    for kind, targets in (("tough", hard), ("tolerant", soft)):
        keras.utils.set_random_seed(args.seed)
        net = teacher(starts[kind])
        net.compile(optimizer=keras.optimizers.Adam(teacher_args.learning_rate), loss="mse")
        runs[kind] = train_for(net, x, targets, budget * shares[kind], teacher_args, val_x, val_gt, kind, log)
        runs[kind]["started_from"] = starts[kind]
        runs[kind].update(reestimate(net, x, args, val_x, val_gt))   # before it predicts the pool
        nets[kind] = net
        files[kind] = save_split(net, out / f"300w_{kind}.keras", teacher)
    t0 = time.time()
    cached = {k: nets[k].predict(x, batch_size=512, verbose=0).astype(np.float32) for k in ("tough", "tolerant")}
    log("teacher predictions on the pool", time.time() - t0)
    for mode in ("kd", "l2"):
        keras.utils.set_random_seed(args.seed)
        net = student()
        model = Distiller(net, nets["tough"], nets["tolerant"], loss_config="code", mode=mode)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        runs[mode] = train_for(model, x, {"landmarks": hard, **cached}, budget * shares[mode], args,
                               val_x, val_gt, f"{mode} student", log)
        runs[mode].update(reestimate(net, x, args, val_x, val_gt))
        files[mode] = save_split(net, out / f"300w_{mode}.keras", student)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    device = None
    try:
        import jax

        device = str(jax.devices()[0].device_kind)
    except Exception:                           # noqa: BLE001  (TensorFlow backend, no JAX)
        device = platform.processor() or platform.machine()
    run = {"command": "python " + " ".join([Path(__file__).name, *(argv or sys.argv[1:])]),
           "device": device, "backend": keras.backend.backend(), "keras": keras.__version__,
           "faces": args.faces, "style": args.style, "pool": int(len(x)), "validation_faces": int(len(val_x)),
           "input_size": size, "batch_size": args.batch_size, "mixed_precision": args.mixed_precision,
           "stages": stages, "models": runs, "files": files,
           "wall_s": round(time.time() - t_run, 1)}
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in runs.items()}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
