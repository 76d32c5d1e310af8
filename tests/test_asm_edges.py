"""asm_soft_landmarks.py value by value (issue 37 item 3, mutmut's survivors): the similarity
alignment in closed form, the number of components kept for known variances, the clipping bound, the
layouts given back, the file's fields and its one-line errors, the movement statistics by hand. Fast:
small synthetic shape sets, no training."""
from __future__ import annotations

import numpy as np
import pytest

import asm_soft_landmarks as asm
from errors import ConfigError, DataFormatError, ModelError


def _msg(fn, *args, error=Exception, **kw):
    with pytest.raises(error) as err:
        fn(*args, **kw)
    return str(err.value)


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


REF = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 2.0], [0.0, 3.0], [1.0, 1.0]])
REF = REF - REF.mean(0)        # centred, as procrustes_reference gives (undo needs a centred reference)


def test_vectors_and_their_layout():
    x3 = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    v, shape = asm._as_vectors(x3)
    assert v.dtype == np.float64 and v.shape == (3, 8) and shape == (3, 4, 2) and v[1, 2] == 10
    v2, shape2 = asm._as_vectors(v)
    assert v2 is not None and shape2 == (3, 8) and np.array_equal(v2, v)
    for bad in (np.zeros((3, 4, 3)), np.zeros(5), np.zeros((2, 2, 2, 2))):
        assert _msg(asm._as_vectors, bad, error=ConfigError) == (
            f"shapes of shape {bad.shape}: expected (M, N, 2) or (M, 2N)")


@pytest.mark.parametrize("theta,scale,shift", [(0.3, 2.0, (5.0, -1.0)), (-2.5, 0.5, (0.0, 0.0)), (0.0, 1.0, (3, 3))])
def test_similarity_align_in_closed_form(theta, scale, shift):
    """A shape that is the reference rotated, scaled and moved aligns back onto the reference (at the
    reference's centroid), with scale 1/s and the inverse rotation; undo gives the shape back."""
    moved = scale * REF @ _rot(theta).T + np.asarray(shift)
    other = REF + np.array([[0.1, 0], [0, 0.2], [0, 0], [0.3, 0], [0, 0]])
    aligned, (centroids, scales, rotations) = asm.similarity_align(np.stack([moved, other]), REF)
    np.testing.assert_allclose(aligned[0], REF, atol=1e-12)
    assert scales[0] == pytest.approx(1 / scale)
    np.testing.assert_allclose(centroids[0, 0], moved.mean(0))
    np.testing.assert_allclose(rotations[0], _rot(theta), atol=1e-12)      # row vectors: p @ R undoes theta
    np.testing.assert_allclose(asm.undo_similarity(aligned, (centroids, scales, rotations)),
                               np.stack([moved, other]), atol=1e-12)
    assert aligned.shape == (2, 5, 2) and centroids.shape == (2, 1, 2) and rotations.shape == (2, 2, 2)


def test_a_mirrored_shape_is_not_reflected():
    mirrored = REF * np.array([-1.0, 1.0])
    aligned, (_, scales, rotations) = asm.similarity_align(mirrored[None], REF)
    assert np.linalg.det(rotations[0]) == pytest.approx(1.0)                 # a rotation, not a reflection
    assert not np.allclose(aligned[0], REF, atol=1e-3)


def test_degenerate_shape_does_not_divide_by_zero():
    point = np.zeros((1, 5, 2)) + 3.0
    with np.errstate(all="raise"):
        aligned, (_, scales, _) = asm.similarity_align(point, REF)
    assert np.all(np.isfinite(aligned)) and scales[0] == 0.0
    np.testing.assert_allclose(aligned[0], np.broadcast_to(REF.mean(0), (5, 2)))
    unit = asm._centred_unit(np.ones((4, 2)))
    assert np.all(unit == 0)


def test_procrustes_reference_is_centred_unit_and_pose_free():
    rng = np.random.default_rng(0)
    base = REF + rng.normal(0, 0.05, (20, 5, 2))
    posed = np.stack([s * b @ _rot(t).T + d for b, s, t, d in
                      zip(base, rng.uniform(0.5, 2, 20), rng.uniform(-1, 1, 20), rng.uniform(-9, 9, (20, 2)))])
    for iterations in (0, 1, 5):
        ref = asm.procrustes_reference(posed, iterations)
        assert ref.shape == (5, 2) and np.allclose(ref.mean(0), 0) and np.linalg.norm(ref) == pytest.approx(1)
    ref = asm.procrustes_reference(posed)
    target = asm.similarity_align(asm._centred_unit(REF)[None], ref)[0][0]
    np.testing.assert_allclose(ref, target, atol=0.03)                        # the mean shape, up to pose


def _shapes_with_variances(variances, m=400, seed=0):
    """Shapes (m, 3, 2) whose PCA has exactly the given variance per direction (orthogonal)."""
    rng = np.random.default_rng(seed)
    k = len(variances)
    z = rng.normal(size=(m, k))
    z -= z.mean(0)
    q, _ = np.linalg.qr(z)                                                    # orthonormal columns
    scores = q * np.sqrt(np.asarray(variances) * (m - 1))
    directions = np.eye(6)[:k]
    return (scores @ directions).reshape(m, 3, 2) + 1.0


@pytest.mark.parametrize("variance,k", [(0.5, 1), (0.6, 1), (0.61, 2), (0.9, 2), (0.9000001, 3),
                                        (0.95, 3), (0.99999, 4), (1.0, 6)])
def test_components_kept_for_known_variances(variance, k):
    shapes = _shapes_with_variances([6.0, 3.0, 0.9, 0.1])                     # ratios .6 .3 .09 .01
    model = asm.ActiveShapeModel().fit(shapes, variance)
    assert model.k == k and model.variance == variance and model.fit_shapes == 400
    np.testing.assert_allclose(model.eigenvalues, [6.0, 3.0, 0.9, 0.1, 0, 0][:k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.explained_ratio, [0.6, 0.3, 0.09, 0.01, 0, 0][:k], rtol=1e-9, atol=1e-12)
    assert (model.eigenvalues >= 0).all()                                     # round-off never negative
    assert model.mean.dtype == model.components.dtype == np.float64 and model.components.shape == (6, k)
    assert model.num_points == 3 and not model.align and model.reference is None


def test_full_variance_keeps_every_component_even_for_few_shapes():
    shapes = _shapes_with_variances([6.0, 3.0], m=3)
    model = asm.ActiveShapeModel().fit(shapes, 1.0)
    assert model.k == 3                                                       # min(3 shapes, 6 coords)
    np.testing.assert_allclose(model.project(shapes), shapes, atol=1e-9)


def test_fit_errors_word_by_word():
    good = _shapes_with_variances([1.0, 0.5], m=5)
    for v in (0.0, -0.1, 1.0000001, 2.0):
        assert _msg(asm.ActiveShapeModel().fit, good, v, error=ConfigError) == f"variance {v}: must lie in (0, 1]"
    assert _msg(asm.ActiveShapeModel().fit, good[:1], error=ConfigError) == (
        "an Active Shape Model needs at least 2 training shapes, got 1")
    bad = good.copy()
    bad[2, 1, 0] = np.nan
    assert _msg(asm.ActiveShapeModel().fit, bad, error=DataFormatError) == (
        "training shapes contain NaN or infinite values; re-run prepare")
    model = asm.ActiveShapeModel()
    for call in (lambda: model.k, lambda: model.num_points, lambda: model.project(good)):
        assert _msg(call, error=ModelError) == "the Active Shape Model is not fitted; call fit() or load() first"
    model.fit(good, 1.0)
    assert _msg(model.coefficients, np.zeros((2, 4, 2)), error=ConfigError) == (
        "shapes have 4 points but the shape model has 3")


def test_clipping_at_three_sigmas():
    shapes = _shapes_with_variances([4.0, 1.0])                               # sigma 2 and 1
    model = asm.ActiveShapeModel().fit(shapes, 0.99)
    far = model.mean + 10.0 * model.components[:, 0] + 0.5 * model.components[:, 1]
    b = model.coefficients(far[None])
    np.testing.assert_allclose(np.abs(b[0]), [6.0, 0.5], atol=1e-9)           # 3 x 2 and not clipped
    np.testing.assert_allclose(np.abs(model.coefficients(far[None], clip=False)[0]), [10.0, 0.5], atol=1e-9)
    full = asm.ActiveShapeModel().fit(shapes, 1.0)
    assert np.abs(full.coefficients(far[None])[0]).max() == pytest.approx(10.0)   # variance 1.0: no clip
    assert np.abs(full.coefficients(far[None], clip=True)[0]).max() == pytest.approx(6.0)
    assert asm.CLIP_SIGMAS == 3.0


def test_project_gives_back_the_input_layout():
    shapes = _shapes_with_variances([4.0, 1.0, 0.01])
    model = asm.ActiveShapeModel().fit(shapes, 0.99)
    soft = model.project(shapes[:3])
    assert soft.shape == (3, 3, 2) and soft.dtype == np.float64
    flat = model.project(shapes[:3].reshape(3, 6))
    assert flat.shape == (3, 6) and np.array_equal(flat, soft.reshape(3, 6))
    np.testing.assert_allclose(model.reconstruct(model.coefficients(shapes[:3])), flat)
    assert np.abs(soft - shapes[:3]).max() > 1e-4                              # the smallest direction dropped


def test_aligned_model_keeps_each_shapes_pose():
    rng = np.random.default_rng(1)
    base = REF + rng.normal(0, 0.1, (30, 5, 2))
    posed = np.stack([2 * b @ _rot(t).T + 7 for b, t in zip(base, rng.uniform(-1, 1, 30))])
    model = asm.ActiveShapeModel().fit(posed, 1.0, align=True)
    assert model.align and model.reference.shape == (5, 2)
    np.testing.assert_allclose(model.project(posed), posed, atol=1e-9)


def test_save_and_load_keep_every_field(tmp_path):
    shapes = _shapes_with_variances([4.0, 1.0])
    model = asm.ActiveShapeModel().fit(shapes, 0.8, align=True)
    model.fit_on = "plain"
    p = model.save(tmp_path / "m.npz")
    assert p == tmp_path / "m.npz" and sorted(np.load(p).files) == sorted(
        ["mean", "components", "eigenvalues", "variance", "explained_ratio", "fit_on", "fit_shapes", "reference"])
    back = asm.ActiveShapeModel.load(p)
    for name in ("mean", "components", "eigenvalues", "explained_ratio", "reference"):
        assert np.array_equal(getattr(back, name), getattr(model, name)) and getattr(back, name).dtype == np.float64
    assert (back.variance, back.fit_on, back.fit_shapes, back.align) == (0.8, "plain", 400, True)
    plain = asm.ActiveShapeModel().fit(shapes, 0.8)
    plain.fit_shapes = None
    plain.save(tmp_path / "p.npz")
    assert sorted(np.load(tmp_path / "p.npz").files) == ["components", "eigenvalues", "explained_ratio", "mean", "variance"]
    back = asm.ActiveShapeModel.load(tmp_path / "p.npz")
    assert back.fit_on is None and back.fit_shapes is None and back.reference is None and not back.align
    np.savez(tmp_path / "old.npz", mean=plain.mean, components=plain.components,
             eigenvalues=plain.eigenvalues, variance=np.float64(0.8))
    assert asm.ActiveShapeModel.load(tmp_path / "old.npz").explained_ratio is None
    assert _msg(asm.ActiveShapeModel().save, tmp_path / "x.npz", error=ModelError).startswith(
        "the Active Shape Model is not fitted")


def test_load_errors_word_by_word(tmp_path):
    p = tmp_path / "asm.npz"
    assert _msg(asm.ActiveShapeModel.load, p, error=ModelError) == (
        f"{p}: shape model not found; run python asm_soft_landmarks.py --dataset NAME first")
    p.write_bytes(b"not a zip")
    assert _msg(asm.ActiveShapeModel.load, p, error=ModelError).endswith(
        "; delete it and run the command again")
    np.savez(p, mean=np.zeros(6))
    msg = _msg(asm.ActiveShapeModel.load, p, error=ModelError)
    assert msg.startswith(f"{p}: not a shape model written by asm_soft_landmarks.py (")
    for comps, eig in ((np.zeros(6), np.zeros(1)), (np.zeros((4, 2)), np.zeros(2)), (np.zeros((6, 2)), np.zeros(3))):
        np.savez(p, mean=np.zeros(6), components=comps, eigenvalues=eig, variance=np.float64(0.9))
        assert _msg(asm.ActiveShapeModel.load, p, error=ModelError) == (
            f"{p}: inconsistent array shapes; delete it and run asm_soft_landmarks.py again")
    np.savez(p, mean=np.zeros(6), components=np.zeros((6, 2)), eigenvalues=np.zeros(2),
             variance=np.float64(0.9), reference=np.zeros((2, 3)))
    assert _msg(asm.ActiveShapeModel.load, p, error=ModelError) == (
        f"{p}: its alignment reference has shape (2, 3), not (3, 2); delete it and run "
        f"asm_soft_landmarks.py again")


def test_movement_stats_by_hand():
    hard = np.zeros((2, 3, 2))
    hard[:, 1] = (10.0, 0.0)                                                  # "eyes" 0 and 1, 10 apart
    hard[1, 1] = (20.0, 0.0)                                                  # 20 apart on face 1
    soft = hard.copy()
    soft[0, 2] += (3.0, 4.0)                                                  # 5 on face 0
    soft[1, 0] += (0.0, 2.0)                                                  # 2 on face 1
    got = asm.movement_stats(hard, soft)
    assert got == {"mean": pytest.approx(7 / 6), "max": 5.0}
    got = asm.movement_stats(hard.reshape(2, 6), soft.reshape(2, 6), ((0,), (1,)))
    assert got["mean_pct_io"] == pytest.approx((50 + 10) / 6) and got["max_pct_io"] == pytest.approx(50.0)
    np.testing.assert_allclose(asm._eye_distance(hard, ((0, 2), (1,))), [np.hypot(10, 0), 20.0])
    flat = np.zeros((1, 3, 2))
    got = asm.movement_stats(flat, flat + 1, ((0,), (1,)))                    # normaliser 0: not a number
    assert np.isnan(got["mean_pct_io"]) and np.isnan(got["max_pct_io"]) and got["max"] == pytest.approx(np.sqrt(2))


def test_alignment_onto_a_reference_that_is_not_centred():
    ref = REF + np.array([10.0, -4.0])
    moved = 1.7 * REF @ _rot(0.4).T + np.array([-3.0, 8.0])
    aligned, (_, scales, _) = asm.similarity_align(moved[None], ref)
    np.testing.assert_allclose(aligned[0], ref, atol=1e-12)                   # onto the reference itself
    assert scales[0] == pytest.approx(1 / 1.7)


def test_float32_shapes_are_aligned_in_float64():
    rng = np.random.default_rng(3)
    shapes = (REF + rng.normal(0, 0.2, (6, 5, 2))).astype(np.float32) * np.float32(3.3)
    ref = asm._centred_unit(REF).astype(np.float32)
    a32, t32 = asm.similarity_align(shapes, ref)
    a64, t64 = asm.similarity_align(shapes.astype(np.float64), ref.astype(np.float64))
    assert a32.dtype == np.float64 and np.array_equal(a32, a64)
    assert all(np.array_equal(u, v) for u, v in zip(t32, t64))
    assert np.array_equal(asm.undo_similarity(a32.astype(np.float32), t64),
                          asm.undo_similarity(a32.astype(np.float32).astype(np.float64), t64))
    assert np.array_equal(asm.procrustes_reference(shapes), asm.procrustes_reference(shapes.astype(np.float64)))


def test_procrustes_iterations():
    rng = np.random.default_rng(4)
    shapes = np.stack([1.5 * (REF + rng.normal(0, 0.3, (5, 2))) @ _rot(t).T for t in rng.uniform(-1, 1, 8)])
    assert np.array_equal(asm.procrustes_reference(shapes), asm.procrustes_reference(shapes, 5))
    assert np.array_equal(asm.procrustes_reference(shapes, 0), asm.procrustes_reference(shapes, 1))
    assert not np.array_equal(asm.procrustes_reference(shapes, 1), asm.procrustes_reference(shapes, 2))
    assert not np.array_equal(asm.procrustes_reference(shapes, 5), asm.procrustes_reference(shapes, 6))


def test_a_face_with_a_zero_normaliser_is_left_out_of_the_percentages():
    hard = np.zeros((2, 3, 2))
    hard[1, 1] = (10.0, 0.0)                                                  # face 0: eyes coincide
    soft = hard + np.array([0.0, 1.0])
    got = asm.movement_stats(hard, soft, ((0,), (1,)))
    assert got["mean_pct_io"] == pytest.approx(10.0) and got["max_pct_io"] == pytest.approx(10.0)


# ---------------------------------------------------------------------------------------------
# float64 whatever the input's precision (mutmut's survivors: np.asarray without its dtype)
# ---------------------------------------------------------------------------------------------

def test_alignment_results_are_float64_even_from_long_double_shapes():
    rng = np.random.default_rng(7)
    shapes = (REF + rng.normal(0, 0.2, (4, 5, 2))).astype(np.longdouble) / np.longdouble(3)
    ref = asm._centred_unit(REF)
    for s, r in ((shapes, ref), (shapes.astype(np.float64), ref.astype(np.longdouble))):
        aligned, (centroids, scales, rotations) = asm.similarity_align(s, r)
        assert aligned.dtype == centroids.dtype == scales.dtype == rotations.dtype == np.float64
        want, _ = asm.similarity_align(np.asarray(s, np.float64), np.asarray(r, np.float64))
        assert np.array_equal(aligned, want)
    aligned, transform = asm.similarity_align(shapes.astype(np.float64), ref)
    back = asm.undo_similarity(aligned.astype(np.longdouble), transform)
    assert back.dtype == np.float64 and np.array_equal(back, asm.undo_similarity(aligned, transform))
    mean = asm.procrustes_reference(shapes)
    assert mean.dtype == np.float64 and np.array_equal(mean, asm.procrustes_reference(shapes.astype(np.float64)))


def test_movement_stats_are_computed_on_float64_values():
    third = np.longdouble(1) / 3                          # not a float64 number: rounded first
    hard = np.zeros((1, 3, 2), np.longdouble)
    hard[0, 1] = (10 * third, 0)
    soft = hard + np.array([third / 7, third / 11], np.longdouble)
    want = asm.movement_stats(hard.astype(np.float64), soft.astype(np.float64), ((0,), (1,)))
    for h, s in ((hard, soft.astype(np.float64)), (hard.astype(np.float64), soft)):
        assert asm.movement_stats(h, s, ((0,), (1,))) == want


# ---------------------------------------------------------------------------------------------
# make_soft_landmarks and soft_landmarks_current on small prepared folders (5 points)
# ---------------------------------------------------------------------------------------------

def _prepared(root, m=12, n=5, aug_copies=2, seed=0):
    """A complete prepared folder of m random n-point faces (train, test, and train_aug with
    aug_copies jittered copies of each face), black 8-pixel crops: the ASM reads only landmarks."""
    import fixtures as fx

    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.3, 0.3, (n, 2))
    train = (base + rng.normal(0, 0.03, (m, n, 2))).astype(np.float32)
    fx.write_prepared_split(root / "train", train, 8)
    fx.write_prepared_split(root / "test", train[:2], 8)
    counts, extra, aug = {"train": m, "test": 2}, {}, None
    if aug_copies:
        aug = (np.repeat(train, aug_copies, axis=0) + rng.normal(0, 0.01, (m * aug_copies, n, 2))).astype(np.float32)
        fx.write_prepared_split(root / "train_aug", aug, 8)
        extra["train_aug"] = {"count": len(aug), "settings": {"copies": aug_copies}}
    fx.write_manifest(root, "300w", n, 8, counts, **extra)
    return train, aug


def test_make_soft_landmarks_report_and_first_line(tmp_path, capsys):
    p = tmp_path / "prep"
    train, aug = _prepared(p)
    report = asm.make_soft_landmarks(p)                                       # default variance 0.90
    model = asm.ActiveShapeModel.load(p / "asm.npz")
    assert model.variance == 0.9 and model.fit_on == "augmented" and model.fit_shapes == 36
    assert set(report) == {"k", "max_k", "variance", "explained", "fit_on", "fit_shapes", "align", "splits"}
    assert report["k"] == model.k and report["variance"] == 0.9 and report["fit_on"] == "augmented"
    assert report["max_k"] == 10 and report["fit_shapes"] == 36 and report["align"] is False   # min(36, 2 x 5)
    assert report["explained"] == pytest.approx(model.explained_ratio.sum(), abs=1e-12)
    for split, hard in (("train", train), ("train_aug", aug)):
        soft = np.load(p / split / asm.SOFT_FILE)
        assert report["splits"][split] == asm.movement_stats(hard, soft)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"shape model: 36 shapes (train + train_aug) of 5 points; kept k={model.k} of 10 "
                     f"components ({100 * report['explained']:.2f}% of the variance, target 90.0%) "
                     f"-> {p / 'asm.npz'}")
    report = asm.make_soft_landmarks(p, 0.8, fit_on="plain", align=True)
    model = asm.ActiveShapeModel.load(p / "asm.npz")
    assert report["fit_shapes"] == 12 and report["max_k"] == 10 and report["align"] is True and model.align
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"shape model: 12 shapes (train, aligned) of 5 points; kept k={model.k} of 10 ")


def test_make_soft_landmarks_with_two_faces_and_no_train_aug(tmp_path):
    p = tmp_path / "two"
    train, _ = _prepared(p, m=2, aug_copies=0)
    report = asm.make_soft_landmarks(p, 1.0, verbose=False)
    assert report["fit_shapes"] == 2 and report["max_k"] == 2 and list(report["splits"]) == ["train"]
    np.testing.assert_allclose(np.load(p / "train" / asm.SOFT_FILE), train, atol=1e-6)
    assert asm.soft_landmarks_current(p, 1.0)                 # train/ only: no train_aug/ asked for


def test_make_soft_landmarks_errors_word_by_word(tmp_path):
    p = tmp_path / "missing"
    assert _msg(asm.make_soft_landmarks, p, fit_on="all", error=ConfigError) == (
        "--fit-on 'all': choose augmented (train + train_aug, as the original) or plain (train only)")
    assert _msg(asm.make_soft_landmarks, p, error=DataFormatError) == (
        f"{p}: no such folder (prepared data not found); run python data_util.py prepare --dataset NAME "
        f"[--root PATH] [--input-size S] --out-dir {p} first")
    f = tmp_path / "a-file"
    f.write_text("")
    assert _msg(asm.make_soft_landmarks, f, dataset="cofw", input_size=64, error=DataFormatError) == (
        f"{f}: not a folder (prepared data not found); run python data_util.py prepare --dataset cofw "
        f"[--root PATH] --input-size 64 --out-dir {f} first")
    one = tmp_path / "one"
    _prepared(one, m=1, aug_copies=0)
    assert _msg(asm.make_soft_landmarks, one, error=DataFormatError) == (
        f"{one / 'train' / 'landmarks.npy'}: 1 training shape(s); an Active Shape Model needs at least 2; "
        f"prepare more faces")


def test_soft_landmarks_current_reads_the_recorded_fit(tmp_path):
    p = tmp_path / "prep"
    _prepared(p)
    assert not asm.soft_landmarks_current(p, 0.9)                            # no asm.npz yet
    asm.make_soft_landmarks(p, 1e-9, verbose=False)
    assert asm.soft_landmarks_current(p, 2e-9)                               # within 1e-9: the same
    assert not asm.soft_landmarks_current(p, 2.5e-9)
    asm.make_soft_landmarks(p, 0.9, fit_on="plain", verbose=False)
    assert asm.soft_landmarks_current(p, 0.9)
    model = asm.ActiveShapeModel.load(p / "asm.npz")
    model.fit_on = None                                                      # an older file: refit
    model.save(p / "asm.npz")
    assert not asm.soft_landmarks_current(p, 0.9)
    asm.make_soft_landmarks(p, 0.9, fit_on="plain", verbose=False)
    bad = np.load(p / "train" / "landmarks.npy")
    bad[0, 0, 0] = np.nan                                                    # the data became unreadable
    np.save(p / "train" / "landmarks.npy", bad)
    assert not asm.soft_landmarks_current(p, 0.9)


# ---------------------------------------------------------------------------------------------
# The command line: its options, and what main passes on
# ---------------------------------------------------------------------------------------------

HELP = {
    "--dataset": "dataset name: 300w, cofw or wflw (a custom dataset: pass --custom-spec instead; default: 300w)",
    "--variance": "fraction of shape variance to keep (1.0 gives the hard landmarks; default: 0.90)",
    "--fit-on": "augmented: fit on train/ and train_aug/, the Tolerant teacher's pool (the original's choice); "
                "plain: train/ only (default: the choice in an existing asm.npz, else augmented)",
    "--align": "Procrustes-align the shapes before the PCA and give each soft shape back its own position, "
               "size and roll (METHOD.md 3.4's option; default: crop coordinates, as the original)",
    "--prepared-dir": "prepared data to fit on and write soft landmarks into (default: "
                      "data/prepared/<dataset>[-synthetic]-<input size>)",
    "--root": "official dataset folder the data was prepared from (only names the default prepared folder; "
              "omit for the embedded synthetic data)",
    "--input-size": "side in pixels of the prepared crops; only names the default prepared folder (default: 224)",
    "--custom-spec": "JSON spec of a custom dataset",
}


def test_command_line_options_and_their_help():
    parser = asm.build_parser()
    assert parser.description == ("Fit the Active Shape Model on prepared training shapes and write soft "
                                  "landmarks (the Tolerant teacher's targets).")
    options = {a.option_strings[0]: a for a in parser._actions if a.option_strings[0] != "-h"}
    assert {k: a.help for k, a in options.items()} == HELP
    assert all(len(a.option_strings) == 1 for a in options.values())
    assert options["--fit-on"].choices == ("augmented", "plain")
    assert vars(parser.parse_args([])) == {"dataset": "300w", "variance": 0.9, "fit_on": None, "align": False,
                                          "prepared_dir": None, "root": None, "input_size": 224,
                                          "custom_spec": None}
    got = vars(parser.parse_args(["--dataset", "wflw", "--variance", "0.5", "--fit-on", "plain", "--align",
                                  "--prepared-dir", "P", "--root", "R", "--input-size", "64",
                                  "--custom-spec", "S"]))
    assert got == {"dataset": "wflw", "variance": 0.5, "fit_on": "plain", "align": True, "prepared_dir": "P",
                   "root": "R", "input_size": 64, "custom_spec": "S"}
    assert type(got["variance"]) is float and type(got["input_size"]) is int


def test_main_passes_the_options_on(tmp_path, monkeypatch):
    import json

    from configuration import PREPARED_DIR

    calls = []
    monkeypatch.setattr(asm, "make_soft_landmarks", lambda *a, **kw: calls.append((a, kw)))
    assert asm.main([]) == 0
    (prepared, variance, info), kw = calls.pop()
    assert prepared == PREPARED_DIR / "300w-synthetic-224" and variance == 0.9 and info.name == "300w"
    assert kw == {"input_size": 224, "fit_on": None, "align": False}
    assert asm.main(["--dataset", "wflw", "--root", str(tmp_path), "--input-size", "64", "--variance", "0.5",
                     "--fit-on", "plain", "--align"]) == 0
    (prepared, variance, info), kw = calls.pop()
    assert prepared == PREPARED_DIR / "wflw-64" and variance == 0.5 and info.name == "wflw"
    assert info.num_points == 98 and kw == {"input_size": 64, "fit_on": "plain", "align": True}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "five", "num_points": 5, "flip_pairs": [[0, 1]],
                                "interocular": [[0], [1]], "train_list": "train.txt", "test_list": "test.txt"}))
    assert asm.main(["--custom-spec", str(spec), "--input-size", "32", "--prepared-dir", str(tmp_path / "x")]) == 0
    (prepared, _, info), _ = calls.pop()
    assert prepared == tmp_path / "x" and info.name == "five" and info.num_points == 5
    assert asm.main(["--custom-spec", str(spec), "--input-size", "32"]) == 0
    assert calls.pop()[0][0] == PREPARED_DIR / "five-32"                      # a custom set is not synthetic


def test_a_new_model_holds_nothing_yet():
    model = asm.ActiveShapeModel()
    assert vars(model) == dict.fromkeys(["mean", "components", "eigenvalues", "variance", "explained_ratio",
                                         "fit_on", "fit_shapes", "reference"])
    assert model.align is False
    assert _msg(lambda: model.k, error=ModelError) == (
        "the Active Shape Model is not fitted; call fit() or load() first")


def test_project_clips_as_asked():
    x = _shapes_with_variances([1.0, 0.5, 0.25], m=60, seed=5)
    x[0] = x[1:].mean(0) + 10 * (x[1] - x[1:].mean(0))                       # an outlier
    for variance in (0.9, 1.0):
        model = asm.ActiveShapeModel().fit(x, variance)
        for clip in (False, True):
            want = model.reconstruct(model.coefficients(x, clip=clip)).reshape(x.shape)
            np.testing.assert_array_equal(model.project(x, clip=clip), want)
        assert not np.array_equal(model.project(x, clip=False), model.project(x, clip=True))
    rows = np.ones((2, model.k), np.longdouble) / 3
    assert model.reconstruct(rows).dtype == np.float64
    np.testing.assert_array_equal(model.reconstruct(rows), model.reconstruct(rows.astype(np.float64)))


def test_weak_modes_keep_their_exact_variance():
    """The PCA is an SVD of the data (svd_solver="full"): a mode 1e10 times weaker than the main one
    keeps its variance 1e-20, which the covariance matrix's eigenvalues (sklearn's choice for many
    shapes of few points) drown in rounding."""
    x = _shapes_with_variances([1.0, 1e-20], m=200)
    model = asm.ActiveShapeModel().fit(x, 1.0)
    np.testing.assert_allclose(model.eigenvalues[:2], [1.0, 1e-20], rtol=1e-6)


def test_make_soft_landmarks_prints_each_splits_movement(tmp_path, capsys):
    from configuration import DatasetInfo

    p = tmp_path / "prep"
    _prepared(p)
    info = DatasetInfo.from_spec({"name": "five", "num_points": 5, "interocular": [[0], [1]]})
    report = asm.make_soft_landmarks(p, 0.8, dataset=info)
    lines = capsys.readouterr().out.splitlines()
    for line, split in zip(lines[1:], ("train", "train_aug")):
        s = report["splits"][split]
        assert line == (f"{split:9s} {12 if split == 'train' else 24} shapes -> {p / split / asm.SOFT_FILE}: soft "
                        f"moved mean {s['mean']:.5f}, max {s['max']:.5f} (normalised units); mean "
                        f"{s['mean_pct_io']:.2f}%, max {s['max_pct_io']:.2f}% of the inter-ocular distance")
    assert len(lines) == 3
