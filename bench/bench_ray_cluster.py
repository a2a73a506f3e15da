#!/usr/bin/env python
"""What a Ray cluster costs kdedge, in one run on this machine: starting a head and a second node with `ray
start` (as README "Scaling out" says), joining it, the round trip of an empty one-CPU task, and a small
`kdedge cv` (2 folds, tiny TextCNN, generated texts) run locally and on the two-node cluster: wall time, the
pieces' own seconds (from the fold files) and the difference, which is Ray's overhead per piece.

    python bench/bench_ray_cluster.py [--texts 400] [--folds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import REPO, log, machine, machine_notes, markdown_table

sys.path.insert(0, str(REPO / "tests"))
from conftest import make_corpus, write_jsonl  # noqa: E402  (the tests' generated corpus)

TINY = {"embedding_dim": 16, "w2v_epochs": 1, "segmenter": "char", "batch_size": 16, "epochs": 2, "patience": 2,
        "max_len": 32, "arch_params": {"filters": 8}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(args: list[str], log_path: Path, env=None) -> tuple[subprocess.Popen, float]:
    """`ray start ... --block` until it says it started: (process, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(["ray", "start", *args, "--block"], stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    while "Ray runtime started" not in log_path.read_text():
        if proc.poll() is not None or time.perf_counter() - start > 120:
            raise RuntimeError(log_path.read_text()[-2000:])
        time.sleep(0.1)
    return proc, time.perf_counter() - start


def pieces_seconds(out: Path) -> float:
    return sum(json.loads(p.read_text(encoding="utf-8")).get("seconds", 0.0) for p in (out / "folds").glob("*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--folds", type=int, default=2)
    args = parser.parse_args()
    import ray

    from kdedge.config import make_config
    from kdedge.crossval.cv import run_cv
    from kdedge_run.raycluster import connect

    m = machine(("ray", "tensorflow"))
    rows, procs = [], []
    with tempfile.TemporaryDirectory(prefix="kdedge-raybench-") as tmp:
        tmp = Path(tmp)
        data = write_jsonl(tmp / "texts.jsonl", make_corpus(args.texts))
        cfg = make_config(TINY)
        log("cv, local")
        start = time.perf_counter()
        run_cv(cfg, data, str(tmp / "local"), folds=args.folds, progress=False)
        local_wall = time.perf_counter() - start
        address = f"127.0.0.1:{free_port()}"
        try:
            log("ray start --head")
            head, head_s = start_node(["--head", "--port", address.split(":")[1], "--num-cpus", "1",
                                       "--include-dashboard=false"], tmp / "head.log")
            procs.append(head)
            log("ray start --address (second node)")
            node, node_s = start_node(["--address", address, "--num-cpus", "1"], tmp / "node.log",
                                      env=dict(os.environ, RAY_AUTH_MODE="token"))
            procs.append(node)
            start = time.perf_counter()
            connect(ray, address)
            connect_s = time.perf_counter() - start
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                time.sleep(0.1)
            empty = ray.remote(num_cpus=1)(lambda: None)
            ray.get([empty.remote() for _ in range(4)])  # workers started
            trips = []
            for _ in range(50):
                start = time.perf_counter()
                ray.get(empty.remote())
                trips.append(time.perf_counter() - start)
            log("cv, Ray (two nodes)")
            start = time.perf_counter()
            run_cv(cfg, data, str(tmp / "ray"), folds=args.folds, progress=False, engine="ray", address=address)
            ray_wall = time.perf_counter() - start
        finally:
            ray.shutdown()
            for proc in reversed(procs):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        n_pieces = len(list((tmp / "ray" / "folds").glob("*.json")))
        local_work, ray_work = pieces_seconds(tmp / "local"), pieces_seconds(tmp / "ray")
        rows = [["`ray start --head` (until started)", f"{head_s:.1f} s"],
                ["`ray start --address` second node", f"{node_s:.1f} s"],
                ["join (`connect`, token sent)", f"{connect_s:.2f} s"],
                ["empty 1-CPU task round trip, median of 50", f"{1e3 * statistics.median(trips):.1f} ms"],
                [f"`kdedge cv` local, {args.folds} folds, {args.texts} texts: wall / pieces' own seconds",
                 f"{local_wall:.1f} s / {local_work:.1f} s"],
                [f"`kdedge cv --engine ray` on the two nodes: wall / pieces' own seconds ({n_pieces} pieces)",
                 f"{ray_wall:.1f} s / {ray_work:.1f} s"],
                ["Ray wall − pieces' own seconds ÷ 2 nodes, per piece (start-up, scheduling, data transfer)",
                 f"{(ray_wall - ray_work / 2) / max(n_pieces, 1):.1f} s"]]
    print("\n".join([f"# Ray cluster overhead ({time.strftime('%Y-%m-%d %H:%M')})", "", *machine_notes(m), "",
                     markdown_table(["what", "time"], rows), "",
                     f"- load average (1 min) at the end: {machine()['loadavg']:.2f}"]))


if __name__ == "__main__":
    main()
