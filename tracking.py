"""Landmarks on video: track each face from the previous frame's landmarks, detect again only when
tracking is lost, smooth with a One-Euro filter (inference.run_on_video, test.py --video).

* `OneEuroFilter`: Casiez, Roussel and Vogel's 1-euro filter (CHI 2012): a low-pass filter whose
  cut-off rises with speed, `min_cutoff + beta |dx/dt|`, so a still face is steadied hard and a
  moving one followed with little lag. Speeds here are measured in face sizes per second (the crop's
  side), so one setting fits near and far faces.
* `FaceTracker`: per frame, each tracked face is looked for where its crop at detection has moved to
  (the detection's crop, moved, scaled and turned with the landmarks' centroid, extent and eye line
  since that frame: `FaceTracker._follow`): the detector runs on that region (`confirm`: the
  levelled crop, twice its side, at 192 px: a few ms), and when it gives keypoints with a fitted
  map (BlazeFace) the crop is placed from them exactly as on a photo (inference.plan_crop); else the
  moved crop is used. The landmark model follows its crop, so crops moved with the landmarks alone
  carried its errors from frame to frame and drifted (docs/results/photos.md, section 5). A face is
  lost when the detector no longer finds a face there or when its landmarks jump (centre moved by
  more than half the crop, size changed by more than 1.5x); then the whole frame is detected again
  and the filters restart.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

# One-Euro settings (smooth=True): cut-off 1.0 Hz at rest (the filter's usual starting point), rising
# by BETA Hz per face-size-per-second of speed; the derivative filtered at 1 Hz. Set by hand, not
# tuned; measured on the synthetic near-still and moving clips of bench/studies/photo_path
# (docs/results/photos.md).
MIN_CUTOFF = 1.0
BETA = 8.0
D_CUTOFF = 1.0


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1-euro filter over an array of any shape (every element its own signal, one shared
    speed scale). `scale` divides the speed (e.g. the face's size in pixels)."""

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None
        self.t: Optional[float] = None

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    def __call__(self, x, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self.t
        dx = (x - self.x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1.0 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx) / max(float(scale), 1e-9)
        tau = 1.0 / (2.0 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self.x = a * x + (1.0 - a) * self.x
        self.t = float(t)
        return self.x.copy()


def jitter(points_seq, truth_seq=None, normaliser=None) -> float:
    """Mean frame-to-frame movement of the points (T, N, 2) not explained by the true motion
    (truth_seq, same shape; None: the face is still), averaged over points and frame pairs, divided
    by `normaliser` (a scalar or (T,): e.g. the inter-ocular distance)."""
    p = np.asarray(points_seq, np.float64)
    d = np.diff(p, axis=0)
    if truth_seq is not None:
        d = d - np.diff(np.asarray(truth_seq, np.float64), axis=0)
    move = np.linalg.norm(d, axis=-1).mean(axis=-1)
    if normaliser is not None:
        n = np.asarray(normaliser, np.float64)
        move = move / (n[1:] if n.ndim else n)
    return float(move.mean()) if len(move) else 0.0


class FaceTracker:
    """Landmarks frame after frame: `step(image_rgb, t)` -> (faces as inference.face_record dicts,
    whether the frame was detected). Holds the tracked faces' landmarks and filters."""

    def __init__(self, predictor, detector, margin: float, max_faces: int, smooth: bool = True,
                 level: str = "eyes", layout_factor=None, eyes=None, box_xywh=None,
                 box_kind: str = "landmarks"):
        self.predictor, self.detector = predictor, detector
        self.margin, self.max_faces, self.smooth = margin, max_faces, bool(smooth)
        self.level, self.layout_factor, self.eyes = level, layout_factor, eyes
        self.box_xywh, self.box_kind = box_xywh, box_kind
        self.tracks: list = []     # [{"points": (N, 2), "filter": OneEuroFilter, "det": Detection}]
        self.detections = 0
        self.last_report: dict = {}

    def _detect(self, image, t):
        import inference

        report: dict = {}
        faces = inference.predict_faces(self.predictor, image, self.detector, self.box_xywh, self.margin,
                                        self.max_faces, report, self.box_kind, self.level,
                                        self.layout_factor, self.eyes)
        self.last_report = report
        self.detections += 1
        self.tracks = []
        for f in faces:
            pts = np.asarray(f["landmarks_px"], np.float64)
            x0, y0, side = f["crop_box"]
            plan = (np.array([x0 + side / 2.0, y0 + side / 2.0]), float(side), np.radians(f["crop_angle_deg"]))
            self.tracks.append({"points": pts, "filter": OneEuroFilter(), "record": f, "plan0": plan,
                                "ref": self._pose(pts)})
        return self._emit(t, fresh=True), True

    def _pose(self, pts):
        """(centroid, extent, eye-line angle) of a face's landmarks."""
        import face_detection as fd
        import inference

        pts = np.asarray(pts, np.float64)
        eyes = inference.layout_eyes(self.predictor.num_points, self.eyes)
        angle = fd.eye_angle(*fd.eye_centres(pts, eyes)) if eyes is not None else 0.0
        return pts.mean(0), float(np.ptp(pts, axis=0).max()), angle

    def _follow(self, tr, pts):
        """The crop of a tracked face: the crop it was detected with, moved, scaled and turned as its
        landmarks have moved since that frame. Crops follow the face's motion, never the model's own
        placement of the points, so a model's bias on its crop cannot feed back and drift."""
        import face_detection as fd

        (c0, s0, a0), (m0, e0, r0) = tr["plan0"], tr["ref"]
        m, e, r = self._pose(pts)
        k, turn = e / e0, r - r0
        return m + fd.rotation(turn) @ (c0 - m0) * k, s0 * k, a0 + turn

    def _emit(self, t, fresh: bool):
        out = []
        for tr in self.tracks:
            pts = tr["points"]
            if self.smooth:
                side = float(np.ptp(pts, axis=0).max()) or 1.0
                pts = tr["filter"](pts, t, scale=side)
                tr["smoothed"] = pts
            rec = dict(tr["record"])
            rec["landmarks_px"] = [[round(float(x), 3), round(float(y), 3)] for x, y in pts]
            rec["tracked"] = not fresh
            out.append(rec)
        return out

    def step(self, image_rgb: np.ndarray, t: float):
        import face_detection as fd
        import inference

        if not self.tracks:
            return self._detect(image_rgb, t)
        plans = []
        for tr in self.tracks:
            source = tr.get("smoothed", tr["points"]) if self.smooth else tr["points"]
            plans.append(self._follow(tr, source))
        if self.box_xywh is None:
            for k, plan in enumerate(plans):
                found = confirm(self.detector, image_rgb, plan)
                if found is None:
                    return self._detect(image_rgb, t)
                if found.keypoints is not None and fd.keypoint_crop_coef(found.detector) is not None:
                    # the crop placed from the detector's keypoints, as on a photo (plan_crop): the
                    # model follows its crop, so a crop moved with the landmarks would carry the
                    # model's own errors from frame to frame and drift
                    plans[k] = inference.plan_crop(found, self.predictor.num_points, self.margin, self.box_kind,
                                                   self.level, self.layout_factor)
        points = inference.predict_plans(self.predictor, image_rgb, plans)
        for tr, plan, pts in zip(self.tracks, plans, points):
            c_new, s_new, _ = self._follow(tr, pts)
            if np.linalg.norm(c_new - plan[0]) > 0.5 * plan[1] or not 1 / 1.5 <= s_new / plan[1] <= 1.5:
                return self._detect(image_rgb, t)
        for tr, plan, pts in zip(self.tracks, plans, points):
            tr["points"] = np.asarray(pts, np.float64)
            tr["record"] = inference.face_record(_Tracked(tr["record"], pts), plan, pts)
        return self._emit(t, fresh=False), False


CONFIRM_ZOOM = 2.0     # the tracked crop, this many times its side, is searched for the face
CONFIRM_SIZE = 192     # ... resampled to this many pixels


def confirm(detector, image_rgb: np.ndarray, plan: tuple):
    """The detector's face at a tracked crop plan (centre, side, angle), or None when it finds none
    there: it runs on the levelled crop CONFIRM_ZOOM x the side (resampled to CONFIRM_SIZE px), and a
    detection must hold the crop's centre. Its box centre and keypoints are mapped back to the image
    (the box's sides scaled; BlazeFace.refine's mapping)."""
    import face_detection as fd
    import inference

    c, side, angle = plan
    zoomed = CONFIRM_ZOOM * side
    crop = fd.crop_rotated(image_rgb, c, zoomed, angle, CONFIRM_SIZE)
    for d in detector.detect(crop):
        x, y, w, h = [float(v) for v in d.box_xywh]
        if x <= CONFIRM_SIZE / 2 <= x + w and y <= CONFIRM_SIZE / 2 <= y + h:
            centre = fd.crop_to_image(np.array([x + w / 2, y + h / 2]), c, zoomed, angle, CONFIRM_SIZE)
            wh = np.array([w, h]) * zoomed / CONFIRM_SIZE
            kps = (None if getattr(d, "keypoints", None) is None
                   else fd.crop_to_image(d.keypoints, c, zoomed, angle, CONFIRM_SIZE))
            return inference.Detection(np.array([*(centre - wh / 2), *wh], np.float32), d.score, d.kind, kps,
                                       getattr(d, "detector", d.kind))
    return None


class _Tracked:
    """A tracked face's fields for inference.face_record: the box of its landmarks, the detector and
    score of the frame it was detected in."""

    def __init__(self, rec: dict, pts):
        lo, hi = np.min(pts, axis=0), np.max(pts, axis=0)
        self.box_xywh = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
        self.kind = rec["detector"]
        self.score = rec["detection_score"]
