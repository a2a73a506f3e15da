"""Labelled data: load JSON Lines or CSV/TSV, validate with file:line:field errors, binarise, describe."""
from __future__ import annotations

import csv
import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kdedge_run.text import escape

from kdedge.errors import KdedgeError, ReadBackError
from kdedge.files import read_regular_file, shown_path

MAX_SIDE_FILE_BYTES = 64 << 20  # label descriptions, thresholds: small JSON files beside the data
MAX_INT_DIGITS = 4300  # Python's int-string limit (sys.get_int_max_str_digits()): longer integers are refused


class DataError(KdedgeError, ValueError):
    """A problem in an input file, located by file, line and field."""

    def __init__(self, path, line: int | None, field_name: str | None, problem: str):
        where = str(path) + (f":{line}" if line is not None else "")
        what = f"field '{field_name}' " if field_name else ""
        super().__init__(f"{where}: {what}{problem}")
        self.path, self.line, self.field, self.problem = path, line, field_name, problem


@dataclass
class Dataset:
    """Texts with their label sets, in file order, and the label space (ordered)."""

    texts: list[str]
    labels: list[list[str]]
    label_names: list[str]
    ids: list[str]
    extra: list[dict] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def targets(self) -> np.ndarray:
        """The binary label matrix `[n_texts, n_labels]` (float32)."""
        index = {name: i for i, name in enumerate(self.label_names)}
        y = np.zeros((len(self.texts), len(self.label_names)), dtype=np.float32)
        for row, labels in enumerate(self.labels):
            for label in labels:
                y[row, index[label]] = 1.0
        return y

    def subset(self, rows) -> "Dataset":
        """The texts at the given row indices, with the same label space."""
        rows = [int(r) for r in rows]
        return Dataset([self.texts[r] for r in rows], [self.labels[r] for r in rows], self.label_names,
                       [self.ids[r] for r in rows], [self.extra[r] for r in rows] if self.extra else [])


def _shown(value: str, limit: int = 80) -> str:
    """A name or id inside a message: escaped (kdedge_run.text.escape) and cut to `limit` characters."""
    shown = escape(value)
    return shown if len(shown) <= limit else shown[:limit] + f"… ({len(value):,} characters)"


def shown_names(names, limit: int = 10) -> str:
    """Names (labels, options) as a message lists them: the first `limit`, escaped and cut, then how many more."""
    names = list(names)
    shown = ", ".join(_shown(str(name), 40) for name in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def label_problem(name: str) -> str | None:
    """Why `name` cannot be a label, or None. Unprintable characters (controls such as newline, tab, NUL
    and ESC, bidi and other format characters such as U+202E, line/paragraph separators, surrogates,
    private use, unassigned code points) are refused: the same notion as `kdedge_run.text.escape`, which
    would have to escape them in every line of text output."""
    if escape(name) != name:
        bad = next(c for c in name if escape(c) != c)
        return f"label '{_shown(name)}' holds the unprintable character {escape(bad)} (U+{ord(bad):04X}); rename it"
    return None


def read_label_file(path) -> list[str]:
    """One label per line; blank lines ignored; duplicates and unprintable names are errors."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028, U+0085 are refused
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, None, f"cannot read label file: {exc}") from None
    names: list[str] = []
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise DataError(path, n, None, f"duplicate label '{_shown(name)}'")
        problem = label_problem(name)
        if problem:
            raise DataError(path, n, None, problem)
        names.append(name)
    if not names:
        raise DataError(path, None, None, "label file is empty")
    return names


def _check_record(path, line: int, text, labels, allowed: set[str] | None) -> tuple[str, list[str]]:
    if text is None:
        raise DataError(path, line, "text", "missing")
    if not isinstance(text, str):
        raise DataError(path, line, "text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(path, line, "text", "is empty")
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise DataError(path, line, "text", f"holds a lone surrogate {escape(surrogate.group())} (not Unicode text)")
    if labels is None:
        raise DataError(path, line, "labels", "missing")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise DataError(path, line, "labels", "must be a list of non-empty strings")
    labels = list(dict.fromkeys(x.strip() for x in labels))
    for name in labels:
        problem = label_problem(name)
        if problem:
            raise DataError(path, line, "labels", problem)
    if allowed is not None:
        unknown = [x for x in labels if x not in allowed]
        if unknown:
            raise DataError(path, line, "labels", f"unknown label '{_shown(unknown[0])}' (not in the label file)")
    return text, labels


_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range (not a finite double)")
    return number


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"integer of {digits:,} digits (at most {MAX_INT_DIGITS:,})")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json_line(line: str):
    """One JSON value, strictly: NaN, Infinity, out-of-range floats and integers longer than Python's
    int-string limit are refused; ValueError with a short reason (also for nesting too deep)."""
    try:
        return json.loads(line, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg}, column {exc.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _jsonl_records(path: Path, text_field: str, label_field: str):
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if line_no == 1:
                    line = line.removeprefix("\ufeff")  # a byte order mark (Notepad, Excel)
            except UnicodeDecodeError as exc:
                yield line_no, DataError(path, line_no, None, f"invalid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = parse_json_line(line)
            except ValueError as exc:
                yield line_no, DataError(path, line_no, None, f"malformed JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                yield line_no, DataError(path, line_no, None, "each line must be a JSON object")
                continue
            yield line_no, (obj.get(text_field), obj.get(label_field), obj)


_BAD_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, under errors="surrogateescape"


def _csv_records(path: Path, text_field: str, label_field: str, label_sep: str, delimiter: str):
    try:
        # surrogateescape: undecodable bytes survive as lone surrogates, reported below with their line
        # (a strict decoder fails on the whole first read-ahead chunk, with no line number).
        handle = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # -sig: Excel's BOM
        header_line = handle.readline()
    except OSError as exc:
        raise DataError(path, None, None, f"cannot read: {exc}") from None
    with handle:
        if _BAD_BYTES.search(header_line):
            raise DataError(path, 1, None, "invalid UTF-8")
        try:
            header = next(csv.reader([header_line], delimiter=delimiter))
        except (csv.Error, StopIteration) as exc:  # e.g. a column name longer than csv's field limit
            raise DataError(path, 1, None, f"unreadable header: {exc or 'empty'}") from None
        for name in (text_field, label_field):
            if name not in header:
                raise DataError(path, 1, name, f"column not in header {reprlib.repr(header)}")
        reader = csv.reader(handle, delimiter=delimiter)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield reader.line_num + 1, DataError(path, reader.line_num + 1, None, f"unreadable row: {exc}")
                continue
            line_no = reader.line_num + 1
            if not row:
                continue
            if any(_BAD_BYTES.search(cell) for cell in row):
                yield line_no, DataError(path, line_no, None, "invalid UTF-8")
                continue
            if len(row) != len(header):
                yield line_no, DataError(path, line_no, None,
                                         f"expected {len(header)} columns, got {len(row)} (stray delimiter?)")
                continue
            obj = dict(zip(header, row))
            raw = obj[label_field].strip()
            labels = [x for x in raw.split(label_sep)] if raw else []
            yield line_no, (obj[text_field], labels, obj)


def load_dataset(path, labels_file=None, text_field: str = "text", label_field: str = "labels",
                 label_sep: str = ",", skip_invalid: bool = False, allow_empty_labels: bool = True) -> Dataset:
    """Load a .jsonl, .csv or .tsv file; raise DataError (file:line field problem) on bad input.

    With `skip_invalid`, bad rows are skipped and counted in `Dataset.skipped` instead. `sample:NAME` reads a
    sample shipped with kdedge (kdedge.samples).
    """
    from kdedge.samples import resolve

    path = resolve(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    allowed_list = read_label_file(labels_file) if labels_file else None
    allowed = set(allowed_list) if allowed_list else None
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        records = _csv_records(path, text_field, label_field, label_sep, "\t" if suffix == ".tsv" else ",")
    else:
        records = _jsonl_records(path, text_field, label_field)
    texts, labels, ids, extra = [], [], [], []
    seen_ids: dict[str, int] = {}
    skipped = 0
    for line_no, rec in records:
        try:
            if isinstance(rec, DataError):
                raise rec
            text, labs, obj = rec
            text, labs = _check_record(path, line_no, text, labs, allowed)
            if not labs and not allow_empty_labels:
                raise DataError(path, line_no, "labels", "is empty")
            rid = obj.get("id")
            if isinstance(rid, (bool, list, dict)):
                raise DataError(path, line_no, "id", f"must be a string or a number, got {type(rid).__name__}")
            if isinstance(rid, str) and _SURROGATE.search(rid):
                raise DataError(path, line_no, "id", "holds a lone surrogate (not Unicode text)")
            rid = str(rid) if rid is not None and rid != "" else f"line{line_no}"
            if rid in seen_ids:
                raise DataError(path, line_no, "id", f"duplicate id '{_shown(rid)}' (first on line {seen_ids[rid]})")
        except DataError:
            if not skip_invalid:
                raise
            skipped += 1
            continue
        seen_ids[rid] = line_no
        texts.append(text)
        labels.append(labs)
        ids.append(rid)
        extra.append({k: v for k, v in obj.items() if k not in (text_field, label_field, "id")})
    if not texts:
        raise DataError(path, None, None, "no valid texts")
    if allowed_list is not None:
        names = allowed_list
    else:
        counts: dict[str, int] = {}
        for labs in labels:
            for x in labs:
                counts[x] = counts.get(x, 0) + 1
        names = sorted(counts, key=lambda k: (-counts[k], k))
    return Dataset(texts, labels, names, ids, extra, skipped)


def check_trainable(ds: Dataset, path, val_split: float, folds: int | None = None) -> None:
    """Refuse, before any training, label spaces a run cannot learn or validate, saying what to change:
    fewer than 2 labels with texts (a classifier of one label always says yes), or more than half of the
    labels with so few texts that the validation split (`val_split`) expects none of them (thresholds,
    early stopping and calibration would have nothing to go on; 5,000 labels of one text each left the
    validation split empty, and 1,000 labels of 5 texts ran for many minutes to learn nothing). A few
    rare labels are accepted: they keep the threshold 0.5. With `folds` (kdedge cv), each fold trains on
    (folds − 1) / folds of the texts."""
    counts = dict.fromkeys(ds.label_names, 0)
    for labels in ds.labels:
        for name in labels:
            counts[name] += 1
    used = [name for name, c in counts.items() if c > 0]
    if len(used) < 2:
        only = f"only the label '{_shown(used[0])}' has texts" if used else "no text has a label"
        raise DataError(path, None, "labels", f"{only}; a multi-label classifier needs texts of at least 2 "
                                              "labels: add texts of other labels")
    share = val_split * ((folds - 1) / folds if folds else 1.0)
    need = max(2, math.ceil(1 / share - 1e-9))
    rare = sorted((c, name) for name, c in counts.items() if 0 < c < need)
    if 2 * len(rare) > len(used):  # a few rare labels are common (they keep the threshold 0.5); most is not
        shown = ", ".join(f"'{_shown(name, 40)}' ({c})" for c, name in rare[:5]) + (", …" if len(rare) > 5 else "")
        raise DataError(path, None, "labels", f"{len(rare):,} of {len(used):,} labels have fewer than {need} texts "
                                              f"({shown}); with --val-split {val_split:g}"
                                              + (f" and {folds} folds" if folds else "") + " a label needs at least "
                                              f"{need} to have one in the validation split. Add texts, merge or "
                                              "remove those labels, or raise --val-split")


def describe(ds: Dataset) -> dict:
    """Text count, label frequencies, cardinality, imbalance ratio and length distribution."""
    y = ds.targets()
    freq = {name: int(c) for name, c in zip(ds.label_names, y.sum(axis=0))}
    nonzero = [c for c in freq.values() if c > 0]
    lengths = np.array([len(t) for t in ds.texts])
    return {
        "texts": len(ds),
        "labels": len(ds.label_names),
        "label_frequency": freq,
        "cardinality": float(y.sum(axis=1).mean()),
        "density": float(y.mean()) if y.size else 0.0,  # no label at all: 0, never NaN (--json is strict JSON)
        "texts_without_label": int((y.sum(axis=1) == 0).sum()),
        "distinct_label_sets": len({tuple(sorted(x)) for x in ds.labels}),
        "imbalance_ratio": float(max(nonzero) / min(nonzero)) if nonzero else 0.0,
        "length_chars": {"min": int(lengths.min()), "mean": float(lengths.mean()),
                          "p50": float(np.percentile(lengths, 50)), "p90": float(np.percentile(lengths, 90)),
                          "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max())},
        "skipped_rows": ds.skipped,
    }


def write_split(ds: Dataset, out_dir, test_share: float, seed: int, group_by: str | None = None,
                force: bool = False) -> dict[str, int]:
    """Write `out_dir/train.jsonl` and `out_dir/test.jsonl` (iterative stratification over labels,
    groups of `group_by` kept whole), each line `{"id", "text", "labels", ...other fields}`; returns
    {file: texts}. Existing files are replaced only with `force`."""
    from kdedge.errors import OutputExistsError, UsageError
    from kdedge.files import atomic_path
    from kdedge.text.folds import stratified_split

    out = Path(out_dir)
    names = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    existing = [str(p) for p in names.values() if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} exists (use --force to replace it)")
    groups = None
    if group_by:
        missing = [i for i, e in enumerate(ds.extra) if group_by not in e]
        if missing:
            raise UsageError(f"--group-by {group_by}: text {ds.ids[missing[0]]!r} has no field '{group_by}'")
        groups = [str(e[group_by]) for e in ds.extra]
    keep, held = stratified_split(ds.targets(), test_share, seed, groups)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in (("train", keep), ("test", held)):
        with atomic_path(names[name]) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                record = {"id": ds.ids[r], "text": ds.texts[r], "labels": ds.labels[r], **ds.extra[r]}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        written[str(names[name])] = len(rows)
    return written


def read_label_descriptions(path, labels: list[str]) -> dict[str, str]:
    """A JSON object {label: what it means} naming only `labels` (strings of at most 10,000 characters),
    in label order; DataError naming the file otherwise."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise DataError(path, None, None, "label descriptions file not found")
    try:
        data = parse_json_line(read_regular_file(path, MAX_SIDE_FILE_BYTES).decode("utf-8"))
    except ReadBackError as e:
        raise DataError(path, None, None, str(e).removeprefix(f"{shown_path(path)}: ")) from None
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also nesting, NaN, 5,000-digit numbers
        raise DataError(path, None, None, f"not a readable JSON file: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and len(v) <= 10_000 for v in data.values()):
        raise DataError(path, None, None, 'must be a JSON object {"label": "what it means", ...} '
                                          "(strings of at most 10,000 characters)")
    unknown = sorted(set(data) - set(labels))
    if unknown:
        raise DataError(path, None, None, f"unknown label(s) {shown_names(unknown)} (the labels: {shown_names(labels)})")
    return {lab: data[lab] for lab in labels if lab in data}
