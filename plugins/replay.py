"""A replay buffer of preallocated tensors, for off-policy algorithms (MADDPG).

Each field is one tensor ``[capacity, *shape]`` allocated once; ``add`` writes a batch of rows at the
write position and wraps around, overwriting the oldest rows once the buffer is full. ``sample`` draws
rows uniformly (with replacement) from what is stored, with the caller's ``torch.Generator`` so runs are
reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

FieldSpec = tuple[tuple[int, ...], torch.dtype]


class ReplayBuffer:
    """Circular storage of named fields.

    Args:
        capacity: the number of rows kept; the oldest rows are overwritten first.
        fields: ``name -> (per-row shape, dtype)``.
        device: where the tensors live (sampling returns tensors on it).
    """

    def __init__(self, capacity: int, fields: Mapping[str, FieldSpec], device: torch.device | str = "cpu"):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.fields = dict(fields)
        self.data: dict[str, Tensor] = {
            name: torch.zeros((self.capacity, *shape), dtype=dtype, device=self.device)
            for name, (shape, dtype) in self.fields.items()
        }
        self.pos = 0  # next row to write
        self.size = 0  # rows stored (<= capacity)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.data.values())

    @staticmethod
    def bytes_for(capacity: int, fields: Mapping[str, FieldSpec]) -> int:
        """Bytes a buffer of ``capacity`` rows of ``fields`` allocates, counted before allocating it (images
        are stored in their own dtype: a uint8 frame takes one byte a pixel)."""
        return sum(
            int(capacity) * int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
            for shape, dtype in fields.values()
        )

    def add(self, rows: Mapping[str, Tensor | np.ndarray]) -> None:
        """Append a batch of rows (every field, same leading size ``n``), wrapping around at capacity."""
        if set(rows) != set(self.data):
            missing, extra = sorted(set(self.data) - set(rows)), sorted(set(rows) - set(self.data))
            raise KeyError(f"replay rows must give exactly the buffer's fields; missing {missing}, extra {extra}")
        sizes = {len(v) for v in rows.values()}
        if len(sizes) != 1:
            raise ValueError(f"replay rows have different leading sizes: { {k: len(v) for k, v in rows.items()} }")
        n = sizes.pop()
        if n > self.capacity:  # only the newest `capacity` rows can survive
            rows = {k: v[n - self.capacity :] for k, v in rows.items()}
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        for name, value in rows.items():
            target = self.data[name]
            self.data[name][idx] = torch.as_tensor(value, device=self.device).to(target.dtype).reshape(
                n, *target.shape[1:]
            )
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``batch_size`` rows drawn uniformly with replacement from the stored ones."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator).to(self.device)
        return {name: t[idx] for name, t in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """The stored rows (only the filled part) and the write position."""
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "size": self.size,
            "data": {name: t[: self.size].clone() for name, t in self.data.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or set(state["data"]) != set(self.data):
            raise ValueError(
                "replay buffer state does not match this buffer (capacity or fields differ); "
                f"saved capacity {state['capacity']}, fields {sorted(state['data'])}"
            )
        size = int(state["size"])
        for name, t in state["data"].items():
            self.data[name][:size] = t.to(self.device)
        self.pos, self.size = int(state["pos"]), size
