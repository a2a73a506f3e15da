"""Golden vectors checked at load: a bundle's `golden.jsonl` (docs/bundle.md "Golden vectors") run through this
reader and the model it loaded. A model swapped for another (a constant one, one with outputs out of range) or a
damaged golden file, even with every checksum recomputed, is refused before any text is classified."""
from __future__ import annotations

from .bundle import BundleError, number_in, parse_json


def read_golden(data: bytes, rel: str, labels: list[str], expected: int) -> list[dict]:
    """The golden vectors of `data` (the bytes of `rel`), each checked field by field."""
    def bad(n: int, problem: str):
        return BundleError(f"{rel} line {n}: {problem}")

    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BundleError(f"{rel}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if len(lines) != expected:
        raise BundleError(f"{rel}: {len(lines)} golden vectors, manifest golden.texts says {expected}")
    out = []
    for n, line in enumerate(lines, 1):
        try:
            row = parse_json(line)
        except ValueError as e:
            raise bad(n, f"not JSON ({e})") from None
        if not isinstance(row, dict):
            raise bad(n, "must be a JSON object")
        probs = row.get("probabilities")
        if not isinstance(row.get("text"), str) or not row["text"]:
            raise bad(n, "'text' must be a non-empty string")
        if not (isinstance(probs, list) and len(probs) == len(labels) and all(number_in(p, 0, 1) for p in probs)):
            raise bad(n, f"'probabilities' must list {len(labels)} numbers within [0, 1], one per label")
        if not (isinstance(row.get("labels"), list) and all(isinstance(x, str) and x in labels for x in row["labels"])):
            raise bad(n, "'labels' must list labels of the bundle")
        if not isinstance(row.get("judged", True), bool):
            raise bad(n, "'judged' must be true or false")
        out.append(row)
    return out


def check_golden(classifier, manifest: dict) -> None:
    """Run every golden text through `classifier` (kdedge_run.Classifier) and compare with its vector: the
    probabilities within the manifest's tolerance, the labels and `judged` equal. Skipped when the classifier
    runs another model format than the one the vectors were made with (the first listed; export compared
    the others with it: the manifest's `parity`)."""
    golden = manifest.get("golden")
    if golden is None or classifier.backend != manifest["models"][0]["format"]:
        return
    rel, tolerance = golden["file"], golden["tolerance"]
    try:
        data = (classifier.path / rel).read_bytes()  # checksum and size verified when the bundle was loaded
    except OSError as e:
        raise BundleError(f"{rel}: cannot read: {e.strerror}") from None
    rows = read_golden(data, rel, classifier.labels, golden["texts"])
    try:
        got = classifier.predict([row["text"] for row in rows])
    except ValueError as e:
        raise BundleError(f"{rel}: {e} (a golden text the model must classify)") from None
    for n, (row, pred) in enumerate(zip(rows, got), 1):
        for label, want in zip(classifier.labels, row["probabilities"]):
            if abs(pred.probabilities[label] - want) > tolerance:
                raise BundleError(
                    f"{rel} line {n}: the model gives {label} {pred.probabilities[label]:.6f}, its golden vector "
                    f"{want:.6f} (tolerance {tolerance:g}): the model is not the one these vectors were made with, "
                    "or this reader does not read the bundle as its writer did")
        if pred.labels != row["labels"] or pred.judged != row.get("judged", True):
            raise BundleError(f"{rel} line {n}: the model's labels {pred.labels} (judged {pred.judged}) differ "
                              f"from its golden vector's {row['labels']} (judged {row.get('judged', True)})")
