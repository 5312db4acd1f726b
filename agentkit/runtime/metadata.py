"""Reading an export's ``metadata_props["agentkit"]`` and checking it against the graph it describes.

A file from elsewhere may carry anything in its metadata, so a runtime checks what it relies on before acting
(exports/CONTRACT.md, "What a runtime checks"): the JSON is an object of the supported contract version, the
keys the runtime reads are there with the right types, and every size it reads agrees with the graph: the
``inputs`` are the graph's inputs (names and dims), ``observation.shape`` is the ``obs`` input's (or, for a
per-entry export, each of ``observation.fields`` names an input of its own shape and dtype),
``mask.dim``, ``stochastic.dim`` and ``agent_id.dim`` are the widths of their inputs, and the outputs it
names are graph outputs. The JavaScript runtime (exports/js/agentkit-runtime.mjs, ``checkMetadata``) applies
the same rule with the same messages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

#: dtypes an ``env_action`` entry may give the env, and an output may have
ENV_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float32", "float64")
OUTPUT_DTYPES = ("int64", "float32")
#: dtypes of a per-entry observation input (contract 3): pixels, categories, values
ENTRY_DTYPES = ("uint8", "int64", "float32")


class MetadataError(ValueError):
    """What is wrong with the metadata, without the file's name (the caller adds it)."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _int(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MetadataError(f"'{where}' must be an integer of at least {low}, got {value!r}")
    return value


def _obj(meta: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = meta.get(key)
    if not isinstance(value, dict):
        raise MetadataError(f"'{where or key}' must be an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MetadataError(f"'{where}' must be a list, got {_kind(value)}")
    return value


def parse(text: str) -> dict[str, Any]:
    """The metadata JSON as a dict (MetadataError for invalid JSON or anything but an object)."""
    def refuse(name: str) -> None:  # JSON has no NaN or Infinity (Python's json would read them)
        raise ValueError(f"{name} is not a JSON value")

    try:
        meta = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise MetadataError(f"expected a JSON object, got {_kind(meta)}")
    return meta


def _check_entries(entries: list[dict[str, Any]], graph: dict[str, list[Any]], dtypes: dict[str, Any]) -> None:
    """Each per-entry field names a graph input of the entry's own shape, declared with the field's dtype."""
    for i, field in enumerate(entries):
        name = field.get("input")
        if not isinstance(name, str) or name not in graph:
            raise MetadataError(f"'observation.fields[{i}].input' {name!r} is not a graph input")
        shape = _list(field.get("shape"), f"observation.fields[{i}].shape")
        if list(shape) != graph[name]:
            raise MetadataError(
                f"'observation.fields[{i}].shape' {_dims(shape)} differs from the graph's {name} input "
                f"{_dims(['batch', *graph[name]])}"
            )
        if field.get("dtype") not in ENTRY_DTYPES or field.get("dtype") != dtypes.get(name):
            raise MetadataError(
                f"'observation.fields[{i}].dtype' {field.get('dtype')!r} differs from the {name} input's "
                f"{dtypes.get(name)!r} (one of {', '.join(ENTRY_DTYPES)})"
            )


def check(meta: dict[str, Any], graph_inputs: dict[str, list[Any]], graph_outputs: Sequence[str]) -> None:
    """Raise MetadataError naming the first key that is missing, mistyped or disagrees with the graph.

    ``graph_inputs``: the graph's input names -> dims (``"batch"`` or None for the dynamic axis);
    ``graph_outputs``: its output names. The contract version is checked by the caller.
    """
    for key in ("observation", "action", "inputs", "outputs", "action_outputs"):
        if key not in meta:
            raise MetadataError(f"no '{key}' key")
    inputs = _list(meta["inputs"], "inputs")
    observation = _obj(meta, "observation")
    fields = observation.get("fields")
    if fields is not None:
        _list(fields, "observation.fields")
    # contract 3: a Dict/Tuple holding an image has one input per entry, named by its field's "input"
    entries = [f for f in fields or [] if isinstance(f, dict) and "input" in f]
    if entries and len(entries) != len(fields or []):
        raise MetadataError("'observation.fields' give an 'input' for some entries but not all")
    entry_names = {f["input"] for f in entries if isinstance(f["input"], str)}
    declared: dict[str, list[Any]] = {}
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list):
            raise MetadataError(f"'inputs[{i}]' must be an object with a 'name' and a 'shape'")
        name = spec.get("name")
        # uint8: image frames; int64: the category of a Dict entry
        allowed = ("float32", "uint8") if name == "obs" else ENTRY_DTYPES if name in entry_names else ("float32",)
        if spec.get("dtype") not in allowed:
            raise MetadataError(
                f"'inputs[{i}].dtype' must be {' or '.join(f'{d!r}' for d in allowed)}, got {spec.get('dtype')!r}"
            )
        declared[spec["name"]] = spec["shape"]
    graph = {name: list(dims[1:]) for name, dims in graph_inputs.items()}
    if sorted(declared) != sorted(graph) or any(list(declared[n][1:]) != graph[n] for n in graph):
        have = ", ".join(f"{n} {_dims(['batch', *graph[n]])}" for n in graph)
        said = ", ".join(f"{n} {_dims(s)}" for n, s in declared.items())
        raise MetadataError(f"the graph's inputs ({have}) differ from the metadata's 'inputs' ({said})")
    shape = _list(observation.get("shape"), "observation.shape")
    for i, d in enumerate(shape):
        _int(d, f"observation.shape[{i}]")
    if entries:
        _check_entries(entries, graph, {spec["name"]: spec.get("dtype") for spec in inputs})
    else:
        if "obs" not in graph:
            raise MetadataError("the graph has no 'obs' input")
        if shape != graph["obs"]:
            raise MetadataError(
                f"'observation.shape' {_dims(shape)} differs from the graph's obs input {_dims(['batch', *graph['obs']])}"
            )
        obs_dtype = next(spec.get("dtype") for spec in inputs if spec["name"] == "obs")
        if observation.get("dtype", "float32") != obs_dtype:
            raise MetadataError(f"'observation.dtype' {observation.get('dtype')!r} differs from the obs input's {obs_dtype!r}")

    for key, input_name in (("mask", "action_mask"), ("stochastic", "noise"), ("agent_id", "agent_id")):
        if meta.get(key) is None:
            if input_name in graph:
                raise MetadataError(f"the graph has an '{input_name}' input but '{key}' is null")
            continue
        section = _obj(meta, key)
        dim = _int(section.get("dim"), f"{key}.dim", 1)
        if input_name not in graph or graph[input_name] != [dim]:
            have = _dims(["batch", *graph[input_name]]) if input_name in graph else "none"
            raise MetadataError(f"'{key}.dim' {dim} differs from the graph's {input_name} input ({have})")
    if meta.get("mask") is not None:
        segments = _list(meta["mask"].get("segments"), "mask.segments")
        for i, width in enumerate(segments):
            _int(width, f"mask.segments[{i}]", 1)
        if sum(segments) != meta["mask"]["dim"]:
            raise MetadataError(f"'mask.segments' {segments} do not add up to 'mask.dim' {meta['mask']['dim']}")

    outputs = _list(meta["outputs"], "outputs")
    specs: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list):
            raise MetadataError(f"'outputs[{i}]' must be an object with a 'name' and a 'shape'")
        if spec.get("dtype") not in OUTPUT_DTYPES:
            raise MetadataError(f"'outputs[{i}].dtype' must be one of {', '.join(OUTPUT_DTYPES)}, got {spec.get('dtype')!r}")
        for j, d in enumerate(spec["shape"][1:]):
            _int(d, f"outputs[{i}].shape[{j + 1}]")
        if spec["name"] not in graph_outputs:
            raise MetadataError(f"'outputs[{i}]' names {spec['name']!r}, which is not a graph output "
                                f"({', '.join(graph_outputs)})")
        specs[spec["name"]] = spec
    action_outputs = _list(meta["action_outputs"], "action_outputs")
    if not action_outputs:
        raise MetadataError("'action_outputs' is empty")
    for name in action_outputs:
        if name not in specs:
            raise MetadataError(f"'action_outputs' names {name!r}, which 'outputs' does not describe")
    if meta.get("stochastic") is not None:
        det = _obj(meta["stochastic"], "deterministic_outputs", "stochastic.deterministic_outputs")
        for name in action_outputs:
            if det.get(name) not in graph_outputs:
                raise MetadataError(f"'stochastic.deterministic_outputs.{name}' names no graph output")
    for i, entry in enumerate(_list(meta.get("env_action") or [], "env_action")):
        if not isinstance(entry, dict) or entry.get("output") not in specs:
            raise MetadataError(f"'env_action[{i}]' must be an object naming one of the 'outputs'")
        if entry.get("dtype") not in ENV_DTYPES:
            raise MetadataError(f"'env_action[{i}].dtype' must be one of {', '.join(ENV_DTYPES)}, got {entry.get('dtype')!r}")
        row = _list(entry.get("shape"), f"env_action[{i}].shape")
        for j, d in enumerate(row):
            _int(d, f"env_action[{i}].shape[{j}]")
        if math.prod(row) != math.prod(specs[entry["output"]]["shape"][1:]):
            raise MetadataError(f"'env_action[{i}].shape' {_dims(row)} does not hold one row of output "
                                f"{entry['output']!r} {_dims(specs[entry['output']]['shape'])}")
    agents = meta.get("agents")
    if agents is not None and not (isinstance(agents, list) and all(isinstance(a, str) for a in agents)):
        raise MetadataError("'agents' must be a list of names")
