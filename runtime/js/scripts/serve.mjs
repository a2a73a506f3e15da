// npm run demo: serve the demo and a bundle (KDEDGE_BUNDLE, default <repo>/models/default) on localhost.
import { join, resolve } from "node:path";
import { PACKAGE_DIR, startServer } from "./server.mjs";

const bundleDir = resolve(process.env.KDEDGE_BUNDLE ?? join(PACKAGE_DIR, "..", "..", "models", "default"));
const port = Number(process.env.PORT ?? 8080);
const { url } = await startServer({ bundleDir, port, log: true });
console.log(`kdedge demo: ${url}  (bundle ${bundleDir}; Ctrl-C stops)`);
