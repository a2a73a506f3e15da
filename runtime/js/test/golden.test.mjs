// The bundle's golden vectors (docs/bundle.md v2, "Golden vectors"): code points exact, known exact,
// probabilities within golden.tolerance, labels and judged equal.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { encode, encodeText, load } from "../dist/node.js";
import { BUNDLE, edgeTexts, readGolden, readManifest, unknownChars } from "./common.mjs";

describe(`golden vectors of ${BUNDLE}`, () => {
  const { manifest, golden } = readGolden();
  const tolerance = manifest.golden.tolerance;
  let clf;
  before(async () => { clf = await load(BUNDLE); });
  after(async () => { await clf?.close(); });

  test("golden.jsonl is complete", () => {
    assert.ok(golden.length > 0, "golden.jsonl has no vectors");
    assert.equal(golden.length, manifest.golden.texts, "golden.texts in the manifest");
    assert.ok(typeof tolerance === "number" && tolerance > 0 && tolerance <= 1e-3, `tolerance ${tolerance}`);
  });

  test("encode gives the golden code points exactly", () => {
    for (const [i, g] of golden.entries()) {
      assert.deepEqual(encode(g.text, manifest), g.codepoints, `line ${i + 1}: code points of ${JSON.stringify(g.text)}`);
      const e = encodeText(g.text, manifest);
      assert.equal(e.tokens, g.tokens, `line ${i + 1}: tokens`);
      assert.equal(e.truncated, g.truncated, `line ${i + 1}: truncated`);
    }
  });

  async function check(predictions) {
    let worst = 0;
    for (const [i, g] of golden.entries()) {
      const p = predictions[i];
      const where = `line ${i + 1} (${JSON.stringify(g.text.slice(0, 30))})`;
      assert.equal(p.known, g.known, `${where}: known`);
      assert.equal(p.tokens, g.tokens, `${where}: tokens`);
      assert.equal(p.truncated, g.truncated, `${where}: truncated`);
      assert.equal(p.judged, g.judged, `${where}: judged`);
      assert.equal(g.probabilities.length, clf.labels.length, `${where}: golden probabilities per label`);
      clf.labels.forEach((label, j) => {
        const d = Math.abs(p.probabilities[label] - g.probabilities[j]);
        worst = Math.max(worst, d);
        assert.ok(d <= tolerance, `${where}: ${label} probability ${p.probabilities[label]} vs golden ${g.probabilities[j]} (|Δ| ${d} > ${tolerance})`);
      });
      assert.deepEqual(p.labels, g.labels, `${where}: labels`);
    }
    return worst;
  }

  test("each text alone: known, probabilities, labels, judged", async () => {
    const predictions = [];
    for (const g of golden) predictions.push(await clf.predict(g.text));
    const worst = await check(predictions);
    console.log(`golden: ${golden.length} texts one by one, max |dp| ${worst.toExponential(2)} (tolerance ${tolerance}), 0 label mismatches`);
  });

  test("all texts in one batch give the same results", async () => {
    await check(await clf.predict(golden.map((g) => g.text)));
  });

  test("a text with nothing left after dropping is refused", async () => {
    const dropped = manifest.input.dropped;
    assert.ok(dropped.some(([a, b]) => a <= 0x20 && 0x20 <= b), "input.dropped holds the space (whitespace is dropped)");
    // every range's ends, each followed by a space (two adjacent surrogates would pair up into one code point)
    const onlyDropped = dropped.flat().map((cp) => `${String.fromCodePoint(cp)} `).join("");
    await assert.rejects(clf.predict(onlyDropped), /^Error: empty text$/);
    await assert.rejects(clf.predict(""), /empty text/);
    await assert.rejects(clf.predict(["頭痛", " "]), /text 1: empty text/);
  });

  test("code points, not UTF-16 units; max_len and truncation", () => {
    const maxLen = manifest.input.max_len;
    const e = encodeText("𠀀😀", manifest);
    assert.deepEqual([...e.codepoints.slice(0, 3)], [0x20000, 0x1f600, 0]);
    assert.equal(e.tokens, 2);
    const long = encodeText("痛".repeat(maxLen + 1), manifest);
    assert.equal(long.tokens, maxLen);
    assert.equal(long.truncated, true);
    assert.equal(encodeText("痛".repeat(maxLen), manifest).truncated, false);
    assert.equal(encodeText("痛".repeat(maxLen) + " ", manifest).truncated, false, "a dropped code point after max_len is not more text");
  });
});

describe(`abstention (abstain.min_coverage) on ${BUNDLE}`, () => {
  const manifest = readManifest();
  const minCoverage = manifest.abstain.min_coverage;
  let clf;
  before(async () => { clf = await load(BUNDLE); });
  after(async () => { await clf?.close(); });

  test("unknown characters only: known 0, not judged, no labels even at threshold 0", async () => {
    const p = await clf.predict(unknownChars(6), { threshold: 0 });
    assert.equal(p.known, 0);
    assert.equal(p.judged, false);
    assert.deepEqual(p.labels, []);
    assert.equal(Object.keys(p.probabilities).length, manifest.labels.length, "probabilities still reported");
  });

  test("coverage just below min_coverage is not judged; at it, it is", async () => {
    const known = "痛";
    assert.equal((await clf.predict(known)).known, 1, `${known} is in the vocabulary`);
    for (const n of [4, 10, 20]) {
      const atLeast = Math.max(1, Math.ceil(minCoverage * n - 1e-9));
      for (const k of [atLeast - 1, atLeast]) {
        if (k < 0) continue;
        const p = await clf.predict(known.repeat(k) + unknownChars(n - k), { threshold: 0 });
        assert.equal(p.tokens, n);
        assert.equal(p.known, k, `${k} known of ${n}`);
        assert.equal(p.coverage, k / n);
        const judged = k > 0 && k / n >= minCoverage;
        assert.equal(p.judged, judged, `${k}/${n} vs min_coverage ${minCoverage}`);
        assert.deepEqual(p.labels.length, judged ? manifest.labels.length : 0, "threshold 0: every label when judged, none when not");
      }
    }
  });

  test("edge texts run (known never exceeds tokens)", async () => {
    const texts = edgeTexts(manifest);
    const ps = await clf.predict(texts);
    ps.forEach((p, i) => {
      assert.ok(p.known >= 0 && p.known <= p.tokens, `text ${i}: known ${p.known} tokens ${p.tokens}`);
      if (!p.judged) assert.deepEqual(p.labels, []);
    });
  });
});
