"""The shipped default bundle as `pip install ./runtime` runs it, and every back-end of a format-2 bundle:
p50 per text (1 thread, preprocessing included), batch invariance and back-end agreement, and what checking
the golden vectors at load costs (Python, and the Node reader when runtime/js/dist is built), in one run.

    python bench/bench_default_install.py [--texts ../shared/data/healthner9/texts.jsonl] \
        [--bundle-all BUNDLE_WITH_ONNX_AND_TFLITE] [--n 2000]

`--bundle-all` is the default run exported with `--format all` (models/README.md); without it only the
default bundle (ONNX) is measured. Texts come from `--texts` (JSON Lines with "text") or, without it,
from the bundle's golden vectors.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

import kdedge_run
from kdedge_run.backends import available

from measure import REPO, machine_line, markdown_table, per_call, probabilities, read_texts, summary_ms

DEFAULT = REPO / "models" / "default"


def p50_ms(clf, texts: list[str], repeats: int = 3) -> float:
    """Median wall time of `clf.predict(text)`, one text at a time, after a warm-up pass of 50 texts."""
    return summary_ms(per_call(clf.predict, texts, warmup=50, repeats=repeats))["p50"]


def batch_invariance(clf, texts: list[str], seed: int = 0) -> float:
    """Largest |Δp| of a text predicted alone vs inside batches of random companions (sizes 2–64)."""
    rng = random.Random(seed)
    alone = probabilities(clf.labels, [clf.predict(t) for t in texts])
    worst = 0.0
    for size in (2, 7, 16, 64):
        order = list(range(len(texts)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            batch = probabilities(clf.labels, clf.predict([texts[i] for i in rows]))
            worst = max(worst, float(np.abs(batch - alone[rows]).max()))
    return worst


NODE_LOAD = """
import { load } from %s;
const out = {};
for (const verifyGolden of [true, false]) {
  const t = [];
  for (let i = 0; i < %d; i++) {
    const s = performance.now(); const c = await load(%s, { verifyGolden }); t.push(performance.now() - s); await c.close();
  }
  out[verifyGolden] = t.sort((a, b) => a - b)[t.length >> 1];
}
console.log(JSON.stringify(out));
"""


def load_ms(repeats: int = 15) -> list[list[str]]:
    """Median ms of loading the default bundle with and without the golden check: Python, then Node (if built)."""
    rows = []
    medians = {v: statistics.median(per_call(lambda _: kdedge_run.load(DEFAULT, verify_golden=v), range(repeats)))
               for v in (True, False)}
    rows.append(["kdedge_run.load", f"{medians[True] * 1e3:.1f}", f"{medians[False] * 1e3:.1f}"])
    node_reader = REPO / "runtime" / "js" / "dist" / "node.js"
    if shutil.which("node") and node_reader.is_file():
        script = NODE_LOAD % (json.dumps(node_reader.as_uri()), repeats, json.dumps(str(DEFAULT)))
        got = json.loads(subprocess.run(["node", "--input-type=module", "-e", script], check=True, capture_output=True,
                                        text=True, cwd=REPO / "runtime" / "js").stdout)
        rows.append(["@kdedge/reader load (Node)", f"{got['true']:.1f}", f"{got['false']:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path, help="JSON Lines with a 'text' field")
    parser.add_argument("--bundle-all", type=Path, help="a format-2 bundle with ONNX and TFLite models")
    parser.add_argument("--n", type=int, default=2000, help="texts read from --texts")
    args = parser.parse_args()
    texts = read_texts(args.texts or DEFAULT / "golden.jsonl", args.n if args.texts else None)
    print(f"# kdedge-run default install and back-ends ({machine_line()}; {len(texts)} texts, 1 thread)\n")
    rows = []
    default = kdedge_run.load()
    rows.append(("default bundle, default install", default, texts))
    if args.bundle_all:
        for backend in ("onnx", "tflite"):
            if available(backend):
                rows.append((f"--format all bundle, {backend}", kdedge_run.load(args.bundle_all, backend=backend),
                             texts))
    table, probs = [], {}
    for name, clf, sample in rows:
        entry = next(e for e in clf.info()["models"] if e["format"] == clf.backend)
        p50 = p50_ms(clf, sample)
        start = time.perf_counter()
        probs[name] = probabilities(clf.labels, clf.predict(sample))
        rate = len(sample) / (time.perf_counter() - start)
        invariance = batch_invariance(clf, sample[:512])
        table.append([name, f"{entry['format']} {entry['precision']}, {entry['bytes'] / 1e6:.2f} MB", f"{p50:.3f}",
                      f"{rate:,.0f}", f"{invariance:.1e}"])
    print(markdown_table(["bundle, back-end", "model", "p50 ms/text", "texts/s (batch 64)",
                          "max |Δp| alone vs in a batch"], table))
    if args.bundle_all and len(probs) == 3:
        onnx, tflite = (probs[f"--format all bundle, {b}"] for b in ("onnx", "tflite"))
        print(f"\nONNX vs TFLite, same bundle: max |Δp| {np.abs(onnx - tflite).max():.1e} over "
              f"{onnx.size:,} probabilities; labels differ on "
              f"{int(((onnx >= 0.5) != (tflite >= 0.5)).sum())} (at 0.5)")
        default_vs = np.abs(probs["default bundle, default install"] - onnx).max()
        print(f"default bundle vs the --format all bundle's ONNX: max |Δp| {default_vs:.1e}")
    golden = json.loads((DEFAULT / "manifest.json").read_text(encoding="utf-8"))["golden"]["texts"]
    print(f"\nLoading the default bundle ({golden} golden vectors), median of 15, ms:\n")
    print(markdown_table(["reader", "golden checked (default)", "verify_golden off"], load_ms()))


if __name__ == "__main__":
    main()
