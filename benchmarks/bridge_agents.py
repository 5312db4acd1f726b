"""Agent-steps/s of one Node game instance with many agents batched in one message per step.

    python benchmarks/bridge_agents.py                   # Team Forage with 1, 16 and 64 foragers, one instance
    python benchmarks/bridge_agents.py --agents 64 --instances 4

One instance of exports/js/games/team.mjs (a 24x24 grid, as many food items as foragers, energy 60, 200
steps), launched by the remote plugin over TCP and stepped with random allowed actions (no policy): the
figure is the bridge and the game, not the network. agent-steps/s counts the foragers alive at each step
(every one of them travels in the step message and in its answer). Compare godot_rl #17: ~12k
interactions/s took 4 instances x 16 agents x action repeat 4.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GAME = ROOT / "exports" / "js" / "games" / "team.mjs"


def measure(agents: int, instances: int, steps: int) -> tuple[float, float]:
    from agentkit.build import build_env
    from agentkit.config import load_config
    from agentkit.host import PluginHost

    node = shutil.which("node")
    command = (f"{node} {GAME} --port {{port}} --instance {{instance}} --agents {agents} --size 24 --food {agents} "
               "--energy 60 --max-steps 200")
    host = PluginHost()
    env = {"plugin": "remote", "command": command, "num_envs": instances}
    source = build_env(load_config({"env": env, "algorithm": {"plugin": "mappo", "total_steps": 1}}, host.registry),
                       host.registry)
    venv = source.make_vec(instances, seed=0)
    rng = np.random.default_rng(0)
    try:
        multi = source.multi_agent  # one forager: a single-agent env
        o = venv.reset()["forager"] if multi else venv.reset()
        alive_steps = 0
        start = time.perf_counter()
        for _ in range(steps):
            scores = rng.random(o.mask.shape) * o.mask  # a random allowed action per forager
            actions = scores.reshape(-1, 5).argmax(axis=1)
            if multi:
                alive_steps += int(o.alive.sum())
                o = venv.step({"forager": actions}).groups["forager"].next
            else:
                alive_steps += instances
                o = venv.step(actions).next
        elapsed = time.perf_counter() - start
        return steps * instances / elapsed, alive_steps / elapsed
    finally:
        venv.close()
        source.wrapped.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    rows = []
    for agents in args.agents:
        env_steps, agent_steps = measure(agents, args.instances, args.steps)
        rows.append((agents, env_steps, agent_steps))
        print(f"{agents} agents x {args.instances} instance(s): {env_steps:.0f} instance-steps/s, "
              f"{agent_steps:.0f} agent-steps/s", flush=True)
    if not args.no_results:
        command = "python benchmarks/bridge_agents.py " + shlex.join(sys.argv[1:])
        lines = "".join(f"| {a} | {args.instances} | {e:.0f} | {s:.0f} |\n" for a, e, s in rows)
        text = (
            f"\n## Bridge: agents batched in one message (Node Team Forage) ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` ({args.steps} vector steps of random allowed actions, TCP, no policy; "
            f"sharing the 2-core machine with other jobs).\n\n"
            f"| foragers per instance | instances | instance-steps/s | agent-steps/s (alive) |\n|---|---|---|---|\n"
            f"{lines}\nFor scale: godot_rl #17 reports ~12k interactions/s from 4 instances x 16 agents x action repeat 4.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
