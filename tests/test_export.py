"""kdedge export: tiny runs trained with the real pipeline on generated data → bundles read by kdedge_run."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kdedge_run
from kdedge.evaluate import sigmoid
from kdedge_export import (ConversionError, ExportError, OptionError, ParityError, RunDirectoryError, ShapeError,
                            VerificationError, export_run)
from kdedge_run import BundleError

pytestmark = pytest.mark.slow  # real training runs exported and converted

ARCHS = ("textcnn", "textrnn", "gru_att", "han")
LABELS = ["SYMP", "DRUG", "SPORT"]
KEYWORDS = {"SYMP": ["发烧", "咳嗽", "头痛", "失眠"], "DRUG": ["阿司匹林", "抗生素", "维生素", "布洛芬"],
            "SPORT": ["跑步", "游泳", "瑜伽", "散步"]}
FILLER = ["最近", "我", "每天", "医生说", "朋友", "觉得", "应该", "怎么办", "可以吗", "好不好", "有点", "还是"]
SMALL = {"textcnn": {"kernel_sizes": [2, 3], "filters": 8}, "textrnn": {"units": 8},
         "gru_att": {"units": 8, "attention_units": 8}, "han": {"units": 8, "attention_units": 8}}


def generated_texts(n: int = 120, seed: int = 0) -> list[dict]:
    """Short Chinese texts whose labels follow from keywords (learnable), 1–3 labels each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = [lab for lab in LABELS if rng.random() < 0.45] or [rng.choice(LABELS)]
        words = [rng.choice(KEYWORDS[lab]) for lab in labels] + rng.sample(FILLER, 3)
        rng.shuffle(words)
        text = "".join(words) + rng.choice("。？！") + rng.choice(FILLER) + "。"
        rows.append({"id": f"t{i:03d}", "text": text, "labels": labels})
    return rows


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    old = os.environ.get("KDEDGE_CACHE")
    os.environ["KDEDGE_CACHE"] = str(root / "cache")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generated_texts()), encoding="utf-8")
    yield root
    if old is None:
        os.environ.pop("KDEDGE_CACHE", None)
    else:
        os.environ["KDEDGE_CACHE"] = old


@pytest.fixture(scope="session")
def run_dir(workdir):
    """arch (, segmenter) → a tiny kd run trained by kdedge.training.train.train_run (trained once, on demand)."""
    from kdedge.config import TrainConfig
    from kdedge.training.train import train_run

    made = {}

    def get(arch: str, segmenter: str = "jieba") -> Path:
        if (arch, segmenter) not in made:
            cfg = TrainConfig(arch=arch, mode="kd", epochs=2, embedding_dim=16, max_len=16, max_sentences=3,
                              max_sentence_len=8, w2v_epochs=1, batch_size=16, val_split=0.25,
                              learning_rate=0.01, segmenter=segmenter, convert="none", arch_params=SMALL[arch])
            out = workdir / f"run_{arch}_{segmenter}"
            train_run(cfg, str(workdir / "data.jsonl"), str(out), progress=False)
            made[arch, segmenter] = out
        return made[arch, segmenter]

    return get


@pytest.fixture(scope="session")
def exported(workdir, run_dir):
    """arch → (bundle path, manifest) of an fp32 onnx+tflite export (exported once)."""
    made = {}

    def get(arch: str):
        if arch not in made:
            out = workdir / f"bundle_{arch}"
            made[arch] = out, export_run(run_dir(arch), out, formats="all", log=lambda m: None)
        return made[arch]

    return get


def _validation(run: Path):
    rows = [json.loads(line) for line in (run / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], rows


def _probs(clf, texts) -> np.ndarray:
    return np.array([[p.probabilities[lab] for lab in clf.labels] for p in clf.predict(texts)])


# --- conversion and parity -------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_export_matches_keras_through_the_runtime(exported, run_dir, arch):
    path, manifest = exported(arch)
    assert sorted(m["format"] for m in manifest["models"]) == ["onnx", "tflite"]
    assert all(m["precision"] == "fp32" for m in manifest["models"])
    assert manifest["embeddings"]["dtype"] == "float32"
    rows = manifest["parity"]["results"]
    assert {(r["format"], r["precision"], r["shipped"]) for r in rows} == {("onnx", "fp32", True),
                                                                           ("tflite", "fp32", True)}
    assert all(r["max_abs_dp"] <= 1e-4 and r["flipped_decisions"] == 0 for r in rows)
    has_attention = arch in ("gru_att", "han")
    assert all((m["attention_name"] is not None) == has_attention for m in manifest["models"])
    # independently of the exporter's parity code: the runtime vs the run's own Keras validation logits
    texts, _ = _validation(run_dir(arch))
    logits = np.load(run_dir(arch) / "predictions" / "val_kd.npy")
    expected = sigmoid(logits / np.asarray(manifest["calibration"]["temperatures"]))
    for backend in ("onnx", "tflite"):
        clf = kdedge_run.load(path, backend=backend)
        assert clf.labels == manifest["labels"] and sorted(clf.labels) == sorted(LABELS)
        np.testing.assert_allclose(_probs(clf, texts), expected, atol=1e-4)
        if has_attention:
            assert clf.explain(texts[0], n=2)


def test_int8_export_reports_fp32_and_int8_rows(workdir, run_dir):
    out = workdir / "bundle_textcnn_int8"
    notes = []
    manifest = export_run(run_dir("textcnn"), out, formats="all", quantize="int8", log=notes.append)
    assert sorted((m["format"], m["precision"]) for m in manifest["models"]) == [("onnx", "int8"), ("tflite", "int8")]
    latency = {r["format"]: r["latency_ms"] for r in manifest["parity"]["results"] if r["shipped"]}
    assert [m["format"] for m in manifest["models"]] == sorted(latency, key=latency.get)  # fastest first
    assert manifest["embeddings"] == {"dim": 16, "dtype": "int8", "file": "vectors.int8.npy",
                                      "scales": "vectors.scales.npy"}
    rows = {(r["format"], r["precision"]): r for r in manifest["parity"]["results"]}
    assert set(rows) == {("onnx", "fp32"), ("tflite", "fp32"), ("onnx", "int8"), ("tflite", "int8")}
    val_texts, _ = _validation(run_dir("textcnn"))
    decisions = len(val_texts) * len(manifest["labels"])
    for fmt in ("onnx", "tflite"):
        fp32, int8 = rows[fmt, "fp32"], rows[fmt, "int8"]
        assert not fp32["shipped"] and int8["shipped"] and int8["vectors"] == "int8"
        assert fp32["max_abs_dp"] <= 1e-4 and fp32["flipped_decisions"] == 0 and fp32["macro_f1_change"] == 0
        assert 0 < int8["max_abs_dp"] < 0.1  # quantisation moves probabilities, a little
        assert int8["flipped_decisions"] <= 0.05 * decisions  # and flips at most 5% of the decisions
        assert abs(int8["macro_f1_change"]) <= 0.05  # macro-F1 (a fraction) within 5 points of Keras
        assert int8["macro_f1"] - fp32["macro_f1"] == pytest.approx(int8["macro_f1_change"], abs=1e-12)
        assert (int8["flipped_decisions"] == 0) <= (int8["macro_f1_change"] == 0)  # no flip, no change
        assert int8["bytes"] == manifest["files"][f"model.{fmt}"]["bytes"]  # (tiny models barely shrink)
    assert any("ConvInteger" in n for n in notes) and manifest["notes"] == notes
    assert not (out / "vectors.npy").exists()
    q = np.load(out / "vectors.int8.npy")
    scales = np.load(out / "vectors.scales.npy")
    assert q.dtype == np.int8 and scales.dtype == np.float32 and not q[0].any() and scales[0] == 0
    from kdedge_export.run import load_keras, load_run

    table = load_keras(load_run(run_dir("textcnn"), "kd"))[2]  # the trained (fine-tuned) table
    np.testing.assert_allclose(q.astype(np.float32) * scales[:, None], table, atol=float(scales.max()) / 2 + 1e-7)
    clf = kdedge_run.load(out, backend="tflite")
    assert clf.predict("我发烧咳嗽怎么办").probabilities
    # ONNX dynamic quantisation scales activations per batch: the runtime predicts int8 ONNX one text at
    # a time, so a text's probabilities do not depend on its batch (issue 18)
    onnx = kdedge_run.load(out, backend="onnx")
    texts, _ = _validation(run_dir("textcnn"))
    alone = np.array([[onnx.predict(t).probabilities[lab] for lab in onnx.labels] for t in texts])
    assert np.abs(_probs(onnx, texts) - alone).max() <= 1e-6


def test_fp16_export(workdir, run_dir):
    import importlib.util

    manifest = export_run(run_dir("gru_att"), workdir / "bundle_gru_fp16", formats="all", quantize="fp16",
                          log=lambda m: None)
    precisions = {m["format"]: m["precision"] for m in manifest["models"]}
    assert precisions["tflite"] == "fp16" and manifest["embeddings"]["dtype"] == "float16"
    if importlib.util.find_spec("onnxconverter_common") is None:
        assert precisions["onnx"] == "fp32"
        assert any("onnxconverter-common" in n for n in manifest["notes"])
    shipped = [r for r in manifest["parity"]["results"] if r["shipped"]]
    assert len(shipped) == 2 and all(r["max_abs_dp"] < 1e-2 for r in shipped)


def test_vectors_dtype_override(workdir, run_dir):
    manifest = export_run(run_dir("textcnn"), workdir / "bundle_cnn_f16vec", formats="onnx",
                          vectors_dtype="float16", log=lambda m: None)
    assert manifest["embeddings"]["dtype"] == "float16" and manifest["models"][0]["precision"] == "fp32"
    rows = manifest["parity"]["results"]
    assert [(r["vectors"], r["shipped"]) for r in rows] == [("float32", False), ("float16", True)]
    assert np.load(workdir / "bundle_cnn_f16vec" / "vectors.npy").dtype == np.float16


def test_onnx_fallback_through_saved_model(workdir, run_dir, monkeypatch):
    import tf2onnx

    def broken(*args, **kwargs):
        raise RuntimeError("simulated tf2onnx Keras 3 bug")

    monkeypatch.setattr(tf2onnx.convert, "from_keras", broken)
    notes = []
    manifest = export_run(run_dir("gru_att"), workdir / "bundle_fallback", formats="onnx", log=notes.append)
    assert any("FALLBACK" in n for n in notes) and any("FALLBACK" in n for n in manifest["notes"])
    entry = manifest["models"][0]
    assert (entry["logits_name"], entry["attention_name"]) == ("logits", "attention")
    assert manifest["parity"]["results"][0]["max_abs_dp"] <= 1e-4


def test_failed_parity_writes_nothing(workdir, run_dir, monkeypatch):
    from kdedge_export import parity

    real = parity.runtime_probabilities
    monkeypatch.setattr(parity, "runtime_probabilities", lambda *a: np.clip(real(*a) + 0.01, 0, 1))
    out = workdir / "parity_fails"
    with pytest.raises(ParityError, match="parity check failed") as err:
        export_run(run_dir("textcnn"), out, formats="onnx", log=lambda m: None)
    assert err.value.tolerance == parity.FP32_TOLERANCE
    assert [r["format"] for r in err.value.rows] == ["onnx"]
    assert all(r["max_abs_dp"] > err.value.tolerance for r in err.value.rows)
    assert not out.exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".parity_fails")]


# --- calibration, thresholds, segmentation ---------------------------------------------------------

def test_calibration_and_metrics_reported(exported):
    _, m = exported("textcnn")
    assert len(m["thresholds"]) == len(m["calibration"]["temperatures"]) == len(LABELS)
    assert all(t > 0 for t in m["calibration"]["temperatures"])
    report = m["calibration_report"]
    assert set(report["ece_before"]) == set(report["ece_after"]) == set(LABELS)
    for key in ("at_0.5", "tuned"):
        assert set(m["metrics"][key]) >= {"micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "per_label_f1"}
    assert m["metrics"]["threshold_source"] == dict.fromkeys(LABELS, "tuned")
    assert report["macro_f1_tuned"] == m["metrics"]["tuned"]["macro_f1"]


def test_thresholds_file_is_honoured(workdir, run_dir):
    wanted = {"SYMP": 0.3, "DRUG": 0.55, "SPORT": 0.7}
    path = workdir / "thresholds.json"
    path.write_text(json.dumps(wanted), encoding="utf-8")
    out = workdir / "bundle_thresholds"
    manifest = export_run(run_dir("textcnn"), out, formats="onnx", thresholds_file=path, log=lambda m: None)
    assert manifest["thresholds"] == [wanted[lab] for lab in manifest["labels"]]
    assert manifest["metrics"]["threshold_source"] == dict.fromkeys(LABELS, "file")
    assert kdedge_run.load(out).info()["thresholds"] == [wanted[lab] for lab in manifest["labels"]]
    path.write_text(json.dumps({"NOPE": 0.5}), encoding="utf-8")
    with pytest.raises(ExportError, match="unknown label"):
        export_run(run_dir("textcnn"), workdir / "bundle_bad_thresholds", thresholds_file=path)


@pytest.mark.parametrize("arch", ["textcnn", "han"])
def test_segmentation_agreement_is_exact_with_jieba(exported, arch):
    path, m = exported(arch)
    assert m["segmenter"]["type"] == "jieba" and m["segmenter"]["trained_with"] == "jieba"
    assert m["segmenter"]["dictionary"] == "segmenter/dict.txt" and (path / "segmenter" / "dict.txt").is_file()
    assert m["segmenter"]["jieba_version"]
    agreement = m["segmentation_agreement"]
    assert agreement["token_f1"] == 1.0
    assert agreement["identical_texts"] == agreement["texts"] == m["parity"]["texts"]
    assert agreement["identical_ids"] == agreement["texts"]  # runtime ids == training ids
    assert m["parity"]["keras_vs_training_logits"] < 1e-4


def test_char_segmenter_run(workdir, run_dir):
    out = workdir / "bundle_char"
    m = export_run(run_dir("textcnn", "char"), out, formats="onnx", log=lambda msg: None)
    assert m["format_version"] == 2  # code points in (tests/test_bundle_v2.py)
    assert m["segmenter"] == {"type": "char", "convert": None, "in_graph": True, "trained_with": "char"}
    assert not (out / "segmenter").exists()
    assert m["segmentation_agreement"]["token_f1"] == 1.0
    assert kdedge_run.load(out).tokenize("发烧 咳嗽") == ["发", "烧", "咳", "嗽"]


def test_ckip_run_ships_jieba_with_its_pinned_dictionary(tmp_path):
    from kdedge_export.run import Run
    from kdedge_export.segmentation import jieba_version, segmenter_spec

    (tmp_path / "segmenter").mkdir()
    (tmp_path / "segmenter" / "dict.txt").write_text("发烧 3\n", encoding="utf-8")
    seg = {"type": "ckip", "convert": "none", "hmm": False, "ckip_model": "/models/bert-tiny-ws/",
           "dictionary": "segmenter/dict.txt", "char_map": None}
    run = Run(tmp_path, {"segmenter": seg}, "kd", LABELS, [], [], np.zeros((0, 3)), np.zeros((0, 3)))
    spec, files = segmenter_spec(run)
    assert spec == {"type": "jieba", "dictionary": "segmenter/dict.txt", "hmm": False, "convert": None,
                    "jieba_version": jieba_version(), "trained_with": "ckip", "trained_with_model": "bert-tiny-ws"}
    assert files == {"segmenter/dict.txt": tmp_path / "segmenter" / "dict.txt"}


# --- the bundle as files ---------------------------------------------------------------------------

def test_bundle_files_are_all_listed_and_verified(exported):
    path, m = exported("gru_att")
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert sorted([*m["files"], "manifest.json"]) == on_disk
    assert {"README.md", "label_f1.png", "vocab.txt", "vectors.npy", "model.onnx", "model.tflite"} <= set(m["files"])
    assert (path / "label_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((path / "manifest.json").read_text(encoding="utf-8")) == m


def test_a_changed_byte_in_any_file_is_detected(exported, tmp_path):
    path, m = exported("textcnn")
    for rel, meta in m["files"].items():
        copy = Path(shutil.copytree(path, tmp_path / rel.replace("/", "_")))
        data = bytearray((copy / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / rel).write_bytes(bytes(data))
        with pytest.raises(BundleError, match="SHA-256 mismatch"):
            kdedge_run.load(copy)
        shutil.rmtree(copy)


def test_refuses_existing_out_unless_forced(workdir, run_dir):
    out = workdir / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="already exists"):
        export_run(run_dir("textcnn"), out, formats="onnx")
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(ExportError, match="not a kdedge bundle"):  # --force never deletes what is not a bundle
        export_run(run_dir("textcnn"), out, formats="onnx", force=True, log=lambda m: None)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    (out / "keep.txt").unlink()
    for _ in ("an empty directory", "a kdedge bundle"):  # what --force may replace
        export_run(run_dir("textcnn"), out, formats="onnx", force=True, log=lambda m: None)
        kdedge_run.load(out)
    assert not [p for p in workdir.iterdir() if p.name.startswith(".existing")]


def test_model_card(exported):
    path, m = exported("han")
    card = (path / "README.md").read_text(encoding="utf-8")
    # the intended use comes from the run (no health wording in a model that was not told so)
    assert "**Intended use:** tagging and routing Chinese texts like those of `data.jsonl`" in card
    assert "they are not decisions" in card and "diagnosis" not in card
    for label, threshold in zip(m["labels"], m["thresholds"]):
        assert f"| {label} |" in card and f"{threshold:.3f}" in card
    assert "## Parity" in card and "## Calibration" in card and "label_f1.png" in card


def test_a_vocabulary_that_does_not_fit_the_model_is_a_shape_error(workdir, run_dir):
    copy = workdir / "run_vocab_plus_one"
    shutil.copytree(run_dir("textcnn"), copy)
    with open(copy / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("多出來的詞\n")
    with pytest.raises(ShapeError, match="vocab.txt has .* tokens but the model's embedding table"):
        export_run(copy, workdir / "b_shape", log=lambda m: None)
    assert not (workdir / "b_shape").exists()


def test_bad_requests_are_typed_export_errors(workdir, run_dir):
    with pytest.raises(RunDirectoryError, match="no such run directory"):
        export_run(workdir / "missing_run", workdir / "b1")
    with pytest.raises(RunDirectoryError, match="no student.keras"):
        export_run(run_dir("textcnn"), workdir / "b2", model="student")
    with pytest.raises(OptionError, match="unknown format"):
        export_run(run_dir("textcnn"), workdir / "b3", formats="coreml")
    with pytest.raises(OptionError, match="--model must be one of"):
        export_run(run_dir("textcnn"), workdir / "b4", model="teacher")
    kinds = (RunDirectoryError, OptionError, ShapeError, ConversionError, ParityError, VerificationError)
    assert all(issubclass(kind, ExportError) for kind in kinds) and issubclass(ExportError, ValueError)
    assert len({frozenset(k for k in kinds if issubclass(kind, k)) for kind in kinds}) == len(kinds)  # disjoint


# --- command line ----------------------------------------------------------------------------------

def test_cli_export(workdir, run_dir):
    from kdedge.cli import main

    out = workdir / "bundle_cli"
    runner = CliRunner()
    test = workdir / "cli_test.jsonl"
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generated_texts()[:40]), encoding="utf-8")
    result = runner.invoke(main, ["export", str(run_dir("textrnn")), "--format", "tflite", "--out", str(out),
                                  "--test", str(test)])
    assert result.exit_code == 0, result.output
    assert "max|dp|" in result.output and "tflite" in result.output
    info = kdedge_run.load(out).info()
    assert [m["format"] for m in info["models"]] == ["tflite"]
    scores = info["test_metrics"]  # issue 28: export printed no test scores
    assert (f"held-out test (40 texts of {test}, through the bundle at its thresholds): micro-F1 "
            f"{100 * scores['micro_f1']:.1f}, macro-F1 {100 * scores['macro_f1']:.1f}") in result.output
    again = runner.invoke(main, ["export", str(run_dir("textrnn")), "--out", str(out)])
    assert again.exit_code == 2 and "kdedge: error:" in again.output and "already exists" in again.output


def test_card_run_table_shows_each_row_and_the_selection():
    from kdedge_export.card import _run_table

    tuned = {"micro_f1": 0.8, "macro_f1": 0.7, "weighted_f1": 0.75, "subset_accuracy": 0.5}
    lines = _run_table({"modes": {"teacher": {"tuned": tuned, "epochs_run": 0, "seconds": 1.5},
                                  "student": {"tuned": tuned, "epochs_run": 12, "seconds": 40.0},
                                  "kd": {"tuned": {**tuned, "macro_f1": 0.72}, "epochs_run": 14, "seconds": 55.0}},
                        "selected": {"mode": "kd", "reason": "KD better in 91% of 2000 resamples"}})
    assert "| teacher | 80.0 | 70.0 | 75.0 | 50.0 | – | 1.5 |" in lines
    assert "| plain student | 80.0 | 70.0 | 75.0 | 50.0 | 12 | 40.0 |" in lines
    assert "| KD student | 80.0 | 72.0 | 75.0 | 50.0 | 14 | 55.0 |" in lines
    assert "Selected for export: the KD student — KD better in 91% of 2000 resamples." in lines
    assert _run_table({}) == []
