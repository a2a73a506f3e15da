"""Reliability and security: hostile text, hostile bundles, hostile training files, concurrency.

Every case here is listed in docs/reliability.md with the behaviour it proves. Cases that
tests/test_runtime.py and tests/test_data.py already cover are referenced there, not repeated here.
Bundles are real (tiny TF models converted to ONNX/TFLite by runtime_bundle_factory).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdedge_run
from kdedge_run import BundleError
from kdedge_run.cli import main as run_cli
from kdedge_run.text import normalise
from conftest import input_args
from runtime_bundle_factory import (CORPUS, LABELS, build_bundle, classifier_cache, copy_built, read_manifest,
                                    write_manifest)

BUNDLES = {  # name → build_bundle arguments (ONNX + TFLite each)
    "gru": {},                                                               # char segmenter, sequence
    "han": {"arch": "han", "segmenter": "jieba", "dtype": "int8"},           # jieba, hierarchical, int8
    "full": {"arch": "textcnn", "segmenter": "jieba", "t2s": True, "dtype": "int8"},  # every file kind
}
API = [("gru", "onnx"), ("gru", "tflite"), ("han", "onnx")]  # classifiers the hostile texts go through
MB = 1 << 20


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability_bundles")
    return {name: build_bundle(root / name, **kwargs) for name, kwargs in BUNDLES.items()}


@pytest.fixture(scope="module")
def clf(built):
    get = classifier_cache(built)
    return lambda name="gru", backend="onnx": get(name, backend)


@pytest.fixture
def copy_of(built, tmp_path):
    def make(name: str = "gru") -> Path:
        return copy_built(built, name, tmp_path / "bundle")
    return make


def _probs(prediction) -> list[float]:
    return [prediction.probabilities[label] for label in LABELS]


def _sane(prediction) -> None:
    """A well-formed Prediction: every label's probability finite in [0, 1]; labels a subset."""
    assert set(prediction.probabilities) == set(LABELS)
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in prediction.probabilities.values())
    assert set(prediction.labels) <= set(LABELS)
    assert isinstance(prediction.truncated, bool) and prediction.tokens >= 1


# ===================================================================================================
# 1. Hostile text through the Python API
# ===================================================================================================

EMPTY = {  # texts that are empty after normalisation: ValueError("empty text"), never anything else
    "empty": "",
    "spaces": "   ",
    "whitespace mix": " \t\n\r\x0b\x0c",
    "full-width space": "\u3000\u3000",
    "no-break space": "\xa0",
    "line/para separators": "\u2028\u2029",
    "NEL": "\x85",
    "NUL only": "\x00\x00",
    "control only": "\x01\x1b\x7f\x9f",
    "lone surrogates only": "\ud800\udfff",
}

# text → a text the model must see identically (same tokens, so the same probabilities)
SAME_AS = {
    "NUL inside": ("股\x00市", "股 市"),
    "C0/C1 controls inside": ("股\x01\x1b市\x7f\x85涨", "股  市  涨"),
    "lone surrogate inside": ("股\ud800市\udc00涨", "股 市 涨"),
    "full-width ASCII": ("ＡＰＰ１２３！", "app123!"),
    "half/full-width mix": ("Ａpp　更新ｎｅｗ", "app 更新new"),
    "upper → lower": ("HELLO World", "hello world"),
}

ODD_BUT_VALID = {  # classified normally (never an error); each character is a token or part of one
    "emoji": "😀👍🏽股市🚀",
    "emoji ZWJ family": "👨\u200d👩\u200d👧",
    "CJK ext B": "\U00020000\U0002A6D6\U0002B73F",
    "CJK ext G/H": "\U00030000\U00031350",
    "Latin only": "The quick brown fox",
    "digits only": "1234567890",
    "zero-width space only": "\u200b",
    "BOM only": "\ufeff",
    "combining mark only": "\u0301",
    "RTL override": "\u202e股市\u202c",
    "private use": "\ue000\U000F0000",
    "noncharacters": "\uffff\ufffe\U0010FFFF",
    "replacement char": "\ufffd",
    "sentence ends only": "。！？；…",
}


@pytest.mark.parametrize("name,backend", API)
def test_empty_after_normalisation_is_the_documented_value_error(clf, name, backend):
    c = clf(name, backend)
    for case, text in EMPTY.items():
        with pytest.raises(ValueError, match="^empty text$"):
            c.predict(text)
        with pytest.raises(ValueError, match="^text 1: empty text$"):
            c.predict(["股市", text])
        with pytest.raises(ValueError, match="^empty text$"):
            c.tokenize(text)


@pytest.mark.parametrize("name,backend", API)
def test_control_characters_surrogates_and_width_are_normalised(clf, name, backend):
    c = clf(name, backend)
    for case, (hostile, plain) in SAME_AS.items():
        assert c.tokenize(hostile) == c.tokenize(plain), case
        got, expected = c.predict(hostile), c.predict(plain)
        _sane(got)
        assert _probs(got) == pytest.approx(_probs(expected), abs=1e-9), case


@pytest.mark.parametrize("name,backend", API)
def test_odd_but_valid_text_is_classified(clf, name, backend):
    c = clf(name, backend)
    predictions = c.predict(list(ODD_BUT_VALID.values()))
    assert len(predictions) == len(ODD_BUT_VALID)
    for case, text, p in zip(ODD_BUT_VALID, ODD_BUT_VALID.values(), predictions):
        _sane(p)
        assert c.predict(text) == p or _probs(c.predict(text)) == pytest.approx(_probs(p), abs=1e-6), case
    if name == "gru":  # char segmenter: one token per code point (astral characters are one each)
        assert c.tokenize("\U00020000\U0002A6D6") == ["\U00020000", "\U0002A6D6"]
        assert c.tokenize("👨\u200d👩") == ["👨", "\u200d", "👩"]  # ZWJ is not whitespace
        assert c.tokenize("\u200b") == ["\u200b"]                 # neither are ZWSP and BOM


@pytest.mark.parametrize("name,backend", [("gru", "onnx"), ("han", "onnx")])
def test_one_megabyte_text_is_truncated_and_reported(clf, name, backend):
    c = clf(name, backend)
    text = ("股市大涨。" * (MB // 5 + 1))[:MB]
    p = c.predict(text)
    _sane(p)
    assert p.truncated is True
    assert p.tokens <= c._bundle.preprocessor.limit  # cut before segmenting (docs/bundle.md "Long texts")
    short = c.predict(text[:8])
    assert short.truncated is False


def test_non_str_input_is_a_type_error(clf):
    c = clf()
    for bad in ([None], [3], [b"\xe8\x82\xa1"], ["股", 1.5]):
        with pytest.raises(TypeError, match="must be a str"):
            c.predict(bad)
    with pytest.raises(TypeError):
        c.predict(None)
    assert c.predict([]) == []


# ---------------------------------------------------------------------------------- property-based

_SPECIAL = ["\x00", "\x1b", "\x7f", "\x85", "\u3000", "\xa0", "\u200b", "\u200d", "\ufeff", "\u2028",
            "\ud800", "\udfff", "\udc80", "。", "！", "？", "；", "…", "Ａ", "１", "\U00020000", "😀"]
CHARS = st.one_of(
    st.characters(),                                            # any code point but surrogates
    st.characters(categories=["Cs"]),                           # lone surrogates
    st.characters(min_codepoint=0, max_codepoint=0x9F),          # ASCII + C0/C1 controls
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),   # CJK
    st.characters(min_codepoint=0xFF00, max_codepoint=0xFFEF),   # full/half width forms
    st.characters(min_codepoint=0x20000, max_codepoint=0x323AF),  # CJK extensions B–H
    st.sampled_from(_SPECIAL + list("股市大涨手机模型")),
)
TEXTS = st.one_of(st.text(CHARS, max_size=60), st.text(CHARS, min_size=100, max_size=400))


def _empty_after_normalisation(c, text: str) -> bool:
    return not c._bundle.preprocessor.tokens(text)


@pytest.mark.slow
@pytest.mark.parametrize("name,backend", API)
def test_property_predict_never_raises_but_documented_error(clf, name, backend):
    c = clf(name, backend)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(TEXTS, min_size=1, max_size=6))
    def check(texts):
        singles = []
        for text in texts:
            try:
                p = c.predict(text)
            except ValueError as e:
                assert str(e) == "empty text"
                assert _empty_after_normalisation(c, text)
                singles.append(None)
                continue
            assert not _empty_after_normalisation(c, text)
            _sane(p)
            assert c.predict(text) == p  # deterministic
            singles.append(p)
        valid = [t for t, p in zip(texts, singles) if p is not None]
        batch = c.predict(valid)
        assert len(batch) == len(valid)  # one result per input, in order
        for b, s in zip(batch, (p for p in singles if p is not None)):
            assert _probs(b) == pytest.approx(_probs(s), abs=1e-6)
            assert (b.truncated, b.tokens) == (s.truncated, s.tokens)

    check()


@pytest.mark.slow
def test_property_normalise_is_total_and_idempotent():
    @settings(max_examples=500, deadline=None, database=None)
    @given(st.text(CHARS, max_size=200))
    def check(text):
        out = normalise(text)
        assert len(out) == len(text)  # code point for code point
        assert normalise(out) == out
        assert not any(0xD800 <= ord(ch) <= 0xDFFF or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in out)
        out.encode("utf-8")  # no lone surrogate survives: always encodable

    check()


# ===================================================================================================
# 1b. Hostile text through the command line (arguments, stdin, --input files)
# ===================================================================================================

def _records(stdout: bytes) -> list[dict]:
    lines = stdout.decode("utf-8").split("\n")  # strict UTF-8: the output is always valid
    assert lines[-1] == ""
    return [json.loads(line) for line in lines[:-1]]


def _run(built, args, stdin: bytes | None = None, fmt: str = "json"):
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(built["gru"].path), "--format", fmt, *args],
                                input=stdin)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_cli_single_empty_argument_is_an_error_with_exit_2(built):
    for text in ("", "   ", "\u3000"):
        result = _run(built, [text])
        assert result.exit_code == 2
        assert _records(result.stdout_bytes) == [{"argument": 1, "error": "empty text"}]
        assert result.stderr == "kdedge-run: error: 1 of 1 inputs failed\n"
    result = _run(built, [" "], fmt="text")
    assert result.exit_code == 2 and result.stdout == "\n"
    assert "argument 1: empty text" in result.stderr


def test_cli_arguments_batch_goes_on_after_a_bad_one(built, clf):
    result = _run(built, ["股市大涨", "", "手机\x00模型", "\ud800", "😀"])
    assert result.exit_code == 2
    records = _records(result.stdout_bytes)
    assert len(records) == 5
    assert records[1] == {"argument": 2, "error": "empty text"} and records[3] == {"argument": 4, "error": "empty text"}
    assert records[2]["probabilities"] == pytest.approx(clf().predict("手机 模型").probabilities)
    assert "labels" in records[0] and "labels" in records[4]
    assert result.stderr == "kdedge-run: error: 2 of 5 inputs failed\n"


def test_cli_text_starting_with_dash_needs_double_dash(built):
    assert _run(built, ["-5"]).exit_code == 2  # click reads it as an option
    result = _run(built, ["--", "-5"])
    assert result.exit_code == 0 and len(_records(result.stdout_bytes)) == 1


def test_cli_text_format_keeps_one_line_and_two_columns(built):
    result = _run(built, ["股市\t大涨", "a\x0bb\x0cc\x1cd\x85e\u2028f\r\ng"], fmt="text")
    assert result.exit_code == 0
    lines = result.stdout_bytes.decode("utf-8").split("\n")
    assert len(lines) == 3 and lines[2] == ""
    assert all(line.count("\t") == 1 for line in lines[:2])


HOSTILE_LINES = [  # (raw line, expected: "ok" | error prefix)
    ("股市大涨".encode(), "ok"),
    (b"", "empty text"),
    (b" \t ", "empty text"),
    (b"\x00\x00", "empty text"),
    ("股\x00市\x1b[31m涨".encode(), "ok"),
    (b"\xff\xfe\xfd", "invalid UTF-8"),
    (b"\xe8\x82", "invalid UTF-8"),                         # truncated multi-byte sequence
    (b"\xed\xa0\x80", "invalid UTF-8"),                     # UTF-8-encoded surrogate (CESU)
    (b"\xc0\x80", "invalid UTF-8"),                         # overlong NUL
    ("😀\U00020000".encode(), "ok"),
    (b"1234567890", "ok"),
    ("ＡＢＣ１２３abc".encode(), "ok"),
    (b'{"text": "\\ud800"}', "empty text"),               # JSON-escaped lone surrogate only
    (b'{"text": "\\u80a1\\ud800\\u5e02", "id": "\\udfff"}', "ok"),
    (b'{"text": "\\u0000"}', "empty text"),
    (b'{"text": 5}', 'JSON line needs a string "text" field'),
    (b"[1, 2]", "ok"),                                      # not starting with '{': a plain text line
    (b'{"text": "x"', "invalid JSON"),
    ("a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g".encode(), "ok"),  # not line breaks in the input: one record
    (b"\r", "empty text"),                                  # a CRLF line end's CR alone
    ("股市".encode() * (MB // 6), "ok"),                    # a 1 MB line
]


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_cli_batch_hostile_lines(built, clf, tmp_path, source):
    data = b"\n".join(line for line, _ in HOSTILE_LINES) + b"\n"
    args, stdin = input_args(source, data, tmp_path / "in.txt")
    result = _run(built, args, stdin=stdin)
    records = _records(result.stdout_bytes)
    assert len(records) == len(HOSTILE_LINES)
    failed = 0
    for n, ((line, expected), record) in enumerate(zip(HOSTILE_LINES, records), 1):
        if expected == "ok":
            assert set(record) >= {"labels", "probabilities", "truncated"}, (n, record)
            assert all(0 <= p <= 1 for p in record["probabilities"].values())
        else:
            failed += 1
            assert record["line"] == n and record["error"].startswith(expected), (n, record)
    assert records[-1]["truncated"] is True
    assert records[13]["id"] == "\udfff"  # a lone surrogate in an id is written as a JSON escape
    assert result.exit_code == 2
    assert result.stderr == f"kdedge-run: error: {failed} of {len(HOSTILE_LINES)} inputs failed\n"


def test_cli_real_process_invalid_utf8_arguments_and_stdin(built):
    """Real argv bytes: undecodable bytes arrive as lone surrogates (surrogateescape) → spaces."""
    cmd = [sys.executable, "-m", "kdedge_run", "predict", "--model", str(built["gru"].path)]
    proc = subprocess.run(cmd + [b"\xff\xfe\xe8\x82\xa1", b"\xff"], capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    records = _records(proc.stdout)
    assert "labels" in records[0] and records[1] == {"argument": 2, "error": "empty text"}
    assert proc.stderr == b"kdedge-run: error: 1 of 2 inputs failed\n"
    proc = subprocess.run(cmd + ["--format", "text", b"\xff\xe8\x82\xa1\x01"], capture_output=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.decode("utf-8").endswith("\t\\udcff\u80a1\\x01\n")  # echoed, unprintables escaped
    proc = subprocess.run(cmd + ["--input", "-"], input=b"\xff\n\xe8\x82\xa1\n\x00\n", capture_output=True,
                          timeout=120)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    records = _records(proc.stdout)
    assert records[0]["error"].startswith("invalid UTF-8") and "labels" in records[1]
    assert records[2] == {"line": 3, "error": "empty text"}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.text(CHARS, max_size=30).map(
    lambda t: t.encode("utf-8", "surrogatepass"))), min_size=1, max_size=12))
def test_property_cli_batch_one_record_per_line(built, lines):
    lines = [line.replace(b"\n", b" ") for line in lines]
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(built["gru"].path), "--input", "-"],
                                input=b"\n".join(lines) + b"\n")
    assert result.exit_code in (0, 2) and "Traceback" not in result.output
    records = _records(result.stdout_bytes)
    assert len(records) == len(lines)
    errors = [r for r in records if "error" in r]
    assert all(r["line"] == n for n, r in enumerate(records, 1) if "error" in r)
    assert (result.exit_code == 2) == bool(errors)


# ===================================================================================================
# 2. Hostile bundles (what tests/test_runtime.py::TAMPERINGS does not already cover)
# ===================================================================================================

def _refresh(path: Path, change=None) -> None:
    """Apply `change` to the manifest and recompute every checksum (a consistent but bad bundle)."""
    manifest = {k: v for k, v in read_manifest(path).items() if k != "files"}
    if change:
        change(manifest)
    write_manifest(path, manifest)


def _refused(path: Path, message: str, backend: str | None = None) -> None:
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(path, backend=backend)
    result = CliRunner().invoke(run_cli, ["info", "--model", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("kdedge-run: error: ") and "Traceback" not in result.stderr


def _listed(built) -> list[str]:
    return sorted(read_manifest(built["full"].path)["files"])


FULL_FILES = ["README.md", "model.onnx", "model.tflite", "segmenter/dict.txt", "segmenter/t2s.json",
              "vectors.int8.npy", "vectors.scales.npy", "vocab.txt"]


def test_full_bundle_lists_every_file_kind(built):
    assert _listed(built) == FULL_FILES


@pytest.mark.parametrize("rel", FULL_FILES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_in_any_file_is_refused(copy_of, rel, where):
    path = copy_of("full")
    data = bytearray((path / rel).read_bytes())
    data[{"first": 0, "middle": len(data) // 2, "last": -1}[where]] ^= 0x01
    (path / rel).write_bytes(bytes(data))
    _refused(path, f"^{rel}: SHA-256 mismatch")


@pytest.mark.parametrize("rel", FULL_FILES + ["manifest.json"])
def test_missing_file_is_refused(copy_of, rel):
    path = copy_of("full")
    (path / rel).unlink()
    _refused(path, f"^{rel}: missing")


def test_flipped_bytes_in_manifest_never_crash(built, copy_of):
    """The manifest itself carries no checksum: a flip is refused when it breaks JSON, a key, a
    checksum, a size or a check, and otherwise loads (e.g. a changed digit of a threshold). Never a crash."""
    path = copy_of("gru")
    original = (path / "manifest.json").read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "loaded": 0}
    for pos in rng.choice(len(original), size=40, replace=False):
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(8))
        (path / "manifest.json").write_bytes(bytes(data))
        try:
            kdedge_run.load(path).predict("股市")
            outcomes["loaded"] += 1
        except BundleError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 40


@pytest.mark.parametrize("extra", ["segmenter/notes.txt", ".DS_Store", "sub/dir/x.bin"])
def test_extra_file_anywhere_is_refused(copy_of, extra):
    path = copy_of("full")
    (path / extra).parent.mkdir(parents=True, exist_ok=True)
    (path / extra).write_bytes(b"x")
    _refused(path, f"^{extra}: unlisted file")


def test_empty_extra_directory_is_accepted(copy_of):
    path = copy_of("gru")
    (path / "empty").mkdir()
    assert kdedge_run.load(path).predict("股市")


def test_fifo_is_refused_without_blocking(copy_of):
    path = copy_of("gru")
    os.mkfifo(path / "pipe")
    _refused(path, "^pipe: not a regular file")


@pytest.mark.parametrize("case", ["file to identical copy outside", "directory outside", "dangling",
                                  "manifest outside"])
def test_symlink_pointing_outside_is_refused(copy_of, tmp_path, case):
    path = copy_of("full")
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "file to identical copy outside":  # checksums would match: refused for being a symlink
        shutil.move(path / "vocab.txt", outside / "vocab.txt")
        (path / "vocab.txt").symlink_to(outside / "vocab.txt")
        rel = "vocab.txt"
    elif case == "directory outside":
        shutil.move(path / "segmenter", outside / "segmenter")
        (path / "segmenter").symlink_to(outside / "segmenter", target_is_directory=True)
        rel = "segmenter"
    elif case == "dangling":
        (path / "ghost").symlink_to(outside / "does-not-exist")
        rel = "ghost"
    else:
        shutil.move(path / "manifest.json", outside / "manifest.json")
        (path / "manifest.json").symlink_to(outside / "manifest.json")
        rel = "manifest.json"
    _refused(path, f"^{rel}: is a symlink")


def test_bundle_directory_itself_may_be_a_symlink_and_hard_links_are_plain_files(copy_of, tmp_path):
    path = copy_of("gru")
    link = tmp_path / "current"
    link.symlink_to(path, target_is_directory=True)
    assert kdedge_run.load(link).path == path.resolve()
    outside = tmp_path / "vocab_elsewhere.txt"
    os.link(path / "vocab.txt", outside)  # a hard link is indistinguishable from a regular file;
    assert kdedge_run.load(path).predict("股市")  # its content is still checksummed


@pytest.mark.parametrize("version,message", [(0, "invalid format_version 0"), ("1", "invalid format_version '1'"),
                                             (True, "invalid format_version True"),
                                             (None, "invalid format_version None"),
                                             (99, "format_version 99 is newer")])
def test_bad_format_version_is_refused(copy_of, version, message):
    path = copy_of("gru")
    _refresh(path, lambda m: m.update(format_version=version))
    _refused(path, message)


def _dim16(m):
    m["embeddings"]["dim"] = 16
    for model in m["models"]:
        model["input_shape"][-1] = 16


def _max_len20(m):
    m["input"]["max_len"] = 20
    for model in m["models"]:
        model["input_shape"][1] = 20


def _three_labels(m):
    m["labels"], m["thresholds"] = LABELS[:3], m["thresholds"][:3]
    m["calibration"]["temperatures"] = m["calibration"]["temperatures"][:3]


SHAPE_CASES = {  # manifest change → message (checksums recomputed, so only the shape check can catch it)
    "tflite input shape": (_max_len20, r"model.tflite: model input shape \[1, 16, 8\] does not match", "tflite"),
    "embeddings.dim vs vectors": (_dim16, r"vectors.npy: shape \[\d+, 8\], expected", None),
    "embeddings.dim vs manifest input_shape": (lambda m: m["embeddings"].update(dim=16),
                                               r"model.onnx: manifest input_shape .* does not match", None),
    "batch dimension 2": (lambda m: m["models"][0]["input_shape"].__setitem__(0, 2),
                          r"manifest input_shape \[2, ", None),
    "unknown input kind": (lambda m: m["input"].update(kind="matrix"), "input.kind 'matrix' unknown", None),
    "max_len 0": (lambda m: m["input"].update(max_len=0), "input.max_len must be a positive integer", None),
    "ONNX input name": (lambda m: m["models"][0].update(input_name="x"), "model inputs .* input_name is 'x'", "onnx"),
    "ONNX logits name": (lambda m: m["models"][0].update(logits_name="y"), "no output named 'y'", "onnx"),
    "labels fewer (tflite)": (_three_labels, r"cannot identify the logits output by shape \[1, 3\]", "tflite"),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_manifest_disagreeing_with_model_is_refused(copy_of, case):
    change, message, backend = SHAPE_CASES[case]
    path = copy_of("gru")
    _refresh(path, change)
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(path, backend=backend)


class _Payload:
    """Unpickling this runs code (touches a marker file): the loader must never do it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("rel", ["vectors.int8.npy", "vectors.scales.npy"])
def test_pickled_npy_is_refused_and_never_unpickled(copy_of, tmp_path, rel):
    path = copy_of("full")
    marker = tmp_path / "pwned"
    np.save(path / rel, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    assert not marker.exists()
    _refresh(path)  # checksums match: only the loader's allow_pickle=False stands in the way
    _refused(path, f"^{rel}: cannot read: .*allow_pickle")
    assert not marker.exists()


@pytest.mark.parametrize("case", ["nan vector", "inf vector", "nan scale", "nan threshold", "threshold 1.5",
                                  "inf temperature", "nan logits"])
def test_non_finite_or_out_of_range_numbers_are_refused(copy_of, case):
    """json reads NaN/Infinity: without these checks they load and give NaN or silently wrong results."""
    if case in ("nan vector", "inf vector"):
        path = copy_of("gru")
        table = np.load(path / "vectors.npy")
        table[3, 0] = np.nan if case == "nan vector" else np.inf
        np.save(path / "vectors.npy", table)
        _refresh(path)
        return _refused(path, "^vectors.npy: holds NaN or infinite values")
    if case == "nan scale":
        path = copy_of("full")
        scales = np.load(path / "vectors.scales.npy")
        scales[2] = np.nan
        np.save(path / "vectors.scales.npy", scales)
        _refresh(path)
        return _refused(path, "^vectors.scales.npy: holds NaN or infinite values")
    if case == "nan logits":  # an all-padding input through a model whose bias is NaN
        pytest.importorskip("onnx")
        import onnx
        from onnx import numpy_helper

        path = copy_of("gru")
        model = onnx.load(str(path / "model.onnx"))
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.float32 and arr.size == len(LABELS):  # b2: the logits bias
                init.CopyFrom(numpy_helper.from_array(np.full_like(arr, np.nan), init.name))
                break
        else:
            pytest.fail("logits bias not found")
        onnx.save(model, str(path / "model.onnx"))
        _refresh(path)
        with pytest.raises(BundleError, match="^model.onnx: test inference gave NaN or infinite logits"):
            kdedge_run.load(path, backend="onnx")
        return
    path = copy_of("gru")
    value = {"nan threshold": math.nan, "threshold 1.5": 1.5, "inf temperature": math.inf}[case]
    if case == "inf temperature":  # json.dumps writes Infinity, which is not JSON: refused as the JS reader does
        _refresh(path, lambda m: m["calibration"]["temperatures"].__setitem__(0, value))
        return _refused(path, "^manifest.json: not valid UTF-8 JSON: Infinity is not JSON")
    _refresh(path, lambda m: m["thresholds"].__setitem__(0, value))  # json.dumps writes NaN as is
    assert ("NaN" in (path / "manifest.json").read_text()) == (case == "nan threshold")
    _refused(path, "^manifest.json: not valid UTF-8 JSON: NaN is not JSON" if case == "nan threshold" else
             r"^manifest.json: thresholds must be within \[0, 1\]")


def test_onnx_external_data_leaving_the_bundle_is_refused(copy_of, tmp_path):
    """An ONNX initializer stored as external data `../secret.bin`: onnxruntime refuses the path.

    (The file itself would also be an unlisted file if it sat inside the bundle.)
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto

    path = copy_of("gru")
    model = onnx.load(str(path / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    (tmp_path / "secret.bin").write_bytes(init.raw_data)
    size = len(init.raw_data)
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", str(size))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    (path / "model.onnx").write_bytes(model.SerializeToString())
    _refresh(path)
    with pytest.raises(BundleError, match="model.onnx: onnxruntime cannot load the model: .*[Ee]xternal data"):
        kdedge_run.load(path, backend="onnx")


def test_loading_never_evaluates_or_unpickles(monkeypatch, built):
    """Guard rails on the whole load + predict path: pickle, eval and exec are never called."""
    import builtins
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("a load path tried to unpickle or evaluate code")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    for name in BUNDLES:
        for backend in ("onnx", "tflite"):
            c = kdedge_run.load(built[name].path, backend=backend)
            _sane(c.predict("今天股市大涨。手机"))


# ===================================================================================================
# 3. Training files through the CLI (tests/test_data.py covers the loader itself)
# ===================================================================================================

def _kdedge(args):
    from kdedge.cli import main as kdedge_cli

    result = CliRunner().invoke(kdedge_cli, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


BAD_JSONL = [  # (line bytes, problem words when it is the first bad line)
    ('{"id": "a", "text": "足球比赛", "labels": ["体育"]}'.encode(), None),
    (b'{"text": "\xe8\xb6\xb3", "labels": [', "malformed JSON"),
    (b'{"text": 12, "labels": ["x"]}', "field 'text' must be a string"),
    (b'{"text": " \\u3000 ", "labels": ["x"]}', None),  # U+3000 is whitespace to str.strip(): empty
    (b'{"text": "ok", "labels": "x"}', "field 'labels' must be a list"),
    (b'{"text": "ok", "labels": [null]}', "field 'labels' must be a list"),
    ('{"id": "a", "text": "重复", "labels": ["体育"]}'.encode(), "duplicate id 'a'"),
    (b'"just a string"', "JSON object"),
    (b'{"text": "\xff", "labels": []}', "invalid UTF-8"),
    ('{"id": "b", "text": "股票市场", "labels": ["经济"]}'.encode(), None),
]


def test_cli_data_stats_every_bad_row_named_then_skipped_with_a_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [line for line, _ in BAD_JSONL]
    for i in range(1, len(lines) - 1):  # each bad line alone: the error names file:line and the problem
        path.write_bytes(b"\n".join([lines[0], lines[i], lines[-1]]) + b"\n")
        result = _kdedge(["data", "stats", str(path)])
        words = BAD_JSONL[i][1] or "field 'text' is empty"
        assert result.exit_code == 2, i
        assert result.stderr.startswith(f"kdedge: error: {path}:2: ") and words in result.stderr, result.stderr
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = _kdedge(["data", "stats", str(path), "--skip-invalid", "--json"])
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["texts"], stats["skipped_rows"]) == (2, len(lines) - 2)
    result = _kdedge(["data", "stats", str(path), "--skip-invalid"])
    assert f"{len(lines) - 2} invalid rows skipped" in result.stdout


def test_cli_data_stats_unknown_label_and_csv_stray_delimiter(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("体育\n经济\n", encoding="utf-8")
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "足球", "labels": ["体育"]}\n{"text": "医院", "labels": ["健康"]}\n', encoding="utf-8")
    result = _kdedge(["data", "stats", str(data), "--labels", str(labels)])
    assert result.exit_code == 2 and f"{data}:2: field 'labels' unknown label '健康'" in result.stderr
    assert "1 invalid rows skipped" in _kdedge(["data", "stats", str(data), "--labels", str(labels),
                                                 "--skip-invalid"]).stdout
    csv = tmp_path / "d.csv"
    csv.write_text("text,labels\n足球,体育\n股票,市场,经济\n医院,健康\n", encoding="utf-8")
    result = _kdedge(["data", "stats", str(csv)])
    assert result.exit_code == 2 and f"{csv}:3: expected 2 columns, got 3 (stray delimiter?)" in result.stderr
    result = _kdedge(["data", "stats", str(csv), "--skip-invalid", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped_rows"] == 1


def test_byte_order_mark_from_excel_or_notepad_is_accepted(tmp_path):
    from kdedge.text.data import load_dataset

    csv = tmp_path / "excel.csv"
    csv.write_bytes("\ufefftext,labels\n足球,体育\n".encode("utf-8"))
    assert load_dataset(csv).texts == ["足球"]
    jsonl = tmp_path / "notepad.jsonl"
    jsonl.write_bytes('\ufeff{"text": "足球", "labels": ["体育"]}\n'.encode("utf-8"))
    assert load_dataset(jsonl).texts == ["足球"]


# ===================================================================================================
# 5. Concurrency: 8 threads × 1,000 predictions equal the sequential results
# ===================================================================================================

@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_eight_threads_times_a_thousand_predictions(built, backend):
    c = kdedge_run.load(built["gru"].path, backend=backend)
    texts = [(CORPUS[i % len(CORPUS)] + "😀\x00" * (i % 3))[: 2 + i % 23] for i in range(1000)]
    sequential = [c.predict(t) for t in texts]
    results: list = [None] * 8
    errors: list = []
    barrier = threading.Barrier(8)

    def work(slot):
        try:
            barrier.wait()
            order = texts if slot % 2 == 0 else texts[::-1]  # different texts in flight at once
            got = [c.predict(t) for t in order]
            results[slot] = got if slot % 2 == 0 else got[::-1]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        assert r == sequential
