"""Labelled samples shipped with kdedge, usable wherever a data file is: `--data sample:health`.

`health`: 3,000 synthetic patient messages in Traditional Chinese with healthner9's 9 labels, written for
kdedge (templates and word lists in `generate.py`, Apache-2.0; about 450 KB). For trying the pipeline end to
end in minutes, not for measuring it.
"""
from __future__ import annotations

from pathlib import Path

PREFIX = "sample:"
SAMPLES = {"health": Path(__file__).with_name("health_zh_tw.jsonl")}


def resolve(data) -> Path:
    """A data argument as a path: `sample:NAME` → the shipped file; anything else as given."""
    if isinstance(data, str) and data.startswith(PREFIX):
        name = data[len(PREFIX):]
        if name not in SAMPLES:
            from kdedge.text.data import DataError

            raise DataError(data, None, None, f"no such sample (shipped samples: "
                                              f"{', '.join(PREFIX + s for s in SAMPLES)})")
        return SAMPLES[name]
    return Path(data)
