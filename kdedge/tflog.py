"""The console's log: kdedge's messages on stderr; TensorFlow's C++ log (device probing, oneDNN, CUDA stubs)
quiet unless `kdedge --verbose`, gensim's chatter hidden."""
from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "KDEDGE_VERBOSE"  # set by `kdedge --verbose`; fold worker processes inherit it


def import_tensorflow() -> None:
    """Import TensorFlow now, quietly unless verbose: TF_CPP_MIN_LOG_LEVEL=3 (if the user set none) and
    the process's stderr closed during the import, hiding the lines TensorFlow writes before its logging
    is set up (oneDNN, CUDA probing). Call it before anything else imports TensorFlow (in the CLI and in
    each worker process); a failed import still raises."""
    if "tensorflow" in sys.modules:
        return
    if os.environ.get(VERBOSE_ENV) == "1":
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def log_to_stderr(level: int = logging.INFO) -> None:
    """kdedge's log as bare messages on stderr, gensim's below warnings hidden; in the CLI and in each worker
    process (fold workers and Ray tasks configure their own logging)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("gensim").setLevel(logging.WARNING)
