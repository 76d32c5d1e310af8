"""Fuzzing the annotation parsers (issue "Robustness", part 1): random bytes and mutated valid files.

Every parser either returns samples whose landmarks are finite float32 arrays of the right shape,
or raises one of the project's own errors (errors.LandmarkError) with a readable one-line message
naming the file. Any other exception (ValueError, IndexError, UnicodeDecodeError, ...) is a defect.

Parsers: the 300-W .pts reader, the WFLW list reader and the custom-format list reader (hypothesis,
both strict and lenient modes), and the COFW .mat reader on a few corrupted files (truncated HDF5,
random bytes named .mat, flipped bytes). The valid starting files are written here with the
project's own writers from fixed numbers, so no image is needed: the list readers only parse text.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import dataset_formats as fmt
import fixtures as fx
from errors import LandmarkError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Tokens that break number parsing, headers, braces, encodings and line structure.
TOKENS = [b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"-", b"+", b".", b"e", b"1_0", b"0x1f",
          b"\xd9\xa1", b"{", b"}", b"\n", b"\r", b"\r\n", b" ", b"\t", b"\x00", b"\xff\xfe",
          b"n_points: 3", b"n_points: x", b"version: 1", b"abc", b"#", b"1 2 3", b"\x85", b"\xe2\x80\xa8"]

# ----------------------------------------------------------------------------------------------
# Valid starting files
# ----------------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
PTS_68 = (RNG.random((68, 2)) * 300 + 50).astype(np.float32)
WFLW_98 = (RNG.random((98, 2)) * 300 + 50).astype(np.float32)
CUSTOM_5 = (RNG.random((3, 5, 2)) * 300 + 50).astype(np.float32)


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="fuzz-parsers-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _valid_pts(workdir: Path) -> bytes:
    fmt.write_pts(workdir / "valid.pts", PTS_68)
    return (workdir / "valid.pts").read_bytes()


def _valid_wflw(workdir: Path) -> bytes:
    root = workdir / "wflw_valid"
    img = root / fmt.WFLW_IMAGE_DIR / "0--Parade" / "0_Parade_1.jpg"
    samples = [fmt.Sample(id="", image_path=str(img), landmarks_px=WFLW_98 + k,
                         box_xywh=np.array([40, 40, 320, 320], np.float32), subset="train",
                         attributes=np.array([0, 1, 0, 0, 1, 0], np.int8)) for k in range(2)]
    fmt.write_wflw_list(fmt.wflw_list_path(root, "train"), samples, root / fmt.WFLW_IMAGE_DIR)
    return fmt.wflw_list_path(root, "train").read_bytes()


def _valid_custom(workdir: Path) -> bytes:
    samples = [fmt.Sample(id="", image_path=str(workdir / "images" / f"face {k}.jpg"),
                         landmarks_px=CUSTOM_5[k], box_xywh=None) for k in range(3)]
    fmt.write_custom_list(workdir / "valid.txt", samples)
    return (workdir / "valid.txt").read_bytes()


# ----------------------------------------------------------------------------------------------
# Mutations
# ----------------------------------------------------------------------------------------------


@st.composite
def mutated(draw, valid: bytes):
    """A valid file after 1-4 random edits: byte flips, truncation, inserted tokens, removed or
    duplicated lines."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "drop_line", "dup_line", "replace"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "replace" and data:
            data[pos:pos + draw(st.integers(1, 8))] = draw(st.sampled_from(TOKENS))
        elif op in ("drop_line", "dup_line"):
            lines = bytes(data).split(b"\n")
            k = draw(st.integers(0, max(len(lines) - 1, 0)))
            if op == "drop_line":
                del lines[k]
            else:
                lines.insert(k, lines[k])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


RANDOM_BYTES = st.binary(min_size=0, max_size=400)
RANDOM_TEXT = st.text(alphabet=st.sampled_from(list("0123456789.-+e {}\n\tnaifx:_")), max_size=300) \
    .map(lambda s: s.encode())


def _check_error(err: Exception, path) -> None:
    assert isinstance(err, LandmarkError), f"{type(err).__name__} is not a LandmarkError: {err}"
    msg = str(err)
    assert msg and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
    assert str(path) in msg, f"{path} not named in: {msg}"
    assert len(msg) < 600, f"message too long ({len(msg)} characters)"


def _check_samples(samples, n: int) -> None:
    for s in samples:
        assert s.landmarks_px.dtype == np.float32 and s.landmarks_px.shape == (n, 2)
        assert np.all(np.isfinite(s.landmarks_px))
        if s.box_xywh is not None:
            assert np.all(np.isfinite(s.box_xywh)) and np.all(s.box_xywh[2:] >= 0)
        if s.attributes is not None:
            assert set(np.unique(s.attributes).tolist()) <= {0, 1}


def _parse(fn, path, n, strict):
    """Run one parser; accept a clean result or a LandmarkError, fail on anything else."""
    skipped = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(strict, skipped)
        except Exception as err:   # noqa: BLE001 - the point of the test
            _check_error(err, path)
            return None
    if isinstance(out, np.ndarray):
        assert out.dtype == np.float32 and out.shape == (n, 2) and np.all(np.isfinite(out))
    else:
        _check_samples(out, n)
        for s in skipped:
            assert str(path) in s["file"] and "\n" not in s["reason"]
    return out


# ----------------------------------------------------------------------------------------------
# .pts
# ----------------------------------------------------------------------------------------------


def _pts_case(workdir, data, expected):
    path = workdir / "fuzz.pts"
    path.write_bytes(data)
    return _parse(lambda strict, skipped: fmt.read_pts(path, expected), path, expected or 68, True)


def test_pts_valid_start(workdir):
    np.testing.assert_array_equal(_pts_case(workdir, _valid_pts(workdir), 68), PTS_68)


@FUZZ
@given(data=st.data())
def test_pts_mutated(workdir, data):
    blob = data.draw(mutated(_valid_pts(workdir)))
    out = _pts_case(workdir, blob, 68)
    if out is not None:      # a mutation that still parses must give 68 finite points
        assert out.shape == (68, 2)


@FUZZ
@given(blob=st.one_of(RANDOM_BYTES, RANDOM_TEXT))
def test_pts_random(workdir, blob):
    path = workdir / "rand.pts"
    path.write_bytes(blob)
    try:
        out = fmt.read_pts(path)
    except Exception as err:   # noqa: BLE001
        _check_error(err, path)
        return
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 2 and out.shape[0] >= 1
    assert np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------------------
# WFLW list
# ----------------------------------------------------------------------------------------------


def _wflw_case(workdir, data, strict):
    root = workdir / "wflw_fuzz"
    path = fmt.wflw_list_path(root, "train")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _parse(lambda st_, sk: fmt.read_wflw(root, "train", strict=st_, skipped=sk), path, 98,
                  strict)


def test_wflw_valid_start(workdir):
    samples = _wflw_case(workdir, _valid_wflw(workdir), True)
    assert len(samples) == 2
    np.testing.assert_array_equal(samples[1].landmarks_px, WFLW_98 + 1)


@FUZZ
@given(data=st.data(), strict=st.booleans())
def test_wflw_mutated(workdir, data, strict):
    _wflw_case(workdir, data.draw(mutated(_valid_wflw(workdir))), strict)


@FUZZ
@given(blob=st.one_of(RANDOM_BYTES, RANDOM_TEXT), strict=st.booleans())
def test_wflw_random(workdir, blob, strict):
    _wflw_case(workdir, blob, strict)


# ----------------------------------------------------------------------------------------------
# Custom format
# ----------------------------------------------------------------------------------------------

SPEC = {"name": "fuzzfive", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]],
        "interocular": [[0], [1]], "train_list": "train.txt", "test_list": "test.txt"}


def _custom_case(workdir, data, strict):
    d = workdir / "custom_fuzz"
    d.mkdir(exist_ok=True)
    (d / "spec.json").write_text(json.dumps(SPEC))
    path = d / "train.txt"
    path.write_bytes(data)
    return _parse(lambda st_, sk: fmt.read_custom(d / "spec.json", "train", strict=st_, skipped=sk),
                  path, 5, strict)


def test_custom_valid_start(workdir):
    samples = _custom_case(workdir, _valid_custom(workdir), True)
    assert len(samples) == 3 and samples[2].image_path.endswith("face 2.jpg")
    np.testing.assert_array_equal(samples[2].landmarks_px, CUSTOM_5[2])


@FUZZ
@given(data=st.data(), strict=st.booleans())
def test_custom_mutated(workdir, data, strict):
    _custom_case(workdir, data.draw(mutated(_valid_custom(workdir))), strict)


@FUZZ
@given(blob=st.one_of(RANDOM_BYTES, RANDOM_TEXT), strict=st.booleans())
def test_custom_random(workdir, blob, strict):
    _custom_case(workdir, blob, strict)


# ----------------------------------------------------------------------------------------------
# COFW .mat: a few corrupted files
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cofw_valid(workdir):
    """The real COFW faces (derived fixture) written as v7.3 (HDF5) and v5 .mat files."""
    out = {}
    for version in ("7.3", "5"):
        d = workdir / f"cofw_v{version}"
        fx.make_cofw_files(d, version=version)
        out[version] = (d / "COFW_train_color.mat").read_bytes()
    return out


def _cofw_case(workdir, data: bytes, strict=True):
    root = workdir / "cofw_fuzz"
    root.mkdir(exist_ok=True)
    path = root / "COFW_train_color.mat"
    path.write_bytes(data)
    return _parse(lambda st_, sk: fmt.read_cofw(root, "train", strict=st_, skipped=sk), path, 29,
                  strict)


def test_cofw_valid_start(workdir, cofw_valid):
    for data in cofw_valid.values():
        assert len(_cofw_case(workdir, data)) == 2


@pytest.mark.parametrize("version", ["7.3", "5"])
@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
def test_cofw_truncated(workdir, cofw_valid, version, fraction):
    data = cofw_valid[version]
    assert _cofw_case(workdir, data[:max(1, int(len(data) * fraction))]) is None


@pytest.mark.parametrize("seed", range(4))
def test_cofw_random_bytes_named_mat(workdir, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 2000 * (seed + 1), dtype=np.uint8).tobytes()
    if seed == 3:   # an HDF5 signature followed by garbage
        data = b"\x89HDF\r\n\x1a\n" + data
    assert _cofw_case(workdir, data) is None


@pytest.mark.parametrize("version", ["7.3", "5"])
@pytest.mark.parametrize("seed", range(6))
def test_cofw_flipped_bytes(workdir, cofw_valid, version, seed):
    """Flipped bytes after the header: an error of ours, or (if the damage hit only pixels) a
    clean parse; never another exception type."""
    rng = np.random.default_rng(seed)
    data = bytearray(cofw_valid[version])
    start = 600 if version == "7.3" else 128
    for pos in rng.integers(start, len(data), 8):
        data[pos] ^= int(rng.integers(1, 256))
    _cofw_case(workdir, bytes(data), strict=bool(seed % 2))
