"""kdedge.text.data: loading JSONL/CSV/TSV, label files, file:line:field errors, skip_invalid, describe, `data stats`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kdedge.cli import main as cli
from kdedge.text.data import DataError, describe, load_dataset, read_label_file

GOOD = [
    {"id": "a", "text": "足球比赛很精彩", "labels": ["体育"], "source": "web"},
    {"id": "b", "text": "股票市场上涨", "labels": ["经济", "体育"]},
]


def _jsonl(path: Path, lines) -> Path:
    """Write raw lines (str → UTF-8, bytes as is), one per line."""
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n")
    return path


def _good_lines():
    return [json.dumps(r, ensure_ascii=False) for r in GOOD]


# --------------------------------------------------------------------------------------------- loading

def test_jsonl_loads_texts_labels_ids_and_extra_fields(tmp_path):
    rows = GOOD + [{"text": "医院医生", "labels": ["健康", "健康"]}, {"id": 7, "text": "今天天气", "labels": []}]
    path = _jsonl(tmp_path / "d.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows] + [""])
    ds = load_dataset(path)
    assert ds.texts == ["足球比赛很精彩", "股票市场上涨", "医院医生", "今天天气"]
    assert ds.labels == [["体育"], ["经济", "体育"], ["健康"], []]  # duplicates within a row collapse
    assert ds.ids == ["a", "b", "line3", "7"]  # missing id → line number
    assert ds.extra[0] == {"source": "web"}
    # label space: by descending frequency, ties by name
    assert ds.label_names == ["体育", "健康", "经济"]
    np.testing.assert_array_equal(ds.targets(), [[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 0]])
    assert ds.skipped == 0
    sub = ds.subset([2, 0])
    assert sub.texts == ["医院医生", "足球比赛很精彩"] and sub.label_names == ds.label_names


def test_csv_with_label_separator_and_quoted_delimiter(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text,labels\n1,"足球,篮球",体育|经济\n2,医院,健康\n3,天气,\n', encoding="utf-8")
    ds = load_dataset(path, label_sep="|")
    assert ds.texts == ["足球,篮球", "医院", "天气"]
    assert ds.labels == [["体育", "经济"], ["健康"], []]
    assert ds.ids == ["1", "2", "3"]


def test_tsv_with_custom_field_names(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("content\ttags\n足球,比赛\t体育,经济\n医院\t健康\n", encoding="utf-8")
    ds = load_dataset(path, text_field="content", label_field="tags")
    assert ds.texts == ["足球,比赛", "医院"]  # a comma is not a TSV delimiter
    assert ds.labels == [["体育", "经济"], ["健康"]]


def test_csv_missing_column_is_reported_on_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,body,labels\n1,足球,体育\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert f"{path}:1" in str(err.value) and "'text'" in str(err.value)


def test_label_file_sets_order_and_space(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("经济\n\n体育\n健康\n其他\n", encoding="utf-8")
    assert read_label_file(labels) == ["经济", "体育", "健康", "其他"]
    ds = load_dataset(_jsonl(tmp_path / "d.jsonl", _good_lines()), labels)
    assert ds.label_names == ["经济", "体育", "健康", "其他"]  # file order, unused labels kept
    np.testing.assert_array_equal(ds.targets(), [[0, 1, 0, 0], [1, 1, 0, 0]])


def test_label_file_duplicate_and_empty(tmp_path):
    dup = tmp_path / "dup.txt"
    dup.write_text("体育\n经济\n体育\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dup\.txt:3: .*duplicate label '体育'"):
        read_label_file(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_label_file(empty)


# --------------------------------------------------------------------------------- validation errors

JSONL_ERRORS = {  # case → (bad line 3, field named in the message or None, words of the problem)
    "malformed_json": ('{"text": "坏行", "labels": [', None, "malformed JSON"),
    "not_an_object": ('["坏行"]', None, "JSON object"),
    "missing_text": ('{"labels": ["体育"]}', "text", "missing"),
    "text_not_string": ('{"text": 5, "labels": ["体育"]}', "text", "string"),
    "empty_text": ('{"text": "   ", "labels": ["体育"]}', "text", "empty"),
    "missing_labels": ('{"text": "医院"}', "labels", "missing"),
    "labels_not_list": ('{"text": "医院", "labels": "健康"}', "labels", "list"),
    "label_not_string": ('{"text": "医院", "labels": ["健康", 3]}', "labels", "list"),
    "duplicate_id": ('{"id": "a", "text": "医院", "labels": ["健康"]}', "id", "duplicate id 'a'"),
    "invalid_utf8": (b'{"text": "\xe5\x8c\xbb\xff", "labels": []}', None, "invalid UTF-8"),
}


@pytest.mark.parametrize("case", list(JSONL_ERRORS))
def test_jsonl_errors_name_file_line_and_field(tmp_path, case):
    bad, field, words = JSONL_ERRORS[case]
    path = _jsonl(tmp_path / "d.jsonl", _good_lines() + [bad, '{"text": "银行", "labels": ["经济"]}'])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ")
    assert err.value.line == 3 and err.value.field == field
    if field:
        assert f"field '{field}'" in message
    assert words in message
    # skip_invalid: the bad line is skipped and counted, the rest loads
    ds = load_dataset(path, skip_invalid=True)
    assert ds.skipped == 1
    assert ds.texts == ["足球比赛很精彩", "股票市场上涨", "银行"]


def test_unknown_label_with_label_file(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("体育\n经济\n", encoding="utf-8")
    path = _jsonl(tmp_path / "d.jsonl", _good_lines() + ['{"text": "医院", "labels": ["健康"]}'])
    with pytest.raises(DataError) as err:
        load_dataset(path, labels)
    assert str(err.value).startswith(f"{path}:3: field 'labels' ")
    assert "unknown label '健康'" in str(err.value)
    assert load_dataset(path, labels, skip_invalid=True).skipped == 1
    load_dataset(path)  # without a label file, any label is fine


def test_empty_labels_can_be_refused(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", _good_lines() + ['{"text": "医院", "labels": []}'])
    assert load_dataset(path).labels[2] == []
    with pytest.raises(DataError, match=r"d\.jsonl:3: field 'labels' is empty"):
        load_dataset(path, allow_empty_labels=False)


def test_csv_stray_delimiter(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text,labels\n1,足球,体育\n2,股票,市场,经济\n3,医院,健康\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert str(err.value).startswith(f"{path}:3: ") and err.value.line == 3
    assert "expected 3 columns, got 4" in str(err.value)
    ds = load_dataset(path, skip_invalid=True)
    assert ds.texts == ["足球", "医院"] and ds.skipped == 1


def test_csv_line_numbers_count_multiline_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text,labels\n1,"足球\n比赛",体育\n2,,经济\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.csv:4: field 'text' is empty"):
        load_dataset(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_invalid_utf8_names_its_line(tmp_path, suffix):
    sep = b"," if suffix == ".csv" else b"\t"
    rows = [b"id", b"text", b"labels"], [b"1", "足球".encode(), "体育".encode()], \
        [b"2", b"\xe8\xb6\xb3\xff", "体育".encode()], [b"3", "医院".encode(), "健康".encode()]
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b"".join(sep.join(r) + b"\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert str(err.value).startswith(f"{path}:3: ") and "invalid UTF-8" in str(err.value)
    ds = load_dataset(path, skip_invalid=True)
    assert ds.texts == ["足球", "医院"] and ds.skipped == 1


def test_csv_invalid_utf8_after_the_first_read_chunk(tmp_path):
    """The line is right even when the bad bytes sit far into the file (past any read-ahead buffer)."""
    lines = [b"text,labels"] + [f"足球比赛第{i}场,体育".encode() for i in range(2000)]
    lines[1500] = b"\xff\xfe,\xe4\xbd\x93"
    path = tmp_path / "d.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"d\.csv:1501: invalid UTF-8"):
        load_dataset(path)
    assert load_dataset(path, skip_invalid=True).skipped == 1


def test_no_valid_text_and_missing_file(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", ['{"text": ""}'])
    with pytest.raises(DataError, match="no valid texts"):
        load_dataset(path, skip_invalid=True)
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------ describe

DESCRIBED = [
    {"text": "足球", "labels": ["体育"]},
    {"text": "股票市场", "labels": ["经济", "体育", "经济"]},
    {"text": "医院医生好", "labels": ["健康"]},
    {"text": "今天天气很好呀", "labels": []},
]


def _described_file(tmp_path) -> Path:
    return _jsonl(tmp_path / "known.jsonl", [json.dumps(r, ensure_ascii=False) for r in DESCRIBED]
                  + ['{"text": "", "labels": []}'])


def test_describe_numbers(tmp_path):
    stats = describe(load_dataset(_described_file(tmp_path), skip_invalid=True))
    assert stats["texts"] == 4 and stats["labels"] == 3
    assert stats["label_frequency"] == {"体育": 2, "健康": 1, "经济": 1}
    assert stats["cardinality"] == pytest.approx(1.0)
    assert stats["density"] == pytest.approx(4 / 12)
    assert stats["texts_without_label"] == 1
    assert stats["distinct_label_sets"] == 4
    assert stats["imbalance_ratio"] == pytest.approx(2.0)
    lc = stats["length_chars"]
    assert (lc["min"], lc["max"]) == (2, 7)
    assert lc["mean"] == pytest.approx(4.5) and lc["p50"] == pytest.approx(4.5)
    assert lc["p90"] == pytest.approx(6.4)
    assert stats["skipped_rows"] == 1
    json.dumps(stats)  # plain JSON


# --------------------------------------------------------------------------------------- data stats

def test_cli_data_stats_table_and_json(tmp_path):
    path = _described_file(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "stats", str(path), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "4 texts, 3 labels" in result.stdout and "1 invalid rows skipped" in result.stdout
    result = runner.invoke(cli, ["data", "stats", str(path), "--skip-invalid", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["label_frequency"] == {"体育": 2, "健康": 1, "经济": 1}


def test_cli_data_stats_bad_file_exits_2_without_traceback(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", _good_lines() + ['{"text": "医院", "labels": "健康"}'])
    result = CliRunner().invoke(cli, ["data", "stats", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"kdedge: error: {path}:3: field 'labels'")
    assert "Traceback" not in result.output and result.stdout == ""


def test_cli_data_stats_subprocess_bad_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,labels\n足球,体育\n股票,市场,经济\n", encoding="utf-8")
    kdedge = Path(sys.executable).parent / "kdedge"
    command = [str(kdedge)] if kdedge.exists() else [sys.executable, "-m", "kdedge.cli"]
    proc = subprocess.run(command + ["data", "stats", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"kdedge: error: {path}:3: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_the_shipped_sample_loads_by_name_and_is_what_its_generator_writes(tmp_path):
    """`--data sample:health` (issue 28): the file in the package is exactly the generator's output (its
    provenance), healthner9's nine labels, under 1 MB; an unknown sample name is one clear error."""
    from kdedge.samples import SAMPLES
    from kdedge.samples.generate import generate

    ds = load_dataset("sample:health")
    assert len(ds) == 3000 and sorted(ds.label_names) == sorted(
        ["BODY", "DISE", "SYMP", "CHEM", "DRUG", "TREAT", "EXAM", "INST", "SUPP"])
    path = SAMPLES["health"]
    assert path.stat().st_size < 1 << 20
    expected = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in generate())
    assert path.read_text(encoding="utf-8") == expected
    with pytest.raises(DataError, match=r"^sample:nope: no such sample \(shipped samples: sample:health\)"):
        load_dataset("sample:nope")
