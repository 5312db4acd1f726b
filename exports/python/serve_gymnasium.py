"""Serve a gymnasium env over the agentkit bridge, as a game would (an example of the Python client, and
what the tests and benchmarks run as "a game outside the trainer").

    python exports/python/serve_gymnasium.py agentkit/Dungeon-v0 --port 11008
    # in a run config: command: "python exports/python/serve_gymnasium.py agentkit/Moving-v0 --port {port} --instance {instance}"

One agent named ``agent``. The observation must be a Box, or a Dict of a Box ``observation`` and an
``action_mask`` (PettingZoo's convention, Dungeon's); actions Discrete, MultiDiscrete, Box or agentkit's
HybridSpace. ``info`` numbers at each step travel as info scalars. Test knobs: ``--crash-at N`` exits
the process at the N-th step (a game that crashes), ``--hang-at N`` stops answering there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentkit_bridge as bridge  # noqa: E402


def describe(env: gym.Env) -> dict:
    obs_space = env.observation_space
    masked = isinstance(obs_space, spaces.Dict) and "action_mask" in obs_space.spaces
    box = obs_space["observation"] if masked else obs_space
    if not isinstance(box, spaces.Box):
        raise SystemExit(f"serve_gymnasium: needs a Box observation, got {obs_space}")
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
    return bridge.agent("agent", list(box.shape), action, mask=masked, low=box.low, high=box.high)


class GymGame:
    def __init__(self, env: gym.Env, crash_at: int | None, hang_at: int | None):
        self.env = env
        self.masked = isinstance(env.observation_space, spaces.Dict)
        self.steps = 0
        self.crash_at, self.hang_at = crash_at, hang_at

    def _split(self, obs):
        if self.masked:
            return [obs["observation"]], [obs["action_mask"]]
        return [obs], None

    def reset(self, seed, params):
        obs, _ = self.env.reset(seed=seed)
        o, m = self._split(obs)
        return bridge.Reset(obs=o, mask=m)

    def step(self, actions):
        self.steps += 1
        if self.crash_at is not None and self.steps >= self.crash_at:
            os._exit(3)
        if self.hang_at is not None and self.steps >= self.hang_at:
            time.sleep(3600)
        obs, reward, term, trunc, info = self.env.step(actions[0])
        o, m = self._split(obs)
        scalars = {k: [float(v)] for k, v in info.items()
                   if isinstance(v, bool | int | float | np.bool_ | np.number) and math.isfinite(float(v))}
        return bridge.Step(obs=o, reward=[reward], terminated=[term], truncated=[trunc], mask=m, info=scalars)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("env_id")
    p.add_argument("--crash-at", type=int, default=None)
    p.add_argument("--hang-at", type=int, default=None)
    args = bridge.parse_args(argv, p)
    if args.env_id.startswith("agentkit/"):
        import agentkit_envs.games  # noqa: F401  (registers the ids)
    env = gym.make(args.env_id)
    game = GymGame(env, args.crash_at, args.hang_at)
    bridge.serve(game, name=args.env_id, agents=[describe(env)], host=args.host, port=args.port,
                 transport=args.transport, instance=args.instance, token=args.token)


if __name__ == "__main__":
    main()
