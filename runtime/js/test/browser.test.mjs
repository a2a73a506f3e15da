// The demo page in real headless Chromium (onnxruntime-web, wasm): labels equal the Node reader's and
// Python's; the golden vectors pass in the browser too; no request leaves localhost.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { load } from "../dist/node.js";
import { startServer } from "../scripts/server.mjs";
import { BUNDLE, pythonPredict, readGolden } from "./common.mjs";

const CHROMIUM = process.env.KDEDGE_CHROMIUM ?? "/usr/bin/chromium";
const TEXT = "我最近頭痛又發燒，吃了普拿疼還是不舒服";

describe("demo page in headless Chromium", () => {
  let server, url, requests, browser, page;
  const offsite = [];
  const consoleLines = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install -y chromium`);
    ({ server, url, requests } = await startServer({ bundleDir: BUNDLE }));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    const context = await browser.newContext();
    const origin = new URL(url).origin;
    await context.route("**/*", (route) => {
      const u = route.request().url();
      if (u.startsWith(`${origin}/`) || u.startsWith("data:") || u.startsWith("blob:")) return route.continue();
      offsite.push(u);
      return route.abort("blockedbyclient");
    });
    page = await context.newPage();
    page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    await page.goto(url);
    try {
      await page.waitForSelector('#status[data-state="ready"], #status[data-state="error"]', { timeout: 120_000 });
    } catch (e) {
      throw new Error(`the page did not get ready: ${e.message}\n${consoleLines.join("\n")}`);
    }
    const state = await page.getAttribute("#status", "data-state");
    assert.equal(state, "ready", `page status: ${await page.textContent("#status")}\n${consoleLines.join("\n")}`);
  });

  after(async () => {
    await browser?.close();
    await new Promise((ok) => (server ? server.close(ok) : ok()));
  });

  test("typing a health message and clicking shows the Node reader's and Python's labels", async () => {
    await page.fill("#text", "");
    await page.type("#text", TEXT);
    await page.click("#classify");
    await page.waitForSelector('#result[data-state="done"], #result[data-state="error"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute("#result", "data-state"), "done", await page.textContent("#result"));
    const shown = await page.$$eval("#labels li", (items) => items.map((li) => li.dataset.label));
    const probabilities = JSON.parse(await page.getAttribute("#result", "data-probabilities"));

    const clf = await load(BUNDLE);
    const node = await clf.predict(TEXT);
    await clf.close();
    const python = (await pythonPredict([TEXT])).predictions[0];
    const summary = `browser: ${JSON.stringify(TEXT)} → ${JSON.stringify(shown)}; Node ${JSON.stringify(node.labels)}; Python ${JSON.stringify(python.labels)}`;
    console.log(summary);
    assert.deepEqual(shown, node.labels, "labels shown vs the Node reader's");
    assert.deepEqual(shown, python.labels, "labels shown vs Python kdedge_run's");
    for (const label of Object.keys(node.probabilities)) {
      assert.ok(Math.abs(probabilities[label] - node.probabilities[label]) <= 1e-5, `${label}: browser ${probabilities[label]} vs Node ${node.probabilities[label]}`);
    }
    const descriptions = readGolden().manifest.label_descriptions ?? {};
    const text = await page.textContent("#labels");
    for (const label of shown) if (descriptions[label]) assert.ok(text.includes(descriptions[label]), `description of ${label} shown`);
  });

  test("the golden vectors pass in the browser (onnxruntime-web)", async () => {
    const { manifest, golden } = readGolden();
    const tolerance = manifest.golden.tolerance;
    const got = await page.evaluate((texts) => window.kdedge.predict(texts), golden.map((g) => g.text));
    let worst = 0;
    golden.forEach((g, i) => {
      const p = got[i];
      assert.equal(p.known, g.known, `line ${i + 1}: known`);
      assert.equal(p.judged, g.judged, `line ${i + 1}: judged`);
      assert.deepEqual(p.labels, g.labels, `line ${i + 1}: labels`);
      manifest.labels.forEach((label, j) => {
        const d = Math.abs(p.probabilities[label] - g.probabilities[j]);
        worst = Math.max(worst, d);
        assert.ok(d <= tolerance, `line ${i + 1}: ${label} |Δp| ${d}`);
      });
    });
    const summary = `browser golden: ${golden.length} texts, max |dp| ${worst.toExponential(2)}`;
    console.log(summary);
  });

  test("no request left localhost; the page fetched the wasm and the bundle locally", () => {
    assert.deepEqual(offsite, [], `requests to other hosts: ${offsite.join(", ")}`);
    assert.ok(requests.some((p) => p.endsWith(".wasm")), `wasm served locally (${requests.join(", ")})`);
    assert.ok(requests.includes("/bundle/manifest.json"), "bundle served locally");
  });
});
