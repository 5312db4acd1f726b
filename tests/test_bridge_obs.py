"""Bridge protocol 2 observations (docs/bridge.md, "Spaces"): uint8 images, int32 and Dict observations travel
as their own dtype, a game's images train the CNN and export as uint8, and protocol 1 games are told what to
change when they declare what only protocol 2 carries."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from agentkit_envs.remote.protocol import BridgeError, parse_hello
from conftest import REPO

from agentkit import runtime
from agentkit.build import build_algorithm, build_env
from agentkit.config import load_config
from agentkit.exporting import export_run
from agentkit.host import PluginHost
from agentkit.trainer import train

PY = sys.executable
SERVE_GYM = REPO / "exports" / "python" / "serve_gymnasium.py"
GAMES = REPO / "tests" / "bridge_games.py"


def test_protocol_1_takes_float32_only_and_protocol_2_takes_images_and_dicts():
    image = {"name": "cam", "observation": {"shape": [4, 4, 3], "dtype": "uint8"}, "action": {"kind": "discrete", "n": 2}}
    with pytest.raises(BridgeError, match=r"agents\[0\]\.observation\.dtype.*protocol 1 carries float32.*protocol 2"):
        parse_hello({"type": "hello", "protocol": 1, "game": "g", "agents": [image]})
    hello = parse_hello({"type": "hello", "protocol": 2, "game": "g", "agents": [image]})
    space = hello.agents[0].observation
    assert space.dtype == np.uint8 and space.shape == (4, 4, 3) and int(space.high.max()) == 255
    mixed = dict(image, observation={"kind": "dict", "entries": [
        {"name": "pos", "shape": [2]}, {"name": "grid", "shape": [2, 2], "dtype": "uint8"},
        {"name": "action_mask", "shape": [2]}]})
    with pytest.raises(BridgeError, match=r"entries\[2\]\.name.*mask: true"):
        parse_hello({"type": "hello", "protocol": 2, "game": "g", "agents": [mixed]})
    with pytest.raises(BridgeError, match=r"observation\.kind.*protocol 1"):
        parse_hello({"type": "hello", "protocol": 1, "game": "g", "agents": [dict(mixed, observation={
            "kind": "dict", "entries": [{"name": "pos", "shape": [2]}]})]})


def test_a_dict_observation_of_three_dtypes_reaches_the_policy_flat_in_name_order():
    host = PluginHost()
    env = {"plugin": "remote", "command": f"{PY} {GAMES} mixed --port {{port}} --instance {{instance}}",
           "num_envs": 2, "connect_timeout": 20}
    config = load_config({"env": env, "algorithm": {"plugin": "ppo", "total_steps": 1}}, host.registry)
    source = build_env(config, host.registry)
    try:
        assert [f["key"] for f in source.observation_fields] == ["count", "grid", "pos"]
        venv = source.make_vec(2, seed=0)
        o = venv.reset()
        # count int32 [1] = t, grid uint8 [2, 2] = 250 + t, pos float32 [2] = (0.5, -t)
        np.testing.assert_array_equal(o.obs[0], [0, 250, 250, 250, 250, 0.5, 0.0])
        tr = venv.step(np.array([1, 0]))
        np.testing.assert_array_equal(tr.next.obs[1], [1, 251, 251, 251, 251, 0.5, -1.0])
        assert o.obs.dtype == np.float32
        venv.close()
    finally:
        source.close()


def test_a_game_of_uint8_images_trains_the_cnn_over_the_bridge_and_exports_uint8(tmp_path):
    tests = REPO / "tests"
    env = {"plugin": "remote", "num_envs": 2, "connect_timeout": 30,
           "command": f"env PYTHONPATH={tests} {PY} {SERVE_GYM} image_test_envs:BrightSide-v0 --port {{port}} "
                      "--instance {instance}"}
    host = PluginHost()
    data = {"seed": 0, "env": env, "policy": {"encoder": "auto"},
            "algorithm": {"plugin": "ppo", "total_steps": 256, "num_steps": 64, "minibatch_size": 64,
                          "update_epochs": 2},
            "run": {"progress": "none", "tensorboard": False}}
    config = load_config(data, host.registry)
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 256 and result["charts/episodes"] >= 1
    source = build_env(config, host.registry)
    try:
        algo = build_algorithm(config, host.registry, source, None)
        assert algo.storage.obs.dtype.is_floating_point is False and tuple(algo.storage.obs.shape[-3:]) == (16, 16, 3)
        assert type(algo.actor.encoder).__name__ == "CNNEncoder"
    finally:
        source.wrapped.close()
    [path] = export_run(tmp_path / "run", allow_imports=[env["command"]])
    policy = runtime.load(path)
    obs_input = policy.session.get_inputs()[0]
    assert obs_input.type == "tensor(uint8)" and obs_input.shape[1:] == [16, 16, 3]
    assert policy.metadata["observation"]["dtype"] == "uint8"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_listen_mode_run_exports_without_a_game_and_eval_says_it_waits_for_one(tmp_path):
    """The run keeps its game's hello (game.json): export needs no game and records the game's name as env.id;
    eval with no game running waits the configured time, saying so, and stops with exit 2."""
    import json
    import subprocess

    from conftest import AGENTKIT, cli_env

    port = _free_port()
    # the game starts first and keeps trying to connect until the trainer listens
    game = subprocess.Popen([PY, str(SERVE_GYM), "agentkit/Dungeon-v0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        host = PluginHost()
        env = {"plugin": "remote", "mode": "listen", "port": port, "num_envs": 1, "connect_timeout": 8}
        config = load_config({"seed": 0, "env": env, "run": {"progress": "none", "tensorboard": False},
                              "algorithm": {"plugin": "ppo", "total_steps": 128, "num_steps": 64}}, host.registry)
        train(config, host, tmp_path / "run")
        assert game.wait(timeout=30) == 0  # the trainer's close ended it
    finally:
        game.kill()
    kept = json.loads((tmp_path / "run" / "game.json").read_text())
    assert kept["game"] == "agentkit/Dungeon-v0" and "token" not in kept
    [path] = export_run(tmp_path / "run")  # no game anywhere
    policy = runtime.load(path)
    assert policy.metadata["env"]["id"] == "agentkit/Dungeon-v0" and policy.metadata["mask"]["dim"] == 6
    ev = subprocess.run([*AGENTKIT, "eval", str(tmp_path / "run"), "--episodes", "1"], capture_output=True,
                        text=True, env=cli_env(), timeout=120)
    assert ev.returncode == 2, ev.stderr
    assert f"waiting up to 8 s for a game to connect to tcp://127.0.0.1:{port}" in ev.stderr
    assert "no game connected" in ev.stderr and "Traceback" not in ev.stderr


def test_eval_gif_gets_the_games_frames_over_the_bridge(tmp_path):
    """`agentkit eval --gif` on a bridged run: the trainer asks for frames, the game sends its rgb_array render."""
    import subprocess

    from conftest import AGENTKIT, cli_env
    from PIL import Image

    command = f"{PY} {SERVE_GYM} agentkit/Moving-v0 --port {{port}} --instance {{instance}}"
    host = PluginHost()
    config = load_config({"seed": 0, "run": {"progress": "none", "tensorboard": False},
                          "env": {"plugin": "remote", "command": command, "num_envs": 1, "connect_timeout": 30},
                          "algorithm": {"plugin": "ppo", "total_steps": 64, "num_steps": 64}}, host.registry)
    train(config, host, tmp_path / "run")
    gif = tmp_path / "moving.gif"
    ev = subprocess.run([*AGENTKIT, "eval", str(tmp_path / "run"), "--episodes", "1", "--gif", str(gif),
                         "--allow-import", command], capture_output=True, text=True, env=cli_env(), timeout=180)
    assert ev.returncode == 0, ev.stderr
    with Image.open(gif) as image:
        assert image.n_frames >= 2 and image.size[0] > 16  # PIL merges identical frames
        first = np.asarray(image.convert("RGB"))
    import agentkit_envs.games  # noqa: F401  (registers agentkit/Moving-v0)
    import gymnasium as gym

    local = gym.make("agentkit/Moving-v0", render_mode="rgb_array")
    local.reset(seed=0)
    assert first.shape == local.render().shape  # the game's own frames
