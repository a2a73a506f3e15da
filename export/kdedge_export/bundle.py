"""Write a bundle directory: files, checksummed manifest, atomic publication under the final name."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kdedge.files import check_replaceable, commit_dir, read_regular_file
from kdedge_run.bundle import FORMAT, MANIFEST, file_sha256

from .errors import OptionError, VerificationError

# manifest keys in the order of docs/bundle.md
KEY_ORDER = ("format", "format_version", "kdedge_version", "created", "architecture", "model_kind",
             "intended_use", "labels", "label_descriptions", "thresholds", "calibration", "abstain", "input", "vocab", "embeddings",
             "segmenter", "models", "files", "golden", "metrics", "test_metrics", "calibration_report",
             "segmentation_agreement", "parity", "notes")


MAX_MANIFEST_BYTES = 64 << 20


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing output unless `force` and it is an empty directory or a kdedge bundle
    holding only the files its manifest lists (never a run, a project folder, anything else)."""
    try:
        check_replaceable(out, force, bundle_listing, "a kdedge bundle")
    except FileExistsError as e:
        raise OptionError(str(e)) from None


def bundle_listing(path: Path):
    """Accepts manifest.json and the files its `files` lists; None if `path` holds no kdedge manifest."""
    try:
        manifest = json.loads(read_regular_file(Path(path) / MANIFEST, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (ValueError, RecursionError):  # ReadBackError (a link, a FIFO, too big, unreadable) is a ValueError
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        return None
    listed = {MANIFEST, *manifest["files"]}
    return listed.__contains__


class Staging:
    """A temporary directory to fill; `commit` renames it to the final name, `discard` removes it.

    With `out` the directory is a hidden sibling of `out` (same filesystem, so the rename is atomic);
    without, a scratch directory under the system temp dir.
    """

    def __init__(self, out: Path | None = None):
        self.out = Path(os.path.abspath(out)) if out is not None else None  # "." has no name to stage beside
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        else:
            self.path = Path(tempfile.mkdtemp(prefix="kdedge-bundle-"))
        os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp makes 0700; a bundle is an ordinary directory

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def copy(self, rel: str, src: Path) -> None:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)

    def save_npy(self, rel: str, array: np.ndarray) -> None:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    def files(self) -> dict:
        """{relative path: {"sha256", "bytes"}} of every file except the manifest, sorted."""
        out = {}
        for path in sorted(p for p in self.path.rglob("*") if p.is_file()):
            rel = path.relative_to(self.path).as_posix()
            if rel == MANIFEST:
                continue
            out[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        return out

    def write_manifest(self, manifest: dict) -> dict:
        """Set `files` from the directory's contents and write manifest.json; returns the manifest."""
        manifest = {**manifest, "files": self.files()}
        ordered = {k: manifest[k] for k in KEY_ORDER if k in manifest}
        ordered.update({k: v for k, v in manifest.items() if k not in ordered})
        try:  # NaN or ±Infinity is not JSON: both readers would refuse the bundle
            text = json.dumps(ordered, ensure_ascii=False, indent=2, allow_nan=False)
        except ValueError as e:
            raise VerificationError(f"{MANIFEST}: a value to write is not a finite number ({e}); nothing was written") from None
        (self.path / MANIFEST).write_text(text + "\n", encoding="utf-8")
        return ordered

    def commit(self, force: bool) -> Path:
        """fsync every file and directory, then rename to the final name (replacing a bundle with `force`):
        `files.commit_dir`."""
        assert self.out is not None
        check_out(self.out, force)
        try:
            commit_dir(self.path, self.out, bundle_listing, "a kdedge bundle")
        except FileExistsError as e:  # something other than a bundle appeared at `out` meanwhile
            raise OptionError(str(e)) from None
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


