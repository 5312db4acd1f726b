"""Training steps/s through real game engines over the bridge, beside the same game in-process in Python.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engines_speed.py [--steps 8192] [--engines godot,csharp,browser]
                                                                   [--append]

For each engine the shipped example config trains for ``--steps`` environment steps (PPO, its own settings),
once through the engine (`examples/bridge-<engine>-*.yaml`: headless Godot 3, Mono, headless Chromium) and once
with the game's Python twin in-process (the gymnasium plugin, same algorithm and policy settings, same number
of env copies): Maze and Thruster are defined below, rule for rule as exports/godot/game/maze.gd and
exports/csharp/Thruster/Thruster.cs; the browser's game is Moving, whose Python original is agentkit/Moving-v0.
The figure is the run's own ``time/steps_per_second`` (collection and updates) at its last iteration.
Run from the repository root; needs `make engines` and, for the browser, exports/web's npm packages
(installed into the cache as the tests do).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


# -- the Python twins -------------------------------------------------------------------------------------


class MazeEnv(gym.Env):
    """exports/godot/game/maze.gd in Python: a 7 x 7 maze, Discrete(4) with info['action_mask']."""

    LAYOUT = [".......", ".##.##.", ".....#.", "##.#...", "...##.#", ".#.....", ".#.##.."]
    MOVES = [(0, -1), (0, 1), (-1, 0), (1, 0)]
    SIZE = 7

    def __init__(self, max_steps: int = 40):
        self.max_steps = max_steps
        self.observation_space = spaces.Box(-1.0, 1.0, (11,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.free = [(x, y) for y in range(7) for x in range(7) if self.LAYOUT[y][x] == "."]

    def is_free(self, x: int, y: int) -> bool:
        return 0 <= x < 7 and 0 <= y < 7 and self.LAYOUT[y][x] == "."

    def _mask(self) -> np.ndarray:
        return np.array([self.is_free(self.ax + dx, self.ay + dy) for dx, dy in self.MOVES], np.int8)

    def _obs(self) -> np.ndarray:
        s = 6.0
        free = [float(v) for v in self._mask()]
        return np.array([self.ax / s, self.ay / s, self.gx / s, self.gy / s, (self.gx - self.ax) / s,
                         (self.gy - self.ay) / s, *free, self.steps / self.max_steps], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        cells = self.np_random.permutation(len(self.free))[:2]
        (self.gx, self.gy), (self.ax, self.ay) = self.free[cells[0]], self.free[cells[1]]
        self.steps = 0
        self.distance = {(self.gx, self.gy): 0}
        queue = [(self.gx, self.gy)]
        while queue:
            x, y = queue.pop(0)
            for dx, dy in self.MOVES:
                if self.is_free(x + dx, y + dy) and (x + dx, y + dy) not in self.distance:
                    self.distance[(x + dx, y + dy)] = self.distance[(x, y)] + 1
                    queue.append((x + dx, y + dy))
        return self._obs(), {"action_mask": self._mask()}

    def step(self, action):
        before = self.distance[(self.ax, self.ay)]
        dx, dy = self.MOVES[int(action)]
        if self.is_free(self.ax + dx, self.ay + dy):
            self.ax, self.ay = self.ax + dx, self.ay + dy
        self.steps += 1
        reached = (self.ax, self.ay) == (self.gx, self.gy)
        reward = -0.01 + 0.1 * (before - self.distance[(self.ax, self.ay)]) + (1.0 if reached else 0.0)
        truncated = not reached and self.steps >= self.max_steps
        return self._obs(), reward, reached, truncated, {"action_mask": self._mask(), "success": float(reached)}


class ThrusterEnv(gym.Env):
    """exports/csharp/Thruster/Thruster.cs in Python (one ship): Box(2) thrust in [-1, 1]."""

    def __init__(self, max_steps: int = 100):
        self.max_steps = max_steps
        self.observation_space = spaces.Box(-3.0, 3.0, (7,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.y, 10 * self.vx, 10 * self.vy, self.tx - self.x, self.ty - self.y,
                         self.steps / self.max_steps], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.y = self.np_random.uniform(-1, 1, 2)
        self.tx, self.ty = self.np_random.uniform(-0.8, 0.8, 2)
        self.vx = self.vy = 0.0
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        ax, ay = np.clip(action, -1.0, 1.0)
        before = math.hypot(self.tx - self.x, self.ty - self.y)
        self.vx, self.vy = 0.8 * self.vx + 0.02 * ax, 0.8 * self.vy + 0.02 * ay
        self.x, self.y = self.x + self.vx, self.y + self.vy
        if abs(self.x) > 1:
            self.x, self.vx = math.copysign(1.0, self.x), 0.0
        if abs(self.y) > 1:
            self.y, self.vy = math.copysign(1.0, self.y), 0.0
        self.steps += 1
        after = math.hypot(self.tx - self.x, self.ty - self.y)
        reached = after <= 0.1
        reward = before - after - 0.005 + (1.0 if reached else 0.0)
        return self._obs(), float(reward), reached, not reached and self.steps >= self.max_steps, {"success": float(reached)}


gym.register("EngineTwins/Maze-v0", entry_point=MazeEnv)
gym.register("EngineTwins/Thruster-v0", entry_point=ThrusterEnv)

#: engine -> (bridged example, in-process gymnasium id, what one instance holds)
ENGINES = {
    "godot": ("examples/bridge-godot-maze.yaml", "engines_speed:EngineTwins/Maze-v0", "headless Godot 3.2.3"),
    "csharp": ("examples/bridge-csharp-thruster.yaml", "engines_speed:EngineTwins/Thruster-v0", "Mono 6.8"),
    "browser": ("examples/bridge-browser-moving.yaml", "agentkit/Moving-v0", "headless Chromium"),
}


# -- running --------------------------------------------------------------------------------------------


def train(config: dict, steps: int, folder: Path, env: dict[str, str]) -> float:
    """`agentkit train` of ``config`` for ``steps``; the last iteration's time/steps_per_second."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "agentkit.cli", "train", str(path), "--run-dir", str(run_dir),
           "--set", f"algorithm.total_steps={steps}", "--set", "run.tensorboard=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time/steps_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--engines", default="godot,csharp,browser")
    parser.add_argument("--num-envs", type=int, default=None, help="instances (default: each example's own)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    from engines_latency import web_modules  # benchmarks/ is on sys.path when a script runs from it

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])}
    lines = []
    for name in args.engines.split(","):
        example, twin, engine = ENGINES[name]
        if name == "browser":
            env["AGENTKIT_WEB_MODULES"] = str(web_modules())
        config = yaml.safe_load((REPO / example).read_text())
        if args.num_envs:
            config["env"]["num_envs"] = args.num_envs
        n = config["env"]["num_envs"]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "bridged").mkdir()
            (Path(tmp) / "python").mkdir()
            bridged = train(config, args.steps, Path(tmp) / "bridged", env)
            config["env"] = {"plugin": "gymnasium", "id": twin, "num_envs": n}
            local = train(config, args.steps, Path(tmp) / "python", env)
        line = (f"| {name} ({engine}) | {Path(example).name} | {n} × 1 | {args.steps} | {bridged:.0f} | {local:.0f} | "
                f"{bridged / local:.2f}× |")
        print(line, flush=True)
        lines.append(line)
    load = os.getloadavg()[0]
    table = "\n".join([
        f"### Engines over the bridge: training steps/s ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engines_speed.py --steps {args.steps}"
        f" --engines {args.engines}{f' --num-envs {args.num_envs}' if args.num_envs else ''}` (load average {load:.1f} on"
        " the 2 shared cores). PPO with each example's settings; steps/s = the run's time/steps_per_second"
        " (collection and updates) at its last iteration; the Python twin is the same game in-process (gymnasium plugin,"
        " same number of env copies).",
        "",
        "| engine | config | instances × agents | steps | through the engine steps/s | Python in-process steps/s | ratio |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
    ])
    print(table)
    if args.append:
        with open(BENCHMARKS / "RESULTS.md", "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
