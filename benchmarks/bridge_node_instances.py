"""The Node Moving port collected through the bridge: a Node process per instance vs one Node process for all.

    python benchmarks/bridge_node_instances.py                      # 8 instances, 3 alternating rounds
    nice -n -10 python benchmarks/bridge_node_instances.py --num-envs 8 --collect 2000 --rounds 5

Two sides, the same 8 instances of exports/js/games/moving.mjs launched by the remote plugin over TCP:
* "a process each": ``env.instances_per_process: 1``, 8 Node processes, a connection each (16 frames a vector step);
* "one process": ``env.instances_per_process: 8``, one Node process serving the 8 (``serveMany``, one ``batch``
  frame each way a vector step).
Collection only: random hybrid actions, ``--collect`` vector steps, no policy; env steps/s, and CPU milliseconds
per 1000 env steps summed over the trainer and the Node processes. The sides alternate so that both see the
same load. Appends a section to benchmarks/RESULTS.md unless --no-results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bridge_overhead import _cpu_seconds  # benchmarks/bridge_overhead.py

ROOT = Path(__file__).resolve().parent.parent
GAME = ROOT / "exports" / "js" / "games" / "moving.mjs"

#: side -> instances per Node process (0: all of them)
SIDES = {"a process each": 1, "one process": 0}


def collect_speed(per_process: int, num_envs: int, vector_steps: int) -> tuple[float, float, float]:
    """(env steps/s, CPU ms per 1000 env steps of the trainer and the games, the games' share of it)."""
    from agentkit.build import build_env
    from agentkit.config import load_config
    from agentkit.host import PluginHost

    command = f"{shutil.which('node')} {GAME} --port {{port}} --instance {{instance}} --instances {{instances}}"
    env = {"plugin": "remote", "command": command, "num_envs": num_envs, "instances_per_process": per_process}
    host = PluginHost()
    source = build_env(load_config({"env": env, "algorithm": {"plugin": "ppo", "total_steps": 1}}, host.registry),
                       host.registry)
    rng = np.random.default_rng(0)
    try:
        venv = source.make_vec(num_envs, seed=0)
        venv.reset()
        games = sorted({inst.game.pid for inst in venv.multi.instances})
        games0 = sum(_cpu_seconds(p) for p in games)
        cpu0 = _cpu_seconds() + games0
        start = time.perf_counter()
        for _ in range(vector_steps):
            venv.step((rng.integers(0, 3, size=num_envs), rng.uniform(-1, 1, size=(num_envs, 2)).astype(np.float32)))
        elapsed = time.perf_counter() - start
        games1 = sum(_cpu_seconds(p) for p in games)
        cpu = _cpu_seconds() + games1 - cpu0
        venv.close()
    finally:
        source.close()
    steps = num_envs * vector_steps
    return steps / elapsed, 1e6 * cpu / steps, 1e6 * (games1 - games0) / steps


def _scheduler() -> str:
    """Whether Linux schedules sessions as groups (then nice ranks a process only within its own session)."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return "scheduler autogroups unknown"
    return "scheduler autogroups on" if enabled else "scheduler autogroups off"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--collect", type=int, default=2000, help="vector steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    if shutil.which("node") is None:
        print("bridge_node_instances: node is not installed (the Moving port runs in Node)", file=sys.stderr)
        return 2
    figures: dict[str, list[tuple[float, float, float]]] = {side: [] for side in SIDES}
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for side, per_process in SIDES.items():
            figures[side].append(collect_speed(per_process or args.num_envs, args.num_envs, args.collect))
            speed, cpu, games = figures[side][-1]
            print(f"round {r} {side}: {speed:.0f} env steps/s, {cpu:.0f} CPU ms per 1000 steps ({games:.0f} in Node)",
                  flush=True)
    load_end = os.getloadavg()[0]
    med = {side: np.median(np.array(xs), axis=0) for side, xs in figures.items()}
    apart, together = med["a process each"], med["one process"]
    print(f"median: a process each {apart[0]:.0f}, one process {together[0]:.0f} env steps/s "
          f"({together[0] / apart[0]:.2f}x); load average {load_start:.1f} -> {load_end:.1f}")
    if not args.no_results:
        n = args.num_envs

        def cells(k: int) -> str:
            return " | ".join(f"{med[side][k]:.0f} ({', '.join(f'{x[k]:.0f}' for x in figures[side])})" for side in SIDES)

        text = (
            f"\n## Bridge: Node Moving, a process per instance vs one process for {n} "
            f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `python benchmarks/bridge_node_instances.py {shlex.join(sys.argv[1:])}`"
            f" (exports/js/games/moving.mjs over TCP, {n} instances, {args.collect} vector steps of random hybrid "
            f"actions per round and side, {args.rounds} alternating rounds; \"one process\": "
            f"`env.instances_per_process: {n}`, `serveMany`, one `batch` frame each way a vector step).\n\n"
            f"| median (rounds) | {n} processes | 1 process x {n} | one / each |\n|---|---|---|---|\n"
            f"| collection, env steps/s | {cells(0)} | {together[0] / apart[0]:.2f}x |\n"
            f"| CPU ms per 1000 env steps (trainer + Node) | {cells(1)} | {together[1] / apart[1]:.2f}x |\n"
            f"| of which Node | {cells(2)} | {together[2] / apart[2]:.2f}x |\n"
            f"\nLoad average (1 min) at the start: {load_start:.1f}, at the end: {load_end:.1f} on 2 cores; the "
            f"benchmark's nice {os.nice(0)}, {_scheduler()}.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
