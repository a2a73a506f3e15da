// A reader refuses a changed, resized, missing or unlisted file and a format it does not read.
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BundleError, load } from "../dist/node.js";
import { BUNDLE, readManifest } from "./common.mjs";

describe(`refusals (copies of ${BUNDLE})`, () => {
  const manifest = readManifest();
  const listed = Object.keys(manifest.files);
  let tmp;
  let n = 0;
  before(async () => { tmp = await mkdtemp(join(tmpdir(), "kdedge-js-")); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  /** A fresh copy of the bundle (symlinks such as models/default followed). */
  async function copy() {
    const dir = join(tmp, `b${n++}`);
    await cp(BUNDLE, dir, { recursive: true, dereference: true });
    return dir;
  }

  async function refused(dir, pattern) {
    await assert.rejects(load(dir), (e) => {
      assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  }

  test("an unchanged copy loads and predicts (so the refusals below are not vacuous)", async () => {
    const clf = await load(await copy());
    const p = await clf.predict("我最近頭痛又發燒，吃了普拿疼還是不舒服");
    assert.equal(Object.keys(p.probabilities).length, manifest.labels.length);
    await clf.close();
  });

  for (const rel of listed) {
    test(`one byte of ${rel} changed → refused naming ${rel}`, async () => {
      const dir = await copy();
      const path = join(dir, ...rel.split("/"));
      const bytes = await readFile(path);
      assert.ok(bytes.length > 0, `${rel} is empty`);
      const at = Math.floor(bytes.length / 2);
      bytes[at] ^= 0x01;
      await writeFile(path, bytes);
      await refused(dir, new RegExp(`^${rel.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: SHA-256 mismatch`));
    });
  }

  test("a file one byte longer → refused naming it (size)", async () => {
    const dir = await copy();
    const rel = manifest.models.find((m) => m.format === "onnx").file;
    const path = join(dir, rel);
    await writeFile(path, Buffer.concat([await readFile(path), Buffer.from([0])]));
    await refused(dir, new RegExp(`^${rel.replace(".", "\\.")}: size \\d+ bytes, manifest says \\d+`));
  });

  test("a missing listed file → refused naming it", async () => {
    const dir = await copy();
    const rel = manifest.models.find((m) => m.format === "onnx").file;
    await unlink(join(dir, rel));
    await refused(dir, new RegExp(`^${rel.replace(".", "\\.")}: missing`));
  });

  test("an unlisted file → refused naming it", async () => {
    const dir = await copy();
    await writeFile(join(dir, "extra.bin"), "x");
    await refused(dir, /^extra\.bin: unlisted file/);
  });

  async function withManifest(change) {
    const dir = await copy();
    const m = readManifest(dir);
    change(m);
    await writeFile(join(dir, "manifest.json"), JSON.stringify(m));
    return dir;
  }

  for (const version of [1, 3, "2", null]) {
    test(`format_version ${JSON.stringify(version)} → refused`, async () => {
      await refused(await withManifest((m) => { m.format_version = version; }), /^manifest\.json: format_version .* not supported/);
    });
  }

  test("format other than kdedge-bundle → refused", async () => {
    await refused(await withManifest((m) => { m.format = "other-bundle"; }), /^manifest\.json: not a kdedge bundle/);
  });

  test("a listed sha256 changed in the manifest → refused naming the file", async () => {
    const rel = listed[0];
    const dir = await withManifest((m) => {
      const h = m.files[rel].sha256;
      m.files[rel].sha256 = (h[0] === "0" ? "1" : "0") + h.slice(1);
    });
    await refused(dir, new RegExp(`^${rel.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: SHA-256 mismatch`));
  });

  for (const [what, windows, pattern] of [
    ["size other than max_len", (w) => ({ ...w, size: w.size + 1 }), /^manifest\.json: input\.windows\.size must equal input\.max_len/],
    ["stride 0", (w) => ({ ...w, stride: 0 }), /^manifest\.json: input\.windows\.stride must be a positive integer/],
    ["stride above size", (w) => ({ ...w, stride: w.size + 1 }), /^manifest\.json: input\.windows\.stride must be a positive integer/],
    ["max_windows 0", (w) => ({ ...w, max_windows: 0 }), /^manifest\.json: input\.windows\.max_windows must be a positive integer/],
    ["max_windows 1.5", (w) => ({ ...w, max_windows: 1.5 }), /^manifest\.json: input\.windows\.max_windows must be a positive integer/],
    ["pool mean", (w) => ({ ...w, pool: "mean" }), /^manifest\.json: input\.windows\.pool "mean" unknown/],
    ["not an object", () => [128, 64], /^manifest\.json: input\.windows must be an object/],
  ]) {
    test(`input.windows ${what} → refused`, async () => {
      const rule = manifest.input.windows ?? { size: manifest.input.max_len, stride: manifest.input.max_len, max_windows: 1, pool: "max" };
      await refused(await withManifest((m) => { m.input.windows = windows(rule); }), pattern);
    });
  }

  test("a path leaving the bundle → refused", async () => {
    await refused(await withManifest((m) => { m.files["../outside"] = { sha256: "0".repeat(64), bytes: 1 }; }),
      /^\.\.\/outside: path leaves the bundle/);
  });
});
