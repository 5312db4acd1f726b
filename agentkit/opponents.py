"""Fixed opponents for turn-based games: who plays the other seats in ``agentkit eval --opponent``.

An opponent chooses the move of the agent to move in a PettingZoo AEC env (the env copy the match is played
on): ``opponent.act(env, agent) -> action``; ``reset(seed)`` is called before each game (``Opponent``).

Opponents are plugins (``agentkit_register_opponents``): a spec ``NAME[:ARG]`` names a registered one, the
``:ARG`` setting the field its config model's ``argument`` names. The built-ins, registered through the same
hook by ``agentkit_plugins.opponents``, are ``random`` and ``minimax[:DEPTH]``. A spec that names no
registered opponent but an ``.onnx`` file or a run dir is a trained policy (``PolicyOpponent``).

This module holds what every opponent may use: ``legal_moves``, ``game_over`` and ``clone_env`` (an
independent copy of an AEC env in its position, for searching players).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from gymnasium import spaces
from pydantic import ValidationError

from agentkit.errors import UserError

if TYPE_CHECKING:
    from agentkit.registry import Registry

MASK = "action_mask"


class Opponent(Protocol):
    name: str

    def reset(self, seed: int | None) -> None: ...

    def act(self, env: Any, agent: str) -> Any: ...


def legal_moves(env: Any, agent: str, observation: Any = None) -> np.ndarray:
    """The indices of the agent's allowed actions: its ``action_mask`` (a Dict observation's entry, or the
    info's), else every action of its Discrete space."""
    raw = env.observe(agent) if observation is None else observation
    mask = raw.get(MASK) if isinstance(raw, dict) else None
    if mask is None:
        mask = (env.infos.get(agent) or {}).get(MASK)
    if mask is not None:
        return np.flatnonzero(np.asarray(mask).reshape(-1))
    space = env.action_space(agent)
    if not isinstance(space, spaces.Discrete):
        raise UserError(f"the shipped opponents play Discrete actions; agent {agent!r} has {space}.")
    return np.arange(int(space.n)) + int(space.start)


def is_done(env: Any, agent: str) -> bool:
    """True when ``agent`` is terminated or truncated in the AEC env."""
    return bool(env.terminations.get(agent, False) or env.truncations.get(agent, False))


def game_over(env: Any) -> bool:
    """True when no agent of the AEC env is still playing."""
    return all(is_done(env, a) for a in env.agents)


def clone_env(env: Any) -> Any:
    """An independent copy of an AEC env in its current position, wrappers included.

    Not ``copy.deepcopy``: pettingzoo's envs are ``EzPickle``, whose copies are rebuilt from the constructor's
    arguments (a fresh game). Each layer's attributes are copied instead (one pickle round trip, several
    times faster than deep-copying them), sharing the spaces, which a move never changes.
    """
    layers, shared, states = [], [], []
    layer = env
    while layer is not None:
        layers.append(layer)
        keep, state = {}, {}
        for key, value in vars(layer).items():
            if key == "env" or _is_spaces(value):
                keep[key] = value
            else:
                state[key] = value
        shared.append(keep)
        states.append(state)
        layer = getattr(layer, "env", None)
    try:
        states = pickle.loads(pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an attribute that does not pickle (a render window, say): copy it the slow way
        states = copy.deepcopy(states)
    copies = [object.__new__(type(layer)) for layer in layers]
    for i, (new, keep, state) in enumerate(zip(copies, shared, states, strict=True)):
        new.__dict__.update(state)
        new.__dict__.update({k: v for k, v in keep.items() if k != "env"})
        if "env" in keep:
            new.__dict__["env"] = copies[i + 1]
    return copies[0]


def _is_spaces(value: Any) -> bool:
    return isinstance(value, spaces.Space) or (
        isinstance(value, dict) and bool(value) and all(isinstance(v, spaces.Space) for v in value.values())
    )


class PolicyOpponent:
    """A trained policy as an opponent: ``act(obs [1, D], mask [1, M] | None) -> env action`` (an
    ``agentkit.evaluation.Act``) on the agent's flattened observation (``split(agent, raw) -> (obs, mask)``)."""

    def __init__(self, name: str, act: Callable[[str, np.ndarray, np.ndarray | None], Any],
                 split: Callable[[str, Any], tuple[np.ndarray, np.ndarray | None]]):
        self.name = name
        self._act = act
        self._split = split

    def reset(self, seed: int | None) -> None:
        pass

    def act(self, env: Any, agent: str) -> Any:
        obs, mask = self._split(agent, env.observe(agent))
        return self._act(agent, obs, mask)


def make_opponent(spec: str, seed: int | None, registry: Registry,
                  policy_opponent: Callable[[Path], Opponent]) -> Opponent:
    """The opponent a spec names: a registered opponent ``NAME[:ARG]`` (``random``, ``minimax:4``, a
    plugin's), else an ``.onnx`` file or a run dir (built by ``policy_opponent(path)``). UserError for
    anything else, or for an argument the opponent's config model refuses."""
    name, sep, arg = spec.partition(":")
    names = registry.names("opponent")
    if name in names:
        reg = registry.get("opponent", name)
        field = getattr(reg.config_model, "argument", None)
        section: dict[str, Any] = {"plugin": name}
        if sep:
            if field is None:
                raise UserError(f"--opponent {spec!r}: the opponent {name!r} takes no argument; write {name}.")
            section[field] = arg
        try:
            config = reg.validate_config(section)
        except ValidationError as exc:
            problems = "; ".join(f"{e['msg']} (got {e.get('input')!r})" for e in exc.errors())
            raise UserError(f"--opponent {spec!r}: {field or name}: {problems}.") from None
        return reg.factory(config, seed)
    path = Path(spec)
    if path.suffix == ".onnx" and path.is_file() or path.is_dir():
        return policy_opponent(path)
    raise UserError(
        f"--opponent {spec!r}: not a registered opponent ({', '.join(f'{n}' for n in names) or 'none'}; "
        "`agentkit plugins` lists them), an existing .onnx file or a run dir."
    )
