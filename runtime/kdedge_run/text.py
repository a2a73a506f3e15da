"""Text → token ids, exactly as docs/bundle.md specifies (normalise, convert, segment, map, shape).

Training (kdedge) imports this module too, so training and runtime cannot disagree on preprocessing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"
SENTENCE_END_TOKENS = ("。", "！", "？", "!", "?", "；", ";", "\u2026")

_NORMALISE_TABLE = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
_NORMALISE_TABLE[0x3000] = 0x20
_NORMALISE_TABLE.update({c: 0x20 for c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0))})
_NORMALISE_TABLE.update({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})
_NORMALISE_TABLE.update({c: c - 0xFEE0 + 32 for c in range(0xFF21, 0xFF3B)})  # Ａ–Ｚ → a–z, not A–Z
_SURROGATES = re.compile("[\ud800-\udfff]")


def normalise(text: str) -> str:
    """Full-width ASCII → ASCII, control characters and lone surrogates → space, A–Z → a–z."""
    return _SURROGATES.sub(" ", text.translate(_NORMALISE_TABLE))


class CharMap:
    """A code-point replacement table (e.g. Traditional → Simplified) applied before segmentation."""

    def __init__(self, name: str, mapping: dict[str, str]):
        self.name = name
        self.mapping = mapping
        self._table = {ord(k): v for k, v in mapping.items()}

    @classmethod
    def load(cls, name: str, path: Path) -> "CharMap":
        """Read a `{"char": "char"}` JSON file."""
        return cls(name, json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        """Write the table as JSON (sorted keys, so the file's checksum is stable)."""
        Path(path).write_text(json.dumps(self.mapping, ensure_ascii=False, sort_keys=True), encoding="utf-8")

    def __call__(self, text: str) -> str:
        return text.translate(self._table)


def _drop_blank(tokens) -> list[str]:
    return [t for t in (tok.strip() for tok in tokens) if t]


class CharTokenizer:
    """Every non-whitespace code point is a token."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def read_dictionary(path: Path) -> dict[str, int]:
    """Read a jieba dictionary (`word freq [tag]` per line) into {word: freq}."""
    freqs: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            if len(parts) >= 2 and parts[0]:
                freqs[parts[0]] = int(parts[1])
    return freqs


class JiebaTokenizer:
    """jieba's accurate mode over a given {word: freq} dictionary, built in memory (no cache files)."""

    kind = "jieba"

    def __init__(self, freqs: dict[str, int], hmm: bool = True):
        import jieba

        self.hmm = hmm
        self._tk = jieba.Tokenizer()
        prefix: dict[str, int] = {}
        total = 0
        for word, freq in freqs.items():
            prefix[word] = freq
            total += freq
            for i in range(1, len(word)):
                prefix.setdefault(word[:i], 0)
        self._tk.FREQ, self._tk.total = prefix, max(total, 1)
        self._tk.initialized = True

    def tokenize(self, text: str) -> list[str]:
        return list(self._tk.cut(text, HMM=self.hmm))


class Preprocessor:
    """normalise → convert → segment → ids, for one bundle's (or run's) settings."""

    def __init__(self, tokenizer, vocab: dict[str, int], input_spec: dict, convert: CharMap | None = None):
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.input_spec = input_spec
        self.convert = convert

    def tokens(self, text: str) -> list[str]:
        """The tokens the model sees for `text` (before id mapping and truncation)."""
        text = normalise(text)
        if self.convert is not None:
            text = self.convert(text)
        return _drop_blank(self.tokenizer.tokenize(text))

    def ids(self, tokens: list[str]) -> tuple[np.ndarray, bool]:
        """Token list → padded id array of the model's input shape, and whether it was truncated."""
        return tokens_to_ids(tokens, self.vocab, self.input_spec)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Texts → stacked id arrays `[batch, ...]` and per-text truncation flags."""
        encoded = [self.ids(self.tokens(t)) for t in texts]
        if not encoded:
            return np.zeros((0, *input_shape(self.input_spec)), dtype=np.int64), []
        return np.stack([e[0] for e in encoded]), [e[1] for e in encoded]


def input_shape(spec: dict) -> tuple[int, ...]:
    """The per-text id shape an input spec describes."""
    if spec["kind"] == "hierarchical":
        return (spec["max_sentences"], spec["max_sentence_len"])
    return (spec["max_len"],)


def split_sentences(tokens: list[str], ends=SENTENCE_END_TOKENS) -> list[list[str]]:
    """Split after every sentence-end token (which stays in its sentence); no empty sentences."""
    sentences, current = [], []
    for tok in tokens:
        current.append(tok)
        if tok in ends:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def tokens_to_ids(tokens: list[str], vocab: dict[str, int], spec: dict) -> tuple[np.ndarray, bool]:
    """Map tokens to ids, truncate and pad per the input spec; returns (ids, truncated)."""
    oov = spec.get("oov_id", OOV_ID)
    ids = [vocab.get(t, oov) for t in tokens]
    if spec["kind"] == "hierarchical":
        rows, width = spec["max_sentences"], spec["max_sentence_len"]
        out = np.full((rows, width), spec.get("pad_id", PAD_ID), dtype=np.int64)
        sentences = split_sentences(tokens, tuple(spec.get("sentence_end_tokens", SENTENCE_END_TOKENS)))
        truncated = len(sentences) > rows
        pos = 0
        for r, sent in enumerate(sentences):
            if r < rows:
                row = ids[pos:pos + len(sent)][:width]
                out[r, :len(row)] = row
                truncated = truncated or len(sent) > width
            pos += len(sent)
        return out, truncated
    max_len = spec["max_len"]
    out = np.full((max_len,), spec.get("pad_id", PAD_ID), dtype=np.int64)
    out[:min(len(ids), max_len)] = ids[:max_len]
    return out, len(ids) > max_len


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))

