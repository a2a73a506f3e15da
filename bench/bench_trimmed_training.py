#!/usr/bin/env python
"""TextCNN student training on length-bucketed batches trimmed after their longest text, against full batches.

The TextCNN student's outputs do not change once `padding_margin` padding ids follow a text, so since 2026-12-07
`kdedge train` trains it through a twin that takes any length, on length-bucketed batches cut that many ids after
their longest text (`kdedge.training.distill.Network`), and keeps the fixed-length network with the twin's weights.
This trains both ways on the same split (fold 0 of 5 of --data, validation 10% of the rest, as `kdedge cv`), with
patience = epochs, pinned to one core with one TensorFlow thread (a `kdedge cv --jobs 2` piece), the two ways
alternating --repeats times, and prints per-epoch seconds (median), the ratio full ÷ trimmed, and each way's best
validation macro-F1 (tuned thresholds) to show that the cheaper batches do not cost quality:

    python bench/bench_trimmed_training.py --vectors VECTORS.bin --epochs 4 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from measure import HEALTHNER9, log, machine_line, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HEALTHNER9 / "paper2724.jsonl"))
    parser.add_argument("--vectors", default=None, help="pre-trained vectors (default: Word2Vec on the fold)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kdedge.config import make_config
    from kdedge.networks.architectures import architecture
    from kdedge.networks.models import arch_params, build_classifier
    from kdedge.text.data import load_dataset
    from kdedge.text.folds import kfold, stratified_split
    from kdedge.training.distill import fit, make_hard_loss, positive_weights, seed_everything, selector_for, student_groups
    from kdedge.training.train import featurize

    cfg = make_config({"arch": "textcnn", "epochs": args.epochs, "patience": args.epochs, "vectors": args.vectors})
    ds = load_dataset(args.data)
    rest = np.flatnonzero(kfold(ds.targets(), 5, cfg.seed) != 0)
    train, val = stratified_split(ds.targets()[rest], cfg.val_split, cfg.seed)
    feats = featurize(cfg, {"train": ds.subset(rest[train]), "val": ds.subset(rest[val])})
    x, y = feats.x["train"], feats.y["train"]
    params = arch_params("textcnn")
    margin = architecture("textcnn").padding_margin(params)
    lengths = np.count_nonzero(x, axis=1)
    log(f"{len(x)} training texts, mean length {lengths.mean():.1f} of max_len {x.shape[1]}; margin {margin}")

    def train_once(trimmed: bool) -> tuple[list[float], float]:
        seed_everything(cfg.seed)
        model = build_classifier("textcnn", (None,) if trimmed else x.shape[1:], feats.table, y.shape[1], params,
                                 cfg.dropout, cfg.trainable_embeddings)
        selector = selector_for(cfg, (feats.x["val"], feats.y["val"]), student_groups(model, y.shape[1]),
                                trim=margin if trimmed else None)
        fit(model, (x, y), make_hard_loss(positive_weights(y, cfg.pos_weight)), selector, cfg)
        return [train for train, _ in selector.epoch_seconds], -selector.best[0]

    seconds = {"full": [], "trimmed": []}
    best = {"full": [], "trimmed": []}
    for repeat in range(args.repeats):
        for way in ("full", "trimmed"):
            epochs, f1 = train_once(way == "trimmed")
            seconds[way] += epochs[1:]  # the first epoch also traces the step function
            best[way].append(f1)
            log(f"repeat {repeat} {way}: epochs {', '.join(f'{s:.1f}' for s in epochs)} s, best val macro-F1 {f1:.4f}")
    median = {way: statistics.median(v) for way, v in seconds.items()}
    print(machine_line())
    print(markdown_table(["batches", "s / epoch (median)", "best validation macro-F1"],
                         [[way, f"{median[way]:.2f}", ", ".join(f"{v:.4f}" for v in best[way])] for way in median]))
    print(f"\nfull ÷ trimmed: {median['full'] / median['trimmed']:.2f}×")


if __name__ == "__main__":
    main()
