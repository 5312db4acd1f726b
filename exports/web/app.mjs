// The agentkit web page: the Moving game (../js/games/moving.mjs) on a canvas, in one of two modes.
//
//   ?bridge=PORT[&host=127.0.0.1][&instance=I][&token=T]   train: connect to `agentkit train` (remote env,
//                                                           transport websocket) and play the steps it sends
//   ?policy=URL[&episodes=3][&seed=0][&fps=30]              play: run the exported .onnx with onnxruntime-web
//                                                           (wasm, one thread), the policy choosing every action
//
// The status line says what the page does (connecting / training / closed / playing / done / error), the
// steps and the returns. `window.agentkit` holds the same facts for scripts (exports/web/browser.mjs, the
// tests), and in play mode `record` (every observation with the action the policy chose for it), `returns`
// (each episode's) and `successes` (episodes that stopped in the target).
import { serve } from "/js/agentkit-bridge.mjs";
import { loadPolicy } from "/js/agentkit-runtime.mjs";
import { Moving, bridged } from "/js/games/moving.mjs";

const query = new URLSearchParams(location.search);
const canvas = document.getElementById("game");
const statusLine = document.getElementById("status");
const game = new Moving();
const TYPES = ["accelerate", "turn", "brake"];
const state = (window.agentkit = { status: "loading", steps: 0, episodes: 0, episodeReturn: 0, lastReturn: null,
  action: null, record: [], returns: [], successes: 0, error: null });
let dirty = true;        // the canvas and the status line are behind the game (redraw() catches up)
let statusExtra = "";    // the status line's detail after the status word

function describe(action) {
  if (!action) return "-";
  const [magnitude, angle] = action.params;
  return action.type === 0 ? `accelerate(${magnitude.toFixed(2)})` : action.type === 1 ? `turn(${angle.toFixed(2)})` : "brake()";
}

/** Set the page's status; the status line shows it at the next redraw (at once for a final status). */
function show(status, extra = "") {
  state.status = status;
  statusExtra = extra;
  dirty = true;
  if (!["training", "playing"].includes(status)) redraw();
}

function statusText() {
  const ret = state.lastReturn === null ? "-" : state.lastReturn.toFixed(3);
  return `${state.status}${statusExtra ? ` · ${statusExtra}` : ""}\nsteps ${state.steps} · episodes ${state.episodes}` +
    ` · return ${state.episodeReturn.toFixed(3)} (last ${ret})\naction ${describe(state.action)}`;
}

function fail(error) {
  state.error = String(error && error.message ? error.message : error);
  show("error", state.error);
  console.error(`agentkit page: ${state.error}`);
}

// -- drawing ------------------------------------------------------------------------------------------------

function draw() {
  const g = canvas.getContext("2d");
  const size = canvas.width;
  const px = (v) => ((v + 1) / 2) * size;
  const py = (v) => ((1 - v) / 2) * size;   // y up, as in the Python game's frames
  g.fillStyle = "#fafafa";
  g.fillRect(0, 0, size, size);
  g.strokeStyle = "#e2e2e2";
  for (const v of [-0.5, 0, 0.5]) {
    g.beginPath(); g.moveTo(px(v), 0); g.lineTo(px(v), size); g.moveTo(0, py(v)); g.lineTo(size, py(v)); g.stroke();
  }
  if (game.tx === undefined) return;
  const r = (game.targetRadius * size) / 2;
  g.fillStyle = "#c8ebc8"; g.strokeStyle = "#2e9a3a"; g.lineWidth = 2;
  g.beginPath(); g.arc(px(game.tx), py(game.ty), r, 0, 2 * Math.PI); g.fill(); g.stroke();
  const hx = game.x + 0.08 * Math.cos(game.heading);
  const hy = game.y + 0.08 * Math.sin(game.heading);
  g.strokeStyle = "#333"; g.lineWidth = 3;
  g.beginPath(); g.moveTo(px(game.x), py(game.y)); g.lineTo(px(hx), py(hy)); g.stroke();
  g.fillStyle = "#2f5fd0";
  g.beginPath(); g.arc(px(game.x), py(game.y), 6, 0, 2 * Math.PI); g.fill();
  g.fillStyle = "#e6b800";
  g.fillRect(0, size - 4, (size * game.speed) / game.maxSpeed, 4);
  g.fillStyle = "#222"; g.font = "13px ui-monospace, monospace";
  g.fillText(describe(state.action), 8, 18);
}

// Rendering is decoupled from stepping: the game steps as fast as the trainer's messages (or the policy)
// arrive, and the canvas and status line are redrawn at most every REDRAW_MS, only when something changed.
// Drawing each step (or at 60 fps on requestAnimationFrame) would spend on pixels the CPU the steps need.
const REDRAW_MS = 100;
function redraw() {
  if (!dirty) return;
  dirty = false;
  draw();
  statusLine.textContent = statusText();
}
setInterval(redraw, REDRAW_MS);

// -- train: the trainer steps the game over the bridge ------------------------------------------------------

async function train() {
  const inner = bridged(game);
  const watched = {
    reset(seed, params) {
      state.episodeReturn = 0;
      const r = inner.reset(seed, params);
      show("training");
      return r;
    },
    step(actions) {
      state.action = { type: actions[0].type, params: Array.from(actions[0].params) };
      const r = inner.step(actions);
      state.steps += 1;
      state.episodeReturn += r.reward[0];
      if (r.terminated[0] || r.truncated[0]) { state.episodes += 1; state.lastReturn = state.episodeReturn; }
      show("training");
      return r;
    },
  };
  const port = Number(query.get("bridge"));
  const host = query.get("host") || "127.0.0.1";
  const instance = query.has("instance") ? Number(query.get("instance")) : null;
  show("connecting", `ws://${host}:${port}/`);
  await serve(watched, { name: "moving-web", agents: [game.spec], host, port, transport: "websocket", instance,
    token: query.get("token") || null });
  show("closed", "the trainer finished");
}

// -- play: the exported policy acts, with onnxruntime-web ---------------------------------------------------

async function play() {
  const ort = await import("/ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = "/ort/";     // the wasm files come from this server, never from a CDN
  ort.env.wasm.numThreads = 1;
  show("loading", "policy");
  const bytes = new Uint8Array(await (await fetch(query.get("policy"))).arrayBuffer());
  const policy = await loadPolicy(bytes, { ort, sessionOptions: { executionProviders: ["wasm"] } });
  // for scripts: the policy's actions for a batch of observations (the tests compare them with Python's)
  state.act = async (batch) => policy.act(batch);
  const episodes = Number(query.get("episodes") || 3);
  const seed = Number(query.get("seed") || 0);
  const fps = Number(query.get("fps") ?? 30);
  for (let e = 0; e < episodes; e++) {
    let obs = game.reset(seed + e);
    state.episodeReturn = 0;
    for (;;) {
      const out = await policy.act(obs);
      const action = { type: Number(out.action_type), params: Float32Array.from(out.action_params) };
      state.action = { type: action.type, params: Array.from(action.params) };
      state.record.push({ obs: Array.from(obs), action_type: action.type, action_params: state.action.params });
      const [next, reward, terminated, truncated, info] = game.step(action);
      state.successes += info.success;
      state.steps += 1;
      state.episodeReturn += reward;
      obs = next;
      show("playing", `episode ${e + 1}/${episodes}`);
      if (fps > 0) redraw();   // watching speed: every step is drawn
      await new Promise((ok) => setTimeout(ok, fps > 0 ? 1000 / fps : 0));
      if (terminated || truncated) break;
    }
    state.episodes += 1;
    state.lastReturn = state.episodeReturn;
    state.returns.push(state.episodeReturn);
  }
  const mean = state.returns.reduce((a, b) => a + b, 0) / episodes;
  show("done", `${episodes} episodes played by the policy: mean return ${mean.toFixed(3)}, ` +
    `${state.successes} stopped in the target`);
}

const run = query.has("bridge") ? train : query.has("policy") ? play : async () => show("idle", "add ?bridge=PORT (train) or ?policy=FILE (play)");
run().catch(fail);
