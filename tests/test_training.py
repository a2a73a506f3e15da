"""Training side: vocabulary and vectors, the four architectures, KD loss, per-label epoch selection, train_run."""
from __future__ import annotations

import json
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdedge.networks.models  # noqa: F401  (registers the custom layers for keras.models.load_model)
from conftest import without_timings
from kdedge.config import TrainConfig
from kdedge.training.distill import (EpochSelector, bce_with_logits, fit, group_criterion, kd_loss, make_hard_loss, make_kd_loss,
                            selector_for, student_groups, teacher_groups, teacher_loss)
from kdedge.text.embed import Vocabulary, embedding_matrix, load_vectors, save_vectors, train_word2vec
from kdedge.evaluate import METRICS
from kdedge.networks.models import arch_params, build_classifier
from kdedge.training.train import train_run
from kdedge_run.text import OOV_ID, PAD_ID, JiebaTokenizer, Preprocessor, read_dictionary


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


# ------------------------------------------------------------------------------------------ vocabulary

SEGMENTED = [["a", "b", "a"], ["b", "c", "a"], ["d"]]  # a×3, b×2, c×1, d×1


def test_vocabulary_reserved_ids_and_order():
    vocab = Vocabulary.build(SEGMENTED)
    assert (PAD_ID, OOV_ID) == (0, 1)
    assert vocab.tokens == ["<pad>", "<oov>", "a", "b", "c", "d"]  # by count, ties by token
    assert vocab.encode(["b", "zzz", "a"]) == [3, OOV_ID, 2]
    with pytest.raises(ValueError, match="<pad>, <oov>"):
        Vocabulary(["a", "b"])


def test_vocabulary_min_count_max_size_extra():
    assert Vocabulary.build(SEGMENTED, min_count=2).tokens == ["<pad>", "<oov>", "a", "b"]
    assert Vocabulary.build(SEGMENTED, max_size=3).tokens == ["<pad>", "<oov>", "a"]
    assert len(Vocabulary.build(SEGMENTED, max_size=5)) == 5
    assert Vocabulary.build(SEGMENTED, min_count=2, extra={"d"}).tokens == ["<pad>", "<oov>", "a", "b", "d"]


def test_vocabulary_save_load_and_coverage(tmp_path):
    vocab = Vocabulary.build([["北京", "天气", "北京"], ["很好", "!", "3.5%"]])
    vocab.save(tmp_path / "vocab.txt")
    again = Vocabulary.load(tmp_path / "vocab.txt")
    assert again.tokens == vocab.tokens and again.index == vocab.index
    cov = Vocabulary.build(SEGMENTED, min_count=2).coverage(SEGMENTED)
    assert cov == {"token_coverage": pytest.approx(5 / 7), "type_coverage": pytest.approx(0.5),
                   "tokens": 7, "types": 4}


# ---------------------------------------------------------------------------------------------- vectors

SENTENCES = [["足球", "比赛", "精彩"], ["股票", "市场", "上涨"], ["医院", "医生", "感冒"]] * 10


def test_word2vec_same_seed_same_vectors():
    a = train_word2vec(SENTENCES, dim=8, epochs=2, seed=3)
    b = train_word2vec(SENTENCES, dim=8, epochs=2, seed=3)
    c = train_word2vec(SENTENCES, dim=8, epochs=2, seed=4)
    assert a.index_to_key == b.index_to_key and a.vector_size == 8
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)


WORDS = {"北京": [0.5, -1.0, 2.0], "上海": [0.0, 0.25, -0.75], "cat": [1.5, 1.0, 0.125]}


def test_load_word2vec_text(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 3\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in WORDS.items()), encoding="utf-8")
    wv = load_vectors(path)
    assert wv.vector_size == 3 and set(wv.key_to_index) == set(WORDS)
    for word, vec in WORDS.items():
        np.testing.assert_allclose(wv[word], vec)


def test_load_word2vec_binary(tmp_path):
    path = tmp_path / "vec.bin"
    with open(path, "wb") as f:
        f.write(b"3 3\n")
        for word, vec in WORDS.items():
            f.write(word.encode("utf-8") + b" " + struct.pack("<3f", *vec) + b"\n")
    wv = load_vectors(path)
    for word, vec in WORDS.items():
        np.testing.assert_allclose(wv[word], vec)
    save_vectors(wv, tmp_path / "again.bin")  # and a round trip through kdedge's writer
    np.testing.assert_array_equal(load_vectors(tmp_path / "again.bin")["北京"], wv["北京"])


def test_load_vectors_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_vectors(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("not a header\n1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a word2vec text file"):
        load_vectors(bad)


def test_embedding_matrix(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 3\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in WORDS.items()), encoding="utf-8")
    wv = load_vectors(path)
    vocab = Vocabulary(["<pad>", "<oov>", "北京", "广州", "cat"])
    table, report = embedding_matrix(vocab, wv, 3, seed=0)
    assert table.shape == (5, 3) and table.dtype == np.float32
    assert report == {"vocab_with_vector": 2, "vocab_size": 5, "vector_coverage": pytest.approx(2 / 3)}
    np.testing.assert_array_equal(table[PAD_ID], 0.0)
    np.testing.assert_allclose(table[2], WORDS["北京"])
    np.testing.assert_allclose(table[4], WORDS["cat"])
    assert np.abs(table[OOV_ID]).sum() > 0 and np.abs(table[3]).sum() > 0  # small random, not zero
    again, _ = embedding_matrix(vocab, wv, 3, seed=0)
    np.testing.assert_array_equal(table, again)
    with pytest.raises(ValueError, match="dimension 3"):
        embedding_matrix(vocab, wv, 4)
    table, report = embedding_matrix(vocab, None, 4)
    assert report["vocab_with_vector"] == 0 and np.all(table[PAD_ID] == 0)


# ----------------------------------------------------------------------------------------------- models

TINY = {"textcnn": {"kernel_sizes": [2, 3], "filters": 4}, "textrnn": {"units": 4},
        "gru_att": {"units": 4, "attention_units": 4}, "han": {"units": 4, "attention_units": 4}}
N_LABELS = 3


def _id_shape(arch):
    return (3, 5) if arch == "han" else (12,)


def _table(rows=20, dim=8, seed=0):
    table = np.random.default_rng(seed).normal(0, 0.5, (rows, dim)).astype(np.float32)
    table[PAD_ID] = 0.0
    return table


def _ids(arch, n=16, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(2, 20, (n, *_id_shape(arch))).astype(np.int32)
    x[:, ..., -2:] = PAD_ID  # some padding at the end of each (sentence) row
    if arch == "han":
        x[: n // 2, -1, :] = PAD_ID  # and whole padding sentences
    return x


@pytest.mark.parametrize("arch", list(TINY))
def test_architecture_builds_trains_saves_and_loads(arch, tmp_path):
    table = _table()
    model = build_classifier(arch, _id_shape(arch), table, N_LABELS, arch_params(arch, TINY[arch]), dropout=0.1)
    x = _ids(arch)
    y = (np.random.default_rng(2).random((len(x), N_LABELS)) > 0.5).astype(np.float32)
    assert model.output_shape == (None, N_LABELS)
    before = [w.copy() for w in model.get_weights()]
    cfg = TrainConfig(arch=arch, epochs=1, batch_size=8, learning_rate=1e-2, monitor="val_loss")
    info = fit(model, (x, y), make_hard_loss(1.0), selector_for(cfg, (x[:8], y[:8]), student_groups(model, N_LABELS)),
               cfg).record()
    assert info["epochs_run"] == 1
    after = model.get_weights()
    assert any(not np.array_equal(b, a) for b, a in zip(before, after)), "one epoch changed no weight"
    np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0], table)  # frozen
    model.save(tmp_path / f"{arch}.keras")
    loaded = keras.models.load_model(tmp_path / f"{arch}.keras")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-6, atol=1e-6)


def test_arch_params_validation():
    assert arch_params("textcnn") == {"kernel_sizes": [2, 3, 4], "filters": 100}
    assert arch_params("textrnn", {"units": 7}) == {"units": 7}
    with pytest.raises(ValueError, match="no parameter"):
        arch_params("textcnn", {"units": 7})
    with pytest.raises(ValueError, match="unknown architecture"):
        arch_params("bert")


def test_the_architecture_registry_is_what_models_towers_config_and_cli_read():
    from kdedge.networks.architectures import ARCHITECTURES
    from kdedge.cli import main
    from kdedge.config import make_config
    from kdedge.networks.models import textcnn_body
    from kdedge.teaching.towers import han_towers, textcnn_towers

    assert ARCHITECTURES["textcnn"].body_builder() is textcnn_body
    assert ARCHITECTURES["han"].towers_builder() is han_towers and ARCHITECTURES["han"].hierarchical
    assert ARCHITECTURES["textcnn"].towers_builder() is textcnn_towers
    assert [a.name for a in ARCHITECTURES.values() if a.towered] == ["textcnn", "textrnn", "gru_att", "han"]
    assert [a.name for a in ARCHITECTURES.values() if a.padding_margin] == ["textcnn"]
    for name, record in ARCHITECTURES.items():
        assert callable(record.body_builder()) and arch_params(name) == record.defaults
        assert make_config(arch=name).resolved_batch_size() == record.batch_size
    arch_option = next(p for p in main.commands["train"].params if p.name == "arch")
    assert list(arch_option.type.choices) == list(ARCHITECTURES)


@pytest.mark.parametrize("arch", ["textcnn"])  # separate towers: the benchmarks' reference; kdedge trains tower-batched ones (tests/test_towers.py)
def test_teacher_towers_share_no_trainable_weight(arch):
    model = build_classifier(arch, _id_shape(arch), _table(), N_LABELS, arch_params(arch, TINY[arch]), 0.5,
                             towers=N_LABELS)
    assert model.output_shape == (None, N_LABELS)
    embedding = model.get_layer("embedding")
    assert not embedding.trainable and not embedding.trainable_weights
    towers = [{id(v) for v in model.get_layer(f"tower{i}").trainable_weights} for i in range(N_LABELS)]
    assert all(towers)
    for i in range(N_LABELS):
        for j in range(i + 1, N_LABELS):
            assert not towers[i] & towers[j], f"tower{i} and tower{j} share a trainable variable"
    assert set().union(*towers) == {id(v) for v in model.trainable_weights}  # nothing else trains
    with pytest.raises(ValueError, match="frozen"):
        build_classifier(arch, _id_shape(arch), _table(), N_LABELS, arch_params(arch, TINY[arch]), 0.5,
                         trainable_embeddings=True, towers=N_LABELS)


def test_teacher_loss_gives_each_tower_only_its_label_gradient():
    model = build_classifier("textcnn", (12,), _table(), N_LABELS, arch_params("textcnn", TINY["textcnn"]),
                             dropout=0.0, towers=N_LABELS)
    x = _ids("textcnn")
    y = (np.random.default_rng(3).random((len(x), N_LABELS)) > 0.5).astype(np.float32)
    y_other = y.copy()
    y_other[:, 0] = 1.0 - y_other[:, 0]  # change only label 0
    tower1 = model.get_layer("tower1").trainable_weights

    def grads(targets):
        with tf.GradientTape() as tape:
            loss = teacher_loss(tf.constant(targets), model(x, training=False))
        return [g.numpy() for g in tape.gradient(loss, tower1)]

    for a, b in zip(grads(y), grads(y_other)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert teacher_groups(model, N_LABELS)[1] == ([1], [model.get_layer("tower1")])


# -------------------------------------------------------------------------------------------- KD loss

Y = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
Z_STUDENT = np.array([[0.3, -1.2, 2.0], [1.5, 0.1, -0.7]])
Z_TEACHER = np.array([[2.5, -3.0, 1.0], [-1.0, 0.5, 3.0]])


def test_bce_with_logits_matches_numpy_and_is_stable():
    np.testing.assert_allclose(np.asarray(bce_with_logits(Y, Z_STUDENT)), np_bce(Y, np_sigmoid(Z_STUDENT)), rtol=1e-6)
    extreme = np.asarray(bce_with_logits(np.array([1.0, 0.0, 1.0]), np.array([100.0, -100.0, -100.0])))
    assert np.all(np.isfinite(extreme)) and extreme[2] == pytest.approx(100.0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_alpha_one_is_hard_bce(temperature):
    soft = np_sigmoid(Z_TEACHER / temperature)
    value = float(kd_loss(Y, soft, Z_STUDENT, 1.0, temperature))
    assert value == pytest.approx(np_bce(Y, np_sigmoid(Z_STUDENT)).mean(), rel=1e-6)
    assert float(make_hard_loss(1.0)(Y, Z_STUDENT)) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_kd_loss_value_and_temperature_squared(alpha):
    t = 2.0
    soft = np_sigmoid(Z_TEACHER / t)
    expected = (alpha * np_bce(Y, np_sigmoid(Z_STUDENT))
                + (1 - alpha) * t ** 2 * np_bce(soft, np_sigmoid(Z_STUDENT / t))).mean()
    assert float(kd_loss(Y, soft, Z_STUDENT, alpha, t)) == pytest.approx(expected, rel=1e-6)
    packed = np.concatenate([Y, soft], axis=1)
    assert float(make_kd_loss(3, alpha, t)(packed, Z_STUDENT)) == pytest.approx(expected, rel=1e-6)


def test_kd_loss_alpha_zero_gradient_and_descent_reach_the_soft_targets():
    t = 2.0
    soft = np_sigmoid(Z_TEACHER / t)
    z = tf.Variable(Z_STUDENT.copy())
    with tf.GradientTape() as tape:
        loss = kd_loss(1.0 - Y, soft, z, 0.0, t)  # hard labels (here: wrong ones) carry no weight at α=0
    grad = tape.gradient(loss, z).numpy()
    # d/dz [T²·BCE(q, σ(z/T))] / N = T·(σ(z/T) − q) / N: the T² factor survives the 1/T of the chain rule
    np.testing.assert_allclose(grad, t * (np_sigmoid(Z_STUDENT / t) - soft) / Y.size, rtol=1e-6)
    start_gap = np.abs(np_sigmoid(Z_STUDENT / t) - soft).max()
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = kd_loss(1.0 - Y, soft, z, 0.0, t)
        z.assign_sub(3.0 * tape.gradient(loss, z))
    gap = np.abs(np_sigmoid(z.numpy() / t) - soft).max()
    assert start_gap > 0.2 and gap < 1e-3
    np.testing.assert_allclose(z.numpy(), Z_TEACHER, atol=1e-2)  # σ(z/T) = σ(z_t/T) ⇔ z = z_t


def test_teacher_loss_sums_per_label_means():
    expected = np_bce(Y, np_sigmoid(Z_STUDENT)).mean(axis=0).sum()
    assert float(teacher_loss(Y, Z_STUDENT)) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------- epoch selection

def _two_head_model():
    """Logits [a(x), b(x)] from two Dense(1) layers; with x = 1 and kernel 0 the logits are the biases."""
    inputs = keras.Input((1,))
    a = keras.layers.Dense(1, name="a")(inputs)
    b = keras.layers.Dense(1, name="b")(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([a, b]))


def _set_logit(layer, value):
    layer.set_weights([np.zeros((1, 1), np.float32), np.array([value], np.float32)])


def test_epoch_selector_keeps_each_groups_best_epoch_and_stops_when_all_are_exhausted():
    model = _two_head_model()
    la, lb = model.get_layer("a"), model.get_layer("b")
    x_val, y_val = np.ones((4, 1), np.float32), np.ones((4, 2), np.float32)  # higher logit = lower BCE
    selector = EpochSelector((x_val, y_val), [([0], [la]), ([1], [lb])], monitor="val_loss", patience=2, min_support=3)
    selector.set_model(model)
    model.stop_training = False
    logits_a = [3.0, 1.0, 0.0, -1.0, -2.0, -3.0]   # label A: best at epoch 0
    logits_b = [-2.0, -1.0, 0.0, 2.5, 1.0, 0.0]    # label B: best at epoch 3
    stopped = []
    for epoch, (za, zb) in enumerate(zip(logits_a, logits_b)):
        selector.on_epoch_begin(epoch)
        _set_logit(la, za)
        _set_logit(lb, zb)
        selector.on_epoch_end(epoch, {"loss": 0.1})
        stopped.append(bool(model.stop_training))
    # A ran out of patience after epoch 2, but training goes on until B has too (epoch 5)
    assert stopped == [False, False, False, False, False, True]
    assert selector.best_epoch == [0, 3]
    assert selector.best[0] == pytest.approx(np_bce(1.0, np_sigmoid(3.0)), rel=1e-5)
    assert selector.best[1] == pytest.approx(np_bce(1.0, np_sigmoid(2.5)), rel=1e-5)
    assert [h["epoch"] for h in selector.history] == [1, 2, 3, 4, 5, 6]
    selector.restore()
    assert la.get_weights()[1][0] == pytest.approx(3.0)
    assert lb.get_weights()[1][0] == pytest.approx(2.5)
    np.testing.assert_allclose(np.asarray(model(x_val)), [[3.0, 2.5]] * 4)


def test_epoch_selector_no_stop_while_one_group_improves():
    model = _two_head_model()
    la, lb = model.get_layer("a"), model.get_layer("b")
    selector = EpochSelector((np.ones((2, 1), np.float32), np.ones((2, 2), np.float32)),
                             [([0], [la]), ([1], [lb])], monitor="val_loss", patience=1, min_support=3)
    selector.set_model(model)
    model.stop_training = False
    for epoch in range(5):
        _set_logit(la, 1.0)            # never improves after epoch 0
        _set_logit(lb, float(epoch))   # improves every epoch
        selector.on_epoch_end(epoch)
        assert not model.stop_training
    assert selector.best_epoch == [0, 4]


def test_group_criterion_macro_f1():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    perfect = np.where(y > 0, 4.0, -4.0)
    assert group_criterion("val_macro_f1", y, perfect, [0, 1], 1) == pytest.approx(-1.0)
    assert group_criterion("val_loss", y, perfect, [0], 1) < group_criterion("val_loss", y, -perfect, [0], 1)
    with pytest.raises(ValueError, match="monitor"):
        group_criterion("accuracy", y, perfect, [0], 1)


def test_fit_stops_early_and_restores_the_best_epoch():
    model = _two_head_model()
    x = np.ones((8, 1), np.float32)
    y = np.ones((8, 2), np.float32)
    cfg = TrainConfig(epochs=30, patience=2, batch_size=4, monitor="val_loss")
    object.__setattr__(cfg, "learning_rate", 0.0)  # outside the options' range on purpose: no improvement is possible
    info = fit(model, (x, y), make_hard_loss(1.0), selector_for(cfg, (x, y), student_groups(model, 2)), cfg).record()
    assert info["epochs_run"] == 3 and info["best_epoch"] == [1]  # no improvement possible at lr 0


@pytest.mark.parametrize("arch", ["textcnn", "gru_att"])
def test_a_student_trained_run_out_is_the_student_trained_for_any_fewer_epochs(arch, corpus_file, caplog):
    """What cv's same-budget control rests on: `within(n)` of a run-out student is, weight for weight, the student
    trained n epochs with patience n, and the run-out student itself is the one patience would have stopped (its
    log line says how many epochs it ran beyond)."""
    import dataclasses
    import logging

    from kdedge.config import make_config
    from kdedge.text.data import load_dataset
    from kdedge.training.train import featurize, train_student

    ds = load_dataset(corpus_file)
    cfg = make_config(dict(arch=arch, embedding_dim=8, w2v_epochs=1, segmenter="char", batch_size=16, epochs=9,
                           patience=2, max_len=16, learning_rate=0.03, monitor="val_loss",
                           arch_params=TINY[arch]))
    feats = featurize(cfg, {"train": ds.subset(range(0, 90, 3)), "val": ds.subset([i for i in range(90) if i % 3])})
    with caplog.at_level(logging.INFO, logger="kdedge"):
        run_out = train_student(cfg, feats, run_out="patience")
        stopped = train_student(cfg, feats)
    lines = [r.getMessage() for r in caplog.records if "best validation" in r.getMessage()]
    assert len(lines) == 2 and f"run out to {cfg.epochs} epochs" in lines[0] and "run out" not in lines[1], lines
    assert stopped.within is None
    assert stopped.fit.epochs_run < cfg.epochs, "patience must run out for this test to mean anything"
    assert run_out.fit.epochs_run == stopped.fit.epochs_run
    assert run_out.fit.history == stopped.fit.history and run_out.fit.best_epoch == stopped.fit.best_epoch
    np.testing.assert_allclose(run_out.logits["val"], stopped.logits["val"], rtol=0, atol=1e-6)
    for epochs in (1, stopped.fit.epochs_run + 1, cfg.epochs):
        alone = train_student(dataclasses.replace(cfg, epochs=epochs, patience=epochs), feats)
        view = run_out.within(epochs)
        assert view.fit.epochs_run == alone.fit.epochs_run == epochs
        assert view.fit.history == alone.fit.history and view.fit.best_epoch == alone.fit.best_epoch
        np.testing.assert_allclose(view.logits["val"], alone.logits["val"], rtol=0, atol=1e-6, err_msg=str(epochs))
        np.testing.assert_allclose(view.predict(feats.x["train"]), alone.predict(feats.x["train"]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="1 to 9 epochs"):
        run_out.within(cfg.epochs + 1)
    # run_out="all" (--plain-run-out): the same run, but the best of all its epochs is kept, not patience's
    with caplog.at_level(logging.INFO, logger="kdedge"):
        best = train_student(cfg, feats, run_out="all")
    criterion = [h[cfg.monitor][0] for h in best.fit.history]
    assert best.fit.epochs_run == cfg.epochs and best.fit.history == run_out.within(cfg.epochs).fit.history
    assert best.fit.best_epoch == [int(np.argmin(criterion)) + 1] == run_out.within(cfg.epochs).fit.best_epoch
    np.testing.assert_allclose(best.logits["val"], run_out.within(cfg.epochs).logits["val"], rtol=0, atol=1e-6)
    assert best.within(stopped.fit.epochs_run).fit.best_epoch == stopped.fit.best_epoch
    assert f"patience would have stopped after {stopped.fit.epochs_run}" in caplog.records[-1].getMessage()


def test_a_warm_started_kd_student_starts_from_the_plain_student_and_keeps_it_unless_an_epoch_beats_it(corpus_file,
                                                                                                     caplog):
    """`--kd-init student`: the KD student's epoch 0 is the plain student itself. At a tiny learning rate it stays
    the plain student (a fresh start would not); when every trained epoch is worse, the plain student's weights are
    kept and patience stops it `patience` epochs after epoch 0; `train_modes` passes the plain student in."""
    import dataclasses
    import logging

    from kdedge.config import make_config
    from kdedge.text.data import load_dataset
    from kdedge.training.train import featurize, train_modes, train_student

    ds = load_dataset(corpus_file)
    cfg = make_config(dict(arch="textcnn", embedding_dim=8, w2v_epochs=1, segmenter="char", batch_size=16, epochs=6,
                           patience=2, max_len=16, learning_rate=0.03, arch_params=TINY["textcnn"], teacher="linear",
                           kd_init="student"))
    feats = featurize(cfg, {"train": ds.subset(range(0, 90, 3)), "val": ds.subset([i for i in range(90) if i % 3])})
    plain = train_student(cfg, feats)
    kd = (np.float32(0.5), 4.0, feats.y["train"].astype(np.float32))
    still = dataclasses.replace(cfg, learning_rate=1e-9, epochs=1)
    warm, fresh = train_student(still, feats, kd=kd, init=plain), train_student(still, feats, kd=kd)
    np.testing.assert_allclose(warm.predict(feats.x["train"]), plain.predict(feats.x["train"]), rtol=0, atol=1e-4)
    assert np.abs(fresh.logits["val"] - plain.logits["val"]).max() > 1e-2, "a fresh start must differ"

    wild = dataclasses.replace(cfg, learning_rate=50.0)  # every trained epoch ruins the network
    kept = train_student(wild, feats, kd=kd, init=plain)
    assert kept.fit.best_epoch == [0] and kept.fit.epochs_run == cfg.patience
    np.testing.assert_allclose(kept.logits["val"], plain.logits["val"], rtol=0, atol=1e-6)

    with caplog.at_level(logging.INFO, logger="kdedge"):
        out = train_modes(cfg, feats, ["kd"])
    assert set(out) == {"teacher", "kd"}
    assert any("kd T=4 from the plain student" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="warm start"):
        selector_for(cfg, (feats.x["val"], feats.y["val"]), student_groups(plain.model, 3), run_out="all").start_from(
            plain.model)


# --------------------------------------------------------------------------------------- end to end

# one towers network on every training text (not cross-fitted), so the run keeps it as teacher.keras
E2E_CONFIG = dict(arch="textcnn", mode="all", teacher="towers", teacher_crossfit=0, epochs=3, embedding_dim=16,
                  max_len=16, w2v_epochs=1, val_split=0.2, batch_size=16, arch_params={"filters": 8}, seed=0,
                  segmenter="jieba")


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_file):
    root = tmp_path_factory.mktemp("runs")
    out = root / "run"
    metrics = train_run(TrainConfig(**E2E_CONFIG), corpus_file, str(out), progress=False)
    return {"root": root, "out": out, "metrics": metrics, "data": corpus_file}


@pytest.mark.slow
def test_run_directory_contents(run):
    out = run["out"]
    for name in ["config.json", "vocab.txt", "vectors.npy", "segmenter/dict.txt", "teacher.keras", "student.keras",
                 "kd.keras", "metrics.json", "validation.jsonl"]:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in run["root"].iterdir()) == ["run"], "a temporary directory was left behind"


@pytest.mark.slow
def test_run_metrics(run):
    metrics = json.loads((run["out"] / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["modes"] == json.loads(json.dumps(run["metrics"]["modes"]))
    labels = metrics["labels"]
    assert sorted(labels) == ["体育", "健康", "经济"]
    assert set(metrics["modes"]) == {"teacher", "student", "kd"}
    for mode, m in metrics["modes"].items():
        for decision in ("at_0.5", "tuned"):
            scores = m[decision]
            assert set(METRICS) <= set(scores)
            assert all(0.0 <= scores[k] <= 1.0 for k in METRICS)
            assert set(scores["per_label_f1"]) == set(labels)
        assert 1 <= m["epochs_run"] <= 3
        assert len(m["best_epoch"]) == (3 if mode == "teacher" else 1)  # one per tower for the teacher
    assert metrics["texts"]["train"] + metrics["texts"]["val"] == 90


@pytest.mark.slow
def test_run_config_vocab_vectors_validation(run):
    out = run["out"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["config"]["arch"] == "textcnn" and config["config"]["embedding_dim"] == 16
    assert config["labels"] == run["metrics"]["labels"]
    assert config["input"]["kind"] == "sequence" and config["input"]["max_len"] == 16
    assert config["segmenter"]["type"] == "jieba" and config["segmenter"]["dictionary"] == "segmenter/dict.txt"
    assert config["segmenter"]["convert"] == "none"  # auto on Simplified text
    assert sorted(config["modes"]) == ["kd", "student", "teacher"]
    vocab = Vocabulary.load(out / "vocab.txt")
    table = np.load(out / "vectors.npy")
    assert table.shape == (len(vocab), 16)
    np.testing.assert_array_equal(table[PAD_ID], 0.0)
    assert "足球" in vocab.index
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == run["metrics"]["texts"]["val"]
    assert all(set(r) >= {"id", "text", "labels", "tokens"} for r in rows)


@pytest.mark.slow
def test_run_models_reproduce_with_runtime_preprocessing(run):
    """Runtime jieba over the shipped dictionary + vocab.txt gives the training ids; kd.keras its logits."""
    out = run["out"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    vocab = Vocabulary.load(out / "vocab.txt")
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    pre = Preprocessor(JiebaTokenizer(read_dictionary(out / "segmenter" / "dict.txt"), config["segmenter"]["hmm"]),
                       vocab.index, config["input"])
    assert [pre.tokens(r["text"]) for r in rows] == [r["tokens"] for r in rows]
    ids, _ = pre.encode([r["text"] for r in rows])
    for mode in ("teacher", "student", "kd"):
        model = keras.models.load_model(out / f"{mode}.keras")
        logits = np.asarray(model(ids.astype(np.int32), training=False))
        assert logits.shape == (len(rows), 3)
        saved = out / "predictions" / f"val_{mode}.npy"
        if saved.exists():
            np.testing.assert_allclose(logits, np.load(saved), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_run_refuses_existing_directory(run):
    before = (run["out"] / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        train_run(TrainConfig(**E2E_CONFIG), run["data"], str(run["out"]), progress=False)
    assert (run["out"] / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_same_seed_same_metrics(run, tmp_path):
    again = train_run(TrainConfig(**E2E_CONFIG), run["data"], str(tmp_path / "again"), progress=False)
    assert without_timings(again["modes"]) == without_timings(run["metrics"]["modes"])
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "vectors.npy"), np.load(run["out"] / "vectors.npy"))


@pytest.mark.slow
def test_force_replaces_a_directory(corpus_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    cfg = TrainConfig(**{**E2E_CONFIG, "mode": "student", "epochs": 1})
    with pytest.raises(FileExistsError, match="not a kdedge run"):  # --force never deletes what is not a run
        train_run(cfg, corpus_file, str(out), force=True, progress=False)
    assert (out / "stale.txt").read_text(encoding="utf-8") == "old"
    (out / "stale.txt").unlink()
    train_run(TrainConfig(**{**E2E_CONFIG, "epochs": 1}), corpus_file, str(out), force=True, progress=False)
    assert (out / "teacher.keras").is_file()
    metrics = train_run(cfg, corpus_file, str(out), force=True, progress=False)  # a run: replaced whole
    assert set(metrics["modes"]) == {"student"}
    assert (out / "student.keras").is_file() and not (out / "teacher.keras").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_bad_mode_is_refused_before_any_work(corpus_file, tmp_path):
    with pytest.raises(ValueError, match="--mode"):
        train_run(TrainConfig(**{**E2E_CONFIG, "mode": "both"}), corpus_file, str(tmp_path / "x"), progress=False)
    assert not (tmp_path / "x").exists()


def test_trainable_embedding_keeps_padding_row_zero():
    """Fine-tuning the table must not move the padding row: masks and the bundle rely on it being zero."""
    from kdedge.networks.models import arch_params, build_classifier

    table = np.random.default_rng(0).random((20, 8)).astype("float32")
    table[0] = 0.0
    model = build_classifier("gru_att", (6,), table, 3, arch_params("gru_att"), 0.5, trainable_embeddings=True)
    model.compile("adam", "binary_crossentropy")
    x = np.array([[3, 4, 0, 0, 0, 0]] * 8)
    model.fit(x, np.ones((8, 3)), epochs=2, verbose=0)
    trained = model.get_layer("embedding").get_weights()[0]
    assert not trained[0].any()
    assert np.abs(trained[3] - table[3]).max() > 0  # the table did train


def test_positive_weights_and_weighted_bce():
    from kdedge.training.distill import positive_weights

    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 1]], dtype=np.float32)   # label 0: 1 of 5, label 1: 2 of 5
    np.testing.assert_allclose(positive_weights(y, "balanced"), [4.0, 1.5])
    np.testing.assert_allclose(positive_weights(y, "sqrt"), [2.0, np.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_allclose(positive_weights(y, "none"), [1.0, 1.0])
    with pytest.raises(ValueError, match="pos_weight"):
        positive_weights(y, "focal")
    z = np.array([[0.3, -1.2], [2.0, 0.1], [-0.5, 0.0], [1.0, -3.0], [0.2, 0.7]], dtype=np.float32)
    w = np.array([4.0, 1.5], dtype=np.float32)
    p = np_sigmoid(z)
    expected = np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert float(make_hard_loss(w)(y, z)) == pytest.approx(expected, rel=1e-5)
    assert float(make_hard_loss(np.ones(2, np.float32))(y, z)) == pytest.approx(float(make_hard_loss(1.0)(y, z)), rel=1e-6)
