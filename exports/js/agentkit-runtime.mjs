// agentkit reference runtime for JavaScript: load an exported policy, read its metadata, act.
//
// Tested on onnxruntime-node. It uses only the onnxruntime-common API that onnxruntime-web shares: a browser
// game passes `{ ort }` with the onnxruntime-web module and the model's bytes instead of a path.
//
//   import { loadPolicy } from "./agentkit-runtime.mjs";
//   const policy = await loadPolicy("policy.onnx");
//   policy.metadata.action;                                  // what the actions mean
//   const a = await policy.act([0.1, 0.0, -0.2, 0.3]);       // one observation -> { action: 1 }
//   const b = await policy.act([[...], [...]], { mask: [[1, 0], [1, 1]] });   // a batch -> { action: [0, 1] }
//   const c = await policy.act(obs, { deterministic: false, noise: [[0.42]] }); // sampled, reproducible
//
// The file contract (inputs, outputs, metadata) is agentkit's exports/CONTRACT.md.

export const METADATA_KEY = "agentkit";
export const SUPPORTED_CONTRACTS = [1];

// -- metadata: ModelProto.metadata_props (field 14), read straight from the protobuf bytes --------------------
// onnxruntime's JavaScript API exposes no custom metadata, so the few bytes needed are parsed here.

function readVarint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new Error("truncated ONNX file (varint)");
    const byte = bytes[pos++];
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
}

function skipField(bytes, pos, wireType) {
  switch (wireType) {
    case 0: return readVarint(bytes, pos)[1];
    case 1: return pos + 8;
    case 2: { const [len, p] = readVarint(bytes, pos); return p + len; }
    case 5: return pos + 4;
    default: throw new Error(`not an ONNX file (protobuf wire type ${wireType})`);
  }
}

/** All `metadata_props` of an ONNX model as a plain object (key -> string). */
export function readMetadataProps(bytes) {
  const decoder = new TextDecoder();
  const props = {};
  let pos = 0;
  while (pos < bytes.length) {
    let tag;
    [tag, pos] = readVarint(bytes, pos);
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 14 && wireType === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      const end = pos + len;
      let key = "";
      let value = "";
      while (pos < end) {
        let t;
        [t, pos] = readVarint(bytes, pos);
        if ((t & 7) !== 2) { pos = skipField(bytes, pos, t & 7); continue; }
        let n;
        [n, pos] = readVarint(bytes, pos);
        const text = decoder.decode(bytes.subarray(pos, pos + n));
        pos += n;
        if (t >>> 3 === 1) key = text;
        else if (t >>> 3 === 2) value = text;
      }
      props[key] = value;
    } else {
      pos = skipField(bytes, pos, wireType);
    }
    if (pos > bytes.length) throw new Error("truncated ONNX file");
  }
  return props;
}

// -- inputs ----------------------------------------------------------------------------------------------------

const prod = (dims) => dims.reduce((a, b) => a * b, 1);

function flatten(value) {
  if (ArrayBuffer.isView(value)) return Array.from(value);
  if (!Array.isArray(value)) return [value];
  return value.flatMap((v) => flatten(v));
}

function depth(value) {
  if (ArrayBuffer.isView(value)) return 1;
  let d = 0;
  while (Array.isArray(value)) { d += 1; value = value[0]; }
  return d;
}

const isEntries = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);

/**
 * One structured observation -> the flat vector the graph takes, by metadata.observation.fields
 * (exports/CONTRACT.md, "Structured observations"): `raw` is the env's object of entries, e.g.
 * { position: [0.5, -0.25], cell: 2, items: [1, 0] }, or for a Tuple observation the array of its entries,
 * e.g. [14, 10, 0]. Extra entries (an action_mask) are ignored.
 */
export function flattenObservation(fields, raw) {
  const out = new Float32Array(Math.max(...fields.map((f) => f.start + f.size)));
  for (const f of fields) {
    const name = f.key === null ? "observation" : `observation entry "${f.key}"`;
    const value = f.key === null ? raw : raw[f.key];
    if (value === undefined) throw new Error(`${name} is missing (got the entries ${Object.keys(raw).sort().join(", ")})`);
    const values = flatten(value).map(Number);
    if (values.length !== prod(f.shape)) {
      throw new Error(`${name}: expected shape [${f.shape.join(", ")}] (${prod(f.shape)} numbers), got ${values.length}`);
    }
    if (f.encoding === "box") { out.set(values, f.start); continue; }
    let offset = f.start;
    values.forEach((v, i) => {
      const k = v - f.first[i];
      if (!Number.isInteger(k) || k < 0 || k >= f.n[i]) {
        throw new Error(`${name}: value ${v} is not a category in ${f.first[i]} .. ${f.first[i] + f.n[i] - 1}`);
      }
      out[offset + k] = 1;
      offset += f.n[i];
    });
  }
  return out;
}

/**
 * Whether `v` is one Tuple observation given as the array of its entries, each of its field's size, rather
 * than a flat vector of `width` numbers (or a batch of them). Where the two read the same (every entry one
 * number, as many as the flat width), it is taken as the flat vector.
 */
function isTupleObservation(fields, width, v) {
  return Array.isArray(v) && fields.every((f) => Number.isInteger(f.key)) && v.length === fields.length
    && fields.length !== width && fields.every((f, i) => flatten(v[i]).length === prod(f.shape));
}

/** Rows [batch][width] from one row or a batch, with a clear error naming expected and got. */
function rows(name, value, width, rowShape, batch) {
  if (value === undefined || value === null) throw new Error(`${name}: missing`);
  const single = depth(value) === rowShape.length || (rowShape.length === 0 && depth(value) === 0);
  const flat = flatten(value);
  for (const x of flat) {
    if (typeof x !== "number" && typeof x !== "boolean") {
      throw new Error(`${name}: expected numbers, got ${typeof x} (${JSON.stringify(x)})`);
    }
  }
  const n = single ? 1 : (Array.isArray(value) ? value.length : 0);
  if (flat.length !== n * width || (batch !== undefined && n !== batch && !single)) {
    const want = batch !== undefined ? `[${[batch, ...rowShape].join(", ")}]` : `[batch, ${rowShape.join(", ")}]`;
    throw new Error(`${name}: expected shape [${rowShape.join(", ")}] (one) or ${want}, got ${flat.length} numbers in ${n} row(s)`);
  }
  return { data: Float32Array.from(flat, Number), n, single };
}

function broadcastRows(data, n, batch) {
  if (n === batch) return data;
  const out = new Float32Array(data.length * batch);
  for (let i = 0; i < batch; i++) out.set(data, i * data.length);
  return out;
}

function toNumbers(tensor) {
  return Array.from(tensor.data, (v) => (typeof v === "bigint" ? Number(v) : v));
}

function reshape(flat, dims) {
  if (dims.length === 0) return flat[0];
  if (dims.length === 1) return flat.slice(0, dims[0]);
  const step = prod(dims.slice(1));
  const out = [];
  for (let i = 0; i < dims[0]; i++) out.push(reshape(flat.slice(i * step, (i + 1) * step), dims.slice(1)));
  return out;
}

// -- the policy ------------------------------------------------------------------------------------------------

export class Policy {
  constructor(session, metadata, ort) {
    this.session = session;
    this.metadata = metadata;
    this.ort = ort;
    this.observationShape = metadata.observation.shape;
    this.obsSize = prod(this.observationShape);
    this.maskDim = metadata.mask ? metadata.mask.dim : 0;
    this.maskSegments = metadata.mask ? metadata.mask.segments : [];
    this.noiseDim = metadata.stochastic ? metadata.stochastic.dim : 0;
    this.agents = metadata.agents || [];
    this.agentIdDim = metadata.agent_id ? metadata.agent_id.dim : 0;
    this.actionOutputs = metadata.action_outputs;
    this.inputNames = metadata.inputs.map((i) => i.name);
    const layout = Object.fromEntries((metadata.env_action || []).map((e) => [e.output, e.shape]));
    this.rowShapes = Object.fromEntries(this.actionOutputs.map((name) => {
      const spec = metadata.outputs.find((o) => o.name === name);
      return [name, layout[name] ?? spec.shape.slice(1)];
    }));
  }

  get stochastic() { return this.noiseDim > 0; }

  /**
   * Actions for one observation or a batch.
   * obs: number[] (one observation) or number[][] (a batch); typed arrays work as one observation. A policy
   * whose env observes a Dict (metadata.observation.fields) also takes the env's object of entries, or an
   * array of them; their action_mask entry is the mask unless options.mask is given. For a Discrete observation
   * a number is its category (flattenObservation(fields, value) encodes other category values).
   * options.mask: 1 = allowed, one row or one per observation (default: everything allowed).
   * options.deterministic (default true); options.noise: uniform(0, 1) numbers [batch][noiseDim] for a
   * reproducible sample (default: Math.random); options.agent: name or index (or one per row) for policies
   * shared by several agents.
   * Returns { [output]: value } with the action outputs (`action`, or `action_type` + `action_params`),
   * each without the batch axis for one observation and with it for a batch.
   */
  async act(obs, options = {}) {
    const outs = await this.outputs(obs, options);
    const result = {};
    for (const name of this.actionOutputs) {
      const { values, batch, single } = outs[name];
      const shape = this.rowShapes[name];
      const batched = reshape(values, [batch, ...shape]);
      result[name] = single ? batched[0] : batched;
    }
    return result;
  }

  /** The action outputs as flat number arrays: { name: { values, batch, single } }. */
  async outputs(obs, { mask, deterministic = true, noise, agent } = {}) {
    const fields = this.metadata.observation.fields;
    if (fields && (isEntries(obs) || (Array.isArray(obs) && obs.length > 0 && obs.every(isEntries)))) {
      // the env's own observation object (or a batch of them): flattened here, its action_mask used
      const raws = isEntries(obs) ? [obs] : obs;
      if ((mask === undefined || mask === null) && this.maskDim && raws[0].action_mask !== undefined) {
        mask = isEntries(obs) ? obs.action_mask : raws.map((r) => r.action_mask);
      }
      const flat = raws.map((r) => Array.from(flattenObservation(fields, r)));
      obs = isEntries(obs) ? flat[0] : flat;
    } else if (fields && isTupleObservation(fields, this.obsSize, obs)) {
      obs = Array.from(flattenObservation(fields, obs)); // the env's Tuple observation: its entries in order
    } else if (fields && Array.isArray(obs) && obs.length > 0 && obs.every((r) => isTupleObservation(fields, this.obsSize, r))) {
      obs = obs.map((r) => Array.from(flattenObservation(fields, r)));
    } else if (fields && fields.length === 1 && fields[0].key === null && typeof obs === "number") {
      obs = Array.from(flattenObservation(fields, obs)); // a Discrete observation's category
    }
    const o = rows("observation", obs, this.obsSize, this.observationShape);
    const batch = o.n;
    const T = this.ort.Tensor;
    const feeds = { obs: new T("float32", o.data, [batch, ...this.observationShape]) };
    if (this.maskDim) {
      let m;
      if (mask === undefined || mask === null) m = new Float32Array(batch * this.maskDim).fill(1);
      else {
        const r = rows("action mask", mask, this.maskDim, [this.maskDim], batch);
        m = broadcastRows(r.data.map((v) => (v > 0.5 ? 1 : 0)), r.n, batch);
      }
      for (let i = 0; i < batch; i++) {
        let start = 0;
        for (const width of this.maskSegments) {
          if (!m.subarray(i * this.maskDim + start, i * this.maskDim + start + width).some((v) => v > 0.5)) {
            throw new Error(`action mask: row ${i} allows no action in the segment at ${start} (width ${width})`);
          }
          start += width;
        }
      }
      feeds.action_mask = new T("float32", m, [batch, this.maskDim]);
    } else if (mask !== undefined && mask !== null) {
      throw new Error("action mask: this policy takes no action mask (the file has no action_mask input)");
    }
    if (this.agentIdDim) {
      if (agent === undefined || agent === null) {
        throw new Error(`this policy is shared by the agents ${JSON.stringify(this.agents)}: pass { agent }`);
      }
      const ids = (Array.isArray(agent) ? agent : [agent]).map((a) => {
        const idx = typeof a === "string" ? this.agents.indexOf(a) : a;
        if (!Number.isInteger(idx) || idx < 0 || idx >= this.agentIdDim) {
          throw new Error(`agent: unknown agent ${JSON.stringify(a)}; agents are ${JSON.stringify(this.agents)}`);
        }
        return idx;
      });
      if (ids.length !== 1 && ids.length !== batch) throw new Error(`agent: got ${ids.length} ids for ${batch} observations`);
      const onehot = new Float32Array(batch * this.agentIdDim);
      for (let i = 0; i < batch; i++) onehot[i * this.agentIdDim + ids[ids.length === 1 ? 0 : i]] = 1;
      feeds.agent_id = new T("float32", onehot, [batch, this.agentIdDim]);
    }
    if (!deterministic && !this.noiseDim) {
      throw new Error("this policy was exported deterministic-only; sampling needs `agentkit export --stochastic`");
    }
    if (this.noiseDim) {
      let u;
      if (deterministic) u = new Float32Array(batch * this.noiseDim).fill(0.5);
      else if (noise !== undefined && noise !== null) {
        const r = rows("noise", noise, this.noiseDim, [this.noiseDim], batch);
        if (r.n !== batch) throw new Error(`noise: expected [${batch}, ${this.noiseDim}] uniform(0, 1) numbers, got ${r.n} row(s)`);
        u = r.data;
      }
      else u = Float32Array.from({ length: batch * this.noiseDim }, () => Math.random());
      feeds.noise = new T("float32", u, [batch, this.noiseDim]);
    }
    const names = deterministic && this.noiseDim
      ? this.actionOutputs.map((n) => this.metadata.stochastic.deterministic_outputs[n])
      : this.actionOutputs;
    const results = await this.session.run(feeds, names);
    const out = {};
    this.actionOutputs.forEach((name, i) => {
      out[name] = { values: toNumbers(results[names[i]]), batch, single: o.single };
    });
    return out;
  }
}

/**
 * Load an exported policy. `source`: a file path (Node) or the model's bytes (Uint8Array/ArrayBuffer).
 * options.ort: the onnxruntime module (default: onnxruntime-node); options.sessionOptions: passed on.
 */
export async function loadPolicy(source, options = {}) {
  const ort = options.ort ?? (await import("onnxruntime-node"));
  let bytes;
  if (typeof source === "string") {
    const fs = await import("node:fs/promises");
    bytes = new Uint8Array(await fs.readFile(source));
  } else {
    bytes = source instanceof Uint8Array ? source : new Uint8Array(source);
  }
  const props = readMetadataProps(bytes);
  if (!(METADATA_KEY in props)) {
    throw new Error(`${typeof source === "string" ? source : "model"}: no '${METADATA_KEY}' metadata; not an agentkit export`);
  }
  const metadata = JSON.parse(props[METADATA_KEY]);
  if (!SUPPORTED_CONTRACTS.includes(metadata.contract_version)) {
    throw new Error(`contract version ${metadata.contract_version} is not supported (this runtime reads ${SUPPORTED_CONTRACTS})`);
  }
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["cpu"],
    intraOpNumThreads: 1,
    ...(options.sessionOptions ?? {}),
  });
  return new Policy(session, metadata, ort);
}
