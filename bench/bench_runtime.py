#!/usr/bin/env python
"""Benchmark the kdedge runtime (`kdedge_run`) on a bundle of format 1 or 2, single thread, in one run.

  * `clf.predict(text)` latency p50/p99 and throughput at batch 1 and 64, per backend in the bundle, and where
    a text's time goes (the bundle's own stages, through the runtime's public loader and backend);
  * baselines measured in the same run: fastText (`loss="ova"`, jieba tokens) when installed, and with
    `--run RUN_DIR` the run's Keras model (`model.predict`, a `tf.function`) in its own process, with the
    runtime's agreement with it (`kdedge_export.parity.compare`);
  * fresh processes: `python -c pass`, the `kdedge-run predict` CLI (wall time, peak RSS, the modules it
    imported), the runtime's cold start by phase, `import tensorflow`, Keras loading and predicting once;
  * installed size of kdedge-run's dependency closure (and `[tflite]`) against this training environment.

Prints markdown (the same is written to --out):

    python bench/bench_runtime.py --bundle models/default [--run RUN_DIR] [--n 1000] [--out report.md]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kdedge_run
from kdedge_run.backends import available, open_backend
from kdedge_run.bundle import load_bundle

from measure import (HEALTHNER9, REPO, batches, fresh_processes, log, machine, machine_notes, markdown_table,
                     per_call, probabilities, rate, read_records, run_child, summary_ms, version)

HERE = Path(__file__).resolve().parent
PROCESS = [sys.executable, str(HERE / "runtime_process.py")]
COLD_TEXT = "我最近常常頭痛，晚上睡不好"
BATCH = 64
PACKAGES = ("kdedge-run", "numpy", "onnxruntime", "ai-edge-litert", "jieba", "click", "tensorflow", "keras",
            "fasttext-wheel")


def fmt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


# ------------------------------------------------------------------------------------------ in process

def stages(path: Path, backend: str, texts: list[str], clf) -> dict[str, float]:
    """Median ms per text of each stage of the bundle's pipeline, with the runtime's public loader and backend
    (format 1: normalise/convert/segment, ids, vectors, model; format 2: code points, model), and of the rest
    of `clf.predict(text)` (checks, calibration, thresholds, Prediction objects)."""
    bundle = load_bundle(path)
    model = open_backend(bundle, backend, threads=1)
    pre = bundle.preprocessor
    if bundle.version == 2:
        steps = [("code points", lambda t: pre.encode([t])[0]), ("model run", model.run)]
    else:
        steps = [(f"normalise, convert, segment ({bundle.manifest['segmenter']['type']})",
                  lambda t: pre.segment(t)[0]),
                 ("ids", lambda tokens: pre.ids(tokens)[0][None]), ("vectors", bundle.embed), ("model run", model.run)]
    times = {name: [] for name, _ in [*steps, ("rest of predict()", None), ("predict() total", None)]}
    for text in texts:
        x, spent = text, 0.0
        for name, step in steps:
            start = time.perf_counter()
            x = step(x)
            times[name].append(time.perf_counter() - start)
            spent += times[name][-1]
        start = time.perf_counter()
        clf.predict(text)
        times["predict() total"].append(time.perf_counter() - start)
        times["rest of predict()"].append(times["predict() total"][-1] - spent)
    return {name: 1e3 * float(np.median(v)) for name, v in times.items()}


def bench_backend(path: Path, backend: str, texts: list[str], warmup: int) -> dict:
    clf = kdedge_run.load(path, backend=backend, threads=1)
    entry = next(m for m in clf.info()["models"] if m["format"] == backend)
    latency = summary_ms(per_call(clf.predict, texts, warmup=warmup))
    predictions = clf.predict(texts)
    return {"model": f"{backend} {entry['precision']}, {entry['bytes'] / 1e3:,.0f} kB", "latency": latency,
            "b1": 1e3 / latency["mean"], "b64": rate(clf.predict, batches(texts, BATCH)),
            "probabilities": probabilities(clf.labels, predictions),
            "truncated": sum(p.truncated for p in predictions), "stages": stages(path, backend, texts, clf)}


def bench_fasttext(records: list[dict], texts: list[str], warmup: int, tmp: Path) -> dict:
    """fastText ova (5 epochs) trained on the jieba tokens of the labelled records; per-text latency includes
    jieba (default dictionary)."""
    import fasttext
    import jieba

    jieba.setLogLevel(60)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()

    def line(text: str) -> str:
        return " ".join(w for w in (t.strip() for t in tokenizer.cut(text)) if w) + "\n"

    train = tmp / "fasttext.txt"
    train.write_text("".join(" ".join(f"__label__{x}" for x in r["labels"]) + " " + line(r["text"])
                             for r in records if r["labels"]), encoding="utf-8")
    model = fasttext.train_supervised(input=str(train), loss="ova", epoch=5, thread=1, verbose=0, seed=0)
    # model.predict fails under numpy 2; the C++ binding it wraps does not
    latency = summary_ms(per_call(lambda t: model.f.predict(line(t), -1, 0.5, "strict"), texts, warmup=warmup))
    lines = [line(t) for t in texts]
    alone = summary_ms(per_call(lambda x: model.f.predict(x, -1, 0.5, "strict"), lines, warmup=warmup))
    return {"latency": latency, "model": alone, "b1": 1e3 / latency["mean"],
            "train_texts": sum(bool(r["labels"]) for r in records)}


# ----------------------------------------------------------------------------------------- processes

def bench_keras(args, texts: list[str], records: list[dict], runtime: dict, tmp: Path) -> dict:
    from kdedge_export.parity import compare

    texts_file, out = tmp / "texts.json", tmp / "keras.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    cmd = [*PROCESS, "keras", "--bundle", args.bundle, "--run", args.run, "--texts", texts_file]
    log(f"Keras: model.predict on {min(args.keras_n, len(texts))} texts, tf.function on {len(texts)}")
    run_child([*cmd, "--out", out, "--keras-n", args.keras_n])
    k = json.loads(out.read_text(encoding="utf-8"))
    k["once"] = run_child([*cmd, "--once"])
    bundle = load_bundle(args.bundle)
    keep, reference = k["keep"], np.asarray(k["probabilities"])
    index = {lab: j for j, lab in enumerate(bundle.labels)}
    y = np.zeros_like(reference)
    for row, i in enumerate(keep):
        for lab in records[i]["labels"]:
            if lab in index:
                y[row, index[lab]] = 1.0
    k["parity"] = {b: compare(r["probabilities"][keep], reference, y, bundle.thresholds, bundle.labels)
                   for b, r in runtime.items()}
    k["labelled"] = bool(y.any())
    return k


def bench_cold(args, backends: list[str], has_tf: bool) -> dict:
    cli = Path(sys.executable).with_name("kdedge-run")
    cli = [str(cli)] if cli.exists() else [sys.executable, "-m", "kdedge_run"]
    out = {"cli": cli, "python -c pass": fresh_processes([sys.executable, "-c", "pass"], args.cold_runs), "cli_runs": {}}
    for b in backends:
        predict = ["predict", COLD_TEXT, "--model", args.bundle, "--backend", b]
        log(f"cold start: kdedge-run predict --backend {b} ×{args.cold_runs}, phases ×3, imports")
        r = fresh_processes([*cli, *predict], args.cold_runs)
        report = run_child([*PROCESS, "cli", *predict]).stderr.rsplit("MODULES ", 1)[1]
        r["modules"] = json.loads(report)["modules"]
        samples = [json.loads(run_child([*PROCESS, "phases", args.bundle, b, COLD_TEXT]).stdout) for _ in range(3)]
        r["phases"] = {k: float(np.median([s[k] for s in samples])) for k in samples[0]}
        out["cli_runs"][b] = r
    if has_tf:
        log(f"cold start: import tensorflow ×{args.tf_runs}")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        out["import tensorflow"] = fresh_processes([sys.executable, "-c", "import tensorflow"], args.tf_runs, env)
    return out


# ------------------------------------------------------------------------------------------ installed size

def closure(name: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Distribution names `pip install name[extras]` installs, as resolved in this environment."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [(name, extras)]
    while todo:
        dist_name, want = todo.pop()
        try:
            requires = distribution(dist_name).requires or []
        except PackageNotFoundError:
            continue
        seen.add(canonicalize_name(dist_name))
        for spec in map(Requirement, requires):
            marker_ok = any(spec.marker is None or spec.marker.evaluate({"extra": e}) for e in (*want, ""))
            if marker_ok and canonicalize_name(spec.name) not in seen:
                todo.append((spec.name, tuple(spec.extras)))
    return seen


def installed_bytes() -> dict[str, int]:
    """Bytes of the installed files (their RECORD) of every distribution in this environment; kdedge-run at
    least its package directory (an editable install's RECORD lists only its import hook)."""
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    sizes = {canonicalize_name(d.metadata["Name"]): sum(p.stat().st_size for p in map(d.locate_file, d.files or [])
                                                        if p.is_file()) for d in distributions()}
    package = Path(kdedge_run.__file__).parent
    own = sum(p.stat().st_size for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    sizes["kdedge-run"] = max(sizes.get("kdedge-run", 0), own)
    return sizes


def bench_size() -> dict:
    everything = installed_bytes()
    out = {"training": sum(everything.values()), "distributions": len(everything)}
    for label, extras in (("kdedge-run", ()), ("kdedge-run[tflite]", ("tflite",))):
        names = closure("kdedge-run", extras)
        sizes = {n: everything[n] for n in names if n in everything}
        out[label] = {"bytes": sum(sizes.values()), "sizes": sizes}
    return out


# ------------------------------------------------------------------------------------------- report

def report(R: dict) -> str:
    """The whole result as markdown: setup, then one table (and its notes) per measurement."""
    rt, ft, k, cold, size = R["runtime"], R.get("fasttext"), R.get("keras"), R.get("cold"), R.get("size")
    doc = ["# kdedge-run benchmark", "", f"`{R['command']}`", "", *machine_notes(R["machine"], R["load_end"]),
           f"- bundle: `{R['bundle']}`: {R['bundle_desc']}",
           f"- texts: first {R['n']} of `{R['texts_file']}` (mean {R['mean_chars']:.0f} characters; "
           f"{next(iter(rt.values()))['truncated']} longer than the model input); {R['warmup']} untimed predictions "
           "first; every backend and Keras at 1 thread", ""]

    def section(title, header, rows, notes=()):
        doc.extend([f"## {title}", "", markdown_table(header, rows), "", *notes, *([""] if notes else [])])

    rows = [[f"kdedge_run {b}", r["model"], fmt(r["latency"]["p50"]), fmt(r["latency"]["p99"]), f"{r['b1']:,.0f}",
             f"{r['b64']:,.0f}"] for b, r in rt.items()]
    if ft:
        rows += [["fastText ova (jieba + predict)", "text", fmt(ft["latency"]["p50"]), fmt(ft["latency"]["p99"]),
                  f"{ft['b1']:,.0f}", ""],
                 ["fastText model only", "jieba tokens", fmt(ft["model"]["p50"]), fmt(ft["model"]["p99"]), "", ""]]
    if k:
        for name, key in (("Keras model.predict", "predict"), ("Keras tf.function(model(x, training=False))",
                                                                "tf_function")):
            s = summary_ms(k[f"{key}_s"])
            rows.append([name, "ids", fmt(s["p50"]), fmt(s["p99"]), f"{1e3 / s['mean']:,.0f}", f"{k[key + '_b64']:,.0f}"])
    notes = ["- kdedge_run rows: `clf.predict(text)` end to end, one text per call; batch 64 is "
             "`clf.predict(list_of_64)` (TFLite runs batch 1 inside)."]
    if ft:
        notes.append(f"- fastText: `loss=\"ova\"`, 5 epochs on the jieba tokens of the {ft['train_texts']:,} "
                     "labelled texts of the texts file; predicted with `model.f.predict(line, -1, 0.5, \"strict\")`.")
    if k:
        notes.append(f"- Keras (`{k['model_file']}`) takes ids (preprocessing excluded, which favours it): "
                     "format 1 the bundle's own, format 2 the run's character pipeline.")
    section("Latency and throughput", ["pipeline (single thread)", "input", "p50 ms", "p99 ms", "texts/s batch 1",
                                       "texts/s batch 64"], rows, notes)

    rows = []
    for b, r in rt.items():
        p50 = r["latency"]["p50"]
        if ft:
            rows.append([f"{b} p50 / fastText p50 (>1: runtime slower)", f"{p50 / ft['latency']['p50']:.2f}×"])
        if k:
            rows += [[f"Keras model.predict p50 / {b} p50", f"{np.median(k['predict_s']) * 1e3 / p50:,.0f}×"],
                     [f"tf.function p50 / {b} p50", f"{np.median(k['tf_function_s']) * 1e3 / p50:,.1f}×"],
                     [f"{b} batch-64 texts/s / Keras model.predict batch-64", f"{r['b64'] / k['predict_b64']:.1f}×"]]
    if rows:
        section("Ratios (same run)", ["ratio", "value"], rows)
    if k:
        section("Same model? The runtime against Keras", ["backend", "max |Δp|", "mean |Δp|", "decisions flipped",
                                                         "macro-F1 change"],
                [[b, f"{p['max_abs_dp']:.2e}", f"{p['mean_abs_dp']:.2e}", p["flipped_decisions"],
                  f"{100 * p['macro_f1_change']:+.2f}" if k["labelled"] else "—"] for b, p in k["parity"].items()],
                [f"- On the {len(k['keep']):,} texts Keras had input for, at the bundle's thresholds "
                 "(`kdedge_export.parity.compare`); macro-F1 against the texts' labels where they are the bundle's."])

    names = list(next(iter(rt.values()))["stages"])
    section("Where a text's time goes (median ms per text, batch 1)", ["stage", *rt],
            [[n, *[fmt(r["stages"][n]) for r in rt.values()]] for n in names],
            ["- Each stage timed on its own with `kdedge_run.bundle.load_bundle` and `backends.open_backend`; "
             "\"rest of predict()\" is one `predict(text)` minus the stages just timed on the same text."])

    if cold:
        def wall(name, c, rss=True):
            return [name, f"{c['median_s']:.3f}", f"{c['min_s']:.3f}–{c['max_s']:.3f}",
                    f"{c['rss_mb']:.0f}" if rss else "—"]

        rows = [wall("python -c pass", cold["python -c pass"], rss=False)]
        rows += [wall(f"kdedge-run predict --backend {b}", r) for b, r in cold["cli_runs"].items()]
        if "import tensorflow" in cold:
            rows.append(wall('python -c "import tensorflow"', cold["import tensorflow"]))
        if k:
            rows.append(["load the Keras model, predict once", f"{k['once'].seconds:.3f}", "(1 run)",
                         f"{k['once'].rss_mb:.0f}"])
        any_run = next(iter(cold["cli_runs"].values()))
        section("Cold start and peak memory (fresh processes)", ["process", "median wall s", "min–max s",
                                                                 "peak RSS MB"], rows,
                [f"- `{shlex.join(map(str, cold['cli']))} predict \"{COLD_TEXT}\" --model BUNDLE --backend B`: "
                 f"median of {any_run['runs']} processes after one unmeasured run; peak RSS of the process itself "
                 "(`os.wait4`).",
                 "- Third-party modules the CLI process imported: " + "; ".join(
                     f"{b}: {', '.join(r['modules'])}" for b, r in cold["cli_runs"].items()) + "."])
        phases = list(any_run["phases"])
        section("The runtime's cold start by phase (median s of 3 processes)", ["phase", *cold["cli_runs"]],
                [[p, *[f"{r['phases'][p]:.3f}" if p in r["phases"] else "—" for r in cold["cli_runs"].values()]]
                 for p in phases],
                ["- `python bench/runtime_process.py phases BUNDLE BACKEND TEXT`; the last row is not in the total."])

    if size:
        rows = [[f"pip install kdedge-run{'' if name == 'kdedge-run' else '[tflite]'}", f"{s['bytes'] / 1e6:.1f} MB",
                 f"{size['training'] / s['bytes']:.1f}×",
                 ", ".join(f"{n} {b / 1e6:.1f}" for n, b in sorted(s["sizes"].items(), key=lambda x: -x[1])[:4])]
                for name, s in size.items() if isinstance(s, dict)]
        rows.append([f"this training environment ({size['distributions']} distributions)",
                     f"{size['training'] / 1e6:.1f} MB", "1×", ""])
        section("Installed size", ["environment", "installed files", "training / this", "largest (MB)"], rows,
                ["- Sum of the files each distribution's RECORD lists (kdedge-run: at least its package directory, "
                 "default bundle included), for kdedge-run's dependency closure as resolved in this environment "
                 "(`importlib.metadata`), against every distribution installed here."])
    return "\n".join(doc).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "default", help="bundle directory (format 1 or 2)")
    p.add_argument("--texts", type=Path, default=HEALTHNER9 / "texts.jsonl", help="JSON Lines with text (and labels)")
    p.add_argument("--n", type=int, default=1000, help="texts to time (the first N)")
    p.add_argument("--warmup", type=int, default=100, help="untimed predictions per backend")
    p.add_argument("--run", type=Path, help="the bundle's training run directory: Keras baseline (optional)")
    p.add_argument("--keras-n", type=int, default=1000, help="texts for Keras model.predict at batch 1 (slow)")
    p.add_argument("--cold-runs", type=int, default=7, help="fresh CLI processes per backend")
    p.add_argument("--tf-runs", type=int, default=3, help="fresh `import tensorflow` processes (0: none)")
    p.add_argument("--skip", nargs="*", default=[], choices=["fasttext", "cold", "size"])
    p.add_argument("--out", type=Path, help="also write the markdown here")
    args = p.parse_args(argv)
    args.bundle = args.bundle.resolve()
    bundle = load_bundle(args.bundle)
    records = read_records(args.texts)
    texts = [r["text"] for r in records[:args.n]]
    backends = [b for b in bundle.models() if available(b)]
    m = bundle.manifest
    R = {"machine": machine(PACKAGES), "bundle": str(args.bundle), "texts_file": str(args.texts), "n": len(texts),
         "warmup": args.warmup, "mean_chars": float(np.mean([len(t) for t in texts])),
         "command": shlex.join(["python", "bench/bench_runtime.py", *(argv if argv is not None else sys.argv[1:])]),
         "bundle_desc": f"format {bundle.version}, {m.get('architecture')} ({m.get('model_kind')}), "
                        f"{len(bundle.labels)} labels, {m['segmenter']['type']} segmenter, vectors "
                        f"{m['embeddings'].get('dtype')}, models " + ", ".join(bundle.models())}
    R["runtime"] = {}
    for b in backends:
        log(f"runtime {b}: {len(texts)} texts at batch 1 and {BATCH}, stages")
        R["runtime"][b] = bench_backend(args.bundle, b, texts, args.warmup)
    with tempfile.TemporaryDirectory(prefix="kdedge-bench-") as tmp:
        if "fasttext" not in args.skip and (version("fasttext-wheel") or version("fasttext")) \
                and any(r["labels"] for r in records):
            log("fastText: train (ova, 5 epochs) and time")
            R["fasttext"] = bench_fasttext(records, texts, args.warmup, Path(tmp))
        if args.run:
            R["keras"] = bench_keras(args, texts, records, R["runtime"], Path(tmp))
    if "cold" not in args.skip:
        R["cold"] = bench_cold(args, backends, args.tf_runs > 0 and version("tensorflow") is not None)
    if "size" not in args.skip:
        R["size"] = bench_size()
    assert "tensorflow" not in sys.modules, "TensorFlow entered the runtime benchmark's process"
    R["load_end"] = os.getloadavg()[0]
    text = report(R)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
