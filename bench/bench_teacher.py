#!/usr/bin/env python
"""Benchmark the binary-relevance teacher's training speed: n separate towers vs one tower-batched body.

For textrnn, gru_att and han, times training steps (Adam, the teacher loss, the architecture's batch
size) of
  * old: `models.build_classifier(towers=n)`, n Keras bodies on ids padded to max_len (80) or
    [max_sentences, max_sentence_len];
  * new: `towers.build_teacher`, masked tower-batched recurrences; textrnn and gru_att on
    length-bucketed batches trimmed to their longest text (`batching.bucketed_dataset`), as `kdedge train`
    does; han on the same fixed-shape batches as old.
Texts are the jieba token lists of ../shared/data/healthner9/paper2724.jsonl when present (segmented
as `kdedge train` does), else synthetic token lists with a realistic length distribution. Prints the
median ms per step, seconds per epoch (mean step × batches per epoch; the bucketed teachers are
timed over a whole epoch, their step time varying with the batch's length) and the speed-up:

    python bench/bench_teacher.py --steps 6
"""
from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from measure import HEALTHNER9, markdown_table, read_texts

DATA = HEALTHNER9 / "paper2724.jsonl"
ARCHS = ("textrnn", "gru_att", "han")


def token_lists(n_texts: int, seed: int) -> tuple[list[list[str]], str]:
    """Segmented texts of paper2724 (first n_texts), or synthetic ones (log-normal lengths, median ~25 tokens)."""
    if DATA.is_file():
        from kdedge.text.segment import Segmenter, resolve_convert

        texts = read_texts(DATA, n_texts)
        return Segmenter("jieba", resolve_convert("auto", texts)).segment(texts)["tokens"], str(DATA)
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(25), 0.6, n_texts).astype(int), 1, 200)
    ends = ["。", "？", "！"]
    lists = [[ends[k % 3] if rng.random() < 0.08 else f"w{k}" for k in rng.integers(0, 3000, n)] for n in lengths]
    return lists, "synthetic (log-normal lengths)"


class StepTimer(keras.callbacks.Callback):
    """Records the wall time at the end of each training step (synchronised on the step's loss)."""

    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))
        self.ends.append(time.perf_counter())


def time_steps(model, data, steps: int | None, warmup: int, batch_size: int) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` steps (tracing included there).

    `data` is (x, y) arrays (fixed-shape batches) or a dataset; `steps=None`: one whole epoch of it.
    """
    from kdedge.training.distill import teacher_loss

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=teacher_loss, jit_compile=False)
    timer = StepTimer()
    if isinstance(data, tuple):
        x, y = data
        model.fit(x[:batch_size * (steps + warmup)], y[:batch_size * (steps + warmup)], batch_size=batch_size,
                  epochs=1, shuffle=False, callbacks=[timer], verbose=0)
    else:
        model.fit(data.take(warmup).concatenate(data) if steps is None else data, epochs=1,
                  steps_per_epoch=None if steps is None else steps + warmup, callbacks=[timer], verbose=0)
    return list(np.diff(timer.ends)[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--texts", type=int, default=2179, help="texts per epoch (0.8 of paper2724)")
    parser.add_argument("--labels", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the architecture's (32; gru_att 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from kdedge.config import TrainConfig
    from kdedge.text.embed import Vocabulary
    from kdedge.networks.models import arch_params, build_classifier
    from kdedge.training.batching import bucketed_dataset
    from kdedge.training.distill import seed_everything
    from kdedge.teaching.towers import build_teacher
    from kdedge.training.train import input_spec_for
    from kdedge_run.text import tokens_to_ids

    tokens, source = token_lists(args.texts, args.seed)
    vocab = Vocabulary.build(tokens)
    lengths = np.array([len(t) for t in tokens])
    print(f"texts: {len(tokens)} from {source}; tokens per text mean {lengths.mean():.1f}, "
          f"median {np.median(lengths):.0f}, p99 {np.percentile(lengths, 99):.0f}")
    rng = np.random.default_rng(args.seed)
    y = (rng.random((len(tokens), args.labels)) < 0.15).astype(np.float32)
    rows = []
    for arch in args.archs:
        cfg = TrainConfig(arch=arch, seed=args.seed, batch_size=args.batch_size)
        batch = cfg.resolved_batch_size()
        table = rng.normal(0, 0.3, (len(vocab), cfg.embedding_dim)).astype(np.float32)
        table[0] = 0.0
        x = np.stack([tokens_to_ids(t, vocab.index, input_spec_for(cfg))[0] for t in tokens]).astype(np.int32)
        params, per_epoch = arch_params(arch), -(-len(x) // batch)
        seed_everything(args.seed)
        old = build_classifier(arch, x.shape[1:], table, args.labels, params, cfg.dropout, towers=args.labels)
        old_steps = time_steps(old, (x, y), args.steps, args.warmup, batch)
        seed_everything(args.seed)
        new = build_teacher(arch, x.shape[1:], table, args.labels, params, cfg.dropout)
        if arch == "han":  # fixed shape: a few steps tell the epoch
            new_steps = time_steps(new, (x, y), args.steps, args.warmup, batch)
        else:  # bucketed: step times vary with the batch's length, so time a whole epoch
            new_steps = time_steps(new, bucketed_dataset(x, y, batch, args.seed), None, args.warmup, batch)
        row = {"arch": arch, "batch": batch, "old_ms": 1000 * statistics.median(old_steps),
               "new_ms": 1000 * statistics.median(new_steps), "old_epoch": per_epoch * float(np.mean(old_steps)),
               "new_epoch": per_epoch * float(np.mean(new_steps))}
        rows.append(row)
        print(f"{arch:8s} batch {batch:3d}: old {row['old_ms']:7.0f} ms/step {row['old_epoch']:6.1f} s/epoch | "
              f"new {row['new_ms']:6.0f} ms/step {row['new_epoch']:6.1f} s/epoch | "
              f"speed-up {row['old_epoch'] / row['new_epoch']:.1f}x per epoch", flush=True)
    print("\n" + markdown_table(
        ["arch", "batch", "old ms/step", "new ms/step", "old s/epoch", "new s/epoch", "speed-up (epoch)"],
        [[r["arch"], r["batch"], f"{r['old_ms']:.0f}", f"{r['new_ms']:.0f}", f"{r['old_epoch']:.1f}",
          f"{r['new_epoch']:.1f}", f"{r['old_epoch'] / r['new_epoch']:.1f}x"] for r in rows]))


if __name__ == "__main__":
    main()
