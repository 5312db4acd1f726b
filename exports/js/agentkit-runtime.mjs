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
export const SUPPORTED_CONTRACTS = [1, 2, 3];

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

// -- what a runtime checks before acting (exports/CONTRACT.md, "What a runtime checks") -------------------------
// The same rule and messages as agentkit's Python runtime (agentkit/runtime/metadata.py).

const ENV_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "float32", "float64"];
const OUTPUT_DTYPES = ["int64", "float32"];
// dtypes of a per-entry observation input (contract 3): pixels, categories, values
const ENTRY_DTYPES = ["uint8", "int64", "float32"];

class MetadataError extends Error {}

/** A value for an error message, whatever it is (JSON.stringify throws on a BigInt and drops undefined). */
function describe(value) {
  if (typeof value === "bigint") return `${value}n`;
  if (value === undefined) return "undefined";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  try {
    const text = JSON.stringify(value, (k, v) => (typeof v === "bigint" ? `${v}n` : v));
    if (text === undefined) return String(value);
    return text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return String(value);
  }
}

function kind(value) {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

const dimsText = (shape) => `[${shape.join(", ")}]`;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function intAtLeast(value, where, low = 0) {
  if (typeof value !== "number" || !Number.isInteger(value) || value < low) {
    throw new MetadataError(`'${where}' must be an integer of at least ${low}, got ${describe(value)}`);
  }
  return value;
}

function objectAt(value, where) {
  if (!isObject(value)) throw new MetadataError(`'${where}' must be an object, got ${kind(value)}`);
  return value;
}

function listAt(value, where) {
  if (!Array.isArray(value)) throw new MetadataError(`'${where}' must be a list, got ${kind(value)}`);
  return value;
}

function parseMetadata(text) {
  let meta;
  try {
    meta = JSON.parse(text);
  } catch (err) {
    throw new MetadataError(`not valid JSON (${err.message})`);
  }
  if (!isObject(meta)) throw new MetadataError(`expected a JSON object, got ${kind(meta)}`);
  return meta;
}

const sameDims = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Throw MetadataError naming the first key of `meta` that is missing, mistyped or disagrees with the graph.
 * graphInputs: { name: dims or null (dims unknown) }; graphOutputs: the graph's output names.
 */
export function checkMetadata(meta, graphInputs, graphOutputs) {
  for (const key of ["observation", "action", "inputs", "outputs", "action_outputs"]) {
    if (!(key in meta)) throw new MetadataError(`no '${key}' key`);
  }
  const observation = objectAt(meta.observation, "observation");
  const fields = observation.fields;
  if (fields !== null && fields !== undefined) listAt(fields, "observation.fields");
  // contract 3: a Dict/Tuple holding an image has one input per entry, named by its field's "input"
  const entries = (fields ?? []).filter((f) => isObject(f) && "input" in f);
  if (entries.length && entries.length !== fields.length) {
    throw new MetadataError("'observation.fields' give an 'input' for some entries but not all");
  }
  const entryNames = new Set(entries.map((f) => f.input));
  const declared = {};
  const declaredDtypes = {};
  listAt(meta.inputs, "inputs").forEach((spec, i) => {
    if (!isObject(spec) || typeof spec.name !== "string" || !Array.isArray(spec.shape)) {
      throw new MetadataError(`'inputs[${i}]' must be an object with a 'name' and a 'shape'`);
    }
    // uint8: image frames; int64: the category of a Dict entry
    const allowed = spec.name === "obs" ? ["float32", "uint8"] : entryNames.has(spec.name) ? ENTRY_DTYPES : ["float32"];
    declaredDtypes[spec.name] = spec.dtype;
    if (!allowed.includes(spec.dtype)) {
      throw new MetadataError(`'inputs[${i}].dtype' must be ${allowed.map((d) => `"${d}"`).join(" or ")}, got ${describe(spec.dtype)}`);
    }
    declared[spec.name] = spec.shape;
  });
  const graph = Object.fromEntries(Object.entries(graphInputs).map(([n, d]) => [n, d === null ? null : d.slice(1)]));
  const names = Object.keys(graph);
  const sameNames = sameDims([...Object.keys(declared)].sort(), [...names].sort());
  if (!sameNames || names.some((n) => graph[n] !== null && !sameDims(declared[n].slice(1), graph[n]))) {
    const have = names.map((n) => `${n} ${graph[n] === null ? "[batch, ?]" : dimsText(["batch", ...graph[n]])}`).join(", ");
    const said = Object.entries(declared).map(([n, s]) => `${n} ${dimsText(s)}`).join(", ");
    throw new MetadataError(`the graph's inputs (${have}) differ from the metadata's 'inputs' (${said})`);
  }
  const dimsOf = (name) => graph[name] ?? declared[name].slice(1);

  const shape = listAt(observation.shape, "observation.shape");
  shape.forEach((d, i) => intAtLeast(d, `observation.shape[${i}]`));
  if (entries.length) {
    entries.forEach((f, i) => {
      if (typeof f.input !== "string" || !(f.input in graph)) {
        throw new MetadataError(`'observation.fields[${i}].input' ${describe(f.input)} is not a graph input`);
      }
      const entryShape = listAt(f.shape, `observation.fields[${i}].shape`);
      if (!sameDims(entryShape, dimsOf(f.input))) {
        throw new MetadataError(`'observation.fields[${i}].shape' ${dimsText(entryShape)} differs from the graph's ${f.input} input ${dimsText(["batch", ...dimsOf(f.input)])}`);
      }
      if (!ENTRY_DTYPES.includes(f.dtype) || f.dtype !== declaredDtypes[f.input]) {
        throw new MetadataError(`'observation.fields[${i}].dtype' ${describe(f.dtype)} differs from the ${f.input} input's ${describe(declaredDtypes[f.input])} (one of ${ENTRY_DTYPES.join(", ")})`);
      }
    });
  } else {
    if (!("obs" in graph)) throw new MetadataError("the graph has no 'obs' input");
    if (!sameDims(shape, dimsOf("obs"))) {
      throw new MetadataError(`'observation.shape' ${dimsText(shape)} differs from the graph's obs input ${dimsText(["batch", ...dimsOf("obs")])}`);
    }
    const obsDtype = meta.inputs.find((spec) => spec.name === "obs").dtype;
    if ((observation.dtype ?? "float32") !== obsDtype) {
      throw new MetadataError(`'observation.dtype' ${describe(observation.dtype)} differs from the obs input's "${obsDtype}"`);
    }
  }

  for (const [key, input] of [["mask", "action_mask"], ["stochastic", "noise"], ["agent_id", "agent_id"]]) {
    if (meta[key] === null || meta[key] === undefined) {
      if (input in graph) throw new MetadataError(`the graph has an '${input}' input but '${key}' is null`);
      continue;
    }
    const dim = intAtLeast(objectAt(meta[key], key).dim, `${key}.dim`, 1);
    if (!(input in graph) || !sameDims(dimsOf(input), [dim])) {
      const have = input in graph ? dimsText(["batch", ...dimsOf(input)]) : "none";
      throw new MetadataError(`'${key}.dim' ${dim} differs from the graph's ${input} input (${have})`);
    }
  }
  if (meta.mask !== null && meta.mask !== undefined) {
    const segments = listAt(meta.mask.segments, "mask.segments");
    segments.forEach((w, i) => intAtLeast(w, `mask.segments[${i}]`, 1));
    if (segments.reduce((a, b) => a + b, 0) !== meta.mask.dim) {
      throw new MetadataError(`'mask.segments' ${dimsText(segments)} do not add up to 'mask.dim' ${meta.mask.dim}`);
    }
  }

  const specs = {};
  listAt(meta.outputs, "outputs").forEach((spec, i) => {
    if (!isObject(spec) || typeof spec.name !== "string" || !Array.isArray(spec.shape)) {
      throw new MetadataError(`'outputs[${i}]' must be an object with a 'name' and a 'shape'`);
    }
    if (!OUTPUT_DTYPES.includes(spec.dtype)) {
      throw new MetadataError(`'outputs[${i}].dtype' must be one of ${OUTPUT_DTYPES.join(", ")}, got ${describe(spec.dtype)}`);
    }
    spec.shape.slice(1).forEach((d, j) => intAtLeast(d, `outputs[${i}].shape[${j + 1}]`));
    if (!graphOutputs.includes(spec.name)) {
      throw new MetadataError(`'outputs[${i}]' names ${describe(spec.name)}, which is not a graph output (${graphOutputs.join(", ")})`);
    }
    specs[spec.name] = spec;
  });
  const actionOutputs = listAt(meta.action_outputs, "action_outputs");
  if (actionOutputs.length === 0) throw new MetadataError("'action_outputs' is empty");
  for (const name of actionOutputs) {
    if (!(name in specs)) throw new MetadataError(`'action_outputs' names ${describe(name)}, which 'outputs' does not describe`);
  }
  if (meta.stochastic !== null && meta.stochastic !== undefined) {
    const det = objectAt(meta.stochastic.deterministic_outputs, "stochastic.deterministic_outputs");
    for (const name of actionOutputs) {
      if (!graphOutputs.includes(det[name])) throw new MetadataError(`'stochastic.deterministic_outputs.${name}' names no graph output`);
    }
  }
  listAt(meta.env_action ?? [], "env_action").forEach((entry, i) => {
    if (!isObject(entry) || !(entry.output in specs)) {
      throw new MetadataError(`'env_action[${i}]' must be an object naming one of the 'outputs'`);
    }
    if (!ENV_DTYPES.includes(entry.dtype)) {
      throw new MetadataError(`'env_action[${i}].dtype' must be one of ${ENV_DTYPES.join(", ")}, got ${describe(entry.dtype)}`);
    }
    const row = listAt(entry.shape, `env_action[${i}].shape`);
    row.forEach((d, j) => intAtLeast(d, `env_action[${i}].shape[${j}]`));
    const spec = specs[entry.output].shape;
    if (prod(row) !== prod(spec.slice(1))) {
      throw new MetadataError(`'env_action[${i}].shape' ${dimsText(row)} does not hold one row of output ${describe(entry.output)} ${dimsText(spec)}`);
    }
  });
  const agents = meta.agents;
  if (agents !== null && agents !== undefined && !(Array.isArray(agents) && agents.every((a) => typeof a === "string"))) {
    throw new MetadataError("'agents' must be a list of names");
  }
}

// -- inputs ----------------------------------------------------------------------------------------------------

const prod = (dims) => dims.reduce((a, b) => a * b, 1);

function flatten(value) {
  if (ArrayBuffer.isView(value)) return Array.from(value);
  if (!Array.isArray(value)) return [value];
  return value.flatMap((v) => flatten(v));
}

const isEntries = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
const isRow = (v) => Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));

/** The dims of a nested array, read along its first elements ([] for a number; a typed array is one axis). */
function nestedDims(value) {
  const dims = [];
  for (let v = value; isRow(v); v = v[0]) {
    dims.push(v.length);
    if (v.length === 0) break;
  }
  return dims;
}

/**
 * The env's Dict observation given as a batch, a batch axis first on each entry (a gymnasium vector env's, as
 * the Python runtime takes it) -> one object of entries per row; null when `raw` is one observation (its first
 * field's entry has that field's own number of axes: the rule of agentkit.runtime.observation). Every entry
 * must then have the same batch axis; an action_mask entry is left to the caller.
 */
function batchRows(fields, raw) {
  const first = raw[fields[0].key];
  if (first === undefined || nestedDims(first).length !== fields[0].shape.length + 1) return null;
  const n = nestedDims(first)[0];
  const out = Array.from({ length: n }, () => ({}));
  for (const f of fields) {
    const name = `observation entry "${f.key}"`;
    const value = raw[f.key];
    if (value === undefined) throw new Error(`${name} is missing (got the entries ${Object.keys(raw).sort().join(", ")})`);
    const dims = nestedDims(value);
    if (dims.length !== f.shape.length + 1 || dims[0] !== n) {
      throw new Error(`${name}: expected shape ${dimsText([n, ...f.shape])} (a batch of ${n}, as the other entries), got ${dimsText(dims)}`);
    }
    for (let i = 0; i < n; i++) out[i][f.key] = value[i];
  }
  return out;
}

/**
 * A nested array of numbers (or of typed arrays) -> { dims, data: Float32Array } in C order. Throws naming
 * `name` for anything but numbers and booleans, and for ragged nesting.
 */
function tensorOf(name, value) {
  const notNumber = (v) => new Error(`${name}: expected numbers, got ${typeof v} (${describe(v)})`);
  if (typeof value === "number" || typeof value === "boolean") return { dims: [], data: Float32Array.of(Number(value)) };
  if (!isRow(value)) throw notNumber(value);
  const dims = nestedDims(value);
  const data = new Float32Array(prod(dims));
  const last = dims.length - 1;
  let k = 0;
  const fill = (v, d) => {
    if (!isRow(v) || v.length !== dims[d]) {
      throw new Error(`${name}: not a rectangular array of numbers (rows of different lengths?)`);
    }
    if (d < last) {
      for (let i = 0; i < v.length; i++) fill(v[i], d + 1);
      return;
    }
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x === "number") data[k++] = x;
      else if (typeof x === "boolean") data[k++] = x ? 1 : 0;
      else if (isRow(x)) throw new Error(`${name}: not a rectangular array of numbers (rows of different lengths?)`);
      else throw notNumber(x);
    }
  };
  fill(value, 0);
  return { dims, data };
}

/** The one shape message both runtimes give: `expected shape [6] (one) or [batch, 6], got [2, 6, 1]`. */
function expectedShape(row, got, batch) {
  return `expected shape ${dimsText(row)} (one) or ${dimsText([batch ?? "batch", ...row])}, got ${dimsText(got)}`;
}

/** Throw naming the first NaN or infinity of `data` (rows of `rowSize`) by row and position. */
function checkFinite(name, data, rowSize) {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v - v !== 0) { // NaN or +-Infinity; fast on a Float32Array
      const word = Number.isNaN(v) ? "NaN" : v > 0 ? "inf" : "-inf";
      throw new Error(`${name}: row ${Math.floor(i / rowSize)} holds ${word} at position ${i % rowSize}; a policy acts on finite numbers only (check what produced it)`);
    }
  }
}

/**
 * Rows [batch][width] from one row (shape rowShape) or a batch ([n, ...rowShape]; with `batch` given, exactly
 * that many); an empty array is a batch of 0 when `batch` is not given. A typed array of prod(rowShape) numbers
 * is one row in C order.
 */
function rows(name, value, rowShape, batch) {
  if (value === undefined || value === null) throw new Error(`${name}: missing`);
  const width = prod(rowShape);
  if (ArrayBuffer.isView(value) && !(value instanceof DataView) && value.length === width && rowShape.length !== 1) {
    return rows(name, Array.from(value), [width], batch);
  }
  const { dims, data } = tensorOf(name, value);
  if (sameDims(dims, rowShape)) return { data, n: 1, single: true };
  if (dims.length === rowShape.length + 1 && sameDims(dims.slice(1), rowShape) && (batch === undefined || dims[0] === batch)) {
    return { data, n: dims[0], single: false };
  }
  if (batch === undefined && dims.length === 1 && dims[0] === 0) return { data, n: 0, single: false };
  throw new Error(`${name}: ${expectedShape(rowShape, dims, batch)}`);
}

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

/**
 * Observation rows as the graph's obs input takes them: rows() of the observation shape, or a typed array
 * holding several whole observations row-major (a batch of camera frames). uint8 inputs (images) take the
 * env's own pixels: whole numbers 0..255, unscaled (the graph scales them).
 */
function observationRows(value, rowShape, dtype) {
  const width = prod(rowShape);
  let o;
  if (ArrayBuffer.isView(value) && !(value instanceof DataView) && rowShape.length > 1 && value.length !== width) {
    if (value.length === 0 || value.length % width !== 0) {
      throw new Error(`observation: expected shape [${rowShape.join(", ")}] (${width} numbers) or a batch of them, got a typed array of ${value.length}`);
    }
    o = { data: Float32Array.from(value), n: value.length / width, single: false };
  } else {
    o = rows("observation", value, rowShape);
  }
  checkFinite("observation", o.data, width);
  if (dtype !== "uint8") return o;
  for (const x of o.data) {
    if (!(Number.isInteger(x) && x >= 0 && x <= 255)) {
      throw new Error(`observation: this policy takes uint8 pixels 0..255 of shape [${rowShape.join(", ")}] (the env's own image; scaling is inside the graph), got ${x}. Send the frame unscaled.`);
    }
  }
  return { ...o, data: Uint8Array.from(o.data) };
}

/**
 * The env's observations (objects of entries, or arrays for a Tuple) -> one tensor per entry, for a per-entry
 * export (contract 3; exports/CONTRACT.md, "Camera images"): each entry in its own shape and its field's dtype
 * (uint8 pixels: whole numbers 0..255, unscaled; int64 categories; float32 values, finite).
 */
function entryFeeds(fields, raws, T) {
  const n = raws.length;
  const feeds = {};
  for (const f of fields) {
    const name = f.key === null ? "observation" : `observation entry "${f.key}"`;
    const size = prod(f.shape);
    const data = f.dtype === "uint8" ? new Uint8Array(n * size)
      : f.dtype === "int64" ? new BigInt64Array(n * size) : new Float32Array(n * size);
    raws.forEach((raw, r) => {
      const value = raw[f.key];
      if (value === undefined) throw new Error(`${name} is missing (got the entries ${Object.keys(raw).sort().join(", ")})`);
      const values = flatten(value).map(Number);
      if (values.length !== size) {
        throw new Error(`${name}: expected shape [${f.shape.join(", ")}] (${size} numbers), got ${values.length}`);
      }
      values.forEach((v, i) => {
        if (f.dtype === "int64") {
          if (!Number.isInteger(v) || v - f.first[i] < 0 || v - f.first[i] >= f.n[i]) {
            const last = f.first.map((first, j) => first + f.n[j] - 1);
            throw new Error(`${name}: values must lie in ${dimsText(f.first)} .. ${dimsText(last)}, got ${v}`);
          }
          data[r * size + i] = BigInt(v);
        } else if (f.dtype === "uint8") {
          if (!(Number.isInteger(v) && v >= 0 && v <= 255)) {
            throw new Error(`${name}: this policy takes uint8 pixels 0..255 of shape [${f.shape.join(", ")}] (the env's own image; scaling is inside the graph), got ${v}. Send the frame unscaled.`);
          }
          data[r * size + i] = v;
        } else {
          if (v - v !== 0) {
            const word = Number.isNaN(v) ? "NaN" : v > 0 ? "inf" : "-inf";
            throw new Error(`${name}: row ${r} holds ${word} at position ${i}; a policy acts on finite numbers only (check what produced it)`);
          }
          data[r * size + i] = v;
        }
      });
    });
    feeds[f.input] = new T(f.dtype, data, [n, ...f.shape]);
  }
  return feeds;
}

function broadcastRows(data, n, batch) {
  if (n === batch) return data;
  const out = new Float32Array(data.length * batch);
  for (let i = 0; i < batch; i++) out.set(data, i * data.length);
  return out;
}

function toNumbers(tensor) {
  const data = tensor.data;
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return Array.from(data, Number);
  return Array.from(data);
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
    // the obs input's dtype: "uint8" for images (the env's pixels as they are), else "float32"
    this.observationDtype = metadata.observation.dtype || "float32";
    // contract 3: a Dict/Tuple observation holding an image is one graph input per entry (field.input)
    const fields = metadata.observation.fields;
    this.entryFields = fields && fields.length && fields.every((f) => "input" in f) ? fields : null;
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
   * obs: number[] (one observation) or number[][] (a batch, [] for none: empty outputs); nested arrays must have
   * exactly the observation's shape (or a batch axis before it); a typed array is one observation (for an
   * image policy also several frames, row-major in metadata.observation.shape: a Uint8Array of H*W*C
   * camera pixels per frame). A policy
   * whose env observes a Dict (metadata.observation.fields) also takes the env's object of entries, an array
   * of them, or one object whose entries have a batch axis first (a vector env's, { image: [n, H, W, C], ... });
   * their action_mask entry is the mask unless options.mask is given. For a Discrete observation
   * a number is its category (flattenObservation(fields, value) encodes other category values).
   * options.mask: 1 = allowed, one row or one per observation (default: everything allowed).
   * options.deterministic (default true); options.noise: uniform(0, 1) numbers [batch][noiseDim] for a
   * reproducible sample (default: Math.random); options.agent: name or index (or one per row) for policies
   * shared by several agents.
   * Returns { [output]: value } with the action outputs (`action`, or `action_type` + `action_params`),
   * each without the batch axis for one observation and with it for a batch.
   * Throws an Error naming expected and got for a bad input: a wrong shape, a NaN or infinity (observations,
   * masks and noise must be finite), a mask row allowing nothing.
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
    const T = this.ort.Tensor;
    let o;
    let obsFeeds;
    const batched = fields && fields.every((f) => typeof f.key === "string") && isEntries(obs) ? batchRows(fields, obs) : null;
    if (batched) { // the env's Dict with a batch axis on each entry: its rows, and its action_mask [batch, dim]
      if ((mask === undefined || mask === null) && this.maskDim && obs.action_mask !== undefined) mask = obs.action_mask;
      obs = batched;
    }
    if (this.entryFields) {
      const isOne = (v) => isEntries(v) || isTupleObservation(fields, this.obsSize, v);
      const one = isOne(obs);
      const raws = one ? [obs] : obs;
      if (!Array.isArray(raws) || !raws.every(isOne)) {
        const keys = fields.map((f) => f.key).join(", ");
        throw new Error(`observation: this policy takes the env's ${fields.every((f) => Number.isInteger(f.key)) ? "array" : "object"} of entries (${keys}), one or an array of them for a batch`);
      }
      if ((mask === undefined || mask === null) && this.maskDim && raws.length && raws[0].action_mask !== undefined) {
        mask = one ? obs.action_mask : raws.map((r) => r.action_mask);
      }
      o = { n: raws.length, single: one };
      if (raws.length) obsFeeds = entryFeeds(this.entryFields, raws, T);
    } else if (fields && (isEntries(obs) || (Array.isArray(obs) && obs.length > 0 && obs.every(isEntries)))) {
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
    if (!o) o = observationRows(obs, this.observationShape, this.observationDtype);
    const batch = o.n;
    if (batch === 0) { // nothing to act on: empty outputs, without onnxruntime
      return Object.fromEntries(this.actionOutputs.map((name) => [name, { values: [], batch: 0, single: false }]));
    }
    const feeds = obsFeeds ?? { obs: new T(this.observationDtype, o.data, [batch, ...this.observationShape]) };
    if (this.maskDim) {
      let m;
      if (mask === undefined || mask === null) m = new Float32Array(batch * this.maskDim).fill(1);
      else {
        const r = rows("action mask (1 = allowed)", mask, [this.maskDim], batch);
        checkFinite("action mask", r.data, this.maskDim);
        const d = r.data;
        for (let i = 0; i < d.length; i++) d[i] = d[i] > 0.5 ? 1 : 0;
        m = broadcastRows(d, r.n, batch);
      }
      const dim = this.maskDim;
      for (let i = 0; i < batch; i++) {
        let start = 0;
        for (const width of this.maskSegments) {
          let any = false;
          for (let j = i * dim + start, end = j + width; j < end; j++) if (m[j] === 1) { any = true; break; }
          if (!any) {
            throw new Error(`action mask: row ${i} allows no action in the segment at ${start} (width ${width}); every step needs at least one allowed action`);
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
        throw new Error(`this policy is shared by the agents ${describe(this.agents)}: pass { agent }`);
      }
      const ids = (Array.isArray(agent) ? agent : [agent]).map((a) => {
        const idx = typeof a === "string" ? this.agents.indexOf(a) : a;
        if (!Number.isInteger(idx) || idx < 0 || idx >= this.agentIdDim) {
          throw new Error(`agent: unknown agent ${describe(a)}; agents are ${describe(this.agents)}`);
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
        const { dims, data } = tensorOf("noise", noise);
        if (!sameDims(dims, [batch, this.noiseDim]) && !(batch === 1 && sameDims(dims, [this.noiseDim]))) {
          throw new Error(`noise: expected uniform(0, 1) floats of shape [${batch}, ${this.noiseDim}], got ${dimsText(dims)}`);
        }
        checkFinite("noise", data, this.noiseDim);
        u = data;
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
  const where = typeof source === "string" ? `policy file '${source}'` : "the policy model";
  const malformed = (err) => new Error(
    `${where}: malformed agentkit metadata: ${err.message}. It was not written by \`agentkit export\` as it is (edited or damaged?): export the run again.`,
  );
  const props = readMetadataProps(bytes);
  if (!(METADATA_KEY in props)) {
    throw new Error(`${where} has no '${METADATA_KEY}' metadata: it was not written by \`agentkit export\``);
  }
  let metadata;
  try {
    metadata = parseMetadata(props[METADATA_KEY]);
  } catch (err) {
    throw err instanceof MetadataError ? malformed(err) : err;
  }
  if (!SUPPORTED_CONTRACTS.includes(metadata.contract_version)) {
    throw new Error(`${where} follows agentkit export contract version ${describe(metadata.contract_version)}; this runtime reads ${SUPPORTED_CONTRACTS.join(", ")}`);
  }
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["cpu"],
    intraOpNumThreads: 1,
    ...(options.sessionOptions ?? {}),
  });
  // onnxruntime-common >= 1.22 describes the graph's inputs; without it only their names are compared
  const inputs = Object.fromEntries(session.inputNames.map((name, i) => {
    const spec = session.inputMetadata?.[i];
    return [name, spec && spec.isTensor && Array.isArray(spec.shape) ? spec.shape.map((d) => (typeof d === "number" ? d : "batch")) : null];
  }));
  try {
    checkMetadata(metadata, inputs, [...session.outputNames]);
  } catch (err) {
    throw err instanceof MetadataError ? malformed(err) : err;
  }
  return new Policy(session, metadata, ort);
}
