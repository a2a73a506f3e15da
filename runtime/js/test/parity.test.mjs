// Parity with the Python runtime (kdedge_run) on real texts: identical labels, max |Δp| <= 1e-5.
import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeText, load } from "../dist/node.js";
import { BUNDLE, edgeTexts, PARITY_TEXTS, PYTHON, pythonPredict, readGolden, readManifest, readTexts, TEXTS_FILE } from "./common.mjs";

const TOLERANCE = 1e-5;

test(`parity with Python kdedge_run on the first ${PARITY_TEXTS} texts of ${TEXTS_FILE}`, async () => {
  const manifest = readManifest();
  const real = readTexts().filter((x) => encodeText(x, manifest).tokens > 0); // both runtimes refuse empty texts
  assert.ok(real.length >= Math.min(PARITY_TEXTS, 2000), `only ${real.length} usable texts`);
  // plus the golden texts and texts at the contract's edges (abstention, max_len, astral, dropped code points)
  const edge = [...readGolden().golden.map((g) => g.text), ...edgeTexts(manifest)];
  const texts = [...real, ...edge];
  const started = Date.now();
  const clf = await load(BUNDLE);
  const js = await clf.predict(texts);
  const jsSeconds = (Date.now() - started) / 1000;
  await clf.close();
  const py = await pythonPredict(texts);
  assert.equal(py.predictions.length, texts.length, "Python's prediction count");
  let maxDp = 0, worstText = -1, labelMismatches = 0;
  let notJudged = 0;
  const otherMismatches = { truncated: 0, tokens: 0, known: 0, coverage: 0, judged: 0, windows: 0 };
  const examples = [];
  const compared = new Set(["labels", "probabilities", "truncated", "tokens"]);
  texts.forEach((text, i) => {
    const a = js[i], b = py.predictions[i];
    if (!a.judged) notJudged++;
    for (const label of clf.labels) {
      const d = Math.abs(a.probabilities[label] - b.probabilities[label]);
      if (!(d <= maxDp)) { maxDp = Number.isNaN(d) ? Infinity : d; worstText = i; }
    }
    if (JSON.stringify(a.labels) !== JSON.stringify(b.labels)) {
      labelMismatches++;
      if (examples.length < 5) examples.push(`text ${i} ${JSON.stringify(text.slice(0, 40))}: JS ${JSON.stringify(a.labels)} Python ${JSON.stringify(b.labels)}`);
    }
    for (const key of Object.keys(otherMismatches)) {
      if (!(key in b)) continue; // fields the Python runtime does not report (yet)
      compared.add(key);
      const same = key === "coverage" ? Math.abs(a[key] - b[key]) <= 1e-12 : a[key] === b[key];
      if (!same) {
        otherMismatches[key]++;
        if (examples.length < 10) examples.push(`text ${i}: ${key} JS ${a[key]} Python ${b[key]}`);
      }
    }
  });
  const summary = `parity: ${real.length} real + ${edge.length} edge texts × ${clf.labels.length} labels, JS onnxruntime-node vs Python kdedge_run ` +
    `${py.kdedge_run} (${py.backend} backend, ${PYTHON}): max |dp| ${maxDp.toExponential(2)}` +
    `${worstText >= 0 ? ` (text ${worstText})` : ""}, label mismatches ${labelMismatches}, not judged ${notJudged}, ` +
    `compared ${[...compared].join(", ")}; other mismatches ${JSON.stringify(Object.fromEntries(Object.entries(otherMismatches).filter(([k]) => compared.has(k))))}; JS predicted in ${jsSeconds.toFixed(2)} s`;
  console.log(summary);
  for (const e of examples) console.log(`  ${e}`);
  assert.equal(labelMismatches, 0, `label mismatches: ${examples.join("; ")}`);
  assert.ok(maxDp <= TOLERANCE, `max |dp| ${maxDp} > ${TOLERANCE} (text ${worstText})`);
  for (const [key, count] of Object.entries(otherMismatches)) assert.equal(count, 0, `${key} mismatches: ${examples.join("; ")}`);
  assert.ok(compared.has("known") || !("known" in py.predictions[0]), "known compared when Python reports it");
});
