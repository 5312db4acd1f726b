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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces


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
        super().__init__(
            (spaces.Discrete(len(self.type_names)), spaces.Box(low, high, (len(self.param_names),), np.float32)),
            seed=seed,
        )

    @property
    def num_types(self) -> int:
        return len(self.type_names)

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    @property
    def low(self) -> np.ndarray:
        return self.spaces[1].low

    @property
    def high(self) -> np.ndarray:
        return self.spaces[1].high

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
