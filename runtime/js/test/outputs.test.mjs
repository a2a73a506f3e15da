// The model's outputs are checked, not trusted: a bundle whose model.onnx gives probabilities outside
// [0, 1], NaN, a `known` count above the code points read (or below 0), or outputs of the wrong shape is
// refused, at load (the test inference) or for the text that shows it, naming the bundle.
// The faulty models are real ONNX graphs: the bundle's model.onnx with nodes added (test/faulty_model.py,
// Python `onnx`), and manifest.json's checksum for it recomputed.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BundleError, load } from "../dist/node.js";
import { BUNDLE, faultyBundle, readManifest } from "./common.mjs";

const TRIGGER = "😣"; // U+1F623: the code point that makes the "p=5@" model misbehave on one text only

describe(`model outputs are checked (faulty copies of ${BUNDLE})`, () => {
  const manifest = readManifest();
  const rel = manifest.models.find((m) => m.format === "onnx").file;
  let tmp;
  let n = 0;
  before(async () => { tmp = await mkdtemp(join(tmpdir(), "kdedge-js-out-")); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  /** A copy of the bundle whose model is `variant` of the original (faulty_model.py), checksums updated. */
  const faulty = (variant) => faultyBundle(join(tmp, `b${n++}`), variant);

  async function refused(dir, pattern) {
    await assert.rejects(load(dir), (e) => {
      assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
      assert.match(e.message, pattern);
      assert.ok(e.message.includes(dir), `the message names the bundle ${dir}: ${e.message}`);
      return true;
    });
  }

  test("a copy with an edited graph that changes nothing loads and predicts (the edits are not vacuous)", async () => {
    const clf = await load(await faulty("known+0"));
    const p = await clf.predict(`頭痛${TRIGGER}`);
    assert.ok(p.known >= 1 && p.known <= p.tokens);
    await clf.close();
  });

  for (const value of ["5", "-0.5", "1.0001"]) {
    test(`probabilities ${value} everywhere → refused at load (outside [0, 1])`, async () => {
      await refused(await faulty(`p=${value}`), new RegExp(`^${rel.replace(".", "\\.")}: test inference on an all-padding input failed: ` +
        `the model gave a probability outside \\[0, 1\\] for this input \\(${manifest.labels[0]}: ${value.replace(".", "\\.")}`));
    });
  }

  test("probabilities NaN everywhere → refused at load", async () => {
    await refused(await faulty("p=nan"), /test inference on an all-padding input failed: the model gave a NaN or infinite output/);
  });

  test("known + 1000 → refused at load (known above the code points read)", async () => {
    await refused(await faulty("known+1000"), /failed: the model's known output 1000 is outside \[0, 0\]/);
  });

  test("known - 1000 → refused at load (negative)", async () => {
    await refused(await faulty("known-1000"), /failed: the model's known output -1000 is outside \[0, 0\]/);
  });

  test("probabilities [labels, batch] (transposed) → refused at load (shape)", async () => {
    await refused(await faulty("transpose"), new RegExp(`output probabilities is not float32 \\[1, ${manifest.labels.length}\\] ` +
      `\\(batch, labels\\): got float32 \\[${manifest.labels.length},1\\]`));
  });

  test("probabilities [batch * labels] (1-D) → refused at load (the model's declared shape)", async () => {
    await refused(await faulty("flat"), new RegExp(`output probabilities shape \\[null\\] does not match \\[batch, labels\\] ` +
      `\\[null,${manifest.labels.length}\\]`));
  });

  for (const value of ["5", "-0.5", "nan"]) {
    test(`probability ${value} on one text only → that text refused, naming it and the bundle; others classified`, async () => {
      const dir = await faulty(`p=${value}@${TRIGGER.codePointAt(0)}`);
      const clf = await load(dir, { verifyGolden: false }); // the test inference does not hold the trigger; a golden text does
      try {
        const good = await clf.predict("我最近頭痛又發燒");
        assert.ok(Object.values(good.probabilities).every((p) => p >= 0 && p <= 1));
        const problem = value === "nan" ? "a NaN or infinite output" : "a probability outside \\[0, 1\\]";
        for (const [input, prefix] of [[`頭痛${TRIGGER}`, ""], [["頭痛", "發燒", `頭痛${TRIGGER}`], "text 2: "]]) {
          await assert.rejects(clf.predict(input), (e) => {
            assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
            assert.match(e.message, new RegExp(`^${prefix}the model gave ${problem} for this text \\(${manifest.labels[0]}: `));
            assert.ok(e.message.includes(`faulty bundle ${dir}`), e.message);
            return true;
          });
        }
      } finally {
        await clf.close();
      }
    });
  }
});
