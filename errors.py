"""The project's own error type and the thin wrapper every command-line entry point runs under.

Expected failures (a missing file, a malformed annotation, an unknown dataset name, ...) raise
`LandmarkError` with one line that names the file and the fix. `run_cli` prints that line and exits
with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import sys

_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


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
        if err.errno in _NO_SPACE:
            # a full disk while writing (a write() names no file): one line, the atomic writes
            # (safe_io) removed their temporaries, so nothing half-written was kept
            where = f"{name}: " if name else ""
            print(f"error: {where}no space left on the device ({err.strerror or 'disk full'}); "
                  f"free disk space and run the command again (nothing half-written was kept)",
                  file=sys.stderr)
            return 2
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
