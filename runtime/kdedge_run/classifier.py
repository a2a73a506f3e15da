"""The Classifier: text → calibrated label probabilities with one bundle and one backend."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import open_backend
from .bundle import BundleError, load_bundle
from .text import sigmoid, split_sentences

DEFAULT_MODEL = Path(__file__).parent / "default_model"


@dataclass(frozen=True)
class Prediction:
    """One text's result.

    `labels`: labels whose calibrated probability passes its threshold (or the global one), most
    probable first, at most k. `probabilities`: every label's calibrated probability. `truncated`:
    the text was longer than the model input (or cut before segmentation, docs/bundle.md "Long
    texts"). `tokens`: number of tokens after segmentation (of the kept part of a cut text).
    """

    labels: list[str]
    probabilities: dict[str, float]
    truncated: bool
    tokens: int


class Classifier:
    """A loaded, verified bundle plus one reusable inference backend; safe to share across threads.

    `threads` above the usable cores (`usable_cores()`) is clamped to them.
    """

    def __init__(self, path: str | Path | None = None, backend: str | None = None, threads: int = 1):
        if path is None:
            if not (DEFAULT_MODEL / "manifest.json").is_file():
                raise BundleError("no default bundle installed; pass a model directory")
            path = DEFAULT_MODEL
        self._bundle = load_bundle(path)
        self._backend = open_backend(self._bundle, backend, threads)
        self._thresholds = self._bundle.thresholds
        self._temperatures = self._bundle.temperatures

    @property
    def labels(self) -> list[str]:
        """Label names, in model output order."""
        return self._bundle.labels

    @property
    def backend(self) -> str:
        """The backend in use: "onnx" or "tflite"."""
        return self._backend.name

    @property
    def threads(self) -> int:
        """Intra-op threads the backend runs with (the requested number, at most the usable cores)."""
        return self._backend.threads

    @property
    def path(self) -> Path:
        """The bundle directory."""
        return self._bundle.path

    @property
    def has_attention(self) -> bool:
        """Whether the model outputs attention weights (so `explain` works)."""
        return self._backend.has_attention

    def tokenize(self, text: str) -> list[str]:
        """The tokens the model sees for `text` (of its kept part if cut); ValueError for an empty text."""
        return self._segment(text)[0]

    def _segment(self, text: str) -> tuple[list[str], bool]:
        """(tokens, cut before segmentation); TypeError for a non-str, ValueError for an empty text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        tokens, cut = self._bundle.preprocessor.segment(text)
        if not tokens:
            raise ValueError("empty text")
        return tokens, cut

    def predict(self, text: str | list[str], k: int | None = None, threshold: float | None = None):
        """Classify one text (→ Prediction) or a list of texts (→ list of Prediction).

        A label is returned when its calibrated probability is >= its tuned threshold, or >=
        `threshold` when given; the returned labels are sorted by probability and cut to the top `k`
        (k only selects among labels that pass: use threshold=0 for a plain top-k).
        Empty or whitespace-only texts raise ValueError, and so does a text for which the model
        gives a NaN or infinite output (a faulty bundle): no non-finite probability is ever returned.
        In a list, the first such text fails the whole call (`text i: ...`).
        """
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if threshold is not None and not (isinstance(threshold, numbers.Real) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
        if isinstance(text, str):
            return self._predict([self._segment(text)], k, threshold, indexed=False)[0]
        segmented = []
        for i, t in enumerate(text):
            try:
                segmented.append(self._segment(t))
            except (TypeError, ValueError) as e:
                raise type(e)(f"text {i}: {e}") from None
        return self._predict(segmented, k, threshold)

    def explain(self, text: str, n: int = 5) -> list[tuple[str, float]]:
        """The `n` tokens with the highest attention weight, as (token, weight), highest first."""
        if not self.has_attention:
            entry = self._bundle.models()[self.backend]
            raise BundleError(f"{entry['file']}: model has no attention output "
                              f"(architecture {self._bundle.manifest.get('architecture')}); "
                              "explain needs a gru_att or han bundle")
        tokens, cut = self._segment(text)
        _, _, attention = self._run([(tokens, cut)], indexed=False)
        spec = self._bundle.input_spec
        if spec["kind"] == "hierarchical":
            sentences = split_sentences(tokens, tuple(spec["sentence_end_tokens"]))
            weighted = [(tok, attention[0, s, w])
                        for s, sent in enumerate(sentences[:spec["max_sentences"]])
                        for w, tok in enumerate(sent[:spec["max_sentence_len"]])]
        else:
            weighted = list(zip(tokens[:spec["max_len"]], attention[0]))
        weighted.sort(key=lambda tw: -tw[1])
        return [(tok, float(w)) for tok, w in weighted[:n]]

    def info(self) -> dict:
        """What the bundle holds: labels, thresholds, temperatures, models, files, metrics, parity."""
        m = self._bundle.manifest
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "kdedge_version": m.get("kdedge_version"),
            "created": m.get("created"),
            "architecture": m.get("architecture"),
            "model_kind": m.get("model_kind"),
            "backend": self.backend,
            "labels": self.labels,
            "thresholds": m["thresholds"],
            "temperatures": m["calibration"]["temperatures"],
            "input": m["input"],
            "vocab_size": m["vocab"]["size"],
            "embeddings": m["embeddings"],
            "segmenter": m["segmenter"],
            "models": [{k: e.get(k) for k in ("format", "file", "precision", "input_shape")}
                       | {"bytes": m["files"][e["file"]]["bytes"]} for e in m["models"]],
            "files": {rel: meta["bytes"] for rel, meta in sorted(m["files"].items())},
            "metrics": m.get("metrics"),
            "calibration_report": m.get("calibration_report"),
            "segmentation_agreement": m.get("segmentation_agreement"),
            "parity": m.get("parity"),
        }

    def _run(self, segmented: list[tuple[list[str], bool]], indexed: bool = True):
        """(tokens, cut) pairs → (calibrated probabilities [n, labels], truncation flags, attention or None).

        Raises ValueError (prefixed "text i: " when `indexed`) for the first text whose scaled
        logits are not finite.
        """
        probs, truncated, attention = [], [], []
        size = self._backend.batch_size
        for start in range(0, len(segmented), size):
            encoded = [self._bundle.preprocessor.ids(tokens) for tokens, _ in segmented[start:start + size]]
            ids = np.stack([e[0] for e in encoded])
            logits, att = self._backend.run(self._bundle.embed(ids))
            with np.errstate(all="ignore"):
                scaled = logits.astype(np.float64) / self._temperatures
            bad = np.flatnonzero(~np.isfinite(scaled).all(axis=1))
            if bad.size:
                where = f"text {start + bad[0]}: " if indexed else ""
                raise ValueError(f"{where}the model gave a NaN or infinite output for this text "
                                 f"(faulty bundle {self.path})")
            probs.append(sigmoid(scaled))
            truncated.extend(e[1] or cut for e, (_, cut) in zip(encoded, segmented[start:start + size]))
            if att is not None:
                attention.append(att)
        if not probs:
            return np.zeros((0, len(self.labels))), [], None
        return np.concatenate(probs), truncated, (np.concatenate(attention) if attention else None)

    def _predict(self, segmented, k, threshold, indexed: bool = True) -> list[Prediction]:
        probs, truncated, _ = self._run(segmented, indexed)
        labels = self.labels
        cut = self._thresholds if threshold is None else np.full(len(labels), float(threshold))
        out = []
        for row, trunc, (tokens, _) in zip(probs, truncated, segmented):
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= cut[i]]
            out.append(Prediction(labels=[labels[i] for i in order[:k]],
                                  probabilities={lab: float(p) for lab, p in zip(labels, row)},
                                  truncated=bool(trunc), tokens=len(tokens)))
        return out

