"""Per-label temperatures and thresholds from the run's validation split, and what they change."""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdedge.text.data import MAX_SIDE_FILE_BYTES, shown_names
from kdedge.evaluate import (decide, expected_calibration_error, fit_temperatures, scores, sigmoid,
                             tune_thresholds)

from .errors import OptionError
from .run import read_json_as

ECE_BINS = 10


@dataclass
class Calibration:
    temperatures: np.ndarray
    thresholds: np.ndarray
    threshold_source: list[str]     # per label: "tuned" or "file"
    metrics: dict                   # manifest `metrics`
    report: dict                    # manifest `calibration_report`


def read_thresholds_file(path, labels: list[str]) -> dict[str, float]:
    """A JSON object {label: threshold in [0, 1]}; labels not in the file keep their tuned threshold."""
    path = Path(path)
    data = read_json_as(path, MAX_SIDE_FILE_BYTES, OptionError, "thresholds file not found")
    if not isinstance(data, dict):
        raise OptionError(f'{path}: must be a JSON object {{"label": threshold, ...}}')
    unknown = sorted(set(data) - set(labels))
    if unknown:
        raise OptionError(f"{path}: unknown label(s) {shown_names(unknown)} (the run's labels: {shown_names(labels)})")
    out = {}
    for label, value in data.items():
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        try:
            number = float(number)
        except OverflowError:  # an integer beyond float range, e.g. 10**400
            number = math.inf
        if not 0.0 <= number <= 1.0:
            shown = reprlib.repr(value)
            raise OptionError(f"{path}: threshold for {label!r} must be a number in [0, 1], got {shown}")
        out[label] = number
    return out


def calibrate(logits: np.ndarray, y: np.ndarray, labels: list[str], min_support: int,
              overrides: dict[str, float] | None = None) -> Calibration:
    """Fit one temperature per label on the validation logits, then tune thresholds on the calibrated
    probabilities (so thresholds and the runtime's scores agree); `overrides` replace tuned thresholds."""
    logits = np.asarray(logits, dtype=np.float64)
    temperatures = fit_temperatures(logits, y)
    raw = sigmoid(logits)
    calibrated = sigmoid(logits / temperatures)
    tuned = tune_thresholds(y, calibrated, min_support)
    overrides = overrides or {}
    thresholds = np.array([overrides.get(lab, t) for lab, t in zip(labels, tuned)], dtype=np.float64)
    source = ["file" if lab in overrides else "tuned" for lab in labels]
    at_05 = scores(y, decide(calibrated, 0.5), labels)
    at_tuned = scores(y, decide(calibrated, thresholds), labels)
    metrics = {"texts": int(len(y)), "probabilities": "calibrated", "at_0.5": at_05, "tuned": at_tuned,
               "thresholds": {lab: float(t) for lab, t in zip(labels, thresholds)},
               "threshold_source": dict(zip(labels, source)),
               "note": "validation split of the run; thresholds and temperatures were fitted on it too"}
    before = {lab: expected_calibration_error(raw[:, j], y[:, j], ECE_BINS) for j, lab in enumerate(labels)}
    after = {lab: expected_calibration_error(calibrated[:, j], y[:, j], ECE_BINS) for j, lab in enumerate(labels)}
    report = {"method": "temperature", "bins": ECE_BINS, "texts": int(len(y)),
              "temperatures": {lab: float(t) for lab, t in zip(labels, temperatures)},
              "positives": {lab: int(y[:, j].sum()) for j, lab in enumerate(labels)},
              "ece_before": before, "ece_after": after,
              "mean_ece_before": float(np.mean(list(before.values()))),
              "mean_ece_after": float(np.mean(list(after.values()))),
              "macro_f1_at_0.5": at_05["macro_f1"], "macro_f1_tuned": at_tuned["macro_f1"]}
    return Calibration(temperatures, thresholds, source, metrics, report)
