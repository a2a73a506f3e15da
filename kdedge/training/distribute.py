"""Training on several devices or machines with tf.distribute (`--strategy`).

- `one`: TensorFlow's default strategy, one device (the embedded default on a laptop or a CPU server).
- `mirrored`: synchronous data parallelism on one machine: every visible GPU or, without a GPU, every
  logical CPU device. `kdedge train --cpu-replicas N` (config key `cpu_replicas`) splits the CPU into N
  logical devices before TensorFlow sets up its devices (`split_cpu`), so that mirrored trains N replicas
  on a many-core machine or in a test; `auto` is then mirrored too.
- `multiworker`: synchronous data parallelism across processes or machines (`MultiWorkerMirroredStrategy`,
  one CPU replica or every GPU of each worker); every worker runs the same `kdedge` command with its own
  `TF_CONFIG` (cluster and task), checked before TensorFlow reads it (`check_tf_config`), and only the chief
  writes the run directory or the fold files. The workers wait for each other at most `peer_timeout`
  seconds (`--peer-timeout`, default 300), saying whom they wait for; Ctrl-C or SIGTERM stops the wait at once.
- `auto`: `mirrored` when more than one GPU is visible or the CPU is split, otherwise `one`.

Batch size and learning rate: `--batch-size` is the *global* batch. Each of the N replicas gets
batch/N texts of every step, the gradients are summed across replicas after each replica's loss was
divided by N, so one step is the step one device takes on the whole batch, and the learning rate is
unchanged (`--learning-rate`, default Adam 1e-3). To give each replica more texts, raise `--batch-size`
(N times the per-replica batch you want) and, if you do, scale `--learning-rate` with it yourself (linear
rule: k times the batch, k times the rate); kdedge changes neither behind your back.

How close N replicas come to one device (tests/test_distribute.py; figures in docs/benchmarks.md): with
`--dropout 0`, a batch that splits evenly gives one device's step up to float rounding (logits within ~1e-5
after a step), and runs drift apart slowly as Adam amplifies the rounding. A batch that does not split evenly
(the last of an epoch, a towers teacher's length bucket) is a slightly different step: Keras averages the loss
on each replica, then the replicas' averages with equal weight. With dropout > 0 each replica draws its own
dropout masks for its share of the batch, so a run on N replicas is another random draw: statistically
equivalent to one device's, not equal to it.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

from kdedge.errors import UsageError
from kdedge.tflog import VERBOSE_ENV

STRATEGIES = ("auto", "one", "mirrored", "multiworker")
JOBS = ("chief", "worker")  # the TF_CONFIG jobs MultiWorkerMirroredStrategy trains with
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')
WATCHDOG_GRACE_SECONDS = 20  # after peer_timeout, TensorFlow's own register timeout reports first
log = logging.getLogger("kdedge")
_created: dict = {}  # strategy name → strategy: one per process (MultiWorkerMirroredStrategy can be made once)


def resolve(name: str, cpu_replicas: int = 1) -> str:
    """The strategy `name` stands for on this machine (`auto` → `mirrored` with more than one GPU or a CPU split
    into `cpu_replicas` > 1 devices, else `one`)."""
    import tensorflow as tf

    if name != "auto":
        return name
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 or cpu_replicas > 1 else "one"


def split_cpu(n: int) -> None:
    """Give TensorFlow `n` logical CPU devices (one replica each under `mirrored`). Possible only before
    TensorFlow sets up its devices (before it runs any op); a one-line UsageError otherwise."""
    import tensorflow as tf

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"--cpu-replicas must be a whole number of at least 1, not {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or [None]) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
        have = len(tf.config.list_logical_devices("CPU"))
        raise UsageError(f"--cpu-replicas {n}: TensorFlow in this process has set up its devices already "
                         f"({have} CPU device{'s' if have != 1 else ''}); the CPU can be split only before "
                         "TensorFlow runs anything (kdedge train does it first)") from None


def get_strategy(setting):
    """The tf.distribute strategy for `setting`, created once per process by the first call.

    `setting`: a TrainConfig (its `strategy`, `cpu_replicas` and `peer_timeout`) or a strategy name (one of
    STRATEGIES; the other two at their defaults). The first call must come before TensorFlow runs other ops
    (MultiWorkerMirroredStrategy and `cpu_replicas` need that), so commands make it first (`kdedge.training.train.train_run`,
    `kdedge.crossval.cv.run_cv`); later calls by name (`kdedge.training.distill.fit_network`) get the same strategy.
    """
    from kdedge.config import TRAIN_DEFAULTS

    if isinstance(setting, str):
        name, cpu_replicas, timeout = setting, 1, TRAIN_DEFAULTS["peer_timeout"]
    else:
        name, cpu_replicas, timeout = setting.strategy, setting.cpu_replicas, setting.peer_timeout
    if name in _created:
        strategy = _created[name]
        if cpu_replicas > 1 and strategy.num_replicas_in_sync != cpu_replicas:
            raise UsageError(f"--cpu-replicas {cpu_replicas}: this process already trains on "
                             f"{strategy.num_replicas_in_sync} replica(s); only kdedge train splits the CPU, once "
                             "per process, before TensorFlow runs")
        return strategy
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    if cpu_replicas > 1:
        split_cpu(cpu_replicas)
    if os.environ.get(VERBOSE_ENV) != "1":  # its INFO lines of every traced step ("Reduce to … then broadcast")
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    _created[name] = _make(resolve(name, cpu_replicas), cpu_replicas, timeout)
    return _created[name]


def _make(name: str, cpu_replicas: int, timeout: float):
    import tensorflow as tf

    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if os.environ.get("TF_CONFIG") is not None:  # MirroredStrategy parses it (and ignores it)
            check_tf_config("mirrored")
            log.warning("kdedge: note: TF_CONFIG is set, but --strategy mirrored trains on this machine only "
                        "(--strategy multiworker trains on its cluster)")
        gpus = [] if cpu_replicas > 1 else tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
        if cpu_replicas > 1 and strategy.num_replicas_in_sync != cpu_replicas:
            raise UsageError(f"--cpu-replicas {cpu_replicas}: TensorFlow made {strategy.num_replicas_in_sync} "
                             "CPU replica(s)")
        return strategy
    return _multiworker(check_tf_config("multiworker"), timeout)


# ------------------------------------------------------------------------------------------------ TF_CONFIG

def check_tf_config(strategy: str = "multiworker") -> dict:
    """TF_CONFIG as a dict, checked before TensorFlow reads it: a one-line UsageError per malformed case.

    `multiworker` needs it; `mirrored` does not use it, but TensorFlow parses it when it is set, so a
    malformed one is refused there too (with a hint to unset it)."""
    raw = os.environ.get("TF_CONFIG")
    hint = "" if strategy == "multiworker" else f" (--strategy {strategy} does not use TF_CONFIG: unset it)"
    if raw is None:
        raise UsageError(f"--strategy multiworker: set TF_CONFIG to this worker's cluster and task, e.g. "
                         f"{TF_CONFIG_EXAMPLE}")

    def bad(problem: str) -> UsageError:
        return UsageError(f"TF_CONFIG: {problem}{hint}")

    if not raw.strip():
        raise bad(f"set but empty; it holds this worker's cluster and task, e.g. {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise bad(f"not valid JSON ({getattr(exc, 'msg', exc)} at character {getattr(exc, 'pos', '?')})") from None
    if not isinstance(config, dict):
        raise bad(f'must be a JSON object with "cluster" and "task", not {type(config).__name__}')
    _check_cluster(config.get("cluster"), bad)
    _check_task(config.get("task"), config["cluster"], bad)
    return config


def _check_cluster(cluster, bad: Callable[[str], UsageError]) -> None:
    """TF_CONFIG's "cluster": job → distinct "host:port" addresses, one chief at most, some worker."""
    if not isinstance(cluster, dict) or not cluster:
        raise bad('"cluster" is missing or not an object of job → list of "host:port" addresses')
    for job in cluster:
        if job not in JOBS:
            raise bad(f'cluster job "{job}" is not one --strategy multiworker trains with ({", ".join(JOBS)})')
    if "worker" not in cluster and "chief" not in cluster:
        raise bad('"cluster" has no "worker" list')
    seen = {}
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise bad(f'cluster "{job}" must be a non-empty list of "host:port" strings, not {_short(addresses)}')
        if job == "chief" and len(addresses) > 1:
            raise bad(f'cluster "chief" lists {len(addresses)} addresses; a cluster has one chief')
        for i, address in enumerate(addresses):
            where = f'cluster "{job}"[{i}]'
            if not isinstance(address, str):
                raise bad(f'{where} must be a "host:port" string, not {_short(address)}')
            if _host_port(address) is None:
                raise bad(f'{where} "{address}" is not host:port (a port from 1 to 65535)')
            if address in seen:
                raise bad(f'{where} "{address}" is also {seen[address]}; each task needs its own address')
            seen[address] = where


def _check_task(task, cluster: dict, bad: Callable[[str], UsageError]) -> None:
    """TF_CONFIG's "task": this worker's job type in the cluster and its index there."""
    if not isinstance(task, dict):
        raise bad('"task" is missing or not an object: this worker\'s {"type": "worker", "index": i}')
    kind, index = task.get("type"), task.get("index")
    if kind is None:
        raise bad('task "type" is missing (chief or worker)')
    if kind not in cluster:
        raise bad(f'task type {_short(kind)} is not a job of the cluster ({", ".join(cluster)})')
    if index is None:
        raise bad(f'task "index" is missing: this worker\'s position in cluster "{kind}" '
                  f'(0 to {len(cluster[kind]) - 1})')
    if not isinstance(index, int) or isinstance(index, bool):
        raise bad(f'task "index" must be an integer, not {_short(index)}')
    if not 0 <= index < len(cluster[kind]):
        raise bad(f'task index {index} is out of range: cluster "{kind}" has {len(cluster[kind])} '
                  f'address{"es" if len(cluster[kind]) != 1 else ""} (index 0 to {len(cluster[kind]) - 1})')


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, (set, bytes)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _host_port(address: str):
    """(host, port) of "host:port" or "[v6]:port", or None."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


# ------------------------------------------------------------------------------------ waiting for the peers

def _tasks(cluster: dict) -> list[tuple[str, int, str]]:
    """Every (job, index, address) of the cluster, the coordination leader (chief, else worker 0) first."""
    return [(job, i, address) for job in JOBS for i, address in enumerate(cluster.get(job, []))]


def _named_task(job: str, index: int, address: str) -> str:
    return f"{job} {index} ({address})"


def _listening(address: str) -> bool:
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _multiworker(config: dict, timeout: float):
    """MultiWorkerMirroredStrategy, made once every worker of `config` has started, within `timeout` seconds.

    TensorFlow waits for its peers inside one C++ call that holds Python's lock (Python's signal handlers and
    threads cannot run), takes SIGTERM for itself (preemption notices), and on the coordination leader (the
    chief, else worker 0) never times out. So the workers first meet in Python: each other worker holds its
    port open (`_Placeholder`) until the leader's port answers; the leader waits until every other worker's
    port answers and then starts the cluster, which the others join as soon as they see its port. In that wait
    Ctrl-C and SIGTERM end the process at once, and a watchdog process (`_watchdog`) prints one line for it;
    the watchdog also ends the process with one line if the cluster has not formed `WATCHDOG_GRACE_SECONDS`
    after the timeout (a worker that died after it answered). TensorFlow's own register timeout is set too.
    """
    import tensorflow as tf

    cluster, task = config["cluster"], config["task"]
    tasks = _tasks(cluster)
    me = (task["type"], task["index"])
    my_address = cluster[me[0]][me[1]]
    leader, chief = tasks[0], me == tasks[0][:2]
    waited_for = [t for t in tasks if t[:2] != me] if chief else [leader]
    names = ", ".join(_named_task(*t) for t in waited_for) or "no other worker"
    log.info("multiworker: %s%s waits up to %g s (--peer-timeout) for %s", _named_task(*me, my_address),
             ", the chief," if chief else "", timeout, names if chief else f"the chief, {names}")
    deadline = time.monotonic() + timeout
    cut = (f"kdedge: error: --strategy multiworker: the cluster of TF_CONFIG did not form within {timeout:g} s "
           f"(--peer-timeout); waited for {names}")
    stopped = "kdedge: stopped while waiting for the other workers of TF_CONFIG; nothing was written"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    on_main = threading.current_thread() is threading.main_thread()
    watchdog = _watchdog(timeout + WATCHDOG_GRACE_SECONDS, cut, stopped)
    try:
        if on_main:  # end the process at once; the watchdog says so
            for sig in handlers:
                signal.signal(sig, signal.SIG_DFL)
        with _Placeholder(my_address, hold=not chief) as placeholder:
            missing = list(waited_for)
            while missing:
                placeholder.answer()
                missing = [t for t in missing if not _listening(t[2])]
                if missing and time.monotonic() >= deadline:
                    raise UsageError(f"--strategy multiworker: {', '.join(_named_task(*t) for t in missing)} did "
                                     f"not start within {timeout:g} s (--peer-timeout); run the same command there "
                                     "with its TF_CONFIG, or raise --peer-timeout")
                if missing:
                    time.sleep(0.2)
        _configure_coordination(cluster, max(1.0, deadline - time.monotonic()))
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError):
            raise UsageError(cut.removeprefix("kdedge: error: ")) from None
    finally:
        try:
            watchdog.stdin.write(b"done")  # the watchdog exits quietly
            watchdog.stdin.close()
            watchdog.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if on_main:  # also replaces the SIGTERM handler TensorFlow installed
            for sig, handler in handlers.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class _Placeholder:
    """This worker's port, checked free and (`hold`) held open until TensorFlow's server takes it over: a
    worker's open port tells the chief that it has started."""

    def __init__(self, address: str, hold: bool):
        self.address, self.hold, self.server = address, hold, None

    def __enter__(self):
        port = _host_port(self.address)[1]
        try:
            if socket.has_dualstack_ipv6():
                self.server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
            else:
                self.server = socket.create_server(("", port))
        except OSError as exc:
            raise UsageError(f"--strategy multiworker: this worker's address in TF_CONFIG, {self.address}, cannot "
                             f"be listened on ({exc.strerror or exc}); is another program using port {port}?") from None
        self.server.setblocking(False)
        if not self.hold:
            self.close()
        return self

    def answer(self) -> None:
        """Accept and close the chief's probes (the backlog stays empty)."""
        while self.server is not None:
            try:
                self.server.accept()[0].close()
            except OSError:
                return

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def __exit__(self, *exc) -> None:
        self.close()


def _configure_coordination(cluster: dict, seconds: float) -> None:
    """Set up TensorFlow's coordination service as MultiWorkerMirroredStrategy would, but with a register
    timeout: a worker whose leader never starts fails after `seconds` (TensorFlow's default: an hour)."""
    from tensorflow.python.eager import context

    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    except ImportError:  # another TensorFlow layout: the watchdog still bounds the wait
        return
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
            for job in JOBS if job in cluster]
    leader = "/job:chief/replica:0/task:0" if "chief" in cluster else "/job:worker/replica:0/task:0"
    context.context().configure_coordination_service(service_type="standalone", service_leader=leader,
                                                     coordinated_jobs=jobs,
                                                     cluster_register_timeout_in_ms=int(seconds * 1000))


_WATCHDOG = """
import os, select, signal, sys
parent, seconds, cut, stopped = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
ready = select.select([sys.stdin.buffer], [], [], seconds)[0]
if not ready:  # still waiting: end it
    os.write(2, (cut + "\\n").encode())
    os.kill(parent, signal.SIGKILL)
elif not sys.stdin.buffer.read():  # the parent died without saying done (Ctrl-C, SIGTERM, a kill)
    os.write(2, (stopped + "\\n").encode())
"""


def _watchdog(seconds: float, cut: str, stopped: str) -> subprocess.Popen:
    """A small process that ends this one with the line `cut` after `seconds` unless told "done" first, and
    prints `stopped` if this one dies before that. It needs no Python lock, signal or thread of ours."""
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(seconds), cut, stopped],
                            stdin=subprocess.PIPE, start_new_session=True)


# ---------------------------------------------------------------------------------------------- the strategy

def keras_workaround(model, strategy) -> None:
    """Let Keras 3 fit `model` on more than one replica (MirroredStrategy or MultiWorkerMirroredStrategy).

    Keras (3.15) builds a model captured in a strategy's scope from the first data batch averaged across the
    replicas (`_maybe_symbolic_build`). That average fails when the batch does not split evenly (AddN: [11,128]
    != [10,128] with 3 replicas and a batch of 32): under MirroredStrategy the model is built from the first
    replica's share instead (only its shapes and dtypes count). Under MultiWorkerMirroredStrategy the all-reduce
    cannot take a tuple either (tensorflow/tensorflow#72388): forgetting the captured strategy defers the build
    to the first traced step (`fit` finds the strategy in the scope it is called in, `kdedge.training.distill.fit_network`;
    with one CPU replica per worker the optimizer may create its variables there). With more than one worker
    Keras also all-reduces each step's scalar logs along axis 0, which a scalar lacks (`reduce_per_replica`):
    the step's logs are given one axis, which that reduction removes again.
    """
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model._distribute_strategy = None
        step = model.train_step

        def train_step(data):
            return {name: tf.reshape(value, (1,)) for name, value in step(data).items()}
        model.train_step = train_step
    elif strategy.num_replicas_in_sync > 1:
        def first_share(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None:
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(first_share, next(batches))
                    break
            with strategy.scope():
                model._symbolic_build(data_batch=data_batch)
        model._maybe_symbolic_build = maybe_symbolic_build


def is_chief(strategy) -> bool:
    """True in the process that writes results: always, except in a multi-worker cluster's non-chief workers."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def written_line(strategy, out) -> str:
    """What `kdedge train` says at the end: the chief wrote the run; another worker says what it did."""
    if is_chief(strategy):
        return f"run written to {out}"
    config = json.loads(os.environ["TF_CONFIG"])
    cluster, task = config["cluster"], config["task"]
    chief = _tasks(cluster)[0]
    return (f"{_named_task(task['type'], task['index'], cluster[task['type']][task['index']])} trained in step with "
            f"the chief, {_named_task(*chief)}, which writes the run to {out}; this worker wrote nothing")


def describe(strategy) -> dict:
    """What a run records of its strategy: class name and replicas in sync."""
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
