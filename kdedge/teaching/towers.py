"""Tower-batched binary-relevance teachers (textcnn, textrnn, gru_att, han).

`models.build_classifier(towers=n)` builds n separate Keras bodies. Here the n single-label towers are
one body whose every trainable variable has a leading towers axis (tower i's logit depends only on
slice i of each), so the input projection of all towers is one matrix product and the recurrence is
one loop whose step is a batched matrix product over towers (and both directions). Padding is masked
inside the recurrence (state carried over, output zero), so a text's logits do not depend on how much
padding follows it: textrnn and gru_att take ids of any length and train on length-bucketed batches,
each trimmed to its longest text (`kdedge.training.batching`).

Epoch selection per label uses `TowerSlice` (slice i of every variable) in place of a tower layer.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from kdedge.networks.architectures import architecture
from kdedge.networks.models import FoldSentences, embed_ids


def _per_slice(make):
    """An initializer filling every trailing 2-D slice with a fresh `make()` initializer (own seed, own fans)."""
    def initialize(shape, dtype=None):
        slices = [make()(shape[-2:], dtype) for _ in range(int(np.prod(shape[:-2])))]
        return ops.reshape(ops.stack(slices), shape)
    return initialize


@keras.saving.register_keras_serializable("kdedge")
class IdMask(layers.Layer):
    """1.0 where the id is not padding (0); with `sentences=True`, where the sentence has any such id."""

    def __init__(self, sentences: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sentences = sentences

    def call(self, ids):
        mask = ops.not_equal(ids, 0)
        return ops.cast(ops.any(mask, axis=-1) if self.sentences else mask, "float32")

    def get_config(self):
        return {**super().get_config(), "sentences": self.sentences}


class _TowerBiRNN(layers.Layer):
    """Bidirectional recurrent layer for `towers` towers at once: [x, mask] → `[towers, batch, time, 2·units]`.

    x is `[batch, time, dim]` (shared by the towers) or `[batch, time, towers, dim]` (one input per
    tower); mask is `[batch, time]`. Weights: kernel `[towers, 2, dim, gates·units]`, recurrent kernel
    `[towers, 2, units, gates·units]` (direction 0 forward, 1 backward; gate order as Keras). Masked
    steps keep the state and output zeros, as Keras' Bidirectional(return_sequences=True) with a mask;
    rows without any unmasked step, and the steps after the last unmasked one, are not computed at all.

    The input projection of every step, tower and direction is computed before the loop (time-major,
    the backward direction on time-reversed input); one loop step then advances both directions of all
    towers, state `[batch, 2·towers, units]` (direction-major). Subclasses give `gates`, `_bias_shape()`,
    `_biases()` (input and recurrent bias, `[towers, 2, gates·units]`, the latter or None) and
    `_cell(state, x, inner)`: the new state tuple (h first) from the projected input and h·recurrent kernel.
    """

    gates = 0
    states = 1

    def __init__(self, units: int, towers: int, **kwargs):
        super().__init__(**kwargs)
        self.units, self.towers = units, towers

    def build(self, input_shape):
        n, width = self.towers, self.gates * self.units
        self.kernel = self.add_weight(name="kernel", shape=(n, 2, input_shape[0][-1], width),
                                      initializer=_per_slice(keras.initializers.GlorotUniform))
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(n, 2, self.units, width),
                                                initializer=_per_slice(keras.initializers.Orthogonal))
        self.bias = self.add_weight(name="bias", shape=self._bias_shape(), initializer=self._bias_init)

    def _bias_init(self, shape, dtype=None):
        return ops.zeros(shape, dtype)

    def _directions_first(self, w):
        """`[towers, 2, ...]` → `[2·towers, ...]` (direction-major, the state's order)."""
        w = tf.transpose(w, (1, 0, *range(2, len(w.shape))))
        return tf.reshape(w, (2 * self.towers, *w.shape[2:]))

    def call(self, inputs):
        x, mask = inputs
        present = tf.cast(mask, "bool")
        nonempty = tf.reduce_any(present, axis=1)
        rows = tf.where(nonempty)[:, 0]
        # Only rows with a token, and only up to the last step any of them uses, enter the loop.
        time = tf.shape(x)[1]
        used = tf.maximum(tf.reduce_max(tf.where(present, tf.range(1, time + 1)[None, :], 0)), 1)
        h = self._run(tf.gather(x, rows)[:, :used], tf.gather(present, rows)[:, :used])
        # back to every row (empty ones read an appended zero row) and every step, tower-major
        source = tf.where(nonempty, tf.cumsum(tf.cast(nonempty, "int32")) - 1, tf.shape(rows)[0])
        h = tf.gather(tf.pad(h, [[0, 0], [0, 1], [0, 0], [0, 0]]), source, axis=1)
        h = tf.pad(h, [[0, time - used], [0, 0], [0, 0], [0, 0]])
        return tf.transpose(h, (2, 1, 0, 3)) * tf.cast(mask, h.dtype)[None, :, :, None]

    def _run(self, x, present):
        """The recurrence over x `[rows, time, ...]` with mask `present` (bool): `[time, rows, towers, 2u]`."""
        n = self.towers
        x = tf.transpose(x, (1, 0, *range(2, len(x.shape))))                  # time-major
        equation = "tbnd,ndk->tbnk" if len(x.shape) == 4 else "tbd,ndk->tbnk"
        forward = tf.einsum(equation, x, self.kernel[:, 0])                    # [time, batch, towers, g·u]
        backward = tf.einsum(equation, tf.reverse(x, [0]), self.kernel[:, 1])  # step s reads time T-1-s
        steps = tf.transpose(present)                                          # [time, batch]
        step_mask = tf.repeat(tf.stack([steps, tf.reverse(steps, [0])], axis=2), n, axis=2)[..., None]
        input_bias, recurrent_bias = self._biases()
        input_bias = self._directions_first(input_bias)
        recurrent_bias = 0.0 if recurrent_bias is None else self._directions_first(recurrent_bias)
        recurrent = self._directions_first(self.recurrent_kernel)              # [2·towers, u, g·u]

        def step(state, inputs):
            x_forward, x_backward, keep = inputs
            inner = tf.einsum("bju,juk->bjk", state[0], recurrent) + recurrent_bias
            new = self._cell(state, tf.concat([x_forward, x_backward], axis=1) + input_bias, inner)
            return tuple(tf.where(keep, a, b) for a, b in zip(new, state))

        zeros = tf.zeros((tf.shape(x)[1], 2 * n, self.units), x.dtype)
        h = tf.scan(step, (forward, backward, step_mask), initializer=(zeros,) * self.states)[0]
        return tf.concat([h[:, :, :n], tf.reverse(h[:, :, n:], [0])], axis=-1)  # masked steps: see call

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (self.towers, shape[0], shape[1], 2 * self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "towers": self.towers}


@keras.saving.register_keras_serializable("kdedge")
class TowerBiGRU(_TowerBiRNN):
    """Towered bidirectional GRU (Keras equations, reset_after=True; bias `[towers, 2, 2, 3·units]`)."""

    gates = 3

    def _bias_shape(self):
        return (self.towers, 2, 2, self.gates * self.units)

    def _biases(self):
        return self.bias[:, :, 0], self.bias[:, :, 1]

    def _cell(self, state, x, inner):
        x_z, x_r, x_h = tf.split(x, 3, axis=-1)
        i_z, i_r, i_h = tf.split(inner, 3, axis=-1)
        z = tf.sigmoid(x_z + i_z)
        r = tf.sigmoid(x_r + i_r)
        return (z * state[0] + (1.0 - z) * tf.tanh(x_h + r * i_h),)


@keras.saving.register_keras_serializable("kdedge")
class TowerBiLSTM(_TowerBiRNN):
    """Towered bidirectional LSTM (Keras equations, unit_forget_bias=True; bias `[towers, 2, 4·units]`)."""

    gates, states = 4, 2

    def _bias_shape(self):
        return (self.towers, 2, self.gates * self.units)

    def _bias_init(self, shape, dtype=None):
        u = self.units
        return ops.concatenate([ops.zeros((*shape[:-1], u)), ops.ones((*shape[:-1], u)),
                                ops.zeros((*shape[:-1], 2 * u))], axis=-1)

    def _biases(self):
        return self.bias, None

    def _cell(self, state, x, inner):
        i, f, g, o = tf.split(x + inner, 4, axis=-1)
        c = tf.sigmoid(f) * state[1] + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c


@keras.saving.register_keras_serializable("kdedge")
class TowerAttentionPool(layers.Layer):
    """`models.AttentionPool` per tower (masked softmax over time).

    [h `[towers, batch, time, dim]`, mask `[batch, time]`] → `[batch, towers, dim]`.
    """

    def __init__(self, units: int, towers: int, **kwargs):
        super().__init__(**kwargs)
        self.units, self.towers = units, towers

    def build(self, input_shape):
        n, dim = self.towers, input_shape[0][-1]
        self.w = self.add_weight(name="w", shape=(n, dim, self.units),
                                 initializer=_per_slice(keras.initializers.GlorotUniform))
        self.b = self.add_weight(name="b", shape=(n, self.units), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(n, self.units, 1),
                                 initializer=_per_slice(keras.initializers.GlorotUniform))

    def call(self, inputs):
        h, mask = inputs
        hidden = ops.tanh(ops.matmul(h, self.w[:, None]) + self.b[:, None, None, :])     # [towers, batch, time, a]
        score = ops.squeeze(ops.matmul(hidden, self.v[:, None]), -1) + (1.0 - mask) * -1e9
        pooled = ops.squeeze(ops.matmul(ops.softmax(score, axis=-1)[..., None, :], h), -2)   # [towers, batch, dim]
        return ops.transpose(pooled, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[1], shape[0], shape[3])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "towers": self.towers}


@keras.saving.register_keras_serializable("kdedge")
class TowerMaxPool(layers.Layer):
    """Max over unmasked time steps per tower: [h `[towers, batch, time, dim]`, mask `[batch, time]`] →
    `[batch, towers, dim]` (zeros for a text without tokens)."""

    def call(self, inputs):
        h, mask = inputs
        present = (mask > 0.0)[None, :, :, None]
        pooled = ops.max(ops.where(present, h, ops.full_like(h, -np.inf)), axis=2)
        pooled = ops.where(ops.any(present, axis=2), pooled, ops.zeros_like(pooled))
        return ops.transpose(pooled, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        return (shape[1], shape[0], shape[3])


@keras.saving.register_keras_serializable("kdedge")
class TowerDense(layers.Layer):
    """One logit per tower from that tower's features: `[batch, towers, dim]` → `[batch, towers]`."""

    def __init__(self, towers: int, **kwargs):
        super().__init__(**kwargs)
        self.towers = towers

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.towers, input_shape[-1], 1),
                                      initializer=_per_slice(keras.initializers.GlorotUniform))
        self.bias = self.add_weight(name="bias", shape=(self.towers,), initializer="zeros")

    def call(self, features):
        return ops.einsum("bnd,nd->bn", features, self.kernel[..., 0]) + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.towers)

    def get_config(self):
        return {**super().get_config(), "towers": self.towers}


@keras.saving.register_keras_serializable("kdedge")
class TowerConv1D(layers.Layer):
    """`Conv1D(filters, kernel_size, activation="relu")` for `towers` towers at once, as one convolution with
    towers × filters output channels: `[batch, time, dim]` → `[towers, batch, time, filters]`.

    Kernel `[towers, kernel_size, dim, filters]`, bias `[towers, filters]` (tower i owns slice i). The time
    axis is padded at the end with kernel_size − 1 zero rows, so every position starts a window: the
    window of position t reads tokens t … t + kernel_size − 1 (zeros past the text), as the student's does.
    """

    def __init__(self, filters: int, kernel_size: int, towers: int, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.towers = filters, kernel_size, towers

    def build(self, input_shape):
        n, k, f = self.towers, self.kernel_size, self.filters
        # Glorot-uniform as Keras' Conv1D (fans k·dim and k·filters) for each tower's kernel
        scaled = _per_slice(lambda: keras.initializers.VarianceScaling(1.0 / k, "fan_avg", "uniform"))
        self.kernel = self.add_weight(name="kernel", shape=(n, k, input_shape[-1], f), initializer=scaled)
        self.bias = self.add_weight(name="bias", shape=(n, f), initializer="zeros")

    def call(self, x):
        n, k, f = self.towers, self.kernel_size, self.filters
        x = ops.pad(x, [[0, 0], [0, k - 1], [0, 0]])
        kernel = ops.reshape(ops.transpose(self.kernel, (1, 2, 0, 3)), (k, -1, n * f))
        h = ops.relu(ops.conv(x, kernel, padding="valid") + ops.reshape(self.bias, (n * f,)))  # [b, t, n·f]
        h = ops.reshape(h, (ops.shape(h)[0], ops.shape(h)[1], n, f))
        return ops.transpose(h, (2, 0, 1, 3))

    def compute_output_shape(self, input_shape):
        return (self.towers, input_shape[0], input_shape[1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "towers": self.towers}


def textcnn_towers(ids, embedded, towers: int, params: dict):
    """Per-tower features of the textcnn teacher: tower-batched convolutions of each kernel size, each
    max-pooled over the windows that start at a token (so padding after the text changes nothing)."""
    mask = IdMask(name="mask")(ids)
    pooled = [TowerMaxPool(name=f"pool{k}")([TowerConv1D(params["filters"], k, towers, name=f"conv{k}")(embedded),
                                            mask])
              for k in params["kernel_sizes"]]
    return layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]


def textrnn_towers(ids, embedded, towers: int, params: dict):
    """Per-tower features of the textrnn teacher: a tower-batched BiLSTM, max-pooled over present tokens."""
    mask = IdMask(name="mask")(ids)
    return TowerMaxPool(name="pool")([TowerBiLSTM(params["units"], towers, name="bilstm")([embedded, mask]), mask])


def gru_att_towers(ids, embedded, towers: int, params: dict):
    """Per-tower features of the gru_att teacher: a tower-batched BiGRU pooled by per-tower attention."""
    mask = IdMask(name="mask")(ids)
    h = TowerBiGRU(params["units"], towers, name="bigru")([embedded, mask])
    return TowerAttentionPool(params["attention_units"], towers, name="attention")([h, mask])


def han_towers(ids, embedded, towers: int, params: dict):
    """Per-tower features of the HAN teacher: word and sentence levels, padding words and empty sentences masked."""
    n, units, sentences = towers, params["units"], ids.shape[1]
    flat_ids = FoldSentences(sentences, name="fold_ids")(ids)                              # [B·S, W]
    word_mask = IdMask(name="word_mask")(flat_ids)
    word_h = TowerBiGRU(units, n, name="word_bigru")([FoldSentences(sentences, name="fold")(embedded), word_mask])
    sentence_vectors = TowerAttentionPool(params["attention_units"], n, name="word_attention")([word_h, word_mask])
    sentence_seq = FoldSentences(sentences, fold=False, name="unfold")(sentence_vectors)   # [B, S, n, 2u]
    sentence_mask = IdMask(sentences=True, name="sentence_mask")(ids)
    sentence_h = TowerBiGRU(units, n, name="sentence_bigru")([sentence_seq, sentence_mask])
    return TowerAttentionPool(params["attention_units"], n, name="sentence_attention")([sentence_h, sentence_mask])


def build_teacher(arch: str, id_shape: tuple, table, n_labels: int, params: dict, dropout: float) -> keras.Model:
    """The towered binary-relevance teacher: ids → frozen embedding → n_labels towers → logits `[batch, n_labels]`
    (float32), one tower per label with no trainable slice in common.

    Flat architectures take ids of any length (`id_shape` only says they are flat); hierarchical ones take
    `id_shape` = (max_sentences, max_sentence_len) and mask padding words and empty sentences.
    """
    record = architecture(arch)
    features_of = record.towers_builder()
    ids = keras.Input(shape=tuple(id_shape) if record.hierarchical else (None,), dtype="int32", name="ids")
    features = features_of(ids, embed_ids(ids, table, trainable=False), n_labels, params)
    logits = TowerDense(n_labels, name="logits")(layers.Dropout(dropout, name="dropout")(features))
    return keras.Model(ids, logits, name=f"{arch}_teacher")


class TowerSlice:
    """Tower `index`'s slice of every trainable variable of a `build_teacher` model, read and written
    with a layer's get_weights()/set_weights() (what `distill.EpochSelector` keeps and restores)."""

    def __init__(self, model: keras.Model, index: int):
        self.variables, self.index = model.trainable_weights, index

    def get_weights(self) -> list[np.ndarray]:
        """Copies of slice `index` of each variable."""
        return [np.array(v.numpy()[self.index]) for v in self.variables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Write slice `index` of each variable; the other towers' slices are left as they are."""
        for variable, value in zip(self.variables, weights, strict=True):
            full = variable.numpy().copy()
            full[self.index] = value
            variable.assign(full)


def tower_groups(model: keras.Model, n_labels: int):
    """`distill.teacher_groups` for a towered teacher: label i's column and tower i's slice."""
    return [([i], [TowerSlice(model, i)]) for i in range(n_labels)]
