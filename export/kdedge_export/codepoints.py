"""Bundle format v2's input: the version-1 character pipeline folded into code point tables.

Version 1 turns each code point c of a text into the token `convert(normalise(c))` and drops it when that
is whitespace (kdedge_run.text); every step works code point by code point. So one table decides it all:
`dropped` (the code points the app removes) and `code point → vocabulary id` for the rest, stored in the
model as two levels (a page table of 256-code-point blocks, then the blocks; docs/bundle.md "Version 2").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdedge_run.text import OOV_ID, PAD_ID, CharMap, changed_by_normalise, normalise

MAX_CODE_POINT = 0x10FFFF
PAGE = 256
PAGES = (MAX_CODE_POINT + 1) // PAGE


@dataclass
class CodepointTables:
    """`page_table[c // PAGE]` is the block of code point c; `block_table[block * PAGE + c % PAGE]` its id."""

    page_table: np.ndarray     # int32 [PAGES]
    block_table: np.ndarray    # int32 [blocks * PAGE]
    dropped: list[list[int]]   # inclusive [first, last] ranges the app removes


def _token(c: int, convert: CharMap | None) -> str:
    token = normalise(chr(c))
    return convert(token) if convert is not None else token


def build_tables(vocab: dict[str, int], convert: CharMap | None) -> CodepointTables:
    """The tables for a character vocabulary (token → id) and an optional script conversion.

    Block 0 is all <oov> (pages with no vocabulary character share it); page 0 always has its own block so
    that code point 0, the padding, maps to <pad>. Dropped code points map to <pad> too (a reader removes
    them before the model; the table is total so that a careless reader still gets a defined result).
    """
    ids = np.full(MAX_CODE_POINT + 1, OOV_ID, dtype=np.int32)
    is_dropped = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
    # a code point that normalise and convert leave alone is its own token; only these can differ
    # (Unicode has no whitespace outside the BMP)
    candidates = {ord(t) for t in vocab if len(t) == 1} | changed_by_normalise() | set(range(0x10000))
    if convert is not None:
        candidates |= {ord(k) for k in convert.mapping}
    for c in candidates:
        token = _token(c, convert)
        if token.isspace():
            is_dropped[c] = True
        else:
            found = vocab.get(token)
            if found is not None:
                ids[c] = found
    ids[is_dropped] = PAD_ID
    ids[0] = PAD_ID
    pages = ids.reshape(PAGES, PAGE)
    used = [p for p in range(PAGES) if p == 0 or (pages[p] != OOV_ID).any()]
    page_table = np.zeros(PAGES, dtype=np.int32)
    blocks = [np.full(PAGE, OOV_ID, dtype=np.int32)]
    for p in used:
        page_table[p] = len(blocks)
        blocks.append(pages[p])
    return CodepointTables(page_table, np.concatenate(blocks), _ranges(np.flatnonzero(is_dropped)))


def _ranges(points: np.ndarray) -> list[list[int]]:
    """Sorted code points → inclusive [first, last] runs."""
    if not len(points):
        return []
    breaks = np.flatnonzero(np.diff(points) != 1)
    starts = np.concatenate([[points[0]], points[breaks + 1]])
    ends = np.concatenate([points[breaks], [points[-1]]])
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


def lookup(tables: CodepointTables, codepoints: np.ndarray) -> np.ndarray:
    """What the model's first two GATHERs compute (for checks): code points → vocabulary ids."""
    c = np.clip(codepoints, 0, MAX_CODE_POINT)
    return tables.block_table[tables.page_table[c // PAGE] * PAGE + c % PAGE]
