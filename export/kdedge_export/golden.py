"""A finished bundle scored through kdedge_run: golden vectors for other readers, held-out test metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN_TOLERANCE = 1e-5
# texts that exercise the version-2 contract (docs/bundle.md "Golden vectors")
CONTRACT_TEXTS = (
    "我最近頭痛又發燒，吃了普拿疼還是不舒服",                       # Traditional
    "我最近头痛又发烧，吃了扑热息痛还是不舒服",                     # Simplified
    "血壓１２０／８０ｍｍＨｇ，ＳＧＯＴ偏高",                        # full-width Latin and digits
    "今天跑步後膝蓋很痛😣要冰敷嗎？👍",                            # emoji (outside the BMP)
    "𠮷野家的𩸽魚定食吃完胃痛",                                   # CJK Extension B
    "I have a headache and a fever since yesterday.",          # Latin
    "  血糖\t\t偏高\n\n\r\n需要　　控制\u3000飲食  ",              # whitespace runs, full-width space
    "頭暈\x00\x07\x1b嘔吐\x7f\x85\u200b",                         # control characters, zero-width space
    "喉嚨痛\ud800咳嗽",                                          # a lone surrogate
    "哈哈哈",
    "12345",
    "ЖЖЖ ЩЩЩ ѮѮѮ",                                            # nothing in the vocabulary: not judged
    "頭痛ЖЖЖЖЖЖЖЖ",                                            # under min_coverage known: not judged
    "每天" + "喝水運動睡眠" * 60 + "後來胸口悶痛",                  # over-long: truncated
)


def golden_vectors(bundle_dir: Path, backend: str, extra_texts: list[str]) -> list[str]:
    """JSON lines {text, codepoints, tokens, truncated, known, probabilities, labels, judged} for the contract
    texts and `extra_texts`; texts with a probability within the tolerance of a threshold are left out (a
    reader's rounding could flip them)."""
    import kdedge_run
    from kdedge_run.bundle import load_bundle

    clf = kdedge_run.load(bundle_dir, backend=backend)
    bundle = load_bundle(bundle_dir)  # the reader's own input encoding and thresholds
    encoder, thresholds = bundle.preprocessor, np.asarray(bundle.thresholds)
    lines = []
    for text in (*CONTRACT_TEXTS, *extra_texts):
        row, truncated, tokens = encoder.encode([text])
        if tokens[0] == 0:
            continue
        p = clf.predict(text)
        probs = np.array([p.probabilities[lab] for lab in clf.labels])
        if np.abs(probs - thresholds).min() <= GOLDEN_TOLERANCE:
            continue
        known = int(round(p.coverage * tokens[0]))
        lines.append(json.dumps({"text": text, "codepoints": row[0].tolist(), "tokens": tokens[0],
                                 "truncated": truncated[0], "known": known, "probabilities": probs.tolist(),
                                 "labels": p.labels, "judged": p.judged}, ensure_ascii=True))
    return lines


def test_metrics(bundle_dir: Path, backend: str, texts: list[str], y: np.ndarray) -> dict:
    """The bundle's scores on held-out labelled texts at its own thresholds (texts it does not judge count
    as predicting no label): micro/macro/weighted-F1, subset accuracy, per-label F1, texts not judged."""
    import kdedge_run

    from kdedge.evaluate import scores

    clf = kdedge_run.load(bundle_dir, backend=backend)
    predictions = clf.predict(texts)
    index = {lab: j for j, lab in enumerate(clf.labels)}
    decided = np.zeros_like(y)
    for i, p in enumerate(predictions):
        for lab in p.labels:
            decided[i, index[lab]] = 1.0
    result = scores(y, decided, clf.labels)
    return {"texts": len(texts), "not_judged": int(sum(not p.judged for p in predictions)),
            "thresholds": "bundle", **result}
