"""The four architectures of the paper as Keras models: ids → embedding → body → logits.

Each architecture's record (body function, defaults, input kind, batch size) is in kdedge.networks.architectures.

Every model is `ids → Embedding("embedding") → body` where the body takes the *embedded* tensor and
outputs per-label logits (and, for attention models, the attention over tokens). The exported bundle
ships the body and the embedding table separately (docs/bundle.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers, ops

from kdedge.networks.architectures import architecture


@keras.saving.register_keras_serializable("kdedge")
class PadMask(layers.Layer):
    """1.0 where the embedded token (or, with `axes=2`, the sentence) is not padding, else 0.0.

    Padding rows of the embedding table are all zeros, so the mask is derived from the input itself.
    """

    def __init__(self, axes: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.axes = axes

    def call(self, x):
        return ops.cast(ops.max(ops.abs(x), axis=tuple(range(-self.axes, 0))) > 0.0, x.dtype)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes}


@keras.saving.register_keras_serializable("kdedge")
class AttentionPool(layers.Layer):
    """Additive attention over time: score = v·tanh(W h + b), masked softmax, weighted sum."""

    def __init__(self, units: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.w = self.add_weight(name="w", shape=(dim, self.units), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units, 1), initializer="glorot_uniform")

    def call(self, inputs):
        h, mask = inputs
        score = ops.squeeze(ops.matmul(ops.tanh(ops.matmul(h, self.w) + self.b), self.v), axis=-1)
        score = score + (1.0 - mask) * -1e9
        weights = ops.softmax(score, axis=-1)
        return ops.sum(h * ops.expand_dims(weights, -1), axis=1), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("kdedge")
class FoldSentences(layers.Layer):
    """[batch, sentences, ...] ↔ [batch·sentences, ...]: `fold=True` merges, `fold=False` splits."""

    def __init__(self, sentences: int, fold: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.sentences, self.fold = sentences, fold

    def call(self, x):
        shape = tuple(x.shape)
        if self.fold:
            return ops.reshape(x, (-1, *shape[2:]))
        return ops.reshape(x, (-1, self.sentences, *shape[1:]))

    def get_config(self):
        return {**super().get_config(), "sentences": self.sentences, "fold": self.fold}


@keras.saving.register_keras_serializable("kdedge")
class ZeroPaddingRow(keras.constraints.Constraint):
    """Keeps row 0 (the padding id) of a trainable embedding table at zero after every update."""

    def __call__(self, w):
        return ops.concatenate([ops.zeros_like(w[:1]), w[1:]], axis=0)


@dataclass
class BodySpec:
    """How to build a body: embedded input shape (no batch), labels, arch params, export options."""

    input_shape: tuple
    n_labels: int
    params: dict
    dropout: float
    unroll: bool = False
    batch_size: int | None = None


def _rnn(cell: str, units: int, spec: BodySpec, name: str):
    cls = layers.LSTM if cell == "lstm" else layers.GRU
    return layers.Bidirectional(cls(units, return_sequences=True, unroll=spec.unroll), name=name)


def textcnn_body(x, spec: BodySpec):
    """Convolutions of each kernel size, max-pooled over time and concatenated (no attention)."""
    pooled = [layers.GlobalMaxPooling1D(name=f"pool{k}")(
        layers.Conv1D(spec.params["filters"], k, activation="relu", name=f"conv{k}")(x))
        for k in spec.params["kernel_sizes"]]
    h = layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]
    return h, None


def textrnn_body(x, spec: BodySpec):
    """A bidirectional LSTM max-pooled over time (no attention)."""
    h = _rnn("lstm", spec.params["units"], spec, "bilstm")(x)
    return layers.GlobalMaxPooling1D(name="pool")(h), None


def gru_att_body(x, spec: BodySpec):
    """A bidirectional GRU pooled by additive attention over tokens (returns the attention)."""
    mask = PadMask(name="mask")(x)
    h = _rnn("gru", spec.params["units"], spec, "bigru")(x)
    return AttentionPool(spec.params["attention_units"], name="attention")([h, mask])


def han_body(x, spec: BodySpec):
    """Word GRU + attention per sentence, sentence GRU + attention per text (returns word × sentence attention)."""
    sentences = spec.input_shape[0]
    flat = FoldSentences(sentences, name="fold")(x)                           # [B·S, W, D]
    word_mask = PadMask(name="word_mask")(flat)                               # [B·S, W]
    word_h = _rnn("gru", spec.params["units"], spec, "word_bigru")(flat)
    sent_vec, word_att = AttentionPool(spec.params["attention_units"], name="word_attention")([word_h, word_mask])
    sent_seq = FoldSentences(sentences, fold=False, name="unfold")(sent_vec)  # [B, S, 2u]
    sent_mask = PadMask(axes=2, name="sentence_mask")(x)                      # [B, S]
    sent_h = _rnn("gru", spec.params["units"], spec, "sentence_bigru")(sent_seq)
    doc, sent_att = AttentionPool(spec.params["attention_units"], name="sentence_attention")([sent_h, sent_mask])
    word_att = FoldSentences(sentences, fold=False, name="unfold_attention")(word_att)
    sent_att = layers.Reshape((sentences, 1), name="sentence_attention_column")(sent_att)
    return doc, layers.Multiply(name="han_attention")([word_att, sent_att])


def arch_params(arch: str, overrides: dict | None = None) -> dict:
    """The architecture's default hyper-parameters (kdedge.networks.architectures) with overrides applied."""
    return architecture(arch).params(overrides)


def build_body(arch: str, spec: BodySpec, name: str = "body") -> keras.Model:
    """Embedded tokens → logits `[batch, n_labels]` (+ attention for gru_att and han)."""
    inputs = keras.Input(shape=spec.input_shape, batch_size=spec.batch_size, name="embedded")
    features, attention = architecture(arch).body_builder()(inputs, spec)
    features = layers.Dropout(spec.dropout, name="dropout")(features)
    logits = layers.Dense(spec.n_labels, name="logits")(features)
    outputs = {"logits": logits} if attention is None else {"logits": logits, "attention": attention}
    return keras.Model(inputs, outputs, name=name)


def embed_ids(ids, table, trainable: bool = False):
    """The symbolic ids through an Embedding layer ("embedding") holding `table` (its padding row kept at
    zero when trainable)."""
    embedding = layers.Embedding(table.shape[0], table.shape[1], trainable=trainable, name="embedding",
                                 embeddings_constraint=ZeroPaddingRow() if trainable else None)
    embedded = embedding(ids)
    embedding.set_weights([table])  # not an initializer: that would copy the table into the saved config
    return embedded


def build_classifier(arch: str, id_shape: tuple, table, n_labels: int, params: dict, dropout: float,
                     trainable_embeddings: bool = False, towers: int = 0) -> keras.Model:
    """ids → embedding → body(s) → logits `[batch, n_labels]`.

    `towers=0` builds one multi-label body (the student). `towers=n` builds n single-label bodies
    (`tower0`…) sharing only the embedding table, for binary relevance (the teacher): they have no
    trainable parameter in common, so training them together under a summed loss equals training
    them apart on the same batches. Keep `trainable_embeddings=False` for the teacher.
    """
    if towers and trainable_embeddings:
        raise ValueError("teacher towers share the embedding table, which must then be frozen")
    ids = keras.Input(shape=id_shape, dtype="int32", name="ids")
    embedded = embed_ids(ids, table, trainable_embeddings)
    body_shape = (*id_shape, table.shape[1])
    if not towers:
        body = build_body(arch, BodySpec(body_shape, n_labels, params, dropout), "body")
        logits = body(embedded)["logits"]
    else:
        tower_logits = [build_body(arch, BodySpec(body_shape, 1, params, dropout), f"tower{i}")(embedded)["logits"]
                        for i in range(towers)]
        logits = layers.Concatenate(name="tower_logits")(tower_logits) if towers > 1 else tower_logits[0]
    return keras.Model(ids, logits, name=f"{arch}_{'teacher' if towers else 'student'}")
