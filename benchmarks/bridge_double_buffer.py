"""Would double-buffered collection hide the bridge's hand-offs? Collection with a policy forward, the bridged
game stepping one half of the instances while the trainer chooses the other half's actions.

    python benchmarks/bridge_double_buffer.py                     # 8 instances, 4000 vector steps, 3 rounds

The question comes from ``benchmarks/bridge_overhead.py``: bridged PPO training runs at 0.49x in-process on this
machine, although the bridge adds only about 50-70 ms of CPU per 1000 env steps; most of what it costs is the
time each side waits, idle, for the other to answer (a halted vCPU's wake-up at every hand-off). Sample
Factory's answer is double-buffered sampling: split the envs in two, and while the game steps one half the
policy works on the other, so that neither side waits for long.

Three sides, each the same loop of ``--steps`` vector steps: observation -> the Dungeon example's policy
network (an MLP 128-128 tanh, ``examples/dungeon-masked-ppo.yaml``) -> a sampled allowed action -> env step.
No updates, no storage: this measures collection only.

* in-process: 8 Dungeon copies in the trainer's process (the gymnasium plugin);
* bridged: one process of ``exports/python/serve_gymnasium.py`` serving the 8 instances on one connection
  (``env.instances_per_process: 8``), one vector env of 8: act on 8, step 8, wait;
* bridged, double-buffered: the same process and connection, two vector envs of 4 instances: act on half A,
  send it (``send_step``), act on half B, send it, then wait for A, act on A, send A, wait for B, and so on.

The sides alternate (in-process, bridged, double-buffered, in-process, ...) so that all see the same load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dungeon-masked-ppo.yaml"
SERVE = ROOT / "exports" / "python" / "serve_gymnasium.py"
SIDES = ("in-process", "bridged", "bridged, double-buffered")


#: ``--pin``: the trainer on CPU 0 and the game on CPU 1 (None: where the scheduler puts them)
PIN: bool = False


def env_section(bridged: bool, num_envs: int) -> dict:
    base = yaml.safe_load(EXAMPLE.read_text())["env"]
    if not bridged:
        return {**base, "num_envs": num_envs}
    command = (f"{sys.executable} {SERVE} agentkit/Dungeon-v0 --port {{port}} --instance {{instance}} "
               "--instances {instances}")
    if PIN:
        command = "taskset -c 1 " + command
    return {"plugin": "remote", "num_envs": num_envs, "command": command, "instances_per_process": num_envs}


class Chooser:
    """The Dungeon example's policy network (untrained) and a sampled allowed action per row."""

    def __init__(self, obs_dim: int, n_actions: int, seed: int):
        torch.manual_seed(seed)
        sizes = yaml.safe_load(EXAMPLE.read_text())["policy"]["hidden_sizes"]
        layers, width = [], obs_dim
        for h in sizes:
            layers += [torch.nn.Linear(width, h), torch.nn.Tanh()]
            width = h
        self.trunk = torch.nn.Sequential(*layers)
        self.logits = torch.nn.Linear(width, n_actions)
        self.value = torch.nn.Linear(width, 1)  # the forward of a PPO step computes a value too

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        features = self.trunk(torch.as_tensor(obs, dtype=torch.float32))
        logits = self.logits(features)
        self.value(features)
        logits = logits.masked_fill(~torch.as_tensor(mask, dtype=torch.bool), -1e9)
        return torch.distributions.Categorical(logits=logits).sample().numpy()


def run_side(side: str, num_envs: int, vector_steps: int) -> float:
    """Env steps/s of ``vector_steps`` vector steps of collection with the policy's forward."""
    from agentkit.build import build_env
    from agentkit.config import load_config
    from agentkit.host import PluginHost

    host = PluginHost()
    bridged = side != "in-process"
    config = load_config({"env": env_section(bridged, num_envs), "algorithm": {"plugin": "ppo", "total_steps": 1}},
                         host.registry)
    source = build_env(config, host.registry)
    halves = 2 if side == "bridged, double-buffered" else 1
    vecs = [source.make_vec(num_envs // halves, seed=h * (num_envs // halves)) for h in range(halves)]
    try:
        obs = [v.reset() for v in vecs]
        choose = Chooser(obs[0].obs.shape[1], obs[0].mask.shape[1], seed=0)
        start = time.perf_counter()
        if halves == 1:
            [vec], [o] = vecs, obs
            for _ in range(vector_steps):
                o = vec.step(choose(o.obs, o.mask)).next
        else:
            for vec, o in zip(vecs, obs, strict=True):
                vec.env.send_step(choose(o.obs, o.mask))
            for t in range(vector_steps):
                for vec in vecs:
                    o = vec.env.finish_step().next
                    if t + 1 < vector_steps:
                        vec.env.send_step(choose(o.obs, o.mask))
        return num_envs * vector_steps / (time.perf_counter() - start)
    finally:
        for vec in vecs:
            vec.close()
        if hasattr(source, "wrapped") and hasattr(source.wrapped, "close"):
            source.wrapped.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000, help="vector steps per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", action="store_true", help="the trainer on CPU 0, the game process on CPU 1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.pin:
        global PIN
        PIN = True
        os.sched_setaffinity(0, {0})
    figures: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            figures[side].append(run_side(side, args.num_envs, args.steps))
            print(f"round {r + 1}: {side}: {figures[side][-1]:,.0f} env steps/s", flush=True)
    base = statistics.median(figures["in-process"])
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled")
    print(f"\n{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, autogroups "
          f"{'on' if autogroups.exists() and autogroups.read_text().strip() == '1' else 'off'}, "
          f"{args.num_envs} envs, {args.steps} vector steps, medians of {args.rounds} rounds"
          f"{', trainer on CPU 0 and game on CPU 1' if args.pin else ''}:")
    for side in SIDES:
        m = statistics.median(figures[side])
        print(f"  {side:26s} {m:8,.0f} env steps/s  {m / base:.2f}x in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
