"""The ``ppo`` algorithm plugin: Proximal Policy Optimization (Schulman et al., 2017), CleanRL-style.

One iteration reads top to bottom like the paper:

1. schedules: learning rates, clip range and entropy coefficient decay linearly with the steps spent;
2. collect ``num_steps`` vector steps (masks from the env go through the head when sampling and are
   stored for the loss); on truncation the value of the final observation is bootstrapped;
3. GAE(lambda) on the rollout (``agentkit.storage``);
4. ``ppo_update``: epochs of shuffled minibatches of the clipped surrogate (or the KL-penalty objective),
   clipped value loss and entropy bonus, gradient-norm clipping, optional target-KL early stop;
5. the observation normalisers take in the rollout's observations, for the next collection.

``ppo_update`` works on a flattened ``agentkit.storage.Batch`` and an ``evaluate`` callback, so MAPPO
reuses it as is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

import agentkit
from agentkit.algorithm import BuildContext, PolicyArtifact, Progress, TrainingEnv
from agentkit.config import AlgorithmConfig
from agentkit.environment import Observation, VecEnv
from agentkit.errors import ConfigError
from agentkit.moments import merge_moments
from agentkit.policy import build_actor, build_critic, shares_encoder
from agentkit.runlog import EndedEpisodes
from agentkit.storage import Batch, RolloutStorage, ensure_fits, rollout_bytes, torch_dtype


class PPOConfig(AlgorithmConfig):
    """PPO hyperparameters (defaults: CleanRL's classic-control settings, value loss as in SB3)."""

    num_steps: int = Field(128, ge=1, description="Vector steps per env copy per rollout (SB3's n_steps).")
    minibatch_size: int = Field(64, ge=1, description="Entries per minibatch (SB3's batch_size).")
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
    def _check(self) -> PPOConfig:
        if self.popart and not self.normalize_value:
            raise ValueError("popart: true needs normalize_value: true")
        return self


# -- running statistics -----------------------------------------------------------------------------------


class ValueNormalizer(nn.Module):
    """Running mean/std of value targets; the critic learns ``(return - mean) / std``.

    With ``popart_layer`` (the critic's output layer), every stats update rescales that layer so that its
    denormalised outputs are unchanged (PopArt's "preserving outputs precisely").
    """

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
    """Divides rewards by the running std of each env copy's discounted return (SB3 VecNormalize-style)."""

    def __init__(self, num_envs: int, gamma: float, clip: float, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.ret = np.zeros(num_envs, dtype=np.float64)
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


# -- the update (shared with MAPPO) -----------------------------------------------------------------------


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
    value_loss: str = "mse"  # or "huber" (MAPPO), with huber_delta
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
    totals = torch.zeros(6)  # policy, value, entropy, approx_kl, clip_fraction, minibatches
    epochs_done = 0
    stop = False
    for _ in range(hp.update_epochs):
        for mb in batch.minibatches(hp.minibatch_size, generator):
            new_logprob, entropy, new_value = evaluate(mb)
            logratio = new_logprob - mb.logprobs
            ratio = logratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - logratio).mean()  # k3 estimator of KL(old || new)
                clip_fraction = ((ratio - 1.0).abs() > hp.clip_range).float().mean()
            if hp.target_kl is not None and float(approx_kl) > 1.5 * hp.target_kl:
                stop = True
                break

            adv = mb.advantages
            if hp.normalize_advantages and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + hp.adv_eps)

            if hp.objective == "clip":
                pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - hp.clip_range, 1 + hp.clip_range)).mean()
            else:  # KL-penalised surrogate (PPO paper, section 4), with a differentiable k3 KL estimate
                pg_loss = -(adv * ratio).mean() + hp.kl_beta * ((ratio - 1) - logratio).mean()

            if hp.value_clip_range is None:
                v_loss = value_error(new_value - mb.returns, hp).mean()
            else:
                v_clipped = mb.values + torch.clamp(new_value - mb.values, -hp.value_clip_range, hp.value_clip_range)
                v_loss = torch.max(value_error(new_value - mb.returns, hp), value_error(v_clipped - mb.returns, hp)).mean()

            entropy_loss = entropy.mean()
            loss = pg_loss - hp.ent_coef * entropy_loss + hp.vf_coef * v_loss

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.max_grad_norm is not None:
                clip_grad_norm(params, hp.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                totals += torch.stack([pg_loss, v_loss, entropy_loss, approx_kl, clip_fraction, torch.ones(())])
        if stop:
            break
        epochs_done += 1
    n = max(float(totals[5]), 1.0)
    policy, value, entropy, kl, clipfrac = (totals[:5] / n).tolist()
    return {
        "losses/policy": policy,
        "losses/value": value,
        "losses/entropy": entropy,
        "losses/approx_kl": kl,
        "losses/clip_fraction": clipfrac,
        "charts/update_epochs": float(epochs_done),
    }


def linear_schedule(start: float, final: float | None, progress: float) -> float:
    """``start`` moved linearly to ``final`` as ``progress`` goes from 0 to 1 (and held after); ``start``
    throughout when ``final`` is None."""
    return start if final is None else start + (final - start) * min(progress, 1.0)


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; returns the norm before.

    ``torch.nn.utils.clip_grad_norm_``'s maths in four foreach ops, without its per-call Python dispatch
    (grouping by device and dtype), which costs more than the arithmetic for the small networks here.
    """
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] (NaN when the returns do not vary)."""
    var = returns.var()
    return float("nan") if float(var) == 0.0 else float(1 - (returns - values).var() / var)


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

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            states = []
            for p in params:
                if p not in self.state:
                    self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                     "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                states.append(self.state[p])
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], steps, lr=float(g["lr"]), beta1=beta1, beta2=beta2, weight_decay=0.0, eps=float(g["eps"]),
                amsgrad=False, maximize=False,
            )

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


def rng_state() -> dict[str, Any]:
    """torch and numpy global RNG states as tensors and plain Python (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))


# -- the algorithm ----------------------------------------------------------------------------------------


class PPO:
    """Single-agent PPO on any ``VecEnv`` and any action head (see the module docstring)."""

    def __init__(self, config: PPOConfig, context: BuildContext):
        if context.env.multi_agent:
            raise ConfigError(
                f"algorithm.plugin: ppo trains single-agent envs; {context.env.env_id!r} is multi-agent. "
                "Use algorithm.plugin: mappo."
            )
        run = context.config
        self.config = cfg = config
        self.seed = run.seed
        if run.run.torch_threads:
            torch.set_num_threads(run.run.torch_threads)
        torch.manual_seed(run.seed)
        np.random.seed(run.seed % 2**32)
        self.generator = torch.Generator().manual_seed(run.seed)

        self.env_source = context.env
        self.num_envs = run.env.num_envs
        batch = cfg.num_steps * self.num_envs
        if cfg.minibatch_size > batch:
            raise ConfigError(
                f"algorithm.minibatch_size: {cfg.minibatch_size} is larger than the batch each iteration collects "
                f"(algorithm.num_steps {cfg.num_steps} x env.num_envs {self.num_envs} = {batch}); set "
                f"algorithm.minibatch_size to at most {batch}, or raise num_steps or num_envs."
            )
        # opened at the first collect: eval and export build no env copies
        self.training_env: TrainingEnv[VecEnv, Observation] = TrainingEnv(
            lambda: context.env.make_vec(self.num_envs, seed=run.seed))
        self.observation_space = context.env.observation_space
        self.action_space = context.env.action_space
        self.observation_fields = context.env.observation_fields

        policy = run.policy
        self.shared = shares_encoder(policy, self.observation_space, self.observation_fields)
        self.actor = build_actor(policy, context.registry, self.observation_space, self.action_space,
                                 fields=self.observation_fields)
        self.critic = build_critic(policy, context.registry, self.observation_space, fields=self.observation_fields,
                                   share_with=self.actor if self.shared else None)
        self.head = self.actor.head
        if context.env.has_mask and not self.head.mask_dim:
            raise ConfigError(
                f"env {context.env.env_id!r} gives action masks but the action head "
                f"{type(self.head).__name__} takes none; pick a head that takes masks in policy.head."
            )
        self.has_mask = bool(context.env.has_mask)

        lr = lambda x: x if x is not None else cfg.learning_rate  # noqa: E731
        eps = lambda x: x if x is not None else cfg.adam_eps  # noqa: E731
        groups = [
            {"name": "actor", "params": list(self.head.parameters()), "lr": lr(cfg.actor_lr), "eps": eps(cfg.actor_eps)},
            {"name": "critic", "params": list(self.critic.value_out.parameters()), "lr": lr(cfg.critic_lr),
             "eps": eps(cfg.critic_eps)},
        ]
        if self.shared:
            groups.append({"name": "shared", "params": list(self.actor.trunk.parameters()), "lr": lr(cfg.shared_lr),
                           "eps": eps(cfg.shared_eps)})
        else:
            groups[0]["params"] += list(self.actor.trunk.parameters())
            groups[1]["params"] += list(self.critic.trunk.parameters())
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g["initial_lr"] = g["lr"]
        self.optimizer = adam(groups)
        self.params = [p for g in groups for p in g["params"]]

        self.value_norm = (
            ValueNormalizer(self.critic.value_out if cfg.popart else None) if cfg.normalize_value else None
        )
        self.reward_scaler = (
            RewardScaler(self.num_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        )
        storage_args = dict(
            num_steps=cfg.num_steps, batch_shape=(self.num_envs,), obs_shape=tuple(self.observation_space.shape),
            obs_dtype=torch_dtype(self.observation_space.dtype), action_shape=tuple(self.head.action_shape),
            action_dtype=self.head.action_dtype, mask_dim=self.head.mask_dim if self.has_mask else 0,
        )
        ensure_fits(
            rollout_bytes(**storage_args),
            f"a rollout of algorithm.num_steps={cfg.num_steps} x env.num_envs={self.num_envs} observations of "
            f"{tuple(self.observation_space.shape)} {self.observation_space.dtype}",
            "env.num_envs or algorithm.num_steps",
        )
        self.storage = RolloutStorage(**storage_args)
        self.steps_done = 0
        self.iterations = 0
        self.kl_beta = cfg.kl_beta
        self.progress = Progress(cfg.total_steps)

    # -- acting -------------------------------------------------------------------------------------------

    def _value(self, obs: Tensor) -> Tensor:
        """V(obs) in env units."""
        value = self.critic(obs)
        return self.value_norm.denormalize(value) if self.value_norm is not None else value

    def _mask(self, observation) -> Tensor | None:
        if not self.has_mask:
            return None
        if observation.mask is None:
            raise ConfigError(f"env {self.env_source.env_id!r} declared an action mask but gave none this step.")
        return torch.from_numpy(observation.mask)

    def _act(self, obs: Tensor, mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """A sampled raw action, its env outputs, its log-prob and the value of ``obs``."""
        if self.shared:
            latent = self.actor.latent(obs)
            dist = self.head(latent, mask)
            value = self.critic.value_out(latent).squeeze(-1)
            if self.value_norm is not None:
                value = self.value_norm.denormalize(value)
        else:
            dist = self.actor(obs, mask)
            value = self._value(obs)
        action, outputs = self.head.choose(dist)
        return action, outputs, dist.log_prob(action), value

    def _evaluate(self, mb: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Log-prob of the stored actions under the stored masks, entropy and (normalised) value."""
        if self.shared:
            latent = self.actor.latent(mb.obs)
            dist = self.head(latent, mb.masks)
            value = self.critic.value_out(latent).squeeze(-1)
        else:
            dist = self.actor(mb.obs, mb.masks)
            value = self.critic(mb.critic_obs)
        return dist.log_prob(mb.actions), dist.entropy(), value

    def collect(self) -> EndedEpisodes:
        """Fill the storage with one rollout and compute advantages; returns the episodes that ended."""
        st, cfg = self.storage, self.config
        episodes = EndedEpisodes()
        observation = self.training_env.observation()
        envs = self.training_env.vec()
        st.bootstrap.zero_()
        with torch.inference_mode():
            for t in range(cfg.num_steps):
                obs = torch.from_numpy(observation.obs)
                mask = self._mask(observation)
                action, outputs, logprob, value = self._act(obs, mask)
                st.obs[t] = obs
                if mask is not None:
                    st.masks[t] = mask
                st.actions[t] = action
                st.logprobs[t] = logprob
                st.values[t] = value

                tr = envs.step(self.head.to_env({k: v.numpy() for k, v in outputs.items()}))
                done = tr.terminated | tr.truncated
                reward = tr.reward if self.reward_scaler is None else self.reward_scaler(tr.reward, done)
                st.rewards[t] = torch.from_numpy(reward)
                st.dones[t] = torch.from_numpy(done)
                boot = tr.truncated & ~tr.terminated
                if boot.any():
                    idx = torch.from_numpy(np.flatnonzero(boot))
                    st.bootstrap[t, idx] = self._value(torch.from_numpy(tr.final_obs)[idx])
                episodes.add(tr)
                observation = tr.next
            self.training_env.obs = observation
            last_value = self._value(torch.from_numpy(observation.obs))
            st.compute_gae(last_value, cfg.gamma, cfg.gae_lambda)
        self.steps_done += cfg.num_steps * self.num_envs
        return episodes

    # -- one iteration ------------------------------------------------------------------------------------

    def _schedules(self, progress: float) -> tuple[float, float]:
        cfg = self.config
        remaining = max(1.0 - progress, 0.0)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * (remaining if cfg.lr_schedule == "linear" else 1.0)
        clip = cfg.clip_range * (remaining if cfg.clip_schedule == "linear" else 1.0)
        clip = max(clip, 1e-8)
        return clip, linear_schedule(cfg.ent_coef, cfg.ent_coef_final, progress)

    def iterate(self) -> dict[str, float]:
        cfg = self.config
        progress = self.progress.at(self.steps_done)
        clip, ent = self._schedules(progress)
        self.head.set_progress(min(progress, 1.0))

        episodes = self.collect()
        batch = self.storage.batch()
        hp = UpdateSettings(
            clip_range=clip, update_epochs=cfg.update_epochs, minibatch_size=cfg.minibatch_size,
            vf_coef=cfg.vf_coef, ent_coef=ent, value_clip_range=cfg.value_clip_range,
            max_grad_norm=cfg.max_grad_norm, normalize_advantages=cfg.normalize_advantages,
            objective=cfg.objective, kl_beta=self.kl_beta, target_kl=cfg.target_kl,
        )
        metrics = ppo_update(batch, self._evaluate, self.optimizer, self.params, hp, self.generator, self.value_norm)
        if cfg.objective == "kl_penalty":
            kl = metrics["losses/approx_kl"]
            if kl > 1.5 * cfg.kl_target:
                self.kl_beta *= 2.0
            elif kl < cfg.kl_target / 1.5:
                self.kl_beta /= 2.0
            metrics["charts/kl_beta"] = self.kl_beta

        # New normalisation stats serve the next rollout; this one was collected and learned with the old ones.
        self.actor.update_normalizer(self.storage.obs)
        if self.critic.encoder is not self.actor.encoder:
            self.critic.update_normalizer(self.storage.obs)
        self.iterations += 1

        metrics["losses/explained_variance"] = explained_variance(batch.values, batch.returns)
        metrics.update(episodes.metrics())
        for g in self.optimizer.param_groups:
            metrics[f"charts/lr_{g['name']}"] = g["lr"]
        metrics["charts/clip_range"] = clip
        metrics["charts/ent_coef"] = ent
        return metrics

    # -- checkpoints, deployment --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "value_norm": self.value_norm.state_dict() if self.value_norm is not None else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "counters": {"steps_done": self.steps_done, "iterations": self.iterations, "kl_beta": self.kl_beta},
            "progress": self.progress.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``. The envs restart from a reset seeded from (seed, iterations), so a
        resumed run is reproducible (an env's internal state is not part of a checkpoint)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        # torch.optim's load_state_dict keeps the given tensors: copy them so that later steps never update
        # the caller's dict in place.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if self.value_norm is not None and state.get("value_norm") is not None:
            self.value_norm.load_state_dict(state["value_norm"])
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        counters = state["counters"]
        self.steps_done = int(counters["steps_done"])
        self.iterations = int(counters["iterations"])
        self.kl_beta = float(counters["kl_beta"])
        self.progress.load_state_dict(state.get("progress"), self.steps_done)
        self.training_env.restart((self.seed + 1_000_003 * self.iterations) % 2**31)

    def policies(self) -> list[PolicyArtifact]:
        return [
            PolicyArtifact(
                name="policy", actor=self.actor, observation_space=self.observation_space,
                action_space=self.action_space, agents=["agent"], uses_mask=self.has_mask,
                observation_fields=self.observation_fields,
            )
        ]

    def close(self) -> None:
        self.training_env.close()


def make_ppo(config: PPOConfig, context: BuildContext) -> PPO:
    return PPO(config, context)


@agentkit.hookimpl
def agentkit_register_algorithms(register):
    register("ppo", make_ppo, PPOConfig, "Proximal Policy Optimization for single-agent envs (any action head).")
