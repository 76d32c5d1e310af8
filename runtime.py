"""Process runtime tuning that every entry point applies before TensorFlow starts: quiet start-up
logs (`quiet_tensorflow`) and glibc allocator settings (`tune_malloc`, `malloc_env` for a process
about to be started, e.g. demo.py's steps). errors.py keeps only the error types and run_cli.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
from typing import Optional


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


# oneDNN (TF_ENABLE_ONEDNN_OPTS=1) is kept on: measured side by side in one run on this 2-core
# machine (bench/speed/onednn_and_settings.md), 64 px batch 32 training steps ran 1.29-1.43x
# (student) and 1.29-1.36x (teacher) faster than with it off; same-seed runs stay bit-identical.
# TensorFlow then writes a notice about it straight to file descriptor 2 while it is imported,
# before its log settings apply; _QuietImport hides those lines (and only those).
ONEDNN_NOTICES = ("oneDNN custom operations are on",
                  "All log messages before absl::InitializeLog() is called")


class _QuietImport(importlib.abc.MetaPathFinder):
    """Import hook for the first `import tensorflow`: runs the import with file descriptor 2 sent
    to a temporary file, then writes back every line except TensorFlow's start-up notices."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)        # once; the real finders locate the package
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with stderr_without(ONEDNN_NOTICES):
            self.loader.exec_module(module)


@contextlib.contextmanager
def stderr_without(notices):
    """Send file descriptor 2 (where C++ libraries print) to a temporary file for the block, then
    write back every line that contains none of `notices`."""
    import tempfile  # noqa: PLC0415

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [ln for ln in caught.read().decode(errors="replace").splitlines(True)
                    if not any(n in ln for n in notices)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# Keras 3's backends and the package each needs (KERAS_BACKEND picks one; this project's is tensorflow)
KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy",
                  "openvino": "openvino"}


def keras_backend_problem(environ=None) -> Optional[str]:
    """Why KERAS_BACKEND cannot work (an unknown name, or its package is not installed), or None.
    Keras itself fails at import with a traceback ("Unable to import backend", ModuleNotFoundError)."""
    import importlib.util

    name = (os.environ if environ is None else environ).get("KERAS_BACKEND")
    if not name:
        return None
    if name not in KERAS_BACKENDS:
        return (f"KERAS_BACKEND={name!r}: not a Keras backend; choose one of "
                f"{', '.join(KERAS_BACKENDS)} (tensorflow is this project's), or unset it")
    package = KERAS_BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        return (f"KERAS_BACKEND={name}: the {package} package is not installed; unset KERAS_BACKEND "
                f"(TensorFlow, this project's backend) or install {package}")
    return None


def check_keras_backend() -> None:
    """A KERAS_BACKEND that cannot work: for a command of this project (its __main__ is one of
    the repository's scripts) one line on stderr and exit status 2, as errors.run_cli does;
    imported as a library, errors.ConfigError."""
    problem = keras_backend_problem()
    if problem is None:
        return
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    if main_file and os.path.dirname(os.path.abspath(main_file)) == os.path.dirname(os.path.abspath(__file__)):
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    from errors import ConfigError

    raise ConfigError(problem)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python start-up noise. Call before importing tensorflow.
    Also applies tune_malloc(): every entry point calls this first, before TensorFlow allocates.
    A KERAS_BACKEND that cannot work is refused here (check_keras_backend), before Keras fails."""
    check_keras_backend()
    tune_malloc()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport)
                                                   for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")
