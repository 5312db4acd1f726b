"""The ``mappo`` algorithm plugin: multi-agent PPO with a centralised critic (MAPPO) or not (IPPO).

    algorithm: {plugin: mappo, total_steps: 3_000_000, centralised: true}

Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games" (2022). One
``PolicyUnit`` per policy group (or per agent with ``share_parameters: false``) holds an actor, a critic,
a value normaliser, an optimiser and a ``RolloutStorage`` with a ``(N, A)`` batch. Each iteration:

1. collect ``num_steps`` vector steps from the multi-agent vector env (docs/multi-agent.md); an agent's
   step is valid when it was alive to act, and only valid steps reach GAE targets and the loss;
2. GAE on the shared storage, with the critic's normalised values de-normalised for the targets;
3. ``update_epochs`` epochs of clipped PPO per unit, the PPO loss being ``plugins/ppo.py``'s.

``centralised`` decides only what the critic reads: the global state (``critic_input: state``), the
agent-specific global state (state ⊕ own obs), or, for IPPO, the agent's own observation. With parameter
sharing the actor and critic inputs end with a one-hot agent index within the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from agentkit_plugins.ppo import (
    UpdateSettings,
    ValueNormalizer,
    adam,
    explained_variance,
    linear_schedule,
    ppo_update,
    rng_state,
    set_rng_state,
)
from pydantic import Field
from torch import Tensor, nn

import agentkit
from agentkit.algorithm import BuildContext, PolicyArtifact, Progress, TrainingEnv
from agentkit.config import AlgorithmConfig
from agentkit.environment import GroupSpec, MultiAgentEnvSource, MultiAgentVecEnv, Observation
from agentkit.errors import ConfigError
from agentkit.policy import (
    Actor,
    Critic,
    agent_id_dim,
    agent_ids,
    build_actor,
    build_critic,
    shares_encoder,
    vector_space,
)
from agentkit.runlog import EndedEpisodes
from agentkit.selfplay import SelfPlay, SelfPlayConfig
from agentkit.storage import Batch, RolloutStorage, ensure_fits, rollout_bytes, torch_dtype


class MAPPOConfig(AlgorithmConfig):
    """MAPPO / IPPO options; the defaults are MAPPO's reference values for MPE."""

    centralised: bool = Field(True, description="Centralised critic on the global state (false: IPPO).")
    critic_input: Literal["state", "agent_specific"] = Field(
        "state", description="Centralised critic input: global state, or state + the agent's own obs."
    )
    share_parameters: bool = Field(True, description="One actor and critic per group (false: per agent).")
    agent_id: bool = Field(True, description="With sharing, append a one-hot agent index to actor/critic inputs.")
    num_steps: int = Field(128, ge=1, description="Vector steps collected per iteration.")
    num_minibatches: int = Field(1, ge=1, description="Minibatches per epoch.")
    update_epochs: int = Field(10, ge=1, description="Epochs over each rollout.")
    learning_rate: float = Field(7e-4, gt=0)
    anneal_lr: bool = Field(False, description="Decay the learning rate linearly to 0.")
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_coef: float = Field(0.2, gt=0)
    clip_vloss: bool = Field(True, description="Clip the value loss around the old values.")
    value_loss: Literal["huber", "mse"] = Field("huber", description="Value loss shape.")
    huber_delta: float = Field(10.0, gt=0)
    value_norm: bool = Field(True, description="The critic predicts values normalised by running return stats.")
    norm_adv: bool = Field(True, description="Normalise advantages per minibatch.")
    ent_coef: float = Field(0.01, ge=0, description="Entropy bonus coefficient (start value).")
    ent_coef_final: float | None = Field(
        None, ge=0, description="If set, the entropy coefficient moves linearly to this by the end."
    )
    vf_coef: float = Field(1.0, ge=0)
    max_grad_norm: float = Field(10.0, gt=0)
    self_play: SelfPlayConfig | None = Field(
        None,
        description="Self-play for a symmetric game: one shared policy plays every seat, against itself and a "
        "pool of its frozen snapshots (agentkit/selfplay.py).",
    )


@dataclass
class PolicyUnit:
    """One trained policy: a group's shared policy, or one agent's own (``slots`` on the group's axis)."""

    name: str
    group: GroupSpec
    slots: list[int]
    agents: list[str]
    id_dim: int
    actor: Actor
    critic: Critic
    value_norm: ValueNormalizer | None
    optimizer: torch.optim.Optimizer
    storage: RolloutStorage
    use_mask: bool

    def parameters(self) -> list[nn.Parameter]:
        seen, params = set(), []
        for p in [*self.actor.parameters(), *self.critic.parameters()]:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        return params


class MAPPO:
    """MAPPO / IPPO over a ``MultiAgentVecEnv``. Follows ``agentkit.algorithm.Algorithm``."""

    def __init__(self, config: MAPPOConfig, context: BuildContext):
        env = context.env
        if not env.multi_agent:
            raise ConfigError(
                f"algorithm.plugin: mappo trains multi-agent envs, but env {env.env_id!r} is single-agent; use "
                "a multi-agent env plugin (env.plugin: pettingzoo) or algorithm.plugin: ppo."
            )
        run = context.config
        self.config = config
        self.device = context.device
        self.num_envs = run.env.num_envs
        if run.run.torch_threads:
            torch.set_num_threads(run.run.torch_threads)
        torch.manual_seed(run.seed)
        np.random.seed(run.seed % 2**32)
        self.generator = torch.Generator().manual_seed(run.seed)
        source = cast(MultiAgentEnvSource, env)  # multi_agent: checked above
        # opened at the first iterate: eval and export build no env copies and start no worker processes
        self.training_env: TrainingEnv[MultiAgentVecEnv, dict[str, Observation]] = TrainingEnv(
            lambda: source.make_vec(self.num_envs, run.seed), reset_seed=run.seed)
        self.source = source
        self.turn_based = bool(env.turn_based)
        self.all_agents = list(source.agents)
        self.state_dim = source.state_dim
        policy = run.policy
        critic_sees_obs = not config.centralised
        if policy.shared_trunk is True and not critic_sees_obs:
            raise ConfigError(
                "policy.shared_trunk: a centralised critic reads the global state, not the actor's input, so "
                "the trunk cannot be shared; set policy.shared_trunk: false or algorithm.centralised: false."
            )
        self.units: list[PolicyUnit] = []
        self._storage_bytes, self._storage_what = 0, []
        for group in source.groups.values():
            if config.share_parameters:
                parts = [(group.name, list(range(len(group.agents))))]
            else:
                parts = [(agent, [i]) for i, agent in enumerate(group.agents)]
            for name, slots in parts:
                self.units.append(self._build_unit(name, group, slots, context))
        self._registry = context.registry
        self.selfplay = self._build_selfplay(config.self_play, run.seed) if config.self_play else None
        self.steps_done = 0
        self.iteration = 0
        self.progress = Progress(config.total_steps)

    def _evaluate_selfplay(self) -> dict[str, float]:
        """The learner (deterministic) against the fixed opponents of ``self_play.eval_opponents``."""
        from agentkit.evaluation import torch_act
        from agentkit.matches import group_seat_policy

        unit = self.units[0]
        policy = group_seat_policy(self.source, {unit.group.name: torch_act(self.policies()[0], deterministic=True)})
        return self.selfplay.evaluate(self.source, policy, self.steps_done)

    def _build_selfplay(self, sp: SelfPlayConfig, seed: int) -> SelfPlay:
        unit = self.units[0]
        if len(self.units) != 1 or len(unit.slots) < 2:
            raise ConfigError(
                "algorithm.self_play: self-play needs one policy that plays every seat: an env with one group of "
                f"two or more agents and algorithm.share_parameters: true (this run builds {len(self.units)} "
                f"policies: {[u.name for u in self.units]}). Put the seats in one group (env.groups) or remove "
                "algorithm.self_play."
            )
        return SelfPlay(sp, unit.actor, unit.agents, self.num_envs, seed, self._registry)
    # -- building -------------------------------------------------------------------------------------------

    def _build_unit(self, name: str, group: GroupSpec, slots: list[int], context: BuildContext) -> PolicyUnit:
        cfg, policy, registry = self.config, context.config.policy, context.registry
        id_dim = agent_id_dim(len(slots), cfg.agent_id)
        space = group.observation_space
        obs_dim = int(math.prod(space.shape))
        actor = build_actor(policy, registry, space, group.action_space, id_dim, fields=group.observation_fields)
        if not cfg.centralised and shares_encoder(policy, space, group.observation_fields):
            critic_dim, critic = 0, build_critic(policy, registry, space, share_with=actor)
        elif not cfg.centralised:  # IPPO: the critic reads the actor's input (an image through its own CNN)
            critic_dim = 0
            critic = build_critic(policy, registry, space, id_dim, fields=group.observation_fields)
        else:
            critic_dim = self.state_dim + (obs_dim if cfg.critic_input == "agent_specific" else 0)
            critic = build_critic(policy, registry, vector_space(critic_dim), id_dim, observation=False)
        actor.to(self.device)
        critic.to(self.device)
        head = actor.head
        use_mask = group.mask_dim > 0 and head.mask_dim > 0
        if use_mask and group.mask_dim != head.mask_dim:
            raise ConfigError(
                f"env group {group.name!r} gives action masks of width {group.mask_dim} but its head takes "
                f"{head.mask_dim}; check the env's action_mask or policy.head."
            )
        storage_args = dict(
            num_steps=cfg.num_steps,
            batch_shape=(self.num_envs, len(slots)),
            obs_shape=tuple(space.shape),
            obs_dtype=torch_dtype(space.dtype),
            action_shape=tuple(head.action_shape),
            action_dtype=head.action_dtype,
            mask_dim=head.mask_dim if use_mask else 0,
            critic_dim=critic_dim,
            extra_dim=id_dim,
        )
        self._storage_bytes += rollout_bytes(**storage_args)
        self._storage_what.append(f"{name}: {len(slots)} agents x {tuple(space.shape)} {space.dtype}"
                                  + (f" + critic input {critic_dim}" if critic_dim else ""))
        ensure_fits(
            self._storage_bytes,
            f"rollouts of algorithm.num_steps={cfg.num_steps} x env.num_envs={self.num_envs} x ("
            + "; ".join(self._storage_what) + ")",
            "env.num_envs or algorithm.num_steps (a centralised critic's global state counts too: "
            "algorithm.centralised: false reads each agent's own observation instead)",
        )
        storage = RolloutStorage(**storage_args, device=self.device)
        unit = PolicyUnit(
            name, group, slots, [group.agents[i] for i in slots], id_dim, actor, critic,
            ValueNormalizer().to(self.device) if cfg.value_norm else None, None, storage, use_mask,  # type: ignore[arg-type]
        )
        unit.optimizer = adam([{"params": unit.parameters(), "lr": cfg.learning_rate, "eps": 1e-5}])
        return unit

    # -- inputs ---------------------------------------------------------------------------------------------

    def _ids(self, unit: PolicyUnit) -> Tensor | None:
        """One-hot agent ids ``[N, A_u, id_dim]`` (None when ids are off)."""
        if not unit.id_dim:
            return None
        return agent_ids(unit.id_dim, self.num_envs, self.device)

    def _inputs(self, unit: PolicyUnit, obs: np.ndarray, state: np.ndarray) -> tuple[Tensor, Tensor | None, Tensor]:
        """(observations ``[N, A_u, *obs_shape]`` in their own dtype, agent ids ``[N, A_u, id]`` or None, critic
        input ``[N, A_u, ...]``: the observations themselves unless the critic is centralised) for one unit."""
        o = torch.as_tensor(obs[:, unit.slots], device=self.device)
        ids = self._ids(unit)
        if not self.config.centralised or unit.storage.critic_obs is None:
            return o, ids, o
        s = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        s = s.unsqueeze(1).expand(-1, len(unit.slots), -1)
        if self.config.critic_input == "state":
            return o, ids, s
        return o, ids, torch.cat([s, o.reshape(*o.shape[:2], -1).to(torch.float32)], dim=-1)

    def _value(self, unit: PolicyUnit, critic_in: Tensor, ids: Tensor | None) -> Tensor:
        """De-normalised values ``[N, A_u]``."""
        lead = critic_in.shape[:2]
        flat_ids = None if ids is None else ids.reshape(-1, ids.shape[-1])
        value = unit.critic(critic_in.reshape(-1, *critic_in.shape[2:]), flat_ids).reshape(lead)
        return unit.value_norm.denormalize(value) if unit.value_norm is not None else value

    # -- collection -----------------------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        cfg = self.config
        progress = self.progress.at(self.steps_done)
        lr = cfg.learning_rate * (1.0 - progress) if cfg.anneal_lr else cfg.learning_rate
        ent_coef = linear_schedule(cfg.ent_coef, cfg.ent_coef_final, progress)
        for unit in self.units:
            for pg in unit.optimizer.param_groups:
                pg["lr"] = lr
            unit.actor.head.set_progress(progress)
        episodes = EndedEpisodes()
        obs = self.training_env.observation()
        vec = self.training_env.vec()
        for t in range(cfg.num_steps):
            env_outputs: dict[str, list[tuple[PolicyUnit, dict[str, Tensor]]]] = {g: [] for g in self.source.groups}
            with torch.no_grad():
                for unit in self.units:
                    o = obs[unit.group.name]
                    actor_in, ids, critic_in = self._inputs(unit, o.obs, o.state)
                    st = unit.storage
                    st.obs[t] = actor_in
                    if st.extras is not None:
                        st.extras[t] = ids
                    if st.critic_obs is not None:
                        st.critic_obs[t] = critic_in
                    st.valid[t] = torch.as_tensor(o.alive[:, unit.slots], device=self.device)
                    if self.selfplay is not None:  # a frozen snapshot's seat acts but does not learn
                        st.valid[t] &= ~torch.as_tensor(self.selfplay.frozen, device=self.device)
                    mask = None
                    if unit.use_mask:
                        mask = torch.as_tensor(o.mask[:, unit.slots], device=self.device)
                        st.masks[t] = mask
                        mask = mask.reshape(-1, mask.shape[-1])
                    flat_ids = None if ids is None else ids.reshape(-1, ids.shape[-1])
                    dist = unit.actor(actor_in.reshape(-1, *actor_in.shape[2:]), mask, flat_ids)
                    action, outputs = unit.actor.head.choose(dist)
                    if self.selfplay is not None:
                        self.selfplay.act(actor_in.reshape(-1, *actor_in.shape[2:]), mask, action, outputs, flat_ids)
                    st.actions[t] = action.reshape(st.actions.shape[1:])
                    st.logprobs[t] = dist.log_prob(action).reshape(st.logprobs.shape[1:])
                    st.values[t] = self._value(unit, critic_in, ids)
                    env_outputs[unit.group.name].append((unit, outputs))
            tr = vec.step(self._env_actions(env_outputs))
            with torch.no_grad():
                for unit in self.units:
                    gt = tr.groups[unit.group.name]
                    st = unit.storage
                    term = torch.as_tensor(gt.terminated[:, unit.slots], device=self.device)
                    trunc = torch.as_tensor(gt.truncated[:, unit.slots], device=self.device)
                    st.rewards[t] = torch.as_tensor(gt.reward[:, unit.slots], device=self.device)
                    st.dones[t] = (term | trunc).float()  # a step it did not act on: see compute_gae
                    st.bootstrap[t] = 0.0
                    if bool(trunc.any()):
                        _, ids, final_in = self._inputs(unit, gt.final_obs, gt.final_state)
                        st.bootstrap[t] = torch.where(trunc & ~term, self._value(unit, final_in, ids), 0.0)
            episodes.add(tr)
            if self.selfplay is not None:
                self.selfplay.observe(tr)
            obs = {g: gt.next for g, gt in tr.groups.items()}
        self.training_env.obs = obs
        self.steps_done += cfg.num_steps * self.num_envs
        self.iteration += 1

        metrics: dict[str, float] = {"charts/learning_rate": lr, "charts/ent_coef": ent_coef, **episodes.metrics()}
        if self.selfplay is not None:
            self.selfplay.per_side(metrics)
        per_unit = [self._learn(unit, obs, ent_coef) for unit in self.units]
        if self.selfplay is not None:
            self.selfplay.maybe_snapshot(self.steps_done)
            metrics.update(self.selfplay.metrics())
            if self.selfplay.eval_due(self.steps_done):
                metrics.update(self._evaluate_selfplay())
        for unit, losses in zip(self.units, per_unit, strict=True):
            if len(self.units) > 1:
                for key, value in losses.items():
                    section, _, name = key.partition("/")
                    metrics[f"{section}/{unit.name}/{name}"] = value
        for key in {k for losses in per_unit for k in losses}:
            values = [losses[key] for losses in per_unit if key in losses]
            metrics[key] = float(np.mean(values))
        return metrics

    def _env_actions(self, chosen: dict[str, list[tuple[PolicyUnit, dict[str, Tensor]]]]) -> dict[str, Any]:
        """Per group, the units' env outputs (``head.choose``, rows ``[N * A_u]``, env-major) → the env's
        batched action (``N * A_g`` rows, env-major, agents in the group's order)."""
        out = {}
        for gname, parts in chosen.items():
            head, flat = parts[0][0].actor.head, parts[0][1]
            if len(parts) > 1:  # one unit per agent: interleave them back into the group's agent order
                parts = sorted(parts, key=lambda p: p[0].slots[0])
                flat = {
                    key: torch.cat(
                        [o[key].reshape(self.num_envs, len(u.slots), *o[key].shape[1:]) for u, o in parts], 1
                    ).flatten(0, 1)
                    for key in flat
                }
            out[gname] = head.to_env({k: v.cpu().numpy() for k, v in flat.items()})
        return out

    # -- learning -------------------------------------------------------------------------------------------

    def _learn(self, unit: PolicyUnit, next_obs: dict[str, Observation], ent_coef: float) -> dict[str, float]:
        """GAE on the unit's storage, then ``ppo_update`` (plugins/ppo.py) on its valid entries."""
        cfg, st = self.config, unit.storage
        o = next_obs[unit.group.name]
        with torch.no_grad():
            _, ids, critic_in = self._inputs(unit, o.obs, o.state)
            alive = torch.as_tensor(o.alive[:, unit.slots], device=self.device)
            if self.selfplay is not None:
                alive &= ~torch.as_tensor(self.selfplay.frozen, device=self.device)
            st.compute_gae(self._value(unit, critic_in, ids), cfg.gamma, cfg.gae_lambda, last_valid=alive)
        batch = st.batch()
        if len(batch) == 0:  # every agent of this unit was dead for the whole rollout
            return {}
        hp = UpdateSettings(
            clip_range=cfg.clip_coef,
            update_epochs=cfg.update_epochs,
            minibatch_size=max(1, math.ceil(len(batch) / cfg.num_minibatches)),
            vf_coef=cfg.vf_coef,
            ent_coef=ent_coef,
            value_clip_range=cfg.clip_coef if cfg.clip_vloss else None,
            max_grad_norm=cfg.max_grad_norm,
            normalize_advantages=cfg.norm_adv,
            value_loss=cfg.value_loss,
            huber_delta=cfg.huber_delta,
        )

        def evaluate(mb: Batch) -> tuple[Tensor, Tensor, Tensor]:
            dist = unit.actor(mb.obs, mb.masks, mb.extras)
            return dist.log_prob(mb.actions), dist.entropy(), unit.critic(mb.critic_obs, mb.extras)

        metrics = ppo_update(batch, evaluate, unit.optimizer, unit.parameters(), hp, self.generator, unit.value_norm)
        metrics["losses/explained_variance"] = explained_variance(batch.values, batch.returns)
        # Normalisers move after the update, so a rollout's log-probs and its update see the same stats.
        unit.actor.update_normalizer(batch.obs, batch.extras)
        if unit.critic.encoder is not unit.actor.encoder:
            unit.critic.update_normalizer(batch.critic_obs, batch.extras)
        return metrics

    # -- Algorithm protocol ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "units": {
                u.name: {
                    "actor": u.actor.state_dict(),
                    "critic": u.critic.state_dict(),
                    "value_norm": u.value_norm.state_dict() if u.value_norm is not None else None,
                    "optimizer": u.optimizer.state_dict(),
                }
                for u in self.units
            },
            "steps_done": self.steps_done,
            "iteration": self.iteration,
            "progress": self.progress.state_dict(),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            **({"selfplay": self.selfplay.state_dict()} if self.selfplay is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = sorted(u.name for u in self.units)
        if sorted(state["units"]) != names:
            raise ConfigError(
                f"checkpoint holds policies {sorted(state['units'])} but this run builds {names}; the env's "
                "groups or algorithm.share_parameters changed since it was saved."
            )
        for u in self.units:
            s = state["units"][u.name]
            u.actor.load_state_dict(s["actor"])
            u.critic.load_state_dict(s["critic"])
            if u.value_norm is not None and s["value_norm"] is not None:
                u.value_norm.load_state_dict(s["value_norm"])
            u.optimizer.load_state_dict(s["optimizer"])
        self.steps_done = int(state["steps_done"])
        self.iteration = int(state["iteration"])
        self.progress.load_state_dict(state.get("progress"), self.steps_done)
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        if self.selfplay is not None:
            self.selfplay.load_state_dict(state["selfplay"])
        # Env episodes are not checkpointed: a resumed run starts fresh episodes, seeded from the step count.
        self.training_env.restart(self.steps_done)

    def policies(self) -> list[PolicyArtifact]:
        return [
            PolicyArtifact(
                name=u.name,
                actor=u.actor,
                observation_space=u.group.observation_space,
                action_space=u.group.action_space,
                agents=list(u.agents),
                agent_id_dim=u.id_dim,
                uses_mask=u.use_mask,
                observation_fields=u.group.observation_fields,
                game=self._game(u),
            )
            for u in self.units
        ]

    def _game(self, unit: PolicyUnit) -> dict[str, Any] | None:
        """What an export says about playing a turn-based game: which seats, on which observation."""
        if not self.turn_based:
            return None
        return {"turn_based": True, "seats": list(unit.agents), "observation": "own",
                "self_play": self.selfplay is not None}

    def close(self) -> None:
        self.training_env.close()


@agentkit.hookimpl
def agentkit_register_algorithms(register):
    register(
        "mappo",
        MAPPO,
        MAPPOConfig,
        "Multi-agent PPO: centralised critic (MAPPO) or decentralised (IPPO), one policy per agent group.",
    )
