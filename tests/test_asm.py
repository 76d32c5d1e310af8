"""Active Shape Model and soft landmarks (METHOD.md section 3), including the CLI end to end."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import asm_soft_landmarks as asm_mod
import fixtures as fx
from asm_soft_landmarks import ActiveShapeModel
from errors import ConfigError, DataFormatError, ModelError


def synthetic_shapes(m=120, n=68, seed=0):
    """Shapes (M, N, 2) in normalised units: a mean face plus a few strong and many weak modes."""
    rng = np.random.default_rng(seed)
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    mean = np.stack([0.3 * np.cos(angle), 0.35 * np.sin(angle)], axis=1).ravel()
    modes = rng.normal(size=(2 * n, 2 * n))
    modes, _ = np.linalg.qr(modes)
    scales = np.concatenate([[0.08, 0.05, 0.03], np.full(2 * n - 3, 0.002)])
    coef = rng.normal(size=(m, 2 * n)) * scales
    coef[0, 0] = 6 * scales[0]            # an outlier, beyond 3 standard deviations
    x = mean + coef @ modes.T
    return x.reshape(m, n, 2).astype(np.float32)


@pytest.fixture(scope="module")
def shapes():
    return synthetic_shapes()


def test_full_variance_gives_hard_shapes(shapes):
    asm = ActiveShapeModel().fit(shapes, variance=1.0)
    assert asm.k == min(shapes.shape[0], 2 * shapes.shape[1])
    soft = asm.project(shapes)
    assert soft.shape == shapes.shape
    np.testing.assert_allclose(soft, shapes, atol=1e-6)


def test_fewer_components_and_closer_to_mean(shapes):
    ks = []
    for p in (0.5, 0.9, 0.99, 1.0):
        asm = ActiveShapeModel().fit(shapes, variance=p)
        ks.append(asm.k)
        # the smallest k whose cumulative explained variance reaches p
        cum = np.cumsum(asm.explained_ratio)
        assert cum[-1] >= p - 1e-9
        if asm.k > 1 and p < 1.0:          # 1.0 keeps every component by definition
            assert cum[-2] < p
        if p < 1.0:
            x = shapes.reshape(len(shapes), -1).astype(np.float64)
            soft = asm.project(x)
            hard_dev = np.linalg.norm(x - asm.mean, axis=1)
            soft_dev = np.linalg.norm(soft - asm.mean, axis=1)
            assert np.all(soft_dev <= hard_dev + 1e-12)
    assert ks == sorted(ks) and ks[0] < ks[-1]
    assert ks[1] == 3                    # three strong modes hold > 90% of the variance


def test_clipping_holds(shapes):
    asm = ActiveShapeModel().fit(shapes, variance=0.9)
    b = asm.coefficients(shapes)
    limit = 3 * np.sqrt(asm.eigenvalues)
    assert np.all(np.abs(b) <= limit + 1e-15)
    raw = asm.coefficients(shapes, clip=False)
    assert np.any(np.abs(raw) > limit)   # the planted outlier was clipped
    np.testing.assert_allclose(asm.project(shapes).reshape(len(shapes), -1),
                               asm.mean + b @ asm.components.T)


def test_model_arrays(shapes):
    asm = ActiveShapeModel().fit(shapes, variance=0.9)
    two_n = 2 * shapes.shape[1]
    assert asm.mean.shape == (two_n,)
    assert asm.components.shape == (two_n, asm.k)
    assert asm.eigenvalues.shape == (asm.k,)
    np.testing.assert_allclose(asm.components.T @ asm.components, np.eye(asm.k), atol=1e-10)
    assert np.all(np.diff(asm.eigenvalues) <= 0)


def test_save_load(shapes, tmp_path):
    asm = ActiveShapeModel().fit(shapes, variance=0.9)
    path = asm.save(tmp_path / "asm.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["asm.npz"]
    back = ActiveShapeModel.load(path)
    assert back.k == asm.k and back.variance == 0.9
    np.testing.assert_allclose(back.project(shapes), asm.project(shapes))
    with pytest.raises(ModelError):
        ActiveShapeModel.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    with pytest.raises(ModelError):
        ActiveShapeModel.load(bad)


def test_bad_inputs(shapes):
    with pytest.raises(ConfigError):
        ActiveShapeModel().fit(shapes, variance=0.0)
    with pytest.raises(ConfigError):
        ActiveShapeModel().fit(shapes, variance=1.5)
    with pytest.raises(ConfigError):
        ActiveShapeModel().fit(shapes[:1])
    asm = ActiveShapeModel().fit(shapes, variance=0.9)
    with pytest.raises(ConfigError):
        asm.project(shapes[:, :10])
    with pytest.raises(ModelError):
        ActiveShapeModel().project(shapes)


# ---------------------------------------------------------------------------------------------
# Procrustes alignment before the PCA (METHOD.md 3.4's option, `--align`)
# ---------------------------------------------------------------------------------------------

def random_similarity(m, seed):
    """Per-shape (scale, angle, shift): a pose spread like a face crop's (roll up to 0.5 rad)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.7, 1.3, m), rng.uniform(-0.5, 0.5, m), rng.normal(0, 0.05, (m, 1, 2))


def apply_similarity(shapes, scale, angle, shift):
    """Rotate by `angle` about the origin, scale, shift: shapes (M, N, 2)."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = shapes[..., 0], shapes[..., 1]
    rotated = np.stack([c[:, None] * x - s[:, None] * y, s[:, None] * x + c[:, None] * y], -1)
    return scale[:, None, None] * rotated + shift


def test_similarity_align_inverts_and_removes_pose(shapes):
    x = shapes.astype(np.float64)
    posed = apply_similarity(x, *random_similarity(len(x), 3))
    reference = asm_mod.procrustes_reference(x)
    np.testing.assert_allclose(reference.mean(axis=0), 0, atol=1e-12)
    assert np.linalg.norm(reference) == pytest.approx(1.0)
    aligned, transform = asm_mod.similarity_align(posed, reference)
    np.testing.assert_allclose(asm_mod.undo_similarity(aligned, transform), posed, atol=1e-12)
    # the pose of each shape is gone: the posed and the plain shapes align to the same place
    np.testing.assert_allclose(aligned, asm_mod.similarity_align(x, reference)[0], atol=1e-10)
    # a shape that is a similarity of the reference aligns onto it exactly
    one = apply_similarity(reference[None], np.array([2.0]), np.array([0.4]), np.array([[[0.1, -0.2]]]))
    np.testing.assert_allclose(asm_mod.similarity_align(one, reference)[0][0], reference, atol=1e-12)


def test_aligned_model_is_pose_equivariant_and_keeps_full_variance(shapes):
    x = shapes.astype(np.float64)
    pose = random_similarity(len(x), 4)
    posed = apply_similarity(x, *pose)
    aligned = ActiveShapeModel().fit(posed, variance=0.9, align=True)
    # soft(pose(x)) == pose(soft(x)): the soft shape keeps each face's position, size and roll
    moved = random_similarity(len(x), 5)
    np.testing.assert_allclose(aligned.project(apply_similarity(posed, *moved)),
                               apply_similarity(aligned.project(posed), *moved), atol=1e-9)
    # in crop coordinates the same does not hold (the PCA models the pose too)
    plain = ActiveShapeModel().fit(posed, variance=0.9)
    assert np.abs(plain.project(apply_similarity(posed, *moved))
                  - apply_similarity(plain.project(posed), *moved)).max() > 1e-3
    # aligned, the 90% of variance goes to the shape: soft shapes much closer to the hard ones
    err_aligned = np.linalg.norm(aligned.project(posed) - posed, axis=-1).mean()
    err_plain = np.linalg.norm(plain.project(posed) - posed, axis=-1).mean()
    assert err_aligned < 0.5 * err_plain
    # 100% still gives back the hard landmarks
    full = ActiveShapeModel().fit(posed, variance=1.0, align=True)
    np.testing.assert_allclose(full.project(posed), posed, atol=1e-9)


def test_aligned_model_save_load_and_currency(shapes, tmp_path):
    asm = ActiveShapeModel().fit(shapes, variance=0.9, align=True)
    back = ActiveShapeModel.load(asm.save(tmp_path / "asm.npz"))
    assert back.align and back.reference.shape == (shapes.shape[1], 2)
    np.testing.assert_allclose(back.project(shapes), asm.project(shapes))
    assert not ActiveShapeModel.load(ActiveShapeModel().fit(shapes, 0.9).save(tmp_path / "p.npz")).align
    prepared = tmp_path / "prep"
    train = make_prepared(prepared)
    assert asm_mod.main(["--dataset", "300w", "--prepared-dir", str(prepared), "--align"]) == 0
    fitted = ActiveShapeModel.load(prepared / "asm.npz")
    assert fitted.align
    np.testing.assert_allclose(np.load(prepared / "train" / "soft_landmarks.npy"), fitted.project(train),
                               atol=1e-6)
    assert asm_mod.soft_landmarks_current(prepared, 0.9, align=True)
    assert not asm_mod.soft_landmarks_current(prepared, 0.9)          # an unaligned run refits
    asm_mod.make_soft_landmarks(prepared, 0.9, verbose=False)
    assert not ActiveShapeModel.load(prepared / "asm.npz").align
    assert asm_mod.soft_landmarks_current(prepared, 0.9)
    assert not asm_mod.soft_landmarks_current(prepared, 0.9, align=True)


def test_trainer_option_asm_align_reaches_the_soft_landmarks(tmp_path):
    """--asm-align (TrainConfig.asm_align) fits the aligned model the Tolerant teacher trains on,
    and switching it off refits (training.ensure_soft_landmarks)."""
    import training
    from configuration import TrainConfig

    prepared = tmp_path / "prep"
    train = make_prepared(prepared)
    for align in (True, False, True):
        training.ensure_soft_landmarks(TrainConfig(dataset="300w", asm_align=align), prepared)
        fitted = ActiveShapeModel.load(prepared / "asm.npz")
        assert fitted.align == align
        np.testing.assert_allclose(np.load(prepared / "train" / "soft_landmarks.npy"),
                                   fitted.project(train), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# CLI on a tiny prepared folder (docs/ARCHITECTURE.md layout)
# ---------------------------------------------------------------------------------------------

def make_prepared(root, m=40, n=68, aug_copies=2, size=8):
    """A complete prepared folder (train, test and, with aug_copies, train_aug) of synthetic shapes
    on tiny black crops: the ASM reads only the landmarks."""
    train = synthetic_shapes(m, n, seed=1)
    fx.write_prepared_split(root / "train", train, size)
    fx.write_prepared_split(root / "test", synthetic_shapes(10, n, seed=2), size)
    counts, extra = {"train": m, "test": 10}, {}
    if aug_copies:
        rng = np.random.default_rng(5)
        aug = np.repeat(train, aug_copies, axis=0) + rng.normal(0, 0.01, (m * aug_copies, n, 2))
        fx.write_prepared_split(root / "train_aug", aug, size,
                                meta={"ids": [f"aug/{i}" for i in range(len(aug))],
                                      "source_index": np.repeat(np.arange(m), aug_copies).tolist()})
        extra["train_aug"] = {"count": len(aug), "settings": {"copies": aug_copies}}
    fx.write_manifest(root, "300w", n, size, counts, **extra)
    return train


def test_cli_end_to_end(tmp_path, capsys):
    prepared = tmp_path / "300w-synthetic-64"
    train = make_prepared(prepared)
    code = asm_mod.main(["--dataset", "300w", "--variance", "0.9", "--prepared-dir", str(prepared)])
    assert code == 0
    out = capsys.readouterr().out
    assert "k=" in out and "inter-ocular" in out
    asm = ActiveShapeModel.load(prepared / "asm.npz")
    soft = np.load(prepared / "train" / "soft_landmarks.npy")
    assert soft.shape == train.shape and soft.dtype == np.float32
    np.testing.assert_allclose(soft, asm.project(train), atol=1e-6)
    aug = np.load(prepared / "train_aug" / "landmarks.npy")
    soft_aug = np.load(prepared / "train_aug" / "soft_landmarks.npy")
    assert soft_aug.shape == aug.shape
    np.testing.assert_allclose(soft_aug, asm.project(aug), atol=1e-6)
    assert not (prepared / "test" / "soft_landmarks.npy").exists()
    # by default fitted on the whole pool, train/ and train_aug/ stacked (the original's choice)
    pool = np.concatenate([train, aug]).reshape(len(train) + len(aug), -1)
    np.testing.assert_allclose(asm.mean, pool.mean(axis=0), atol=1e-6)
    assert asm.fit_on == "augmented" and asm.fit_shapes == len(pool)
    assert asm_mod.soft_landmarks_current(prepared, 0.9)
    assert not asm_mod.soft_landmarks_current(prepared, 0.8)

    # --fit-on plain: train/ only; the choice is recorded and kept by a refit without --fit-on
    assert asm_mod.main(["--dataset", "300w", "--variance", "0.9", "--fit-on", "plain",
                         "--prepared-dir", str(prepared)]) == 0
    plain = ActiveShapeModel.load(prepared / "asm.npz")
    np.testing.assert_allclose(plain.mean, train.reshape(len(train), -1).mean(axis=0), atol=1e-6)
    assert plain.fit_on == "plain" and plain.fit_shapes == len(train)
    assert np.abs(plain.mean - asm.mean).max() > 1e-4                # the two fits differ
    assert asm_mod.make_soft_landmarks(prepared, 0.9, verbose=False)["fit_on"] == "plain"
    assert asm_mod.soft_landmarks_current(prepared, 0.9)
    # a rewritten train_aug/ with another number of copies (1 instead of 2) makes the fit stale
    one_copy = tmp_path / "one-copy"
    make_prepared(one_copy, aug_copies=1)
    saved_aug = tmp_path / "saved_aug"
    (prepared / "train_aug").rename(saved_aug)
    (one_copy / "train_aug").rename(prepared / "train_aug")
    manifest = (prepared / "manifest.json").read_text()
    (prepared / "manifest.json").write_text((one_copy / "manifest.json").read_text())
    shutil.copy(saved_aug / "soft_landmarks.npy", prepared / "train_aug")     # 2 copies' rows
    assert not asm_mod.soft_landmarks_current(prepared, 0.9)
    shutil.rmtree(prepared / "train_aug")
    saved_aug.rename(prepared / "train_aug")
    (prepared / "manifest.json").write_text(manifest)
    assert asm_mod.soft_landmarks_current(prepared, 0.9)
    # a soft file left by another fit (other row count) is stale, and the refit replaces it
    np.save(prepared / "train_aug" / "soft_landmarks.npy", soft_aug[:5])
    assert not asm_mod.soft_landmarks_current(prepared, 0.9)
    asm_mod.make_soft_landmarks(prepared, 0.9, verbose=False)
    assert asm_mod.soft_landmarks_current(prepared, 0.9)
    assert np.load(prepared / "train_aug" / "soft_landmarks.npy").shape == aug.shape
    # a model that says "augmented" but was fitted on fewer shapes than the pool now holds is stale
    short = ActiveShapeModel().fit(train, 0.9)
    short.fit_on = "augmented"
    short.save(prepared / "asm.npz")
    assert not asm_mod.soft_landmarks_current(prepared, 0.9)
    # a model written before fit_on was recorded (fitted on train/ only) is stale
    old = ActiveShapeModel().fit(train, 0.9)
    old.fit_shapes = None
    old.save(prepared / "asm.npz")
    assert not asm_mod.soft_landmarks_current(prepared, 0.9)
    assert asm_mod.make_soft_landmarks(prepared, 0.9, verbose=False)["fit_on"] == "augmented"

    # variance 1.0: soft == hard
    assert asm_mod.main(["--dataset", "300w", "--variance", "1.0",
                         "--prepared-dir", str(prepared)]) == 0
    np.testing.assert_allclose(np.load(prepared / "train" / "soft_landmarks.npy"), train, atol=1e-6)


def test_cli_errors(tmp_path, capsys):
    from errors import run_cli

    missing = tmp_path / "nothing"
    assert run_cli(asm_mod.main, ["--dataset", "300w", "--prepared-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "data_util.py prepare" in err and len(err.strip().splitlines()) == 1
    prepared = tmp_path / "cofw-64"
    make_prepared(prepared, n=68, aug_copies=0)
    with pytest.raises(DataFormatError, match="29"):      # COFW has 29 points
        asm_mod.main(["--dataset", "cofw", "--prepared-dir", str(prepared)])
    one = tmp_path / "one-face"
    make_prepared(one, m=1, aug_copies=0)
    with pytest.raises(DataFormatError, match="1 training shape.*at least 2") as err:
        asm_mod.main(["--prepared-dir", str(one)])
    assert str(one / "train" / "landmarks.npy") in str(err.value)
    assert not (one / "asm.npz").exists()


def test_movement_stats():
    hard = np.zeros((1, 68, 2))
    hard[0, 36] = [-0.1, 0.0]
    hard[0, 45] = [0.1, 0.0]              # inter-ocular distance 0.2
    soft = hard.copy()
    soft[0, 0] += [0.02, 0.0]
    stats = asm_mod.movement_stats(hard, soft, ((36,), (45,)))
    assert stats["max"] == pytest.approx(0.02)
    assert stats["max_pct_io"] == pytest.approx(10.0)
    assert stats["mean"] == pytest.approx(0.02 / 68)
