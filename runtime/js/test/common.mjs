// Shared by the tests: where the bundle, the repository and the parity texts are; the Python runtime.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { cp, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_DIR = resolve(fileURLToPath(new URL("..", import.meta.url)));
export const REPO = resolve(PACKAGE_DIR, "..", "..");
/** The bundle under test: $KDEDGE_BUNDLE, default <repo>/models/default. */
export const BUNDLE = resolve(process.env.KDEDGE_BUNDLE ?? join(REPO, "models", "default"));
/** Real texts for the parity test: <repo>/../shared/data/healthner9/texts.jsonl (override: $KDEDGE_PARITY_TEXTS_FILE). */
export const TEXTS_FILE = resolve(process.env.KDEDGE_PARITY_TEXTS_FILE ??
  join(REPO, "..", "shared", "data", "healthner9", "texts.jsonl"));
export const PARITY_TEXTS = Number(process.env.KDEDGE_PARITY_TEXTS ?? 2000);
/** The Python that has kdedge_run: $KDEDGE_PYTHON, else `python` on PATH (the venv's, under pytest). */
export const PYTHON = process.env.KDEDGE_PYTHON ?? "python";
/** kdedge_run's backend for the comparison: $KDEDGE_PYTHON_BACKEND, default "onnx" (the model file this
 * reader runs); empty = kdedge_run's own default (the manifest's first installed format). */
export const PYTHON_BACKEND = process.env.KDEDGE_PYTHON_BACKEND ?? "onnx";

export function readManifest(dir = BUNDLE) {
  return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf-8"));
}

/** The golden vectors of the bundle (manifest.golden.file), one object per line. */
export function readGolden(dir = BUNDLE) {
  const manifest = readManifest(dir);
  if (!manifest.golden?.file) throw new Error(`${dir}/manifest.json has no 'golden' entry`);
  const lines = readFileSync(join(dir, manifest.golden.file), "utf-8").split("\n").filter((l) => l.trim() !== "");
  return { manifest, golden: lines.map((l) => JSON.parse(l)) };
}

/** The first `n` `text` fields of a JSON-lines file. */
export function readTexts(file = TEXTS_FILE, n = PARITY_TEXTS) {
  if (!existsSync(file)) {
    throw new Error(`${file}: missing; the parity test needs healthner9's texts.jsonl in ../shared beside the repository`);
  }
  const out = [];
  for (const line of readFileSync(file, "utf-8").split("\n")) {
    if (out.length >= n) break;
    if (line.trim() === "") continue;
    out.push(JSON.parse(line).text);
  }
  return out;
}

/**
 * A copy of `bundle` at `dir` whose ONNX model is `variant` of the original (test/faulty_model.py, run
 * with $KDEDGE_PYTHON, which needs Python `onnx`), its manifest.json checksum recomputed → `dir`.
 */
export async function faultyBundle(dir, variant, bundle = BUNDLE) {
  const rel = readManifest(bundle).models.find((m) => m.format === "onnx").file;
  await cp(bundle, dir, { recursive: true, dereference: true });
  const model = join(dir, ...rel.split("/"));
  const r = spawnSync(PYTHON, [join(PACKAGE_DIR, "test", "faulty_model.py"), model, model, variant], { encoding: "utf-8" });
  assert.equal(r.status, 0, `faulty_model.py ${variant}: ${r.error ?? ""}${r.stderr}`);
  const bytes = await readFile(model);
  const m = readManifest(dir);
  m.files[rel] = { sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
  await writeFile(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
  return dir;
}

/** The patient's 411-character message that names its drug only at the end (code point 389 on): a golden
 * vector of the default bundle (export/kdedge_export/golden.py LONG_DRUG_MESSAGE). */
export const LONG_DRUG_MESSAGE =
  "醫生您好，我今年四十五歲，是一名上班族，平常工作壓力很大，經常加班到很晚才回家。" +
  "大約從兩個月前開始，我常常在早上起床的時候覺得頭很重，太陽穴兩邊會一陣一陣地抽痛，" +
  "有時候還會覺得脖子和肩膀非常僵硬。最近這兩個星期情況變得更嚴重了，下午開會的時候眼睛會發脹，" +
  "看電腦螢幕久了會頭暈，晚上也睡不好，常常半夜醒來就再也睡不著。" +
  "我之前有高血壓的病史，家裡有血壓計，量起來大概都在一百四十到一百五十之間，比以前高一些。" +
  "我父親也有高血壓，十年前還因為中風住院過，所以我很擔心自己也會這樣。" +
  "我平常很少運動，飲食比較重口味，喜歡吃滷味和泡麵，咖啡一天要喝三杯左右，" +
  "體重這半年也增加了五公斤左右。我試過睡前泡腳和請家人幫忙按摩，但是效果都不太好。" +
  "上個禮拜我去家附近的診所看診，醫生幫我量了血壓，也抽血檢查了膽固醇和血糖，說結果還要再追蹤。" +
  "請問我現在的狀況需要再去大醫院做更詳細的檢查嗎？" +
  "還有，醫生開了阿斯匹靈給我，我現在每天早上吃一顆阿斯匹靈。";

/** Unknown characters (Private Use Area): no vocabulary holds them. */
export const unknownChars = (n, from = 0) => Array.from({ length: n }, (_, i) => String.fromCodePoint(0xe000 + from + i)).join("");

/**
 * Texts at the edges of the contract, to run through both runtimes: nothing known, coverage just
 * below and at abstain.min_coverage, max_len and max_len + 1 code points, astral and dropped code
 * points, a lone surrogate, long texts at and past the window rule's reach and with windows judged and
 * not judged. `known` is a character the vocabulary holds.
 */
export function edgeTexts(manifest, known = "痛") {
  const minCoverage = manifest.abstain.min_coverage;
  const maxLen = manifest.input.max_len;
  const out = [unknownChars(3), `${unknownChars(5)} \u3000`, "😣👍", "𠮷𩸽"];
  const rule = manifest.input.windows;
  const reach = rule ? rule.size + (rule.max_windows - 1) * rule.stride : maxLen; // code points read at most
  for (const n of [4, 10, 20, maxLen, 2 * maxLen + 3]) {
    const atLeast = Math.max(1, Math.ceil(minCoverage * n - 1e-9)); // smallest known count with coverage >= min
    for (const k of [atLeast - 1, atLeast, atLeast + 1]) {
      if (k < 0 || k > n) continue;
      out.push(known.repeat(k) + unknownChars(n - k));
      out.push(unknownChars(n - k, 100) + known.repeat(k));
    }
  }
  out.push(known.repeat(maxLen), known.repeat(maxLen + 1), `${known.repeat(maxLen)} \t\n`,
    unknownChars(maxLen) + known.repeat(maxLen), `頭痛\ud800發燒`, `頭痛\udc00\ud800發燒`, "\u0000\u0085頭痛\u00a0",
    // long texts (docs/bundle.md "Long texts (windows)"): at and past the window bound, windows judged and not
    known.repeat(reach), known.repeat(reach + 1), `${known.repeat(reach - 1)} ${known}`, known.repeat(maxLen) + unknownChars(3 * maxLen),
    unknownChars(2 * maxLen) + known.repeat(maxLen) + unknownChars(maxLen, 300), LONG_DRUG_MESSAGE + unknownChars(150));
  return out;
}

const PY_SCRIPT = `
import json, sys
import kdedge_run
args = json.loads(sys.stdin.buffer.read().decode("utf-8", "surrogatepass"))
clf = kdedge_run.load(args["bundle"], backend=args["backend"] or None)
preds = clf.predict(args["texts"])
out = []
for p in preds:
    row = {"labels": list(p.labels), "probabilities": {k: float(v) for k, v in p.probabilities.items()},
           "truncated": bool(p.truncated), "tokens": int(p.tokens)}
    for name in ("known", "coverage", "judged", "windows"):
        if hasattr(p, name):
            row[name] = getattr(p, name)
    out.append(row)
sys.stdout.write(json.dumps({"kdedge_run": getattr(kdedge_run, "__version__", None), "backend": clf.backend,
                             "predictions": out}))
`;

/** Python kdedge_run's predictions for `texts` on `bundle`: {backend, predictions: [...]}. */
export function pythonPredict(texts, bundle = BUNDLE) {
  return new Promise((ok, bad) => {
    const child = spawn(PYTHON, ["-c", PY_SCRIPT], { stdio: ["pipe", "pipe", "pipe"] });
    const out = [], err = [];
    child.stdout.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => err.push(d));
    child.on("error", (e) => bad(new Error(`cannot run ${PYTHON}: ${e.message}`)));
    child.on("close", (code) => {
      const stderr = Buffer.concat(err).toString("utf-8");
      if (code !== 0) return bad(new Error(`${PYTHON} (kdedge_run) exited with ${code}:\n${stderr}`));
      try {
        ok(JSON.parse(Buffer.concat(out).toString("utf-8")));
      } catch (e) {
        bad(new Error(`cannot parse kdedge_run's output: ${e.message}\n${stderr}`));
      }
    });
    child.stdin.end(JSON.stringify({ bundle, texts, backend: PYTHON_BACKEND }));
  });
}
