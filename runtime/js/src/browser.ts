// Browser entry point: load a bundle from a base URL and run it with onnxruntime-web (wasm, 1 thread).
import * as ort from "onnxruntime-web/wasm";
import { BundleError, Classifier, loadWith, type LoadOptions, type OrtLike } from "./core.js";

export * from "./core.js";

export interface BrowserLoadOptions extends LoadOptions {
  /** Where onnxruntime-web's ort-wasm-simd-threaded.{wasm,mjs} are served (a URL prefix ending in "/"). */
  wasmPaths?: string;
  /** fetch implementation (default: globalThis.fetch). */
  fetch?: typeof fetch;
}

/** Load and verify the bundle served at `baseUrl` (manifest.json and every file it lists) → Classifier. */
export async function load(baseUrl: string, options: BrowserLoadOptions = {}): Promise<Classifier> {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  if (options.wasmPaths !== undefined) ort.env.wasm.wasmPaths = options.wasmPaths;
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href);
  const get = options.fetch ?? globalThis.fetch.bind(globalThis);
  const read = async (rel: string) => {
    const url = new URL(rel.split("/").map(encodeURIComponent).join("/"), base);
    const response = await get(url, { cache: "no-store" });
    if (!response.ok) throw new BundleError(`${rel}: cannot fetch ${url.href}: HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  };
  return loadWith(read, ort as unknown as OrtLike, { executionProviders: ["wasm"] }, undefined, base.href,
    options.verifyGolden ?? true);
}
