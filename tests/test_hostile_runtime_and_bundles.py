"""Hostile runtime inputs and bundles (reliability round 2, issue 21): what a second hostile tester broke,
one test per defect.

Each case is listed in docs/reliability.md ("Round 2"). Bundles are real (tiny TF models converted
by runtime_bundle_factory, plus hand-built ONNX graphs for faulty models); the runtime and the
commands run as real processes where the defect was about a process (exit code, memory, signals).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kdedge_run
from kdedge import files
from kdedge_run import BundleError
from kdedge_run.cli import main as run_cli
from kdedge_run.text import Preprocessor
from conftest import input_args
from runtime_bundle_factory import CORPUS, DIM, LABELS, build_bundle, copy_built, read_manifest, write_manifest

BUNDLES = {  # name → build_bundle arguments
    "gru": {},                                                                    # char, ONNX + TFLite
    "jieba": {"arch": "textcnn", "segmenter": "jieba", "t2s": True, "dtype": "int8", "formats": ("onnx",)},
    "han": {"arch": "han", "segmenter": "jieba", "formats": ("onnx",)},
}
RUN = [sys.executable, "-m", "kdedge_run"]
KDEDGE = [sys.executable, "-m", "kdedge.cli"]
MB = 1 << 20


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("round2_bundles")
    return {name: build_bundle(root / name, **kwargs) for name, kwargs in BUNDLES.items()}


@pytest.fixture
def copy_of(built, tmp_path):
    return lambda name="gru": copy_built(built, name, tmp_path / "bundle")


def _strict_records(stdout: bytes) -> list[dict]:
    """Output lines parsed as strict JSON (NaN/Infinity refused): the output must always be valid."""
    def refuse(name):
        raise AssertionError(f"{name} in the output is not JSON")
    lines = stdout.decode("utf-8").split("\n")
    assert lines[-1] == ""
    return [json.loads(line, parse_constant=refuse) for line in lines[:-1]]


def _predict(built, args, stdin: bytes | None = None, name: str = "gru"):
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(built[name].path), *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "unexpected" not in result.stderr
    return result


def _process(args, stdin=None, env=None, preexec_fn=None, timeout=120):
    """Run a real process; returns (returncode, stdout, stderr, peak RSS in MiB from wait4)."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=preexec_fn)
    output = {}

    def pump(name, stream):
        output[name] = stream.read()

    def feed():
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    workers = [threading.Thread(target=pump, args=("out", proc.stdout)),
               threading.Thread(target=pump, args=("err", proc.stderr))]
    workers += [threading.Thread(target=feed)] if stdin is not None else []
    for w in workers:
        w.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # wait4: this child's own peak RSS
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"{args[2:5]} took more than {timeout} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for w in workers:
        w.join()
    return proc.returncode, output["out"], output["err"].decode("utf-8", "replace"), usage.ru_maxrss / 1024


# ===================================================================================================
# Defect 2: one bad input line must not stop the batch; the output is always valid JSON
# ===================================================================================================

GOOD = '{"text": "股市大涨", "id": 7}'
BAD_LINES = {  # raw line → start of its error record
    '{"text": "股市", "id": ' + "9" * 5000 + "}": "invalid JSON",        # beyond Python's int-string limit
    '{"text": "股市", "id": ' + "[" * 100_000 + "]" * 100_000 + "}": "invalid JSON",  # RecursionError
    "{" * 100_000: "invalid JSON",
    '{"text": "股市", "id": NaN}': "invalid JSON",
    '{"text": "股市", "id": Infinity}': "invalid JSON",
    '{"text": "股市", "id": -Infinity}': "invalid JSON",
    '{"text": "股市", "id": -1e999}': "invalid JSON",                     # parses to -inf
    '{"text": "股市", "id": [1e400]}': "invalid JSON",
    '{"text": "股市", "score": 1e999, "id": 1}': "invalid JSON",
    '{"text": ' + "[" * 5000 + "]" * 5000 + "}": "invalid JSON",
    '{"text": 12}': 'JSON line needs a string "text" field',
}


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_every_bad_json_line_gets_its_own_record_and_the_rest_is_predicted(built, tmp_path, source):
    lines = []
    for bad in BAD_LINES:
        lines += [GOOD] * 6 + [bad]
    lines += [GOOD, '{"text": "股市", "id": ' + "9" * 4000 + "}"]  # under the limit: echoed exactly
    data = ("\n".join(lines) + "\n").encode("utf-8")
    args, stdin = input_args(source, data, tmp_path / "in.jsonl")
    result = _predict(built, args, stdin=stdin)
    records = _strict_records(result.stdout_bytes)
    assert len(records) == len(lines)
    expected_errors = dict(BAD_LINES)
    for n, (line, record) in enumerate(zip(lines, records), 1):
        if line in expected_errors:
            assert record["line"] == n and record["error"].startswith(expected_errors[line]), (n, record)
            assert "id" not in record or math.isfinite(record["id"])
        else:
            assert record.get("id") in (7, int("9" * 4000)) and set(LABELS) == set(record["probabilities"]), n
    assert records[-1]["id"] == int("9" * 4000)
    assert result.exit_code == 2
    assert result.stderr == f"kdedge-run: error: {len(BAD_LINES)} of {len(lines)} inputs failed\n"


def test_bad_lines_in_a_real_process_never_end_the_batch(built):
    """The reported case: 100 lines, one with a 5,000-digit id and one nested 100,000 deep."""
    lines = [GOOD] * 100
    lines[30] = '{"text": "股市", "id": ' + "9" * 5000 + "}"
    lines[63] = '{"text": "股市", "id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines[80] = '{"text": "股市", "id": -1e999}'
    rc, out, err, _ = _process(RUN + ["predict", "--model", str(built["gru"].path), "--input", "-"],
                               stdin=("\n".join(lines) + "\n").encode())
    records = _strict_records(out)
    assert len(records) == 100 and rc == 2
    assert [r["line"] for r in records if "error" in r] == [31, 64, 81]
    assert err == "kdedge-run: error: 3 of 100 inputs failed\n"


# ===================================================================================================
# Defect 3: bounded work and memory per text
# ===================================================================================================

def _unlimited(pre: Preprocessor) -> Preprocessor:
    return Preprocessor(pre.tokenizer, pre.vocab, {}, pre.convert)  # empty spec: whole text, as training


def _model_ids(pre: Preprocessor, tokens: list[str]):
    return pre.ids(tokens)[0]


@pytest.mark.parametrize("name", ["gru", "jieba", "han"])
def test_cut_before_segmenting_keeps_what_the_model_reads(built, name):
    """The kept part gives the model the same ids as the whole text for every text that fits, and
    for long texts whose kept part ends at a segmentation boundary (docs/bundle.md "Long texts")."""
    from kdedge_run.text import TOKEN_CHARS

    pre = built[name].preprocessor
    full = _unlimited(pre)
    limit = pre.limit
    assert limit == TOKEN_CHARS * int(np.prod(pre.ids([])[0].shape))
    sentence = CORPUS[0] + " \t " + CORPUS[2] + "\u3000" * 3  # whitespace runs, t2s characters
    texts = [
        sentence,
        "股" * limit,                                   # exactly the limit: not cut
        "  \n".join(["股市"] * (limit // 2)) + " " * 10_000,  # whitespace does not count
        sentence * (4 * limit // len(sentence)),       # long: cut at a block boundary
        "头" * (limit + 1),                             # one jieba block: cut inside it
        "头" * (3 * limit + 1),
        "ＡＰＰ更新　" * limit,
    ]
    for text in texts:
        tokens, cut = pre.segment(text)
        whole = full.tokens(text)
        assert cut == (sum(not c.isspace() for c in text) > limit), text[:20]
        if not cut:
            assert tokens == whole
        np.testing.assert_array_equal(_model_ids(pre, tokens), _model_ids(pre, whole), err_msg=text[:20])


def test_char_segmenter_is_exact_for_every_text_that_fits(built):
    pre = built["gru"].preprocessor
    full = _unlimited(pre)
    rng = np.random.default_rng(0)
    alphabet = list("股市大涨手机 \t\u3000\n。！x") + ["\x00", "\ud800"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 3 * pre.limit))))
        tokens, cut = pre.segment(text)
        whole = full.tokens(text)
        if len(whole) <= 16:  # fits max_len: never cut, identical
            assert not cut and tokens == whole
        assert tokens == whole[:len(tokens)] and (cut or tokens == whole)


def test_long_text_work_is_bounded_and_reported(built):
    """'头' × 500,000 (jieba, no dictionary word: one HMM block) took minutes; 1 MB of 'x' 29 s."""
    clf = kdedge_run.load(built["jieba"].path)
    for text in ("头" * 500_000, "x" * MB, "股市 " * (MB // 3), " " * MB + "股市"):
        start = time.perf_counter()
        p = clf.predict(text)
        assert time.perf_counter() - start < 2.0, text[:3]
        assert p.truncated is (text[0] != " ")
        assert all(math.isfinite(v) for v in p.probabilities.values())
        assert p.tokens <= clf._bundle.preprocessor.limit


def test_a_huge_line_is_read_in_bounded_memory_and_reported_truncated(built, tmp_path):
    small = "股市大涨\n".encode()
    big = b"x" * (128 * MB) + b"\n"
    cmd = RUN + ["predict", "--model", str(built["gru"].path), "--input", "-"]
    rc, out, _, base = _process(cmd, stdin=small)
    assert rc == 0
    start = time.perf_counter()
    rc, out, err, peak = _process(cmd, stdin=big + small)
    seconds = time.perf_counter() - start
    records = _strict_records(out)
    assert rc == 0, err
    assert len(records) == 2 and records[0]["truncated"] is True and records[1]["truncated"] is False
    assert peak - base < 100, (base, peak)  # the old reader held the line, its copies and a token list
    assert seconds < 30


def test_lines_longer_than_the_read_limit(built):
    from kdedge_run.lines import MAX_LINE_BYTES

    spaces = b"a" + b" " * (MAX_LINE_BYTES + 10) + b"b\n"        # cut: only whitespace was left out
    json_line = b'{"text": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    result = _predict(built, ["--input", "-"], stdin=spaces + json_line + "股市\n".encode())
    records = _strict_records(result.stdout_bytes)
    assert len(records) == 3
    assert records[0]["truncated"] is True
    assert records[1]["line"] == 2 and records[1]["error"].startswith("JSON line longer than")
    assert records[2]["truncated"] is False and result.exit_code == 2


# ===================================================================================================
# Defect 4: --threads bounded by the usable cores (clamped), CLI and API
# ===================================================================================================

@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_threads_are_clamped_to_the_usable_cores(built, backend):
    from kdedge_run.backends import usable_cores

    clf = kdedge_run.load(built["gru"].path, backend=backend, threads=100_000)
    assert clf.threads == usable_cores() == len(os.sched_getaffinity(0))
    assert kdedge_run.load(built["gru"].path, backend=backend, threads=1).threads == 1
    for bad in (0, -3, True, 2.0, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            kdedge_run.load(built["gru"].path, backend=backend, threads=bad)
    rc, out, err, _ = _process(RUN + ["predict", "--model", str(built["gru"].path), "--backend", backend,
                                      "--threads", "100000", "股市大涨"], timeout=60)
    assert rc == 0, (rc, err)  # was: segfault (tflite), 16.5 GB and 7 minutes (onnx)
    assert len(_strict_records(out)) == 1


def test_threads_help_states_the_bound():
    result = CliRunner().invoke(run_cli, ["predict", "--help"])
    assert "clamped" in result.output and "sched_getaffinity" in result.output


# ===================================================================================================
# Defect 5: never a non-finite probability
# ===================================================================================================

def _nan_above(threshold: float, shape, n_labels: int) -> bytes:
    """An ONNX model: logits = bias, plus NaN when max|x| > threshold (sqrt of a negative number)."""
    from onnx import TensorProto, helper, numpy_helper

    axes = list(range(1, len(shape) + 1))
    nodes = [helper.make_node("Abs", ["embedded"], ["abs"]),
             helper.make_node("ReduceMax", ["abs"], ["peak"], axes=axes, keepdims=0),
             helper.make_node("Sub", ["peak", "threshold"], ["over"]),
             helper.make_node("Relu", ["over"], ["pos"]),
             helper.make_node("Neg", ["pos"], ["neg"]),
             helper.make_node("Sqrt", ["neg"], ["root"]),
             helper.make_node("Unsqueeze", ["root", "axis1"], ["column"]),
             helper.make_node("Add", ["column", "bias"], ["logits"])]
    inits = [numpy_helper.from_array(np.array(threshold, np.float32), "threshold"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.linspace(-1, 1, n_labels).astype(np.float32), "bias")]
    graph = helper.make_graph(nodes, "nan_above", [helper.make_tensor_value_info(
        "embedded", TensorProto.FLOAT, [None, *shape])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, [None, n_labels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _with_onnx_model(path: Path, model: bytes, change=None) -> None:
    """Replace the bundle's models by one ONNX file (no attention) and refresh the checksums."""
    (path / "model.tflite").unlink(missing_ok=True)
    (path / "model.onnx").write_bytes(model)
    manifest = {k: v for k, v in read_manifest(path).items() if k != "files"}
    entry = next(e for e in manifest["models"] if e["format"] == "onnx")
    manifest["models"] = [{**entry, "attention_name": None}]
    if change:
        change(manifest)
    write_manifest(path, manifest)


def test_probe_catches_a_model_finite_only_on_zeros(copy_of):
    path = copy_of("gru")
    _with_onnx_model(path, _nan_above(0.0, [16, DIM], len(LABELS)))
    with pytest.raises(BundleError, match=r"^model.onnx: test inference gave NaN or infinite logits \(on an "
                                          r"input of vocabulary rows\)"):
        kdedge_run.load(path)


def test_a_text_the_model_gives_nan_for_is_an_error_never_a_probability(copy_of):
    path = copy_of("gru")
    _with_onnx_model(path, _nan_above(1e29, [16, DIM], len(LABELS)))
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    trigger = vocab[-2]  # beyond the ids the load probe feeds (1..16), so the probe passes
    assert vocab.index(trigger) > 16
    table = np.load(path / "vectors.npy")
    table[vocab.index(trigger), 0] = 1e30
    np.save(path / "vectors.npy", table)
    write_manifest(path, {k: v for k, v in read_manifest(path).items() if k != "files"})
    clf = kdedge_run.load(path)
    assert math.isfinite(clf.predict("股市").probabilities[LABELS[0]])
    with pytest.raises(ValueError, match="^the model gave a NaN or infinite output for this text"):
        clf.predict("股市" + trigger)
    with pytest.raises(ValueError, match="^text 1: the model gave a NaN"):
        clf.predict(["股市", trigger])
    with pytest.raises(ValueError, match="^text 2: the model gave a NaN"):  # the input index, not the batch's
        clf.predict(["股市手机大涨股市", "股市", trigger + "股市手机", trigger])  # sorted, text 3 runs first
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(path), trigger])
    assert result.exit_code == 2
    assert _strict_records(result.stdout_bytes)[0]["error"].startswith("the model gave a NaN")
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(path), "--input", "-"],
                                input=f"股市\n{trigger}\n手机\n".encode())
    records = _strict_records(result.stdout_bytes)
    assert [("error" in r) for r in records] == [False, True, False] and result.exit_code == 2


def test_int8_scales_that_overflow_float32_are_refused(copy_of):
    """Each scale 3e38 is finite, but 127 × 3e38 is not: the embedded input would be ±inf → NaN."""
    path = copy_of("jieba")
    np.save(path / "vectors.scales.npy", np.full(len(np.load(path / "vectors.scales.npy")), 3e38, np.float32))
    write_manifest(path, {k: v for k, v in read_manifest(path).items() if k != "files"})
    with pytest.raises(BundleError, match=r"^vectors.scales.npy: row \d+: scale × int8 value overflows float32"):
        kdedge_run.load(path)


def test_threshold_nan_is_refused_by_option_checking(built):
    for value in ("nan", "NaN", "-nan", "inf", "1.5"):
        result = _predict(built, ["--threshold", value, "股市"])
        assert result.exit_code == 2 and result.stdout == ""
        assert "--threshold" in result.stderr, value
    clf = kdedge_run.load(built["gru"].path)
    for value in (math.nan, math.inf, -0.1, "0.5"):
        with pytest.raises(ValueError, match="threshold must be within"):
            clf.predict("股市", threshold=value)
    assert clf.predict("股市", threshold=np.float32(0.0)).labels


# ===================================================================================================
# Defect 6: hostile bundles → BundleError naming the file and key, never another exception
# ===================================================================================================

def _edit(path: Path, change) -> None:
    manifest = {k: v for k, v in read_manifest(path).items() if k != "files"}
    change(manifest)
    write_manifest(path, manifest)


def _raw_manifest(path: Path, old: str, new: str) -> None:
    """Replace text in manifest.json as written (for values json.dumps cannot write)."""
    text = (path / "manifest.json").read_text(encoding="utf-8")
    assert old in text
    (path / "manifest.json").write_text(text.replace(old, new, 1), encoding="utf-8")


def _refused(path: Path, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(path)
    result = CliRunner().invoke(run_cli, ["info", "--model", str(path)])
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith("kdedge-run: error: ") and "unexpected" not in result.stderr


def _npy_claiming(shape, dtype="<f4") -> bytes:
    """A .npy file whose header claims `shape` but that holds 16 bytes of data."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(16)


HOSTILE_BUNDLES = {  # case → (bundle, change(path), message)
    "temperature 10**400": ("gru", lambda p: _edit(p, lambda m: m["calibration"]["temperatures"].__setitem__(
        0, 10 ** 400)), r"^manifest.json: temperatures must be .*; calibration.temperatures\[0\] is 1000"),
    "temperature 1e-300": ("gru", lambda p: _edit(p, lambda m: m["calibration"]["temperatures"].__setitem__(
        1, 1e-300)), r"^manifest.json: temperatures must be .*calibration.temperatures\[1\]"),
    "threshold 10**400": ("gru", lambda p: _edit(p, lambda m: m["thresholds"].__setitem__(2, 10 ** 400)),
                          r"^manifest.json: thresholds must be within \[0, 1\]; thresholds\[2\]"),
    "threshold a string": ("gru", lambda p: _edit(p, lambda m: m["thresholds"].__setitem__(0, "0.5")),
                           r"^manifest.json: thresholds must be within \[0, 1\]; thresholds\[0\] is '0.5'"),
    "manifest nested 100,000 levels": ("gru", lambda p: _raw_manifest(
        p, '"metrics": {', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "metrics": {'),
        "^manifest.json: not valid UTF-8 JSON: nested too deeply"),
    "5,000-digit integer": ("gru", lambda p: _raw_manifest(p, '"size": ', '"size": ' + "9" * 5000 + ", \"x\": "),
                            "^manifest.json: not valid UTF-8 JSON: .*4300"),
    "4,000-digit max_len": ("gru", lambda p: _edit(p, lambda m: m["input"].update(max_len=10 ** 3999)),
                            "^manifest.json: input.max_len must be a positive integer of at most"),
    "max_len 10**9 with dim 8": ("gru", lambda p: _edit(p, lambda m: m["input"].update(max_len=10 ** 9)),
                                 r"^manifest.json: input.max_len must be .* at most 4194304, got 1000000000"),
    "vocab.size 10**30": ("gru", lambda p: _edit(p, lambda m: m["vocab"].update(size=10 ** 30)),
                          "^manifest.json: vocab.size must be an integer >= 2"),
    "embeddings.dim huge": ("gru", lambda p: _edit(p, lambda m: m["embeddings"].update(dim=2 ** 40)),
                            "^manifest.json: embeddings.dim must be a positive integer of at most"),
    "sha256 not hex": ("gru", lambda p: _raw_manifest(p, '"sha256": "', '"sha256": "zz'),
                       "^manifest.json: entry for .* needs 'sha256' \\(64 hex digits\\)"),
    "1000 sentence-end tokens": ("han", lambda p: _edit(p, lambda m: m["input"].update(
        sentence_end_tokens=["。"] * 1000)), "^manifest.json: input.sentence_end_tokens must be a list of at most"),
    "hmm not a bool": ("jieba", lambda p: _edit(p, lambda m: m["segmenter"].update(hmm="no")),
                       "^manifest.json: segmenter.hmm must be true or false"),
    ".npy header claiming 10^12 elements": ("gru", lambda p: (
        (p / "vectors.npy").write_bytes(_npy_claiming((1_000_000, 1_000_000))), _edit(p, lambda m: None)),
        r"^vectors.npy: shape \[1000000, 1000000\], expected \[vocab.size, dim\]"),
    ".npy header larger than its data": ("jieba", lambda p: (
        (p / "vectors.scales.npy").write_bytes(_npy_claiming((read_manifest(p)["vocab"]["size"],))),
        _edit(p, lambda m: None)), r"^vectors.scales.npy: header declares \[\d+\] float32 \(\d+ bytes\) but the "
                                   r"file holds 16"),
    "dictionary frequency -5": ("jieba", lambda p: (
        (p / "segmenter" / "dict.txt").write_text("股市 -5\n" + (p / "segmenter" / "dict.txt").read_text("utf-8"),
                                                  encoding="utf-8"), _edit(p, lambda m: None)),
        "^segmenter/dict.txt: cannot read: line 1: frequency '-5' of '股市' is not an integer"),
    "dictionary frequency 5,000 digits": ("jieba", lambda p: (
        (p / "segmenter" / "dict.txt").write_text("股市 " + "9" * 5000 + "\n", encoding="utf-8"),
        _edit(p, lambda m: None)), "^segmenter/dict.txt: cannot read: line 1: frequency"),
    "dictionary word of 20,000 characters": ("jieba", lambda p: (
        (p / "segmenter" / "dict.txt").write_text("股" * 20_000 + " 3\n", encoding="utf-8"),
        _edit(p, lambda m: None)), "^segmenter/dict.txt: words too long"),
    "t2s value a 1 MB string": ("jieba", lambda p: (
        (p / "segmenter" / "t2s.json").write_text(json.dumps({"這": "这" * MB}), encoding="utf-8"),
        _edit(p, lambda m: None)), "^segmenter/t2s.json: must be a JSON object .* single characters"),
}


@pytest.mark.parametrize("case", HOSTILE_BUNDLES)
def test_hostile_bundle_values_are_refused_naming_file_and_key(copy_of, case):
    name, change, message = HOSTILE_BUNDLES[case]
    path = copy_of(name)
    change(path)
    _refused(path, message)


def test_onnx_with_dynamic_length_and_max_len_10_9_is_refused_before_allocating(copy_of):
    """A model that accepts any length would let max_len 10^9 allocate 32 GB at the load probe."""
    path = copy_of("gru")
    _with_onnx_model(path, _nan_above(1e30, ["length", DIM], len(LABELS)),
                     lambda m: (m["input"].update(max_len=10 ** 9),
                                m["models"][0].update(input_shape=[None, 10 ** 9, DIM])))
    _refused(path, r"^manifest.json: input.max_len must be a positive integer of at most 4194304")
    _with_onnx_model(path, _nan_above(1e30, ["length", DIM], len(LABELS)),
                     lambda m: (m["input"].update(max_len=600_000),
                                m["models"][0].update(input_shape=[None, 600_000, DIM])))
    _refused(path, r"^manifest.json: input \[600000\] × embeddings.dim 8 is more than 4194304 model input")


def _without_root_file_access() -> None:
    """In a child about to exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so that even root gets 'Permission denied' from a mode-000 file."""
    if os.geteuid() != 0:
        return
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(77)


def test_unreadable_files_are_a_bundle_error(built, tmp_path):
    """PermissionError escaped the API (as root too: the load runs without root's file access)."""
    root = tmp_path / "unreadable"
    shutil.copytree(built["jieba"].path, root / "bundle")
    for rel, message in (("vocab.txt", "^vocab.txt: cannot read: .*Permission denied"),
                         ("manifest.json", "^manifest.json: cannot read: .*Permission denied"),
                         ("segmenter", "segmenter: cannot read: Permission denied")):
        target = root / "bundle" / rel
        os.chmod(target, 0o000)
        script = (f"import kdedge_run\ntry:\n    kdedge_run.load({str(root / 'bundle')!r})\n"
                  f"except kdedge_run.BundleError as e:\n    print('BundleError', e)\n")
        rc, out, err, _ = _process([sys.executable, "-c", script], preexec_fn=_without_root_file_access)
        os.chmod(target, 0o755 if target.is_dir() else 0o644)
        if rc == 77:
            pytest.skip("cannot drop root's file access capabilities here")
        assert rc == 0 and "Traceback" not in err, err
        text = out.decode()
        assert text.startswith("BundleError "), text
        assert re.search(message, text.removeprefix("BundleError ").strip()), text


# ===================================================================================================
# Defect 7: label names never break text output or reach the terminal raw
# ===================================================================================================

HOSTILE_LABELS = ["fin\nance", "te\tch,x", "fo\x00od\x1b[31m", "sp\u202eorts|\\"]


def test_label_names_are_escaped_in_text_output_and_info(copy_of):
    path = copy_of("gru")
    _edit(path, lambda m: m.update(labels=HOSTILE_LABELS))
    result = CliRunner().invoke(run_cli, ["predict", "--model", str(path), "--format", "text",
                                          "--threshold", "0", "股市\x1b[2J\u202e大涨"])
    assert result.exit_code == 0
    line = result.stdout
    assert line.endswith("\n") and line.count("\n") == 1 and line.count("\t") == 1
    assert all(c.isprintable() for c in line[:-1].replace("\t", "")), repr(line)
    labels, text = line[:-1].split("\t")
    assert sorted(labels.split(",")) == sorted(["fin\\x0aance", "te\\x09ch\\x2cx", "fo\\x00od\\x1b[31m",
                                                 "sp\\u202eorts|\\x5c"])
    assert text == "股市\\x1b[2J\\u202e大涨"
    json_out = CliRunner().invoke(run_cli, ["predict", "--model", str(path), "--threshold", "0", "股市\u202e"])
    assert set(_strict_records(json_out.stdout_bytes)[0]["labels"]) == set(HOSTILE_LABELS)  # JSON: exact
    assert json_out.stdout[:-1].isprintable(), repr(json_out.stdout)  # …and \u-escaped (was: a raw U+202E)
    info_json = CliRunner().invoke(run_cli, ["info", "--model", str(path), "--format", "json"])
    assert info_json.exit_code == 0 and info_json.stdout.replace("\n", "").isprintable()
    assert json.loads(info_json.stdout)["labels"] == HOSTILE_LABELS
    info = CliRunner().invoke(run_cli, ["info", "--model", str(path)])
    assert info.exit_code == 0
    assert all(c.isprintable() for c in info.stdout.replace("\n", "")), "raw control character in info"
    assert "fin\\x0aance" in info.stdout and "sp\\u202eorts" in info.stdout


def test_label_names_cannot_break_the_model_card_or_the_plot():
    """A label `$\\foo{$` trained but could never be exported (matplotlib mathtext ParseFatalException)."""
    from kdedge_export.card import _cell, label_f1_png

    labels = ["$\\foo{$", "a|b\nc", "sp\u202eorts"]
    f1 = dict(zip(labels, [0.5, 0.2, 0.9]))
    assert label_f1_png(labels, f1, f1, "t").startswith(b"\x89PNG")
    assert [_cell(lab) for lab in labels] == ["$\\x5cfoo{$", "a\\|b\\x0ac", "sp\\u202eorts"]


# ===================================================================================================
# Defect 10: closed standard streams, broken pipes, arguments under a C locale
# ===================================================================================================

def test_closed_stdout_or_stdin_gives_a_clear_message(built):
    model = str(built["gru"].path)
    rc, _, err, _ = _process(RUN + ["predict", "--model", model, "股市"], preexec_fn=lambda: os.close(1))
    assert (rc, err) == (2, "kdedge-run: error: standard output is closed\n")
    rc, out, err, _ = _process(RUN + ["predict", "--model", model, "--input", "-"], preexec_fn=lambda: os.close(0))
    assert rc == 2 and out == b"" and err.startswith("kdedge-run: error: ") and "standard input is closed" in err


def test_broken_pipe_ends_quietly(built, tmp_path):
    (tmp_path / "in.txt").write_text("股市大涨\n" * 20_000, encoding="utf-8")
    proc = subprocess.Popen(RUN + ["predict", "--model", str(built["gru"].path), "--input", str(tmp_path / "in.txt")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["labels"] is not None
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(timeout=120) in (0, 1)
    assert proc.stderr.read() == b""


def test_arguments_are_utf8_under_a_c_locale(built):
    """With LC_ALL=C and PYTHONUTF8=0 Python decodes argv as ASCII; '股市' became 'empty text'."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    cmd = RUN + ["predict", "--model", str(built["gru"].path)]
    rc, out, err, _ = _process(cmd + ["股市大涨", ""], env=env)
    records = _strict_records(out)
    expected = kdedge_run.load(built["gru"].path).predict("股市大涨")
    assert records[0]["probabilities"] == pytest.approx(expected.probabilities)
    assert records[1] == {"argument": 2, "error": "empty text"} and rc == 2


# ===================================================================================================
# Defect 1: --force replaces only a kdedge bundle / run (or an empty directory)
# ===================================================================================================

def _snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_export_force_never_replaces_the_source_run_or_other_files(built, tmp_path):
    from kdedge_export import ExportError, export_run
    from kdedge_export.bundle import check_out

    proj = tmp_path / "proj"
    (proj / "run").mkdir(parents=True)
    (proj / "run" / "config.json").write_text("{}")
    (proj / "notes.txt").write_text("n")
    before = _snapshot(proj)
    with pytest.raises(ExportError, match="holds the run directory"):
        export_run(proj / "run", proj, force=True)
    other = tmp_path / "other"
    shutil.copytree(proj, other)
    with pytest.raises(ExportError, match=r"not a kdedge bundle: it holds notes.txt, run/config.json; "
                                          "--force replaces only a kdedge bundle or an empty directory"):
        export_run(proj / "run", other, force=True)
    assert _snapshot(proj) == before and _snapshot(other) == before
    bundle = copy_built(built, "gru", tmp_path / "bundle")
    check_out(bundle, force=True)                      # a bundle: replaceable
    (bundle / "segmenter").mkdir()
    check_out(bundle, force=True)                      # an empty directory inside changes nothing
    (bundle / "segmenter" / "mine.txt").write_text("x")
    with pytest.raises(ExportError, match="it holds segmenter/mine.txt"):
        check_out(bundle, force=True)
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        check_out(tmp_path / "file", force=True)


def test_export_force_command_refuses_a_project_folder(tmp_path):
    proj = tmp_path / "proj"
    (proj / "run").mkdir(parents=True)
    (proj / "run" / "config.json").write_text("{}")
    (proj / "notes.txt").write_text("n")
    before = _snapshot(proj)
    rc, _, err, _ = _process(KDEDGE + ["export", str(proj / "run"), "--out", str(proj), "--force"], timeout=300)
    assert rc == 2 and err.startswith("kdedge: error: ") and "holds the run directory" in err, err
    assert _snapshot(proj) == before


def test_train_force_replaces_only_a_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for rel in ("config.json", "metrics.json", "kd.keras", "predictions/val_kd.npy", "segmenter/dict.txt"):
        (run / rel).parent.mkdir(exist_ok=True)
        (run / rel).write_text("old")
    tmp = files.staging_dir(run, force=True)           # a run: replaceable
    (tmp / "config.json").write_text("new")
    files.commit_dir(tmp, run)
    assert _snapshot(run) == {"config.json": b"new"}
    (run / "data.jsonl").write_text("mine")
    with pytest.raises(FileExistsError, match="not a kdedge run directory: it holds data.jsonl"):
        files.staging_dir(run, force=True)
    (run / "data.jsonl").unlink()
    tmp = files.staging_dir(run, force=True)
    (run / "notes.txt").write_text("appeared while training")
    with pytest.raises(FileExistsError, match="it holds notes.txt"):
        files.commit_dir(tmp, run)                     # checked again at the last moment
    assert (run / "notes.txt").exists()
    shutil.rmtree(tmp)


def test_train_out_a_regular_file_with_force_is_refused_up_front(tmp_path):
    from conftest import make_corpus, write_jsonl

    data = write_jsonl(tmp_path / "data.jsonl", make_corpus(30))
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    rc, _, err, _ = _process(KDEDGE + ["train", "--data", data, "--out", str(target), "--force", "--mode", "student",
                                       "--epochs", "1", "-q"], timeout=600)
    assert rc == 2 and "exists and is not a directory" in err and "Errno" not in err, err
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "results.txt"]  # no .old, no staging


def test_a_terminal_escape_in_a_manifest_file_name_reaches_stderr_escaped(copy_of):
    """A model file named with an OSC sequence (sets the terminal's title) and a bidi override, checksums
    recomputed, that onnxruntime cannot load: the backend's refusal quoted the name raw. Every message of the
    command line is now shown escaped (one line, printable)."""
    path = copy_of("gru")
    hostile = "m\x1b]0;pwned\x07\u202e.onnx"

    def rename(manifest):
        for entry in manifest["models"]:
            if entry["file"].endswith(".onnx"):
                (path / entry["file"]).rename(path / hostile)
                (path / hostile).write_bytes(b"not an onnx model")
                entry["file"] = hostile
    _edit(path, rename)
    result = CliRunner().invoke(run_cli, ["info", "--model", str(path), "--backend", "onnx"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("kdedge-run: error: ") and result.stderr.count("\n") == 1
    assert all(c.isprintable() for c in result.stderr[:-1]), repr(result.stderr)
    assert "m\\x1b]0;pwned\\x07\\u202e.onnx" in result.stderr
