// The bundle's golden vectors (docs/bundle.md v2, "Golden vectors"): code points exact, known exact,
// probabilities within golden.tolerance, labels and judged equal.
import assert from "node:assert/strict";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { encode, encodeText, load, windowReach, windowRule } from "../dist/node.js";
import { BUNDLE, edgeTexts, LONG_DRUG_MESSAGE, readGolden, readManifest, unknownChars } from "./common.mjs";

/** Code points read by each window of `text`, summed (the denominator of coverage). */
const readOverWindows = (text, manifest) => encodeText(text, manifest).rows.reduce((n, row) => n + row.filter((c) => c !== 0).length, 0);

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
      if ("windows" in g) assert.equal(e.rows.length, g.windows, `line ${i + 1}: windows`);
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
      if ("windows" in g) assert.equal(p.windows, g.windows, `${where}: windows`);
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

  test("code points, not UTF-16 units; max_len, windows and truncation", () => {
    const maxLen = manifest.input.max_len;
    const e = encodeText("𠀀😀", manifest);
    assert.deepEqual([...e.codepoints.slice(0, 3)], [0x20000, 0x1f600, 0]);
    assert.equal(e.tokens, 2);
    assert.equal(e.rows.length, 1);
    const reach = windowReach(windowRule(manifest.input));
    const long = encodeText("痛".repeat(reach + 1), manifest);
    assert.equal(long.tokens, reach);
    assert.equal(long.truncated, true);
    for (const n of [maxLen, reach]) {
      assert.equal(encodeText("痛".repeat(n), manifest).truncated, false, `${n} code points`);
      assert.equal(encodeText("痛".repeat(n) + " ", manifest).truncated, false, "a dropped code point after the last one read is not more text");
    }
    // without a window rule (bundles before it, and older readers): the first max_len code points only
    const { windows, ...noRule } = manifest.input;
    const first = encodeText("痛".repeat(maxLen + 1), { input: noRule });
    assert.deepEqual([first.tokens, first.truncated, first.rows.length], [maxLen, true, 1]);
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
      const read = readOverWindows(texts[i], manifest); // tokens when the text is one window
      assert.ok(p.known >= 0 && p.known <= read && read >= p.tokens, `text ${i}: known ${p.known} tokens ${p.tokens} read ${read}`);
      assert.equal(p.coverage, p.known / read, `text ${i}: coverage`);
      if (!p.judged) assert.deepEqual(p.labels, []);
    });
  });
});

describe(`long texts read whole (docs/bundle.md "Long texts (windows)") on ${BUNDLE}`, () => {
  const manifest = readManifest();
  const { golden } = readGolden();
  const maxLen = manifest.input.max_len;
  const rule = windowRule(manifest.input);
  const reach = windowReach(rule);
  const DRUG = manifest.labels.indexOf("DRUG");
  let clf, tmp, noRule;
  before(async () => {
    clf = await load(BUNDLE);
    // the same bundle without input.windows: what a reader of the first max_len code points gives
    tmp = await mkdtemp(join(tmpdir(), "kdedge-js-long-"));
    const dir = join(tmp, "b");
    await cp(BUNDLE, dir, { recursive: true, dereference: true });
    const m = readManifest(dir);
    delete m.input.windows;
    await writeFile(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
    noRule = await load(dir, { verifyGolden: false }); // its long golden vectors were read in windows
  });
  after(async () => {
    await clf?.close();
    await noRule?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  test("the bundle has a window rule: windows of max_len, half overlapping, max-pooled", () => {
    assert.ok(manifest.input.windows, "input.windows in the manifest");
    assert.deepEqual(rule, { size: maxLen, stride: maxLen / 2, max_windows: 16, pool: "max" });
  });

  test("a 411-character message naming its drug only at the end gets DRUG (a golden vector); without windows it did not", async () => {
    assert.ok(DRUG >= 0, "the bundle has a DRUG label");
    const g = golden.find((x) => x.text === LONG_DRUG_MESSAGE);
    assert.ok(g, "the drug message is a golden vector");
    assert.equal([...LONG_DRUG_MESSAGE].length, 411);
    assert.ok(LONG_DRUG_MESSAGE.indexOf("阿斯匹靈") >= maxLen, "the drug is named after the first max_len characters only");
    const p = await clf.predict(LONG_DRUG_MESSAGE);
    assert.ok(p.labels.includes("DRUG"), `DRUG in ${JSON.stringify(p.labels)}`);
    assert.deepEqual([p.tokens, p.truncated, p.windows, p.judged], [411, false, 6, true]);
    assert.ok(Math.abs(p.probabilities.DRUG - g.probabilities[DRUG]) <= manifest.golden.tolerance);
    const before = await noRule.predict(LONG_DRUG_MESSAGE);
    assert.ok(!before.labels.includes("DRUG"), `without windows: ${JSON.stringify(before.labels)}`);
    assert.deepEqual([before.tokens, before.truncated, before.windows], [maxLen, true, 1]);
    console.log(`long text: the 411-character drug message, DRUG ${before.probabilities.DRUG.toFixed(4)} reading the first ` +
      `${maxLen} characters (truncated) → ${p.probabilities.DRUG.toFixed(4)} in ${p.windows} windows (threshold ` +
      `${manifest.thresholds[DRUG].toFixed(4)}); labels ${JSON.stringify(p.labels)}`);
  });

  test("a text of at most max_len code points is one window: exactly what a reader without windows gives", async () => {
    for (const g of golden.filter((x) => x.tokens <= maxLen)) {
      const [a, b] = [await clf.predict(g.text), await noRule.predict(g.text)];
      assert.deepEqual(a, b, JSON.stringify(g.text.slice(0, 20)));
      assert.equal(a.windows, 1);
    }
  });

  test("a long text's probabilities are the max over its judged windows, each run alone", async () => {
    const long = golden.filter((g) => g.windows > 1);
    assert.ok(long.length >= 5, `${long.length} long golden vectors`);
    const minCoverage = manifest.abstain.min_coverage;
    for (const g of long) {
      const rows = encodeText(g.text, manifest).rows;
      const windowTexts = rows.map((row) => String.fromCodePoint(...row.filter((c) => c !== 0)));
      const alone = await clf.predict(windowTexts);
      const p = await clf.predict(g.text);
      const votes = alone.filter((w) => !p.judged || w.judged);
      assert.ok(votes.length >= 1);
      for (const label of clf.labels) {
        assert.equal(p.probabilities[label], Math.max(...votes.map((w) => w.probabilities[label])), `${label} of ${JSON.stringify(g.text.slice(0, 20))}`);
      }
      assert.equal(p.known, alone.reduce((n, w) => n + w.known, 0));
      const read = alone.reduce((n, w) => n + w.tokens, 0);
      assert.equal(p.judged, p.known > 0 && p.known / read >= minCoverage);
      assert.equal(p.windows, rows.length);
    }
  });

  test("past the window bound the rest is cut and the text is truncated; up to it nothing is", async () => {
    for (const [n, windows, truncated] of [[maxLen + 1, 2, false], [reach, rule.max_windows, false], [reach + 1, rule.max_windows, true], [10 * reach, rule.max_windows, true]]) {
      const p = await clf.predict("頭痛".repeat(n).slice(0, n));
      assert.deepEqual([p.tokens, p.windows, p.truncated], [Math.min(n, reach), windows, truncated], `${n} code points`);
    }
  });
});
