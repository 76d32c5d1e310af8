"""The student the repo ships, exported to every TFLite variant, against its Keras model on the real
faces of tests/data/real_samples (the 7 real 68-point faces, cropped from their ground-truth
landmarks by the training protocol).

Stated tolerances (normalised crop coordinates, crop side = 1; NME in percentage points):
  float32: max |TFLite - Keras| < 1e-3 over every coordinate of every face;
  float16: mean < 1e-3, max < 3e-3 (weights round to float16 at ~5e-4 relative);
  dynamic-range int8: mean < 1e-2, max < 5e-2;
  full int8 (int8 input and output): |NME(int8) - NME(Keras)| < 1.5 points (inter-ocular), and a
  median per-face mean point shift < 2% of the crop side.
Measured with the shipped converged KD student on these fixtures (`python
bench/studies/export_agreement/export_agreement.py`, bench/studies/export_agreement/export_agreement.md, 2026-11-28): float32 max 7.7e-7;
float16 mean 3.7e-5, max 1.5e-4 (its weights are stored in float16 already); dynamic int8 mean
8.3e-4, max 4.5e-3; full int8 NME 11.43% against 10.87% (Keras), per-face shifts 0.7-1.8% of the
side. Its outputs stay within +-0.42, inside the calibrated range: full int8 clips outputs to the
range seen in calibration, which moved two faces of an earlier, unconverged student by 7% and 14%
of the side.
Full-int8 calibration uses 32 synthetic faces rendered here (synthetic_faces.render_face), never the
faces it is scored on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures import all_68_point_faces

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "models" / "students" / "300w_kd.keras"


def _crops(faces, size):
    import cv2

    import inference

    crops, boxes, gts = [], [], []
    for image_path, points in faces:
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        box = inference.landmark_crop_box(points)
        crops.append(inference.crop_face(image, box, size))
        boxes.append(box)
        gts.append(np.asarray(points, np.float64))
    return np.stack(crops).astype(np.float32) / 255.0, np.stack(boxes), np.stack(gts)


def _synthetic_calibration(size, count=32):
    import inference
    import synthetic_faces

    out = []
    for i in range(count):
        image, landmarks, _ = synthetic_faces.render_face(np.random.default_rng(5000 + i), image_size=256)
        out.append(inference.crop_face(image, inference.landmark_crop_box(landmarks[68]), size))
    return np.stack(out).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    import export
    from inference import KerasPredictor

    assert STUDENT.is_file(), f"{STUDENT} is missing: the repo ships it (models/README.md)"
    keras_pred = KerasPredictor(STUDENT)
    size = keras_pred.input_size
    images, boxes, gts = _crops(all_68_point_faces(), size)
    paths = export.export_tflite(STUDENT, tmp_path_factory.mktemp("shipped"),
                                 calibration_images=_synthetic_calibration(size), report=False)
    return {"keras": keras_pred.predict_norm(images), "paths": paths, "images": images,
            "boxes": boxes, "gts": gts, "size": size}


@pytest.mark.parametrize("variant,mean_tol,max_tol", [("float32", 1e-4, 1e-3), ("float16", 1e-3, 3e-3),
                                                      ("dynamic_int8", 1e-2, 5e-2)])
def test_float_and_dynamic_variants_agree_on_real_faces(shipped, variant, mean_tol, max_tol):
    from inference import TFLitePredictor

    pred = TFLitePredictor(shipped["paths"][variant]).predict_norm(shipped["images"])
    assert pred.shape == shipped["keras"].shape == (7, 68, 2)
    diff = np.abs(pred - shipped["keras"])
    assert diff.mean() < mean_tol and diff.max() < max_tol


def test_full_int8_nme_on_real_faces_within_one_and_a_half_points(shipped):
    import evaluation
    from inference import TFLitePredictor, landmarks_norm_to_original

    def nme(norm):
        px = np.stack([landmarks_norm_to_original(n, b, shipped["size"]) for n, b in zip(norm, shipped["boxes"])])
        return 100 * float(np.mean(evaluation.per_image_nme(px, shipped["gts"], "300w")))

    predictor = TFLitePredictor(shipped["paths"]["int8"])
    assert predictor.input_dtype == np.int8
    pred = predictor.predict_norm(shipped["images"])
    shift_per_face = np.linalg.norm(pred - shipped["keras"], axis=-1).mean(axis=1)
    assert np.median(shift_per_face) < 0.02
    assert abs(nme(pred) - nme(shipped["keras"])) < 1.5


PHONE, PHONE_INT8 = (ROOT / "models" / "students" / name for name in ("300w_phone.keras", "300w_phone_int8.tflite"))


def test_shipped_phone_int8_matches_its_keras_model_on_real_faces():
    """The shipped int8 file is the shipped phone model (112 px, width 0.5) quantised: on the 7 real
    faces the two NMEs differ by < 1.5 points (measured 16.67% Keras, 16.41% int8) and the median
    per-face point shift is < 2% of the crop side."""
    import evaluation
    from inference import KerasPredictor, TFLitePredictor, landmarks_norm_to_original

    keras_pred, int8_pred = KerasPredictor(PHONE), TFLitePredictor(PHONE_INT8)
    assert keras_pred.input_size == int8_pred.input_size == 112 and int8_pred.input_dtype == np.int8
    images, boxes, gts = _crops(all_68_point_faces(), 112)

    def nme(norm):
        px = np.stack([landmarks_norm_to_original(n, b, 112) for n, b in zip(norm, boxes)])
        return 100 * float(np.mean(evaluation.per_image_nme(px, gts, "300w")))

    a, b = keras_pred.predict_norm(images), int8_pred.predict_norm(images)
    assert np.median(np.linalg.norm(a - b, axis=-1).mean(axis=1)) < 0.02
    assert abs(nme(a) - nme(b)) < 1.5
