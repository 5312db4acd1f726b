"""``check_action_head``: the contract checks every action head must pass, built-in or third-party.

Like gymnasium's env checker it is a set of small ``check_*`` functions, each failing with a
``HeadCheckError`` (an ``AssertionError``) that names the probable cause. ``check_action_head`` runs them
all; call single checks from your own tests when you need fewer.

    from agentkit.testing import check_action_head
    check_action_head(my_registration, action_space)               # a Registration, default config
    check_action_head(make_my_head, action_space, config=MyConfig(plugin="mine"))

The reference checks compare ``log_prob``/``entropy`` to ``torch.distributions`` built from the parameters a
distribution exposes, by action-space kind (the built-in heads all expose them):

- Discrete: ``dist.logits [B, n]``;  MultiDiscrete: ``dist.branch_logits``, a list of ``[B, n_i]``;
- Box: ``dist.mean``, ``dist.std [B, D]``;
- HybridSpace: ``dist.type_logits [B, K]``, ``dist.mean``, ``dist.std [B, P]``.

A distribution without them skips the reference check with a warning; every other check still runs.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from torch import Tensor
from torch import distributions as D

from agentkit.errors import EmptyMaskError
from agentkit.heads import MASKED_LOGIT, ActionDistribution, ActionHead
from agentkit.spaces import HybridSpace, discrete_branches

KINDS = ("discrete", "multi_discrete", "box", "hybrid")


class HeadCheckError(AssertionError):
    """An action head that breaks the contract; the message says which check and the probable cause."""


def _fail(check: str, message: str) -> None:
    raise HeadCheckError(f"[{check}] {message}")


# -- building and inputs -----------------------------------------------------------------------------------


def build_head(
    head_factory_or_registration: Any, action_space: Any, config: Any = None, latent_dim: int = 16
) -> ActionHead:
    """Build a head from a ``Registration`` (its default config unless ``config``) or a factory + config."""
    factory = getattr(head_factory_or_registration, "factory", head_factory_or_registration)
    if config is None:
        default = getattr(head_factory_or_registration, "default_config", None)
        if default is None:
            raise TypeError("check_action_head: pass a Registration, or a factory together with config=")
        config = default()
    head = factory(config, action_space, latent_dim)
    if not isinstance(head, ActionHead):
        _fail(
            "build", f"the factory returned {type(head).__name__}, not an agentkit.heads.ActionHead subclass"
        )
    return head


def kind_of(action_space: Any) -> str:
    if isinstance(action_space, HybridSpace):
        return "hybrid"
    if isinstance(action_space, spaces.Discrete):
        return "discrete"
    if discrete_branches(action_space) is not None:
        return "multi_discrete"
    if isinstance(action_space, spaces.Box):
        return "box"
    raise TypeError(f"check_action_head has no checks for the action space {action_space}")


def _mask_groups(head: ActionHead, action_space: Any) -> list[int]:
    """Sizes of the mask's independent groups (one per categorical choice)."""
    kind = kind_of(action_space)
    if head.mask_dim == 0:
        return []
    if kind == "multi_discrete":
        return discrete_branches(action_space)[0]
    return [head.mask_dim]


def random_masks(head: ActionHead, action_space: Any, batch: int, gen: torch.Generator) -> Tensor | None:
    """Random bool masks ``[B, mask_dim]`` with at least one allowed entry per group (None without masks)."""
    groups = _mask_groups(head, action_space)
    if not groups:
        return None
    parts = []
    for n in groups:
        density = torch.rand(batch, 1, generator=gen)  # from nearly all masked to nearly all allowed
        part = torch.rand(batch, n, generator=gen) < density
        keep = torch.randint(0, n, (batch,), generator=gen)
        part[torch.arange(batch), keep] = True
        parts.append(part)
    return torch.cat(parts, dim=-1)


def _allowed(action: Tensor, mask: Tensor | None, head: ActionHead, action_space: Any) -> Tensor:
    """Bool ``[B]``: each raw action uses only allowed choices."""
    if mask is None:
        return torch.ones(action.shape[0], dtype=torch.bool)
    kind = kind_of(action_space)
    if kind == "discrete":
        return mask.gather(1, action.long().unsqueeze(1)).squeeze(1)
    if kind == "hybrid":
        return mask.gather(1, action[:, 0].round().long().unsqueeze(1)).squeeze(1)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(discrete_branches(action_space)[0])[:-1]]), dtype=torch.int64)
    return mask.gather(1, action.long() + offsets).all(1)


def _latent(batch: int, latent_dim: int, gen: torch.Generator, scale: float = 1.0) -> Tensor:
    return torch.randn(batch, latent_dim, generator=gen) * scale


# -- references ----------------------------------------------------------------------------------------------


def _masked(logits: Tensor, mask: Tensor | None) -> Tensor:
    return logits if mask is None else torch.where(mask, logits, torch.full_like(logits, MASKED_LOGIT))


def _gaussian_reference(dist: Any, head: ActionHead, x: Tensor, low: np.ndarray, high: np.ndarray):
    """Elementwise (log_prob, entropy) of the parameter Gaussians, with torch.distributions."""
    base = D.Normal(dist.mean, dist.std)
    if not head.action_spec().get("squash"):
        return base.log_prob(x), base.entropy()
    half = torch.as_tensor((high - low) / 2, dtype=x.dtype)
    loc = torch.as_tensor(low, dtype=x.dtype) + half
    squashed = D.TransformedDistribution(base, [D.TanhTransform(cache_size=1), D.AffineTransform(loc, half)])
    y = x
    for transform in squashed.transforms:  # forward through the cached transforms: log_prob inverts exactly
        y = transform(y)
    return squashed.log_prob(y), base.entropy()


def reference_log_prob_entropy(
    dist: ActionDistribution, head: ActionHead, action_space: Any, action: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """(log_prob ``[B]``, entropy ``[B]``) from torch.distributions, or None if ``dist`` exposes no params."""
    kind = kind_of(action_space)
    try:
        if kind == "discrete":
            cat = D.Categorical(logits=_masked(dist.logits, mask))
            return cat.log_prob(action.long()), cat.entropy()
        if kind == "multi_discrete":
            masks = mask.split(discrete_branches(action_space)[0], -1) if mask is not None else None
            lp, ent = 0.0, 0.0
            for i, logits in enumerate(dist.branch_logits):
                cat = D.Categorical(logits=_masked(logits, None if masks is None else masks[i]))
                lp, ent = lp + cat.log_prob(action[:, i].long()), ent + cat.entropy()
            return lp, ent
        if kind == "box":
            lp, ent = _gaussian_reference(dist, head, action, action_space.low, action_space.high)
            return lp.sum(-1), ent.sum(-1)
        cat = D.Categorical(logits=_masked(dist.type_logits, mask))
        k = action[:, 0].round().long()
        lp, ent = _gaussian_reference(dist, head, action[:, 1:], action_space.low, action_space.high)
        owned = torch.as_tensor(action_space.param_mask)
        return (
            cat.log_prob(k) + (lp * owned[k]).sum(-1),
            cat.entropy() + (cat.probs.unsqueeze(-1) * owned * ent.unsqueeze(1)).sum((-2, -1)),
        )
    except AttributeError as exc:
        warnings.warn(
            f"check_action_head: skipped the torch.distributions reference check ({exc}); expose the "
            "parameters listed in agentkit.testing.heads to get it.",
            stacklevel=3,
        )
        return None


# -- the checks --------------------------------------------------------------------------------------------


def check_head_attributes(head: ActionHead, action_space: Any) -> None:
    """mask_dim, noise_dim, action_shape, action_dtype and output_names agree with the space's kind."""
    kind = kind_of(action_space)
    if head.action_space is not action_space and head.action_space != action_space:
        _fail("attributes", "head.action_space is not the space the head was built for; set it in __init__")
    if kind == "discrete":
        expected = ((), torch.int64, ("action",))
    elif kind == "multi_discrete":
        expected = ((len(discrete_branches(action_space)[0]),), torch.int64, ("action",))
    elif kind == "box":
        expected = ((int(np.prod(action_space.shape)),), torch.float32, ("action",))
    else:
        expected = ((1 + action_space.num_params,), torch.float32, ("action_type", "action_params"))
    got = (tuple(head.action_shape), head.action_dtype, tuple(head.output_names))
    if got != expected:
        _fail(
            "attributes",
            f"(action_shape, action_dtype, output_names) = {got}, expected {expected} for a "
            f"{kind} space: the raw-action convention of agentkit.heads is not followed",
        )
    if kind == "box" and head.mask_dim != 0:
        _fail("attributes", f"a Box head takes no mask, but mask_dim = {head.mask_dim}")
    if head.noise_dim <= 0:
        _fail(
            "attributes",
            "noise_dim must be > 0: sample_from_noise needs uniform noise for stochastic exports",
        )


def check_distribution_shapes(
    head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator
) -> None:
    """sample/mode/log_prob/entropy/sample_from_noise give the documented shapes, dtypes, finite values."""
    batch = 7
    dist = head(_latent(batch, latent_dim, gen), random_masks(head, action_space, batch, gen))
    if not isinstance(dist, ActionDistribution):
        _fail("shapes", f"head(latent, mask) returned {type(dist).__name__}, not an ActionDistribution")
    noise = torch.rand(batch, head.noise_dim, generator=gen)
    for name, action in (
        ("sample", dist.sample()),
        ("mode", dist.mode()),
        ("sample_from_noise", dist.sample_from_noise(noise)),
    ):
        if tuple(action.shape) != (batch, *head.action_shape) or action.dtype != head.action_dtype:
            _fail(
                "shapes",
                f"{name}() returned {tuple(action.shape)} {action.dtype}, expected "
                f"{(batch, *head.action_shape)} {head.action_dtype}",
            )
        if action.dtype.is_floating_point and not torch.isfinite(action).all():
            _fail("shapes", f"{name}() returned non-finite values")
        lp = dist.log_prob(action)
        if tuple(lp.shape) != (batch,) or not torch.isfinite(lp).all():
            _fail(
                "shapes",
                f"log_prob({name}()) has shape {tuple(lp.shape)} or non-finite values; expected a "
                "finite [B] (sum over parts and dims)",
            )
    ent = dist.entropy()
    if tuple(ent.shape) != (batch,) or not torch.isfinite(ent).all():
        _fail("shapes", f"entropy() has shape {tuple(ent.shape)} or non-finite values; expected a finite [B]")


def check_reference(
    head: ActionHead,
    action_space: Any,
    latent_dim: int,
    gen: torch.Generator,
    trials: int = 5,
    atol: float = 1e-5,
) -> None:
    """log_prob and entropy equal an independent torch.distributions computation to ``atol``."""
    for _ in range(trials):
        batch = 32
        mask = random_masks(head, action_space, batch, gen)
        dist = head(_latent(batch, latent_dim, gen, scale=3.0), mask)
        for action in (dist.sample(), dist.mode()):
            ref = reference_log_prob_entropy(dist, head, action_space, action, mask)
            if ref is None:
                return
            for name, got, want in (
                ("log_prob", dist.log_prob(action), ref[0]),
                ("entropy", dist.entropy(), ref[1]),
            ):
                # float32 sums of terms of size |want| carry rounding of order 1e-7 * |want|
                diff = (got.detach().double() - want.detach().double()).abs()
                err = (diff / want.detach().double().abs().clamp(min=1.0)).max().item()
                if not err <= atol:
                    _fail(
                        "reference",
                        f"{name} differs from torch.distributions by {err:.3g} (> {atol}, relative above 1). "
                        f"max |value| {want.abs().max().item():.3g}. Probable "
                        "causes: a sum over parts or dims missing (mean instead of sum), a mask not applied, "
                        "masked actions counted in the entropy, or a squashing correction missing.",
                    )


def check_masked_sampling(
    head: ActionHead,
    action_space: Any,
    latent_dim: int,
    gen: torch.Generator,
    trials: int = 50,
    batch: int = 64,
) -> None:
    """Across many random masks, sample(), sample_from_noise() and mode() never pick a masked action,
    and a masked action has probability 0."""
    if head.mask_dim == 0:
        return
    kind = kind_of(action_space)
    for _ in range(trials):
        mask = random_masks(head, action_space, batch, gen)
        dist = head(_latent(batch, latent_dim, gen, scale=3.0), mask)
        noise = torch.rand(batch, head.noise_dim, generator=gen)
        noise[: batch // 4] = 0.0  # the edges of the inverse CDF
        noise[batch // 4 : batch // 2] = 1.0
        for name, action in (
            ("sample", dist.sample()),
            ("mode", dist.mode()),
            ("sample_from_noise", dist.sample_from_noise(noise)),
        ):
            if not _allowed(action, mask, head, action_space).all():
                _fail(
                    "masks",
                    f"{name}() picked a masked action. Probable cause: the mask is not applied to "
                    "the logits this method reads, or the inverse CDF can land on a zero-probability entry.",
                )
        if kind == "discrete":
            for a in range(head.mask_dim):
                rows = ~mask[:, a]
                if rows.any():
                    p = dist.log_prob(torch.full((batch,), a, dtype=torch.int64)).exp()[rows]
                    if p.max().item() != 0.0:
                        _fail(
                            "masks",
                            f"masked action {a} has probability {p.max().item():.3g}, expected exactly 0",
                        )


def check_empty_mask(head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator) -> None:
    """A row (or a branch of a row) that allows nothing raises EmptyMaskError, not NaN."""
    if head.mask_dim == 0:
        return
    mask = random_masks(head, action_space, 4, gen)
    start = 0
    for n in _mask_groups(head, action_space):
        bad = mask.clone()
        bad[2, start : start + n] = False
        start += n
        try:
            dist = head(_latent(4, latent_dim, gen), bad)
            dist.sample()
        except EmptyMaskError as exc:
            if 2 not in getattr(exc, "rows", [2]):
                _fail("empty mask", f"EmptyMaskError names rows {exc.rows}, but row 2 was the empty one")
            continue
        _fail(
            "empty mask",
            "a mask row that allows nothing did not raise agentkit.errors.EmptyMaskError "
            "(agentkit.heads.masked_logits / check_mask_rows raise it)",
        )


def check_extreme_gradients(
    head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator
) -> None:
    """Gradients of log_prob and entropy stay finite with huge logits/means and random masks."""
    extreme = copy.deepcopy(head)
    with torch.no_grad():
        for p in extreme.parameters():
            p.mul_(1e3)
    batch = 64
    mask = random_masks(extreme, action_space, batch, gen)
    latent = _latent(batch, latent_dim, gen, scale=1e2).requires_grad_(True)
    dist = extreme(latent, mask)
    loss = dist.log_prob(dist.sample()).sum() + dist.entropy().sum() + dist.log_prob(dist.mode()).sum()
    if not torch.isfinite(loss):
        _fail(
            "gradients",
            f"log_prob/entropy are not finite with extreme logits (loss = {loss.item()}). Probable "
            "cause: -inf used for masked logits, or log(0) in the entropy; use agentkit.heads.MASKED_LOGIT.",
        )
    loss.backward()
    grads = [("latent", latent.grad)] + [(n, p.grad) for n, p in extreme.named_parameters()]
    for name, g in grads:
        if g is not None and not torch.isfinite(g).all():
            _fail(
                "gradients",
                f"the gradient of {name} is not finite with extreme logits and masks. Probable "
                "cause: 0 * inf in a masked entropy term (use torch.where, not a product), or -inf logits.",
            )


def check_mode(head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator) -> None:
    """mode() is deterministic, repeats for the same input, and is the most likely allowed choice."""
    batch = 32
    mask = random_masks(head, action_space, batch, gen)
    latent = _latent(batch, latent_dim, gen, scale=3.0)
    first, second = head(latent, mask).mode(), head(latent, mask).mode()
    if not torch.equal(first, second):
        _fail("mode", "mode() differs between two calls with the same input: it must not sample")
    dist = head(latent, mask)
    kind = kind_of(action_space)
    if kind in ("discrete", "hybrid") and hasattr(dist, "logits" if kind == "discrete" else "type_logits"):
        logits = dist.logits if kind == "discrete" else dist.type_logits
        best = _masked(logits, mask).argmax(-1)
        k = first if kind == "discrete" else first[:, 0].round().long()
        if not torch.equal(k, best):
            _fail("mode", "mode() is not the most likely allowed action")
    if kind in ("box", "hybrid") and hasattr(dist, "mean"):
        x = first if kind == "box" else first[:, 1:]
        if kind == "box":
            want = dist.mean
        else:
            owned = torch.as_tensor(action_space.param_mask)[first[:, 0].round().long()] > 0.5
            want = torch.where(owned, dist.mean, torch.zeros_like(x))
        if not torch.allclose(x, want):
            _fail("mode", "mode() of a Gaussian is not its mean (raw, before clipping or squashing)")


def check_sample_from_noise(
    head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator, draws: int = 4000
) -> None:
    """The same noise gives the same action, and noise-driven samples follow the distribution."""
    batch = 8
    mask = random_masks(head, action_space, batch, gen)
    dist = head(_latent(batch, latent_dim, gen, scale=2.0), mask)
    noise = torch.rand(batch, head.noise_dim, generator=gen)
    if not torch.equal(dist.sample_from_noise(noise), dist.sample_from_noise(noise.clone())):
        _fail("noise", "sample_from_noise gave two different actions for the same noise (an RNG op inside?)")
    # one row repeated: empirical frequencies / moments against the distribution's own log_prob or params
    row = _latent(1, latent_dim, gen, scale=2.0).expand(draws, -1)
    row_mask = None if mask is None else mask[:1].expand(draws, -1)
    dist = head(row, row_mask)
    kind = kind_of(action_space)
    for name, action in (
        ("sample", dist.sample()),
        ("sample_from_noise", dist.sample_from_noise(torch.rand(draws, head.noise_dim, generator=gen))),
    ):
        action = action.detach()
        if kind in ("discrete", "multi_discrete", "hybrid"):
            cols = (
                [action.long()]
                if kind == "discrete"
                else ([action[:, 0].round().long()] if kind == "hybrid" else list(action.long().unbind(-1)))
            )
            for i, col in enumerate(cols):
                n = int(col.max().item()) + 1
                freq = torch.bincount(col, minlength=n).double() / draws
                if kind == "discrete":
                    probs = (
                        torch.stack(
                            [
                                dist.log_prob(torch.full((draws,), a, dtype=torch.int64))[0].exp()
                                for a in range(n)
                            ]
                        )
                        .double()
                        .detach()
                    )
                elif kind == "hybrid":
                    probs = (
                        torch.softmax(
                            _masked(dist.type_logits[:1], row_mask[:1] if row_mask is not None else None), -1
                        )[0, :n]
                        .double()
                        .detach()
                    )
                elif hasattr(dist, "branch_logits"):
                    m = (
                        None
                        if row_mask is None
                        else row_mask[:1].split(discrete_branches(action_space)[0], -1)[i]
                    )
                    probs = torch.softmax(_masked(dist.branch_logits[i][:1], m), -1)[0, :n].double().detach()
                else:
                    continue
                err = (freq - probs).abs().max().item()
                if err > 0.05:
                    _fail(
                        "noise",
                        f"{name}() frequencies differ from the probabilities by {err:.3f}: the sampler does "
                        "not follow the distribution (an off-by-one in the inverse CDF?)",
                    )
        if kind in ("box", "hybrid") and hasattr(dist, "mean"):
            x = action if kind == "box" else action[:, 1:]
            active = torch.ones_like(x, dtype=torch.bool) if kind == "box" else x != 0
            for j in range(x.shape[1]):
                col = x[active[:, j], j]
                if col.numel() < 200:
                    continue
                mean, std = dist.mean[0, j].item(), dist.std[0, j].item()
                z = (col.mean().item() - mean) / (std / math.sqrt(col.numel()))
                ratio = col.std().item() / std
                if abs(z) > 5 or not 0.9 < ratio < 1.1:
                    _fail(
                        "noise",
                        f"{name}() parameter {j} has mean z-score {z:.2f} and std ratio {ratio:.3f}: "
                        "not distributed as N(mean, std) (a wrong Box–Muller transform?)",
                    )


def check_inactive_param_gradient(
    head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator
) -> None:
    """Hybrid: inactive parameters are 0 in every raw action and env output, and the gradient of log_prob
    with respect to an inactive parameter's mean is exactly zero."""
    if kind_of(action_space) != "hybrid":
        return
    batch = 64
    owned = torch.as_tensor(action_space.param_mask) > 0.5
    mask = random_masks(head, action_space, batch, gen)
    dist = head(_latent(batch, latent_dim, gen, scale=2.0), mask)
    noise = torch.rand(batch, head.noise_dim, generator=gen)
    for name, action in (
        ("sample", dist.sample()),
        ("mode", dist.mode()),
        ("sample_from_noise", dist.sample_from_noise(noise)),
    ):
        action = action.detach()
        inactive = ~owned[action[:, 0].round().long()]
        if (action[:, 1:][inactive] != 0).any():
            _fail("hybrid", f"{name}() returned a non-zero inactive parameter; inactive parameters must be 0")
        params = head.env_outputs(action)["action_params"]
        if (params[inactive] != 0).any():
            _fail("hybrid", "env_outputs()['action_params'] has a non-zero inactive parameter")
    if not hasattr(dist, "mean"):
        return
    # actions with junk in the inactive slots: the log-prob must ignore them entirely
    action = dist.sample().detach()
    action[:, 1:] = torch.randn_like(action[:, 1:]) * 10
    inactive = ~owned[action[:, 0].round().long()]
    (grad,) = torch.autograd.grad(dist.log_prob(action).sum(), dist.mean, retain_graph=True)
    if (grad[inactive] != 0).any():
        _fail(
            "hybrid",
            "the gradient of log_prob w.r.t. an inactive parameter's mean is not exactly zero. "
            "Probable cause: all parameters summed, or a product with the mask where a torch.where belongs.",
        )


def check_env_outputs(head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator) -> None:
    """env_outputs names, dtypes and bounds; to_env gives a batch the gymnasium vector space contains."""
    batch = 16
    kind = kind_of(action_space)
    dist = head(_latent(batch, latent_dim, gen, scale=3.0), random_masks(head, action_space, batch, gen))
    action = dist.sample().detach()
    if kind in ("box", "hybrid"):
        action[: batch // 2, -1] = (
            1e3 if kind == "box" else action[: batch // 2, -1] * 1e3
        )  # far out of bounds
    outputs = head.env_outputs(action)
    if tuple(outputs) != tuple(head.output_names):
        _fail(
            "env outputs",
            f"env_outputs returned {tuple(outputs)}, expected head.output_names {head.output_names}",
        )
    dtypes = {
        "action": torch.float32 if kind == "box" else torch.int64,
        "action_type": torch.int64,
        "action_params": torch.float32,
    }
    for name, value in outputs.items():
        if value.dtype != dtypes[name] or value.shape[0] != batch:
            _fail(
                "env outputs",
                f"env_outputs()[{name!r}] is {value.dtype} {tuple(value.shape)}, expected "
                f"{dtypes[name]} with batch {batch}",
            )
    env_action = head.to_env({k: v.detach().numpy() for k, v in outputs.items()})
    if kind == "hybrid":
        # inactive parameters are 0 by contract even where 0 lies outside their bounds: check the active ones
        types, params = env_action
        owned = action_space.param_mask[np.asarray(types)] > 0.5 if np.ndim(types) == 1 else None
        inside = (
            owned is not None
            and params.dtype == np.float32
            and params.shape == (batch, action_space.num_params)
        )
        inside = inside and bool(
            np.all((params >= action_space.low) & (params <= action_space.high) | ~owned)
        )
        if not (batch_space(action_space.spaces[0], batch).contains(np.asarray(types)) and inside):
            _fail(
                "env outputs",
                f"to_env() returned {env_action!r}: expected (types int64 [B], params float32 "
                "[B, P]) with active parameters inside their bounds",
            )
    elif not batch_space(action_space, batch).contains(env_action):
        _fail(
            "env outputs",
            f"to_env() returned {env_action!r}, which the batched action space of {action_space} "
            "does not contain (clipping to bounds, dtype or start offset missing?)",
        )


def check_choose(head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator) -> None:
    """``choose`` picks what the distribution picks and returns exactly ``env_outputs`` of it (the rollout,
    eval and the ONNX graph act through ``choose``; stored actions are mapped with ``env_outputs``)."""
    batch = 16
    with torch.no_grad():
        dist = head(_latent(batch, latent_dim, gen, scale=3.0), random_masks(head, action_space, batch, gen))
        noise = torch.rand(batch, head.noise_dim, generator=gen)
        cases = [("deterministic=True", head.choose(dist, deterministic=True), dist.mode())]
        if head.noise_dim:
            cases.append(("noise=...", head.choose(dist, noise=noise), dist.sample_from_noise(noise)))
        cases.append(("no argument (a sample)", head.choose(dist), None))  # random: only its outputs compare
    for how, (raw, outputs), want in cases:
        if want is not None and (raw.dtype != want.dtype or not torch.equal(raw, want)):
            _fail("choose", f"choose({how}) returned a raw action other than the distribution's own pick")
        expected = head.env_outputs(raw)
        if tuple(outputs) != tuple(expected) or not all(
            outputs[k].dtype == expected[k].dtype and torch.equal(outputs[k], expected[k]) for k in expected
        ):
            _fail("choose", f"choose({how}) outputs differ from env_outputs(raw) of the same raw action")


def _same_outputs(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return tuple(a) == tuple(b) and all(
        a[k].dtype == b[k].dtype and (torch.equal(a[k], b[k]) if not a[k].is_floating_point()
                                      else torch.allclose(a[k], b[k], atol=1e-5)) for k in b)


def check_relax(head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator) -> None:
    """``relax`` and ``encode``, the relaxed action deterministic policy gradients (MADDPG) train through, when
    the head offers them (``encoding_dim`` > 0): greedy, its env outputs are those of ``mode()``; exploring, it
    picks allowed choices only, ``encode(raw)`` equals its encoding, and the encoding carries finite gradient
    to the head's layers."""
    if head.encoding_dim <= 0:
        return
    batch = 64
    latent = _latent(batch, latent_dim, gen, scale=3.0)
    mask = random_masks(head, action_space, batch, gen)
    with torch.no_grad():
        dist = head(latent, mask)
        greedy = head.relax(dist)
        if not _same_outputs(head.env_outputs(greedy.raw), head.env_outputs(dist.mode())):
            _fail("relax", "env_outputs(relax(dist).raw) differs from env_outputs(dist.mode()): greedy and without "
                  "noise, the relaxed action must be the mode (eval and export play the mode)")
    head.zero_grad(set_to_none=True)
    act = head.relax(head(latent, mask), explore=True, temperature=0.7, noise_std=0.5, generator=gen)
    if act.encoding.shape != (batch, head.encoding_dim) or not act.encoding.is_floating_point():
        _fail("relax", f"relax(...).encoding has shape {tuple(act.encoding.shape)} {act.encoding.dtype}, expected "
              f"float [{batch}, encoding_dim={head.encoding_dim}]")
    if act.params.ndim != 2 or act.params.shape[0] != batch:
        _fail("relax", f"relax(...).params has shape {tuple(act.params.shape)}, expected [{batch}, k]")
    if not bool(_allowed(act.raw, mask, head, action_space).all()):
        _fail("relax", "relax(dist, explore=True) picked a masked choice")
    encoded = head.encode(act.raw)
    if encoded.shape != act.encoding.shape or not torch.allclose(encoded, act.encoding.detach(), atol=1e-4):
        _fail("relax", "encode(relax(dist).raw) differs from relax(dist).encoding: the critic must see the same "
              "action in the replay buffer as in the policy gradient")
    if not act.encoding.requires_grad:
        _fail("relax", "relax(...).encoding carries no gradient to the head's layers: it must be differentiable")
    (act.encoding * torch.randn(act.encoding.shape, generator=gen)).sum().backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        _fail("relax", "relax(...).encoding gives non-finite gradients (a masked logit of -inf?)")
    head.zero_grad(set_to_none=True)


def check_action_spec(head: ActionHead, action_space: Any) -> None:
    """action_spec() is strict JSON with the documented kind, mask_dim and noise_dim."""
    spec = head.action_spec()
    try:
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _fail("action spec", f"action_spec() is not strict JSON ({exc}); use null for infinite bounds")
    if spec.get("kind") != kind_of(action_space):
        _fail(
            "action spec", f"action_spec()['kind'] = {spec.get('kind')!r}, expected {kind_of(action_space)!r}"
        )
    for key in ("mask_dim", "noise_dim"):
        if spec.get(key) != getattr(head, key):
            _fail(
                "action spec",
                f"action_spec()[{key!r}] = {spec.get(key)!r} but head.{key} = {getattr(head, key)}",
            )
    if spec["kind"] == "hybrid" and "types" not in spec:
        _fail(
            "action spec",
            "a hybrid action_spec() must carry the type→params mapping (HybridSpace.describe())",
        )


class _ExportWrapper(torch.nn.Module):
    def __init__(self, head: ActionHead, stochastic: bool):
        super().__init__()
        self.head, self.stochastic = head, stochastic

    def forward(self, latent: Tensor, mask: Tensor, noise: Tensor):
        dist = self.head(latent, mask if self.head.mask_dim else None)
        if self.stochastic:
            _, outputs = self.head.choose(dist, noise=noise)
        else:
            _, outputs = self.head.choose(dist, deterministic=True)
        return tuple(outputs[name] for name in self.head.output_names)


def check_onnx_traceable(
    head: ActionHead, action_space: Any, latent_dim: int, gen: torch.Generator, opset: int = 17
) -> None:
    """``choose`` (the mode, and a sample from noise) traces with ``torch.onnx.export(dynamo=False)`` and
    gives the same outputs in onnxruntime at another batch size, masks included."""
    import onnxruntime as ort

    head = head.eval()

    def inputs(batch: int) -> tuple[Tensor, Tensor, Tensor]:
        mask = random_masks(head, action_space, batch, gen)
        mask = torch.ones(batch, max(head.mask_dim, 1)) if mask is None else mask.float()
        return (
            _latent(batch, latent_dim, gen, scale=3.0),
            mask,
            torch.rand(batch, head.noise_dim, generator=gen),
        )

    for stochastic in (False, True):
        wrapper = _ExportWrapper(head, stochastic)
        buffer = io.BytesIO()
        names = ["latent", "action_mask", "noise"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                inputs(4),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=list(head.output_names),
                dynamic_axes={n: {0: "batch"} for n in [*names, *head.output_names]},
            )
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        feeds = inputs(11)
        used = {i.name for i in session.get_inputs()}
        got = session.run(None, {n: t.numpy() for n, t in zip(names, feeds, strict=True) if n in used})
        with torch.no_grad():
            want = wrapper(*feeds)
        for name, g, w in zip(head.output_names, got, want, strict=True):
            w = w.numpy()
            same = np.array_equal(g, w) if w.dtype.kind == "i" else np.allclose(g, w, atol=1e-5)
            if g.dtype != w.dtype or not same:
                _fail(
                    "onnx",
                    f"choose({'noise=...' if stochastic else 'deterministic=True'}): onnxruntime output "
                    f"{name!r} differs from torch ({g.dtype} vs {w.dtype}). Probable cause: Python control "
                    "flow on tensor values, an RNG op, or a shape frozen during tracing.",
                )


ALL_CHECKS: tuple[Callable[..., None], ...] = (
    check_distribution_shapes,
    check_reference,
    check_masked_sampling,
    check_empty_mask,
    check_extreme_gradients,
    check_mode,
    check_sample_from_noise,
    check_inactive_param_gradient,
    check_env_outputs,
    check_choose,
    check_relax,
)


def check_action_head(
    head_factory_or_registration: Any,
    action_space: Any,
    config: Any = None,
    *,
    latent_dim: int = 16,
    seed: int = 0,
    onnx: bool = True,
) -> ActionHead:
    """Build the head and run every contract check on it; return the head.

    ``head_factory_or_registration``: a ``Registration`` (from ``PluginHost().registry``) or a head factory
    ``factory(config, action_space, latent_dim)`` given with ``config``. ``onnx=False`` skips the (slower)
    ONNX trace check. Raises ``HeadCheckError`` naming the failed check and its probable cause.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = build_head(head_factory_or_registration, action_space, config, latent_dim)
    check_head_attributes(head, action_space)
    check_action_spec(head, action_space)
    for check in ALL_CHECKS:
        check(head, action_space, latent_dim, gen)
    if onnx:
        check_onnx_traceable(head, action_space, latent_dim, gen)
    return head
