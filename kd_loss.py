"""KD-Loss of Fard & Mahoor 2022 (METHOD.md section 5), in keras.ops (any Keras backend).

Every function works per scalar coordinate on tensors of shape (B, 2N) and returns the mean over the
batch and all 2N coordinates. Notation: G ground truth, P student prediction, T a teacher's
prediction (A the Tough teacher, S the Tolerant teacher). G and the teachers' values are constants
(no gradient flows into them); only P receives gradients.

Reflection and boundary, per coordinate, with s = sign(P - G) and t = |T - G|:
    T' = G + s t                 (the teacher mirrored onto the student's side of G)
    B  = G + s beta t            (the boundary of the low-influence region)
Assistive loss of one teacher, with e = |P - G|:
    ALoss_T = mean(w * |T' - P|), w a constant (ops.stop_gradient) chosen by region:
      teacher exact   t = 0                : w = 0       (T = G: both weights vanish)
      positive        e > t                : w = alpha
      negative        beta t <= e <= t     : w = alpha_neg        (alpha_neg < 0)
      low-influence   e < beta t           : w = 0                       (preset "code")
                                             w = alpha_neg e / (beta t)  (preset "paper", a ramp
                                                                          from 0 at G to alpha_neg at B)
Main loss, with e = |G - P| and d = |G - S|:
      e <= d : c e ;   e > d : e^2 + c d - d^2       (continuous at e = d)
Total: KD = w_main main + w_tough ALoss_Tough + w_tol ALoss_Tol.

Boundaries and edge cases (comparisons are exact, in the inputs' dtype):
  * P exactly on T' (e = t > 0): negative region, |T' - P| = 0, so the term is 0 (its gradient
    there is 0 too: |x| has gradient sign(0) = 0).
  * P exactly on B (e = beta t > 0): negative region, w = alpha_neg, in both presets (the authors'
    code tests `>= 0` there; for "paper" it is also the end of the ramp, so the weight is continuous).
  * T = G exactly (t = 0): B = T' = G; both weights vanish (w = 0 for any P): a teacher with no
    error says nothing about which side to pull from, and the main loss already pulls P to G.
  * P = G (e = 0) with t > 0: s = 0, so T' = B = G and |T' - P| = 0: the term is 0 whatever the
    teacher; the weight is that of the low region (0 in both presets).
  * Main loss at e = d: the L1 branch, c d (both branches agree there). d = 0 gives e^2 for any e.
Gradients: d|T' - P|/dP = sign(P - T'); with w = alpha > 0 beyond T' and w = alpha_neg < 0 between
G and T', dALoss/dP always has the sign of P - G: every non-zero term pulls the student toward G.

Student modes (`KDLoss(cfg, mode)`; `MODES` is the one list of them, the trainers and the
configuration read it from here):
  * "kd": the full loss above (the Tolerant teacher's error d in the main loss, both assistive terms).
  * "tough-only": only the Tough teacher is available, so it also supplies the main loss's d
    (d = |G - A|) and only its assistive term is added (w_main main + w_tough ALoss_Tough).
  * "tolerant-only": d = |G - S| and only the Tolerant assistive term (w_main main + w_tol ALoss_Tol).
  * "l2": mean squared error against G (the paper's baseline), teachers ignored.
  * "l1": mean absolute error against G, no teachers: the control of the same shape as KD-Loss
    (per coordinate KD-Loss's gradient is sign(P - G) times a weight the teachers set, so L1 is
    KD-Loss with teachers that say nothing; KD - L1 is what the teachers add).
  * "wing": Wing loss (Feng et al., CVPR 2018) against G, no teachers: w ln(1 + e / eps) for
    e < w, e - C beyond (C = w - w ln(1 + w / eps), continuous at e = w); w and eps are
    configuration.WING_WIDTH / WING_CURVATURE, in crop-normalised units.
The teacher-free modes return their loss as "main" and "total" (the assistive terms are 0).
These are the paper's "student with the Tough / Tolerant teacher only" ablations (METHOD.md 8); the
paper does not say which error the main loss used for the Tough-only student; we use the only
teacher present.
Teachers are trained with `l2_loss` (mean squared error, batch and coordinates averaged).

`Distiller` applies the loss in training (keras-io's knowledge-distillation example): a keras.Model
around the student and the frozen teachers whose `compute_loss` is KD-Loss, driven by a plain `fit`.
It needs nothing but Keras, so KD students train on any backend, also on a GPU machine with only JAX
(bench/gpu_models.py); student_trainer.py drives it under TensorFlow.
"""
from __future__ import annotations

from typing import Optional, Union

import keras
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution  # what keras.losses.Loss applies

from configuration import (DEFAULT_LOSS_PRESET, LOSS_PRESETS, WING_CURVATURE, WING_WIDTH, LossConfig,
                           loss_config)
from errors import ConfigError

# student mode -> (needs the Tough teacher, needs the Tolerant teacher)
MODE_TEACHERS = {"kd": (True, True), "l2": (False, False), "l1": (False, False),
                 "wing": (False, False), "tough-only": (True, False), "tolerant-only": (False, True)}
MODES = tuple(MODE_TEACHERS)


def check_mode(mode: str) -> str:
    """`mode` if it is a student mode, else ConfigError listing MODES."""
    if mode not in MODE_TEACHERS:
        raise ConfigError(f"--student-mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def _cfg(cfg: Union[LossConfig, str, None]) -> LossConfig:
    if cfg is None:
        return LOSS_PRESETS[DEFAULT_LOSS_PRESET]
    if isinstance(cfg, str):
        return loss_config(cfg)
    return cfg


def _prepare(G, P, *others):
    """Cast everything to P's float dtype; G and teachers are constants (stop_gradient)."""
    P = ops.convert_to_tensor(P)
    dt = keras.backend.standardize_dtype(P.dtype)
    if not keras.backend.is_float_dtype(dt):
        dt = "float32"
        P = ops.cast(P, dt)
    G = ops.stop_gradient(ops.cast(G, dt))
    rest = [ops.stop_gradient(ops.cast(o, dt)) for o in others]
    return (G, P, *rest)


def l2_loss(y_true, y_pred):
    """Mean squared error over the batch and all coordinates (teachers and the L2 baseline)."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.square(y_pred - y_true))


def l1_loss(y_true, y_pred):
    """Mean absolute error over the batch and all coordinates (the teacher-free control)."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.abs(y_pred - y_true))


def wing_loss(y_true, y_pred, width=WING_WIDTH, curvature=WING_CURVATURE):
    """Wing loss (Feng et al. 2018) averaged over batch and coordinates: log-shaped for errors
    below `width` (steeper than L1 near 0), L1 beyond; `curvature` is the paper's epsilon."""
    y_true, y_pred = _prepare(y_true, y_pred)
    e = ops.abs(y_pred - y_true)
    w = ops.convert_to_tensor(width, e.dtype)
    eps = ops.convert_to_tensor(curvature, e.dtype)
    c = w - w * ops.log1p(w / eps)
    return ops.mean(ops.where(e < w, w * ops.log1p(e / eps), e - c))


# the loss of each student mode that uses no teacher
TEACHER_FREE_LOSSES = {"l2": l2_loss, "l1": l1_loss, "wing": wing_loss}


def main_loss_elementwise(G, P, S, cfg=None):
    """Per-coordinate main loss (same shape as P): c e for e <= d, e^2 + c d - d^2 beyond."""
    cfg = _cfg(cfg)
    G, P, S = _prepare(G, P, S)
    c = ops.convert_to_tensor(cfg.main_slope, P.dtype)
    e = ops.abs(G - P)
    d = ops.abs(G - S)
    return ops.where(e <= d, c * e, ops.square(e) + c * d - ops.square(d))


def main_loss(G, P, S, cfg=None):
    """Main loss averaged over batch and coordinates; S supplies d = |G - S|."""
    return ops.mean(main_loss_elementwise(G, P, S, cfg))


def assistive_weight(G, P, T, alpha, alpha_neg, cfg=None):
    """The per-coordinate weight w of one teacher's assistive loss (no gradient)."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    dt = P.dtype
    beta = ops.convert_to_tensor(cfg.beta, dt)     # (ops.cast would round a Python float to float32)
    a = ops.convert_to_tensor(alpha, dt)
    an = ops.convert_to_tensor(alpha_neg, dt)
    e = ops.abs(P - G)
    t = ops.abs(T - G)
    bt = beta * t
    zero = ops.zeros_like(e)
    if cfg.low_region == "zero":
        low = zero
    elif cfg.low_region == "ramp":
        low = an * ops.divide_no_nan(e, bt)     # 0 at G, alpha_neg at B
    else:
        raise ConfigError(f"low_region={cfg.low_region!r}: use 'zero' (code) or 'ramp' (paper)")
    w = ops.where(e > t, a * ops.ones_like(e), ops.where(e >= bt, an * ops.ones_like(e), low))
    return ops.stop_gradient(ops.where(t > 0, w, zero))     # T = G: both weights vanish


def reflect(G, P, T):
    """T' = G + sign(P - G) |T - G|: the teacher mirrored onto the student's side (no gradient)."""
    G, P, T = _prepare(G, P, T)
    return ops.stop_gradient(G + ops.sign(P - G) * ops.abs(T - G))


def boundary(G, P, T, cfg=None):
    """B = G + sign(P - G) beta |T - G|."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    return ops.stop_gradient(G + ops.sign(P - G) * ops.convert_to_tensor(cfg.beta, P.dtype) * ops.abs(T - G))


def assistive_loss_elementwise(G, P, T, alpha, alpha_neg, cfg=None):
    """Per-coordinate w * |T' - P| of one teacher."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    w = assistive_weight(G, P, T, alpha, alpha_neg, cfg)
    return w * ops.abs(reflect(G, P, T) - P)


def assistive_loss(G, P, T, alpha, alpha_neg, cfg=None):
    """ALoss_T = mean(w * |T' - P|) over batch and coordinates."""
    return ops.mean(assistive_loss_elementwise(G, P, T, alpha, alpha_neg, cfg))


def kd_loss_terms(G, P, A, S, cfg=None) -> dict:
    """All terms of the full KD-Loss: {"main", "tough", "tolerant", "total"} (scalars)."""
    return KDLoss(cfg, "kd").terms(G, P, A, S)


class KDLoss:
    """The student's loss for a trainer: `loss(G, P, A=None, S=None)` returns the scalar total;
    `loss.terms(...)` the dict of its parts (absent parts are 0). See the module docstring for the
    modes (MODES)."""

    def __init__(self, cfg: Union[LossConfig, str, None] = None, mode: str = "kd"):
        self.cfg = _cfg(cfg)
        self.mode = check_mode(mode)

    @property
    def needs_tough(self) -> bool:
        return MODE_TEACHERS[self.mode][0]

    @property
    def needs_tolerant(self) -> bool:
        return MODE_TEACHERS[self.mode][1]

    def terms(self, G, P, A=None, S=None) -> dict:
        cfg = self.cfg
        if self.needs_tough and A is None:
            raise ConfigError(f"KD-Loss mode {self.mode!r} needs the Tough teacher's predictions")
        if self.needs_tolerant and S is None:
            raise ConfigError(f"KD-Loss mode {self.mode!r} needs the Tolerant teacher's predictions")
        G, P = _prepare(G, P)
        zero = ops.zeros((), P.dtype)
        if self.mode in TEACHER_FREE_LOSSES:
            main = TEACHER_FREE_LOSSES[self.mode](G, P)
            return {"main": main, "tough": zero, "tolerant": zero, "total": main}
        # the main loss's d comes from the Tolerant teacher, or from the only teacher present
        main = main_loss(G, P, S if self.needs_tolerant else A, cfg)
        tough = assistive_loss(G, P, A, cfg.alpha_tough, cfg.alpha_neg_tough, cfg) \
            if self.needs_tough else zero
        tolerant = assistive_loss(G, P, S, cfg.alpha_tol, cfg.alpha_neg_tol, cfg) \
            if self.needs_tolerant else zero
        total = cfg.w_main * main
        if self.needs_tough:
            total = total + cfg.w_tough * tough
        if self.needs_tolerant:
            total = total + cfg.w_tol * tolerant
        return {"main": main, "tough": tough, "tolerant": tolerant, "total": total}

    def __call__(self, G, P, A=None, S=None):
        return self.terms(G, P, A, S)["total"]

    def __repr__(self) -> str:
        return f"KDLoss(mode={self.mode!r}, cfg={self.cfg})"


class Distiller(keras.Model):
    """The student and its frozen teachers, as keras-io's knowledge-distillation example writes it:
    `call` is the student's, `compute_loss` applies KD-Loss, so a plain `fit` trains it after one
    `compile` (with the student's optimizer); only the student's weights are trainable. Written in
    keras.ops, so it runs on any Keras backend (TensorFlow here; JAX where TensorFlow is absent).

    Batches are (x, y) with y the ground truth G (B, 2N) or a dict {"landmarks": G} that may carry
    the cached teacher predictions {"tough": A, "tolerant": S}; missing predictions are computed on
    the batch by the frozen teachers. Besides the total ("loss"), fit logs the KD-Loss terms
    "main", "tough" and "tolerant". Saving a Distiller saves its student.
    """

    def __init__(self, student: keras.Model, tough: Optional[keras.Model] = None,
                 tolerant: Optional[keras.Model] = None, loss_config=None, mode: str = "kd",
                 **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.kd_loss = KDLoss(loss_config, mode)
        if self.kd_loss.needs_tough and tough is None:
            raise ConfigError(f"student mode {mode!r} needs the Tough teacher")
        if self.kd_loss.needs_tolerant and tolerant is None:
            raise ConfigError(f"student mode {mode!r} needs the Tolerant teacher")
        self.student = student
        self.tough = tough
        self.tolerant = tolerant
        for teacher in (tough, tolerant):
            if teacher is not None:
                teacher.trainable = False
        self.main_tracker = keras.metrics.Mean(name="main")
        self.tough_tracker = keras.metrics.Mean(name="tough")
        self.tolerant_tracker = keras.metrics.Mean(name="tolerant")

    def call(self, x, training=False):
        return self.student(x, training=training)

    def save(self, filepath, *args, **kwargs):
        """Saving a Distiller saves its student only."""
        return self.student.save(filepath, *args, **kwargs)

    def teacher_predictions(self, x, y):
        """(A, S) as float32 constants: the cached predictions in y, else the teachers on x."""
        cached = y if isinstance(y, dict) else {}
        a, s = cached.get("tough"), cached.get("tolerant")
        if self.kd_loss.needs_tough and a is None:
            a = self.tough(x, training=False)
        if self.kd_loss.needs_tolerant and s is None:
            s = self.tolerant(x, training=False)
        return tuple(None if p is None else ops.stop_gradient(ops.cast(p, "float32"))
                     for p in (a, s))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        g = y["landmarks"] if isinstance(y, dict) else y
        a, s = self.teacher_predictions(x, y)
        terms = self.kd_loss.terms(ops.cast(g, "float32"), ops.cast(y_pred, "float32"), a, s)
        batch = ops.shape(y_pred)[0]
        for tracker in (self.main_tracker, self.tough_tracker, self.tolerant_tracker):
            tracker.update_state(terms[tracker.name], sample_weight=batch)
        loss = terms["total"]
        for extra in self.student.losses:          # regularisation terms of the student, if any
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        # fit sums the gradients of the replicas: each replica's loss is its share of the mean
        return scale_loss_for_distribution(loss)
