"""Turn-based AEC envs through the pettingzoo plugin: only the mover acts, rewards reach the previous move."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from agentkit_envs.pettingzoo_env import PettingZooEnvConfig, PettingZooSource, TurnBasedVecEnv

from agentkit.storage import RolloutStorage

TTT = "pettingzoo.classic.tictactoe_v3"
C4 = "pettingzoo.classic.connect_four_v3"


def source(module: str = TTT, **section) -> PettingZooSource:
    return PettingZooSource(PettingZooEnvConfig(plugin="pettingzoo", module=module, num_envs=2, **section))


def test_board_games_are_turn_based_with_one_group_and_masks():
    for module, agents, obs, moves in ((TTT, ["player_1", "player_2"], 18, 9), (C4, ["player_0", "player_1"], 84, 7)):
        src = source(module)
        assert src.turn_based and list(src.groups) == ["player"]
        group = src.groups["player"]
        assert group.agents == agents and group.observation_space.shape == (obs,) and group.mask_dim == moves
        assert isinstance(src.make_vec(1, 0), TurnBasedVecEnv)
    assert not source("mpe2.simple_spread_v3").turn_based


def _play(venv, moves_per_copy):
    """Step ``venv`` (tic-tac-toe, copies in lockstep) with fixed moves; return the transitions."""
    obs = venv.reset(seed=0)
    out = []
    for moves in moves_per_copy:
        o = obs["player"]
        actions = np.zeros(venv.num_envs * 2, np.int64)
        for n, move in enumerate(moves):
            mover = int(np.flatnonzero(o.alive[n])[0])
            assert o.mask[n, mover, move], "the test plays legal moves"
            actions[n * 2 + mover] = move
        tr = venv.step({"player": actions})
        out.append(tr)
        obs = {"player": tr.groups["player"].next}
    return out


def test_only_the_mover_acts_and_the_loss_reaches_the_loser_on_the_winners_turn():
    venv = source().make_vec(1, 0)
    obs = venv.reset(seed=0)["player"]
    assert obs.alive.tolist() == [[True, False]] and obs.mask[0, 0].all()
    # player_1 takes squares 0, 1, 2 (a line), player_2 takes 3, 4
    trs = _play(venv, [[0], [3], [1], [4], [2]])
    for t, tr in enumerate(trs[:-1]):
        g = tr.groups["player"]
        assert g.next.alive.tolist() == [[t % 2 == 1, t % 2 == 0]]  # turns alternate
        assert not g.reward.any() and not g.terminated.any()
        mover = 1 - t % 2
        assert not g.next.mask[0, mover, [0, 3, 1, 4][: t + 1]].any()  # taken squares are masked
    last = trs[-1].groups["player"]
    assert last.reward.tolist() == [[1.0, -1.0]] and last.terminated.tolist() == [[True, True]]
    assert trs[-1].agent_returns == [{"player_1": 1.0, "player_2": -1.0}]
    assert last.next.alive.tolist() == [[True, False]]  # reset in the same step: a new game
    venv.close()


def test_turn_based_gae_credits_rewards_and_ends_to_the_agents_previous_move():
    # one copy, two agents moving in turn: agent 0 at t = 0, 2; agent 1 at t = 1, 3; agent 1 wins at t = 3
    st = RolloutStorage(5, (1, 2), obs_shape=1)
    st.valid[:, 0, 0] = torch.tensor([True, False, True, False, True])
    st.valid[:, 0, 1] = torch.tensor([False, True, False, True, False])
    st.values[:] = 0.5
    st.rewards[3, 0] = torch.tensor([-1.0, 1.0])
    st.dones[3, 0] = 1.0  # both agents' episode ends at t = 3, on agent 1's move
    st.compute_gae(torch.zeros(1, 2), gamma=1.0, gae_lambda=1.0, last_valid=torch.tensor([[True, False]]))
    adv = st.advantages[:, 0]
    # agent 0's move at t = 2 gets the -1 of t = 3 and no bootstrap past the end; t = 0 sees it through t = 2
    torch.testing.assert_close(adv[[0, 2], 0], torch.tensor([-1.5, -1.5]))
    torch.testing.assert_close(adv[[1, 3], 1], torch.tensor([0.5, 0.5]))
    # t = 4 (agent 0, a new game) bootstraps from last_value; agent 1 has nothing pending
    torch.testing.assert_close(adv[4, 0], torch.tensor(-0.5))
    assert len(st.batch()) == 5


def test_a_move_whose_outcome_lies_past_the_rollout_is_left_out():
    st = RolloutStorage(3, (1, 2), obs_shape=1)
    st.obs[:, 0, :, 0] = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    st.valid[:, 0, 0] = torch.tensor([True, False, True])
    st.valid[:, 0, 1] = torch.tensor([False, True, False])
    st.compute_gae(torch.zeros(1, 2), 0.99, 0.95, last_valid=torch.tensor([[False, True]]))
    # agent 0 moved last at t = 2 and agent 1 is to move: agent 0's last move is not resolved yet
    kept = sorted(st.batch().obs[:, 0].long().tolist())
    assert kept == [0, 3]


@pytest.mark.parametrize("module", [TTT, C4])
def test_mappo_and_ippo_train_a_board_game(module, tmp_path):
    from agentkit.testing import check_algorithm

    for centralised in (True, False):
        check_algorithm({"env": {"plugin": "pettingzoo", "module": module, "num_envs": 2},
                         "algorithm": {"plugin": "mappo", "total_steps": 64, "num_steps": 16,
                                       "centralised": centralised}})


def test_random_opening_moves_start_games_from_spread_positions():
    def first_positions(venv, games):
        """(marks on the board, index of the agent to move) at the start of each of ``games`` games."""
        obs = venv.reset(seed=0)["player"]
        starts, new_game = [], True
        while len(starts) < games:
            mover = int(np.flatnonzero(obs.alive[0])[0])
            marks = int(obs.obs[0, mover].sum())
            if new_game:
                starts.append((marks, mover))
            move = int(np.flatnonzero(obs.mask[0, mover])[0])
            actions = np.zeros(2, np.int64)
            actions[mover] = move
            tr = venv.step({"player": actions})
            new_game = bool(tr.episode_envs)
            obs = tr.groups["player"].next
        return starts

    plain = first_positions(source().make_vec(1, 0), 6)
    assert plain == [(0, 0)] * 6  # the default: every game from the empty board, player_1 to move
    spread = first_positions(source(random_opening_moves=2).make_vec(1, 0), 30)
    assert {marks for marks, _ in spread} == {0, 1, 2}
    assert all(mover == marks % 2 for marks, mover in spread)  # the agent to move follows the moves played
    assert spread == first_positions(source(random_opening_moves=2).make_vec(1, 0), 30)  # seeded
