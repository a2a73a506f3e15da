"""The TypeScript reader in runtime/js (Node and browser): its own test suites, run through npm.

`npm test` builds the package and checks the golden vectors, the refusals and parity with kdedge_run on
2,000 healthner9 texts (../shared); `npm run test:browser` runs the demo page in headless Chromium.
The bundle is $KDEDGE_BUNDLE (default models/default). The venv's `python` is first on PATH, so the
parity tests compare with this kdedge_run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "runtime" / "js"


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


@pytest.mark.slow
def test_npm_test():
    """tsc build, golden vectors, refusals, parity with kdedge_run (onnxruntime-node)."""
    _run("test", timeout=900)


@pytest.mark.slow
def test_browser_demo():
    """The demo page in headless Chromium with onnxruntime-web: same labels as Node and Python, offline."""
    _run("run", "test:browser", timeout=900)


# --- the model card (README.md of a bundle) shows labels and descriptions as text, not HTML ---------------

HOSTILE = ["<script>alert('label')</script>", "<img src=x onerror=alert(1)>", "A&B <b>bold</b>"]


def _hostile_manifest() -> tuple[dict, dict]:
    """The shipped bundle's manifest with its first labels, a description, the intended use and a note
    replaced by HTML, every per-label table renamed to match; and run facts with a hostile data path."""
    m = json.loads((REPO / "models" / "default" / "manifest.json").read_text(encoding="utf-8"))
    rename = dict(zip(m["labels"], HOSTILE))

    def renamed(x):
        if isinstance(x, dict):
            return {rename.get(k, k): renamed(v) for k, v in x.items()}
        if isinstance(x, list):
            return [renamed(v) for v in x]
        return rename.get(x, x) if isinstance(x, str) else x

    m = renamed(m)
    m["label_descriptions"][HOSTILE[0]] = '<script>fetch("//evil")</script> a "quoted" description'
    m["label_descriptions"][HOSTILE[1]] = "<img src=x onerror=alert(2)> & more"
    m["intended_use"] = "tagging <iframe src=//evil></iframe> texts"
    m["notes"] = ["a note with <svg onload=alert(3)>"]
    m["thresholds"][1] = 0.1  # listed among the "very low thresholds"
    m["metrics"]["tuned"]["per_label_f1"][HOSTILE[2]] = 0.2  # listed among the "weak labels"
    run_info = {"data": {"path": "data/x`<img src=y onerror=alert(4)>`.jsonl", "sha256": "ab" * 32, "texts": 10}}
    return m, run_info


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_model_card_escapes_html_in_labels_and_descriptions():
    """card.model_card on hostile labels and descriptions: rendered as Markdown with raw HTML allowed
    (as GitHub and npm read a README before sanitising), no element comes from the manifest."""
    from kdedge_export.card import model_card

    m, run_info = _hostile_manifest()
    card = model_card(m, run_info)
    outside_code = "".join(card.split("`")[0::2])  # text outside `code spans` (shown literally there)
    assert "<this directory>" in card  # the one "<" the card writes itself, inside a code span
    for raw in ("<script", "<img", "<iframe", "<svg", "<b>"):
        assert raw not in outside_code, f"{raw} left unescaped in the card"
    for shown in ("&lt;script&gt;alert('label')&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;",
                  "A&amp;B &lt;b&gt;bold&lt;/b&gt;", "&lt;img src=x onerror=alert(2)&gt; &amp; more",
                  "tagging &lt;iframe src=//evil&gt;&lt;/iframe&gt; texts", "a note with &lt;svg onload=alert(3)&gt;",
                  "Weak labels (validation F1 below 50% at the tuned thresholds): A&amp;B &lt;b&gt;bold&lt;/b&gt;",
                  "&lt;img src=x onerror=alert(1)&gt; (0.10)"):
        assert shown in card, shown
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(card)
    parser = _Tags()
    parser.feed(html)
    allowed = {"h1", "h2", "p", "strong", "em", "code", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "img"}
    assert {tag for tag, _ in parser.tags} <= allowed, sorted({tag for tag, _ in parser.tags} - allowed)
    assert [a for tag, a in parser.tags if tag == "img"] == [{"src": "label_f1.png", "alt": "per-label F1"}]
    assert not any(k.startswith("on") for _, a in parser.tags for k in a), "an event handler attribute"
    # what a reader sees: the hostile strings as text
    text = markdown_it.MarkdownIt("commonmark").enable("table").render(card)
    assert "&lt;script&gt;alert('label')&lt;/script&gt;" in text or "&lt;script&gt;alert(&#39;label&#39;)" in text
