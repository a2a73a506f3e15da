"""Towered teachers: each tower equals Keras' own layers, masking, tower independence, epoch selection, saving."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdedge.training.batching import bucket_batches, bucketed_dataset, predict_logits, text_lengths, trim_padding
from kdedge.config import TrainConfig
from kdedge.training.distill import EpochSelector, bce_with_logits, fit, selector_for, teacher_loss
from kdedge.networks.models import arch_params
from kdedge.teaching.towers import TowerBiGRU, TowerBiLSTM, TowerSlice, build_teacher, tower_groups

TINY = {"textcnn": {"kernel_sizes": [2, 3], "filters": 4}, "textrnn": {"units": 4},
        "gru_att": {"units": 4, "attention_units": 4},
        "han": {"units": 4, "attention_units": 4}}
N = 3  # labels = towers


def _table(rows=20, dim=6):
    table = np.random.default_rng(0).normal(0, 0.5, (rows, dim)).astype(np.float32)
    table[0] = 0.0
    return table


def _flat_ids(n=10, width=12, seed=1):
    """Post-padded ids with lengths 1..width (and one empty row)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, (n, width)).astype(np.int32)
    lengths = rng.integers(1, width + 1, n)
    lengths[0], lengths[1] = 0, width
    x[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return x


def _han_ids(n=10, shape=(3, 5), seed=1):
    x = np.stack([_flat_ids(shape[0], shape[1], seed + i) for i in range(n)])
    x[: n // 2, -1, :] = 0  # whole padding sentences
    return x


def _ids(arch, n=10):
    return _han_ids(n) if arch == "han" else _flat_ids(n)


def _teacher(arch, table=None, id_shape=None, dropout=0.0):
    keras.utils.set_random_seed(0)
    shape = id_shape or ((3, 5) if arch == "han" else (12,))
    return build_teacher(arch, shape, _table() if table is None else table, N, arch_params(arch, TINY[arch]), dropout)


def _randomize(layer, seed=5):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])


# ------------------------------------------------------------------------- each tower is Keras' RNN

@pytest.mark.parametrize("towered_input", [False, True])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_tower_slice_equals_keras_bidirectional(cell, towered_input):
    units, dim, batch, time = 3, 5, 4, 7
    rng = np.random.default_rng(0)
    shape = (batch, time, N, dim) if towered_input else (batch, time, dim)
    x = rng.normal(0, 1, shape).astype(np.float32)
    mask = np.ones((batch, time), np.float32)
    mask[1, 4:] = 0.0   # post padding
    mask[2, 0] = 0.0    # and a masked step inside a text
    mask[3, 2:5] = 0.0
    layer = (TowerBiGRU if cell == "gru" else TowerBiLSTM)(units, N)
    out = np.asarray(layer([x, mask]))
    assert out.shape == (N, batch, time, 2 * units)
    _randomize(layer)  # non-zero biases too
    out = np.asarray(layer([x, mask]))
    kernel, recurrent, bias = layer.get_weights()
    rnn = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    for i in range(N):
        reference = keras.layers.Bidirectional(rnn(units, return_sequences=True))
        tower_x = x[:, :, i] if towered_input else x
        reference(tower_x, mask=mask > 0)
        reference.set_weights([kernel[i, 0], recurrent[i, 0], bias[i, 0], kernel[i, 1], recurrent[i, 1], bias[i, 1]])
        expected = np.asarray(reference(tower_x, mask=mask > 0))
        np.testing.assert_allclose(out[i], expected, atol=1e-5)
    assert not out[:, 1, 4:].any() and not out[:, 2, 0].any()  # masked steps output zeros


def test_lstm_forget_bias_starts_at_one():
    layer = TowerBiLSTM(3, N)
    layer.build([(None, None, 5), (None, None)])
    bias = layer.get_weights()[2]
    np.testing.assert_array_equal(bias[..., 3:6], 1.0)
    assert not bias[..., :3].any() and not bias[..., 6:].any()


# -------------------------------------------------------------------------------------------- masking

@pytest.mark.parametrize("arch", ["textcnn", "textrnn", "gru_att"])
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")  # a 1-token text: attention over 1
def test_flat_teacher_logits_do_not_depend_on_padding(arch):
    model = _teacher(arch)
    x = np.zeros((6, 80), np.int32)
    x[:, :12] = _flat_ids(6)
    padded = np.asarray(model(x, training=False))
    for k, length in enumerate(text_lengths(x)):
        own = np.asarray(model(x[k:k + 1, :max(length, 1)], training=False))[0]
        np.testing.assert_allclose(own, padded[k], atol=1e-5)
    np.testing.assert_allclose(predict_logits(model, x, batch_size=4, trim=True), padded, atol=1e-5)


def test_han_teacher_logits_do_not_depend_on_padding():
    small = _teacher("han", id_shape=(3, 5))
    large = _teacher("han", id_shape=(5, 9))
    large.set_weights(small.get_weights())
    x = _han_ids(6)
    wide = np.zeros((6, 5, 9), np.int32)
    wide[:, :3, :5] = x
    np.testing.assert_allclose(np.asarray(large(wide, training=False)), np.asarray(small(x, training=False)),
                               atol=1e-5)


def test_trim_and_bucket_batches():
    x = np.array([[3, 4, 0, 0, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.int32)
    np.testing.assert_array_equal(text_lengths(x), [2, 1, 0])
    np.testing.assert_array_equal(trim_padding(x), x[:, :2])
    assert trim_padding(x[2:]).shape == (1, 1)
    lengths = np.random.default_rng(0).integers(1, 80, 1000)
    batches = bucket_batches(lengths, 32, np.random.default_rng(1), chunk_batches=10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) == 32 for b in batches if len(b) != 1000 % 32) and len(batches) == -(-1000 // 32)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # similar lengths in a batch (random batches: ~75)
    again = bucket_batches(lengths, 32, np.random.default_rng(1), chunk_batches=10)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


# ------------------------------------------------------------------------------- tower independence

@pytest.mark.parametrize("arch", list(TINY))
def test_teacher_loss_gives_each_tower_only_its_label_gradient(arch):
    model = _teacher(arch)
    x = _ids(arch)
    y = (np.random.default_rng(3).random((len(x), N)) > 0.5).astype(np.float32)
    assert not model.get_layer("embedding").trainable_weights
    for i in range(N):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(bce_with_logits(y[:, i], model(x, training=False)[:, i]))
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
        for variable, g in zip(model.trainable_weights, grads):
            assert g.shape[0] == N, variable.path
            others = np.delete(g, i, axis=0)
            assert not others.any(), f"label {i} moves another tower's slice of {variable.path}"
        assert any(g[i].any() for g in grads)
    # under the summed teacher loss, changing label 0 changes no other tower's gradient
    y_other = y.copy()
    y_other[:, 0] = 1.0 - y_other[:, 0]

    def grads(targets):
        with tf.GradientTape() as tape:
            loss = teacher_loss(tf.constant(targets), model(x, training=False))
        return [g.numpy()[1:] for g in tape.gradient(loss, model.trainable_weights)]

    for a, b in zip(grads(y), grads(y_other)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_textcnn_towers_compute_separate_textcnns():
    """Tower i of the tower-batched textcnn teacher is a TextCNN with tower i's weights: relu(conv) over the
    windows starting at each token (zeros past the text), max-pooled, then its own logit (numpy reference)."""
    model = _teacher("textcnn")
    for layer in model.layers:
        if layer.weights and layer.name != "embedding":
            _randomize(layer)
    x = _flat_ids(6)
    logits = np.asarray(model(x, training=False))
    table = _table()
    kernel_sizes = TINY["textcnn"]["kernel_sizes"]
    dense, dense_bias = model.get_layer("logits").get_weights()
    for row, length in enumerate(text_lengths(x)):
        embedded = np.concatenate([table[x[row, :length]], np.zeros((max(kernel_sizes), 6), np.float32)])
        for i in range(N):
            features = []
            for k in kernel_sizes:
                kernel, bias = model.get_layer(f"conv{k}").get_weights()
                windows = [np.maximum(0, np.einsum("kd,kdf->f", embedded[t:t + k], kernel[i]) + bias[i])
                           for t in range(length)]
                features.append(np.max(windows, axis=0) if windows else np.zeros(kernel.shape[-1]))
            expected = np.concatenate(features) @ dense[i, :, 0] + dense_bias[i]
            np.testing.assert_allclose(logits[row, i], expected, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------- epoch selection

def test_tower_slice_round_trip():
    model = _teacher("gru_att")
    before = [w.copy() for w in model.get_weights()]
    tower = TowerSlice(model, 1)
    saved = tower.get_weights()
    assert [w.shape for w in saved] == [tuple(v.shape[1:]) for v in model.trainable_weights]
    tower.set_weights([np.full_like(w, 7.0) for w in saved])
    after = model.get_weights()
    for v, b, a in zip(model.weights, before, after):
        if any(v is t for t in model.trainable_weights):
            assert np.all(a[1] == 7.0) and np.array_equal(np.delete(a, 1, 0), np.delete(b, 1, 0))
        else:
            np.testing.assert_array_equal(a, b)  # the embedding
    tower.set_weights(saved)
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_epoch_selector_restores_each_towers_own_best_epoch():
    model = _teacher("textrnn")
    x = _flat_ids(12)
    y = (np.random.default_rng(4).random((len(x), N)) > 0.5).astype(np.float32)
    selector = EpochSelector((x, y), tower_groups(model, N), monitor="val_loss", patience=10, min_support=3, trim=True)
    selector.set_model(model)
    weights, logits = [], []
    for epoch, seed in enumerate([11, 12, 13, 14, 15]):
        rng = np.random.default_rng(seed)
        model.set_weights([w if w.shape == (20, 6) else rng.normal(0, 1, w.shape).astype(np.float32)
                           for w in model.get_weights()])
        weights.append([w.copy() for w in model.get_weights()])
        logits.append(np.asarray(model(x, training=False)))
        selector.on_epoch_begin(epoch)
        selector.on_epoch_end(epoch, {"loss": 0.0})
    losses = np.array([np.asarray(bce_with_logits(y, z)).mean(axis=0) for z in logits])  # [epoch, label]
    best = losses.argmin(axis=0)
    assert selector.best_epoch == best.tolist() and len(set(best)) > 1
    selector.restore()
    for i, epoch in enumerate(best):
        for now, then, v in zip(model.get_weights(), weights[epoch], model.weights):
            if any(v is t for t in model.trainable_weights):
                np.testing.assert_array_equal(now[i], then[i])
        np.testing.assert_allclose(np.asarray(model(x, training=False))[:, i], logits[epoch][:, i], atol=1e-5)


# ----------------------------------------------------------------------------- train, save, load

@pytest.mark.parametrize("arch", list(TINY))
def test_teacher_trains_saves_and_loads(arch, tmp_path):
    model = _teacher(arch, dropout=0.1)
    x = _ids(arch, 24)
    y = (np.random.default_rng(2).random((len(x), N)) > 0.5).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    cfg = TrainConfig(arch=arch, epochs=1, batch_size=8, learning_rate=1e-2, monitor="val_loss")
    flat = arch != "han"
    selector = selector_for(cfg, (x[:8], y[:8]), tower_groups(model, N), trim=flat)
    info = fit(model, (x, y), teacher_loss, selector, cfg).record()
    assert info["epochs_run"] == 1 and len(info["best_epoch"]) == N
    assert all(not np.array_equal(b, a) for b, a in zip(before[1:], model.get_weights()[1:]))
    model.save(tmp_path / "teacher.keras")
    loaded = keras.models.load_model(tmp_path / "teacher.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))
    np.testing.assert_array_equal(predict_logits(loaded, x, trim=flat), predict_logits(model, x, trim=flat))


def test_bucketed_dataset_batches_are_trimmed_and_reshuffled_each_pass():
    x = _flat_ids(40, width=30)
    y = np.arange(40, dtype=np.float32)[:, None]
    dataset = bucketed_dataset(x, y, 8, seed=0)
    passes = [[(ids.numpy(), t.numpy()) for ids, t in dataset] for _ in range(2)]
    for batches in passes:
        assert len(batches) == 5
        assert sorted(np.concatenate([t[:, 0] for _, t in batches]).tolist()) == list(range(40))
        for ids, t in batches:
            rows = x[t[:, 0].astype(int)]
            np.testing.assert_array_equal(ids, trim_padding(rows))
    assert [t.tolist() for _, t in passes[0]] != [t.tolist() for _, t in passes[1]]


@pytest.mark.parametrize("arch", ["textrnn", "gru_att"])
def test_teacher_on_empty_texts_gives_its_biases(arch):
    model = _teacher(arch)
    empty = np.asarray(model(np.zeros((2, 5), np.int32), training=False))
    np.testing.assert_allclose(empty, np.broadcast_to(model.get_layer("logits").get_weights()[1], (2, N)))


@pytest.mark.slow
def test_same_seed_same_bucketed_teacher():
    from kdedge.training.distill import seed_everything

    x = _flat_ids(24)
    y = (np.random.default_rng(2).random((len(x), N)) > 0.5).astype(np.float32)
    cfg = TrainConfig(arch="gru_att", epochs=2, batch_size=8, learning_rate=1e-2, monitor="val_loss", seed=3)
    logits = []
    for _ in range(2):
        seed_everything(cfg.seed)
        model = build_teacher("gru_att", (12,), _table(), N, arch_params("gru_att", TINY["gru_att"]), 0.1)
        fit(model, (x, y), teacher_loss, selector_for(cfg, (x[:8], y[:8]), tower_groups(model, N), trim=True), cfg)
        logits.append(predict_logits(model, x, trim=True))
    np.testing.assert_array_equal(logits[0], logits[1])
