"""KD-Loss of Fard & Mahoor 2022 (METHOD.md section 5), vectorised TensorFlow.

Every function works per scalar coordinate on tensors of shape (B, 2N) and returns the mean over the
batch and all 2N coordinates. Notation: G ground truth, P student prediction, T a teacher's
prediction (A the Tough teacher, S the Tolerant teacher). G and the teachers' values are constants
(no gradient flows into them); only P receives gradients.

Reflection and boundary, per coordinate, with s = sign(P - G) and t = |T - G|:
    T' = G + s t                 (the teacher mirrored onto the student's side of G)
    B  = G + s beta t            (the boundary of the low-influence region)
Assistive loss of one teacher, with e = |P - G|:
    ALoss_T = mean(w * |T' - P|), w a constant (tf.stop_gradient) chosen by region:
      positive        e > t                : w = alpha
      negative        beta t < e <= t      : w = alpha_neg        (alpha_neg < 0)
      low-influence   e <= beta t          : w = 0                       (preset "code")
                                             w = alpha_neg e / (beta t)  (preset "paper", a ramp
                                                                          from 0 at G to alpha_neg at B)
Main loss, with e = |G - P| and d = |G - S|:
      e <= d : c e ;   e > d : e^2 + c d - d^2       (continuous at e = d)
Total: KD = w_main main + w_tough ALoss_Tough + w_tol ALoss_Tol.

Boundaries and edge cases (comparisons are exact, in the inputs' dtype):
  * P exactly on T' (e = t > 0): negative region, |T' - P| = 0, so the term is 0 (its gradient
    there is 0 too: TensorFlow's |x| has gradient sign(0) = 0).
  * P exactly on B (e = beta t > 0): low-influence region: w = 0 ("code") or w = alpha_neg
    ("paper", the end of the ramp, so the paper's weight is continuous at B).
  * T = G exactly (t = 0): B = T' = G. If P != G, e > 0 = t: positive region, w = alpha, the term is
    alpha |P - G| (the teacher is perfect, so the student is simply pulled to G). If also P = G:
    low region with weight 0 (the ramp's 0/0 is defined as 0).
  * P = G (e = 0): s = 0, so T' = B = G and |T' - P| = 0: the term is 0 whatever the teacher;
    the weight is that of the low region (0 in both presets).
  * Main loss at e = d: the L1 branch, c d (both branches agree there). d = 0 gives e^2 for any e.
Gradients: d|T' - P|/dP = sign(P - T'); with w = alpha > 0 beyond T' and w = alpha_neg < 0 between
G and T', dALoss/dP always has the sign of P - G: every non-zero term pulls the student toward G.

Student modes (`KDLoss(cfg, mode)`):
  * "kd": the full loss above (the Tolerant teacher's error d in the main loss, both assistive terms).
  * "tough-only": only the Tough teacher is available, so it also supplies the main loss's d
    (d = |G - A|) and only its assistive term is added (w_main main + w_tough ALoss_Tough).
  * "tolerant-only": d = |G - S| and only the Tolerant assistive term (w_main main + w_tol ALoss_Tol).
  * "l2": mean squared error against G (the baseline), teachers ignored.
These are the paper's "student with the Tough / Tolerant teacher only" ablations (METHOD.md 8); the
paper does not say which error the main loss used for the Tough-only student; we use the only
teacher present.
Teachers are trained with `l2_loss` (mean squared error, batch and coordinates averaged).
"""
from __future__ import annotations

from typing import Optional, Union

import tensorflow as tf

from configuration import LOSS_PRESETS, LossConfig, loss_config
from errors import ConfigError

MODES = ("kd", "tough-only", "tolerant-only", "l2")


def _cfg(cfg: Union[LossConfig, str, None]) -> LossConfig:
    if cfg is None:
        from configuration import DEFAULT_LOSS_PRESET
        return LOSS_PRESETS[DEFAULT_LOSS_PRESET]
    if isinstance(cfg, str):
        return loss_config(cfg)
    return cfg


def _as_tensor(x, dtype=None):
    x = tf.convert_to_tensor(x)
    if dtype is not None and x.dtype != dtype:
        x = tf.cast(x, dtype)
    return x


def _prepare(G, P, *others):
    """Cast everything to P's float dtype; G and teachers are constants (stop_gradient)."""
    P = _as_tensor(P)
    if not P.dtype.is_floating:
        P = tf.cast(P, tf.float32)
    dt = P.dtype
    G = tf.stop_gradient(_as_tensor(G, dt))
    rest = [tf.stop_gradient(_as_tensor(o, dt)) for o in others]
    return (G, P, *rest)


def l2_loss(y_true, y_pred):
    """Mean squared error over the batch and all coordinates (teachers and the L2 baseline)."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return tf.reduce_mean(tf.square(y_pred - y_true))


def main_loss_elementwise(G, P, S, cfg=None):
    """Per-coordinate main loss (same shape as P): c e for e <= d, e^2 + c d - d^2 beyond."""
    cfg = _cfg(cfg)
    G, P, S = _prepare(G, P, S)
    c = tf.constant(cfg.main_slope, P.dtype)
    e = tf.abs(G - P)
    d = tf.abs(G - S)
    return tf.where(e <= d, c * e, tf.square(e) + c * d - tf.square(d))


def main_loss(G, P, S, cfg=None):
    """Main loss averaged over batch and coordinates; S supplies d = |G - S|."""
    return tf.reduce_mean(main_loss_elementwise(G, P, S, cfg))


def assistive_weight(G, P, T, alpha, alpha_neg, cfg=None):
    """The per-coordinate weight w of one teacher's assistive loss (no gradient)."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    dt = P.dtype
    beta = tf.constant(cfg.beta, dt)
    a = tf.constant(alpha, dt)
    an = tf.constant(alpha_neg, dt)
    e = tf.abs(P - G)
    t = tf.abs(T - G)
    bt = beta * t
    zero = tf.zeros_like(e)
    if cfg.low_region == "zero":
        low = zero
    elif cfg.low_region == "ramp":
        low = an * tf.math.divide_no_nan(e, bt)     # 0 at G, alpha_neg at B; 0 when t = 0
    else:
        raise ConfigError(f"low_region={cfg.low_region!r}: use 'zero' (code) or 'ramp' (paper)")
    w = tf.where(e > t, a * tf.ones_like(e), tf.where(e > bt, an * tf.ones_like(e), low))
    return tf.stop_gradient(w)


def reflect(G, P, T):
    """T' = G + sign(P - G) |T - G|: the teacher mirrored onto the student's side (no gradient)."""
    G, P, T = _prepare(G, P, T)
    return tf.stop_gradient(G + tf.sign(P - G) * tf.abs(T - G))


def boundary(G, P, T, cfg=None):
    """B = G + sign(P - G) beta |T - G|."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    return tf.stop_gradient(G + tf.sign(P - G) * tf.constant(cfg.beta, P.dtype) * tf.abs(T - G))


def assistive_loss_elementwise(G, P, T, alpha, alpha_neg, cfg=None):
    """Per-coordinate w * |T' - P| of one teacher."""
    cfg = _cfg(cfg)
    G, P, T = _prepare(G, P, T)
    t_ref = tf.stop_gradient(G + tf.sign(P - G) * tf.abs(T - G))
    w = assistive_weight(G, P, T, alpha, alpha_neg, cfg)
    return w * tf.abs(t_ref - P)


def assistive_loss(G, P, T, alpha, alpha_neg, cfg=None):
    """ALoss_T = mean(w * |T' - P|) over batch and coordinates."""
    return tf.reduce_mean(assistive_loss_elementwise(G, P, T, alpha, alpha_neg, cfg))


def kd_loss_terms(G, P, A, S, cfg=None) -> dict:
    """All terms of the full KD-Loss: {"main", "tough", "tolerant", "total"} (scalars)."""
    cfg = _cfg(cfg)
    main = main_loss(G, P, S, cfg)
    tough = assistive_loss(G, P, A, cfg.alpha_tough, cfg.alpha_neg_tough, cfg)
    tolerant = assistive_loss(G, P, S, cfg.alpha_tol, cfg.alpha_neg_tol, cfg)
    total = cfg.w_main * main + cfg.w_tough * tough + cfg.w_tol * tolerant
    return {"main": main, "tough": tough, "tolerant": tolerant, "total": total}


class KDLoss:
    """The student's loss for a trainer: `loss(G, P, A=None, S=None)` returns the scalar total;
    `loss.terms(...)` the dict of its parts (absent parts are 0). See the module docstring for the
    modes "kd", "tough-only", "tolerant-only" and "l2"."""

    def __init__(self, cfg: Union[LossConfig, str, None] = None, mode: str = "kd"):
        if mode not in MODES:
            raise ConfigError(f"student mode {mode!r}: choose one of {', '.join(MODES)}")
        self.cfg = _cfg(cfg)
        self.mode = mode

    @property
    def needs_tough(self) -> bool:
        return self.mode in ("kd", "tough-only")

    @property
    def needs_tolerant(self) -> bool:
        return self.mode in ("kd", "tolerant-only")

    def terms(self, G, P, A: Optional[tf.Tensor] = None, S: Optional[tf.Tensor] = None) -> dict:
        cfg = self.cfg
        if self.needs_tough and A is None:
            raise ConfigError(f"KD-Loss mode {self.mode!r} needs the Tough teacher's predictions")
        if self.needs_tolerant and S is None:
            raise ConfigError(f"KD-Loss mode {self.mode!r} needs the Tolerant teacher's predictions")
        G, P = _prepare(G, P)
        zero = tf.zeros((), P.dtype)
        if self.mode == "l2":
            main = l2_loss(G, P)
            return {"main": main, "tough": zero, "tolerant": zero, "total": main}
        if self.mode == "kd":
            return kd_loss_terms(G, P, A, S, cfg)
        if self.mode == "tough-only":
            main = main_loss(G, P, A, cfg)
            tough = assistive_loss(G, P, A, cfg.alpha_tough, cfg.alpha_neg_tough, cfg)
            total = cfg.w_main * main + cfg.w_tough * tough
            return {"main": main, "tough": tough, "tolerant": zero, "total": total}
        main = main_loss(G, P, S, cfg)       # tolerant-only
        tolerant = assistive_loss(G, P, S, cfg.alpha_tol, cfg.alpha_neg_tol, cfg)
        total = cfg.w_main * main + cfg.w_tol * tolerant
        return {"main": main, "tough": zero, "tolerant": tolerant, "total": total}

    def __call__(self, G, P, A=None, S=None):
        return self.terms(G, P, A, S)["total"]

    def __repr__(self) -> str:
        return f"KDLoss(mode={self.mode!r}, cfg={self.cfg})"
