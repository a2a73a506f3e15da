"""Teachers for distillation, by name: each returns its logits on every split and what it cost.

- `towers`: the paper's binary relevance, one network of the run's architecture per label
  (`kdedge.towers`), each tower's best epoch selected on its own label.
- `linear`: binary relevance with one logistic regression per label on TF-IDF word 1–2-grams plus
  character 1–3-grams (`kdedge.baselines.tfidf_lr`): the strongest classic model measured here,
  trained in seconds whatever the number of labels.
- `ensemble`: both, each Platt-calibrated on the validation split, their probabilities averaged.

`teacher_crossfit` K ≥ 2 makes the training-text outputs out-of-fold: K teachers each predict the
training texts they did not see, so the soft targets are not the teacher's memory of its training set
(validation and test outputs come from the teacher trained on all training texts). It multiplies the
teacher's cost by about K + 1: cheap for `linear`, expensive for `towers`.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from kdedge.evaluate import scores, sigmoid, tune_thresholds
from kdedge.targets import fit_calibration, logit

TEACHERS = ("towers", "linear", "ensemble")
log = logging.getLogger("kdedge")


def out_of_fold(fit_predict: Callable, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Logits for every row of `y` from a model that did not train on it: fit_predict(train_rows, predict_rows)."""
    from kdedge.folds import kfold

    fold_of = kfold(y, folds, seed)
    out = np.zeros(y.shape, dtype=np.float32)
    for k in range(folds):
        held = fold_of == k
        out[held] = fit_predict(np.flatnonzero(~held), np.flatnonzero(held))
    return out


def validation_scores(val_logits: np.ndarray, y_val: np.ndarray, label_names, min_support: int) -> dict:
    """micro/macro-F1 of a teacher on the validation split at tuned thresholds (for the run's records)."""
    probs = sigmoid(val_logits)
    s = scores(y_val, (probs >= tune_thresholds(y_val, probs, min_support)).astype(float), label_names)
    return {"micro_f1": round(s["micro_f1"], 4), "macro_f1": round(s["macro_f1"], 4)}


def linear_teacher(cfg, feats) -> dict:
    """TF-IDF + one logistic regression per label; {split}_logits for every split of `feats`, and fit info."""
    from kdedge.baselines import lexical_tokens, tfidf_lr

    start = time.perf_counter()
    toks = lexical_tokens(cfg, feats.texts)
    y = feats.y["train"]
    others = {s: t for s, t in toks.items() if s != "train" or not cfg.teacher_crossfit}
    result = {f"{s}_logits": logit(p).astype(np.float32)
              for s, p in tfidf_lr(toks["train"], y, others, seed=cfg.seed).items()}
    if cfg.teacher_crossfit:
        train = toks["train"]

        def fit_predict(rows, held):
            return logit(tfidf_lr([train[i] for i in rows], y[rows], {"held": [train[i] for i in held]},
                                  seed=cfg.seed)["held"])
        result["train_logits"] = out_of_fold(fit_predict, y, cfg.teacher_crossfit, cfg.seed)
    result["fit"] = {"seconds": time.perf_counter() - start}
    return result


def towers_teacher(cfg, feats, progress: bool = False) -> dict:
    """The paper's binary-relevance networks (one tower per label); the trained Keras model is kept."""
    from kdedge.train import train_network

    start = time.perf_counter()
    result = train_network(cfg, feats, "teacher", progress=progress)
    if cfg.teacher_crossfit:
        def fit_predict(rows, held):
            return train_network(cfg, feats, "teacher", rows=rows, predict_rows=held)["held_logits"]
        result["train_logits"] = out_of_fold(fit_predict, feats.y["train"], cfg.teacher_crossfit, cfg.seed)
    result["fit"]["seconds"] = time.perf_counter() - start
    return result


def ensemble_teacher(cfg, feats, progress: bool = False) -> dict:
    """Towers and linear teachers, each Platt-calibrated on validation, probabilities averaged (→ logits)."""
    parts = {"towers": towers_teacher(cfg, feats, progress), "linear": linear_teacher(cfg, feats)}
    splits = [k for k in parts["linear"] if k.endswith("_logits")]
    calibrations = {name: fit_calibration("platt", part["val_logits"], feats.y["val"]) for name, part in parts.items()}
    result = {split: logit(np.mean([sigmoid(calibrations[name].apply(part[split])) for name, part in parts.items()],
                                   axis=0)).astype(np.float32) for split in splits}
    result["fit"] = {"seconds": sum(p["fit"]["seconds"] for p in parts.values()),
                     "components": {name: {"seconds": round(p["fit"]["seconds"], 2),
                                           "validation": validation_scores(p["val_logits"], feats.y["val"],
                                                                           feats.label_names,
                                                                           cfg.threshold_min_support)}
                                    for name, p in parts.items()},
                     "epochs_run": parts["towers"]["fit"]["epochs_run"],
                     "best_epoch": parts["towers"]["fit"]["best_epoch"],
                     "history": parts["towers"]["fit"]["history"]}
    return result


def train_teacher(cfg, feats, progress: bool = False) -> dict:
    """The configured teacher (`cfg.teacher`): {split}_logits, "fit" (seconds, …, validation scores),
    "model" (a Keras model, or None for teachers that are not networks) and "trim"."""
    if cfg.teacher == "towers":
        result = towers_teacher(cfg, feats, progress)
    elif cfg.teacher == "linear":
        result = {"model": None, "trim": False, **linear_teacher(cfg, feats)}
    elif cfg.teacher == "ensemble":
        result = {"model": None, "trim": False, **ensemble_teacher(cfg, feats, progress)}
    else:
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, not {cfg.teacher!r}")
    fit = result["fit"]
    fit.setdefault("epochs_run", 0)
    fit.setdefault("best_epoch", [])
    fit.setdefault("history", [])
    fit.setdefault("train_seconds", fit["seconds"])
    fit.setdefault("validation_seconds", 0.0)
    fit["kind"] = cfg.teacher
    fit["crossfit"] = cfg.teacher_crossfit
    fit["validation"] = validation_scores(result["val_logits"], feats.y["val"], feats.label_names,
                                          cfg.threshold_min_support)
    log.info("teacher %s: %.1f s, validation micro-F1 %.3f, macro-F1 %.3f (tuned)", cfg.teacher, fit["seconds"],
             fit["validation"]["micro_f1"], fit["validation"]["macro_f1"])
    return result
