// Length-aware batching (issue 29): predict(texts) sorts the model rows (one per window of each text: docs/bundle.md
// "Long texts (windows)") by code points read, runs batches of BATCH_SIZE rows in that order and puts the results back in
// input order. The results must be those of one text at a time, and an error about a text must name its index in
// the input, not in the sorted order.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BATCH_SIZE, BundleError, encodeText, load } from "../dist/node.js";
import { BUNDLE, faultyBundle, readManifest } from "./common.mjs";

const POOL = "我最近頭痛又發燒吃了普拿疼還是不舒服膝蓋痛要看哪一科胃心臟糖尿病高血壓感冒咳嗽拉肚子膽固醇鈣尿酸" +
  "抗生素止痛藥開刀復健化療抽血超音波健檢血壓計護膝益生菌魚油葉黃素醫生說每天早上起床後喉嚨很乾，。？";
const TRIGGER = "😣"; // U+1F623: the code point that makes the "p=5@128547" model give 5 for a text

/** `count` Chinese texts of lengths 1..300 in a mixed order (1 + 151·i mod 300), deterministic. */
function mixedTexts(count) {
  const pool = [...POOL];
  let seed = 29;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
  return Array.from({ length: count }, (_, i) => {
    const n = 1 + ((i * 151) % 300);
    let s = "";
    for (let j = 0; j < n; j++) s += pool[next() % pool.length];
    return s;
  });
}

/** Wrap the classifier's ONNX session to record, per model run, the code points of each row. */
function recordBatches(clf) {
  const session = clf.session; // private in TypeScript; reachable from JavaScript, for this test only
  const original = session.run;
  const batches = [];
  const inputName = clf.model.input_name;
  session.run = function (feeds, ...rest) {
    const t = feeds[inputName];
    const [rows, maxLen] = t.dims;
    const tokens = [];
    for (let r = 0; r < rows; r++) {
      let c = 0;
      for (let j = 0; j < maxLen; j++) if (t.data[r * maxLen + j] !== 0) c++;
      tokens.push(c);
    }
    batches.push(tokens);
    return original.call(this, feeds, ...rest);
  };
  return { batches, restore: () => { session.run = original; } };
}

describe(`length-aware batching (${BUNDLE})`, () => {
  const maxLen = readManifest().input.max_len;
  let clf;
  before(async () => { clf = await load(BUNDLE); });
  after(async () => { await clf?.close(); });

  test("200 texts of 1..300 characters (1 to 4 windows): one array = one by one, in input order", async () => {
    const texts = mixedTexts(200);
    const { batches, restore } = recordBatches(clf);
    let together;
    try {
      together = await clf.predict(texts);
    } finally {
      restore();
    }
    // the rows (windows) ran shortest first, BATCH_SIZE at a time: no batch mixes short and long rows
    const rows = texts.reduce((n, t) => n + encodeText(t, readManifest()).rows.length, 0);
    assert.ok(rows > texts.length, `texts longer than max_len are several rows (${rows} rows)`);
    assert.deepEqual(batches.map((b) => b.length),
      [...Array(Math.ceil(rows / BATCH_SIZE)).keys()].map((b) => Math.min(BATCH_SIZE, rows - b * BATCH_SIZE)));
    const ran = batches.flat();
    for (let i = 1; i < ran.length; i++) assert.ok(ran[i - 1] <= ran[i], `rows run in order of length: ${ran[i - 1]} then ${ran[i]}`);

    assert.equal(together.length, texts.length);
    let worst = 0;
    for (const [i, text] of texts.entries()) {
      const alone = await clf.predict(text);
      const p = together[i];
      const where = `text ${i} (${[...text].length} characters)`;
      assert.equal(p.tokens, [...text].length, `${where}: tokens (input order; read whole)`);
      assert.equal(p.windows, [...text].length <= maxLen ? 1 : 1 + Math.ceil(([...text].length - maxLen) / (maxLen / 2)), `${where}: windows`);
      for (const key of ["tokens", "truncated", "known", "coverage", "judged", "windows"]) assert.equal(p[key], alone[key], `${where}: ${key}`);
      assert.deepEqual(p.labels, alone.labels, `${where}: labels`);
      assert.deepEqual(Object.keys(p.probabilities), clf.labels, `${where}: probability keys`);
      for (const label of clf.labels) worst = Math.max(worst, Math.abs(p.probabilities[label] - alone.probabilities[label]));
    }
    assert.ok(worst <= 1e-6, `max |Δp| batch vs one by one ${worst} > 1e-6`);
    console.log(`batching: 200 texts of 1..300 characters, ${batches.length} batches of rows by length; ` +
      `max |dp| vs one by one ${worst.toExponential(2)}, labels identical`);
  });

  test("options apply to every text as they do one by one", async () => {
    const texts = mixedTexts(90);
    const together = await clf.predict(texts, { threshold: 0.2, k: 2 });
    for (const [i, text] of texts.entries()) {
      assert.deepEqual(together[i].labels, (await clf.predict(text, { threshold: 0.2, k: 2 })).labels, `text ${i}: labels`);
    }
  });

  test("an empty array gives an empty array", async () => {
    assert.deepEqual(await clf.predict([]), []);
  });
});

describe(`a faulty text is named by its input index under batching (faulty copy of ${BUNDLE})`, () => {
  const labels = readManifest().labels;
  let tmp, clf, dir;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "kdedge-js-batch-"));
    dir = await faultyBundle(join(tmp, "b"), `p=5@${TRIGGER.codePointAt(0)}`);
    clf = await load(dir, { verifyGolden: false }); // a golden text holds the trigger
  });
  after(async () => {
    await clf?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  async function refusedNaming(texts, index) {
    await assert.rejects(clf.predict(texts), (e) => {
      assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
      assert.match(e.message, new RegExp(`^text ${index}: the model gave a probability outside \\[0, 1\\] for this text \\(${labels[0]}: 5\\)`));
      assert.ok(e.message.includes(`faulty bundle ${dir}`), e.message);
      return true;
    });
  }

  test("one faulty short text, run in the first (shortest) batch at another position → its input index", async () => {
    const texts = mixedTexts(150);
    texts[140] = `頭痛${TRIGGER}`;
    await refusedNaming(texts, 140);
  });

  test("a faulty long text at index 3 and a faulty short one at 140 → text 3 (the smallest index), though 140 runs first", async () => {
    const texts = mixedTexts(150);
    texts[3] = `${TRIGGER}${texts[3]}`; // 155 code points: two windows, the first (holding the trigger) in the last batch
    assert.ok([...texts[3]].length > 128);
    texts[140] = `頭痛${TRIGGER}`;
    await refusedNaming(texts, 3);
  });

  test("two faulty texts in one batch, the later one shorter → the earlier one", async () => {
    const texts = mixedTexts(150);
    texts[20] = `頭痛頭痛${TRIGGER}`;
    texts[100] = `痛${TRIGGER}`;
    await refusedNaming(texts, 20);
  });

  test("the same model classifies the texts once the faulty ones are gone", async () => {
    const texts = mixedTexts(150);
    const ps = await clf.predict(texts);
    assert.equal(ps.length, 150);
    assert.ok(ps.every((p) => Object.values(p.probabilities).every((v) => v >= 0 && v <= 1)));
  });
});
