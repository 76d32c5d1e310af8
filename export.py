"""Export a trained landmark model: TensorFlow SavedModel and TFLite in four variants.

    python export.py --model models/students/300w_kd.keras --out models/export [--prepared-dir D]
                     [--variants float32 float16 dynamic_int8 int8] [--int8-io float]

TFLite variants (all converted from a SavedModel written by `model.export`, batch dimension 1 at run
time, read by inference.TFLitePredictor):
* `float32`: plain conversion;
* `float16`: weights stored as float16 (half the size), computed in float32 on CPU;
* `dynamic_int8`: weights int8, activations float (dynamic range quantisation); no calibration data;
* `int8`: full integer quantisation calibrated on a representative dataset of prepared training
  crops (uint8 / 255, the model's input), or, when no prepared data is found, on faces rendered by
  synthetic_faces (`synthetic_calibration_images`; a note says so). Input/output type choice: **int8 I/O by default**
  (`int8_io="int8"`): the whole graph, its input and its output are int8, which is what
  microcontrollers and integer-only NPUs need; the input quantisation is exact for images (scale 1/255
  over [0, 1]) and the output step is about 1/255 of the coordinate range (~0.4% of the crop side),
  small beside the model's error. `int8_io="float"` keeps float32 input and output tensors (quantise
  and de-quantise ops inside the model), simpler for callers that feed float images. The predictor
  handles both.

Files are written atomically (temporary name, then rename); an export report (sizes, agreement with
the Keras model on the calibration images) is written beside them as export_report.json. Which
variant is fastest depends on the processor (bench/speed/README.md: int8 was slower than float32 at
112 px on an Intel Xeon, faster on an AMD EPYC with AVX-512 VNNI), so export times each variant
on the machine it runs on (--time-threads, default 1 thread) and the report names the fastest, with
the processor and its ISA extensions; `inference.load_predictor(<name>_export_report.json)` (and
`LandmarkModel`, `test.py --model`) runs that variant, timing them again on another processor.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from errors import ConfigError, ModelError
from runtime import quiet_tensorflow

TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
MAX_CALIBRATION_IMAGES = 200


def _load_keras(model_or_path):
    if not isinstance(model_or_path, (str, Path)):
        return model_or_path, "model"
    from inference import KerasPredictor

    path = Path(model_or_path)
    if path.suffix.lower() != ".keras":
        raise ModelError(f"{path}: export needs a .keras model (a .tflite file is already exported)")
    return KerasPredictor(path).model, path.stem


def export_savedmodel(model, out_dir) -> Path:
    """model.export(out_dir) (TensorFlow SavedModel with a `serve` endpoint), atomically: written to
    a temporary folder beside out_dir, then renamed over it."""
    from safe_io import OutputLock  # noqa: PLC0415

    model, _ = _load_keras(model)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # under the folder's lock (one export at a time), the temporary folders of an export killed
    # before its cleanup ran (kill -9, SIGTERM) are removed: no garbage stays behind
    with OutputLock(out_dir, "--out"):
        for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        try:
            target = tmp / "savedmodel"
            model.export(str(target), format="tf_saved_model", verbose=False)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(target, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def calibration_images_from_prepared(prepared_dir, input_size: Optional[int] = None,
                                     limit: int = MAX_CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Up to `limit` prepared training crops as float32 [0, 1] (uint8 / 255), evenly drawn."""
    from errors import DataFormatError

    f = Path(prepared_dir) / "train" / "images.npy"
    try:
        images = np.load(f, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(f"{f}: missing; prepare the data (python data_util.py prepare) or pass "
                              f"--prepared-dir for the int8 calibration") from None
    if images.ndim != 4 or images.shape[-1] != 3 or (input_size and images.shape[1] != input_size):
        raise DataFormatError(f"{f}: crops of shape {images.shape[1:]} do not match the model input "
                              f"{input_size}; pass the prepared dir of the right input size")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(images), size=min(limit, len(images)), replace=False))
    return np.asarray(images[idx], dtype=np.float32) / 255.0


def synthetic_calibration_images(input_size: int, count: int = 64, num_points: int = 68,
                                 seed: int = 0) -> np.ndarray:
    """`count` faces rendered by synthetic_faces.render_face and cropped like the training crops
    (float32 [0, 1], (count, S, S, 3)): int8 calibration data when no prepared data is at hand.
    The crop uses the rendered layout of `num_points` (68, 98 or 29), else the 68-point one."""
    import inference
    import synthetic_faces

    out = []
    for i in range(int(count)):
        image, landmarks, _ = synthetic_faces.render_face(np.random.default_rng([seed, i, 7919]),
                                                          image_size=256)
        pts = landmarks.get(int(num_points), landmarks[68])
        out.append(inference.crop_face(image, inference.landmark_crop_box(pts), int(input_size)))
    return np.stack(out).astype(np.float32) / 255.0


def configure_converter(conv, variant: str, calibration: Optional[np.ndarray], int8_io: str = "int8"):
    """Apply one variant's settings (float32, float16, dynamic_int8, int8) to a TFLiteConverter."""
    import tensorflow as tf

    if variant == "float32":
        pass
    elif variant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConfigError("the int8 variant needs calibration images (prepared training crops); "
                              "pass --prepared-dir or leave int8 out of --variants")
        calib = np.asarray(calibration, dtype=np.float32)

        def representative():
            for img in calib:
                yield [img[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        elif int8_io != "float":
            raise ConfigError(f"--int8-io {int8_io!r}: choose int8 or float")
    else:
        raise ConfigError(f"unknown TFLite variant {variant!r}; choose from {', '.join(TFLITE_VARIANTS)}")
    return conv


def _convert(saved_dir: Path, variant: str, calibration: Optional[np.ndarray], int8_io: str) -> bytes:
    import tensorflow as tf

    conv = configure_converter(tf.lite.TFLiteConverter.from_saved_model(str(saved_dir)), variant,
                               calibration, int8_io)
    try:
        return conv.convert()
    except Exception as err:  # noqa: BLE001 - converter errors are long; keep one line
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(f"{saved_dir}: TFLite conversion ({variant}) failed: {first}") from None


def compare_with_keras(keras_model, tflite_path, images) -> dict:
    """Agreement of a TFLite file with the Keras model on `images` (float32 [0, 1]): max and mean
    absolute difference of the normalised coordinates."""
    from inference import TFLitePredictor

    images = np.asarray(images, dtype=np.float32)
    ref = np.asarray(keras_model(images, training=False), dtype=np.float64)
    out = TFLitePredictor(tflite_path).predict_norm(images).reshape(len(images), -1)
    diff = np.abs(out - ref)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}


def fastest_variant(median_ms: dict) -> str:
    """The variant with the smallest median time per face ({variant: ms}); ties go to the earlier
    key (the caller's order). NaN or missing timings never win."""
    timed = [(ms, i, v) for i, (v, ms) in enumerate(median_ms.items()) if ms is not None and ms == ms]
    if not timed:
        raise ValueError("no variant was timed")
    return min(timed)[2]


def time_variants(paths: dict, images, threads: int = 1, rounds: int = 20) -> dict:
    """{variant: {"median_ms", "min_ms"}}: batch-1 time per face of each TFLite file (its
    inference.TFLitePredictor with `threads` threads, float images in, landmarks out) on `images`
    (float32 [0, 1], (M, S, S, 3)), the variants interleaved round by round after a warm-up, so
    that a change of machine load hits them all."""
    import statistics
    import time

    from inference import TFLitePredictor

    images = np.asarray(images, dtype=np.float32)
    preds = {v: TFLitePredictor(p, num_threads=threads) for v, p in paths.items()}
    for pred in preds.values():
        for x in images[:5]:
            pred.predict_norm(x[None])
    times = {v: [] for v in preds}
    for _ in range(rounds):
        for v, pred in preds.items():
            for x in images:
                t0 = time.perf_counter()
                pred.predict_norm(x[None])
                times[v].append((time.perf_counter() - t0) * 1e3)
    return {v: {"median_ms": float(statistics.median(t)), "min_ms": float(min(t))} for v, t in times.items()}


# The instruction-set extensions that decide which kernels XNNPACK (TFLite), oneDNN and OpenCV use,
# hence whether float32 or int8 is faster, in the order they are reported.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_facts(cpuinfo: Optional[str] = None) -> dict:
    """{"model": the first 'model name' of /proc/cpuinfo (or of `cpuinfo`, its text), "isa": the
    ISA_FLAGS its first 'flags' line lists, in ISA_FLAGS order}. Unreadable: platform.processor(), []."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model or platform.processor() or "unknown CPU",
            "isa": [f for f in ISA_FLAGS if f in flags]}


def export_tflite(keras_model_or_path, out_dir, variants: Sequence[str] = TFLITE_VARIANTS,
                  calibration_images: Optional[np.ndarray] = None, int8_io: str = "int8",
                  name: Optional[str] = None, saved_model_dir=None, report: bool = True,
                  time_threads: int = 0) -> dict:
    """Convert to the requested TFLite variants; returns {variant: path}. Files are
    <out_dir>/<name>_<variant>.tflite (name: the model file's stem). The model is first exported to a
    SavedModel (kept in <out_dir>/<name>_savedmodel when saved_model_dir is None); an existing
    `saved_model_dir` (holding saved_model.pb, e.g. from an earlier call) is reused as it is.
    time_threads > 0: every variant is also timed on this machine with that many threads
    (time_variants, on the calibration images) and the report names the fastest
    ("speed_on_this_machine": processor, ISA extensions, times, "fastest")."""
    from safe_io import atomic_write_bytes, atomic_write_json

    for v in variants:
        if v not in TFLITE_VARIANTS:
            raise ConfigError(f"unknown TFLite variant {v!r}; choose from {', '.join(TFLITE_VARIANTS)}")
    if "int8" in variants and (calibration_images is None or len(calibration_images) == 0):
        raise ConfigError("the int8 variant needs calibration images (prepared training crops); "
                          "pass --prepared-dir or leave int8 out of --variants")
    model, stem = _load_keras(keras_model_or_path)
    name = name or stem
    out_dir = Path(out_dir)
    saved = Path(saved_model_dir) if saved_model_dir else out_dir / f"{name}_savedmodel"
    if not (saved_model_dir and (saved / "saved_model.pb").is_file()):
        export_savedmodel(model, saved)
    paths: dict = {}
    for v in variants:
        data = _convert(saved, v, calibration_images, int8_io)
        p = out_dir / f"{name}_{v}.tflite"
        atomic_write_bytes(p, data)
        paths[v] = p
    if report:
        rep = {"model": str(keras_model_or_path) if isinstance(keras_model_or_path, (str, Path)) else name,
               "savedmodel": str(saved), "int8_io": int8_io, "variants": {}}
        check = None
        if calibration_images is not None and len(calibration_images):
            check = np.asarray(calibration_images[:32], dtype=np.float32)
        for v, p in paths.items():
            entry = {"path": str(p), "bytes": p.stat().st_size}
            if check is not None:
                entry["agreement_on_calibration_images"] = compare_with_keras(model, p, check)
            rep["variants"][v] = entry
        if time_threads > 0 and check is not None:
            timed = time_variants(paths, check[:16], threads=time_threads)
            rep["speed_on_this_machine"] = {
                **cpu_facts(), "threads": time_threads, "images": len(check[:16]), "ms": timed,
                "fastest": fastest_variant({v: t["median_ms"] for v, t in timed.items()})}
        atomic_write_json(out_dir / f"{name}_export_report.json", rep)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a .keras landmark model to SavedModel and TFLite.")
    p.add_argument("--model", required=True, help="the .keras model to export")
    p.add_argument("--out", default="models/export", help="output folder (default: models/export)")
    p.add_argument("--prepared-dir", default=None,
                   help="prepared data whose train/images.npy calibrates the int8 variant (default: "
                        "data/prepared/<dataset>[-synthetic]-<S> if --dataset is given and it exists)")
    p.add_argument("--dataset", default=None, help="dataset of the model, to find the default prepared dir")
    p.add_argument("--custom-spec", default=None, metavar="FILE.json",
                   help="JSON spec of the model's custom dataset, to find its default prepared dir")
    p.add_argument("--variants", nargs="+", default=None, choices=TFLITE_VARIANTS,
                   help="TFLite variants (default: all four; int8 is calibrated on prepared training "
                        "crops, or on rendered synthetic faces when none are found)")
    p.add_argument("--int8-io", default="int8", choices=("int8", "float"),
                   help="input/output tensor type of the full-int8 model (default int8, for MCUs)")
    p.add_argument("--calibration-faces", type=int, default=64, metavar="K",
                   help="synthetic faces rendered for int8 calibration when no prepared data is "
                        "found (default: 64)")
    p.add_argument("--time-threads", type=int, default=1, metavar="N",
                   help="time every TFLite variant here with N threads and name the fastest in the "
                        "report (inference.load_predictor(report) then runs it); 0: do not time "
                        "(default: 1)")
    p.add_argument("--savedmodel-only", action="store_true", help="write the SavedModel only")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even where it holds files of the same names that export "
                        "did not make (default: refuse)")
    return p


def claim_export_folder(out, stem: str, variants: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Claim --out for the export of `stem` (safe_io.claim_folder): a new or empty folder, one this
    command made, or one that holds none of the names it writes; anything else is refused unless
    `overwrite` (files of the same names that export did not make are never replaced silently)."""
    from safe_io import claim_folder  # noqa: PLC0415

    writes = {f"{stem}_savedmodel", f"{stem}_export_report.json", *(f"{stem}_{v}.tflite" for v in variants)}
    claim_folder(out, "export.py", f"exports of {stem}", overwrite=overwrite, option="--out",
                 conflicts=writes)
    return Path(out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    variants = [] if args.savedmodel_only else list(args.variants or TFLITE_VARIANTS)
    out = claim_export_folder(args.out, Path(args.model).stem, variants, args.overwrite)
    model, stem = _load_keras(args.model)
    if args.savedmodel_only:
        path = export_savedmodel(model, out / f"{stem}_savedmodel")
        print(f"SavedModel: {path}")
        return 0
    size = int(model.inputs[0].shape[1])
    prepared = args.prepared_dir
    if prepared is None and (args.dataset or args.custom_spec):
        from configuration import PrepareConfig
        from dataset_formats import read_custom_spec

        dataset = read_custom_spec(args.custom_spec).name if args.custom_spec else args.dataset
        cand = PrepareConfig(dataset=dataset, input_size=size,
                             custom_spec=args.custom_spec).resolved_out_dir()
        prepared = cand if (Path(cand) / "train" / "images.npy").is_file() else None
    calib = None
    if prepared is not None:
        calib = calibration_images_from_prepared(prepared, size)
    elif "int8" in variants:
        if args.calibration_faces < 1:
            raise ConfigError(f"--calibration-faces {args.calibration_faces}: must be >= 1")
        points = int(model.outputs[0].shape[-1]) // 2
        print(f"note: no prepared data at the model's {size} px (pass --prepared-dir to calibrate "
              f"on your own crops); int8 calibrated on {args.calibration_faces} rendered synthetic "
              f"faces", file=sys.stderr, flush=True)
        calib = synthetic_calibration_images(size, args.calibration_faces, points)
    if args.time_threads < 0:
        raise ConfigError(f"--time-threads {args.time_threads}: must be >= 0 (0: do not time)")
    paths = export_tflite(model, out, variants, calib, int8_io=args.int8_io, name=stem,
                          time_threads=args.time_threads if len(variants) > 1 else 0)
    for v, p in paths.items():
        print(f"{v:>13}: {p} ({p.stat().st_size / 1024:.0f} KiB)")
    import json  # noqa: PLC0415

    speed = json.loads((out / f"{stem}_export_report.json").read_text()).get("speed_on_this_machine")
    if speed:
        each = ", ".join(f"{v} {t['median_ms']:.2f} ms" for v, t in speed["ms"].items())
        print(f"fastest here ({speed['model']}, {speed['threads']} thread(s), median per face): "
              f"{speed['fastest']} ({each}); inference.load_predictor("
              f"'{out / f'{stem}_export_report.json'}') runs it")
    return 0


if __name__ == "__main__":
    quiet_tensorflow()
    from errors import run_cli

    sys.exit(run_cli(main))
