"""Which student to ship, the KD or the plain one, decided so that a small validation split cannot fool it.

Both students had their epochs selected on the validation split, so the comparison must not also lean on
knobs tuned there. Two measures, named by `select_metric` (SELECTION_METRICS):

- **ap** (default): macro- and micro-averaged **average precision** of each student's scores on validation. It
  needs no threshold, so nothing is tuned on the texts that judge, and it reads every score, not only which
  side of a threshold a text falls on: on 50–200 texts a rare label's F1 moves by whole steps with one text.
- **f1**: macro- and micro-F1 at **cross-fitted thresholds** (the split is halved, label-stratified; each half
  is decided at thresholds tuned on the other half).

Either way `BOOTSTRAP_DRAWS` paired bootstrap resamples of the validation texts give `confidence`: the share
of resamples in which the KD student beats the plain student (ties count half). The KD student is shipped
only when the macro confidence reaches `select_confidence` (default 0.8) and, for f1 (the rule before ap), it
is not the likelier loser on micro-F1 either; otherwise the plain student, which needs no teacher to be right.
`bench/selection_replay.py` measures the rules on the committed runs' test folds (docs/results, "Which
selection rule"): ap with its macro condition alone ships KD more often than f1 with its micro guard, with a
larger mean gain, and less often loses a macro point on the small sets; a micro-AP guard only vetoed KD
students that gained on micro-F1 too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kdedge.evaluate import crossfit_decisions, sigmoid

BOOTSTRAP_DRAWS = 2000
CHUNK = 250  # draws scored at once: bounds memory to CHUNK × texts × labels floats


def weighted_f1(weights: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """micro- and macro-F1 of `pred` against `y` under each row of `weights` (draws × texts: how often each
    text is counted), one value per draw."""
    tp, true, predicted = weights @ (y * pred), weights @ y, weights @ pred
    denom = true + predicted
    per_label = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
    micro_denom = denom.sum(axis=1)
    return {"macro": per_label.mean(axis=1),
            "micro": np.where(micro_denom > 0, 2 * tp.sum(axis=1) / np.maximum(micro_denom, 1e-12), 0.0)}


def _ranked_precision(weights: np.ndarray, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision of one ranking (`score` against 0/1 `truth`) under each row of `weights`; NaN where a
    draw holds no positive. Equal scores are one step (precision at the end of the tie), as scikit-learn."""
    order = np.argsort(-score, kind="stable")
    s, t, w = score[order], truth[order], weights[:, order]
    tp, counted = np.cumsum(w * t, axis=1), np.cumsum(w, axis=1)
    last = np.r_[s[1:] != s[:-1], True]                       # the end of each run of equal scores
    ends = np.flatnonzero(last)
    step_tp, step_n = tp[:, ends], counted[:, ends]
    gained = np.diff(step_tp, axis=1, prepend=0.0)            # positives recalled at each step
    positives = step_tp[:, -1]
    precision = np.where(step_n > 0, step_tp / np.maximum(step_n, 1e-12), 0.0)
    return np.where(positives > 0, (gained * precision).sum(axis=1) / np.maximum(positives, 1e-12), np.nan)


def weighted_average_precision(weights: np.ndarray, y: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """macro-average precision (over the labels with a positive in the draw) and micro-average precision (every
    text × label pair ranked together) of `scores` against `y` under each row of `weights`, one value per draw."""
    out = {"macro": [], "micro": []}
    for start in range(0, len(weights), CHUNK):
        w = weights[start:start + CHUNK]
        per_label = np.stack([_ranked_precision(w, y[:, j], scores[:, j]) for j in range(y.shape[1])], axis=1)
        held = ~np.isnan(per_label)
        out["macro"].append(np.where(held.any(axis=1), np.nansum(per_label, axis=1) / np.maximum(held.sum(axis=1), 1), 0.0))
        micro = _ranked_precision(np.repeat(w, y.shape[1], axis=1), y.ravel(), scores.ravel())
        out["micro"].append(np.nan_to_num(micro, nan=0.0))
    return {k: np.concatenate(v) for k, v in out.items()}


def _f1_measure(y: np.ndarray, logits: np.ndarray, min_support: int, seed: int):
    decisions = crossfit_decisions(y, sigmoid(logits), min_support, seed)
    return lambda weights: weighted_f1(weights, y, decisions)


def _ap_measure(y: np.ndarray, logits: np.ndarray, min_support: int, seed: int):
    return lambda weights: weighted_average_precision(weights, y, np.asarray(logits, dtype=np.float64))


@dataclass(frozen=True)
class SelectionMetric:
    """One `--select-metric`: its name in words, its measure ((y, logits, min_support, seed) → (weights → {"macro",
    "micro"}: one value per draw)), and whether KD must also not be the likelier loser on the micro measure."""
    words: str
    measure: Callable
    micro_guard: bool


SELECTION_METRICS = {
    "ap": SelectionMetric("average precision", _ap_measure, micro_guard=False),
    "f1": SelectionMetric("F1 at cross-fitted thresholds", _f1_measure, micro_guard=True),
}


def win_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of paired draws in which `a` > `b`, ties counted half."""
    return float(np.mean(a > b + 1e-12) + 0.5 * np.mean(np.abs(a - b) <= 1e-12))


def compare_students(y_val: np.ndarray, logits: dict[str, np.ndarray], min_support: int, seed: int,
                     metric: str = "ap", draws: int = BOOTSTRAP_DRAWS, margin: float = 0.0) -> dict:
    """The KD student against the plain student on validation by `metric` (SELECTION_METRICS), on the whole
    split and on `draws` paired bootstrap resamples: each one's macro/micro score, KD − student, and the share
    of resamples in which KD wins on each (with `margin` > 0: in which KD is not behind by more than `margin`)."""
    y_val = np.asarray(y_val, dtype=np.float64)
    measures = {m: SELECTION_METRICS[metric].measure(y_val, logits[m], min_support, seed) for m in ("kd", "student")}
    ones = np.ones((1, len(y_val)))
    point = {m: {k: float(v[0]) for k, v in measure(ones).items()} for m, measure in measures.items()}
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(y_val), np.full(len(y_val), 1.0 / len(y_val)), size=draws).astype(np.float64)
    boot = {m: measure(weights) for m, measure in measures.items()}
    return {"metric": metric,
            "scores": {m: {k: round(v, 4) for k, v in s.items()} for m, s in point.items()},
            "delta": {k: round(point["kd"][k] - point["student"][k], 4) for k in ("macro", "micro")},
            "confidence": {k: round(win_share(boot["kd"][k] + margin, boot["student"][k]), 3)
                           for k in ("macro", "micro")},
            "draws": draws, "texts": int(len(y_val))}


def ships_kd(comparison: dict, confidence: float, micro_guard: bool | None = None) -> bool:
    """The rule: KD when its macro win share reaches `confidence` (and, where the metric guards micro, it is not
    the likelier loser there). `micro_guard` overrides the metric's own (bench/selection_replay.py compares both)."""
    wins = comparison["confidence"]
    guarded = SELECTION_METRICS[comparison["metric"]].micro_guard if micro_guard is None else micro_guard
    return wins["macro"] >= confidence and (not guarded or wins["micro"] >= 0.5)


def select_student(results: dict, y_val: np.ndarray, min_support: int, confidence: float, seed: int,
                   metric: str = "ap") -> dict | None:
    """Which student to ship ("kd" or "student"), with the comparison and the reason; None unless both were
    trained."""
    if "student" not in results or "kd" not in results:
        return None
    comparison = compare_students(y_val, {m: results[m].logits["val"] for m in ("kd", "student")}, min_support,
                                  seed, metric)
    wins = comparison["confidence"]
    mode = "kd" if ships_kd(comparison, confidence) else "student"
    s, d = comparison["scores"], comparison["delta"]
    reason = (f"validation ({comparison['texts']} texts, {SELECTION_METRICS[metric].words}): macro KD "
              f"{s['kd']['macro']:.4f}, plain {s['student']['macro']:.4f} (KD − plain {d['macro']:+.4f}); KD better "
              f"in {wins['macro']:.0%} of {comparison['draws']} resamples (needed {confidence:.0%}), micro in "
              f"{wins['micro']:.0%}" + ("" if mode == "kd" else ": the plain student is shipped"))
    return {"mode": mode, "criterion": f"bootstrap {metric}", "confidence": wins["macro"], "required": confidence,
            "comparison": comparison, "reason": reason}
