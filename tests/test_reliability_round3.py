"""Reliability round 3 (issue 21, the parts round 2 left open): training data, label names, hostile run
directories, unclear training errors, broken pipes and Ctrl-C during export.

Each case is listed in docs/reliability.md ("Round 3"). Real files and real processes; no mocks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_corpus, write_jsonl
from kdedge.cli import main as cli
from kdedge.data import DataError, load_dataset, read_label_file

KDEDGE = [sys.executable, "-m", "kdedge.cli"]
GOOD = [{"id": "a", "text": "足球比赛很精彩", "labels": ["体育"]}, {"id": "b", "text": "股票市场上涨", "labels": ["经济"]}]
LAST = {"id": "z", "text": "银行利率", "labels": ["经济"]}


def _lines(path: Path, middle: str) -> Path:
    """Two good lines, `middle` as line 3, one good line."""
    body = [json.dumps(r, ensure_ascii=False) for r in GOOD] + [middle, json.dumps(LAST, ensure_ascii=False)]
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    return path


def _stats(args) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["data", "stats", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


# ===================================================================================================
# Defect 2 (training side): hostile JSON lines in training data
# ===================================================================================================

HOSTILE_LINES = {  # line 3 → words of the message
    "5000-digit id": ('{"id": %s, "text": "体育新闻", "labels": ["体育"]}' % ("9" * 5000), "integer of 5,000 digits"),
    "nested 100000 [ in id": ('{"id": %s, "text": "体育新闻", "labels": ["体育"]}' % ("[" * 100_000), "nested too deeply"),
    "nested 100000 [ in text": ('{"text": %s, "labels": ["体育"]}' % ("[" * 100_000), "nested too deeply"),
    "nested 100000 {": ("{" * 100_000, "malformed JSON"),
    "id NaN": ('{"id": NaN, "text": "体育新闻", "labels": ["体育"]}', "NaN is not a JSON number"),
    "id Infinity": ('{"id": Infinity, "text": "体育新闻", "labels": ["体育"]}', "Infinity is not a JSON number"),
    "id -Infinity": ('{"id": -Infinity, "text": "体育新闻", "labels": ["体育"]}', "-Infinity is not a JSON number"),
    "id -1e999": ('{"id": -1e999, "text": "体育新闻", "labels": ["体育"]}', "number -1e999 is out of range"),
    "other field 1e400": ('{"text": "体育新闻", "labels": ["体育"], "w": [1e400]}', "number 1e400 is out of range"),
    "id a list": ('{"id": [1], "text": "体育新闻", "labels": ["体育"]}', "field 'id' must be a string or a number"),
    "text with a lone surrogate": ('{"text": "体育\\ud800新闻", "labels": ["体育"]}', "field 'text' holds a lone surrogate"),
}


@pytest.mark.parametrize("case", list(HOSTILE_LINES))
def test_hostile_json_lines_in_training_data_name_file_and_line(tmp_path, case):
    line, words = HOSTILE_LINES[case]
    path = _lines(tmp_path / "d.jsonl", line)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert str(err.value).startswith(f"{path}:3: ") and words in str(err.value), str(err.value)
    ds = load_dataset(path, skip_invalid=True)
    assert ds.skipped == 1 and ds.ids == ["a", "b", "z"]
    rc, out, err_text = _stats([str(path)])
    assert rc == 2 and out == "" and err_text.startswith(f"kdedge: error: {path}:3: ") and words in err_text
    rc, out, _ = _stats([str(path), "--skip-invalid"])
    assert rc == 0 and "3 texts" in out and "1 invalid rows skipped" in out


def test_a_4000_digit_id_is_kept_exactly(tmp_path):
    path = _lines(tmp_path / "d.jsonl", '{"id": %s, "text": "体育新闻", "labels": ["体育"]}' % ("7" * 4000))
    assert load_dataset(path).ids[2] == "7" * 4000


def test_train_process_reports_the_hostile_line_without_traceback(tmp_path):
    rows = make_corpus(40)
    data = tmp_path / "data.jsonl"
    write_jsonl(data, rows)
    with open(data, "a", encoding="utf-8") as f:
        f.write('{"id": %s, "text": "体育新闻", "labels": ["体育"]}\n' % ("[" * 100_000))
    proc = subprocess.run(KDEDGE + ["train", "--data", str(data), "--out", str(tmp_path / "run"), "-q"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"kdedge: error: {data}:41: malformed JSON (nested too deeply)"
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_skip_invalid_skips_hostile_lines_and_counts_them(tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, make_corpus(60))
    with open(data, "a", encoding="utf-8") as f:
        for line, _ in list(HOSTILE_LINES.values())[:8]:
            f.write(line + "\n")
    proc = subprocess.run(KDEDGE + ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--skip-invalid",
                                    "--mode", "student", "--epochs", "1", "-q"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["texts"] == 60 and config["data"]["skipped"] == 8


# ===================================================================================================
# Defect 7: unprintable label names are refused at training time
# ===================================================================================================

UNPRINTABLE = {"newline": "体\n育", "tab": "体\t育", "NUL": "体\x00育", "ESC": "\x1b[31m体育", "U+202E": "sp\u202eorts",
               "zero-width space": "体\u200b育", "line separator": "体\u2028育", "unassigned": "体\U000e0fff",
               "private use": "体\ue000", "lone surrogate": "体\udfff", "DEL": "体\x7f", "C1 NEL": "体\x85育"}


@pytest.mark.parametrize("case", list(UNPRINTABLE))
def test_unprintable_label_names_are_refused_in_data_and_label_files(tmp_path, case):
    name = UNPRINTABLE[case]
    path = _lines(tmp_path / "d.jsonl", json.dumps({"text": "体育新闻", "labels": ["体育", name]}))
    with pytest.raises(DataError) as err:
        load_dataset(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: field 'labels' label ") and "unprintable character" in message
    assert message.isprintable(), message  # the message itself shows the name escaped
    assert load_dataset(path, skip_invalid=True).skipped == 1
    if "\n" in name:  # a label file has one name a line
        return
    labels = tmp_path / "labels.txt"
    labels.write_bytes(f"体育\n经济\n{name}\n".encode("utf-8", "surrogatepass"))
    with pytest.raises(DataError) as err:
        read_label_file(labels)
    assert (str(err.value).startswith(f"{labels}:3: label ") or "cannot read label file" in str(err.value))
    rc, out, err_text = _stats([str(path)])
    assert rc == 2 and err_text.startswith(f"kdedge: error: {path}:3: field 'labels'")


def test_printable_label_names_still_load(tmp_path):
    names = ["体育", "a|b", "$\\foo{$", "x y", "全角　空格", "emoji😀", "😀", "a,b"]
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"text": f"文本{i}", "labels": [n]} for i, n in enumerate(names)])
    assert sorted(load_dataset(path).label_names) == sorted(names)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n", encoding="utf-8")
    assert read_label_file(labels) == names
