// @kdedge/reader's verdict on every conformance case (runtime/conformance/make_cases.py): one Node process loads
// each case directory with runtime/js/dist/node.js (build it first: `npm run build` in runtime/js).
//
// usage: node runtime/conformance/verdicts.mjs CASES_DIR
// Prints one JSON object per line, in the order of CASES_DIR/cases.json: {"case", "verdict", "message"}, the verdict
// "ok" (loaded, golden vectors checked), "refused" (a BundleError) or "error" (anything else: a reader bug).
import { readFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node verdicts.mjs CASES_DIR");
  process.exit(2);
}
const { BundleError, load } = await import(new URL("../js/dist/node.js", import.meta.url).href);
const cases = JSON.parse(readFileSync(join(dir, "cases.json"), "utf-8"));
for (const { case: name } of cases) {
  let verdict = "ok", message = "";
  try {
    const clf = await load(join(dir, name));
    await clf.close();
  } catch (e) {
    verdict = e instanceof BundleError ? "refused" : "error";
    message = e instanceof BundleError ? e.message : `${e?.name}: ${e?.message}`;
  }
  process.stdout.write(`${JSON.stringify({ case: name, verdict, message: message.slice(0, 500) })}\n`);
}
