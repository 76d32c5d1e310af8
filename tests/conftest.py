"""Shared test set-up: quiet TensorFlow, paths to the real samples copied into tests/data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from errors import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TESTS_DATA = ROOT / "tests" / "data"
REAL_SAMPLES = TESTS_DATA / "real_samples"   # copy of ../shared/data/real_samples with its MANIFEST


@pytest.fixture(scope="session")
def real_samples_dir() -> Path:
    return REAL_SAMPLES
