#!/usr/bin/env python
"""TextCNN student training on length-bucketed batches cut after their longest text, against full batches (not adopted).

The TextCNN student's outputs do not change once `padding_margin` padding ids follow a text, so a twin that takes
ids of any length could train on length-bucketed batches cut that many ids after their longest text (healthner9:
mean 47 of max_len 128) and hand its weights to the fixed-length network. Each way trains in a fresh process on the
same split (fold 0 of 5 of --data, validation 10% of the rest, as `kdedge cv`), pinned to one core with one
TensorFlow thread (a `kdedge cv --jobs 2` piece), patience = epochs, --repeats times, alternating:
  * full — the fixed-length network on shuffled full batches (what `kdedge train` does);
  * trimmed — the twin on the trimmed batches, the first network the process trains;
  * trimmed-after-a-fixed-step — the same after one training step of a fixed-length copy in the same process.
Prints per-epoch training seconds (median of epochs 2 on; the first also traces) and ratios against full:

    python bench/bench_trimmed_training.py --vectors VECTORS.bin --epochs 3 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

from measure import HEALTHNER9, log, machine_line, markdown_table

WAYS = ("full", "trimmed", "trimmed-after-a-fixed-step")


def train_one_way(args) -> dict:
    """Train `args.way` in this process; its per-epoch training seconds and best validation macro-F1."""
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
    from kdedge.training.batching import bucket_batches, text_lengths
    from kdedge.training.distill import fit, make_hard_loss, positive_weights, seed_everything, selector_for, student_groups
    from kdedge.training.train import featurize

    cfg = make_config({"arch": "textcnn", "epochs": args.epochs, "patience": args.epochs, "vectors": args.vectors})
    ds = load_dataset(args.data)
    rest = np.flatnonzero(kfold(ds.targets(), 5, cfg.seed) != 0)
    train, val = stratified_split(ds.targets()[rest], cfg.val_split, cfg.seed)
    feats = featurize(cfg, {"train": ds.subset(rest[train]), "val": ds.subset(rest[val])})
    x, y = feats.x["train"], feats.y["train"]
    params, n = arch_params("textcnn"), y.shape[1]
    loss = make_hard_loss(positive_weights(y, cfg.pos_weight))

    def network(id_shape):
        return build_classifier("textcnn", id_shape, feats.table, n, params, cfg.dropout, cfg.trainable_embeddings)
    seed_everything(cfg.seed)
    if args.way == "trimmed-after-a-fixed-step":
        fixed = network(x.shape[1:])
        fixed.compile(optimizer="adam", loss=loss)
        fixed.train_on_batch(x[:32], y[:32])
    model = network(x.shape[1:] if args.way == "full" else (None,))
    selector = selector_for(cfg, (feats.x["val"], feats.y["val"]), student_groups(model, n))
    if args.way == "full":
        fit(model, (x, y), loss, selector, cfg)
    else:  # the margin keeps every text's outputs as they are with full padding
        margin, lengths = architecture("textcnn").padding_margin(params), text_lengths(x)
        batches = [bucket_batches(lengths, 32, np.random.default_rng([cfg.seed, e])) for e in range(args.epochs)]
        data = tf.data.Dataset.from_generator(
            lambda: ((x[r][:, :min(x.shape[1], lengths[r].max() + margin)], y[r]) for epoch in batches for r in epoch),
            output_signature=(tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, n), tf.float32)))
        model.compile(optimizer="adam", loss=loss)
        model.fit(data, epochs=args.epochs, steps_per_epoch=len(batches[0]), callbacks=[selector], verbose=0)
    return {"epochs": [train for train, _ in selector.epoch_seconds], "best": -selector.best[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HEALTHNER9 / "paper2724.jsonl"))
    parser.add_argument("--vectors", default=None, help="pre-trained vectors (default: Word2Vec on the fold)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.way:
        print(json.dumps(train_one_way(args)))
        return
    seconds, best = {way: [] for way in WAYS}, {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way in WAYS:
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--way", way], capture_output=True,
                                   text=True, check=True)
            result = json.loads(child.stdout.splitlines()[-1])
            seconds[way] += result["epochs"][1:]
            best[way].append(result["best"])
            log(f"repeat {repeat} {way}: epochs {', '.join(f'{s:.1f}' for s in result['epochs'])} s")
    median = {way: statistics.median(v) for way, v in seconds.items()}
    print(f"{machine_line()}; each way in its own process pinned to core {args.core}")
    print(markdown_table(["batches", "s / epoch (median)", "full ÷ this", "best validation macro-F1"],
                         [[way, f"{median[way]:.2f}", f"{median['full'] / median[way]:.2f}×",
                           ", ".join(f"{v:.4f}" for v in best[way])] for way in WAYS]))


if __name__ == "__main__":
    main()
