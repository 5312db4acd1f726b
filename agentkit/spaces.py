"""Action spaces gymnasium lacks: the hybrid (parameterised) action space.

A hybrid action is a discrete type ``k`` in ``0..K-1`` plus a vector of continuous parameters. Each type
owns a subset of the parameters (possibly none): ``accelerate`` owns ``magnitude``, ``turn`` owns ``angle``,
``brake`` owns nothing. The space is a ``gymnasium.spaces.Tuple((Discrete(K), Box(low, high, (P,))))`` so
every gymnasium tool (vector envs, the env checker) handles it; the names and the type→parameters mapping
ride along as attributes. An env receives ``(k, params)`` where only ``k``'s parameters are meaningful;
agentkit sends 0 for the others.

    space = HybridSpace(
        types={"accelerate": ["magnitude"], "turn": ["angle"], "brake": []},
        params={"magnitude": (0.0, 1.0), "angle": (-3.14, 3.14)},
    )

Envs written for other tools declare parameterised actions as plain Tuples; ``hybrid_view`` reads the two
common layouts as a ``HybridSpace`` (gym-hybrid's ``Tuple(Discrete(K), Box(P))``, given which parameters each
type uses, and gym-platform's ``Tuple(Discrete(K), Tuple(Box_0, ..., Box_K-1))``, where type k uses Box k).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from agentkit.errors import ConfigError

#: The ``action_types`` key of the env plugins that read plain parameterised-action Tuples (``hybrid_views``).
ACTION_TYPES_HELP = (
    "For an env whose action space is Tuple(Discrete(K), Box(P)) (gym-hybrid's parameterised actions): the K "
    "type names in index order, each with the indices of the parameters it uses, e.g. {accelerate: [0], turn: "
    "[1], brake: []}. Trains it with the hybrid head. Not needed for Tuple(Discrete(K), Tuple(Box, ...)), where "
    "type k uses Box k (it may name the types)."
)


def discrete_branches(space: Any) -> tuple[list[int], list[int]] | None:
    """``(nvec, start)`` of an action space made of independent discrete branches: a 1-D MultiDiscrete, or a
    1-D MultiBinary (buttons pressed together: ``[2] * n``, each starting at 0). None for any other space."""
    if isinstance(space, spaces.MultiDiscrete) and len(space.nvec.shape) == 1:
        return [int(n) for n in space.nvec], [int(s) for s in np.asarray(space.start)]
    if isinstance(space, spaces.MultiBinary) and len(space.shape) == 1:
        return [2] * int(space.shape[0]), [0] * int(space.shape[0])
    return None


class HybridSpace(spaces.Tuple):
    """A parameterised action space: ``Tuple((Discrete(K), Box(low, high, (P,))))`` with names.

    Attributes:
        type_names: the K type names, in index order.
        param_names: the P parameter names, in the order of the Box dims.
        type_params: for each type, the indices of the parameters it owns.
        param_mask: float32 ``[K, P]``, 1 where type k owns parameter p.
    """

    def __init__(
        self,
        types: Mapping[str, Sequence[str]],
        params: Mapping[str, tuple[float, float]],
        seed: int | np.random.Generator | None = None,
    ):
        if not types:
            raise ValueError("HybridSpace needs at least one action type")
        self.type_names = list(types)
        self.param_names = list(params)
        unknown = sorted({p for owned in types.values() for p in owned} - set(self.param_names))
        if unknown:
            raise ValueError(f"HybridSpace types name parameters that are not declared in params: {unknown}")
        self.type_params = [[self.param_names.index(p) for p in types[t]] for t in self.type_names]
        owners = [p for owned in self.type_params for p in owned]
        if len(owners) != len(set(owners)):
            raise ValueError("HybridSpace: each parameter must be owned by exactly one type")
        low = np.array([params[p][0] for p in self.param_names], dtype=np.float32)
        high = np.array([params[p][1] for p in self.param_names], dtype=np.float32)
        if np.any(~np.isfinite(low)) or np.any(~np.isfinite(high)) or np.any(low >= high):
            raise ValueError("HybridSpace parameter bounds must be finite with low < high")
        self.param_mask = np.zeros((len(self.type_names), len(self.param_names)), dtype=np.float32)
        for k, owned in enumerate(self.type_params):
            self.param_mask[k, owned] = 1.0
        #: the two entries of the Tuple, typed: the action type and the parameters
        self.types_space = spaces.Discrete(len(self.type_names))
        self.params_space = spaces.Box(low, high, (len(self.param_names),), np.float32)
        super().__init__((self.types_space, self.params_space), seed=seed)

    @property
    def num_types(self) -> int:
        return len(self.type_names)

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    @property
    def low(self) -> np.ndarray:
        return self.params_space.low

    @property
    def high(self) -> np.ndarray:
        return self.params_space.high

    def sample(self, mask: Any = None, probability: Any = None) -> tuple[int, np.ndarray]:
        """A random type (honouring a type mask given as ``mask``) and its parameters; others are 0."""
        k = int(self.spaces[0].sample(mask=mask) if mask is not None else self.spaces[0].sample())
        params = self.spaces[1].sample() * self.param_mask[k]
        return k, params.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (used in ONNX metadata and docs)."""
        return {
            "types": [
                {"name": t, "params": [self.param_names[i] for i in owned], "param_indices": owned}
                for t, owned in zip(self.type_names, self.type_params, strict=True)
            ],
            "params": [
                {"name": p, "low": float(lo), "high": float(hi)}
                for p, lo, hi in zip(self.param_names, self.low, self.high, strict=True)
            ],
        }

    def __repr__(self) -> str:
        owned = ", ".join(
            f"{t}({', '.join(self.param_names[i] for i in ps)})"
            for t, ps in zip(self.type_names, self.type_params, strict=True)
        )
        return f"HybridSpace({owned})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HybridSpace)
            and self.type_names == other.type_names
            and self.param_names == other.param_names
            and self.type_params == other.type_params
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
        )

    __hash__ = None  # type: ignore[assignment]


def hybrid_view(
    space: spaces.Space, action_types: Mapping[str, Sequence[int]] | None = None
) -> tuple[HybridSpace, Callable[[tuple[int, np.ndarray]], Any]] | None:
    """The ``HybridSpace`` a plain parameterised-action Tuple stands for, and the function that turns one of
    its actions ``(k, params [P])`` into the Tuple's own form. None when ``space`` is no such Tuple (a
    ``HybridSpace`` included: it needs no view).

    - ``Tuple(Discrete(K), Box(P))`` (gym-hybrid's layout): which type uses which parameters is not in the
      space, so ``action_types`` must give it: the K type names in index order, each with the indices of
      the Box dims it uses, e.g. ``{"accelerate": [0], "turn": [1], "brake": []}``. Actions pass unchanged.
    - ``Tuple(Discrete(K), Tuple(Box_0, ..., Box_K-1))`` (gym-platform's, P-DQN's): type k uses Box k, whose
      dims (flattened) follow those of Box k-1 in ``params``. ``action_types``, if given, only names the
      types and must list the same parameters. Actions become ``(k, (box_0, ..., box_K-1))``, each Box its own
      shape, with 0 in the Boxes of the other types.

    Parameter names are ``param_<i>`` (flat Box) or ``<type>.<i>`` (one Box per type). Raises ValueError,
    naming the fix, for a flat layout without ``action_types`` or a mapping that does not fit the space.
    """
    if isinstance(space, HybridSpace) or not isinstance(space, spaces.Tuple) or len(space.spaces) != 2:
        return None
    kinds, params = space.spaces
    if not isinstance(kinds, spaces.Discrete) or int(kinds.start) != 0:
        return None
    k = int(kinds.n)
    flat = params if isinstance(params, spaces.Box) and len(params.shape) == 1 else None
    boxes = [b for b in params.spaces if isinstance(b, spaces.Box)] if isinstance(params, spaces.Tuple) else []
    per_type = isinstance(params, spaces.Tuple) and len(params.spaces) == k == len(boxes)
    if flat is None and not per_type:
        return None
    if action_types is not None and len(action_types) != k:
        raise ValueError(f"the action space {space} has {k} types, but {len(action_types)} are given: "
                         f"{list(action_types)}")
    if flat is not None:
        if action_types is None:
            raise ValueError(
                f"the action space {space} is a discrete type plus {flat.shape[0]} parameters, but not which "
                "type uses which; give the types' names and parameter indices, e.g. "
                "{accelerate: [0], turn: [1], brake: []}"
            )
        names = [f"param_{i}" for i in range(flat.shape[0])]
        low, high = flat.low, flat.high

        def native(action: tuple[int, np.ndarray]) -> Any:
            return action
    else:
        type_names = list(action_types) if action_types is not None else [f"type_{i}" for i in range(k)]
        sizes = [int(np.prod(box.shape, dtype=np.int64)) for box in boxes]
        ends = np.cumsum(sizes).tolist()
        implied = [list(range(end - size, end)) for size, end in zip(sizes, ends, strict=True)]
        if action_types is not None and [list(v) for v in action_types.values()] != implied:
            raise ValueError(
                f"the action space {space} has one Box of parameters per type, so type k uses Box k: the "
                f"parameter indices are {dict(zip(type_names, implied, strict=True))}; use these indices with your "
                "type names, or leave the types out"
            )
        action_types = dict(zip(type_names, implied, strict=True))
        names = [f"{name}.{i}" for name, size in zip(type_names, sizes, strict=True) for i in range(size)]
        low = np.concatenate([box.low.reshape(-1) for box in boxes])
        high = np.concatenate([box.high.reshape(-1) for box in boxes])

        def native(action: tuple[int, np.ndarray]) -> Any:
            kind, values = action
            split = np.split(np.asarray(values, dtype=np.float32), ends[:-1])
            return kind, tuple(part.reshape(box.shape).astype(box.dtype) for part, box in zip(split, boxes, strict=True))
    for name, owned in action_types.items():
        if any(not 0 <= int(i) < len(names) for i in owned):
            raise ValueError(f"type {name!r} uses parameters {list(owned)}; the indices must lie in 0..{len(names) - 1}")
    hybrid = HybridSpace(
        types={name: [names[int(i)] for i in owned] for name, owned in action_types.items()},
        params={name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high, strict=True)},
    )
    return hybrid, native


def hybrid_views(
    action_spaces: Mapping[str, spaces.Space], action_types: Mapping[str, Sequence[int]] | None, owner: str
) -> dict[str, tuple[HybridSpace, Callable[[tuple[int, np.ndarray]], Any]]]:
    """``hybrid_view`` of each action space (by agent; ``""`` for a single-agent env) that is a plain
    parameterised-action Tuple. ``owner`` names the env in errors: ConfigError, naming ``env.action_types``
    and the fix, where ``hybrid_view`` refuses, or where ``action_types`` is set and no space is such a Tuple."""
    views = {}
    for name, space in action_spaces.items():
        try:
            view = hybrid_view(space, action_types)
        except ValueError as exc:
            who = f"{owner} (agent {name!r})" if name else owner
            raise ConfigError(f"env.action_types: {who} has parameterised actions; {exc}.") from exc
        if view is not None:
            views[name] = view
    if action_types is not None and not views:
        shown = next(iter(action_spaces.values()), None)
        raise ConfigError(
            f"env.action_types is set, but the action space of {owner} is {shown}, not Tuple(Discrete(K), Box(P)) "
            "or Tuple(Discrete(K), Tuple(Box, ...)); remove env.action_types."
        )
    return views
