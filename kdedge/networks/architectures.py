"""The architecture registry: one record per architecture, free of Keras so a config can be checked cheaply.

Builders are named as `module:function` and imported only when a model is built.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


def _resolve(ref: str) -> Callable:
    """The function a `module:function` reference names."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


MIN_TOWER_WIDTH = 8  # filters or units of the narrowest teacher tower


@dataclass(frozen=True)
class Param:
    """The allowed values of one hyper-parameter: an integer in low..high, or (`items` > 0) a list of 1 to `items`
    distinct such integers. The upper ends keep a typo from allocating gigabytes before it fails."""

    low: int
    high: int
    items: int = 0

    def check(self, name: str, value) -> None:
        """ValueError naming `name` and the allowed values when `value` is not one of them."""
        values = value if self.items and isinstance(value, list) else [value]
        ok = (isinstance(value, list) == bool(self.items) and 1 <= len(values) <= max(self.items, 1)
              and len(set(map(repr, values))) == len(values)
              and all(isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high for v in values))
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            kind = (f"a list of 1 to {self.items} distinct integers, each" if self.items else "an integer")
            raise ValueError(f"{name} must be {kind} from {self.low} to {self.high}, not {shown}")


# every hyper-parameter an architecture has, by name (the same name means the same thing in every architecture)
PARAMS = {"filters": Param(1, 4096), "units": Param(1, 4096), "attention_units": Param(1, 4096),
          "kernel_sizes": Param(1, 64, items=8)}


@dataclass(frozen=True)
class Architecture:
    """Everything kdedge knows about one architecture, in one place."""

    name: str
    body: str                                     # embedded tokens → (features, attention | None): kdedge.networks.models
    towers: str | None = None                     # ids, embedded → per-tower features (kdedge.teaching.towers); None:
                                                  # the teacher is n separate Keras towers
    defaults: dict = field(default_factory=dict)  # hyper-parameters (`arch_params` may override them)
    input_kind: str = "sequence"                  # sequence: [max_len] ids | hierarchical: [sentences, words];
                                                  # a character run of a sequence architecture exports code
                                                  # points (bundle format 2), a hierarchical one ids (format 1)
    batch_size: int = 32                          # the paper's batch size, used when batch_size is None
    width: str | None = None                      # the hyper-parameter that sets the network's width
    padding_margin: Callable[[dict], int] | None = None  # params → m: the outputs for a text of n tokens are
                                                  # the same when its padding is cut after n + m tokens
                                                  # (exported graphs then skip the rest); None: padding counts
    onnx_int8_note: str | None = None             # what `kdedge export --quantize int8` says of ONNX for it

    @property
    def hierarchical(self) -> bool:
        """Whether the model takes [sentences, words] ids (HAN) instead of a flat sequence."""
        return self.input_kind == "hierarchical"

    @property
    def towered(self) -> bool:
        """Whether the binary-relevance teacher is tower-batched (one recurrence with a towers axis)."""
        return self.towers is not None

    def body_builder(self) -> Callable:
        """The Keras body function `(embedded, BodySpec) → (features, attention or None)`."""
        return _resolve(self.body)

    def towers_builder(self) -> Callable:
        """The tower-batched teacher's features function `(ids, embedded, towers, params) → features`."""
        if self.towers is None:
            raise ValueError(f"no towered teacher for {self.name!r}; towered architectures: "
                             f"{', '.join(a.name for a in ARCHITECTURES.values() if a.towered)}")
        return _resolve(self.towers)

    def tower_params(self, params: dict, towers: int, budget: float) -> dict:
        """Hyper-parameters of each tower of a binary-relevance teacher whose `towers` towers together are
        about `budget` times as wide as one network: the width parameter scaled by budget / towers, at
        least MIN_TOWER_WIDTH, never above `params`' own; budget 0 keeps every tower at full width (the paper)."""
        if not budget or self.width is None:
            return params
        full = int(params[self.width])
        return {**params, self.width: max(min(MIN_TOWER_WIDTH, full), min(full, round(full * budget / towers)))}

    def params(self, overrides: dict | None = None) -> dict:
        """The default hyper-parameters with `overrides` applied; ValueError naming unknown keys."""
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {', '.join(sorted(map(str, unknown)))}; "
                             f"it has {', '.join(self.defaults)}")
        params = {**self.defaults, **(overrides or {})}
        for name, value in params.items():
            PARAMS[name].check(name, value)
        return params


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # TextCNN: a window wholly in the (all-zero) padding gives relu(bias) whatever its position, so after
    # n + max(kernel) positions the max-pool sees nothing new
    Architecture("textcnn", "kdedge.networks.models:textcnn_body", "kdedge.teaching.towers:textcnn_towers",
                 {"kernel_sizes": [2, 3, 4], "filters": 100},
                 width="filters", padding_margin=lambda params: max(params["kernel_sizes"]),
                 onnx_int8_note="ONNX Runtime runs int8 TextCNN convolutions as ConvInteger, which was 3-4x slower "
                                "than fp32 on our CPUs; the int8 ONNX file is smaller but prefer --quantize none "
                                "for ONNX speed (TFLite int8 is not affected)"),
    Architecture("textrnn", "kdedge.networks.models:textrnn_body", "kdedge.teaching.towers:textrnn_towers", {"units": 128},
                 width="units"),
    Architecture("gru_att", "kdedge.networks.models:gru_att_body", "kdedge.teaching.towers:gru_att_towers",
                 {"units": 128, "attention_units": 100}, batch_size=128, width="units"),
    Architecture("han", "kdedge.networks.models:han_body", "kdedge.teaching.towers:han_towers", {"units": 50, "attention_units": 100},
                 input_kind="hierarchical", width="units"),
)}


def architecture(name: str) -> Architecture:
    """The record of architecture `name`; ValueError listing the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
