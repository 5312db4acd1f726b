"""Policy assembly: observation normaliser, MLP layers, actor (encoder + any action head) and critic.

The actor never branches on the head or the encoder it holds: it encodes and hands the latent (and mask)
to the head. Observation normalisation lives in the encoder as buffers, so checkpoints and exports carry it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.nn import functional as F

from agentkit.config import PolicyConfig
from agentkit.encoders import Encoder, EncoderSpec, build_encoder, image_fields, image_layout
from agentkit.heads import ActionDistribution, ActionHead
from agentkit.moments import merge_moments

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with ``gain``, constant bias (√2 hidden, 0.01 policy output, 1.0 value output)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLP(nn.Sequential):
    """Linear and activation layers in order: an ``nn.Sequential`` (the same state-dict keys, ``0.weight`` ...)
    whose forward runs each layer's op without ``nn.Module.__call__`` on the layers.

    For the small networks of game agents that per-layer dispatch (hook checks, parameter lookups) costs about
    as much as the arithmetic: 40% of a [64, 64] trunk's forward at batch 8 (benchmarks/RESULTS.md, "PPO speed
    vs SB3"). The ops and so the results are the same; hooks registered on the layers themselves are not run
    (hooks on the MLP are).
    """

    def forward(self, x: Tensor) -> Tensor:
        for layer in self._modules.values():
            if type(layer) is nn.Linear:
                params = layer._parameters
                x = F.linear(x, params["weight"], params["bias"])  # type: ignore[arg-type]
            else:
                x = layer.forward(x)  # type: ignore[union-attr]
        return x


def mlp(in_dim: int, hidden_sizes: list[int], activation: str) -> MLP:
    """Hidden layers only; the output layer belongs to the head or the value output."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, width)), ACTIVATIONS[activation]()]
        in_dim = width
    return MLP(*layers)


class ObsNormalizer(nn.Module):
    """Running mean/std of observations (parallel-variance update), applied with clipping.

    Stats are buffers: saved in checkpoints, traced into the ONNX graph. ``update`` is called by the
    algorithm on collected observations; ``forward`` only reads the stats. Disabled, it is the identity.
    """

    mean: Tensor  # buffers (register_buffer)
    var: Tensor
    count: Tensor

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, enabled: bool = True, eps: float = 1e-8):
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        if not self.enabled:
            return
        batch = batch.reshape(-1, *self.mean.shape).double()
        mean, var, count = merge_moments(self.mean, self.var, self.count, batch.mean(0),
                                         batch.var(0, unbiased=False), batch.shape[0])
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)

    def forward(self, obs: Tensor) -> Tensor:
        if not self.enabled:
            return obs
        mean, std = self.mean.to(obs.dtype), torch.sqrt(self.var + self.eps).to(obs.dtype)
        return torch.clamp((obs - mean) / std, -self.clip, self.clip)


def _read_round1_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: rename a checkpoint's keys from before encoders were plugins.

    Actors and critics then held ``normalizer.*`` and ``trunk.*`` (the MLP) themselves; both now sit in the
    MLP encoder as ``encoder.normalizer.*`` and ``encoder.net.*``. Renaming keeps runs trained before the
    change loadable for resume, eval and export; a checkpoint that already has ``encoder.*`` keys is untouched.
    """
    if any(key.startswith(prefix + "encoder.") for key in state_dict):
        return
    for old, new in (("normalizer.", "encoder.normalizer."), ("trunk.", "encoder.net.")):
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class _Encoded(nn.Module):
    """What an actor and a critic share: an encoder (``agentkit.encoders``) in front of their own layers.

    The encoder holds the observation normaliser and does any pixel scaling and layout change, so
    checkpoints and exports carry them.
    """

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        self.register_load_state_dict_pre_hook(_read_round1_keys)

    @property
    def trunk(self) -> Encoder:
        """The encoder (the name PPO's optimiser groups and shared trunks use)."""
        return self.encoder

    @property
    def normalizer(self) -> nn.Module:
        return self.encoder.normalizer

    def update_normalizer(self, x: Tensor, agent_id: Tensor | None = None) -> None:
        """Feed collected raw inputs (any leading axes) to the encoder's running normaliser."""
        self.encoder.update_stats(x, agent_id)


class Actor(_Encoded):
    """obs (raw, the env's shape and dtype) [⊕ one-hot agent id] → encoder → head → ActionDistribution.

    ``id_dim`` (the group's ``agent_id_dim``, 0 for none) is the width of the one-hot agent id a shared policy
    reads beside the observation, and the actor appends it itself: called with ``agent_id=None`` on rows in
    env-major order (row ``n * id_dim + a`` is agent ``a`` of env copy ``n``: the order of a multi-agent vector
    env's flattened group, of eval, and of the runtimes' batches), it builds the ids with ``ids``. A caller
    whose rows are in another order (a shuffled minibatch, a subset of seats) passes the ids it took from
    ``ids``; the ONNX export passes its ``agent_id`` input (the contract's one-hot, built by the engine).
    """

    def __init__(self, encoder: Encoder, head_factory, id_dim: int = 0):
        super().__init__(encoder)
        self.head: ActionHead = head_factory(encoder.out_dim)
        self.id_dim = int(id_dim)

    def ids(self, batch: int, device: torch.device | str | None = None) -> Tensor | None:
        """The one-hot ids of ``batch`` env copies' agents ``[batch, id_dim, id_dim]`` (``agent_ids``), or None
        for an actor without ids."""
        return agent_ids(self.id_dim, batch, device) if self.id_dim else None

    def _with_ids(self, obs: Tensor, agent_id: Tensor | None) -> Tensor | None:
        if agent_id is not None or not self.id_dim:
            return agent_id
        rows = obs.shape[0]
        if rows % self.id_dim:
            raise ValueError(
                f"the actor appends one-hot agent ids to rows in env-major order ({self.id_dim} agents per env copy), "
                f"but got {rows} rows; pass agent_id for rows in another order"
            )
        return agent_ids(self.id_dim, rows // self.id_dim, obs.device).reshape(rows, self.id_dim)

    def latent(self, obs: Tensor, agent_id: Tensor | None = None) -> Tensor:
        return self.encoder(obs, self._with_ids(obs, agent_id))

    def forward(self, obs: Tensor, mask: Tensor | None = None, agent_id: Tensor | None = None) -> ActionDistribution:
        return self.head(self.latent(obs, agent_id), mask)

    def update_normalizer(self, x: Tensor, agent_id: Tensor | None = None) -> None:
        """Feed collected raw observations (``[B, ...]`` env-major rows, or any leading axes with ``agent_id``)
        to the encoder's running normaliser."""
        self.encoder.update_stats(x, self._with_ids(x, agent_id))


class Critic(_Encoded):
    """input (raw obs or global state) [⊕ agent id] → encoder → scalar value ``[B]``.

    With ``share_with`` it reuses an actor's encoder (and so its normaliser) instead of owning its own.
    """

    def __init__(self, encoder: Encoder | None, share_with: Actor | None = None):
        chosen = share_with.encoder if share_with is not None else encoder
        if chosen is None:
            raise ValueError("Critic needs an encoder or an actor to share one with")
        super().__init__(chosen)
        self.value_out = layer_init(nn.Linear(self.encoder.out_dim, 1), gain=1.0)

    def forward(self, x: Tensor, agent_id: Tensor | None = None) -> Tensor:
        return self.value_out(self.encoder(x, agent_id)).squeeze(-1)


def agent_id_dim(n_agents: int, enabled: bool = True) -> int:
    """The one rule for the width of the one-hot agent id a group's shared networks read: the group's size when
    ids are on (an algorithm's ``agent_id`` option) and it has several agents, else 0 (one agent needs no id).
    ``PolicyArtifact.agent_id_dim`` and the ONNX ``agent_id`` input carry it to eval, export and the runtimes."""
    return int(n_agents) if enabled and n_agents > 1 else 0


def agent_ids(width: int, batch: int, device: torch.device | str | None = None) -> Tensor:
    """One-hot agent ids ``[batch, width, width]``: ``[b, a]`` is agent ``a``'s id (an expanded view, no copy).

    The one place ids are built for training, eval and export; flattened env-major (``reshape(-1, width)``)
    row ``n * width + a`` is agent ``a`` of env copy ``n``, the row order of a multi-agent vector env."""
    return torch.eye(width, device=device).expand(batch, width, width)


def resolve_head(policy_config: PolicyConfig, registry, action_space):
    """The head registration and config for ``policy.head`` (``auto`` asks the registry)."""
    if policy_config.head == "auto":
        reg = registry.auto_head(action_space)
        return reg, reg.default_config()
    return registry.get("action_head", policy_config.head.plugin, where="policy.head.plugin"), policy_config.head


def vector_space(dim: int) -> spaces.Box:
    """An unbounded float32 vector of ``dim`` (a global state, a concatenation of inputs)."""
    return spaces.Box(-np.inf, np.inf, (int(dim),), np.float32)


def shares_encoder(policy_config: PolicyConfig, observation_space, fields: list[dict[str, Any]] | None = None) -> bool:
    """Whether the critic shares the actor's encoder: ``policy.shared_trunk``, or for ``auto`` whether the
    observation is an image or a Dict/Tuple holding one (a second CNN would double the cost of every step and
    update for little gain). Only for a critic that reads the actor's input; a global-state critic never shares."""
    if policy_config.shared_trunk != "auto":
        return bool(policy_config.shared_trunk)
    return image_layout(observation_space) is not None or bool(image_fields(EncoderSpec(observation_space, fields)))


def resolve_shared_trunk(config: Any, env: Any) -> Any:
    """``config`` (a RunConfig) with ``policy.shared_trunk: auto`` made the bool it means for ``env``'s
    observations (``shares_encoder``; False where the critic reads a global state, ``algorithm.centralised``),
    so that the run dir records what was built and a ``--resume`` of a run saved before this default compares
    like with like. Left ``auto`` when the policy groups of a multi-agent env would differ."""
    if config.policy.shared_trunk != "auto":
        return config
    if getattr(config.algorithm, "centralised", False):
        shared = {False}
    elif env.multi_agent:
        shared = {shares_encoder(config.policy, g.observation_space, g.observation_fields)
                  for g in env.groups.values()}
    else:
        shared = {shares_encoder(config.policy, env.observation_space, env.observation_fields)}
    if len(shared) != 1:
        return config
    policy = config.policy.model_copy(update={"shared_trunk": shared.pop()})
    return config.model_copy(update={"policy": policy})


def encoder_for(policy_config: PolicyConfig, registry, observation_space, extra_dim: int = 0,
                fields: list[dict[str, Any]] | None = None) -> Encoder:
    """The encoder ``policy.encoder`` names (or ``auto`` picks) for one observation space (a Box in the env's
    shape; ``fields`` when it is a flattened Dict or Tuple) plus ``extra_dim`` appended features."""
    return build_encoder(policy_config, registry, EncoderSpec(observation_space, fields, int(extra_dim)))


def build_actor(policy_config: PolicyConfig, registry, observation_space, action_space, id_dim: int = 0,
                fields: list[dict[str, Any]] | None = None) -> Actor:
    """The actor for an observation space, appending a one-hot agent id of ``id_dim`` (``agent_id_dim``; 0:
    none) to its encoder's input (``Actor``)."""
    reg, head_config = resolve_head(policy_config, registry, action_space)
    encoder = encoder_for(policy_config, registry, observation_space, id_dim, fields)
    return Actor(encoder, lambda latent_dim: reg.factory(head_config, action_space, latent_dim), id_dim)


def build_critic(policy_config: PolicyConfig, registry, input_space, extra_dim: int = 0,
                 fields: list[dict[str, Any]] | None = None, share_with: Actor | None = None,
                 observation: bool = True) -> Critic:
    """A critic reading ``input_space``, or sharing an actor's encoder. ``observation`` False: the input is a
    global state (``vector_space(state_dim)``) rather than the observation, so ``policy.encoder`` (named for
    the observation) does not apply and ``auto`` picks the state's encoder."""
    if share_with is not None:
        return Critic(None, share_with=share_with)
    if not observation:
        policy_config = policy_config.model_copy(update={"encoder": "auto"})
    return Critic(encoder_for(policy_config, registry, input_space, extra_dim, fields))
