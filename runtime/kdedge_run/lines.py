"""Input lines → records, one rule for `kdedge-run predict --input` and `kdedge-run label`.

A line is a JSON object with a string "text" (other fields, e.g. "id", are kept) when it starts with "{",
else a plain text. A line is read up to MAX_LINE_BYTES and the rest skipped: a cut plain line is predicted
with "truncated": true, a cut JSON line is an error. Every line is decoded and parsed on its own, so one bad
line (invalid UTF-8, invalid JSON, no "text") becomes an error for that line and the others go on. A UTF-8
byte order mark at the start of the input is skipped. docs/reliability.md section 12.
"""
from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .classifier import InputError

MAX_LINE_BYTES = 16 << 20
_DRAIN_BYTES = 1 << 20
BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class Line:
    """One input line: its `record` (a plain line: {"text": line}), or its `error` (with what could be read
    of the record, e.g. its "id", or None); `cut`: it was longer than MAX_LINE_BYTES."""

    number: int
    record: dict | None
    error: InputError | None
    cut: bool

    @property
    def text(self) -> str | None:
        return None if self.error is not None or self.record is None else self.record["text"]

    @property
    def id(self):
        """The record's "id" (None when absent or unreadable)."""
        return None if self.record is None else self.record.get("id")


def bounded_lines(stream) -> Iterator[tuple[bytes, bool]]:
    """Yield (line bytes without its end, whether it was cut) with at most MAX_LINE_BYTES held."""
    first = True
    while raw := stream.readline(MAX_LINE_BYTES):
        if first:
            raw, first = raw.removeprefix(BOM), False
        cut = False
        if not raw.endswith(b"\n"):
            while rest := stream.readline(_DRAIN_BYTES):  # skip the rest of a longer line
                cut = True
                if rest.endswith(b"\n"):
                    break
        yield raw.removesuffix(b"\n").removesuffix(b"\r"), cut


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InputError(f"number {text[:40]} is out of range (not a finite double)")
    return number


def _no_constant(name: str):
    raise InputError(f"{name} is not valid JSON")


def parse_line(number: int, raw: bytes, cut: bool) -> Line:
    """One line's bytes → a Line (a record, or the error that makes it unreadable)."""
    try:  # a cut line may end inside a UTF-8 sequence: the incremental decoder leaves it out
        line = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut)
    except UnicodeDecodeError as e:
        return Line(number, None, InputError(f"invalid UTF-8: {e}"), cut)
    if not line.lstrip().startswith("{"):
        return Line(number, {"text": line}, None, cut)
    if cut:
        return Line(number, None, InputError(f"JSON line longer than {MAX_LINE_BYTES} bytes (a plain text "
                                             "line would be cut and predicted)"), cut)
    try:
        record = json.loads(line, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        return Line(number, None, InputError("invalid JSON: nested too deeply"), cut)
    except ValueError as e:  # also a >4300-digit integer, NaN, Infinity, 1e999
        return Line(number, None, InputError(f"invalid JSON: {e}"), cut)
    if not isinstance(record, dict):
        return Line(number, None, InputError('JSON line needs a string "text" field'), cut)
    if not isinstance(record.get("text"), str):
        return Line(number, {"id": record.get("id")} if "id" in record else None,
                    InputError('JSON line needs a string "text" field'), cut)
    return Line(number, record, None, cut)


def read_lines(stream) -> Iterator[Line]:
    """The Lines of a binary stream, numbered from 1."""
    for number, (raw, cut) in enumerate(bounded_lines(stream), 1):
        yield parse_line(number, raw, cut)


GROUP_TEXTS = 2048
GROUP_CHARS = 4 << 20


def groups(lines: Iterable[Line], texts: int = GROUP_TEXTS, chars: int = GROUP_CHARS) -> Iterator[list[Line]]:
    """Consecutive groups of at most `texts` lines holding at most about `chars` characters of text (a group
    ends after the line that reaches it): the unit that is sorted by length and batched, so memory stays
    bounded by the group, not by the input."""
    group, size = [], 0
    for line in lines:
        group.append(line)
        size += len(line.text or "")
        if len(group) >= texts or size >= chars:
            yield group
            group, size = [], 0
    if group:
        yield group
