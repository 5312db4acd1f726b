"""What one step of the Python bridge client costs when its process runs hot and when it sleeps between steps.

    python benchmarks/bridge_client_cold.py                 # Dungeon, 3000 steps per setting

One process runs the client's step path without a socket: decode the trainer's ``step`` payload, read the
action, step the game (``serve_gymnasium``'s GymGame around agentkit/Dungeon-v0) and write the ``step_result``
frame, as ``agentkit_bridge.serve`` does. It runs back to back (a hot cache), then with a ``time.sleep`` between
steps, as a game waits for the trainer's next request while other processes use the core; the sleep alone is
measured too, and subtracted. CPU time per step (``time.process_time``), so the load on the machine counts only
through what the other processes leave in the caches. Printed, not written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "exports" / "python"))
import agentkit_bridge as bridge  # noqa: E402
import agentkit_envs.games  # noqa: E402, F401  (registers the ids)
import serve_gymnasium as served  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--sleeps", type=float, nargs="*", default=[0.0, 0.0002, 0.001])
    args = parser.parse_args()
    env = gym.make("agentkit/Dungeon-v0")
    game = served.GymGame(env, None, None)
    layout = bridge._Layout([served.describe(env)], 0)
    payload = bridge.encode({"type": "step"}, {"action_int": ("int32", np.zeros(1, np.int32)),
                                               "action_float": ("float32", np.zeros(0, np.float32))})
    game.reset(0, {})
    legal = env.unwrapped._legal

    def one_step() -> None:
        parsed, start = bridge._parse(payload)
        ints = parsed.ints.unpack_from(payload, start + parsed.int_at)
        actions = layout.actions(ints, np.zeros(0, np.float32))
        actions[0] = int(np.argmax(legal()))  # a legal move, so that episodes run their course
        s = game.step(actions)
        frame = layout.frame("step_result", tuple(s.info) if s.info else ())
        layout.fill(frame, s, None)
        if s.terminated[0] or s.truncated[0]:
            r = game.reset(None, {})
            layout.fill(layout.frame("reset_result"), r, None)

    for pause in args.sleeps:
        cpu = time.process_time()
        for _ in range(args.steps):
            if pause:
                time.sleep(pause)
            one_step()
        per_step = (time.process_time() - cpu) / args.steps
        sleep_only = 0.0
        if pause:
            cpu = time.process_time()
            for _ in range(args.steps):
                time.sleep(pause)
            sleep_only = (time.process_time() - cpu) / args.steps
        print(f"sleep {pause * 1e3:.1f} ms between steps: {1e6 * (per_step - sleep_only):.1f} us CPU per step "
              f"(the sleep itself {1e6 * sleep_only:.1f} us)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
