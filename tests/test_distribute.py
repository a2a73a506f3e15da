"""`--strategy`: tf.distribute training gives one device's results (MirroredStrategy over two logical
CPU devices; MultiWorkerMirroredStrategy with two worker processes on localhost).

Tolerance: validation logits within 0.01 for the students and 0.1 for the tower-batched teacher, tuned
micro/macro-F1 within 0.05. Replicas sum their gradients in another order than one device does, and a
bucketed teacher batch of odd size is split unevenly, so each replica's mean loss is weighted slightly
differently; dropout is 0 so that masks (drawn per replica) do not add noise.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from kdedge.config import ConfigError, make_config

# gru_att with the towers teacher: the teacher trains on tf.data length-bucketed batches (kdedge.towers)
SETTINGS = {"embedding_dim": 16, "w2v_epochs": 1, "segmenter": "char", "batch_size": 16, "epochs": 2, "patience": 2,
            "max_len": 16, "dropout": 0.0, "arch": "gru_att", "teacher": "towers", "teacher_crossfit": 0,
            "arch_params": {"units": 8}}
TRAIN = """
import json, sys
import tensorflow as tf
strategy, data, out, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if devices > 1:  # before TensorFlow initialises its devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
from kdedge.config import make_config
from kdedge.train import train_run
train_run(make_config({**json.loads(sys.argv[5]), "strategy": strategy}), data, out, progress=False)
"""


def _run(corpus_file, out, strategy, devices=1, env=None):
    return subprocess.Popen([sys.executable, "-c", TRAIN, strategy, corpus_file, str(out), str(devices),
                             json.dumps(SETTINGS)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def one_device(corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("distribute") / "one"
    _finish(_run(corpus_file, out, "one"))
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
def test_mirrored_over_two_cpu_devices_matches_one_device(one_device, corpus_file, tmp_path):
    _finish(_run(corpus_file, tmp_path / "mirrored", "mirrored", devices=2))
    _assert_same_results(tmp_path / "mirrored", one_device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_match_one_device_and_only_the_chief_writes(one_device, corpus_file, tmp_path):
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    out = tmp_path / "multiworker"
    procs = [_run(corpus_file, out, "multiworker", env={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    try:
        for proc in procs:
            _finish(proc)
    finally:
        for proc in procs:
            proc.kill()
    _assert_same_results(out, one_device)
    assert not [p for p in tmp_path.iterdir() if p.name != "multiworker"]  # the other worker left nothing


def test_strategy_choices_and_tf_config_errors_are_one_line(monkeypatch, corpus_file, tmp_path):
    from click.testing import CliRunner

    from kdedge.cli import main
    from kdedge.distribute import check_tf_config

    with pytest.raises(ConfigError, match="option strategy .--strategy. must be one of auto, one, mirrored"):
        make_config({"strategy": "tpu"})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["train", "--data", corpus_file, "--out", str(tmp_path / "run"),
                                       "--strategy", "multiworker", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "kdedge: error: --strategy multiworker: set TF_CONFIG" in result.output
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG: field .* missing or invalid"):
        check_tf_config()
