// Issue 29 benchmark: texts/s of predict() one text at a time, in batches of input order (the reader
// before length-aware batching), and in batches sorted by length (predict(texts) now). Prints a table;
// not a test (timings depend on the machine and its load).
//
//   cd runtime/js && npm run build
//   node scripts/bench-batch.mjs [texts.jsonl] [--n 2000] [--repeats 5] [--bundle DIR] [--threads 1]
//
// texts.jsonl: one JSON object per line with a "text" field; default <repo>/../shared/data/healthner9/texts.jsonl.
// The bundle defaults to runtime/kdedge_run/default_model, read with onnxruntime-node (one intra-op thread).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { BATCH_SIZE, encodeText, load } from "../dist/node.js";

const PACKAGE_DIR = resolve(fileURLToPath(new URL("..", import.meta.url)));

function parseArgs(argv) {
  const opts = {
    file: resolve(PACKAGE_DIR, "..", "..", "..", "shared", "data", "healthner9", "texts.jsonl"),
    n: 2000, repeats: 5, threads: 1,
    bundle: resolve(PACKAGE_DIR, "..", "kdedge_run", "default_model"),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--n") opts.n = Number(argv[++i]);
    else if (a === "--repeats") opts.repeats = Number(argv[++i]);
    else if (a === "--threads") opts.threads = Number(argv[++i]);
    else if (a === "--bundle") opts.bundle = resolve(argv[++i]);
    else if (a === "-h" || a === "--help") {
      console.log("usage: node scripts/bench-batch.mjs [texts.jsonl] [--n 2000] [--repeats 5] [--bundle DIR] [--threads 1]");
      process.exit(0);
    } else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else opts.file = resolve(a);
  }
  if (!(opts.n > 0) || !(opts.repeats > 0) || !(opts.threads > 0)) throw new Error("--n, --repeats and --threads must be positive");
  return opts;
}

function readTexts(file, n) {
  const out = [];
  for (const line of readFileSync(file, "utf-8").split("\n")) {
    if (out.length >= n) break;
    if (line.trim() !== "") out.push(JSON.parse(line).text);
  }
  return out;
}

function cpuModel() {
  try {
    const m = execFileSync("lscpu", { encoding: "utf-8" }).match(/^Model name:\s*(.+)$/m);
    if (m) return m[1].trim();
  } catch { /* no lscpu */ }
  return cpus()[0]?.model ?? "unknown";
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const load3 = () => loadavg().map((x) => x.toFixed(2)).join(" ");

async function seconds(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const opts = parseArgs(process.argv.slice(2));
const texts = readTexts(opts.file, opts.n);
const clf = await load(opts.bundle, { threads: opts.threads });
const manifest = clf.manifest;
const encoded = texts.map((t) => encodeText(t, manifest));
const tokens = encoded.map((e) => e.tokens);
const byLength = encoded.map((_, i) => i).sort((a, b) => tokens[a] - tokens[b] || a - b);
const tokenMedian = median(tokens);

/** Model runs only (Classifier.run: tensor, session, output checks), rows in `order`, `b` rows a run. */
async function runOnly(order, b) {
  for (let s = 0; s < order.length; s += b) {
    const idx = order.slice(s, s + b);
    await clf.run(idx.map((i) => encoded[i].codepoints), idx);
  }
}

const inputOrder = encoded.map((_, i) => i);
const modes = [
  { name: "predict(text), one at a time", batch: 1, api: "predict", fn: async () => { for (const t of texts) await clf.predict(t); } },
  { name: "predict(slice): input order (old)", batch: BATCH_SIZE, api: "predict",
    // a slice of BATCH_SIZE texts is one model run, padded to its longest text: the old predict(texts)
    fn: async () => { for (let s = 0; s < texts.length; s += BATCH_SIZE) await clf.predict(texts.slice(s, s + BATCH_SIZE)); } },
  { name: "predict(texts): by length (new)", batch: BATCH_SIZE, api: "predict", fn: () => clf.predict(texts) },
];
for (const b of [1, 64, 256]) {
  modes.push({ name: "run(rows): input order", batch: b, api: "run", fn: () => runOnly(inputOrder, b) });
  if (b > 1) modes.push({ name: "run(rows): by length", batch: b, api: "run", fn: () => runOnly(byLength, b) });
}
for (const b of [16, 32, 128, 512]) modes.push({ name: "run(rows): by length", batch: b, api: "run", fn: () => runOnly(byLength, b) });

// Per-call costs that make one text at a time slow in Node: a resolved await, a Tensor, a raw
// session.run on one short row, and the reader's run() and predict() on one short text.
async function perCall() {
  const row = encodeText("痛", manifest).codepoints;
  const maxLen = manifest.input.max_len;
  const session = clf.session; // private in TypeScript; the raw onnxruntime-node session
  const feeds = () => ({ [clf.model.input_name]: new ort.Tensor("int32", row, [1, maxLen]) });
  const calls = 2000;
  const each = async (fn) => {
    const xs = [];
    for (let r = 0; r < 3; r++) xs.push((await seconds(async () => { for (let i = 0; i < calls; i++) await fn(); })) / calls);
    return median(xs) * 1e6;
  };
  return {
    "await Promise.resolve()": await each(() => Promise.resolve()),
    "new ort.Tensor (1 × max_len int32)": await each(() => { new ort.Tensor("int32", new Int32Array(maxLen), [1, maxLen]); }),
    "session.run, 1 text of 1 char (raw ORT)": await each(() => session.run(feeds())),
    "clf.run, 1 text of 1 char (+ checks)": await each(() => clf.run([row])),
    "clf.predict('痛') (+ encode, decide)": await each(() => clf.predict("痛")),
  };
}

console.log(`kdedge JS reader: length-aware batching (issue 29)`);
console.log(`cpu: ${cpuModel()}, ${cpus().length} cores; node ${process.version}; onnxruntime-node ` +
  `${JSON.parse(readFileSync(join(PACKAGE_DIR, "node_modules", "onnxruntime-node", "package.json"), "utf-8")).version}; ` +
  `intra-op threads ${opts.threads}`);
console.log(`bundle: ${opts.bundle}`);
console.log(`texts: ${texts.length} from ${opts.file} (code points read: median ${tokenMedian}, max ${Math.max(...tokens)}, ` +
  `max_len ${manifest.input.max_len}); ${opts.repeats} repeats, median`);
console.log(`load average at start: ${load3()}`);

await clf.predict(texts.slice(0, 200)); // warm up
for (const t of texts.slice(0, 50)) await clf.predict(t);

const times = modes.map(() => []);
for (let r = 0; r < opts.repeats; r++) {
  for (const [m, mode] of modes.entries()) times[m].push(await seconds(mode.fn));
}
const rate = times.map((ts) => texts.length / median(ts));
const single = rate[0];
const singleRun = rate[modes.findIndex((m) => m.api === "run" && m.batch === 1)];

const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
console.log("");
console.log(`${pad("mode", 36)} ${lpad("batch", 5)} ${lpad("texts/s", 9)} ${lpad("× one at a time", 16)}`);
console.log(`${"-".repeat(36)} ${"-".repeat(5)} ${"-".repeat(9)} ${"-".repeat(16)}`);
for (const [m, mode] of modes.entries()) {
  const base = mode.api === "predict" ? single : singleRun;
  console.log(`${pad(mode.name, 36)} ${lpad(mode.batch, 5)} ${lpad(rate[m].toFixed(0), 9)} ${lpad(`${(rate[m] / base).toFixed(2)}×`, 16)}`);
}
console.log(`(× one at a time: predict rows against predict(text); run rows against run(rows) with batch 1)`);
const newRate = rate[modes.findIndex((m) => m.name.includes("(new)"))];
const oldRate = rate[modes.findIndex((m) => m.name.includes("(old)"))];
console.log(`\nnew / one at a time: ${(newRate / single).toFixed(2)}×   new / old: ${(newRate / oldRate).toFixed(2)}×   ` +
  `(issue 29 done when new ≥ 2× one at a time: ${newRate >= 2 * single ? "yes" : "no"})`);
const best = modes.map((mode, m) => ({ mode, r: rate[m] })).filter((x) => x.mode.api === "run" && x.mode.name.includes("by length"))
  .sort((a, b) => b.r - a.r)[0];
console.log(`best batch for run(rows) by length: ${best.mode.batch} (${best.r.toFixed(0)} texts/s)`);

// Where the time goes: µs per text by length, one text a run against 32 texts of that length a run.
// Batching saves the fixed cost of a run, not the cost per code point.
async function perLength() {
  const rows = [];
  for (const L of [1, 16, 44, 128]) {
    const row = encodeText("頭痛又發燒胃不舒服咳嗽".repeat(20).slice(0, L), manifest).codepoints;
    const batch = Array(32).fill(row);
    const one = [], many = [];
    for (let r = 0; r < 3; r++) {
      one.push((await seconds(async () => { for (let i = 0; i < 320; i++) await clf.run([row]); })) / 320);
      many.push((await seconds(async () => { for (let i = 0; i < 10; i++) await clf.run(batch); })) / 320);
    }
    rows.push([L, median(one) * 1e6, median(many) * 1e6]);
  }
  return rows;
}
console.log(`\nµs per text by code points read (clf.run, median of 3):`);
console.log(`  ${lpad("length", 6)} ${lpad("1 a run", 9)} ${lpad("32 a run", 9)} ${lpad("saved", 7)}`);
for (const [L, one, many] of await perLength()) {
  console.log(`  ${lpad(L, 6)} ${lpad(one.toFixed(1), 9)} ${lpad(many.toFixed(1), 9)} ${lpad((one - many).toFixed(1), 7)}`);
}

console.log(`\nper call (µs, median of 3 × 2000 calls):`);
for (const [what, us] of Object.entries(await perCall())) console.log(`  ${pad(what, 42)} ${lpad(us.toFixed(1), 8)}`);
console.log(`load average at end: ${load3()}`);
await clf.close();
