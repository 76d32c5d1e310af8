"""Choosing fast_crop's second shrink (issue 38): the resize road at FAST_CROP_STAGE2 = 1.0, 1.25,
1.5 and 2.0 against the warp road (image_utility._warp_crop), side by side.

Timing: one OpenCV thread, 64 and 112 px crops of square boxes of 256-2048 px in the 2400 x 2400
image of crop_speed.py and of the 7 real faces, every candidate interleaved round by round; median
and minimum per call; load average before and after. Accuracy (--accuracy): against the training
crop on the real faces at x1, x2, x4 (crop_speed.py's measures): the content's phase shift and mean
grey difference, and the points of the photo student (64 px) and the phone student (112 px).

    /work/notes/bin/quiet.sh python bench/speed/crop_candidates.py             # timing, ~1 min
    python bench/speed/crop_candidates.py --accuracy --no-timing --out /tmp/a.md   # no quiet needed
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2]),
                str(Path(__file__).resolve().parent)]

import argparse
import json

import _common as C

C.quiet_tf()

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import image_utility as iu  # noqa: E402
from crop_speed import phase_shift, scaled_faces, test_image  # noqa: E402

STAGE2 = (1.0, 1.25, 1.5, 2.0)
SIDES = (256, 440, 512, 1024, 2048)
MODELS = {64: "models/students/300w_l2_photo.keras", 112: "models/students/300w_phone.keras"}


def candidates() -> dict:
    def road(t):
        def fn(img, box, s):
            iu.FAST_CROP_STAGE2 = t
            return iu.fast_crop(img, iu.crop_matrix(box, s), s)
        return fn
    out = {"warp road": lambda img, box, s: iu._warp_crop(img, tuple(iu.crop_matrix(box, s).ravel().tolist()), s)}
    out.update({f"resize road, stage 2 at {t}": road(t) for t in STAGE2})
    return out


def timing(faces, rounds: int):
    img = test_image(faces)
    fns, cases = {}, []
    for s in (64, 112):
        boxes = [(f"{side} px box", img, (100.3, 150.7, float(side))) for side in SIDES]
        boxes += [(f"{f.name} ({b[2]:.0f} px)", f.image, b) for f in faces
                  for b in [iu.square_box_from_landmarks(f.landmarks, 0.25)]]
        for label, im, box in boxes:
            cases.append((s, label))
            for name, fn in candidates().items():
                fns[(s, label, name)] = lambda i, fn=fn, im=im, box=box, s=s: fn(im, box, s)
    times = C.interleaved_latency(fns, 20, rounds, 20)
    return {k: (C.median(v), C.minimum(v)) for k, v in times.items()}, cases


def accuracy(faces):
    import inference

    preds = {s: inference.load_predictor(C.REPO_ROOT / p) for s, p in MODELS.items()}
    rows = []
    for name, fn in candidates().items():
        for scale in (1, 2, 4):
            data = scaled_faces(faces, scale)
            for s, pred in preds.items():
                ph, diff, outs, nme = [], [], [], []
                for _, img, _, box in data:
                    a, b = iu.crop_and_resize(img, box, s), fn(img, box, s)
                    ph.append(phase_shift(a, b))
                    diff.append(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()))
                for crop in (iu.crop_and_resize, fn):
                    x = np.stack([crop(img, box, s) for _, img, _, box in data]).astype(np.float32) / 255.0
                    c = iu.denormalize_landmarks(pred.predict_norm(x).reshape(len(data), -1, 2), s)
                    outs.append(c)
                    orig = np.stack([iu.crop_to_original(p, d[3], s) for p, d in zip(c, data)])
                    nme.append(100 * float(np.nanmean(C.nme_io_68(orig, np.stack([d[2] for d in data])))))
                sh = np.linalg.norm(outs[0] - outs[1], axis=-1)
                rows.append([name, f"x{scale}", f"{s} px", f"{max(ph):.3f}", f"{max(diff):.2f} / {np.mean(diff):.2f}",
                             f"`{MODELS[s]}`", f"{sh.max():.2f} / {sh.mean():.2f}", f"{nme[0]:.2f} -> {nme[1]:.2f}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--accuracy", action="store_true", help="also measure the landmark shift (slow; no quiet needed)")
    ap.add_argument("--no-timing", action="store_true", help="skip the timing")
    ap.add_argument("--force", action="store_true", help="time even when the load exceeds the core count")
    ap.add_argument("--out", default=None, help="Markdown file (default bench/speed/crop_candidates.md; JSON beside it)")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    cv2.setNumThreads(1)
    faces = C.load_real_faces()
    record = {"command": C.command_line(__file__, argv), "cpu": C.cpu_facts(), "cores": C.cpu_count()}
    body = ""
    if not args.no_timing:
        C.check_load(args.force, "bench/speed/crop_candidates.py")
        record["load_before"] = C.load_average()
        times, cases = timing(faces, args.rounds)
        record["load_after"] = C.load_average()
        names = list(candidates())
        cols = ["crop", "face"] + [f"{n} ms, median / min" for n in names]
        rows = [[f"{s} px", label] + [f"{times[(s, label, n)][0]:.3f} / {times[(s, label, n)][1]:.3f}" for n in names]
                for s, label in cases]
        record["timing"] = {"columns": cols, "rows": rows}
        body += (f"### Time per crop, one thread (load before {record['load_before']}, after "
                 f"{record['load_after']})\n\n" + C.md_table(cols, rows))
    if args.accuracy:
        cols = ["candidate", "faces scaled", "crop", "content shift, crop px (max)",
                "grey difference, face max / mean", "model", "points moved, crop px, max / mean",
                "NME %, training crop -> candidate"]
        rows = accuracy(faces)
        record["accuracy"] = {"columns": cols, "rows": rows}
        body += "\n### Against the training crop, 7 real faces\n\n" + C.md_table(cols, rows)
    text = C.header_block("Choosing fast_crop's second shrink (issue 38)", argv,
                          ["one OpenCV thread; candidates interleaved round by round, 20 calls each "
                           "after 20 warm-up calls"]) + "\n" + body
    print(text)
    out = Path(args.out) if args.out else Path(__file__).with_name("crop_candidates.md")
    C.write_results(text, out)
    C.write_results(json.dumps(record, indent=1) + "\n", out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
