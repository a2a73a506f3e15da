// Node entry point: load a bundle directory and run it with onnxruntime-node.
import { lstat, open, readdir, realpath, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import * as ortNode from "onnxruntime-node";
import {
  BundleError, Classifier, FileTooLarge, loadWith, MANIFEST, type LoadOptions, type Manifest, type OrtLike,
} from "./core.js";

export * from "./core.js";

/** Every entry under the bundle directory: no symlink, no special file, nothing unlisted. */
async function checkLayout(root: string, manifest: Manifest): Promise<void> {
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const full = join(dir, name);
      const rel = relative(root, full).split(sep).join("/");
      const st = await lstat(full);
      if (st.isSymbolicLink()) throw new BundleError(`${rel}: is a symlink; bundles must not contain symlinks`);
      if (st.isDirectory()) {
        await walk(full);
        continue;
      }
      if (rel === MANIFEST) continue;
      if (!st.isFile()) throw new BundleError(`${rel}: not a regular file`);
      if (!Object.hasOwn(manifest.files, rel)) throw new BundleError(`${rel}: unlisted file (not in manifest.json 'files')`);
    }
  };
  await walk(root);
}

/** The bytes of the file at `path`, at most `limit` of them: a larger file (by its size) is not read at all. */
async function readAtMost(path: string, limit: number): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const { size } = await handle.stat();
    if (size > limit) throw new FileTooLarge(size);
    const bytes = new Uint8Array(size);
    let at = 0;
    while (at < size) {
      const { bytesRead } = await handle.read(bytes, at, size - at, at);
      if (bytesRead === 0) break; // shorter than its size said: the caller's size check names it
      at += bytesRead;
    }
    return bytes.subarray(0, at);
  } finally {
    await handle.close();
  }
}

/** Load and verify the bundle directory `dir` (manifest, sizes, SHA-256, layout) → Classifier. */
export async function load(dir: string, options: LoadOptions = {}): Promise<Classifier> {
  let root: string;
  try {
    root = await realpath(dir);
    if (!(await stat(root)).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new BundleError(`${dir}: not a bundle directory (${(e as Error).message})`);
  }
  const manifestPath = join(root, MANIFEST);
  try {
    const st = await lstat(manifestPath);
    if (st.isSymbolicLink()) throw new BundleError(`${MANIFEST}: is a symlink; bundles must not contain symlinks`);
    if (!st.isFile()) throw new BundleError(`${MANIFEST}: not a regular file`);
  } catch (e) {
    if (e instanceof BundleError) throw e; // a missing manifest: loadWith says so
  }
  // checkLayout has refused symlinks and special files before any listed file is read
  const read = (rel: string, limit: number) => readAtMost(join(root, ...rel.split("/")), limit);
  const threads = options.threads ?? 1;
  return loadWith(read, ortNode as unknown as OrtLike,
    { intraOpNumThreads: threads, interOpNumThreads: 1, executionProviders: ["cpu"] },
    (m) => checkLayout(root, m), root, options.verifyGolden ?? true);
}
