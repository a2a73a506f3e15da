"""The closed set of errors kdedge reports as `kdedge: error: <message>` with exit code 2 (no traceback).

Anything else is a bug and shows its traceback. Each type also derives from the built-in a caller
would catch (ValueError, FileExistsError, ImportError), so `except ValueError` keeps working.
"""
from __future__ import annotations


class KdedgeError(Exception):
    """Base of the errors a user can fix: bad input, option, path or environment. The message says how."""


class UsageError(KdedgeError, ValueError):
    """Options that cannot work together or with this machine (e.g. --jobs above the cores, --engine ray
    without Ray's cluster files, --strategy multiworker without TF_CONFIG, a resume with other settings)."""


class OutputExistsError(KdedgeError, FileExistsError):
    """An output path that kdedge refuses to write or replace."""


class MissingExtraError(KdedgeError, ImportError):
    """An optional dependency (an extra such as kdedge[ckip] or kdedge[ray]) is not installed."""


# Errors of user-given paths, reported like kdedge's own (the OS message names the path).
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
USER_ERRORS = (KdedgeError, *PATH_ERRORS)


class ReadBackError(KdedgeError, ValueError):
    """A file kdedge wrote and reads back (cv.json, a fold file, a config file) that is not a regular file, is
    too large, is not strict JSON or fails its checks: damaged, edited or from another run. Nothing is written."""


class PieceFailed(KdedgeError, RuntimeError):
    """A cv worker (a `--jobs` process or a Ray task) died or a Ray cluster failed: the finished folds are kept,
    and the message says how to resume."""
