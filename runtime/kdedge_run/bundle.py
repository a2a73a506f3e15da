"""Load and verify a bundle directory as docs/bundle.md specifies (checksums, layout, shapes)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import reprlib
import stat
import tokenize
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from .text import (OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN, CharMap, CharTokenizer, CodepointEncoder,
                   JiebaTokenizer, Preprocessor, Windows, input_shape, read_dictionary)

FORMAT = "kdedge-bundle"
IDS_VERSION = 1                    # ids and vectors outside the model (jieba, CKIP, HAN bundles)
CODEPOINTS_VERSION = 2             # character bundles: code points in, calibrated probabilities out
FORMAT_VERSION = CODEPOINTS_VERSION  # the newest version this reader knows; it reads 1 and 2
MANIFEST = "manifest.json"
_EMBEDDING_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
# Limits checked at load (docs/bundle.md "Limits"): far above any real bundle, low enough that a hostile
# manifest cannot make the reader allocate or compute without bound. limits.json is their one source, read by
# this reader and built into @kdedge/reader (runtime/js/src/limits.ts).
LIMITS: dict = {name: entry["value"] for name, entry in json.loads(
    resources.files(__package__).joinpath("limits.json").read_text("utf-8"))["limits"].items()}
MAX_MANIFEST_BYTES = LIMITS["max_manifest_bytes"]
MAX_JSON_DEPTH = LIMITS["max_json_depth"]
MAX_INT_DIGITS = LIMITS["max_int_digits"]
MAX_FILES = LIMITS["max_files"]
MAX_FILE_BYTES = LIMITS["max_file_bytes"]
MAX_LABELS = LIMITS["max_labels"]
MAX_LABEL_CHARS = LIMITS["max_label_chars"]
MAX_DESCRIPTION_CHARS = LIMITS["max_description_chars"]
TEMPERATURE_RANGE = (LIMITS["min_temperature"], LIMITS["max_temperature"])
MAX_TEXT_INPUT = LIMITS["max_text_input"]   # model input values per text (version 1: input shape × embeddings.dim)
MAX_CODE_POINT = LIMITS["max_code_point"]
MAX_DROPPED_RANGES = LIMITS["max_dropped_ranges"]
MAX_WINDOWS = LIMITS["max_windows"]         # input.windows.max_windows: model rows per text
WINDOW_POOLS = tuple(LIMITS["window_pools"])
MIN_VOCAB, MAX_VOCAB = LIMITS["min_vocab"], LIMITS["max_vocab"]
MAX_MODELS = LIMITS["max_models"]
MODEL_FORMATS = tuple(LIMITS["model_formats"])
MAX_GOLDEN_TEXTS = LIMITS["max_golden_texts"]  # golden.jsonl (a few dozen): a bound on the work its check does at load
MAX_GOLDEN_TOLERANCE = LIMITS["max_golden_tolerance"]
MAX_SENTENCE_END_TOKENS = LIMITS["max_sentence_end_tokens"]
MAX_TOKEN_CHARS = LIMITS["max_token_chars"]  # one sentence-end token
MAX_PREFIX_CHARS = LIMITS["max_prefix_chars"]  # jieba's prefix table: Σ over dictionary words of len·(len−1)/2
_SHA256 = re.compile("[0-9a-fA-F]{64}")
_REPR = reprlib.Repr()  # a value in a message: short, whatever its size or depth
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 40, 4, 4, 2
_short = _REPR.repr


def ids_input_spec(max_len: int | None = None, max_sentences: int | None = None,
                   max_sentence_len: int | None = None) -> dict:
    """The `input` object of a version-1 bundle (docs/bundle.md): `max_len` ids, or (hierarchical, HAN)
    `max_sentences` sentences of `max_sentence_len` ids; 0 pads, 1 is out of vocabulary, both cut at the end."""
    from .text import SENTENCE_END_TOKENS

    common = {"pad_id": PAD_ID, "oov_id": OOV_ID, "padding": "post", "truncation": "post"}
    if max_len is None:
        return {"kind": "hierarchical", "max_sentences": max_sentences, "max_sentence_len": max_sentence_len,
                "sentence_end_tokens": list(SENTENCE_END_TOKENS), **common}
    return {"kind": "sequence", "max_len": max_len, **common}


class BundleError(Exception):
    """A bundle cannot be used; the message names the file and the problem."""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _bounded_int(digits: str) -> int:
    count = len(digits.lstrip("-"))
    if count > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {count} digits, more than {MAX_INT_DIGITS}")
    return int(digits)


def _depth(value) -> int:
    """How deep arrays and objects nest in a parsed JSON value (a flat one: 1), counted up to MAX_JSON_DEPTH + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_JSON_DEPTH:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(text: str):
    """One JSON value as both readers read a bundle's JSON (docs/bundle.md "Limits"): NaN and ±Infinity are not
    JSON, an integer of more than MAX_INT_DIGITS digits and nesting deeper than MAX_JSON_DEPTH are refused.
    ValueError (json.JSONDecodeError for bad JSON) names the problem."""
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
        too_deep = _depth(value) > MAX_JSON_DEPTH
    except RecursionError:  # json's scanner recurses: nested far deeper than the limit
        too_deep = True
    if too_deep:
        raise ValueError(f"nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return value


@contextlib.contextmanager
def _reading(rel: str):
    """Turn any failure while reading bundle file `rel` into a BundleError naming it."""
    try:
        yield
    except BundleError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RecursionError, MemoryError, tokenize.TokenError) as e:
        # tokenize.TokenError: numpy parses a .npy header with ast.literal_eval (an unclosed bracket)
        raise BundleError(f"{rel}: cannot read: {type(e).__name__ if isinstance(e, MemoryError) else e}") from e


@dataclass
class Bundle:
    """A verified bundle: its manifest, preprocessing and vectors table."""

    path: Path
    manifest: dict
    preprocessor: Preprocessor | CodepointEncoder   # version 1: text → ids; version 2: text → code points
    vectors: np.ndarray | None                      # version 1 only (version 2 holds them in the graph)
    scales: np.ndarray | None

    @property
    def version(self) -> int:
        """The bundle format version: 1 (ids and vectors outside the model) or 2 (code points in)."""
        return self.manifest["format_version"]

    @property
    def min_coverage(self) -> float:
        """Share of the text read that must be in the vocabulary for the text to be judged (manifest
        `abstain.min_coverage`; 0 when absent: then only a text with nothing in vocabulary is not judged)."""
        return float((self.manifest.get("abstain") or {}).get("min_coverage", 0.0))

    @property
    def label_descriptions(self) -> dict[str, str]:
        """What each label means, where the bundle says (manifest `label_descriptions`)."""
        return dict(self.manifest.get("label_descriptions") or {})

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
    _check_common(manifest)
    if manifest["format_version"] == CODEPOINTS_VERSION:
        _check_v2(manifest)
        _read_vocab(root, manifest)
        spec = manifest["input"]
        return Bundle(root, manifest, CodepointEncoder(spec["dropped"], spec["max_len"], window_rule(spec)),
                      None, None)
    _check_manifest(manifest)
    vocab = _read_vocab(root, manifest)
    vectors, scales = _read_vectors(root, manifest, len(vocab))
    tokenizer, convert = _read_segmenter(root, manifest)
    preprocessor = Preprocessor(tokenizer, vocab, manifest["input"], convert)
    return Bundle(root, manifest, preprocessor, vectors, scales)


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    with _reading(MANIFEST):
        if path.is_symlink():
            raise BundleError(f"{MANIFEST}: is a symlink; bundles must not contain symlinks")
        if not path.is_file():
            raise BundleError(f"{MANIFEST}: missing in {root}")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{MANIFEST}: {path.stat().st_size} bytes, more than the "
                              f"{MAX_MANIFEST_BYTES} a manifest may have")
        data = path.read_bytes()
    try:
        manifest = parse_json(data.decode("utf-8"))
    except ValueError as e:  # bad UTF-8 or JSON (a byte order mark too), NaN, a too long integer, deep nesting
        raise BundleError(f"{MANIFEST}: not valid UTF-8 JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f'{MANIFEST}: not a kdedge bundle (expected "format": "{FORMAT}")')
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise BundleError(f"{MANIFEST}: invalid format_version {_short(version)}")
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
    if len(files) > MAX_FILES:
        raise BundleError(f"{MANIFEST}: 'files' lists {len(files)} files, more than {MAX_FILES}")
    for rel in files:
        _check_path(rel)
    def unreadable(e: OSError):
        raise BundleError(f"{Path(e.filename).relative_to(root).as_posix()}: cannot read: {e.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            with _reading(rel):
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
        with _reading(rel):
            if not full.is_file():
                raise BundleError(f"{rel}: missing (listed in manifest.json 'files')")
            if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                    or not _SHA256.fullmatch(meta["sha256"]) or type(meta.get("bytes")) is not int \
                    or not 0 <= meta["bytes"] <= MAX_FILE_BYTES:
                raise BundleError(f"{MANIFEST}: entry for {rel} needs 'sha256' (64 hex digits) and "
                                  f"'bytes' (int, 0 to {MAX_FILE_BYTES})")
            size = full.stat().st_size
            if size != meta["bytes"]:
                raise BundleError(f"{rel}: size {size} bytes, manifest says {_short(meta['bytes'])}")
            if file_sha256(full) != meta["sha256"].lower():
                raise BundleError(f"{rel}: SHA-256 mismatch (file changed or corrupt)")


def _int(value, key: str, high: int, low: int = 1) -> int:
    """`value` if it is an int in [low, high], else a BundleError naming the manifest key."""
    if type(value) is not int or not low <= value <= high:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise BundleError(f"{MANIFEST}: {key} must be {kind} of at most {high}, got {_short(value)}")
    return value


def _as_number(value) -> float:
    """`value` as a float: NaN for what is not a JSON number (a bool included), ±∞ beyond float range (10**400)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf


def number_in(value, low: float, high: float) -> bool:
    """Whether `value` is a JSON number in [low, high] (NaN, ±∞ and too-large integers are not)."""
    return low <= _as_number(value) <= high


def _number(value, key: str, low: float, high: float, rule: str) -> float:
    """`value` as a float in [low, high] (NaN, ±∞ and too-large integers fail), else a BundleError."""
    if not number_in(value, low, high):
        raise BundleError(f"{MANIFEST}: {rule}; {key} is {_short(value)}")
    return float(value)


def _check_common(m: dict) -> None:
    """Labels, thresholds, temperatures, abstention and label descriptions (both versions)."""
    labels = m["labels"]
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{MANIFEST}: 'labels' must be a non-empty list of distinct strings")
    if len(labels) > MAX_LABELS or max(map(len, labels)) > MAX_LABEL_CHARS:
        raise BundleError(f"{MANIFEST}: 'labels' may hold at most {MAX_LABELS} names of at most "
                          f"{MAX_LABEL_CHARS} characters")
    n = len(labels)
    calibration = m["calibration"]
    if calibration.get("method") != "temperature":
        raise BundleError(f"{MANIFEST}: calibration method {_short(calibration.get('method'))} unknown "
                          "(expected 'temperature')")
    for key, values in (("thresholds", m["thresholds"]), ("calibration.temperatures",
                                                          calibration.get("temperatures"))):
        if not isinstance(values, list) or len(values) != n:
            raise BundleError(f"{MANIFEST}: '{key}' must list one number per label ({n})")
    low, high = TEMPERATURE_RANGE
    for i, t in enumerate(calibration["temperatures"]):
        _number(t, f"calibration.temperatures[{i}]", low, high,
                f"temperatures must be finite and > 0 (within [{low:g}, {high:g}])")
    for i, t in enumerate(m["thresholds"]):
        _number(t, f"thresholds[{i}]", 0.0, 1.0, "thresholds must be within [0, 1]")
    abstain = m.get("abstain")
    if abstain is not None:
        if not isinstance(abstain, dict):
            raise BundleError(f"{MANIFEST}: 'abstain' must be an object")
        _number(abstain.get("min_coverage"), "abstain.min_coverage", 0.0, 1.0, "min_coverage must be within [0, 1]")
    _check_golden_entry(m)
    descriptions = m.get("label_descriptions")
    if descriptions is not None and not (
            isinstance(descriptions, dict) and set(descriptions) <= set(labels)
            and all(isinstance(v, str) and len(v) <= MAX_DESCRIPTION_CHARS for v in descriptions.values())):
        raise BundleError(f"{MANIFEST}: 'label_descriptions' must map labels of 'labels' to strings of at most "
                          f"{MAX_DESCRIPTION_CHARS} characters")


def _check_golden_entry(m: dict) -> None:
    """The manifest's `golden` object, when present: a listed file, a text count and a tolerance."""
    golden = m.get("golden")
    if golden is None:
        return
    if not (isinstance(golden, dict) and isinstance(golden.get("file"), str) and golden["file"] in m["files"]
            and isinstance(golden.get("texts"), int) and not isinstance(golden["texts"], bool)
            and 1 <= golden["texts"] <= MAX_GOLDEN_TEXTS
            and number_in(golden.get("tolerance"), 0, MAX_GOLDEN_TOLERANCE) and golden["tolerance"] > 0):
        raise BundleError(f"{MANIFEST}: 'golden' must be {{\"file\": a file listed in 'files', \"texts\": 1 to "
                          f"{MAX_GOLDEN_TEXTS}, \"tolerance\": a number in (0, {MAX_GOLDEN_TOLERANCE:g}]}}")


def _check_v2(m: dict) -> None:
    """Version 2: code point input (max_len, dropped ranges) and models taking int32 code points."""
    spec = m["input"]
    if spec.get("kind") != "codepoints" or spec.get("dtype") != "int32" or type(spec.get("pad")) is not int \
            or spec["pad"] != 0:
        raise BundleError(f"{MANIFEST}: version 2 input must be kind 'codepoints', dtype 'int32', pad 0; got "
                          f"{_short(spec)}")
    if m["calibration"].get("in_graph") is not True:
        raise BundleError(f"{MANIFEST}: version 2 calibration.in_graph must be true (the model applies the "
                          f"temperatures), got {_short(m['calibration'].get('in_graph'))}")
    if not isinstance(m.get("abstain"), dict):
        raise BundleError(f"{MANIFEST}: version 2 needs 'abstain': {{\"min_coverage\": a number in [0, 1]}}")
    max_len = _int(spec.get("max_len"), "input.max_len", MAX_TEXT_INPUT)
    dropped = spec.get("dropped")
    if not isinstance(dropped, list) or len(dropped) > MAX_DROPPED_RANGES:
        raise BundleError(f"{MANIFEST}: input.dropped must be a list of at most {MAX_DROPPED_RANGES} ranges")
    last = -1
    for i, r in enumerate(dropped):
        if not (isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
                and last < r[0] <= r[1] <= MAX_CODE_POINT):
            raise BundleError(f"{MANIFEST}: input.dropped[{i}] {_short(r)} is not an inclusive [first, last] "
                              f"code point range after the previous one (0 to {MAX_CODE_POINT:#x})")
        last = r[1]
    if not dropped or dropped[0][0] != 0:
        raise BundleError(f"{MANIFEST}: input.dropped must start at code point 0 (the padding)")
    _check_windows(spec, max_len)
    _int(m["vocab"].get("size"), "vocab.size", MAX_VOCAB, low=MIN_VOCAB)
    if not m["models"] or len(m["models"]) > MAX_MODELS:
        raise BundleError(f"{MANIFEST}: 'models' must list 1 to {MAX_MODELS} models")
    for entry in m["models"]:
        if not isinstance(entry, dict) or entry.get("format") not in MODEL_FORMATS:
            raise BundleError(f"{MANIFEST}: model entry {_short(entry)} has no known format {MODEL_FORMATS}")
        _require_listed(m, entry.get("file"), f"models[{entry['format']}].file")
        outputs = entry.get("outputs")
        if not (isinstance(entry.get("input_name"), str) and entry.get("input_dtype") == "int32"
                and isinstance(outputs, dict) and isinstance(outputs.get("probabilities"), str)
                and isinstance(outputs.get("known"), str)
                and isinstance(outputs.get("attention"), (str, type(None)))):
            raise BundleError(f"{MANIFEST}: models[{entry['format']}]: needs input_name, input_dtype 'int32' and "
                              "outputs {probabilities: str, known: str, attention: str or null}")
        shape = entry.get("input_shape")
        if shape not in ([None, max_len], [1, max_len]) or not all(type(d) in (int, type(None)) for d in shape):
            raise BundleError(f"{entry['file']}: manifest input_shape {_short(shape)} does not match "
                              f"[batch (null or 1), input.max_len = {max_len}]")


def window_rule(spec: dict) -> Windows:
    """The version-2 input's window rule (docs/bundle.md "Long texts (windows)"): `input.windows`, or one window of
    max_len code points when the bundle has none (bundles written before the rule)."""
    w = spec.get("windows")
    if w is None:
        return Windows.single(spec["max_len"])
    return Windows(w["size"], w["stride"], w["max_windows"], w["pool"])


def _check_windows(spec: dict, max_len: int) -> None:
    """`input.windows`, when present: size = max_len, 1 <= stride <= size, 1 <= max_windows <= MAX_WINDOWS
    (and at most MAX_TEXT_INPUT code points read), pool a known rule."""
    w = spec.get("windows")
    if w is None:
        return
    if not isinstance(w, dict):
        raise BundleError(f"{MANIFEST}: input.windows must be an object {{size, stride, max_windows, pool}}, "
                          f"got {_short(w)}")
    if w.get("size") != max_len or type(w.get("size")) is not int:
        raise BundleError(f"{MANIFEST}: input.windows.size must equal input.max_len ({max_len}), "
                          f"got {_short(w.get('size'))}")
    stride = _int(w.get("stride"), "input.windows.stride", max_len)
    count = _int(w.get("max_windows"), "input.windows.max_windows", MAX_WINDOWS)
    if max_len + (count - 1) * stride > MAX_TEXT_INPUT:
        raise BundleError(f"{MANIFEST}: input.windows reads up to {max_len + (count - 1) * stride} code points "
                          f"per text, more than {MAX_TEXT_INPUT}")
    if w.get("pool") not in WINDOW_POOLS:
        raise BundleError(f"{MANIFEST}: input.windows.pool {_short(w.get('pool'))} unknown (this kdedge-run "
                          f"pools by {', '.join(WINDOW_POOLS)}); upgrade kdedge-run")


def _check_manifest(m: dict) -> None:
    """Version 1: every value the reader uses, range-checked, and cross-field consistency."""
    spec = m["input"]
    if spec.get("kind") == "sequence":
        dims = ("max_len",)
    elif spec.get("kind") == "hierarchical":
        dims = ("max_sentences", "max_sentence_len")
        ends = spec.get("sentence_end_tokens")
        if not isinstance(ends, list) or len(ends) > MAX_SENTENCE_END_TOKENS or not all(
                isinstance(t, str) and 0 < len(t) <= MAX_TOKEN_CHARS for t in ends):
            raise BundleError(f"{MANIFEST}: input.sentence_end_tokens must be a list of at most "
                              f"{MAX_SENTENCE_END_TOKENS} strings of 1-{MAX_TOKEN_CHARS} characters")
    else:
        raise BundleError(f"{MANIFEST}: input.kind {_short(spec.get('kind'))} unknown "
                          "(expected 'sequence' or 'hierarchical')")
    for key in dims:
        _int(spec.get(key), f"input.{key}", MAX_TEXT_INPUT)
    if spec.get("pad_id", PAD_ID) != PAD_ID or spec.get("oov_id", OOV_ID) != OOV_ID:
        raise BundleError(f"{MANIFEST}: input.pad_id must be {PAD_ID} and input.oov_id {OOV_ID}")
    dim = _int(m["embeddings"].get("dim"), "embeddings.dim", MAX_TEXT_INPUT)
    if math.prod(input_shape(spec)) * dim > MAX_TEXT_INPUT:
        raise BundleError(f"{MANIFEST}: input {list(input_shape(spec))} × embeddings.dim {dim} is more "
                          f"than {MAX_TEXT_INPUT} model input floats per text")
    _int(m["vocab"].get("size"), "vocab.size", MAX_VOCAB, low=MIN_VOCAB)
    if not m["models"] or len(m["models"]) > MAX_MODELS:
        raise BundleError(f"{MANIFEST}: 'models' must list 1 to {MAX_MODELS} models")
    expected = [*input_shape(spec), dim]
    for entry in m["models"]:
        if not isinstance(entry, dict) or entry.get("format") not in MODEL_FORMATS:
            raise BundleError(f"{MANIFEST}: model entry {_short(entry)} has no known format {MODEL_FORMATS}")
        _require_listed(m, entry.get("file"), f"models[{entry['format']}].file")
        names = [entry.get("input_name"), entry.get("logits_name")]
        if entry["format"] == "onnx" and not all(isinstance(x, str) for x in names) or not isinstance(
                entry.get("attention_name"), (str, type(None))):
            raise BundleError(f"{MANIFEST}: models[{entry['format']}]: input_name and logits_name must be "
                              "strings, attention_name a string or null")
        shape = entry.get("input_shape")
        if not isinstance(shape, list) or shape[1:] != expected or shape[:1] not in ([None], [1]):
            raise BundleError(f"{entry['file']}: manifest input_shape {_short(shape)} does not match "
                              f"input/embeddings [batch, {', '.join(map(str, expected))}]")


def _require_listed(m: dict, rel, what: str) -> str:
    if not isinstance(rel, str) or rel not in m["files"]:
        raise BundleError(f"{MANIFEST}: {what} {_short(rel)} is not a file listed in 'files'")
    return rel


def _read_vocab(root: Path, m: dict) -> dict[str, int]:
    """The vocabulary (token → id); checked in both versions, used by version 1."""
    spec = m["vocab"]
    rel = _require_listed(m, spec.get("file"), "vocab.file")
    with _reading(rel):
        lines = (root / rel).read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != spec.get("size"):
        raise BundleError(f"{rel}: {len(lines)} tokens, manifest vocab.size says {_short(spec.get('size'))}")
    if lines[PAD_ID:OOV_ID + 1] != [PAD_TOKEN, OOV_TOKEN]:
        raise BundleError(f"{rel}: lines 0 and 1 must be {PAD_TOKEN} and {OOV_TOKEN}")
    vocab = {tok: i for i, tok in enumerate(lines)}
    if len(vocab) != len(lines):
        raise BundleError(f"{rel}: duplicate tokens")
    return vocab


def _load_npy(root: Path, rel: str, problem) -> np.ndarray:
    """Read a .npy file after checking its header: no object (pickled) dtype, `problem(dtype, shape)`
    returns None, and the header's data size equals the file's, so nothing is allocated on trust."""
    path = root / rel
    with _reading(rel), open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise BundleError(f"{rel}: .npy format version {version} is not supported (1.0 or 2.0)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise BundleError(f"{rel}: cannot read: object arrays (pickled data) are refused "
                              "(allow_pickle=False)")
        complaint = problem(dtype, list(shape))
        if complaint:
            raise BundleError(f"{rel}: {complaint}")
        data = path.stat().st_size - f.tell()
        if data != math.prod(shape) * dtype.itemsize:
            raise BundleError(f"{rel}: header declares {list(shape)} {dtype} "
                              f"({math.prod(shape) * dtype.itemsize} bytes) but the file holds {data}")
        f.seek(0)
        array = np.lib.format.read_array(f, allow_pickle=False)
    if not np.isfinite(array).all():
        raise BundleError(f"{rel}: holds NaN or infinite values")
    return array


def _read_vectors(root: Path, m: dict, vocab_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    spec = m["embeddings"]
    dtype = spec.get("dtype")
    if not isinstance(dtype, str) or dtype not in _EMBEDDING_DTYPES:
        raise BundleError(f"{MANIFEST}: embeddings.dtype {_short(dtype)} unknown (float32, float16 or int8)")
    rel = _require_listed(m, spec.get("file"), "embeddings.file")

    def table_problem(found, shape):
        if found != _EMBEDDING_DTYPES[dtype]:
            return f"dtype {found}, manifest embeddings.dtype says {dtype}"
        if shape != [vocab_size, spec["dim"]]:
            return f"shape {shape}, expected [vocab.size, dim] = [{vocab_size}, {spec['dim']}]"
        return None

    table = _load_npy(root, rel, table_problem)
    if dtype != "int8":
        return table, None
    srel = _require_listed(m, spec.get("scales"), "embeddings.scales")
    scales = _load_npy(root, srel, lambda found, shape: None if found == np.float32 and shape == [vocab_size]
                       else f"expected float32 [{vocab_size}], found {found} {shape}")
    with np.errstate(over="ignore"):
        largest = np.abs(table.astype(np.float32)).max(axis=1) * scales
    if not np.isfinite(largest).all():
        raise BundleError(f"{srel}: row {int(np.flatnonzero(~np.isfinite(largest))[0])}: scale × int8 value "
                          "overflows float32")
    return table, scales


def _read_segmenter(root: Path, m: dict):
    spec = m["segmenter"]
    convert = None
    if spec.get("convert") is not None:
        c = spec["convert"]
        if not isinstance(c, dict) or c.get("type") != "char_map":
            raise BundleError(f"{MANIFEST}: segmenter.convert {_short(c)} unknown (expected type 'char_map')")
        rel = _require_listed(m, c.get("file"), "segmenter.convert.file")
        with _reading(rel):
            mapping = json.loads((root / rel).read_bytes().decode("utf-8"))
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and len(k) == 1 and isinstance(v, str) and len(v) == 1
                for k, v in mapping.items()):
            raise BundleError(f'{rel}: must be a JSON object {{"char": "char", ...}} mapping single '
                              "characters to single characters")
        convert = CharMap(str(c.get("name", "char_map")), mapping)
    if spec.get("type") == "char":
        return CharTokenizer(), convert
    if spec.get("type") == "jieba":
        rel = _require_listed(m, spec.get("dictionary"), "segmenter.dictionary")
        if not isinstance(spec.get("hmm", True), bool):
            raise BundleError(f"{MANIFEST}: segmenter.hmm must be true or false, got {_short(spec['hmm'])}")
        with _reading(rel):
            freqs = read_dictionary(root / rel)
        if sum(len(w) * (len(w) - 1) // 2 for w in freqs) > MAX_PREFIX_CHARS:
            raise BundleError(f"{rel}: words too long: jieba's prefix table would exceed "
                              f"{MAX_PREFIX_CHARS} characters")
        try:
            return JiebaTokenizer(freqs, hmm=spec.get("hmm", True)), convert
        except ImportError:
            raise BundleError(f"{MANIFEST}: a word bundle (segmenter jieba) needs jieba: "
                              "pip install 'kdedge-run[words]'") from None
    raise BundleError(f"{MANIFEST}: segmenter.type {_short(spec.get('type'))} unknown (expected 'jieba' or 'char')")
