"""What training returns: a trained teacher or student, how it was fitted, and its logits per split."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Fit:
    """How one teacher or student was fitted: wall times, epochs, the selected epoch and criterion per label
    group (lower is better: validation BCE or −macro-F1), the per-epoch history, and for a teacher its
    kind and validation scores."""

    seconds: float
    train_seconds: float | None = None           # None: all of `seconds` (a teacher that is not a network)
    validation_seconds: float = 0.0
    epochs_run: int = 0
    best_value: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    kind: str | None = None                      # teachers: towers | linear | ensemble
    crossfit: int | None = None                  # teachers: K of the out-of-fold training-text outputs (0: none)
    validation: dict | None = None               # teachers: micro/macro-F1 on validation at tuned thresholds
    components: dict | None = None               # ensemble teacher: each part's seconds and validation scores
    candidates: dict | None = None               # auto teacher: every kind tried (macro-F1, on what, seconds)
    reason: str | None = None                    # auto teacher: why this kind was chosen

    def __post_init__(self):
        if self.train_seconds is None:
            self.train_seconds = self.seconds

    @property
    def criterion(self) -> float:
        """The selected epoch's validation criterion of a student (one label group); lower is better."""
        return self.best_value[0]

    def teacher_record(self) -> dict:
        """The teacher facts a run or a cv fold records: kind, crossfit, validation scores, components, and for
        an auto teacher the candidates and the reason."""
        return {k: getattr(self, k) for k in ("kind", "crossfit", "validation", "components", "candidates", "reason")
                if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        """JSON-ready; teacher-only fields are left out when unset."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> Fit:
        """A Fit from `to_dict()` output (e.g. a cached teacher's JSON); unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class KDChoice:
    """The KD student's setting chosen on validation, the search that chose it and how its targets were made."""

    alpha: float
    temperature: float
    search: list[dict]   # every (α, T) tried: criterion, epochs run, seconds
    targets: dict        # the teacher's calibration, crossfit K and per-label gate

    def to_dict(self) -> dict:
        """JSON-ready."""
        return dataclasses.asdict(self)


@dataclass
class Trained:
    """One trained teacher or student.

    `logits` maps a split name (train, val, test, …) to the model's logits on it; `model` is the Keras
    network, None for a teacher that is not one (or came from the cache), and `trim` says it takes
    trimmed, any-length batches. `kd` is set for the KD student. `within(n)`, for a network trained run out
    (`kdedge.training.distill.EpochSelector`), is that network as if it had been trained `n` epochs.
    """

    fit: Fit
    logits: dict[str, np.ndarray]
    model: Any = None
    trim: bool = False
    cached: bool = False
    kd: KDChoice | None = None
    within: Callable[[int], Trained] | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The network's logits on the id rows `x`."""
        from kdedge.training.batching import predict_logits

        if self.model is None:
            raise ValueError("this teacher is not a network: only its stored logits exist")
        return predict_logits(self.model, x, trim=self.trim)

    def logits_on(self, split: str, x: np.ndarray) -> np.ndarray:
        """The logits on `split`, predicted from its id rows `x` (and kept) unless already known."""
        if split not in self.logits:
            self.logits[split] = self.predict(x)
        return self.logits[split]
