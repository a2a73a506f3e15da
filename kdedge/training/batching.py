"""Batches of post-padded id rows cut to their longest text: length-bucketed training batches and
trimmed prediction, for models whose input takes any length (the tower-batched teachers)."""
from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf


def text_lengths(x: np.ndarray) -> np.ndarray:
    """Per row of post-padded ids: index of the last non-padding id + 1 (0 for an empty row)."""
    present = x != 0
    return np.where(present.any(axis=1), x.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)


def trim_padding(x: np.ndarray) -> np.ndarray:
    """The ids without the trailing columns that are padding in every row (at least one column kept)."""
    return x[:, :max(1, int(text_lengths(x).max(initial=0)))]


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, chunk_batches: int = 50):
    """Row indices of batches of similar length: shuffle, sort by length inside chunks of
    `chunk_batches` batches, cut into batches, shuffle the batch order."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), chunk_batches * batch_size):
        chunk = order[start:start + chunk_batches * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bucketed_dataset(x: np.ndarray, targets: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """A tf.data dataset of length-bucketed, trimmed (ids, targets) batches for `model.fit`.

    Each pass (epoch) draws a new batch order from (`seed`, pass number). The ids' length dimension is
    None in the element spec, so Keras traces its training step once for all batch lengths.
    """
    lengths, passes = text_lengths(x), itertools.count()
    targets = targets.astype(np.float32)

    def batches():
        for rows in bucket_batches(lengths, batch_size, np.random.default_rng([seed, next(passes)])):
            yield trim_padding(x[rows]).astype(np.int32), targets[rows]

    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, targets.shape[1]), tf.float32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))


def predict_logits(model, x, batch_size: int = 256, trim: bool = False) -> np.ndarray:
    """Logits for all rows, in inference mode, without Keras' per-call `predict` overhead.

    `trim=True` (models whose input takes any length) runs the rows in length order, each batch cut to
    its longest text, and returns the logits in the original row order.
    """
    order = np.argsort(text_lengths(x), kind="stable") if trim else slice(None)
    rows = x[order]
    out = [np.asarray(model(trim_padding(rows[i:i + batch_size]) if trim else rows[i:i + batch_size],
                            training=False)) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    logits = np.concatenate(out)
    if trim:
        logits[order] = logits.copy()
    return logits
