"""Serve a gymnasium env over the agentkit bridge, as a game would (an example of the Python client, and
what the tests and benchmarks run as "a game outside the trainer").

    python exports/python/serve_gymnasium.py agentkit/Dungeon-v0 --port 11008
    # in a run config: command: "python exports/python/serve_gymnasium.py agentkit/Moving-v0 --port {port} --instance {instance}"

One agent named ``agent``. The observation is a Box of any shape (uint8 frames travel as uint8, other
integer Boxes as int32, the rest as float32) or a Dict of Boxes, whose ``action_mask`` entry (PettingZoo's
convention, Dungeon's) travels as the action mask; actions Discrete, MultiDiscrete, Box or agentkit's
HybridSpace. ``info`` numbers at each step travel as info scalars. ``--instances N`` serves N copies of the
env from this one process (``bridge.serve_many``; ``env.instances_per_process`` launches it so). Test knobs: ``--crash-at N`` exits
the process at the N-th step (a game that crashes), ``--hang-at N`` stops answering there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentkit_bridge as bridge  # noqa: E402


def _wire_dtype(box: spaces.Box) -> str:
    if box.dtype == np.uint8:
        return "uint8"
    return "int32" if np.issubdtype(box.dtype, np.integer) else "float32"


def _obs_box(box: spaces.Space, what: str) -> dict:
    if not isinstance(box, spaces.Box):
        raise SystemExit(f"serve_gymnasium: {what} must be a Box, got {box}")
    return bridge.obs_box(list(box.shape), _wire_dtype(box), box.low, box.high)


def observation_of(obs_space: spaces.Space) -> tuple[dict, bool]:
    """The observation declaration and whether a Dict's ``action_mask`` entry is the mask."""
    if not isinstance(obs_space, spaces.Dict):
        return _obs_box(obs_space, "the observation"), False
    masked = "action_mask" in obs_space.spaces
    rest = {k: v for k, v in obs_space.spaces.items() if k != "action_mask"}
    if list(rest) == ["observation"]:  # PettingZoo's {"observation": Box, "action_mask": ...}
        return _obs_box(rest["observation"], "entry 'observation'"), masked
    return bridge.dict_obs({k: _obs_box(v, f"entry {k!r}") for k, v in rest.items()}), masked


def describe(env: gym.Env) -> dict:
    obs, masked = observation_of(env.observation_space)
    act = env.action_space
    if hasattr(act, "type_names"):  # agentkit.spaces.HybridSpace
        owned = {t: [act.param_names[i] for i in ps] for t, ps in zip(act.type_names, act.type_params, strict=True)}
        bounds = {p: (float(lo), float(hi)) for p, lo, hi in zip(act.param_names, act.low, act.high, strict=True)}
        action = bridge.hybrid(owned, bounds)
    elif isinstance(act, spaces.Discrete):
        action = bridge.discrete(int(act.n), int(act.start))
    elif isinstance(act, spaces.MultiDiscrete):
        action = bridge.multi_discrete(act.nvec.tolist())
    elif isinstance(act, spaces.Box):
        action = bridge.box(list(act.shape), act.low, act.high)
    else:
        raise SystemExit(f"serve_gymnasium: cannot serve the action space {act}")
    return bridge.agent("agent", obs, action, mask=masked)


_NUMBERS = (bool, int, float, np.bool_, np.number)


class GymGame:
    def __init__(self, env: gym.Env, crash_at: int | None, hang_at: int | None):
        self.env = env
        space = env.observation_space
        self.masked = isinstance(space, spaces.Dict) and "action_mask" in space.spaces
        self.only = isinstance(space, spaces.Dict) and [k for k in space.spaces if k != "action_mask"] == ["observation"]
        self.steps = 0
        self.crash_at, self.hang_at = crash_at, hang_at

    def _split(self, obs):
        mask = [obs["action_mask"]] if self.masked else None
        if self.only:
            return [obs["observation"]], mask
        if isinstance(obs, dict):
            return [{k: v for k, v in obs.items() if k != "action_mask"}], mask
        return [obs], mask

    def reset(self, seed, params):
        obs, _ = self.env.reset(seed=seed)
        o, m = self._split(obs)
        return bridge.Reset(obs=o, mask=m)

    def render(self):
        return self.env.render() if self.env.render_mode == "rgb_array" else None

    def step(self, actions):
        self.steps += 1
        if self.crash_at is not None and self.steps >= self.crash_at:
            os._exit(3)
        if self.hang_at is not None and self.steps >= self.hang_at:
            time.sleep(3600)
        obs, reward, term, trunc, info = self.env.step(actions[0])
        o, m = self._split(obs)
        # the numbers among the info values, as they are (a non-finite one reads as "nothing to report")
        scalars = {k: v for k, v in info.items() if isinstance(v, _NUMBERS)}
        return bridge.Step(obs=o, reward=[reward], terminated=[term], truncated=[trunc], mask=m, info=scalars)


def make(env_id: str) -> gym.Env:
    try:  # frames for `agentkit eval --gif`: rgb_array envs draw only when render() is called
        return gym.make(env_id, render_mode="rgb_array")
    except (TypeError, ValueError, gym.error.Error):
        return gym.make(env_id)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("env_id")
    p.add_argument("--crash-at", type=int, default=None)
    p.add_argument("--hang-at", type=int, default=None)
    args = bridge.parse_args(argv, p)
    if args.env_id.startswith("agentkit/"):
        import agentkit_envs.games  # noqa: F401  (registers the ids)
    env = make(args.env_id)
    # env.instances_per_process: this process serves instances --instance, --instance + 1, ... (one: bridge.serve)
    games = [GymGame(env, args.crash_at, args.hang_at)]
    games += [GymGame(make(args.env_id), args.crash_at, args.hang_at) for _ in range(args.instances - 1)]
    try:
        bridge.serve_many(games, name=args.env_id, agents=[describe(env)], host=args.host, port=args.port,
                          transport=args.transport, instance=args.instance, token=args.token,
                          connect_timeout=args.connect_timeout)
    except bridge.BridgeError as exc:  # the trainer refused the game, or nothing listened: one line, exit 2
        print(f"serve_gymnasium: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
