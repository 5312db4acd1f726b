"""An exported agentkit policy on onnxruntime and numpy (no torch): load a file, read its metadata, act."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentkit.errors import EmptyMaskError, InvalidInputError, UserError
from agentkit.runtime import metadata as _metadata
from agentkit.runtime.observation import entry_inputs, flatten, pixels, split_entries, unflatten

METADATA_KEY = "agentkit"
#: Contract versions this runtime reads.
SUPPORTED_CONTRACTS = (1, 2, 3)


class PolicyFileError(UserError):
    """A file that is not a readable agentkit policy export (missing, not ONNX, no agentkit metadata)."""


class Policy:
    """An exported policy. Build it with ``agentkit.runtime.load(path)``.

    Attributes:
        metadata: the parsed ``metadata_props["agentkit"]`` JSON (see exports/CONTRACT.md), checked against the
            graph on load (``agentkit.runtime.metadata``; PolicyFileError naming the key otherwise).
        path: the file it was loaded from (None when loaded from bytes).
        observation_shape: shape of one observation.
        mask_dim: width of the action mask (0: the policy takes none).
        noise_dim: uniform numbers per row a stochastic act consumes (0: deterministic-only file).
        agents: the agents the policy was trained for; ``agent_id_dim`` > 0 when it needs to be told which.
        action_outputs: the graph outputs that make up an action (``action``, or ``action_type`` and
            ``action_params`` for hybrid actions).
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1):
        import onnxruntime as ort

        self.path = None if isinstance(model, bytes) else Path(model)
        if self.path is not None and not self.path.is_file():
            raise PolicyFileError(f"policy file {str(self.path)!r} does not exist.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(self.path)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise PolicyFileError(f"{self._where()} is not a loadable ONNX model: {exc}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise PolicyFileError(
                f"{self._where()} has no '{METADATA_KEY}' metadata: it was not written by `agentkit export`. "
                "Export the run again with `agentkit export RUN_DIR`."
            )
        try:
            self.metadata: dict[str, Any] = _metadata.parse(props[METADATA_KEY])
        except _metadata.MetadataError as exc:
            raise self._malformed(exc) from None
        version = self.metadata.get("contract_version")
        if version not in SUPPORTED_CONTRACTS:
            raise PolicyFileError(
                f"{self._where()} follows agentkit export contract version {version}; this runtime reads "
                f"{', '.join(map(str, SUPPORTED_CONTRACTS))}. Upgrade agentkit or re-export the policy."
            )
        try:
            _metadata.check(self.metadata, {i.name: list(i.shape) for i in self.session.get_inputs()},
                            [o.name for o in self.session.get_outputs()])
        except _metadata.MetadataError as exc:
            raise self._malformed(exc) from None
        meta = self.metadata
        self.input_names = [i["name"] for i in meta["inputs"]]
        self.output_names = [o["name"] for o in meta["outputs"]]
        self.action_outputs: list[str] = list(meta["action_outputs"])
        self.observation_shape = tuple(meta["observation"]["shape"])
        #: the ``obs`` input's dtype: uint8 for images (sent as the camera gives them), else float32
        self.observation_dtype = np.dtype(meta["observation"].get("dtype") or "float32")
        self.observation_fields: list[dict[str, Any]] | None = meta["observation"].get("fields")
        #: the env observes a Tuple: its entries are positions, and act() takes the env's tuple
        self._positional = bool(self.observation_fields) and all(
            isinstance(f["key"], int) for f in self.observation_fields
        )
        #: contract 3: a Dict/Tuple observation holding an image is one graph input per entry (``field["input"]``)
        self._entries = entry_inputs(self.observation_fields or [])
        self.mask_dim = int(meta["mask"]["dim"]) if meta.get("mask") else 0
        self.mask_segments = list(meta["mask"]["segments"]) if meta.get("mask") else []
        self.noise_dim = int(meta["stochastic"]["dim"]) if meta.get("stochastic") else 0
        self.agents: list[str] = list(meta.get("agents") or [])
        self.agent_id_dim = int(meta["agent_id"]["dim"]) if meta.get("agent_id") else 0
        layout = {e["output"]: e for e in meta.get("env_action") or []}
        self._env_layout = [
            (tuple(layout[n]["shape"]), np.dtype(layout[n]["dtype"])) if n in layout else None
            for n in self.action_outputs
        ]
        self._specs = {o["name"]: o for o in meta["outputs"]}
        self._constants: dict[tuple[str, int], np.ndarray] = {}
        self._deterministic_names = (
            [meta["stochastic"]["deterministic_outputs"][n] for n in self.action_outputs]
            if self.noise_dim else list(self.action_outputs)
        )

    def _where(self) -> str:
        return f"policy file {str(self.path)!r}" if self.path is not None else "the policy model"

    def _malformed(self, exc: Exception) -> PolicyFileError:
        return PolicyFileError(
            f"{self._where()}: malformed agentkit metadata: {exc}. It was not written by `agentkit export` as it "
            "is (edited or damaged?): export the run again."
        )

    @property
    def stochastic(self) -> bool:
        """Whether the file can sample (it was exported with ``--stochastic``)."""
        return self.noise_dim > 0

    @property
    def action_spec(self) -> dict[str, Any]:
        return self.metadata["action"]

    # -- inputs ---------------------------------------------------------------------------------------------

    def _observations(self, obs: Any) -> tuple[np.ndarray, bool]:
        """``obs`` as ``[B, *obs_shape]`` in the input's dtype and whether it was a single observation. A structured
        observation (a dict of entries, a category index) is flattened by ``metadata.observation.fields``."""
        if self.observation_fields is not None and (
            isinstance(obs, Mapping) or self._is_raw_value(obs) or (self._positional and isinstance(obs, tuple))
        ):
            return flatten(self.observation_fields, obs)
        if isinstance(obs, Mapping):
            raise InvalidInputError(
                f"observation: this policy takes a flat observation of shape {self.observation_shape}, not a dict "
                f"(the file's metadata.observation.fields is null); got the entries {sorted(obs)}."
            )
        arr = numbers(obs, "observation")
        shape = self.observation_shape
        if arr.shape == shape:
            return self._as_input_dtype(arr)[None], True
        if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
            return self._as_input_dtype(arr), False
        if arr.shape == (0,):  # an empty list: a batch of 0
            return np.zeros((0, *shape), self.observation_dtype), False
        hint = " The env's Tuple observation goes in as a tuple (a list of tuples for a batch)." if self._positional else ""
        raise InvalidInputError(f"observation: {_expected_shape(shape, arr.shape)}.{hint}")

    def _as_input_dtype(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` in the ``obs`` input's dtype (uint8 pixels: whole numbers 0..255, ``pixels``)."""
        if self.observation_dtype != np.uint8:
            return _float32(arr)
        return pixels(arr, "observation", self.observation_shape)

    def _observation_feeds(self, obs: Any) -> tuple[dict[str, np.ndarray], int, bool]:
        """The graph's observation input(s) for ``obs``, the batch size and whether it was one observation:
        ``obs`` for a flat or Box observation, one input per entry for a per-entry export (contract 3),
        which takes the env's dict or tuple, or the flat vector ``fields`` describe (what the trainer's
        policy takes: ``agentkit eval`` acts on it)."""
        fields = self.observation_fields or []
        if not self._entries:
            x, single = self._observations(obs)
            finite(x, "observation")
            return {"obs": x}, x.shape[0], single
        if isinstance(obs, Mapping) or (self._positional and isinstance(obs, tuple)):
            feeds, single = split_entries(fields, obs)
        else:
            arr = numbers(obs, "observation")
            shape = self.observation_shape
            if arr.shape == (0,):
                return {}, 0, False
            if arr.shape != shape and arr.shape[1:] != shape:
                raise InvalidInputError(
                    f"observation: this policy takes the env's {'tuple' if self._positional else 'dict'} of "
                    f"entries {[f['key'] for f in fields]} (or the flat vector they make: "
                    f"{_expected_shape(shape, arr.shape)})."
                )
            single = arr.shape == shape
            flat = _float32(arr.reshape(-1, *shape))
            if flat.shape[0] == 0:
                return {}, 0, False
            finite(flat, "observation")
            feeds, _ = split_entries(fields, unflatten(fields, flat))
        for field in fields:
            if field["dtype"] == "float32":
                finite(feeds[field["input"]], f"observation {field['key']!r}")
        return feeds, next(iter(feeds.values())).shape[0], single

    @staticmethod
    def _stack_dicts(dicts: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """A list of the env's observation dicts → one dict whose entries have a batch axis."""
        for i, d in enumerate(dicts):
            if set(d) != set(dicts[0]):
                raise InvalidInputError(
                    f"observation {i}: its entries {sorted(d)} differ from observation 0's {sorted(dicts[0])}."
                )
        try:
            return {k: np.stack([np.asarray(d[k]) for d in dicts]) for k in dicts[0]}
        except ValueError as exc:
            raise InvalidInputError(f"observations: an entry's shape differs between them ({exc}).") from None

    def _stack_tuples(self, tuples: Sequence[tuple]) -> tuple[np.ndarray, ...]:
        """A list of the env's Tuple observations → one tuple whose entries have a batch axis."""
        n_fields = len(self.observation_fields or [])
        for i, t in enumerate(tuples):
            if len(t) != n_fields:
                raise InvalidInputError(
                    f"observation {i}: a tuple of {len(t)} entries; the policy's Tuple observation has "
                    f"{n_fields}."
                )
        try:
            return tuple(np.stack([np.asarray(t[i]) for t in tuples]) for i in range(len(tuples[0])))
        except ValueError as exc:
            raise InvalidInputError(f"observations: an entry's shape differs between them ({exc}).") from None

    def _is_raw_value(self, obs: Any) -> bool:
        """Whether ``obs`` is the env's own category value(s) (a Discrete or MultiDiscrete observation, given
        as integers) rather than the flat float vector the graph takes."""
        fields = self.observation_fields or []
        return (len(fields) == 1 and fields[0]["key"] is None and fields[0]["encoding"] == "one_hot"
                and np.asarray(obs).dtype.kind in "iu")

    def _mask(self, mask: Any, batch: int) -> np.ndarray:
        if mask is None:
            return self._constant("ones", batch, self.mask_dim, 1.0)
        arr = numbers(mask, "action mask")
        if arr.shape == (self.mask_dim,):
            arr = np.broadcast_to(arr, (batch, self.mask_dim))
        if arr.shape != (batch, self.mask_dim):
            raise InvalidInputError(
                f"action mask (1 = allowed): {_expected_shape((self.mask_dim,), arr.shape, batch)}."
            )
        if arr.dtype != np.bool_:
            finite(_float32(arr), "action mask")
        allowed = arr > 0.5 if arr.dtype != np.bool_ else arr
        start, empty, first = 0, np.zeros(batch, bool), None
        for width in self.mask_segments or [self.mask_dim]:
            none = ~allowed[:, start:start + width].any(axis=1)
            if none.any() and (first is None or int(np.argmax(none)) < first[0]):
                first = (int(np.argmax(none)), start, width)
            empty |= none
            start += width
        if first is not None:
            rows = np.flatnonzero(empty).tolist()
            raise EmptyMaskError(
                f"action mask: row {first[0]} allows no action in the segment at {first[1]} (width {first[2]}); "
                f"every step needs at least one allowed action (rows with none: {rows[:10]}).", rows=rows,
            )
        return allowed.astype(np.float32)

    def _constant(self, kind: str, batch: int, width: int, value: float) -> np.ndarray:
        """A read-only ``[batch, width]`` float32 array of ``value``, cached (acting is per frame)."""
        key = (kind, batch)
        arr = self._constants.get(key)
        if arr is None:
            if len(self._constants) > 64:
                self._constants.clear()
            arr = np.full((batch, width), value, np.float32)
            arr.flags.writeable = False
            self._constants[key] = arr
        return arr

    def _agent_ids(self, agent: Any, batch: int) -> np.ndarray:
        if agent is None:
            raise InvalidInputError(
                f"this policy is shared by the agents {self.agents}: pass agent=<name or index> to act()."
            )
        if isinstance(agent, str):
            agent = [agent]
        arr = np.asarray(agent)
        if arr.dtype.kind in "US":
            unknown = [a for a in arr.ravel().tolist() if a not in self.agents]
            if unknown:
                raise InvalidInputError(f"agent: unknown agent(s) {unknown}; this policy's agents are {self.agents}.")
            arr = np.array([self.agents.index(a) for a in arr.ravel().tolist()])
        if arr.ndim == 2 and arr.shape[1] == self.agent_id_dim and np.issubdtype(arr.dtype, np.floating):
            onehot = arr.astype(np.float32)
        else:
            if not np.issubdtype(arr.dtype, np.integer) or arr.ndim > 1:
                raise InvalidInputError(
                    f"agent: expected an agent name, an index 0..{self.agent_id_dim - 1}, a list of them, or a "
                    f"one-hot array [batch, {self.agent_id_dim}]; got {arr.dtype} of shape {arr.shape}."
                )
            idx = arr.reshape(-1)
            if ((idx < 0) | (idx >= self.agent_id_dim)).any():
                raise InvalidInputError(f"agent: index out of range 0..{self.agent_id_dim - 1}: {idx.tolist()}.")
            onehot = np.eye(self.agent_id_dim, dtype=np.float32)[idx]
        if onehot.shape[0] == 1 and batch > 1:
            onehot = np.repeat(onehot, batch, axis=0)
        if onehot.shape[0] != batch:
            raise InvalidInputError(f"agent: got {onehot.shape[0]} agent ids for {batch} observations.")
        return onehot

    def _noise(self, noise: Any, rng: Any, batch: int) -> np.ndarray:
        if noise is None:
            rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            return rng.random((batch, self.noise_dim), dtype=np.float32)
        arr = _float32(numbers(noise, "noise"))
        if arr.shape == (self.noise_dim,):
            arr = arr[None]
        if arr.shape != (batch, self.noise_dim):
            raise InvalidInputError(
                f"noise: expected uniform(0, 1) floats of shape [{batch}, {self.noise_dim}], got {_dims(arr.shape)}."
            )
        finite(arr, "noise")
        return arr

    # -- acting ---------------------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on ready-made inputs (names as in ``input_names``); every output by name."""
        return dict(zip(self.output_names, self.session.run(self.output_names, dict(feeds)), strict=True))

    def outputs(self, obs: Any, mask: Any = None, deterministic: bool = True, rng: Any = None,
                noise: Any = None, agent: Any = None) -> tuple[dict[str, np.ndarray], bool]:
        """The action outputs by name (batched) and whether ``obs`` was a single observation."""
        if self.observation_fields is not None and isinstance(obs, list | tuple) and obs \
                and all(isinstance(o, Mapping) for o in obs):
            obs = self._stack_dicts(obs)
        elif self._positional and isinstance(obs, list) and obs and all(isinstance(o, tuple) for o in obs):
            obs = self._stack_tuples(obs)
        if isinstance(obs, Mapping) and self.mask_dim and mask is None:
            mask = obs.get("action_mask")
        feeds, batch, single = self._observation_feeds(obs)
        if batch == 0:  # nothing to act on: empty outputs of the right shape, without onnxruntime
            return {name: np.zeros((0, *self._specs[name]["shape"][1:]), self._specs[name]["dtype"])
                    for name in self.action_outputs}, False
        if self.mask_dim:
            feeds["action_mask"] = self._mask(mask, batch)
        elif mask is not None:
            raise InvalidInputError(
                "action mask: this policy takes no action mask (the file has no action_mask input: its head "
                "takes none, or its env never supplied masks in training). Call act() without mask."
            )
        if self.agent_id_dim:
            feeds["agent_id"] = self._agent_ids(agent, batch)
        if not deterministic and not self.noise_dim:
            raise InvalidInputError(
                f"{self._where()} was exported deterministic-only; act(deterministic=False) needs a file "
                "exported with `agentkit export --stochastic`."
            )
        if self.noise_dim:
            feeds["noise"] = (
                self._noise(noise, rng, batch) if not deterministic else self._constant("half", batch, self.noise_dim, 0.5)
            )
        names = self.action_outputs if not deterministic else self._deterministic_names
        values = self.session.run(names, feeds)
        return dict(zip(self.action_outputs, values, strict=True)), single

    def act(self, obs: Any, mask: Any = None, deterministic: bool = True, rng: Any = None,
            noise: Any = None, agent: Any = None) -> Any:
        """Actions for one observation or a batch, in the env's structure.

        ``obs``: ``obs_shape`` (one) or ``[B, *obs_shape]``; for a policy whose env observes a Dict, a Tuple
        or categories (``metadata.observation.fields``), also the env's own observation (a dict, whose
        ``action_mask`` entry is the mask unless ``mask`` is given, or a tuple; a list of them, or one with a
        batch axis on every entry, for a batch) or category values. ``mask``: ``[mask_dim]`` or ``[B, mask_dim]``,
        bool or 0/1, 1 = allowed (None: everything allowed). ``deterministic=False`` samples with ``noise``
        (uniform(0, 1) ``[B, noise_dim]``) or, without it, with noise drawn from ``rng`` (a
        ``numpy.random.Generator`` or a seed). ``agent``: for shared policies, the agent's name or index (or
        one per row). Returns, for a batch, an array ``[B, ...]`` (``action``) or a tuple of arrays
        (``(action_type [B], action_params [B, P])`` for hybrid actions); for one observation the same
        without the batch axis. A batch of 0 (``[]`` or ``[0, *obs_shape]``) gives empty arrays without running
        the graph. Raises InvalidInputError naming expected and got for bad inputs: a wrong shape, a NaN or
        infinity in ``obs``, ``mask`` or ``noise`` (after conversion to float32), a mask row allowing nothing
        (the same rule and messages as the JavaScript runtime, exports/CONTRACT.md "What a runtime checks").
        """
        outs, single = self.outputs(obs, mask, deterministic, rng, noise, agent)
        parts = []
        for name, layout in zip(self.action_outputs, self._env_layout, strict=True):
            value = outs[name]
            if layout is not None:  # the per-row shape and dtype the head's to_env gives the env
                value = value.reshape(value.shape[0], *layout[0]).astype(layout[1], copy=False)
            parts.append(value[0] if single else value)
        return parts[0] if len(parts) == 1 else tuple(parts)

    def __repr__(self) -> str:
        return (f"Policy({self.metadata.get('policy')!r}, obs {self.observation_shape}, "
                f"action {self.action_spec.get('kind')}, outputs {self.action_outputs})")


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _expected_shape(row: Sequence[int], got: Sequence[int], batch: int | None = None) -> str:
    """The one shape message both runtimes give: ``expected shape [6] (one) or [batch, 6], got [2, 6, 1]``."""
    return f"expected shape {_dims(row)} (one) or {_dims(['batch' if batch is None else batch, *row])}, got {_dims(got)}"


def numbers(value: Any, name: str) -> np.ndarray:
    """``value`` as a numpy array of numbers (bool, int or float), or InvalidInputError naming ``name``."""
    try:
        arr = np.asarray(value)
    except ValueError:  # numpy refuses ragged nesting
        raise InvalidInputError(f"{name}: not a rectangular array of numbers (rows of different lengths?).") from None
    if arr.dtype.kind not in "fiub":  # float, signed, unsigned, bool
        raise InvalidInputError(f"{name}: expected numbers, got dtype {arr.dtype}.")
    return arr


def _float32(arr: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, which finite() then names
        return arr.astype(np.float32, copy=False)


def finite(arr: np.ndarray, name: str) -> None:
    """InvalidInputError naming the first NaN or infinity of ``arr`` (``[batch, ...]``) by row and position."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    rows = bad.reshape(len(arr), -1)
    row = int(np.argmax(rows.any(axis=1)))
    col = int(np.argmax(rows[row]))
    value = float(np.asarray(arr).reshape(len(arr), -1)[row, col])
    word = "NaN" if np.isnan(value) else "inf" if value > 0 else "-inf"
    raise InvalidInputError(
        f"{name}: row {row} holds {word} at position {col}; a policy acts on finite numbers only (check what "
        "produced it)."
    )


def load(path: str | Path | bytes, threads: int = 1) -> Policy:
    """Load an agentkit ONNX export (a path, or the file's bytes) for acting with onnxruntime."""
    return Policy(path, threads=threads)
