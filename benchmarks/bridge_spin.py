"""What one game process and the busy-wait (``env.spin_us``) buy an engine over the bridge, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bridge_spin.py [--games node,csharp,godot] [--steps 16384]
                                                                 [--rounds 2] [--no-results]

For each game, its shipped example config (examples/bridge-moving-node.yaml, bridge-csharp-thruster.yaml,
bridge-godot-maze.yaml: Node, Mono, headless Godot) trains ``--steps`` env steps three ways, alternating:

* a process per instance (``instances_per_process: 1``; on 2 cores the default spin is then 0);
* one process for every instance with ``spin_us: 0`` (reads block at once);
* one process for every instance with ``spin_us`` unset (the default: 1000 µs when the trainer and the game
  have a core each).

The figure is the run's own ``time/steps_per_second`` (collection and PPO updates) at its last iteration,
median of the rounds. Needs `make engines` for Mono and Godot; Node needs nothing more for TCP.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent

GAMES = {  # name -> (example config, what runs it)
    "node": ("bridge-moving-node.yaml", "Node"),
    "csharp": ("bridge-csharp-thruster.yaml", "Mono"),
    "godot": ("bridge-godot-maze.yaml", "headless Godot 3"),
}

#: the layouts: name -> (instances per process (0: all of them), env.spin_us (None: unset))
LAYOUTS = {"a process per instance": (1, None), "one process, spin_us 0": (0, 0), "one process, default spin": (0, None)}


def train_speed(game: str, layout: str, steps: int, out: Path, round_: int) -> float:
    example, _ = GAMES[game]
    cfg = yaml.safe_load((ROOT / "examples" / example).read_text())
    per_process, spin = LAYOUTS[layout]
    env = cfg["env"]
    env["instances_per_process"] = per_process or env["num_envs"]
    env.pop("spin_us", None)
    if spin is not None:
        env["spin_us"] = spin
    cfg["algorithm"]["total_steps"] = steps
    cfg["run"] = {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0}
    path = out / f"{game}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = out / f"{game}-{layout.replace(' ', '-').replace(',', '')}-{round_}"
    cmd = [sys.executable, "-m", "agentkit.cli", "train", str(path), "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bridge_spin.py: {game} / {layout}: agentkit train exited {proc.returncode}:\n"
                         f"{proc.stderr[-3000:]}")
    with open(run_dir / "metrics.csv") as f:
        return float(list(csv.DictReader(f))[-1]["time/steps_per_second"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default="node,csharp,godot")
    parser.add_argument("--steps", type=int, default=16_384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    unknown = [g for g in games if g not in GAMES]
    if unknown:
        parser.error(f"--games: unknown {unknown}; choose from {sorted(GAMES)}")
    speeds: dict[tuple[str, str], list[float]] = {(g, layout): [] for g in games for layout in LAYOUTS}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="agentkit-bridge-spin-") as tmp:
        for r in range(args.rounds):
            for game in games:
                for layout in LAYOUTS:
                    speeds[game, layout].append(train_speed(game, layout, args.steps, Path(tmp), r))
                    print(f"round {r} {game} / {layout}: {speeds[game, layout][-1]:.0f} steps/s", flush=True)
    load = os.getloadavg()[0]
    rows = []
    for game in games:
        med = {layout: float(np.median(speeds[game, layout])) for layout in LAYOUTS}
        base = med["a process per instance"]
        cells = [f"{med[layout]:.0f} ({', '.join(f'{x:.0f}' for x in speeds[game, layout])})" for layout in LAYOUTS]
        ratio = med["one process, default spin"] / med["one process, spin_us 0"]
        rows.append(f"| {GAMES[game][1]} ({GAMES[game][0]}) | " + " | ".join(cells)
                    + f" | {med['one process, default spin'] / base:.2f}x | {ratio:.2f}x |")
        print(rows[-1])
    if not args.no_results:
        command = "python benchmarks/bridge_spin.py " + shlex.join(sys.argv[1:])
        text = (
            f"\n## Bridge: one game process and the busy-wait, by engine ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` (each example config as shipped but for the layout, {args.steps:,} steps "
            f"per run, {args.rounds} alternating rounds; PPO training steps/s of the whole run, median (rounds)).\n\n"
            "| game | " + " | ".join(LAYOUTS) + " | one process with spin / a process per instance | spin / no spin |\n"
            + "|---" * (len(LAYOUTS) + 3) + "|\n" + "\n".join(rows) + "\n\n"
            f"Load average (1 min) at the start: {load_start:.1f}, at the end: {load:.1f} on {os.cpu_count()} CPUs.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
