"""The ``ppo`` algorithm plugin: Proximal Policy Optimization (Schulman et al., 2017), CleanRL-style.

The single-agent case of the on-policy core (``agentkit.onpolicy``): one policy group of one agent. One
iteration reads top to bottom like the paper:

1. schedules: learning rates, clip range and entropy coefficient decay linearly with the steps spent;
2. collect ``num_steps`` vector steps (masks from the env go through the head when sampling and are
   stored for the loss; on truncation the value of the final observation is bootstrapped), then GAE(lambda);
3. ``ppo_update``: epochs of shuffled minibatches of the clipped surrogate (or the KL-penalty objective),
   clipped value loss and entropy bonus, gradient-norm clipping, optional target-KL early stop;
4. the observation normalisers take in the rollout's observations, for the next collection.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

import agentkit
from agentkit.algorithm import BuildContext, PolicyArtifact, Progress, TrainingEnv
from agentkit.environment import Observation
from agentkit.errors import ConfigError
from agentkit.onpolicy import (
    Collector,
    OnPolicyConfig,
    PolicyGroup,
    SingleAgentEnv,
    ValueNormalizer,  # noqa: F401  (re-exported: plugins written against agentkit_plugins.ppo import it)
    schedule,
    single_agent_group,
)
from agentkit.policy import build_actor, build_critic, shares_encoder
from agentkit.runlog import EndedEpisodes
from agentkit.seeding import resume_seed
from agentkit.storage import Batch, ensure_fits, rollout_bytes, stored_as


class PPOConfig(OnPolicyConfig):
    """PPO hyperparameters (defaults: CleanRL's classic-control settings, value loss as in SB3); the options
    shared with ``mappo`` are ``agentkit.onpolicy.OnPolicyConfig``'s."""

    minibatch_size: int = Field(64, ge=1, description="Entries per minibatch (SB3's batch_size).")

    def minibatch_for(self, batch_size: int) -> int:
        return self.minibatch_size


class PPO:
    """Single-agent PPO on any ``VecEnv`` and any action head (see the module docstring)."""

    def __init__(self, config: PPOConfig, context: BuildContext):
        if context.env.multi_agent:
            raise ConfigError(
                f"algorithm.plugin: ppo trains single-agent envs; {context.env.env_id!r} is multi-agent. "
                "Use algorithm.plugin: mappo (with algorithm.centralised: false it is PPO on each agent's own "
                "observation; one group of seats shares one policy, e.g. both players of a board game)."
            )
        run = context.config
        self.config = cfg = config
        self.seed = run.seed
        self.generator = torch.Generator().manual_seed(run.seed)  # minibatch order (the trainer seeds the rest)
        self.num_envs = run.env.num_envs
        batch = cfg.num_steps * self.num_envs
        if cfg.minibatch_size > batch:
            raise ConfigError(
                f"algorithm.minibatch_size: {cfg.minibatch_size} is larger than the batch each iteration collects "
                f"(algorithm.num_steps {cfg.num_steps} x env.num_envs {self.num_envs} = {batch}); set "
                f"algorithm.minibatch_size to at most {batch}, or raise num_steps or num_envs."
            )
        env = context.env
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.observation_fields = env.observation_fields
        spec = single_agent_group(self.observation_space, self.action_space, self.observation_fields)
        policy = run.policy
        actor = build_actor(policy, context.registry, self.observation_space, self.action_space,
                            fields=self.observation_fields)
        shared = shares_encoder(policy, self.observation_space, self.observation_fields)
        critic = build_critic(policy, context.registry, self.observation_space, fields=self.observation_fields,
                              share_with=actor if shared else None)
        self.group = PolicyGroup("policy", spec, [0], actor, critic, cfg, num_envs=self.num_envs,
                                 device=context.device, env_masks=bool(env.has_mask), check_storage=self._check_storage)
        # opened at the first collect: eval and export build no env copies
        self.training_env: TrainingEnv[SingleAgentEnv, dict[str, Observation]] = TrainingEnv(
            lambda: SingleAgentEnv(env.make_vec(self.num_envs, seed=run.seed)))
        self.collector = Collector([self.group], self.training_env, cfg.num_steps, cfg.gamma, cfg.gae_lambda)
        self.steps_done = 0
        self.iterations = 0
        self.progress = Progress(cfg.total_steps)

    def _check_storage(self, group: PolicyGroup, storage_args: dict[str, Any]) -> None:
        space = self.observation_space
        ensure_fits(
            rollout_bytes(**storage_args),
            f"a rollout of algorithm.num_steps={self.config.num_steps} x env.num_envs={self.num_envs} observations "
            f"of {stored_as(space.shape, space.dtype, storage_args['packing'])}",
            "env.num_envs or algorithm.num_steps",
        )

    # the group's parts, by the names PPO always had
    actor = property(lambda self: self.group.actor)
    critic = property(lambda self: self.group.critic)
    head = property(lambda self: self.group.head)
    storage = property(lambda self: self.group.storage)
    optimizer = property(lambda self: self.group.optimizer)
    value_norm = property(lambda self: self.group.value_norm)
    has_mask = property(lambda self: self.group.use_mask)

    def _evaluate(self, mb: Batch):
        return self.group.evaluate(mb)

    def collect(self) -> EndedEpisodes:
        """Fill the storage with one rollout and compute advantages; returns the episodes that ended."""
        episodes = self.collector.collect()
        self.steps_done += self.config.num_steps * self.num_envs
        return episodes

    def iterate(self) -> dict[str, float]:
        sched = schedule(self.config, self.progress.at(self.steps_done), [self.group])   # 1. schedules
        episodes = self.collect()                                                       # 2. rollout + GAE
        metrics = self.group.learn(sched, self.generator)                               # 3.-4. update, normalisers
        self.iterations += 1
        metrics.update(episodes.metrics())
        metrics["charts/clip_range"] = sched.clip_range
        metrics["charts/ent_coef"] = sched.ent_coef
        return metrics

    # -- checkpoints, deployment --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        group = self.group.state_dict()
        return {
            **{k: v for k, v in group.items() if k != "kl_beta"},
            "generator": self.generator.get_state(),
            "counters": {"steps_done": self.steps_done, "iterations": self.iterations, "kl_beta": group["kl_beta"]},
            "progress": self.progress.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``. The envs restart from a reset seeded from (seed, steps done), so a resumed
        run is reproducible (an env's internal state is not part of a checkpoint)."""
        counters = state["counters"]
        self.group.load_state_dict({**state, "kl_beta": counters["kl_beta"]})
        self.generator.set_state(state["generator"])
        self.steps_done = int(counters["steps_done"])
        self.iterations = int(counters["iterations"])
        self.progress.load_state_dict(state.get("progress"), self.steps_done)
        self.training_env.restart(resume_seed(self.seed, self.steps_done))

    def policies(self) -> list[PolicyArtifact]:
        return [self.group.artifact()]

    def close(self) -> None:
        self.training_env.close()


def make_ppo(config: PPOConfig, context: BuildContext) -> PPO:
    return PPO(config, context)


@agentkit.hookimpl
def agentkit_register_algorithms(register):
    register("ppo", make_ppo, PPOConfig, "Proximal Policy Optimization for single-agent envs (any action head).")
