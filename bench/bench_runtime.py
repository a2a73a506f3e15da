#!/usr/bin/env python
"""Benchmark the kdedge runtime (`kdedge_run`) on this machine, single thread, in one run.

Measures, for a bundle (docs/bundle.md):
  * text -> labels latency p50/p99 of `clf.predict(text)` (segmentation included, batch 1) for each
    backend in the bundle, after warm-up; segmentation alone; a per-stage breakdown;
  * throughput at batch 1 and at batch 64 (`clf.predict(list_of_64)`);
  * the same texts through the run's Keras model (`model.predict` and a `tf.function`, ids from the
    runtime's own segmentation), in a separate process so TensorFlow never enters this one;
  * fastText (`loss="ova"`, 5 epochs, jieba tokens) per text, jieba segmentation included;
  * cold start of the `kdedge-run predict` CLI as a fresh process, and `python -c "import tensorflow"`;
  * peak RSS of that CLI process vs a process that loads the Keras model and predicts once;
  * installed size of fresh venvs with `pip install runtime` ([tflite] too) vs the training venv;
  * that the CLI process never imported TensorFlow.

Prints a table, and writes markdown with the machine description when --out is given:

    python bench/bench_runtime.py --bundle models/default --run RUN_DIR --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "models" / "default"
DEFAULT_TEXTS = REPO.parent / "shared" / "data" / "healthner9" / "texts.jsonl"
COLD_TEXT = "我最近常常頭痛，晚上睡不好"
BATCH = 64
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorboard", "torch", "jax", "tf2onnx")
TARGETS = {"p50_ms": 0.5, "keras_speedup": 100.0, "cold_s": 0.4, "rss_mb": 120.0, "venv_ratio": 10.0}
BARE_VENV_DIRS = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "__pycache__"}
PACKAGES = ("kdedge-run", "kdedge", "numpy", "onnxruntime", "ai-edge-litert", "jieba", "click",
            "tensorflow", "keras", "fasttext-wheel", "fasttext")
TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": "1",
          "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}

# Runs the real CLI entry point (as the `kdedge-run` console script does), then reports which
# top-level modules the process imported, on stderr.
CLI_IMPORT_CHECK = r"""
import sys
sys.argv = ["kdedge-run"] + sys.argv[1:]
from kdedge_run.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
import json
top = sorted(m for m in {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
             if not m.startswith(("__", "_distutils_hack")))
sys.stdout.flush()
print("KDEDGE_BENCH " + json.dumps({"code": code, "modules": top}), file=sys.stderr)
"""

# Cold-start breakdown of the runtime, by phase, in a fresh process (uses kdedge_run internals).
COLD_PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
out = {}
bundle_path, backend, text = sys.argv[1:4]
import kdedge_run
out["import kdedge_run (lazy)"] = time.perf_counter() - t0
t = time.perf_counter(); import numpy; out["import numpy"] = time.perf_counter() - t
t = time.perf_counter(); import jieba; out["import jieba"] = time.perf_counter() - t
mod = "onnxruntime" if backend == "onnx" else "ai_edge_litert.interpreter"
t = time.perf_counter(); __import__(mod); out["import backend library"] = time.perf_counter() - t
t = time.perf_counter(); import click; out["import click"] = time.perf_counter() - t
t = time.perf_counter()
import kdedge_run.cli, kdedge_run.classifier
from kdedge_run import bundle as B
out["import kdedge_run modules"] = time.perf_counter() - t
names = {"_check_files": "verify files (SHA-256)", "_read_vocab": "read vocab",
         "_read_vectors": "read vectors", "_read_segmenter": "build jieba segmenter"}
for fn, label in names.items():
    orig = getattr(B, fn, None)
    if orig is None:
        continue
    def timed(*a, _orig=orig, _label=label, **k):
        t = time.perf_counter()
        try:
            return _orig(*a, **k)
        finally:
            out[_label] = out.get(_label, 0.0) + time.perf_counter() - t
    setattr(B, fn, timed)
t = time.perf_counter(); clf = kdedge_run.load(bundle_path, backend=backend, threads=1)
out["load() total"] = time.perf_counter() - t
t = time.perf_counter(); clf.predict(text); out["first predict"] = time.perf_counter() - t
t = time.perf_counter(); clf.predict(text); out["second predict"] = time.perf_counter() - t
out["total in process"] = time.perf_counter() - t0
print(json.dumps(out))
"""

# A process that loads the Keras model and predicts once (for its peak RSS and wall time).
KERAS_ONCE = r"""
import sys
import numpy as np
import keras
import kdedge.models  # registers the custom layers
model = keras.models.load_model(sys.argv[1], compile=False)
ids = np.load(sys.argv[2])[:1].astype("int32")
model.predict(ids, verbose=0)
"""


# ----------------------------------------------------------------------------------------- helpers

def ns() -> int:
    return time.perf_counter_ns()


def summary(ns_values) -> dict:
    """Latencies in ns -> p50/p99/mean in ms."""
    a = np.asarray(ns_values, dtype=np.float64) / 1e6
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean())}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    cpu, flags, mhz = platform.processor() or "?", set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and cpu in ("?", platform.processor()):
                cpu = value
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem_gb = round(kb / 1024 ** 2, 1)
    except (OSError, AttributeError):
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return {
        "cpu": cpu, "mhz": mhz, "simd": simd, "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": mem_gb, "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {p: v for p in PACKAGES if (v := version(p))},
        "loadavg_start": list(os.getloadavg()),
    }


def read_records(path: Path) -> list[dict]:
    """JSON Lines with "text" (and "labels"), or plain text lines."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line) if line.startswith("{") else {"text": line}
            if isinstance(rec.get("text"), str) and rec["text"].strip():
                records.append({"text": rec["text"], "labels": list(rec.get("labels") or [])})
    if not records:
        raise SystemExit(f"bench: no texts in {path}")
    return records


def run(cmd, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(map(str, cmd))} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return r


def wall(cmd, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = run(cmd, env=env)
    return time.perf_counter() - t, r


def cold_start(cmd, runs: int, env=None) -> dict:
    """Median wall time of `runs` fresh processes (after one unmeasured run to warm the page cache)."""
    _, first = wall(cmd, env)
    times = [wall(cmd, env)[0] for _ in range(runs)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs,
            "stdout": first.stdout.strip()}


def peak_rss_mb(cmd, env=None) -> dict:
    """Peak RSS of one run of `cmd`: /usr/bin/time -v if present, else getrusage(RUSAGE_CHILDREN)."""
    if Path("/usr/bin/time").exists():
        r = run(["/usr/bin/time", "-v", *cmd], env=env)
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", r.stderr)
        w = re.search(r"Elapsed \(wall clock\) time.*?:\s*([\d:.]+)", r.stderr)
        if m:
            return {"rss_mb": int(m.group(1)) / 1024, "method": "/usr/bin/time -v",
                    "wall": w.group(1) if w else None}
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print('KDEDGE_RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    r = run([sys.executable, "-c", wrapper, *cmd], env=env)
    kb = int(re.search(r"KDEDGE_RSS (\d+)", r.stderr).group(1))
    return {"rss_mb": kb / 1024, "method": "getrusage(RUSAGE_CHILDREN)", "wall": None}


def du_bytes(path: Path) -> int:
    return int(run(["du", "-sb", path]).stdout.split()[0])


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages under {venv}")
    return found[0]


def kdedge_run_cmd(bindir: Path | None = None) -> list[str]:
    """The `kdedge-run` console script next to the interpreter (or on PATH)."""
    exe = (bindir or Path(sys.executable).parent) / "kdedge-run"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("kdedge-run") if bindir is None else None
    return [found] if found else [sys.executable, "-m", "kdedge_run"]


def probs_matrix(preds, labels) -> np.ndarray:
    return np.array([[p.probabilities[lab] for lab in labels] for p in preds], dtype=np.float64)


# ----------------------------------------------------------------------------------------- runtime

def bench_backend(bundle: Path, backend: str, texts: list[str], warmup: int) -> dict:
    import kdedge_run

    t = time.perf_counter()
    clf = kdedge_run.load(bundle, backend=backend, threads=1)
    load_s = time.perf_counter() - t
    for text in (texts * (warmup // len(texts) + 1))[:warmup]:
        clf.predict(text)
    clf.predict(texts[:BATCH])

    gc.collect()
    lat, preds = [], []
    start = ns()
    for text in texts:
        a = ns()
        preds.append(clf.predict(text))
        lat.append(ns() - a)
    b1_s = (ns() - start) / 1e9

    gc.collect()
    blat = []
    start = ns()
    for i in range(0, len(texts), BATCH):
        a = ns()
        clf.predict(texts[i:i + BATCH])
        blat.append(ns() - a)
    b64_s = (ns() - start) / 1e9

    entry = next((m for m in clf.info()["models"] if m["format"] == backend), {})
    out = {"backend": backend, "precision": entry.get("precision"), "model_bytes": entry.get("bytes"),
           "load_s": load_s, "latency": summary(lat),
           "throughput_b1": len(texts) / b1_s, "throughput_b64": len(texts) / b64_s,
           "batch64_call": summary(blat), "labels": clf.labels,
           "probs": probs_matrix(preds, clf.labels), "truncated": sum(p.truncated for p in preds)}
    out["stages"] = stage_breakdown(clf, texts)
    return out


def stage_breakdown(clf, texts: list[str]) -> dict | None:
    """Per-text p50 of each stage of predict (uses Classifier internals; None if they changed)."""
    try:
        bundle, backend = clf._bundle, clf._backend
        pre = bundle.preprocessor
        from kdedge_run.text import normalise
        parts = {k: [] for k in ("normalise + convert", "segment (jieba)", "ids", "embed (vectors)",
                                 "model run", "predict() total", "predict() minus stages")}
        for text in texts:
            a = ns()
            norm = normalise(text)
            if pre.convert is not None:
                norm = pre.convert(norm)
            b = ns()
            tokens = [t for t in (tok.strip() for tok in pre.tokenizer.tokenize(norm)) if t]
            c = ns()
            ids = pre.ids(tokens)[0][None]
            d = ns()
            x = bundle.embed(ids)
            e = ns()
            backend.run(x)
            f = ns()
            clf.predict(text)
            g = ns()
            for key, v in zip(parts, (b - a, c - b, d - c, e - d, f - e, g - f)):
                parts[key].append(v)
            parts["predict() minus stages"].append((g - f) - (f - a))
        return {k: float(np.median(v)) / 1e6 for k, v in parts.items()}
    except Exception as e:  # internals are not API: report, do not fail the benchmark
        log(f"stage breakdown skipped: {type(e).__name__}: {e}")
        return None


def segmentation_p50(bundle: Path, texts: list[str]) -> dict:
    import kdedge_run

    clf = kdedge_run.load(bundle, threads=1)
    for text in texts[:100]:
        clf.tokenize(text)
    lat = []
    for text in texts:
        a = ns()
        clf.tokenize(text)
        lat.append(ns() - a)
    return summary(lat)


def keras_ids(bundle: Path, run_dir: Path, texts: list[str]) -> tuple[np.ndarray, bool]:
    """Runtime segmentation (clf.tokenize) -> ids with the run's vocab and input spec."""
    import kdedge_run
    from kdedge_run.text import tokens_to_ids

    clf = kdedge_run.load(bundle, threads=1)
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    lines = (run_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {tok: i for i, tok in enumerate(lines)}
    ids = np.stack([tokens_to_ids(clf.tokenize(t), vocab, cfg["input"])[0] for t in texts])
    same_vocab = (run_dir / "vocab.txt").read_bytes() == (Path(clf.path) / "vocab.txt").read_bytes()
    return ids.astype(np.int32), same_vocab


def keras_model_path(bundle: Path, run_dir: Path) -> Path:
    kind = json.loads((bundle / "manifest.json").read_text(encoding="utf-8")).get("model_kind", "kd")
    for name in (f"{kind}.keras", "kd.keras", "student.keras"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise SystemExit(f"bench: no {kind}.keras / kd.keras / student.keras in {run_dir}")


# ------------------------------------------------------------------------- Keras (worker process)

def worker_keras(args) -> None:
    """Runs in its own process: Keras model.predict / tf.function latencies and throughput."""
    for k, v in TF_ENV.items():
        os.environ.setdefault(k, v)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import kdedge.models  # noqa: F401  (registers custom layers)

    model = keras.models.load_model(args.model_file, compile=False)
    ids = np.load(args.ids)
    n, kn = len(ids), min(args.keras_n, len(ids))

    def logits_of(out):
        out = out["logits"] if isinstance(out, dict) else out
        return np.asarray(out)

    for i in range(10):
        model.predict(ids[i % n:i % n + 1], verbose=0)
    gc.collect()
    lat, logits = [], []
    for i in range(kn):
        a = ns()
        out = model.predict(ids[i:i + 1], verbose=0)
        lat.append(ns() - a)
        logits.append(logits_of(out)[0])

    spec = tf.TensorSpec([None, *ids.shape[1:]], tf.int32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    for i in range(20):
        logits_of(fn(ids[i % n:i % n + 1]))
    gc.collect()
    flat = []
    for i in range(n):
        a = ns()
        logits_of(fn(ids[i:i + 1]))
        flat.append(ns() - a)

    model.predict(ids[:BATCH], batch_size=BATCH, verbose=0)
    start = ns()
    for i in range(0, n, BATCH):
        model.predict(ids[i:i + BATCH], batch_size=BATCH, verbose=0)
    pred64 = n / ((ns() - start) / 1e9)
    start = ns()
    for i in range(0, n, BATCH):
        logits_of(fn(ids[i:i + BATCH]))
    fn64 = n / ((ns() - start) / 1e9)

    result = {"model_file": str(args.model_file), "tensorflow": tf.__version__, "keras": keras.__version__,
              "predict": summary(lat), "tf_function": summary(flat),
              "predict_b1_throughput": kn / (sum(lat) / 1e9), "tf_function_b1_throughput": n / (sum(flat) / 1e9),
              "predict_b64_throughput": pred64, "tf_function_b64_throughput": fn64,
              "logits": np.stack(logits).tolist()}
    Path(args.json_out).write_text(json.dumps(result), encoding="utf-8")


def bench_keras(args, bundle: Path, run_dir: Path, texts: list[str], tmp: Path, runtime: dict) -> dict:
    model_file = keras_model_path(bundle, run_dir)
    ids, same_vocab = keras_ids(bundle, run_dir, texts)
    ids_file, json_out = tmp / "ids.npy", tmp / "keras.json"
    np.save(ids_file, ids)
    env = {**os.environ, **TF_ENV}
    log(f"Keras: {model_file.name}, model.predict on {min(args.keras_n, len(texts))} texts, "
        f"tf.function on {len(texts)}")
    run([sys.executable, __file__, "--worker", "keras", "--model-file", model_file, "--ids", ids_file,
         "--keras-n", args.keras_n, "--json-out", json_out], env=env, timeout=3600)
    res = json.loads(json_out.read_text(encoding="utf-8"))
    res["same_vocab"] = same_vocab
    # Same model and inputs? Keras probabilities vs each backend's, on the texts Keras predicted.
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    temps = np.asarray(manifest["calibration"]["temperatures"], dtype=np.float64)
    thresholds = np.asarray(manifest["thresholds"], dtype=np.float64)
    kp = 1 / (1 + np.exp(-np.asarray(res.pop("logits"), dtype=np.float64) / temps))
    res["parity"] = {}
    for name, r in runtime.items():
        rp = r["probs"][:len(kp)]
        res["parity"][name] = {"max_abs_dp": float(np.abs(rp - kp).max()),
                               "flipped": int(((rp >= thresholds) != (kp >= thresholds)).sum()),
                               "decisions": int(kp.size)}
    log("Keras: peak RSS / wall of a process that loads the model and predicts once")
    cmd = [sys.executable, "-c", KERAS_ONCE, model_file, ids_file]
    res["once_wall_s"] = wall(cmd, env)[0]
    res["once_rss"] = peak_rss_mb(cmd, env)
    return res


# ----------------------------------------------------------------------------------------- fastText

def bench_fasttext(records: list[dict], texts: list[str], tmp: Path, warmup: int) -> dict:
    import logging

    import fasttext
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tk = jieba.Tokenizer()
    tk.initialize()

    def segment(text: str) -> str:
        return " ".join(w for w in (t.strip() for t in tk.cut(text)) if w)

    train = tmp / "fasttext_train.txt"
    t = time.perf_counter()
    with open(train, "w", encoding="utf-8") as f:
        for rec in records:
            if rec["labels"]:
                f.write(" ".join(f"__label__{lab}" for lab in rec["labels"]) + " " + segment(rec["text"]) + "\n")
    seg_s = time.perf_counter() - t
    t = time.perf_counter()
    model = fasttext.train_supervised(input=str(train), loss="ova", epoch=5, thread=1, verbose=0, seed=0)
    train_s = time.perf_counter() - t

    def predict(text: str):  # model.predict is broken under numpy 2; the C++ binding is not
        return model.f.predict(segment(text) + "\n", -1, 0.5, "strict")

    for text in (texts * (warmup // len(texts) + 1))[:warmup]:
        predict(text)
    gc.collect()
    lat, seg, mdl = [], [], []
    for text in texts:
        a = ns()
        predict(text)
        lat.append(ns() - a)
    for text in texts:
        a = ns()
        line = segment(text) + "\n"
        b = ns()
        model.f.predict(line, -1, 0.5, "strict")
        c = ns()
        seg.append(b - a)
        mdl.append(c - b)
    return {"latency": summary(lat), "segment": summary(seg), "model": summary(mdl),
            "throughput_b1": len(texts) / (sum(lat) / 1e9), "train_texts": sum(1 for r in records if r["labels"]),
            "train_s": train_s, "train_segment_s": seg_s, "fasttext": version("fasttext-wheel") or version("fasttext")}


# ----------------------------------------------------------------------------- cold start and memory

def bench_cold(bundle: Path, backends: list[str], runs: int, tf_runs: int, has_tf: bool) -> dict:
    cli = kdedge_run_cmd()
    out = {"cli": shlex.join(cli), "backends": {}}
    log("cold start: python -c pass")
    out["python_pass"] = cold_start([sys.executable, "-c", "pass"], runs)
    for b in backends:
        cmd = [*cli, "predict", COLD_TEXT, "--model", bundle, "--backend", b]
        log(f"cold start: kdedge-run predict --backend {b} x{runs}")
        r = cold_start(cmd, runs)
        r["rss"] = peak_rss_mb(cmd)
        chk = run([sys.executable, "-c", CLI_IMPORT_CHECK, "predict", COLD_TEXT, "--model", bundle, "--backend", b])
        info = json.loads(re.search(r"KDEDGE_BENCH (.*)", chk.stderr).group(1))
        r["modules"] = info["modules"]
        r["heavy_imported"] = sorted(m for m in info["modules"] if m in HEAVY)
        r["phases"] = cold_phases(bundle, b)
        out["backends"][b] = r
    if has_tf:
        log(f"cold start: python -c 'import tensorflow' x{tf_runs}")
        out["import_tensorflow"] = cold_start([sys.executable, "-c", "import tensorflow"], tf_runs,
                                              env={**os.environ, **TF_ENV})
    return out


def cold_phases(bundle: Path, backend: str, runs: int = 3) -> dict | None:
    """Median per-phase seconds of the runtime's cold start in fresh processes."""
    try:
        samples = [json.loads(run([sys.executable, "-c", COLD_PHASES, bundle, backend, COLD_TEXT])
                              .stdout.strip().splitlines()[-1]) for _ in range(runs)]
        return {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    except Exception as e:
        log(f"cold-start phases skipped ({backend}): {type(e).__name__}: {e}")
        return None


# ---------------------------------------------------------------------------------- installed size

def bench_venvs(bundle: Path, backends: list[str], tmp: Path, runs: int) -> dict:
    base = tmp / "venv-bare"
    log("venvs: bare venv")
    run([sys.executable, "-m", "venv", base])
    bare = du_bytes(site_packages(base))
    training_sp = Path(sysconfig.get_paths()["purelib"])
    out = {"bare_bytes": bare, "training_site_packages": str(training_sp),
           "training_bytes": du_bytes(training_sp) - bare, "venvs": {}}
    for name, spec in (("onnx", str(REPO / "runtime")), ("tflite", f"{REPO / 'runtime'}[tflite]")):
        venv = tmp / f"venv-{name}"
        log(f"venvs: pip install {spec}")
        run([sys.executable, "-m", "venv", venv])
        t = time.perf_counter()
        run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
            timeout=1800)
        install_s = time.perf_counter() - t
        sp = site_packages(venv)
        pkgs = json.loads(run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json",
                               "--disable-pip-version-check"]).stdout)
        r = {"spec": spec.replace(str(REPO), "<repo>"), "bytes": du_bytes(sp) - bare, "install_s": install_s,
             "kdedge_run_bytes": du_bytes(sp / "kdedge_run") if (sp / "kdedge_run").exists() else None,
             "packages": {p["name"]: p["version"] for p in pkgs if p["name"] not in ("pip", "setuptools")},
             "largest": largest_dirs(sp, 5)}
        backend = name if name in backends else None
        if backend:  # the clean install predicts, and how fast it starts
            cmd = [*kdedge_run_cmd(venv / "bin"), "predict", COLD_TEXT, "--model", bundle, "--backend", backend]
            r["cold"] = cold_start(cmd, runs)
            r["rss"] = peak_rss_mb(cmd)
        out["venvs"][name] = r
    return out


def largest_dirs(sp: Path, k: int) -> list[tuple[str, int]]:
    sizes = [(p.name, du_bytes(p)) for p in sp.iterdir()
             if p.is_dir() and not p.name.endswith("-info") and p.name not in BARE_VENV_DIRS]
    return sorted(sizes, key=lambda x: -x[1])[:k]


# ----------------------------------------------------------------------------------------- report

def fmt_ms(x) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_mb(b) -> str:
    return "—" if b is None else f"{b / 1e6:.1f} MB"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("PASS" if ok else "FAIL")


def build_tables(R: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Named tables (header, rows), rendered both as text and as markdown."""
    T = {}
    rt, keras, ft, cold, venvs = R["runtime"], R.get("keras"), R.get("fasttext"), R.get("cold"), R.get("venvs")
    rows = []
    for b, r in rt.items():
        lat = r["latency"]
        rows.append([f"kdedge_run {b} ({r['precision']})", "text", fmt_ms(lat["p50_ms"]), fmt_ms(lat["p99_ms"]),
                     f"{r['throughput_b1']:,.0f}", f"{r['throughput_b64']:,.0f}"])
    seg = R["segmentation"]
    rows.append(["kdedge_run segmentation only", "text", fmt_ms(seg["p50_ms"]), fmt_ms(seg["p99_ms"]), "", ""])
    if keras:
        rows.append(["Keras model.predict", "ids", fmt_ms(keras["predict"]["p50_ms"]),
                     fmt_ms(keras["predict"]["p99_ms"]), f"{keras['predict_b1_throughput']:,.0f}",
                     f"{keras['predict_b64_throughput']:,.0f}"])
        rows.append(["Keras tf.function(model(x, training=False))", "ids", fmt_ms(keras["tf_function"]["p50_ms"]),
                     fmt_ms(keras["tf_function"]["p99_ms"]), f"{keras['tf_function_b1_throughput']:,.0f}",
                     f"{keras['tf_function_b64_throughput']:,.0f}"])
    if ft:
        rows.append(["fastText ova (jieba + predict)", "text", fmt_ms(ft["latency"]["p50_ms"]),
                     fmt_ms(ft["latency"]["p99_ms"]), f"{ft['throughput_b1']:,.0f}", ""])
        rows.append(["fastText model only", "tokens", fmt_ms(ft["model"]["p50_ms"]), fmt_ms(ft["model"]["p99_ms"]), "", ""])
    T["latency"] = (["pipeline (single thread)", "input", "p50 ms", "p99 ms", "texts/s batch 1", "texts/s batch 64"], rows)

    rows = []
    for b, r in rt.items():
        if keras:
            rows.append([f"Keras model.predict p50 / {b} p50", f"{keras['predict']['p50_ms'] / r['latency']['p50_ms']:,.0f}×"])
            rows.append([f"tf.function p50 / {b} p50", f"{keras['tf_function']['p50_ms'] / r['latency']['p50_ms']:,.1f}×"])
            rows.append([f"{b} batch-64 throughput / Keras predict batch-64",
                         f"{r['throughput_b64'] / keras['predict_b64_throughput']:,.1f}×"])
        if ft:
            rows.append([f"{b} p50 / fastText p50 (>1: runtime slower)",
                         f"{r['latency']['p50_ms'] / ft['latency']['p50_ms']:,.2f}×"])
    T["ratios"] = (["ratio", "value"], rows)

    stages = [(b, r["stages"]) for b, r in rt.items() if r.get("stages")]
    if stages:
        keys = list(stages[0][1])
        T["stages"] = (["stage (p50 ms per text)", *[b for b, _ in stages]],
                       [[k, *[fmt_ms(s[k]) for _, s in stages]] for k in keys])

    if cold:
        pp = cold["python_pass"]
        rows = [["python -c pass", f"{pp['median_s']:.3f}", f"{pp['min_s']:.3f}–{pp['max_s']:.3f}", "—"]]
        for b, r in cold["backends"].items():
            rows.append([f"kdedge-run predict --backend {b}", f"{r['median_s']:.3f}",
                         f"{r['min_s']:.3f}–{r['max_s']:.3f}", f"{r['rss']['rss_mb']:.0f}"])
        if venvs:
            for name, v in venvs["venvs"].items():
                if v.get("cold"):
                    rows.append([f"same, clean venv ({name} install)", f"{v['cold']['median_s']:.3f}",
                                 f"{v['cold']['min_s']:.3f}–{v['cold']['max_s']:.3f}", f"{v['rss']['rss_mb']:.0f}"])
        if cold.get("import_tensorflow"):
            it = cold["import_tensorflow"]
            rows.append(['python -c "import tensorflow"', f"{it['median_s']:.3f}", f"{it['min_s']:.3f}–{it['max_s']:.3f}", "—"])
        if keras:
            rows.append(["load Keras model + predict once", f"{keras['once_wall_s']:.3f}", "(1 run)",
                         f"{keras['once_rss']['rss_mb']:.0f}"])
        T["cold"] = (["fresh process", "median wall s", "min–max s", "peak RSS MB"], rows)
        phase_cols = [(b, r["phases"]) for b, r in cold["backends"].items() if r.get("phases")]
        if phase_cols:
            keys = list(dict.fromkeys(k for _, p in phase_cols for k in p))
            T["phases"] = (["cold-start phase (median s, in process)", *[b for b, _ in phase_cols]],
                           [[k, *[(f"{p[k]:.3f}" if k in p else "—") for _, p in phase_cols]] for k in keys])

    if venvs:
        rows = []
        for name, v in venvs["venvs"].items():
            rows.append([f"pip install {v['spec']}", fmt_mb(v["bytes"]), fmt_mb(v["kdedge_run_bytes"]),
                         f"{venvs['training_bytes'] / v['bytes']:.1f}×"])
        rows.append([f"training venv ({venvs['training_site_packages']})", fmt_mb(venvs["training_bytes"]), "", "1×"])
        T["size"] = (["environment (site-packages minus a bare venv)", "size", "of which kdedge_run", "training / this"], rows)

    rows = []
    for b, r in rt.items():
        p50 = r["latency"]["p50_ms"]
        rows.append([f"text→labels p50 ≤ {TARGETS['p50_ms']} ms ({b})", f"{p50:.3f} ms", verdict(p50 <= TARGETS["p50_ms"])])
    for b, r in rt.items():
        if keras:
            s = keras["predict"]["p50_ms"] / r["latency"]["p50_ms"]
            rows.append([f"≥ {TARGETS['keras_speedup']:.0f}× faster than Keras model.predict ({b})", f"{s:,.0f}×",
                         verdict(s >= TARGETS["keras_speedup"])])
        else:
            rows.append([f"≥ {TARGETS['keras_speedup']:.0f}× faster than Keras model.predict ({b})", "—", verdict(None)])
    for b in rt:
        c = cold["backends"].get(b) if cold else None
        rows.append([f"cold CLI ≤ {TARGETS['cold_s']} s ({b})", f"{c['median_s']:.3f} s" if c else "—",
                     verdict(c["median_s"] <= TARGETS["cold_s"] if c else None)])
    for b in rt:
        c = cold["backends"].get(b) if cold else None
        rows.append([f"peak RSS ≤ {TARGETS['rss_mb']:.0f} MB ({b} CLI)", f"{c['rss']['rss_mb']:.0f} MB" if c else "—",
                     verdict(c["rss"]["rss_mb"] <= TARGETS["rss_mb"] if c else None)])
    for name in ("onnx", "tflite"):
        v = venvs["venvs"].get(name) if venvs else None
        ratio = venvs["training_bytes"] / v["bytes"] if v else None
        rows.append([f"runtime venv ≥ {TARGETS['venv_ratio']:.0f}× smaller than training ({name})",
                     f"{ratio:.1f}×" if v else "—", verdict(ratio >= TARGETS["venv_ratio"] if v else None)])
    if cold:
        heavy = sorted({m for r in cold["backends"].values() for m in r["heavy_imported"]})
        rows.append(["runtime process never imports TensorFlow", ", ".join(heavy) or "none imported",
                     verdict(not heavy)])
    T["targets"] = (["target", "measured", "result"], rows)
    return T


def render_text(header, rows) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render_md(header, rows) -> str:
    esc = lambda c: str(c).replace("|", "\\|")
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


TITLES = {"targets": "Targets", "latency": "Latency and throughput", "ratios": "Ratios",
          "stages": "Where the runtime's time goes (per text, batch 1)",
          "cold": "Cold start and peak memory", "phases": "Cold start of the runtime, by phase",
          "size": "Installed size"}


def print_report(R: dict, T: dict) -> None:
    m = R["machine"]
    print(f"\nkdedge runtime benchmark — {m['cpu']}, {m['cores']} cores, {m['python']}, "
          f"load avg {m['loadavg_start'][0]:.2f} at start / {R['loadavg_end'][0]:.2f} at end")
    print(f"bundle {R['bundle']}  texts {R['n_texts']} from {R['texts_file']}")
    for key in ("targets", "latency", "ratios", "stages", "cold", "phases", "size"):
        if key in T:
            print(f"\n{TITLES[key]}\n{render_text(*T[key])}")
    print()


def markdown(R: dict, T: dict, note: str | None) -> str:
    m = R["machine"]
    md = ["# Runtime benchmarks", ""]
    if note:
        md += [f"> **{note}**", ""]
    md += ["Generated by `bench/bench_runtime.py` (one run, single thread, on the machine below). This run:", "",
           "```", R["rerun"], "```", "",
           "For the default bundle (`models/default`) against its training run, on an idle machine:", "",
           "```", "python bench/bench_runtime.py --run RUN_DIR --out docs/benchmarks.md", "```", "",
           "## Machine", "",
           f"- CPU: {m['cpu']}" + (f" ({m['mhz']:.0f} MHz" if m.get("mhz") else " (") +
           (f", {', '.join(m['simd'])}" if m["simd"] else "") + ")",
           f"- cores: {m['cores']} (usable by this process: {m['usable_cores']}); memory {m['memory_gb']} GB",
           f"- load average (1 min) at start / end: {m['loadavg_start'][0]:.2f} / {R['loadavg_end'][0]:.2f}",
           f"- OS: {m['os']}", f"- Python: {m['python']}",
           "- packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()), "",
           "## Setup", "",
           f"- bundle: `{R['bundle']}` — {R['bundle_desc']}",
           "- Keras reference: " + (f"`{R['keras']['model_file']}`" if R.get("keras") else "not measured (no --run)"),
           f"- texts: first {R['n_texts']} of `{R['texts_file']}` (mean {R['mean_chars']:.0f} characters; "
           f"{R['runtime'][next(iter(R['runtime']))]['truncated']} longer than the model input)",
           f"- warm-up: {R['warmup']} predictions per backend before timing; every backend and Keras at 1 thread", ""]
    for key in ("targets", "latency", "ratios", "stages", "cold", "phases", "size"):
        if key in T:
            md += [f"## {TITLES[key]}", "", render_md(*T[key]), ""]
            md += NOTES.get(key, lambda R: [])(R)
    return "\n".join(md).rstrip() + "\n"


def _notes_latency(R):
    k = R.get("keras")
    out = ["- Runtime rows: `clf.predict(text)` end to end (normalise, t2s, jieba, ids, vectors, model, "
           "calibration, thresholds), one text per call; batch 64 is `clf.predict(list_of_64)` "
           "(the TFLite backend runs batch 1 inside, one invoke per text).",
           "- Keras rows take the ids only (segmentation excluded, which favours Keras): the ids are the "
           "runtime's segmentation mapped with the run's vocabulary"
           + (" (identical to the bundle's)" if k and k.get("same_vocab") else "") + ". Batch 64 is "
           "`model.predict(ids_64, batch_size=64)` resp. the `tf.function` on 64 rows.",
           "- fastText: `loss=\"ova\"`, 5 epochs, trained on the jieba tokens (default jieba dictionary, no "
           "t2s) of every labelled text of the texts file; its latency includes that segmentation, "
           "prediction is `model.f.predict(line, -1, 0.5, \"strict\")`."]
    if k and k.get("parity"):
        out.append("- Same model? Keras vs runtime probabilities on the texts Keras predicted: " + "; ".join(
            f"{b}: max |Δp| {p['max_abs_dp']:.4f}, {p['flipped']} of {p['decisions']} decisions flipped"
            for b, p in k["parity"].items()) + ".")
    return out + [""]


def _notes_stages(R):
    return ["- Medians per stage, measured separately on the same texts (Classifier internals); "
            "\"predict() minus stages\" is the per-text median of one `predict(text)` minus the stages "
            "timed just before it on the same text: the per-call overhead (argument checks, calibration, "
            "Prediction objects); it is noisy when the model stage is.", ""]


def _notes_cold(R):
    c = R["cold"]
    tf_runs = c.get("import_tensorflow", {}).get("runs")
    out = [f"- `{c['cli']} predict \"{COLD_TEXT}\" --model BUNDLE --backend B`: median of "
           f"{next(iter(c['backends'].values()))['runs']} fresh processes after one unmeasured run "
           "(page cache warm)." + (f" `import tensorflow`: median of {tf_runs}." if tf_runs else ""),
           "- Peak RSS by " + next(iter(c["backends"].values()))["rss"]["method"] + ". The Keras process "
           "loads the run's `.keras` model and calls `model.predict` once on one text's ids.",
           "- Modules the CLI process imported (third-party, top level): " + "; ".join(
               f"{b}: {', '.join(r['modules'])}" for b, r in c["backends"].items()) + ".",
           "- CLI output (labels): " + "; ".join(f"{b}: {cli_labels(r['stdout'])}" for b, r in c["backends"].items())]
    return [x for x in out if x] + [""]


def cli_labels(stdout: str) -> str:
    try:
        return ", ".join(json.loads(stdout.splitlines()[0])["labels"]) or "(none)"
    except (ValueError, KeyError, IndexError):
        return stdout[:200]


def _notes_size(R):
    v = R["venvs"]
    out = ["- Fresh venvs in a temporary directory (`python -m venv`, then `pip install`); size is `du -sb` of "
           f"site-packages minus that of a bare venv ({v['bare_bytes'] / 1e6:.1f} MB: pip, setuptools); "
           "the training venv is measured the same way."]
    for name, x in v["venvs"].items():
        out.append(f"- `{name}` venv packages: " + ", ".join(f"{k} {ver}" for k, ver in sorted(x["packages"].items()))
                   + "; largest: " + ", ".join(f"{d} {s / 1e6:.1f} MB" for d, s in x["largest"]
                                               if d not in BARE_VENV_DIRS))
    return out + [""]


NOTES = {"latency": _notes_latency, "stages": _notes_stages, "cold": _notes_cold, "size": _notes_size}


# ----------------------------------------------------------------------------------------- main

def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle directory (default: models/default)")
    p.add_argument("--run", type=Path, default=None, help="training run dir: Keras reference (optional)")
    p.add_argument("--texts", type=Path, default=DEFAULT_TEXTS,
                   help="JSONL with text/labels (default: ../shared/data/healthner9/texts.jsonl)")
    p.add_argument("--n", type=int, default=1000, help="texts to time (the first N)")
    p.add_argument("--keras-n", type=int, default=1000, help="texts for Keras model.predict batch 1 (slow)")
    p.add_argument("--warmup", type=int, default=100, help="untimed predictions per backend")
    p.add_argument("--cold-runs", type=int, default=7, help="fresh CLI processes per backend")
    p.add_argument("--tf-runs", type=int, default=3, help="fresh `import tensorflow` processes")
    p.add_argument("--out", type=Path, default=None, help="write markdown here (e.g. docs/benchmarks.md)")
    p.add_argument("--json", type=Path, default=None, help="write raw results as JSON here")
    p.add_argument("--note", default=None, help="banner line at the top of the markdown")
    p.add_argument("--skip-venv", action="store_true", help="skip the installed-size venvs (about a minute)")
    p.add_argument("--skip-fasttext", action="store_true")
    p.add_argument("--cpu", type=int, default=None, help="pin this process and its children to one CPU")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only re-render the table/markdown of a result saved with --json (no measuring)")
    # internal: the Keras worker process
    p.add_argument("--worker", choices=["keras"], help=argparse.SUPPRESS)
    p.add_argument("--model-file", help=argparse.SUPPRESS)
    p.add_argument("--ids", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker == "keras":
        worker_keras(args)
        return
    if args.render:
        R = json.loads(args.render.read_text(encoding="utf-8"))
        T = build_tables(R)
        print_report(R, T)
        if args.out:
            args.out.write_text(markdown(R, T, args.note), encoding="utf-8")
            log(f"wrote {args.out}")
        return
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    bundle = args.bundle.resolve()
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"bench: {bundle} is not a bundle (no manifest.json); pass --bundle")
    run_dir = args.run.resolve() if args.run else None
    if run_dir and not (run_dir / "config.json").is_file():
        raise SystemExit(f"bench: {run_dir} is not a training run dir (no config.json)")
    records = read_records(args.texts)
    texts = [r["text"] for r in records[:args.n]]
    R = {"machine": machine(), "bundle": str(bundle), "texts_file": str(args.texts.resolve()),
         "n_texts": len(texts), "warmup": args.warmup, "mean_chars": float(np.mean([len(t) for t in texts]))}
    rerun = ["python", "bench/bench_runtime.py", "--bundle", str(args.bundle)]
    if args.run:
        rerun += ["--run", str(args.run)]
    if args.texts != DEFAULT_TEXTS:
        rerun += ["--texts", str(args.texts)]
    if args.n != 1000:
        rerun += ["--n", str(args.n)]
    rerun += ["--out", str(args.out or "docs/benchmarks.md")]
    R["rerun"] = shlex.join(rerun)

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    formats = [m["format"] for m in manifest["models"]]
    from kdedge_run.backends import available
    backends = [b for b in ("onnx", "tflite") if b in formats and available(b)]
    if not backends:
        raise SystemExit(f"bench: no usable backend for {bundle} (models: {formats})")
    for b in formats:
        if b not in backends:
            log(f"backend {b}: its library is not installed here, skipped")
    R["bundle_desc"] = (f"{manifest.get('architecture')} ({manifest.get('model_kind')}), "
                        f"{len(manifest['labels'])} labels, vectors {manifest['embeddings'].get('dtype')}, "
                        "models " + ", ".join(f"{m['format']} {m.get('precision')} "
                                              f"{manifest['files'][m['file']]['bytes'] / 1e3:.0f} kB"
                                              for m in manifest["models"]))

    R["runtime"] = {}
    for b in backends:
        log(f"runtime {b}: {len(texts)} texts, batch 1 and batch {BATCH}")
        R["runtime"][b] = bench_backend(bundle, b, texts, args.warmup)
    R["segmentation"] = segmentation_p50(bundle, texts)
    if "tensorflow" in sys.modules:
        raise SystemExit("bench: tensorflow was imported into the runtime benchmark process")

    with tempfile.TemporaryDirectory(prefix="kdedge-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_fasttext:
            try:
                log("fastText: train (ova, 5 epochs) and time")
                R["fasttext"] = bench_fasttext(records, texts, tmp, args.warmup)
            except ImportError as e:
                log(f"fastText skipped: {e}")
        if run_dir:
            R["keras"] = bench_keras(args, bundle, run_dir, texts, tmp, R["runtime"])
        R["cold"] = bench_cold(bundle, backends, args.cold_runs, args.tf_runs, version("tensorflow") is not None)
        if not args.skip_venv:
            R["venvs"] = bench_venvs(bundle, backends, tmp, args.cold_runs)
    R["loadavg_end"] = list(os.getloadavg())

    T = build_tables(R)
    print_report(R, T)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(R, T, args.note), encoding="utf-8")
        log(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps(jsonable(R), ensure_ascii=False, indent=1), encoding="utf-8")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
