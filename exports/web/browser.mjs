// Run the agentkit page in headless Chromium (puppeteer-core drives the system's Chromium; no browser
// download): serve.mjs serves the page on a free port, Chromium opens it, and this process exits when the
// page is done.
//
//   train (what examples/bridge-browser-moving.yaml launches, one browser per game instance):
//     node exports/web/browser.mjs --port=PORT [--instance=I]        (or the AGENTKIT_BRIDGE_* variables)
//   play an export and keep what happened:
//     node exports/web/browser.mjs --policy=moving.onnx [--episodes=3] [--seed=0] [--fps=0]
//                                  [--record=record.json] [--screenshot=page.png] [--observations=obs.json]
//     --record writes window.agentkit (every observation with the policy's action); --observations (a JSON
//     list of observations) adds the policy's actions for them as `probe`.
//
// Chromium: $CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH. Exit codes:
// 0 done, 1 the page failed (its message is printed), 2 bad usage or no Chromium / packages.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { modulesDir, options, startServer } from "./serve.mjs";

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH || "").split(delimiter)) {
    for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return null;
}

// This closed network refuses Chromium's own connections to the outside: these flags keep it from trying.
export const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

async function main() {
  const opts = options(process.argv.slice(2));
  const env = process.env;
  const executablePath = chromiumPath();
  if (!executablePath) {
    console.error("browser.mjs: no Chromium found: install it (make engines, or apt-get install chromium) or set CHROMIUM");
    return 2;
  }
  let puppeteer;
  try {
    puppeteer = createRequire(join(modulesDir(), "..", "noop.js"))("puppeteer-core");
  } catch {
    console.error(`browser.mjs: puppeteer-core is not installed in ${modulesDir()}: run \`npm install --ignore-scripts\` in exports/web (or set AGENTKIT_WEB_MODULES)`);
    return 2;
  }
  const query = new URLSearchParams();
  if (opts.policy) {
    query.set("policy", "/policy.onnx");
    for (const key of ["episodes", "seed", "fps"]) if (opts[key] !== undefined) query.set(key, opts[key]);
    if (opts.fps === undefined) query.set("fps", "0");
  } else {
    const port = opts.port ?? env.AGENTKIT_BRIDGE_PORT;
    if (!port) {
      console.error("browser.mjs: give --port=PORT (the trainer's) to train, or --policy=FILE to play an export");
      return 2;
    }
    query.set("bridge", port);
    query.set("host", opts.host ?? env.AGENTKIT_BRIDGE_HOST ?? "127.0.0.1");
    const instance = opts.instance ?? env.AGENTKIT_BRIDGE_INSTANCE;
    if (instance !== undefined) query.set("instance", instance);
    const token = opts.token ?? env.AGENTKIT_BRIDGE_TOKEN;
    if (token) query.set("token", token);
  }
  let served;
  try {
    served = await startServer({ port: 0, policy: opts.policy ?? null });
  } catch (e) {
    console.error(`browser.mjs: ${e.message}`);
    return 2;
  }
  const profile = mkdtempSync(join(tmpdir(), "agentkit-chromium-"));
  // pipe: the DevTools connection is a pipe, so Chromium exits when this process dies, however it dies.
  // networkEnabled false: puppeteer would otherwise follow the Network domain, and Chromium would send it an
  // event (with the payload) for every WebSocket message the page sends or receives, two per training step:
  // that cost this process and Chromium's browser process more CPU per step than the game (benchmarks/RESULTS.md).
  // (puppeteer's defaults already keep background pages from being throttled: no timer or renderer backgrounding.)
  const browser = await puppeteer.launch({ executablePath, headless: true, pipe: true, userDataDir: profile,
    networkEnabled: false, issuesEnabled: false, args: CHROMIUM_ARGS });
  const stop = async (code) => {
    await browser.close().catch(() => {});
    served.server.close();
    rmSync(profile, { recursive: true, force: true });
    process.exit(code);
  };
  process.on("SIGTERM", () => stop(143));
  process.on("SIGINT", () => stop(130));
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 440, height: 460 });
    page.on("console", (m) => { if (m.type() === "error") console.error(`page: ${m.text()}`); });
    page.on("pageerror", (e) => { console.error(`page: ${e.message}`); stop(1); });  // an uncaught error is fatal
    await page.goto(`${served.url}?${query}`);
    // A loop of short calls, not one waitForFunction: a DevTools call that waits longer than puppeteer's
    // protocolTimeout (180 s) fails, and a training page is busy for as long as the run lasts.
    while (!["closed", "done", "error"].includes(await page.evaluate(() => window.agentkit?.status))) {
      await new Promise((ok) => setTimeout(ok, 500));
    }
    const state = await page.evaluate(() => window.agentkit);
    if (opts.observations && state.status === "done") {
      const batch = JSON.parse(readFileSync(opts.observations, "utf8"));
      state.probe = await page.evaluate((b) => window.agentkit.act(b), batch);
    }
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
    if (opts.record) writeFileSync(opts.record, JSON.stringify(state));
    console.log(await page.$eval("#status", (e) => e.textContent));
    await stop(state.status === "error" ? 1 : 0);
  } catch (e) {
    console.error(`browser.mjs: ${e.message}`);
    await stop(1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = await main();
