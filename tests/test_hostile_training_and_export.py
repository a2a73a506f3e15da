"""Hostile training inputs, run directories and exports (reliability round 3, issue 21, the parts round 2 left
open): training data, label names, hostile run directories, unclear training errors, broken pipes and Ctrl-C
during export.

Each case is listed in docs/reliability.md ("Round 3"). Real files and real processes; no mocks.
"""
from __future__ import annotations

import json
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
from kdedge.text.data import DataError, load_dataset, read_label_file

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


# ===================================================================================================
# Defect 8: hand-edited or hostile run directories in `kdedge export`
# ===================================================================================================

RUN_LABELS = ["体育", "经济"]


def _fake_run(root: Path) -> Path:
    """A run directory as `kdedge train` writes it, with a placeholder model file: everything export reads
    before it opens the Keras model."""
    import numpy as np

    from kdedge.config import TrainConfig

    (root / "predictions").mkdir(parents=True)
    config = {"kdedge_version": "0", "config": TrainConfig().to_dict(), "labels": RUN_LABELS,
              "input": {"kind": "sequence", "max_len": 16, "pad_id": 0, "oov_id": 1, "padding": "post",
                        "truncation": "post"},
              "segmenter": {"type": "char", "convert": "none", "hmm": True, "dictionary": None, "char_map": None},
              "data": {"path": "data.jsonl", "sha256": "0", "texts": 4, "skipped": 0}}
    (root / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    (root / "metrics.json").write_text(json.dumps({"texts": {"train": 2, "val": 2}, "selected": {"mode": "kd"}}))
    (root / "vocab.txt").write_text("<pad>\n<oov>\n足\n球\n", encoding="utf-8")
    rows = [{"id": "a", "text": "足球", "labels": ["体育"], "tokens": ["足", "球"]},
            {"id": "b", "text": "股票", "labels": ["经济"], "tokens": ["股", "票"]}]
    (root / "validation.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                           encoding="utf-8")
    np.save(root / "predictions" / "val_kd.npy", np.array([[2.0, -2.0], [-2.0, 2.0]]))
    (root / "kd.keras").write_bytes(b"not a model")
    return root


def _edit_json(path: Path, change):
    value = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(value), ensure_ascii=False), encoding="utf-8")


def _set(keys: str, value):
    def change(obj):
        *parents, last = keys.split(".")
        target = obj
        for k in parents:
            target = target[k]
        target[last] = value
        return obj
    return change


def _npy_header_claiming(shape) -> bytes:
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 16


HOSTILE_RUNS = {  # file, how it is changed, words of the message (which starts with the file)
    "config a list": ("config.json", lambda p: p.write_text("[1, 2]"), "must hold a JSON object, not list"),
    "config nested 100000": ("config.json", lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
                             "nested too deeply"),
    "config 5000-digit": ("config.json", lambda p: p.write_text('{"config": %s}' % ("9" * 5000)), "5,000 digits"),
    "config NaN": ("config.json", lambda p: p.write_text('{"config": NaN}'), "NaN is not a JSON number"),
    "config not UTF-8": ("config.json", lambda p: p.write_bytes(b'{"a": "\xff"}'), "cannot read"),
    "config.config a string": ("config.json", lambda p: _edit_json(p, _set("config", "x")), "'config' must be"),
    "arch unknown": ("config.json", lambda p: _edit_json(p, _set("config.arch", "bert")), "'config.arch'"),
    "arch a list": ("config.json", lambda p: _edit_json(p, _set("config.arch", ["textcnn"])), "'config.arch'"),
    "dropout 10**400": ("config.json", lambda p: p.write_text(p.read_text().replace('"dropout": 0.5', '"dropout": 1'
                                                                                  + "0" * 400)), "'config.dropout'"),
    "threshold_min_support a string": ("config.json", lambda p: _edit_json(
        p, _set("config.threshold_min_support", "3")), "'config.threshold_min_support'"),
    "arch_params filters -1": ("config.json", lambda p: _edit_json(p, _set("config.arch_params", {"filters": -1})),
                               "'config.arch_params': option arch_params (config file only): filters must be"),
    "labels a string": ("config.json", lambda p: _edit_json(p, _set("labels", "体育")), "'labels' must be"),
    "labels with an int": ("config.json", lambda p: _edit_json(p, _set("labels", ["体育", 3])), "'labels[1]'"),
    "labels twice": ("config.json", lambda p: _edit_json(p, _set("labels", ["体育", "体育"])), "names a label twice"),
    "label with a newline": ("config.json", lambda p: _edit_json(p, _set("labels", ["体育", "经\n济"])),
                             "unprintable character"),
    "input a list": ("config.json", lambda p: _edit_json(p, _set("input", [16])), "'input' must be"),
    "max_len 10**9": ("config.json", lambda p: _edit_json(p, _set("input.max_len", 10**9)), "'input.max_len'"),
    "max_len a string": ("config.json", lambda p: _edit_json(p, _set("input.max_len", "16")), "'input.max_len'"),
    "input kind of another arch": ("config.json", lambda p: _edit_json(p, _set("input.kind", "hierarchical")),
                                   "'input.kind'"),
    "segmenter a list": ("config.json", lambda p: _edit_json(p, _set("segmenter", ["char"])), "'segmenter' must be"),
    "segmenter type unknown": ("config.json", lambda p: _edit_json(p, _set("segmenter.type", 5)), "'segmenter.type'"),
    "dictionary outside the run": ("config.json", lambda p: _edit_json(p, _set("segmenter.dictionary",
                                                                               "../../etc/passwd")),
                                   "'segmenter.dictionary' must be null or a relative path inside the run"),
    "dictionary absolute": ("config.json", lambda p: _edit_json(p, _set("segmenter.dictionary", "/etc/passwd")),
                            "'segmenter.dictionary'"),
    "data a list": ("config.json", lambda p: _edit_json(p, _set("data", [1])), "'data' must be"),
    "metrics a list": ("metrics.json", lambda p: p.write_text("[]"), "must hold a JSON object, not list"),
    "metrics nested": ("metrics.json", lambda p: p.write_text('{"a": ' + "[" * 100_000 + "}"), "nested too deeply"),
    "metrics texts a list": ("metrics.json", lambda p: p.write_text('{"texts": [1]}'), "'texts' must be"),
    "validation text an int": ("validation.jsonl", lambda p: p.write_text(
        '{"text": 5, "labels": ["体育"], "tokens": ["5"]}\n'), ":1: bad record: field 'text' must be"),
    "validation tokens a string": ("validation.jsonl", lambda p: p.write_text(
        '{"text": "足球", "labels": ["体育"], "tokens": "足球"}\n'), ":1: bad record: field 'tokens'"),
    "validation labels an int": ("validation.jsonl", lambda p: p.write_text(
        '{"text": "足球", "labels": 1, "tokens": ["足"]}\n'), ":1: bad record: field 'labels'"),
    "validation unknown label": ("validation.jsonl", lambda p: p.write_text(
        '{"text": "足球", "labels": ["健康"], "tokens": ["足"]}\n'), "not one of the run's labels"),
    "validation a list": ("validation.jsonl", lambda p: p.write_text("[1]\n"), ":1: bad record: must be a JSON object"),
    "validation nested": ("validation.jsonl", lambda p: p.write_text("[" * 100_000 + "\n"), ":1: bad record: nested"),
    "validation NaN id": ("validation.jsonl", lambda p: p.write_text(
        '{"id": NaN, "text": "足球", "labels": ["体育"], "tokens": ["足"]}\n'), ":1: bad record: NaN"),
    "validation invalid UTF-8": ("validation.jsonl", lambda p: p.write_bytes(b'{"text": "\xff"}\n'),
                                 ":1: bad record: 'utf-8' codec"),
    "logits NaN": ("predictions/val_kd.npy", lambda p: __import__("numpy").save(
        p, __import__("numpy").array([[float("nan"), 0.0], [0.0, 0.0]])), "NaN or infinite"),
    "logits strings": ("predictions/val_kd.npy", lambda p: __import__("numpy").save(
        p, __import__("numpy").array([["a", "b"], ["c", "d"]])), "not a number type"),
    "logits header claims 10**12": ("predictions/val_kd.npy", lambda p: p.write_bytes(
        _npy_header_claiming((1_000_000, 1_000_000))), "cannot read"),
    "vocab not UTF-8": ("vocab.txt", lambda p: p.write_bytes(b"<pad>\n<oov>\n\xff\n"), "cannot read"),
}


@pytest.mark.parametrize("case", list(HOSTILE_RUNS))
def test_hostile_run_directories_are_an_export_error_naming_the_file(tmp_path, case):
    from kdedge_export import ExportError
    from kdedge_export.run import load_run

    run = _fake_run(tmp_path / "run")
    load_run(run)  # the untouched fake run reads
    rel, change, words = HOSTILE_RUNS[case]
    change(run / rel)
    with pytest.raises(ExportError) as err:
        load_run(run)
    message = str(err.value)
    assert message.startswith(str(run / rel)) and words in message, message
    assert len(message) < 600 and message.isprintable()


THRESHOLD_FILES = {
    "401-digit integer": ('{"体育": %s}' % ("9" * 401), "must be a number in [0, 1], got 9999"),
    "5000-digit integer": ('{"体育": %s}' % ("9" * 5000), "5,000 digits"),
    "NaN": ('{"体育": NaN}', "NaN is not a JSON number"),
    "1e999": ('{"体育": 1e999}', "out of range"),
    "nested": ("[" * 100_000, "nested too deeply"),
    "a list": ("[0.5]", "must be a JSON object"),
    "a string value": ('{"体育": "0.5"}', "must be a number in [0, 1]"),
    "true": ('{"体育": true}', "must be a number in [0, 1]"),
}


@pytest.mark.parametrize("case", list(THRESHOLD_FILES))
def test_hostile_thresholds_files_are_an_export_error(tmp_path, case):
    from kdedge_export import ExportError, export_run

    run = _fake_run(tmp_path / "run")
    text, words = THRESHOLD_FILES[case]
    (tmp_path / "t.json").write_text(text, encoding="utf-8")
    with pytest.raises(ExportError) as err:
        export_run(run, tmp_path / "bundle", thresholds_file=tmp_path / "t.json")
    assert str(err.value).startswith(f"{tmp_path / 't.json'}: ") and words in str(err.value), str(err.value)
    assert len(str(err.value)) < 600 and not (tmp_path / "bundle").exists()


def test_hostile_label_descriptions_file_is_an_error(tmp_path):
    from kdedge_export import ExportError, export_run

    run = _fake_run(tmp_path / "run")
    (tmp_path / "d.json").write_text('{"体育": "x", "n": %s}' % ("9" * 5000), encoding="utf-8")
    with pytest.raises(ExportError, match="5,000 digits"):
        export_run(run, tmp_path / "bundle", label_descriptions=tmp_path / "d.json")


def test_export_command_reports_a_hostile_run_without_traceback(tmp_path):
    run = _fake_run(tmp_path / "run")
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = subprocess.run(KDEDGE + ["export", str(run), "--out", str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"kdedge: error: {run / 'config.json'}: not valid JSON: "
                                                     "nested too deeply")
    (run / "config.json").unlink()
    _fake_run(tmp_path / "run2")
    (tmp_path / "t.json").write_text('{"体育": %s}' % ("9" * 401))
    proc = subprocess.run(KDEDGE + ["export", str(tmp_path / "run2"), "--out", str(tmp_path / "bundle"),
                                    "--thresholds", str(tmp_path / "t.json")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "must be a number in [0, 1]" in proc.stderr and not (tmp_path / "bundle").exists()


# ===================================================================================================
# Defect 9: clear, up-front training errors that say what to change
# ===================================================================================================

def _label_rows(n_labels: int, per_label: int) -> list[dict]:
    return [{"id": f"t{i}", "text": f"第{i}条新闻的文本", "labels": [f"L{i % n_labels}"]}
            for i in range(n_labels * per_label)]


TRAIN_REFUSALS = {  # rows → words of the message
    "one label": (lambda: [{"text": f"体育新闻{i}", "labels": ["体育"]} for i in range(60)],
                  "only the label '体育' has texts; a multi-label classifier needs texts of at least 2 labels"),
    "one label, some texts without": (lambda: [{"text": f"新闻{i}", "labels": ["体育"] if i % 2 else []}
                                               for i in range(60)], "only the label '体育' has texts"),
    "no label at all": (lambda: [{"text": f"新闻{i}", "labels": []} for i in range(20)], "no text has a label"),
    "5,000 labels x 1 text": (lambda: _label_rows(5000, 1), "5,000 of 5,000 labels have fewer than 10 texts"),
    "1,000 labels x 5 texts": (lambda: _label_rows(1000, 5), "1,000 of 1,000 labels have fewer than 10 texts"),
}


@pytest.mark.parametrize("case", list(TRAIN_REFUSALS))
def test_label_spaces_training_cannot_learn_are_refused_up_front(tmp_path, case):
    rows, words = TRAIN_REFUSALS[case]
    data = write_jsonl(tmp_path / "data.jsonl", rows())
    start = time.monotonic()
    proc = subprocess.run(KDEDGE + ["train", "--data", data, "--out", str(tmp_path / "run"), "-q"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kdedge: error: {data}: field 'labels' ") and words in last, last
    assert "add texts" in last.lower() and len(last) < 600
    assert time.monotonic() - start < 120 and not (tmp_path / "run").exists()


def test_a_few_rare_labels_are_still_trainable(tmp_path):
    from kdedge.text.data import check_trainable

    rows = make_corpus(60) + [{"text": "今天罕见的彗星出现了。", "labels": ["罕见"]}]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    check_trainable(ds, "d.jsonl", 0.1)  # 1 rare label of 4: accepted (it keeps the threshold 0.5)
    check_trainable(load_dataset(write_jsonl(tmp_path / "e.jsonl", _label_rows(1000, 5))), "e.jsonl", 0.5)
    with pytest.raises(DataError, match="with --val-split 0.25 a label needs at least 4"):
        check_trainable(load_dataset(write_jsonl(tmp_path / "f.jsonl", _label_rows(10, 3))), "f.jsonl", 0.25)


OPTION_REFUSALS = [  # already refused by option checking before this round (kept as regression tests) ...
    (["--epochs", "0"], "option epochs (--epochs) must be at least 1, not 0"),
    (["--learning-rate", "nan"], "option learning_rate (--learning-rate) must be greater than 0 (and finite), not nan"),
    (["--max-len", "0"], "option max_len (--max-len) must be at least 1"),
    (["--batch-size", "-5"], "option batch_size (--batch-size) must be at least 1"),
    (["--dropout", "1.5"], "option dropout (--dropout) must be between 0 and 1 (0 <= dropout < 1), not 1.5"),
    # ... and new: sizes have an upper end (a typo allocated GBs before it failed)
    (["--max-len", "1000000000"], "option max_len (--max-len) must be at least 1 and at most 65536, not 1000000000"),
    (["--embedding-dim", "1000000"], "option embedding_dim (--embedding-dim) must be at least 1 and at most 4096"),
    (["--batch-size", "100000000"], "option batch_size (--batch-size) must be at least 1 and at most 65536"),
    (["--max-vocab", "1000000000000"], "option max_vocab (--max-vocab) must be at least 3 and at most 67108864"),
    (["--max-sentences", "100000"], "option max_sentences (--max-sentences) must be at least 1 and at most 4096"),
]


@pytest.mark.parametrize("args,message", OPTION_REFUSALS, ids=[" ".join(a) for a, _ in OPTION_REFUSALS])
def test_bad_training_options_are_refused_naming_the_option(tmp_path, args, message):
    data = write_jsonl(tmp_path / "data.jsonl", make_corpus(30))
    result = CliRunner().invoke(cli, ["train", "--data", data, "--out", str(tmp_path / "run"), "-q", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == f"kdedge: error: {message}" or message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


# ===================================================================================================
# Defect 10: `kdedge data stats | head -1`; Ctrl-C during `kdedge export`
# ===================================================================================================

def test_data_stats_into_a_closed_pipe_ends_quietly(tmp_path):
    """Already held on this round's main (click handles EPIPE); kept as a regression test."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": f"新闻{i}", "labels": [f"标签{i}", "共同"]} for i in range(3000)])
    for extra in ([], ["--json"]):
        proc = subprocess.Popen(KDEDGE + ["data", "stats", data, *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout.readline()
        proc.stdout.close()  # like `| head -1`
        assert proc.wait(timeout=120) in (0, 1)
        assert proc.stderr.read() == b""


# A command wrapped like kdedge's own (kdedge.cli.user_errors), committing a directory with kdedge.files;
# the Ctrl-C arrives where a library would swallow it or turn it into another error.
INTERRUPTED_COMMAND = """
import os, signal, sys, time, weakref
import click
from kdedge import files
from kdedge.cli import user_errors

def ctrl_c_now():
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs between bytecodes, here
        pass

@click.command()
@click.argument("out")
@click.argument("how")
@user_errors
def command(out, how):
    tmp = files.staging_dir(files.Path(out), False)
    (tmp / "config.json").write_text("{}")
    if how == "weakref":  # TensorFlow and tf2onnx drop many weakly referenced objects
        class Thing:
            pass
        thing = Thing()
        keep = weakref.ref(thing, lambda ref: ctrl_c_now())
        del thing
    elif how == "converted":  # a library that turns the interrupt into its own error
        try:
            ctrl_c_now()
        except BaseException:
            raise TypeError("Cannot find maximum value of <dtype: 'int32'>.") from None
    elif how == "half_built":  # an object the interrupt left half-built fails in its finalizer (TensorFlow's ApiDefMap)
        class Handle:
            def __init__(self):
                ctrl_c_now()
                self.handle = 1

            def __del__(self):
                del self.handle
        Handle()
    elif how == "held":  # Ctrl-C held down or pressed again while the command is already stopping
        import threading

        def keep_pressing():
            for _ in range(400):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.002)
        threading.Thread(target=keep_pressing, daemon=True).start()
        time.sleep(30)
    elif how == "swallowed":  # a bare except that goes on working
        try:
            ctrl_c_now()
        except BaseException:
            pass
        time.sleep(60)
    files.commit_dir(tmp, files.Path(out))
    print("published")

command()
"""


@pytest.mark.parametrize("how", ["weakref", "converted", "half_built", "held"])
def test_ctrl_c_that_a_library_swallows_or_converts_publishes_nothing(tmp_path, how):
    script = tmp_path / "cmd.py"
    script.write_text(INTERRUPTED_COMMAND, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), how], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == "kdedge: interrupted; nothing was written under the final name"
    assert "Traceback" not in proc.stderr and "published" not in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_swallowed_for_good_still_ends_the_process(tmp_path):
    script = tmp_path / "cmd.py"
    script.write_text(INTERRUPTED_COMMAND, encoding="utf-8")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "swallowed"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 130 and time.monotonic() - start < 40, proc.stderr
    assert "interrupted; nothing was written" in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_a_real_export_publishes_nothing_or_all(tmp_path):
    """SIGINT at random moments of `kdedge export` (TensorFlow, tf2onnx, TFLite and onnxruntime loaded):
    either exit 130 with nothing under the final name, or exit 0 with a bundle committed before the signal."""
    import random

    data = write_jsonl(tmp_path / "d.jsonl", make_corpus(120, seed=3))
    subprocess.run(KDEDGE + ["train", "--data", data, "--out", str(tmp_path / "run"), "--segmenter", "jieba",
                             "--embedding-dim", "8", "--w2v-epochs", "1", "--max-len", "24", "--epochs", "2",
                             "--batch-size", "16", "-q"], check=True, capture_output=True, timeout=900)
    export = KDEDGE + ["export", str(tmp_path / "run"), "--format", "all", "--quantize", "int8"]
    start = time.monotonic()
    subprocess.run(export + ["--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)
    whole = time.monotonic() - start
    rng = random.Random(0)
    outcomes = []
    for i in range(12):
        out = tmp_path / f"b{i}"
        proc = subprocess.Popen(export + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.45, 1.0) * whole)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        stderr = stderr.decode()
        assert "Traceback" not in stderr, stderr[-3000:]
        if proc.returncode == 130:
            assert not out.exists() and "interrupted; nothing was written" in stderr
        else:
            assert proc.returncode == 0 and b"bundle written to" in stdout, (proc.returncode, stderr[-3000:])
            assert out.stat().st_ctime <= sent  # committed before the signal
        outcomes.append(proc.returncode)
    assert 130 in outcomes, outcomes
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".b")]  # staging cleaned up


# ===================================================================================================
# Found by the fuzz harness's new targets (bench/fuzz_runtime.py --bundle-mutations / --training-files)
# ===================================================================================================

@pytest.fixture(scope="module")
def jieba_bundle(tmp_path_factory):
    from runtime_bundle_factory import build_bundle

    return build_bundle(tmp_path_factory.mktemp("round3") / "b", arch="textcnn", segmenter="jieba", t2s=True,
                        dtype="int8", formats=("onnx",)).path


def _bundle_copy(src: Path, dest: Path) -> Path:
    return Path(shutil.copytree(src, dest))


def test_npy_header_that_numpy_cannot_tokenize_is_a_bundle_error(jieba_bundle, tmp_path):
    from runtime_bundle_factory import read_manifest, write_manifest

    from kdedge_run.bundle import BundleError, load_bundle

    bundle = _bundle_copy(jieba_bundle, tmp_path / "b")
    rel = read_manifest(bundle)["embeddings"]["file"]
    header = b"{'descr': '|i1', 'fortran_order': False, 'shape': (56, 8), "  # the brace never closed
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    (bundle / rel).write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 448)
    write_manifest(bundle, read_manifest(bundle))  # checksums updated: the content itself must be refused
    with pytest.raises(BundleError, match=f"^{rel}: cannot read: "):  # was: tokenize.TokenError
        load_bundle(bundle)


@pytest.mark.parametrize("key,value,message", [
    ("embeddings.dtype", ["int8"], "manifest.json: embeddings.dtype ['int8'] unknown"),  # was: TypeError
    ("format_version", -10**4000, "manifest.json: invalid format_version -"),             # was: 4,000 characters
])
def test_hostile_manifest_values_found_by_fuzzing(jieba_bundle, tmp_path, key, value, message):
    from runtime_bundle_factory import read_manifest

    from kdedge_run.bundle import BundleError, load_bundle

    bundle = _bundle_copy(jieba_bundle, tmp_path / "b")
    manifest = read_manifest(bundle)
    parent = manifest
    *parents, last = key.split(".")
    for k in parents:
        parent = parent[k]
    parent[last] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    assert str(err.value).startswith(message) and len(str(err.value)) < 300, str(err.value)[:500]


def test_training_files_found_by_fuzzing(tmp_path):
    from kdedge.text.data import describe

    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,labels" + "a" * 200_000 + "\n足球,体育\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: unreadable header: field larger than field limit"):  # was: csv.Error
        load_dataset(csv_path)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "没有标签的文本", "labels": []}])
    stats = describe(load_dataset(path))  # no label at all
    json.dumps(stats, allow_nan=False)  # `kdedge data stats --json` printed "density": NaN
    assert stats["density"] == 0.0
    long_name = "标" * 100_000
    path = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "text": "文本", "labels": [long_name + "\x1b"]},
                                            {"id": "a", "text": "文本", "labels": ["x"]}])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert len(str(err.value)) < 400 and "100,001 characters" in str(err.value)
    labels = tmp_path / "labels.txt"
    labels.write_text("体育\n" + long_name + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(write_jsonl(tmp_path / "f.jsonl", [{"text": "文本", "labels": ["y" * 100_000]}]), labels)
    assert len(str(err.value)) < 400 and "unknown label" in str(err.value)


def test_cv_refuses_label_spaces_it_cannot_learn_before_any_fold(tmp_path):
    """kdedge cv runs the same up-front check as train, for a fold's share of the texts."""
    from kdedge.config import make_config
    from kdedge.crossval.cv import run_cv

    data = write_jsonl(tmp_path / "d.jsonl", _label_rows(200, 5))
    with pytest.raises(DataError, match="with --val-split 0.1 and 5 folds a label needs at least 13"):
        run_cv(make_config({}), data, str(tmp_path / "cv"), folds=5, progress=False)
    assert not list((tmp_path / "cv").glob("folds/*"))
