"""The Classifier: text → calibrated label probabilities with one bundle and one backend."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import open_backend
from .bundle import BundleError, load_bundle
from .golden import check_golden
from .text import sigmoid, split_sentences

DEFAULT_MODEL = Path(__file__).parent / "default_model"


class InputError(ValueError):
    """A text or option the classifier cannot take (an empty text, k < 1, a threshold outside [0, 1]), or a
    text the model gives a non-finite output for. A ValueError, so `except ValueError` keeps working."""


@dataclass(frozen=True)
class Prediction:
    """One text's result.

    `labels`: labels whose calibrated probability passes its threshold (or the global one), most
    probable first, at most k. `probabilities`: every label's calibrated probability (version 2, a text
    longer than the model input: pooled over its windows, docs/bundle.md "Long texts (windows)"). `truncated`:
    part of the text was not read at all (version 2: code points past the window rule's reach; version
    1: longer than the model input, or cut before segmentation). `tokens`: number of tokens after
    segmentation (of the kept part of a cut text; for a version-2 bundle, the code points the model
    read, all windows together, each once). `coverage`: share of the tokens the model read that are in
    its vocabulary (version 2, several windows: summed over the windows). `judged`: False when the
    model cannot judge the text (nothing of it in the vocabulary, or coverage below the bundle's
    `abstain.min_coverage`): then `labels` is empty. `windows`: model rows the text was read as (1 unless
    a version-2 text is longer than max_len).
    """

    labels: list[str]
    probabilities: dict[str, float]
    truncated: bool
    tokens: int
    coverage: float = 1.0
    judged: bool = True
    windows: int = 1


@dataclass(frozen=True)
class _Prepared:
    """One text ready for the model: its input rows (one per window: ids, or code points for version 2),
    truncation, token count, its tokens (version 2: the characters read) and each row's [start, end) in
    them."""

    rows: np.ndarray
    truncated: bool
    tokens: int
    token_list: list[str]
    spans: tuple[tuple[int, int], ...] = ((0, 0),)

    @property
    def row(self) -> np.ndarray:
        """The first window's row (the only one of a text that fits the model input)."""
        return self.rows[0]

    @property
    def filled(self) -> int:
        """Input positions that hold a token, all rows together (what the model read)."""
        return int(np.count_nonzero(self.rows))


@dataclass(frozen=True)
class _Outputs:
    """`Classifier._run`'s results per text, in the order of the prepared texts: calibrated probabilities
    pooled over the text's windows [n, labels]; in-vocabulary tokens and tokens read, summed over its windows
    [n]; good [n] (every window's output finite); top [n], the window holding the text's highest pooled
    probability; attention of that window, or None."""

    probabilities: np.ndarray
    known: np.ndarray
    read: np.ndarray
    good: np.ndarray
    top: np.ndarray
    attention: np.ndarray | None


class Classifier:
    """A loaded, verified bundle plus one reusable inference backend; safe to share across threads.

    `threads` above the usable cores (`usable_cores()`) is clamped to them. The golden vectors are checked
    at load (kdedge_run.golden) unless `verify_golden` is False.
    """

    def __init__(self, path: str | Path | None = None, backend: str | None = None, threads: int = 1,
                 verify_golden: bool = True):
        if path is None:
            if not (DEFAULT_MODEL / "manifest.json").is_file():
                raise BundleError("no default bundle installed; pass a model directory")
            path = DEFAULT_MODEL
        self._bundle = load_bundle(path)
        self._backend = open_backend(self._bundle, backend, threads)
        self._thresholds = self._bundle.thresholds
        self._temperatures = self._bundle.temperatures
        if verify_golden:
            check_golden(self, self._bundle.manifest)

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
            return _Prepared(pre.rows(cps), truncated, len(cps), [chr(c) for c in cps],
                             tuple(pre.windows.spans(len(cps))))
        tokens, cut = pre.segment(text)
        if not tokens:
            raise InputError("empty text")
        ids, truncated = pre.ids(tokens)
        return _Prepared(ids[None], truncated or cut, len(tokens), tokens, ((0, len(tokens)),))

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
        """The `n` tokens with the highest attention weight, as (token, weight), highest first.

        A version-2 text read as several windows is explained by the window that holds its highest pooled
        probability (the window its most probable label comes from; the first such window on a tie)."""
        if not self.has_attention:
            entry = self._bundle.models()[self.backend]
            raise BundleError(f"{entry['file']}: model has no attention output "
                              f"(architecture {self._bundle.manifest.get('architecture')}); "
                              "explain needs a gru_att or han bundle")
        prepared = self._prepare(text)
        out = self._run([prepared])
        if not out.good[0]:
            raise self._non_finite()
        attention = out.attention
        spec = self._bundle.input_spec
        if spec["kind"] == "hierarchical":
            sentences = split_sentences(prepared.token_list, tuple(spec["sentence_end_tokens"]))
            weighted = [(tok, attention[0, s, w])
                        for s, sent in enumerate(sentences[:spec["max_sentences"]])
                        for w, tok in enumerate(sent[:spec["max_sentence_len"]])]
        else:
            start, end = prepared.spans[int(out.top[0])]
            weighted = list(zip(prepared.token_list[start:end][:spec["max_len"]], attention[0]))
        weighted.sort(key=lambda tw: -tw[1])
        return [(tok, float(w)) for tok, w in weighted[:n]]

    def info(self) -> dict:
        """What the bundle holds: labels, thresholds, temperatures, models, files, metrics (validation and, when
        exported with --test, held-out test scores), parity."""
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
            "test_metrics": m.get("test_metrics"),
            "calibration_report": m.get("calibration_report"),
            "segmentation_agreement": m.get("segmentation_agreement"),
            "parity": m.get("parity"),
        }

    def _run(self, prepared: list[_Prepared]) -> _Outputs:
        """Prepared texts → their outputs (`_Outputs`), each text's windows pooled (docs/bundle.md "Long
        texts"): a window is judged as a text of its own would be; a text that is judged (summed known >= 1
        and summed known / summed read >= min_coverage) takes, per label, the max over its judged windows,
        a text that is not, the max over all its windows. A text of one row is exactly that row's output.

        The rows of all texts are run in batches of similar length (sorted by the number of input positions
        they fill; a format-2 graph cuts a batch's padding after its longest row, so a batch costs its
        longest row): a row's outputs do not depend on the rows it is batched with, so a text's results are
        those of its windows run alone.
        `good[i]` is False when one of text i's rows has a non-finite output (version 1: scaled logits;
        version 2: probabilities outside [0, 1] too); its results are then not to be used.
        """
        n, n_labels = len(prepared), len(self.labels)
        owner = np.array([i for i, p in enumerate(prepared) for _ in range(len(p.rows))], dtype=np.int64)
        rows = [r for p in prepared for r in p.rows]
        m = len(rows)
        probs = np.empty((m, n_labels))
        known = np.zeros(m, dtype=np.int64)
        read = np.array([np.count_nonzero(r) for r in rows], dtype=np.int64)
        good = np.ones(m, dtype=bool)
        attention = None
        size = self._backend.batch_size
        v2 = self._bundle.version == 2
        order = np.argsort(read, kind="stable")
        for start in range(0, m, size):
            at = order[start:start + size]
            x = np.stack([rows[j] for j in at])
            out = self._backend.run(x if v2 else self._bundle.embed(x))
            with np.errstate(all="ignore"):
                if v2:
                    batch = out["probabilities"].astype(np.float64)
                    good[at] = np.isfinite(batch).all(axis=1) & ((batch >= 0) & (batch <= 1)).all(axis=1)
                else:
                    scaled = out["logits"].astype(np.float64) / self._temperatures
                    good[at] = np.isfinite(scaled).all(axis=1)
                    batch = sigmoid(scaled)
            probs[at] = batch
            known[at] = out["known"] if v2 else (x > 1).reshape(len(x), -1).sum(axis=1)
            if "attention" in out:
                if attention is None:
                    attention = np.empty((m, *out["attention"].shape[1:]), dtype=out["attention"].dtype)
                attention[at] = out["attention"]
        return self._pool(owner, n, probs, known, read, good, attention)

    def _pool(self, owner, n, probs, known, read, good, attention) -> _Outputs:
        """Rows → texts (`owner[j]` is row j's text; a text's rows are consecutive): the rule of `_run`."""
        text_known = np.bincount(owner, weights=known, minlength=n).astype(np.int64)
        text_read = np.bincount(owner, weights=read, minlength=n).astype(np.int64)
        text_good = np.bincount(owner, weights=~good, minlength=n) == 0
        min_coverage = self._bundle.min_coverage
        with np.errstate(all="ignore"):  # coverage as _decide computes it: known / read, then compared
            row_judged = (known >= 1) & (known / np.maximum(read, 1) >= min_coverage)
            text_judged = (text_known >= 1) & (text_known / np.maximum(text_read, 1) >= min_coverage)
        votes = ~text_judged[owner] | row_judged   # the rows a text's probabilities are pooled over
        pooled = np.empty((n, probs.shape[1]))
        top = np.zeros(n, dtype=np.int64)
        first = np.searchsorted(owner, np.arange(n))
        for i in range(n):
            a = first[i]
            b = first[i + 1] if i + 1 < n else len(owner)
            if b - a == 1:
                pooled[i] = probs[a]
                continue
            candidates = probs[a:b][votes[a:b]]
            pooled[i] = candidates.max(axis=0)
            best = np.where(votes[a:b], probs[a:b].max(axis=1), -np.inf)
            top[i] = int(np.argmax(best))
        chosen = None if attention is None else attention[first + top]
        return _Outputs(pooled, text_known, text_read, text_good, top, chosen)

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
        result = self._run(prepared)
        labels = self.labels
        cut = self._thresholds if threshold is None else np.full(len(labels), float(threshold))
        min_coverage = self._bundle.min_coverage
        out = []
        for row, n_known, read, ok, p in zip(result.probabilities, result.known, result.read, result.good,
                                             prepared):
            if not ok:
                out.append(self._non_finite())
                continue
            # read: tokens the model read (after truncation), summed over the windows
            coverage = float(n_known) / float(read) if read else 0.0
            judged = bool(n_known >= 1 and coverage >= min_coverage)
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= cut[i]] if judged else []
            out.append(Prediction(labels=[labels[i] for i in order[:k]],
                                  probabilities={lab: float(q) for lab, q in zip(labels, row)},
                                  truncated=bool(p.truncated), tokens=p.tokens, coverage=coverage, judged=judged,
                                  windows=len(p.rows)))
        return out
