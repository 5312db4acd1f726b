"""Step and reset speed of the shipped games (pure Python + numpy), single process, best of 15 repeats.

    OMP_NUM_THREADS=1 python benchmarks/games_speed.py

Best-of-repeats because the benchmark machine is shared: the minimum is the least disturbed measurement.
Prints one line per figure; record them in benchmarks/RESULTS.md with the load average at the time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
from agentkit_envs.games.dungeon import DungeonEnv
from agentkit_envs.games.moving import MovingEnv
from agentkit_envs.games.team_arena import parallel_env


def bench(step: Callable[[int], bool], reset: Callable[[], object], n: int = 2000, repeat: int = 15) -> float:
    """Microseconds per ``step(i)`` call (``reset()`` whenever it returns True), best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        reset()
        start = time.perf_counter()
        for i in range(n):
            if step(i):
                reset()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    print(f"load average: {os.getloadavg()[0]:.1f}")
    moving = MovingEnv()
    hybrid = [(k, np.array([0.7, 0.3], np.float32)) for k in (0, 1, 2)]
    us = bench(lambda i: any(moving.step(hybrid[i % 3])[2:4]), lambda: moving.reset(seed=0))
    print(f"Moving-v0 step: {us:.1f} us")
    dungeon = DungeonEnv(illegal_move_penalty=0.0)  # every action accepted, so a fixed cycle of actions works
    us = bench(lambda i: any(dungeon.step(i % 6)[2:4]), lambda: dungeon.reset(seed=0))
    print(f"Dungeon-v0 step: {us:.1f} us")
    print(f"Dungeon-v0 reset (a new dungeon): {bench(lambda i: True, dungeon.reset, n=200):.1f} us")
    arena = parallel_env(team_size=2)

    def arena_step(i: int) -> bool:
        arena.step({agent: hybrid[(i + j) % 3] for j, agent in enumerate(arena.agents)})
        return not arena.agents

    print(f"TeamArena 2v2 step (4 agents): {bench(arena_step, lambda: arena.reset(seed=0)):.1f} us")


if __name__ == "__main__":
    main()
