"""One input rule for the Python and JavaScript runtimes: the cases, written once, that test_runtime.py runs
through agentkit.runtime and test_js_runtime.py through exports/js (and compares the two).

Values JSON cannot carry are written ``{"$": "NaN" | "inf" | "-inf"}`` (a float) and ``{"$bigint": "5"}`` (a
JavaScript BigInt; such cases are JavaScript's only). ``error``: a fragment both runtimes' messages hold; None:
both act, and identically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from agentkit_exports.onnx_exporter import OnnxExporter, OnnxExporterConfig
from gymnasium import spaces
from onnx_cases import CASES, host, make_artifact

from agentkit.algorithm import PolicyArtifact
from agentkit.config import PolicyConfig
from agentkit.observations import ObservationLayout
from agentkit.policy import build_actor

NAN, INF, NINF = {"$": "NaN"}, {"$": "inf"}, {"$": "-inf"}
ROW = [0.5, -1.0, 2.0, 0.0, 1.5, -0.25]  # one observation of the 6-wide test policies


@dataclass
class InputCase:
    id: str
    model: str  # "discrete" (masked Discrete(5), obs [6], --stochastic), "hybrid" (masked hybrid, obs [6]) or
    # "dict-image" (masked Discrete(5) on DICT_IMAGE: one input per entry, contract 3)
    obs: Any
    mask: Any = None
    noise: Any = None
    deterministic: bool = True
    error: str | None = None
    js_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)


#: A camera frame beside vectors: the "dict-image" policy's env observation (exports/CONTRACT.md, "Camera images")
DICT_IMAGE = spaces.Dict({"image": spaces.Box(0, 255, (12, 12, 3), np.uint8),
                          "speed": spaces.Box(-1.0, 1.0, (2,), np.float32), "gear": spaces.Discrete(3, start=1)})
_FRAMES = np.random.default_rng(7).integers(0, 256, (2, 12, 12, 3))
_FRAMES[1, :, 6:] = 255 - _FRAMES[1, :, 6:]


def _dict(i: int = 0, **change: Any) -> dict[str, Any]:
    obs = {"image": _FRAMES[i].tolist(), "speed": [0.5, -0.5] if i == 0 else [-0.9, 0.3], "gear": 1 + i}
    obs.update(change)
    return {k: v for k, v in obs.items() if v is not None}


def _batched(*rows: int, **change: Any) -> dict[str, Any]:
    """The observations ``_dict(i)`` of ``rows`` as a vector env gives them: one dict, a batch axis on each entry."""
    obs: dict[str, Any] = {k: [_dict(i)[k] for i in rows] for k in _dict(0)}
    obs.update(change)
    return {k: v for k, v in obs.items() if v is not None}


def _row(i: int, value: Any) -> list[Any]:
    row = list(ROW)
    row[i] = value
    return row


INPUT_CASES = [
    InputCase("one", "discrete", ROW),
    InputCase("batch", "discrete", [ROW, _row(0, 3.0)], mask=[[1, 0, 1, 0, 1], [0, 1, 0, 0, 0]]),
    InputCase("hybrid-batch", "hybrid", [ROW, _row(2, -2.0)]),
    InputCase("batch-of-0", "discrete", []),
    InputCase("hybrid-batch-of-0", "hybrid", []),
    InputCase("nan", "discrete", _row(2, NAN), error="observation: row 0 holds NaN at position 2"),
    InputCase("inf-in-row-1", "discrete", [ROW, _row(0, INF)], error="observation: row 1 holds inf at position 0"),
    InputCase("minus-inf-hybrid", "hybrid", _row(5, NINF), error="observation: row 0 holds -inf at position 5"),
    InputCase("beyond-float32", "discrete", _row(1, 1e39), error="observation: row 0 holds inf at position 1"),
    InputCase("extra-axis", "discrete", [[[v] for v in ROW], [[v] for v in ROW]],
              error="observation: expected shape [6] (one) or [batch, 6], got [2, 6, 1]"),
    InputCase("too-short", "discrete", ROW[:4], error="observation: expected shape [6] (one) or [batch, 6], got [4]"),
    InputCase("ragged", "discrete", [ROW, ROW[:3]], error="observation: not a rectangular array of numbers"),
    InputCase("strings", "discrete", ["a"] * 6, error="observation: expected numbers"),
    InputCase("mask-width", "discrete", [ROW, ROW], mask=[1, 1, 1, 1],
              error="action mask (1 = allowed): expected shape [5] (one) or [2, 5], got [4]"),
    InputCase("mask-nan", "discrete", ROW, mask=[1, NAN, 1, 1, 1], error="action mask: row 0 holds NaN at position 1"),
    InputCase("mask-empty-row", "discrete", [ROW, ROW], mask=[[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
              error="action mask: row 1 allows no action in the segment at 0 (width 5)"),
    InputCase("noise", "discrete", [ROW, ROW], noise=[[0.1], [0.9]], deterministic=False),
    InputCase("noise-nan", "discrete", ROW, noise=[[NAN]], deterministic=False,
              error="noise: row 0 holds NaN at position 0"),
    InputCase("noise-shape", "discrete", [ROW, ROW], noise=[[0.5]], deterministic=False,
              error="noise: expected uniform(0, 1) floats of shape [2, 1], got [1, 1]"),
    InputCase("dict-image-one", "dict-image", _dict(0)),
    InputCase("dict-image-batch", "dict-image", [_dict(0), _dict(1)], mask=[[1, 1, 0, 1, 1], [0, 1, 1, 0, 1]]),
    InputCase("dict-image-batch-of-0", "dict-image", []),
    InputCase("dict-image-sampled", "dict-image", [_dict(1), _dict(0)], noise=[[0.2], [0.8]], deterministic=False),
    InputCase("dict-image-scaled", "dict-image", _dict(0, image=(_FRAMES[0] / 255.0).tolist()),
              error="this policy takes uint8 pixels 0..255 of shape"),
    InputCase("dict-image-missing", "dict-image", _dict(0, gear=None), error="is missing"),
    InputCase("dict-image-category", "dict-image", _dict(0, gear=7), error="values must lie in [1] .. [3]"),
    InputCase("dict-image-nan", "dict-image", _dict(0, speed=[0.0, NAN]), error="row 0 holds NaN at position 1"),
    InputCase("dict-image-shape", "dict-image", _dict(0, image=_FRAMES[0, :11].tolist()), error="expected shape"),
    # the same observations with a batch axis on each entry (a vector env's Dict): acted on as the list above
    InputCase("dict-image-batch-axis", "dict-image", _batched(0, 1), mask=[[1, 1, 0, 1, 1], [0, 1, 1, 0, 1]]),
    InputCase("dict-image-batch-axis-mask-entry", "dict-image",
              _batched(0, 1, action_mask=[[1, 1, 0, 1, 1], [0, 1, 1, 0, 1]])),
    InputCase("dict-image-batch-axis-sampled", "dict-image", _batched(1, 0), noise=[[0.2], [0.8]], deterministic=False),
    InputCase("dict-image-batch-axis-one-row", "dict-image", _batched(1)),
    InputCase("dict-image-batch-axis-uneven", "dict-image", _batched(0, 1, speed=[[0.5, -0.5], [0.1, 0.2], [-0.9, 0.3]]),
              error="(a batch of 2, as the other entries)"),
    InputCase("dict-image-batch-axis-scaled", "dict-image", _batched(0, 1, image=(_FRAMES / 255.0).tolist()),
              error="this policy takes uint8 pixels 0..255 of shape"),
    InputCase("bigint-observation", "discrete", _row(0, {"$bigint": "5"}), js_only=True,
              error="observation: expected numbers, got bigint (5n)"),
    InputCase("bigint-in-batch", "discrete", [ROW, _row(3, {"$bigint": "7"})], js_only=True,
              error="observation: expected numbers, got bigint (7n)"),
]


def decode(value: Any) -> Any:
    """The Python value of a case's JSON (NaN and infinities as floats)."""
    if isinstance(value, dict) and set(value) == {"$"}:
        return {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf}[value["$"]]
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):  # a Dict observation's entries
        return {k: decode(v) for k, v in value.items()}
    return value


@dataclass
class MetadataCase:
    id: str
    change: Any  # meta -> meta (a dict), or the raw metadata text
    error: str


def _set(path: str, value: Any):
    def change(meta: dict[str, Any]) -> dict[str, Any]:
        *keys, last = path.split(".")
        target = meta
        for key in keys:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is KeyError:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return meta
    return change


METADATA_CASES = [
    MetadataCase("invalid-json", "{not json", "malformed agentkit metadata: not valid JSON"),
    MetadataCase("nan-token", '{"contract_version": NaN}', "malformed agentkit metadata: not valid JSON"),
    MetadataCase("a-list", "[1, 2]", "malformed agentkit metadata: expected a JSON object, got a list"),
    MetadataCase("no-inputs", _set("inputs", KeyError), "malformed agentkit metadata: no 'inputs' key"),
    MetadataCase("bad-env-dtype", _set("env_action.0.dtype", "bogus"), "'env_action[0].dtype' must be one of"),
    MetadataCase("bad-output-dtype", _set("outputs.0.dtype", "complex128"), "'outputs[0].dtype' must be one of"),
    MetadataCase("huge-mask", lambda m: {**m, "mask": {**m["mask"], "dim": 10**12, "segments": [10**12]}},
                 "'mask.dim' 1000000000000 differs from the graph's action_mask input ([batch, 5])"),
    MetadataCase("huge-noise", _set("stochastic.dim", 10**9),
                 "'stochastic.dim' 1000000000 differs from the graph's noise input ([batch, 1])"),
    MetadataCase("inputs-differ", lambda m: {**m, "inputs": m["inputs"][:1]}, "differ from the metadata's 'inputs'"),
    MetadataCase("input-dims-differ", _set("inputs.0.shape", ["batch", 7]), "differ from the metadata's 'inputs'"),
    MetadataCase("observation-shape", _set("observation.shape", [7]),
                 "'observation.shape' [7] differs from the graph's obs input [batch, 6]"),
    MetadataCase("shape-not-int", _set("observation.shape", ["6"]), "'observation.shape[0]' must be an integer"),
    MetadataCase("segments", _set("mask.segments", [2, 2]), "'mask.segments' [2, 2] do not add up to 'mask.dim' 5"),
    MetadataCase("action-outputs", _set("action_outputs", ["nope"]), "'action_outputs' names"),
    MetadataCase("mask-null", _set("mask", None), "the graph has an 'action_mask' input but 'mask' is null"),
    MetadataCase("contract", _set("contract_version", 99), "contract version 99"),
]


def dict_image_artifact(seed: int = 0) -> PolicyArtifact:
    """An untrained masked Discrete(5) actor on DICT_IMAGE (the ``multi`` encoder), outputs scaled so that
    actions vary with the input."""
    layout = ObservationLayout(DICT_IMAGE, "test")
    torch.manual_seed(seed)
    action_space = spaces.Discrete(5)
    actor = build_actor(PolicyConfig(), host().registry, layout.space, action_space, fields=layout.fields)
    with torch.no_grad():
        for module in actor.head.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(100.0)
    return PolicyArtifact("policy", actor, layout.space, action_space, ["agent"], observation_fields=layout.fields)


def build_models(folder: Path) -> dict[str, Path]:
    """The test policies of INPUT_CASES, exported --stochastic into ``folder``."""
    exporter = OnnxExporter(OnnxExporterConfig(plugin="onnx", stochastic=True))
    by_id = {c.id: c for c in CASES}
    models = {name: exporter.export(make_artifact(by_id[case]), folder / f"{name}.onnx")
              for name, case in (("discrete", "discrete"), ("hybrid", "hybrid"))}
    models["dict-image"] = exporter.export(dict_image_artifact(), folder / "dict-image.onnx")
    return models


def build_metadata_files(folder: Path, model: Path) -> dict[str, Path]:
    """``model`` with each METADATA_CASES change applied to its metadata: {case id: file}."""
    files = {}
    for case in METADATA_CASES:
        proto = onnx.load(str(model))
        props = {p.key: p.value for p in proto.metadata_props}
        text = case.change if isinstance(case.change, str) else json.dumps(case.change(json.loads(props["agentkit"])))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, {**props, "agentkit": text})
        files[case.id] = folder / f"meta-{case.id}.onnx"
        onnx.save(proto, str(files[case.id]))
    return files
