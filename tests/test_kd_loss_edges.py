"""kd_loss.py where mutmut found the tests silent (docs/MUTATION.md): the boundary point B of both
presets, and saving a Distiller (its student only)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402

import kd_loss  # noqa: E402
from configuration import LOSS_PRESETS  # noqa: E402

G = np.array([[0.10, 0.10, -0.20, 0.30, 0.0]])
T = np.array([[0.30, -0.10, -0.20, 0.10, 0.5]])
P = np.array([[0.50, 0.05, -0.30, 0.30, -0.2]])


@pytest.mark.parametrize("preset, beta", [("code", 0.15), ("paper", 0.4)])
def test_boundary_by_hand(preset, beta):
    # B = G + sign(P - G) * beta * |T - G|, per coordinate; P = G gives B = G
    want = [[0.10 + beta * 0.20, 0.10 - beta * 0.20, -0.20 - 0.0, 0.30 + 0.0 * beta, -beta * 0.5]]
    got = kd_loss.boundary(G, P, T, LOSS_PRESETS[preset])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    by_name = kd_loss.boundary(G, P, T, preset)
    np.testing.assert_allclose(np.asarray(by_name), want, rtol=1e-6, atol=1e-7)


def test_boundary_default_is_the_code_preset():
    np.testing.assert_allclose(np.asarray(kd_loss.boundary(G, P, T)),
                               np.asarray(kd_loss.boundary(G, P, T, "code")), rtol=0, atol=0)


def test_saving_a_distiller_saves_its_student(tmp_path):
    import keras

    from student_trainer import Distiller

    def net(seed, width):
        keras.utils.set_random_seed(seed)
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Flatten()(inp)
        x = keras.layers.Dense(width)(x)
        return keras.Model(inp, keras.layers.Dense(4)(x))

    student, tough, tolerant = net(0, 3), net(1, 5), net(2, 7)
    d = Distiller(student, tough, tolerant, mode="kd")
    path = tmp_path / "student.keras"
    d.save(path)
    back = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    assert back.count_params() == student.count_params()
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(student(x)), rtol=1e-6, atol=1e-6)


def test_integer_predictions_are_cast_to_float32():
    """An integer P (no float dtype) is computed in float32, the ground truth cast to float32 too
    (not to P's integer type, which would drop G's fractions)."""
    g = np.array([[0.5, 2.0]])
    p = np.array([[0, 4]], np.int32)
    out = kd_loss.l2_loss(g, p)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(out) == pytest.approx((0.25 + 4.0) / 2)
    assert float(kd_loss.l1_loss(g, p)) == pytest.approx((0.5 + 2.0) / 2)


def test_terms_keep_the_float64_of_the_inputs():
    g, p, a = (np.array([[0.1, 0.2]], np.float64), np.array([[0.3, 0.1]], np.float64),
               np.array([[0.2, 0.2]], np.float64))
    for mode, extra in (("l2", {}), ("tough-only", {"A": a})):
        terms = kd_loss.KDLoss("code", mode).terms(g, p, **extra)
        got = {k: keras.backend.standardize_dtype(v.dtype) for k, v in terms.items()}
        assert got == dict.fromkeys(terms, "float64"), mode


def test_default_mode_is_kd_and_errors_name_the_problem():
    assert kd_loss.KDLoss().mode == "kd" and kd_loss.KDLoss("paper").mode == "kd"
    with pytest.raises(kd_loss.ConfigError,
                       match="--student-mode 'kdd': choose one of kd, l2, l1, wing, tough-only, tolerant-only"):
        kd_loss.check_mode("kdd")
    g = np.zeros((1, 2))
    with pytest.raises(kd_loss.ConfigError, match="KD-Loss mode 'kd' needs the Tough teacher's predictions"):
        kd_loss.KDLoss("code", "kd").terms(g, g, None, g)
    with pytest.raises(kd_loss.ConfigError, match="KD-Loss mode 'kd' needs the Tolerant teacher's predictions"):
        kd_loss.KDLoss("code", "kd").terms(g, g, g, None)
    bad = LOSS_PRESETS["code"].__class__(**{**LOSS_PRESETS["code"].__dict__, "low_region": "flat"})
    with pytest.raises(kd_loss.ConfigError, match="low_region='flat': use 'zero' \\(code\\) or 'ramp' \\(paper\\)"):
        kd_loss.assistive_weight(g, g, g + 0.1, 1.0, -0.5, bad)


def _bn_dropout_net(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Flatten()(inp))
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inp, keras.layers.Dense(4)(x))
    bn = model.layers[2]
    g, b, _, _ = bn.get_weights()
    bn.set_weights([g, b, np.full_like(g, 0.8), np.full_like(g, 0.01)])
    return model


def test_calling_a_distiller_is_the_students_inference():
    from student_trainer import Distiller

    student = _bn_dropout_net(0)
    d = Distiller(student, _bn_dropout_net(1), _bn_dropout_net(2), mode="kd")
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    want = np.asarray(student(x, training=False))
    np.testing.assert_allclose(np.asarray(d(x)), want, rtol=1e-6, atol=1e-6)    # default: inference
    # call's own default too (Keras fills training from call's signature when it is not given)
    np.testing.assert_allclose(np.asarray(d.call(x)), want, rtol=1e-6, atol=1e-6)


def test_distiller_loss_with_plain_and_dict_targets():
    """compute_loss takes y as the ground truth itself or as {"landmarks": G} (eagerly, no fit)."""
    from student_trainer import Distiller

    def net(seed):
        keras.utils.set_random_seed(seed)
        inp = keras.Input((8, 8, 3))
        return keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp)))

    student, tough, tolerant = net(0), net(1), net(2)
    d = Distiller(student, tough, tolerant, mode="kd")
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    g = np.random.default_rng(3).uniform(-0.3, 0.3, (3, 4)).astype("float32")
    p = student(x)
    want = float(kd_loss.KDLoss(None, "kd")(g, p, tough(x), tolerant(x)))
    assert float(d.compute_loss(x, g, p)) == pytest.approx(want, rel=1e-5)
    assert float(d.compute_loss(x, {"landmarks": g}, p)) == pytest.approx(want, rel=1e-5)


def test_distiller_save_passes_the_options_on(tmp_path):
    from student_trainer import Distiller

    inp = keras.Input((8, 8, 3))
    student = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp)))
    d = Distiller(student, mode="l2")
    d.save(tmp_path / "by_keyword", zipped=False)        # an unzipped folder, not a .keras file
    d.save(tmp_path / "positional", True, False)          # overwrite=True, zipped=False
    assert (tmp_path / "by_keyword" / "config.json").is_file()
    assert (tmp_path / "positional" / "config.json").is_file()


def _dense(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    return keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp)))


def test_distiller_uses_the_cached_teacher_predictions_of_the_batch():
    from student_trainer import Distiller

    student, tough, tolerant = _dense(0), _dense(1), _dense(2)
    d = Distiller(student, tough, tolerant, mode="kd")
    x = np.random.default_rng(4).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    g = np.zeros((3, 4), np.float32)
    a = np.full((3, 4), 0.2, np.float32)          # cached predictions unlike the teachers' own
    s = np.full((3, 4), -0.1, np.float32)
    p = student(x)
    want = float(kd_loss.KDLoss(None, "kd")(g, p, a, s))
    assert want != pytest.approx(float(kd_loss.KDLoss(None, "kd")(g, p, tough(x), tolerant(x))))
    got = float(d.compute_loss(x, {"landmarks": g, "tough": a, "tolerant": s}, p))
    assert got == pytest.approx(want, rel=1e-5)


def test_distiller_logs_batch_size_weighted_terms():
    """The logged "main", "tough", "tolerant" are means over faces: batches weigh by their size."""
    from student_trainer import Distiller

    student, tough, tolerant = _dense(0), _dense(1), _dense(2)
    d = Distiller(student, tough, tolerant, mode="kd")
    rng = np.random.default_rng(5)
    want, sizes = {"main": [], "tough": [], "tolerant": []}, (1, 3)
    for m in sizes:
        x = rng.uniform(0, 1, (m, 8, 8, 3)).astype("float32")
        g = rng.uniform(-0.3, 0.3, (m, 4)).astype("float32")
        p = student(x)
        terms = kd_loss.KDLoss(None, "kd").terms(g, p, tough(x), tolerant(x))
        for k in want:
            want[k].append(float(terms[k]))
        d.compute_loss(x, g, p)
    for tracker in (d.main_tracker, d.tough_tracker, d.tolerant_tracker):
        weighted = np.average(want[tracker.name], weights=sizes)
        assert float(tracker.result()) == pytest.approx(weighted, rel=1e-5), tracker.name
        assert abs(np.mean(want[tracker.name]) - weighted) > 1e-4 * abs(weighted)


def test_distiller_loss_adds_the_students_regularisation():
    from student_trainer import Distiller

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    dense = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.5))
    student = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    tough, tolerant = _dense(1), _dense(2)
    d = Distiller(student, tough, tolerant, mode="kd")
    x = np.random.default_rng(6).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    g = np.zeros((2, 4), np.float32)
    p = student(x)
    kd = float(kd_loss.KDLoss(None, "kd")(g, p, tough(x), tolerant(x)))
    l2 = 0.5 * float(np.sum(np.square(dense.kernel.numpy())))
    assert l2 > 0.1 * kd
    assert float(d.compute_loss(x, g, p)) == pytest.approx(kd + l2, rel=1e-5)


@pytest.mark.parametrize("mode", ["l2", "tough-only", "tolerant-only"])
def test_distiller_calls_only_the_teachers_its_mode_needs(mode):
    """A teacher the mode does not need may be absent (None): it is never called."""
    from student_trainer import Distiller

    student = _dense(0)
    tough = _dense(1) if mode == "tough-only" else None
    tolerant = _dense(2) if mode == "tolerant-only" else None
    d = Distiller(student, tough, tolerant, mode=mode)
    x = np.random.default_rng(7).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    g = np.zeros((2, 4), np.float32)
    p = student(x)
    want = float(kd_loss.KDLoss(None, mode)(g, p, None if tough is None else tough(x),
                                            None if tolerant is None else tolerant(x)))
    assert float(d.compute_loss(x, g, p)) == pytest.approx(want, rel=1e-5)


def test_distiller_settings_name_and_frozen_teachers():
    """The Distiller's own settings: its name, the default mode "kd", the loss preset it is given,
    the one-line error for a missing teacher, and only the student's weights trainable."""
    from errors import ConfigError
    from student_trainer import Distiller

    student, tough, tolerant = _dense(0), _dense(1), _dense(2)
    d = Distiller(student, tough, tolerant)
    assert d.name == "distiller" and d.kd_loss.mode == "kd" and d.kd_loss.cfg == LOSS_PRESETS["code"]
    assert not tough.trainable and not tolerant.trainable and student.trainable
    assert {id(w) for w in d.trainable_weights} == {id(w) for w in student.trainable_weights}
    assert Distiller(_dense(0), mode="l2", name="mine").name == "mine"
    frozen = Distiller(_dense(0), mode="l2", trainable=False, dtype="float64")   # Keras' own options passed on
    assert frozen.trainable is False and frozen.trainable_weights == [] and frozen.dtype_policy.name == "float64"
    x = np.random.default_rng(8).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    g = np.zeros((2, 4), np.float32)
    p = student(x)
    paper = Distiller(student, tough, tolerant, loss_config="paper")
    want = float(kd_loss.KDLoss("paper", "kd")(g, p, tough(x), tolerant(x)))
    assert want != pytest.approx(float(kd_loss.KDLoss("code", "kd")(g, p, tough(x), tolerant(x))))
    assert float(paper.compute_loss(x, g, p)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ConfigError, match="^student mode 'kd' needs the Tough teacher$"):
        Distiller(student, None, tolerant)
    with pytest.raises(ConfigError, match="^student mode 'tolerant-only' needs the Tolerant teacher$"):
        Distiller(student, tough, None, mode="tolerant-only")
