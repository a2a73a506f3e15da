// Browser entry point: load a bundle from a base URL and run it with onnxruntime-web (wasm, 1 thread).
import * as ort from "onnxruntime-web/wasm";
import { BundleError, Classifier, FileTooLarge, loadWith, type LoadOptions, type OrtLike } from "./core.js";

export * from "./core.js";

export interface BrowserLoadOptions extends LoadOptions {
  /** Where onnxruntime-web's ort-wasm-simd-threaded.{wasm,mjs} are served (a URL prefix ending in "/"). */
  wasmPaths?: string;
  /** fetch implementation (default: globalThis.fetch). */
  fetch?: typeof fetch;
}

/** A response's body, at most `limit` bytes: refused by its Content-Length (when not compressed) before it is read,
 * else as soon as more has arrived. */
async function readAtMost(response: Response, limit: number): Promise<Uint8Array> {
  const declared = response.headers.get("content-length");
  if (declared !== null && response.headers.get("content-encoding") === null && Number(declared) > limit) {
    await response.body?.cancel();
    throw new FileTooLarge(Number(declared));
  }
  if (response.body === null) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    total += part.value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw new FileTooLarge();
    }
    chunks.push(part.value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

/** Load and verify the bundle served at `baseUrl` (manifest.json and every file it lists) → Classifier. */
export async function load(baseUrl: string, options: BrowserLoadOptions = {}): Promise<Classifier> {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  if (options.wasmPaths !== undefined) ort.env.wasm.wasmPaths = options.wasmPaths;
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href);
  const get = options.fetch ?? globalThis.fetch.bind(globalThis);
  const read = async (rel: string, limit: number) => {
    const url = new URL(rel.split("/").map(encodeURIComponent).join("/"), base);
    const response = await get(url, { cache: "no-store" });
    if (!response.ok) throw new BundleError(`${rel}: cannot fetch ${url.href}: HTTP ${response.status}`);
    return readAtMost(response, limit);
  };
  return loadWith(read, ort as unknown as OrtLike, { executionProviders: ["wasm"] }, undefined, base.href,
    options.verifyGolden ?? true);
}
