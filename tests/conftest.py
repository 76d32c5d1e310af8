"""Shared test set-up: quiet TensorFlow, paths to the real samples copied into tests/data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TESTS_DATA = ROOT / "tests" / "data"
REAL_SAMPLES = TESTS_DATA / "real_samples"   # copy of ../shared/data/real_samples with its MANIFEST


@pytest.fixture(scope="session")
def real_samples_dir() -> Path:
    return REAL_SAMPLES


def _shipped_models() -> dict:
    import hashlib

    return {p.relative_to(ROOT).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "models").rglob("*.keras"))}


@pytest.fixture(scope="session", autouse=True)
def shipped_models_untouched():
    """No test may write the shipped models (a trainer run without --output writes there)."""
    before = _shipped_models()
    yield
    after = _shipped_models()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the test session changed shipped models: {changed}"
