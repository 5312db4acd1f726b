"""What one bridged step costs: env steps/s and CPU time per env step of the trainer and of each kind of game
process, with random actions and no training (no policy, no updates).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engines_step_cpu.py --command "node exports/web/browser.mjs \
        --port={port} --instance={instance}" --transport websocket [--instances 2] [--steps 2000]

The game processes are every descendant of this process (the launched commands and what they start, e.g.
Chromium's browser, renderer, GPU and utility processes), grouped by executable and Chromium's --type; their
CPU time (user + system, from /proc) is counted from the first reset to the last step. On a shared machine
the wall-clock figures move with the load; the CPU times move less. Run from the repository root; the web
page needs AGENTKIT_WEB_MODULES (or exports/web's npm packages), as exports/web/README.md says.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from envs.remote import RemoteEnvConfig, RemoteSource  # noqa: E402  (the repo's plugin, run from a checkout)

TICK = os.sysconf("SC_CLK_TCK")


def descendants_cpu() -> tuple[float, dict[str, float]]:
    """(this process's CPU seconds, {process kind: CPU seconds} over its descendants alive now)."""
    procs: dict[int, tuple[int, float, str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                argv = " ".join(f.read().split("\0")).split()
        except OSError:
            continue
        kind = os.path.basename(argv[0]) if argv else "?"
        kind += next((" " + a.split("=", 1)[1] for a in argv if a.startswith("--type=")), "")
        procs[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, kind)
    me = os.getpid()

    def mine(pid: int) -> bool:
        while pid and pid != me:
            pid = procs.get(pid, (0, 0.0, ""))[0]
        return pid == me

    kinds: dict[str, float] = {}
    for pid, (_, cpu, kind) in procs.items():
        if pid != me and mine(pid):
            kinds[kind] = kinds.get(kind, 0.0) + cpu
    return procs[me][1], kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", required=True, help="the launch command of one instance ({port}, {instance})")
    parser.add_argument("--transport", default="tcp", choices=["tcp", "websocket"])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps (each steps every instance once)")
    args = parser.parse_args()
    n = args.instances
    config = RemoteEnvConfig(plugin="remote", mode="launch", command=args.command, transport=args.transport,
                             num_envs=n)
    source = RemoteSource(config)
    try:
        vec = source.make_vec(n, 0)
        space = source.action_space
        space.seed(0)
        vec.reset(seed=0)
        start, (trainer0, games0) = time.perf_counter(), descendants_cpu()
        for _ in range(args.steps):
            actions = [space.sample() for _ in range(n)]
            if type(space).__name__ == "HybridSpace":
                vec.step((np.array([a[0] for a in actions]), np.stack([a[1] for a in actions])))
            else:
                vec.step(np.stack(actions))
        wall, (trainer1, games1) = time.perf_counter() - start, descendants_cpu()
        vec.close()
    finally:
        source.close()
    k = args.steps * n
    per = {kind: (cpu - games0.get(kind, 0.0)) / k * 1e6 for kind, cpu in games1.items()}
    print(f"{n} instances x {args.steps} steps: {k / wall:.0f} env steps/s, load {os.getloadavg()[0]:.1f}")
    print(f"CPU per env step: trainer {(trainer1 - trainer0) / k * 1e6:.0f} us; games {sum(per.values()):.0f} us ("
          + ", ".join(f"{kind} {us:.0f}" for kind, us in sorted(per.items(), key=lambda kv: -kv[1]) if us >= 1) + ")")


if __name__ == "__main__":
    main()
