"""The KD student's soft targets: the teacher's logits, calibrated per label on the validation split,
softened by the KD temperature, and gated per label where the teacher is weaker than the plain student.

A teacher whose towers stop at epoch 3 gives raw probabilities far below its own tuned thresholds; a
student that imitates them learns the miscalibration, not the decisions. Each calibration here maps the
teacher's logit z of label j to a_j·z + b_j, fitted on validation texts the teacher did not train on:

- `none`: a = 1, b = 0 (the paper's raw teacher outputs).
- `shift`: a = 1, b = −logit(t_j), where t_j is the label's F1-tuned validation threshold, so the
  teacher's decision boundary becomes probability 0.5.
- `temperature`: a = 1/T_j with T_j minimising validation log-loss (b = 0).
- `platt`: a and b minimising validation log-loss against Platt's smoothed targets
  ((N₊+1)/(N₊+2) for positives, 1/(N₋+2) for negatives).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdedge.evaluate import f1_per_label, fit_temperatures, sigmoid, tune_thresholds

CALIBRATIONS = ("none", "shift", "temperature", "platt")


def logit(p, eps: float = 1e-6) -> np.ndarray:
    """log(p / (1 − p)) with p clipped to [eps, 1 − eps]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """Per-label affine map of teacher logits: a·z + b."""

    method: str
    scale: np.ndarray
    bias: np.ndarray

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits (same shape)."""
        return np.asarray(logits, dtype=np.float64) * self.scale + self.bias

    def to_dict(self) -> dict:
        """Plain-JSON form for the run's records."""
        return {"method": self.method, "scale": [round(float(v), 6) for v in self.scale],
                "bias": [round(float(v), 6) for v in self.bias]}


def fit_platt(z: np.ndarray, y: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Platt scaling of one label: (a, b) minimising log-loss of σ(a·z + b) against smoothed targets (Newton)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64) > 0.5
    positives, negatives = y.sum(), (~y).sum()
    t = np.where(y, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    a, b = 1.0, float(logit((positives + 1.0) / (len(y) + 2.0)))
    for _ in range(iterations):
        p = sigmoid(a * z + b)
        w = np.maximum(p * (1.0 - p), 1e-12)
        g = np.array([((p - t) * z).sum(), (p - t).sum()])
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def fit_calibration(method: str, val_logits: np.ndarray, y_val: np.ndarray, min_support: int = 3) -> Calibration:
    """Fit one of CALIBRATIONS per label on the teacher's validation logits and the true labels."""
    n = val_logits.shape[1]
    scale, bias = np.ones(n), np.zeros(n)
    if method == "shift":
        bias = -logit(tune_thresholds(y_val, sigmoid(val_logits), min_support))
    elif method == "temperature":
        scale = 1.0 / fit_temperatures(val_logits, y_val)
    elif method == "platt":
        for j in range(n):
            scale[j], bias[j] = fit_platt(val_logits[:, j], y_val[:, j])
    elif method != "none":
        raise ValueError(f"teacher calibration must be one of {', '.join(CALIBRATIONS)}, not {method!r}")
    return Calibration(method, scale, bias)


def tuned_f1(y: np.ndarray, probs: np.ndarray, min_support: int = 3) -> np.ndarray:
    """Each label's validation F1 at its own tuned threshold."""
    thresholds = tune_thresholds(y, probs, min_support)
    return f1_per_label(y, (probs >= thresholds).astype(np.float64))


def label_gate(teacher_val_logits: np.ndarray, student_val_logits: np.ndarray, y_val: np.ndarray,
               min_support: int = 3) -> dict:
    """Which labels the teacher may teach: those where its validation F1 (tuned) is ≥ the plain student's.

    Returns {"teach": bool per label, "teacher_f1": …, "student_f1": …}. A label the teacher loses on
    falls back to the true label alone in the KD loss, so a weak tower cannot drag the student down.
    """
    teacher = tuned_f1(y_val, sigmoid(teacher_val_logits), min_support)
    student = tuned_f1(y_val, sigmoid(student_val_logits), min_support)
    return {"teach": teacher >= student - 1e-12, "teacher_f1": teacher, "student_f1": student}


def label_alphas(alpha: float, teach: np.ndarray) -> np.ndarray:
    """Per-label weight of the true labels in the KD loss: α where the teacher teaches, 1 where it does not."""
    return np.where(np.asarray(teach, dtype=bool), alpha, 1.0).astype(np.float32)


def soft_targets(train_logits: np.ndarray, calibration: Calibration, temperature: float) -> np.ndarray:
    """σ((a·z + b) / T): the teacher's calibrated probabilities on the training texts, softened by T."""
    return sigmoid(calibration.apply(train_logits) / temperature).astype(np.float32)
