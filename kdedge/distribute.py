"""Training on several devices or machines with tf.distribute (`--strategy`).

- `one`: TensorFlow's default strategy, one device (the embedded default on a laptop or a CPU server).
- `mirrored`: synchronous data parallelism on one machine: every visible GPU or, without a GPU, every
  logical CPU device (one unless the process split the CPU with `tf.config.set_logical_device_configuration`).
- `multiworker`: synchronous data parallelism across processes or machines (`MultiWorkerMirroredStrategy`);
  every worker runs the same `kdedge` command with its own `TF_CONFIG` (cluster and task), and only the
  chief writes the run directory or the fold files.
- `auto`: `mirrored` when more than one GPU is visible, otherwise `one`.

Batch size and learning rate: `--batch-size` is the *global* batch. Each of the N replicas gets
batch/N texts of every step, the gradients are summed across replicas after each replica's loss was
divided by N, so one step is the step one device takes on the whole batch, and the learning rate is
unchanged (`--learning-rate`, default Adam 1e-3). Results therefore match one device up to float
summation order (and dropout masks, drawn per replica). To give each replica more texts, raise
`--batch-size` (N times the per-replica batch you want) and, if you do, scale `--learning-rate` with it
yourself (linear rule: k times the batch, k times the rate); kdedge changes neither behind your back.
"""
from __future__ import annotations

import functools
import json
import os

from kdedge.errors import UsageError

STRATEGIES = ("auto", "one", "mirrored", "multiworker")


def resolve(name: str) -> str:
    """The strategy `name` stands for on this machine (`auto` → `mirrored` with more than one GPU, else `one`)."""
    import tensorflow as tf

    if name != "auto":
        return name
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one"


def check_tf_config() -> dict:
    """TF_CONFIG as a dict, or a one-line error saying what is missing (multiworker needs it)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UsageError("--strategy multiworker: set TF_CONFIG to this worker's cluster and task, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if not isinstance(workers, list) or not workers or task["type"] not in ("worker", "chief"):
            raise KeyError("cluster.worker / task.type")
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"TF_CONFIG: field {exc} missing or invalid (needs cluster.worker and task.type/index)") from None
    return config


@functools.lru_cache(maxsize=None)
def get_strategy(name: str):
    """The tf.distribute strategy for `name` (one of STRATEGIES), created once per process.

    MultiWorkerMirroredStrategy must exist before TensorFlow runs other ops, so commands create it first
    (`kdedge.train.train_run`, `kdedge.cv.run_cv`).
    """
    import tensorflow as tf

    name = resolve(name)
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")


def keras_workaround(model, strategy) -> None:
    """Let Keras 3 fit `model` under MultiWorkerMirroredStrategy with more than one worker.

    Two Keras (3.15) bugs (tensorflow/tensorflow#72388): it builds a model captured in a strategy's scope
    by all-reducing the first data batch, a tuple the multi-worker all-reduce cannot take
    (`_maybe_symbolic_build`); and it all-reduces each step's scalar logs along axis 0, which a scalar
    lacks (`reduce_per_replica`). Forgetting the captured strategy defers the build to the first traced
    step (`fit` finds the strategy in the scope it is called in, `kdedge.distill.fit_network`), and the
    step's logs are given one axis, which that reduction removes again.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    model._distribute_strategy = None
    step = model.train_step

    def train_step(data):
        return {name: tf.reshape(value, (1,)) for name, value in step(data).items()}
    model.train_step = train_step


def is_chief(strategy) -> bool:
    """True in the process that writes results: always, except in a multi-worker cluster's non-chief workers."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def describe(strategy) -> dict:
    """What a run records of its strategy: class name and replicas in sync."""
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
