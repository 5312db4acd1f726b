// Per-call latency of an exported policy in onnxruntime-web (wasm, one thread) inside headless Chromium,
// and in onnxruntime-node, for benchmarks/engines_latency.py (which passes the arguments and reads the JSON).
//
//   AGENTKIT_WEB_MODULES=... AGENTKIT_JS_MODULES=... node benchmarks/engines_latency.mjs POLICY.onnx FEEDS.json
//
// FEEDS.json: {"inputs": {name: [dim, fill]}, "batches": [1, 64], "calls": 200, "rounds": 15}; each input is
// float32 [batch, dim], filled with `fill` (a number) or uniform(-1, 1) numbers when fill is null.
// Prints {"web": {batch: microseconds}, "node": {batch: microseconds}}: the median over rounds of the mean
// time of `calls` back-to-back session.run calls.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_ARGS } from "../exports/web/browser.mjs";
import { modulesDir, startServer } from "../exports/web/serve.mjs";

const [policy, feedsFile] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(feedsFile, "utf8"));

// The same measurement in both runtimes: `ort` is onnxruntime-web's or onnxruntime-node's module.
async function measure(ort, model, spec, provider) {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1,
    executionProviders: [provider] });
  const out = {};
  for (const batch of spec.batches) {
    const feeds = {};
    for (const [name, [dim, fill]] of Object.entries(spec.inputs)) {
      const data = Float32Array.from({ length: batch * dim }, () => (fill === null ? Math.random() * 2 - 1 : fill));
      feeds[name] = new ort.Tensor("float32", data, [batch, dim]);
    }
    for (let i = 0; i < spec.calls; i++) await session.run(feeds);   // warm-up
    const rounds = [];
    for (let r = 0; r < spec.rounds; r++) {
      const t0 = performance.now();
      for (let i = 0; i < spec.calls; i++) await session.run(feeds);
      rounds.push(((performance.now() - t0) * 1000) / spec.calls);
    }
    rounds.sort((a, b) => a - b);
    out[batch] = rounds[Math.floor(rounds.length / 2)];
  }
  return out;
}

const result = {};
const nodeOrt = createRequire(join(process.env.AGENTKIT_JS_MODULES, "..", "noop.js"))("onnxruntime-node");
result.node = await measure(nodeOrt, readFileSync(policy), spec, "cpu");

const puppeteer = createRequire(join(modulesDir(), "..", "noop.js"))("puppeteer-core");
const { server, url } = await startServer({ port: 0, policy });
const profile = mkdtempSync(join(tmpdir(), "agentkit-chromium-"));
const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
  pipe: true, userDataDir: profile, args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  await page.goto(url);
  result.web = await page.evaluate(async (spec, source) => {
    const ort = await import("/ort/ort.wasm.min.mjs");
    ort.env.wasm.wasmPaths = "/ort/";
    ort.env.wasm.numThreads = 1;
    const model = new Uint8Array(await (await fetch("/policy.onnx")).arrayBuffer());
    const measure = new Function(`return (${source})`)();   // the function above, run in the page
    return measure(ort, model, spec, "wasm");
  }, spec, measure.toString());
  result.web_user_agent = await browser.version();
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
