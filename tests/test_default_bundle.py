"""Smoke test: the shipped default bundle (`models/default`, models/README.md) loads, verifies and predicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import kdedge_run

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"
TEXT = "最近一直咳嗽发烧，喉咙很痛，需要吃抗生素吗？"  # symptoms, a body part, a drug question


def _manifest() -> dict:
    return json.loads((DEFAULT / "manifest.json").read_text(encoding="utf-8"))


def test_shipped_default_bundle_predicts_a_chinese_text():
    m = _manifest()
    clf = kdedge_run.load(DEFAULT)
    prediction = clf.predict(TEXT)
    assert clf.labels == m["labels"] and list(prediction.probabilities) == m["labels"]
    assert all(0.0 <= p <= 1.0 for p in prediction.probabilities.values())
    assert "SYMP" in prediction.labels and prediction.probabilities["SYMP"] > 0.9
    assert not prediction.truncated and prediction.tokens == len(TEXT) and prediction.judged


def test_load_without_a_path_is_the_shipped_bundle():
    default, shipped = kdedge_run.load(), kdedge_run.load(DEFAULT)
    assert default.labels == shipped.labels
    assert default.predict(TEXT) == shipped.predict(TEXT)


def test_default_bundle_is_a_small_character_bundle_with_its_promised_figures():
    """Issue 18's bar: format 2, at most 2 MB, held-out test figures at least the 5-fold character TextCNN
    KD figures (80.9 / 73.0 micro / macro-F1) minus 2 points, and what each label means."""
    m = _manifest()
    assert m["format_version"] == 2 and m["segmenter"]["type"] == "char"
    assert sum(p.stat().st_size for p in DEFAULT.iterdir()) <= 2_000_000
    test = m["test_metrics"]
    assert test["texts"] >= 1000 and test["micro_f1"] >= 0.789 and test["macro_f1"] >= 0.710
    assert "instrument" in m["label_descriptions"]["INST"]
    assert "instrument" in (DEFAULT / "README.md").read_text(encoding="utf-8")


def test_default_bundle_passes_its_golden_vectors():
    m = _manifest()
    clf = kdedge_run.load(DEFAULT)
    lines = [json.loads(line) for line in (DEFAULT / "golden.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == m["golden"]["texts"] >= 20
    for line in lines:
        p = clf.predict(line["text"])
        probs = np.array([p.probabilities[lab] for lab in clf.labels])
        assert np.abs(probs - np.array(line["probabilities"])).max() <= m["golden"]["tolerance"]
        assert (p.labels, p.judged, p.truncated, p.tokens) == \
            (line["labels"], line["judged"], line["truncated"], line["tokens"])
