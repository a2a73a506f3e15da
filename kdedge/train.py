"""`kdedge train`: data → segmentation → vocabulary + Word2Vec → teacher, student and KD student → run dir."""
from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdedge import __version__
from kdedge.config import TrainConfig
from kdedge.data import Dataset, load_dataset
from kdedge.embed import Vocabulary, embedding_matrix, load_vectors, train_word2vec
from kdedge.evaluate import evaluate_logits, sigmoid
from kdedge.files import commit_dir, staging_dir, write_json
from kdedge.folds import stratified_split
from kdedge.segment import Segmenter, resolve_convert, write_dictionary
from kdedge_run.bundle import file_sha256
from kdedge_run.text import SENTENCE_END_TOKENS, tokens_to_ids

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
    tokens: dict = field(default_factory=dict)     # split → token lists
    x: dict = field(default_factory=dict)          # split → id arrays
    y: dict = field(default_factory=dict)          # split → 0/1 targets
    report: dict = field(default_factory=dict)     # coverage, vectors, segmentation facts
    wv: object = None                              # the word vectors used (gensim KeyedVectors)


def input_spec_for(cfg: TrainConfig) -> dict:
    """The bundle's `input` object for this configuration (docs/bundle.md)."""
    from kdedge.models import is_hierarchical

    if is_hierarchical(cfg.arch):
        return {"kind": "hierarchical", "max_sentences": cfg.max_sentences,
                "max_sentence_len": cfg.max_sentence_len, "sentence_end_tokens": list(SENTENCE_END_TOKENS),
                "pad_id": 0, "oov_id": 1, "padding": "post", "truncation": "post"}
    return {"kind": "sequence", "max_len": cfg.max_len, "pad_id": 0, "oov_id": 1,
            "padding": "post", "truncation": "post"}


def featurize(cfg: TrainConfig, splits: dict[str, Dataset], wv=None) -> Features:
    """Segment every split, build the vocabulary and vectors from `splits["train"]`, map to ids."""
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
        wv = train_word2vec(tokens["train"], cfg.embedding_dim, cfg.w2v_epochs, cfg.seed)
    table, table_report = embedding_matrix(vocab, wv, cfg.embedding_dim, cfg.seed)
    spec = input_spec_for(cfg)
    feats = Features(splits["train"].label_names, segmenter, seg["dictionary"], vocab, table, spec, tokens, wv=wv)
    for name, ds in splits.items():
        ids = [tokens_to_ids(toks, vocab.index, spec) for toks in tokens[name]]
        feats.x[name] = np.stack([i for i, _ in ids]).astype(np.int32)
        feats.y[name] = ds.targets()
        feats.report.setdefault("truncated_texts", {})[name] = int(sum(t for _, t in ids))
    feats.report.update({"segmenter": segmenter.spec(), "segmentation_seconds": seg_seconds,
                         "vectors": {**vectors_report, **table_report},
                         "coverage": {name: vocab.coverage(toks) for name, toks in tokens.items()}})
    return feats


def _seed(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_modes(cfg: TrainConfig, feats: Features, modes, progress: bool = False, teacher: dict | None = None) -> dict:
    """Train the requested modes on `feats.x["train"]`, selecting epochs on `feats.x["val"]`.

    Returns {mode: {"model", "val_logits", "fit"}}; `kd` trains the teacher first unless `teacher` (a
    previous result with "train_logits") is given. With several (alpha, T) pairs in `cfg.kd_grid()` one KD
    student is trained per pair and the best on the validation criterion is kept (`kd["search"]` lists all).
    """
    from tqdm.auto import tqdm

    from kdedge.distill import (fit, make_hard_loss, make_kd_loss, positive_weights, predict_logits, student_groups,
                                teacher_groups, teacher_loss)
    from kdedge.models import arch_params, build_classifier, is_hierarchical
    from kdedge.towers import TOWERED, build_teacher, tower_groups

    params = arch_params(cfg.arch, cfg.arch_params)
    n = len(feats.label_names)
    id_shape = feats.x["train"].shape[1:]
    pos_weight = positive_weights(feats.y["train"], cfg.pos_weight)  # students only
    out: dict = {"teacher": teacher} if teacher is not None else {}
    wanted = [m for m in MODES if (m in modes or (m == "teacher" and "kd" in modes)) and m not in out]
    for mode in wanted:
        for alpha, temperature in (cfg.kd_grid() if mode == "kd" else [(None, None)]):
            _seed(cfg.seed)
            towers = n if mode == "teacher" else 0
            towered = mode == "teacher" and cfg.arch in TOWERED  # tower-batched teacher (textcnn: separate towers)
            bucket = towered and not is_hierarchical(cfg.arch)   # any-length input: trimmed, length-bucketed batches
            model = (build_teacher(cfg.arch, id_shape, feats.table, n, params, cfg.dropout) if towered else
                     build_classifier(cfg.arch, id_shape, feats.table, n, params, cfg.dropout,
                                      cfg.trainable_embeddings and not towers, towers))
            if mode == "teacher":
                groups = tower_groups(model, n) if towered else teacher_groups(model, n)
                loss, targets = teacher_loss, feats.y["train"]
            elif mode == "student":
                loss, groups, targets = make_hard_loss(pos_weight), student_groups(model, n), feats.y["train"]
            else:
                soft = sigmoid(out["teacher"]["train_logits"] / temperature).astype(np.float32)
                loss = make_kd_loss(n, alpha, temperature, pos_weight)
                groups, targets = student_groups(model, n), np.concatenate([feats.y["train"], soft], axis=1)
            desc = f"{cfg.arch} {mode}" + (f" a={alpha:g} T={temperature:g}" if mode == "kd" else "")
            bar = tqdm(total=cfg.epochs, desc=desc, leave=False, disable=not progress)
            info = fit(model, feats.x["train"], targets, feats.x["val"], feats.y["val"], loss, groups, cfg, bar, bucket)
            bar.close()
            log.info("%s: %d epochs, %.1f s, best validation %s %.4f", desc, info["epochs_run"], info["seconds"],
                     cfg.monitor, info["best_value"][0])
            if mode == "kd":
                trial = {"alpha": alpha, "temperature": temperature, "criterion": info["best_value"][0],
                         "epochs_run": info["epochs_run"], "seconds": info["seconds"]}
                search = out.get("kd", {}).get("search", []) + [trial]
                if "kd" in out and out["kd"]["criterion"] <= trial["criterion"]:
                    out["kd"]["search"] = search
                    continue
            result = {"model": model, "fit": info, "trim": bucket,  # trim: the model takes trimmed batches
                      "val_logits": predict_logits(model, feats.x["val"], trim=bucket)}
            if mode == "teacher":
                result["train_logits"] = predict_logits(model, feats.x["train"], trim=bucket)
            if mode == "kd":
                result.update(search=search, alpha=alpha, temperature=temperature, criterion=trial["criterion"])
            out[mode] = result
    return out


def train_run(cfg: TrainConfig, data: str, out: str, labels_file: str | None = None, force: bool = False,
              skip_invalid: bool = False, progress: bool = True) -> dict:
    """Train the configured modes and write the run directory atomically; returns metrics.json."""
    modes = MODES if cfg.mode == "all" else (cfg.mode,)
    if cfg.mode not in (*MODES, "all"):
        raise ValueError(f"--mode must be teacher, student, kd or all, not {cfg.mode!r}")
    out_path = Path(out)
    if out_path.exists() and not force:
        raise FileExistsError(f"{out_path}: already exists (use --force to replace it)")
    start = time.perf_counter()
    ds = load_dataset(data, labels_file, skip_invalid=skip_invalid)
    tmp = staging_dir(out_path, force)
    logging_handler = logging.FileHandler(tmp / "train.log", encoding="utf-8")
    log.addHandler(logging_handler)
    log.setLevel(logging.INFO)
    try:
        train_rows, val_rows = stratified_split(ds.targets(), cfg.val_split, cfg.seed)
        splits = {"train": ds.subset(train_rows), "val": ds.subset(val_rows)}
        log.info("%s: %d texts (%d skipped), %d labels; train %d, validation %d", data, len(ds), ds.skipped,
                 len(ds.label_names), len(train_rows), len(val_rows))
        feats = featurize(cfg, splits)
        log.info("segmenter %s; vocabulary %d; vectors %s", feats.segmenter.spec(), len(feats.vocab),
                 feats.report["vectors"])
        results = train_modes(cfg, feats, modes, progress)
        metrics = {"data": str(data), "texts": {"train": len(train_rows), "val": len(val_rows)},
                   "labels": feats.label_names, "modes": {}}
        (tmp / "segmenter").mkdir()
        if feats.dictionary is not None:
            write_dictionary(feats.dictionary, tmp / "segmenter" / "dict.txt")
        if feats.segmenter.char_map is not None:
            feats.segmenter.char_map.save(tmp / "segmenter" / "t2s.json")
        feats.vocab.save(tmp / "vocab.txt")
        np.save(tmp / "vectors.npy", feats.table)
        (tmp / "predictions").mkdir()
        history = {}
        for mode, res in results.items():
            res["model"].save(tmp / f"{mode}.keras")
            np.save(tmp / "predictions" / f"val_{mode}.npy", res["val_logits"])
            metrics["modes"][mode] = {
                **evaluate_logits(res["val_logits"], feats.y["val"], feats.label_names,
                                  cfg.threshold_min_support),
                "epochs_run": res["fit"]["epochs_run"], "best_epoch": res["fit"]["best_epoch"],
                "seconds": round(res["fit"]["seconds"], 2), "train_seconds": round(res["fit"]["train_seconds"], 2),
                "validation_seconds": round(res["fit"]["validation_seconds"], 2)}
            if mode == "kd":
                metrics["modes"]["kd"].update({k: res[k] for k in ("alpha", "temperature", "search")})
            history[mode] = res["fit"]["history"]
            log.info("%s: %s", mode, {k: round(v, 4) for k, v in metrics["modes"][mode]["at_0.5"].items()
                                      if isinstance(v, float)})
        if "teacher" in results and "student" in results:
            metrics["teacher_to_student_time"] = round(results["teacher"]["fit"]["seconds"]
                                                       / results["student"]["fit"]["seconds"], 2)
        with open(tmp / "validation.jsonl", "w", encoding="utf-8") as f:
            for text, labels, rid, toks in zip(splits["val"].texts, splits["val"].labels, splits["val"].ids,
                                               feats.tokens["val"]):
                f.write(json.dumps({"id": rid, "text": text, "labels": labels, "tokens": toks},
                                   ensure_ascii=False) + "\n")
        metrics["wall_seconds"] = round(time.perf_counter() - start, 2)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "history.json", history)
        write_json(tmp / "config.json", {
            "kdedge_version": __version__, "config": cfg.to_dict(), "labels": feats.label_names,
            "input": feats.input_spec, "segmenter": {**feats.segmenter.spec(),
                                                     "dictionary": "segmenter/dict.txt" if feats.dictionary else None,
                                                     "char_map": "segmenter/t2s.json" if feats.segmenter.char_map else None},
            "data": {"path": str(data), "sha256": file_sha256(data), "texts": len(ds), "skipped": ds.skipped},
            "features": feats.report, "modes": list(results),
            "platform": {"python": platform.python_version(), "machine": platform.machine()}})
        log.removeHandler(logging_handler)
        logging_handler.close()
        commit_dir(tmp, out_path)
    except BaseException:
        log.removeHandler(logging_handler)
        logging_handler.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics
