"""`agentkit eval`: the shared episode loop, evaluate_run (single- and multi-agent), --json, --gif."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from agentkit import cli, evaluation
from agentkit.build import build_env
from agentkit.config import load_config
from agentkit.errors import InvalidInputError, UserError
from agentkit.evaluation import EvalResult, evaluate_run, play_episodes
from agentkit.trainer import train

CARTPOLE = {
    "seed": 0,
    "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 4},
    "algorithm": {"plugin": "ppo", "total_steps": 1024, "num_steps": 32, "minibatch_size": 64, "update_epochs": 4,
                  "learning_rate": 0.003},
    "policy": {"hidden_sizes": [16, 16]},
    "run": {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 256},
}
SPEAKER_LISTENER = {
    "seed": 0,
    "env": {"plugin": "pettingzoo", "module": "mpe2.simple_speaker_listener_v4",
            "kwargs": {"max_cycles": 25, "continuous_actions": False}, "num_envs": 2},
    "algorithm": {"plugin": "mappo", "total_steps": 100, "num_steps": 25, "update_epochs": 1},
    "policy": {"hidden_sizes": [16]},
    "run": {"progress": "none", "tensorboard": False},
}


@pytest.fixture(scope="module")
def cartpole_run(trained_run):
    return trained_run(CARTPOLE, "cartpole")


def test_same_seed_same_episodes(cartpole_run):
    a = evaluate_run(cartpole_run, episodes=3, seed=7)
    b = evaluate_run(cartpole_run, episodes=3, seed=7)
    assert isinstance(a, EvalResult) and a.episodes == 3 and len(a.returns) == len(a.lengths) == 3
    assert a.returns == b.returns and a.lengths == b.lengths
    assert a.returns == [float(n) for n in a.lengths]  # CartPole: reward 1 per step
    assert a.mean_return == pytest.approx(np.mean(a.returns)) and a.std_return == pytest.approx(np.std(a.returns))
    assert a.groups == {}
    # episode i starts from seed + i: the episodes of seed 8 are those of seed 7 shifted by one
    c = evaluate_run(cartpole_run, episodes=2, seed=8)
    assert c.returns == a.returns[1:]


def first_checkpoint(run_dir):
    """The run's earliest kept periodic checkpoint."""
    return min((run_dir / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


def test_a_periodic_checkpoint_can_be_played(cartpole_run, capsys):
    from agentkit.errors import CheckpointError

    first = first_checkpoint(cartpole_run)
    early = evaluate_run(cartpole_run, episodes=3, seed=7, checkpoint=first.name)
    assert early.returns != evaluate_run(cartpole_run, episodes=3, seed=7).returns  # other weights
    assert evaluate_run(cartpole_run, episodes=3, seed=7, checkpoint=first.stem).returns == early.returns
    with pytest.raises(CheckpointError, match=f"keeps: .*{first.name}"):
        evaluate_run(cartpole_run, episodes=1, checkpoint="step_1.pt")
    assert cli.main(["eval", str(cartpole_run), "--checkpoint", "../config.yaml"]) == 2
    assert "keeps:" in capsys.readouterr().err


def test_a_periodic_checkpoint_can_be_exported(cartpole_run, tmp_path, capsys):
    """``agentkit export RUN --checkpoint NAME``: the file plays that checkpoint's policy, as ``eval`` does."""
    from agentkit.evaluation import evaluate_onnx

    first = first_checkpoint(cartpole_run)
    out = tmp_path / "early.onnx"
    assert cli.main(["export", str(cartpole_run), "--out", str(out), "--checkpoint", first.name]) == 0
    early = evaluate_onnx(out, episodes=3, seed=7).returns
    assert early == evaluate_run(cartpole_run, episodes=3, seed=7, checkpoint=first.name).returns
    assert early != evaluate_run(cartpole_run, episodes=3, seed=7).returns
    assert cli.main(["export", str(cartpole_run), "--out", str(tmp_path / "x.onnx"), "--checkpoint", "step_1.pt"]) == 2
    assert "keeps:" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_stochastic_eval_repeats_with_the_seed(cartpole_run):
    a = evaluate_run(cartpole_run, episodes=2, seed=1, deterministic=False)
    b = evaluate_run(cartpole_run, episodes=2, seed=1, deterministic=False)
    assert a.returns == b.returns


def test_stochastic_eval_of_a_run_and_of_its_stochastic_export_play_the_same_episodes(cartpole_run, tmp_path):
    """Both sample from the same uniform noise (a numpy generator seeded with --seed), so the file a game gets
    plays like the run in sampling mode too, not only in greedy mode."""
    from agentkit.evaluation import evaluate_onnx
    from agentkit.exporting import export_run

    (path,) = export_run(cartpole_run, out=tmp_path / "st.onnx", stochastic=True)
    run = evaluate_run(cartpole_run, episodes=4, seed=2, deterministic=False)
    assert run.returns == evaluate_onnx(path, episodes=4, seed=2, deterministic=False).returns


def test_gif_of_a_pygame_drawn_env_prints_no_sdl_noise(cartpole_run, run_cli, tmp_path):
    """CartPole draws with pygame; a GIF needs no display or sound, so SDL must not complain about the
    session (``XDG_RUNTIME_DIR is invalid or not set``) on a machine that has none."""
    env = {"XDG_RUNTIME_DIR": "", "SDL_VIDEODRIVER": "", "SDL_AUDIODRIVER": ""}
    proc = run_cli("eval", cartpole_run, "--episodes", "1", "--gif", tmp_path / "c.gif", env=env)
    assert proc.returncode == 0 and (tmp_path / "c.gif").is_file(), proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr and "error" not in proc.stderr.lower(), proc.stderr


def test_json_output_through_the_cli(cartpole_run, capsys):
    assert cli.main(["eval", str(cartpole_run), "--episodes", "2", "--seed", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"mean_return", "std_return", "episodes", "returns", "lengths", "groups"} <= set(data)
    assert data["episodes"] == 2 and data["returns"] == evaluate_run(cartpole_run, episodes=2, seed=3).returns


def _push_left(obs, mask):
    return np.zeros(obs.shape[0], dtype=np.int64)


def test_gif_records_the_first_episode(host, tmp_path, monkeypatch):
    recorded = []
    write_gif = evaluation.write_gif
    monkeypatch.setattr(
        evaluation, "write_gif", lambda frames, path, fps: recorded.append(len(frames)) or write_gif(frames, path, fps)
    )
    env = build_env(load_config(CARTPOLE, host.registry), host.registry)
    gif = tmp_path / "play.gif"
    result = play_episodes(env, _push_left, episodes=2, seed=0, gif=gif)
    assert result.returns == play_episodes(env, _push_left, episodes=2, seed=0).returns  # rendering changes nothing
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (600, 400)
        assert 2 <= im.n_frames <= result.lengths[0]  # Pillow merges identical consecutive frames
    assert recorded == [result.lengths[0]]  # the reset frame, then one per step before the last


def test_play_episodes_with_any_act(host):
    env = build_env(load_config(CARTPOLE, host.registry), host.registry)
    seen = []

    def push_left(obs, mask):
        seen.append((obs.shape, obs.dtype, mask))
        return _push_left(obs, mask)

    a = play_episodes(env, push_left, episodes=3, seed=5)
    b = play_episodes(env, push_left, episodes=3, seed=5)
    assert a.returns == b.returns and all(8 <= n <= 12 for n in a.lengths)
    assert seen[0] == ((1, 4), np.float32, None)
    with pytest.raises(InvalidInputError, match="at least 1"):
        play_episodes(env, push_left, episodes=0)


def test_multi_agent_per_group_figures(tmp_path, host):
    run_dir = tmp_path / "speaker"
    train(load_config(SPEAKER_LISTENER, host.registry), host, run_dir=run_dir)
    gif = tmp_path / "team.gif"
    a = evaluate_run(run_dir, episodes=2, seed=4, gif=gif)
    b = evaluate_run(run_dir, episodes=2, seed=4)
    assert a.returns == b.returns and a.lengths == [25, 25]
    assert set(a.groups) == {"speaker", "listener"}
    with Image.open(gif) as im:
        assert im.n_frames >= 2
    for stats in a.groups.values():
        assert set(stats) == {"mean_return", "std_return"} and np.isfinite(stats["mean_return"])
    # a shared-reward game: each group's mean per-agent return is the team's
    assert a.groups["speaker"]["mean_return"] == pytest.approx(a.mean_return)


def test_eval_of_something_that_is_not_a_run_dir_exits_2(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path), "--episodes", "1"]) == 2
    assert "not a run dir" in capsys.readouterr().err


# -- bad input: exit 2 and one message, before any work; no leftover file (issue 22) -------------------------


def test_json_is_valid_even_when_a_figure_is_not_finite():
    result = EvalResult(float("nan"), float("inf"), 1, [float("-inf")], [3], {"g": {"mean_return": float("nan")}},
                        {"win": float("nan")})
    text = json.dumps(result.to_json(), allow_nan=False)  # raises on NaN/Infinity
    assert json.loads(text) == {"mean_return": None, "std_return": None, "episodes": 1, "returns": [None],
                                "lengths": [3], "groups": {"g": {"mean_return": None}}, "infos": {"win": None}}


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", "4294967296", "1.5"])
def test_eval_seed_out_of_range_exits_2(cartpole_run, capsys, seed):
    assert cli.main(["eval", str(cartpole_run), "--episodes", "1", "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert "--seed: expected an integer 0..4294967295" in err and "Traceback" not in err


def test_eval_accepts_the_largest_seed(cartpole_run, capsys):
    assert cli.main(["eval", str(cartpole_run), "--episodes", "2", "--seed", "4294967295", "--json"]) == 0


@pytest.mark.parametrize("name", ["play.txt", "play", "play.onnx"])
def test_gif_without_the_gif_extension_exits_2_before_any_work(tmp_path, capsys, name):
    # tmp_path is no run dir: the --gif check must come first
    assert cli.main(["eval", str(tmp_path), "--gif", str(tmp_path / name)]) == 2
    assert "give a file name ending in .gif" in capsys.readouterr().err
    (tmp_path / "dir.gif").mkdir()
    assert cli.main(["eval", str(tmp_path), "--gif", str(tmp_path / "dir.gif")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_failed_gif_write_leaves_no_file(tmp_path, monkeypatch):
    import os

    def full_disk(fd):  # the bytes went to the temporary file; the disk fills before they are durable
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    frames = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    with pytest.raises(UserError, match="cannot write .*No space left on device"):
        evaluation.write_gif(frames, tmp_path / "play.gif")
    assert list(tmp_path.iterdir()) == []
