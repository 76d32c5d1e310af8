"""Where CPU training time goes, and what in TensorFlow's settings changes it (issue 15, item 3).

Two parts, both on the project's models and optimizer (cnn_model.build_student / build_teacher,
training.make_optimizer, loss MSE: the L2 student's and the teacher's training step), one constant
batch of real face crops (no input cost):

1. Profile: TensorFlow's profiler (tf.profiler.experimental) traces a few training steps; the
   trace (XSpace protobuf) is read here and every executed op's wall time is summed by op type and
   by what it belongs to (convolutions, depthwise convolutions, batch norm, optimizer, ... forward
   and gradient). Shares are of the summed op time (two inter-op threads can overlap, so the sum
   may exceed the step's wall time).
2. Settings, side by side in one run: each TensorFlow process setting (oneDNN on/off via
   TF_ENABLE_ONEDNN_OPTS, intra-/inter-op threads, bfloat16 precision: Keras's mixed_bfloat16
   policy, TensorFlow's auto_mixed_precision_onednn_bfloat16 graph rewrite or oneDNN's
   TF_SET_ONEDNN_FPMATH_MODE=BF16) is a worker process started once; the steps that differ inside a
   process (batch size, steps_per_execution, data layout, fused batch norm) are separate compiled
   models in the worker. The parent runs the workers' steps round by round, interleaved, so a change
   of machine load hits every configuration alike; images/s = batch / median step time (the minimum
   is reported too). Each step is Keras's own compiled train function (what fit() calls), so
   steps_per_execution > 1 runs that many steps in one call. "student KD (demo)" is the demo's
   student step (student_trainer.Distiller, cached teacher predictions, cosine-schedule Adam);
   "fused BN" steps are traced inside cnn_model.fused_batchnorm() (what training.fit_model does).

    python bench/speed/training_profile.py --force            # 64 px, batch 32: profile + settings
    python bench/speed/training_profile.py --quick            # smoke test (tiny stand-in networks)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import collections
import glob
import json
import os
import subprocess
import tempfile
import time

import _common as C

# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------

# Process settings: name -> (environment, intra-op threads, inter-op threads, precision); threads
# 0 = TF's default; precision None (float32), a Keras dtype policy ("mixed_bfloat16") or
# "grappler bfloat16" (TensorFlow's graph rewrite auto_mixed_precision_onednn_bfloat16).
WORKERS = {
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), default threads": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, 0, 0, None),
    "oneDNN on (TF_ENABLE_ONEDNN_OPTS=1), default threads": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 0, 0, None),
    "oneDNN on, intra-op 1 / inter-op 1": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 1, 1, None),
    "oneDNN on, mixed_bfloat16": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 0, 0, "mixed_bfloat16"),
    "oneDNN on, grappler auto_mixed_precision_onednn_bfloat16":
        ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 0, 0, "grappler bfloat16"),
    "oneDNN on, TF_SET_ONEDNN_FPMATH_MODE=BF16":
        ({"TF_ENABLE_ONEDNN_OPTS": "1", "TF_SET_ONEDNN_FPMATH_MODE": "BF16"}, 0, 0, None),
    "oneDNN on, TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=1":
        ({"TF_ENABLE_ONEDNN_OPTS": "1", "TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}, 0, 0, None),
}
# In-process steps: name -> (model, batch multiplier of --batch-size, steps_per_execution, layout,
# fused batch norm). Models: "student" (L2: MSE, the published optimizer), "student-kd" (the demo's
# KD student step: student_trainer.Distiller, KD-Loss, cached teacher predictions in the batch,
# Adam with the cosine schedule of configuration.PRESETS["quick"]), "teacher" (MSE). Fused batch
# norm: the model is traced inside cnn_model.fused_batchnorm() (TensorFlow's fused kernel).
STEPS = {
    "student L2": ("student", 1, 1, "channels_last", False),
    "student L2, fused BN": ("student", 1, 1, "channels_last", True),
    "student L2, batch x2": ("student", 2, 1, "channels_last", False),
    "student L2, steps_per_execution 8": ("student", 1, 8, "channels_last", False),
    "student L2, channels_first": ("student", 1, 1, "channels_first", False),
    "student KD (demo)": ("student-kd", 1, 1, "channels_last", False),
    "student KD (demo), fused BN": ("student-kd", 1, 1, "channels_last", True),
    "student KD (demo), fused BN, batch x2": ("student-kd", 2, 1, "channels_last", True),
    "student KD (demo), fused BN, steps_per_execution 4": ("student-kd", 1, 4, "channels_last", True),
    "teacher": ("teacher", 1, 1, "channels_last", False),
    "teacher, fused BN": ("teacher", 1, 1, "channels_last", True),
    "teacher, batch x2": ("teacher", 2, 1, "channels_last", False),
}
# The reference of each model kind ("vs the plain step" column).
PLAIN = {"student": "student L2", "student-kd": "student KD (demo)", "teacher": "teacher"}
PROFILED = ("student L2", "teacher", "student KD (demo)", "student KD (demo), fused BN")
DEFAULT_STEPS = ("student L2", "student L2, batch x2", "student L2, steps_per_execution 8",
                 "student L2, channels_first", "teacher", "teacher, batch x2")


# ----------------------------------------------------------------------------------------------
# Worker side (one TensorFlow process per WORKERS entry)
# ----------------------------------------------------------------------------------------------


class Step:
    """One compiled model and its Keras train function over a constant batch."""

    def __init__(self, name, kind, batch, spe, layout, size, arch, fused=False):
        import numpy as np
        import tensorflow as tf

        import cnn_model
        import configuration
        import training

        self.name, self.batch, self.spe = name, batch, spe
        rng = np.random.default_rng(0)
        y = rng.random((batch, 136), dtype=np.float32) - 0.5
        with cnn_model.fused_batchnorm(fused, only_if_faster=False) as self.fused:
            if fused and not self.fused:
                raise RuntimeError("fused batch norm is off (not the TensorFlow backend, or "
                                   f"{cnn_model.FUSED_BN_ENV}=0)")
            if layout == "channels_first":
                self.model, self.source = channels_first_student(size, arch)
            elif kind in ("student", "student-kd"):
                self.model, self.source = C.build_student(68, size, 1.0, arch)
            else:
                self.model, self.source = C.build_teacher(68, size, arch)
            if kind == "student-kd":
                from student_trainer import Distiller  # noqa: PLC0415

                # the teachers are never run (their predictions come in the batch)
                tough, tolerant = (C.tiny_model(68, size, f"unused_{t}") for t in ("a", "b"))
                student = self.model
                self.model = Distiller(student, tough, tolerant, mode="kd")
                self.source = f"student_trainer.Distiller({self.source}), cached predictions"
                demo = configuration.TrainConfig(**configuration.preset_settings("quick", "student"))
                optimizer = training.make_optimizer(demo, steps_per_epoch=100)
                self.model.compile(optimizer=optimizer, steps_per_execution=spe)
                y = {"landmarks": y, "tough": y + rng.normal(0, 0.02, y.shape).astype(np.float32),
                     "tolerant": y + rng.normal(0, 0.03, y.shape).astype(np.float32)}
            else:
                self.model.compile(optimizer=training.make_optimizer(configuration.TrainConfig()),
                                   loss="mse", steps_per_execution=spe)
            shape = self.model.input_shape[1:] if kind != "student-kd" else student.input_shape[1:]
            x = rng.random((batch, *shape), dtype=np.float32)
            data = tf.data.Dataset.from_tensors((x, y)).repeat()
            self.iterator = iter(data)
            self.model.make_train_function()
            self.run()          # traced here, inside fused_batchnorm() when asked

    def run(self):
        """One call of the train function (spe steps); returns after the step has finished."""
        logs = self.model.train_function(self.iterator)
        float(logs.get_value()["loss"] if hasattr(logs, "get_value") else logs["loss"])


def channels_first_student(size: int, arch: str):
    """The student's layers (MobileNetV2 + pooling + Dense) built in NCHW: input (3, S, S).
    cnn_model.build_student takes (S, S, 3) images, so the layout test builds its own copy."""
    import keras
    from keras import layers

    if arch == "tiny":
        raise ValueError("no channels_first stand-in for --arch tiny")
    keras.config.set_image_data_format("channels_first")
    try:
        inp = keras.Input((3, size, size))
        x = layers.Rescaling(2.0, offset=-1.0)(inp)
        x = keras.applications.MobileNetV2(include_top=False, weights=None,
                                           input_shape=(3, size, size))(x)
        x = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, layers.Dense(136)(x))
    finally:
        keras.config.set_image_data_format("channels_last")
    return model, "MobileNetV2 student layers in channels_first (NCHW)"


def profile_ops(step: Step, calls: int, log_dir: Path) -> dict:
    """{op type: ms, ...} and {category: ms} summed over `calls` traced calls of `step`."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(log_dir))
    for _ in range(calls):
        step.run()
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(str(log_dir / "**" / "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    by_type, by_cat = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):    # the executor's (inter-op) threads
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if "::" in name or ":" not in name:      # executor/thread-pool bookkeeping
                    continue
                op_name, op_type = name.rsplit(":", 1)
                if op_type in ("PartitionedCall", "StatefulPartitionedCall", "While", "If"):
                    continue                               # containers: their ops are counted
                ms = ev.duration_ps / 1e9 / calls
                by_type[op_type] += ms
                by_cat[category(op_name, op_type)] += ms
    return {"by_type": dict(by_type), "by_category": dict(by_cat)}


def category(op_name: str, op_type: str) -> str:
    """What an op belongs to, from its name scope and type (Keras layer names of MobileNetV2 and
    EfficientNet-B3: *_bn / *_BN batch norm, *depthwise*, *_relu / activation)."""
    low, t = op_name.lower(), op_type.lower()
    # names may sit under the train function's call op (StatefulPartitionedCall/...)
    grad = "gradient" if "gradient_tape/" in low or "backprop" in t or "grad" in t else "forward"
    if low.startswith("adam/") or "/adam/" in low:
        return "optimizer (Adam update, learning-rate schedule)"
    if "depthwise" in t:
        return f"depthwise convolution, {grad}"
    if "conv2d" in t:
        return f"convolution (1x1 and 3x3), {grad}"
    if "matmul" in t:
        return f"dense layer, {grad}"
    if "_bn" in low or "bn_" in low:
        fused = "fused kernel" if "fusedbatchnorm" in t else "Keras 3: unfused element-wise ops"
        return f"batch norm ({fused}), {grad}"
    if "relu" in low or "activation" in low or "sigmoid" in t or "swish" in low:
        return f"activations, {grad}"
    if "se_" in low or "_se" in low:
        return f"squeeze-excitation (EfficientNet), {grad}"
    if "pad" in low:
        return f"padding, {grad}"
    if "compile_loss" in low:
        return "loss"
    return f"other ({grad})"


def worker_main(spec: dict) -> int:
    """Serve the parent: one JSON command per stdin line, one JSON answer per stdout line."""
    import keras
    import tensorflow as tf

    if spec.get("precision") == "grappler bfloat16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    elif spec.get("precision"):
        keras.mixed_precision.set_global_policy(spec["precision"])
    if spec["intra"]:
        tf.config.threading.set_intra_op_parallelism_threads(spec["intra"])
    if spec["inter"]:
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter"])
    steps, errors = {}, {}
    for name in spec["steps"]:
        kind, mult, spe, layout, fused = STEPS[name]
        try:
            steps[name] = Step(name, kind, spec["batch"] * mult, spe, layout, spec["size"],
                               spec["arch"], fused)
            for _ in range(spec["warmup"]):
                steps[name].run()
        except Exception as err:  # noqa: BLE001 - e.g. a layout this CPU build cannot run
            steps.pop(name, None)
            errors[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}"
    out = sys.stdout
    out.write(json.dumps({"ready": sorted(steps), "errors": errors, "tf": tf.__version__,
                          "sources": {k: s.source for k, s in steps.items()}}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["do"] == "quit":
            break
        step = steps[cmd["step"]]
        if cmd["do"] == "time":
            times = []
            for _ in range(cmd["calls"]):
                t0 = time.perf_counter()
                step.run()
                times.append((time.perf_counter() - t0) / step.spe)
            out.write(json.dumps({"seconds_per_step": times}) + "\n")
        elif cmd["do"] == "profile":
            out.write(json.dumps(profile_ops(step, cmd["calls"], Path(cmd["dir"]))) + "\n")
        out.flush()
    sys.stderr.flush()
    os._exit(0)     # skip TensorFlow's teardown of every traced model (minutes on a loaded machine)


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, name, env, intra, inter, precision, spec):
        self.name = name
        full_env = dict(os.environ, **env)
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        spec = dict(spec, intra=intra, inter=inter, precision=precision)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                      json.dumps(spec)], env=full_env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = self._read()
        self.steps, self.errors, self.sources = hello["ready"], hello["errors"], hello["sources"]
        self.tf_version = hello["tf"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker '{self.name}' stopped (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        """Ask the worker to quit; a worker that does not exit within 5 minutes is killed."""
        try:
            self.proc.stdin.write(json.dumps({"do": "quit"}) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def profile_table(prof: dict, key: str, top: int) -> str:
    items = sorted(prof[key].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in items) or float("nan")
    rows = [[k, C.fmt(v, 1), f"{100 * v / total:.1f}%"] for k, v in items[:top]]
    rows.append([f"(all {len(items)})", C.fmt(total, 1), "100%"])
    head = "op type" if key == "by_type" else "what the time is spent on"
    return C.md_table([head, "ms per step (summed op time)", "share"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, default=None, help="crop side (default 64; --quick 32)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per step (default 32, demo.py's; --quick 4)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 4)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per step (default 2)")
    ap.add_argument("--workers", nargs="+", default=None, choices=list(WORKERS), metavar="NAME",
                    help="process settings to compare (default all): " + "; ".join(WORKERS))
    ap.add_argument("--steps", nargs="+", default=None, choices=list(STEPS), metavar="NAME",
                    help="steps to time in every worker (default: " + "; ".join(DEFAULT_STEPS)
                    + "); all: " + "; ".join(STEPS))
    ap.add_argument("--profile-workers", type=int, default=2,
                    help="profile PROFILED steps in the first N workers (default 2)")
    ap.add_argument("--no-profile", action="store_true", help="skip the op profile")
    ap.add_argument("--arch", choices=("paper", "tiny"), default=None,
                    help="paper: the project's networks (default); tiny: stand-ins (--quick)")
    ap.add_argument("--force", action="store_true",
                    help="measure even when the load average exceeds the core count (flagged)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny networks, 1 round")
    ap.add_argument("--out", default=None, help="Markdown file (default bench/speed/"
                                               "training_profile.md)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        C.quiet_tf()
        return worker_main(json.loads(args.worker))
    argv_used = sys.argv[1:] if argv is None else list(argv)
    C.check_load(args.force or args.quick, "bench/speed/training_profile.py")
    size = args.input_size or (32 if args.quick else 64)
    batch = args.batch_size or (4 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 4)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    arch = args.arch or ("tiny" if args.quick else "paper")
    worker_names = args.workers or list(WORKERS)[:3]
    step_names = args.steps or list(DEFAULT_STEPS)
    spec = {"size": size, "batch": batch, "arch": arch, "warmup": warmup, "steps": step_names}

    workers = []
    try:
        for name in worker_names:
            env, intra, inter, precision = WORKERS[name]
            C.phase(f"starting worker: {name}")
            workers.append(Worker(name, env, intra, inter, precision, spec))
        profiles = {}
        if not args.no_profile:
            with tempfile.TemporaryDirectory(prefix="bench_prof_") as tmp:
                for w in workers[:args.profile_workers]:
                    for s in PROFILED:
                        if s in w.steps:
                            C.phase(f"profiling {s} in: {w.name}")
                            profiles[(w.name, s)] = w.ask(do="profile", step=s, calls=2,
                                                          dir=str(Path(tmp) / f"{len(profiles)}"))
        times = {(w.name, s): [] for w in workers for s in w.steps}
        for r in range(rounds):
            C.phase(f"round {r + 1}/{rounds}")
            for s in step_names:
                for w in workers:
                    if s in w.steps:
                        calls = max(1, (2 if STEPS[s][0] == "teacher" else 4) // STEPS[s][2]
                                    // STEPS[s][1]) if not args.quick else 1
                        times[(w.name, s)] += w.ask(do="time", step=s, calls=calls)["seconds_per_step"]
    finally:
        for w in workers:
            w.close()

    notes = [f"TensorFlow {workers[0].tf_version if workers else '?'}, one worker process per "
             f"setting; models: {sorted({src for w in workers for src in w.sources.values()})}; optimizer "
             f"training.make_optimizer (Adam, inverse-time decay), loss MSE; {size}x{size} crops, "
             f"batch {batch} unless the step says otherwise; one constant batch (no input cost)",
             f"timing: Keras's compiled train function (what fit() calls), {rounds} interleaved "
             f"rounds after {warmup} warm-up calls; images/s = batch / median seconds per step"]
    for w in workers:
        for s, e in w.errors.items():
            notes.append(f"{s} in '{w.name}': not run ({e})")
    text = C.header_block("Where CPU training time goes (64 px)" if size == 64 else
                          f"Where CPU training time goes ({size} px)", argv_used, notes) + "\n"
    for (wname, s), prof in profiles.items():
        text += (f"\n### Profile: {s}, {wname}\n\n" + profile_table(prof, "by_category", 14)
                 + "\n\n" + profile_table(prof, "by_type", 12) + "\n")
    base = worker_names[0]
    rows = []
    for s in step_names:
        plain = PLAIN[STEPS[s][0]]
        for w in workers:
            t = times.get((w.name, s))
            if not t:
                continue
            b = batch * STEPS[s][1]
            med, low = C.median(t), C.minimum(t)
            vs_base = times.get((base, s))
            # images/s ratios: per-image time of the reference / per-image time of this row
            vs_plain = times.get((w.name, plain))
            rows.append([s, w.name, C.fmt(med * 1e3, 0), C.fmt(low * 1e3, 0), C.fmt(b / med, 1),
                         C.fmt(b / low, 1),
                         C.fmt(C.median(vs_base) / med, 2) + "x" if vs_base else "-",
                         C.fmt(C.median(vs_plain) / batch / (med / b), 2) + "x"
                         if vs_plain and s != plain else "-"])
    text += ("\n### Training throughput by setting (same run, interleaved)\n\n"
             + C.md_table(["step", "process setting", "ms/step median", "ms/step min",
                           "images/s (median)", "images/s (min time)",
                           f"images/s vs '{base}', same step",
                           "images/s vs the plain step, same process"], rows) + "\n")
    print(text)
    C.write_results(text, C.results_path("training_profile", args.quick, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
