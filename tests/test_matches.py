"""Fixed opponents (random, minimax, a plugin's) and ``agentkit eval --opponent/--seat`` on turn-based games."""

from __future__ import annotations

import json
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
from agentkit_envs.pettingzoo_env import PettingZooEnvConfig, PettingZooSource
from agentkit_plugins.opponents import MinimaxOpponent, RandomOpponent
from pettingzoo.classic import connect_four_v3, tictactoe_v3

from agentkit.cli import main
from agentkit.config import OpponentConfig
from agentkit.errors import UserError
from agentkit.host import PluginHost
from agentkit.matches import play_matches
from agentkit.opponents import clone_env, make_opponent

TTT = "pettingzoo.classic.tictactoe_v3"


def ttt_source() -> PettingZooSource:
    return PettingZooSource(PettingZooEnvConfig(plugin="pettingzoo", module=TTT, num_envs=1))


def opponent_as_policy(opponent, source):
    """A seat policy that asks an opponent (so matches can put two opponents against each other)."""
    env_ref = {}

    def policy(agent, obs, mask):
        return opponent.act(env_ref["env"], agent)

    real_make = source.make_env

    def make_env(render_mode):
        env_ref["env"] = real_make(render_mode)
        return env_ref["env"]

    source.make_env = make_env
    return policy


def test_clone_env_copies_the_position_and_is_independent():
    env = connect_four_v3.env()
    env.reset(seed=0)
    env.step(3)
    copy = clone_env(env)
    assert copy.unwrapped.board == env.unwrapped.board and copy.agent_selection == env.agent_selection
    copy.step(3)
    assert copy.unwrapped.board != env.unwrapped.board and env.agent_selection != copy.agent_selection


def test_minimax_at_full_depth_is_perfect_at_tictactoe():
    src = ttt_source()
    perfect = MinimaxOpponent(seed=0)
    # against itself: always a draw; against random, in either seat: never a loss
    result = play_matches(src, opponent_as_policy(MinimaxOpponent(seed=1), src), perfect, episodes=3)
    assert result.draw_rate == 1.0
    src = ttt_source()
    result = play_matches(src, opponent_as_policy(perfect, src), RandomOpponent(), episodes=8)
    assert result.loss_rate == 0.0 and result.seats["first"].win_rate > 0.5


def test_minimax_depth_two_takes_a_win_and_blocks_one():
    env = connect_four_v3.env()
    env.reset(seed=0)
    for move in (0, 6, 0, 6, 0):  # player_0 has three in column 0; player_1 to move must block
        env.step(move)
    assert MinimaxOpponent(2, seed=0).act(env, env.agent_selection) == 0
    env.step(5)  # player_1 does not block: player_0 wins at once
    assert MinimaxOpponent(2, seed=0).act(env, env.agent_selection) == 0
    # depth 1 sees its own win but not the opponent's threat
    env = tictactoe_v3.env()
    env.reset(seed=0)
    for move in (0, 4, 1):
        env.step(move)
    assert MinimaxOpponent(2, seed=0).act(env, env.agent_selection) == 2


def test_random_plays_legal_moves_only():
    env = connect_four_v3.env()
    env.reset(seed=0)
    for _ in range(6):
        env.step(2)  # column 2 is full
    rng_moves = {RandomOpponent(seed=s).act(env, env.agent_selection) for s in range(40)}
    assert rng_moves == {0, 1, 3, 4, 5, 6}


def test_bad_opponent_specs_are_user_errors():
    registry = PluginHost().registry
    assert {"random", "minimax"} <= set(registry.names("opponent"))
    for spec, message in (("minimax:x", "depth"), ("minimax:0", "depth"), ("random:3", "takes no argument"),
                          ("nobody", "not a registered opponent"), ("missing.onnx", "not a registered opponent")):
        with pytest.raises(UserError, match=message):
            make_opponent(spec, 0, registry, lambda path: None)


class CornerFirst:
    """A third-party scripted player: the lowest free square of ``order`` (``corner-first:REVERSED``)."""

    name = "corner-first"

    def __init__(self, reverse: bool):
        self.order = [0, 2, 6, 8, 4, 1, 3, 5, 7][:: -1 if reverse else 1]
        self.resets = 0

    def reset(self, seed):
        self.resets += 1

    def act(self, env, agent):
        mask = env.observe(agent)["action_mask"]
        return next(square for square in self.order if mask[square])


class CornerFirstConfig(OpponentConfig):
    argument: ClassVar[str | None] = "reverse"
    reverse: bool = False


def corner_first_plugin(made: list) -> types.ModuleType:
    """A plugin module registering ``corner-first`` (each opponent it builds is appended to ``made``)."""
    module = types.ModuleType("corner_first_plugin")

    def make(config, seed):
        made.append(CornerFirst(config.reverse))
        return made[-1]

    def agentkit_register_opponents(register):
        register("corner-first", make, CornerFirstConfig, "Takes corners first (a test's scripted player).")

    module.agentkit_register_opponents = agentkit_register_opponents
    return module


def test_an_opponent_plugin_plays_through_the_same_door(ttt_run, capsys, monkeypatch):
    made: list[CornerFirst] = []
    monkeypatch.setitem(sys.modules, "corner_first_plugin", corner_first_plugin(made))
    host = PluginHost(modules=["corner_first_plugin"])
    reg = host.registry.get("opponent", "corner-first")
    assert reg.provider == "module corner_first_plugin"
    # full-depth minimax (a built-in, the same door) never loses to it in either seat
    src = ttt_source()
    result = play_matches(src, opponent_as_policy(make_opponent("minimax", 0, host.registry, None), src),
                          make_opponent("corner-first:true", 0, host.registry, None), episodes=3)
    assert result.loss_rate == 0 and made[-1].order[0] == 7
    assert made[-1].resets == 6  # reset before each game, 3 per seat
    # the CLI finds it with -p, lists it, and plays a run against it
    assert main(["eval", str(ttt_run), "-p", "corner_first_plugin", "--opponent", "corner-first",
                 "--episodes", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["opponent"] == "corner-first" and out["episodes"] == 4
    assert main(["plugins", "-p", "corner_first_plugin", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kinds = {(r["kind"], r["name"]): r["provider"] for r in rows}
    assert kinds[("opponent", "corner-first")] == "module corner_first_plugin"
    assert kinds[("opponent", "minimax")] == "built-in"


@pytest.fixture(scope="module")
def ttt_run(trained_run):
    return trained_run({
        "env": {"plugin": "pettingzoo", "module": TTT, "num_envs": 4},
        "algorithm": {"plugin": "mappo", "total_steps": 256, "num_steps": 16, "centralised": False,
                      "agent_id": False},
        "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 128},
    })


def test_eval_against_an_opponent_reports_rates_per_seat(ttt_run, capsys):
    assert main(["eval", str(ttt_run), "--opponent", "random", "--episodes", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["opponent"] == "random" and out["episodes"] == 12
    assert set(out["seats"]) == {"first", "second"}
    for stats in [out, *out["seats"].values()]:
        assert stats["win_rate"] + stats["draw_rate"] + stats["loss_rate"] == pytest.approx(1.0)
    assert out["seats"]["first"]["agent"] == "player_1" and out["seats"]["second"]["agent"] == "player_2"
    # the same seed gives the same games; one seat only
    assert main(["eval", str(ttt_run), "--opponent", "random", "--episodes", "6", "--json", "--seat", "second"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert list(second["seats"]) == ["second"] and second["seats"]["second"] == out["seats"]["second"]
    # a run dir as the opponent: the policy against itself
    assert main(["eval", str(ttt_run), "--opponent", str(ttt_run), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["opponent"] == "run"
    # an earlier checkpoint of the run
    assert main(["eval", str(ttt_run), "--checkpoint", "step_128.pt", "--opponent", "random", "--episodes", "2"]) == 0
    assert "against random, 4 games" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--seat", "first"], "--seat goes with --opponent"),
    (["--opponent", "minimax:deep"], "valid integer"),
    (["--opponent", "champion"], "not a registered opponent"),
])
def test_eval_against_bad_input_exits_2(ttt_run, capsys, argv, message):
    assert main(["eval", str(ttt_run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_against_a_simultaneous_env_exits_2(tmp_path, capsys):
    from agentkit.config import load_config
    from agentkit.host import PluginHost
    from agentkit.trainer import train

    host = PluginHost()
    config = load_config({
        "env": {"plugin": "pettingzoo", "module": "mpe2.simple_spread_v3", "kwargs": {"N": 2, "max_cycles": 5},
                "num_envs": 1},
        "algorithm": {"plugin": "mappo", "total_steps": 8, "num_steps": 8},
        "run": {"progress": "none", "tensorboard": False},
    }, host.registry)
    train(config, host, run_dir=tmp_path / "spread")
    assert main(["eval", str(tmp_path / "spread"), "--opponent", "random"]) == 2
    assert "not a turn-based game" in capsys.readouterr().err


def test_shipped_opponents_are_seeded():
    env = tictactoe_v3.env()
    env.reset(seed=0)
    a = [RandomOpponent(seed=3).act(env, env.agent_selection) for _ in range(5)]
    assert len(set(a)) == 1
    moves = np.array([MinimaxOpponent(1, seed=s).act(env, env.agent_selection) for s in range(10)])
    assert len(set(moves.tolist())) > 1  # depth 1 sees no win anywhere: a seeded random choice among all
