// Build the browser demo: src/demo.ts → demo/build/demo.js (esbuild), plus onnxruntime-web's wasm files
// copied to demo/build/ort/ so that the page runs offline (no CDN).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { PACKAGE_DIR } from "./server.mjs";

const out = join(PACKAGE_DIR, "demo", "build");
await rm(out, { recursive: true, force: true });
await mkdir(join(out, "ort"), { recursive: true });
await build({
  entryPoints: [join(PACKAGE_DIR, "src", "demo.ts")],
  outfile: join(out, "demo.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  logLevel: "warning",
});
const require = createRequire(import.meta.url);
const ortDist = dirname(require.resolve("onnxruntime-web/ort-wasm-simd-threaded.wasm"));
for (const name of ["ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"]) {
  await copyFile(join(ortDist, name), join(out, "ort", name));
}
console.log(`demo built in ${out}`);
