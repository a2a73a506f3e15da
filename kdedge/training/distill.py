"""Teacher (binary relevance), plain student and distilled student: losses, epoch selection, fitting.

Losses are small pure functions of tensors. `EpochSelector` keeps, for each group of labels (all
labels for a student, one label per teacher tower), the weights of the epoch with the best validation
criterion, and stops when every group has gone `patience` epochs without improving (or, run out, goes on to
the last epoch and can then give the network as trained for any fewer epochs). `fit_network` is the one
training routine every network goes through (`kdedge.training.train` for the students,
`kdedge.teaching.teachers` for the towers).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from kdedge.evaluate import bce, f1_per_label, sigmoid, tune_thresholds
from kdedge.training.batching import bucketed_dataset, predict_logits
from kdedge.training.trained import Fit, Trained

log = logging.getLogger("kdedge")


def bce_with_logits(targets, logits, pos_weight=1.0):
    """Element-wise binary cross-entropy of sigmoid(logits) against (soft) targets in [0, 1].

    `pos_weight` (a scalar or one weight per label) multiplies the positive term: w·y·softplus(−z) +
    (1−y)·softplus(z).
    """
    softplus = ops.maximum(logits, 0.0) + ops.log1p(ops.exp(-ops.abs(logits)))
    return softplus * (1.0 + (pos_weight - 1.0) * targets) - pos_weight * targets * logits


def positive_weights(y: np.ndarray, kind: str) -> np.ndarray:
    """Per-label weight of positive targets: none → 1, sqrt → √(neg/pos), balanced → neg/pos (pos ≥ 1)."""
    positives = np.maximum(y.sum(axis=0), 1.0)
    ratio = (len(y) - positives) / positives
    if kind == "none":
        return np.ones(y.shape[1], dtype=np.float32)
    if kind in ("sqrt", "balanced"):
        return np.maximum(np.sqrt(ratio) if kind == "sqrt" else ratio, 1.0).astype(np.float32)
    raise ValueError(f"pos_weight must be none, sqrt or balanced, not {kind!r}")


def kd_loss(y_true, teacher_soft, student_logits, alpha, temperature: float, pos_weight=1.0):
    """α·BCE_w(y, σ(z_s)) + (1−α)·T²·BCE(σ(z_t/T), σ(z_s/T)), averaged over labels and texts.

    `teacher_soft` is σ(z_t/T), computed once from the teacher's (calibrated) logits; `alpha` is a
    scalar or one weight per label (1 = that label learns from the true label only); `pos_weight`
    weights the positive true labels only.
    """
    hard = bce_with_logits(y_true, student_logits, pos_weight)
    soft = bce_with_logits(teacher_soft, student_logits / temperature)
    return ops.mean(alpha * hard + (1.0 - alpha) * temperature ** 2 * soft)


def make_kd_loss(n_labels: int, alpha, temperature: float, pos_weight=1.0):
    """A Keras loss over packed targets `[y | σ(z_t/T)]` (2·n_labels columns)."""
    def loss(packed, logits):
        return kd_loss(packed[:, :n_labels], packed[:, n_labels:], logits, alpha, temperature, pos_weight)
    return loss


def make_hard_loss(pos_weight):
    """The plain student's loss with per-label positive weights (see `positive_weights`)."""
    def loss(y_true, logits):
        return ops.mean(bce_with_logits(y_true, logits, pos_weight))
    return loss


def teacher_loss(y_true, logits):
    """Sum over towers of each tower's mean BCE: disjoint towers get exactly their own gradient."""
    return ops.sum(ops.mean(bce_with_logits(y_true, logits), axis=0))


def group_criterion(monitor: str, y_val: np.ndarray, logits: np.ndarray, cols: list[int],
                    min_support: int) -> float:
    """Lower-is-better criterion of one label group: validation BCE, or −macro-F1 at tuned thresholds."""
    probs = sigmoid(logits[:, cols])
    if monitor == "val_loss":
        return float(bce(y_val[:, cols], probs).mean())
    if monitor == "val_macro_f1":
        thresholds = tune_thresholds(y_val[:, cols], probs, min_support)
        return -float(f1_per_label(y_val[:, cols], (probs >= thresholds).astype(float)).mean())
    raise ValueError(f"monitor must be val_loss or val_macro_f1, not {monitor!r}")


class EpochSelector(keras.callbacks.Callback):
    """Per-group best-epoch selection and early stopping on validation data.

    val: (texts, 0/1 labels); groups: list of (label columns, layers whose weights belong to that group).
    `trim=True`: the network takes any length, and `fit` trains it (and this predicts the validation texts) in
    batches trimmed to their longest text (`batching`). With `run_out` (one group only) it trains every epoch even after
    patience has run out, keeping the weights of each epoch that beat all before it, so that `view(n)` can give the
    network as if it had been trained `n` epochs (with patience n); the epoch at which patience ran out is
    `stopped_at`. `run_out` is None (patience stops training), "patience" (run out; the selector restores and
    records the network patience would have given) or "all" (run out; the best of every epoch run).
    """

    def __init__(self, val: tuple, groups, *, monitor: str, patience: int, min_support: int, progress=None,
                 trim: bool = False, run_out: str | None = None):
        super().__init__()
        if run_out not in (None, "patience", "all"):
            raise ValueError(f"run_out must be None, 'patience' or 'all', not {run_out!r}")
        if run_out and len(groups) != 1:
            raise ValueError("run_out keeps whole-network snapshots: it needs exactly one label group")
        (self.x_val, self.y_val), self.groups, self.trim = val, groups, trim
        self.run_out, self.best_of_all = run_out is not None, run_out == "all"
        self.monitor, self.patience, self.min_support = monitor, patience, min_support
        self.progress = progress
        self.best = [np.inf] * len(groups)
        self.best_epoch = [-1] * len(groups)
        self.best_weights = [None] * len(groups)
        self.history: list[dict] = []
        self.stopped_at: int | None = None
        self.new_bests: list[tuple[int, list]] = []  # run_out: (epoch, weights) of every epoch better than all before
        self.epoch_seconds: list[tuple[float, float]] = []  # per epoch: (training, validation) seconds
        self._epoch_start = 0.0

    def start_from(self, model) -> None:
        """Count `model`'s weights before training (a warm start) as epoch 0: they are kept unless a trained epoch
        beats them on validation, and patience counts from them."""
        if self.run_out:
            raise ValueError("a warm start is selected without run_out")
        self.set_model(model)
        self.best = self._criteria()
        self.best_weights = [[layer.get_weights() for layer in layers] for _, layers in self.groups]

    def _criteria(self) -> list[float]:
        """Each label group's criterion (`group_criterion`) for the model's weights now, on the validation texts."""
        logits = predict_logits(self.model, self.x_val, trim=self.trim)
        return [group_criterion(self.monitor, self.y_val, logits, cols, self.min_support) for cols, _ in self.groups]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        values = self._criteria()
        for g, ((_, layers), value) in enumerate(zip(self.groups, values)):
            if value < self.best[g] - 1e-7:
                self.best[g], self.best_epoch[g] = value, epoch
                self.best_weights[g] = [layer.get_weights() for layer in layers]
                if self.run_out:
                    self.new_bests.append((epoch, self.best_weights[g]))
        self.history.append({"epoch": epoch + 1, "train_loss": float((logs or {}).get("loss", np.nan)),
                             self.monitor: values})
        self.epoch_seconds.append((start - self._epoch_start, time.perf_counter() - start))
        if self.progress is not None:
            self.progress.update(1)
            shown = -np.mean(values) if self.monitor.endswith("f1") else np.mean(values)  # F1 is stored negated
            self.progress.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.4f}",
                                      **{self.monitor: f"{shown:.4f}"})
        if self.stopped_at is None and all(epoch - b >= self.patience for b in self.best_epoch):
            self.stopped_at = epoch + 1
            self.model.stop_training = not self.run_out

    def restore(self) -> None:
        """Put every group's best-epoch weights back (run out: the best of the epochs before patience ran out,
        or of all epochs with run_out "all")."""
        weights = [self.view(self.kept_epochs())[1]] if self.run_out else self.best_weights
        for (cols, layers), group_weights in zip(self.groups, weights):
            if group_weights is not None:
                for layer, w in zip(layers, group_weights):
                    layer.set_weights(w)

    def kept_epochs(self) -> int | None:
        """Run out: the epochs whose best the selector keeps (None: all of them)."""
        return None if self.best_of_all else self.stopped_at

    def view(self, epochs: int | None = None) -> tuple[dict, list | None]:
        """The fit's record (timings, epochs run, best value and epoch, history) and the best weights of a run
        out selector as if it had trained only its first `epochs` epochs (all it ran by default)."""
        epochs = len(self.history) if epochs is None else epochs
        if not self.run_out or not 1 <= epochs <= len(self.history):
            raise ValueError(f"a view needs a run-out selector and 1 to {len(self.history)} epochs, not {epochs}")
        earlier = [(e, w) for e, w in self.new_bests if e < epochs]
        best_epoch, weights = earlier[-1] if earlier else (-1, None)  # none: every criterion was NaN
        value = self.history[best_epoch][self.monitor][0] if earlier else np.inf
        return self._record(epochs, [value], [best_epoch + 1]), weights

    def record(self) -> dict:
        """The fit's record: timings, epochs run, each group's best value and epoch, the history."""
        if self.run_out:
            return self.view(self.kept_epochs())[0]
        return self._record(len(self.history), [float(v) for v in self.best], [b + 1 for b in self.best_epoch])

    def _record(self, epochs: int, best_value: list, best_epoch: list) -> dict:
        train, validation = (float(sum(t)) for t in zip(*self.epoch_seconds[:epochs])) if epochs else (0.0, 0.0)
        return {"seconds": train + validation, "train_seconds": train, "validation_seconds": validation,
                "epochs_run": epochs, "best_value": [float(v) for v in best_value], "best_epoch": best_epoch,
                "history": self.history[:epochs]}


@dataclass(frozen=True)
class Network:
    """What `fit_network` trains: how to build it, its loss, its label groups (`groups(model)`: each group's label
    columns and the layers whose best epoch is kept), its name in the log, and whether its input takes any length
    (`bucket`: trained on length-bucketed batches trimmed to their longest text, `batching.bucketed_dataset`)."""

    build: Callable[[], keras.Model]
    loss: Callable
    groups: Callable
    desc: str
    bucket: bool = False


def selector_for(cfg, val: tuple, groups, progress=None, trim: bool = False,
                 run_out: str | None = None) -> EpochSelector:
    """The `EpochSelector` of `cfg`'s monitor, patience and threshold support."""
    return EpochSelector(val, groups, monitor=cfg.monitor, patience=cfg.patience, min_support=cfg.threshold_min_support,
                         progress=progress, trim=trim, run_out=run_out)


def fit(model, train: tuple, loss, selector: EpochSelector, cfg) -> EpochSelector:
    """Train with Adam on `train` = (texts, targets) (in length-bucketed, trimmed batches when the selector trims),
    let `selector` pick the best epoch of each label group on its validation texts, restore it; returns the selector
    (its `record()`: timings and history)."""
    x_train, targets = train
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, jit_compile=False)
    if selector.trim:
        model.fit(bucketed_dataset(x_train, targets, cfg.resolved_batch_size(), cfg.seed), epochs=cfg.epochs,
                  shuffle=False, callbacks=[selector], verbose=0)
    else:
        model.fit(x_train, targets, batch_size=cfg.resolved_batch_size(), epochs=cfg.epochs, shuffle=True,
                  callbacks=[selector], verbose=0)
    selector.restore()
    # Saved models are architecture + weights: the training loss (a kdedge function or closure) is not
    # serialisable, and its compile config would make keras.models.load_model fail.
    model.compiled = False
    return selector


def seed_everything(seed: int) -> None:
    """Seed Keras, TensorFlow, NumPy and Python, and make TensorFlow's ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit_network(cfg, feats, net: Network, targets: np.ndarray, rows=None, progress: bool = False,
                run_out: str | None = None, init: keras.Model | None = None) -> Trained:
    """Seed, build the network (under the distribution strategy, `kdedge.training.distribute`), train it on `rows` of
    the training texts (all by default) against `targets` (one row per trained text), selecting each label
    group's epoch on validation; returns it with its fit and validation logits. `run_out` ("patience" or "all")
    trains all `cfg.epochs` and returns the network patience would have given ("patience") or the best of all its
    epochs ("all"), whose `within(n)` is the network trained `n` epochs (`EpochSelector`). `init`: a network of the
    same architecture whose weights this one starts from, and keeps unless an epoch beats them
    (`EpochSelector.start_from`)."""
    from tqdm.auto import tqdm

    from kdedge.training.distribute import get_strategy, keras_workaround

    seed_everything(cfg.seed)
    x = feats.x["train"] if rows is None else feats.x["train"][np.asarray(rows)]
    strategy = get_strategy(cfg.strategy)
    with strategy.scope():  # the model's variables live on every replica
        model = net.build()
    keras_workaround(model, strategy)
    if init is not None:
        model.set_weights(init.get_weights())
    bar = tqdm(total=cfg.epochs, desc=net.desc, leave=False, disable=not progress)
    selector = selector_for(cfg, (feats.x["val"], feats.y["val"]), net.groups(model), bar, net.bucket, run_out)
    if init is not None:
        selector.start_from(model)
    with strategy.scope():
        fit(model, (x, targets), net.loss, selector, cfg)
    bar.close()
    info = Fit(**selector.record())
    best = abs(info.best_value[0]) if cfg.monitor.endswith("f1") else info.best_value[0]  # F1 is stored negated
    run_out_note = ""
    if selector.run_out and len(selector.history) > info.epochs_run:  # more epochs than patience gave (`info`)
        ran = selector.view()[0]
        run_out_note = f" (run out to {ran['epochs_run']} epochs, {ran['seconds']:.1f} s)"
    elif selector.best_of_all and (selector.stopped_at or info.epochs_run) < info.epochs_run:
        run_out_note = f" (the best of all epochs; patience would have stopped after {selector.stopped_at})"
    log.info("%s: %d epochs, %.1f s, best validation %s %.4f%s", net.desc, info.epochs_run, info.seconds, cfg.monitor,
             best, run_out_note)

    def within(epochs: int) -> Trained:
        record, weights = selector.view(epochs)
        with strategy.scope():
            again = net.build()
        if weights is not None:
            for layer, w in zip(net.groups(again)[0][1], weights):
                layer.set_weights(w)
        return Trained(fit=Fit(**record), logits={"val": predict_logits(again, feats.x["val"], trim=net.bucket)},
                       model=again, trim=net.bucket)
    return Trained(fit=info, logits={"val": predict_logits(model, feats.x["val"], trim=net.bucket)}, model=model,
                   trim=net.bucket, within=within if run_out else None)


def student_groups(model, n_labels: int):
    """One group: all labels, all of the model's weights."""
    return [(list(range(n_labels)), [model])]


def teacher_groups(model, n_labels: int):
    """One group per label: that label's column and its tower's weights."""
    return [([i], [model.get_layer(f"tower{i}")]) for i in range(n_labels)]
