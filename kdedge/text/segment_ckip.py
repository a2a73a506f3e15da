"""CKIP word segmentation (ckip-transformers) from a LOCAL model directory.

Optional backend: needs the `ckip` extra (ckip-transformers, torch, transformers), imported lazily
so that kdedge works without it. Nothing is ever fetched from a hub: `model_dir` must be a directory
holding a BERT/ALBERT token-classification model (`config.json` + weights) and its tokenizer files
(e.g. `vocab.txt`), as written by `save_pretrained`.

The model goes through ckip-transformers' own loading path (`CkipWordSegmenter(model_name=DIR)`,
which calls `AutoModelForTokenClassification.from_pretrained(DIR)` and
`BertTokenizerFast.from_pretrained(DIR)`). CkipWordSegmenter decodes logits by *position*: class 0
is "B" (a word begins here), class 1 is "I" (continue the word), so the model needs exactly 2 labels
in that order.
"""
from __future__ import annotations

import os
from pathlib import Path

from kdedge.errors import MissingExtraError, UsageError

INSTALL_HINT = "the ckip segmenter needs the optional extra: pip install 'kdedge[ckip]'"


class CkipNotInstalledError(MissingExtraError):
    """ckip-transformers (or torch / transformers) is not installed."""


class CkipTokenizer:
    """Segment texts with a CKIP word-segmentation model; whitespace always ends a word and is dropped."""

    kind = "ckip"

    def __init__(self, model_dir: str, batch_size: int = 64, device: int | None = None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"ckip model directory not found: {str(model_dir)!r} "
                "(it must be a local directory with config.json, the weights and vocab.txt)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"ckip model directory {str(model_dir)!r} has no config.json "
                "(expected a model saved with save_pretrained: config.json, weights, vocab.txt)")

        try:
            import torch
            from ckip_transformers.nlp import CkipWordSegmenter
        except ImportError as exc:
            raise CkipNotInstalledError(INSTALL_HINT) from exc

        if device is None:
            device = 0 if torch.cuda.is_available() else -1
        device = int(device)
        if device >= 0 and not torch.cuda.is_available():
            raise UsageError(f"device={device} asks for a GPU but torch sees no CUDA device; use device=-1 for CPU")

        self.model_dir = str(model_dir)
        self.batch_size = int(batch_size)
        self.device = device
        # A local path is resolved by from_pretrained as a directory, never as a hub id.
        self._ws = CkipWordSegmenter(model_name=str(path), device=device)

        # ckip cuts long inputs into rows of tokenizer.model_max_length - 2 characters. A tokenizer saved
        # without model_max_length reports ~1e30, so cap the rows by the model's position embeddings.
        tok_max = self._ws.tokenizer.model_max_length
        pos_max = getattr(self._ws.model.config, "max_position_embeddings", None)
        self._max_length = pos_max - 2 if pos_max and pos_max < tok_max else None

    # ------------------------------------------------------------------------------------------------

    def spec(self) -> dict:
        """What segments the texts (recorded in the run)."""
        return {
            "type": self.kind,
            "model_dir": self.model_dir,
            "model_name": os.path.basename(os.path.normpath(self.model_dir)),
            "batch_size": self.batch_size,
        }

    def tokenize(self, text: str) -> list[str]:
        return self.tokenize_many([text])[0]

    def tokenize_many(self, texts: list[str]) -> list[list[str]]:
        """Tokens of each text, in order; empty / whitespace-only texts give []."""
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, not {type(text).__name__}")
        # Runs of whitespace become one space: CKIP sees the context on both sides, and the space
        # (an [UNK] to the model) is split off and dropped after decoding.
        prepared = [" ".join(text.split()) for text in texts]
        results: list[list[str]] = [[] for _ in texts]
        todo = [i for i, text in enumerate(prepared) if text]
        # Similar lengths in a call: ckip pads every row of a call to the call's longest row.
        todo.sort(key=lambda i: len(prepared[i]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            words = self._ws([prepared[i] for i in chunk], batch_size=self.batch_size,
                             max_length=self._max_length, show_progress=False)
            for i, sent in zip(chunk, words):
                results[i] = [piece for word in sent for piece in word.split()]
        return results

    def __repr__(self) -> str:
        return f"CkipTokenizer(model_dir={self.model_dir!r}, batch_size={self.batch_size}, device={self.device})"
