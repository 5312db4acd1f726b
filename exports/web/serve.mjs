// Serve the agentkit web page (no build step): this folder at /, ../js (the bridge client, the JS runtime
// and the shipped JS games) at /js/, onnxruntime-web's dist folder (wasm files included) at /ort/, and an
// exported policy at /policy.onnx. Only this machine can connect (127.0.0.1).
//
//   node exports/web/serve.mjs [--port 8080] [--policy runs/web-moving/policy.onnx]
//
// then open http://127.0.0.1:8080/?bridge=11008 (train: the page connects to `agentkit train` listening
// with transport websocket on port 11008) or http://127.0.0.1:8080/?policy=policy.onnx (play the export).
// onnxruntime-web is found in $AGENTKIT_WEB_MODULES (a node_modules folder), else ./node_modules
// (`npm install --ignore-scripts` in this folder).
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json", ".png": "image/png",
  ".css": "text/css; charset=utf-8",
};

/** The node_modules folder the page's packages come from. */
export function modulesDir() {
  return resolve(process.env.AGENTKIT_WEB_MODULES || join(HERE, "node_modules"));
}

/** Start the server; resolves to { server, url } once it listens. port 0: any free port. */
export function startServer({ port = 8080, policy = null } = {}) {
  const ortDist = join(modulesDir(), "onnxruntime-web", "dist");
  if (!existsSync(ortDist)) {
    throw new Error(`onnxruntime-web is not installed in ${modulesDir()}: run \`npm install --ignore-scripts\` in ${HERE} (or set AGENTKIT_WEB_MODULES)`);
  }
  if (policy && !existsSync(policy)) throw new Error(`--policy ${policy}: no such file (agentkit export RUN_DIR --out FILE writes one)`);
  const roots = [["/js/", resolve(HERE, "..", "js")], ["/ort/", ortDist], ["/", HERE]];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = null;
    if (path === "/policy.onnx" && policy) file = resolve(policy);
    else {
      for (const [prefix, root] of roots) {
        if (!path.startsWith(prefix)) continue;
        const rel = path.slice(prefix.length) || "index.html";
        const candidate = normalize(join(root, rel));
        if (candidate.startsWith(root + sep) && !rel.split("/").includes("node_modules")) file = candidate;
        break;
      }
    }
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end(`not found: ${path}\n`);
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => ok({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

/** `--key value` pairs of argv. */
export function options(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) continue;
    out[m[1]] = m[2] !== undefined ? m[2] : (i + 1 < argv.length && !argv[i + 1].startsWith("--") ? argv[++i] : "true");
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const opts = options(process.argv.slice(2));
  try {
    const { url } = await startServer({ port: Number(opts.port ?? 8080), policy: opts.policy ?? null });
    console.log(`serving the agentkit page at ${url}`);
    console.log(`  train: ${url}?bridge=11008   (agentkit train with env.mode: listen, transport: websocket, port: 11008)`);
    if (opts.policy) console.log(`  play:  ${url}?policy=policy.onnx`);
  } catch (e) {
    console.error(`serve.mjs: ${e.message}`);
    process.exit(2);
  }
}
