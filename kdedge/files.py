"""Atomic outputs: write to a temporary sibling, fsync, rename — a reader never sees half a file or dir."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """kdedge's cache directory for one kind of result: $KDEDGE_CACHE/kind (default ~/.cache/kdedge/kind)."""
    return Path(os.environ.get("KDEDGE_CACHE", Path.home() / ".cache" / "kdedge")) / kind


def write_json(path: Path, obj) -> None:
    """Write pretty JSON (UTF-8) inside a directory that is itself committed atomically."""
    Path(path).write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp sibling, fsync, rename: a reader sees the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def staging_dir(out: Path, force: bool) -> Path:
    """A fresh temporary sibling of `out` to write into; refuses an existing `out` unless `force`."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists (use --force to replace it)")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, out: Path) -> None:
    """fsync every file of `tmp`, then rename it to `out` (an old `out` is replaced only at the last moment)."""
    out = Path(out)
    for path in Path(tmp).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
