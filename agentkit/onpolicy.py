"""The on-policy core PPO, MAPPO and IPPO share: policy groups, one collector, one update.

A **policy group** (``PolicyGroup``) is the unit that learns: an actor and a critic, their normalisers, an
optimiser and a ``RolloutStorage`` with a ``(N, A)`` batch (N env copies, A agents of the group). A
single-agent env is one group of one agent (``SingleAgentEnv`` gives its vector env the multi-agent shape).
One rule each, for every algorithm:

- **masks**: an env that gives action masks to a head that takes none is refused (``ConfigError``), as is a
  mask of another width; a head that takes masks gets the env's every step (``PolicyGroup.mask``).
- **device**: networks, storage and normalisers live on ``BuildContext.device`` (``run.device``,
  ``agentkit.algorithm.resolve_device``); the env's numpy arrays go there and actions come back to the CPU.
- **seeding**: the trainer alone seeds and saves the global RNGs (``agentkit.seeding``); an algorithm owns a
  ``torch.Generator`` for minibatch order, and a resumed run's envs reset from ``resume_seed``.

``Collector.collect`` fills every group's storage with one rollout (the truncation bootstrap is here, once)
and computes GAE; ``PolicyGroup.learn`` runs ``ppo_update`` on the group's valid entries. The optimiser
utilities are in ``agentkit.optim``, the running moments every normaliser folds in with in
``agentkit.moments``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from agentkit.algorithm import PolicyArtifact, TrainingEnv
from agentkit.config import AlgorithmConfig
from agentkit.environment import (
    GroupSpec,
    MultiAgentTransition,
    Observation,
    Transition,
    VecEnv,
)
from agentkit.errors import ConfigError
from agentkit.moments import merge_moments
from agentkit.optim import FusedAdam, adam, clip_grad_norm, load_optimizer_state
from agentkit.policy import Actor, Critic
from agentkit.runlog import EndedEpisodes
from agentkit.storage import Batch, ObsPacking, RolloutStorage, torch_dtype, unpacked

# -- the options PPO and MAPPO share (one spelling each) ---------------------------------------------------


class OnPolicyConfig(AlgorithmConfig):
    """The options of the on-policy update every PPO-family algorithm shares, spelled one way.

    Defaults are CleanRL's classic-control settings with SB3's value loss; ``mappo`` overrides some with the
    MAPPO paper's reference values.
    """

    num_steps: int = Field(128, ge=1, description="Vector steps per env copy per rollout (SB3's n_steps).")
    update_epochs: int = Field(10, ge=1, description="Passes over the rollout per iteration.")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    objective: Literal["clip", "kl_penalty"] = Field(
        "clip", description="clip: clipped surrogate; kl_penalty: surrogate - beta*KL with adaptive beta."
    )
    clip_range: float = Field(0.2, gt=0, description="Surrogate clip range epsilon.")
    clip_schedule: Literal["constant", "linear"] = Field("constant", description="linear: decays to 0.")
    kl_beta: float = Field(1.0, gt=0, description="Initial KL-penalty coefficient (objective: kl_penalty).")
    kl_target: float = Field(0.01, gt=0, description="KL the adaptive beta aims for (objective: kl_penalty).")
    target_kl: float | None = Field(
        None, gt=0, description="Stop the epoch loop once a minibatch's approx KL exceeds 1.5 * target_kl."
    )
    normalize_advantages: bool = Field(True, description="Normalise advantages per minibatch.")
    value_clip_range: float | None = Field(
        None, gt=0, description="Clip the value update to ±this around the old value (null: no clipping)."
    )
    value_loss: Literal["mse", "huber"] = Field("mse", description="Value loss shape (huber: with huber_delta).")
    huber_delta: float = Field(10.0, gt=0, description="Huber loss threshold (value_loss: huber).")
    normalize_value: bool = Field(False, description="Critic learns normalised returns (running mean/std).")
    popart: bool = Field(False, description="With normalize_value: rescale the value output to preserve it.")
    normalize_reward: bool = Field(False, description="Scale rewards by the running std of discounted returns.")
    reward_clip: float = Field(10.0, gt=0, description="Scaled rewards are clipped to ±reward_clip.")
    vf_coef: float = Field(0.5, ge=0, description="Value loss coefficient.")
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient (start value).")
    ent_coef_final: float | None = Field(
        None, ge=0, description="If set, the entropy coefficient moves linearly to this by the end."
    )
    max_grad_norm: float | None = Field(0.5, gt=0, description="Clip the global gradient norm (null: off).")
    learning_rate: float = Field(3e-4, gt=0, description="Adam learning rate of every parameter group.")
    lr_schedule: Literal["constant", "linear"] = Field("constant", description="linear: decays to 0.")
    actor_lr: float | None = Field(None, gt=0, description="Actor learning rate (default learning_rate).")
    critic_lr: float | None = Field(None, gt=0, description="Critic learning rate (default learning_rate).")
    shared_lr: float | None = Field(None, gt=0, description="Shared trunk learning rate (default learning_rate).")
    adam_eps: float = Field(1e-5, gt=0, description="Adam epsilon of every parameter group.")
    actor_eps: float | None = Field(None, gt=0, description="Actor Adam epsilon (default adam_eps).")
    critic_eps: float | None = Field(None, gt=0, description="Critic Adam epsilon (default adam_eps).")
    shared_eps: float | None = Field(None, gt=0, description="Shared trunk Adam epsilon (default adam_eps).")

    @model_validator(mode="after")
    def _check_popart(self) -> OnPolicyConfig:
        if self.popart and not self.normalize_value:
            raise ValueError("popart: true needs normalize_value: true")
        return self

    def minibatch_for(self, batch_size: int) -> int:
        """Entries per minibatch for a batch of ``batch_size`` valid entries (each algorithm's own rule)."""
        raise NotImplementedError


# -- running statistics -------------------------------------------------------------------------------------


class ValueNormalizer(nn.Module):
    """Running mean/std of value targets; the critic learns ``(return - mean) / std``.

    With ``popart_layer`` (the critic's output layer), every stats update rescales that layer so that its
    denormalised outputs are unchanged (PopArt's "preserving outputs precisely").
    """

    mean: Tensor  # buffers (register_buffer)
    var: Tensor
    count: Tensor

    def __init__(self, popart_layer: nn.Linear | None = None, eps: float = 1e-5):
        super().__init__()
        self.popart_layer = popart_layer
        self.eps = eps
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def std(self) -> Tensor:
        return torch.sqrt(self.var + self.eps)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        old_mean, old_std = self.mean.clone(), self.std()
        x = x.double().reshape(-1)
        mean, var, count = merge_moments(self.mean, self.var, self.count, x.mean(), x.var(unbiased=False), x.numel())
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)
        if self.popart_layer is not None:
            new_std = self.std()
            w, b = self.popart_layer.weight, self.popart_layer.bias
            w.mul_((old_std / new_std).to(w.dtype))
            b.copy_(((old_std * b.double() + old_mean - self.mean) / new_std).to(b.dtype))

    def normalize(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std()).to(x.dtype)

    def denormalize(self, x: Tensor) -> Tensor:
        return (x * self.std() + self.mean).to(x.dtype)


class RewardScaler:
    """Divides rewards by the running std of each env copy's (and agent's) discounted return (SB3
    VecNormalize-style); ``shape`` is the reward array's, ``[N]`` or ``[N, A]``."""

    def __init__(self, shape: tuple[int, ...], gamma: float, clip: float, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.ret = np.zeros(shape, dtype=np.float64)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + reward
        self.mean, self.var, self.count = merge_moments(
            self.mean, self.var, self.count, float(self.ret.mean()), float(self.ret.var()), self.ret.size)
        self.ret[done] = 0.0
        return np.clip(reward / math.sqrt(self.var + self.eps), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
        self.ret[:] = 0.0


# -- the update ------------------------------------------------------------------------------------------------


@dataclass
class UpdateSettings:
    """The knobs of one ``ppo_update`` call (schedules already applied)."""

    clip_range: float
    update_epochs: int
    minibatch_size: int
    vf_coef: float
    ent_coef: float
    value_clip_range: float | None = None
    max_grad_norm: float | None = 0.5
    normalize_advantages: bool = True
    objective: str = "clip"  # or "kl_penalty"
    kl_beta: float = 1.0
    target_kl: float | None = None
    adv_eps: float = 1e-8
    value_loss: str = "mse"  # or "huber", with huber_delta
    huber_delta: float = 10.0


def value_error(err: Tensor, hp: UpdateSettings) -> Tensor:
    """Element-wise value loss of an error: ``err**2`` (mse) or Huber with ``hp.huber_delta``."""
    if hp.value_loss == "huber":
        return nn.functional.huber_loss(err, torch.zeros_like(err), reduction="none", delta=hp.huber_delta)
    return err.square()


#: evaluate(minibatch) -> (log-prob [B] of mb.actions under mb.masks, entropy [B], value [B]); the value in
#: normalised units when a ValueNormalizer is passed to ``ppo_update``.
Evaluate = Callable[[Batch], tuple[Tensor, Tensor, Tensor]]


def ppo_update(
    batch: Batch,
    evaluate: Evaluate,
    optimizer: FusedAdam | torch.optim.Optimizer,
    params: list[nn.Parameter],
    hp: UpdateSettings,
    generator: torch.Generator | None = None,
    value_norm: ValueNormalizer | None = None,
) -> dict[str, float]:
    """Epochs of minibatch PPO updates on a flattened batch; returns the ``losses/*`` metrics (means over the
    minibatches run) and ``charts/update_epochs`` (fewer than ``hp.update_epochs`` after a target-KL stop).

    ``batch.values``/``batch.returns`` are in env units; with ``value_norm`` its stats are updated with the
    returns first, and both are normalised for the value loss.
    """
    if value_norm is not None:
        value_norm.update(batch.returns)
        batch = replace(batch, returns=value_norm.normalize(batch.returns), values=value_norm.normalize(batch.values))
    whole = hp.minibatch_size >= len(batch)  # one minibatch: the same entries every epoch
    if whole and hp.normalize_advantages and len(batch) > 1:  # so their normalised advantages too
        adv = batch.advantages
        batch = replace(batch, advantages=(adv - adv.mean()) / (adv.std() + hp.adv_eps))
    # the clipped surrogate's per-entry terms (``clipped_surrogate``), made once when every epoch sees the same entries
    whole_terms = clipped_surrogate(batch.advantages, hp.clip_range) if whole and hp.objective == "clip" else None
    # per minibatch run, detached: (policy, value, entropy) losses and the log-ratios, reduced once at the end
    # (the KL and clip-fraction figures cost no ops per minibatch unless target_kl needs them)
    losses: list[Tensor] = []
    logratios: list[Tensor] = []
    epochs_done = 0
    stop = False
    for _ in range(hp.update_epochs):
        for mb in batch.minibatches(hp.minibatch_size, generator):
            new_logprob, entropy, new_value = evaluate(mb)
            logratio = new_logprob - mb.logprobs
            ratio = logratio.exp()
            if hp.target_kl is not None:
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # k3 estimator of KL(old || new)
                if float(approx_kl) > 1.5 * hp.target_kl:
                    stop = True
                    break

            adv = mb.advantages
            if hp.normalize_advantages and adv.numel() > 1 and not whole:
                adv = (adv - adv.mean()) / (adv.std() + hp.adv_eps)

            if hp.objective == "clip":  # -min(A r, A clip(r)) = -A clamp(r, low, high)
                neg_adv, low, high = whole_terms if whole_terms is not None else clipped_surrogate(adv, hp.clip_range)
                pg_loss = (neg_adv * ratio.clamp(low, high)).mean()
            else:  # KL-penalised surrogate (PPO paper, section 4), with a differentiable k3 KL estimate
                pg_loss = -(adv * ratio).mean() + hp.kl_beta * ((ratio - 1) - logratio).mean()

            if hp.value_clip_range is None and hp.value_loss == "mse":  # one op and one backward node, not three
                v_loss = nn.functional.mse_loss(new_value, mb.returns)
            elif hp.value_clip_range is None:
                v_loss = value_error(new_value - mb.returns, hp).mean()
            else:
                v_clipped = mb.values + torch.clamp(new_value - mb.values, -hp.value_clip_range, hp.value_clip_range)
                v_loss = torch.max(value_error(new_value - mb.returns, hp), value_error(v_clipped - mb.returns, hp)).mean()

            entropy_loss = entropy.mean()
            if hp.ent_coef:
                loss = pg_loss - hp.ent_coef * entropy_loss + hp.vf_coef * v_loss
            else:  # a zero bonus adds nothing: its backward pass is skipped
                loss = torch.add(pg_loss, v_loss, alpha=hp.vf_coef)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.max_grad_norm is not None:
                clip_grad_norm(params, hp.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                losses.append(torch.stack([pg_loss, v_loss, entropy_loss]))
                logratios.append(logratio.detach())
        if stop:
            break
        epochs_done += 1
    policy = value = entropy_mean = kl = clipfrac = 0.0
    if losses:
        with torch.no_grad():
            policy, value, entropy_mean = torch.stack(losses).mean(0).tolist()
            sizes = [len(r) for r in logratios]
            r = torch.cat(logratios)
            # each minibatch's mean, averaged over the minibatches: a weight of 1 / (its size * their number)
            weight = (1.0 / (sizes[0] * len(sizes)) if len(set(sizes)) == 1 else
                      torch.repeat_interleave(torch.tensor([1.0 / (n * len(sizes)) for n in sizes]), torch.tensor(sizes))
                      .to(r.device))
            ratio = r.exp()
            kl = float((((ratio - 1) - r) * weight).sum())
            clipfrac = float((((ratio - 1.0).abs() > hp.clip_range).float() * weight).sum())
    return {
        "losses/policy": policy,
        "losses/value": value,
        "losses/entropy": entropy_mean,
        "losses/approx_kl": kl,
        "losses/clip_fraction": clipfrac,
        "charts/update_epochs": float(epochs_done),
    }


def clipped_surrogate(adv: Tensor, clip_range: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(-A, low, high)`` per entry, such that PPO's clipped loss ``-min(A r, A clip(r, 1-e, 1+e))`` is
    ``-A clamp(r, low, high)``: ``(low, high)`` is ``(-inf, 1+e)`` where A >= 0 (the min caps r at 1+e) and
    ``(1-e, inf)`` where A < 0 (it floors r at 1-e). The same value and gradient in a clamp and a product
    instead of two products, a clamp, a min and a negation: for a small network, most of the surrogate's cost
    is one dispatch per op, forward and backward."""
    up = adv >= 0
    inf = torch.full_like(adv, math.inf)
    return -adv, torch.where(up, -inf, 1 - clip_range), torch.where(up, 1 + clip_range, inf)


def linear_schedule(start: float, final: float | None, progress: float) -> float:
    """``start`` moved linearly to ``final`` as ``progress`` goes from 0 to 1 (and held after); ``start``
    throughout when ``final`` is None."""
    return start if final is None else start + (final - start) * min(progress, 1.0)


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] (NaN when the returns do not vary)."""
    var = returns.var()
    return float("nan") if float(var) == 0.0 else float(1 - (returns - values).var() / var)


@dataclass
class Schedule:
    """One iteration's scheduled values (``schedule``): the surrogate clip range and the entropy coefficient
    (the learning rates are set on the optimisers)."""

    clip_range: float
    ent_coef: float


def schedule(cfg: OnPolicyConfig, progress: float, groups: Sequence[PolicyGroup]) -> Schedule:
    """Apply ``cfg``'s schedules at ``progress`` (0 → 1 over ``total_steps``): each optimiser parameter
    group's learning rate, each head's progress; return the clip range and entropy coefficient."""
    remaining = max(1.0 - progress, 0.0)
    for group in groups:
        for g in group.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * (remaining if cfg.lr_schedule == "linear" else 1.0)
        group.actor.head.set_progress(min(progress, 1.0))
    clip = max(cfg.clip_range * (remaining if cfg.clip_schedule == "linear" else 1.0), 1e-8)
    return Schedule(clip, linear_schedule(cfg.ent_coef, cfg.ent_coef_final, progress))


# -- the policy group ------------------------------------------------------------------------------------------

CriticInput = Literal["obs", "state", "agent_specific"]


class PolicyGroup:
    """One trained policy: an actor and critic over the agents ``slots`` of an env group (all of them when
    parameters are shared; one with ``share_parameters: false``), with its normalisers, optimiser and storage.

    Shapes: the group's arrays are ``[N, A, ...]`` with ``A = len(slots)``. ``critic_input`` says what the
    critic reads: ``obs`` (the actor's input: PPO, IPPO), ``state`` (the env's global state) or
    ``agent_specific`` (state ⊕ own flat obs). ``id_dim`` > 0 appends a one-hot agent index to both inputs.
    ``check_storage(group, storage_args)`` runs before the storage is allocated (``agentkit.storage.ensure_fits``:
    a run too big for the memory is refused, exit 2, before it takes any).
    """

    def __init__(
        self,
        name: str,
        spec: GroupSpec,
        slots: list[int],
        actor: Actor,
        critic: Critic,
        cfg: OnPolicyConfig,
        *,
        num_envs: int,
        device: torch.device,
        critic_input: CriticInput = "obs",
        critic_dim: int = 0,
        env_masks: bool = False,
        check_storage: Callable[[PolicyGroup, dict[str, Any]], None] | None = None,
    ):
        self.name, self.spec, self.slots, self.cfg = name, spec, list(slots), cfg
        self.agents = [spec.agents[i] for i in self.slots]
        id_dim = actor.id_dim  # the actor's agent ids, which the critic reads too
        self.num_envs, self.device, self.id_dim, self.critic_input = num_envs, device, id_dim, critic_input
        self.actor = actor.to(device)
        self.critic = critic.to(device)
        self.head = actor.head
        self.shared = critic.encoder is actor.encoder
        self.use_mask = _mask_rule(spec, self.head, env_masks)
        self._slots_all = self.slots == list(range(len(spec.agents)))

        lr = lambda x: x if x is not None else cfg.learning_rate  # noqa: E731
        eps = lambda x: x if x is not None else cfg.adam_eps  # noqa: E731
        groups: list[dict[str, Any]] = [
            {"name": "actor", "params": list(self.head.parameters()), "lr": lr(cfg.actor_lr), "eps": eps(cfg.actor_eps)},
            {"name": "critic", "params": list(critic.value_out.parameters()), "lr": lr(cfg.critic_lr),
             "eps": eps(cfg.critic_eps)},
        ]
        if self.shared:
            groups.append({"name": "shared", "params": list(actor.encoder.parameters()), "lr": lr(cfg.shared_lr),
                           "eps": eps(cfg.shared_eps)})
        else:
            groups[0]["params"] += list(actor.encoder.parameters())
            groups[1]["params"] += list(critic.encoder.parameters())
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g["initial_lr"] = g["lr"]
        self.optimizer = adam(groups)
        self.params = [p for g in groups for p in g["params"]]
        self.kl_beta = cfg.kl_beta

        self.value_norm = (
            ValueNormalizer(critic.value_out if cfg.popart else None).to(device) if cfg.normalize_value else None
        )
        self.reward_scaler = (
            RewardScaler((num_envs, len(self.slots)), cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        )
        space = spec.observation_space
        packing = ObsPacking.of(space, spec.observation_fields)  # a Dict's images: uint8 in storage
        obs_dim = int(np.prod(space.shape))
        self.storage_args: dict[str, Any] = dict(
            num_steps=cfg.num_steps, batch_shape=(num_envs, len(self.slots)), obs_shape=tuple(space.shape),
            obs_dtype=torch_dtype(space.dtype), action_shape=tuple(self.head.action_shape),
            action_dtype=self.head.action_dtype, mask_dim=self.head.mask_dim if self.use_mask else 0,
            critic_dim=critic_dim if critic_input != "obs" else 0, extra_dim=id_dim,
            packing=packing,
            critic_packing=(ObsPacking.after(critic_dim - obs_dim, obs_dim, space.dtype, packing)
                            if critic_input == "agent_specific" else None),  # state ⊕ own obs: its images too
        )
        if check_storage is not None:
            check_storage(self, self.storage_args)
        self.storage = RolloutStorage(**self.storage_args, device=device)
        self._ids = actor.ids(num_envs, device)  # stored with each step: minibatches are not in env-major order

    def parameters(self) -> list[nn.Parameter]:
        """The actor's then the critic's parameters, each once (a shared trunk is the actor's)."""
        return list(dict.fromkeys([*self.actor.parameters(), *self.critic.parameters()]))

    # -- inputs ------------------------------------------------------------------------------------------------

    def rows(self, x: np.ndarray) -> np.ndarray:
        """This group's agents' rows of a group array ``[N, A_g, ...]``."""
        return x if self._slots_all else x[:, self.slots]

    def inputs(self, obs: np.ndarray, state: np.ndarray | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """(observations ``[N, A, *obs_shape]`` in their own dtype, one-hot agent ids ``[N, A, id_dim]`` or
        None, critic input ``[N, A, ...]``: the observations themselves unless the critic reads the state)."""
        o = torch.as_tensor(self.rows(obs), device=self.device)
        if self.critic_input == "obs":
            return o, self._ids, o
        s = torch.as_tensor(state, dtype=torch.float32, device=self.device).unsqueeze(1).expand(-1, len(self.slots), -1)
        if self.critic_input == "state":
            return o, self._ids, s
        return o, self._ids, torch.cat([s, o.reshape(*o.shape[:2], -1).to(torch.float32)], dim=-1)

    def mask(self, observation: Observation) -> Tensor | None:
        """The env's action masks for this group's agents ``[N, A, mask_dim]``, or None (the mask rule)."""
        if not self.use_mask:
            return None
        if observation.mask is None:
            raise ConfigError(f"env group {self.spec.name!r} declared an action mask but gave none this step.")
        mask = torch.as_tensor(self.rows(observation.mask), device=self.device)
        if mask.shape[-1] != self.head.mask_dim:
            raise ConfigError(
                f"env group {self.spec.name!r} gives action masks of width {mask.shape[-1]} but its head "
                f"{type(self.head).__name__} takes {self.head.mask_dim}; check the env's action_mask or policy.head."
            )
        return mask

    # -- acting and evaluating ---------------------------------------------------------------------------------

    def value(self, critic_in: Tensor, ids: Tensor | None) -> Tensor:
        """De-normalised values ``[N, A]`` of critic inputs ``[N, A, ...]``."""
        lead = critic_in.shape[:2]
        flat_ids = None if ids is None else ids.reshape(-1, ids.shape[-1])
        value = self.critic(critic_in.reshape(-1, *critic_in.shape[2:]), flat_ids).reshape(lead)
        return self.value_norm.denormalize(value) if self.value_norm is not None else value

    def act(self, obs: Tensor, mask: Tensor | None, ids: Tensor | None
            ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
        """A sampled raw action ``[N*A, ...]``, its env outputs (``head.choose``), its log-prob and, with a
        shared trunk (run once for both), the de-normalised value ``[N, A]``. A critic of its own gives None
        here: ``rollout_values`` computes its values once the rollout is stored."""
        flat = obs.reshape(-1, *obs.shape[2:])
        flat_ids = None if ids is None else ids.reshape(-1, ids.shape[-1])
        flat_mask = None if mask is None else mask.reshape(-1, mask.shape[-1])
        value = None
        if self.shared:
            latent = self.actor.latent(flat, flat_ids)
            dist = self.head(latent, flat_mask)
            value = self.critic.value_out(latent).squeeze(-1).reshape(obs.shape[:2])
            if self.value_norm is not None:
                value = self.value_norm.denormalize(value)
        else:
            dist = self.actor(flat, flat_mask, flat_ids)
        action, outputs = self.head.choose(dist)
        return action, outputs, dist.log_prob(action), value

    def rollout_values(self) -> None:
        """Fill the storage's ``values`` of a critic of its own from the stored critic inputs (and agent ids),
        in parts of one minibatch's rows (what the update runs through the critic at once); a shared trunk's
        were stored with each step (``act``).

        The same values as one critic call per step (weights and normalisers do not change during a
        rollout), for a fraction of the cost: a small network at a few rows per step is dispatch-bound, so
        one call per rollout instead of ``num_steps`` saves most of the critic's share of acting."""
        if self.shared:
            return
        st = self.storage
        per_step = self.num_envs * len(self.slots)
        steps = max(1, self.cfg.minibatch_for(st.num_steps * per_step) // per_step)
        source = st.critic_obs if st.critic_obs is not None else st.obs
        for start in range(0, st.num_steps, steps):
            part = source[start:start + steps]
            ids = None if st.extras is None else st.extras[start:start + steps].flatten(0, 1)
            value = self.value(unpacked(part.reshape(-1, *part.shape[2:])), ids)
            st.values[start:start + steps] = value.reshape(-1, *st.values.shape[1:])

    def evaluate(self, mb: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Log-prob of the stored actions under the stored masks, entropy and (normalised) value."""
        obs = unpacked(mb.obs)  # a minibatch's already are
        if self.shared:
            latent = self.actor.latent(obs, mb.extras)
            dist = self.head(latent, mb.masks)
            value = self.critic.value_out(latent).squeeze(-1)
        else:
            dist = self.actor(obs, mb.masks, mb.extras)
            value = self.critic(unpacked(mb.critic_obs), mb.extras)
        return dist.log_prob(mb.actions), dist.entropy(), value

    # -- learning ----------------------------------------------------------------------------------------------

    def learn(self, sched: Schedule, generator: torch.Generator) -> dict[str, float]:
        """``ppo_update`` on the storage's valid entries (GAE already computed by the collector), the adaptive
        KL beta, then the observation normalisers take in the rollout for the next one. Empty when every
        agent of the group was dead for the whole rollout."""
        cfg = self.cfg
        batch = self.storage.batch()
        if len(batch) == 0:
            return {}
        hp = UpdateSettings(
            clip_range=sched.clip_range, update_epochs=cfg.update_epochs, minibatch_size=cfg.minibatch_for(len(batch)),
            vf_coef=cfg.vf_coef, ent_coef=sched.ent_coef, value_clip_range=cfg.value_clip_range,
            max_grad_norm=cfg.max_grad_norm, normalize_advantages=cfg.normalize_advantages,
            objective=cfg.objective, kl_beta=self.kl_beta, target_kl=cfg.target_kl,
            value_loss=cfg.value_loss, huber_delta=cfg.huber_delta,
        )
        metrics = ppo_update(batch, self.evaluate, self.optimizer, self.params, hp, generator, self.value_norm)
        if cfg.objective == "kl_penalty":
            kl = metrics["losses/approx_kl"]
            if kl > 1.5 * cfg.kl_target:
                self.kl_beta *= 2.0
            elif kl < cfg.kl_target / 1.5:
                self.kl_beta /= 2.0
            metrics["charts/kl_beta"] = self.kl_beta
        metrics["losses/explained_variance"] = explained_variance(batch.values, batch.returns)
        for g in self.optimizer.param_groups:
            metrics[f"charts/lr_{g['name']}"] = g["lr"]
        # New normalisation stats serve the next rollout; this one was collected and learned with the old ones.
        for part in batch.parts(hp.minibatch_size):  # the whole batch, unless its observations are packed
            self.actor.update_normalizer(unpacked(part.obs), part.extras)
            if not self.shared:
                self.critic.update_normalizer(unpacked(part.critic_obs), part.extras)
        return metrics

    # -- checkpoints, deployment -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "value_norm": self.value_norm.state_dict() if self.value_norm is not None else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
            "kl_beta": self.kl_beta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (and the layouts older versions saved: an optimiser of one parameter group,
        no reward scaler or KL beta)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        # MAPPO's checkpoints from before the core: one parameter group, in parameters() order
        load_optimizer_state(self.optimizer, state["optimizer"], legacy_order=self.parameters())
        if self.value_norm is not None and state.get("value_norm") is not None:
            self.value_norm.load_state_dict(state["value_norm"])
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if state.get("kl_beta") is not None:
            self.kl_beta = float(state["kl_beta"])

    def artifact(self, game: dict[str, Any] | None = None) -> PolicyArtifact:
        return PolicyArtifact(
            name=self.name, actor=self.actor, observation_space=self.spec.observation_space,
            action_space=self.spec.action_space, agents=list(self.agents),
            uses_mask=self.use_mask, observation_fields=self.spec.observation_fields, game=game,
        )


def _mask_rule(spec: GroupSpec, head: Any, env_masks: bool) -> bool:
    """Whether the group's head is given the env's masks: the env gives masks and the head takes them. A head
    that takes none under an env that gives some is refused (it would choose forbidden actions), and so is a
    declared mask of another width than the head's."""
    if not env_masks:
        return False
    if not head.mask_dim:
        raise ConfigError(
            f"env group {spec.name!r} gives action masks but the action head {type(head).__name__} takes none; "
            "pick a head that takes masks in policy.head."
        )
    if spec.mask_dim and spec.mask_dim != head.mask_dim:
        raise ConfigError(
            f"env group {spec.name!r} gives action masks of width {spec.mask_dim} but its head "
            f"{type(head).__name__} takes {head.mask_dim}; check the env's action_mask or policy.head."
        )
    return True


# -- the collector ----------------------------------------------------------------------------------------------


class Seats(Protocol):
    """Who else plays some of the env groups' seats during collection (self-play's frozen snapshots and
    sides that are not learning, ``agentkit.selfplay``): their steps act but do not learn."""

    def frozen(self, group: str) -> np.ndarray:
        """bool ``[N, A_g]``: the agents of env group ``group`` the learner does not play this step."""
        ...

    def act(self, group: str, obs: Tensor, mask: Tensor | None, action: Tensor, outputs: dict[str, Tensor],
            agent_id: Tensor | None) -> None:
        """Overwrite ``action`` and ``outputs`` rows (``[N*A_g, ...]``) of ``group``'s frozen seats in place
        where someone else chooses (a seat left as it is plays the group's own latest policy)."""
        ...

    def observe(self, transition: MultiAgentTransition) -> None: ...


class SingleAgentEnv:
    """A single-agent ``VecEnv`` seen as a multi-agent one of one group of one agent (arrays ``[N, 1, ...]``,
    numpy views), so that one collector serves both."""

    GROUP = "policy"

    def __init__(self, vec: VecEnv):
        self.vec = vec
        self.num_envs = vec.num_envs

    @staticmethod
    def _obs(o: Observation) -> Observation:
        return Observation(o.obs[:, None], None if o.mask is None else o.mask[:, None])

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        return {self.GROUP: self._obs(self.vec.reset(seed=seed))}

    def step(self, actions: dict[str, Any]) -> MultiAgentTransition:
        tr = self.vec.step(actions[self.GROUP])
        final = None if tr.final_obs is None else tr.final_obs[:, None]
        group = Transition(self._obs(tr.next), tr.reward[:, None], tr.terminated[:, None], tr.truncated[:, None],
                           final_obs=final)
        return MultiAgentTransition(groups={self.GROUP: group}, episode_returns=tr.episode_returns,
                                    episode_lengths=tr.episode_lengths, episode_infos=tr.episode_infos)

    def close(self) -> None:
        self.vec.close()


def single_agent_group(observation_space: gym.spaces.Box, action_space: gym.Space,
                       observation_fields: list[dict[str, Any]] | None) -> GroupSpec:
    """The one group of a single-agent env (``SingleAgentEnv``): one agent, ``agent``."""
    return GroupSpec(SingleAgentEnv.GROUP, ["agent"], observation_space, action_space,
                     observation_fields=observation_fields)


class Collector:
    """Collects one rollout of ``num_steps`` vector steps into every group's storage, then GAE.

    ``env`` is the training env (a ``MultiAgentVecEnv``, or a ``SingleAgentEnv``), opened at the first
    collection. Per step and group: the inputs, the mask, the action and its log-prob are stored (and a shared
    trunk's value); an agent's entry is valid when it is alive and not a frozen seat (``seats``); after the step
    the reward (scaled by the group's ``RewardScaler`` if any), the episode end, and on truncation (not
    termination) the value of the final observation as ``bootstrap``. After the last step a critic of its own
    gives every stored step's value in one pass (``PolicyGroup.rollout_values``), then GAE.
    """

    def __init__(self, groups: Sequence[PolicyGroup], env: TrainingEnv[Any, dict[str, Observation]],
                 num_steps: int, gamma: float, gae_lambda: float, seats: Seats | None = None):
        self.groups, self.env, self.num_steps = list(groups), env, num_steps
        self.gamma, self.gae_lambda, self.seats = gamma, gae_lambda, seats
        self.names = list(dict.fromkeys(g.spec.name for g in self.groups))

    def _valid(self, group: PolicyGroup, alive: np.ndarray | None) -> Tensor | None:
        """Which of the group's agents' entries learn ``[N, A]`` (None: all of them)."""
        valid = None if alive is None else torch.as_tensor(group.rows(alive), device=group.device)
        if self.seats is not None:
            frozen = torch.as_tensor(group.rows(self.seats.frozen(group.spec.name)), device=group.device)
            valid = ~frozen if valid is None else valid & ~frozen
        return valid

    def collect(self) -> EndedEpisodes:
        """One rollout into every group's storage, advantages and returns computed; the episodes that ended."""
        episodes = EndedEpisodes()
        observations = self.env.observation()
        vec = self.env.vec()
        for group in self.groups:
            group.storage.bootstrap.zero_()
        with torch.inference_mode():
            for t in range(self.num_steps):
                chosen: dict[str, list[tuple[PolicyGroup, dict[str, Tensor]]]] = {n: [] for n in self.names}
                for group in self.groups:
                    o, st = observations[group.spec.name], group.storage
                    obs, ids, critic_in = group.inputs(o.obs, o.state)
                    mask = group.mask(o)
                    action, outputs, logprob, value = group.act(obs, mask, ids)
                    if self.seats is not None:  # a frozen snapshot's seat acts but does not learn
                        flat_ids = None if ids is None else ids.reshape(-1, ids.shape[-1])
                        flat_mask = None if mask is None else mask.reshape(-1, mask.shape[-1])
                        self.seats.act(group.spec.name, obs.reshape(-1, *obs.shape[2:]), flat_mask, action, outputs,
                                       flat_ids)
                    st.obs[t] = obs
                    if st.extras is not None and ids is not None:
                        st.extras[t] = ids
                    if st.critic_obs is not None:
                        st.critic_obs[t] = critic_in
                    if st.masks is not None and mask is not None:
                        st.masks[t] = mask
                    valid = self._valid(group, o.alive)
                    if valid is not None:
                        st.valid[t] = valid
                    st.actions[t] = action.reshape(st.actions.shape[1:])
                    st.logprobs[t] = logprob.reshape(st.logprobs.shape[1:])
                    if value is not None:  # else rollout_values, after the rollout
                        st.values[t] = value
                    chosen[group.spec.name].append((group, outputs))

                tr = vec.step(self._env_actions(chosen))
                for group in self.groups:
                    gt, st = tr.groups[group.spec.name], group.storage
                    term, trunc = group.rows(gt.terminated), group.rows(gt.truncated)
                    done = term | trunc
                    reward = group.rows(gt.reward)
                    if group.reward_scaler is not None:
                        reward = group.reward_scaler(reward, done)
                    st.record_outcome(t, reward, done)  # a step it did not act on: compute_gae
                    boot = trunc & ~term  # a time limit is not a real end: the return goes on past it
                    if boot.any():  # V(final obs) of the truncated agents only
                        _, ids, final_in = group.inputs(gt.final_obs, gt.final_state)
                        rows = torch.as_tensor(boot, device=group.device)
                        value = group.critic(final_in[rows], None if ids is None else ids[rows])
                        if group.value_norm is not None:
                            value = group.value_norm.denormalize(value)
                        st.bootstrap[t][rows] = value
                episodes.add(tr)
                if self.seats is not None:
                    self.seats.observe(tr)
                observations = {name: gt.next for name, gt in tr.groups.items()}
            self.env.obs = observations
            for group in self.groups:
                group.rollout_values()
                o = observations[group.spec.name]
                _, ids, critic_in = group.inputs(o.obs, o.state)
                group.storage.compute_gae(group.value(critic_in, ids), self.gamma, self.gae_lambda,
                                          last_valid=self._valid(group, o.alive))
        return episodes

    def _env_actions(self, chosen: dict[str, list[tuple[PolicyGroup, dict[str, Tensor]]]]) -> dict[str, Any]:
        """Per env group, its policy groups' env outputs (``head.choose``, rows ``[N * A]``, env-major) → the
        env's batched action (``N * A_g`` rows, env-major, agents in the group's order)."""
        out = {}
        for name, parts in chosen.items():
            head, flat = parts[0][0].head, parts[0][1]
            if len(parts) > 1:  # one policy per agent: interleave them back into the group's agent order
                parts = sorted(parts, key=lambda p: p[0].slots[0])
                n = parts[0][0].num_envs
                flat = {
                    key: torch.cat([o[key].reshape(n, len(g.slots), *o[key].shape[1:]) for g, o in parts], 1).flatten(0, 1)
                    for key in flat
                }
            out[name] = head.to_env({k: (v if v.device.type == "cpu" else v.cpu()).numpy() for k, v in flat.items()})
        return out


def metrics_of(groups: Sequence[PolicyGroup], per_group: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the groups that report it, and with several groups each group's own as
    ``<section>/<group>/<name>``."""
    metrics: dict[str, float] = {}
    if len(groups) > 1:
        for group, losses in zip(groups, per_group, strict=True):
            for key, value in losses.items():
                section, _, name = key.partition("/")
                metrics[f"{section}/{group.name}/{name}"] = value
    for key in dict.fromkeys(k for losses in per_group for k in losses):
        metrics[key] = float(np.mean([losses[key] for losses in per_group if key in losses]))
    return metrics
