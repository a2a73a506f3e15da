// Golden vectors checked at load (docs/bundle.md "Golden vectors"), as kdedge_run does: a model swapped for
// another, or a damaged golden.jsonl, is refused even when every checksum in manifest.json was recomputed.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BundleError, load } from "../dist/node.js";
import { BUNDLE, faultyBundle, readManifest } from "./common.mjs";

/** JSON with every non-ASCII character escaped, as the exporter writes golden.jsonl (a golden text holds U+0085,
 * which JSON.stringify leaves raw and a reader of lines would split at). */
const ascii = (x) => JSON.stringify(x).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

describe(`golden vectors checked at load (copies of ${BUNDLE})`, () => {
  const manifest = readManifest();
  const rel = manifest.golden.file;
  let tmp;
  let n = 0;
  before(async () => { tmp = await mkdtemp(join(tmpdir(), "kdedge-js-golden-")); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  /** A copy of the bundle with golden.jsonl's rows changed by `edit` (and the manifest by `change`), checksums recomputed. */
  async function edited(edit, change) {
    const dir = join(tmp, `b${n++}`);
    await cp(BUNDLE, dir, { recursive: true, dereference: true });
    const m = readManifest(dir);
    if (edit) {
      const rows = (await readFile(join(dir, rel), "utf-8")).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
      const bytes = Buffer.from(edit(rows).map((r) => `${typeof r === "string" ? r : ascii(r)}\n`).join(""), "utf-8");
      await writeFile(join(dir, rel), bytes);
      m.files[rel] = { sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
    }
    change?.(m);
    await writeFile(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
    return dir;
  }

  const refused = (dir, pattern) => assert.rejects(load(dir), (e) => {
    assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });

  test("a constant model (p = 0.5 for every text) with valid checksums → refused naming the first golden line", async () => {
    const dir = await faultyBundle(join(tmp, `b${n++}`), "p=0.5");
    await refused(dir, new RegExp(`^${rel.replace(".", "\\.")} line 1: the model gives \\S+ 0\\.500000, its golden vector`));
  });

  for (const [what, edit, pattern] of [
    ["one probability moved", (rows) => { rows[3].probabilities[0] = 1 - rows[3].probabilities[0]; return rows; }, /golden\.jsonl line 4: the model gives/],
    ["one vector fewer", (rows) => rows.slice(0, -1), /golden\.jsonl: 44 golden vectors, manifest golden\.texts says 45/],
    ["a line without probabilities", (rows) => [...rows.slice(0, -1), { text: "頭痛" }], /golden\.jsonl line 45: 'probabilities' must list 9 numbers/],
    ["an unknown label", (rows) => [...rows.slice(0, -1), { ...rows.at(-1), labels: ["NOPE"] }], /line 45: 'labels' must list labels of the bundle/],
    ["an empty text", (rows) => [...rows.slice(0, -1), { ...rows.at(-1), text: "" }], /line 45: 'text' must be a non-empty string/],
    ["a line that is not JSON", (rows) => [...rows.slice(0, -1), '{"text": NaN}'], /golden\.jsonl line 45: not JSON/],
  ]) {
    test(`a golden file with ${what} → refused naming it`, async () => {
      await refused(await edited(edit), pattern);
    });
  }

  for (const entry of [{ file: "nope.jsonl", texts: 45, tolerance: 1e-5 }, { file: rel, texts: 0, tolerance: 1e-5 },
                       { file: rel, texts: 45, tolerance: 0.5 }, { file: rel, texts: true, tolerance: 1e-5 }, rel]) {
    test(`a malformed golden entry ${JSON.stringify(entry)} → refused`, async () => {
      await refused(await edited(null, (m) => { m.golden = entry; }), /^manifest\.json: 'golden' must be/);
    });
  }

  test("verifyGolden: false skips the check (a caller that verified the bundle once)", async () => {
    const dir = await edited((rows) => { rows[3].probabilities[0] = 1 - rows[3].probabilities[0]; return rows; });
    await refused(dir, /golden\.jsonl line 4/);
    const [clf, orig] = [await load(dir, { verifyGolden: false }), await load(BUNDLE)];
    try {
      assert.deepEqual((await clf.predict("頭痛")).labels, (await orig.predict("頭痛")).labels);
    } finally {
      await clf.close();
      await orig.close();
    }
  });
});
