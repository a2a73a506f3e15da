"""Golden vectors checked when a bundle is loaded (kdedge_run.golden): a swapped model or a damaged golden file is
refused even when every checksum in the manifest was recomputed to match."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kdedge_run
from kdedge_run import BundleError

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"
FAULTY_MODEL = Path(__file__).resolve().parents[1] / "runtime" / "js" / "test" / "faulty_model.py"


def _rewritten(tmp_path: Path, files: dict[str, bytes] | None = None, change=None) -> Path:
    """A copy of the default bundle with `files` replaced and the manifest changed by `change`, every checksum and
    size recomputed (a bundle that passes the file checks)."""
    out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
    shutil.copytree(DEFAULT, out)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for rel, data in (files or {}).items():
        (out / rel).write_bytes(data)
        m["files"][rel] = {**m["files"][rel], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if change:
        change(m)
    (out / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    return out


def _golden_lines() -> list[dict]:
    return [json.loads(line) for line in (DEFAULT / "golden.jsonl").read_text(encoding="utf-8").splitlines()]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()  # ASCII: a golden text holds a lone surrogate


def test_the_default_bundle_loads_with_its_golden_vectors_checked():
    assert kdedge_run.load(DEFAULT).predict("頭痛").labels


@pytest.mark.parametrize("variant, message", [
    ("p=0.5", r"golden.jsonl line 1: the model gives \w+ 0\.500000, its golden vector"),   # a constant model
    ("p=5", r"probabilities outside \[0, 1\]|golden.jsonl line 1"),                          # outputs out of range
])
def test_a_swapped_model_with_valid_checksums_is_refused(tmp_path, variant, message):
    swapped = tmp_path / "model.onnx"
    subprocess.run([sys.executable, str(FAULTY_MODEL), str(DEFAULT / "model.onnx"), str(swapped), variant], check=True)
    bundle = _rewritten(tmp_path, {"model.onnx": swapped.read_bytes()})
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(bundle)


def _one_probability_moved(rows):
    rows[3]["probabilities"][0] = round(1 - rows[3]["probabilities"][0], 6)
    return rows


@pytest.mark.parametrize("golden, message", [
    (lambda rows: _one_probability_moved(rows), r"golden.jsonl line 4: the model gives"),
    (lambda rows: rows[:-1], r"golden.jsonl: 44 golden vectors, manifest golden.texts says 45"),
    (lambda rows: [*rows[:-1], {"text": "頭痛"}], r"golden.jsonl line 45: 'probabilities' must list 9 numbers"),
    (lambda rows: [*rows[:-1], {**rows[-1], "labels": ["NOPE"]}], r"line 45: 'labels' must list labels of the bundle"),
    (lambda rows: [*rows[:-1], {**rows[-1], "text": ""}], r"line 45: 'text' must be a non-empty string"),
])
def test_a_damaged_golden_file_is_refused_naming_its_line(tmp_path, golden, message):
    bundle = _rewritten(tmp_path, {"golden.jsonl": _jsonl(golden(_golden_lines()))})
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(bundle)


def test_golden_lines_that_are_not_json_or_not_utf8_are_named(tmp_path):
    rows = _jsonl(_golden_lines()).splitlines(keepends=True)
    for data, message in ((b"".join(rows[:-1]) + b'{"text": NaN}\n', r"golden.jsonl line 45: not JSON"),
                          (b"".join(rows[:-1]) + b'\xff\xfe\n', r"golden.jsonl: not UTF-8")):
        with pytest.raises(BundleError, match=message):
            kdedge_run.load(_rewritten(tmp_path, {"golden.jsonl": data}))


@pytest.mark.parametrize("entry", [{"file": "nope.jsonl", "texts": 45, "tolerance": 1e-5},
                                   {"file": "golden.jsonl", "texts": 0, "tolerance": 1e-5},
                                   {"file": "golden.jsonl", "texts": 45, "tolerance": 0.5},
                                   {"file": "golden.jsonl", "texts": True, "tolerance": 1e-5}, "golden.jsonl"])
def test_a_malformed_golden_entry_is_refused(tmp_path, entry):
    with pytest.raises(BundleError, match="manifest.json: 'golden' must be"):
        kdedge_run.load(_rewritten(tmp_path, change=lambda m: m.update(golden=entry)))


def test_a_caller_that_verified_the_bundle_once_may_skip_the_golden_check(tmp_path):
    bundle = _rewritten(tmp_path, {"golden.jsonl": _jsonl(_one_probability_moved(_golden_lines()))})
    with pytest.raises(BundleError, match="golden.jsonl line 4"):
        kdedge_run.load(bundle)
    assert kdedge_run.load(bundle, verify_golden=False).predict("頭痛").labels == kdedge_run.load(DEFAULT).predict("頭痛").labels
