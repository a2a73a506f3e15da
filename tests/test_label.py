"""`kdedge-run label` in this process (`--engine local`, no Ray) and `predict --input --progress`: one bad line
never stops a job, the output keeps the input's order and fields, a second run into the same --out is refused
and a killed run's partial output is cleared. The Ray engine: tests/test_label_ray.py."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from conftest import make_corpus, write_jsonl

CLI = [sys.executable, "-m", "kdedge_run"]
BIG = 20 << 20  # above the 16 MiB line limit


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    rows = [{"id": r["id"], "text": r["text"]} for r in make_corpus(120)] + [{"id": "empty", "text": ""}]
    return write_jsonl(tmp_path_factory.mktemp("label") / "texts.jsonl", rows)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def hostile_input(path) -> list[bytes]:
    """Lines every streaming command must survive, and which of them must be error records (1-based)."""
    good = [json.dumps({"id": f"g{i}", "text": t}, ensure_ascii=False).encode()
            for i, t in enumerate(["头痛发烧三天", "血压高要吃什么药", "咳嗽", "医院几点开门"])]
    lines = [b"\xef\xbb\xbf" + good[0],                       # 1 a BOM before the first line: read as JSON
             good[1],
             "股市大涨".encode("gbk"),                          # 3 GBK: not UTF-8
             b"\xff\xfe bad utf-8",                             # 4
             json.dumps({"id": "no-text", "body": "x"}).encode(),  # 5
             b'{"id": "big", "text": "' + b"a" * BIG + b'"}',   # 6 a JSON line over 16 MiB
             "长".encode() * (BIG // 3),                         # 7 a plain line over 16 MiB: cut and labelled
             good[2], good[3],
             '{"id": "last", "text": "未完'.encode()]            # 10 truncated last line, no newline
    path.write_bytes(b"\n".join(lines))
    return lines


def test_label_local_turns_exactly_the_bad_lines_into_error_records(tmp_path):
    import kdedge_run

    hostile_input(tmp_path / "in.jsonl")
    peak = tmp_path / "peak_rss_kb"  # the label process's own peak RSS, measured by a parent with no other child
    parent = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
              "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
              "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", parent, str(peak)] + CLI + [
        "label", "--engine", "local", "--input", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("10 lines labelled (5 errors) into " + str(tmp_path / "out"))
    rows = _rows(tmp_path / "out" / "in.jsonl")
    assert len(rows) == 10
    assert [r.get("line") for r in rows if r["error"]] == [3, 4, 5, 6, 10]
    assert rows[4]["id"] == "no-text" and "text" in rows[4]["error"]
    assert rows[5]["error"].startswith("JSON line longer than")
    clf = kdedge_run.load()
    for row in (rows[0], rows[1], rows[7], rows[8]):
        expected = clf.predict(row["text"])
        assert row["labels"] == expected.labels and row["error"] is None and "line" not in row
        assert row["probabilities"] == pytest.approx([expected.probabilities[n] for n in clf.labels], abs=1e-6)
    assert [rows[i]["id"] for i in (0, 1, 7, 8)] == ["g0", "g1", "g2", "g3"]
    assert rows[6]["error"] is None and len(rows[6]["text"]) < BIG // 3  # the cut plain line
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out", "peak_rss_kb"]  # no partial directory left
    assert int(peak.read_text()) < 200 * 1024  # bounded by the 16 MiB line limit, not the 20 MiB lines


def test_a_second_label_run_into_the_same_out_is_refused_and_a_killed_runs_leftovers_are_cleared(texts_file,
                                                                                                 tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "texts.jsonl").write_text("half a line", encoding="utf-8")  # what a kill -9 leaves
    holder = os.open(partial / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a run that is still writing
    args = CLI + ["label", "--engine", "local", "--input", texts_file, "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "another kdedge-run label is writing it" in proc.stderr
    assert (partial / "texts.jsonl").read_text(encoding="utf-8") == "half a line"  # the other run's work kept
    os.close(holder)  # that run was killed: its lock is gone
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cleared the partial output of an earlier run" in proc.stderr
    assert not partial.exists() and sorted(os.listdir(out)) == ["texts.jsonl"]
    assert len(_rows(out / "texts.jsonl")) == 121
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"kdedge-run: error: {out}: already exists; choose another --out"


def test_label_input_errors_are_one_line(texts_file, tmp_path):
    (tmp_path / "dir").mkdir()
    for name in ("a", "a.jsonl"):
        (tmp_path / "dir" / name).write_text("文本\n", encoding="utf-8")
    for args, message in ((["--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")], "no such file"),
                          (["--input", str(tmp_path / "dir"), "--out", str(tmp_path / "o")], "would both be written"),
                          (["--input", texts_file, "--out", str(tmp_path / "o"), "--model", str(tmp_path)],
                           "manifest.json")):
        proc = subprocess.run(CLI + ["label", "--engine", "local"] + args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().startswith("kdedge-run: error: ") and len(proc.stderr.strip().splitlines()) == 1
        assert message in proc.stderr
        assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()


def test_predict_input_shows_progress(texts_file):
    proc = subprocess.run(CLI + ["predict", "--input", texts_file, "--progress"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2  # the empty text is an error line; the others are labelled
    assert len(proc.stdout.splitlines()) == 121
    assert "121 texts (1 failed)" in proc.stderr and "texts/s, 100.0% of input" in proc.stderr
