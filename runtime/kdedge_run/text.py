"""Text → token ids, exactly as docs/bundle.md specifies (normalise, convert, segment, map, shape).

Training (kdedge) imports this module too, so training and runtime cannot disagree on preprocessing.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
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
_WHITESPACE_RUN = re.compile(r"\s+")  # exactly the characters str.isspace() is true for
_NON_SPACE_RUN = re.compile("[^ ]+")
CHUNK = 1 << 16          # characters normalised at a time when a text may be cut
TOKEN_CHARS = 8          # a text keeps TOKEN_CHARS non-whitespace characters per token the model reads
MAX_DICTIONARY_FREQ = 2 ** 53


def normalise(text: str) -> str:
    """Full-width ASCII → ASCII, control characters and lone surrogates → space, A–Z → a–z."""
    return _SURROGATES.sub(" ", text.translate(_NORMALISE_TABLE))


def changed_by_normalise() -> set[int]:
    """The code points `normalise` changes (every other code point is left as it is)."""
    return set(_NORMALISE_TABLE) | set(range(0xD800, 0xE000))


def escape(text: str, also: str = "") -> str:
    """`text` safe for a terminal line: unprintable characters (controls, bidi and other format
    characters, line/paragraph separators, surrogates, private use, unassigned) but not spaces, and
    those in `also`, written as \\xNN, \\uNNNN or \\UNNNNNNNN."""
    if text.isprintable() and not any(c in text for c in also):
        return text
    return "".join(_escape_char(c) if c in also or not _terminal_safe(c) else c for c in text)


def escape_json(text: str) -> str:
    """JSON text (`json.dumps(..., ensure_ascii=False)`) safe for a terminal: every unprintable character
    (as `escape` judges it; they can only be inside strings, where json leaves bidi, C1 and other format
    characters raw) written as a JSON \\u escape, so a JSON reader decodes the same value. Newlines of an
    indented dump are kept."""
    if text.isprintable():
        return text
    return "".join(c if c == "\n" or _terminal_safe(c) else _json_escape_char(c) for c in text)


def _terminal_safe(c: str) -> bool:
    """Whether `c` may be written raw to a terminal: printable, or a space of any width."""
    return c.isprintable() or unicodedata.category(c) == "Zs"


def _json_escape_char(c: str) -> str:
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _escape_char(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


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

    def boundary(self, text: str) -> int:
        """Every position is a segmentation boundary: tokens of a prefix never change."""
        return len(text)


def read_dictionary(path: Path) -> dict[str, int]:
    """Read a jieba dictionary (`word freq [tag]` per line) into {word: freq}.

    Raises ValueError naming the line for a frequency that is not an integer in [0, 2**53].
    """
    freqs: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(" ")
            if len(parts) >= 2 and parts[0]:
                try:
                    freq = int(parts[1])
                except ValueError:
                    freq = -1
                if not 0 <= freq <= MAX_DICTIONARY_FREQ:
                    raise ValueError(f"line {n}: frequency {parts[1][:40]!r} of {parts[0][:40]!r} is not "
                                     f"an integer in [0, 2**53]")
                freqs[parts[0]] = freq
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

    def boundary(self, text: str) -> int:
        """Start of the jieba block `text` ends in (len(text) if it ends outside one).

        jieba segments each run of its block characters (jieba.re_han_default) on its own, so the
        tokens of `text[:boundary]` are exactly the first tokens of `text` and of any longer text.
        """
        import jieba

        last = None
        for last in jieba.re_han_default.finditer(text):
            pass
        return last.start() if last is not None and last.end() == len(text) else len(text)


class Preprocessor:
    """normalise → convert → segment → ids, for one bundle's (or run's) settings.

    With an input spec (a bundle's), a long text is cut before segmentation (`text_limit`); with
    an empty spec (training) the whole text is segmented.
    """

    def __init__(self, tokenizer, vocab: dict[str, int], input_spec: dict, convert: CharMap | None = None):
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.input_spec = input_spec
        self.convert = convert
        self.limit = text_limit(input_spec)

    def uncut(self) -> "Preprocessor":
        """The same preprocessing without the cut: whole texts are segmented (as in training)."""
        return Preprocessor(self.tokenizer, self.vocab, {}, self.convert)

    def _prepared(self, text: str) -> str:
        text = normalise(text)
        return text if self.convert is None else self.convert(text)

    def cut(self, text: str) -> tuple[str, bool]:
        """(normalised, converted text to segment, whether it was cut): docs/bundle.md "Long texts".

        Keeps the first `limit` non-whitespace characters (whitespace runs become one space, which
        changes no token), then steps back to the last segmentation boundary if that keeps at least
        half of them. Work and memory are bounded by the limit, whatever the length of `text`.
        """
        if self.limit is None or len(text) <= self.limit:
            return self._prepared(text), False
        pieces, kept = [], 0
        for start in range(0, len(text), CHUNK):
            piece = _WHITESPACE_RUN.sub(" ", self._prepared(text[start:start + CHUNK]))
            count = len(piece) - piece.count(" ")
            if kept + count > self.limit:
                pieces.append(piece[:_end_of_nth_non_space(piece, self.limit - kept)])
                break
            pieces.append(piece)
            kept += count
        else:
            return "".join(pieces), False
        head = "".join(pieces)  # holds exactly `limit` non-space characters
        end = self.tokenizer.boundary(head)
        return (head[:end] if 2 * (end - head.count(" ", 0, end)) >= self.limit else head), True

    def segment(self, text: str) -> tuple[list[str], bool]:
        """(tokens of the kept part of `text`, whether the text was cut before segmentation)."""
        kept, cut = self.cut(text)
        return _drop_blank(self.tokenizer.tokenize(kept)), cut

    def tokens(self, text: str) -> list[str]:
        """The tokens the model sees for `text` (before id mapping and truncation)."""
        return self.segment(text)[0]

    def ids(self, tokens: list[str]) -> tuple[np.ndarray, bool]:
        """Token list → padded id array of the model's input shape, and whether it was truncated."""
        return tokens_to_ids(tokens, self.vocab, self.input_spec)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Texts → stacked id arrays `[batch, ...]` and per-text truncation flags (cut or truncated)."""
        encoded = []
        for text in texts:
            tokens, cut = self.segment(text)
            ids, truncated = self.ids(tokens)
            encoded.append((ids, truncated or cut))
        if not encoded:
            return np.zeros((0, *input_shape(self.input_spec)), dtype=np.int64), []
        return np.stack([e[0] for e in encoded]), [e[1] for e in encoded]


def _end_of_nth_non_space(piece: str, n: int) -> int:
    """Index just after the n-th (n >= 1) non-space character of `piece` (spaces are ' ' only)."""
    for run in _NON_SPACE_RUN.finditer(piece):
        if n <= len(run.group()):
            return run.start() + n
        n -= len(run.group())
    return len(piece)


def text_limit(spec: dict) -> int | None:
    """Non-whitespace characters of a text segmented for this input spec (None: no spec, no limit).

    TOKEN_CHARS per token the model reads: max_len, or max_sentences × max_sentence_len.
    """
    return TOKEN_CHARS * math.prod(input_shape(spec)) if spec else None


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



DEFAULT_MAX_WINDOWS = 16  # windows per text in new format-2 bundles (docs/bundle.md "Long texts (windows)")


@dataclass(frozen=True)
class Windows:
    """How a format-2 bundle reads a text longer than the model input (docs/bundle.md "Long texts (windows)"):
    windows of `size` (= input.max_len) code points starting every `stride` code points, at most
    `max_windows` of them; each label's probability is pooled over windows by `pool` ("max").

    A bundle without `input.windows` reads one window (`Windows.single(max_len)`): the first max_len
    code points, as format 2 always did.
    """

    size: int
    stride: int
    max_windows: int
    pool: str = "max"

    @classmethod
    def single(cls, size: int) -> "Windows":
        return cls(size, size, 1)

    @property
    def reach(self) -> int:
        """Code points read at most: the first size + (max_windows - 1) × stride; the rest is cut."""
        return self.size + (self.max_windows - 1) * self.stride

    def count(self, n: int) -> int:
        """Windows for a text of `n` code points (after dropping): 1 when n <= size, else
        1 + ceil((n - size) / stride), at most max_windows."""
        if n <= self.size:
            return 1
        return min(self.max_windows, 1 + -(-(n - self.size) // self.stride))

    def spans(self, n: int) -> list[tuple[int, int]]:
        """[start, end) of each window over `n` code points: window k holds code points k × stride up to
        min(k × stride + size, n) (the last one ends at the last code point read)."""
        read = min(n, self.reach)
        return [(k * self.stride, min(k * self.stride + self.size, read)) for k in range(self.count(n))]

    def as_manifest(self) -> dict:
        """The manifest's `input.windows` object."""
        return {"size": self.size, "stride": self.stride, "max_windows": self.max_windows, "pool": self.pool}


def default_windows(max_len: int) -> Windows:
    """The window rule new format-2 bundles get: half-overlapping windows (stride max_len / 2), at most 16
    per text (128-code-point models read the first 1,088 code points), max-pooled."""
    return Windows(max_len, max(1, max_len // 2), DEFAULT_MAX_WINDOWS, "max")


class CodepointEncoder:
    """Bundle format v2's only preprocessing (docs/bundle.md "What the app does"): the text's code points,
    those in the `dropped` inclusive ranges removed, the first `windows.reach` kept (the first `max_len`
    without a window rule), cut into windows of `max_len` code points, each padded with 0.

    Work and memory per text are bounded by `windows.reach`, whatever the text's length.
    """

    def __init__(self, dropped: list[list[int]], max_len: int, windows: Windows | None = None):
        self.max_len = max_len
        self.windows = windows if windows is not None else Windows.single(max_len)
        self.dropped = dropped
        self._starts = np.array([a for a, _ in dropped], dtype=np.int64)
        self._ends = np.array([b for _, b in dropped], dtype=np.int64)
        self._chunk = max(1024, 2 * self.windows.reach)

    def code_points(self, text: str) -> tuple[np.ndarray, bool]:
        """(kept code points, at most `windows.reach`, as int32; whether more followed: truncated)."""
        limit = self.windows.reach
        kept, count = [], 0
        for start in range(0, len(text), self._chunk):
            cps = np.frombuffer(text[start:start + self._chunk].encode("utf-32-le", "surrogatepass"),
                                dtype="<u4").astype(np.int64)
            at = np.searchsorted(self._starts, cps, side="right") - 1
            dropped = (at >= 0) & (cps <= self._ends[np.maximum(at, 0)]) if len(self._starts) else \
                np.zeros(len(cps), dtype=bool)
            cps = cps[~dropped]
            kept.append(cps)
            count += len(cps)
            if count > limit:
                break
        cps = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        return cps[:limit].astype(np.int32), len(cps) > limit

    def rows(self, cps: np.ndarray) -> np.ndarray:
        """Kept code points → the model rows of their windows, int32 `[windows, max_len]`, padded with 0."""
        spans = self.windows.spans(len(cps))
        out = np.zeros((len(spans), self.max_len), dtype=np.int32)
        for k, (a, b) in enumerate(spans):
            out[k, :b - a] = cps[a:b]
        return out

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool], list[int]]:
        """Texts → int32 `[batch, max_len]` (each text's first window, padded with 0), truncation flags, code
        points read per text (all windows: up to `windows.reach`)."""
        out = np.zeros((len(texts), self.max_len), dtype=np.int32)
        truncated, tokens = [], []
        for row, text in enumerate(texts):
            cps, cut = self.code_points(text)
            first = cps[:self.max_len]
            out[row, :len(first)] = first
            truncated.append(cut)
            tokens.append(len(cps))
        return out, truncated, tokens
