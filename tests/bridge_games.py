"""Games for the bridge tests, run as separate processes: ``python tests/bridge_games.py MODE --port P``.

A tiny single-agent game on the Python client (exports/python/agentkit_bridge.py), "counter": the
observation is [t / 10, params.bonus], action Discrete(2) with a mask, reward = action, episode of 5 steps
(truncated). Modes make it misbehave the way real games do:

    good            plays correctly
    protocol9       says hello with protocol 9 (a version this trainer does not speak)
    other-spaces    instance >= 1 declares an observation of 3 numbers instead of 2
    bad-blob        its step_result carries an 'obs' blob of the wrong size
    oversized       announces a 64 MiB frame at the first step
    disconnect      closes the connection at the 3rd step (the process stays alive)
    two-agents      two agents; agent b leaves (terminated) at step 2, a plays on
    mixed           protocol 2: a Dict observation {pos: float32 [2] = (0.5, -t), grid: uint8 [2, 2] = 250 + t,
                    count: int32 [1] = t}
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "exports", "python"))
import agentkit_bridge as bridge  # noqa: E402

EPISODE = 5


class Counter:
    def __init__(self, mode: str, conn_holder: dict):
        self.mode = mode
        self.t = 0
        self.bonus = 0.0
        self.conn_holder = conn_holder
        self.total_steps = 0

    def _obs(self, n: int = 1):
        if self.mode == "mixed":
            return [{"pos": [0.5, -self.t], "grid": np.full((2, 2), 250 + self.t), "count": [self.t]}]
        return [np.array([self.t / 10, self.bonus], np.float32)] * n

    def reset(self, seed, params):
        self.t = 0
        self.bonus = float(params.get("bonus", 0.0))
        n = 2 if self.mode == "two-agents" else 1
        return bridge.Reset(obs=self._obs(n), mask=[[1, 1]] * n)

    def step(self, actions):
        self.t += 1
        self.total_steps += 1
        if self.mode == "disconnect" and self.total_steps == 3:
            self.conn_holder["sock"].close()
            time.sleep(3600)
        if self.mode == "two-agents":
            b_leaves = self.t == 2
            end = self.t >= EPISODE
            return bridge.Step(
                obs=self._obs(2), reward=[float(actions[0]), float(actions[1]) if self.t <= 2 else 0.0],
                terminated=[False, b_leaves], truncated=[end, False], mask=[[1, 1], [1, 1]],
                info={"bonus": [self.bonus, self.bonus]},
            )
        return bridge.Step(obs=self._obs(), reward=[float(actions[0])], terminated=[False],
                           truncated=[self.t >= EPISODE], mask=[[1, 1]], info={"bonus": [self.bonus]})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    args = bridge.parse_args(None, p)
    mode = args.mode
    obs_size = 3 if mode == "other-spaces" and (args.instance or 0) >= 1 else 2
    agents = [bridge.agent(name, [obs_size], bridge.discrete(2), mask=True)
              for name in (["a", "b"] if mode == "two-agents" else ["agent"])]
    if mode == "mixed":
        obs = bridge.dict_obs({"pos": bridge.obs_box([2]), "grid": bridge.obs_box([2, 2], "uint8"),
                               "count": bridge.obs_box([1], "int32")})
        agents = [bridge.agent("agent", obs, bridge.discrete(2), mask=True)]
    holder: dict = {}
    original = bridge._Tcp.__init__

    def keep(self, *a, **k):  # remember the socket so that "disconnect" can close it mid-episode
        original(self, *a, **k)
        holder["sock"] = self.sock
        if mode == "oversized":
            real_write = self._write
            state = {"n": 0}

            def write(data):
                state["n"] += 1
                if state["n"] == 3:  # hello, reset_result, then the first step_result
                    self.sock.sendall(struct.pack("<I", 64 << 20) + b"\0" * 64)
                    time.sleep(3600)
                real_write(data)

            self._write = write

    bridge._Tcp.__init__ = keep
    if mode == "protocol9":
        bridge.PROTOCOL_VERSION = 9
        real_layout = bridge._Layout.__init__

        def layout(self, *a, **k):
            real_layout(self, *a, **k)
            self.protocol = 9

        bridge._Layout.__init__ = layout
    if mode == "bad-blob":
        real_send = bridge._Tcp.send_frame

        def send_frame(self, frame):
            if frame.header["type"] == "step_result":  # an 'obs' blob of 1 value instead of 2
                blobs = {name: (frame.dtypes[name], view) for name, view in frame.views.items()}
                self.send(bridge.encode(frame.header, dict(blobs, obs=("float32", np.zeros(1, np.float32)))))
            else:
                real_send(self, frame)

        bridge._Tcp.send_frame = send_frame
    try:
        bridge.serve(Counter(mode, holder), name="counter", agents=agents, host=args.host, port=args.port,
                     transport=args.transport, instance=args.instance, token=args.token)
    except (bridge.BridgeError, OSError) as exc:
        print(f"game stopped: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
