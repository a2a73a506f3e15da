"""Vocabulary and Word2Vec: build ids from segmented texts, train or load 300-d vectors, report coverage."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from kdedge.text.data import DataError
from kdedge.errors import UsageError
from kdedge.files import atomic_path
from kdedge_run.text import OOV_ID, OOV_TOKEN, PAD_ID, PAD_TOKEN


class Vocabulary:
    """Token ↔ id; id 0 is padding, id 1 is out-of-vocabulary, then tokens by descending count."""

    def __init__(self, tokens: list[str]):
        if tokens[:2] != [PAD_TOKEN, OOV_TOKEN]:
            raise ValueError("a vocabulary starts with <pad>, <oov>")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, segmented: list[list[str]], min_count: int = 1, max_size: int | None = None,
              extra: set[str] | None = None) -> "Vocabulary":
        """Tokens seen ≥ min_count times (ties broken by token), at most max_size entries in all.

        `extra` (e.g. words that have pre-trained vectors) admits rarer tokens below min_count.
        """
        counts = Counter(tok for toks in segmented for tok in toks)
        keep = [t for t, c in counts.items() if c >= min_count or (extra and t in extra)]
        keep.sort(key=lambda t: (-counts[t], t))
        if max_size:
            keep = keep[:max(0, max_size - 2)]
        return cls([PAD_TOKEN, OOV_TOKEN] + keep)

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        """Read vocab.txt (token of id i on line i)."""
        return cls(Path(path).read_text(encoding="utf-8").split("\n")[:-1])

    def save(self, path: Path) -> None:
        """Write vocab.txt."""
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        """Token list → id list (unknown → OOV id)."""
        return [self.index.get(t, OOV_ID) for t in tokens]

    def coverage(self, segmented: list[list[str]]) -> dict:
        """Share of running tokens and of distinct tokens in `segmented` that have an id."""
        counts = Counter(tok for toks in segmented for tok in toks)
        total = sum(counts.values()) or 1
        known = sum(c for t, c in counts.items() if t in self.index)
        distinct_known = sum(1 for t in counts if t in self.index)
        return {"token_coverage": known / total, "type_coverage": distinct_known / max(len(counts), 1),
                "tokens": total, "types": len(counts)}


def train_word2vec(sentences: list[list[str]], dim: int = 300, epochs: int = 10, seed: int = 0,
                   min_count: int = 1, workers: int | None = None, progress: bool = False):
    """Skip-gram Word2Vec (gensim) over token lists; returns gensim KeyedVectors.

    With one worker the result is fully determined by `seed`; more workers are faster but vary.
    `progress` shows a bar of the tokens read on stderr (every epoch, with an ETA), updated within an epoch.
    """
    from gensim.models import Word2Vec
    from tqdm.auto import tqdm

    class Counted:
        """The sentences, advancing the bar by each sentence's tokens as training reads them."""

        def __iter__(self):
            for sentence in sentences:
                bar.update(len(sentence))
                yield sentence

    model = Word2Vec(vector_size=dim, window=5, min_count=min_count, sg=1, negative=5, seed=seed,
                     workers=workers or 1)
    model.build_vocab(sentences)
    total = sum(len(s) for s in sentences) * epochs
    with tqdm(total=total, desc=f"Word2Vec {dim}-d, {epochs} epochs", unit=" tokens", unit_scale=True, leave=False,
              disable=not progress) as bar:
        model.train(Counted(), total_examples=model.corpus_count, epochs=epochs)
    return model.wv


def load_vectors(path) -> "object":
    """Load word2vec-format vectors (text or binary, by trying text first); gensim KeyedVectors."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vectors file not found")
    binary = path.suffix == ".bin"
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, unicode_errors="replace")
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(path, None, None, f"not a word2vec {'binary' if binary else 'text'} file ({exc})") from None


def save_vectors(wv, path) -> None:
    """Write vectors in word2vec format (binary for .bin, text otherwise), atomically (`files.atomic_path`)."""
    with atomic_path(path) as tmp:
        wv.save_word2vec_format(str(tmp), binary=Path(path).suffix == ".bin")


def embedding_matrix(vocab: Vocabulary, wv, dim: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """`[len(vocab), dim]` float32 table: the word's vector, small random for others, zeros for padding."""
    if wv is not None and wv.vector_size != dim:
        raise UsageError(f"vectors have dimension {wv.vector_size}, the model expects {dim}")
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
    table[PAD_ID] = 0.0
    found = 0
    if wv is not None:
        for i, tok in enumerate(vocab.tokens[2:], 2):
            if tok in wv.key_to_index:
                table[i] = wv[tok]
                found += 1
    return table, {"vocab_with_vector": found, "vocab_size": len(vocab),
                   "vector_coverage": found / max(len(vocab) - 2, 1)}

