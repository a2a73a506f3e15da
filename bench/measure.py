"""What the benchmarks in bench/ share: reading texts, timing calls, fresh processes and their peak RSS,
the machine's description, the one markdown renderer and the reader of committed cv fold files. Standard
library only at import (numpy on use), so that it is also the small parent that measures one fresh process:

    python bench/measure.py RESULT.json CMD ...   # runs CMD; writes {"seconds", "rss_kb", "code"} to RESULT.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"   # beside the clone (DEVELOPERS.md); may be missing
HEALTHNER9 = SHARED_DATA / "healthner9"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_records(path: Path, n: int | None = None) -> list[dict]:
    """The first `n` (all: None) records {"text", "labels"} of JSON Lines with "text" (and "labels"), or of
    plain text lines; blank lines and empty texts are skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if n is not None and len(records) == n:
                break
            line = line.strip()
            record = json.loads(line) if line.startswith("{") else {"text": line}
            if isinstance(record.get("text"), str) and record["text"].strip():
                records.append({"text": record["text"], "labels": list(record.get("labels") or [])})
    return records


def read_texts(path: Path, n: int | None = None) -> list[str]:
    return [r["text"] for r in read_records(path, n)]


def committed_fold_files(run: Path, pattern: str = "fold*") -> list[tuple[Path, dict]]:
    """(path, record) of every fold file of a committed cv run directory (docs/results) matching `pattern`
    (without the extension), in name order: `folds/*.json`, or `*.json.gz` as docs/results stores them."""
    import gzip

    found = []
    for path in sorted(Path(run).glob(f"folds/{pattern}.json*")):
        if path.name.endswith((".json", ".json.gz")):
            raw = path.read_bytes()
            found.append((path, json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)))
    return found


def per_call(fn, items, warmup: int = 0, repeats: int = 1) -> list[float]:
    """Seconds of each `fn(item)` over `items` (`repeats` passes), after `warmup` untimed calls."""
    for item in (list(items) * (warmup // max(len(items), 1) + 1))[:warmup]:
        fn(item)
    times = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
    return times


def summary_ms(seconds) -> dict:
    """p50 / p99 / mean in milliseconds, and n, of per-call seconds."""
    import statistics

    ms = [1e3 * s for s in seconds]
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "p50": statistics.median(ms), "p99": p99, "mean": statistics.fmean(ms)}


def rate(fn, batches) -> float:
    """Items per second of `fn(batch)` over `batches` (lists)."""
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(map(len, batches)) / (time.perf_counter() - start)


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def probabilities(labels: list[str], predictions):
    """kdedge_run Predictions → probabilities `[texts, labels]` in `labels` order."""
    import numpy as np

    return np.array([[p.probabilities[lab] for lab in labels] for p in predictions], dtype=np.float64)


def run_child(cmd, env=None, check: bool = True, output: bool = True) -> SimpleNamespace:
    """Run `cmd` as one fresh process: its `seconds` (wall), `rss_mb` (peak RSS), exit `code`, `stdout` (kept
    only with `output`) and `stderr`.

    The process is started by a small parent (this file run as a script) that times it and reads its peak RSS
    with os.wait4: Linux carries the forking process's peak RSS over into the child, so a child of this
    (larger) process would report at least this process's RSS. That parent imports little (about 12 MB).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kdedge-child-") as tmp:
        result, out, err = (Path(tmp, name) for name in ("result.json", "out", "err"))
        with open(out if output else os.devnull, "wb") as o, open(err, "wb") as e:
            subprocess.run([sys.executable, __file__, result, *map(str, cmd)], stdout=o, stderr=e,
                           stdin=subprocess.DEVNULL, env=env, check=True)
        r = json.loads(result.read_text())
        child = SimpleNamespace(seconds=r["seconds"], rss_mb=r["rss_kb"] / 1024, code=r["code"],
                                stdout=out.read_text("utf-8", "replace") if output else "", stderr=err.read_text("utf-8", "replace"))
    if check and child.code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {child.code}:\n{child.stderr[-2000:]}")
    return child


def fresh_processes(cmd, runs: int, env=None) -> dict:
    """Median / min / max wall seconds and peak RSS of `runs` fresh processes, after one unmeasured run
    (page cache warm); `stdout` of the first."""
    import statistics

    first = run_child(cmd, env)
    children = [run_child(cmd, env) for _ in range(runs)]
    seconds = [c.seconds for c in children]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": runs,
            "rss_mb": statistics.median(c.rss_mb for c in children), "stdout": first.stdout.strip()}


def version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(packages=()) -> dict:
    """CPU (model, MHz, SIMD flags), cores, memory, OS, Python, the given packages' versions, load average."""
    import platform
    import re

    info = {"cpu": platform.processor() or platform.machine(), "mhz": None, "simd": []}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
        info["mhz"] = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo).group(1))
        flags = set(re.search(r"flags\s*:\s*(.*)", cpuinfo).group(1).split())
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["memory_gb"] = round(kb / 1024 ** 2, 1)
    except (OSError, AttributeError):
        pass
    return {**info, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "os": platform.platform(), "python": f"{platform.python_implementation()} {platform.python_version()}",
            "packages": {p: v for p in packages if (v := version(p))}, "loadavg": os.getloadavg()[0]}


def machine_line() -> str:
    m = machine()
    return f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores, {m['python']}, load average {m['loadavg']:.2f}"


def machine_notes(m: dict, load_end: float | None = None) -> list[str]:
    """Markdown bullets describing `machine()`'s result."""
    details = ([f"{m['mhz']:.0f} MHz"] if m.get("mhz") else []) + m["simd"]
    load = f" / end: {m['loadavg']:.2f} / {load_end:.2f}" if load_end is not None else f": {m['loadavg']:.2f}"
    return [f"- CPU: {m['cpu']}" + (f" ({', '.join(details)})" if details else ""),
            f"- cores: {m['cores']} (usable by this process: {m['usable_cores']}); memory {m.get('memory_gb')} GB",
            f"- load average (1 min) at start{load}",
            f"- OS: {m['os']}; Python: {m['python']}",
            "- packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items())]


def markdown_table(header, rows) -> str:
    """The one table renderer of bench/: a markdown table, cells as given (str() of non-strings)."""
    def cells(row):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
    return "\n".join([cells(header), "|" + "---|" * len(header), *map(cells, rows)])


def _measure_one(result: str, cmd: list[str]) -> None:
    """Run `cmd` with this process's standard streams; write its wall time, peak RSS and exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    Path(result).write_text(json.dumps({"seconds": seconds, "rss_kb": usage.ru_maxrss,
                                        "code": os.waitstatus_to_exitcode(status)}))


if __name__ == "__main__":
    _measure_one(sys.argv[1], sys.argv[2:])
