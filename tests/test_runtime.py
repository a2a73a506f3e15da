"""kdedge-run against real bundles: tiny TF models converted to ONNX and TFLite (runtime_bundle_factory)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kdedge_run
from kdedge_run import BundleError
from kdedge_run.cli import main as cli
from runtime_bundle_factory import (CORPUS, LABELS, THRESHOLDS, build_bundle, classifier_cache, copy_built,
                                    read_manifest, write_manifest)

BUNDLES = {  # name → build_bundle arguments
    "gru_att": {},
    "textcnn_f16": {"arch": "textcnn", "dtype": "float16"},
    "int8": {"dtype": "int8"},
    "jieba_t2s": {"segmenter": "jieba", "t2s": True},
    "han": {"arch": "han", "segmenter": "jieba", "dtype": "int8"},
}
BACKENDS = ("onnx", "tflite")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {name: build_bundle(root / name, **kwargs) for name, kwargs in BUNDLES.items()}


@pytest.fixture(scope="session")
def classifiers(built):
    return classifier_cache(built)


@pytest.fixture
def copy_of(built, tmp_path):
    """A writable copy of a built bundle."""
    def make(name: str = "gru_att") -> Path:
        return copy_built(built, name, tmp_path / name)
    return make


def _matrix(predictions) -> np.ndarray:
    return np.array([[p.probabilities[label] for label in LABELS] for p in predictions])


# --- predictions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", BUNDLES)
def test_probabilities_match_numpy_reference(built, classifiers, name, backend):
    clf = classifiers(name, backend)
    predictions = clf.predict(CORPUS)
    expected = built[name].reference(CORPUS)
    np.testing.assert_allclose(_matrix(predictions), expected, atol=2e-6)
    for p, row in zip(predictions, expected):
        passing = sorted((i for i in range(len(LABELS)) if row[i] >= THRESHOLDS[i]), key=lambda i: -row[i])
        assert p.judged == (p.coverage > 0)  # no abstain.min_coverage: only nothing in vocabulary abstains
        assert p.labels == ([LABELS[i] for i in passing] if p.judged else [])
    assert any(p.judged for p in predictions)


def test_single_text_gives_one_prediction(classifiers):
    clf = classifiers("gru_att")
    short, long = clf.predict("股市大涨"), clf.predict("股市大涨" * 10)
    assert isinstance(short, kdedge_run.Prediction)
    assert (short.tokens, short.truncated) == (4, False)
    assert (long.tokens, long.truncated) == (40, True)
    assert clf.predict(["股市大涨"])[0] == short
    assert clf.labels == LABELS and clf.backend == "onnx"


def test_batches_larger_than_64_keep_order(built, classifiers):
    texts = [CORPUS[i % len(CORPUS)][: 3 + i % 11] for i in range(150)]
    np.testing.assert_allclose(_matrix(classifiers("gru_att").predict(texts)),
                               built["gru_att"].reference(texts), atol=2e-6)


def test_batches_are_sorted_by_length_yet_each_text_gets_its_own_result_in_input_order():
    """Texts of 1 to 300 characters in random order: predicted as one list (run in batches of similar length;
    the default bundle's graph cuts a batch's padding after its longest text) they get exactly what each gets
    alone, in input order."""
    clf = kdedge_run.load()
    rng = np.random.default_rng(0)
    alphabet = "股市大涨医院头痛發燒咳嗽藥物血壓心臟，。"
    texts = ["".join(rng.choice(list(alphabet), size=n)) for n in rng.permutation(np.arange(1, 301))[:150]]
    batch = clf.predict(texts)
    alone = [clf.predict(t) for t in texts]
    assert max(abs(b.probabilities[k] - a.probabilities[k]) for b, a in zip(batch, alone) for k in clf.labels) <= 1e-6
    assert [p.labels for p in batch] == [p.labels for p in alone]
    # in input order; read whole (windows of 128, docs/bundle.md "Long texts (windows)")
    assert [(p.tokens, p.truncated) for p in batch] == [(len(t), False) for t in texts]
    assert [p.windows for p in batch] == [1 if len(t) <= 128 else 1 + -(-(len(t) - 128) // 64) for t in texts]
    each = clf._predict_each(["股市", "", 3, "   ", "头痛"])  # the streaming commands' rule
    assert each[0] == clf.predict("股市") and each[4] == clf.predict("头痛")
    assert [type(e).__name__ for e in each[1:4]] == ["InputError", "TypeError", "InputError"]


def test_thresholds_k_and_global_threshold(built, classifiers):
    clf = classifiers("gru_att")
    text = CORPUS[0]
    probs = built["gru_att"].reference([text])[0]
    by_prob = [LABELS[i] for i in np.argsort(-probs)]
    tuned = [lab for lab in by_prob if probs[LABELS.index(lab)] >= THRESHOLDS[LABELS.index(lab)]]
    assert clf.predict(text).labels == tuned
    assert clf.predict(text, k=1).labels == tuned[:1]
    assert clf.predict(text, threshold=0.0).labels == by_prob
    assert clf.predict(text, threshold=0.0, k=2).labels == by_prob[:2]
    assert clf.predict(text, threshold=1.0).labels == []
    cut = float(np.sort(probs)[1])  # exactly the second-lowest probability passes (>=)
    assert clf.predict(text, threshold=cut).labels == by_prob[:3]
    for bad in ({"k": 0}, {"threshold": 1.5}):
        with pytest.raises(ValueError):
            clf.predict(text, **bad)


def test_empty_text_is_refused(classifiers):
    clf = classifiers("gru_att")
    for text in ("", "   \n\t", "\u3000\x00"):
        with pytest.raises(ValueError, match="empty text"):
            clf.predict(text)
    with pytest.raises(ValueError, match="text 1: empty text"):
        clf.predict(["股市", " "])
    with pytest.raises(TypeError):
        clf.predict([b"bytes"])


def test_char_segmenter_and_normalisation(classifiers):
    clf = classifiers("gru_att")
    assert clf.tokenize("股市 大涨！ＡＢ") == ["股", "市", "大", "涨", "!", "a", "b"]


def test_jieba_segmenter_with_bundled_dictionary_and_t2s(classifiers):
    clf = classifiers("jieba_t2s")
    assert clf.tokenize("今天股市大涨") == ["今天", "股市", "大涨"]
    assert "餐厅" in clf.tokenize("這家餐廳的服務很好")  # converted to simplified, then segmented
    assert "app" in clf.tokenize("ＡＰＰ更新")


def test_han_hierarchical_input_and_explain(built, classifiers):
    for backend in BACKENDS:
        clf = classifiers("han", backend)
        assert clf.info()["input"]["kind"] == "hierarchical"
        text = "今天股市大涨。投资者信心十足！央行宣布降息。球队赢得冠军。"
        weights = clf.explain(text, n=3)
        attention = built["han"].reference_attention(text)
        assert len(weights) == 3
        assert weights[0][0] in clf.tokenize(text)
        assert weights[0][1] == pytest.approx(attention.max(), abs=1e-6)
        assert clf.predict(text).truncated  # 4 sentences > max_sentences 3


def test_explain_sequence_model(built, classifiers):
    clf = classifiers("gru_att", "tflite")
    text = "股市大涨"
    weights = clf.explain(text, n=10)
    attention = built["gru_att"].reference_attention(text)[:4]
    assert [t for t, _ in weights] == [clf.tokenize(text)[i] for i in np.argsort(-attention)]
    np.testing.assert_allclose([w for _, w in weights], np.sort(attention)[::-1], atol=1e-6)


def test_explain_without_attention_is_a_clear_error(classifiers):
    with pytest.raises(BundleError, match="model.onnx: model has no attention output"):
        classifiers("textcnn_f16").explain("股市大涨")


def test_backend_choice(built, copy_of):
    assert kdedge_run.load(built["gru_att"].path).backend == "onnx"
    path = copy_of()
    manifest = read_manifest(path)
    manifest["models"] = [m for m in manifest["models"] if m["format"] == "tflite"]
    (path / "model.onnx").unlink()
    write_manifest(path, manifest)
    assert kdedge_run.load(path).backend == "tflite"
    with pytest.raises(BundleError, match="no onnx model"):
        kdedge_run.load(path, backend="onnx")


def test_default_bundle_missing_is_a_clear_error():
    if (Path(kdedge_run.__file__).parent / "default_model" / "manifest.json").exists():
        pytest.skip("a default bundle is installed")
    with pytest.raises(BundleError, match="no default bundle installed; pass a model directory"):
        kdedge_run.load()


@pytest.mark.slow
def test_thread_safety(classifiers):
    texts = [CORPUS[i % len(CORPUS)][: 2 + i % 13] for i in range(200)]
    for backend in BACKENDS:
        clf = classifiers("jieba_t2s", backend)
        sequential = [clf.predict(t) for t in texts]
        results = [None] * 8

        def work(slot):
            results[slot] = [clf.predict(t) for t in texts]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r == sequential for r in results), backend


def test_runtime_never_imports_tensorflow(built):
    code = (
        "import sys, kdedge_run\n"
        "light = {'numpy', 'onnxruntime', 'jieba', 'ai_edge_litert'} & set(sys.modules)\n"
        "assert not light, light\n"
        "for backend in ('onnx', 'tflite'):\n"
        f"    clf = kdedge_run.load({str(built['jieba_t2s'].path)!r}, backend=backend)\n"
        "    assert clf.predict('今天股市大涨').probabilities\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras',\n"
        "         'torch', 'gensim', 'sklearn')]\n"
        "assert not heavy, heavy[:5]\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- bundle verification ---------------------------------------------------------------------------

def _flip_byte(path: Path):
    data = bytearray((path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.onnx").write_bytes(bytes(data))


def _edit_manifest(path: Path, change, refresh: bool = True):
    manifest = read_manifest(path)
    change(manifest)
    if refresh:
        write_manifest(path, {k: v for k, v in manifest.items() if k != "files"})
    else:
        (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _newer_version(m):
    m["format_version"] = 3


def _five_labels(m):
    m["labels"] = LABELS + ["extra"]
    m["thresholds"] = THRESHOLDS + [0.5]
    m["calibration"]["temperatures"] = m["calibration"]["temperatures"] + [1.0]


def _longer_input(m):
    m["input"]["max_len"] = 20
    for model in m["models"]:
        model["input_shape"][1] = 20


def _vocab_size(m):
    m["vocab"]["size"] += 1


def _threshold_count(m):
    m["thresholds"] = m["thresholds"][:-1]


def _path_escape(m):
    m["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}


def _absolute_path(m):
    m["files"]["/etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}


TAMPERINGS = {
    "flipped byte": (_flip_byte, "model.onnx: SHA-256 mismatch"),
    "missing file": (lambda p: (p / "vocab.txt").unlink(), "vocab.txt: missing"),
    "extra file": (lambda p: (p / "notes.txt").write_text("hi"), "notes.txt: unlisted file"),
    "symlink": (lambda p: (p / "link.txt").symlink_to(p / "vocab.txt"), "link.txt: is a symlink"),
    "truncated file": (lambda p: (p / "vectors.npy").write_bytes((p / "vectors.npy").read_bytes()[:-4]),
                       "vectors.npy: size"),
    "newer format": (lambda p: _edit_manifest(p, _newer_version, refresh=False),
                     "format_version 3 is newer than this kdedge-run reads"),
    "label count vs model": (lambda p: _edit_manifest(p, _five_labels),
                             r"model.onnx: model output logits shape \[None, 4\] does not match \[batch, labels\]"),
    "input shape vs model": (lambda p: _edit_manifest(p, _longer_input), "model.onnx: model input shape"),
    "vocab size": (lambda p: _edit_manifest(p, _vocab_size), "vocab.txt: .* manifest vocab.size says"),
    "thresholds count": (lambda p: _edit_manifest(p, _threshold_count), "'thresholds' must list one number per label"),
    "path leaving dir": (lambda p: _edit_manifest(p, _path_escape, refresh=False), r"\.\./outside.txt: path leaves"),
    "absolute path": (lambda p: _edit_manifest(p, _absolute_path, refresh=False), "/etc/passwd: path leaves"),
    "not json": (lambda p: (p / "manifest.json").write_text("{nope"), "manifest.json: not valid UTF-8 JSON"),
}


@pytest.mark.parametrize("case", TAMPERINGS)
def test_bad_bundle_is_refused(copy_of, case):
    tamper, message = TAMPERINGS[case]
    path = copy_of()
    tamper(path)
    with pytest.raises(BundleError, match=message):
        kdedge_run.load(path)
    result = CliRunner().invoke(cli, ["predict", "--model", str(path), "股市"])
    assert result.exit_code == 2
    assert result.stderr.startswith("kdedge-run: error: ")
    assert "Traceback" not in result.output and result.stdout == ""


def test_bad_npy_and_vocab_are_refused(copy_of):
    path = copy_of()
    np.save(path / "vectors.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(path, lambda m: None)
    with pytest.raises(BundleError, match="vectors.npy: cannot read"):
        kdedge_run.load(path)
    path = copy_of("int8")
    np.save(path / "vectors.scales.npy", np.ones(3, dtype=np.float32))
    _edit_manifest(path, lambda m: None)
    with pytest.raises(BundleError, match=r"vectors.scales.npy: expected float32 \["):
        kdedge_run.load(path)


def test_cli_error_from_real_process_has_no_traceback(copy_of):
    path = copy_of()
    _flip_byte(path)
    result = subprocess.run([sys.executable, "-m", "kdedge_run", "info", "--model", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "kdedge-run: error: model.onnx: SHA-256 mismatch (file changed or corrupt)\n"


def test_cli_bug_shows_its_traceback_while_input_errors_stay_one_line(built, monkeypatch):
    """Only what a user can fix is a one-line error; a bug in kdedge-run (here a backend that fails in a way
    no input can cause) is not dressed up as one."""
    from kdedge_run.classifier import Classifier

    path = str(built["gru_att"].path)
    result = CliRunner().invoke(cli, ["predict", "--model", path, "   "])
    assert result.exit_code == 2 and "empty text" in result.output

    def broken(self, prepared, k, threshold):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(Classifier, "_decide", broken)
    result = CliRunner().invoke(cli, ["predict", "--model", path, "股市大涨"])
    assert isinstance(result.exception, ZeroDivisionError)  # propagates: Python prints the traceback, exit 1
    assert "kdedge-run: error" not in result.output


# --- command line ----------------------------------------------------------------------------------

def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_cli_predict_arguments(built, classifiers):
    path = str(built["gru_att"].path)
    result = CliRunner().invoke(cli, ["predict", "--model", path, CORPUS[0], CORPUS[1]])
    assert result.exit_code == 0, result.stderr
    records = _json_lines(result.stdout)
    expected = classifiers("gru_att").predict(CORPUS[:2])
    assert [r["labels"] for r in records] == [p.labels for p in expected]
    assert records[0]["probabilities"] == pytest.approx(expected[0].probabilities)
    assert set(records[0]) == {"labels", "probabilities", "truncated", "windows", "coverage", "judged"}

    result = CliRunner().invoke(cli, ["predict", "--model", path, "--backend", "tflite", "--format", "text",
                                      "--top-k", "1", "--threshold", "0", CORPUS[0]])
    assert result.exit_code == 0, result.stderr
    top = max(expected[0].probabilities, key=expected[0].probabilities.get)
    assert result.stdout == f"{top}\t{CORPUS[0]}\n"

    result = CliRunner().invoke(cli, ["predict", "--model", path, "--explain", "股市大涨"])
    explanation = _json_lines(result.stdout)[0]["explanation"]
    assert [e["token"] for e in explanation] == [t for t, _ in classifiers("gru_att").explain("股市大涨")]


def test_cli_predict_input_file_with_bad_lines(built, classifiers, tmp_path):
    lines = [
        json.dumps({"id": "a", "text": CORPUS[0]}, ensure_ascii=False).encode(),
        CORPUS[1].encode(),
        b'{"id": 3, "text": ',                        # invalid JSON
        b"",                                          # empty text
        b"\xff\xfe bad utf-8",                        # invalid UTF-8
        json.dumps({"id": "no-text"}).encode(),       # no "text"
        json.dumps({"text": "   "}).encode(),         # whitespace only
        CORPUS[2].encode() + b"\r",                   # CRLF line end
    ] + [f"第{i}条新闻：股市上涨".encode() for i in range(70)]  # spans two batches
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    path = str(built["gru_att"].path)
    clf = classifiers("gru_att")
    for source, stdin in ((str(tmp_path / "in.jsonl"), None), ("-", b"\n".join(lines) + b"\n")):
        result = CliRunner().invoke(cli, ["predict", "--model", path, "--input", source], input=stdin)
        assert result.exit_code == 2
        assert result.stderr == "kdedge-run: error: 5 of 78 inputs failed\n"
        records = _json_lines(result.stdout)
        assert len(records) == len(lines)
        assert records[0]["id"] == "a" and records[0]["labels"] == clf.predict(CORPUS[0]).labels
        assert records[1]["labels"] == clf.predict(CORPUS[1]).labels and "id" not in records[1]
        assert records[2]["line"] == 3 and records[2]["error"].startswith("invalid JSON")
        assert records[3] == {"line": 4, "error": "empty text"}
        assert records[4]["line"] == 5 and records[4]["error"].startswith("invalid UTF-8")
        assert records[5] == {"line": 6, "id": "no-text", "error": 'JSON line needs a string "text" field'}
        assert records[6] == {"line": 7, "error": "empty text"}
        assert records[7]["probabilities"] == pytest.approx(clf.predict(CORPUS[2]).probabilities)
        assert [r["probabilities"] for r in records[8:]] == [
            pytest.approx(p.probabilities) for p in clf.predict([ln.decode() for ln in lines[8:]])]


def test_cli_predict_input_skips_a_byte_order_mark(built, tmp_path):
    """A file saved with a UTF-8 BOM (Windows editors): line 1 is still read as JSON, its id kept."""
    body = [{"id": "first", "text": CORPUS[0]}, {"id": "second", "text": CORPUS[1]}]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in body).encode() + b"\n"
    path = str(built["gru_att"].path)
    plain = _json_lines(CliRunner().invoke(cli, ["predict", "--model", path, "--input", "-"], input=data).stdout)
    result = CliRunner().invoke(cli, ["predict", "--model", path, "--input", "-"], input=b"\xef\xbb\xbf" + data)
    assert result.exit_code == 0 and _json_lines(result.stdout) == plain
    assert [r["id"] for r in plain] == ["first", "second"]


def test_cli_text_format_errors_keep_line_alignment(built):
    result = CliRunner().invoke(cli, ["predict", "--model", str(built["gru_att"].path), "--format", "text",
                                      "--input", "-"], input="股市\n\n{bad\n球队\n".encode())
    assert result.exit_code == 2
    out = result.stdout.split("\n")
    assert out[0].endswith("\t股市") and out[1] == "" and out[2] == "" and out[3].endswith("\t球队")
    assert "line 2: empty text" in result.stderr and "line 3: invalid JSON" in result.stderr


def test_cli_usage_errors(built):
    path = str(built["textcnn_f16"].path)
    for args, message in ((["predict", "--model", path], "give TEXT arguments or --input"),
                          (["predict", "--model", path, "--explain", "股市"], "--explain needs a model"),
                          (["predict", "--model", path, "--top-k", "0", "股市"], "--top-k"),
                          (["predict", "--model", path, "--input", "/nonexistent"], "/nonexistent"),
                          (["info", "--model", "/nonexistent"], "/nonexistent: not a bundle directory")):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("kdedge-run: error: ") and message in result.stderr, result.stderr


def test_cli_info(built):
    path = str(built["han"].path)
    result = CliRunner().invoke(cli, ["info", "--model", path])
    assert result.exit_code == 0, result.stderr
    for needle in ("han (kd), backend onnx", "sports", "0.3500", "2.0000", "vectors.int8.npy",
                   "segmenter/dict.txt", "type=\"jieba\"", "macro_f1", "max_abs_dp", "token_f1"):
        assert needle in result.stdout, needle
    data = json.loads(CliRunner().invoke(cli, ["info", "--model", path, "--format", "json"]).stdout)
    assert data["labels"] == LABELS and data["thresholds"] == THRESHOLDS
    assert {m["format"] for m in data["models"]} == {"onnx", "tflite"}
    assert data["files"]["vocab.txt"] == os.path.getsize(Path(path) / "vocab.txt")
    assert data["parity"]["reference"] == "keras"


def test_cli_info_shows_the_held_out_test_scores():
    """Issue 28: `kdedge-run info` left out `test_metrics` (text and JSON) and printed raw floats."""
    data = json.loads(CliRunner().invoke(cli, ["info", "--format", "json"]).stdout)
    test = data["test_metrics"]
    assert test["texts"] == 1185 and 0.5 < test["macro_f1"] < 1
    text = CliRunner().invoke(cli, ["info"]).stdout
    assert (f"test scores   1185 held-out texts at the bundle's thresholds: micro-F1 {100 * test['micro_f1']:.1f}, "
            f"macro-F1 {100 * test['macro_f1']:.1f}") in text
    assert f"DRUG {100 * test['per_label_f1']['DRUG']:.1f}" in text
    assert "0.8607594936708861" not in text and "micro_f1: 0.8608" in text  # 4 significant digits


def test_a_word_bundle_without_jieba_names_the_extra(built):
    """jieba is the runtime's `[words]` extra (issue 28): character bundles never import it."""
    code = ("import sys; sys.modules['jieba'] = None\n"
            "import kdedge_run\n"
            "kdedge_run.load().predict('头痛')  # the default character bundle: no jieba\n"
            "try:\n"
            f"    kdedge_run.load({str(built['jieba_t2s'].path)!r})\n"
            "except kdedge_run.BundleError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "manifest.json: a word bundle (segmenter jieba) needs jieba: pip install 'kdedge-run[words]'"


def test_cli_without_command_prints_help():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and "predict" in result.stdout and "info" in result.stdout


def test_cli_with_tflite_writes_nothing_to_stderr(built):
    """LiteRT's native "INFO: Created TensorFlow Lite XNNPACK delegate" line is not shown (issue 20)."""
    result = subprocess.run([sys.executable, "-m", "kdedge_run", "predict", "--model", str(built["gru_att"].path),
                             "--backend", "tflite", "股市大涨"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert set(json.loads(result.stdout)) >= {"labels", "probabilities"}
