"""The two readers of version-2 bundles agree by construction: one source of limits, one set of cases.

runtime/conformance/make_cases.py writes copies of models/default with one change each and the verdict
docs/bundle.md gives each ("ok" or "refused"); kdedge_run loads every case in this process while @kdedge/reader
(runtime/js/dist/node.js) loads them in one Node process (runtime/conformance/verdicts.mjs), and both must give
every case its verdict. The limits both check come from runtime/kdedge_run/limits.json: kdedge_run reads it,
runtime/js/src/limits.ts is written from it at build. Needs node and the built reader (`npm run build` in
runtime/js, which .ci/run does): skipped without them, failed when CI is set.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

import kdedge_run
from kdedge_run.bundle import LIMITS, BundleError

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "runtime" / "js"
CONFORMANCE = REPO / "runtime" / "conformance"
LIMITS_FILE = REPO / "runtime" / "kdedge_run" / "limits.json"


def _node() -> str:
    """node, with runtime/js built from its current sources."""
    node, built = shutil.which("node"), JS / "dist" / "core.js"
    if node is None or not built.is_file():
        message = ("node not on PATH (Node 20 is needed for runtime/js)" if node is None else
                   f"{built} missing: run `npm run build` in runtime/js")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    stale = [p.name for p in (JS / "src").glob("*.ts") if p.stat().st_mtime > built.stat().st_mtime]
    assert not stale, f"runtime/js/dist is older than src/{stale[0]}: run `npm run build` in runtime/js"
    return node


def _make_cases():
    spec = importlib.util.spec_from_file_location("make_cases", CONFORMANCE / "make_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_verdict(path: Path) -> tuple[str, str]:
    """kdedge_run's verdict on one case: ("ok" | "refused" | "error", message)."""
    try:
        kdedge_run.load(path)
    except BundleError as e:
        return "refused", str(e)
    except Exception as e:  # any other exception is a reader bug: it must refuse with a BundleError
        return "error", f"{type(e).__name__}: {e}"
    return "ok", ""


def test_both_readers_give_every_case_its_verdict(tmp_path):
    node = _node()
    cases = _make_cases().generate(tmp_path)
    counts = {v: sum(c["expect"] == v for c in cases) for v in ("ok", "refused")}
    assert len(cases) >= 60 and counts["ok"] >= 10 and counts["refused"] >= 50, counts
    js = subprocess.Popen([node, str(CONFORMANCE / "verdicts.mjs"), str(tmp_path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        python = {c["case"]: _python_verdict(tmp_path / c["case"]) for c in cases}
        out, err = js.communicate(timeout=600)
    finally:
        if js.poll() is None:
            js.kill()
            js.communicate()
    assert js.returncode == 0, f"verdicts.mjs exited with {js.returncode}:\n{err[-3000:]}"
    node_verdicts = {r["case"]: (r["verdict"], r["message"]) for r in map(json.loads, out.splitlines())}
    mismatches = []
    for c in cases:
        for reader, (verdict, message) in (("kdedge_run", python[c["case"]]),
                                           ("@kdedge/reader", node_verdicts.get(c["case"], ("missing", "")))):
            if verdict != c["expect"]:
                mismatches.append(f"{c['case']} ({c['change']}): expected {c['expect']}, {reader} says {verdict}"
                                  f"{': ' + message[:200] if message else ''}")
    assert not mismatches, f"{len(mismatches)} verdicts differ from docs/bundle.md's:\n" + "\n".join(mismatches)


def test_limits_have_one_source():
    """kdedge_run reads limits.json; src/limits.ts is what scripts/limits.mjs writes from it; the built reader
    exports the same values."""
    node = _node()
    declared = {k: v["value"] for k, v in json.loads(LIMITS_FILE.read_text("utf-8"))["limits"].items()}
    assert LIMITS == declared
    check = subprocess.run([node, str(JS / "scripts" / "limits.mjs"), "--check"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stderr
    script = ("const core = await import(process.argv[1]);"
              "const names = JSON.parse(process.argv[2]);"
              "console.log(JSON.stringify(Object.fromEntries(names.map((k) => [k, core[k.toUpperCase()]]))));")
    proc = subprocess.run([node, "--input-type=module", "-e", script, (JS / "dist" / "core.js").as_uri(),
                           json.dumps(sorted(declared))], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == declared, "the built JS reader's limits differ from limits.json"


def test_limits_file_ships_with_the_package():
    """kdedge_run's package data holds limits.json, so that an installed wheel reads it."""
    config = tomllib.loads((REPO / "runtime" / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["kdedge_run"]
    assert any(fnmatch.fnmatch(LIMITS_FILE.name, p) for p in patterns), patterns


READ_WITHIN_LIMITS = """
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
const [coreUrl, bundle] = process.argv.slice(1);
const core = await import(coreUrl);
const asked = {};
const read = async (rel, limit) => { asked[rel] = limit; return new Uint8Array(await readFile(join(bundle, rel))); };
const clf = await core.loadWith(read, ort, {}, undefined, bundle);
await clf.close();
const out = { asked };
for (const [name, reader] of [
  ["more bytes", async (rel, limit) => (rel === "README.md" ? new Uint8Array(limit + 1) : read(rel, limit))],
  ["FileTooLarge", async (rel, limit) => { if (rel === "README.md") throw new core.FileTooLarge(); return read(rel, limit); }],
  ["big manifest", async (rel, limit) => (rel === "manifest.json" ? new Uint8Array(limit + 1) : read(rel, limit))],
]) {
  try {
    await core.loadWith(reader, ort, {});
    out[name] = "loaded";
  } catch (e) {
    out[name] = e.message;
  }
}
console.log(JSON.stringify(out));
"""


def test_js_reader_reads_no_more_than_the_limits():
    """@kdedge/reader asks its file access for at most MAX_MANIFEST_BYTES of manifest.json and each file's listed
    size, and refuses a file access that gives more (or says the file is larger) naming the file."""
    node = _node()
    bundle = REPO / "models" / "default"
    proc = subprocess.run([node, "--input-type=module", "-e", READ_WITHIN_LIMITS, (JS / "dist" / "core.js").as_uri(),
                           str(bundle.resolve())], cwd=JS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    files = json.loads((bundle / "manifest.json").read_text("utf-8"))["files"]
    assert out["asked"] == {"manifest.json": LIMITS["max_manifest_bytes"]} | {rel: m["bytes"] for rel, m in files.items()}
    readme = files["README.md"]["bytes"]
    assert out["more bytes"] == f"README.md: size {readme + 1} bytes, manifest says {readme}"
    assert out["FileTooLarge"] == f"README.md: size more than {readme} bytes, manifest says {readme}"
    assert out["big manifest"].startswith(f"manifest.json: {LIMITS['max_manifest_bytes'] + 1} bytes, more than the")
