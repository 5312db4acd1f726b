// agentkit bridge client for JavaScript games (protocol version 2, ../../docs/bridge.md; `protocol: 1` in
// `serve`'s options speaks version 1, float32 observations only).
//
// One ES module for Node (TCP through `node:net`, WebSocket through the `ws` package) and browsers
// (WebSocket). The game describes its agents and hands `serve` an object with `reset` and `step`:
//
//   import { serve, agent, hybrid, parseArgs } from "./agentkit-bridge.mjs";
//   const game = {
//     reset(seed, params) { ...; return { obs: [obs0, obs1], alive: [1, 1], mask: [...] }; },
//     step(actions)       { ...; return { obs, reward, terminated, truncated, info: { win: [1, 0] } }; },
//   };
//   await serve(game, { name: "my-game", agents: [agent("car", [9], hybrid({...}, {...}))], port: 11008 });
//
// `reset` and `step` may be async. Values may be arrays or typed arrays: `obs` one array per agent, or one
// flat Float32Array of every agent's numbers (the fast path for many agents, float32 observations); an
// observation is float32 numbers of any shape by default, `uint8` (a camera image [H, W, 3]: a Uint8Array or
// nested arrays, row-major) or `int32` with `agent(..., { dtype })` or `obsBox(shape, dtype)`, and a
// `dictObs({ image: obsBox([64, 64, 3], "uint8"), speed: obsBox([1]) })` observation is an object of those
// entries; each dtype travels as raw bytes of its type (protocol 2). `reward`, `terminated`,
// `truncated`, `alive` one entry per agent (`alive` defaults to "not terminated and not truncated", and to
// all alive at reset); `mask` one array per masked agent or one flat array (1 = allowed); `info` key ->
// one number per agent (NaN: nothing to report).
//
// An action reaches `step` as: discrete -> a number; multi_discrete -> an Int32Array [branches]; box -> a
// Float32Array (row-major); hybrid -> { type, params: Float32Array [P] } (parameters the type does not
// own are 0). `serve` returns once the trainer sends `close`, and rejects with an Error when the trainer
// refuses the game or the connection breaks. `serveMany([game0, game1, ...], options)` serves several
// copies of the game from this one process on one connection (`env.instances_per_process`; `batch` frames).

export const PROTOCOL_VERSION = 2;

const DTYPES = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array };
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("agentkit-bridge: this platform is big-endian; the protocol is little-endian");
}
const isNode = typeof process !== "undefined" && process.versions != null && process.versions.node != null;

// -- declaring agents ----------------------------------------------------------------------------------

export const discrete = (n, start = 0) => ({ kind: "discrete", n, start });
export const multiDiscrete = (nvec) => ({ kind: "multi_discrete", nvec: [...nvec] });
export const box = (shape, low, high) => ({ kind: "box", shape: [...shape], low, high });
/** `types`: {name: [param names it owns]}; `params`: {name: [low, high]}. */
export function hybrid(types, params) {
  return {
    kind: "hybrid",
    types: Object.entries(types).map(([name, owned]) => ({ name, params: [...owned] })),
    params: Object.entries(params).map(([name, [low, high]]) => ({ name, low, high })),
  };
}
/** An observation Box of any shape: `dtype` "float32" (default), "uint8" (pixels) or "int32"; bounds optional. */
export function obsBox(shape, dtype = "float32", low = null, high = null) {
  if (!(dtype in DTYPES)) throw new Error(`agentkit-bridge: observation dtype ${dtype}: give float32, uint8 or int32`);
  return { shape: [...shape], dtype, low, high };
}
/** A Dict observation of named Boxes (`obsBox`), sent in this order; its value is an object of those entries. */
export function dictObs(entries) {
  return { kind: "dict", entries: Object.entries(entries).map(([name, box]) => ({ name, ...box })) };
}
/** One agent: its observation as a shape (a Box of `dtype`, bounds optional) or what `obsBox`/`dictObs` return. */
export function agent(name, obsShape, action, { mask = false, low = null, high = null, dtype = "float32" } = {}) {
  const observation = Array.isArray(obsShape) ? obsBox(obsShape, dtype, low, high) : { ...obsShape };
  return { name, observation, action, mask };
}

// -- frames --------------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One payload: a header object and blobs {name: [dtype, values]} in insertion order. */
export function encode(header, blobs = {}) {
  const listed = [];
  const parts = [];
  for (const [name, [dtype, values]] of Object.entries(blobs)) {
    const Type = DTYPES[dtype];
    const typed = values instanceof Type ? values : Type.from(values, (v) => Number(v));
    listed.push({ name, dtype, count: typed.length });
    parts.push(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
  }
  return assemble(header, listed, parts);
}

/** One `batch` payload: `payloads[i]` (whole payloads, Uint8Arrays) for slot `slots[i]`, one after the other. */
export function encodeBatch(slots, payloads) {
  const sizes = payloads.map((p) => p.length);
  const count = sizes.reduce((a, b) => a + b, 0);
  return assemble({ type: "batch", slots, sizes }, [{ name: "parts", dtype: "uint8", count }], payloads);
}

/** The payload of `header` with the blobs `listed` ({name, dtype, count}) whose bytes are `parts`. */
function assemble(header, listed, parts) {
  const text = encoder.encode(JSON.stringify({ ...header, blobs: listed }));
  let size = 4 + text.length;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  new DataView(out.buffer).setUint32(0, text.length, true);
  out.set(text, 4);
  let offset = 4 + text.length;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** The header and blobs (typed arrays, copied so they are aligned) of one payload (a Uint8Array). */
export function decode(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = view.getUint32(0, true);
  const header = JSON.parse(decoder.decode(bytes.subarray(4, 4 + hlen)));
  const blobs = {};
  let offset = 4 + hlen;
  for (const { name, dtype, count } of header.blobs ?? []) {
    const Type = DTYPES[dtype];
    if (!Type) throw new Error(`bad_frame: blob ${name} has unknown dtype ${dtype}`);
    const n = count * Type.BYTES_PER_ELEMENT;
    blobs[name] = new Type(bytes.slice(offset, offset + n).buffer);
    offset += n;
  }
  if (offset !== bytes.length) throw new Error(`bad_frame: ${bytes.length - offset} bytes after the blobs`);
  return { header, blobs };
}

// -- connections: send(Uint8Array), recv() -> Promise<Uint8Array>, close() ------------------------------

class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
    this.error = null;
  }
  push(item) {
    const w = this.waiters.shift();
    if (w) w.resolve(item);
    else this.items.push(item);
  }
  fail(error) {
    if (this.error) return;
    this.error = error;
    for (const w of this.waiters.splice(0)) w.reject(error);
  }
  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
}

/**
 * `open()` -> Promise of a connection, until one opens or `timeoutMs` has passed since the first try: a refused
 * connection (nothing listens yet: a game started before `agentkit train`, listen mode) is tried again every
 * 200 ms; any other failure rejects at once. `refused(error)` says whether a failure is a refusal.
 */
async function retryRefused(open, refused, where, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await open(Math.max(deadline - Date.now(), 1));
    } catch (e) {
      if (!refused(e)) throw new Error(`cannot connect to ${where}: ${e.message}`);
      if (Date.now() >= deadline) {
        throw new Error(`cannot connect to ${where}: nothing listened there for ${timeoutMs / 1000} s (connection refused): `
          + "start `agentkit train` with env.mode: listen first, or raise --connect-timeout");
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(200, deadline - Date.now())));
    }
  }
}

async function connectTcp(host, port, timeoutMs) {
  const net = await import("node:net");
  const open = (msLeft) => new Promise((resolve, reject) => {
    const socket = net.createConnection({ host, port });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error("timed out")); }, msLeft);
    socket.once("connect", () => { clearTimeout(timer); socket.removeAllListeners("error"); resolve(socket); });
    socket.once("error", (e) => { clearTimeout(timer); socket.destroy(); reject(e); });
  });
  const socket = await retryRefused(open, (e) => e.code === "ECONNREFUSED", `${host}:${port}`, timeoutMs);
  socket.setNoDelay(true);
  const inbox = new Inbox();
  let frames = 0; // frames received so far (the spin after a send waits for the next)
  let chunks = [];
  let have = 0;
  let need = -1; // payload length of the frame being read, -1 while reading its 4-byte prefix
  const take = (n) => {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const c = chunks[0];
      const k = Math.min(c.length, n - filled);
      out.set(c.subarray(0, k), filled);
      filled += k;
      if (k === c.length) chunks.shift();
      else chunks[0] = c.subarray(k);
    }
    have -= n;
    return out;
  };
  socket.on("data", (data) => {
    chunks.push(new Uint8Array(data.buffer, data.byteOffset, data.length));
    have += data.length;
    for (;;) {
      if (need < 0) {
        if (have < 4) break;
        const p = take(4);
        need = new DataView(p.buffer).getUint32(0, true);
      }
      if (have < need) break;
      inbox.push(take(need));
      frames += 1;
      need = -1;
    }
  });
  socket.on("error", (e) => inbox.fail(new Error(`connection error: ${e.message}`)));
  socket.on("close", () => inbox.fail(new Error("the trainer closed the connection")));
  // After a send, wait awake for the answer for up to spinUs (the welcome's spin_us): while a setImmediate is
  // pending, libuv polls the socket without blocking, so the thread does not halt its CPU, and waking a halted
  // CPU costs more on a virtual machine than a light game's step (docs/bridge.md, `welcome`).
  const awake = (until, seen) => {
    if (frames === seen && performance.now() < until) setImmediate(awake, until, seen);
  };
  return {
    spinUs: 0,
    send(payload) {
      const prefix = new Uint8Array(4);
      new DataView(prefix.buffer).setUint32(0, payload.length, true);
      // corked: the prefix and the payload leave in one writev, one segment (two writes were two packets,
      // the first 4 bytes long)
      socket.cork();
      socket.write(prefix);
      socket.write(payload);
      socket.uncork();
      if (this.spinUs > 0) setImmediate(awake, performance.now() + this.spinUs / 1000, frames);
    },
    recv: () => inbox.next(),
    close() { socket.destroy(); },
  };
}

async function connectWebSocket(host, port, timeoutMs) {
  const WS = isNode && typeof globalThis.WebSocket === "undefined" ? (await import("ws")).default : globalThis.WebSocket;
  const open = (msLeft) => new Promise((resolve, reject) => {
    const ws = new WS(`ws://${host}:${port}/`);
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => { ws.close(); reject(new Error("timed out")); }, msLeft);
    ws.onopen = () => { clearTimeout(timer); resolve(ws); };
    ws.onerror = (e) => { clearTimeout(timer); reject(e.error ?? new Error(e.message ?? "error")); };
  });
  // the `ws` package gives the socket's error (ECONNREFUSED); a browser's WebSocket (and Node's own) gives no
  // reason for a connection that did not open: taken as refused, tried again until the timeout
  const refused = (e) => e.code === "ECONNREFUSED" || (e.code === undefined && e.message !== "timed out");
  const ws = await retryRefused(open, refused, `ws://${host}:${port}/`, timeoutMs);
  const inbox = new Inbox();
  ws.onmessage = (event) => {
    if (typeof event.data === "string") inbox.fail(new Error("bad_frame: the trainer sent a text message"));
    else inbox.push(new Uint8Array(event.data));
  };
  ws.onerror = (e) => inbox.fail(new Error(`connection error: ${e.message ?? "error"}`));
  ws.onclose = () => inbox.fail(new Error("the trainer closed the connection"));
  return { send: (payload) => ws.send(payload), recv: () => inbox.next(), close: () => ws.close() };
}

// -- the client ----------------------------------------------------------------------------------------

const prod = (shape) => shape.reduce((a, b) => a * b, 1);

const OBS_BLOBS = { float32: "obs", uint8: "obs_uint8", int32: "obs_int32" };

class Layout {
  constructor(agents, protocol) {
    this.agents = agents;
    this.n = agents.length;
    // every observation Box: { agent, key (a Dict entry's name, or null), dtype, start, stop } in wire order
    this.entries = [];
    this.obsCount = { float32: 0, uint8: 0, int32: 0 };
    agents.forEach((a, i) => {
      const obs = a.observation;
      const boxes = obs.kind === "dict" ? obs.entries.map((e) => [e.name, e]) : [[null, obs]];
      for (const [key, b] of boxes) {
        const dtype = b.dtype ?? "float32";
        if (!(dtype in DTYPES)) throw new Error(`agentkit-bridge: agent ${a.name}: observation dtype ${dtype}: give float32, uint8 or int32`);
        if (protocol < 2 && (dtype !== "float32" || key !== null)) {
          throw new Error(`agentkit-bridge: agent ${a.name}: protocol 1 carries one float32 Box per agent; use protocol 2`);
        }
        const start = this.obsCount[dtype];
        this.obsCount[dtype] += prod(b.shape);
        this.entries.push({ agent: i, key, dtype, start, stop: this.obsCount[dtype] });
      }
    });
    this.simple = this.entries.length === this.n && this.entries.every((e) => e.dtype === "float32" && e.key === null);
    this.nInt = [];
    this.nFloat = [];
    this.maskDim = [];
    for (const a of agents) {
      const act = a.action;
      this.nInt.push({ discrete: 1, multi_discrete: act.nvec?.length ?? 0, box: 0, hybrid: 1 }[act.kind]);
      this.nFloat.push(act.kind === "box" ? prod(act.shape) : act.kind === "hybrid" ? act.params.length : 0);
      const width = act.kind === "discrete" ? act.n : act.kind === "multi_discrete"
        ? act.nvec.reduce((x, y) => x + y, 0) : act.kind === "hybrid" ? act.types.length : 0;
      this.maskDim.push(a.mask ? width : 0);
    }
    this.totalMask = this.maskDim.reduce((x, y) => x + y, 0);
  }

  actions(ints, floats) {
    const out = new Array(this.n);
    let i = 0;
    let f = 0;
    for (let a = 0; a < this.n; a++) {
      const kind = this.agents[a].action.kind;
      const ni = this.nInt[a];
      const nf = this.nFloat[a];
      if (kind === "discrete") out[a] = ints[i];
      else if (kind === "multi_discrete") out[a] = ints.slice(i, i + ni);
      else if (kind === "box") out[a] = floats.slice(f, f + nf);
      else out[a] = { type: ints[i], params: floats.slice(f, f + nf) };
      i += ni;
      f += nf;
    }
    return out;
  }

  flat(values, total, Type, what) {
    if (values instanceof Type && values.length === total) return values;
    const out = new Type(total);
    if (values.length === total && !values.some?.((v) => typeof v === "object" && v !== null)) {
      out.set(Array.from(values, Number));
      return out;
    }
    let offset = 0;
    for (const v of values) {
      const arr = typeof v === "number" ? [v] : Array.from(v, Number);
      out.set(arr, offset);
      offset += arr.length;
    }
    if (offset !== total) throw new Error(`agentkit-bridge: ${what} has ${offset} numbers; the declared agents need ${total}`);
    return out;
  }

  perAgent(values, Type, what, fallback) {
    if (values == null) return fallback;
    const out = Type.from(values, (v) => Number(v));
    if (out.length !== this.n) throw new Error(`agentkit-bridge: ${what} needs one value per agent (${this.n}), got ${out.length}`);
    return out;
  }

  mask(mask) {
    if (mask == null) return new Uint8Array(this.totalMask).fill(1);
    return this.flat(mask, this.totalMask, Uint8Array, "mask");
  }

  /** The observation blobs of every agent's `obs` (see the top of this file), one per wire dtype in use. */
  obsBlobs(obs) {
    if (this.simple) return { obs: ["float32", this.flat(obs, this.obsCount.float32, Float32Array, "obs")] };
    if (obs == null || obs.length !== this.n) {
      throw new Error(`agentkit-bridge: obs needs one observation per agent (${this.n})`);
    }
    const out = {};
    const arrays = {};
    for (const [dtype, count] of Object.entries(this.obsCount)) {
      if (count) arrays[dtype] = out[OBS_BLOBS[dtype]] = [dtype, new DTYPES[dtype](count)];
    }
    for (const { agent, key, dtype, start, stop } of this.entries) {
      const value = key === null ? obs[agent] : obs[agent]?.[key];
      const name = this.agents[agent].name + (key === null ? "" : `.${key}`);
      if (value == null) throw new Error(`agentkit-bridge: agent ${name} has no observation`);
      const flat = ArrayBuffer.isView(value) ? value : typeof value === "number" ? [value] : value.flat(Infinity);
      if (flat.length !== stop - start) {
        throw new Error(`agentkit-bridge: the observation of agent ${name} has ${flat.length} values; it declared ${stop - start}`);
      }
      arrays[dtype][1].set(flat, start);
    }
    return out;
  }
}

/** One instance's game: the answer to each request the trainer sends it. */
class Session {
  constructor(game, agents, protocol, stateDim) {
    this.game = game;
    this.layout = new Layout(agents, protocol);
    this.stateDim = stateDim;
  }

  /**
   * The payload answering one request (`bytes`, a `reset` or `step`), or null for `close`. Throws on the
   * trainer's `error`, and on a message it does not know (after telling the trainer over `conn`).
   */
  async handle(bytes, conn) {
    const { game, layout, stateDim } = this;
    const n = layout.n;
    const { header, blobs } = decode(bytes);
    if (header.type === "reset") {
      const r = await game.reset(header.seed ?? null, header.params ?? {});
      const out = {
        ...layout.obsBlobs(r.obs),
        alive: ["uint8", layout.perAgent(r.alive, Uint8Array, "alive", new Uint8Array(n).fill(1))],
      };
      if (layout.totalMask) out.mask = ["uint8", layout.mask(r.mask)];
      if (stateDim) out.state = ["float32", Float32Array.from(r.state)];
      return encode({ type: "reset_result" }, out);
    }
    if (header.type === "step") {
      const s = await game.step(layout.actions(blobs.action_int, blobs.action_float));
      const term = layout.perAgent(s.terminated, Uint8Array, "terminated");
      const trunc = layout.perAgent(s.truncated, Uint8Array, "truncated");
      const fallback = term.map((t, a) => (t || trunc[a] ? 0 : 1));
      const out = {
        ...layout.obsBlobs(s.obs),
        reward: ["float32", layout.perAgent(s.reward, Float32Array, "reward")],
        terminated: ["uint8", term],
        truncated: ["uint8", trunc],
        alive: ["uint8", layout.perAgent(s.alive, Uint8Array, "alive", fallback)],
      };
      if (layout.totalMask) out.mask = ["uint8", layout.mask(s.mask)];
      if (stateDim) out.state = ["float32", Float32Array.from(s.state)];
      const head = { type: "step_result" };
      const keys = Object.keys(s.info ?? {});
      if (keys.length) {
        head.info_keys = keys;
        const info = new Float32Array(n * keys.length);
        keys.forEach((key, k) => {
          const v = s.info[key];
          for (let a = 0; a < n; a++) info[a * keys.length + k] = typeof v === "number" ? v : Number(v[a]);
        });
        out.info = ["float32", info];
      }
      return encode(head, out);
    }
    if (header.type === "close") return null;
    if (header.type === "error") throw new Error(`the trainer stopped: ${header.message}`);
    conn.send(encode({ type: "error", code: "unexpected_message", message: `unknown message ${header.type}` }));
    throw new Error(`unexpected message ${header.type}`);
  }
}

const SERVE_DEFAULTS = { host: "127.0.0.1", port: 11008, transport: "tcp", instance: null, token: null, stateDim: 0,
  connectTimeoutMs: 30000, protocol: PROTOCOL_VERSION };

/** `serve`'s options with their defaults (for those missing or undefined), checked. */
function serveOptions(options) {
  const o = { ...SERVE_DEFAULTS };
  for (const [key, value] of Object.entries(options)) if (value !== undefined) o[key] = value;
  if (o.protocol !== 1 && o.protocol !== 2) throw new Error(`agentkit-bridge: protocol ${o.protocol}: give 1 or 2`);
  if (!isNode && o.transport !== "websocket") throw new Error("agentkit-bridge: browsers connect with transport 'websocket'");
  return o;
}

/**
 * Connect, say hello for `instances` instances, run `body(conn)` and close the connection; resolves with the
 * trainer's `welcome` header, rejects if it refuses the game.
 */
async function connected(o, instances, body) {
  const conn = o.transport === "tcp"
    ? await connectTcp(o.host, o.port, o.connectTimeoutMs)
    : await connectWebSocket(o.host, o.port, o.connectTimeoutMs);
  try {
    const hello = { type: "hello", protocol: o.protocol, game: o.name, instance: o.instance, token: o.token,
      agents: o.agents, state_dim: o.stateDim };
    if (instances > 1) hello.instances = instances;
    conn.send(encode(hello));
    const { header: welcome } = decode(await conn.recv());
    if (welcome.type === "error") throw new Error(`the trainer refused the game: ${welcome.message}`);
    if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${welcome.type}`);
    if ("spinUs" in conn) conn.spinUs = Number(welcome.spin_us ?? 0); // TCP only: a WebSocket's reads are the browser's
    await body(conn);
    return welcome;
  } finally {
    conn.close();
  }
}

/**
 * Connect to the trainer, say hello as `name` with `agents`, and serve `game` until the trainer sends
 * `close`. Options: host ("127.0.0.1"), port (11008), transport ("tcp" | "websocket"; browsers: websocket),
 * instance (null), token (null), stateDim (0), connectTimeoutMs (30000). Resolves with the welcome header.
 */
export async function serve(game, options = {}) {
  const o = serveOptions(options);
  const session = new Session(game, o.agents, o.protocol, o.stateDim);
  return connected(o, 1, async (conn) => {
    for (;;) {
      const answer = await session.handle(await conn.recv(), conn);
      if (answer === null) return;
      conn.send(answer);
    }
  });
}

/**
 * Serve several instances of a game from this one process on one connection: `games[k]` (each its own game
 * object) is instance `instance + k`. What `env.instances_per_process` launches: the process gets the first
 * instance's number (`--instance`) and the count (`--instances`, `parseArgs().instances`). The hello says
 * `"instances": games.length`; then the trainer sends each vector step's requests in one `batch` and this
 * answers them in one (docs/bridge.md, "Several instances on one connection"). Same options as `serve`;
 * resolves with the welcome header once the trainer has closed every instance. One game: `serve`.
 */
export async function serveMany(games, options = {}) {
  if (!Array.isArray(games) || games.length === 0) {
    throw new Error("agentkit-bridge: serveMany needs an array of games, one per instance");
  }
  if (games.length === 1) return serve(games[0], options);
  const o = serveOptions(options);
  const sessions = games.map((game) => new Session(game, o.agents, o.protocol, o.stateDim));
  return connected(o, games.length, async (conn) => {
    const live = new Set(sessions.keys());
    while (live.size) {
      const bytes = await conn.recv();
      const { header, blobs } = decode(bytes);
      if (header.type !== "batch") { // the trainer's error, or a message this client does not know
        await sessions[0].handle(bytes, conn);
        throw new Error(`expected a batch, got ${header.type}`);
      }
      const { slots, sizes } = header;
      const parts = blobs.parts ?? new Uint8Array(0);
      if (!Array.isArray(slots) || !Array.isArray(sizes) || slots.length !== sizes.length
          || !slots.every((s) => Number.isInteger(s) && s >= 0 && s < games.length)
          || sizes.reduce((a, b) => a + b, 0) !== parts.length) {
        throw new Error(`bad_frame: a batch for ${games.length} instances has slots ${JSON.stringify(slots)}, `
          + `sizes ${JSON.stringify(sizes)} and ${parts.length} bytes of parts`);
      }
      const answered = [];
      const answers = [];
      let at = 0;
      for (let i = 0; i < slots.length; i++) {
        const answer = await sessions[slots[i]].handle(parts.subarray(at, at + sizes[i]), conn);
        at += sizes[i];
        if (answer === null) live.delete(slots[i]);
        else {
          answered.push(slots[i]);
          answers.push(answer);
        }
      }
      if (answered.length) conn.send(encodeBatch(answered, answers));
    }
  });
}

/**
 * Node: `--host --port --transport --instance --instances --seed --token --connect-timeout` from `argv`,
 * defaulting to the AGENTKIT_BRIDGE_* environment variables a launched game gets (and 127.0.0.1:11008 over TCP,
 * 1 instance). `--connect-timeout SECONDS` (AGENTKIT_BRIDGE_CONNECT_TIMEOUT, default 30) comes back as
 * `connectTimeoutMs`, `serve`'s option. Each option is `--key value` or `--key=value`. Unknown pairs are
 * returned too (as strings).
 */
export function parseArgs(argv = isNode ? process.argv.slice(2) : []) {
  const env = isNode ? process.env : {};
  const out = {
    host: env.AGENTKIT_BRIDGE_HOST ?? "127.0.0.1",
    port: Number(env.AGENTKIT_BRIDGE_PORT ?? 11008),
    transport: env.AGENTKIT_BRIDGE_TRANSPORT ?? "tcp",
    instance: env.AGENTKIT_BRIDGE_INSTANCE != null ? Number(env.AGENTKIT_BRIDGE_INSTANCE) : null,
    instances: Number(env.AGENTKIT_BRIDGE_INSTANCES ?? 1), // how many this process serves (serveMany)
    seed: Number(env.AGENTKIT_BRIDGE_SEED ?? 0),
    token: env.AGENTKIT_BRIDGE_TOKEN ?? null,
    connectTimeout: env.AGENTKIT_BRIDGE_CONNECT_TIMEOUT ?? 30, // seconds; returned as connectTimeoutMs
  };
  for (let i = 0; i < argv.length; i++) {
    // `--port 5555` or `--port=5555` (the form the C# and Godot clients read)
    const m = /^--([\w-]+)(?:=(.*))?$/s.exec(argv[i]);
    if (!m || (m[2] === undefined && i + 1 >= argv.length)) continue;
    const key = m[1].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = m[2] ?? argv[++i];
    out[key] = ["port", "instance", "instances", "seed"].includes(key) ? Number(value) : value;
  }
  if (!Number.isInteger(out.instances) || out.instances < 1) {
    throw new Error(`agentkit-bridge: --instances (or AGENTKIT_BRIDGE_INSTANCES) is ${out.instances}: give a whole number >= 1`);
  }
  const seconds = Number(out.connectTimeout);
  if (!(seconds > 0) || !Number.isFinite(seconds)) {
    throw new Error(`agentkit-bridge: --connect-timeout (or AGENTKIT_BRIDGE_CONNECT_TIMEOUT) is ${out.connectTimeout}: give a number of seconds above 0`);
  }
  delete out.connectTimeout;
  out.connectTimeoutMs = seconds * 1000;
  return out;
}

/** A small seeded generator (mulberry32) for games that want reproducible episodes: `rng()` in [0, 1). */
export function seededRandom(seed) {
  let a = (Number(seed) >>> 0) || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
