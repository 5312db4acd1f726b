"""The shipped games: ecosystem checkers, agentkit's checks, rules, masks, hybrid parameters, speed."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import time
from collections import deque

import agentkit_envs.games  # noqa: F401  (registers the agentkit/ ids)
import gymnasium as gym
import numpy as np
import pytest
from agentkit_envs.games import dungeon as dg
from agentkit_envs.games import moving as mv
from agentkit_envs.games.team_arena import IDLE, MOVE, SHOOT, parallel_env
from gymnasium import spaces

from agentkit.spaces import HybridSpace
from agentkit.testing import check_env_plugin, check_game

GAME_IDS = ["agentkit/Moving-v0", "agentkit/Dungeon-v0"]

pytestmark = pytest.mark.filterwarnings("ignore:.*recommend using a symmetric and normalized space.*")


# -- the ecosystem's checkers and agentkit's ----------------------------------------------------------------


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_single_agent_games_pass_gymnasium_checker_and_agentkit_checks(env_id):
    check_game(env_id, steps=300)  # gymnasium's check_env on gymnasium.make(env_id), then agentkit's checks


def test_moving_bearing_variant_passes_checks():
    check_game(lambda **kw: gym.make("agentkit/Moving-v0", observe_bearing=True, **kw), steps=200)
    assert gym.make("agentkit/Moving-v0", observe_bearing=True).observation_space.shape == (11,)
    assert gym.make("agentkit/Moving-v0").observation_space.shape == (9,)


def test_dungeon_penalty_variant_passes_checks():
    check_game(lambda **kw: gym.make("agentkit/Dungeon-v0", illegal_move_penalty=0.05, **kw), steps=200)


@pytest.mark.parametrize("opponent, frame", [(None, "world"), (None, "team"), ("scripted", "world")])
def test_team_arena_passes_parallel_api_test_and_agentkit_checks(opponent, frame):
    check_game(lambda **kw: parallel_env(opponent=opponent, frame=frame, **kw), steps=60)  # includes parallel_api_test


@pytest.mark.parametrize(
    "name, config",
    [
        ("gymnasium", {"id": "agentkit/Moving-v0"}),
        ("gymnasium", {"id": "agentkit/Dungeon-v0"}),
        ("pettingzoo", {"module": "agentkit_envs.games.team_arena", "kwargs": {"team_size": 2}}),
        ("pettingzoo", {"module": "agentkit_envs.games.team_arena", "kwargs": {"opponent": "scripted"}}),
    ],
)
def test_games_through_the_env_plugins(name, config):
    check_env_plugin(name, config, num_envs=3, steps=60)


def test_gymnasium_make_finds_the_games_by_module_prefix_without_importing_agentkit():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('agentkit_envs.games:agentkit/Moving-v0')\n"
        "env.reset(seed=0)\n"
        "print(sorted(i for i in gym.registry if i.startswith('agentkit/')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "agentkit/Dungeon-v0" in out.stdout and "agentkit/Moving-v0" in out.stdout


# -- the checkers catch broken games ------------------------------------------------------------------------


class _EmptyMaskEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.observation_space = spaces.Dict(
            {"observation": spaces.Box(-1, 1, (2,), np.float32), "action_mask": spaces.MultiBinary(3)}
        )
        self.action_space = spaces.Discrete(3)
        self.t = 0

    def _obs(self):
        mask = np.zeros(3, np.int8) if self.t >= 3 else np.ones(3, np.int8)
        return {"observation": np.zeros(2, np.float32), "action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, {}


class _LeakyHybridEnv(gym.Env):
    """Reads the parameter of a type that was not chosen: the checker must notice."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.observation_space = spaces.Box(-10, 10, (1,), np.float32)
        self.action_space = HybridSpace(types={"a": ["x"], "b": ["y"], "c": []}, params={"x": (0, 1), "y": (0, 1)})
        self.v = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.v = 0.0
        return np.array([self.v], np.float32), {}

    def step(self, action):
        k, params = action
        self.v = float(np.clip(self.v + params[1] - 0.5, -10, 10))  # uses y whatever the type
        return np.array([self.v], np.float32), 0.0, False, False, {}


def test_check_game_rejects_an_all_masked_step():
    with pytest.raises(AssertionError, match="allows no action"):
        check_game(lambda **kw: _EmptyMaskEnv(**kw), steps=20, api_test=False)


def test_check_game_rejects_an_env_reading_inactive_hybrid_parameters():
    with pytest.raises(AssertionError, match="not chosen"):
        check_game(lambda **kw: _LeakyHybridEnv(**kw), steps=20, api_test=False)


# -- Moving --------------------------------------------------------------------------------------------------


def test_moving_is_deterministic_under_a_seed_and_seeds_differ():
    a, b, c = (gym.make("agentkit/Moving-v0").unwrapped for _ in range(3))
    oa, _ = a.reset(seed=7)
    ob, _ = b.reset(seed=7)
    oc, _ = c.reset(seed=8)
    assert np.array_equal(oa, ob) and not np.array_equal(oa, oc)
    for _ in range(50):
        action = a.action_space.sample()
        ra, rb = a.step(action), b.step(action)
        assert np.array_equal(ra[0], rb[0]) and ra[1:4] == rb[1:4]


def test_moving_ignores_parameters_of_types_not_chosen():
    env = mv.MovingEnv()
    env.reset(seed=3)
    env.step((mv.ACCELERATE, np.array([0.8, 0.0], np.float32)))
    for kind, own in ((mv.ACCELERATE, 0), (mv.TURN, 1), (mv.BRAKE, None)):
        results = []
        for other in (-1.5, 0.0, 1.5):
            clone = copy.deepcopy(env)
            params = np.array([other, other], np.float32)
            if own is not None:
                params[own] = 0.3
            results.append(clone.step((kind, params)))
        assert all(np.array_equal(r[0], results[0][0]) and r[1] == results[0][1] for r in results)


def test_moving_physics_and_goal_bonus():
    env = mv.MovingEnv(observe_bearing=True)
    env.reset(seed=0)
    env.x, env.y, env.heading, env.speed = 0.0, 0.0, 0.0, 0.0
    env.tx, env.ty = 0.5, 0.0
    obs, reward, terminated, _, _ = env.step((mv.ACCELERATE, np.array([1.0, 0.0], np.float32)))
    assert env.speed == pytest.approx(env.max_acceleration)
    assert env.x == pytest.approx(env.dt * env.speed)
    assert reward == pytest.approx(env.dt * env.speed - env.step_penalty) and not terminated
    assert obs[8] == pytest.approx(1.0)  # the target is dead ahead
    env.step((mv.TURN, np.array([0.0, math.pi / 2], np.float32)))
    assert env.heading == pytest.approx(math.pi / 2)
    # stopping outside the target earns nothing extra
    env.speed = 0.2
    _, reward, terminated, _, info = env.step((mv.BRAKE, np.zeros(2, np.float32)))
    assert env.speed == 0.0 and not terminated and reward < 0.5 and not info["success"]
    # stopping inside it ends the episode with the bonus
    env.x, env.y, env.speed = 0.48, 0.0, 0.3
    _, reward, terminated, truncated, info = env.step((mv.BRAKE, np.zeros(2, np.float32)))
    assert terminated and not truncated and info["success"] and reward > 0.9
    # the wall stops the vehicle
    env.x, env.y, env.heading, env.speed = 0.99, 0.0, 0.0, 1.0
    env.step((mv.ACCELERATE, np.zeros(2, np.float32)))
    assert env.x == 1.0 and env.speed == 0.0


def test_moving_truncates_at_the_time_limit():
    env = gym.make("agentkit/Moving-v0", max_steps=17)
    env.reset(seed=0)
    for t in range(17):
        _, _, terminated, truncated, _ = env.step((mv.TURN, np.array([0.0, 0.5], np.float32)))
        assert not terminated and truncated == (t == 16)


# -- Dungeon -------------------------------------------------------------------------------------------------


def _state(env: dg.DungeonEnv):
    return env.hero, env.has_key, env.door_open


def test_dungeon_masks_are_exactly_the_legal_actions_and_never_empty():
    env = dg.DungeonEnv(illegal_move_penalty=0.5)  # every action can be tried; the rules decide
    masked = dg.DungeonEnv()
    rng = np.random.default_rng(0)
    checked = 0
    for episode in range(8):
        env.reset(seed=episode)
        masked.reset(seed=episode)
        for _ in range(40):
            legal = masked.legal_actions()
            obs_mask = masked._obs()["action_mask"]
            assert np.array_equal(obs_mask, legal) and legal.any()
            saved = (_state(env), env.cells.copy(), env.steps)
            for a in range(6):
                _, reward, _, _, info = env.step(a)
                if legal[a]:
                    assert not info["illegal_action"] and _state(env) != saved[0]
                else:
                    assert info["illegal_action"] and _state(env) == saved[0]
                    assert reward == pytest.approx(-0.01 - 0.5)
                (env.hero, env.has_key, env.door_open), env.cells, env.steps = saved[0], saved[1].copy(), saved[2]
                env._rows = env.cells.tolist()
                checked += 1
            a = int(rng.choice(np.flatnonzero(legal)))
            env.step(a)
            _, _, terminated, truncated, _ = masked.step(a)
            if terminated or truncated:
                break
    assert checked > 500


def test_dungeon_penalty_variant_allows_everything_and_observes_the_same():
    masked, penalty = dg.DungeonEnv(), dg.DungeonEnv(illegal_move_penalty=0.1)
    om, _ = masked.reset(seed=5)
    op, _ = penalty.reset(seed=5)
    assert np.array_equal(om["observation"], op["observation"])
    assert op["action_mask"].tolist() == [1] * 6 and om["action_mask"].sum() < 6


def _solve(env: dg.DungeonEnv) -> list[int]:
    """A shortest plan: walk to the key, pick it, walk next to the door, open it, walk to the exit."""

    def path(start, goals, cells):
        prev = {start: None}
        queue = deque([start])
        while queue:
            p = queue.popleft()
            if p in goals:
                moves = []
                while prev[p] is not None:
                    p, a = prev[p]
                    moves.append(a)
                return moves[::-1], p if not moves else None
            for a, (dr, dc) in enumerate(dg._MOVES):
                q = (p[0] + dr, p[1] + dc)
                if q not in prev and cells[q] == dg.FLOOR:
                    prev[q] = (p, a)
                    queue.append(q)
        raise AssertionError(f"unsolvable dungeon:\n{cells}")

    cells = env.cells.copy()
    to_key, _ = path(env.hero, {env.key}, cells)
    near_door = {(env.door[0] + dr, env.door[1] + dc) for dr, dc in dg._MOVES}
    to_door, _ = path(env.key, near_door, cells)
    stand = env.key
    for a in to_door:
        stand = (stand[0] + dg._MOVES[a][0], stand[1] + dg._MOVES[a][1])
    cells[env.door] = dg.FLOOR
    to_exit, _ = path(stand, {env.exit}, cells)
    return [*to_key, dg.PICK, *to_door, dg.OPEN, *to_exit]


@pytest.mark.parametrize("size", [7, 8, 9, 12])
def test_every_generated_dungeon_is_solvable_with_legal_moves(size):
    env = dg.DungeonEnv(size=size)
    layouts = set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        layouts.add(env.cells.tobytes() + bytes(env.hero + env.key + env.exit))
        total = 0.0
        plan = _solve(env)
        for i, a in enumerate(plan):
            assert obs["action_mask"][a] == 1, f"seed {seed}: planned action {a} masked"
            obs, reward, terminated, truncated, _ = env.step(a)
            total += reward
            assert terminated == (i == len(plan) - 1) and not truncated
        assert total == pytest.approx(1.2 - 0.01 * len(plan))
    assert len(layouts) == 40  # procedurally generated per seed


def test_dungeon_is_deterministic_under_a_seed():
    a, b = dg.DungeonEnv(), dg.DungeonEnv()
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    rng = np.random.default_rng(1)
    for _ in range(100):
        assert np.array_equal(oa["observation"], ob["observation"])
        act = int(rng.choice(np.flatnonzero(oa["action_mask"])))
        oa, ra, ta, tra, _ = a.step(act)
        ob, rb, tb, trb, _ = b.step(act)
        assert (ra, ta, tra) == (rb, tb, trb)
        if ta or tra:
            oa, _ = a.reset()
            ob, _ = b.reset()


def test_dungeon_rejects_bad_options():
    with pytest.raises(ValueError, match="illegal_move_penalty"):
        dg.DungeonEnv(illegal_move_penalty=-1.0)
    with pytest.raises(ValueError, match="size"):
        dg.DungeonEnv(size=30)


# -- Team Arena ----------------------------------------------------------------------------------------------


def _hybrid(kind: int, param: float = 0.0):
    return kind, np.array([param, param], np.float32)


def test_team_arena_shot_kills_removes_the_agent_and_updates_state():
    env = parallel_env(team_size=2)
    env.reset(seed=0)
    env.pos["blue_0"] = [0.0, 0.0]
    env.pos["red_0"] = [0.5, 0.02]
    env.pos["red_1"] = [0.0, 0.9]
    env.pos["blue_1"] = [-0.9, -0.9]
    actions = {a: _hybrid(IDLE) for a in env.agents}
    actions["blue_0"] = _hybrid(SHOOT, 0.0)
    _, rewards, terms, truncs, _ = env.step(actions)
    assert terms["red_0"] and not terms["red_1"] and not any(truncs.values())
    assert "red_0" not in env.agents and len(env.agents) == 3
    assert rewards["blue_0"] == rewards["blue_1"] == pytest.approx(0.5)
    assert rewards["red_1"] == pytest.approx(-0.5)
    state = env.state()
    i = env.all_agents.index("red_0")
    assert state[4 * i + 2] == 0.0 and state[4 * env.all_agents.index("red_1") + 2] == 1.0


def test_team_arena_shoot_is_masked_during_cooldown_and_ignored_if_sent():
    env = parallel_env(team_size=1, cooldown=3)
    obs, _ = env.reset(seed=1)
    env.pos["blue_0"], env.pos["red_0"] = [-0.5, 0.0], [0.5, 0.5]
    assert obs["blue_0"]["action_mask"].tolist() == [1, 1, 1]
    obs, *_ = env.step({"blue_0": _hybrid(SHOOT, -1.0), "red_0": _hybrid(IDLE)})  # a miss
    for _ in range(3):
        assert obs["blue_0"]["action_mask"].tolist() == [1, 0, 1]
        shoot, idle = copy.deepcopy(env), copy.deepcopy(env)
        aim = math.atan2(0.5, 1.0)  # would hit red_0
        rs = shoot.step({"blue_0": _hybrid(SHOOT, aim), "red_0": _hybrid(IDLE)})
        ri = idle.step({"blue_0": _hybrid(IDLE), "red_0": _hybrid(IDLE)})
        assert "red_0" in shoot.agents and all(
            np.array_equal(rs[0][a]["observation"], ri[0][a]["observation"]) for a in rs[0]
        )
        obs, *_ = env.step({"blue_0": _hybrid(IDLE), "red_0": _hybrid(IDLE)})
    assert obs["blue_0"]["action_mask"].tolist() == [1, 1, 1]


def test_team_arena_move_reads_only_its_direction():
    env = parallel_env(team_size=1)
    env.reset(seed=2)
    env.pos["blue_0"] = [0.0, 0.0]
    env.step({"blue_0": (MOVE, np.array([math.pi / 2, 3.0], np.float32)), "red_0": _hybrid(IDLE)})
    assert env.pos["blue_0"] == pytest.approx([0.0, env.move_speed], abs=1e-6)


def test_scripted_opponent_exposes_one_team_and_reports_wins():
    env = parallel_env(team_size=2, opponent="scripted")
    obs, _ = env.reset(seed=0)
    assert env.possible_agents == ["blue_0", "blue_1"] and set(obs) == {"blue_0", "blue_1"}
    rng = np.random.default_rng(0)
    wins = []
    while len(wins) < 30:
        actions = {a: _hybrid(MOVE, float(rng.uniform(-3, 3))) for a in env.agents}
        obs, _, _, _, infos = env.step(actions)
        if not env.agents:
            assert all("win" in i and "winner" in i for i in infos.values())
            wins.append(next(iter(infos.values()))["win"])
            env.reset()
    assert np.mean(wins) < 0.2  # a team that never shoots loses to the script


def test_team_arena_team_frame_makes_the_two_seats_the_same_game():
    """Mirror a position left to right and swap the teams: in the team frame red then observes what blue did,
    and the same actions do the mirrored thing (an angle of 0 is towards the other side for both)."""
    env = parallel_env(team_size=2, frame="team")
    env.reset(seed=3)
    env.pos.update({"blue_0": [-0.7, 0.1], "blue_1": [-0.6, -0.4], "red_0": [0.3, 0.12], "red_1": [0.8, 0.5]})
    mirrored = copy.deepcopy(env)
    for i in range(2):
        (bx, by), (rx, ry) = env.pos[f"blue_{i}"], env.pos[f"red_{i}"]
        mirrored.pos[f"red_{i}"], mirrored.pos[f"blue_{i}"] = [-bx, by], [-rx, ry]
    for i in range(2):
        blue_view = env._observe(f"blue_{i}")["observation"]
        assert np.array_equal(mirrored._observe(f"red_{i}")["observation"], blue_view)

    def other(agent: str) -> str:
        team, i = agent.split("_")
        return f"{'red' if team == 'blue' else 'blue'}_{i}"

    actions = {"blue_0": _hybrid(SHOOT, 0.0), "blue_1": _hybrid(MOVE, 0.5), "red_0": _hybrid(IDLE),
               "red_1": _hybrid(MOVE, -2.0)}
    _, rewards, terms, *_ = env.step(actions)
    _, mirrored_rewards, mirrored_terms, *_ = mirrored.step({other(a): act for a, act in actions.items()})
    assert terms["red_0"] and mirrored_terms["blue_0"]  # shot at angle 0, straight at the other side
    for a in actions:
        assert mirrored_rewards[other(a)] == rewards[a]
        x, y = env.pos[a]
        assert mirrored.pos[other(a)] == pytest.approx([-x, y], abs=1e-12)


def test_team_arena_scripted_red_plays_in_world_coordinates_whatever_the_frame():
    games = [parallel_env(team_size=2, opponent="scripted", frame=frame) for frame in ("world", "team")]
    for game in games:
        game.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(60):
        actions = {a: _hybrid(MOVE, float(rng.uniform(-3, 3))) for a in games[0].agents}
        steps = [game.step(dict(actions)) for game in games]
        assert games[0].pos == games[1].pos and steps[0][1] == steps[1][1]
        if not games[0].agents:
            break


def test_team_arena_rejects_bad_options():
    with pytest.raises(ValueError, match="opponent"):
        parallel_env(opponent="human")
    with pytest.raises(ValueError, match="frame"):
        parallel_env(frame="mirror")


# -- speed ---------------------------------------------------------------------------------------------------


def _time_steps(step, reset, n=3000) -> float:
    reset()
    start = time.perf_counter()
    for _ in range(n):
        if step():
            reset()
    return (time.perf_counter() - start) / n


def test_games_step_in_tens_of_microseconds():
    """A generous bound (shared CI machines): the measured figures are ~10-40 us per single-agent step."""
    moving = mv.MovingEnv()
    turn = (mv.TURN, np.array([0.0, 0.3], np.float32))
    t_moving = _time_steps(lambda: any(moving.step(turn)[2:4]), lambda: moving.reset(seed=0))
    dungeon = dg.DungeonEnv(illegal_move_penalty=0.0)
    cycle = iter(range(10**9))
    t_dungeon = _time_steps(lambda: any(dungeon.step(next(cycle) % 6)[2:4]), lambda: dungeon.reset(seed=0))
    arena = parallel_env(team_size=2)
    idle = _hybrid(IDLE)
    t_arena = _time_steps(lambda: not arena.step(dict.fromkeys(arena.agents, idle))[0] or not arena.agents,
                          lambda: arena.reset(seed=0))
    assert t_moving < 300e-6, f"Moving step took {t_moving * 1e6:.0f} us"
    assert t_dungeon < 500e-6, f"Dungeon step took {t_dungeon * 1e6:.0f} us"
    assert t_arena < 2000e-6, f"Team Arena step (4 agents) took {t_arena * 1e6:.0f} us"
