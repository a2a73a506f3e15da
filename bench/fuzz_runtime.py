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
import functools
import io
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
RECOPY = 1000       # read-back fuzz: inputs between whole fresh copies of the template run
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
    from kdedge_run.bundle import load_bundle

    tokens = load_bundle(clf.path).preprocessor.tokens
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
    from kdedge_run.bundle import load_bundle

    clf = kdedge_run.load(path, backend=backend)
    tokens = load_bundle(path).preprocessor.tokens
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
            if not EMPTY.match(str(e)) or tokens(text):
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


# ------------------------------------------------------------------------------ bundle mutations

MAX_MESSAGE = 2_000  # a refusal's message stays short whatever the hostile value's size
JSON_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 255, 10**9, 2**31, 2**63, -2**63, 0.5, -0.0, 1e-300, 1e308,
               -1e308, 3e38, "", "x", "0.5", "1", "..", "../x", "/etc/passwd", "vocab.txt", "\x00", "\u202e",
               "a\nb", "\ud800", "股" * 1000, [], {}, [0], [None], [[0, 0]], {"a": 1}, [1] * 1000, ["x"] * 300,
               "onnx", "tflite", "int8", "float16", "char", "jieba", "sequence", "hierarchical", "codepoints",
               "temperature", "int32", "sha256"]
RAW_JSON = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "1" + "0" * 400, "-" + "9" * 4000,
            "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, '"\\ud800"', '"\\u0000"',
            "1.0000000000000002", "4294967296"]
_SENTINEL = "\x00kdedge-fuzz\x00"


def _value(rng: random.Random):
    """A hostile JSON value (a fresh copy: mutations must never alter the list above)."""
    import copy

    return copy.deepcopy(rng.choice(JSON_VALUES))


def _paths(value, path=()):
    """Every (path) to a value inside a manifest, containers included (depth-first)."""
    yield path
    if len(path) > 12:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:20]):
            yield from _paths(v, path + (i,))


def _parent(obj, path):
    for k in path[:-1]:
        obj = obj[k]
    return obj


def _mutate_manifest(rng: random.Random, manifest: dict) -> bytes:
    """A copy of `manifest` with 1-3 hostile changes, as JSON bytes (maybe with raw NaN / huge numbers)."""
    import copy

    m = copy.deepcopy(manifest)
    raw = None
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = [p for p in _paths(m) if p]
        path = rng.choice(paths)
        parent, key = _parent(m, path), path[-1]
        value = parent[key]
        kind = rng.random()
        if kind < 0.12 and raw is None:
            parent[key], raw = _SENTINEL, rng.choice(RAW_JSON)
        elif kind < 0.45:
            parent[key] = _value(rng)
        elif kind < 0.55:
            del parent[key]
        elif kind < 0.62 and isinstance(parent, dict):
            parent[rng.choice(["extra", "x" * 50, "models2", "\u202e"])] = _value(rng)
        elif isinstance(value, bool):
            parent[key] = not value
        elif isinstance(value, (int, float)):
            parent[key] = rng.choice([value + 1, value - 1, -value, value * 10, value * 1000, value / 3,
                                      int(value) if isinstance(value, float) else float(value), 0])
        elif isinstance(value, str):
            parent[key] = rng.choice([value + "x", value[:-1], value.upper(), value * 2, value + "\n", ""])
        elif isinstance(value, list) and value:
            choice = rng.random()
            parent[key] = (value + [rng.choice(value)] if choice < 0.3 else value[:-1] if choice < 0.6
                           else value[::-1] if choice < 0.8 else value * 2)
        else:
            parent[key] = _value(rng)
    text = json.dumps(m, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if raw is not None:
        text = text.replace(json.dumps(_SENTINEL), raw)
    data = bytearray(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: invalid UTF-8 bytes
    if rng.random() < 0.05:  # byte-level damage on top
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _npy(rng: random.Random, original: bytes) -> bytes:
    """A .npy file with a hostile header (shape, dtype, order) and some data, or the original damaged."""
    if rng.random() < 0.3:
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    shape = rng.choice([(), (0,), (1,), (3, 8), (10**6, 10**6), (2**40,), (-1, 8), (1, 2, 3), (5, 0), (2**31, 2),
                        (10, 16), (100, 8), (8,), (40, 16)])
    descr = rng.choice(["<f4", "<f8", "<f2", "|i1", "<i4", "|O", "|b1", ">f4", "<c8", "|S4", "<U2", "V8", "<M8"])
    header = f"{{'descr': '{descr}', 'fortran_order': {rng.choice(['False', 'True'])}, 'shape': {shape}, }}"
    if rng.random() < 0.1:
        header = rng.choice(["{}", "[1]", "{'descr': '<f4'}", "__import__('os').system('true')", "x" * 70000])
    head = header.encode("latin-1", "replace")
    head += b" " * (63 - (len(head) + 10) % 64) + b"\n"
    size = rng.choice([0, 4, 64, 512, 4096, len(original)])
    return (b"\x93NUMPY\x01\x00" + (len(head) % 65536).to_bytes(2, "little") + head
            + bytes(rng.randrange(256) for _ in range(min(size, 64))) * max(1, size // 64))


def _text_file(rng: random.Random, original: bytes, rel: str) -> bytes:
    lines = original.split(b"\n")
    op = rng.random()
    if rel.endswith("dict.txt") and op < 0.5:  # "word freq [tag]" lines with hostile frequencies or words
        word = rng.choice(["股市", "x" * 20_000, "", " ", "\x00", "股 市", "\ud800".encode("utf-8", "surrogatepass")
                           .decode("latin-1")])
        freq = rng.choice(["-5", "0", "1e400", "9" * 5000, "nan", "", "3.5", "9007199254740993", "2"])
        line = f"{word} {freq}".encode("utf-8", "surrogateescape") if isinstance(word, str) else b""
        lines.insert(rng.randrange(len(lines) + 1), line)
    elif rel.endswith(".json") and op < 0.6:  # the t2s char map
        return rng.choice([b"[]", b"{}", b'{"\xe9\x80\x99": "' + "这".encode() * 300_000 + b'"}', b'{"a": 1}',
                           b'{"ab": "c"}', b'{"a": ["b"]}', b"[" * 100_000, b'{"a": NaN}', b"9" * 5000,
                           b'{"\\ud800": "a"}', b'{"a": "\\ud800"}', b"\xff"])
    elif op < 0.7:
        for _ in range(rng.randint(1, 3)):
            if not lines:
                lines = [b""]
            i = rng.randrange(len(lines))
            choice = rng.random()
            if choice < 0.25:
                lines.insert(i, lines[i])  # a duplicate token
            elif choice < 0.45:
                del lines[i]
            elif choice < 0.6:
                lines[i] = b""
            elif choice < 0.75:
                lines[i] = lines[i] + rng.choice([b"\r", b"\x00", b" ", b"\xff", b"\t1"])
            else:
                lines[i] = rng.choice([b"x" * 100_000, b"\xed\xa0\x80", b"<pad>", b"<oov>", "股".encode()])
    else:
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data) + 1):]
        return bytes(data)
    return b"\n".join(lines)


class BundleMutator:
    """A working copy of a bundle: mutate it, then restore every file it had."""

    def __init__(self, source: Path, work: Path):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work)
        self.root = work
        self.files = {p.relative_to(work).as_posix(): p.read_bytes() for p in work.rglob("*") if p.is_file()}
        self.manifest = json.loads(self.files["manifest.json"])

    def restore(self) -> None:
        import shutil

        for p in sorted(self.root.rglob("*"), key=lambda q: -len(q.parts)):
            rel = p.relative_to(self.root).as_posix()
            if p.is_symlink() or (p.is_file() and rel not in self.files):
                p.unlink()
            elif p.is_dir() and not p.is_symlink() and rel in self.files:
                shutil.rmtree(p)
            elif p.is_dir() and not any(r.startswith(rel + "/") for r in self.files):
                shutil.rmtree(p)
        for rel, data in self.files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.stat().st_size != len(data) or path.read_bytes() != data:
                path.write_bytes(data)

    def mutate(self, rng: random.Random) -> str:
        """Apply one hostile change; returns what it was (for reports)."""
        import hashlib

        kind = rng.random()
        if kind < 0.55:
            (self.root / "manifest.json").write_bytes(_mutate_manifest(rng, self.manifest))
            return "manifest"
        listed = sorted(self.manifest["files"])
        if kind < 0.6:  # structural: missing, extra, a directory or a symlink in place of a file
            rel = rng.choice(listed)
            op = rng.random()
            if op < 0.3:
                (self.root / rel).unlink()
            elif op < 0.55:
                (self.root / rng.choice(["extra.txt", "segmenter/x", "new/dir/f", ".DS_Store"])).parent.mkdir(
                    parents=True, exist_ok=True)
                (self.root / rng.choice(["extra.txt", ".DS_Store"])).write_bytes(b"x")
            elif op < 0.75:
                (self.root / rel).unlink()
                (self.root / rel).mkdir()
            else:
                (self.root / rel).unlink()
                (self.root / rel).symlink_to(rng.choice(["/etc/passwd", "../outside", "manifest.json", "nowhere"]))
            return "structure"
        rel = rng.choice(listed)
        original = self.files.get(rel, b"")
        if rel.endswith(".npy"):
            data = _npy(rng, original)
        elif rel.endswith((".txt", ".json", ".md")):
            data = _text_file(rng, original, rel)
        else:  # model files: damaged bytes (load_bundle only checksums them)
            data = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        (self.root / rel).write_bytes(data)
        if rng.random() < 0.85:  # checksums updated: the content itself must be checked
            m = json.loads(self.files["manifest.json"])
            m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            (self.root / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
        return f"file {rel}"


def _exercise(bundle) -> None:
    """A loaded bundle must also encode texts (e.g. a dictionary frequency of -5 failed each text)."""
    texts = ["今天股市大涨，投资者信心十足。", "x" * 3000, "這家餐廳的服務很好 👍🏽"]
    bundle.preprocessor.encode(texts)


def fuzz_bundle_mutations(directory: Path, n: int, seed: int, work_root: Path) -> tuple[Tally, dict]:
    """Mutate manifest values and files of small bundles (format 1: char, jieba + t2s, HAN; format 2: the
    shipped default); every `load_bundle` must load (and then encode texts) or raise BundleError."""
    from kdedge_run.bundle import BundleError, load_bundle

    sources = [directory / name for name in BUNDLES] + [ROOT / "runtime" / "kdedge_run" / "default_model"]
    mutators = [BundleMutator(src, work_root / f"mut_{i}") for i, src in enumerate(sources)]
    for m in mutators:
        load_bundle(m.root)  # each seed loads untouched
    rng = random.Random(f"{seed}:bundles")
    tally = Tally()
    outcome = {"loaded": 0, "refused": 0, "slowest_s": 0.0}
    while tally.inputs < n:
        mut = mutators[tally.inputs % len(mutators)]
        what = mut.mutate(rng)
        start = time.perf_counter()
        try:
            bundle = load_bundle(mut.root)
            _exercise(bundle)
            outcome["loaded"] += 1
        except BundleError as e:
            outcome["refused"] += 1
            if len(str(e)) > MAX_MESSAGE or not str(e):
                tally.crash(f"{what}: BundleError message of {len(str(e))} characters: {str(e)[:300]}")
        except Exception as e:  # noqa: BLE001 - that is the point
            tally.crash(f"{what}: unexpected {type(e).__name__}: {str(e)[:300]}\n{traceback.format_exc(limit=4)}")
        outcome["slowest_s"] = max(outcome["slowest_s"], time.perf_counter() - start)
        tally.inputs += 1
        mut.restore()
    return tally, outcome


# -------------------------------------------------------------------------------- training files

GOOD_ROWS = [{"id": "a1", "text": "今天股市大涨，投资者信心十足。", "labels": ["经济"]},
             {"id": 2, "text": "球队昨晚赢得了冠军", "labels": ["体育", "新闻"], "source": "web"},
             {"id": "c", "text": "這家餐廳的服務很好", "labels": ["美食"]},
             {"text": "手机更新后电池不耐用", "labels": []},
             {"id": "e", "text": "医生说要多休息", "labels": ["健康", "新闻"], "doc": 7}]
LABEL_NAMES = ["经济", "体育", "新闻", "美食", "健康"]
HOSTILE_FRAGMENTS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "9" * 4300, "1" + "0" * 400,
                     "[" * 100_000, "{" * 100_000, "[" * 500 + "]" * 500, '"\\ud800"', '"\\udfff股"', '"\\u0000"',
                     '"\\u001b[31m"', '"\\u202e"', '"a\\nb"', '"a\\tb"', '"\\u2028"', '"\\ufeff"', '""', '" "',
                     '"\\u3000"', "null", "true", "[]", "{}", '["a", 1]', '[""]', '[" "]', '["\\u0085"]',
                     '["\\udb80\\udc00"]', '["\\ue000"]', '["a", "a"]', '"x"', "0", "-0", "1.5", '"股' + "市" * 100_000 + '"']
CSV_FRAGMENTS = ['"', '""', ",", "\t", "\r", "\n", '"a,b"', '"a\nb"', "\x00", "\ufeff", "\u202e", "\x1b", ",,",
                 "\ud800", "，", "=cmd()", " ", "\u2028", "a" * 100_000]


def _jsonl_file(rng: random.Random) -> bytes:
    lines = [json.dumps(r, ensure_ascii=rng.random() < 0.3) for r in rng.sample(GOOD_ROWS, rng.randint(1, 5))]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.random()
        if op < 0.45:  # one value replaced by a hostile JSON fragment
            value = rng.choice(['"[^"]*"', r"\[[^\]]*\]", r"\b\d+\b", "null"])
            spots = list(re.finditer(value, lines[i]))
            if spots:
                spot = rng.choice(spots)
                lines[i] = lines[i][:spot.start()] + rng.choice(HOSTILE_FRAGMENTS) + lines[i][spot.end():]
        elif op < 0.55:
            lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]  # truncated
        elif op < 0.62:
            lines.insert(i, lines[i])  # duplicate id
        elif op < 0.7:
            lines.insert(i, rng.choice(["", " ", "\r", "[1]", "1", '"s"', "{}", "\x00", "\ufeff{}"]))
        elif op < 0.78:
            lines[i] = lines[i].replace('"text"', rng.choice(['"txt"', '"text" ', '"TEXT"', '"labels"']), 1)
        elif op < 0.85:
            lines[i] = lines[i].replace('"labels"', rng.choice(['"label"', '"text"', '"id"']), 1)
        else:
            lines[i] = lines[i] + rng.choice([",", "}", " x", "\x00", "\u2028"])
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    return _bytes_damage(rng, data)


def _csv_file(rng: random.Random, delimiter: str) -> bytes:
    header = rng.choice([["text", "labels"], ["id", "text", "labels"], ["labels", "text", "doc"]])
    rows = []
    for r in rng.sample(GOOD_ROWS, rng.randint(1, 5)):
        cells = {"id": str(r.get("id", "")), "text": r["text"], "labels": ",".join(r["labels"]), "doc": "1"}
        rows.append([cells[h] for h in header])
    out = [delimiter.join(header)] if rng.random() > 0.05 else [delimiter.join(rng.choice([["text"], ["txt", "lab"],
                                                                                            ["text", "text"], [""]]))]
    for row in rows:
        quoted = [f'"{c}"' if ("," in c or rng.random() < 0.2) else c for c in row]
        out.append(delimiter.join(quoted))
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        line = out[i]
        j = rng.randrange(len(line) + 1)
        out[i] = line[:j] + rng.choice(CSV_FRAGMENTS) + line[j:]
        if rng.random() < 0.2:
            out.insert(i, rng.choice(["", delimiter, '"', delimiter * 3, "\x00"]))
    ending = rng.choice(["\n", "\r\n", "\r"])
    data = ending.join(out).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    return _bytes_damage(rng, data)


def _bytes_damage(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.15 and data:
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.choice([0, 0x0A, 0x22, 0x5B, 0x80, 0xC0, 0xED, 0xFF,
                                                         rng.randrange(256)])
        data = bytes(data)
    return data


def _label_file(rng: random.Random) -> bytes:
    names = list(LABEL_NAMES)
    for _ in range(rng.randint(0, 3)):
        names.insert(rng.randrange(len(names) + 1), rng.choice(
            ["", " ", "经济", "a\tb", "\x1b[31m", "sp\u202eorts", "\ud800", "\u2028", "a" * 5000, "\x00", "\ufeff体育"]))
    if rng.random() < 0.2:
        names = names[:rng.randint(0, len(names))]
    return _bytes_damage(rng, "\n".join(names).encode("utf-8", "surrogatepass"))


def _check_dataset(ds, skip_invalid: bool) -> str | None:
    """What is wrong with a Dataset load_dataset returned, or None."""
    from kdedge.text.data import describe, label_problem

    if not (len(ds.texts) == len(ds.labels) == len(ds.ids) and ds.texts):
        return "lengths differ or no texts"
    if len(set(ds.ids)) != len(ds.ids):
        return "duplicate ids"
    if ds.skipped and not skip_invalid:
        return "rows skipped without skip_invalid"
    names = set(ds.label_names)
    for text, labels in zip(ds.texts, ds.labels):
        if not isinstance(text, str) or not text.strip() or re.search("[\ud800-\udfff]", text):
            return f"bad text {text!r:.80}"
        if not set(labels) <= names:
            return f"labels {labels} outside label_names"
    if any(label_problem(n) for n in ds.label_names):
        return f"unprintable label in {ds.label_names!r:.200}"
    json.dumps(describe(ds), ensure_ascii=False, allow_nan=False)  # `kdedge data stats --json`
    return None


def fuzz_training_files(n: int, seed: int, work: Path) -> tuple[Tally, dict]:
    """Mutated JSON Lines / CSV / TSV training files (and label files) through `kdedge.text.data.load_dataset`,
    without and with skip_invalid: only a Dataset or a DataError may come out. With skip_invalid, a bad
    row never stops the load: only file-level problems (no valid text, CSV header, label file) do."""
    from kdedge.text.data import DataError, load_dataset

    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:training")
    tally = Tally()
    outcome = {"datasets": 0, "data_errors": 0, "skip_invalid_datasets": 0, "skip_invalid_errors": 0}
    labels_path = work / "labels.txt"
    while tally.inputs < n:
        suffix = rng.choice([".jsonl", ".jsonl", ".csv", ".tsv"])
        data = _jsonl_file(rng) if suffix == ".jsonl" else _csv_file(rng, "," if suffix == ".csv" else "\t")
        path = work / f"data{suffix}"
        path.write_bytes(data)
        labels_file = None
        if rng.random() < 0.2:
            labels_path.write_bytes(_label_file(rng))
            labels_file = labels_path
        for skip in (False, True):
            try:
                ds = load_dataset(path, labels_file, skip_invalid=skip)
            except DataError as e:
                outcome["skip_invalid_errors" if skip else "data_errors"] += 1
                row_level = e.path == path and e.line is not None and not (suffix != ".jsonl" and e.line == 1)
                if skip and row_level:
                    tally.crash(f"skip_invalid stopped at a row: {e}", data[:200])
                if len(str(e)) > MAX_MESSAGE:
                    tally.crash(f"DataError message of {len(str(e))} characters: {str(e)[:200]}", data[:100])
            except Exception as e:  # noqa: BLE001 - that is the point
                tally.crash(f"unexpected {type(e).__name__}: {str(e)[:300]}\n{traceback.format_exc(limit=4)}",
                            data[:300])
            else:
                outcome["skip_invalid_datasets" if skip else "datasets"] += 1
                try:
                    problem = _check_dataset(ds, skip)
                except Exception as e:  # noqa: BLE001
                    problem = f"describe: {type(e).__name__}: {e}"
                if problem:
                    tally.crash(problem, data[:300])
        tally.inputs += 1
    return tally, outcome


def _mutated_json(rng: random.Random, value) -> bytes:
    """`value` with 1-3 hostile changes (a field replaced, deleted or added; maybe a raw NaN or a huge
    number), as JSON bytes; sometimes the bytes themselves are damaged."""
    value = json.loads(json.dumps(value))
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(value))
        if not paths:
            break
        path = rng.choice(paths)
        if not path:
            value = _value(rng)
            continue
        parent, key = _parent(value, path), path[-1]
        action = rng.random()
        if action < 0.6:
            parent[key] = _value(rng)
        elif action < 0.8 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[f"extra{rng.randint(0, 9)}"] = _value(rng)
    data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        data = data.replace(b"0.", rng.choice([b"NaN", b"1e999", b"9" * 400 + b"."]), 1)
    if rng.random() < 0.1:
        data = _bytes_damage(rng, data)
    return data


def _judge(call, refusal: type, accepted: str, data: bytes, tally: Tally, outcome: dict) -> None:
    """Run one fuzz input: `call` may succeed (outcome[accepted]) or raise `refusal` with a short message
    (outcome["refused"]); anything else is a crash."""
    try:
        call()
    except refusal as e:
        outcome["refused"] += 1
        if len(str(e)) > MAX_MESSAGE:
            tally.crash(f"message of {len(str(e))} characters: {str(e)[:200]}", data[:100])
    except Exception as e:  # noqa: BLE001 - that is the point
        tally.crash(f"unexpected {type(e).__name__}: {str(e)[:300]}\n{traceback.format_exc(limit=4)}", data[:300])
    else:
        outcome[accepted] += 1
    tally.inputs += 1


class ScratchRun:
    """An intact copy of `template` at `work/run` for each input. `restore(rel)` puts back only the entry the
    input damaged (whatever replaced it: a file, a link, a FIFO, a directory); every RECOPY inputs the whole
    copy is made again, in case a reader wrote into it."""

    def __init__(self, template: Path, work: Path, symlinks: bool = False):
        self.template, self.path, self.symlinks, self.inputs = template, work / "run", symlinks, 0
        self._copy()

    def _copy(self) -> None:
        import shutil

        if self.path.exists():
            shutil.rmtree(self.path)
        shutil.copytree(self.template, self.path, symlinks=self.symlinks)

    def restore(self, rel: Path) -> None:
        import shutil

        self.inputs += 1
        if self.inputs % RECOPY == 0:
            self._copy()
            return
        entry = self.path / rel
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        shutil.copy2(self.template / rel, entry, follow_symlinks=not self.symlinks)


def fuzz_fold_files(n: int, seed: int, work: Path, report_rounds: int = 0) -> tuple[Tally, dict]:
    """Mutated cv run directories (cv.json and fold files, digests recomputed half the time so the field
    checks are reached) through `kdedge.crossval.report.summarise`: only results or a ReadBackError may come out,
    and results only with finite numbers (results.json is strict JSON). `report_rounds` > 0 caps the report's
    randomization rounds (they dominate the time and read nothing from the files)."""
    from kdedge.crossval import report
    from kdedge.crossval.cvfiles import digest, fold_file
    from kdedge.errors import ReadBackError

    full_test = report.randomization_p_value
    if report_rounds:
        report.randomization_p_value = lambda *args, rounds=2000, **kwargs: full_test(
            *args, rounds=min(rounds, report_rounds), **kwargs)
    try:
        return _fuzz_fold_files(n, seed, work, report.summarise, digest, fold_file, ReadBackError)
    finally:
        report.randomization_p_value = full_test


def _fuzz_fold_files(n, seed, work, summarise, digest, fold_file, ReadBackError) -> tuple[Tally, dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_cv_files import ARCH, make_run

    template = work / "template"
    make_run(template)
    settings = json.loads((template / "cv.json").read_text(encoding="utf-8"))
    records = {k: json.loads(fold_file(template, k, ARCH).read_text(encoding="utf-8")) for k in range(3)}
    rng = random.Random(f"{seed}:folds")
    tally = Tally()
    outcome = {"reported": 0, "refused": 0}
    scratch = ScratchRun(template, work)
    run = scratch.path
    while tally.inputs < n:
        if rng.random() < 0.2:
            target, data = run / "cv.json", _mutated_json(rng, settings)
        else:
            k = rng.randrange(3)
            record = {key: value for key, value in records[k].items() if key != "digest"}
            data = _mutated_json(rng, record)
            if rng.random() < 0.5:
                try:
                    mutated = json.loads(data)
                    if isinstance(mutated, dict):
                        mutated["digest"] = digest(mutated)
                        data = json.dumps(mutated).encode("utf-8")
                except (ValueError, RecursionError):
                    pass
            target = fold_file(run, k, ARCH)
        target.write_bytes(data)
        _judge(lambda: json.dumps(summarise(run), allow_nan=False), ReadBackError, "reported", data, tally, outcome)
        scratch.restore(target.relative_to(run))
    return tally, outcome


def _template_run(directory: Path) -> Path:
    """A tiny real run directory (both students), trained once in a subprocess (TensorFlow stays out of here)."""
    run = directory / "run"
    if (run / "metrics.json").exists():
        return run
    code = ("import sys\n"
            f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "from conftest import make_corpus, write_jsonl\n"
            "from kdedge.config import TrainConfig\n"
            "from kdedge.training.train import train_run\n"
            "data = write_jsonl(sys.argv[1] + '/d.jsonl', make_corpus(90))\n"
            "cfg = TrainConfig(arch='textcnn', mode='all', epochs=2, embedding_dim=8, max_len=24, w2v_epochs=1,\n"
            "                  batch_size=16, arch_params={'filters': 8, 'kernel_sizes': [2, 3]})\n"
            "train_run(cfg, data, sys.argv[1] + '/run', progress=False)\n")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return run


def _damage_entry(rng: random.Random, path: Path) -> bytes:
    """Replace a run file by what a filesystem can hold instead: a link (in or out of the run), a FIFO, a
    directory, an empty file; returns a description for the crash report."""
    path.unlink()
    kind = rng.choice(["link out", "link in", "fifo", "dir", "empty"])
    if kind == "link out":
        path.symlink_to("/etc/hostname")
    elif kind == "link in":
        path.symlink_to(path.parent / "vocab.txt" if path.name != "vocab.txt" else path.parent / "config.json")
    elif kind == "fifo" and hasattr(os, "mkfifo"):
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        path.write_bytes(b"")
    return f"{path.name}: {kind}".encode()


def fuzz_run_dirs(n: int, seed: int, work: Path) -> tuple[Tally, dict]:
    """Mutated run directories (config.json, metrics.json, validation.jsonl, vocab.txt, the .npy predictions and
    vectors; files replaced by links, FIFOs or directories) through export's `load_run`, as `kdedge export RUN`
    reads them: only a Run or an ExportError may come out."""
    from kdedge_export import ExportError
    from kdedge_export.run import load_run

    template = _template_run(work.parent / "kdedge_fuzz_run_template")
    files = sorted(str(p.relative_to(template)) for p in template.rglob("*")
                   if p.is_file() and p.suffix in (".json", ".jsonl", ".txt", ".npy"))
    rng = random.Random(f"{seed}:runs")
    tally = Tally()
    outcome = {"loaded": 0, "refused": 0}
    scratch = ScratchRun(template, work, symlinks=True)
    run = scratch.path
    while tally.inputs < n:
        rel = rng.choice(files)
        target, original = run / rel, (template / rel).read_bytes()
        if rng.random() < 0.1:
            data = _damage_entry(rng, target)
        else:
            if rel.endswith(".npy"):
                data = _npy(rng, original)
            elif rel.endswith(".json"):
                data = _mutated_json(rng, json.loads(original))
            elif rel.endswith(".jsonl"):
                lines = original.split(b"\n")
                i = rng.randrange(len(lines))
                try:
                    lines[i] = _mutated_json(rng, json.loads(lines[i]))
                except ValueError:  # the empty last line
                    lines[i] = _bytes_damage(rng, lines[i] or b"{}")
                data = b"\n".join(lines)
            else:
                data = _text_file(rng, original, rel)
            target.write_bytes(data)
        model = rng.choice([None, "kd", "student"])
        _judge(lambda: load_run(run, model), ExportError, "loaded", data, tally, outcome)
        scratch.restore(Path(rel))
    return tally, outcome


def fuzz_config_files(n: int, seed: int, work: Path) -> tuple[Tally, dict]:
    """Mutated config files (JSON, TOML, YAML; keys and values hostile) through `read_config_file` and
    `make_config`, as `kdedge train --config FILE` reads them: only a TrainConfig or a ConfigError."""
    from kdedge.config import ConfigError, TrainConfig, make_config, read_config_file

    base = {"arch": "textcnn", "epochs": 3, "kd_alpha": [0.5], "arch_params": {"filters": 8, "kernel_sizes": [2, 3]},
            "max_len": 64, "segmenter": "char", "monitor": "val_macro_f1"}
    rng = random.Random(f"{seed}:config")
    tally = Tally()
    outcome = {"configs": 0, "refused": 0}
    while tally.inputs < n:
        kind = rng.choice(["json", "toml", "yaml"])
        data = _mutated_json(rng, base)
        if kind != "json":  # the same hostile value written as TOML / YAML text, or raw JSON bytes under that name
            try:
                value = json.loads(data)
                if kind == "yaml" and rng.random() < 0.7:
                    data = ("\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
                            if isinstance(value, dict) else json.dumps(value)).encode("utf-8", "surrogatepass")
                elif kind == "toml" and rng.random() < 0.7 and isinstance(value, dict):
                    data = "\n".join(f"{json.dumps(str(k))} = {json.dumps(v, ensure_ascii=False)}"
                                      for k, v in value.items()).encode("utf-8", "surrogatepass")
            except (ValueError, RecursionError):
                pass
        path = work / f"config.{kind}"
        path.write_bytes(data)
        def build():
            cfg = make_config(read_config_file(str(path)))
            if not isinstance(cfg, TrainConfig):
                raise TypeError(f"not a TrainConfig: {cfg!r:.200}")
        _judge(build, ConfigError, "configs", data, tally, outcome)
    return tally, outcome


# ---------------------------------------------------------------------------------------- atheris

def run_atheris(path: Path, backend: str, runs: int) -> None:
    import atheris

    import kdedge_run
    from kdedge_run.bundle import load_bundle
    from kdedge_run.lines import read_lines

    clf = kdedge_run.load(path, backend=backend)
    tokens = load_bundle(path).preprocessor.tokens
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
        for line in read_lines(io.BytesIO(raw)):
            assert (line.text is None) == (line.error is not None)

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
    for flag, what in (("--bundle-mutations", "mutated bundles (manifest values, files) through load_bundle"),
                       ("--training-files", "mutated JSON Lines / CSV training files through "
                                            "kdedge.text.data.load_dataset"),
                       ("--fold-files", "mutated cv run directories (cv.json, fold files) through "
                                        "kdedge.crossval.report.summarise"),
                       ("--config-files", "mutated JSON / TOML / YAML config files through read_config_file and "
                                          "make_config"),
                       ("--run-dirs", "mutated run directories (a tiny real run, trained once) through export's "
                                      "load_run")):
        parser.add_argument(flag, type=int, default=0, metavar="N", help=what)
    parser.add_argument("--report-rounds", type=int, default=0, metavar="R",
                        help="--fold-files: cap the report's randomization rounds at R (default: the report's own)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "runtime"))
    if args.n or args.cli_lines or args.bundle_mutations or args.atheris:
        build_bundles(args.bundles_dir)
    print(f"machine: {machine()}")
    if args.atheris:
        run_atheris(args.bundles_dir / "gru_char_onnx", "onnx", args.atheris)
        return 0
    total = Tally()
    start_all = time.perf_counter()
    for name in (args.only or list(BUNDLES)) if args.n else []:
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
    if args.bundle_mutations:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kdedge_fuzz_mut") as work:
            tally, outcome = fuzz_bundle_mutations(args.bundles_dir, args.bundle_mutations, args.seed, Path(work))
        seconds = time.perf_counter() - start
        _report(total, tally, f"{'bundle mutations':<26} {tally.inputs:>8,} bundles in {seconds:7.1f} s = "
                f"{tally.inputs / seconds:8,.0f}/s; loaded {outcome['loaded']:,}, BundleError "
                f"{outcome['refused']:,}, slowest load {outcome['slowest_s']:.2f} s, unexpected {tally.crashes}")
    if args.training_files:
        sys.path.insert(0, str(ROOT))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kdedge_fuzz_data") as work:
            tally, outcome = fuzz_training_files(args.training_files, args.seed, Path(work))
        seconds = time.perf_counter() - start
        _report(total, tally, f"{'training files':<26} {tally.inputs:>8,} files   in {seconds:7.1f} s = "
                f"{tally.inputs / seconds:8,.0f}/s; Dataset {outcome['datasets']:,} / DataError "
                f"{outcome['data_errors']:,}; with skip_invalid {outcome['skip_invalid_datasets']:,} / "
                f"{outcome['skip_invalid_errors']:,}; unexpected {tally.crashes}")
    fold_files = functools.partial(fuzz_fold_files, report_rounds=args.report_rounds)
    for count, name, fuzz in ((args.fold_files, "cv fold files", fold_files),
                              (args.config_files, "config files", fuzz_config_files),
                              (args.run_dirs, "run directories", fuzz_run_dirs)):
        if not count:
            continue
        sys.path[:0] = [str(ROOT), str(ROOT / "export")]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kdedge_fuzz_read_back") as work:
            tally, outcome = fuzz(count, args.seed, Path(work))
        seconds = time.perf_counter() - start
        counts = ", ".join(f"{key} {value:,}" for key, value in outcome.items())
        _report(total, tally, f"{name:<26} {tally.inputs:>8,} inputs  in {seconds:7.1f} s = "
                f"{tally.inputs / seconds:8,.0f}/s; {counts}; unexpected {tally.crashes}")
    try:
        import resource

        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    except ImportError:
        pass
    seconds = time.perf_counter() - start_all
    print(f"TOTAL {total.inputs:,} inputs in {seconds:.1f} s ({total.inputs / seconds:,.0f}/s), "
          f"crashes: {total.crashes}")
    return 1 if total.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
