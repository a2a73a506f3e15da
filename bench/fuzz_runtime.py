"""Fuzz kdedge_run's predict path with generated hostile text (not a test: run it by hand).

    python bench/fuzz_runtime.py                      # 120,000 texts over 3 bundles + 20,000 CLI lines
    python bench/fuzz_runtime.py --n 20000 --seed 7   # quicker, another stream
    python bench/fuzz_runtime.py --atheris 200000     # coverage-guided (atheris/libFuzzer), one text a run

Inputs: random code points from every plane (lone surrogates, C0/C1 controls, noncharacters,
private use included), CJK and CJK extensions B–H, emoji with ZWJ/skin tones, full-/half-width
forms, Unicode whitespace, combining marks, Latin, digits, sentence ends; empty and whitespace-only
texts; long texts (up to 200,000 code points). They go through `Classifier.predict` in batches of 64.

A *crash* is any exception other than the documented `ValueError("empty text")` (or
"text i: empty text" for a batch) for a text that is empty after normalisation, and any broken
invariant: one Prediction per input, every probability finite in [0, 1], labels a subset of the
bundle's labels, the empty-text error exactly when the runtime's own tokenizer finds no token,
and the same result when the same batch is predicted again (checked on a sample).

The CLI part feeds random byte lines (invalid UTF-8, NUL, broken JSON, JSON records) to
`kdedge-run predict --input -` in process and checks: no traceback, exit 0 or 2, exactly one
JSON record per input line, error records numbered by their line.

Prints inputs/s and the crash count per bundle; exits 1 if anything crashed.
Bundles are built once into --bundles-dir with tests/runtime_bundle_factory.py (needs TensorFlow,
tf2onnx) in a subprocess, so the fuzzing process itself never imports TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {  # name → (build_bundle arguments, backend)
    "gru_char_onnx": ({}, "onnx"),
    "han_jieba_int8_onnx": ({"arch": "han", "segmenter": "jieba", "dtype": "int8"}, "onnx"),
    "textcnn_jieba_t2s_tflite": ({"arch": "textcnn", "segmenter": "jieba", "t2s": True, "dtype": "float16"},
                                 "tflite"),
}
BATCH = 64
EMPTY = re.compile(r"^(text \d+: )?empty text$")

# ----------------------------------------------------------------------------------- generation

WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
              "\u2000", "\u2007", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e", "\u202e", "\u2066"]
SENTENCE_ENDS = ["。", "！", "？", "!", "?", "；", ";", "…"]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🇨🇳", "❤️", "🚀", "\U0001FAE0", "#\ufe0f\u20e3"]
WORDS = ["今天", "股市", "大涨", "手机", "模型", "机器学习", "這家", "餐廳", "服務", "ＡＰＰ", "更新", "电池", "球队", "冠军"]
RANGES = [  # (weight, lo, hi)
    (10, 0x4E00, 0x9FFF),       # CJK unified
    (3, 0x3400, 0x4DBF),        # CJK ext A
    (3, 0x20000, 0x323AF),      # CJK ext B–H
    (3, 0xFF00, 0xFFEF),        # full/half-width forms
    (4, 0x20, 0x7E),            # ASCII printable
    (3, 0x00, 0x1F),            # C0 controls
    (2, 0x7F, 0x9F),            # DEL + C1 controls
    (3, 0xD800, 0xDFFF),        # lone surrogates
    (2, 0x0300, 0x036F),        # combining marks
    (2, 0x1F300, 0x1FAFF),      # emoji
    (2, 0xE000, 0xF8FF),        # private use
    (1, 0xF0000, 0x10FFFF),     # supplementary private use + noncharacters
    (1, 0xFFF0, 0xFFFF),        # specials, noncharacters
    (1, 0x0590, 0x08FF),        # Hebrew/Arabic (RTL)
    (4, 0x0000, 0x10FFFF),      # anything at all
]
_WEIGHTS = [w for w, _, _ in RANGES]


def _char(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return rng.choice(WHITESPACE)
    if r < 0.12:
        return rng.choice(INVISIBLE)
    if r < 0.17:
        return rng.choice(SENTENCE_ENDS)
    if r < 0.20:
        return rng.choice(EMOJI)
    if r < 0.30:
        return rng.choice(WORDS)
    _, lo, hi = rng.choices(RANGES, _WEIGHTS)[0]
    return chr(rng.randint(lo, hi))


def generate(rng: random.Random, long_max: int) -> str:
    """One hostile text."""
    kind = rng.random()
    if kind < 0.03:
        return ""
    if kind < 0.08:  # whitespace/controls/surrogates only: empty after normalisation (mostly)
        pool = WHITESPACE + ["\x00", "\x01", "\x7f", "\x9f", "\ud800", "\udfff", "\udc80"]
        return "".join(rng.choice(pool) for _ in range(rng.randint(1, 20)))
    if kind < 0.10:  # one character repeated
        return _char(rng) * rng.randint(1, 500)
    if kind < 0.105:  # long
        n = rng.randint(min(2_000, long_max), long_max)
        block = "".join(_char(rng) for _ in range(200))
        return (block * (n // 200 + 1))[:n]
    if kind < 0.15:  # medium
        return "".join(_char(rng) for _ in range(rng.randint(80, 2_000)))
    return "".join(_char(rng) for _ in range(rng.randint(1, 80)))


# --------------------------------------------------------------------------------------- checks

class Tally:
    def __init__(self):
        self.inputs = self.empty = self.crashes = self.truncated = 0
        self.examples: list[str] = []

    def crash(self, what: str, text=None) -> None:
        self.crashes += 1
        if len(self.examples) < 10:
            self.examples.append(f"{what}: {text!r:.200}" if text is not None else what)


def _check_prediction(p, labels, tally: Tally, text) -> None:
    probs = p.probabilities
    if list(probs) != labels or not all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0
                                        for v in probs.values()):
        tally.crash(f"bad probabilities {probs}", text)
    if not set(p.labels) <= set(labels) or not isinstance(p.truncated, bool) or p.tokens < 1:
        tally.crash(f"bad prediction {p}", text)
    tally.truncated += p.truncated


def fuzz_batch(clf, texts: list[str], tally: Tally, recheck: bool) -> None:
    """Predict `texts` as one batch; a documented empty-text error removes that text and retries."""
    tokens = clf._bundle.preprocessor.tokens
    pending = list(texts)
    while pending:
        try:
            predictions = clf.predict(pending)
        except ValueError as e:
            m = re.match(r"^text (\d+): empty text$", str(e))
            if not m or int(m.group(1)) >= len(pending):
                tally.crash(f"undocumented ValueError {e}")
                return
            i = int(m.group(1))
            if tokens(pending[i]):
                tally.crash("empty-text error for a text with tokens", pending[i])
            tally.empty += 1
            tally.inputs += 1
            del pending[i]
            continue
        except Exception as e:  # noqa: BLE001 - that is the point
            tally.crash(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
            return
        if len(predictions) != len(pending):
            tally.crash(f"{len(predictions)} predictions for {len(pending)} texts")
            return
        for text, p in zip(pending, predictions):
            if not tokens(text):
                tally.crash("a text without tokens was classified", text)
            _check_prediction(p, clf.labels, tally, text)
        if recheck and clf.predict(pending) != predictions:
            tally.crash("not deterministic")
        tally.inputs += len(pending)
        return


def fuzz_bundle(name: str, path: Path, backend: str, n: int, seed: int, long_max: int) -> Tally:
    import kdedge_run

    clf = kdedge_run.load(path, backend=backend)
    rng = random.Random(f"{seed}:{name}")
    tally = Tally()
    batches = 0
    while tally.inputs < n:
        texts = [generate(rng, long_max) for _ in range(min(BATCH, n - tally.inputs))]
        fuzz_batch(clf, texts, tally, recheck=batches % 50 == 0)
        batches += 1
        # single-text path too (a different code path: str, not list)
        text = generate(rng, 200)
        try:
            _check_prediction(clf.predict(text), clf.labels, tally, text)
        except ValueError as e:
            if not EMPTY.match(str(e)) or clf._bundle.preprocessor.tokens(text):
                tally.crash(f"ValueError {e}", text)
        except Exception as e:  # noqa: BLE001
            tally.crash(f"{type(e).__name__}: {e}", text)
    return tally


def _random_line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))).replace(b"\n", b" ")
    text = generate(rng, 2_000).replace("\n", " ").replace("\r", " ")
    if kind < 0.6:
        return text.encode("utf-8", "surrogatepass")  # lone surrogates as CESU bytes: invalid UTF-8
    if kind < 0.8:
        record = {"text": text} if rng.random() < 0.8 else {"txt": text, "id": rng.randint(0, 9)}
        if rng.random() < 0.3:
            record["id"] = text[:5]
        line = json.dumps(record, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.2:
            line = line[: rng.randint(0, len(line))]  # broken JSON
        return line.encode("utf-8", "surrogatepass")
    return text.encode("utf-8", "replace")


def fuzz_cli(path: Path, n: int, seed: int) -> Tally:
    from click.testing import CliRunner

    from kdedge_run.cli import main as cli

    rng = random.Random(f"{seed}:cli")
    tally = Tally()
    while tally.inputs < n:
        lines = [_random_line(rng) for _ in range(min(1000, n - tally.inputs))]
        result = CliRunner().invoke(cli, ["predict", "--model", str(path), "--input", "-"],
                                    input=b"\n".join(lines) + b"\n")
        tally.inputs += len(lines)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            tally.crash(f"exception {result.exception!r}")
            continue
        if "Traceback" in result.output or result.exit_code not in (0, 2):
            tally.crash(f"exit {result.exit_code}: {result.stderr[-300:]}")
            continue
        try:
            records = [json.loads(x) for x in result.stdout_bytes.decode("utf-8").split("\n")[:-1]]
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            tally.crash(f"output not UTF-8 JSON lines: {e}")
            continue
        if len(records) != len(lines):
            tally.crash(f"{len(records)} records for {len(lines)} lines")
            continue
        errors = [(i, r) for i, r in enumerate(records, 1) if "error" in r]
        tally.empty += len(errors)
        if any(r.get("line") != i for i, r in errors) or (result.exit_code == 2) != bool(errors):
            tally.crash("error records misnumbered or exit code wrong")
    return tally


# ---------------------------------------------------------------------------------------- atheris

def run_atheris(path: Path, backend: str, runs: int) -> None:
    import atheris

    import kdedge_run
    from kdedge_run.cli import _read_lines

    clf = kdedge_run.load(path, backend=backend)
    tokens = clf._bundle.preprocessor.tokens
    atheris.instrument_all()  # TensorFlow is not loaded here: this covers kdedge_run, numpy, jieba, click

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        text = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 400))  # may hold lone surrogates
        try:
            p = clf.predict(text)
        except ValueError as e:
            if str(e) != "empty text" or tokens(text):
                raise
        else:
            assert all(math.isfinite(v) and 0 <= v <= 1 for v in p.probabilities.values()), p
            assert tokens(text)
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        for n, rid, line, error in _read_lines(iter(raw.split(b"\n"))):
            assert (line is None) == (error is not None)

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-print_final_stats=1"], one_input)
    atheris.Fuzz()


# ------------------------------------------------------------------------------------------ main

def build_bundles(directory: Path) -> None:
    """Build the fuzz bundles in a subprocess (TensorFlow stays out of this process)."""
    missing = [name for name in BUNDLES if not (directory / name / "manifest.json").exists()]
    if not missing:
        return
    code = ("import sys, json\n"
            f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "from runtime_bundle_factory import build_bundle\n"
            "for name, (kwargs, backend) in json.loads(sys.argv[2]).items():\n"
            "    build_bundle(f'{sys.argv[1]}/{name}', formats=(backend,), **kwargs)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(directory), json.dumps({k: BUNDLES[k] for k in missing})],
                   check=True, env=env, stderr=subprocess.DEVNULL)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, load avg {load:.1f} at start; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}, {platform.system()} {platform.release()}")


def _report(total: "Tally", tally: "Tally", line: str) -> None:
    """Print one target's line and crash examples; add its counts to the total."""
    print(line)
    for example in tally.examples:
        print("   ", example)
    total.inputs += tally.inputs
    total.crashes += tally.crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40_000, help="texts per bundle (default 40,000; 3 bundles)")
    parser.add_argument("--cli-lines", type=int, default=20_000, help="random input lines through the CLI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-max", type=int, default=200_000, help="longest generated text (code points)")
    parser.add_argument("--bundles-dir", type=Path, default=Path(tempfile.gettempdir()) / "kdedge_fuzz_bundles")
    parser.add_argument("--only", choices=list(BUNDLES), action="append", help="fuzz only these bundles")
    parser.add_argument("--atheris", type=int, metavar="RUNS", help="coverage-guided fuzzing instead (atheris)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "runtime"))
    build_bundles(args.bundles_dir)
    print(f"machine: {machine()}")
    if args.atheris:
        run_atheris(args.bundles_dir / "gru_char_onnx", "onnx", args.atheris)
        return 0
    total = Tally()
    start_all = time.perf_counter()
    for name in args.only or list(BUNDLES):
        start = time.perf_counter()
        tally = fuzz_bundle(name, args.bundles_dir / name, BUNDLES[name][1], args.n, args.seed, args.long_max)
        seconds = time.perf_counter() - start
        _report(total, tally, f"{name:<26} {tally.inputs:>8,} inputs in {seconds:7.1f} s = "
                f"{tally.inputs / seconds:8,.0f}/s; empty-text errors {tally.empty:,}, "
                f"truncated {tally.truncated:,}, crashes {tally.crashes}")
    if args.cli_lines:
        start = time.perf_counter()
        tally = fuzz_cli(args.bundles_dir / "gru_char_onnx", args.cli_lines, args.seed)
        seconds = time.perf_counter() - start
        _report(total, tally, f"{'cli predict --input -':<26} {tally.inputs:>8,} lines  in {seconds:7.1f} s = "
                f"{tally.inputs / seconds:8,.0f}/s; error records {tally.empty:,}, crashes {tally.crashes}")
    seconds = time.perf_counter() - start_all
    print(f"TOTAL {total.inputs:,} inputs in {seconds:.1f} s ({total.inputs / seconds:,.0f}/s), "
          f"crashes: {total.crashes}")
    return 1 if total.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
