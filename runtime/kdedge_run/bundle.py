"""Load and verify a bundle directory as docs/bundle.md specifies (checksums, layout, shapes)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .text import (OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN, CharMap, CharTokenizer, JiebaTokenizer,
                   Preprocessor, input_shape, read_dictionary)

FORMAT = "kdedge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FORMATS = ("onnx", "tflite")
_EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


class BundleError(Exception):
    """A bundle cannot be used; the message names the file and the problem."""


@contextlib.contextmanager
def _reading(rel: str):
    """Turn any failure while reading bundle file `rel` into a BundleError naming it."""
    try:
        yield
    except BundleError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise BundleError(f"{rel}: cannot read: {e}") from e


@dataclass
class Bundle:
    """A verified bundle: its manifest, preprocessing and vectors table."""

    path: Path
    manifest: dict
    preprocessor: Preprocessor
    vectors: np.ndarray
    scales: np.ndarray | None

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray(self.manifest["thresholds"], dtype=np.float64)

    @property
    def temperatures(self) -> np.ndarray:
        return np.asarray(self.manifest["calibration"]["temperatures"], dtype=np.float64)

    @property
    def input_spec(self) -> dict:
        return self.manifest["input"]

    def models(self) -> dict[str, dict]:
        """Model entries by format (the first entry of each format)."""
        out: dict[str, dict] = {}
        for entry in self.manifest["models"]:
            out.setdefault(entry["format"], entry)
        return out

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Id array `[batch, ...]` → float32 `[batch, ..., dim]` (int8 rows times their scale)."""
        rows = self.vectors[ids].astype(np.float32)
        if self.scales is not None:
            rows *= self.scales[ids][..., None]
        return rows


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Verify the bundle at `path` and load its vocabulary, vectors and segmenter."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    root = root.resolve()
    manifest = _read_manifest(root)
    _check_files(root, manifest["files"])
    _check_manifest(manifest)
    vocab = _read_vocab(root, manifest)
    vectors, scales = _read_vectors(root, manifest, len(vocab))
    tokenizer, convert = _read_segmenter(root, manifest)
    preprocessor = Preprocessor(tokenizer, vocab, manifest["input"], convert)
    return Bundle(root, manifest, preprocessor, vectors, scales)


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if path.is_symlink():
        raise BundleError(f"{MANIFEST}: is a symlink; bundles must not contain symlinks")
    if not path.is_file():
        raise BundleError(f"{MANIFEST}: missing in {root}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{MANIFEST}: not valid UTF-8 JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f'{MANIFEST}: not a kdedge bundle (expected "format": "{FORMAT}")')
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise BundleError(f"{MANIFEST}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{MANIFEST}: format_version {version} is newer than this kdedge-run reads "
                          f"({FORMAT_VERSION}); upgrade kdedge-run")
    for key, kind in (("files", dict), ("labels", list), ("thresholds", list), ("calibration", dict),
                      ("input", dict), ("vocab", dict), ("embeddings", dict), ("segmenter", dict),
                      ("models", list)):
        if not isinstance(manifest.get(key), kind):
            raise BundleError(f"{MANIFEST}: '{key}' missing or not a JSON {kind.__name__}")
    return manifest


def _check_path(rel: str) -> None:
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{MANIFEST}: invalid file name {rel!r} in 'files'")
    parts = rel.split("/")
    if (PurePosixPath(rel).is_absolute() or "\\" in rel or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise BundleError(f"{rel}: path leaves the bundle directory or is not a plain relative path")
    if rel == MANIFEST:
        raise BundleError(f"{MANIFEST}: must not list itself in 'files'")


def file_sha256(path) -> str:
    """Hex SHA-256 of a file (the checksum the manifest records)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_files(root: Path, files: dict) -> None:
    """Every listed file present with its size and SHA-256; no symlink; nothing unlisted."""
    for rel in files:
        _check_path(rel)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(f"{rel}: is a symlink; bundles must not contain symlinks")
            if stat.S_ISDIR(mode):
                continue
            if rel == MANIFEST:
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(f"{rel}: not a regular file")
            if rel not in files:
                raise BundleError(f"{rel}: unlisted file (not in manifest.json 'files')")
    for rel, meta in files.items():
        full = root / rel
        if not full.is_file():
            raise BundleError(f"{rel}: missing (listed in manifest.json 'files')")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or type(meta.get("bytes")) is not int:
            raise BundleError(f"{MANIFEST}: entry for {rel} needs 'sha256' (hex) and 'bytes' (int)")
        size = full.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(f"{rel}: size {size} bytes, manifest says {meta['bytes']}")
        if file_sha256(full) != meta["sha256"].lower():
            raise BundleError(f"{rel}: SHA-256 mismatch (file changed or corrupt)")


def _positive_int(value) -> bool:
    return type(value) is int and value > 0


def _check_manifest(m: dict) -> None:
    """Cross-field consistency of the manifest (shapes, label counts, referenced files)."""
    labels = m["labels"]
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{MANIFEST}: 'labels' must be a non-empty list of distinct strings")
    n = len(labels)
    calibration = m["calibration"]
    if calibration.get("method") != "temperature":
        raise BundleError(f"{MANIFEST}: calibration method {calibration.get('method')!r} unknown "
                          "(expected 'temperature')")
    for key, values in (("thresholds", m["thresholds"]), ("calibration.temperatures",
                                                          calibration.get("temperatures"))):
        if not isinstance(values, list) or len(values) != n:
            raise BundleError(f"{MANIFEST}: '{key}' must list one number per label ({n})")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise BundleError(f"{MANIFEST}: '{key}' must hold numbers")
    if not all(math.isfinite(t) and t > 0 for t in calibration["temperatures"]):
        raise BundleError(f"{MANIFEST}: temperatures must be finite and > 0")
    if not all(0.0 <= t <= 1.0 for t in m["thresholds"]):  # also refuses NaN (json reads NaN/Infinity)
        raise BundleError(f"{MANIFEST}: thresholds must be within [0, 1]")
    spec = m["input"]
    if spec.get("kind") == "sequence":
        dims = ("max_len",)
    elif spec.get("kind") == "hierarchical":
        dims = ("max_sentences", "max_sentence_len")
        ends = spec.get("sentence_end_tokens")
        if not isinstance(ends, list) or not all(isinstance(t, str) for t in ends):
            raise BundleError(f"{MANIFEST}: input.sentence_end_tokens must be a list of strings")
    else:
        raise BundleError(f"{MANIFEST}: input.kind {spec.get('kind')!r} unknown "
                          "(expected 'sequence' or 'hierarchical')")
    for key in dims:
        if not _positive_int(spec.get(key)):
            raise BundleError(f"{MANIFEST}: input.{key} must be a positive integer")
    if spec.get("pad_id", PAD_ID) != PAD_ID or spec.get("oov_id", OOV_ID) != OOV_ID:
        raise BundleError(f"{MANIFEST}: input.pad_id must be {PAD_ID} and input.oov_id {OOV_ID}")
    dim = m["embeddings"].get("dim")
    if not _positive_int(dim):
        raise BundleError(f"{MANIFEST}: embeddings.dim must be a positive integer")
    if not m["models"]:
        raise BundleError(f"{MANIFEST}: 'models' lists no model")
    expected = [*input_shape(spec), dim]
    for entry in m["models"]:
        if not isinstance(entry, dict) or entry.get("format") not in MODEL_FORMATS:
            raise BundleError(f"{MANIFEST}: model entry {entry!r} has no known format {MODEL_FORMATS}")
        _require_listed(m, entry.get("file"), f"models[{entry['format']}].file")
        shape = entry.get("input_shape")
        if not isinstance(shape, list) or shape[1:] != expected or shape[:1] not in ([None], [1]):
            raise BundleError(f"{entry['file']}: manifest input_shape {shape} does not match "
                              f"input/embeddings [batch, {', '.join(map(str, expected))}]")


def _require_listed(m: dict, rel, what: str) -> str:
    if not isinstance(rel, str) or rel not in m["files"]:
        raise BundleError(f"{MANIFEST}: {what} {rel!r} is not a file listed in 'files'")
    return rel


def _read_vocab(root: Path, m: dict) -> dict[str, int]:
    spec = m["vocab"]
    rel = _require_listed(m, spec.get("file"), "vocab.file")
    with _reading(rel):
        lines = (root / rel).read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != spec.get("size"):
        raise BundleError(f"{rel}: {len(lines)} tokens, manifest vocab.size says {spec.get('size')}")
    if lines[PAD_ID:OOV_ID + 1] != [PAD_TOKEN, OOV_TOKEN]:
        raise BundleError(f"{rel}: lines 0 and 1 must be {PAD_TOKEN} and {OOV_TOKEN}")
    vocab = {tok: i for i, tok in enumerate(lines)}
    if len(vocab) != len(lines):
        raise BundleError(f"{rel}: duplicate tokens")
    return vocab


def _load_npy(root: Path, rel: str) -> np.ndarray:
    with _reading(rel):
        array = np.load(root / rel, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise BundleError(f"{rel}: not a single .npy array")
    return array


def _read_vectors(root: Path, m: dict, vocab_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    spec = m["embeddings"]
    dtype = spec.get("dtype")
    if dtype not in _EMBEDDING_DTYPES:
        raise BundleError(f"{MANIFEST}: embeddings.dtype {dtype!r} unknown (float32, float16 or int8)")
    rel = _require_listed(m, spec.get("file"), "embeddings.file")
    table = _load_npy(root, rel)
    if table.dtype != _EMBEDDING_DTYPES[dtype]:
        raise BundleError(f"{rel}: dtype {table.dtype}, manifest embeddings.dtype says {dtype}")
    if table.shape != (vocab_size, spec["dim"]):
        raise BundleError(f"{rel}: shape {list(table.shape)}, expected [vocab.size, dim] = "
                          f"[{vocab_size}, {spec['dim']}]")
    if not np.isfinite(table).all():
        raise BundleError(f"{rel}: holds NaN or infinite values")
    if dtype != "int8":
        return table, None
    srel = _require_listed(m, spec.get("scales"), "embeddings.scales")
    scales = _load_npy(root, srel)
    if scales.dtype != np.float32 or scales.shape != (vocab_size,):
        raise BundleError(f"{srel}: expected float32 [{vocab_size}], found {scales.dtype} "
                          f"{list(scales.shape)}")
    if not np.isfinite(scales).all():
        raise BundleError(f"{srel}: holds NaN or infinite values")
    return table, scales


def _read_segmenter(root: Path, m: dict):
    spec = m["segmenter"]
    convert = None
    if spec.get("convert") is not None:
        c = spec["convert"]
        if not isinstance(c, dict) or c.get("type") != "char_map":
            raise BundleError(f"{MANIFEST}: segmenter.convert {c!r} unknown (expected type 'char_map')")
        rel = _require_listed(m, c.get("file"), "segmenter.convert.file")
        with _reading(rel):
            mapping = json.loads((root / rel).read_bytes().decode("utf-8"))
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and len(k) == 1 and isinstance(v, str) for k, v in mapping.items()):
            raise BundleError(f'{rel}: must be a JSON object {{"char": "char", ...}}')
        convert = CharMap(c.get("name", "char_map"), mapping)
    if spec.get("type") == "char":
        return CharTokenizer(), convert
    if spec.get("type") == "jieba":
        rel = _require_listed(m, spec.get("dictionary"), "segmenter.dictionary")
        with _reading(rel):
            freqs = read_dictionary(root / rel)
        return JiebaTokenizer(freqs, hmm=bool(spec.get("hmm", True))), convert
    raise BundleError(f"{MANIFEST}: segmenter.type {spec.get('type')!r} unknown (expected 'jieba' or 'char')")
