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


class InputError(ValueError):
    """A text or option the classifier cannot take (an empty text, k < 1, a threshold outside [0, 1]), or a
    text the model gives a non-finite output for. A ValueError, so `except ValueError` keeps working."""


@dataclass(frozen=True)
class Prediction:
    """One text's result.

    `labels`: labels whose calibrated probability passes its threshold (or the global one), most
    probable first, at most k. `probabilities`: every label's calibrated probability. `truncated`:
    the text was longer than the model input (or cut before segmentation, docs/bundle.md "Long
    texts"). `tokens`: number of tokens after segmentation (of the kept part of a cut text; for a
    version-2 bundle, the code points the model read). `coverage`: share of the tokens the model read
    that are in its vocabulary. `judged`: False when the model cannot judge the text (nothing of it in
    the vocabulary, or coverage below the bundle's `abstain.min_coverage`): then `labels` is empty.
    """

    labels: list[str]
    probabilities: dict[str, float]
    truncated: bool
    tokens: int
    coverage: float = 1.0
    judged: bool = True


@dataclass(frozen=True)
class _Prepared:
    """One text ready for the model: its input row (ids, or code points for version 2), truncation,
    token count and (version 1) its tokens."""

    row: np.ndarray
    truncated: bool
    tokens: int
    token_list: list[str]

    @property
    def filled(self) -> int:
        """Input positions that hold a token (the batching sort key)."""
        return int(np.count_nonzero(self.row))


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
        """The tokens the model sees for `text` (of its kept part if cut; for a version-2 bundle, the
        characters it reads); ValueError for an empty text."""
        return self._prepare(text).token_list

    def _prepare(self, text: str) -> _Prepared:
        """The model input for one text; TypeError for a non-str, ValueError for an empty text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pre = self._bundle.preprocessor
        if self._bundle.version == 2:
            cps, truncated = pre.code_points(text)
            if not len(cps):
                raise InputError("empty text")
            row = np.zeros(pre.max_len, dtype=np.int32)
            row[:len(cps)] = cps
            return _Prepared(row, truncated, len(cps), [chr(c) for c in cps])
        tokens, cut = pre.segment(text)
        if not tokens:
            raise InputError("empty text")
        ids, truncated = pre.ids(tokens)
        return _Prepared(ids, truncated or cut, len(tokens), tokens)

    def predict(self, text: str | list[str], k: int | None = None, threshold: float | None = None):
        """Classify one text (→ Prediction) or a list of texts (→ list of Prediction).

        A label is returned when its calibrated probability is >= its tuned threshold, or >=
        `threshold` when given; the returned labels are sorted by probability and cut to the top `k`
        (k only selects among labels that pass: use threshold=0 for a plain top-k). A text the model
        cannot judge (`Prediction.judged` False) gets no labels.
        Empty or whitespace-only texts raise ValueError, and so does a text for which the model
        gives a NaN or infinite output (a faulty bundle): no non-finite probability is ever returned.
        In a list, the first such text fails the whole call (`text i: ...`).
        """
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive integer, got {k!r}")
        if threshold is not None and not (isinstance(threshold, numbers.Real) and 0.0 <= threshold <= 1.0):
            raise InputError(f"threshold must be within [0, 1], got {threshold!r}")
        if isinstance(text, str):
            return self._predict([self._prepare(text)], k, threshold, indexed=False)[0]
        prepared = []
        for i, t in enumerate(text):
            try:
                prepared.append(self._prepare(t))
            except (TypeError, ValueError) as e:
                raise type(e)(f"text {i}: {e}") from None
        return self._predict(prepared, k, threshold)

    def explain(self, text: str, n: int = 5) -> list[tuple[str, float]]:
        """The `n` tokens with the highest attention weight, as (token, weight), highest first."""
        if not self.has_attention:
            entry = self._bundle.models()[self.backend]
            raise BundleError(f"{entry['file']}: model has no attention output "
                              f"(architecture {self._bundle.manifest.get('architecture')}); "
                              "explain needs a gru_att or han bundle")
        prepared = self._prepare(text)
        tokens = prepared.token_list
        attention, good = self._run([prepared])[2:]
        if not good[0]:
            raise self._non_finite()
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
            "label_descriptions": self._bundle.label_descriptions,
            "abstain": m.get("abstain"),
            "thresholds": m["thresholds"],
            "temperatures": m["calibration"]["temperatures"],
            "input": m["input"],
            "vocab_size": m["vocab"]["size"],
            "golden": m.get("golden"),
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

    def _run(self, prepared: list[_Prepared]):
        """Prepared texts → (calibrated probabilities [n, labels], in-vocabulary tokens read [n],
        attention or None, good [n]), in the order of `prepared`.

        Texts are run in batches of similar length (sorted by the number of input positions they fill;
        a format-2 graph cuts a batch's padding after its longest text, so a batch costs its longest
        text): a text's outputs do not depend on the texts it is batched with.
        `good[i]` is False when text i's output is not finite (version 1: scaled logits; version 2:
        probabilities outside [0, 1] too); its row is then not to be used.
        """
        n = len(prepared)
        if not n:
            return np.zeros((0, len(self.labels))), np.zeros(0, dtype=np.int64), None, np.zeros(0, dtype=bool)
        size = self._backend.batch_size
        v2 = self._bundle.version == 2
        order = np.argsort([p.filled for p in prepared], kind="stable")
        probs = np.empty((n, len(self.labels)))
        known = np.empty(n, dtype=np.int64)
        good = np.empty(n, dtype=bool)
        attention = None
        for start in range(0, n, size):
            rows = order[start:start + size]
            x = np.stack([prepared[i].row for i in rows])
            out = self._backend.run(x if v2 else self._bundle.embed(x))
            with np.errstate(all="ignore"):
                if v2:
                    batch = out["probabilities"].astype(np.float64)
                    good[rows] = np.isfinite(batch).all(axis=1) & ((batch >= 0) & (batch <= 1)).all(axis=1)
                else:
                    scaled = out["logits"].astype(np.float64) / self._temperatures
                    good[rows] = np.isfinite(scaled).all(axis=1)
                    batch = sigmoid(scaled)
            probs[rows] = batch
            known[rows] = out["known"] if v2 else (x > 1).reshape(len(x), -1).sum(axis=1)
            if "attention" in out:
                if attention is None:
                    attention = np.empty((n, *out["attention"].shape[1:]), dtype=out["attention"].dtype)
                attention[rows] = out["attention"]
        return probs, known, attention, good

    def _non_finite(self) -> InputError:
        return InputError(f"the model gave a NaN or infinite output for this text (faulty bundle {self.path})")

    def _predict(self, prepared: list[_Prepared], k, threshold, indexed: bool = True) -> list[Prediction]:
        """Predictions for prepared texts; InputError (prefixed "text i: " when `indexed`) for the first,
        in input order, that the model gives a non-finite output for."""
        results = self._decide(prepared, k, threshold)
        for i, result in enumerate(results):
            if isinstance(result, InputError):
                raise InputError(f"text {i}: {result}" if indexed else str(result))
        return results

    def _predict_each(self, texts: list, k=None, threshold=None) -> list:
        """Like `predict(texts)`, but a text that cannot be classified (not a str, empty, a non-finite
        output) gets its exception in place of its Prediction and the others are classified (the
        streaming commands' rule: one bad line never stops a job)."""
        results: list = [None] * len(texts)
        prepared, where = [], []
        for i, text in enumerate(texts):
            try:
                prepared.append(self._prepare(text))
                where.append(i)
            except (TypeError, ValueError) as e:
                results[i] = e
        for i, result in zip(where, self._decide(prepared, k, threshold)):
            results[i] = result
        return results

    def _decide(self, prepared: list[_Prepared], k, threshold) -> list:
        """Prepared texts → a Prediction each, or the InputError of a text with a non-finite output."""
        probs, known, _, good = self._run(prepared)
        labels = self.labels
        cut = self._thresholds if threshold is None else np.full(len(labels), float(threshold))
        min_coverage = self._bundle.min_coverage
        out = []
        for row, n_known, ok, p in zip(probs, known, good, prepared):
            if not ok:
                out.append(self._non_finite())
                continue
            read = p.filled  # tokens the model read (after truncation)
            coverage = float(n_known) / read if read else 0.0
            judged = bool(n_known >= 1 and coverage >= min_coverage)
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= cut[i]] if judged else []
            out.append(Prediction(labels=[labels[i] for i in order[:k]],
                                  probabilities={lab: float(q) for lab, q in zip(labels, row)},
                                  truncated=bool(p.truncated), tokens=p.tokens, coverage=coverage, judged=judged))
        return out
