"""Multi-label metrics, per-label thresholds and per-label temperature calibration."""
from __future__ import annotations

import numpy as np

from kdedge.text.folds import kfold
from kdedge_run.text import sigmoid  # the runtime's own, so export parity compares like with like

METRICS = ("micro_f1", "macro_f1", "weighted_f1", "subset_accuracy")


def f1_per_label(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of every label column (0 where a label has neither positives nor predictions)."""
    tp = (y_true * y_pred).sum(axis=0)
    denom = y_true.sum(axis=0) + y_pred.sum(axis=0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)


def scores(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """micro-, macro-, weighted-F1, subset accuracy and per-label F1 of 0/1 predictions."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    per_label = f1_per_label(y_true, y_pred)
    support = y_true.sum(axis=0)
    tp = (y_true * y_pred).sum()
    denom = y_true.sum() + y_pred.sum()
    return {
        "micro_f1": float(2 * tp / denom) if denom else 0.0,
        "macro_f1": float(per_label.mean()),
        "weighted_f1": float((per_label * support).sum() / support.sum()) if support.sum() else 0.0,
        "subset_accuracy": float((y_true == y_pred).all(axis=1).mean()),
        "per_label_f1": {name: float(v) for name, v in zip(label_names, per_label)},
    }


def decide(probs: np.ndarray, thresholds) -> np.ndarray:
    """0/1 decisions: probability ≥ the label's threshold."""
    return (probs >= np.asarray(thresholds, dtype=probs.dtype)).astype(np.float64)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, min_support: int) -> np.ndarray:
    """Each label's F1-optimal threshold on held-out data; 0.5 for labels with < min_support positives.

    Candidates are midpoints between consecutive distinct probabilities (and 0.5), so the chosen
    threshold generalises better than one sitting exactly on a validation score.
    """
    thresholds = np.full(probs.shape[1], 0.5)
    for j in range(probs.shape[1]):
        truth = y_true[:, j] > 0.5
        if truth.sum() < min_support:
            continue
        p = np.unique(probs[:, j])
        candidates = np.concatenate([[0.5], (p[:-1] + p[1:]) / 2]) if len(p) > 1 else np.array([0.5])
        candidates = candidates[(candidates >= 0.1) & (candidates <= 0.9)]  # tiny validation sets overfit extremes
        best_f1, best_t = -1.0, 0.5
        for t in candidates:
            pred = probs[:, j] >= t
            tp = (pred & truth).sum()
            f1 = 2 * tp / (pred.sum() + truth.sum())
            if f1 > best_f1 + 1e-12 or (abs(f1 - best_f1) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
                best_f1, best_t = f1, t
        thresholds[j] = best_t
    return thresholds


def crossfit_decisions(y: np.ndarray, probs: np.ndarray, min_support: int, seed: int) -> np.ndarray:
    """0/1 decisions for every row, each half of the rows decided at thresholds tuned on the other half."""
    if len(y) < 4:  # too few texts to halve: thresholds tuned on all of them
        return decide(probs, tune_thresholds(y, probs, min_support))
    half = kfold(y, 2, seed)
    out = np.zeros_like(probs, dtype=np.float64)
    for h in (0, 1):
        tuned_on, decided = half != h, half == h
        out[decided] = decide(probs[decided], tune_thresholds(y[tuned_on], probs[tuned_on], min_support))
    return out


def heldout_f1(y: np.ndarray, probs: np.ndarray, min_support: int, seed: int) -> np.ndarray:
    """Each label's F1 with `crossfit_decisions`: a model is not flattered by thresholds tuned on the few
    positives it is scored on."""
    return f1_per_label(y, crossfit_decisions(y, probs, min_support, seed))


def bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy per column (mean over rows)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)


def fit_temperatures(logits: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Per-label temperature T minimising validation log-loss of sigmoid(logit / T) (grid, log scale)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    temps = np.ones(logits.shape[1])
    for j in range(logits.shape[1]):
        losses = [bce(y_true[:, j:j + 1], sigmoid(logits[:, j:j + 1] / t))[0] for t in grid]
        temps[j] = float(grid[int(np.argmin(losses))])
    return temps


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """ECE of one label: Σ_bins share × |mean probability − positive rate|, equal-width bins."""
    idx = np.clip((probs * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(probs[sel].mean() - truth[sel].mean())
    return float(ece)


def evaluate_logits(logits: np.ndarray, y_true: np.ndarray, label_names: list[str], min_support: int,
                    thresholds=None) -> dict:
    """Scores at 0.5 and at tuned thresholds (tuned on these data unless `thresholds` is given)."""
    probs = sigmoid(logits)
    tuned = tune_thresholds(y_true, probs, min_support) if thresholds is None else np.asarray(thresholds)
    return {"at_0.5": scores(y_true, decide(probs, 0.5), label_names),
            "tuned": scores(y_true, decide(probs, tuned), label_names),
            "thresholds": {n: float(t) for n, t in zip(label_names, tuned)},
            "val_bce": float(bce(y_true, probs).mean())}
