"""`kdedge-run label` on a real local Ray instance (`--engine ray`): two actors give the runtime's own
predictions in input order, and exactly what the local engine writes, bad lines included."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_corpus, require_extra, write_jsonl
from test_label import hostile_input

ray = require_extra("ray", "ray")
pytestmark = pytest.mark.slow  # a local Ray instance


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    rows = [{"id": r["id"], "text": r["text"]} for r in make_corpus(120)] + [{"id": "empty", "text": ""}]
    return write_jsonl(tmp_path_factory.mktemp("label") / "texts.jsonl", rows)


def test_two_ray_workers_label_as_the_runtime_does(texts_file, tmp_path):
    import kdedge_run
    from kdedge_run.batch import label_dataset

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = label_dataset(texts_file, str(tmp_path / "out"), None, workers=2)
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (tmp_path / "out" / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(line) for line in open(texts_file, encoding="utf-8")]
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]  # every text once, in input order
    assert result["texts"] == len(inputs) and result["errors"] == 1
    assert rows[-1]["error"] == "empty text" and rows[-1]["labels"] == [] and rows[-1]["line"] == len(inputs)
    clf = kdedge_run.load()
    assert result["labels_order"] == clf.labels
    expected = clf.predict([r["text"] for r in inputs[:-1]])
    for row, pred in zip(rows, expected):
        assert row["labels"] == pred.labels and row["error"] is None
        np.testing.assert_allclose(row["probabilities"], [pred.probabilities[n] for n in clf.labels], atol=1e-8)
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no partial directory left


def test_ray_engine_writes_what_the_local_engine_writes_bad_lines_included(tmp_path):
    hostile_input(tmp_path / "in.jsonl")
    for engine in ("local", "ray"):
        proc = subprocess.run([sys.executable, "-m", "kdedge_run", "label", "--engine", engine, "--workers", "2",
                               "--input", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / engine)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("10 lines labelled (5 errors)")
    local = (tmp_path / "local" / "in.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "ray" / "in.jsonl").read_text(encoding="utf-8") == local


def test_an_address_where_nothing_answers_is_one_line_at_once(texts_file, tmp_path):
    """Ray keeps retrying a dead address for minutes; kdedge-run probes a host:port first (issue 31)."""
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kdedge_run", "label", "--input", texts_file, "--out",
                           str(tmp_path / "out"), "--address", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=120)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "kdedge-run: error: cannot join the Ray cluster at 127.0.0.1:1: nothing answers there (Connection refused); "
        "is `ray start --head` running there and reachable?"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial output left
