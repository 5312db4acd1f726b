"""The ``onnx`` exporter plugin: a trained policy as a self-describing ONNX file for game engines.

The graph is the actor itself (observation normaliser, trunk, head) followed by the head's own
``choose`` — the very function the trainer's rollout and ``agentkit eval`` act through — so the file acts
exactly as the trainer does. The written contract for engine developers is ``exports/CONTRACT.md``; in short:

* inputs: ``obs`` ``[batch, *obs_shape]`` in the env's own shape and dtype (uint8 for images, float32
  otherwise; raw: scaling, channel order and normalisation are in the graph); ``action_mask``
  float32 ``[batch, mask_dim]`` (1 = allowed) when the head takes masks and the env supplies them
  (``PolicyArtifact.uses_mask``); ``agent_id`` float32
  ``[batch, n_agents]`` (one-hot) for a policy shared by several agents; ``noise`` float32
  ``[batch, noise_dim]`` uniform(0, 1) for a stochastic export;
* outputs: the head's ``output_names`` (``action``, or ``action_type`` + ``action_params``); a stochastic
  export adds the deterministic twins ``deterministic_<name>``;
* a dynamic batch axis on every input and output, ``onnx.checker`` clean, default opset ``DEFAULT_OPSET``;
* ``metadata_props["agentkit"]``: a JSON description (see ``build_metadata``).

Every export is checked in onnxruntime against the torch actor on at least 1000 observations (random masks
with at least one allowed action per mask segment) before it is moved to its path; a mismatch raises
``ExportParityError`` naming the largest error, and nothing is left at the output path. A policy whose
weights are not finite is refused first (``NonFiniteWeightsError``, exit 2). The file gets the umask's mode.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field
from torch import Tensor, nn

import agentkit
from agentkit.algorithm import PolicyArtifact
from agentkit.config import ExporterConfig, RunConfig
from agentkit.encoders import EncoderSpec, image_fields, image_layout
from agentkit.errors import UserError
from agentkit.files import write_atomic
from agentkit.spaces import discrete_branches
from agentkit.storage import torch_dtype

#: Version of the file contract (inputs, outputs, metadata keys). Bumped on any breaking change.
CONTRACT_VERSION = 3  # 2: ``obs`` keeps the env's shape and dtype (uint8 images), metadata.observation.layout;
#                      3: a Dict/Tuple observation holding an image: one input per entry (observation.fields[i].input)
#: Opset 15: the newest opset that Unity Sentis 1.x/2.0–2.5 (opsets 7–15), Unreal NNE's onnxruntime,
#: onnxruntime-web and Godot's onnxruntime builds all import. Every op the policies need exists there.
DEFAULT_OPSET = 15
MIN_OPSET, MAX_OPSET = 13, 20
METADATA_KEY = "agentkit"


class ExportParityError(RuntimeError):
    """The exported graph does not act like the torch policy: an exporter or head bug, not a user error."""


class OnnxExporterConfig(ExporterConfig):
    """Options of the ``onnx`` exporter."""

    plugin: str = "onnx"
    opset: int = Field(
        DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET,
        description="ONNX opset; 15 is the newest that Unity Sentis <2.6 imports.",
    )
    stochastic: bool = Field(
        False, description="Add a `noise` input (uniform 0..1) and sampled outputs besides the deterministic ones."
    )
    parity_samples: int = Field(
        1000, ge=1000, description="Observations on which onnxruntime is compared with torch after export."
    )
    atol: float = Field(1e-5, gt=0, description="Largest allowed absolute difference of continuous outputs.")
    parity_seed: int = Field(0, description="Seed of the random observations, masks and noise of the check.")


# -- the graph ------------------------------------------------------------------------------------------------


def entry_fields(artifact: PolicyArtifact) -> list[dict[str, Any]] | None:
    """For a Dict or Tuple observation holding an image entry (the ``multi`` encoder's rule,
    ``agentkit.encoders.image_fields``): its fields, each with the graph ``input`` that takes the entry in its
    own shape and the input's ``dtype`` (uint8 pixels, int64 categories, float32 otherwise) and ``layout``.
    None for any other observation, which goes into the one ``obs`` input."""
    fields = artifact.observation_fields
    if not fields:
        return None
    images = {id(f) for f in image_fields(EncoderSpec(artifact.observation_space, fields))}
    if not images:
        return None
    out = []
    for field in fields:
        shape = tuple(field["shape"])
        if id(field) in images:
            dtype, layout = "uint8", image_layout(spaces.Box(0, 255, shape, np.uint8))
        else:
            dtype, layout = ("int64" if field["encoding"] == "one_hot" else "float32"), None
        out.append({**field, "input": f"obs.{field['key']}", "dtype": dtype, "layout": layout})
    return out


class EntryInputs(nn.Module):
    """One input per observation entry → the flat float32 vector the trainer's policy takes, by the same rule as
    ``agentkit.runtime.observation.flatten``: values in row-major order, a category one-hot in its block."""

    def __init__(self, fields: list[dict[str, Any]]):
        super().__init__()
        self.fields = fields
        for i, field in enumerate(fields):
            if field["encoding"] == "one_hot":
                self.register_buffer(f"first_{i}", torch.tensor(field["first"], dtype=torch.int64))

    def forward(self, *entries: Tensor) -> Tensor:
        parts = []
        for i, (field, x) in enumerate(zip(self.fields, entries, strict=True)):
            rows = x.flatten(1) if x.ndim > 1 else x.unsqueeze(1)
            if field["encoding"] == "box":
                parts.append(rows.to(torch.float32))
                continue
            index = rows - getattr(self, f"first_{i}")
            for j, n in enumerate(field["n"]):
                parts.append((index[:, j:j + 1] == torch.arange(int(n))).to(torch.float32))
        return torch.cat(parts, dim=1)


class PolicyGraph(nn.Module):
    """What is traced: raw inputs → actor → distribution → ``head.choose`` of the mode (and of a sample).

    ``forward`` takes the inputs in ``input_names`` order and returns the outputs in ``output_names`` order.
    """

    def __init__(self, artifact: PolicyArtifact, stochastic: bool):
        super().__init__()
        self.actor = artifact.actor
        head = artifact.actor.head
        if stochastic and head.noise_dim <= 0:
            raise ValueError(f"head {type(head).__name__} declares noise_dim={head.noise_dim}; cannot sample")
        self.obs_shape = tuple(int(d) for d in artifact.observation_space.shape)
        self.obs_dtype = torch_dtype(artifact.observation_space.dtype)
        self.entries = entry_fields(artifact)
        self.entry_inputs = EntryInputs(self.entries) if self.entries else None
        # a head that could take masks gets none when the env never supplies them (``uses_mask`` False)
        self.mask_dim = int(head.mask_dim) if artifact.uses_mask else 0
        self.agent_id_dim = int(artifact.agent_id_dim)
        self.noise_dim = int(head.noise_dim) if stochastic else 0
        self.stochastic = stochastic
        self.head_outputs = tuple(head.output_names)
        self.obs_inputs = [f["input"] for f in self.entries] if self.entries else ["obs"]
        self.input_names = list(self.obs_inputs)
        if self.mask_dim:
            self.input_names.append("action_mask")
        if self.agent_id_dim:
            self.input_names.append("agent_id")
        if stochastic:
            self.input_names.append("noise")
        if stochastic:
            self.output_names = [*self.head_outputs, *(f"deterministic_{n}" for n in self.head_outputs)]
        else:
            self.output_names = list(self.head_outputs)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        obs = (self.entry_inputs(*(feeds[n] for n in self.obs_inputs)) if self.entry_inputs is not None
               else feeds["obs"])
        dist = self.actor(obs, feeds.get("action_mask"), feeds.get("agent_id"))
        head = self.actor.head
        _, deterministic = head.choose(dist, deterministic=True)
        outs = []
        if self.stochastic:
            _, sampled = head.choose(dist, noise=feeds["noise"])
            outs += [sampled[n] for n in self.head_outputs]
        outs += [deterministic[n] for n in self.head_outputs]
        return tuple(outs)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        """Valid inputs of batch size ``batch`` (all actions allowed, first agent, mid-range noise)."""
        shapes = {"obs": self.obs_shape, "action_mask": (self.mask_dim,), "agent_id": (self.agent_id_dim,),
                  "noise": (self.noise_dim,)}
        out = []
        for field in self.entries or []:
            dtype = {"uint8": torch.uint8, "int64": torch.int64, "float32": torch.float32}[field["dtype"]]
            t = torch.zeros(batch, *field["shape"], dtype=dtype)
            if field["encoding"] == "one_hot":
                t = t + torch.tensor(field["first"], dtype=torch.int64).reshape(field["shape"])
            out.append(t)
        for name in self.input_names[len(out):]:
            t = torch.zeros(batch, *shapes[name], dtype=self.obs_dtype) if name == "obs" else torch.ones(batch, *shapes[name])
            if name == "agent_id":
                t = torch.zeros(batch, self.agent_id_dim)
                t[:, 0] = 1.0
            if name == "noise":
                t = torch.full((batch, self.noise_dim), 0.5)
            out.append(t)
        return tuple(out)


# -- metadata -------------------------------------------------------------------------------------------------


def _json_floats(values: np.ndarray) -> list[float | None]:
    """Floats for JSON (which has no infinities): unbounded entries become null."""
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=np.float64).ravel()]


def _observation_spec(space: spaces.Space, fields: list[dict[str, Any]] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"shape": [int(d) for d in space.shape], "dtype": str(np.dtype(space.dtype)),
                            "layout": image_layout(space) if fields is None else None}
    entries = bool(fields) and all("input" in f for f in fields or [])  # bounds of the flat vector mean nothing then
    if isinstance(space, spaces.Box) and int(np.prod(space.shape)) <= 4096 and not entries:
        spec["low"], spec["high"] = _json_floats(space.low), _json_floats(space.high)
    spec["fields"] = fields
    return spec


def _mask_segments(artifact: PolicyArtifact) -> list[int]:
    """Widths of the independent parts of the mask (one per MultiDiscrete branch or MultiBinary button, else
    the whole mask)."""
    head = artifact.actor.head
    segments = getattr(head, "mask_segments", None)
    if segments is None and (branches := discrete_branches(artifact.action_space)) is not None:
        segments = branches[0] if sum(branches[0]) == head.mask_dim else None
    return [int(s) for s in segments] if segments else [int(head.mask_dim)]


def build_metadata(
    artifact: PolicyArtifact, graph: PolicyGraph, output_specs: dict[str, dict[str, Any]],
    run_config: RunConfig | None, opset: int,
) -> dict[str, Any]:
    """The JSON stored under ``metadata_props["agentkit"]`` (documented in exports/CONTRACT.md)."""
    head = artifact.actor.head
    dims = {"obs": list(graph.obs_shape), "action_mask": [graph.mask_dim], "agent_id": [graph.agent_id_dim],
            "noise": [graph.noise_dim]}
    dtypes = {"obs": str(np.dtype(artifact.observation_space.dtype))}
    for field in graph.entries or []:
        dims[field["input"]], dtypes[field["input"]] = list(field["shape"]), field["dtype"]
    inputs = [{"name": n, "dtype": dtypes.get(n, "float32"), "shape": ["batch", *dims[n]]}
              for n in graph.input_names]
    outputs = [{"name": n, **output_specs[n]} for n in graph.output_names]
    env: dict[str, Any] | None = None
    algorithm = None
    if run_config is not None:
        env_section = run_config.env.model_dump(mode="json")
        env = {"plugin": run_config.env.plugin,
               "id": env_section.get("id") or env_section.get("module") or artifact.env_id, "config": env_section}
        algorithm = run_config.algorithm.plugin
    meta: dict[str, Any] = {
        "format": "agentkit-policy",
        "contract_version": CONTRACT_VERSION,
        "sdk_version": agentkit.__version__,
        "opset": opset,
        "policy": artifact.name,
        "agents": list(artifact.agents),
        "algorithm": algorithm,
        "env": env,
        "plugins": list(run_config.plugins) if run_config is not None else [],
        "seed": run_config.seed if run_config is not None else None,
        "observation": _observation_spec(artifact.observation_space, graph.entries or artifact.observation_fields),
        "game": getattr(artifact, "game", None),
        "action": head.action_spec(),
        "action_outputs": list(graph.head_outputs),
        "inputs": inputs,
        "outputs": outputs,
        "mask": (
            {"input": "action_mask", "dim": graph.mask_dim, "segments": _mask_segments(artifact),
             "meaning": "1 = allowed, 0 = forbidden; every segment needs at least one 1"}
            if graph.mask_dim else None
        ),
        "agent_id": (
            {"input": "agent_id", "dim": graph.agent_id_dim, "encoding": "one-hot",
             "agents": list(artifact.agents)}
            if graph.agent_id_dim else None
        ),
        "stochastic": (
            {"input": "noise", "dim": graph.noise_dim, "distribution": "uniform(0, 1)",
             "deterministic_outputs": {n: f"deterministic_{n}" for n in graph.head_outputs}}
            if graph.stochastic else None
        ),
        "deterministic_only": bool(artifact.deterministic_only),
    }
    return meta


def env_action_layout(artifact: PolicyArtifact, graph: PolicyGraph, example: tuple[Tensor, ...]) -> list[dict]:
    """How ``head.to_env`` shapes each action output for the env (per row), so that runtimes can hand the
    env exactly what the trainer hands it without the head's Python code."""
    head = artifact.actor.head
    outs = {n: t.numpy() for n, t in zip(graph.head_outputs, example, strict=False)}
    env = head.to_env(outs)
    parts = list(env) if isinstance(env, tuple | list) else [env]
    if len(parts) != len(graph.head_outputs):
        raise ValueError(
            f"{type(head).__name__}.to_env returned {len(parts)} parts for outputs {graph.head_outputs}; "
            "the export contract maps one env part to each output"
        )
    return [
        {"output": n, "shape": [int(d) for d in np.asarray(p).shape[1:]], "dtype": str(np.asarray(p).dtype)}
        for n, p in zip(graph.head_outputs, parts, strict=True)
    ]


# -- export ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def trace_to_onnx(graph: PolicyGraph, opset: int) -> bytes:
    """The traced ONNX model as bytes (TorchScript exporter: deterministic, any opset from 13)."""
    buffer = io.BytesIO()
    names = [*graph.input_names, *graph.output_names]
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, which cannot write opset < 18.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            graph.example_inputs(3),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes={n: {0: "batch"} for n in names},
            do_constant_folding=True,
        )
    return buffer.getvalue()


def simplify_graph(model: Any) -> Any:
    """Portable, exact clean-ups of the traced graph that engines would otherwise run on every call.

    * ``Where(c, x, ConstantOfShape(Shape(x)))`` (how ``torch.full_like`` traces) becomes ``Where(c, x, v)``
      with a scalar ``v``: ``Where`` broadcasts, so the result is identical and two shape ops disappear;
    * a ``Cast`` to the type its input already has (``.to(torch.int64)`` of an int64) is removed;
    * ``Min(Max(x, lo), hi)`` with ``lo``/``hi`` constants holding one value each (a Box with the same bounds
      on every dim) becomes ``Clip(x, lo, hi)``, which computes exactly that;
    * nodes whose outputs nothing uses are removed.
    The parity check runs on the simplified model, so a wrong rewrite could not slip through.
    """
    from onnx import numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Where":
            continue
        for slot in (1, 2):
            fill, other = producer.get(node.input[slot]), node.input[3 - slot]
            shape = producer.get(fill.input[0]) if fill is not None and fill.op_type == "ConstantOfShape" else None
            if shape is None or shape.op_type != "Shape" or shape.input[0] != other or len(shape.attribute):
                continue
            value = next((numpy_helper.to_array(a.t) for a in fill.attribute if a.name == "value"), np.zeros(1, np.float32))
            name = f"{fill.output[0]}_scalar"
            graph.initializer.append(numpy_helper.from_array(np.array(value.reshape(-1)[0]), name))
            node.input[slot] = name
    _drop_noop_casts(model)
    _max_min_to_clip(model)
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for node in graph.node for i in node.input} | outputs
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for node in graph.node for i in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return model


def _drop_noop_casts(model: Any) -> None:
    import onnx

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    graph_io = {v.name for v in [*graph.input, *graph.output]}
    for cast in [n for n in graph.node if n.op_type == "Cast"]:
        src, dst = cast.input[0], cast.output[0]
        to = next(a.i for a in cast.attribute if a.name == "to")
        if types.get(src) != to:
            continue
        if dst in graph_io:  # keep the output's name: the producer of ``src`` writes it directly
            if src in graph_io or not any(src in n.output for n in graph.node):
                continue
            old, new = src, dst
        else:
            old, new = dst, src
        graph.node.remove(cast)
        for node in graph.node:
            node.input[:] = [new if i == old else i for i in node.input]
            node.output[:] = [new if o == old else o for o in node.output]
    del graph.value_info[:]


def _max_min_to_clip(model: Any) -> None:
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.graph.value_info, *inferred.graph.input]
             if v.type.tensor_type.HasField("shape")}

    def uniform(name: str, rank: int | None) -> np.ndarray | None:
        value = consts.get(name)
        if value is None or value.size == 0 or rank is None or value.ndim > rank or value.dtype != np.float32:
            return None
        flat = value.reshape(-1)
        return flat[0] if np.all(flat == flat[0]) else None

    graph_outputs = {o.name for o in graph.output}
    for mx in [n for n in graph.node if n.op_type == "Max" and len(n.input) == 2]:
        users = [n for n in graph.node if mx.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "Min" or len(users[0].input) != 2 or mx.output[0] in graph_outputs:
            continue
        mn = users[0]
        x, lo_name = mx.input
        hi_name = mn.input[1] if mn.input[0] == mx.output[0] else mn.input[0]
        lo, hi = uniform(lo_name, ranks.get(x)), uniform(hi_name, ranks.get(x))
        if lo is None or hi is None or not lo <= hi:
            continue
        lo_init, hi_init = f"{mx.output[0]}_lo", f"{mn.output[0]}_hi"
        graph.initializer.extend([numpy_helper.from_array(np.array(lo, np.float32), lo_init),
                                  numpy_helper.from_array(np.array(hi, np.float32), hi_init)])
        clip = onnx.helper.make_node("Clip", [x, lo_init, hi_init], list(mn.output), name=f"{mn.name or 'Min'}_clip")
        index = list(graph.node).index(mn)
        graph.node.remove(mn)
        graph.node.insert(index, clip)
    del graph.value_info[:]


def parity_inputs(artifact: PolicyArtifact, graph: PolicyGraph, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs for the parity check: observations spread over the space (bounded dims uniform,
    unbounded ones wide normals), random masks with one allowed action per segment at least, random
    one-hot agents, uniform noise."""
    rng = np.random.default_rng(seed)
    space = artifact.observation_space
    low = np.broadcast_to(np.asarray(getattr(space, "low", -np.inf), np.float64), graph.obs_shape)
    high = np.broadcast_to(np.asarray(getattr(space, "high", np.inf), np.float64), graph.obs_shape)
    # gymnasium spells "unbounded" as +-inf or as float32's largest value; both count as unbounded here
    has_low, has_high = np.abs(low) < 1e6, np.abs(high) < 1e6
    wide = rng.normal(0.0, 3.0, (n, *graph.obs_shape))
    u = rng.random((n, *graph.obs_shape))
    with np.errstate(invalid="ignore", over="ignore"):
        obs = np.where(has_low & has_high, low + u * (high - low), wide)
        obs = np.where(has_low & ~has_high, low + np.abs(wide), obs)
        obs = np.where(~has_low & has_high, high - np.abs(wide), obs)
    if np.dtype(space.dtype) == np.uint8:  # pixels: every value 0..255 (the graph scales them)
        obs = rng.integers(0, 256, (n, *graph.obs_shape))
    feeds = {"obs": obs.astype(np.dtype(space.dtype))}
    if graph.entries:  # one input per entry: the entry's columns of the flat draw, pixels and categories drawn
        flat = feeds.pop("obs")
        for field in graph.entries:
            start, size, shape = int(field["start"]), int(field["size"]), tuple(field["shape"])
            if field["dtype"] == "uint8":
                feeds[field["input"]] = rng.integers(0, 256, (n, *shape)).astype(np.uint8)
            elif field["dtype"] == "int64":
                first, count = np.asarray(field["first"]), np.asarray(field["n"])
                feeds[field["input"]] = (first + rng.integers(0, count, (n, len(count)))).reshape(n, *shape)
            else:
                feeds[field["input"]] = flat[:, start:start + size].reshape(n, *shape).astype(np.float32)
    if graph.mask_dim:
        mask = (rng.random((n, graph.mask_dim)) < 0.5).astype(np.float32)
        start = 0
        for width in _mask_segments(artifact):
            forced = rng.integers(0, width, n)
            mask[np.arange(n), start + forced] = 1.0
            start += width
        mask[: max(1, n // 10)] = 1.0  # some rows with everything allowed
        feeds["action_mask"] = mask
    if graph.agent_id_dim:
        feeds["agent_id"] = np.eye(graph.agent_id_dim, dtype=np.float32)[rng.integers(0, graph.agent_id_dim, n)]
    if graph.stochastic:
        feeds["noise"] = rng.random((n, graph.noise_dim), dtype=np.float32)
    return feeds


def check_parity(
    model_bytes: bytes, graph: PolicyGraph, feeds: dict[str, np.ndarray], atol: float
) -> dict[str, float]:
    """Run ``feeds`` through onnxruntime and the torch graph; raise ExportParityError on any mismatch.

    Integer outputs must be identical, float outputs within ``atol``. Returns the largest error per output.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    got = dict(zip(graph.output_names, session.run(graph.output_names, feeds), strict=True))
    with torch.no_grad():
        expected = graph(*(torch.from_numpy(feeds[n]) for n in graph.input_names))
    errors: dict[str, float] = {}
    problems = []
    for name, want in zip(graph.output_names, expected, strict=True):
        want_np, have = want.numpy(), got[name]
        if want_np.shape != have.shape:
            problems.append(f"{name}: shape {have.shape} in onnxruntime, {want_np.shape} in torch")
            continue
        diff = np.abs(have.astype(np.float64) - want_np.astype(np.float64))
        worst = float(diff.max()) if diff.size else 0.0
        errors[name] = worst
        integer = np.issubdtype(want_np.dtype, np.integer)
        if (integer and worst != 0.0) or (not integer and not worst <= atol):
            row = int(np.unravel_index(int(np.nanargmax(diff)), diff.shape)[0]) if diff.size else 0
            bad = int((diff.reshape(len(diff), -1).max(axis=1) > (0 if integer else atol)).sum())
            problems.append(
                f"{name}: largest error {worst:.3g} ({'must be 0' if integer else f'allowed {atol:g}'}) at row "
                f"{row} (onnxruntime {have[row].tolist()} vs torch {want_np[row].tolist()}); "
                f"{bad} of {len(diff)} rows differ"
            )
    if problems:
        raise ExportParityError(
            "the exported ONNX graph does not act like the torch policy:\n  " + "\n  ".join(problems)
        )
    return errors


class OnnxExporter:
    """Writes one ``PolicyArtifact`` as an ONNX file following exports/CONTRACT.md."""

    def __init__(self, config: OnnxExporterConfig | None = None):
        self.config = config or OnnxExporterConfig()
        self.last_report: dict[str, Any] = {}

    def export(self, artifact: PolicyArtifact, out_path: Path, run_config: RunConfig | None = None) -> Path:
        """Trace, annotate, check and atomically write ``artifact`` to ``out_path``; return the path.

        Raises ExportParityError (an export bug) if onnxruntime and torch disagree; ``out_path`` is then
        left untouched.
        """
        import onnx

        cfg = self.config
        out_path = Path(out_path)
        stochastic = cfg.stochastic and not artifact.deterministic_only
        actor = artifact.actor
        check_finite_weights(artifact)
        with _eval_mode(actor), torch.no_grad():
            graph = PolicyGraph(artifact, stochastic)
            model = simplify_graph(onnx.load_from_string(trace_to_onnx(graph, cfg.opset)))
            example = graph(*graph.example_inputs(2))
            specs = {
                name: {"dtype": str(t.numpy().dtype), "shape": ["batch", *(int(d) for d in t.shape[1:])]}
                for name, t in zip(graph.output_names, example, strict=True)
            }
            meta = build_metadata(artifact, graph, specs, run_config, cfg.opset)
            meta["env_action"] = env_action_layout(artifact, graph, example)
            onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, allow_nan=False)})
            model.producer_name = "agentkit"
            model.producer_version = agentkit.__version__
            model.doc_string = (
                f"agentkit policy '{artifact.name}' ({meta['algorithm'] or 'unknown algorithm'}); "
                "contract: metadata_props['agentkit'] and agentkit's exports/CONTRACT.md"
            )
            onnx.checker.check_model(model, full_check=True)
            data = model.SerializeToString()
            feeds = parity_inputs(artifact, graph, cfg.parity_samples, cfg.parity_seed)
            errors = check_parity(data, graph, feeds, cfg.atol)
            # batch 1 separately: a batch size baked into the graph by tracing would show here
            check_parity(data, graph, {k: v[:1] for k, v in feeds.items()}, cfg.atol)
        self.last_report = {"path": str(out_path), "max_errors": errors, "samples": cfg.parity_samples,
                            "metadata": meta}
        _write(out_path, data)
        return out_path


class NonFiniteWeightsError(UserError):
    """A policy whose weights or normaliser statistics hold NaN or infinity: its export would act on garbage."""


def check_finite_weights(artifact: PolicyArtifact) -> None:
    """Raise NonFiniteWeightsError naming the first parameter or buffer of the actor that is not finite."""
    tensors = [*artifact.actor.named_parameters(), *artifact.actor.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteWeightsError(
                f"export: policy {artifact.name!r}: {name} holds {bad} of {tensor.numel()} values that are NaN or "
                "infinite; the run diverged, and an export of it would act on garbage. Train again (lower "
                "learning rate, check the env's rewards and observations), or export a run whose weights are finite."
            )


def _write(path: Path, data: bytes) -> None:
    """``agentkit.files.write_atomic`` (a crash leaves the old file or the new one; the mode follows the
    umask), with a failure told as one message naming the file."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise UserError(f"export: cannot write {str(path)!r}: {exc.strerror or exc}.") from exc


@agentkit.hookimpl
def agentkit_register_exporters(register) -> None:
    register("onnx", OnnxExporter, OnnxExporterConfig,
             "ONNX file with metadata, masks, optional noise input; checked against torch in onnxruntime")
