"""Optimiser utilities every algorithm uses: Adam (a fused, import-light one on the CPU), gradient-norm
clipping, and loading an optimiser's state saved under another parameter-group layout.

``FusedAdam`` and ``clip_grad_norm`` exist for start-up and per-step cost: the small networks of game agents
spend more time in torch's Python dispatch than in arithmetic (benchmarks/RESULTS.md, PPO vs SB3).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; returns the norm before.

    ``torch.nn.utils.clip_grad_norm_``'s maths in three ops, without its per-call Python dispatch (grouping by
    device and dtype), which costs more than the arithmetic for the small networks here. Its scale factor,
    ``min(max_norm / (norm + 1e-6), 1)``, is the same float32 arithmetic on a number (``Tensor.__rdiv__`` is a
    reciprocal and a product) rather than four ops on a one-element tensor.
    """
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if total.device.type == "cpu":
        one = np.float32(1.0)
        scale = min(one / (np.float32(total.item()) + np.float32(1e-6)) * np.float32(max_norm), one)
        if scale < one:  # a factor of exactly 1 would change nothing
            torch._foreach_mul_(grads, float(scale))
    else:  # reading the norm would wait for the device
        torch._foreach_mul_(grads, torch.clamp((total + 1e-6).reciprocal() * max_norm, max=1.0))
    return total


class FusedAdam:
    """Adam over parameter groups (each with its own ``lr`` and ``eps``), stepping with torch's fused kernel.

    The same maths and state layout as ``torch.optim.Adam(fused=True)``, without ``torch.optim.Optimizer``,
    whose constructor imports ``torch._dynamo``: seconds of start-up, as much as torch itself, which a
    short game-agent training run would otherwise spend before its first step. It offers what the
    algorithms use: ``param_groups``, ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``.
    """

    def __init__(self, param_groups: list[dict[str, Any]], betas: tuple[float, float] = (0.9, 0.999)):
        self.param_groups = [dict(g, params=list(g["params"])) for g in param_groups]
        self.betas = betas
        self.state: dict[nn.Parameter, dict[str, Tensor]] = {}
        # The step counts of parameters stepped together, as one vector whose elements are their states'
        # "step" tensors (views): one add per step instead of one per parameter (``_step_counts``).
        self._counts: dict[tuple[int, ...], Tensor] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter with a gradient; groups with the same ``lr`` and ``eps`` (the
        usual case: actor and critic at one learning rate) step in one fused call."""
        beta1, beta2 = self.betas
        batches: dict[tuple[float, float], list[nn.Parameter]] = {}
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if params:
                batches.setdefault((float(g["lr"]), float(g["eps"])), []).extend(params)
        for (lr, eps), params in batches.items():
            self._step_counts(params).add_(1)
            states = [self.state[p] for p in params]
            steps = [s["step"] for s in states]
            torch._fused_adam_(
                cast(list[Tensor], params), [cast(Tensor, p.grad) for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], steps, lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False,
            )

    def _step_counts(self, params: list[nn.Parameter]) -> Tensor:
        """The vector of ``params``' step counts (their states created at 0 on their first step). Built again,
        from the counts their states hold, when this set of parameters first steps together; a set that shares
        a parameter with it is forgotten, since that parameter's count now lives here."""
        key = tuple(map(id, params))
        counts = self._counts.get(key)
        if counts is None:
            for p in params:
                if p not in self.state:
                    self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                     "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            counts = torch.stack([self.state[p]["step"] for p in params])
            for i, p in enumerate(params):
                self.state[p]["step"] = counts[i]
            self._counts = {k: v for k, v in self._counts.items() if not set(k) & set(key)}
            self._counts[key] = counts
        return counts

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim`` layout: per-parameter state keyed by index, groups with parameter indices."""
        index, groups, state = 0, [], {}
        for g in self.param_groups:
            ids = list(range(index, index + len(g["params"])))
            for i, p in zip(ids, g["params"], strict=True):
                if p in self.state:
                    state[i] = {k: v.clone() for k, v in self.state[p].items()}
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
            index += len(ids)
        return {"state": state, "param_groups": groups, "betas": list(self.betas)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match the parameter groups (a different network?)")
        self.state = {}
        self._counts = {}
        for g, s in zip(self.param_groups, saved, strict=True):
            g.update({k: v for k, v in s.items() if k != "params"})
            for i, p in zip(s["params"], g["params"], strict=True):
                if i in state_dict["state"]:
                    self.state[p] = {k: v.detach().clone().to(p.device) for k, v in state_dict["state"][i].items()}


def adam(param_groups: list[dict[str, Any]]) -> FusedAdam | torch.optim.Adam:
    """Adam for these parameter groups: ``FusedAdam`` where torch has the fused kernel for their device."""
    params = [p for g in param_groups for p in g["params"]]
    if hasattr(torch, "_fused_adam_") and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params):
        return FusedAdam(param_groups)
    return torch.optim.Adam(param_groups, foreach=True)


def load_optimizer_state(
    optimizer: FusedAdam | torch.optim.Optimizer, state: dict[str, Any], legacy_order: list[nn.Parameter] | None = None
) -> None:
    """Load ``state`` (an optimiser's ``state_dict``) into ``optimizer``; the tensors are copied, so later
    steps never update the caller's dict in place.

    ``legacy_order``: the parameters in the order of a checkpoint saved with ONE parameter group (an older
    layout, e.g. MAPPO before it had actor and critic groups); such a state is re-indexed onto today's groups,
    which keep their own hyperparameters (learning rate, eps). Other states load as they are.
    """
    state = {"state": {k: {n: v.detach().clone() for n, v in s.items()} for k, s in state["state"].items()},
             **{k: v for k, v in state.items() if k != "state"}}
    groups = optimizer.param_groups
    if legacy_order is not None and len(state["param_groups"]) == 1 and len(groups) > 1:
        index = {p: i for i, p in enumerate(p for g in groups for p in g["params"])}
        state["state"] = {index[legacy_order[int(i)]]: s for i, s in state["state"].items()}
        state["param_groups"] = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [index[p] for p in g["params"]]} for g in groups
        ]
    optimizer.load_state_dict(state)
