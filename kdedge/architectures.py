"""The architecture registry: one record per architecture, free of Keras so a config can be checked cheaply."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    """Everything kdedge knows about one architecture, in one place."""

    name: str
    defaults: dict = field(default_factory=dict)  # hyper-parameters (`arch_params` may override them)
    input_kind: str = "sequence"                  # sequence: [max_len] ids | hierarchical: [sentences, words]
    batch_size: int = 32                          # the paper's batch size, used when batch_size is None

    @property
    def hierarchical(self) -> bool:
        """Whether the model takes [sentences, words] ids (HAN) instead of a flat sequence."""
        return self.input_kind == "hierarchical"

    def params(self, overrides: dict | None = None) -> dict:
        """The default hyper-parameters with `overrides` applied; ValueError naming unknown keys."""
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"it has {', '.join(self.defaults)}")
        return {**self.defaults, **(overrides or {})}


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("textcnn", {"kernel_sizes": [2, 3, 4], "filters": 100}),
    Architecture("textrnn", {"units": 128}),
    Architecture("gru_att", {"units": 128, "attention_units": 100}, batch_size=128),
    Architecture("han", {"units": 50, "attention_units": 100}, input_kind="hierarchical"),
)}


def architecture(name: str) -> Architecture:
    """The record of architecture `name`; ValueError listing the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
