"""MADDPG (Lowe et al. 2017) for continuous, discrete, multi-discrete and hybrid actions, masks included.

Read top to bottom like the paper:

* **Actors** are deterministic and decentralised: one per policy group (agents of a group share it, with a
  one-hot agent id appended to the observation when the group has several agents). An actor is the SDK's
  ``agentkit.policy.Actor`` with the registered head of the action space (``policy.head``), as PPO builds
  it; MADDPG reads it through the head contract only (``agentkit.heads``), so any head that offers
  ``relax`` and ``encode`` trains, a third-party head on a new space included. The deterministic action is
  the head's relaxed action: greedy, it is the distribution's mode, which is what eval and the ONNX export
  play.
* **Action representation.** The critic sees each agent's action as ``head.encode(raw)``: one-hot per
  categorical choice (discrete, multi-discrete, the hybrid type), continuous dims in units of their bounds
  (``[-1, 1]``), a hybrid's inactive parameters 0.
* **Exploration and the policy gradient** go through ``head.relax``: categorical choices by a
  straight-through Gumbel-softmax on the masked logits (the forward value is the hard one-hot of
  ``argmax(logits + g)``, the gradient that of the soft sample; a masked action is never chosen and its logit
  gets exactly zero gradient); continuous dims are the bounded mean (``tanh`` when the head squashes, clipping
  with a straight-through gradient otherwise) plus Gaussian noise in those units whose std decays linearly
  (``noise_std`` → ``noise_std_final``), bounded again before it reaches the env and the replay buffer; a
  hybrid's parameters are gated by the chosen type's ownership row, so inactive ones are 0 with no gradient.
* **Critics** are centralised: one Q network per group (agent id one-hot appended) on all agents'
  observations (or the env's global state, ``critic_input: state``) and all agents' actions.
  ``y = r_i + gamma * (1 - terminated_i) * Q'_i(s', a'_1..a'_n)`` with target actors and target critics
  updated softly (``tau``); truncation bootstraps. An agent that is not alive at a step adds nothing to
  either loss.
* **Policy ensembles** (``ensemble_size`` K > 1, the paper's section 4.3): each group has K actors (one
  observation normaliser between them), each with its own target network and optimiser. Every agent plays
  one of them, drawn uniformly at random whenever its episode ends, and the replay row stores which, so an
  agent's target action comes from its own sub-policy's target and each sub-policy learns from the rows it
  played. One buffer, not the paper's K: a batch gives each sub-policy about ``batch_size / K`` rows. The
  critics are shared. Eval and export play sub-policy 0.
* **Replay**: preallocated tensors (``agentkit_plugins.replay``); every ``train_every`` env steps,
  ``gradient_steps`` updates of every group's critic then actor on ``batch_size`` rows; gradients clipped
  to ``max_grad_norm``.

Steps are env steps: one vector step of N env copies counts N, whatever the number of agents.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, cast

import numpy as np
import torch
from agentkit_plugins.replay import ReplayBuffer
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn

import agentkit
from agentkit.algorithm import BuildContext, PolicyArtifact, Progress, TrainingEnv
from agentkit.config import AlgorithmConfig
from agentkit.encoders import image_layout
from agentkit.environment import MultiAgentEnvSource, MultiAgentVecEnv, Observation
from agentkit.errors import ConfigError
from agentkit.heads import ActionHead, RelaxedAction
from agentkit.policy import (
    Actor,
    ObsNormalizer,
    agent_id_dim,
    agent_ids,
    build_actor,
    encoder_for,
    layer_init,
    mlp,
)
from agentkit.runlog import EndedEpisodes
from agentkit.storage import ObsPacking, ensure_fits, torch_dtype

# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


class MADDPGConfig(AlgorithmConfig):
    """MADDPG options. Defaults follow openai/maddpg (lr 1e-2, gamma 0.95, batch 1024, tau 0.01, clip 0.5)."""

    buffer_size: int = Field(1_000_000, ge=1, description="Replay capacity in env steps (rows of N agents).")
    batch_size: int = Field(1024, ge=1, description="Rows per gradient step.")
    learning_starts: int = Field(1024 * 25, ge=0, description="Env steps collected before the first update.")
    train_every: int = Field(100, ge=1, description="Env steps between update rounds.")
    gradient_steps: int = Field(1, ge=1, description="Gradient steps (critic then actor, every group) per round.")
    iteration_steps: int = Field(
        2_500, ge=1, description="Env steps per trainer iteration (the granularity of metrics and hooks)."
    )
    actor_lr: float = Field(1e-2, gt=0)
    critic_lr: float = Field(1e-2, gt=0)
    gamma: float = Field(0.95, ge=0, le=1)
    tau: float = Field(0.01, gt=0, le=1, description="Soft target update: target += tau * (online - target).")
    max_grad_norm: float = Field(0.5, gt=0, description="Gradient norm clip for actors and critics.")
    critic_hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 64])
    critic_input: Literal["obs", "state"] = Field(
        "obs", description="obs: all agents' observations; state: the env's global state."
    )
    agent_id: bool = Field(True, description="Append a one-hot agent id to a shared actor's input.")
    gumbel_temperature: float = Field(1.0, gt=0, description="Temperature of the Gumbel-softmax relaxation.")
    noise_std: float = Field(0.3, ge=0, description="Continuous exploration std at the start (normalised units).")
    noise_std_final: float = Field(0.05, ge=0, description="Continuous exploration std after the decay.")
    noise_decay_fraction: float = Field(0.5, gt=0, le=1, description="Fraction of total_steps the std decays over.")
    action_reg: float = Field(
        1e-3, ge=0, description="Weight of the squared pre-activation penalty in the actor loss (as openai/maddpg)."
    )
    ensemble_size: int = Field(
        1, ge=1, description="Sub-policies per group (policy ensembles); each agent plays one per episode."
    )
    checkpoint_buffer: bool = Field(
        False, description="Save the replay buffer in checkpoints (exact resume; large files)."
    )

    @model_validator(mode="after")
    def _check(self) -> MADDPGConfig:
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size})")
        return self


# --------------------------------------------------------------------------------------------------------
# Soft target updates
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target ← (1 - tau) · target + tau · source`` for every parameter (buffers are copied)."""
    t_params, s_params = list(target.parameters()), list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)
    for t_buf, s_buf in zip(target.buffers(), source.buffers(), strict=True):
        t_buf.copy_(s_buf)


# --------------------------------------------------------------------------------------------------------
# The centralised critic
# --------------------------------------------------------------------------------------------------------


class CentralCritic(nn.Module):
    """Q_i(x, a_1..a_n, id_i): ``x`` (the vector observations of all agents, or the global state,
    normalised), the image observations of all agents (each through ``image_encoders[group]``, the encoder
    ``policy.encoder`` gives that group's images; none for vector observations, which enter raw as in the
    paper) and every agent's action vector, plus agent i's one-hot id in its group → ``[B]``.

    ``embed`` turns the observation part into one row per sample, ``forward`` takes those rows.
    """

    def __init__(self, x_dim: int, act_dim: int, id_dim: int, hidden: list[int], activation: str, normalize: bool,
                 image_encoders: dict[str, tuple[nn.Module, int]] | None = None):
        super().__init__()
        image_encoders = image_encoders or {}
        self.normalizer = ObsNormalizer((max(x_dim, 1),), enabled=normalize and x_dim > 0)
        self.x_dim = x_dim
        self.image_encoders = nn.ModuleDict({g: enc for g, (enc, _) in image_encoders.items()})
        feat_dim = x_dim + sum(enc.out_dim * n for enc, n in image_encoders.values())
        self.trunk = mlp(feat_dim + act_dim + id_dim, hidden, activation)
        self.q_out = layer_init(nn.Linear(hidden[-1] if hidden else feat_dim + act_dim + id_dim, 1), gain=1.0)

    def embed(self, x: Tensor, images: dict[str, Tensor] | None = None) -> Tensor:
        """``x [B, x_dim]`` and ``images {group: [B, A_g, *image_shape]}`` → ``[B, features]``."""
        parts = [self.normalizer(x)] if self.x_dim else []
        for g, enc in self.image_encoders.items():
            img = images[g]  # type: ignore[index]
            parts.append(enc(img.reshape(-1, *img.shape[2:])).reshape(img.shape[0], -1))
        return torch.cat(parts, dim=-1)

    def forward(self, h: Tensor, actions: Tensor, agent_id: Tensor | None = None) -> Tensor:
        parts = [h, actions] + ([agent_id] if agent_id is not None else [])
        return self.q_out(self.trunk(torch.cat(parts, dim=-1))).squeeze(-1)


# --------------------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------------------


class _Group:
    """A policy group's networks and optimisers (plain holder): ``actors`` are its sub-policies (one unless
    ``ensemble_size`` > 1), sharing one observation normaliser."""

    def __init__(self, spec, actors: list[Actor], critic: CentralCritic, cfg: MADDPGConfig, device: torch.device):
        self.spec = spec
        self.name: str = spec.name
        self.n_agents = len(spec.agents)
        self.obs_dim = int(math.prod(spec.observation_space.shape))
        self.obs_shape = tuple(int(d) for d in spec.observation_space.shape)
        self.obs_dtype = torch_dtype(spec.observation_space.dtype)
        self.image = image_layout(spec.observation_space) is not None
        # a Dict observation's image entries are kept as uint8 in the replay buffer (unpacked when sampled)
        self.packing = ObsPacking.of(spec.observation_space, spec.observation_fields)
        self.actors = [actor.to(device) for actor in actors]
        self.critic = critic.to(device)
        # One deepcopy of the list, so the targets share one normaliser as the actors do.
        self.target_actors = [t.requires_grad_(False) for t in copy.deepcopy(actors)]
        self.target_critic = copy.deepcopy(critic).requires_grad_(False)
        self.actor_opts = [torch.optim.Adam(a.parameters(), lr=cfg.actor_lr) for a in actors]
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
        self.id_dim = actors[0].id_dim  # the actors' agent ids (algorithm.agent_id); the critic's always
        self.critic_id_dim = agent_id_dim(self.n_agents)
        self.eye = torch.eye(self.n_agents, device=device)  # replaces agent i's own action in its row of the actor loss

    @property
    def actor(self) -> Actor:
        """Sub-policy 0: the one eval and export play."""
        return self.actors[0]

    @property
    def head(self) -> ActionHead:
        """The env boundary (``env_outputs``, ``to_env``) and the encoding: the same for every sub-policy."""
        return self.actor.head

    def actor_input(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        """``[B, A, *obs_shape]`` → (``[B * A, *obs_shape]``, the one-hot agent ids ``[B * A, A]`` or None)."""
        rows = obs.shape[0] * self.n_agents
        ids = self.actor.ids(obs.shape[0], obs.device)  # given: ensemble_act sends row subsets to each sub-policy
        return obs.reshape(rows, *self.obs_shape), None if ids is None else ids.reshape(rows, -1)


def ensemble_act(
    actors: list[Actor], inputs: tuple[Tensor, Tensor | None], mask: Tensor | None, sub_policy: Tensor | None,
    **options: Any,
) -> RelaxedAction:
    """``head.relax`` of each row of ``inputs`` (observations ``[B, *obs_shape]``, agent ids ``[B, A]`` or
    None) through the actor ``sub_policy [B]`` names (one actor: all rows, ``sub_policy`` unused), with
    ``options`` (``explore``, ``temperature``, ``noise_std``, ``generator``). Returns the ``RelaxedAction`` in
    row order, differentiable with respect to each actor through its own rows only."""
    x, ids = inputs
    if len(actors) == 1:
        return _relax(actors[0], x, ids, mask, options)
    assert sub_policy is not None
    parts, rows = [], []
    for k, actor in enumerate(actors):
        idx = (sub_policy == k).nonzero().squeeze(1)
        if idx.numel():
            parts.append(_relax(actor, x[idx], None if ids is None else ids[idx], None if mask is None else mask[idx],
                                options))
            rows.append(idx)
    order = torch.cat(rows).argsort()
    return RelaxedAction(*(torch.cat(part)[order] for part in zip(
        *((p.encoding, p.raw, p.params) for p in parts), strict=True)))


def _relax(actor: Actor, x: Tensor, ids: Tensor | None, mask: Tensor | None, options: dict[str, Any]) -> RelaxedAction:
    return actor.head.relax(actor(x, mask if actor.head.mask_dim else None, ids), **options)


class MADDPG:
    """The ``maddpg`` algorithm (see the module docstring)."""

    def __init__(self, config: MADDPGConfig, context: BuildContext):
        self.cfg = config
        self.context = context
        run_config = context.config
        # run.device (agentkit.algorithm.resolve_device): networks, optimiser state, the replay buffer and
        # its samples live there; numpy meets torch only at the env boundary.
        self.device = context.device
        env = context.env
        if not env.multi_agent:
            raise ConfigError(
                f"algorithm.plugin: maddpg trains multi-agent envs, but env {env.env_id!r} is single-agent. "
                "Use the pettingzoo env plugin (or algorithm.plugin: ppo for single-agent envs)."
            )
        self.num_envs = run_config.env.num_envs
        self.seed = run_config.seed
        # Replay sampling and sub-policy draws use a CPU generator, exploration noise one on the networks' device:
        # on a CPU run they are one generator, the random stream CPU runs always had.
        self.generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = self.generator if self.device.type == "cpu" else torch.Generator(
            device=self.device).manual_seed(self.seed)
        source = cast(MultiAgentEnvSource, env)  # multi_agent: checked above
        # opened at the first collect: eval and export build no env copies and start no worker processes
        self.training_env: TrainingEnv[MultiAgentVecEnv, dict[str, Observation]] = TrainingEnv(
            lambda: source.make_vec(self.num_envs, seed=self.seed), reset_seed=self.seed)
        specs = source.groups
        self.state_dim = int(source.state_dim or 0)
        if config.critic_input == "state" and self.state_dim <= 0:
            raise ConfigError(
                f"algorithm.critic_input: 'state' needs an env with a global state, and {env.env_id!r} has none. "
                "Use critic_input: obs."
            )

        # Every group's actor, and the layout of the joint (all agents) observation and action vectors.
        self.groups: dict[str, _Group] = {}
        actors: dict[str, list[Actor]] = {}
        for name, spec in specs.items():
            n = len(spec.agents)
            extra = agent_id_dim(n, config.agent_id)
            actors[name] = [
                build_actor(run_config.policy, context.registry, spec.observation_space, spec.action_space, extra,
                            fields=spec.observation_fields)
                for _ in range(config.ensemble_size)
            ]
            for actor in actors[name][1:]:
                actor.encoder.normalizer = actors[name][0].normalizer  # one observation normaliser per group
            head = actors[name][0].head
            if head.encoding_dim <= 0:
                raise ConfigError(
                    f"policy.head: maddpg trains through head.relax and head.encode, and the {type(head).__name__} "
                    f"of group {name!r} ({spec.action_space}) offers neither (encoding_dim 0). Use a head that "
                    "does (every built-in head does), or implement them (docs/heads.md)."
                )
        # groups whose observations are images: their critic input goes through an encoder (see CentralCritic)
        self.image_groups = [] if config.critic_input == "state" else [
            g for g, s in specs.items() if image_layout(s.observation_space) is not None
        ]
        x_dim = (
            self.state_dim
            if config.critic_input == "state"
            else sum(len(s.agents) * int(math.prod(s.observation_space.shape))
                     for g, s in specs.items() if g not in self.image_groups)
        )
        act_dim = sum(len(s.agents) * actors[g][0].head.encoding_dim for g, s in specs.items())
        for name, spec in specs.items():
            id_dim = agent_id_dim(len(spec.agents))
            image_encoders = {
                g: (encoder_for(run_config.policy, context.registry, specs[g].observation_space), len(specs[g].agents))
                for g in self.image_groups
            }
            critic = CentralCritic(
                x_dim, act_dim, id_dim, config.critic_hidden_sizes, run_config.policy.activation,
                run_config.policy.normalize_obs, image_encoders,
            )
            self.groups[name] = _Group(spec, actors[name], critic, config, self.device)

        self._buffer: ReplayBuffer | None = None  # allocated on first use: eval and export never need it
        fields = self._buffer_fields()
        ensure_fits(
            ReplayBuffer.bytes_for(config.buffer_size, fields),
            f"a replay buffer of algorithm.buffer_size={config.buffer_size} rows of "
            + ", ".join(f"{k} {list(shape)} {str(dtype).replace('torch.', '')}" for k, (shape, dtype) in fields.items()
                        if k.rsplit("/", 1)[-1].startswith("obs")) + " (and their next_obs)",
            "algorithm.buffer_size",
        )
        self.steps_done = 0
        self.progress = Progress(config.total_steps)  # continued smoothly when a run is extended
        self.updates_done = 0
        self._since_update = 0
        self._min_rows = max(config.batch_size, min(config.learning_starts, config.buffer_size))
        self._losses: list[dict[str, float]] = []
        # The sub-policy each agent of each env copy plays this episode: [N, A_g] per group.
        self._sub_policy = {
            g: torch.randint(config.ensemble_size, (self.num_envs, grp.n_agents), generator=self.generator)
            if config.ensemble_size > 1 else torch.zeros((self.num_envs, grp.n_agents), dtype=torch.int64)
            for g, grp in self.groups.items()
        }

    # -- storage layout ---------------------------------------------------------------------------------

    @property
    def buffer(self) -> ReplayBuffer:
        if self._buffer is None:
            self._buffer = ReplayBuffer(self.cfg.buffer_size, self._buffer_fields(), self.device)
        return self._buffer

    def _buffer_fields(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        fields: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for g, grp in self.groups.items():
            a = grp.n_agents
            for key in ("obs", "next_obs"):
                if grp.packing is None:
                    fields[f"{g}/{key}"] = ((a, *grp.obs_shape), grp.obs_dtype)
                else:  # "<group>/obs.pixels" uint8 and "<group>/obs.values" float32
                    fields.update({f"{g}/{key}.{part}": spec for part, spec in grp.packing.parts((a,)).items()})
            fields[f"{g}/action"] = ((a, grp.head.encoding_dim), torch.float32)
            fields[f"{g}/reward"] = ((a,), torch.float32)
            fields[f"{g}/terminated"] = ((a,), torch.bool)
            fields[f"{g}/alive"] = ((a,), torch.bool)
            if self.cfg.ensemble_size > 1:
                fields[f"{g}/sub_policy"] = ((a,), torch.int64)
            if grp.spec.mask_dim:
                fields[f"{g}/mask"] = ((a, grp.head.mask_dim), torch.bool)
                fields[f"{g}/next_mask"] = ((a, grp.head.mask_dim), torch.bool)
        if self.cfg.critic_input == "state":
            fields["state"] = ((self.state_dim,), torch.float32)
            fields["next_state"] = ((self.state_dim,), torch.float32)
        return fields

    # -- collection -------------------------------------------------------------------------------------

    def noise_std(self) -> float:
        frac = min(1.0, self.progress.at(self.steps_done) / self.cfg.noise_decay_fraction)
        return self.cfg.noise_std + frac * (self.cfg.noise_std_final - self.cfg.noise_std)

    @torch.no_grad()
    def _act(self, obs: dict) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Exploratory actions for every group: what the env takes, and the critic's action vectors."""
        env_actions, reps = {}, {}
        noise_std = self.noise_std()
        for g, grp in self.groups.items():
            o = obs[g]
            x = torch.as_tensor(o.obs, device=self.device).reshape(self.num_envs, grp.n_agents, *grp.obs_shape)
            mask = None
            if grp.spec.mask_dim and o.mask is not None:
                mask = torch.as_tensor(o.mask, device=self.device).reshape(self.num_envs * grp.n_agents, -1)
            act = ensemble_act(
                grp.actors, grp.actor_input(x), mask, self._sub_policy[g].reshape(-1).to(self.device), explore=True,
                temperature=self.cfg.gumbel_temperature, noise_std=noise_std, generator=self.noise_generator,
            )
            outputs = {k: v.cpu().numpy() for k, v in grp.head.env_outputs(act.raw).items()}
            env_actions[g] = grp.head.to_env(outputs)
            reps[g] = act.encoding.reshape(self.num_envs, grp.n_agents, -1)
        return env_actions, reps

    def _collect(self, n_vector_steps: int) -> EndedEpisodes:
        episodes = EndedEpisodes()
        for _ in range(n_vector_steps):
            obs = self.training_env.observation()
            for g, grp in self.groups.items():
                grp.actor.update_normalizer(*grp.actor_input(torch.as_tensor(obs[g].obs, device=self.device)))
            actions, reps = self._act(obs)
            tr = self.training_env.vec().step(actions)
            rows: dict[str, Any] = {}
            dev = self.device
            for g, grp in self.groups.items():
                t = tr.groups[g]
                o = obs[g]
                rows[f"{g}/obs"] = torch.as_tensor(o.obs, device=dev)
                ended = np.asarray(t.terminated, dtype=bool) | np.asarray(t.truncated, dtype=bool)
                rows[f"{g}/next_obs"] = torch.as_tensor(_final(t.final_obs, t.next.obs, ended), device=dev)
                alive = torch.as_tensor(
                    np.asarray(o.alive if o.alive is not None else np.ones(t.reward.shape), dtype=bool), device=dev
                )
                # Dead agents' rows are placeholders: their action enters the others' critics as zeros.
                rows[f"{g}/action"] = reps[g] * alive.unsqueeze(-1)
                rows[f"{g}/reward"] = _f32(t.reward, dev)
                rows[f"{g}/terminated"] = torch.as_tensor(np.asarray(t.terminated, dtype=bool), device=dev)
                rows[f"{g}/alive"] = alive
                if self.cfg.ensemble_size > 1:
                    rows[f"{g}/sub_policy"] = self._sub_policy[g].clone()
                    # An agent whose episode ended plays a freshly drawn sub-policy in its next one.
                    redraw = torch.as_tensor(ended)
                    self._sub_policy[g][redraw] = torch.randint(
                        self.cfg.ensemble_size, (int(redraw.sum()),), generator=self.generator
                    )
                if grp.spec.mask_dim:
                    rows[f"{g}/mask"] = _mask(o.mask, t.reward.shape, grp.spec.mask_dim, dev)
                    # Where an agent's episode ended, the adapter gives the reset mask, not the final one, so
                    # the target actor sees an all-allowed mask there.
                    next_mask = _mask(t.next.mask, t.reward.shape, grp.spec.mask_dim, dev)
                    next_mask[torch.as_tensor(ended, device=dev)] = True
                    rows[f"{g}/next_mask"] = next_mask
            if self.cfg.critic_input == "state":
                first = next(iter(self.groups))
                t0 = tr.groups[first]
                rows["state"] = _f32(obs[first].state, dev)
                rows["next_state"] = _f32(t0.final_state if t0.final_state is not None else t0.next.state, dev)
            x, _ = self._critic_x(rows, False)
            for grp in self.groups.values():
                if grp.critic.x_dim:
                    grp.critic.normalizer.update(x)
            self.buffer.add(self._packed(rows))
            self.training_env.obs = {g: tr.groups[g].next for g in self.groups}
            self.steps_done += self.num_envs
            self._since_update += self.num_envs
            episodes.add(tr)
            while self._since_update >= self.cfg.train_every:
                self._since_update -= self.cfg.train_every
                # Counted in stored rows, so a run resumed without its buffer refills it before updating.
                if len(self.buffer) >= self._min_rows:
                    for _ in range(self.cfg.gradient_steps):
                        self._losses.append(self.update())
        return episodes

    def _packed(self, rows: dict[str, Any]) -> dict[str, Any]:
        """Buffer rows with the observations of groups whose Dict holds images packed (``_buffer_fields``)."""
        for g, grp in self.groups.items():
            if grp.packing is not None:
                for key in ("obs", "next_obs"):
                    rows[f"{g}/{key}.pixels"], rows[f"{g}/{key}.values"] = grp.packing.pack(rows.pop(f"{g}/{key}"))
        return rows

    def _unpacked(self, b: dict[str, Tensor]) -> dict[str, Tensor]:
        """Sampled rows with packed observations back as the flat float32 ``<group>/obs`` the networks take."""
        for g, grp in self.groups.items():
            if grp.packing is not None:
                for key in ("obs", "next_obs"):
                    b[f"{g}/{key}"] = grp.packing.unpack(b.pop(f"{g}/{key}.pixels"), b.pop(f"{g}/{key}.values"))
        return b

    # -- learning ---------------------------------------------------------------------------------------

    def _critic_x(self, b: dict[str, Tensor], nxt: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """The critics' observation part: (the state or the vector observations of all agents, flattened, as
        float32 ``[B, x_dim]``; the image observations ``{group: [B, A_g, *shape]}``)."""
        if self.cfg.critic_input == "state":
            return b["next_state" if nxt else "state"], {}
        key = "next_obs" if nxt else "obs"
        vectors = [b[f"{g}/{key}"].flatten(1).to(torch.float32) for g in self.groups if g not in self.image_groups]
        x = torch.cat(vectors, dim=-1) if vectors else torch.zeros(len(b[f"{next(iter(self.groups))}/{key}"]), 0,
                                                                  device=self.device)
        return x, {g: b[f"{g}/{key}"] for g in self.image_groups}

    def _q_all(self, critic: CentralCritic, grp: _Group, x: tuple[Tensor, dict[str, Tensor]], joint: Tensor) -> Tensor:
        """Q of every agent of ``grp``: ``joint [B, A_g, act_dim]`` (per-agent joint actions) → ``[B, A_g]``."""
        bsz, a = joint.shape[0], grp.n_agents
        h = critic.embed(*x)
        xs = h.unsqueeze(1).expand(bsz, a, h.shape[-1]).reshape(bsz * a, -1)
        ids = agent_ids(grp.critic_id_dim, bsz, h.device).reshape(bsz * a, a) if grp.critic_id_dim else None
        return critic(xs, joint.reshape(bsz * a, -1), ids).reshape(bsz, a)

    def update(self) -> dict[str, float]:
        """One gradient step of every group's critic, then every group's actor, then the soft updates."""
        cfg = self.cfg
        b = self._unpacked(self.buffer.sample(cfg.batch_size, self.generator))
        x, next_x = self._critic_x(b, False), self._critic_x(b, True)
        bsz = cfg.batch_size
        out: dict[str, float] = {}

        with torch.no_grad():
            next_reps = []
            for g, grp in self.groups.items():
                mask = b.get(f"{g}/next_mask")
                rep = ensemble_act(
                    grp.target_actors, grp.actor_input(b[f"{g}/next_obs"]),
                    None if mask is None else mask.reshape(bsz * grp.n_agents, -1), _rows(b.get(f"{g}/sub_policy")),
                    explore=True, temperature=cfg.gumbel_temperature, generator=self.noise_generator,
                ).encoding
                next_alive = b[f"{g}/alive"] & ~b[f"{g}/terminated"]
                next_reps.append((rep.reshape(bsz, grp.n_agents, -1) * next_alive.unsqueeze(-1)).flatten(1))
            next_joint = torch.cat(next_reps, dim=-1)
        buf_joint = torch.cat([b[f"{g}/action"].flatten(1) for g in self.groups], dim=-1)

        for g, grp in self.groups.items():
            a = grp.n_agents
            alive = b[f"{g}/alive"].float()
            with torch.no_grad():
                next_q = self._q_all(grp.target_critic, grp, next_x, next_joint.unsqueeze(1).expand(bsz, a, -1))
                y = b[f"{g}/reward"] + cfg.gamma * (1.0 - b[f"{g}/terminated"].float()) * next_q
            q = self._q_all(grp.critic, grp, x, buf_joint.unsqueeze(1).expand(bsz, a, -1))
            critic_loss = ((q - y).square() * alive).sum() / alive.sum().clamp_min(1.0)
            grp.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            nn.utils.clip_grad_norm_(grp.critic.parameters(), cfg.max_grad_norm)
            grp.critic_opt.step()
            out[f"losses/{g}/critic"] = float(critic_loss.detach())
            out[f"losses/{g}/q"] = float((q.detach() * alive).sum() / alive.sum().clamp_min(1.0))

        # Actors: agent i's row replaces only agent i's action in the joint action with its actor's current
        # (straight-through) action; the others stay as sampled from the buffer.
        offsets, start = {}, 0
        for g, grp in self.groups.items():
            width = grp.n_agents * grp.head.encoding_dim
            offsets[g] = (start, start + width)
            start += width
        for g, grp in self.groups.items():
            a, d = grp.n_agents, grp.head.encoding_dim
            obs = b[f"{g}/obs"]
            alive = b[f"{g}/alive"].float()
            mask = b.get(f"{g}/mask")
            act = ensemble_act(
                grp.actors, grp.actor_input(obs), None if mask is None else mask.reshape(bsz * a, -1),
                _rows(b.get(f"{g}/sub_policy")), explore=True, temperature=cfg.gumbel_temperature,
                generator=self.noise_generator,
            )
            rep = act.encoding.reshape(bsz, a, d)
            lo, hi = offsets[g]
            own = buf_joint[:, lo:hi].reshape(bsz, 1, a, d).expand(bsz, a, a, d)
            replaced = torch.where(grp.eye.bool().reshape(1, a, a, 1), rep.unsqueeze(1), own).reshape(bsz, a, a * d)
            joint = torch.cat(
                [buf_joint[:, :lo].unsqueeze(1).expand(bsz, a, lo), replaced,
                 buf_joint[:, hi:].unsqueeze(1).expand(bsz, a, buf_joint.shape[1] - hi)], dim=-1
            )
            grp.critic.requires_grad_(False)  # the actor loss needs dQ/da only, not the critic's weight grads
            q = self._q_all(grp.critic, grp, x, joint)
            grp.critic.requires_grad_(True)
            n_alive = alive.sum().clamp_min(1.0)
            pg_loss = -(q * alive).sum() / n_alive
            reg = (act.params.reshape(bsz, a, -1).square().mean(-1) * alive).sum() / n_alive
            actor_loss = pg_loss + cfg.action_reg * reg
            for opt in grp.actor_opts:
                opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            for actor, opt in zip(grp.actors, grp.actor_opts, strict=True):
                nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                opt.step()
            out[f"losses/{g}/actor"] = float(pg_loss.detach())

        for grp in self.groups.values():
            for target, actor in zip(grp.target_actors, grp.actors, strict=True):
                soft_update(target, actor, cfg.tau)
            soft_update(grp.target_critic, grp.critic, cfg.tau)
        self.updates_done += 1
        return out

    # -- the Algorithm protocol -------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        self._losses = []
        remaining = max(1, self.cfg.total_steps - self.steps_done)
        n = max(1, math.ceil(min(self.cfg.iteration_steps, remaining) / self.num_envs))
        episodes = self._collect(n)
        for grp in self.groups.values():
            for actor in grp.actors:
                actor.head.set_progress(self.progress.at(self.steps_done))
        metrics = episodes.metrics()
        if self._losses:
            for key in self._losses[0]:
                metrics[key] = float(np.mean([loss[key] for loss in self._losses]))
            for part in ("critic", "actor"):
                metrics[f"losses/{part}"] = float(
                    np.mean([metrics[f"losses/{g}/{part}"] for g in self.groups])
                )
        metrics["charts/noise_std"] = self.noise_std()
        metrics["charts/updates"] = float(self.updates_done)
        metrics["charts/buffer_size"] = float(len(self.buffer))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "groups": {
                g: {
                    "actors": [a.state_dict() for a in grp.actors],
                    "critic": grp.critic.state_dict(),
                    "target_actors": [a.state_dict() for a in grp.target_actors],
                    "target_critic": grp.target_critic.state_dict(),
                    "actor_opts": [o.state_dict() for o in grp.actor_opts],
                    "critic_opt": grp.critic_opt.state_dict(),
                    "sub_policy": self._sub_policy[g],
                }
                for g, grp in self.groups.items()
            },
            "steps_done": self.steps_done,
            "updates_done": self.updates_done,
            "since_update": self._since_update,
            "progress": self.progress.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.noise_generator is not self.generator:
            state["noise_generator"] = self.noise_generator.get_state()
        if self.cfg.checkpoint_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, grp in self.groups.items():
            s = state["groups"][g]
            if "actor" in s:  # a checkpoint from before policy ensembles: one actor, singular keys
                s = {**s, "actors": [s["actor"]], "target_actors": [s["target_actor"]],
                     "actor_opts": [s["actor_opt"]]}
            if "head.out.weight" in s["actors"][0] and any(k.startswith("head.base.") for k in s["actors"][0]):
                raise ValueError(
                    f"group {g!r} was trained by a maddpg from before it used the registered action head as it is "
                    "(its actors wrap the head: head.out and head.base.* weights), and this version cannot play that layout: retrain "
                    "the run, or export it with the agentkit version that trained it"
                )
            if len(s["actors"]) != len(grp.actors):
                raise ValueError(
                    f"group {g!r} has {len(s['actors'])} sub-policies in the checkpoint and "
                    f"algorithm.ensemble_size is {len(grp.actors)}: keep the run's ensemble_size"
                )
            for modules, key in ((grp.actors, "actors"), (grp.target_actors, "target_actors"),
                                 (grp.actor_opts, "actor_opts")):
                for module, module_state in zip(modules, s[key], strict=True):
                    module.load_state_dict(module_state)
            grp.critic.load_state_dict(s["critic"])
            grp.target_critic.load_state_dict(s["target_critic"])
            grp.critic_opt.load_state_dict(s["critic_opt"])
            if "sub_policy" in s and s["sub_policy"].shape == self._sub_policy[g].shape:
                self._sub_policy[g] = s["sub_policy"].clone()  # (eval may build fewer env copies)
        self.steps_done = int(state["steps_done"])
        self.updates_done = int(state["updates_done"])
        self._since_update = int(state["since_update"])
        self.progress.load_state_dict(state.get("progress"), self.steps_done)
        self.generator.set_state(state["generator"])
        if self.noise_generator is not self.generator and "noise_generator" in state:
            self.noise_generator.set_state(state["noise_generator"])
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])

    def policies(self) -> list[PolicyArtifact]:
        return [
            PolicyArtifact(
                name=g,
                actor=grp.actor,
                observation_space=grp.spec.observation_space,
                action_space=grp.spec.action_space,
                agents=list(grp.spec.agents),
                deterministic_only=True,
                uses_mask=grp.spec.mask_dim > 0,
                observation_fields=grp.spec.observation_fields,
            )
            for g, grp in self.groups.items()
        ]

    def close(self) -> None:
        self.training_env.close()


def _rows(per_agent: Tensor | None) -> Tensor | None:
    """``[B, A]`` → ``[B * A]``, the row order of ``_Group.actor_input``."""
    return None if per_agent is None else per_agent.reshape(-1)


def _f32(x: Any, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


def _mask(mask: np.ndarray | None, shape: tuple[int, ...], width: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones((*shape, width), dtype=torch.bool, device=device)
    return torch.as_tensor(np.asarray(mask), device=device).bool().reshape(*shape, width)


def _final(final: np.ndarray | None, nxt: np.ndarray, ended: np.ndarray) -> np.ndarray:
    """The true next observation ``[N, A, *obs_shape]``: ``final`` where an agent's episode ended (its env
    copy may already be reset), else ``nxt``."""
    if final is None:
        return nxt
    return np.where(ended.reshape(*ended.shape, *([1] * (nxt.ndim - ended.ndim))), final, nxt)


# --------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------


@agentkit.hookimpl
def agentkit_register_algorithms(register) -> None:
    register(
        "maddpg",
        MADDPG,
        MADDPGConfig,
        "MADDPG: deterministic actors, centralised critics; continuous, discrete and hybrid actions with masks",
    )
