#!/usr/bin/env python
"""Throughput of the runtime, in one run: one text at a time against batches, and the streaming commands.

  * in this process, one thread, per bundle: `clf.predict(text)` p50 and texts/s one at a time; texts/s of
    `clf.predict(list)` (batches of similar length) and, as the earlier rule, of batches of 64 in input
    order; max |Δp| between batched and alone;
  * fresh processes on healthner9 texts.jsonl repeated to `--lines` lines: `kdedge-run predict --input` of this
    tree and of `--baseline REF` (that commit's runtime, from git), `kdedge-run label` local and on Ray (1 and 2
    actors), and the baseline's Ray `label`; texts/s and peak RSS of the command's own process (os.wait4;
    Ray's actors are other processes);
  * `kdedge-run label` (local, Ray) on a hostile file: the lines above plus a 200 MB line, a BOM, invalid UTF-8,
    GBK, a line without "text" and a truncated last line: error records written, peak RSS.

    python bench/bench_throughput.py [--bundle DIR ...] [--lines 100000] [--baseline 506a735] [--out report.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kdedge_run

from measure import HEALTHNER9, REPO, log, machine, machine_notes, markdown_table, per_call, read_texts, run_child

OLD_BATCH = 64


def in_process(bundle: str | None, texts: list[str]) -> dict:
    """One bundle, one thread: single-text p50 and rate, sorted-batch rate, input-order batch-64 rate, max |Δp|."""
    clf = kdedge_run.load(bundle)
    clf.predict(texts[:200])
    single = per_call(clf.predict, texts, warmup=200)
    rates = {"single": len(texts) / sum(single)}
    batched, in_order = [], []
    for _ in range(3):
        start = time.perf_counter()
        together = clf.predict(texts)
        batched.append(len(texts) / (time.perf_counter() - start))
        start = time.perf_counter()
        for i in range(0, len(texts), OLD_BATCH):  # the earlier rule: batches of 64 in input order
            _input_order_batch(clf, texts[i:i + OLD_BATCH])
        in_order.append(len(texts) / (time.perf_counter() - start))
    alone = [clf.predict(t) for t in texts]
    delta = max(abs(a.probabilities[n] - b.probabilities[n]) for a, b in zip(together, alone) for n in clf.labels)
    same_labels = all(a.labels == b.labels for a, b in zip(together, alone))
    return {"architecture": clf.info()["architecture"], "p50_ms": 1e3 * statistics.median(single),
            "single": rates["single"], "batched": statistics.median(batched), "in_order": statistics.median(in_order),
            "max_dp": delta, "same_labels": same_labels}


def _input_order_batch(clf, texts: list[str]) -> None:
    """The model run on `texts` as one batch in input order (what predict(list) did before sorting)."""
    rows = np.stack([clf._prepare(t).row for t in texts])
    clf._backend.run(rows if clf._bundle.version == 2 else clf._bundle.embed(rows))


def repeated_input(path: Path, texts: list[str], lines: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": f"t{i}", "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")


def hostile_input(path: Path, base: Path, big_mb: int) -> None:
    """`base`'s lines (a BOM before the first) plus six bad lines: a `big_mb` MB JSON line, invalid UTF-8, GBK,
    no "text", broken JSON and a truncated last line."""
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + base.read_bytes())
        f.write(b'{"id": "big", "text": "' + b"a" * (big_mb << 20) + b'"}\n')
        f.write(b"\xff\xfe invalid utf-8\n" + "股市大涨".encode("gbk") + b"\n" + b'{"id": "no-text"}\n')
        f.write(b'{"id": 1, "text": ' + b"\n")
        f.write('{"id": "last", "text": "未完'.encode())


def old_runtime(ref: str, dest: Path) -> Path:
    """The runtime package of commit `ref`, extracted under `dest`; returns the directory for PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "runtime/kdedge_run"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "runtime"


def command(pythonpath: Path | None, args: list[str], lines: int) -> dict:
    """texts/s, seconds and peak RSS (MB) of one fresh `kdedge-run` process over `lines` lines."""
    import os

    env = dict(os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    child = run_child([sys.executable, "-m", "kdedge_run", *args], env=env, output=False, check=False)
    if child.code not in (0, 2):
        raise RuntimeError(f"kdedge-run {' '.join(args)} exited {child.code}: {child.stderr[-1500:]}")
    return {"rate": lines / child.seconds, "seconds": child.seconds, "rss": child.rss_mb,
            "summary": (child.stderr.strip().splitlines() or [""])[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", default=[],
                        help="bundle directory (repeatable); the runtime's default bundle is always measured")
    parser.add_argument("--data", default=str(HEALTHNER9 / "texts.jsonl"))
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--texts", type=int, default=3000, help="texts for the in-process rows")
    parser.add_argument("--baseline", default="506a735", help="commit whose runtime is the baseline")
    parser.add_argument("--big-mb", type=int, default=200, help="size of the hostile file's long line")
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args()
    texts = read_texts(Path(args.data))
    m = machine(("onnxruntime", "numpy", "ray"))
    report = [f"# Runtime throughput ({time.strftime('%Y-%m-%d %H:%M')})", "", *machine_notes(m), ""]

    rows = []
    for bundle in [None, *args.bundle]:
        log(f"in process: {bundle or 'default bundle'}")
        r = in_process(bundle, texts[:args.texts])
        rows.append([bundle or "default", r["architecture"], f"{r['p50_ms']:.3f}", f"{r['single']:,.0f}",
                     f"{r['in_order']:,.0f}", f"{r['batched']:,.0f}", f"{r['batched'] / r['single']:.2f}×",
                     f"{r['max_dp']:.1e}", "yes" if r["same_labels"] else "NO"])
    report += [f"## In process, one thread, {args.texts:,} healthner9 texts", "",
               markdown_table(["bundle", "arch", "p50 ms (1 text)", "texts/s one at a time",
                               "texts/s batches of 64 in input order", "texts/s `predict(list)` (sorted)",
                               "sorted ÷ one at a time", "max |Δp| vs alone", "same labels"], rows), ""]

    with tempfile.TemporaryDirectory(prefix="kdedge-throughput-") as tmp:
        tmp = Path(tmp)
        data = tmp / "texts.jsonl"
        repeated_input(data, texts, args.lines)
        old = old_runtime(args.baseline, tmp)
        stream = []
        for name, path, extra in ((f"`predict --input`, {args.baseline}", old, []),
                                  ("`predict --input`, this tree", None, []),
                                  ("`label --engine local`, this tree", None, ["local"]),
                                  ("`label --engine ray --workers 1`, this tree", None, ["ray", "1"]),
                                  ("`label --engine ray --workers 2`, this tree", None, ["ray", "2"]),
                                  (f"`label` (Ray Data) `--workers 2`, {args.baseline}", old, ["old", "2"])):
            log(name)
            if not extra:
                cmd = ["predict", "--input", str(data), "--no-progress"]
            elif extra[0] == "old":
                cmd = ["label", "--input", str(data), "--out", str(tmp / f"out-{len(stream)}"), "--workers", extra[1]]
            else:
                cmd = ["label", "--input", str(data), "--out", str(tmp / f"out-{len(stream)}"), "--engine", extra[0]]
                cmd += ["--workers", extra[1]] if extra[0] == "ray" else []
            stream.append((name, command(path, cmd, args.lines)))
        base = stream[0][1]["rate"]
        report += [f"## Streaming, fresh processes, healthner9 texts.jsonl repeated to {args.lines:,} lines", "",
                   markdown_table(["command", "texts/s", f"÷ {args.baseline} predict", "seconds", "peak RSS MB"],
                                  [[n, f"{r['rate']:,.0f}", f"{r['rate'] / base:.2f}×", f"{r['seconds']:.1f}",
                                    f"{r['rss']:.0f}"] for n, r in stream]), ""]

        hostile = tmp / "hostile.jsonl"
        log(f"hostile input with a {args.big_mb} MB line")
        hostile_input(hostile, data, args.big_mb)
        lines = args.lines + 6
        bad = []
        for engine in ("local", "ray"):
            out = tmp / f"hostile-{engine}"
            r = command(None, ["label", "--input", str(hostile), "--out", str(out), "--engine", engine], lines)
            written = [json.loads(line) for line in open(out / "hostile.jsonl", encoding="utf-8")]
            errors = [w["line"] for w in written if w["error"]]
            bad.append([f"`label --engine {engine}`", f"{len(written):,}", ", ".join(map(str, errors)),
                        f"{r['seconds']:.1f}", f"{r['rss']:.0f}"])
        report += [f"## `label` on {lines:,} lines with a {args.big_mb} MB line, a BOM, invalid UTF-8, GBK, no \"text\", "
                   "broken JSON and a truncated last line", "",
                   markdown_table(["command", "lines written", "error records at lines", "seconds",
                                   "peak RSS MB (the command's process)"], bad), ""]
    report.append(f"- load average (1 min) at the end: {machine()['loadavg']:.2f}")
    text = "\n".join(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
