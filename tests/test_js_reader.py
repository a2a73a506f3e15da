"""The TypeScript reader in runtime/js (Node and browser): its own test suites, run through npm.

`npm test` builds the package and checks the golden vectors, the refusals and parity with kdedge_run on
2,000 healthner9 texts (../shared); `npm run test:browser` runs the demo page in headless Chromium.
The bundle is $KDEDGE_BUNDLE (default models/default). The venv's `python` is first on PATH, so the
parity tests compare with this kdedge_run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "runtime" / "js"

pytestmark = pytest.mark.slow


def _npm() -> str:
    if not (JS / "node_modules").is_dir():
        message = f"{JS / 'node_modules'} missing: run `(cd runtime/js && npm ci)`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found on PATH (Node 20 + npm are needed for runtime/js)")
    return npm


def _run(*args: str, timeout: int) -> None:
    env = dict(os.environ)
    # the parity tests spawn `python`: make it this interpreter (the venv's), whatever PATH says
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("KDEDGE_PYTHON", sys.executable)
    proc = subprocess.run([_npm(), *args], cwd=JS, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"$ npm {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    print(output)
    assert proc.returncode == 0, output


def test_npm_test():
    """tsc build, golden vectors, refusals, parity with kdedge_run (onnxruntime-node)."""
    _run("test", timeout=900)


def test_browser_demo():
    """The demo page in headless Chromium with onnxruntime-web: same labels as Node and Python, offline."""
    _run("run", "test:browser", timeout=900)
