"""Atomic outputs: write to a temporary sibling, fsync, rename — a reader never sees half a file or dir."""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import tokenize
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from kdedge.errors import OutputExistsError, ReadBackError

# The run's pinned segmenter: the user dictionary jieba was given and the Traditional → Simplified map
SEGMENTER_DICTIONARY = "segmenter/dict.txt"
SEGMENTER_CHAR_MAP = "segmenter/t2s.json"
# What `kdedge train` writes into a run directory (kdedge/training/train.py): `--force` replaces a directory
# holding nothing else. A new entry written there must be added here, or --force refuses such runs.
RUN_FILES = frozenset({"config.json", "metrics.json", "history.json", "validation.jsonl", "vocab.txt",
                       "vectors.npy", "train.log", SEGMENTER_DICTIONARY, SEGMENTER_CHAR_MAP,
                       "label_descriptions.json"})
RUN_FILE_SUFFIXES = {"": ".keras", "predictions/": ".npy"}  # top-level models, saved logits
RUN = "a kdedge run directory"
# what numpy raises for a damaged .npy / .npz: a short file (EOFError), a header it cannot parse (ValueError, or
# tokenize.TokenError from its literal_eval fallback for an unclosed bracket), an unreadable file (OSError)
NPY_READ_ERRORS = (OSError, ValueError, EOFError, tokenize.TokenError)
# Set by the `kdedge` CLI's SIGINT handler. A library can swallow the KeyboardInterrupt (raised inside a
# weakref callback or finalizer, Python only prints it), so a commit checks this first: never publish then.
INTERRUPTED = threading.Event()


def cache_dir(kind: str) -> Path:
    """kdedge's cache directory for one kind of result: $KDEDGE_CACHE/kind (default ~/.cache/kdedge/kind)."""
    return Path(os.environ.get("KDEDGE_CACHE", Path.home() / ".cache" / "kdedge")) / kind


def write_json(path: Path, obj) -> None:
    """Write pretty JSON (UTF-8) inside a directory that is itself committed atomically."""
    Path(path).write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def fsync_path(path: Path) -> None:
    """Flush a file or a directory (its entries) to disk; filesystems that refuse it on directories are let be."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary dot-prefixed sibling of file `path` (same suffix) for the caller to write; then
    fsync it, rename it to `path` and fsync the directory: a reader sees the old file or the whole new
    one. On an exception the temporary file is removed and nothing is renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def shown_path(path) -> str:
    """A path as an error message quotes it: control and other unprintable characters escaped."""
    from kdedge_run.text import escape

    return escape(str(path))


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, which must be a regular file (not a link, FIFO or device) of at most `max_bytes`:
    the one rule for every file kdedge reads back. Opened without following a link and without blocking (a
    FIFO never hangs the reader), then checked on the open file. ReadBackError naming the file otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if os.path.islink(path):
            raise ReadBackError(f"{shown_path(path)}: a symbolic link; kdedge reads back only regular files") from None
        raise ReadBackError(f"{shown_path(path)}: cannot read: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadBackError(f"{shown_path(path)}: not a regular file")
        raise ReadBackError(f"{shown_path(path)}: {info.st_size:,} bytes; at most {max_bytes:,} expected here")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise ReadBackError(f"{shown_path(path)}: more than {max_bytes:,} bytes; at most that expected here")
    return data


def check_regular_file(path: Path) -> None:
    """ReadBackError unless `path` is a regular file, not a link (for files a library opens itself)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ReadBackError(f"{shown_path(path)}: cannot read: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ReadBackError(f"{shown_path(path)}: a symbolic link; kdedge reads back only regular files")
    if not stat.S_ISREG(info.st_mode):
        raise ReadBackError(f"{shown_path(path)}: not a regular file")


def read_json_file(path: Path, max_bytes: int, allow_nan: bool = False):
    """The JSON value in `path` (`read_regular_file`), parsed strictly (UTF-8; no NaN or Infinity unless
    `allow_nan`: Python's json writes them, e.g. in a training history, and the caller checks its fields)."""
    from kdedge.text.data import parse_json_line

    try:
        text = read_regular_file(path, max_bytes).decode("utf-8")
        if allow_nan:
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{exc.msg}, line {exc.lineno} column {exc.colno}") from None
        return parse_json_line(text)
    except UnicodeDecodeError as exc:
        raise ReadBackError(f"{shown_path(path)}: not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        if isinstance(exc, ReadBackError):
            raise
        raise ReadBackError(f"{shown_path(path)}: not valid JSON: {exc}") from None


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON atomically (`atomic_path`): a reader sees the old file or the whole new one."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


def unlisted(root: Path, listed: Callable[[str], bool], limit: int = 4) -> list[str]:
    """Relative paths of up to `limit` entries under `root` that are not directories (files, symlinks, ...)
    and that `listed` does not accept, in walk order; empty directories count as nothing. The walk stops at
    the `limit`-th: a directory full of other things is refused without reading all of it."""
    extra = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if (full.is_symlink() or not full.is_dir()) and not listed(rel):
                extra.append(rel)
                if len(extra) >= limit:
                    return extra
    return extra


def refuse_unreplaceable(out: Path) -> None:
    """OutputExistsError for an --out that no command may replace, decided from the path alone: the
    filesystem root, the home directory, the current directory or one of its ancestors."""
    target = Path(os.path.abspath(out))
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        resolved = target
    cwd = Path.cwd().resolve()
    why = ("the filesystem root" if resolved == Path(resolved.anchor)
           else "your home directory" if resolved == Path.home().resolve()
           else "the current directory" if resolved == cwd
           else "an ancestor of the current directory" if resolved in cwd.parents else None)
    if why:
        raise OutputExistsError(f"{shown_path(out)}: is {why}; --out must name a new directory (or one that kdedge "
                                "wrote), e.g. --out ./run")


def check_replaceable(out: Path, force: bool, listed: Callable[[Path], Callable[[str], bool] | None],
                      what: str) -> None:
    """Refuse an existing `out` unless `force` and it is a directory that is empty or holds only what
    `listed(out)` accepts (None: not `what` at all). Raises OutputExistsError (a FileExistsError) saying what to do."""
    out = Path(out)
    refuse_unreplaceable(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise OutputExistsError(f"{shown_path(out)}: already exists (use --force to replace it)")
    rule = f"--force replaces only {what} or an empty directory; move it away or choose another --out"
    if out.is_symlink() or not out.is_dir():
        raise OutputExistsError(f"{shown_path(out)}: exists and is not a directory; {rule}")
    accepts = listed(out) or (lambda rel: False)
    extra = unlisted(out, accepts)
    if extra:
        shown = ", ".join(shown_path(rel) for rel in extra[:3]) + (" and more" if len(extra) > 3 else "")
        raise OutputExistsError(f"{shown_path(out)}: not {what}: it holds {shown}; {rule}")


def run_listing(path: Path) -> Callable[[str], bool]:
    """Accepts the relative paths a `kdedge train` run directory holds (RUN_FILES, models, logits)."""
    def accepts(rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        suffix = RUN_FILE_SUFFIXES.get(folder + "/" if folder else "")
        return rel in RUN_FILES or (suffix is not None and name.endswith(suffix) and not name.startswith("."))
    return accepts


def staging_dir(out: Path, force: bool) -> Path:
    """A fresh temporary sibling of `out` to write into; refuses an existing `out` unless `force` and
    it is an empty directory or a kdedge run (nothing else: see `check_replaceable`)."""
    out = Path(os.path.abspath(out))
    check_replaceable(out, force, run_listing, RUN)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, out: Path, listed: Callable[[Path], Callable[[str], bool] | None] = run_listing,
               what: str = RUN) -> None:
    """fsync every file and directory of `tmp`, then rename it to `out` and fsync the parent directory. An old
    `out` is replaced only at the last moment, and only if it still holds nothing but what `listed` accepts."""
    out = Path(out)
    for path in sorted(Path(tmp).rglob("*"), key=lambda p: -len(p.parts)):  # deepest first, directories too
        fsync_path(path)
    fsync_path(tmp)
    check_replaceable(out, True, listed, what)  # again: files may have appeared in `out` meanwhile
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    fsync_path(out.parent)
