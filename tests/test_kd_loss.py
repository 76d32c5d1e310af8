"""KD-Loss (METHOD.md section 5) against a scalar NumPy reference written from the piecewise text."""
from __future__ import annotations

import math

import numpy as np
import pytest

import kd_loss
from configuration import LOSS_PRESETS
from errors import ConfigError

tf = pytest.importorskip("tensorflow")

PRESETS = ("code", "paper")


# ---------------------------------------------------------------------------------------------
# Reference: one scalar coordinate at a time, straight from METHOD.md section 5
# ---------------------------------------------------------------------------------------------

def ref_weight(g, p, t, alpha, alpha_neg, cfg):
    e = abs(p - g)
    dist_t = abs(t - g)
    if dist_t == 0.0:                    # T = G exactly: both weights vanish (METHOD.md 5)
        return 0.0
    if e > dist_t:                       # positive region: beyond T'
        return alpha
    if e >= cfg.beta * dist_t:           # negative region: from B (included, as `>= 0`) to T'
        return alpha_neg
    # low-influence region: between G and B (includes P = G)
    if cfg.low_region == "zero":
        return 0.0
    return alpha_neg * e / (cfg.beta * dist_t)


def ref_assist_scalar(g, p, t, alpha, alpha_neg, cfg):
    s = float(np.sign(p - g))
    t_ref = g + s * abs(t - g)
    return ref_weight(g, p, t, alpha, alpha_neg, cfg) * abs(t_ref - p)


def ref_main_scalar(g, p, s, cfg):
    e = abs(g - p)
    d = abs(g - s)
    if e <= d:
        return cfg.main_slope * e
    return e * e + cfg.main_slope * d - d * d


def ref_mean(fn, *arrays):
    flat = [np.asarray(a, np.float64).ravel() for a in arrays]
    return float(np.mean([fn(*vals) for vals in zip(*flat)]))


def ref_terms(G, P, A, S, cfg):
    main = ref_mean(lambda g, p, s: ref_main_scalar(g, p, s, cfg), G, P, S)
    tough = ref_mean(lambda g, p, t: ref_assist_scalar(g, p, t, cfg.alpha_tough,
                                                       cfg.alpha_neg_tough, cfg), G, P, A)
    tol = ref_mean(lambda g, p, t: ref_assist_scalar(g, p, t, cfg.alpha_tol,
                                                     cfg.alpha_neg_tol, cfg), G, P, S)
    total = cfg.w_main * main + cfg.w_tough * tough + cfg.w_tol * tol
    return {"main": main, "tough": tough, "tolerant": tol, "total": total}


def tf_terms(G, P, A, S, cfg):
    out = kd_loss.kd_loss_terms(tf.constant(G, tf.float64), tf.constant(P, tf.float64),
                                tf.constant(A, tf.float64), tf.constant(S, tf.float64), cfg)
    return {k: float(v.numpy()) for k, v in out.items()}


def random_batch(rng, b=6, n=5):
    G = rng.uniform(-0.5, 0.5, (b, 2 * n))
    P = G + rng.normal(0, 0.05, G.shape)
    A = G + rng.normal(0, 0.03, G.shape)
    S = G + rng.normal(0, 0.04, G.shape)
    return G, P, A, S


def boundary_batch(cfg):
    """Columns covering every region boundary and edge case, G = 0 and G != 0, both sides."""
    beta = cfg.beta
    cols = []
    for g in (0.0, 0.25, -0.125):
        for sgn in (1.0, -1.0):
            for tside in (1.0, -1.0):
                t = 0.125
                T = g + tside * t
                cols += [
                    (g, g, T),                          # P = G
                    (g, g + sgn * t, T),                # P exactly on T'
                    (g, g + sgn * beta * t, T),         # P exactly on B
                    (g, g + sgn * 0.5 * beta * t, T),   # inside the low region
                    (g, g + sgn * 0.5 * t, T),          # negative region
                    (g, g + sgn * 2.0 * t, T),          # positive region
                    (g, g + sgn * 0.0625, g),           # T = G exactly, P != G
                    (g, g, g),                          # T = G and P = G
                ]
    arr = np.array(cols, np.float64)
    return arr[:, 0:1].T, arr[:, 1:2].T, arr[:, 2:3].T   # (1, K) each


# ---------------------------------------------------------------------------------------------
# Agreement with the reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_matches_reference_random(preset):
    cfg = LOSS_PRESETS[preset]
    rng = np.random.default_rng(0)
    for _ in range(3):
        G, P, A, S = random_batch(rng)
        got, want = tf_terms(G, P, A, S, cfg), ref_terms(G, P, A, S, cfg)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15), k


@pytest.mark.parametrize("preset", PRESETS)
def test_matches_reference_on_every_boundary(preset):
    cfg = LOSS_PRESETS[preset]
    G, P, T = boundary_batch(cfg)
    # the same teacher values serve as Tough and Tolerant; S also sets the main loss's d
    got, want = tf_terms(G, P, T, T, cfg), ref_terms(G, P, T, T, cfg)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15), k
    # element by element, weights and assistive values
    w = kd_loss.assistive_weight(G, P, T, cfg.alpha_tough, cfg.alpha_neg_tough, cfg).numpy().ravel()
    w_ref = [ref_weight(g, p, t, cfg.alpha_tough, cfg.alpha_neg_tough, cfg)
             for g, p, t in zip(G.ravel(), P.ravel(), T.ravel())]
    np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=0)
    el = kd_loss.assistive_loss_elementwise(G, P, T, cfg.alpha_tough, cfg.alpha_neg_tough,
                                            cfg).numpy().ravel()
    el_ref = [ref_assist_scalar(g, p, t, cfg.alpha_tough, cfg.alpha_neg_tough, cfg)
              for g, p, t in zip(G.ravel(), P.ravel(), T.ravel())]
    np.testing.assert_allclose(el, el_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("preset", PRESETS)
def test_edge_cases_defined(preset):
    cfg = LOSS_PRESETS[preset]
    a, an = cfg.alpha_tough, cfg.alpha_neg_tough

    def one(g, p, t):
        g, p, t = (np.array([[x]], np.float64) for x in (g, p, t))
        w = kd_loss.assistive_weight(g, p, t, a, an, cfg).numpy().item()
        v = kd_loss.assistive_loss(g, p, t, a, an, cfg).numpy().item()
        return w, v

    # P = G: term 0, weight 0 (low region), whatever the teacher
    assert one(0.25, 0.25, 0.5) == (0.0, 0.0)
    # P exactly on T' (either side of G, teacher on either side): negative region, term 0
    for p, t in ((0.375, 0.375), (0.375, 0.125), (0.125, 0.375), (0.125, 0.125)):
        w, v = one(0.25, p, t)
        assert w == an and v == 0.0


@pytest.mark.parametrize("preset", PRESETS)
def test_teacher_exactly_on_ground_truth_gives_no_weight(preset):
    """METHOD.md section 5: T = G exactly, both weights vanish (alpha and alpha_neg), in both presets,
    wherever the student is."""
    cfg = LOSS_PRESETS[preset]
    g = np.full((1, 5), 0.25)
    p = g + np.array([[0.125, -0.5, 1e-9, 0.0, 3.0]])
    for alpha, alpha_neg in ((cfg.alpha_tough, cfg.alpha_neg_tough), (cfg.alpha_tol, cfg.alpha_neg_tol)):
        w = kd_loss.assistive_weight(g, p, g, alpha, alpha_neg, cfg).numpy()
        v = kd_loss.assistive_loss(g, p, g, alpha, alpha_neg, cfg).numpy()
        np.testing.assert_array_equal(w, np.zeros_like(g))
        assert v == 0.0
    # the full loss then is the main loss alone: w_main * c * |P - G| wherever e <= d = 0 fails,
    # i.e. the L2 tail e^2 (d = 0): hand-computed mean of 2 e^2
    total = kd_loss.kd_loss_terms(g, p, g, g, cfg)["total"].numpy()
    assert total == pytest.approx(cfg.w_main * np.mean((p - g) ** 2), rel=1e-12)


@pytest.mark.parametrize("preset", PRESETS)
def test_student_exactly_on_boundary_is_in_the_negative_region(preset):
    """METHOD.md section 5 / the authors' code (`>= 0`): P exactly on B gets alpha_neg, in both
    presets (for "paper" it is also the end of the ramp); just inside B the "code" weight is 0."""
    cfg = LOSS_PRESETS[preset]
    a, an = cfg.alpha_tough, cfg.alpha_neg_tough
    t = 0.5
    for side in (1.0, -1.0):
        for tside in (1.0, -1.0):
            g = np.array([[0.0]])
            p = np.array([[side * cfg.beta * t]])            # |P - G| = beta |T - G| exactly
            T = np.array([[tside * t]])
            assert abs(p.item()) == cfg.beta * t
            w = kd_loss.assistive_weight(g, p, T, a, an, cfg).numpy().item()
            v = kd_loss.assistive_loss(g, p, T, a, an, cfg).numpy().item()
            assert w == an
            assert v == pytest.approx(an * (1 - cfg.beta) * t, rel=1e-12)   # |T' - P| = (1 - beta) t
            inside = kd_loss.assistive_weight(g, p * (1 - 1e-9), T, a, an, cfg).numpy().item()
            if cfg.low_region == "zero":
                assert inside == 0.0
            else:
                assert inside == pytest.approx(an, rel=1e-8) and inside != an


# ---------------------------------------------------------------------------------------------
# Gradients, continuity, closed forms
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_gradient_pulls_toward_ground_truth(preset):
    cfg = LOSS_PRESETS[preset]
    rng = np.random.default_rng(3)
    G = rng.uniform(-0.5, 0.5, (64, 10))
    T = G + rng.normal(0, 0.05, G.shape)
    dist_t = np.abs(T - G)
    # P spread across the three regions on both sides of G
    frac = rng.choice([0.5 * cfg.beta, 0.5 * (1 + cfg.beta), 2.0], size=G.shape)
    side = rng.choice([-1.0, 1.0], size=G.shape)
    P = G + side * frac * dist_t
    Pv = tf.Variable(P)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kd_loss.assistive_loss_elementwise(G, Pv, T, cfg.alpha_tough,
                                                                cfg.alpha_neg_tough, cfg))
    grad = tape.gradient(loss, Pv).numpy()
    w = kd_loss.assistive_weight(G, P, T, cfg.alpha_tough, cfg.alpha_neg_tough, cfg).numpy()
    nonzero = w != 0
    assert nonzero.sum() > 0.5 * G.size
    np.testing.assert_array_equal(np.sign(grad[nonzero]), np.sign(P - G)[nonzero])
    np.testing.assert_allclose(np.abs(grad), np.abs(w))     # |d/dP| = |w| (w is a constant)
    # every region is represented
    e = np.abs(P - G)
    assert (e > dist_t).any() and ((e > cfg.beta * dist_t) & (e <= dist_t)).any()
    assert (e <= cfg.beta * dist_t).any()

    # main loss and the full KD-Loss: the same sign
    Pv2 = tf.Variable(P)
    S = G + rng.normal(0, 0.05, G.shape)
    with tf.GradientTape(persistent=True) as tape:
        main = kd_loss.main_loss(G, Pv2, S, cfg)
        total = kd_loss.kd_loss_terms(G, Pv2, T, S, cfg)["total"]
    g_main = tape.gradient(main, Pv2).numpy()
    assert np.all(np.sign(g_main) == np.sign(P - G))
    g_total = tape.gradient(total, Pv2).numpy()
    assert np.all(np.sign(g_total) == np.sign(P - G))


def test_no_gradient_into_teachers_or_ground_truth():
    cfg = LOSS_PRESETS["code"]
    G = tf.Variable([[0.1, -0.2]], dtype=tf.float64)
    A = tf.Variable([[0.15, -0.1]], dtype=tf.float64)
    S = tf.Variable([[0.0, -0.25]], dtype=tf.float64)
    P = tf.Variable([[0.3, -0.3]], dtype=tf.float64)
    with tf.GradientTape() as tape:
        total = kd_loss.kd_loss_terms(G, P, A, S, cfg)["total"]
    grads = tape.gradient(total, [G, A, S, P])
    assert grads[0] is None and grads[1] is None and grads[2] is None
    assert grads[3] is not None


@pytest.mark.parametrize("preset", PRESETS)
def test_main_loss_continuous_at_e_equals_d(preset):
    cfg = LOSS_PRESETS[preset]
    d = 0.2
    eps = 1e-9
    vals = [kd_loss.main_loss([[0.0]], [[e]], [[d]], cfg).numpy().item()
            for e in (d - eps, d, d + eps)]
    assert vals[1] == pytest.approx(cfg.main_slope * d)
    assert abs(vals[0] - vals[1]) < 1e-7 and abs(vals[2] - vals[1]) < 1e-7


def test_closed_form_hand_cases():
    code, paper = LOSS_PRESETS["code"], LOSS_PRESETS["paper"]
    # main loss: e = 0.1 <= d = 0.2 -> c e ; e = 0.5 > d = 0.2 -> e^2 + c d - d^2
    assert kd_loss.main_loss([[0.0]], [[0.1]], [[0.2]], code).numpy() == pytest.approx(0.3)
    assert kd_loss.main_loss([[0.0]], [[0.5]], [[0.2]], code).numpy() == pytest.approx(
        0.25 + 0.6 - 0.04)
    assert kd_loss.main_loss([[0.0]], [[0.5]], [[0.2]], paper).numpy() == pytest.approx(
        0.25 + 0.2 - 0.04)
    # assistive, code preset, G = 0, teacher at -0.2 (reflected to +0.2), B = 0.03
    a, an = code.alpha_tough, code.alpha_neg_tough
    assert kd_loss.assistive_loss([[0.0]], [[0.5]], [[-0.2]], a, an, code).numpy() == \
        pytest.approx(1.9 * 0.3)                       # positive region
    assert kd_loss.assistive_loss([[0.0]], [[0.1]], [[-0.2]], a, an, code).numpy() == \
        pytest.approx(-0.45 * 0.1)                     # negative region
    assert kd_loss.assistive_loss([[0.0]], [[0.01]], [[-0.2]], a, an, code).numpy() == 0.0  # low
    # paper preset, G = 0, T = 0.2, B = 0.08; P = 0.04 -> ramp weight -0.5 * 0.5 = -0.25
    a, an = paper.alpha_tough, paper.alpha_neg_tough
    assert kd_loss.assistive_loss([[0.0]], [[0.04]], [[0.2]], a, an, paper).numpy() == \
        pytest.approx(-0.25 * 0.16)
    # full total, code preset, one coordinate: G=0, P=0.5, A=0.2, S=0.1
    terms = kd_loss.kd_loss_terms([[0.0]], [[0.5]], [[0.2]], [[0.1]], code)
    main = 0.25 + 3 * 0.1 - 0.01
    tough = 1.9 * 0.3
    tol = 1.8 * 0.4
    assert terms["total"].numpy() == pytest.approx(2 * main + tough + tol)


def test_means_over_batch_and_coordinates():
    cfg = LOSS_PRESETS["code"]
    G = np.zeros((2, 4))
    P = np.zeros((2, 4))
    P[0, 0] = 0.1                                     # one coordinate of eight
    assert kd_loss.main_loss(G, P, G, cfg).numpy() == pytest.approx(0.01 / 8)
    assert kd_loss.l2_loss(G, P).numpy() == pytest.approx(0.01 / 8)


# ---------------------------------------------------------------------------------------------
# KDLoss modes
# ---------------------------------------------------------------------------------------------

def test_kdloss_modes():
    rng = np.random.default_rng(7)
    G, P, A, S = random_batch(rng)
    for preset in PRESETS:
        cfg = LOSS_PRESETS[preset]
        full = kd_loss.KDLoss(preset, "kd").terms(G, P, A, S)
        ref = ref_terms(G, P, A, S, cfg)
        assert float(full["total"]) == pytest.approx(ref["total"], rel=1e-12)

        tough = kd_loss.KDLoss(cfg, "tough-only")
        ref_t = ref_terms(G, P, A, A, cfg)             # d from the Tough teacher
        assert float(tough(G, P, A=A)) == pytest.approx(
            cfg.w_main * ref_t["main"] + cfg.w_tough * ref_t["tough"], rel=1e-12)
        assert float(tough.terms(G, P, A=A)["tolerant"]) == 0.0

        tol = kd_loss.KDLoss(cfg, "tolerant-only")
        assert float(tol(G, P, S=S)) == pytest.approx(
            cfg.w_main * ref["main"] + cfg.w_tol * ref["tolerant"], rel=1e-12)

        l2 = kd_loss.KDLoss(cfg, "l2")
        assert float(l2(G, P)) == pytest.approx(np.mean((G - P) ** 2), rel=1e-12)

    with pytest.raises(ConfigError):
        kd_loss.KDLoss("code", "nonsense")
    with pytest.raises(ConfigError):
        kd_loss.KDLoss("code", "kd")(G, P, A=A)          # Tolerant predictions missing
    with pytest.raises(ConfigError):
        kd_loss.KDLoss("unknown-preset")


def test_l1_and_wing_closed_form():
    """Hand-computed values: L1 is the mean |P - G|; Wing (w = 10/64, eps = 2/64) is
    w ln(1 + e / eps) below w and e - (w - w ln(1 + w / eps)) beyond, continuous at e = w."""
    from configuration import WING_CURVATURE, WING_WIDTH

    assert (WING_WIDTH, WING_CURVATURE) == (10 / 64, 2 / 64)   # Feng et al.'s 10 px / 2 px at 64 px
    G = np.zeros((1, 4))
    P = np.array([[0.01, -0.03, 0.5, -1.0]])
    assert float(kd_loss.KDLoss("code", "l1")(G, P)) == pytest.approx((0.01 + 0.03 + 0.5 + 1.0) / 4, rel=1e-12)
    w, eps = 10 / 64, 2 / 64
    c = w - w * np.log(1 + w / eps)
    by_hand = [w * np.log(1 + 0.01 / eps), w * np.log(1 + 0.03 / eps), 0.5 - c, 1.0 - c]
    wing = kd_loss.KDLoss("paper", "wing")
    assert float(wing(G, P)) == pytest.approx(np.mean(by_hand), rel=1e-12)
    terms = wing.terms(G, P)
    assert float(terms["tough"]) == float(terms["tolerant"]) == 0.0
    assert float(terms["main"]) == float(terms["total"])
    # continuous at the width; near 0 steeper than L1 (slope w / eps = 5)
    below, above = (float(kd_loss.wing_loss(G[:, :1], np.array([[w + d]]))) for d in (-1e-9, 1e-9))
    assert below == pytest.approx(above, abs=1e-8)
    assert float(kd_loss.wing_loss(G[:, :1], np.array([[1e-6]]))) == pytest.approx(5e-6, rel=1e-4)


def test_teacher_free_modes_ignore_teachers_and_pull_to_ground_truth():
    rng = np.random.default_rng(3)
    G, P, A, S = random_batch(rng)
    for mode in ("l1", "wing", "l2"):
        loss = kd_loss.KDLoss("code", mode)
        assert not loss.needs_tough and not loss.needs_tolerant
        assert float(loss(G, P)) == float(loss(G, P, A, S))
        Pv = tf.Variable(P)
        with tf.GradientTape() as tape:
            value = loss(G, Pv)
        grad = tape.gradient(value, Pv).numpy()
        moved = P != G
        assert np.all(np.sign(grad[moved]) == np.sign((P - G)[moved]))
    # L1's gradient is the sign alone: the shape KD-Loss has when its teachers say nothing
    Pv = tf.Variable(P)
    with tf.GradientTape() as tape:
        value = kd_loss.KDLoss("code", "l1")(G, Pv)
    np.testing.assert_allclose(tape.gradient(value, Pv).numpy(), np.sign(P - G) / P.size, rtol=1e-12)


def test_float32_inputs_and_tf_function():
    cfg = LOSS_PRESETS["code"]
    rng = np.random.default_rng(1)
    G, P, A, S = (x.astype(np.float32) for x in random_batch(rng, b=4, n=68))
    loss = kd_loss.KDLoss(cfg, "kd")
    fn = tf.function(lambda g, p, a, s: loss(g, p, a, s))
    out = fn(G, P, A, S)
    assert out.dtype == tf.float32
    assert math.isclose(float(out), ref_terms(G, P, A, S, cfg)["total"], rel_tol=1e-5)
