"""Read a training run directory (written by `kdedge train`) for export."""
from __future__ import annotations

import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from kdedge.config import ConfigError, TrainConfig, config_from_record
from kdedge.text.data import label_problem, parse_json_line
from kdedge.errors import ReadBackError
from kdedge.files import NPY_READ_ERRORS, check_regular_file, read_regular_file, shown_path
from kdedge_run.bundle import MAX_LABEL_CHARS, MAX_LABELS, MAX_TEXT_INPUT

from .errors import ExportError, OptionError, RunDirectoryError
from .options import MODEL_KINDS

SEGMENTER_TYPES = ("char", "jieba", "ckip")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _short(value) -> str:
    """A value in a message: short, whatever its size or depth."""
    try:
        return _REPR.repr(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"


@dataclass
class Run:
    """What export needs from a run: its settings, the validation split and the chosen model's logits."""

    path: Path
    config: dict                    # config.json as written by kdedge.training.train
    model_kind: str                 # kd | student
    labels: list[str]
    val_texts: list[str]
    val_tokens: list[list[str]]
    val_y: np.ndarray               # [n_val, n_labels] 0/1
    val_logits: np.ndarray          # the Keras model's validation logits, saved at training
    metrics: dict = field(default_factory=dict)
    settings: TrainConfig | None = None  # config.json "config", built and checked as training built it

    @property
    def arch(self) -> str:
        return self.settings.arch

    @property
    def input_spec(self) -> dict:
        return self.config["input"]

    @property
    def segmenter(self) -> dict:
        return self.config["segmenter"]

    @property
    def model_file(self) -> Path:
        return self.path / f"{self.model_kind}.keras"


MAX_RUN_JSON_BYTES = 64 << 20     # config.json, metrics.json
MAX_RUN_ENTRIES = 10_000          # a run directory holds a few dozen files
RUN_SUBDIRS = ("segmenter", "predictions")


def _check_run_entries(root: Path) -> None:
    """Every entry of a run directory (and of its segmenter/ and predictions/) is a regular file or one of
    those folders: a link (e.g. a vocab.txt pointing out of the run), a FIFO or a device is refused before
    anything is read, so nothing outside the run is exported and no read can hang."""
    for folder in (root, *(root / sub for sub in RUN_SUBDIRS)):
        if folder is not root and not (folder.is_dir() and not folder.is_symlink()):
            if folder.is_symlink() or folder.exists():
                raise RunDirectoryError(f"{shown_path(folder)}: not a folder of the run (a link or a file)")
            continue
        with os.scandir(folder) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_RUN_ENTRIES:
                    raise RunDirectoryError(f"{shown_path(folder)}: more than {MAX_RUN_ENTRIES:,} entries; "
                                            "not a run directory written by `kdedge train`")
                if entry.is_symlink():
                    raise RunDirectoryError(f"{shown_path(entry.path)}: a symbolic link; export reads only the run's own "
                                            "regular files (copy the file into the run)")
                if entry.is_dir(follow_symlinks=False):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    raise RunDirectoryError(f"{shown_path(entry.path)}: not a regular file")


def read_json_as(path: Path, limit: int, error: type[ExportError], missing: str):
    """The JSON value in the file at `path`, read by kdedge's reader rule (a regular file, no link, at most
    `limit` bytes) and parsed strictly (NaN, Infinity, out-of-range numbers, integers of more than 4,300 digits
    and nesting too deep for Python are refused); otherwise `error` naming the file (`missing`: what to say
    when there is no file)."""
    if not (path.exists() or path.is_symlink()):
        raise error(f"{path}: {missing}")
    try:
        return parse_json_line(read_regular_file(path, limit).decode("utf-8"))
    except ReadBackError as e:
        raise error(str(e)) from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: cannot read: {e}") from None
    except ValueError as e:
        raise error(f"{path}: not valid JSON: {e}") from None


def _read_json(path: Path, kind=dict):
    """The run's JSON file at `path`, which must hold a `kind`; RunDirectoryError naming the file."""
    value = read_json_as(path, MAX_RUN_JSON_BYTES, RunDirectoryError,
                         f"missing; is {path.parent} a run directory written by `kdedge train`?")
    if not isinstance(value, kind):
        raise RunDirectoryError(f"{path}: must hold a JSON object, not {type(value).__name__} "
                                "(is it the file `kdedge train` wrote?)")
    return value


def _int_in(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _check_config(path: Path, config: dict) -> TrainConfig:
    """Every value of a run's config.json that export reads: type and range; RunDirectoryError naming the key. The
    training settings are built into the TrainConfig training used (`kdedge.config.config_from_record`), with
    every check a config gets from the CLI or a file."""
    for key in ("config", "labels", "input", "segmenter"):
        if key not in config:
            raise RunDirectoryError(f"{path}: no '{key}' (written by an incompatible kdedge version?)")
    try:
        settings = config_from_record(config["config"])
    except ConfigError as e:
        raise RunDirectoryError(f"{path}: 'config.{e.option}': {e}" if e.option else f"{path}: 'config' {e}") from None
    _check_labels(path, config["labels"])
    _check_input(path, config["input"], settings.arch)
    _check_segmenter(path, config["segmenter"])
    data = config.get("data")
    if not (data is None or isinstance(data, dict) and isinstance(data.get("path"), (str, type(None)))):
        raise _bad(path, "data", "an object with a string 'path'", data)
    return settings


def _bad(path: Path, key: str, rule: str, value) -> RunDirectoryError:
    return RunDirectoryError(f"{path}: '{key}' must be {rule}, got {_short(value)}")


def _check_labels(path: Path, labels) -> None:
    if not isinstance(labels, list) or not 0 < len(labels) <= MAX_LABELS:
        raise _bad(path, "labels", f"a list of 1 to {MAX_LABELS} label names", labels)
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not 0 < len(name) <= MAX_LABEL_CHARS or name != name.strip():
            raise _bad(path, f"labels[{i}]", f"a label name (a string of 1 to {MAX_LABEL_CHARS} characters)", name)
        problem = label_problem(name)
        if problem:
            raise RunDirectoryError(f"{path}: 'labels[{i}]': {problem}")
    if len(set(labels)) != len(labels):
        raise RunDirectoryError(f"{path}: 'labels' names a label twice")


def _check_input(path: Path, spec, arch: str) -> None:
    from kdedge.networks.architectures import ARCHITECTURES

    if not isinstance(spec, dict):
        raise _bad(path, "input", "an object", spec)
    kind = "hierarchical" if ARCHITECTURES[arch].hierarchical else "sequence"
    if spec.get("kind") != kind:
        raise _bad(path, "input.kind", f"{kind!r} for {arch}", spec.get("kind"))
    for key in (("max_sentences", "max_sentence_len") if kind == "hierarchical" else ("max_len",)):
        if not _int_in(spec.get(key), 1, MAX_TEXT_INPUT):
            raise _bad(path, f"input.{key}", f"a positive integer of at most {MAX_TEXT_INPUT}", spec.get(key))
    if kind == "hierarchical":
        ends = spec.get("sentence_end_tokens")
        if not isinstance(ends, list) or len(ends) > 256 or not all(isinstance(t, str) and 0 < len(t) <= 64
                                                                    for t in ends):
            raise _bad(path, "input.sentence_end_tokens", "a list of at most 256 strings of 1-64 characters", ends)
    if spec.get("pad_id", 0) != 0 or spec.get("oov_id", 1) != 1:
        raise _bad(path, "input.pad_id/oov_id", "0 and 1", [spec.get("pad_id"), spec.get("oov_id")])


def _check_segmenter(path: Path, seg) -> None:
    if not isinstance(seg, dict):
        raise _bad(path, "segmenter", "an object", seg)
    if not isinstance(seg.get("type"), str) or seg["type"] not in SEGMENTER_TYPES:
        raise _bad(path, "segmenter.type", f"one of {', '.join(SEGMENTER_TYPES)}", seg.get("type"))
    for key in ("convert", "ckip_model"):
        if not isinstance(seg.get(key), (str, type(None))):
            raise _bad(path, f"segmenter.{key}", "a string or null", seg.get(key))
    if not isinstance(seg.get("hmm", True), bool):
        raise _bad(path, "segmenter.hmm", "true or false", seg.get("hmm"))
    for key in ("dictionary", "char_map"):
        rel = seg.get(key)
        if rel is None:
            continue
        inside = (isinstance(rel, str) and 0 < len(rel) <= 1000 and "\\" not in rel and "\x00" not in rel
                  and not PurePosixPath(rel).is_absolute() and ".." not in PurePosixPath(rel).parts)
        if not inside:
            raise _bad(path, f"segmenter.{key}", "null or a relative path inside the run directory", rel)


def _check_metrics(path: Path, metrics: dict) -> None:
    texts = metrics.get("texts")
    if not (texts is None or isinstance(texts, dict)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in texts.values())):
        raise RunDirectoryError(f"{path}: 'texts' must be an object of text counts, got {_short(texts)}")


def _validation_record(line: str, index: dict[str, int]) -> tuple[str, list[str], np.ndarray]:
    """(text, tokens, 0/1 label row) of one validation.jsonl line; ValueError saying what is wrong."""
    rec = parse_json_line(line)
    if not isinstance(rec, dict):
        raise ValueError("must be a JSON object")
    text, tokens, labels = rec.get("text"), rec.get("tokens"), rec.get("labels")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"field 'text' must be a non-empty string, got {_short(text)}")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"field 'tokens' must be a list of strings, got {_short(tokens)}")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"field 'labels' must be a list of strings, got {_short(labels)}")
    row = np.zeros(len(index), dtype=np.float64)
    for lab in labels:
        if lab not in index:
            raise ValueError(f"field 'labels': {_short(lab)} is not one of the run's labels (config.json)")
        row[index[lab]] = 1.0
    return text, tokens, row


def _check_recorded_scores(root: Path, metrics: dict, model_kind: str, labels: list[str], y: np.ndarray,
                           logits: np.ndarray) -> None:
    """The per-label validation F1 at 0.5 that training recorded in metrics.json, recomputed from the saved
    validation logits and validation.jsonl: they agree unless labels were reordered or a file of the run was
    replaced (export would then calibrate and describe the wrong outputs). Older runs without them pass."""
    from kdedge.evaluate import decide, f1_per_label, sigmoid

    mode = metrics.get("modes", {}).get(model_kind) if isinstance(metrics.get("modes"), dict) else None
    recorded = mode.get("at_0.5", {}).get("per_label_f1") if isinstance(mode, dict) \
        and isinstance(mode.get("at_0.5"), dict) else None
    if not isinstance(recorded, dict) or set(recorded) != set(labels):
        return
    # logits within 1e-5 of 0 may have been decided either way in training's float32 arithmetic
    now = [f1_per_label(y, decide(sigmoid(logits + shift), 0.5)) for shift in (-1e-5, 1e-5)]  # no overflow warning
    differ = [lab for j, lab in enumerate(labels)
              if not (isinstance(recorded[lab], (int, float))
                      and any(abs(recorded[lab] - f1[j]) <= 1e-6 for f1 in now))]
    if differ:
        raise RunDirectoryError(f"{root}: the validation outputs do not match what training recorded in metrics.json "
                                f"(per-label F1 at 0.5 differs for {len(differ)} of {len(labels)} labels, e.g. "
                                f"{_short(differ[0])}): labels reordered in config.json, or validation.jsonl or "
                                f"predictions/val_{model_kind}.npy replaced?")


def selected_model(root: Path, metrics) -> str:
    """The student the run selected on its validation split (metrics.json "selected"), else "kd"."""
    selected = metrics.get("selected") if isinstance(metrics, dict) else None
    mode = selected.get("mode") if isinstance(selected, dict) else None
    if mode is None:
        return "kd"
    if mode not in MODEL_KINDS:
        raise RunDirectoryError(f"{root / 'metrics.json'}: 'selected' names {mode!r}, not one of {', '.join(MODEL_KINDS)}")
    return mode


def load_run(run_dir, model_kind: str | None = None) -> Run:
    """Check and read the run directory (`model_kind` None: the student the run selected); raises
    RunDirectoryError naming the missing or bad file (OptionError for a `model_kind` that is not one)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RunDirectoryError(f"{root}: no such run directory")
    _check_run_entries(root)
    metrics = _read_json(root / "metrics.json") if (root / "metrics.json").is_file() else {}
    _check_metrics(root / "metrics.json", metrics)
    model_kind = selected_model(root, metrics) if model_kind is None else model_kind
    if model_kind not in MODEL_KINDS:
        raise OptionError(f"--model must be one of {', '.join(MODEL_KINDS)}, not {model_kind!r}")
    config = _read_json(root / "config.json")
    settings = _check_config(root / "config.json", config)
    labels = list(config["labels"])
    if "labels" in metrics and metrics["labels"] != labels:
        raise RunDirectoryError(f"{root / 'config.json'}: its labels differ from metrics.json's (order included): the "
                                "model's outputs follow the order training wrote; was a file of the run edited?")
    if not (root / f"{model_kind}.keras").is_file():
        have = sorted(p.stem for p in root.glob("*.keras"))
        raise RunDirectoryError(f"{root}: no {model_kind}.keras (the run has {', '.join(have) or 'no model'}; "
                                f"train with --mode {model_kind} or all, or export --model "
                                f"{'student' if model_kind == 'kd' else 'kd'})")
    for rel in ("vocab.txt", "validation.jsonl", f"predictions/val_{model_kind}.npy"):
        if not (root / rel).is_file():
            raise RunDirectoryError(f"{root / rel}: missing from the run directory")
    texts, tokens, rows = _read_validation(root / "validation.jsonl", labels)
    logits = _read_logits(root / "predictions" / f"val_{model_kind}.npy", len(texts), len(labels))
    _check_recorded_scores(root, metrics, model_kind, labels, np.stack(rows), logits)
    try:
        read_vocab_file(root / "vocab.txt")
    except ValueError as e:
        raise RunDirectoryError(str(e)) from None
    return Run(root, config, model_kind, labels, texts, tokens, np.stack(rows), logits, metrics, settings)


def _read_validation(path: Path, labels: list[str]) -> tuple[list, list, list]:
    """validation.jsonl: each record's text, tokens and 0/1 label row, in order; RunDirectoryError naming the line."""
    texts, tokens, rows = [], [], []
    index = {name: i for i, name in enumerate(labels)}
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    text, toks, row = _validation_record(line, index)
                except ValueError as e:  # also invalid UTF-8
                    raise RunDirectoryError(f"{path}:{n}: bad record: {e}") from None
                texts.append(text)
                tokens.append(toks)
                rows.append(row)
    except OSError as e:
        raise RunDirectoryError(f"{path}: cannot read: {e}") from None
    if not texts:
        raise RunDirectoryError(f"{path}: no validation texts; calibration and parity need them")
    return texts, tokens, rows


def _read_logits(npy: Path, texts: int, labels: int) -> np.ndarray:
    """The student's validation logits: finite numbers, one row per validation text and one column per label."""
    try:  # memory-mapped: a header claiming more than the file holds fails here, before any allocation
        logits = np.load(npy, allow_pickle=False, mmap_mode="r")
    except NPY_READ_ERRORS as e:
        raise RunDirectoryError(f"{npy}: cannot read: {e}") from None
    if logits.shape != (texts, labels):
        raise RunDirectoryError(f"{npy}: shape {list(logits.shape)}, expected [{texts} validation texts, {labels} labels]")
    if logits.dtype.kind not in "fiu":
        raise RunDirectoryError(f"{npy}: dtype {logits.dtype} is not a number type")
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():
        raise RunDirectoryError(f"{npy}: holds NaN or infinite logits")
    return logits


MAX_VOCAB_BYTES = 256 << 20


def read_vocab_file(path: Path) -> list[str]:
    """vocab.txt: token of id i on line i ("\\n" line ends, as the runtime reads it); ValueError naming it."""
    try:
        tokens = read_regular_file(path, MAX_VOCAB_BYTES).decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    if len(tokens) < 2:
        raise ValueError(f"{path}: holds {len(tokens)} tokens; a run's vocabulary has at least <pad> and <oov>")
    return tokens


def read_vocab(run: Run) -> list[str]:
    """The run's vocab.txt: token of id i on line i ("\\n" line ends, as the runtime reads it)."""
    try:
        return read_vocab_file(run.path / "vocab.txt")
    except ValueError as e:
        raise RunDirectoryError(str(e)) from None


def load_keras(run: Run):
    """The run's Keras model (ids → logits), its body (embedded → dict) and its embedding table."""
    import keras

    import kdedge.networks.models  # noqa: F401  (registers the custom layers)

    import zipfile

    try:
        check_regular_file(run.model_file)
        with zipfile.ZipFile(run.model_file) as archive:
            damaged = archive.testzip()
    except ReadBackError as e:
        raise RunDirectoryError(str(e)) from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise RunDirectoryError(f"{shown_path(run.model_file)}: not a complete Keras archive (truncated or damaged: "
                                f"{e}); train again or restore the file") from None
    if damaged is not None:
        raise RunDirectoryError(f"{shown_path(run.model_file)}: damaged Keras archive (member {damaged!r} fails its "
                                "checksum); train again or restore the file")
    try:
        model = keras.models.load_model(run.model_file, compile=False)
    except Exception as e:  # Keras raises many types for unreadable archives
        raise RunDirectoryError(f"{run.model_file}: cannot load the Keras model: {e}") from e
    try:
        body = model.get_layer("body")
        table = np.asarray(model.get_layer("embedding").get_weights()[0], dtype=np.float32)
    except (ValueError, IndexError) as e:
        raise RunDirectoryError(f"{run.model_file}: expected an 'embedding' layer and a nested 'body' model "
                                f"(kdedge.networks.models): {e}") from e
    return model, body, table
