"""`kdedge train`: data → segmentation → vocabulary + Word2Vec → teacher, student and KD student → run dir."""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kdedge import __version__
from kdedge.config import EXECUTION_SETTINGS, TrainConfig
from kdedge.text.data import Dataset, check_trainable, load_dataset, read_label_descriptions
from kdedge.text.embed import Vocabulary, embedding_matrix, load_vectors, train_word2vec
from kdedge.evaluate import evaluate_logits
from kdedge.files import (RUN, SEGMENTER_CHAR_MAP, SEGMENTER_DICTIONARY, check_replaceable, commit_dir, run_listing,
                          staging_dir, write_json)
from kdedge.text.folds import stratified_split
from kdedge.samples import resolve as resolve_data
from kdedge.text.segment import Segmenter, resolve_convert, write_dictionary
from kdedge.training.selection import select_student
from kdedge.training.trained import KDChoice, Trained
from kdedge_run.bundle import file_sha256, ids_input_spec
from kdedge_run.text import tokens_to_ids

MODES = ("teacher", "student", "kd")
log = logging.getLogger("kdedge")


@dataclass
class Features:
    """Everything a model needs from the texts of each split, and how it was made."""

    label_names: list[str]
    segmenter: Segmenter
    dictionary: dict | None
    vocab: Vocabulary
    table: np.ndarray
    input_spec: dict
    texts: dict = field(default_factory=dict)      # split → raw texts
    tokens: dict = field(default_factory=dict)     # split → token lists
    x: dict = field(default_factory=dict)          # split → id arrays
    y: dict = field(default_factory=dict)          # split → 0/1 targets
    report: dict = field(default_factory=dict)     # coverage, vectors, segmentation facts
    wv: object = None                              # the word vectors used (gensim KeyedVectors)


def input_spec_for(cfg: TrainConfig) -> dict:
    """The bundle's `input` object for this configuration (`kdedge_run.bundle.ids_input_spec`)."""
    from kdedge.networks.architectures import architecture

    if architecture(cfg.arch).hierarchical:
        return ids_input_spec(max_sentences=cfg.max_sentences, max_sentence_len=cfg.max_sentence_len)
    return ids_input_spec(cfg.max_len)


def featurize(cfg: TrainConfig, splits: dict[str, Dataset], wv=None, phases=None, progress: bool = False) -> Features:
    """Segment every split, build the vocabulary and vectors from `splits["train"]`, map to ids. Word2Vec vectors
    trained here are kept in (or taken from) `phases` (`kdedge.training.resume.Phases`) when given."""
    all_texts = [t for ds in splits.values() for t in ds.texts]
    convert = resolve_convert(cfg.convert, splits["train"].texts)
    segmenter = Segmenter(cfg.segmenter, convert, cfg.jieba_hmm, cfg.ckip_model)
    start = time.perf_counter()
    seg = segmenter.segment(all_texts)
    seg_seconds = time.perf_counter() - start
    tokens, pos = {}, 0
    for name, ds in splits.items():
        tokens[name] = seg["tokens"][pos:pos + len(ds)]
        pos += len(ds)
    vectors_report = {"source": "word2vec on the training texts", "epochs": cfg.w2v_epochs}
    if wv is None and cfg.vectors:
        wv = load_vectors(cfg.vectors)
        vectors_report = {"source": str(cfg.vectors), "sha256": file_sha256(cfg.vectors)}
    elif wv is not None:
        vectors_report = {"source": "pre-loaded vectors"}
    extra = set(wv.key_to_index) if wv is not None else None
    vocab = Vocabulary.build(tokens["train"], cfg.min_count, cfg.max_vocab, extra)
    if wv is None:
        def train():
            return train_word2vec(tokens["train"], cfg.embedding_dim, cfg.w2v_epochs, cfg.seed, progress=progress)
        wv = train() if phases is None else phases.vectors(train)
    table, table_report = embedding_matrix(vocab, wv, cfg.embedding_dim, cfg.seed)
    spec = input_spec_for(cfg)
    feats = Features(splits["train"].label_names, segmenter, seg["dictionary"], vocab, table, spec,
                     {name: ds.texts for name, ds in splits.items()}, tokens, wv=wv)
    for name, ds in splits.items():
        ids = [tokens_to_ids(toks, vocab.index, spec) for toks in tokens[name]]
        feats.x[name] = np.stack([i for i, _ in ids]).astype(np.int32)
        feats.y[name] = ds.targets()
        feats.report.setdefault("truncated_texts", {})[name] = int(sum(t for _, t in ids))
    feats.report.update({"segmenter": segmenter.spec(), "segmentation_seconds": seg_seconds,
                         "vectors": {**vectors_report, **table_report},
                         "coverage": {name: vocab.coverage(toks) for name, toks in tokens.items()}})
    return feats


def train_student(cfg: TrainConfig, feats: Features, progress: bool = False, kd=None, rows=None,
                  run_out: str | None = None, init: Trained | None = None) -> Trained:
    """The multi-label student, trained on `rows` of the training texts (all by default) with epochs selected on
    validation: on the true labels, or with `kd` = (per-label α, T, soft targets of every training row) the KD
    student. `run_out`: see `distill.fit_network`; `init`: a student whose weights this one starts from."""
    from kdedge.training.distill import Network, fit_network, make_hard_loss, make_kd_loss, positive_weights, student_groups
    from kdedge.networks.models import arch_params, build_classifier

    n, y = len(feats.label_names), feats.y["train"] if rows is None else feats.y["train"][np.asarray(rows)]
    params = arch_params(cfg.arch, cfg.arch_params)
    pos_weight = positive_weights(y, cfg.pos_weight)
    if kd is None:
        loss, targets, desc = make_hard_loss(pos_weight), y, f"{cfg.arch} student"
    else:
        alphas, temperature, soft = kd
        soft = soft if rows is None else soft[np.asarray(rows)]
        loss, targets = make_kd_loss(n, alphas, temperature, pos_weight), np.concatenate([y, soft], axis=1)
        desc = f"{cfg.arch} kd T={temperature:g}" + ("" if init is None else " from the plain student")

    def build():
        return build_classifier(cfg.arch, feats.x["train"].shape[1:], feats.table, n, params, cfg.dropout,
                                cfg.trainable_embeddings)
    return fit_network(cfg, feats, Network(build, loss, lambda model: student_groups(model, n), desc), targets, rows,
                       progress=progress, run_out=run_out, init=None if init is None else init.model)


def train_kd(cfg: TrainConfig, feats: Features, teacher: Trained, student: Trained | None,
             progress: bool = False) -> Trained:
    """The KD student: teacher logits calibrated (`cfg.teacher_calibration`) and gated per label against the plain
    student (`cfg.kd_label_gate`, when one is given), both fitted on `targets.teacher_evidence`; one student per (α, T)
    of `cfg.kd_grid()`, each from fresh weights or the plain student's (`cfg.kd_init`); the best on the validation
    criterion is kept, with the search and the targets' record."""
    from kdedge.teaching.targets import fit_targets, label_alphas, soft_targets

    calibration, gate, fitted_on = fit_targets(cfg, feats, teacher, student)
    if gate is not None:
        taught = [name for name, t in zip(feats.label_names, gate["teach"]) if t]
        log.info("KD teaches %d of %d labels (the teacher's F1 on %s ≥ the plain student's): %s",
                 len(taught), len(feats.label_names), fitted_on, ", ".join(taught) or "none")
    best, search = None, []
    for alpha, temperature in cfg.kd_grid():
        alphas = label_alphas(alpha, gate["teach"]) if gate is not None else np.float32(alpha)
        soft = soft_targets(teacher.logits["train"], calibration, temperature)
        res = train_student(cfg, feats, progress, kd=(alphas, temperature, soft),
                            init=student if cfg.kd_init == "student" else None)
        search.append({"alpha": alpha, "temperature": temperature, "criterion": res.fit.criterion,
                       "epochs_run": res.fit.epochs_run, "seconds": res.fit.seconds})
        if best is None or res.fit.criterion < best.fit.criterion:
            best, chosen = res, (alpha, temperature)
    targets = {"calibration": calibration.to_dict(), "crossfit": cfg.teacher_crossfit, "fitted_on": fitted_on,
               "gate": None if gate is None else {
                   "teach": [bool(t) for t in gate["teach"]],
                   "teacher_f1": [round(float(v), 4) for v in gate["teacher_f1"]],
                   "student_f1": [round(float(v), 4) for v in gate["student_f1"]],
                   "teacher_positives": [int(v) for v in gate["teacher_positives"]],
                   "validation_positives": [int(v) for v in gate["validation_positives"]]}}
    best.kd = KDChoice(*chosen, search, targets)
    return best


def train_modes(cfg: TrainConfig, feats: Features, modes, progress: bool = False,
                teacher_of: Callable[[str], Trained] | None = None, phases=None,
                student_runs_out: bool = False) -> dict[str, Trained]:
    """Train the requested modes on `feats.x["train"]`, selecting epochs on `feats.x["val"]`.

    Returns {mode: result}. `kd` needs a teacher: `teacher_of(kind)` gives a trained one of that kind (default:
    `teachers.train_teacher`; `kdedge cv` looks in its cache first); with `--teacher auto` the plain student is
    trained first (also when `student` is not among `modes`: then it is not returned) and
    `teachers.choose_teacher` picks the kind against it; so it is with `--kd-init student`. The plain student, when
    trained, also drives the KD student's per-label gate. With `phases` (`kdedge.training.resume.Phases`) every
    teacher and student is kept as soon as it is trained, and one kept by an interrupted run is taken instead of
    trained again. `student_runs_out`: the plain student trains all `cfg.epochs` and can be had as trained for
    fewer (`Trained.within`, `kdedge cv`'s same-budget control). The plain student returned is the best of all its
    epochs with `cfg.plain_run_out` (it then runs out in any case), else the one patience would have given.
    """
    from kdedge.training.distribute import get_strategy
    from kdedge.teaching.teachers import choose_teacher, train_teacher

    get_strategy(cfg)  # the strategy fit_network trains under; refuses a cpu_replicas this process cannot give

    def kept(name: str, train: Callable[[], Trained]) -> Trained:
        return train() if phases is None else phases.trained(name, train)
    if teacher_of is None:
        def teacher_of(kind):
            return kept(f"teacher-{kind}", lambda: train_teacher(dataclasses.replace(cfg, teacher=kind), feats,
                                                                progress))
    out: dict[str, Trained] = {}
    wants_teacher = "teacher" in modes or "kd" in modes
    student = None
    needs_student = (wants_teacher and cfg.teacher == "auto") or ("kd" in modes and cfg.kd_init == "student")
    if "student" in modes or needs_student:
        run_out = "all" if cfg.plain_run_out else "patience" if student_runs_out else None
        student = kept("student", lambda: train_student(cfg, feats, progress, run_out=run_out))
    if "student" in modes:  # otherwise it only served the teacher's choice, the gate and the KD student's start
        out["student"] = student
    if wants_teacher:
        out["teacher"] = (choose_teacher(cfg, feats, student, teacher_of) if cfg.teacher == "auto"
                          else teacher_of(cfg.teacher))
    if "kd" in modes:
        out["kd"] = kept("kd", lambda: train_kd(cfg, feats, out["teacher"], student, progress))
    return out


@dataclass(frozen=True)
class TrainingData:
    """What a run learns from: the labelled texts (`--data`), the allowed labels (`--labels`), whether bad rows are
    skipped (`--skip-invalid`) and the labels' descriptions kept in the run (`--label-descriptions`)."""

    path: str
    labels_file: str | None = None
    skip_invalid: bool = False
    label_descriptions: str | None = None


def resume_identity(cfg: TrainConfig, data: TrainingData) -> dict:
    """Everything a run's phases depend on (`kdedge.training.resume`): the settings that change what is learned, the bytes
    of the data, labels and vectors files, and kdedge's version."""
    return {"kdedge": __version__, "skip_invalid": data.skip_invalid,
            "config": {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_SETTINGS},
            "data": file_sha256(resolve_data(data.path)),
            "labels": file_sha256(data.labels_file) if data.labels_file else None,
            "vectors": file_sha256(cfg.vectors) if cfg.vectors else None}


def train_run(cfg: TrainConfig, data: str | TrainingData, out: str, *, force: bool = False, restart: bool = False,
              progress: bool = True) -> dict:
    """Train the configured modes and write the run directory atomically; returns metrics.json.

    `data`: a file of labelled texts, or a TrainingData saying how to read it. Every finished phase is kept beside
    `out` (`kdedge.training.resume`): the same command after an interruption resumes from them, unless `restart`.
    """
    from kdedge.training.distribute import get_strategy, is_chief, resolve
    from kdedge.training.resume import Phases

    data = data if isinstance(data, TrainingData) else TrainingData(data)
    modes = MODES if cfg.mode == "all" else (cfg.mode,)  # a mode outside these fails when cfg is built
    out_path = Path(out)
    strategy = get_strategy(cfg)  # first: MultiWorkerMirroredStrategy and --cpu-replicas must precede other TF ops
    chief = is_chief(strategy)  # other workers of a cluster train alongside and write nothing
    if chief:
        check_replaceable(out_path, force, run_listing, RUN)  # before any data is read or model trained
    start = time.perf_counter()
    ds, descriptions = _read_data(cfg, data)
    # the workers of a multi-worker cluster train every phase together: none of them resumes alone
    phases = (Phases(out_path, resume_identity(cfg, data), restart)
              if chief and resolve(cfg.strategy, cfg.cpu_replicas) != "multiworker" else None)
    try:
        tmp = staging_dir(out_path, force) if chief else Path(tempfile.mkdtemp(prefix=".kdedge-worker-"))
    except BaseException:
        if phases is not None:
            phases.release(finished=False)
        raise
    try:
        with _logged_to(tmp / "train.log"):
            train_rows, val_rows = stratified_split(ds.targets(), cfg.val_split, cfg.seed)
            splits = {"train": ds.subset(train_rows), "val": ds.subset(val_rows)}
            log.info("%s: %d texts (%d skipped), %d labels; train %d, validation %d", data.path, len(ds), ds.skipped,
                     len(ds.label_names), len(train_rows), len(val_rows))
            feats = featurize(cfg, splits, phases=phases, progress=progress)
            _log_features(cfg, feats)
            results = train_modes(cfg, feats, modes, progress, phases=phases)
            _write_inputs(tmp, feats, splits["val"], descriptions)
            metrics = {"data": str(data.path), "texts": {"train": len(train_rows), "val": len(val_rows)},
                       **_metrics(tmp, cfg, feats, results), "wall_seconds": round(time.perf_counter() - start, 2)}
            write_json(tmp / "metrics.json", metrics)
            write_json(tmp / "config.json", _run_record(cfg, data, ds, feats, list(results), strategy))
        if chief:
            commit_dir(tmp, out_path)
        else:
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if phases is not None:
            phases.release(finished=False)
        raise
    if phases is not None:
        phases.release(finished=True)
    return metrics


def _read_data(cfg: TrainConfig, data: TrainingData) -> tuple[Dataset, dict | None]:
    """The labelled texts, checked to be trainable, and the labels' descriptions (None when not given)."""
    ds = load_dataset(data.path, data.labels_file, skip_invalid=data.skip_invalid)
    check_trainable(ds, data.path, cfg.val_split)
    if not data.label_descriptions:
        return ds, None
    return ds, read_label_descriptions(data.label_descriptions, ds.label_names)


@contextmanager
def _logged_to(path: Path):
    """kdedge's log also written to `path` (the run's train.log) while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def _log_features(cfg: TrainConfig, feats: Features) -> None:
    vectors = feats.report["vectors"]
    log.info("segmenter %s%s; vocabulary %d tokens; vectors: %s", cfg.segmenter,
             " (Traditional → Simplified)" if feats.segmenter.char_map is not None else "", len(feats.vocab),
             f"{Path(vectors['source']).name}, {vectors.get('vocab_with_vector', '?')} of the tokens have one"
             if "sha256" in vectors else vectors["source"])


def _write_inputs(tmp: Path, feats: Features, val: Dataset, descriptions: dict | None) -> None:
    """What export needs to reproduce the inputs: segmenter files, vocabulary, vectors, label descriptions and the
    validation texts with their tokens (`validation.jsonl`)."""
    (tmp / SEGMENTER_DICTIONARY).parent.mkdir()  # the segmenter folder of both files
    if feats.dictionary is not None:
        write_dictionary(feats.dictionary, tmp / SEGMENTER_DICTIONARY)
    if feats.segmenter.char_map is not None:
        feats.segmenter.char_map.save(tmp / SEGMENTER_CHAR_MAP)
    feats.vocab.save(tmp / "vocab.txt")
    if descriptions:
        (tmp / "label_descriptions.json").write_text(json.dumps(descriptions, ensure_ascii=False, indent=1),
                                                     encoding="utf-8")
    np.save(tmp / "vectors.npy", feats.table)
    with open(tmp / "validation.jsonl", "w", encoding="utf-8") as f:
        for text, labels, rid, toks in zip(val.texts, val.labels, val.ids, feats.tokens["val"]):
            f.write(json.dumps({"id": rid, "text": text, "labels": labels, "tokens": toks}, ensure_ascii=False) + "\n")


def _write_modes(tmp: Path, cfg: TrainConfig, feats: Features, results: dict[str, Trained]) -> dict:
    """Each mode's model (`MODE.keras`), validation logits (`predictions/val_MODE.npy`) and learning history
    (`history.json`); returns metrics.json's `modes`: validation scores and how each was fitted."""
    (tmp / "predictions").mkdir()
    modes, history = {}, {}
    for mode, res in results.items():
        if res.model is not None:  # a linear teacher is not a network: its logits are kept
            res.model.save(tmp / f"{mode}.keras")
        np.save(tmp / "predictions" / f"val_{mode}.npy", res.logits["val"])
        modes[mode] = {
            **evaluate_logits(res.logits["val"], feats.y["val"], feats.label_names, cfg.threshold_min_support),
            "epochs_run": res.fit.epochs_run, "best_epoch": res.fit.best_epoch,
            "seconds": round(res.fit.seconds, 2), "train_seconds": round(res.fit.train_seconds, 2),
            "validation_seconds": round(res.fit.validation_seconds, 2),
            **res.fit.teacher_record(), **(res.kd.to_dict() if res.kd else {})}
        history[mode] = res.fit.history
    write_json(tmp / "history.json", history)
    return modes


def _metrics(tmp: Path, cfg: TrainConfig, feats: Features, results: dict[str, Trained]) -> dict:
    """metrics.json's labels, modes (`_write_modes`), the student selected for export and the teacher's cost."""
    metrics = {"labels": feats.label_names, "modes": _write_modes(tmp, cfg, feats, results)}
    selected = select_student(results, feats.y["val"], cfg.threshold_min_support, cfg.select_confidence, cfg.seed,
                              cfg.select_metric)
    if selected is not None:
        metrics["selected"] = selected
        log.info("selected for export: the %s (%s)", "KD student" if selected["mode"] == "kd" else "plain student",
                 selected["reason"])
    if "teacher" in results and "student" in results:
        metrics["teacher_to_student_time"] = round(results["teacher"].fit.seconds / results["student"].fit.seconds, 2)
    return metrics


def _run_record(cfg: TrainConfig, data: TrainingData, ds: Dataset, feats: Features, modes: list[str],
                strategy) -> dict:
    """config.json: the settings, labels, input and segmenter of the run, the data it read, and where it ran."""
    from kdedge.training.distribute import describe

    return {
        "kdedge_version": __version__, "config": cfg.to_dict(), "labels": feats.label_names,
        "input": feats.input_spec,
        "segmenter": {**feats.segmenter.spec(),
                      "dictionary": SEGMENTER_DICTIONARY if feats.dictionary else None,
                      "char_map": SEGMENTER_CHAR_MAP if feats.segmenter.char_map else None},
        "data": {"path": str(data.path), "sha256": file_sha256(resolve_data(data.path)), "texts": len(ds),
                 "skipped": ds.skipped},
        "features": feats.report, "modes": modes,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "distribute": describe(strategy)}
