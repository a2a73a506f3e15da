"""`--strategy`, `--cpu-replicas`, TF_CONFIG and the multiworker wait (kdedge.training.distribute).

How close N replicas come to one device (figures in docs/benchmarks.md, "tf.distribute: replicas vs one device"):
- dropout 0, every batch split evenly: the same training up to float rounding. Each architecture's student,
  4 steps on 2 logical CPU devices: validation logits within 1e-4 of one device's (measured ≤ 3e-5).
- whole runs (2 epochs; the towers teacher's length buckets of odd size split unevenly, and a replica's mean
  loss then counts as much as the other's whatever its share; Adam turns a rounding-sized gradient into a
  full step; epochs are selected on validation): students within 0.01, the teacher within 0.1, tuned F1
  within 0.05, the same epochs run.
- dropout > 0: each replica draws its own masks for its share of a batch, so a run on N replicas is another
  random draw, statistically equivalent to one device's and not equal to it; no test compares them.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kdedge.config import ConfigError, make_config
from kdedge.errors import UsageError

KDEDGE = [sys.executable, "-m", "kdedge.cli"]
# gru_att with the towers teacher: the teacher trains on tf.data length-bucketed batches (kdedge.teaching.towers)
SETTINGS = {"embedding_dim": 16, "w2v_epochs": 1, "segmenter": "char", "batch_size": 16, "epochs": 2, "patience": 2,
            "max_len": 16, "dropout": 0.0, "arch": "gru_att", "teacher": "towers", "teacher_crossfit": 0,
            "arch_params": {"units": 8}}
QUICK = ["--mode", "student", "--epochs", "1", "--embedding-dim", "8", "--w2v-epochs", "1", "--teacher", "linear",
         "--teacher-crossfit", "0", "-q"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _tf_config(workers: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


# ------------------------------------------------------------------------------------------------ TF_CONFIG

EXAMPLE_CLUSTER = {"worker": ["localhost:2001", "localhost:2002"]}
MALFORMED = [
    ("", "TF_CONFIG: set but empty"),
    ("  \n", "TF_CONFIG: set but empty"),
    ('{"cluster": ', "TF_CONFIG: not valid JSON (Expecting value at character 12)"),
    ('["localhost:2001"]', 'TF_CONFIG: must be a JSON object with "cluster" and "task", not list'),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG: "cluster" is missing'),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', 'TF_CONFIG: "cluster" is missing'),
    ({"cluster": {"worker": ["localhost:2001"], "ps": ["localhost:2002"]}},
     'TF_CONFIG: cluster job "ps" is not one --strategy multiworker trains with (chief, worker)'),
    ({"cluster": {"worker": []}},
     'TF_CONFIG: cluster "worker" must be a non-empty list of "host:port" strings, not []'),
    ({"cluster": {"worker": "localhost:2001"}}, 'cluster "worker" must be a non-empty list of "host:port" strings'),
    ({"cluster": {"worker": [2001, 2002]}}, 'TF_CONFIG: cluster "worker"[0] must be a "host:port" string, not 2001'),
    ({"cluster": {"worker": ["localhost"]}}, 'TF_CONFIG: cluster "worker"[0] "localhost" is not host:port'),
    ({"cluster": {"worker": ["localhost:70000"]}}, 'is not host:port (a port from 1 to 65535)'),
    ({"cluster": {"worker": ["localhost:2001", "localhost:2001"]}},
     'TF_CONFIG: cluster "worker"[1] "localhost:2001" is also cluster "worker"[0]; each task needs its own address'),
    ({"cluster": {"chief": ["localhost:2000", "localhost:2003"], **EXAMPLE_CLUSTER}},
     'TF_CONFIG: cluster "chief" lists 2 addresses; a cluster has one chief'),
    ({"cluster": EXAMPLE_CLUSTER}, 'TF_CONFIG: "task" is missing or not an object'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"index": 0}}, 'TF_CONFIG: task "type" is missing (chief or worker)'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "chief", "index": 0}},
     'TF_CONFIG: task type "chief" is not a job of the cluster (worker)'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "evaluator", "index": 0}},
     'TF_CONFIG: task type "evaluator" is not a job of the cluster (worker)'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker"}},
     'TF_CONFIG: task "index" is missing: this worker\'s position in cluster "worker" (0 to 1)'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker", "index": "0"}},
     'TF_CONFIG: task "index" must be an integer, not "0"'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker", "index": True}}, 'task "index" must be an integer'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker", "index": 2}},
     'TF_CONFIG: task index 2 is out of range: cluster "worker" has 2 addresses (index 0 to 1)'),
    ({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker", "index": -1}}, "TF_CONFIG: task index -1 is out of range"),
]


@pytest.mark.parametrize("raw, message", MALFORMED, ids=range(len(MALFORMED)))
def test_each_malformed_tf_config_is_one_line(monkeypatch, raw, message):
    from kdedge.training.distribute import check_tf_config

    monkeypatch.setenv("TF_CONFIG", raw if isinstance(raw, str) else json.dumps(raw))
    with pytest.raises(UsageError) as error:
        check_tf_config("multiworker")
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UsageError, match=r"\(--strategy mirrored does not use TF_CONFIG: unset it\)$"):
        check_tf_config("mirrored")


def test_a_well_formed_tf_config_passes(monkeypatch):
    from kdedge.training.distribute import check_tf_config

    config = {"cluster": {"chief": ["[::1]:2000"], **EXAMPLE_CLUSTER}, "task": {"type": "chief", "index": 0},
              "rpc_layer": "grpc"}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert check_tf_config() == config


@pytest.mark.parametrize("strategy, tf_config, message", [
    ("multiworker", None, "kdedge: error: --strategy multiworker: set TF_CONFIG to this worker's cluster and task"),
    ("mirrored", "", "kdedge: error: TF_CONFIG: set but empty; it holds this worker's cluster and task"),
    ("multiworker", json.dumps({"cluster": {"worker": [1, 2]}, "task": {"type": "worker", "index": 0}}),
     'kdedge: error: TF_CONFIG: cluster "worker"[0] must be a "host:port" string, not 1'),
    ("multiworker", json.dumps({"cluster": EXAMPLE_CLUSTER, "task": {"type": "worker", "index": 5}}),
     "kdedge: error: TF_CONFIG: task index 5 is out of range"),
])
def test_kdedge_train_refuses_a_bad_tf_config_in_one_line(monkeypatch, corpus_file, tmp_path, strategy, tf_config,
                                                           message):
    from kdedge.cli import main

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    result = CliRunner().invoke(main, ["train", "--data", corpus_file, "--out", str(tmp_path / "run"),
                                       "--strategy", strategy, "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ --cpu-replicas

def test_cpu_replicas_is_checked_with_the_config(corpus_file, tmp_path):
    from kdedge.cli import main

    with pytest.raises(ConfigError, match=r"option cpu_replicas \(--cpu-replicas\) must be at least 1 and at most "
                                          r"1024, not 0"):
        make_config({"cpu_replicas": 0})
    with pytest.raises(ConfigError, match=r"cpu_replicas \(--cpu-replicas\) 2 gives replicas to --strategy mirrored "
                                          r"\(or auto\), not one \(one device\)"):
        make_config({"cpu_replicas": 2, "strategy": "one"})
    with pytest.raises(ConfigError, match="not multiworker .one CPU replica per worker."):
        make_config({"cpu_replicas": 2, "strategy": "multiworker"})
    with pytest.raises(ConfigError, match=r"option peer_timeout \(--peer-timeout\) must be greater than 0"):
        make_config({"peer_timeout": 0})
    assert make_config({"cpu_replicas": "3"}).cpu_replicas == 3  # a config file may give it as a string
    # left out of config.json at its defaults: earlier runs' teacher cache keys and cv.json stay valid
    assert "cpu_replicas" not in make_config().to_dict()
    assert make_config({"cpu_replicas": 2}).to_dict()["cpu_replicas"] == 2
    result = CliRunner().invoke(main, ["train", "--data", corpus_file, "--out", str(tmp_path / "run"),
                                       "--cpu-replicas", "0"])
    assert result.exit_code == 2
    assert result.stderr == ("kdedge: error: option cpu_replicas (--cpu-replicas) must be at least 1 and at most "
                             "1024, not 0\n")


def test_the_cpu_cannot_be_split_once_tensorflow_runs():
    code = """
import tensorflow as tf
from kdedge.training.distribute import split_cpu
from kdedge.errors import UsageError
tf.constant(1.0) + 1  # TensorFlow sets up its devices
try:
    split_cpu(2)
except UsageError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ("--cpu-replicas 2: TensorFlow in this process has set up its devices already (1 CPU "
                           "device); the CPU can be split only before TensorFlow runs anything (kdedge train does it "
                           "first)\n")


@pytest.mark.slow
def test_cpu_replicas_option_trains_on_n_replicas(corpus_file, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(KDEDGE + ["train", "--data", corpus_file, "--out", str(out), "--cpu-replicas", "3"] + QUICK,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["distribute"] == {"strategy": "MirroredStrategy", "replicas": 3}  # auto: mirrored on the split CPU
    assert config["config"]["cpu_replicas"] == 3
    assert "Reduce to" not in done.stderr  # TensorFlow's INFO lines only with kdedge --verbose


# ------------------------------------------------------------------------------------------------ vs one device

SAME_STEPS = """
import json, sys
import numpy as np
import tensorflow as tf
from kdedge.training.distribute import split_cpu
split_cpu(2)
from kdedge.config import make_config
from kdedge.text.data import load_dataset
from kdedge.training.train import featurize, train_student
ds = load_dataset(sys.argv[1])
SMALL = {"textcnn": {"filters": 8, "kernel_sizes": [2, 3]}, "textrnn": {"units": 8},
         "gru_att": {"units": 8, "attention_units": 8}, "han": {"units": 8, "attention_units": 8}}
for arch in SMALL:
    settings = dict(embedding_dim=16, w2v_epochs=1, segmenter="char", batch_size=16, epochs=1, max_len=16,
                    max_sentences=2, max_sentence_len=8, arch=arch, arch_params=SMALL[arch], dropout=0.0)
    feats = featurize(make_config(settings), {"train": ds.subset(list(range(64))),
                                              "val": ds.subset(list(range(64, len(ds))))})
    logits = {s: train_student(make_config({**settings, "strategy": s}), feats).logits["val"]
              for s in ("one", "mirrored")}
    print(json.dumps({"arch": arch, "diff": float(np.abs(logits["one"] - logits["mirrored"]).max())}))
"""


@pytest.mark.slow
def test_two_replicas_take_one_devices_steps_for_every_architecture(corpus_file, tmp_path):
    """dropout 0, 64 texts in 4 batches of 16 (each split 8 + 8): the same training up to float rounding."""
    done = subprocess.run([sys.executable, "-c", SAME_STEPS, corpus_file], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    diffs = {r["arch"]: r["diff"] for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(diffs) == ["gru_att", "han", "textcnn", "textrnn"]
    assert max(diffs.values()) <= 1e-4, diffs


WARM_STEPS = """
import dataclasses, json, sys
import numpy as np
from kdedge.training.distribute import split_cpu
split_cpu(2)
from kdedge.config import make_config
from kdedge.text.data import load_dataset
from kdedge.training.train import featurize, train_student
ds = load_dataset(sys.argv[1])
settings = dict(embedding_dim=16, w2v_epochs=1, segmenter="char", batch_size=16, epochs=1, max_len=16, arch="textcnn",
                arch_params={"filters": 8, "kernel_sizes": [2, 3]}, dropout=0.0, kd_init="student")
feats = featurize(make_config(settings), {"train": ds.subset(list(range(64))),
                                          "val": ds.subset(list(range(64, len(ds))))})
kd = (np.float32(0.5), 4.0, feats.y["train"].astype(np.float32))
out = {}
for strategy in ("one", "mirrored"):
    cfg = make_config({**settings, "strategy": strategy})
    plain = train_student(cfg, feats)
    still = train_student(dataclasses.replace(cfg, learning_rate=1e-9), feats, kd=kd, init=plain)
    warm = train_student(cfg, feats, kd=kd, init=plain)
    out[strategy] = {"still": float(np.abs(still.logits["val"] - plain.logits["val"]).max()),
                     "warm": warm.logits["val"].tolist(),
                     "moved": float(np.abs(warm.logits["val"] - plain.logits["val"]).max()),
                     "best_epoch": warm.fit.best_epoch}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_kd_student_started_from_the_plain_student_on_two_replicas_is_the_one_device_student(corpus_file):
    """`--kd-init student` under MirroredStrategy: the plain student's weights reach every replica (at a learning
    rate of 1e-9 the KD student is the plain student), and one KD epoch from them is one device's, up to rounding."""
    done = subprocess.run([sys.executable, "-c", WARM_STEPS, corpus_file], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.splitlines()[-1])
    for run in runs.values():
        assert run["still"] <= 1e-4
        assert run["best_epoch"] == [1] and run["moved"] > 1e-3  # the KD epoch was kept: it moved the network
    np.testing.assert_allclose(runs["mirrored"]["warm"], runs["one"]["warm"], rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("distribute") / "settings.json"
    path.write_text(json.dumps(SETTINGS), encoding="utf-8")
    return str(path)


def _train(corpus_file, settings_file, out, *options, env=None):
    return subprocess.Popen(KDEDGE + ["train", "--data", corpus_file, "--out", str(out), "--config", settings_file,
                                      "-q", *options], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def one_device(corpus_file, settings_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute") / "one"
    _finish(_train(corpus_file, settings_file, out, "--strategy", "one"))
    return out


def _assert_same_results(run, reference):
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["distribute"]["replicas"] == 2
    metrics, expected = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (run, reference))
    for mode, tolerance in (("teacher", 0.1), ("student", 0.01), ("kd", 0.01)):
        np.testing.assert_allclose(np.load(run / "predictions" / f"val_{mode}.npy"),
                                   np.load(reference / "predictions" / f"val_{mode}.npy"), atol=tolerance)
        for name in ("micro_f1", "macro_f1"):
            assert abs(metrics["modes"][mode]["tuned"][name] - expected["modes"][mode]["tuned"][name]) <= 0.05
        assert metrics["modes"][mode]["epochs_run"] == expected["modes"][mode]["epochs_run"]


@pytest.mark.slow
def test_mirrored_over_two_cpu_replicas_matches_one_device(one_device, corpus_file, settings_file, tmp_path):
    out = tmp_path / "mirrored"
    printed = _finish(_train(corpus_file, settings_file, out, "--strategy", "mirrored", "--cpu-replicas", "2"))
    assert printed.startswith(f"run written to {out}\n")
    _assert_same_results(out, one_device)


@pytest.mark.slow
def test_two_workers_match_one_device_and_only_the_chief_claims_the_run(one_device, corpus_file, settings_file,
                                                                        tmp_path):
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    out = tmp_path / "multiworker"
    procs = [_train(corpus_file, settings_file, out, "--strategy", "multiworker", "--peer-timeout", "120",
                    env={"TF_CONFIG": _tf_config(workers, i)}) for i in range(2)]
    try:
        printed = [_finish(proc) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    _assert_same_results(out, one_device)
    assert not [p for p in tmp_path.iterdir() if p.name != "multiworker"]  # the other worker left nothing
    assert printed[0].startswith(f"run written to {out}\n")
    assert printed[1].startswith(f"worker 1 ({workers[1]}) trained in step with the chief, worker 0 ({workers[0]}), "
                                 f"which writes the run to {out}; this worker wrote nothing\n")


# ------------------------------------------------------------------------------------------------ the wait for peers

def _multiworker_cli(monkeypatch, corpus_file, tmp_path, workers, index, timeout):
    from kdedge.cli import main

    monkeypatch.setenv("TF_CONFIG", _tf_config(workers, index))
    start = time.monotonic()
    result = CliRunner().invoke(main, ["train", "--data", corpus_file, "--out", str(tmp_path / "run"),
                                       "--strategy", "multiworker", "--peer-timeout", str(timeout), "-q"])
    return result, time.monotonic() - start


@pytest.mark.parametrize("count, index, timeout, missing", [
    (3, 0, 1.5, "worker 1 ({1}), worker 2 ({2}) did not start within 1.5 s"),  # the chief waits for its workers
    (2, 1, 1, "worker 0 ({0}) did not start within 1 s"),                     # a worker waits for the chief
], ids=["chief", "worker"])
def test_a_task_gives_up_on_peers_that_never_start(monkeypatch, corpus_file, tmp_path, count, index, timeout, missing):
    workers = [f"localhost:{_free_port()}" for _ in range(count)]
    result, seconds = _multiworker_cli(monkeypatch, corpus_file, tmp_path, workers, index, timeout)
    assert result.exit_code == 2 and seconds < 30 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == (
        f"kdedge: error: --strategy multiworker: {missing.format(*workers)} (--peer-timeout); "
        "run the same command there with its TF_CONFIG, or raise --peer-timeout")
    assert not (tmp_path / "run").exists()


def test_a_worker_whose_port_is_taken_says_so(monkeypatch, corpus_file, tmp_path):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        workers = [f"localhost:{_free_port()}", f"localhost:{taken.getsockname()[1]}"]
        result, _ = _multiworker_cli(monkeypatch, corpus_file, tmp_path, workers, 1, 60)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith(f"kdedge: error: --strategy multiworker: this worker's address "
                                                     f"in TF_CONFIG, {workers[1]}, cannot be listened on (")


@pytest.mark.slow
@pytest.mark.parametrize("index, sig", [(0, signal.SIGTERM), (1, signal.SIGTERM), (0, signal.SIGINT),
                                        (1, signal.SIGINT)])
def test_ctrl_c_and_sigterm_end_the_wait_at_once(corpus_file, tmp_path, index, sig):
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    proc = subprocess.Popen(KDEDGE + ["train", "--data", corpus_file, "--out", str(tmp_path / "run"),
                                      "--strategy", "multiworker"] + QUICK,
                            env={**os.environ, "TF_CONFIG": _tf_config(workers, index)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = proc.stderr.readline()  # the line that says whom it waits for (default --peer-timeout 300)
        while waiting and not waiting.startswith("multiworker:"):  # TensorFlow's own lines, if any
            waiting = proc.stderr.readline()
        assert waiting.startswith(f"multiworker: worker {index} ({workers[index]})") and "waits up to 300 s" in waiting
        time.sleep(1)
        proc.send_signal(sig)
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 10
    finally:
        proc.kill()
    assert proc.returncode == -sig
    assert err == "kdedge: stopped while waiting for the other workers of TF_CONFIG; nothing was written\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_cluster_that_never_forms_is_ended_by_the_watchdog(corpus_file, tmp_path):
    """A worker's port answers but no TensorFlow worker is behind it: TensorFlow would wait for ever inside one
    C++ call; the watchdog ends the process WATCHDOG_GRACE_SECONDS after --peer-timeout, with one line."""
    from kdedge.training.distribute import WATCHDOG_GRACE_SECONDS

    with socket.create_server(("localhost", 0)) as impostor:
        workers = [f"localhost:{_free_port()}", f"localhost:{impostor.getsockname()[1]}"]
        start = time.monotonic()
        done = subprocess.run(KDEDGE + ["train", "--data", corpus_file, "--out", str(tmp_path / "run"), "--strategy",
                                        "multiworker", "--peer-timeout", "2"] + QUICK,
                              env={**os.environ, "TF_CONFIG": _tf_config(workers, 0)}, capture_output=True, text=True,
                              timeout=120)
    assert time.monotonic() - start < 2 + WATCHDOG_GRACE_SECONDS + 30
    assert done.returncode == -signal.SIGKILL
    assert done.stderr.splitlines()[-1] == (f"kdedge: error: --strategy multiworker: the cluster of TF_CONFIG did not "
                                            f"form within 2 s (--peer-timeout); waited for worker 1 ({workers[1]})")
    assert not (tmp_path / "run").exists()
