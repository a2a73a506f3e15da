"""Smoke test: the shipped default bundle (`models/default`, models/README.md) loads, verifies and predicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdedge_run

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"
TEXT = "最近一直咳嗽发烧，喉咙很痛，需要吃抗生素吗？"  # symptoms, a body part, a drug question


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_shipped_default_bundle_predicts_a_chinese_text(backend):
    labels = json.loads((DEFAULT / "manifest.json").read_text(encoding="utf-8"))["labels"]
    clf = kdedge_run.load(DEFAULT, backend=backend)
    prediction = clf.predict(TEXT)
    assert clf.labels == labels and list(prediction.probabilities) == labels
    assert all(0.0 <= p <= 1.0 for p in prediction.probabilities.values())
    assert "SYMP" in prediction.labels and prediction.probabilities["SYMP"] > 0.9
    assert not prediction.truncated and prediction.tokens > 5


def test_load_without_a_path_is_the_shipped_bundle():
    default, shipped = kdedge_run.load(), kdedge_run.load(DEFAULT)
    assert default.labels == shipped.labels
    assert default.predict(TEXT) == shipped.predict(TEXT)
