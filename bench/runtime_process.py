"""The programs bench_runtime.py runs as fresh processes (imports and peak RSS are per process):

    python bench/runtime_process.py cli predict TEXT --model BUNDLE --backend B    # the CLI, then its imports
    python bench/runtime_process.py phases BUNDLE BACKEND TEXT                     # cold start by phase (JSON)
    python bench/runtime_process.py keras --bundle B --run RUN --texts T.json --out R.json [--keras-n N]
    python bench/runtime_process.py keras --bundle B --run RUN --texts T.json --once

Only the standard library is imported before a mode runs, so what a mode imports is all it needed.
`keras` (TensorFlow) is never imported by bench_runtime.py's own process.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "TF_NUM_INTRAOP_THREADS": "1",
          "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorboard", "torch", "jax", "tf2onnx", "sklearn", "gensim")


def third_party_modules() -> list[str]:
    """Top-level modules imported so far that are not the standard library's."""
    top = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
    return sorted(m for m in top if not m.startswith("_"))


def cli(argv: list[str]) -> None:
    """Run `kdedge-run ARGV` as its console script does; report the exit code and imports on stderr."""
    sys.argv = ["kdedge-run", *argv]
    from kdedge_run.cli import main

    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    sys.stdout.flush()
    print("MODULES " + json.dumps({"code": code, "modules": third_party_modules()}), file=sys.stderr)


def phases(bundle: str, backend: str, text: str) -> None:
    """Seconds of each phase of the runtime's cold start in this process, as one JSON object on stdout."""
    out, start = {}, time.perf_counter()

    def phase(name, fn):
        t = time.perf_counter()
        result = fn()
        out[name] = time.perf_counter() - t
        return result

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        version = json.load(f)["format_version"]
    phase("import numpy", lambda: importlib.import_module("numpy"))
    if version == 1:
        phase("import jieba", lambda: importlib.import_module("jieba"))
    library = "onnxruntime" if backend == "onnx" else "ai_edge_litert.interpreter"
    phase("import backend library", lambda: importlib.import_module(library))
    phase("import kdedge_run, its CLI and click", lambda: importlib.import_module("kdedge_run.cli"))
    import kdedge_run

    clf = phase("kdedge_run.load() (verify, read, open the model)",
                lambda: kdedge_run.load(bundle, backend=backend, threads=1))
    phase("first predict", lambda: clf.predict(text))
    phase("second predict", lambda: clf.predict(text))
    out["total in process"] = time.perf_counter() - start
    from kdedge_run.bundle import load_bundle

    phase("load_bundle() again: load()'s verify-and-read part", lambda: load_bundle(bundle))
    print(json.dumps(out))


def keras_inputs(bundle_dir: str, run, texts: list[str]):
    """(ids, indices of the texts kept) for the run's Keras model: format 1 the bundle's own preprocessing
    (as export parity), format 2 the character pipeline of the run that the bundle's graph folds in."""
    from kdedge_export.parity import runtime_inputs
    from kdedge_export.run import read_vocab
    from kdedge_export.segmentation import T2S_FILE, segmenter_spec
    from kdedge_run.bundle import load_bundle
    from kdedge_run.text import CharMap, CharTokenizer, Preprocessor

    if load_bundle(bundle_dir).version == 1:
        return runtime_inputs(bundle_dir, texts)
    files = segmenter_spec(run)[1]
    convert = CharMap.load("t2s", files[T2S_FILE]) if T2S_FILE in files else None
    vocab = {t: i for i, t in enumerate(read_vocab(run))}
    pre = Preprocessor(CharTokenizer(), vocab, run.input_spec, convert)
    keep = [i for i, t in enumerate(texts) if pre.tokens(t)]
    return pre.encode([texts[i] for i in keep])[0], keep


def keras(args) -> None:
    """The run's Keras model on the texts: `model.predict` and a `tf.function` at batch 1 and 64, one thread;
    with --once only load it and predict one text (for the process's wall time and peak RSS)."""
    os.environ.update(TF_ENV)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kdedge_export.parity import keras_probabilities
    from kdedge_export.run import load_keras, load_run
    from kdedge_run.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    run = load_run(args.run, bundle.manifest.get("model_kind"))
    model = load_keras(run)[0]
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    ids, keep = keras_inputs(args.bundle, run, texts[:1] if args.once else texts)
    ids = ids.astype(np.int32)
    if args.once:
        model.predict(ids[:1], verbose=0)
        return
    probs = keras_probabilities(model, ids, bundle.temperatures)[1]
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *ids.shape[1:]],
                                                                                         tf.int32)])

    def each(call, n):
        for i in range(10):
            call(ids[i % len(ids):][:1])
        times = []
        for i in range(n):
            t = time.perf_counter()
            call(ids[i:i + 1])
            times.append(time.perf_counter() - t)
        return times

    def per_second(call):
        call(ids[:64])
        t = time.perf_counter()
        for i in range(0, len(ids), 64):
            call(ids[i:i + 64])
        return len(ids) / (time.perf_counter() - t)

    def predict(x):
        return model.predict(x, batch_size=64, verbose=0)

    result = {"model_file": str(run.model_file), "keep": keep, "probabilities": probs.tolist(),
              "predict_s": each(predict, min(args.keras_n, len(ids))), "tf_function_s": each(fn, len(ids)),
              "predict_b64": per_second(predict), "tf_function_b64": per_second(fn),
              "versions": {"tensorflow": tf.__version__}}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def main() -> None:
    if sys.argv[1:2] == ["cli"]:
        return cli(sys.argv[2:])
    if sys.argv[1:2] == ["phases"]:
        return phases(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["keras"])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--texts", required=True, help="JSON list of texts")
    parser.add_argument("--out")
    parser.add_argument("--keras-n", type=int, default=1000, help="texts for model.predict at batch 1 (slow)")
    parser.add_argument("--once", action="store_true")
    keras(parser.parse_args())


if __name__ == "__main__":
    main()
