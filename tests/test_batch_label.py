"""Batch labelling: a bundle on Ray Data (`kdedge_run.batch`, `kdedge-run label`) on a real local Ray
cluster gives the runtime's own predictions; `kdedge-run predict --input --progress` shows its progress."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_corpus, require_extra, write_jsonl

ray = require_extra("ray", "ray")
pytestmark = pytest.mark.slow  # a local Ray instance


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    rows = [{"id": r["id"], "text": r["text"]} for r in make_corpus(120)] + [{"id": "empty", "text": ""}]
    return write_jsonl(tmp_path_factory.mktemp("label") / "texts.jsonl", rows)


def test_two_ray_workers_label_as_the_runtime_does(texts_file, tmp_path):
    import kdedge_run
    from kdedge_run.batch import label_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = label_dataset(texts_file, str(tmp_path / "out"), None, workers=2, batch_size=32)
    finally:
        ray.shutdown()
    rows = [json.loads(line) for path in sorted((tmp_path / "out").glob("*.json"))
            for line in path.read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(line) for line in open(texts_file, encoding="utf-8")]
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]  # every text once, in input order
    assert result["texts"] == len(inputs) and result["errors"] == 1
    assert rows[-1]["error"] and rows[-1]["labels"] == []
    clf = kdedge_run.load()
    assert result["labels_order"] == clf.labels
    expected = clf.predict([r["text"] for r in inputs[:-1]])
    for row, pred in zip(rows, expected):
        assert row["labels"] == pred.labels and row["error"] is None
        np.testing.assert_allclose(row["probabilities"], [pred.probabilities[n] for n in clf.labels], atol=1e-8)
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no temporary directory left


def test_label_errors_are_one_line(texts_file, tmp_path):
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"id": "a", "body": "文本"}])
    for args, message in ((["--input", texts_file, "--out", str(tmp_path)], "already exists"),
                          (["--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
                           "no such file"),
                          (["--input", no_text, "--out", str(tmp_path / "o2"), "--workers", "1"],
                           'JSON lines need a "text" field')):
        proc = subprocess.run([sys.executable, "-m", "kdedge_run", "label"] + args, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("kdedge-run: error: ")
        assert message in proc.stderr.strip().splitlines()[-1]


def test_predict_input_shows_progress(texts_file):
    proc = subprocess.run([sys.executable, "-m", "kdedge_run", "predict", "--input", texts_file, "--progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2  # the empty text is an error line; the others are labelled
    assert len(proc.stdout.splitlines()) == 121
    assert "121 texts (1 failed)" in proc.stderr and "texts/s, 100.0% of input" in proc.stderr
