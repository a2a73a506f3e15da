// The static demo page's script: load the bundle in the browser and classify the text box's text.
import { load, type Classifier, type Prediction } from "./browser.js";

declare global {
  interface Window { kdedge?: { classifier: Classifier; predict: Classifier["predict"] } }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $("status");
const text = $<HTMLTextAreaElement>("text");
const button = $<HTMLButtonElement>("classify");
const result = $("result");

function cell(tag: string, content: string, className?: string): HTMLElement {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

function show(clf: Classifier, p: Prediction): void {
  const descriptions = clf.labelDescriptions;
  result.replaceChildren();
  const summary = p.judged
    ? (p.labels.length ? "Labels:" : "No label passes its threshold.")
    : `Not judged: coverage ${p.coverage.toFixed(2)} < ${clf.manifest.abstain.min_coverage} (too few of the characters read are known); no labels.`;
  result.append(cell("p", summary, "summary"));
  const list = document.createElement("ul");
  list.id = "labels";
  for (const label of p.labels) {
    const li = document.createElement("li");
    li.dataset.label = label;
    li.append(cell("strong", label), cell("span", ` ${(p.probabilities[label] * 100).toFixed(1)}%`, "prob"));
    if (descriptions[label]) li.append(cell("span", ` — ${descriptions[label]}`, "desc"));
    list.append(li);
  }
  result.append(list);
  const table = document.createElement("table");
  const head = document.createElement("tr");
  head.append(cell("th", "label"), cell("th", "probability"), cell("th", "threshold"), cell("th", "description"));
  table.append(head);
  clf.labels.forEach((label, i) => {
    const row = document.createElement("tr");
    if (p.labels.includes(label)) row.className = "passed";
    row.append(cell("td", label), cell("td", p.probabilities[label].toFixed(4)),
      cell("td", clf.manifest.thresholds[i].toFixed(3)), cell("td", descriptions[label] ?? ""));
    table.append(row);
  });
  result.append(table);
  const windows = p.windows > 1 ? ` in ${p.windows} overlapping windows (probabilities: the highest of any window)` : "";
  result.append(cell("p", `${p.tokens} characters read${windows}${p.truncated ? "; the rest of the text was not read" : ""}, ` +
    `coverage ${p.coverage.toFixed(2)}.`, "meta"));
  result.dataset.labels = JSON.stringify(p.labels);
  result.dataset.probabilities = JSON.stringify(p.probabilities);
  result.dataset.judged = String(p.judged);
  result.dataset.state = "done";
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const bundleUrl = new URL(params.get("bundle") ?? "bundle/", document.baseURI).href;
  const wasmPaths = new URL("build/ort/", document.baseURI).href;
  status.textContent = `Loading and verifying the bundle at ${bundleUrl} …`;
  let clf: Classifier;
  try {
    clf = await load(bundleUrl, { wasmPaths });
  } catch (e) {
    status.textContent = `Cannot load the bundle: ${(e as Error).message}`;
    status.dataset.state = "error";
    return;
  }
  window.kdedge = { classifier: clf, predict: clf.predict.bind(clf) as Classifier["predict"] };
  const m = clf.manifest;
  status.textContent = `Ready: ${clf.labels.length} labels, ${String(m.architecture ?? "model")}, ` +
    `format v${m.format_version}, ${clf.model.file} (verified, running in this browser).`;
  status.dataset.state = "ready";
  button.disabled = false;
  button.addEventListener("click", async () => {
    result.dataset.state = "busy";
    button.disabled = true;
    try {
      show(clf, await clf.predict(text.value));
    } catch (e) {
      result.replaceChildren(cell("p", (e as Error).message, "error"));
      result.dataset.labels = "[]";
      result.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  });
}

void main();
