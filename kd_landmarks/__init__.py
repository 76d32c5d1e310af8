"""The Python API from any folder: `from kd_landmarks import LandmarkModel`.

`pip install -r requirements.txt` (in the repository root) installs this package, and only it, in
editable mode (`-e .`, pyproject.toml): the repository stays where it is, models included.

The repository's own modules are scripts that import each other by plain names (`import errors`,
`from configuration import ...`), as a command run from its root does. Installing those names would
put modules called `test`, `errors` or `metrics` into every Python program of the environment, so
this package instead loads the modules the API needs from the repository under its own name
(`kd_landmarks._repo.inference`, `kd_landmarks._repo.errors`, ...): each is run with an import
function that sends the repository's plain module names to those private copies. Nothing is added
to sys.path, and no module of a plain repository name enters sys.modules
(tests/test_python_api_anywhere.py checks both from a folder outside the repository).

In a program that already imported the repository's modules by their plain names (one run from
the repository root), those modules are used as they are, so error classes and Keras objects are
the same ones either way.
"""
from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent      # the repository (editable install)
MODELS_DIR = ROOT / "models"                       # the shipped models: MODELS_DIR / "students" / ...
_PRIVATE = __name__ + "._repo"
_REPO_MODULES = frozenset(p.stem for p in ROOT.glob("*.py"))

if "inference" not in _REPO_MODULES:
    raise ImportError(f"{__name__}: the repository's inference.py is not beside this package "
                      f"({ROOT}); install it from the repository root with `pip install -r "
                      f"requirements.txt` (an editable install), not as a copy")


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    """__import__ for the repository's modules: their plain names resolve to the private copies."""
    if level == 0 and name in _REPO_MODULES:
        return _load(name)
    return builtins.__import__(name, globals, locals, fromlist, level)


_BUILTINS = {**vars(builtins), "__import__": _import}


class _Loader(importlib.machinery.SourceFileLoader):
    """Runs a repository module with _BUILTINS, so every import it makes (also inside functions,
    later) goes through _import."""

    def exec_module(self, module):
        module.__builtins__ = _BUILTINS
        super().exec_module(module)


def _load(name: str) -> types.ModuleType:
    """The repository module `name`: the plain-named one when this program already imported it
    from the repository, else the private copy (loaded once)."""
    plain = sys.modules.get(name)
    if plain is not None and Path(getattr(plain, "__file__", "") or "").resolve() == ROOT / f"{name}.py":
        return plain
    full = f"{_PRIVATE}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    path = str(ROOT / f"{name}.py")
    spec = importlib.util.spec_from_file_location(full, path, loader=_Loader(full, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    setattr(_package, name, module)
    return module


_package = types.ModuleType(_PRIVATE, "The repository's modules, as the API loads them.")
_package.__path__ = []                 # a package of its own; its modules come only from _load
sys.modules[_PRIVATE] = _package

_inference = _load("inference")
_errors = _load("errors")

LandmarkModel = _inference.LandmarkModel
read_image_rgb = _inference.read_image_rgb
LandmarkError = _errors.LandmarkError        # every expected failure (no face found, bad file...)
DataFormatError = _errors.DataFormatError
ModelError = _errors.ModelError

__all__ = ["LandmarkModel", "read_image_rgb", "LandmarkError", "DataFormatError", "ModelError", "ROOT",
           "MODELS_DIR"]
