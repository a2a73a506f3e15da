"""`export_run`: a training run directory → a verified kdedge bundle (docs/bundle.md)."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdedge.networks.architectures import architecture
from kdedge.files import NPY_READ_ERRORS, SEGMENTER_CHAR_MAP
from kdedge_run.bundle import CODEPOINTS_VERSION, FORMAT, IDS_VERSION

from . import parity as par
from .bundle import Staging, check_out
from .calibrate import Calibration, calibrate, read_thresholds_file
from .card import label_f1_png, model_card
from .codepoints import build_tables
from .convert import CodepointGraph, codepoint_onnx, codepoint_tflite, quantize_onnx, to_onnx, to_tflite
from .errors import OptionError, RunDirectoryError, ShapeError, VerificationError
from .golden import GOLDEN_TOLERANCE, golden_vectors, test_metrics
from .run import Run, load_keras, load_run, read_vocab
from .segmentation import agreement, segmenter_spec
from .options import DEFAULT_FOR_QUANTIZE, DTYPES, FORMATS, PRECISION, QUANTIZE
from .vectors import encode, quantise_int8

MIN_COVERAGE = 0.5   # manifest abstain.min_coverage of a v2 bundle: under half the text known → not judged


def _stderr(message: str) -> None:
    print(f"kdedge export: {message}", file=sys.stderr, flush=True)


@dataclass
class ExportPlan:
    """One export, settled before any model is converted: the run and its student, the bundle's place, formats,
    precision and vectors storage, the calibration, the trained network, the manifest fields every bundle format
    shares (`base`), and the notes the export makes (each logged as it is made)."""

    run: Run
    out: Path
    formats: tuple[str, ...]
    quantize: str
    vectors_dtype: str
    force: bool
    cal: Calibration
    keras_model: Any                      # the run's Keras model (the parity reference)
    body: Any                             # its body (embedded tokens → logits), converted per format
    table: np.ndarray                     # the embedding table
    params: dict                          # the architecture's hyper-parameters
    base: dict
    seg_files: dict                       # bundle path → run file of the segmenter
    test: tuple | None                    # (texts, labels) held out, scored on the finished bundle
    log: Callable[[str], None] = _stderr
    notes: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return PRECISION[self.quantize]

    @property
    def dropout(self) -> float:
        return self.run.settings.dropout

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.log(message)


def _formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    wanted = []
    for f in formats:
        for name in (FORMATS if f == "all" else (f,)):
            if name not in FORMATS:
                raise OptionError(f"unknown format {name!r}; choose from onnx, tflite, all")
            if name not in wanted:
                wanted.append(name)
    if not wanted:
        raise OptionError("no model format asked for (onnx, tflite or all)")
    return tuple(f for f in FORMATS if f in wanted)


def export_run(run_dir, out_dir, formats=("onnx",), quantize: str = "none", model: str | None = None,
               vectors_dtype: str | None = None, force: bool = False, thresholds_file=None,
               label_descriptions=None, test_data=None, intended_use: str | None = None,
               log: Callable[[str], None] | None = None) -> dict:
    """Export the `model` ("kd" or "student"; None: the one the run selected) of the run at `run_dir` as a
    bundle at `out_dir`.

    `formats`: "onnx", "tflite" or "all" (or a sequence of them). `quantize`: "none", "int8" (ONNX
    dynamic int8, TFLite dynamic-range) or "fp16" (TFLite float16; ONNX only with onnxconverter-common).
    `vectors_dtype` overrides the vectors' storage (default float32 / int8 / float16 after `quantize`).
    `thresholds_file`: JSON {label: threshold} replacing tuned thresholds. `label_descriptions`: JSON
    {label: meaning} for the manifest, card and `kdedge-run info` (default: the run's, if it has one).
    `intended_use`: what the model is for (and not for), shown first in the card (default: a generic
    sentence naming the training data). `test_data`: labelled texts held out from training; the finished
    bundle is scored on them
    (manifest `test_metrics`, shown in the card). A character run of a sequence architecture gives a
    format-2 bundle (code points in), any other run format 1. The bundle is staged next to
    `out_dir`, checked end to end through kdedge_run, and renamed into place; an existing `out_dir` is
    replaced only with `force`. Returns the manifest. Raises a subclass of ExportError (a ValueError) that
    names the kind of failure (kdedge_export.errors). Its keyword parameters are `kdedge export`'s options, one
    to one, which is why there are more than eight.
    """
    log = log or _stderr
    formats = _formats(formats)
    if quantize not in QUANTIZE:
        raise OptionError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    vectors_dtype = vectors_dtype or DEFAULT_FOR_QUANTIZE[quantize]
    if vectors_dtype not in DTYPES:
        raise OptionError(f"--vectors-dtype must be one of {', '.join(DTYPES)}, not {vectors_dtype!r}")
    out = Path(out_dir)
    run_path = Path(run_dir).resolve()
    if out.resolve() == run_path or run_path in out.resolve().parents:
        raise OptionError(f"{out}: the bundle must not be written inside the run directory")
    if out.resolve() in run_path.parents:
        raise OptionError(f"{out}: holds the run directory {run_dir}; the bundle must go elsewhere")
    check_out(out, force)
    run = load_run(run_dir, model)
    overrides = read_thresholds_file(thresholds_file, run.labels) if thresholds_file else None
    descriptions = read_label_descriptions(label_descriptions or _run_descriptions(run), run.labels)
    test = read_test_data(test_data, run.labels) if test_data else None
    seg_spec, seg_files = segmenter_spec(run)
    cal = calibrate(run.val_logits, run.val_y, run.labels, run.settings.threshold_min_support, overrides)
    keras_model, body, table = load_keras(run)

    from kdedge import __version__
    from kdedge.networks.models import arch_params

    base = {
        "format": FORMAT, "format_version": IDS_VERSION, "kdedge_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "architecture": run.arch, "model_kind": run.model_kind, "labels": run.labels,
        "thresholds": [float(t) for t in cal.thresholds],
        "calibration": {"method": "temperature", "temperatures": [float(t) for t in cal.temperatures]},
        "input": run.input_spec, "vocab": {"file": "vocab.txt", "size": int(table.shape[0])},
        "segmenter": seg_spec, "metrics": cal.metrics, "calibration_report": cal.report,
    }
    if descriptions:
        base["label_descriptions"] = descriptions
    if intended_use:
        base["intended_use"] = str(intended_use)
    plan = ExportPlan(run, out, formats, quantize, vectors_dtype, force, cal, keras_model, body, table,
                      arch_params(run.arch, run.settings.arch_params), base, seg_files, test, log)
    _check_table(run, table, plan.note)
    codepoints = seg_spec["type"] == "char" and not architecture(run.arch).hierarchical
    return (_export_codepoints if codepoints else _export_ids)(plan)


def _export_ids(plan: ExportPlan) -> dict:
    """Format 1 (docs/bundle.md "Version 1"): ids and vectors outside the model, the segmenter in the bundle."""
    run = plan.run

    def convert(fmt: str, prec: str, fp32=None):
        if fmt == "tflite":
            return to_tflite(plan.body, run.arch, plan.params, plan.dropout, prec)
        model_ = fp32 or to_onnx(plan.body, plan.note)
        quantised, why = quantize_onnx(model_, prec)
        if why:
            plan.note(why)
        return quantised

    fp32_models = {fmt: convert(fmt, "fp32") for fmt in plan.formats}
    shipped = {fmt: (fp32_models[fmt] if plan.precision == "fp32" else convert(fmt, plan.precision, fp32_models[fmt]))
               for fmt in plan.formats}
    if plan.quantize == "int8" and "onnx" in plan.formats and architecture(run.arch).onnx_int8_note:
        plan.note(f"hint: {architecture(run.arch).onnx_int8_note}")
    needs_reference = any(m.precision != "fp32" for m in shipped.values()) or plan.vectors_dtype != "float32"

    with _staging(plan.out, needs_reference) as (stage, scratch):
        manifest = _write(stage, plan, plan.vectors_dtype, shipped)
        if scratch is not None:
            _write(scratch, plan, "float32", fp32_models)
        manifest = _check_end_to_end(stage, scratch, manifest, plan)
        return _finish(stage, plan, manifest, plan.formats[0])


@contextlib.contextmanager
def _staging(out: Path, with_scratch: bool):
    """(stage, scratch): the bundle's staging directory, removed unless committed, and a scratch bundle
    directory for fp32 reference models (or None), always removed."""
    stage = Staging(out)
    scratch = Staging() if with_scratch else None
    try:
        yield stage, scratch
    except BaseException:
        stage.discard()
        raise
    finally:
        if scratch is not None:
            scratch.discard()


def _finish(stage: Staging, plan: ExportPlan, manifest: dict, backend: str) -> dict:
    """Test metrics, notes, chart and card; write the manifest, verify the bundle through kdedge_run and
    commit it under its final name. Returns the manifest."""
    run, cal = plan.run, plan.cal
    if plan.test is not None:
        manifest["test_metrics"] = test_metrics(stage.path, backend, *plan.test)
    manifest["notes"] = plan.notes
    info = {"data": run.config.get("data"), "texts": run.metrics.get("texts"), "modes": run.metrics.get("modes"),
            "selected": run.metrics.get("selected")}
    test_f1 = manifest["test_metrics"]["per_label_f1"] if "test_metrics" in manifest else None
    stage.write_bytes("label_f1.png", label_f1_png(
        run.labels, cal.metrics["at_0.5"]["per_label_f1"], cal.metrics["tuned"]["per_label_f1"],
        f"{run.arch} ({run.model_kind}): per-label F1", test_f1))
    stage.write_text("README.md", model_card(manifest, info))
    manifest = stage.write_manifest(manifest)
    import kdedge_run
    from kdedge_run.bundle import BundleError

    try:
        kdedge_run.load(stage.path, backend=backend)
    except BundleError as e:
        raise VerificationError(f"the finished bundle does not verify: {e}") from e
    stage.commit(plan.force)
    return manifest


def _check_table(run, table: np.ndarray, note) -> None:
    vocab_size = len(read_vocab(run))
    if table.shape[0] != vocab_size:
        raise ShapeError(f"{run.path}: vocab.txt has {vocab_size} tokens but the model's embedding table "
                         f"{table.shape[0]} rows")
    saved = run.path / "vectors.npy"
    if not run.settings.trainable_embeddings and saved.is_file():  # else training changed it
        try:
            vectors = np.load(saved, allow_pickle=False, mmap_mode="r")
        except NPY_READ_ERRORS as e:
            raise RunDirectoryError(f"{saved}: cannot read: {e}") from None
        if vectors.shape != table.shape or not np.array_equal(np.asarray(vectors, dtype=np.float32), table):
            note("the model's embedding table differs from the run's vectors.npy although the run froze its "
                 "embeddings; the bundle ships the model's table")
    if np.any(table[0] != 0):
        note("row 0 (<pad>) of the embedding table is not all zeros; shipped as trained")


def _write(stage: Staging, plan: ExportPlan, vectors_dtype: str, models: dict) -> dict:
    """Write vocab, vectors, segmenter files and model files; write a manifest; return it."""
    stage.copy("vocab.txt", plan.run.path / "vocab.txt")
    for rel, src in plan.seg_files.items():
        stage.copy(rel, src)
    vectors = encode(plan.table, vectors_dtype)
    for rel, array in vectors.arrays.items():
        stage.save_npy(rel, array)
    for m in models.values():
        stage.write_bytes(m.file, m.data)
    manifest = {**plan.base, "embeddings": vectors.spec, "models": [m.entry() for m in models.values()]}
    return stage.write_manifest(manifest)


def _check_end_to_end(stage: Staging, scratch, manifest: dict, plan: ExportPlan) -> dict:
    """Segmentation agreement and parity through kdedge_run; raises ParityError on an fp32 mismatch."""
    from kdedge_run.bundle import BundleError, load_bundle
    from kdedge_run.text import tokens_to_ids

    run, note = plan.run, plan.note
    try:
        whole = load_bundle(stage.path).preprocessor.uncut()  # the segmenter on whole texts, as training
    except BundleError as e:
        raise VerificationError(f"the staged bundle does not load in kdedge_run: {e}") from e
    seg = agreement(whole.tokens, run.val_texts, run.val_tokens)
    ids, keep = par.runtime_inputs(stage.path, run.val_texts)
    vocab = {t: i for i, t in enumerate(read_vocab(run))}
    training_ids = np.stack([tokens_to_ids(run.val_tokens[i], vocab, run.input_spec)[0] for i in keep]) \
        if keep else ids
    seg["identical_ids"] = int(sum(np.array_equal(a, b) for a, b in zip(ids, training_ids)))
    if seg["token_f1"] < 1.0:
        note(f"the runtime segments the validation texts differently from training (token F1 "
             f"{seg['token_f1']:.4f}); parity compares both on the runtime's ids")
    candidates = [(s.path, s is stage, plan.vectors_dtype if s is stage else "float32",
                   [(entry, s.files()[entry["file"]]["bytes"]) for entry in _read_models(s)])
                  for s in (scratch, stage) if s is not None]
    parity = par.report(run, plan.keras_model, ids, keep, plan.cal.temperatures, plan.cal.thresholds, candidates)
    models = par.fastest_first(manifest["models"], parity, note)
    return {**manifest, "models": models, "segmentation_agreement": seg, "parity": parity}


def _read_models(stage: Staging) -> list[dict]:
    import json

    return json.loads((stage.path / "manifest.json").read_text(encoding="utf-8"))["models"]


def _run_descriptions(run):
    path = run.path / "label_descriptions.json"
    return path if path.is_file() else None


def read_label_descriptions(path, labels: list[str]) -> dict[str, str]:
    """kdedge.text.data.read_label_descriptions as an OptionError; {} for no file."""
    from kdedge.text.data import DataError, read_label_descriptions as read

    if path is None:
        return {}
    try:
        return read(path, labels)
    except DataError as e:
        raise OptionError(str(e)) from None


def read_test_data(path, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """(texts, 0/1 matrix in the run's label order) of a labelled held-out file."""
    from kdedge.text.data import load_dataset, shown_names

    ds = load_dataset(path)
    unknown = sorted(set(ds.label_names) - set(labels))
    if unknown:
        raise OptionError(f"{path}: label(s) {shown_names(unknown)} are not the run's ({shown_names(labels)})")
    index = {lab: j for j, lab in enumerate(labels)}
    y = np.zeros((len(ds), len(labels)), dtype=np.float64)
    for i, labs in enumerate(ds.labels):
        for lab in labs:
            y[i, index[lab]] = 1.0
    return ds.texts, y


@dataclass
class CodepointModels:
    """A format-2 export's converted models: the shipped ones (`precision`, `vectors_dtype`) and, when those are
    not exact float32, the float32 references parity compares them with first; the tables they hold."""

    shipped: dict
    reference: dict
    tables: Any                           # code point → id tables (kdedge_export.codepoints.build_tables)
    temperatures: np.ndarray
    vocab: dict
    convert: Any                          # the Traditional → Simplified CharMap, or None

    @property
    def exact(self) -> bool:
        """Whether the shipped models differ from the float32 reference by design (they are not the same ones)."""
        return self.reference is not self.shipped


def _codepoint_models(plan: ExportPlan) -> CodepointModels:
    """The character pipeline's tables, then each format's model with vectors and temperatures in the graph."""
    from kdedge_run.text import CharMap

    run, table, vectors_dtype = plan.run, plan.table, plan.vectors_dtype
    vocab = {t: i for i, t in enumerate(read_vocab(run))}
    seg_files = plan.seg_files
    convert = CharMap.load("t2s", seg_files[SEGMENTER_CHAR_MAP]) if SEGMENTER_CHAR_MAP in seg_files else None
    tables = build_tables(vocab, convert)
    round16 = plan.precision != "fp32"
    temperatures = np.asarray(plan.cal.temperatures, dtype=np.float32)
    if round16:
        temperatures = temperatures.astype(np.float16).astype(np.float32)
    if vectors_dtype == "int8":
        vectors, scales = quantise_int8(table)
    else:
        vectors = table.astype(vectors_dtype).astype(np.float32)
        scales = None
    convert_to = {"onnx": codepoint_onnx, "tflite": codepoint_tflite}

    def models(vec, sc, r16) -> dict:
        graph = CodepointGraph(tables.page_table, tables.block_table, vec, sc, temperatures, r16)
        return {fmt: convert_to[fmt](plan.body, run.arch, plan.params, plan.dropout, graph) for fmt in plan.formats}

    shipped = models(vectors, scales, round16)
    exact = round16 or vectors_dtype != "float32"
    return CodepointModels(shipped, models(table, None, False) if exact else shipped, tables, temperatures, vocab,
                           convert)


def _export_codepoints(plan: ExportPlan) -> dict:
    """Format 2 (docs/bundle.md "Version 2"): the character pipeline, vectors and temperatures in the graph.

    Shipped weights are float16 values computed in float32 unless the precision is fp32; an fp32 graph with
    float32 vectors is always checked against Keras (1e-4) first.
    """
    from kdedge_run.text import CharTokenizer, Preprocessor, default_windows

    run, cal, table, formats, vectors_dtype, note = (plan.run, plan.cal, plan.table, plan.formats,
                                                      plan.vectors_dtype, plan.note)
    built = _codepoint_models(plan)
    shipped, reference_models, exact = built.shipped, built.reference, built.exact
    max_len = int(run.input_spec["max_len"])
    manifest = {**plan.base, "format_version": CODEPOINTS_VERSION,
                "calibration": {"method": "temperature", "temperatures": [float(t) for t in built.temperatures],
                                "in_graph": True},
                "input": {"kind": "codepoints", "dtype": "int32", "max_len": max_len, "pad": 0,
                          "dropped": built.tables.dropped},
                "segmenter": {"type": "char", "convert": "t2s" if built.convert is not None else None, "in_graph": True,
                              "trained_with": "char"},
                "embeddings": {"dim": int(table.shape[1]), "dtype": vectors_dtype, "file": None, "in_graph": True},
                "abstain": {"min_coverage": MIN_COVERAGE}}

    def write(stage: Staging, models: dict) -> dict:
        stage.copy("vocab.txt", run.path / "vocab.txt")
        for m in models.values():
            stage.write_bytes(m.file, m.data)
        return stage.write_manifest({**manifest, "models": [m.entry() for m in models.values()]})

    with _staging(plan.out, exact) as (stage, scratch):
        written = write(stage, shipped)
        if scratch is not None:
            write(scratch, reference_models)
        # the reference: Keras on the ids of the version-1 character pipeline the tables fold in
        v1 = Preprocessor(CharTokenizer(), built.vocab, run.input_spec, built.convert)
        seg = agreement(v1.uncut().tokens, run.val_texts, run.val_tokens)
        keep = [i for i, t in enumerate(run.val_texts) if v1.tokens(t)]
        texts = [run.val_texts[i] for i in keep]
        ids, _ = v1.encode(texts)
        candidates = [(s_.path, s_ is stage, vectors_dtype if s_ is stage else "float32",
                       [(m.entry(), len(m.data)) for m in models.values()])
                      for s_, models in ((scratch, reference_models), (stage, shipped)) if s_ is not None]
        parity = par.report(run, plan.keras_model, ids, keep, built.temperatures.astype(np.float64), cal.thresholds,
                            candidates)
        if len(formats) > 1:
            agree = _format_agreement(stage.path, texts)
            note(f"ONNX and TFLite probabilities agree within {agree:.2e} on {len(texts)} validation texts")
        written["models"] = par.fastest_first(written["models"], parity, note)
        written.update({"segmentation_agreement": {**seg, "identical_ids": len(texts)}, "parity": parity})
        # the window rule (docs/bundle.md "Long texts") only after parity, which compares one model row with Keras
        written["input"] = {**written["input"], "windows": default_windows(max_len).as_manifest()}
        written = stage.write_manifest(written)
        golden = golden_vectors(stage.path, written["models"][0]["format"], texts[:24])
        stage.write_text("golden.jsonl", "".join(line + "\n" for line in golden))
        written["golden"] = {"file": "golden.jsonl", "texts": len(golden), "tolerance": GOLDEN_TOLERANCE}
        written = stage.write_manifest(written)
        return _finish(stage, plan, written, written["models"][0]["format"])


def _format_agreement(bundle_dir: Path, texts: list[str]) -> float:
    """Largest |Δp| between the bundle's ONNX and TFLite models on `texts`."""
    onnx = par.runtime_probabilities(bundle_dir, "onnx", texts)
    tflite = par.runtime_probabilities(bundle_dir, "tflite", texts)
    return float(np.abs(onnx - tflite).max()) if len(texts) else 0.0
