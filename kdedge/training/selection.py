"""Which student to ship, the KD or the plain one, decided so that a small validation split cannot fool it.

Both students had their epochs selected on the validation split, and thresholds tuned on it would favour
whichever model has more freedom. So the comparison here scores each student on validation with
**cross-fitted thresholds** (the split is halved, label-stratified; each half is decided at thresholds
tuned on the other half), then draws `BOOTSTRAP_DRAWS` paired bootstrap resamples of the validation texts.
`confidence` is the share of resamples in which the KD student's macro-F1 beats the plain student's (ties
count half). The KD student is shipped only when that confidence reaches `select_confidence` (default
0.8) and it is not the likelier loser on micro-F1 either; otherwise the plain student, which needs no
teacher to be right.
"""
from __future__ import annotations

import numpy as np

from kdedge.evaluate import crossfit_decisions, sigmoid

BOOTSTRAP_DRAWS = 2000


def weighted_f1(weights: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """micro- and macro-F1 of `pred` against `y` under each row of `weights` (draws × texts: how often each
    text is counted), one value per draw."""
    tp, true, predicted = weights @ (y * pred), weights @ y, weights @ pred
    denom = true + predicted
    per_label = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
    micro_denom = denom.sum(axis=1)
    return {"macro": per_label.mean(axis=1),
            "micro": np.where(micro_denom > 0, 2 * tp.sum(axis=1) / np.maximum(micro_denom, 1e-12), 0.0)}


def bootstrap_f1(y: np.ndarray, decisions: dict[str, np.ndarray], draws: int, seed: int) -> dict[str, dict]:
    """`weighted_f1` of each model's decisions on `draws` paired resamples of the rows (the same resamples for
    every model): {model: {"micro": (draws,), "macro": (draws,)}}."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)), size=draws).astype(np.float64)
    return {name: weighted_f1(weights, y, pred) for name, pred in decisions.items()}


def win_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of paired draws in which `a` > `b`, ties counted half."""
    return float(np.mean(a > b + 1e-12) + 0.5 * np.mean(np.abs(a - b) <= 1e-12))


def compare_students(y_val: np.ndarray, logits: dict[str, np.ndarray], min_support: int, seed: int,
                     draws: int = BOOTSTRAP_DRAWS) -> dict:
    """The KD student against the plain student on validation (cross-fitted thresholds, paired bootstrap):
    each one's macro/micro-F1, KD − student, and the share of resamples in which KD wins on each."""
    decisions = {m: crossfit_decisions(y_val, sigmoid(logits[m]), min_support, seed) for m in ("kd", "student")}
    ones = np.ones((1, len(y_val)))
    point = {m: {k: float(v[0]) for k, v in weighted_f1(ones, y_val, pred).items()} for m, pred in decisions.items()}
    boot = bootstrap_f1(y_val, decisions, draws, seed)
    return {"scores": {m: {k: round(v, 4) for k, v in s.items()} for m, s in point.items()},
            "delta": {k: round(point["kd"][k] - point["student"][k], 4) for k in ("macro", "micro")},
            "confidence": {k: round(win_share(boot["kd"][k], boot["student"][k]), 3) for k in ("macro", "micro")},
            "draws": draws, "texts": int(len(y_val))}


def select_student(results: dict, y_val: np.ndarray, min_support: int, confidence: float, seed: int) -> dict | None:
    """Which student to ship ("kd" or "student"), with the comparison and the reason; None unless both were
    trained. KD only when `confidence` of the resamples favour it on macro-F1 and it is not behind on micro."""
    if "student" not in results or "kd" not in results:
        return None
    comparison = compare_students(y_val, {m: results[m].logits["val"] for m in ("kd", "student")}, min_support, seed)
    wins = comparison["confidence"]
    mode = "kd" if wins["macro"] >= confidence and wins["micro"] >= 0.5 else "student"
    s, d = comparison["scores"], comparison["delta"]
    reason = (f"validation ({comparison['texts']} texts, cross-fitted thresholds): macro-F1 KD {s['kd']['macro']:.4f}, "
              f"plain {s['student']['macro']:.4f} (KD − plain {d['macro']:+.4f}); KD better in {wins['macro']:.0%} "
              f"of {comparison['draws']} resamples (needed {confidence:.0%}), micro-F1 in {wins['micro']:.0%}"
              + ("" if mode == "kd" else ": the plain student is shipped"))
    return {"mode": mode, "criterion": "bootstrap", "confidence": wins["macro"], "required": confidence,
            "comparison": comparison, "reason": reason}
