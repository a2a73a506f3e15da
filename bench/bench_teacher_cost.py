#!/usr/bin/env python
"""Teacher cost against a student's, as the label count grows: teacher ÷ student wall time at 9, 20, 40 labels.

Trains, on the same texts and for the same fixed number of epochs (patience = epochs, so nothing stops
early), the plain student (one multi-label network) and each teacher (`kdedge.teaching.teachers`):
  * towers-before — the teacher before issue 17's work: n separate full-width Keras TextCNNs on ids
    padded to max_len (`models.build_classifier(towers=n)`), trained as `kdedge train` trained them then;
  * towers-full — today's tower-batched teacher (one convolution per kernel size for all towers,
    length-bucketed batches) at full width (`--teacher-width-budget 0`, `--config paper`);
  * towers — the same with kdedge's default width budget (the towers together about 3 networks wide);
  * linear — TF-IDF word + character n-grams, one logistic regression per label.
Texts are the first --texts of ../shared/data/healthner9/paper2724.jsonl when present, else synthetic
strings of common characters. Labels are synthetic so that any count can be asked for: label j is
present when the text contains the j-th of the texts' commonest characters (ranks 5, 6, …; the very
commonest would be on every text). Character input (`--segmenter char`), the run's defaults otherwise.
Prints seconds and ratios measured in one run:

    python bench/bench_teacher_cost.py --labels 9 20 40 --epochs 2 --texts 1200
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from measure import HEALTHNER9, markdown_table, read_texts

DATA = HEALTHNER9 / "paper2724.jsonl"
TEACHERS = {"towers-full": {"teacher": "towers", "teacher_width_budget": 0},
            "towers": {"teacher": "towers"}, "linear": {"teacher": "linear"}}
KINDS = ("towers-before", *TEACHERS)


def texts(n: int, seed: int) -> tuple[list[str], str]:
    """The first n texts of paper2724, or n synthetic strings (20-80 of 300 common Han characters)."""
    if DATA.is_file():
        return read_texts(DATA, n), str(DATA)
    rng = np.random.default_rng(seed)
    alphabet = [chr(0x4E00 + i) for i in range(300)]
    return ["".join(rng.choice(alphabet, rng.integers(20, 80))) for _ in range(n)], "synthetic"


def dataset(all_texts: list[str], n_labels: int):
    """A kdedge Dataset whose label j marks the texts containing the (j+5)-th commonest character."""
    from kdedge.text.data import Dataset

    common = [c for c, _ in Counter(c for t in all_texts for c in set(t)).most_common(n_labels + 5)][5:]
    names = [f"L{j}" for j in range(len(common))]
    labels = [[names[j] for j, c in enumerate(common) if c in t] for t in all_texts]
    return Dataset(all_texts, labels, names, [str(i) for i in range(len(all_texts))])


def separate_towers(cfg, feats) -> dict:
    """The towers teacher before issue 17 (full-width separate Keras bodies), trained and predicted as
    `kdedge train` did then; returns its validation scores."""
    from kdedge.training.batching import predict_logits
    from kdedge.training.distill import fit, seed_everything, selector_for, teacher_groups, teacher_loss
    from kdedge.networks.models import arch_params, build_classifier
    from kdedge.teaching.teachers import validation_scores

    seed_everything(cfg.seed)
    n = len(feats.label_names)
    model = build_classifier(cfg.arch, feats.x["train"].shape[1:], feats.table, n,
                             arch_params(cfg.arch, cfg.arch_params), cfg.dropout, towers=n)
    fit(model, (feats.x["train"], feats.y["train"]), teacher_loss,
        selector_for(cfg, (feats.x["val"], feats.y["val"]), teacher_groups(model, n)), cfg)
    logits = {split: predict_logits(model, feats.x[split]) for split in feats.x}
    return validation_scores(logits["val"], feats.y["val"], feats.label_names, cfg.threshold_min_support)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[9, 20, 40])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--texts", type=int, default=1200)
    parser.add_argument("--arch", default="textcnn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from kdedge.config import make_config
    from kdedge.text.folds import stratified_split
    from kdedge.teaching.teachers import train_teacher
    from kdedge.training.train import featurize, train_student

    raw, source = texts(args.texts, args.seed)
    print(f"{len(raw)} texts from {source}; {args.arch}, characters, {args.epochs} epochs each, "
          f"Word2Vec vectors trained on these texts")
    rows = []
    for n_labels in args.labels:
        ds = dataset(raw, n_labels)
        train, val = stratified_split(ds.targets(), 0.1, args.seed)
        base = {"arch": args.arch, "segmenter": "char", "max_len": 128, "epochs": args.epochs,
                "patience": args.epochs, "w2v_epochs": 1, "seed": args.seed}
        cfg = make_config(base)
        feats = featurize(cfg, {"train": ds.subset(train), "val": ds.subset(val)})
        if not rows:  # TensorFlow's first trainings pay one-off start-up costs: not the student's
            train_student(cfg, feats)
        start = time.perf_counter()
        train_student(cfg, feats)
        row = {"labels": len(ds.label_names), "student": time.perf_counter() - start}
        start = time.perf_counter()
        row["towers-before macro"] = separate_towers(cfg, feats)["macro_f1"]
        row["towers-before"] = time.perf_counter() - start
        for kind, settings in TEACHERS.items():
            start = time.perf_counter()
            result = train_teacher(make_config({**base, **settings}), feats)
            row[kind] = time.perf_counter() - start
            row[f"{kind} macro"] = result.fit.validation["macro_f1"]
        rows.append(row)
        print(f"{row['labels']:3d} labels: student {row['student']:7.1f} s | "
              + " | ".join(f"{k} {row[k]:7.1f} s ({row[k] / row['student']:.2f}x)" for k in KINDS), flush=True)
    print("\n" + markdown_table(
        ["labels", "student s", *[f"{k} {c}" for k in KINDS for c in ("s", "÷ student", "val. macro-F1")]],
        [[r["labels"], f"{r['student']:.1f}", *[x for k in KINDS for x in (
            f"{r[k]:.1f}", f"{r[k] / r['student']:.2f}", f"{100 * r[k + ' macro']:.1f}")]] for r in rows]))


if __name__ == "__main__":
    main()
