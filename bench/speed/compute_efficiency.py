"""How much of this machine's arithmetic the models use: FLOPs per image x measured images/s,
against a measured peak.

FLOPs per image = 2 x the multiply-adds of the model's convolutions and dense layers
(cnn_model.model_flops; the TF profiler on a concrete function if cnn_model is missing). A training
step is counted as 3 x the forward FLOPs (forward + backward for activations and weights), the usual
convention; the teachers' forward passes in a KD step with teachers are added (2 x teacher forward).
Peak = the best of a large float32 matrix product (N x N, N = --matmul-size) timed with numpy and
with TensorFlow in the same run: a *measured matmul peak* of this machine with these libraries,
not the CPU's datasheet number.

    python bench/speed/compute_efficiency.py            # inference at 224, training at 128, batch 32
    python bench/speed/compute_efficiency.py --quick
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import time

import _common as C

C.quiet_tf()

import numpy as np  # noqa: E402


def matmul_peak(n: int, repeats: int) -> dict:
    """{"numpy": GFLOP/s, "tensorflow": GFLOP/s}: median over repeats of 2 n^3 / time."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = {}
    ts = []
    a @ b
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    out["numpy"] = 2 * n ** 3 / C.median(ts) / 1e9
    ta, tb = tf.constant(a), tf.constant(b)
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    mm(ta, tb).numpy()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(ta, tb).numpy()
        ts.append(time.perf_counter() - t0)
    out["tensorflow"] = 2 * n ** 3 / C.median(ts) / 1e9
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inference-size", type=int, default=None, help="default 224 (--quick: 32)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="training input size, default 128 (--quick: 32)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch, default 32")
    ap.add_argument("--steps", type=int, default=None, help="timed steps / calls (default 15)")
    ap.add_argument("--matmul-size", type=int, default=None, help="default 2048 (--quick: 256)")
    ap.add_argument("--threads", type=int, default=C.cpu_count())
    ap.add_argument("--arch", choices=("paper", "tiny"), default=None,
                    help="paper: the project's networks (default); tiny: stand-ins (--quick)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny and few repeats")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    q = args.quick
    arch = args.arch or ("tiny" if q else "paper")
    isz = args.inference_size or (32 if q else 224)
    tsz = args.input_size or (32 if q else 128)
    batch = args.batch_size or (4 if q else 32)
    n_steps = args.steps or (2 if q else 15)
    mm_n = args.matmul_size or (256 if q else 2048)

    import tensorflow as tf

    import training_speed as TS
    from inference_speed import TFLiteRunner, convert_tflite

    notes = []
    if arch == "tiny":
        notes.append("TINY stand-in networks (--arch tiny): a smoke test of the script, the "
                     "numbers say nothing about the project's models")
    C.phase("measuring the matmul peak")
    peak0 = matmul_peak(mm_n, 3 if q else 10)

    # -- models and their FLOPs -----------------------------------------------------------------
    C.phase("building the models")
    student_inf, s_src = C.build_student(68, isz, 1.0, arch)
    student_tr, _ = C.build_student(68, tsz, 1.0, arch)
    teacher_tr, t_src = C.build_teacher(68, tsz, arch)
    macs_si, flops_src = C.model_macs(student_inf)
    macs_st, _ = C.model_macs(student_tr)
    macs_tt, _ = C.model_macs(teacher_tr)
    notes.append(f"models: {s_src}, {t_src}; FLOPs = 2 x multiply-adds from {flops_src}")
    if not q and arch == "paper":
        try:
            prof = C.profiler_flops(student_inf)
            notes.append(f"cross-check: the TF profiler counts {prof / 1e9:.3f} GFLOP for the "
                         f"student at {isz} (all float ops incl. batch norm and activations) vs "
                         f"{2 * macs_si / 1e9:.3f} GFLOP from multiply-adds")
        except Exception as err:  # noqa: BLE001 - a cross-check only
            notes.append(f"TF profiler cross-check failed: {str(err)[:100]}")

    # -- inference ------------------------------------------------------------------------------
    C.phase("timing student inference")
    faces = C.load_real_faces()
    crops = [(C.crop_square(f.image, C.square_box(f.box_xyxy, 0.25), isz).astype(np.float32)
              / 255.0)[None] for f in faces]
    tfl = TFLiteRunner(convert_tflite(student_inf, "tflite-fp32", None), args.threads)
    xb = tf.constant(np.concatenate([crops[i % len(crops)] for i in range(batch)]))
    fwd = tf.function(lambda x: student_inf(x, training=False))
    inf_fns = {"tflite": lambda i: tfl(crops[i % len(crops)]),
               "batched": lambda i: fwd(xb).numpy()}
    t = C.interleaved_latency(inf_fns, 2 if q else 5, 3 if q else 5, max(1, n_steps // 3))
    ips_tfl = 1e3 / C.median(t["tflite"])
    ips_bat = batch * 1e3 / C.median(t["batched"])

    # -- training -------------------------------------------------------------------------------
    C.phase("timing training steps")
    steps, tnotes = TS.build_steps(tsz, batch, which=("l2", "kd-cached", "kd-teachers", "teacher"),
                                   arch=arch)
    rounds = max(1, min(5, n_steps))
    st = TS.time_steps(steps, 1 if q else 2, rounds, max(1, n_steps // rounds))
    ips = {k: batch / C.median(v) for k, v in st.items()}
    peak1 = matmul_peak(mm_n, 3 if q else 10)
    peak = max(list(peak0.values()) + list(peak1.values()))
    notes.append(f"measured matmul peak: {peak:.1f} GFLOP/s (float32 {mm_n}x{mm_n} products; "
                 f"numpy {peak0['numpy']:.1f} / {peak1['numpy']:.1f}, TensorFlow "
                 f"{peak0['tensorflow']:.1f} / {peak1['tensorflow']:.1f} GFLOP/s before / after "
                 f"the model timings; the best is the reference)")
    notes.append(f"training: batch {batch} at {tsz}x{tsz}, median of {rounds * max(1, n_steps // rounds)} "
                 f"interleaved steps; inference at {isz}x{isz}: TFLite float32 batch 1 "
                 f"({args.threads} threads, XNNPACK) and tf.function batch {batch}")

    f_si, f_st, f_tt = 2 * macs_si, 2 * macs_st, 2 * macs_tt
    rows_spec = [
        ("student inference, TFLite fp32, batch 1", isz, f_si, ips_tfl),
        (f"student inference, tf.function, batch {batch}", isz, f_si, ips_bat),
        ("student training, L2 step", tsz, 3 * f_st, ips["l2"]),
        ("student training, KD step, cached teachers", tsz, 3 * f_st, ips["kd-cached"]),
        ("student training, KD step, teachers run", tsz, 3 * f_st + 2 * f_tt, ips["kd-teachers"]),
        ("teacher training (EfficientNet-B3)" if arch == "paper" else "teacher training",
         tsz, 3 * f_tt, ips["teacher"]),
    ]
    rows = []
    for name, size, flops, r in rows_spec:
        achieved = flops * r / 1e9
        rows.append([name, size, f"{flops / 1e9:.4g}", C.fmt(r, 1), C.fmt(achieved, 1),
                     C.fmt(100 * achieved / peak, 1) + " %"])
    table = C.md_table(["workload", "input", "GFLOP / image", "images/s", "achieved GFLOP/s",
                        "% of measured matmul peak"], rows)
    text = (C.header_block("Compute efficiency (CPU)", argv_used, notes + tnotes) + "\n" + table
            + "\n")
    print(text)
    C.write_results(text, C.results_path("compute_efficiency", q, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
