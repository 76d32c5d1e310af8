"""The project's own error type and the thin wrapper every command-line entry point runs under.

Expected failures (a missing file, a malformed annotation, an unknown dataset name, ...) raise
`LandmarkError` with one line that names the file and the fix. `run_cli` prints that line and exits
with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys


class LandmarkError(Exception):
    """An expected, user-facing failure. The message is one line: what, where, and how to fix it."""


class DataFormatError(LandmarkError):
    """A dataset file (image, .pts, WFLW list, COFW .mat, custom list) is missing or malformed."""


class ConfigError(LandmarkError):
    """A configuration value or command-line option is invalid."""


class ModelError(LandmarkError):
    """A model file is missing, of the wrong kind, or does not match the data (point count, input size)."""


class TrainingError(LandmarkError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


# glibc allocator settings for training (see tune_malloc): option -> (value, mallopt code).
# 32 MB is the largest mmap threshold glibc accepts on 64-bit machines.
MALLOC_SETTINGS = {"MMAP_THRESHOLD": (32 << 20, -3), "TRIM_THRESHOLD": (1 << 30, -1),
                   "TOP_PAD": (256 << 20, -2)}


def user_set_malloc(environ=None) -> bool:
    """True when the user chose their own glibc allocator settings (any MALLOC_* variable)."""
    return any(k.startswith("MALLOC_") for k in (os.environ if environ is None else environ))


def malloc_env() -> dict:
    """MALLOC_SETTINGS as environment variables, for a process about to be started."""
    return {f"MALLOC_{name}_": str(value) for name, (value, _) in MALLOC_SETTINGS.items()}


def tune_malloc() -> bool:
    """Keep freed memory in the process instead of giving it back to the system after every step.

    Why: glibc serves the large tensors of a training step with mmap and unmaps them when freed,
    so each step faults every page in again. Measured on this 2-core machine, 64 px L2 student
    epoch: 15.5 s by default (45 s of system time over 3 epochs), 10.5 s with this mallopt call,
    7.6 s with the same settings as environment variables set before the process starts
    (malloc_env(), what demo.py gives its steps); the losses are bit-identical. Linux/glibc only;
    skipped where the user set any MALLOC_* variable. Returns True when applied."""
    if not sys.platform.startswith("linux") or user_set_malloc():
        return False
    try:
        import ctypes  # noqa: PLC0415

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all([bool(mallopt(code, value)) for value, code in MALLOC_SETTINGS.values()])


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python start-up noise. Call before importing tensorflow.
    Also applies tune_malloc(): every entry point calls this first, before TensorFlow allocates."""
    tune_malloc()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")


def run_cli(main, argv=None) -> int:
    """Run `main(argv)`; turn a LandmarkError into one line on stderr and exit status 2."""
    try:
        code = main(argv)
    except LandmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # The file system said no (disk full, permissions, a file where a folder should be). Files
        # are written atomically (safe_io), so nothing half-written looks complete.
        name = err.filename2 or err.filename   # os.replace(tmp, target): name the target
        if name is None:
            raise
        reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
        print(f"error: {name}: {reason}; free disk space or fix the permissions and run the "
              f"command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint written is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    return int(code or 0)
