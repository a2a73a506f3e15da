"""A cv run directory's files: `cv.json` (the settings) and `folds/fold{k}_{name}.json` (one result each).

Both are read back (on resume and for the report) only through here, and checked before use: a regular
file within its size limit, strict JSON, every field the report reads present with its type and range,
the fold number and name those of this run, and the digest a fold file was written with unchanged.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from kdedge.config import MONITORS
from kdedge.errors import ReadBackError
from kdedge.evaluate import METRICS
from kdedge.files import read_json_file, shown_path, write_json_atomic

MAX_SETTINGS_BYTES = 16 << 20
MAX_FOLD_BYTES = 512 << 20       # a fold file holds every test probability of its fold
FOLD_NAME = re.compile(r"fold(\d{1,4})_(\w{1,64})\.json")
BASELINES = "baselines"
VIEWS = ("at_0.5", "tuned")
ARCH_MODES = ("teacher", "student", "kd")  # every architecture's fold record has these (the report compares them)


def fold_file(out: Path, k: int, name: str) -> Path:
    """Fold `k`'s result file for an architecture (or "baselines") in run directory `out`."""
    return Path(out) / "folds" / f"fold{k}_{name}.json"


def digest(record: dict) -> str:
    """SHA-256 of a fold record's content (without its own digest): a hand edit or a damaged copy shows."""
    body = {key: value for key, value in record.items() if key != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def write_fold_record(path: Path, record: dict) -> None:
    """Write a fold record atomically, with its digest."""
    write_json_atomic(path, {**record, "digest": digest(record)})


def read_settings(out: Path) -> dict:
    """`cv.json` of run directory `out`, checked: the fields a resume and the report rely on."""
    path = Path(out) / "cv.json"
    settings = read_json_file(path, MAX_SETTINGS_BYTES)
    _need(path, settings, "", dict)
    _need(path, settings.get("folds"), "folds", int, low=2)
    for name in ("archs", "labels"):
        _need(path, settings.get(name), name, list)
        if not settings[name] or not all(isinstance(v, str) for v in settings[name]):
            raise ReadBackError(f"{shown_path(path)}: field {name!r} must be a non-empty list of strings")
    _need(path, settings.get("config"), "config", dict)
    if settings["config"].get("monitor") not in MONITORS:
        raise ReadBackError(f"{shown_path(path)}: field 'config.monitor' must be one of {', '.join(MONITORS)}")
    for name in ("seed", "patience"):
        _need(path, settings["config"].get(name), f"config.{name}", int, low=0)
    return settings


def read_fold_records(out: Path, settings: dict) -> dict[str, list[dict]]:
    """Every finished fold file of run directory `out` (settings: `read_settings`) → records by name
    (architecture or "baselines"), in fold order. Any other entry in folds/ but a writer's temporary file,
    or a record that fails its checks, is a ReadBackError naming the file."""
    folds_dir = Path(out) / "folds"
    names = set(settings["archs"]) | {BASELINES}
    by_name: dict[str, list[dict]] = {}
    for path in sorted(folds_dir.iterdir()) if folds_dir.is_dir() else []:
        if path.name.startswith("."):  # an atomic writer's temporary sibling (kdedge.files.atomic_path)
            continue
        match = FOLD_NAME.fullmatch(path.name)
        if not match or int(match[1]) >= settings["folds"] or match[2] not in names:
            raise ReadBackError(f"{shown_path(path)}: not a fold file of this run ({settings['folds']} folds; "
                                f"fold<k>_<name>.json with name one of {', '.join(sorted(names))}); move it away")
        record = read_json_file(path, MAX_FOLD_BYTES, allow_nan=True)
        check_fold_record(path, record, int(match[1]), match[2], settings["labels"], settings["config"]["monitor"])
        by_name.setdefault(match[2], []).append(record)
    for records in by_name.values():
        records.sort(key=lambda r: r["fold"])
    return by_name


def check_fold_record(path: Path, record, k: int, name: str, labels: list[str], monitor: str) -> None:
    """ReadBackError naming `path` and the field unless `record` is fold `k`'s intact result for `name`."""
    _need(path, record, "", dict)
    _need(path, record.get("fold"), "fold", int)
    if record["fold"] != k:
        raise ReadBackError(f"{shown_path(path)}: field 'fold' is {record['fold']}, the file name says {k}")
    if "digest" in record and record["digest"] != digest(record):  # files of older runs have none
        raise ReadBackError(f"{shown_path(path)}: its content differs from what kdedge wrote (digest mismatch); "
                            "delete it to train that fold again")
    _need(path, record.get("modes"), "modes", dict)
    if not record["modes"]:
        raise ReadBackError(f"{shown_path(path)}: field 'modes' is empty")
    for mode, result in record["modes"].items():
        where = f"modes.{mode}"
        _need(path, result, where, dict)
        for view in VIEWS:
            _need(path, result.get(view), f"{where}.{view}", dict)
            for metric in METRICS:
                _need(path, result[view].get(metric), f"{where}.{view}.{metric}", float, low=0, high=1)
        per_label = result["tuned"].get("per_label_f1")
        _need(path, per_label, f"{where}.tuned.per_label_f1", dict)
        for label in labels:
            _need(path, per_label.get(label), f"{where}.tuned.per_label_f1.{label}", float, low=0, high=1)
        if name != BASELINES:
            _need(path, result.get("history"), f"{where}.history", list)
    if name != BASELINES:
        for mode in ARCH_MODES:
            _need(path, record["modes"].get(mode), f"modes.{mode}", dict)
            _need(path, record["modes"][mode].get("seconds"), f"modes.{mode}.seconds", float, low=0)
        for mode, result in record["modes"].items():
            for i, row in enumerate(result["history"]):
                _need(path, row, f"modes.{mode}.history[{i}]", dict)
                _need(path, row.get("epoch"), f"modes.{mode}.history[{i}].epoch", int, low=0)
                value = row.get(monitor)  # a number, or one per label group (a teacher's towers); NaN allowed
                if not (_any_number(value) or isinstance(value, list) and value and all(map(_any_number, value))):
                    raise ReadBackError(f"{shown_path(path)}: field 'modes.{mode}.history[{i}].{monitor}' must be a "
                                        f"number or a list of numbers, not {_shown(value)}")
        _need(path, record.get("seconds"), "seconds", float, low=0)
        _need(path, record.get("test_truth"), "test_truth", list)
        _need_matrix(path, record["test_truth"], "test_truth", None, len(labels))
        for mode, result in record["modes"].items():  # test predictions: the report pools them for its tests
            _need_matrix(path, result.get("test_probs"), f"modes.{mode}.test_probs", len(record["test_truth"]),
                         len(labels))
            thresholds = result.get("thresholds")
            _need(path, thresholds, f"modes.{mode}.thresholds", list)
            if len(thresholds) != len(labels) or not all(_number(v, 0, 1) for v in thresholds):
                raise ReadBackError(f"{shown_path(path)}: field 'modes.{mode}.thresholds' must hold "
                                    f"{len(labels)} numbers from 0 to 1")


def _any_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def _need_matrix(path: Path, rows, field: str, n_rows: int | None, n_cols: int) -> None:
    """ReadBackError unless `rows` is a list of n_rows (any number if None) lists of n_cols numbers in 0..1."""
    if (not isinstance(rows, list) or (n_rows is not None and len(rows) != n_rows)
            or not all(isinstance(row, list) and len(row) == n_cols and all(_number(v, 0, 1) for v in row)
                       for row in rows)):
        count = "" if n_rows is None else f"{n_rows} "
        raise ReadBackError(f"{shown_path(path)}: field {field!r} must be {count}rows of {n_cols} numbers "
                            "from 0 to 1 (one per test text and label)")


def _need(path: Path, value, field: str, kind: type, low: float = -math.inf, high: float = math.inf) -> None:
    """ReadBackError unless `value` is a `kind` (float: any finite number) within low..high."""
    numeric = kind in (int, float)
    ok = (_number(value, low, high) and (kind is float or isinstance(value, int)) if numeric
          else isinstance(value, kind))
    if not ok:
        what = {dict: "an object", list: "a list", int: "an integer", float: "a number"}[kind]
        if numeric and (low > -math.inf or high < math.inf):
            what += f" from {low:g}" + (f" to {high:g}" if high < math.inf else " up")
        name = f"field {field!r}" if field else "the file"
        raise ReadBackError(f"{shown_path(path)}: {name} must be {what}, not {_shown(value)}")
