"""Teachers for distillation, by name: each returns its logits on every split and what it cost.

- `towers`: the paper's binary relevance, one network of the run's architecture per label
  (`kdedge.teaching.towers`), each tower's best epoch selected on its own label.
- `linear`: binary relevance with one logistic regression per label on TF-IDF word 1–2-grams plus
  character 1–3-grams (`kdedge.teaching.baselines.tfidf_lr`): the strongest classic model measured here,
  trained in seconds whatever the number of labels.
- `ensemble`: both, each Platt-calibrated on the validation split, their probabilities averaged.
- `auto` (the default, `choose_teacher`): the linear teacher, unless it is better than the plain student on no
  label (its per-label gate); then the towers teacher too, and the one that passes the gate on more labels.

`teacher_crossfit` K ≥ 2 (default 0: off) makes the training-text outputs out-of-fold: K teachers each predict
the training texts they did not see, so the soft targets are not the teacher's memory of its training set
(validation and test outputs come from the teacher trained on all training texts), and the calibration and
gate are fitted on those outputs (`targets.teacher_evidence`). For `linear` it costs seconds (K + 1 fits); `towers`
trains K networks on (K − 1)/K of the texts each and averages them on the other splits (`towers_teacher`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np

from kdedge.networks.architectures import architecture
from kdedge.evaluate import scores, sigmoid, tune_thresholds
from kdedge.teaching.targets import fit_calibration, fit_targets, logit, teacher_evidence
from kdedge.training.trained import Fit, Trained

log = logging.getLogger("kdedge")


def out_of_fold(fit_predict: Callable, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Logits for every row of `y` from a model that did not train on it: fit_predict(train_rows, predict_rows)."""
    from kdedge.text.folds import kfold

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


def linear_teacher(cfg, feats, progress: bool = False) -> Trained:
    """TF-IDF + one logistic regression per label: logits on every split of `feats`, no network (it trains
    in seconds, so `progress` shows nothing; every teacher takes it)."""
    from kdedge.teaching.baselines import lexical_tokens, tfidf_lr

    start = time.perf_counter()
    toks = lexical_tokens(cfg, feats.texts)
    y = feats.y["train"]
    others = {s: t for s, t in toks.items() if s != "train" or not cfg.teacher_crossfit}
    logits = {s: logit(p).astype(np.float32) for s, p in tfidf_lr(toks["train"], y, others, seed=cfg.seed).items()}
    if cfg.teacher_crossfit:
        train = toks["train"]

        def fit_predict(rows, held):
            return logit(tfidf_lr([train[i] for i in rows], y[rows], {"held": [train[i] for i in held]},
                                  seed=cfg.seed)["held"])
        logits["train"] = out_of_fold(fit_predict, y, cfg.teacher_crossfit, cfg.seed)
    return Trained(fit=Fit(seconds=time.perf_counter() - start), logits=logits)


def train_towers(cfg, feats, progress: bool = False, rows=None) -> Trained:
    """One towers network (`kdedge.teaching.towers`: a tower per label, about `cfg.teacher_width_budget` networks wide
    together) trained on `rows` of the training texts (all by default), each tower's epoch selected on its
    own label; its logits on validation."""
    from kdedge.training.distill import Network, fit_network, teacher_loss
    from kdedge.networks.models import arch_params
    from kdedge.teaching.towers import build_teacher, tower_groups

    record, n = architecture(cfg.arch), len(feats.label_names)
    params = record.tower_params(arch_params(cfg.arch, cfg.arch_params), n, cfg.teacher_width_budget)
    y = feats.y["train"] if rows is None else feats.y["train"][np.asarray(rows)]

    def build():
        return build_teacher(cfg.arch, feats.x["train"].shape[1:], feats.table, n, params, cfg.dropout)
    net = Network(build, teacher_loss, lambda model: tower_groups(model, n), f"{cfg.arch} teacher",
                  bucket=not record.hierarchical)
    return fit_network(cfg, feats, net, y, rows, progress=progress)


def bagged(cfg, feats, train_part: Callable) -> Trained:
    """K = `cfg.teacher_crossfit` networks, `train_part(rows)` each trained on the other folds of the training
    texts: their out-of-fold logits on the training texts, and the mean of their logits on every other split
    (a bagged teacher). K networks on (K − 1)/K of the texts cost about K − 1 full ones."""
    start = time.perf_counter()
    others = {split: [] for split in feats.x if split != "train"}
    fits = []

    def fit_predict(rows, held):
        part = train_part(rows)
        fits.append(part.fit)
        for split, outputs in others.items():
            outputs.append(part.predict(feats.x[split]))
        return part.predict(feats.x["train"][held])
    train = out_of_fold(fit_predict, feats.y["train"], cfg.teacher_crossfit, cfg.seed)
    logits = {"train": train, **{split: np.mean(outputs, axis=0).astype(np.float32) for split, outputs in others.items()}}
    fit = dataclasses.replace(fits[0], seconds=time.perf_counter() - start,
                              train_seconds=sum(f.train_seconds for f in fits),
                              validation_seconds=sum(f.validation_seconds for f in fits))
    return Trained(fit=fit, logits=logits)


def towers_teacher(cfg, feats, progress: bool = False) -> Trained:
    """The paper's binary-relevance networks (one tower per label) with their logits on every split.

    Not cross-fitted: one towers network trained on every training text (kept as the result's `model`).
    Cross-fitted (`cfg.teacher_crossfit` K ≥ 2): no network sees every training text; `bagged` K towers networks.
    """
    if cfg.teacher_crossfit:
        return bagged(cfg, feats, lambda rows: train_towers(cfg, feats, progress, rows=rows))
    start = time.perf_counter()
    result = train_towers(cfg, feats, progress)
    for split in feats.x:
        result.logits_on(split, feats.x[split])
    result.fit.seconds = time.perf_counter() - start
    return result


def students_teacher(cfg, feats, progress: bool = False) -> Trained:
    """Self-distillation from a bag of plain students: `bagged` K = `cfg.teacher_crossfit` multi-label students
    of the run's architecture, each trained on the other folds (K − 1 students' cost). On validation and test
    the teacher is their mean, an ensemble; on training texts each text's target comes from the student that
    did not see it. Needs cross-fitting (a student teaching its twin its own memory would teach nothing): the
    config refuses `teacher_crossfit` 0 with it."""
    from kdedge.training.train import train_student

    return bagged(cfg, feats, lambda rows: train_student(cfg, feats, progress, rows=rows))


def ensemble_teacher(cfg, feats, progress: bool = False) -> Trained:
    """Towers and linear teachers, each Platt-calibrated on validation, probabilities averaged (→ logits)."""
    parts = {"towers": towers_teacher(cfg, feats, progress), "linear": linear_teacher(cfg, feats)}
    calibrations = {name: fit_calibration("platt", part.logits["val"], feats.y["val"], cfg.threshold_min_support)
                    for name, part in parts.items()}
    logits = {split: logit(np.mean([sigmoid(calibrations[name].apply(part.logits[split]))
                                    for name, part in parts.items()], axis=0)).astype(np.float32)
              for split in parts["linear"].logits}
    towers = parts["towers"].fit
    return Trained(logits=logits, fit=Fit(
        seconds=sum(p.fit.seconds for p in parts.values()), epochs_run=towers.epochs_run,
        best_epoch=towers.best_epoch, history=towers.history,
        components={name: {"seconds": round(p.fit.seconds, 2),
                           "validation": validation_scores(p.logits["val"], feats.y["val"], feats.label_names,
                                                           cfg.threshold_min_support)}
                    for name, p in parts.items()}))


TEACHERS: dict[str, Callable] = {
    "towers": towers_teacher,
    "linear": linear_teacher,
    "ensemble": ensemble_teacher,
    "students": students_teacher,
}


TEACHER_CHOICES = ("auto", *TEACHERS)


def choose_teacher(cfg, feats, student: Trained, teacher_of: Callable[[str], Trained]) -> Trained:
    """`--teacher auto`: the linear teacher (`teacher_of("linear")`, seconds) unless it would teach nothing, i.e. no
    label passes the per-label gate against the plain `student` (`targets.fit_targets`); then the towers teacher
    as well, and of the two the one that teaches more labels (ties: the higher macro-F1 on
    `targets.teacher_evidence`). Every candidate's labels taught, macro-F1 and seconds and the reason are recorded
    in the chosen teacher's fit."""
    gate_cfg = dataclasses.replace(cfg, kd_label_gate=True)  # the choice rests on the gate, even where KD skips it
    candidates, tried = {}, {}
    for kind in ("linear", "towers"):
        teacher = teacher_of(kind)
        _, gate, on = fit_targets(gate_cfg, feats, teacher, student)
        logits, y, _ = teacher_evidence(teacher, feats)
        macro = validation_scores(logits, y, feats.label_names, cfg.threshold_min_support)["macro_f1"]
        tried[kind] = teacher
        candidates[kind] = {"labels_taught": int(gate["teach"].sum()), "macro_f1": macro, "on": on,
                            "seconds": round(teacher.fit.seconds, 2)}
        log.info("teacher candidate %s: passes the gate on %d of %d labels; macro-F1 %.3f on %s", kind,
                 candidates[kind]["labels_taught"], len(feats.label_names), candidates[kind]["macro_f1"], on)
        if candidates[kind]["labels_taught"]:
            break
    kind = max(candidates, key=lambda k: (candidates[k]["labels_taught"], candidates[k]["macro_f1"]))
    chosen, best = tried[kind], candidates[kind]
    if best["labels_taught"]:
        reason = (f"{kind}: better than the plain student, on the evidence, on {best['labels_taught']} of "
                  f"{len(feats.label_names)} labels" + ("" if len(candidates) == 1 else
                                                        f" (the linear teacher on none; tried {', '.join(candidates)})"))
    else:
        reason = (f"{kind}, the higher macro-F1 of {', '.join(candidates)}; no teacher is better than the plain "
                  "student on any label with enough evidence" +
                  (", so the gate lets it teach none (the KD student learns from the true labels alone)"
                   if cfg.kd_label_gate else "; it teaches every label all the same (--no-kd-label-gate)"))
    chosen.fit = dataclasses.replace(chosen.fit, candidates=candidates, reason=reason)
    log.info("teacher chosen: %s", reason)
    return chosen


def train_teacher(cfg, feats, progress: bool = False) -> Trained:
    """The configured teacher (`cfg.teacher`, one of TEACHERS; `auto` is `choose_teacher`'s) with its logits on
    every split, its cost and its validation scores; its `model` is the Keras network of a towers teacher, else
    None."""
    if cfg.teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)} here (auto needs a student: "
                         f"choose_teacher), not {cfg.teacher!r}")
    result = TEACHERS[cfg.teacher](cfg, feats, progress)
    fit = result.fit
    fit.kind, fit.crossfit = cfg.teacher, cfg.teacher_crossfit
    fit.validation = validation_scores(result.logits["val"], feats.y["val"], feats.label_names,
                                       cfg.threshold_min_support)
    log.info("teacher %s: %.1f s, validation micro-F1 %.3f, macro-F1 %.3f (tuned)", cfg.teacher, fit.seconds,
             fit.validation["micro_f1"], fit.validation["macro_f1"])
    return result
