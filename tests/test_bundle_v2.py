"""Bundle format v2 (docs/bundle.md "Version 2"): code points in, calibrated probabilities out.

A tiny character run (Traditional → Simplified conversion on) trained with the real pipeline, exported to
ONNX and TFLite, read back by kdedge_run and by an independent code point loop written from the spec.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import kdedge_run
from kdedge_export import ExportError, export_run
from kdedge_export.codepoints import MAX_CODE_POINT, build_tables, lookup
from kdedge_export.golden import CONTRACT_TEXTS
from kdedge_run import BundleError
from kdedge_run.text import CharMap, normalise
from test_export import SMALL, generated_texts

DESCRIPTIONS = {"SYMP": "symptom", "DRUG": "drug or medicine"}
T2S = {"發": "发", "燒": "烧", "頭": "头", "藥": "药", "維": "维", "𠮷": "吉"}


def spec_code_points(text: str, manifest: dict) -> list[int]:
    """The app's loop, written from docs/bundle.md alone (not from kdedge_run)."""
    spec = manifest["input"]
    out = []
    for ch in text:
        cp = ord(ch)
        if any(a <= cp <= b for a, b in spec["dropped"]):
            continue
        if len(out) == spec["max_len"]:
            break
        out.append(cp)
    return out + [0] * (spec["max_len"] - len(out))


def spec_windows(text: str, manifest: dict) -> tuple[list[list[int]], int, bool]:
    """The app's loop with the window rule (docs/bundle.md "Long texts"), from the spec alone: (one padded row per
    window, code points read, truncated)."""
    spec = manifest["input"]
    size = spec["max_len"]
    rule = spec.get("windows") or {"size": size, "stride": size, "max_windows": 1, "pool": "max"}
    reach = size + (rule["max_windows"] - 1) * rule["stride"]
    cps, truncated = [], False
    for ch in text:
        cp = ord(ch)
        if any(a <= cp <= b for a, b in spec["dropped"]):
            continue
        if len(cps) == reach:
            truncated = True
            break
        cps.append(cp)
    count = 1 if len(cps) <= size else 1 + math.ceil((len(cps) - size) / rule["stride"])
    rows = [cps[k * rule["stride"]:k * rule["stride"] + size] for k in range(count)]
    return [r + [0] * (size - len(r)) for r in rows], len(cps), truncated


def test_code_point_table_is_the_version_1_character_pipeline():
    """Every code point: the two-level table gives the id version 1 gives its normalised, converted token."""
    vocab = {"<pad>": 0, "<oov>": 1, "发": 2, "烧": 3, "a": 4, "1": 5, "吉": 6, "😀": 7, "。": 8}
    convert = CharMap("t2s", T2S)
    tables = build_tables(vocab, convert)
    ids = lookup(tables, np.arange(MAX_CODE_POINT + 1))
    dropped = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
    for a, b in tables.dropped:
        dropped[a:b + 1] = True
    expected = np.ones(MAX_CODE_POINT + 1, dtype=np.int32)
    for c in range(MAX_CODE_POINT + 1):
        token = convert(normalise(chr(c)))
        if token.isspace():
            assert dropped[c], hex(c)
            expected[c] = 0
        else:
            assert not dropped[c], hex(c)
            expected[c] = vocab.get(token, 1)
    assert np.array_equal(ids, expected)
    assert lookup(tables, np.array([ord("Ａ"), ord("１"), ord("發"), 0x20BB7, -5, 0x7FFFFFFF])).tolist() == \
        [4, 5, 2, 6, 0, 1]  # full-width → ASCII → lower case; Ext. B through the map; out of range safe
    assert tables.dropped[0][0] == 0 and [0x3000, 0x3000] in tables.dropped and [0xD800, 0xDFFF] in tables.dropped


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    rows = generated_texts(160, seed=3)
    for r in rows[::4]:  # some Traditional texts: the graph converts them
        r["text"] = r["text"].replace("发", "發").replace("烧", "燒").replace("头", "頭")
    for name, records in (("data.jsonl", rows), ("test.jsonl", generated_texts(40, seed=9))):
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                 encoding="utf-8")
    (root / "descriptions.json").write_text(json.dumps(DESCRIPTIONS), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDEDGE_CACHE", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def run(workdir):
    from kdedge.config import TrainConfig
    from kdedge.training.train import train_run

    made = {}

    def get(arch: str = "textcnn"):
        if arch not in made:
            cfg = TrainConfig(arch=arch, mode="kd", epochs=2, embedding_dim=16, max_len=24, w2v_epochs=1,
                              batch_size=16, val_split=0.25, learning_rate=0.01, segmenter="char", convert="t2s",
                              arch_params=SMALL[arch])
            out = workdir / f"run_{arch}"
            train_run(cfg, str(workdir / "data.jsonl"), str(out), progress=False)
            made[arch] = out
        return made[arch]

    return get


@pytest.fixture(scope="module")
def bundle(workdir, run):
    """The textcnn run exported as the default bundle is: both formats, int8 vectors, float16 weights."""
    out = workdir / "bundle"
    manifest = export_run(run(), out, formats="all", quantize="int8",
                          label_descriptions=workdir / "descriptions.json", test_data=workdir / "test.jsonl",
                          intended_use="Sorting test messages. Not a diagnosis.", log=lambda m: None)
    return out, manifest


def _texts(run_path) -> list[str]:
    rows = [json.loads(line) for line in (run_path / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows] + [t for t in CONTRACT_TEXTS if t.strip()]


def _matrix(predictions, labels) -> np.ndarray:
    return np.array([[p.probabilities[lab] for lab in labels] for p in predictions])


@pytest.mark.slow
def test_manifest_is_version_2_with_everything_in_the_graph(bundle):
    path, m = bundle
    assert m["format_version"] == 2
    assert m["input"]["kind"] == "codepoints" and m["input"]["max_len"] == 24 and m["input"]["pad"] == 0
    assert m["input"]["windows"] == {"size": 24, "stride": 12, "max_windows": 16, "pool": "max"}
    assert m["embeddings"] == {"dim": 16, "dtype": "int8", "file": None, "in_graph": True}
    assert m["segmenter"]["in_graph"] and m["segmenter"]["convert"] == "t2s"
    assert m["calibration"]["in_graph"]
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "golden.jsonl", "label_f1.png", "manifest.json",
                                                      "model.onnx", "model.tflite", "vocab.txt"]
    assert {e["precision"] for e in m["models"]} == {"fp16-weights"}
    assert m["label_descriptions"] == DESCRIPTIONS
    assert m["test_metrics"]["texts"] == 40 and 0.0 <= m["test_metrics"]["macro_f1"] <= 1.0
    card = (path / "README.md").read_text(encoding="utf-8")
    assert "Held-out test split" in card and "drug or medicine" in card and "format version 2" in card
    assert "**Intended use:** Sorting test messages. Not a diagnosis." in card and "health" not in card
    # issue 28: the run's teacher / plain / KD table and the long-text rule are in the card
    assert "## The run: teacher, plain student and KD student" in card
    assert "| teacher | " in card and "| KD student | " in card  # a --mode kd run: no plain student, no selection
    assert "| plain student | " not in card and "Selected for export" not in card
    assert "read as overlapping windows (one every 12 characters" in card
    info = kdedge_run.load(path).info()
    assert info["label_descriptions"] == DESCRIPTIONS and info["abstain"] == {"min_coverage": 0.5}


@pytest.mark.slow
def test_fp32_reference_rows_match_keras(bundle):
    _, m = bundle
    reference = [r for r in m["parity"]["results"] if not r["shipped"]]
    assert {r["format"] for r in reference} == {"onnx", "tflite"}
    assert all(r["precision"] == "fp32" and r["max_abs_dp"] <= 1e-4 for r in reference)
    shipped = [r for r in m["parity"]["results"] if r["shipped"]]
    assert all(r["max_abs_dp"] < 0.05 for r in shipped)


@pytest.mark.slow
def test_backends_agree_and_batches_do_not_change_a_text(bundle, run):
    path, _ = bundle
    texts = _texts(run())
    results = {}
    for backend in ("onnx", "tflite"):
        clf = kdedge_run.load(path, backend=backend)
        batch = _matrix(clf.predict(texts), clf.labels)
        alone = _matrix([clf.predict(t) for t in texts], clf.labels)
        assert np.abs(batch - alone).max() <= 1e-6, backend
        results[backend] = batch
    assert np.abs(results["onnx"] - results["tflite"]).max() <= 1e-5


@pytest.mark.slow
def test_golden_vectors_hold_for_a_reader_written_from_the_spec(bundle):
    path, m = bundle
    lines = [json.loads(line) for line in (path / "golden.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == m["golden"]["texts"] >= 10
    covered = {line["text"] for line in lines}
    assert any(any(ord(c) > 0xFFFF for c in t) for t in covered)  # outside the BMP
    assert any(line["truncated"] for line in lines)
    assert any(line["windows"] > 1 and not line["truncated"] for line in lines)  # long texts read whole
    import onnxruntime as ort

    entry = next(e for e in m["models"] if e["format"] == "onnx")
    session = ort.InferenceSession(str(path / entry["file"]), providers=["CPUExecutionProvider"])
    min_coverage = m["abstain"]["min_coverage"]
    for line in lines:
        rows, tokens, truncated = spec_windows(line["text"], m)
        assert rows[0] == spec_code_points(line["text"], m)  # the first window: what a reader without windows reads
        assert (rows[0], tokens, truncated, len(rows)) == \
            (line["codepoints"], line["tokens"], line["truncated"], line["windows"]), line["text"]
        probs, known = session.run([entry["outputs"]["probabilities"], entry["outputs"]["known"]],
                                   {entry["input_name"]: np.array(rows, dtype=np.int32)})
        read = [sum(1 for c in row if c) for row in rows]
        assert int(known.sum()) == line["known"]
        judged = line["known"] >= 1 and line["known"] / sum(read) >= min_coverage
        votes = [w for w in range(len(rows)) if not judged or (known[w] >= 1 and known[w] / read[w] >= min_coverage)]
        pooled = probs[votes].max(axis=0)
        assert np.abs(pooled - np.array(line["probabilities"])).max() <= m["golden"]["tolerance"]
        labels = [lab for lab, p, t in sorted(zip(m["labels"], pooled, m["thresholds"]), key=lambda x: -x[1])
                  if p >= t] if judged else []
        assert (judged, labels) == (line["judged"], line["labels"])
    for backend in ("onnx", "tflite"):
        clf = kdedge_run.load(path, backend=backend)
        for line in lines:
            p = clf.predict(line["text"])
            assert (p.labels, p.judged, p.truncated, p.tokens) == \
                (line["labels"], line["judged"], line["truncated"], line["tokens"])


@pytest.mark.slow
def test_text_outside_the_vocabulary_is_not_judged(bundle):
    path, _ = bundle
    clf = kdedge_run.load(path)
    unknown = clf.predict("ЖЖЖ ЩЩЩ ѮѮѮ")
    assert unknown.coverage == 0.0 and not unknown.judged and unknown.labels == []
    assert unknown.tokens == 9 and len(unknown.probabilities) == 3
    half = clf.predict("发烧ЖЖЖ")
    assert half.coverage == pytest.approx(2 / 5) and not half.judged
    known = clf.predict("发烧头痛")
    assert known.coverage == 1.0 and known.judged
    with pytest.raises(ValueError, match="empty text"):
        clf.predict(" \t\u3000\x00")


@pytest.mark.slow
def test_long_text_is_read_in_windows_up_to_the_bound(bundle, tmp_path):
    path, _ = bundle
    clf = kdedge_run.load(path)
    head = "发烧头痛咳嗽" * 4  # 24 = max_len: one window
    p = clf.predict(head + "跑步" * 500_000)
    assert p.truncated and p.tokens == 24 + 15 * 12 and p.windows == 16  # docs/bundle.md "Long texts"
    assert clf.predict(head).windows == 1 and not clf.predict(head).truncated
    # a bundle without the rule (written before it) reads the first max_len code points
    old = tmp_path / "no_windows"
    shutil.copytree(path, old)
    manifest = json.loads((old / "manifest.json").read_text(encoding="utf-8"))
    del manifest["input"]["windows"]  # its long golden vectors were read in windows: the golden check would refuse it
    (old / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    q = kdedge_run.load(old, verify_golden=False).predict(head + "跑步" * 500_000)
    assert q.truncated and q.tokens == 24 and q.windows == 1
    assert q.probabilities == clf.predict(head).probabilities


@pytest.mark.slow
def test_recurrent_v2_bundle_with_attention(workdir, run):
    out = workdir / "bundle_gru"
    m = export_run(run("gru_att"), out, formats="all", log=lambda msg: None)
    assert m["format_version"] == 2 and m["models"][0]["outputs"]["attention"] == "attention"
    for backend in ("onnx", "tflite"):
        clf = kdedge_run.load(out, backend=backend)
        words = clf.explain("我發燒又头痛", n=3)
        assert len(words) == 3 and all(len(w) == 1 for w, _ in words)
        assert {w for w, _ in words} <= set("我發燒又头痛")


@pytest.mark.slow
def test_v2_bundle_refuses_bad_manifests(bundle, tmp_path):
    from kdedge_run.bundle import MANIFEST

    path, _ = bundle
    for change, message in ((lambda m: m["input"].update(dropped=[[5, 3]]), r"input\.dropped\[0\]"),
                            (lambda m: m["input"].update(dtype="float32"), "version 2 input must be"),
                            (lambda m: m["input"].update(dropped=[[1, 2]]), "must start at code point 0"),
                            (lambda m: m.update(abstain={"min_coverage": 2}), "abstain.min_coverage"),
                            (lambda m: m.update(label_descriptions={"NOPE": "x"}), "label_descriptions")):
        copy = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        shutil.copytree(path, copy)
        manifest = json.loads((copy / MANIFEST).read_text(encoding="utf-8"))
        change(manifest)
        (copy / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        with pytest.raises(BundleError, match=message):
            kdedge_run.load(copy)


@pytest.mark.slow
def test_label_descriptions_must_name_the_runs_labels(workdir, run):
    bad = workdir / "bad_descriptions.json"
    bad.write_text(json.dumps({"NOPE": "x"}), encoding="utf-8")
    with pytest.raises(ExportError, match="unknown label"):
        export_run(run(), workdir / "never", formats="onnx", label_descriptions=bad, log=lambda m: None)
    assert not (workdir / "never").exists()


@pytest.mark.slow
def test_cli_predict_reports_coverage(bundle):
    from kdedge_run.cli import main as cli

    path, _ = bundle
    result = CliRunner().invoke(cli, ["predict", "--model", str(path), "发烧头痛", "ЖЖЖ"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["judged"], r["coverage"]) for r in records] == [(True, 1.0), (False, 0.0)]
    assert records[1]["labels"] == []
