"""Atomic file writes, and the claim on outputs every command makes before it writes.

* Atomic writes: write to a temporary file in the same folder, flush, then rename. A kill at any
  moment leaves either the old file or the new one, never a half-written file that looks complete.
* Claims (`claim_folder`, `OutputLock`, `check_output_file`): a command writes or clears only a
  folder it made (the owner marker OWNER_FILE), never replaces a file it did not write unless
  told (--overwrite), and holds a lock on its outputs while it writes them.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from errors import ConfigError, LandmarkError


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    except OSError as err:
        raise LandmarkError(f"{path.parent}: cannot write here ({err.strerror}); "
                            f"choose a writable output folder") from None
    os.close(fd)
    # mkstemp creates the file owner-only (0600); give the result the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------------------------
# Claiming outputs: the project's owner marker and output locks
# ----------------------------------------------------------------------------------------------
# The rule (docs/ROBUSTNESS.md): no command deletes or overwrites a file it did not create unless
# the user says so (--overwrite). A command's output folder carries OWNER_FILE, naming the command
# and what the folder holds; a folder is cleared or written into only when it is new, empty, or
# holds that marker (or an older output of the same command that `recognise` knows). Every output
# folder and file is claimed under a lock (OutputLock), so two concurrent runs cannot both write it.

OWNER_FILE = ".kdlandmarks-owner.json"
LOCK_SUFFIX = ".kdlandmarks.lock"
MAX_OWNER_BYTES = 1 << 16
# Names a folder may hold and still count as empty: the marker, the locks and safe_io temporaries.
_NOT_CONTENT_PREFIXES = (OWNER_FILE, ".write-test-", ".lock")


def _is_bookkeeping(name: str) -> bool:
    return (name.startswith(_NOT_CONTENT_PREFIXES) or name.endswith(LOCK_SUFFIX)
            or (name.startswith(".") and ".tmp" in name))


def folder_contents(folder) -> list:
    """The names in `folder` other than the project's bookkeeping (marker, locks, temporaries)."""
    try:
        return sorted(n for n in os.listdir(folder) if not _is_bookkeeping(n))
    except FileNotFoundError:
        return []


def read_owner(folder) -> Optional[dict]:
    """The owner marker of `folder` (a dict with at least "command"), or None."""
    path = Path(folder) / OWNER_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_OWNER_BYTES + 1)
        if len(raw) > MAX_OWNER_BYTES:
            return None
        owner = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("command"), str) else None


def write_owner(folder, command: str, holds: str, **extra) -> dict:
    """Mark `folder` as made by `command` and holding `holds` (atomically)."""
    owner = {"command": command, "holds": holds, **read_extra(folder, command), **extra,
             "marked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(Path(folder) / OWNER_FILE, owner)
    return owner


def read_extra(folder, command: str) -> dict:
    """What the marker of `folder` records beyond command/holds when `command` wrote it."""
    owner = read_owner(folder) or {}
    if owner.get("command") != command:
        return {}
    return {k: v for k, v in owner.items() if k not in ("command", "holds", "marked")}


def claim_folder(folder, command: str, holds: str, *, overwrite: bool = False,
                 option: str = "--out-dir", recognise: Optional[Callable[[Path], bool]] = None,
                 conflicts: Optional[set] = None) -> bool:
    """Make `folder` an output folder of `command`: create it if missing and mark it (OWNER_FILE).

    An existing folder is accepted when it is empty (bookkeeping aside), when its marker names
    `command`, when `recognise(folder)` says it is an older output of `command` (written before
    the marker existed), when `conflicts` (the names the command writes or deletes) is given and
    the folder holds none of them (files are then only added beside the user's), or with
    `overwrite` (the user said so). Anything else -> ConfigError
    naming the folder and the way out; nothing is written then. Returns True when the folder was
    this command's before (marked or recognised), False when it was new, empty or overwritten."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: cannot write there (it is a file, not a folder); "
                          f"choose a writable folder")
    owner = read_owner(folder) if folder.is_dir() else None
    contents = folder_contents(folder) if folder.is_dir() else []
    ours = owner is not None and owner.get("command") == command
    if not ours and contents and recognise is not None:
        try:
            ours = bool(recognise(folder))
        except (OSError, ValueError):
            ours = False
    clash = contents if conflicts is None else [n for n in contents if n in conflicts]
    if clash and not ours and not overwrite:
        made = f"made by `{owner['command']}`" if owner else \
            f"not made by this project ({', '.join(clash[:3])}{', ...' if len(clash) > 3 else ''}; " \
            f"no {OWNER_FILE})"
        raise ConfigError(f"{option} {folder}: this folder holds files {made}, which `{command}` "
                            f"would overwrite or delete; choose a new or empty folder, or pass "
                            f"--overwrite to write into it anyway")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_owner(folder, command, holds)
    except OSError as err:
        raise ConfigError(f"{option} {folder}: cannot write there ({err.strerror or err}); "
                            f"choose a writable folder") from None
    return bool(ours and contents)


_HELD_OUTPUT_LOCKS: dict = {}    # lock file -> the OutputLock this process holds on it


def lock_holder(host: bool = False) -> str:
    """Who holds a lock, one line of at most 300 characters: pid, the host if asked, since when,
    and the command."""
    import socket  # noqa: PLC0415

    command = " ".join([Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]])
    where = f" on {socket.gethostname()}" if host else ""
    return " ".join(f"pid {os.getpid()}{where} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                    f"{command}".split())[:300]


class OutputLock:
    """An exclusive lock on an output file or folder `target`: flock on `.NAME.kdlandmarks.lock`
    beside it (the system releases it when the process ends, also after kill -9). The lock file
    is removed on release; a lock file left by a killed run is taken over. A held lock ->
    LandmarkError naming the holder. Where flock does not exist (Windows) there is no lock.

    A lock of another kind sets `path` (its lock file), `keep_file` (the lock file stays after
    release), `holder_host` and `unknown_holder` (the holder line), and words its errors
    (`busy_error`, `unwritable_error`): training.RunFolderLock."""

    keep_file = False
    holder_host = False                  # the holder line names the host
    unknown_holder = "another process"   # a held lock whose file names no holder

    def __init__(self, target, option: str = "output"):
        self.target = Path(os.path.abspath(target))
        self.option = option
        self.path = self.target.parent / f".{self.target.name}{LOCK_SUFFIX}"
        self.fd = None

    def unwritable_error(self, err: OSError) -> LandmarkError:
        return ConfigError(f"{self.option} {self.target}: cannot write there "
                           f"({err.strerror or err}); choose a writable folder")

    def busy_error(self, holder: str) -> LandmarkError:
        return ConfigError(f"{self.option} {self.target}: another command is writing it "
                           f"({holder}); wait for it to finish, or choose another {self.option}")

    def acquire(self) -> "OutputLock":
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self.unwritable_error(err) from None
        previous = _HELD_OUTPUT_LOCKS.pop(str(self.path), None)
        if previous is not None:     # this process's own, from a run that did not release it
            previous.release()
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise self.unwritable_error(err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or self.unknown_holder
                finally:
                    os.close(fd)
                raise self.busy_error(holder) from None
            try:   # the file we locked must still be the one at the path (a releaser unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise ConfigError(f"{self.option} {self.target}: could not take its lock "
                                f"{self.path}; try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, lock_holder(self.holder_host).encode("utf-8"), 0)
        self.fd = fd
        _HELD_OUTPUT_LOCKS[str(self.path)] = self
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if _HELD_OUTPUT_LOCKS.get(str(self.path)) is self:
            del _HELD_OUTPUT_LOCKS[str(self.path)]
        try:
            if not self.keep_file and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def file_digest(path) -> Optional[str]:
    """'sha1:<hex>' of a file's contents, None when it cannot be read."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return f"sha1:{h.hexdigest()}"


def check_output_file(path, *, made_here=(), inputs: Optional[dict] = None, overwrite: bool = False,
                      option: str = "--output") -> Path:
    """Refuse to replace an existing file `path` that this command did not write: allowed when it
    does not exist, when its content digest is in `made_here` (what this run wrote before), or with
    `overwrite`. `inputs` ({"--weights": path, ...}): files the command reads; writing over one of
    them is named as such. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; name a file in it")
    same_as = [name for name, p in (inputs or {}).items()
               if p is not None and Path(p).exists() and _same_file(p, path)]
    if same_as and not overwrite:
        raise ConfigError(f"{option} {path}: is also this run's {same_as[0]} file, which would be "
                            f"replaced; choose another {option} (or pass --overwrite)")
    if path.exists() and not overwrite and file_digest(path) not in set(made_here):
        raise ConfigError(f"{option} {path}: the file exists and was not written by this run; "
                            f"choose another {option}, or pass --overwrite to replace it")
    return path


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


# ----------------------------------------------------------------------------------------------
# Reading a user's JSON file: bounded and one-line errors
# ----------------------------------------------------------------------------------------------

MAX_JSON_BYTES = 1 << 20            # a configuration or a dataset spec
MAX_PREDICTIONS_BYTES = 1 << 30     # a predictions file (WFLW's test set is about 5 MB)


class TooLarge(ValueError):
    """A file beyond the size a reader takes (read_bounded)."""


def read_bounded(path, max_bytes: int) -> bytes:
    """The bytes of `path`, at most max_bytes (more -> ValueError, checked before reading a regular
    file, while reading anything else: /dev/zero, a pipe)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        import stat  # noqa: PLC0415

        if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
            raise TooLarge(f"{st.st_size} bytes, more than the {max_bytes} this file may have")
        chunks, total = [], 0
        while True:
            block = f.read(min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > max_bytes:
                raise TooLarge(f"more than the {max_bytes} bytes this file may have (a device or "
                               f"an endless stream?)")
    return b"".join(chunks)


def read_json(path, *, what: str, hint: str, error=ConfigError, max_bytes: int = MAX_JSON_BYTES):
    """Parse a user's JSON file; every failure is one `error` line `<path>: <why>; <hint>`: not
    found, a folder, too large (read_bounded), not UTF-8, not JSON, or nested too deeply. NaN and
    Infinity are parsed (as Python's parser does): the callers' value checks name them."""
    path = Path(path)
    try:
        raw = read_bounded(path, max_bytes)
        return json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; check the path") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; pass the {what} itself") from None
    except TooLarge as err:
        raise error(f"{path}: too large for a {what} ({err}); {hint}") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON for a {what} (nested too deeply); {hint}") from None
    except (ValueError, UnicodeDecodeError) as err:   # JSONDecodeError is a ValueError
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise error(f"{path}: not valid JSON ({reason}); {hint}") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err}); {hint}") from None
