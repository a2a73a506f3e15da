"""`kdedge cv --engine ray`: each (fold, architecture) as a task on a real local Ray cluster writes the
fold files the local path writes, and resumes the same way; on a real two-node cluster started with
`ray start` (Ray's default token authentication) pieces run on both nodes and a killed task is retried."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_same_results, require_extra, without_timings
from kdedge.config import make_config
from kdedge.crossval.cv import run_cv
from test_cv import TINY

ray = require_extra("ray", "ray")
pytestmark = pytest.mark.slow  # a local Ray instance


def _folds(out):
    return {p.name: without_timings(json.loads(p.read_text(encoding="utf-8")))
            for p in sorted((out / "folds").glob("*.json"))}


def test_ray_engine_writes_the_local_paths_fold_files_and_resumes(corpus_file, tmp_path):
    cfg = make_config(TINY)
    run_cv(cfg, corpus_file, str(tmp_path / "local"), folds=2, progress=False)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        run_cv(cfg, corpus_file, str(out), folds=2, progress=False, engine="ray")
        expected = _folds(tmp_path / "local")
        assert sorted(expected) == ["fold0_baselines.json", "fold0_textcnn.json", "fold1_baselines.json",
                                    "fold1_textcnn.json"]
        assert_same_results(_folds(out), expected)
        kept = (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns
        (out / "folds" / "fold1_textcnn.json").unlink()  # killed before that fold finished
        run_cv(cfg, corpus_file, str(out), folds=2, progress=False, engine="ray")
        assert (out / "folds" / "fold0_textcnn.json").stat().st_mtime_ns == kept  # finished folds are not rerun
        assert_same_results(_folds(out), expected)
        assert json.loads((out / "results.json").read_text(encoding="utf-8"))["architectures"]["textcnn"]["kd"]["folds"] == [0, 1]
    finally:
        ray.shutdown()


def test_engine_options_are_checked(corpus_file, tmp_path):
    with pytest.raises(ValueError, match="--address names a Ray cluster"):
        run_cv(make_config(TINY), corpus_file, str(tmp_path / "a"), folds=2, address="auto")
    with pytest.raises(ValueError, match="with --engine ray the cluster's CPUs decide"):
        run_cv(make_config(TINY), corpus_file, str(tmp_path / "b"), folds=2, engine="ray", jobs=2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fold_task_pids() -> list[int]:
    """Ray worker processes running a cv piece (Ray names them `ray::_ray_fold_task`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_ray_fold_task"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def two_node_cluster(tmp_path):
    """A head and a second node on localhost, started as README "Scaling out" says, one CPU each."""
    import shutil

    ray_cli = shutil.which("ray")
    assert ray_cli, "the ray command is installed with the ray extra"
    address = f"127.0.0.1:{_free_port()}"
    node_env = dict(os.environ, RAY_AUTH_MODE="token")  # README: a joining node sends the head's token
    auth_mode = os.environ.get("RAY_AUTH_MODE")  # kdedge's connect may set it in this process
    procs = [subprocess.Popen([ray_cli, "start", "--head", "--port", address.split(":")[1], "--num-cpus", "1",
                               "--resources", '{"first_node": 1}', "--include-dashboard=false", "--block"],
                              stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)]
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert time.monotonic() < deadline and procs[0].poll() is None, (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(0.5)
        procs.append(subprocess.Popen([ray_cli, "start", "--address", address, "--num-cpus", "1", "--resources",
                                       '{"second_node": 1}', "--block"], env=node_env,
                                      stdout=open(tmp_path / "node.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        yield address
    finally:
        ray.shutdown()
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        # `ray start --head` names this cluster in /tmp/ray/ray_current_cluster; once it is gone, a stale entry
        # would make a later ray.init() (no address) try to join it
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(address.split(":")[1]):
            current.unlink()


def test_two_node_cluster_runs_pieces_on_both_nodes_and_retries_a_killed_task(corpus_file, tmp_path,
                                                                               two_node_cluster):
    cfg = make_config(TINY)
    run_cv(cfg, corpus_file, str(tmp_path / "local"), folds=2, progress=False)
    from kdedge_run.raycluster import connect

    connect(ray, two_node_cluster)  # RAY_AUTH_MODE unset here: kdedge sends the token `ray start` wrote
    deadline = time.monotonic() + 90
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()[-2000:]
        time.sleep(0.5)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    killed = []

    def kill_one_piece():  # kill -9 the first cv piece seen running: Ray runs it again
        while not killed and time.monotonic() < deadline + 120:
            pids = _fold_task_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_piece, daemon=True)
    killer.start()
    out = tmp_path / "ray"
    run_cv(cfg, corpus_file, str(out), folds=2, progress=False, engine="ray", address=two_node_cluster)
    killer.join(timeout=5)
    assert killed, "no cv piece was seen running"
    assert_same_results(_folds(out), _folds(tmp_path / "local"))
    ran_on = {json.loads(p.read_text(encoding="utf-8"))["ran_on"]["ray_node"] for p in (out / "folds").glob("*.json")}
    assert ran_on == nodes  # pieces ran on both nodes


def test_kdedge_cv_at_an_address_where_nothing_answers_is_one_line_at_once(corpus_file, tmp_path):
    import sys

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kdedge.cli", "cv", "--data", corpus_file, "--out",
                           str(tmp_path / "cv"), "--engine", "ray", "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60  # TensorFlow's import is most of it
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "kdedge: error: cannot join the Ray cluster at 127.0.0.1:1: nothing answers there (Connection refused); "
        "is `ray start --head` running there and reachable?")
