// Labels and file names that are also Object.prototype's keys ("__proto__", "constructor", "toString") are
// ordinary labels and names; the demo server answers a malformed URL with 400 and keeps serving.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BundleError, load } from "../dist/node.js";
import { BUNDLE, PACKAGE_DIR, readManifest } from "./common.mjs";

const HOSTILE = ["__proto__", "constructor", "toString"];
const TEXTS = ["我最近頭痛又發燒，吃了普拿疼還是不舒服", "膝蓋痛要不要去照超音波", "每天吃魚油和益生菌有用嗎"];

describe(`labels named like Object.prototype's keys (copies of ${BUNDLE})`, () => {
  const manifest = readManifest();
  let tmp;
  let n = 0;
  before(async () => { tmp = await mkdtemp(join(tmpdir(), "kdedge-js-proto-")); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  async function withManifest(change) {
    const dir = join(tmp, `b${n++}`);
    await cp(BUNDLE, dir, { recursive: true, dereference: true });
    const m = readManifest(dir);
    change(m);
    await writeFile(join(dir, "manifest.json"), JSON.stringify(m, null, 2));
    return dir;
  }

  test("the first labels renamed __proto__, constructor, toString: same probabilities under the new keys", async () => {
    const renamed = [...HOSTILE, ...manifest.labels.slice(HOSTILE.length)];
    const dir = await withManifest((m) => {
      m.labels = renamed;
      // descriptions for __proto__ and toString; none for constructor
      const d = { __proto__: null };
      d.__proto__ = "<b>proto</b> label";
      d.toString = "to string label";
      for (const lab of renamed.slice(HOSTILE.length)) d[lab] = m.label_descriptions[lab];
      m.label_descriptions = d;
    });
    assert.match(JSON.stringify(readManifest(dir).label_descriptions), /^\{"__proto__":"<b>proto<\/b> label"/);
    const [orig, clf] = [await load(BUNDLE), await load(dir, { verifyGolden: false })]; // golden labels: old names
    try {
      const a = await orig.predict(TEXTS);
      const b = await clf.predict(TEXTS);
      a.forEach((pa, t) => {
        const pb = b[t];
        assert.deepEqual(Object.keys(pb.probabilities), renamed, "one own key per label, in label order");
        renamed.forEach((lab, i) => {
          const value = pb.probabilities[lab];
          assert.equal(typeof value, "number", `${lab}: ${value}`);
          assert.equal(value, pa.probabilities[manifest.labels[i]], `${lab} = ${manifest.labels[i]}'s probability`);
        });
        const back = JSON.parse(JSON.stringify(pb.probabilities));
        assert.equal(Object.getOwnPropertyDescriptor(back, "__proto__")?.value, pa.probabilities[manifest.labels[0]], "JSON keeps __proto__");
        assert.deepEqual(pb.labels, pa.labels.map((lab) => renamed[manifest.labels.indexOf(lab)]));
      });
      const d = clf.labelDescriptions;
      assert.equal(d.__proto__, "<b>proto</b> label");
      assert.equal(d.toString, "to string label");
      assert.equal(d.constructor, undefined, "no description for constructor (not Object's constructor)");
      assert.equal(d[manifest.labels[3]], manifest.label_descriptions[manifest.labels[3]]);
      assert.equal(orig.labelDescriptions.constructor, undefined, "a bundle without such labels: still no inherited keys");
      assert.equal(orig.labelDescriptions.toString, undefined);
    } finally {
      await orig.close();
      await clf.close();
    }
  });

  test("an unlisted file named constructor or __proto__ in the bundle → refused as unlisted", async () => {
    for (const name of ["constructor", "__proto__", "toString"]) {
      const dir = await withManifest(() => {});
      await writeFile(join(dir, name), "x");
      await assert.rejects(load(dir), (e) => {
        assert.ok(e instanceof BundleError, `a BundleError, got ${e}`);
        assert.match(e.message, new RegExp(`^${name}: unlisted file`));
        return true;
      });
    }
  });

  test("models[0].file \"constructor\" (not in 'files') → refused", async () => {
    const dir = await withManifest((m) => { m.models[0].file = "constructor"; });
    await assert.rejects(load(dir), /^BundleError: manifest\.json: models\[0\]\.file "constructor" is not a file listed in 'files'/);
  });

  test("a description for a label that is not in 'labels' (constructor) → refused", async () => {
    const dir = await withManifest((m) => { m.label_descriptions.constructor = "not a label"; });
    await assert.rejects(load(dir), /^BundleError: manifest\.json: 'label_descriptions' must map labels of 'labels' to strings/);
  });
});

test("the demo server (npm run demo) answers a malformed URL with 400 and keeps serving", async () => {
  const child = spawn(process.execPath, [join(PACKAGE_DIR, "scripts", "serve.mjs")], {
    env: { ...process.env, PORT: "0", KDEDGE_BUNDLE: BUNDLE }, stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((ok) => child.on("exit", (code, signal) => ok({ code, signal })));
  try {
    const url = await new Promise((ok, bad) => {
      let out = "";
      child.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/kdedge demo: (http:\/\/\S+)/);
        if (m) ok(m[1]);
      });
      child.on("exit", (code) => bad(new Error(`serve.mjs exited with ${code} before listening: ${stderr}`)));
    });
    for (const bad of ["%E0%A4%A", "bundle/%E0%A4%A", "%", "bundle/%ZZ"]) {
      const r = await fetch(url + bad);
      assert.equal(r.status, 400, `${bad}: HTTP ${r.status}`);
    }
    const ok = await fetch(`${url}bundle/manifest.json`);
    assert.equal(ok.status, 200, "still serving after the malformed requests");
    assert.equal((await ok.json()).format, "kdedge-bundle");
    assert.equal(child.exitCode, null, `the server is still running (stderr: ${stderr})`);
  } finally {
    child.kill();
    await exited;
  }
});
