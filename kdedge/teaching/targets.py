"""The KD student's soft targets: the teacher's logits, calibrated per label, softened by the KD temperature,
and gated per label where the teacher is not shown to be better than the plain student.

Calibration and gate are fitted on the texts whose teacher outputs look like the ones that become targets:
with a cross-fitted teacher (`--teacher-crossfit K`; off by default) its out-of-fold outputs on the whole training
split; otherwise the validation split (the teacher's training-text outputs are then its memory of them).

A teacher whose towers stop at epoch 3 gives raw probabilities far below its own tuned thresholds; a
student that imitates them learns the miscalibration, not the decisions. Each calibration here maps the
teacher's logit z of label j to a_j·z + b_j, fitted on texts the teacher did not train on:

- `none`: a = 1, b = 0 (the paper's raw teacher outputs).
- `shift`: a = 1, b = −logit(t_j), where t_j is the label's F1-tuned threshold, so the
  teacher's decision boundary becomes probability 0.5.
- `temperature`: a = 1/T_j with T_j minimising log-loss (b = 0).
- `platt`: a and b minimising log-loss against Platt's smoothed targets
  ((N₊+1)/(N₊+2) for positives, 1/(N₋+2) for negatives).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdedge.evaluate import fit_temperatures, heldout_f1, sigmoid, tune_thresholds

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


def fit_calibration(method: str, logits: np.ndarray, y: np.ndarray, min_support: int) -> Calibration:
    """Fit one of CALIBRATIONS per label on the teacher's logits for texts it did not train on and their true labels."""
    n = logits.shape[1]
    scale, bias = np.ones(n), np.zeros(n)
    if method == "shift":
        bias = -logit(tune_thresholds(y, sigmoid(logits), min_support))
    elif method == "temperature":
        scale = 1.0 / fit_temperatures(logits, y)
    elif method == "platt":
        for j in range(n):
            scale[j], bias[j] = fit_platt(logits[:, j], y[:, j])
    elif method != "none":
        raise ValueError(f"teacher calibration must be one of {', '.join(CALIBRATIONS)}, not {method!r}")
    return Calibration(method, scale, bias)


GATE_MIN_POSITIVES = 5      # a label is taught only when the teacher's F1 was measured on at least this many positives
GATE_UNJUDGED_F1 = 0.5      # … and, where validation is too small to judge the student, the teacher's F1 reaches this


def label_gate(teacher_logits: np.ndarray, y_teacher: np.ndarray, student_val_logits: np.ndarray, y_val: np.ndarray,
               min_support: int, seed: int) -> dict:
    """Which labels the teacher may teach, on the evidence there is.

    `teacher_logits` / `y_teacher` are the (calibrated) teacher's outputs on the texts its quality is measured
    on: out-of-fold outputs on the whole training split when the teacher is cross-fitted, else the validation
    split. A label is taught when the teacher's F1 there was measured on ≥ GATE_MIN_POSITIVES positives
    and is ≥ the plain student's validation F1; where validation has fewer than `min_support` positives of
    the label (no estimate of the student), when the teacher's F1 is ≥ GATE_UNJUDGED_F1.

    Both F1s are `heldout_f1` (each half of the texts decided at thresholds tuned on the other half). With
    thresholds tuned on the texts they score, the student's F1 on a label with 6 validation positives is
    flattered far more than a cross-fitted teacher's on its many out-of-fold outputs: the comparison was
    tilted against the teacher on exactly the rare labels.

    Returns {"teach": bool per label, "teacher_f1", "student_f1", "teacher_positives", "validation_positives"}.
    A label the teacher does not teach falls back to the true label alone in the KD loss, so a weak teacher
    cannot drag the student down.
    """
    teacher = heldout_f1(y_teacher, sigmoid(teacher_logits), min_support, seed)
    student = heldout_f1(y_val, sigmoid(student_val_logits), min_support, seed)
    teacher_positives, val_positives = y_teacher.sum(axis=0), y_val.sum(axis=0)
    better = np.where(val_positives >= min_support, teacher >= student - 1e-12, teacher >= GATE_UNJUDGED_F1)
    return {"teach": (teacher_positives >= GATE_MIN_POSITIVES) & better, "teacher_f1": teacher, "student_f1": student,
            "teacher_positives": teacher_positives.astype(int), "validation_positives": val_positives.astype(int)}


def teacher_evidence(teacher, feats) -> tuple[np.ndarray, np.ndarray, str]:
    """The teacher's logits and the true labels its quality, calibration and gate are judged on, and what they
    are: its out-of-fold outputs on the whole training split when it is cross-fitted (the same kind of outputs
    as the soft targets), else its validation outputs."""
    if teacher.fit.crossfit:
        return teacher.logits["train"], feats.y["train"], f"out-of-fold training outputs (K = {teacher.fit.crossfit})"
    return teacher.logits["val"], feats.y["val"], "validation outputs"


def fit_targets(cfg, feats, teacher, student=None) -> tuple[Calibration, dict | None, str]:
    """The teacher's calibration (`cfg.teacher_calibration`) and, with `cfg.kd_label_gate` and a plain `student`,
    its per-label gate, both fitted on `teacher_evidence`; and what they were fitted on."""
    logits, y, fitted_on = teacher_evidence(teacher, feats)
    calibration = fit_calibration(cfg.teacher_calibration, logits, y, cfg.threshold_min_support)
    gate = None
    if cfg.kd_label_gate and student is not None:
        gate = label_gate(calibration.apply(logits), y, student.logits["val"], feats.y["val"], cfg.threshold_min_support,
                          cfg.seed)
    return calibration, gate, fitted_on


def label_alphas(alpha: float, teach: np.ndarray) -> np.ndarray:
    """Per-label weight of the true labels in the KD loss: α where the teacher teaches, 1 where it does not."""
    return np.where(np.asarray(teach, dtype=bool), alpha, 1.0).astype(np.float32)


def soft_targets(train_logits: np.ndarray, calibration: Calibration, temperature: float) -> np.ndarray:
    """σ((a·z + b) / T): the teacher's calibrated probabilities on the training texts, softened by T."""
    return sigmoid(calibration.apply(train_logits) / temperature).astype(np.float32)
