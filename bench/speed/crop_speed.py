"""The inference crop at its cost (issue 38): time and accuracy of image_utility.fast_crop against
the training crop image_utility.crop_and_resize, and against fast_crop's warp road
(image_utility._warp_crop: the whole of fast_crop before its resize road, now its fallback for
turned crops and regions leaving the image).

Timing: one OpenCV thread, crops of 64 and 112 px from square boxes of side 64 to 2048 px (440 px:
a shrink just under 4x at 112 px, where the pre-shrunk image is largest) in a 2400 x 2400
photo-like image (a real face scaled up and tiled), and of the 7 real faces of
tests/data/real_samples (their ground-truth box with the 0.25 margin); the three methods
interleaved round by round; median and minimum per call; load average before and after.

Accuracy on the 7 real faces, each at its own size and scaled up 2x and 4x (cv2.INTER_CUBIC):
* content shift: the displacement of the fast crop against the training crop, by phase correlation
  (cv2.phaseCorrelate on the grey crops), crop pixels;
* landmark shift: each shipped student's predictions on the two crops, max over the 68 points and
  the faces, crop pixels; and its NME (inter-ocular, %) on each;
* the ground-truth landmarks mapped into both crops: the two methods use one matrix, so the mapping
  is the same (0 px) by construction; the shift that matters is the content's, measured above.

    python bench/speed/crop_speed.py                     # writes crop_speed.md and crop_speed.json here
    python bench/speed/crop_speed.py --rounds 3 --no-models --out /tmp/c.md   # quick look
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

import argparse
import json

import _common as C

C.quiet_tf()

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import image_utility as iu  # noqa: E402

SIDES = (64, 128, 256, 440, 512, 1024, 2048)
SIZES = (64, 112)
MODELS = ("models/students/300w_l2_photo.keras", "models/students/300w_kd.keras",
          "models/students/300w_phone.keras")
METHODS = {"training crop (crop_and_resize)": lambda img, box, s: iu.crop_and_resize(img, box, s),
           "fast crop (fast_crop)": lambda img, box, s: iu.fast_crop(img, iu.crop_matrix(box, s), s),
           # fast_crop's warp road: all of fast_crop before the resize road (issue 38), now its fallback
           "warp road (before)": lambda img, box, s: iu._warp_crop(img, tuple(iu.crop_matrix(box, s).ravel().tolist()), s)}
SCALES = (1, 2, 4)


def test_image(faces) -> np.ndarray:
    """2400 x 2400 RGB: the largest real face's photo scaled to 2400 px wide, tiled (real texture at
    every box size; the content does not change OpenCV's cost, only the size does)."""
    img = max((f.image for f in faces), key=lambda a: a.shape[0] * a.shape[1])
    k = 2400 / img.shape[1]
    big = cv2.resize(img, (2400, int(round(img.shape[0] * k))), interpolation=cv2.INTER_CUBIC)
    reps = int(np.ceil(2400 / big.shape[0]))
    return np.ascontiguousarray(np.concatenate([big] * reps, axis=0)[:2400])


def scaled_faces(faces, scale: int):
    """(name, image, landmarks, box (x0, y0, side)) of every face scaled by `scale`."""
    out = []
    for f in faces:
        img = f.image if scale == 1 else cv2.resize(f.image, None, fx=scale, fy=scale,
                                                    interpolation=cv2.INTER_CUBIC)
        # pixel centre i of the original sits at scale * i + (scale - 1) / 2 after a resize by scale
        pts = f.landmarks * scale + (scale - 1) / 2.0
        out.append((f"{f.name} x{scale}", img, pts, iu.square_box_from_landmarks(pts, 0.25)))
    return out


def phase_shift(a: np.ndarray, b: np.ndarray) -> float:
    """|displacement| of b against a, crop pixels (cv2.phaseCorrelate on grey, Hann window)."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    win = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, win)
    return float(np.hypot(dx, dy))


def timing(faces, rounds: int, warmup: int = 20, calls: int = 20) -> dict:
    img = test_image(faces)
    fns, cases = {}, []
    for s in SIZES:
        for side in SIDES:
            box = (100.3, 150.7, float(side))
            cases.append((s, f"{side} px box"))
            for name, fn in METHODS.items():
                fns[(s, f"{side} px box", name)] = lambda i, fn=fn, box=box, s=s: fn(img, box, s)
        for f in faces:
            box = iu.square_box_from_landmarks(f.landmarks, 0.25)
            cases.append((s, f"{f.name} ({box[2]:.0f} px)"))
            for name, fn in METHODS.items():
                fns[(s, cases[-1][1], name)] = lambda i, fn=fn, f=f, box=box, s=s: fn(f.image, box, s)
    times = C.interleaved_latency(fns, warmup, rounds, calls)
    return {k: (C.median(v), C.minimum(v)) for k, v in times.items()}, cases


def accuracy(faces, model_paths) -> dict:
    import inference

    preds = {p: inference.load_predictor(C.REPO_ROOT / p) for p in model_paths}
    rows = {}
    for scale in SCALES:
        for s in SIZES:
            shifts, diffs, wshifts, wdiffs = [], [], [], []
            for name, img, pts, box in scaled_faces(faces, scale):
                old, new, warp = (fn(img, box, s) for fn in METHODS.values())
                shifts.append(phase_shift(old, new))
                diffs.append(float(np.abs(old.astype(np.int16) - new.astype(np.int16)).mean()))
                wshifts.append(phase_shift(old, warp))
                wdiffs.append(float(np.abs(old.astype(np.int16) - warp.astype(np.int16)).mean()))
            rows[(scale, s, "content")] = {"max_shift_px": max(shifts), "mean_abs_diff": float(np.mean(diffs)),
                                           "max_abs_diff": max(diffs), "warp_max_shift_px": max(wshifts),
                                           "warp_mean_abs_diff": float(np.mean(wdiffs)),
                                           "warp_max_abs_diff": max(wdiffs)}
            for p, pred in preds.items():
                if pred.input_size != s:
                    continue
                out, nme = {}, {}
                for name, fn in METHODS.items():
                    crops, gts, boxes = [], [], []
                    for _, img, pts, box in scaled_faces(faces, scale):
                        crops.append(fn(img, box, s))
                        gts.append(pts)
                        boxes.append(box)
                    norm = pred.predict_norm(np.stack(crops).astype(np.float32) / 255.0)
                    crop_px = iu.denormalize_landmarks(norm.reshape(len(crops), -1, 2), s)
                    out[name] = crop_px
                    orig = np.stack([iu.crop_to_original(c, b, s) for c, b in zip(crop_px, boxes)])
                    nme[name] = 100 * float(np.nanmean(C.nme_io_68(orig, np.stack(gts))))
                a, b, w = out.values()
                # the model's own sensitivity: the training crop of the box moved by 0.1 crop px
                moved = []
                for _, img, pts, (x0, y0, side) in scaled_faces(faces, scale):
                    d = 0.1 * side / s
                    moved.append(iu.crop_and_resize(img, (x0 + d, y0 - d, side), s))
                nm = pred.predict_norm(np.stack(moved).astype(np.float32) / 255.0)
                c = iu.denormalize_landmarks(nm.reshape(len(moved), -1, 2), s)
                c = c - np.array([0.1, -0.1], np.float32)        # undo the move itself
                rows[(scale, s, p)] = {"max_shift_px": float(np.linalg.norm(a - b, axis=-1).max()),
                                       "mean_shift_px": float(np.linalg.norm(a - b, axis=-1).mean()),
                                       "nme_old": list(nme.values())[0], "nme_new": list(nme.values())[1],
                                       "warp_max_shift_px": float(np.linalg.norm(a - w, axis=-1).max()),
                                       "warp_mean_shift_px": float(np.linalg.norm(a - w, axis=-1).mean()),
                                       "nme_warp": list(nme.values())[2],
                                       "floor_max_px": float(np.linalg.norm(a - c, axis=-1).max()),
                                       "floor_mean_px": float(np.linalg.norm(a - c, axis=-1).mean())}
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--no-models", action="store_true", help="skip the shipped students' landmark shift")
    ap.add_argument("--force", action="store_true",
                    help="measure even when the load average exceeds the core count (flagged)")
    ap.add_argument("--out", default=None, help="Markdown file (default bench/speed/crop_speed.md; "
                                                "the JSON goes beside it)")
    args = ap.parse_args(argv)
    C.check_load(args.force, "bench/speed/crop_speed.py")
    cv2.setNumThreads(1)
    faces = C.load_real_faces()
    load_before = C.load_average()
    times, cases = timing(faces, args.rounds)
    load_after = C.load_average()
    acc = {} if args.no_models else accuracy(faces, MODELS)

    names = list(METHODS)
    rows = []
    for s, case in cases:
        (m0, n0), (m1, n1), (m2, n2) = (times[(s, case, n)] for n in names)
        rows.append([f"{s} px", case, f"{m0:.3f} / {n0:.3f}", f"{m1:.3f} / {n1:.3f}", f"{m2:.3f} / {n2:.3f}",
                     f"{m0 / m1:.1f}x", "yes" if m1 <= 0.1 else "NO"])
    cols = ["crop", "face", "training crop ms, median / min", "fast crop ms, median / min",
            "warp road (before) ms, median / min", "speed-up (median)", "fast <= 0.1 ms"]
    acc_rows = []
    for (scale, s, what), r in acc.items():
        if what == "content":
            acc_rows.append([f"x{scale}", f"{s} px", "content (phase correlation)", f"{r['max_shift_px']:.3f}",
                             "-", f"{r['mean_abs_diff']:.2f} grey levels mean |difference| (face max "
                             f"{r['max_abs_diff']:.2f}); warp road: {r['warp_max_shift_px']:.3f} px, "
                             f"{r['warp_mean_abs_diff']:.2f} (max {r['warp_max_abs_diff']:.2f})"])
        else:
            acc_rows.append([f"x{scale}", f"{s} px", f"`{what}` predictions", f"{r['max_shift_px']:.3f}",
                             f"{r['mean_shift_px']:.3f}", f"NME {r['nme_old']:.2f}% -> {r['nme_new']:.2f}%; "
                             f"box moved 0.1 px: max {r['floor_max_px']:.3f}, mean {r['floor_mean_px']:.3f}; "
                             f"warp road: max {r['warp_max_shift_px']:.3f}, mean {r['warp_mean_shift_px']:.3f}, "
                             f"NME {r['nme_warp']:.2f}%"])
    acc_cols = ["faces scaled", "crop", "what moved", "max shift, crop px", "mean shift, crop px",
                "note (training crop -> fast crop; the model's own sensitivity: the training crop "
                "of the box moved by 0.1 crop px; warp road: the same for fast_crop's warp road, "
                "the whole of fast_crop before the resize road)"]
    cpu = C.cpu_facts()
    notes = [f"timing: one OpenCV thread (cv2.setNumThreads(1)); {args.rounds} interleaved rounds x 20 "
             f"calls per case after 20 warm-up calls; load average before: {load_before}; after: {load_after}",
             "boxes of 64-2048 px: square boxes at (100.3, 150.7) in a 2400 x 2400 image (a real photo "
             "scaled up and tiled); real faces: their ground-truth box, side 1.25 x the larger extent",
             "accuracy: the 7 real faces at their own size (x1) and scaled up with INTER_CUBIC (x2, x4: "
             "faces of 240-2600 px); shipped students run in Keras on both crops"]
    body = ("### Time per crop, one thread\n\n" + C.md_table(cols, rows) +
            ("\n### Does anything move? Fast crop against training crop, 7 real faces\n\n"
             + C.md_table(acc_cols, acc_rows) if acc_rows else ""))
    text = C.header_block("The inference crop at its cost (issue 38)", sys.argv[1:] if argv is None else argv,
                          notes) + "\n" + body
    print(text)
    out = Path(args.out) if args.out else Path(__file__).with_name("crop_speed.md")
    C.write_results(text, out)
    record = {"command": C.command_line(__file__, sys.argv[1:] if argv is None else argv),
              "cpu": cpu, "cores": C.cpu_count(), "load_before": load_before, "load_after": load_after,
              "timing": {"columns": cols, "rows": rows},
              "accuracy": {"columns": acc_cols, "rows": acc_rows}}
    C.write_results(json.dumps(record, indent=1) + "\n", out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
