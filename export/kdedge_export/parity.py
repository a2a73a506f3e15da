"""Export-time parity: validation texts through the runtime itself vs the trained Keras model."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kdedge.evaluate import decide, scores, sigmoid

from .errors import ParityError, VerificationError

FP32_TOLERANCE = 1e-4


def runtime_inputs(bundle_dir: Path, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """Ids the runtime's own preprocessing gives `texts`, and the indices of texts with ≥ 1 token."""
    from kdedge_run.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as e:
        raise VerificationError(f"the staged bundle does not load in kdedge_run: {e}") from e
    pre = bundle.preprocessor
    keep = [i for i, t in enumerate(texts) if pre.tokens(t)]
    ids, _ = pre.encode([texts[i] for i in keep])
    return ids, keep


def keras_probabilities(model, ids: np.ndarray, temperatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, calibrated probabilities) of the Keras model (ids → logits) on `ids`."""
    from kdedge.training.batching import predict_logits

    logits = predict_logits(model, ids.astype(np.int32)).astype(np.float64)
    return logits, sigmoid(logits / temperatures)


def runtime_probabilities(bundle_dir: Path, backend: str, texts: list[str]) -> np.ndarray:
    """Calibrated probabilities `[n, labels]` from `kdedge_run.load(bundle_dir, backend).predict`."""
    import kdedge_run
    from kdedge_run.bundle import BundleError

    try:
        clf = kdedge_run.load(bundle_dir, backend=backend)
    except BundleError as e:
        raise VerificationError(f"kdedge_run cannot load the exported {backend} model: {e}") from e
    predictions = clf.predict(texts)
    return np.array([[p.probabilities[lab] for lab in clf.labels] for p in predictions], dtype=np.float64)


def latency_ms(bundle_dir: Path, backend: str, texts: list[str], n: int = 40, warmup: int = 3) -> float:
    """Median wall time (ms) of `predict(text)` for one text at a time, 1 thread, end to end."""
    import kdedge_run

    clf = kdedge_run.load(bundle_dir, backend=backend, threads=1)
    sample = (texts * (1 + (n + warmup) // max(len(texts), 1)))[:n + warmup]
    times = []
    for i, text in enumerate(sample):
        start = time.perf_counter()
        clf.predict(text)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000) if times else 0.0


def compare(probs: np.ndarray, reference: np.ndarray, y: np.ndarray, thresholds: np.ndarray, labels: list[str]) -> dict:
    """The measured part of a `parity.results` row: runtime vs Keras probabilities and decisions at the bundle's
    thresholds."""
    ours = decide(probs, thresholds)
    theirs = decide(reference, thresholds)
    macro = scores(y, ours, labels)["macro_f1"]
    keras_macro = scores(y, theirs, labels)["macro_f1"]
    dp = np.abs(probs - reference)
    return {"max_abs_dp": float(dp.max()) if dp.size else 0.0,
            "mean_abs_dp": float(dp.mean()) if dp.size else 0.0,
            "flipped_decisions": int((ours != theirs).sum()),
            "macro_f1": float(macro), "macro_f1_change": float(macro - keras_macro)}


def strict(row: dict) -> bool:
    """Whether the fp32 tolerance applies: fp32 weights and float32 vectors (nothing quantised)."""
    return row["precision"] == "fp32" and row["vectors"] == "float32"


def check(rows: list[dict]) -> None:
    """Raise ParityError when an fp32 model with fp32 vectors differs from Keras by more than 1e-4."""
    bad = [r for r in rows if strict(r) and not r["max_abs_dp"] <= FP32_TOLERANCE]
    if bad:
        detail = "; ".join(f"{r['format']}: max |Δp| = {r['max_abs_dp']:.3g}" for r in bad)
        raise ParityError(f"parity check failed: fp32 model probabilities differ from the Keras model's by more "
                          f"than {FP32_TOLERANCE:g} ({detail}); the conversion is wrong, nothing was written",
                          FP32_TOLERANCE, bad)


def report(run, keras_model, ids: np.ndarray, keep: list[int], temperatures: np.ndarray, thresholds,
           candidates) -> dict:
    """The manifest's `parity` object (docs/bundle.md "Parity"): Keras on `ids` (the model input of the
    validation texts `keep`) against every candidate model through kdedge_run, each row with its median
    single-text latency. `candidates`: (bundle dir, shipped?, vectors dtype, [(manifest entry, bytes)]).
    Raises ParityError (`check`) when an fp32 model misses the tolerance, before latencies are measured."""
    texts = [run.val_texts[i] for i in keep]
    y = run.val_y[keep]
    logits, reference = keras_probabilities(keras_model, ids, temperatures)
    measured = [(path, {"format": entry["format"], "precision": entry["precision"], "vectors": vectors,
                        "bytes": int(size),
                        **compare(runtime_probabilities(path, entry["format"], texts), reference, y, thresholds,
                                  run.labels),
                        "shipped": shipped})
                for path, shipped, vectors, entries in candidates for entry, size in entries]
    rows = [row for _, row in measured]
    check(rows)
    for path, row in measured:  # only after the check: a failing export should fail fast
        row["latency_ms"] = round(latency_ms(path, row["format"], texts), 4)
    parity = {"texts": len(texts), "reference": "keras", "fp32_tolerance": FP32_TOLERANCE,
              "keras_macro_f1": float(scores(y, decide(reference, thresholds), run.labels)["macro_f1"]),
              "keras_vs_training_logits": float(np.abs(logits - run.val_logits[keep]).max()) if keep else 0.0,
              "results": rows}
    if len(keep) < len(run.val_texts):
        parity["skipped_texts"] = len(run.val_texts) - len(keep)
    return parity


def fastest_first(models: list[dict], parity: dict, note) -> list[dict]:
    """The manifest's `models`, ordered by the shipped rows' `latency_ms` (docs/bundle.md), and a note saying so."""
    latency = {r["format"]: r["latency_ms"] for r in parity["results"] if r["shipped"]}
    models = sorted(models, key=lambda e: latency[e["format"]])
    if len(models) > 1:
        order = ", ".join(f"{e['format']} {latency[e['format']]:.2f} ms" for e in models)
        note(f"models listed fastest first (median single-text latency at export, 1 thread): {order}")
    return models
