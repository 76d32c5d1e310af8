"""int8 export calibrated from a prepared folder (`export.py --prepared-dir D`, issue 37): the
calibration crops are the stored uint8 crops scaled to the model's input range [0, 1], and the int8
model written through that command-line path agrees with the Keras model (mean point distance below
1% of the crop side; calibrated on crops in the wrong range it lands tens of % away).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from test_export import N, S, smooth_images, tiny_student  # noqa: E402


def _prepared(root, images_u8):
    (root / "train").mkdir(parents=True)
    np.save(root / "train" / "images.npy", images_u8)
    return root


def test_calibration_images_are_the_crops_over_255(tmp_path):
    import export

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    imgs[0] = 255
    imgs[1] = 0
    got = export.calibration_images_from_prepared(_prepared(tmp_path / "p", imgs), S, limit=10)
    assert got.dtype == np.float32 and got.shape == imgs.shape
    np.testing.assert_allclose(got, imgs.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
    assert got.max() == 1.0 and got.min() == 0.0
    sub = export.calibration_images_from_prepared(tmp_path / "p", S, limit=3)
    assert len(sub) == 3 and all(any(np.array_equal(s, g) for g in got) for s in sub)


def test_export_py_int8_from_a_prepared_folder_agrees_with_keras(tmp_path):
    import export
    from inference import TFLitePredictor

    model = tiny_student()
    keras_path = tmp_path / "tiny.keras"
    model.save(keras_path)
    crops = (smooth_images(24, seed=1) * 255).round().astype(np.uint8)
    prepared = _prepared(tmp_path / "prep", crops)
    out = tmp_path / "out"
    assert export.main(["--model", str(keras_path), "--out", str(out), "--prepared-dir", str(prepared),
                        "--variants", "int8", "--int8-io", "float"]) == 0
    tflite = next(out.glob("*int8*.tflite"))
    imgs = smooth_images(12, seed=2)
    ref = np.asarray(model(imgs, training=False)).reshape(len(imgs), N, 2)
    pred = TFLitePredictor(tflite).predict_norm(imgs)
    dist = float(np.linalg.norm(pred - ref, axis=-1).mean())
    assert dist < 0.01, f"int8 model {dist:.3f} of the crop side away from the Keras model"
