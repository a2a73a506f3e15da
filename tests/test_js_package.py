"""runtime/js as the npm package a JavaScript developer installs (@kdedge/reader).

`npm pack` in runtime/js (prepack builds dist/), a scratch Node project in a temporary directory, the
tarball and onnxruntime-node installed there without the registry (--offline: onnxruntime-node is
runtime/js's own copy from `npm ci`), then a plain ESM script that imports "@kdedge/reader" and classifies
Chinese texts with the shipped bundle: the probabilities must equal the Python reader's (kdedge_run)
within 1e-4 and the labels must be the same. TypeScript in the scratch project checks the `types`
conditions of the package's exports.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "runtime" / "js"
BUNDLE = Path(os.environ.get("KDEDGE_BUNDLE", REPO / "models" / "default")).resolve()
TEXTS = ["我最近頭痛又發燒，吃了普拿疼還是不舒服", "膝蓋痛要不要去照超音波", "每天吃魚油和益生菌有用嗎",
         "高血壓的人可以喝咖啡嗎", "醫生說要抽血檢查膽固醇"]
TOLERANCE = 1e-4

pytestmark = pytest.mark.slow


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node or npm not on PATH (Node 20 + npm are needed for runtime/js)")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        message = f"{JS / 'node_modules'} missing: run `(cd runtime/js && npm ci --ignore-scripts)`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node, npm


def _run(args: list[str], cwd: Path, timeout: int = 600) -> str:
    env = dict(os.environ, npm_config_audit="false", npm_config_fund="false", npm_config_update_notifier="false")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"$ {' '.join(args)}  (in {cwd}, exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    _, npm = _tools()
    out = tmp_path_factory.mktemp("pack")
    stdout = _run([npm, "pack", "--json", "--pack-destination", str(out)], JS)
    info = json.loads(stdout[stdout.index("[\n"):])  # after what prepack's build prints
    path = out / info[0]["filename"]
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def app(tarball, tmp_path_factory) -> Path:
    """A scratch project with the packed reader, onnxruntime-node and onnxruntime-web installed (no registry)."""
    _, npm = _tools()
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "scratch-app", "private": True, "type": "module"}))
    _run([npm, "install", "--offline", "--ignore-scripts", "--no-package-lock", str(tarball),
          str(JS / "node_modules" / "onnxruntime-node"), str(JS / "node_modules" / "onnxruntime-web")], app)
    return app


def test_tarball_contents(tarball):
    """The package holds the built reader, its types and README, not the demo, tests or node_modules."""
    with tarfile.open(tarball) as tar:
        names = sorted(n.removeprefix("package/") for n in tar.getnames())
        manifest = json.load(tar.extractfile("package/package.json"))
    for needed in ("package.json", "README.md", "dist/node.js", "dist/node.d.ts", "dist/browser.js",
                   "dist/browser.d.ts", "dist/core.js", "dist/core.d.ts"):
        assert needed in names, f"{needed} missing from {names}"
    assert not [n for n in names if n.startswith(("test/", "demo/", "scripts/", "node_modules/")) or "demo." in n], names
    assert manifest["name"] == "@kdedge/reader" and manifest["license"] == "Apache-2.0"
    assert "dependencies" not in manifest, "ONNX Runtime is a peer dependency, not a dependency"
    assert set(manifest["peerDependencies"]) == {"onnxruntime-node", "onnxruntime-web"}
    assert all(manifest["peerDependenciesMeta"][k]["optional"] for k in manifest["peerDependencies"])
    for entry in (manifest["exports"]["."]["node"], manifest["exports"]["."]["browser"], manifest["exports"]["./core"]):
        assert entry["types"].endswith(".d.ts") and entry["default"].endswith(".js") and list(entry)[0] == "types"


def _compare(js_predictions: list[dict], where: str) -> None:
    """Predictions of the JS reader for TEXTS against kdedge_run's (onnx backend): labels equal, |Δp| <= 1e-4."""
    import kdedge_run

    py = kdedge_run.load(str(BUNDLE), backend="onnx").predict(TEXTS)
    assert len(js_predictions) == len(TEXTS)
    worst = 0.0
    for text, a, b in zip(TEXTS, js_predictions, py):
        assert a["labels"] == list(b.labels), f"{where}, {text}: {a['labels']} vs kdedge_run {list(b.labels)}"
        assert set(a["probabilities"]) == set(b.probabilities)
        for label, p in b.probabilities.items():
            worst = max(worst, abs(a["probabilities"][label] - float(p)))
        assert a["truncated"] == b.truncated and a["tokens"] == b.tokens and a["judged"] == b.judged
    assert worst <= TOLERANCE, f"{where}: max |Δp| {worst} > {TOLERANCE}"
    assert any(p["labels"] for p in js_predictions), "no text got a label: the comparison would be vacuous"


def test_installed_package_predicts_like_kdedge_run(app):
    """import "@kdedge/reader" from an installed tarball → the same probabilities as kdedge_run (1e-4)."""
    import kdedge_run

    node, _ = _tools()
    assert (app / "node_modules" / "@kdedge" / "reader" / "dist" / "node.js").is_file()
    assert not (app / "node_modules" / "@kdedge" / "reader").is_symlink(), "installed from the tarball, not linked"
    script = app / "predict.mjs"
    script.write_text("""
import { load, BundleError, FORMAT_VERSION } from "@kdedge/reader";
import * as core from "@kdedge/reader/core";
const [bundle, texts] = [process.argv[2], JSON.parse(process.argv[3])];
if (typeof core.loadWith !== "function" || core.BundleError !== BundleError) throw new Error("@kdedge/reader/core");
const clf = await load(bundle);
const predictions = await clf.predict(texts);
await clf.close();
process.stdout.write(JSON.stringify({ formatVersion: FORMAT_VERSION, labels: clf.labels, predictions }));
""", encoding="utf-8")
    js = json.loads(_run([node, str(script), str(BUNDLE), json.dumps(TEXTS, ensure_ascii=False)], app))
    assert js["formatVersion"] == 2
    assert js["labels"] == list(kdedge_run.load(str(BUNDLE), backend="onnx").labels)
    _compare(js["predictions"], "Node")


def test_installed_package_types(app):
    """TypeScript (NodeNext) in the scratch project finds the types of "@kdedge/reader" and its ./core."""
    node, _ = _tools()
    tsc = JS / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.skip("typescript not installed in runtime/js/node_modules")
    (app / "check.ts").write_text("""
import { load, type Prediction, type Classifier } from "@kdedge/reader";
import { loadWith, type OrtLike } from "@kdedge/reader/core";
const clf: Classifier = await load("models/default");
const p: Prediction = await clf.predict("頭痛");
const n: number = p.probabilities["SYMP"] + p.coverage;
const f: typeof loadWith = loadWith;
export { n, f };
export type { OrtLike };
""", encoding="utf-8")
    (app / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": True, "noEmit": True,
        "skipLibCheck": True, "types": []}, "files": ["check.ts"]}))
    _run([node, str(tsc), "-p", "tsconfig.json"], app)
    # and the check can fail: a wrong type is an error
    (app / "check.ts").write_text('import { load } from "@kdedge/reader";\nconst x: number = load;\nexport { x };\n')
    proc = subprocess.run([node, str(tsc), "-p", "tsconfig.json"], cwd=app, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "TS2322" in proc.stdout, proc.stdout


BROWSER_DRIVER = """
// Bundle the scratch app's page script (which imports "@kdedge/reader") for the browser with esbuild,
// serve it and the bundle on localhost, run it in headless Chromium; print the predictions as JSON.
import { createRequire } from "node:module";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
const [js, bundleDir, chromiumPath, textsJson] = process.argv.slice(2);
const tools = createRequire(join(js, "package.json"));  // esbuild and playwright-core: runtime/js's dev tools
const { build } = tools("esbuild");
const { chromium } = tools("playwright-core");
const { startServer } = await import(join(js, "scripts", "server.mjs"));
const www = join(process.cwd(), "www");
await mkdir(join(www, "ort"), { recursive: true });
await build({ entryPoints: ["page.mjs"], outfile: join(www, "page.js"), bundle: true, format: "esm",
              platform: "browser", target: "es2022", logLevel: "warning" });
const app = createRequire(join(process.cwd(), "package.json"));  // the app's own onnxruntime-web
const ortDist = dirname(app.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm"));
for (const name of ["ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"]) await copyFile(join(ortDist, name), join(www, "ort", name));
await writeFile(join(www, "index.html"), '<!doctype html><meta charset="utf-8"><script type="module" src="page.js"></script>');
const { server, url } = await startServer({ bundleDir, demoDir: www });
const browser = await chromium.launch({ executablePath: chromiumPath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.route("**/*", (r) => r.request().url().startsWith(url) ? r.continue() : r.abort());
  await page.goto(url);
  await page.waitForFunction(() => window.kdedgeReady !== undefined, null, { timeout: 120000 });
  const out = await page.evaluate(async (texts) => {
    if (window.kdedgeReady !== true) return { error: String(window.kdedgeReady) };
    return { predictions: await window.kdedgePredict(texts) };
  }, JSON.parse(textsJson));
  if (errors.length) out.pageErrors = errors;
  process.stdout.write(JSON.stringify(out));
} finally {
  await browser.close();
  server.close();
}
"""

PAGE = """
import { load } from "@kdedge/reader";  // the browser condition: dist/browser.js with onnxruntime-web
load(new URL("bundle/", location.href).href, { wasmPaths: new URL("ort/", location.href).href }).then(
  (clf) => { window.kdedgePredict = (texts) => clf.predict(texts); window.kdedgeReady = true; },
  (e) => { window.kdedgeReady = `${e.name}: ${e.message}`; });
"""


def test_installed_package_in_chromium(app):
    """The installed package bundled for the browser (esbuild, `browser` condition) in headless Chromium
    with onnxruntime-web: the same predictions as kdedge_run (1e-4)."""
    node, _ = _tools()
    chromium = os.environ.get("KDEDGE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{chromium} missing: apt-get install -y chromium")
        pytest.skip(f"{chromium} missing")
    (app / "page.mjs").write_text(PAGE, encoding="utf-8")
    (app / "driver.mjs").write_text(BROWSER_DRIVER, encoding="utf-8")
    out = json.loads(_run([node, "driver.mjs", str(JS), str(BUNDLE), chromium, json.dumps(TEXTS, ensure_ascii=False)],
                          app, timeout=600))
    assert "error" not in out and "pageErrors" not in out, out
    _compare(out["predictions"], "Chromium")
