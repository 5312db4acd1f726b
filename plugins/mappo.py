"""The ``mappo`` algorithm plugin: multi-agent PPO with a centralised critic (MAPPO) or not (IPPO).

    algorithm: {plugin: mappo, total_steps: 3_000_000, centralised: true}

Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games" (2022). One policy group
(``agentkit.onpolicy.PolicyGroup``) per env group (or per agent with ``share_parameters: false``) holds an
actor, a critic, a value normaliser, an optimiser and a ``RolloutStorage`` with a ``(N, A)`` batch. Each
iteration, with the on-policy core PPO uses too:

1. schedules (learning rates, clip range, entropy coefficient);
2. the ``Collector`` collects ``num_steps`` vector steps from the multi-agent vector env (docs/multi-agent.md)
   and computes GAE; an agent's step is valid when it was alive to act (and, in self-play, not a frozen
   snapshot's seat), and only valid steps reach GAE targets and the loss;
3. ``update_epochs`` epochs of clipped PPO per group (``agentkit.onpolicy.ppo_update``).

``centralised`` decides only what the critic reads: the global state (``critic_input: state``), the
agent-specific global state (state ⊕ own obs), or, for IPPO, the agent's own observation. With parameter
sharing the actor and critic inputs end with a one-hot agent index within the group.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
from pydantic import Field

import agentkit
from agentkit.algorithm import BuildContext, PolicyArtifact, Progress, TrainingEnv
from agentkit.environment import GroupSpec, MultiAgentEnvSource, MultiAgentVecEnv, Observation
from agentkit.errors import ConfigError
from agentkit.onpolicy import Collector, OnPolicyConfig, PolicyGroup, metrics_of, schedule
from agentkit.policy import agent_id_dim, build_actor, build_critic, shares_encoder, vector_space
from agentkit.seeding import resume_seed
from agentkit.selfplay import SelfPlay, SelfPlayConfig, TeamSelfPlay
from agentkit.storage import ensure_fits, rollout_bytes, stored_as


class MAPPOConfig(OnPolicyConfig):
    """MAPPO / IPPO options; the defaults are MAPPO's reference values for MPE. The options shared with
    ``ppo`` are ``agentkit.onpolicy.OnPolicyConfig``'s (one spelling each; see ``renamed``)."""

    #: former MAPPO spellings → today's (docs/ppo.md, "Renamed options"); a run dir saved with them still loads
    renamed: ClassVar[dict[str, str]] = {
        "clip_coef": "clip_range",
        "norm_adv": "normalize_advantages",
        "value_norm": "normalize_value",
        "anneal_lr": "lr_schedule",
        "clip_vloss": "value_clip_range",
    }

    centralised: bool = Field(True, description="Centralised critic on the global state (false: IPPO).")
    critic_input: Literal["state", "agent_specific"] = Field(
        "state", description="Centralised critic input: global state, or state + the agent's own obs."
    )
    share_parameters: bool = Field(True, description="One actor and critic per group (false: per agent).")
    agent_id: bool = Field(True, description="With sharing, append a one-hot agent index to actor/critic inputs.")
    num_minibatches: int = Field(1, ge=1, description="Minibatches per epoch (of the valid entries collected).")
    learning_rate: float = Field(7e-4, gt=0, description="Adam learning rate of every parameter group.")
    value_clip_range: float | None = Field(
        0.2, gt=0, description="Clip the value update to ±this around the old value, in normalised units (null: off)."
    )
    value_loss: Literal["mse", "huber"] = Field("huber", description="Value loss shape (huber: with huber_delta).")
    normalize_value: bool = Field(True, description="The critic predicts values normalised by running return stats.")
    ent_coef: float = Field(0.01, ge=0, description="Entropy bonus coefficient (start value).")
    vf_coef: float = Field(1.0, ge=0, description="Value loss coefficient.")
    max_grad_norm: float | None = Field(10.0, gt=0, description="Clip the global gradient norm (null: off).")
    self_play: SelfPlayConfig | None = Field(
        None,
        description="Self-play: one shared policy plays every seat of a symmetric game, against itself and a "
        "pool of its frozen snapshots; or each env group is a side of an asymmetric game, the sides taking turns "
        "to learn against the others' pools (agentkit/selfplay.py).",
    )

    def minibatch_for(self, batch_size: int) -> int:
        return max(1, -(-batch_size // self.num_minibatches))

    @classmethod
    def upgrade_saved(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A run dir's section saved before the renames: ``anneal_lr: true`` is ``lr_schedule: linear``, and
        ``clip_vloss: true`` clipped the value by the surrogate's clip range (``clip_coef``)."""
        out = dict(section)
        clip = out.pop("clip_coef", out.get("clip_range", 0.2))
        out["clip_range"] = clip
        if "anneal_lr" in out:
            out["lr_schedule"] = "linear" if out.pop("anneal_lr") else "constant"
        if "clip_vloss" in out:
            out["value_clip_range"] = clip if out.pop("clip_vloss") else None
        if "norm_adv" in out:
            out["normalize_advantages"] = out.pop("norm_adv")
        if "value_norm" in out:
            out["normalize_value"] = out.pop("value_norm")
        return out


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
        self.seed = run.seed
        self.device = context.device
        self.num_envs = run.env.num_envs
        self.generator = torch.Generator().manual_seed(run.seed)  # minibatch order (the trainer seeds the rest)
        source = cast(MultiAgentEnvSource, env)  # multi_agent: checked above
        # opened at the first iterate: eval and export build no env copies and start no worker processes
        self.training_env: TrainingEnv[MultiAgentVecEnv, dict[str, Observation]] = TrainingEnv(
            lambda: source.make_vec(self.num_envs, run.seed), reset_seed=run.seed)
        self.source = source
        self.turn_based = bool(env.turn_based)
        self.all_agents = list(source.agents)
        self.state_dim = source.state_dim
        if config.centralised and self.state_dim == 0:
            raise ConfigError(
                "algorithm.centralised: the centralised critic reads the global state, and this env has none "
                "(env.state: none, or a game that declares no state); set algorithm.centralised: false or give "
                "the env a state (env.state: auto or concat)."
            )
        if run.policy.shared_trunk is True and config.centralised:
            raise ConfigError(
                "policy.shared_trunk: a centralised critic reads the global state, not the actor's input, so "
                "the trunk cannot be shared; set policy.shared_trunk: false or algorithm.centralised: false."
            )
        self.groups: list[PolicyGroup] = []
        self._storage_bytes, self._storage_what = 0, []
        for group in source.groups.values():
            if config.share_parameters:
                parts = [(group.name, list(range(len(group.agents))))]
            else:
                parts = [(agent, [i]) for i, agent in enumerate(group.agents)]
            for name, slots in parts:
                self.groups.append(self._build_group(name, group, slots, context))
        self._registry = context.registry
        self.selfplay = self._build_selfplay(config.self_play, run.seed) if config.self_play else None
        self.collector = Collector(self.groups, self.training_env, config.num_steps, config.gamma, config.gae_lambda,
                                   seats=self.selfplay)
        self.steps_done = 0
        self.iteration = 0
        self.progress = Progress(config.total_steps)

    @property
    def units(self) -> list[PolicyGroup]:
        """The policy groups (the name this class used before they were the core's)."""
        return self.groups

    def _evaluate_selfplay(self) -> dict[str, float]:
        """The learner (deterministic) against the fixed opponents of ``self_play.eval_opponents``."""
        from agentkit.evaluation import torch_act
        from agentkit.matches import group_seat_policy

        group = self.groups[0]
        policy = group_seat_policy(self.source, {group.spec.name: torch_act(self.policies()[0], deterministic=True)})
        assert isinstance(self.selfplay, SelfPlay)
        return self.selfplay.evaluate(self.source, policy, self.steps_done)

    def _build_selfplay(self, sp: SelfPlayConfig, seed: int) -> SelfPlay | TeamSelfPlay:
        """One policy for every seat: symmetric self-play; one policy per env group (two or more): each group
        is a side of an asymmetric game (``TeamSelfPlay``). Anything else is refused with the fix."""
        group = self.groups[0]
        env_groups = list(self.source.groups)
        if len(self.groups) == 1 and len(group.slots) >= 2:
            if sp.team_change is not None:
                raise ConfigError(
                    "algorithm.self_play.team_change: this run has one policy for every seat (symmetric "
                    "self-play), so no side takes turns learning; remove team_change, or name the sides as env "
                    "groups (env.groups) for asymmetric self-play."
                )
            if not self.source.turn_based and sp.seats is None:
                raise ConfigError(
                    "algorithm.self_play: one policy for every agent of a parallel game "
                    f"({self.source.env_id!r}) needs its seats named, the agents each side plays: "
                    "algorithm.self_play.seats: {blue: [blue_0, blue_1], red: [red_0, red_1]}. Or put each side "
                    "in an env group of its own (env.groups) for asymmetric self-play, or remove "
                    "algorithm.self_play."
                )
            if sp.seats is not None:
                _check_seats(sp.seats, group.agents)
            if not self.source.turn_based and sp.eval_opponents:
                raise ConfigError(
                    "algorithm.self_play.eval_opponents: fixed opponents play turn-based games' seats; "
                    f"{self.source.env_id!r} is a parallel game: evaluate the export instead (benchmarks/"
                    "arena_winrate.py for Team Arena). Remove eval_opponents."
                )
            return SelfPlay(sp, group.actor, group.agents, self.num_envs, seed, self._registry, group.spec.name,
                            sum_rewards=not self.source.turn_based)
        if len(env_groups) >= 2 and [g.name for g in self.groups] == env_groups:
            if sp.eval_opponents:
                raise ConfigError(
                    "algorithm.self_play.eval_opponents: fixed opponents play turn-based games' seats; with "
                    f"several sides ({env_groups}) evaluate the export instead (agentkit eval, or "
                    "benchmarks/arena_winrate.py for Team Arena). Remove eval_opponents."
                )
            return TeamSelfPlay(sp, {g.name: g.actor for g in self.groups}, {g.name: g.agents for g in self.groups},
                                self.num_envs, seed)
        raise ConfigError(
            "algorithm.self_play: self-play needs one policy that plays every seat (an env with one group of two "
            "or more agents) or one policy per env group, each group a side (env.groups: {blue: [...], red: "
            f"[...]}}), with algorithm.share_parameters: true; this run builds {len(self.groups)} policies: "
            f"{[g.name for g in self.groups]} over the env groups {env_groups}. Put the seats in one group or the "
            "sides in groups of their own (env.groups), or remove algorithm.self_play."
        )

    # -- building -------------------------------------------------------------------------------------------

    def _build_group(self, name: str, group: GroupSpec, slots: list[int], context: BuildContext) -> PolicyGroup:
        cfg, policy, registry = self.config, context.config.policy, context.registry
        id_dim = agent_id_dim(len(slots), cfg.agent_id)
        space = group.observation_space
        obs_dim = int(np.prod(space.shape))
        actor = build_actor(policy, registry, space, group.action_space, id_dim, fields=group.observation_fields)
        critic_input: Literal["obs", "state", "agent_specific"] = "obs"
        critic_dim = 0
        if not cfg.centralised and shares_encoder(policy, space, group.observation_fields):
            critic = build_critic(policy, registry, space, share_with=actor)
        elif not cfg.centralised:  # IPPO: the critic reads the actor's input (an image through its own CNN)
            critic = build_critic(policy, registry, space, id_dim, fields=group.observation_fields)
        else:
            critic_input = cfg.critic_input
            critic_dim = self.state_dim + (obs_dim if cfg.critic_input == "agent_specific" else 0)
            critic = build_critic(policy, registry, vector_space(critic_dim), id_dim, observation=False)
        return PolicyGroup(
            name, group, slots, actor, critic, cfg, num_envs=self.num_envs, device=self.device,
            critic_input=critic_input, critic_dim=critic_dim, env_masks=group.mask_dim > 0,
            check_storage=self._check_storage,
        )

    def _check_storage(self, group: PolicyGroup, storage_args: dict[str, Any]) -> None:
        """Refuse (exit 2) rollouts of all the groups together too big for the memory, before allocating."""
        cfg, space = self.config, group.spec.observation_space
        self._storage_bytes += rollout_bytes(**storage_args)
        critic_dim = storage_args["critic_dim"]
        self._storage_what.append(f"{group.name}: {len(group.slots)} agents x "
                                  f"{stored_as(space.shape, space.dtype, storage_args['packing'])}"
                                  + (f" + critic input {stored_as((critic_dim,), np.float32, storage_args['critic_packing'])}"
                                     if critic_dim else ""))
        ensure_fits(
            self._storage_bytes,
            f"rollouts of algorithm.num_steps={cfg.num_steps} x env.num_envs={self.num_envs} x ("
            + "; ".join(self._storage_what) + ")",
            "env.num_envs or algorithm.num_steps (a centralised critic's global state counts too: "
            "algorithm.centralised: false reads each agent's own observation instead)",
        )

    # -- one iteration --------------------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        sched = schedule(self.config, self.progress.at(self.steps_done), self.groups)   # 1. schedules
        episodes = self.collector.collect()                                              # 2. rollout + GAE
        self.steps_done += self.config.num_steps * self.num_envs
        self.iteration += 1
        per_group = [group.learn(sched, self.generator) for group in self.groups]        # 3. update each policy
        metrics: dict[str, float] = {"charts/clip_range": sched.clip_range, "charts/ent_coef": sched.ent_coef,
                                     **episodes.metrics()}
        if self.selfplay is not None:
            self.selfplay.per_side(metrics)
            self.selfplay.maybe_snapshot(self.steps_done)
            metrics.update(self.selfplay.metrics())
            if isinstance(self.selfplay, SelfPlay) and self.selfplay.eval_due(self.steps_done):
                metrics.update(self._evaluate_selfplay())
        metrics.update(metrics_of(self.groups, per_group))
        return metrics

    # -- Algorithm protocol ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "units": {g.name: g.state_dict() for g in self.groups},
            "steps_done": self.steps_done,
            "iteration": self.iteration,
            "progress": self.progress.state_dict(),
            "generator": self.generator.get_state(),
            **({"selfplay": self.selfplay.state_dict()} if self.selfplay is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = sorted(g.name for g in self.groups)
        if sorted(state["units"]) != names:
            raise ConfigError(
                f"checkpoint holds policies {sorted(state['units'])} but this run builds {names}; the env's "
                "groups or algorithm.share_parameters changed since it was saved."
            )
        for g in self.groups:
            g.load_state_dict(state["units"][g.name])
        self.steps_done = int(state["steps_done"])
        self.iteration = int(state["iteration"])
        self.progress.load_state_dict(state.get("progress"), self.steps_done)
        self.generator.set_state(state["generator"])
        if self.selfplay is not None:
            self.selfplay.load_state_dict(state["selfplay"])
        # Env episodes are not checkpointed: a resumed run starts fresh episodes (agentkit.seeding.resume_seed).
        self.training_env.restart(resume_seed(self.seed, self.steps_done))

    def policies(self) -> list[PolicyArtifact]:
        return [g.artifact(self._game(g)) for g in self.groups]

    def _game(self, group: PolicyGroup) -> dict[str, Any] | None:
        """What an export says about playing a turn-based game: which seats, on which observation."""
        if not self.turn_based:
            return None
        return {"turn_based": True, "seats": list(group.agents), "observation": "own",
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


def _check_seats(seats: dict[str, list[str]], agents: list[str]) -> None:
    """A ConfigError unless ``seats`` puts each of the policy's ``agents`` in exactly one of two or more seats."""
    named = [a for members in seats.values() for a in members]
    if len(seats) < 2 or sorted(named) != sorted(agents) or any(not m for m in seats.values()):
        raise ConfigError(
            f"algorithm.self_play.seats: {seats} must put each agent of the policy ({agents}) in exactly one of "
            "two or more seats, e.g. {blue: [blue_0, blue_1], red: [red_0, red_1]}."
        )
