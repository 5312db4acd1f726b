"""The benchmark scripts call the SDK's internals (trainer, evaluation, exporters), so an SDK change can break
them without any other test noticing. They are too slow to run here; this imports each one, which resolves
every name it imports from agentkit, and checks the entry point the docs tell users to run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "curves.py")  # curves.py: a shared helper


def load_script(path: Path):
    """Import ``benchmarks/NAME.py`` as a module, with benchmarks/ on sys.path as when it is run."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_there_are_benchmark_scripts():
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_imports_and_has_main(path):
    module = load_script(path)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} would run on import"


@pytest.mark.parametrize("script, args", [
    ("mappo_spread.py", []), ("maddpg_spread.py", []), ("selfplay_boardgames.py", ["--game", "tictactoe"]),
])
def test_a_bad_set_stops_a_benchmark_with_one_message(script, args):
    """The scripts that build a config from ``--set`` report a bad key as the CLI does: exit 2, one message."""
    import subprocess

    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--set", "algorithm.bogus=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert f"{script}: error: invalid config" in proc.stderr and "algorithm.bogus: unknown key" in proc.stderr


def test_selfplay_tactics_finds_immediate_wins_and_the_moves_that_give_one_away():
    """The blunder counts of ``selfplay_boardgames.py`` (missed wins, missed blocks) on a known connect-four
    position: each side has three in its own column, the first player to move."""
    from pettingzoo.classic import connect_four_v3

    bench = load_script(BENCHMARKS / "selfplay_boardgames.py")
    env = connect_four_v3.env()
    env.reset(seed=0)
    for column in (0, 1, 0, 1, 0, 1):
        env.step(column)
    me, other = env.agent_selection, "player_1"
    assert me == "player_0"
    assert bench._winning_moves(env, me) == [0]
    assert bench._gives_away(env, 2, me, other)  # leaves column 1 open: player_1 wins there
    assert not bench._gives_away(env, 1, me, other)  # the block
    assert env.agent_selection == me and not bench.game_over(env)  # the probes played on copies


def test_ppo_parts_times_the_same_work_on_both_sides():
    """``ppo_parts_vs_sb3.py`` divides each update by 20 gradient steps and each rollout by 32 vector steps:
    both sides must do exactly that much per call. Needs the ``benchmark`` extra (``make bench``)."""
    pytest.importorskip("stable_baselines3")
    bench = load_script(BENCHMARKS / "ppo_parts_vs_sb3.py")
    ak_collect, ak_update = bench.agentkit_parts()
    sb3_collect, sb3_update = bench.sb3_parts()
    assert ak_update()["charts/update_epochs"] == bench.GRAD_STEPS  # 20 epochs of one minibatch: 20 steps
    algo = ak_collect.__self__
    steps = algo.steps_done
    ak_collect()
    assert algo.steps_done - steps == 32 * 8
    model = sb3_update.__self__
    before = model._n_updates
    sb3_update()
    assert model._n_updates - before == bench.GRAD_STEPS  # SB3 counts epochs x minibatches (1 here)
    steps = model.num_timesteps
    sb3_collect()
    assert model.num_timesteps - steps == 32 * 8


def test_arena_winrate_measures_aim_at_the_nearest_enemy_and_its_reach():
    from agentkit_envs.games.team_arena import parallel_env

    bench = load_script(BENCHMARKS / "arena_winrate.py")
    env = parallel_env(team_size=2, opponent="scripted")
    env.reset(seed=0)
    env.pos.update({"blue_0": [0.0, 0.0], "red_0": [0.5, 0.0], "red_1": [-0.9, 0.9]})
    beyond, error, tolerance = bench._aim(env, "blue_0", 0.1)
    assert (beyond, round(error, 6)) == (0.0, 0.1) and abs(tolerance - math.atan2(env.hit_radius, 0.5)) < 1e-9
    env.alive["red_0"] = False  # the nearest live one is now 1.27 away, beyond a shot's reach of 1.0
    beyond, error, _ = bench._aim(env, "blue_0", -math.pi)
    assert beyond == 1.0 and abs(error - math.pi / 4) < 1e-9
    mirrored = parallel_env(team_size=2, frame="team")  # red aims at blue in its mirrored frame
    mirrored.reset(seed=0)
    mirrored.pos.update({"red_0": [0.5, 0.0], "blue_0": [0.0, 0.0], "blue_1": [0.9, 0.9]})
    beyond, error, _ = bench._aim(mirrored, "red_0", 0.1)  # 0.1 in red's frame is pi - 0.1 in the world's
    assert beyond == 0.0 and abs(error - 0.1) < 1e-9
    env.pos["blue_1"] = [0.9, -0.9]
    assert not bench._within_reach(env)  # blue_0 to the live red_1: 1.27, blue_1 to it: 2.55
    env.pos["blue_1"] = [-0.5, 0.5]
    assert bench._within_reach(env)
    stats = bench.shot_stats(np.array([[0.0, 0.05, 0.1], [0.0, 0.3, 0.1], [1.0, 0.0, 0.05]]), episodes=3)
    assert stats == {"shots_per_episode": 1.0, "out_of_range": 1 / 3, "aim_error_in_range": 0.175,
                     "on_target_in_range": 0.5}
