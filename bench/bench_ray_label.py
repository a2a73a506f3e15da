#!/usr/bin/env python
"""Benchmark batch labelling with a bundle, in one run: texts/s of `kdedge-run label` (Ray Data, 1 and 2
actors on a local Ray instance) and of one `kdedge-run predict --input` process, with that process's peak
RSS at two input sizes (bounded memory: the RSS should not grow with the input).

    python bench/bench_ray_label.py [--bundle DIR] [--texts 60000] [--gigabytes 1]

Texts are generated (short Chinese sentences, 20–60 characters); Ray's figures include starting the
actors and loading the bundle once per actor, and reading and writing the files.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from measure import machine_line, run_child

WORDS = ["今天", "我们", "医院", "感冒", "医生", "头痛", "晚上", "睡不好", "股票", "银行", "市场", "比赛", "足球",
         "最近", "常常", "发烧", "咳嗽", "检查", "治疗", "药物", "血压", "心脏", "朋友", "城市", "新闻"]


def make_input(path: Path, n: int, seed: int = 0) -> None:
    """`n` JSON lines {"id", "text"} of random word sequences."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = "".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30))) + "。"
            f.write(json.dumps({"id": f"t{i}", "text": text}, ensure_ascii=False) + "\n")


def make_large_input(path: Path, gigabytes: float, seed: int = 0) -> int:
    """About `gigabytes` GB of JSON lines whose texts are 500-1,500 characters (a pool of 1,000 cycled);
    returns the number of lines."""
    rng = random.Random(seed)
    pool = ["".join(rng.choice(WORDS) for _ in range(rng.randint(200, 600))) + "。" for _ in range(1000)]
    target, written, n = gigabytes * 1e9, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            line = json.dumps({"id": f"t{n}", "text": pool[n % len(pool)]}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


def predict_process(bundle, path: Path) -> tuple[float, float]:
    """(texts/s, peak RSS MB) of one `kdedge-run predict --input` process over `path` (that process alone)."""
    n = sum(1 for _ in open(path, encoding="utf-8"))
    args = [sys.executable, "-m", "kdedge_run", "predict", "--input", str(path), "--no-progress"]
    child = run_child(args + (["--model", str(bundle)] if bundle else []), output=False)
    return n / child.seconds, child.rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None, help="bundle directory (default: the runtime's default bundle)")
    parser.add_argument("--texts", type=int, default=60000)
    parser.add_argument("--gigabytes", type=float, default=0.0,
                        help="also stream an input of this size through one predict process (peak RSS)")
    args = parser.parse_args()
    import ray

    from kdedge_run.batch import label_dataset

    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "texts.jsonl", Path(tmp) / "small.jsonl"
        make_input(big, args.texts)
        make_input(small, args.texts // 10)
        print(f"{machine_line()}; {args.texts} texts, {big.stat().st_size / 1e6:.1f} MB")
        rate_small, rss_small = predict_process(args.bundle, small)
        rate, rss = predict_process(args.bundle, big)
        print(f"kdedge-run predict --input, 1 process: {rate:.0f} texts/s; peak RSS {rss_small:.0f} MB at "
              f"{args.texts // 10} texts, {rss:.0f} MB at {args.texts}")
        if args.gigabytes:
            large = Path(tmp) / "large.jsonl"
            lines = make_large_input(large, args.gigabytes)
            rate_large, rss_large = predict_process(args.bundle, large)
            print(f"kdedge-run predict --input, {large.stat().st_size / 1e9:.2f} GB ({lines} texts of 500-1,500 "
                  f"characters): {rate_large:.0f} texts/s, peak RSS {rss_large:.0f} MB")
            large.unlink()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            for workers in (1, 2):
                start = time.perf_counter()
                result = label_dataset(str(big), str(Path(tmp) / f"out{workers}"), args.bundle, workers=workers)
                seconds = time.perf_counter() - start
                print(f"kdedge-run label (Ray Data), {workers} worker{'s' if workers > 1 else ''}: "
                      f"{result['texts'] / seconds:.0f} texts/s ({seconds:.1f} s)")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
