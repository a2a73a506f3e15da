// A small static server for the demo: demo/ at "/", a bundle directory at "/bundle/". Localhost only.
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_DIR = resolve(fileURLToPath(new URL("..", import.meta.url)));
export const DEMO_DIR = join(PACKAGE_DIR, "demo");

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".map": "application/json", ".json": "application/json; charset=utf-8", ".jsonl": "application/x-ndjson; charset=utf-8",
  ".wasm": "application/wasm", ".css": "text/css; charset=utf-8", ".png": "image/png", ".md": "text/markdown; charset=utf-8",
  ".txt": "text/plain; charset=utf-8", ".onnx": "application/octet-stream", ".tflite": "application/octet-stream",
};

/** Serve `demoDir` at "/" and `bundleDir` at "/bundle/" on 127.0.0.1; resolves to {server, url, requests}. */
export function startServer({ bundleDir, demoDir = DEMO_DIR, port = 0, host = "127.0.0.1", log = false }) {
  const requests = [];
  const server = createServer(async (req, res) => {
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    } catch { // a malformed URL or percent-encoding (e.g. /%E0%A4%A): the request's fault, not the server's
      requests.push(req.url);
      res.writeHead(400, { "content-type": "text/plain" }).end("bad request");
      if (log) console.log(`400 ${JSON.stringify(req.url)}`);
      return;
    }
    requests.push(path);
    let root = demoDir, rel = path;
    if (path === "/bundle" || path.startsWith("/bundle/")) {
      root = bundleDir;
      rel = path.slice("/bundle".length);
    }
    if (rel === "" || rel.endsWith("/")) rel += "index.html";
    const rootAbs = resolve(root);
    const file = resolve(rootAbs, "." + normalize(rel));
    if (file !== rootAbs && !file.startsWith(rootAbs + sep)) {
      res.writeHead(403).end("forbidden");
      return;
    }
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new Error("not a file");
      res.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": st.size,
        "cache-control": "no-store",
      });
      createReadStream(file).on("error", () => res.destroy()).pipe(res); // e.g. removed since stat: drop, not crash
      if (log) console.log(`200 ${path}`);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      if (log) console.log(`404 ${path}`);
    }
  });
  return new Promise((ok, bad) => {
    server.once("error", bad);
    server.listen(port, host, () => ok({ server, url: `http://${host}:${server.address().port}/`, requests }));
  });
}
