"""Self-play: the snapshot pool, frozen seats, Elo, resume, and an export that plays every shipped opponent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from agentkit_plugins.mappo import MAPPO

from agentkit import checkpoint as ckpt
from agentkit.algorithm import BuildContext
from agentkit.cli import main
from agentkit.config import load_config
from agentkit.environment import MultiAgentTransition
from agentkit.errors import ConfigError
from agentkit.host import PluginHost
from agentkit.runlog import read_metrics
from agentkit.selfplay import compare_returns, elo_expected
from agentkit.trainer import train

TTT = "pettingzoo.classic.tictactoe_v3"


def selfplay_config(total_steps: int, **self_play) -> dict:
    return {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": TTT, "num_envs": 8},
        "algorithm": {"plugin": "mappo", "total_steps": total_steps, "num_steps": 16, "centralised": False,
                      "agent_id": False, "update_epochs": 2,
                      "self_play": {"save_steps": 256, "window": 3, "play_against_latest_ratio": 0.25,
                                    "swap_steps": 64, "eval_opponents": ["random", "minimax:2"],
                                    "eval_every_steps": 512, "eval_games": 2, **self_play}},
        "policy": {"hidden_sizes": [32, 32]},
        "run": {"progress": "none", "tensorboard": True, "torch_threads": 1},
    }


def run_train(section: dict, run_dir, resume: bool = False):
    host = PluginHost()
    return train(load_config(section, host.registry), host, run_dir=run_dir, resume=resume)


def test_a_game_is_scored_by_comparing_the_seats_returns():
    assert compare_returns(1.0, -1.0) == 1.0 and compare_returns(0.0, 0.0) == 0.5 and compare_returns(-2.0, 2.0) == 0.0
    assert elo_expected(1200, 1200) == 0.5
    assert elo_expected(1400, 1200) == pytest.approx(1 - elo_expected(1200, 1400))


def test_self_play_pool_frozen_seats_and_elo_survive_resume(tmp_path):
    run_dir = tmp_path / "ttt"
    run_train(selfplay_config(1024), run_dir)
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]["selfplay"]
    # a snapshot at the start and every 256 steps; the window keeps the newest 3
    assert [p["step"] for p in state["pool"]] == [512, 768, 1024]
    assert state["elo"] != 1200.0
    assert set(state["fixed_elo"]) == {"random", "minimax:2"} and state["last_eval_step"] == 1024
    pool_weights = [p["actor"] for p in state["pool"]]
    assert any(not torch.equal(a[k], b[k]) for a, b in zip(pool_weights, pool_weights[1:], strict=False) for k in a)

    header, rows = read_metrics(run_dir / "metrics.csv")
    for column in ("selfplay/elo", "selfplay/pool_size", "selfplay/win_rate", "selfplay/player_1/win_rate",
                   "selfplay/player_2/loss_rate", "charts/player_1/episode_return", "eval/random/win_rate",
                   "eval/minimax:2/player_2/loss_rate", "eval/minimax:2/elo"):
        assert column in header, column
    # zero-sum: each seat's return, never their mean (always 0), in metrics.csv, TensorBoard and curve.png
    assert "charts/episode_return" not in header and "charts/player_2/episode_return" in header
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "charts/episode_return" not in tags and "charts/player_1/episode_return" in tags
    from agentkit.runlog import curve_columns

    assert curve_columns(header) == ["charts/player_1/episode_return", "charts/player_2/episode_return"]
    # a self-play run written while the mean was still logged is drawn per side too; other runs keep the mean
    old_header = ["step", "charts/episode_return", *curve_columns(header), "selfplay/elo"]
    assert curve_columns(old_header) == curve_columns(header)
    assert curve_columns(old_header[:-1]) == old_header[1:-1]
    last_elo = float(rows[-1]["selfplay/elo"])
    assert float(rows[-1]["selfplay/pool_size"]) == 3

    run_train(selfplay_config(1536), run_dir, resume=True)
    resumed = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]["selfplay"]
    assert [p["step"] for p in resumed["pool"]] == [1024, 1280, 1536]
    assert resumed["last_eval_step"] == 1536 and resumed["fixed_elo"] != state["fixed_elo"]
    assert torch.equal(resumed["pool"][0]["actor"]["encoder.net.0.weight"], state["pool"][2]["actor"]["encoder.net.0.weight"])
    _, rows = read_metrics(run_dir / "metrics.csv")
    first_resumed = next(r for r in rows if int(r["step"]) > 1024)
    # the rating continues from the checkpoint (one iteration's games move it at most K per game)
    assert abs(float(first_resumed["selfplay/elo"]) - last_elo) <= 16 * float(first_resumed["selfplay/games"] or 0) + 1e-6
    assert (run_dir / "curve.png").is_file()

    # an export plays any seat, says so, and plays against every shipped opponent
    out = tmp_path / "ttt.onnx"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    exported = sorted(tmp_path.glob("ttt*.onnx"))
    assert len(exported) == 1
    from agentkit import runtime

    game = runtime.load(exported[0]).metadata["game"]
    assert game == {"turn_based": True, "seats": ["player_1", "player_2"], "observation": "own", "self_play": True}
    for opponent in ("random", "minimax:2", "minimax"):
        assert main(["eval", str(exported[0]), "--opponent", opponent, "--episodes", "2", "--json"]) == 0


def test_frozen_seats_never_reach_the_batch():
    host = PluginHost()
    config = load_config(selfplay_config(64, play_against_latest_ratio=0.0), host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    algo = MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    try:
        frozen = torch.as_tensor(algo.selfplay.frozen("player"))
        assert frozen.sum(1).tolist() == [1] * 8  # one seat of two is the snapshot's in every copy
        algo.iterate()
        valid = algo.units[0].storage.valid
        obs_alive = valid.any(0)  # every seat is somebody's, but a frozen one is never valid at t = 0
        assert not bool((valid[0] & frozen).any()) and bool(obs_alive.any())
    finally:
        algo.close()


def test_self_play_needs_one_policy_for_every_seat_or_one_per_side():
    host = PluginHost()
    section = selfplay_config(64)
    section["algorithm"]["share_parameters"] = False  # a policy per seat, all in one env group: neither
    config = load_config(section, host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    with pytest.raises(ConfigError, match="one policy that plays every seat .* or one policy per env group"):
        MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    # each seat its own env group: two sides (asymmetric self-play), whose fixed opponents are refused
    section = selfplay_config(64)
    section["env"]["groups"] = {"x": ["player_1"], "o": ["player_2"]}
    config = load_config(section, host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    with pytest.raises(ConfigError, match="evaluate the export instead"):
        MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    section["algorithm"]["self_play"]["eval_opponents"] = []
    config = load_config(section, host.registry)
    algo = MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    try:  # one seat per side, turn-based: X learns first, O's moves are played but never learned
        assert algo.selfplay.sides == ["x", "o"]
        metrics = algo.iterate()
        x, o = algo.units
        assert bool(x.storage.valid.any()) and not bool(o.storage.valid.any())
        assert "losses/x/policy" in metrics and "losses/o/policy" not in metrics
    finally:
        algo.close()
    # team_change means nothing when one policy plays every seat
    section = selfplay_config(64, team_change=128)
    config = load_config(section, host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    with pytest.raises(ConfigError, match="team_change"):
        MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))


def test_example_configs_validate(capsys):
    for example in ("examples/tictactoe-selfplay.yaml", "examples/connect4-selfplay.yaml",
                    "examples/arena-selfplay.yaml"):
        assert main(["config", "show", example]) == 0
        assert "self_play" in capsys.readouterr().out


def test_the_one_policy_arena_example_trains_and_its_export_plays_either_team(tmp_path):
    """examples/arena-selfplay-one-policy.yaml, shortened: one file plays blue against the scripted team and
    both teams against itself (benchmarks/arena_winrate.py)."""
    from test_benchmarks import BENCHMARKS, load_script

    from agentkit import runtime

    run_dir = tmp_path / "run"
    assert main(["train", "examples/arena-selfplay-one-policy.yaml", "--run-dir", str(run_dir),
                 "--set", "algorithm.total_steps=1024", "--set", "env.num_envs=2", "--set", "run.progress=none",
                 "--set", "run.tensorboard=false"]) == 0
    assert main(["export", str(run_dir), "--out", str(tmp_path / "team.onnx")]) == 0
    policy = runtime.load(tmp_path / "team.onnx")  # one group: one file
    assert policy.metadata["agents"] == ["blue_0", "blue_1", "red_0", "red_1"]
    arena = load_script(BENCHMARKS / "arena_winrate.py")
    kwargs = policy.metadata["env"]["config"]["kwargs"]
    scripted = arena.play(policy, 2, 0, {**kwargs, "opponent": "scripted"})
    itself = arena.play(policy, 2, 0, {**kwargs, "opponent": None})
    assert "red" not in scripted and {"shots_per_episode", "aim_error_in_range"} <= set(itself["red"])
    # no agent id: every seat is the same policy, so a red agent acts as a blue one on the same (mirrored) obs
    obs, mask = np.linspace(-0.5, 0.5, 15, dtype=np.float32), np.array([1, 1, 1], dtype=np.int8)
    actions = [policy.act(obs, mask=mask, agent=agent) for agent in policy.metadata["agents"]]
    assert all(int(a[0]) == int(actions[0][0]) and np.allclose(a[1], actions[0][1]) for a in actions)


@pytest.mark.parametrize("spec, message", [("minimx", "not a registered opponent"), ("minimax:0", "depth"),
                                           ("runs", "during training the fixed opponents")])
def test_eval_opponents_are_checked_before_training(spec, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # a run dir as an opponent is for agentkit eval only
    host = PluginHost()
    config = load_config(selfplay_config(64, eval_opponents=[spec]), host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    with pytest.raises(ConfigError, match=message) as err:
        MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    assert "algorithm.self_play.eval_opponents" in str(err.value)


@pytest.mark.parametrize("latest_ratio", [1.0, 0.25])
def test_every_learned_move_is_credited_with_its_seats_game_result(latest_ratio):
    # gamma = lambda = 1: a move's return is its seat's result at the game's end (tic-tac-toe pays only then),
    # whoever moved last, for both seats, against itself and against snapshots (whose moves are not learned)
    host = PluginHost()
    section = selfplay_config(64, play_against_latest_ratio=latest_ratio, eval_opponents=[])
    section["algorithm"].update(gamma=1.0, gae_lambda=1.0, num_steps=40)
    config = load_config(section, host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    algo = MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    try:
        algo.iterate()
        st = algo.units[0].storage
        checked = {0: 0, 1: 0}
        for n in range(st.valid.shape[1]):
            for seat in range(2):
                ends = torch.nonzero(st.dones[:, n, seat]).flatten().tolist()
                for t in torch.nonzero(st.valid[:, n, seat]).flatten().tolist():
                    end = next((u for u in ends if u >= t), None)
                    if end is None:
                        continue  # the game goes on past the rollout: a bootstrapped return
                    assert st.returns[t, n, seat].item() == pytest.approx(st.rewards[end, n, seat].item(), abs=1e-5)
                    checked[seat] += 1
        assert min(checked.values()) > 20
        # the seat that did not make the last move of a game still gets its result (a loss on the winner's turn)
        lost_on_the_winners_move = [(n, seat) for n in range(st.valid.shape[1]) for seat in range(2)
                       for u in torch.nonzero(st.dones[:, n, seat]).flatten().tolist()
                       if not st.valid[u, n, seat] and st.rewards[u, n, seat] < 0]
        assert lost_on_the_winners_move
    finally:
        algo.close()


# -- asymmetric self-play: each env group a side ------------------------------------------------------------------

ARENA = "agentkit_envs.games.team_arena"


def arena_config(total_steps: int) -> dict:
    return {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": ARENA, "kwargs": {"team_size": 1},
                "groups": {"blue": ["blue_0"], "red": ["red_0"]}, "num_envs": 4},
        "algorithm": {"plugin": "mappo", "total_steps": total_steps, "num_steps": 32, "update_epochs": 1,
                      "self_play": {"team_change": 256, "save_steps": 128, "window": 3, "swap_steps": 64,
                                    "play_against_latest_ratio": 0.5}},
        "policy": {"hidden_sizes": [16]},
        "run": {"progress": "none", "tensorboard": True, "torch_threads": 1, "checkpoint_every_steps": 512},
    }


def test_team_self_play_sides_take_turns_keep_pools_and_ratings_across_resume(tmp_path):
    run_dir = tmp_path / "arena"
    run_train(arena_config(1024), run_dir)
    header, rows = read_metrics(run_dir / "metrics.csv")
    # blue learns for team_change = 256 env steps (two iterations of 128), then red, then blue...
    learned = ["blue" if float(r["selfplay/blue/learning"]) else "red" for r in rows]
    assert learned == ["blue", "blue", "red", "red"] * 2
    for row, side in zip(rows, learned, strict=True):  # only the learning side is updated
        other = "red" if side == "blue" else "blue"
        assert row[f"losses/{side}/policy"] != "" and row[f"losses/{other}/policy"] == ""
        assert float(row[f"selfplay/{other}/learning"]) == 0.0
    # per side, never the mean over the two teams, in metrics.csv, TensorBoard and curve.png
    for column in ("charts/blue/episode_return", "charts/red/episode_return", "selfplay/blue/elo",
                   "selfplay/red/elo", "selfplay/blue/win_rate", "selfplay/red/loss_rate", "selfplay/red/pool_size"):
        assert column in header, column
    assert "charts/episode_return" not in header
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agentkit.runlog import curve_columns, elo_columns

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "charts/episode_return" not in tags and {"selfplay/red/elo", "charts/blue/episode_return"} <= set(tags)
    assert curve_columns(header) == ["charts/blue/episode_return", "charts/red/episode_return"]
    assert elo_columns(header) == ["selfplay/blue/elo", "selfplay/red/elo"]
    assert (run_dir / "curve.png").is_file()

    saved = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]
    state = saved["selfplay"]
    # a side's snapshot after each of its save_steps while it learns; the window keeps the newest 3
    assert [p["step"] for p in state["pools"]["blue"]] == [256, 640, 768]
    assert [p["step"] for p in state["pools"]["red"]] == [512, 896, 1024]
    assert state["learning"] == 0 and state["elo"]["blue"] != 1200.0
    # the side that is not learning does not change: blue's weights are its snapshot taken at 768
    blue = saved["units"]["blue"]["actor"]
    assert all(torch.equal(blue[k], state["pools"]["blue"][-1]["actor"][k]) for k in blue)
    assert not torch.equal(blue["encoder.net.0.weight"], state["pools"]["blue"][0]["actor"]["encoder.net.0.weight"])
    last = rows[-1]

    run_train(arena_config(1536), run_dir, resume=True)
    resumed = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]["selfplay"]
    assert [p["step"] for p in resumed["pools"]["blue"]] == [768, 1152, 1280]
    assert [p["step"] for p in resumed["pools"]["red"]] == [1024, 1408, 1536]
    assert torch.equal(resumed["pools"]["red"][0]["actor"]["encoder.net.0.weight"],
                       state["pools"]["red"][2]["actor"]["encoder.net.0.weight"])
    _, rows = read_metrics(run_dir / "metrics.csv")
    first = next(r for r in rows if int(r["step"]) > 1024)
    assert float(first["selfplay/blue/learning"]) == 1.0  # the turn order goes on where it stopped
    games = float(first.get("selfplay/blue/games") or 0)
    for side in ("blue", "red"):  # the ratings continue from the checkpoint (at most K per game)
        assert abs(float(first[f"selfplay/{side}/elo"]) - float(last[f"selfplay/{side}/elo"])) <= 16 * games + 1e-6

    # the blue export plays the scripted red team it never met (benchmarks/arena_winrate.py)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "team.onnx")]) == 0
    from test_benchmarks import BENCHMARKS, load_script

    from agentkit import runtime

    arena = load_script(BENCHMARKS / "arena_winrate.py")
    result = arena.play(runtime.load(tmp_path / "team-blue.onnx"), 2, 0, {"team_size": 1, "opponent": "scripted"})
    assert 0.0 <= result["win_rate"] <= 1.0 and -3.0 < result["mean_return"] < 3.0


def tag_algo(latest_ratio: float):
    host = PluginHost()
    section = {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": "mpe2.simple_tag_v3", "num_envs": 4,
                "kwargs": {"num_good": 1, "num_adversaries": 2, "num_obstacles": 1, "max_cycles": 25}},
        "algorithm": {"plugin": "mappo", "total_steps": 256, "num_steps": 16, "update_epochs": 1,
                      "self_play": {"team_change": 1000, "play_against_latest_ratio": latest_ratio}},
        "policy": {"hidden_sizes": [16]},
        "run": {"progress": "none"},
    }
    config = load_config(section, host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    return MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))


@pytest.mark.parametrize("latest_ratio", [1.0, 0.0])
def test_the_side_that_is_not_learning_plays_its_latest_policy_or_a_snapshot_and_never_learns(latest_ratio):
    # simple_tag: predators (adversary) learn first; the prey (agent) is played by its latest policy, biased
    # here towards action 0 after the pool took its untrained snapshot, or by that snapshot
    algo = tag_algo(latest_ratio)
    try:
        assert algo.selfplay.sides == ["adversary", "agent"]
        prey = algo.units[1]
        with torch.no_grad():
            prey.actor.head.logits.bias.copy_(torch.tensor([20.0, 0, 0, 0, 0]))
        before = {k: v.clone() for k, v in prey.actor.state_dict().items()}
        algo.iterate()
        st = prey.storage
        assert not bool(st.valid.any())  # the prey's moves are never learned
        assert all(torch.equal(before[k], v) for k, v in prey.actor.state_dict().items())
        assert bool(algo.units[0].storage.valid.all())  # every predator move is
        zeros = float((st.actions == 0).float().mean())
        assert zeros == 1.0 if latest_ratio == 1.0 else zeros < 0.5
    finally:
        algo.close()


ARENA_SEATS = {"blue": ["blue_0", "blue_1"], "red": ["red_0", "red_1"]}


def _arena_one_policy(**self_play) -> dict:
    section = selfplay_config(64, **{"eval_opponents": [], **self_play})
    section["env"] = {"plugin": "pettingzoo", "module": "agentkit_envs.games.team_arena", "num_envs": 4,
                      "kwargs": {"team_size": 2, "frame": "team", "max_cycles": 20},
                      "groups": {"team": ["blue_0", "blue_1", "red_0", "red_1"]}}
    return section


@pytest.mark.parametrize(("self_play", "message"), [
    ({}, r"needs its seats named.*algorithm\.self_play\.seats: \{blue: \[blue_0, blue_1\]"),
    ({"seats": {"blue": ["blue_0", "blue_1"], "red": ["red_0"]}}, r"must put each agent of the policy"),
    ({"seats": ARENA_SEATS, "eval_opponents": ["random"]}, r"eval_opponents: fixed opponents play turn-based games"),
])
def test_one_policy_for_a_parallel_game_needs_its_seats_named(self_play, message):
    """A parallel env's episodes do not say which agents form a side: without ``seats`` a run of it would never
    rate a game, draw a new opponent or change the learner's seat; fixed opponents play turn-based seats only."""
    host = PluginHost()
    config = load_config(_arena_one_policy(**self_play), host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    try:
        with pytest.raises(ConfigError, match=message):
            MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    finally:
        env.close()


def test_a_team_as_a_seat_a_snapshot_plays_the_other_team_and_games_are_rated(tmp_path):
    """Team Arena with one policy for all four agents and named seats: in a copy against a snapshot, the
    snapshot plays both agents of the team the learner does not; the seats' returns, summed from the rewards,
    rate the games, and the learner changes team every game."""
    host = PluginHost()
    config = load_config(_arena_one_policy(seats=ARENA_SEATS, play_against_latest_ratio=0.0), host.registry)
    env = host.registry.get("env", "pettingzoo").factory(config.env)
    algo = MAPPO(config.algorithm, BuildContext(config, host.registry, env, None, torch.device("cpu")))
    try:
        sp = algo.selfplay
        frozen = sp.frozen("team")  # agents in slot order: blue_0, blue_1, red_0, red_1
        assert frozen.tolist() == [[False, False, True, True], [True, True, False, False]] * 2
        games = {"selfplay/games": 0.0, "selfplay/blue/games": 0.0, "selfplay/red/games": 0.0}
        for _ in range(3):  # 3 x 16 steps of games of at most 20: every copy ended at least two
            metrics = algo.iterate()
            for key in games:
                games[key] += metrics.get(key, 0.0)
        assert games["selfplay/games"] >= 8 and games["selfplay/blue/games"] >= 1 and games["selfplay/red/games"] >= 1
        assert games["selfplay/games"] == games["selfplay/blue/games"] + games["selfplay/red/games"]
        # copy 0 (learner blue, against a snapshot) ends a game whose blue agents earned more than red's
        sp._returns[:] = 0.0
        sp.learner_seat[0], sp.opponent[0] = 0, 0
        elo, reward = sp.elo, np.zeros((4, 4), np.float32)
        reward[0] = [1.0, 0.5, -1.0, 0.0]
        sp.observe(MultiAgentTransition(groups={"team": SimpleNamespace(reward=reward)}, episode_envs=[0]))
        assert sp.elo > elo and sp.learner_seat[0] == 1 and sp.metrics()["selfplay/blue/win_rate"] == 1.0
    finally:
        algo.close()
