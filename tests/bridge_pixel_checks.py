"""The protocol 2 checks every game-side client passes with its BrightSide port (tests/image_test_envs.py's game:
a 16x16 RGB uint8 frame with a bright 6x6 patch on the left or right, action 0 says left, 1 right; episodes of
8 frames): tests/js_games/bright_side.mjs (Node), tests/cs_games/BrightSide.cs (Mono),
tests/godot_games/bright_side (Godot). ``env`` is each port's ``remote`` env section; ports take ``--dict 1``
(the frame in a Dict beside the step as a fraction, float32, and the step count, int32) and ``--protocol 1``
(the frame as float32 numbers, a version 1 game), in their own command-line spelling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentkit import runtime
from agentkit.build import build_algorithm, build_env
from agentkit.config import load_config
from agentkit.exporting import export_run
from agentkit.host import PluginHost
from agentkit.trainer import train


def _config(env: dict, algorithm: dict, policy: dict | None = None):
    host = PluginHost()
    config = load_config({"seed": 0, "env": env, "algorithm": algorithm, "policy": policy or {},
                          "run": {"progress": "none", "tensorboard": False}}, host.registry)
    return config, host


def pixels_train_the_cnn_and_export_uint8(env: dict, run_dir: Path, game: str) -> None:
    """The game's frames arrive as uint8, the auto encoder is the CNN, 256 steps train, and the run exports a
    policy that takes uint8 pixels without --allow-import (the run kept the game's hello: no game starts)."""
    config, host = _config(env, {"plugin": "ppo", "total_steps": 256, "num_steps": 64, "minibatch_size": 64,
                                 "update_epochs": 2}, {"encoder": "auto"})
    source = build_env(config, host.registry)
    try:
        assert source.hello.protocol == 2 and source.env_id == game
        assert source.observation_space.dtype == np.uint8 and source.observation_space.shape == (16, 16, 3)
        venv = source.make_vec(2, seed=0)
        o = venv.reset()
        assert o.obs.shape == (2, 16, 16, 3) and o.obs.dtype == np.uint8
        assert o.obs.max() == 250 and o.obs.min() < 60
        algo = build_algorithm(config, host.registry, source, None)
        assert type(algo.actor.encoder).__name__ == "CNNEncoder" and not algo.storage.obs.dtype.is_floating_point
        venv.close()
    finally:
        source.close()
    result = train(config, host, run_dir)
    assert result["step"] == 256 and result["charts/episodes"] >= 2
    [path] = export_run(run_dir)
    policy = runtime.load(path)
    assert policy.session.get_inputs()[0].type == "tensor(uint8)" and policy.metadata["env"]["id"] == game


def dict_entries_arrive_as_sent(env: dict) -> None:
    """A Dict of a uint8 frame, a float32 fraction and an int32 count: each entry's values as the game sent them."""
    config, host = _config(env, {"plugin": "ppo", "total_steps": 1})
    source = build_env(config, host.registry)
    try:
        fields = {f["key"]: f for f in source.observation_fields}
        assert set(fields) == {"frame", "t", "count"}
        venv = source.make_vec(1, seed=0)

        def entry(obs, key):
            f = fields[key]
            return obs[0, f["start"]:f["start"] + f["size"]]

        o = venv.reset()
        assert entry(o.obs, "count").tolist() == [0.0] and entry(o.obs, "t").tolist() == [0.0]
        assert entry(o.obs, "frame").max() == 250
        for step in range(1, 4):
            o = venv.step(np.zeros(1, np.int64)).next
            assert entry(o.obs, "count").tolist() == [float(step)]
            np.testing.assert_allclose(entry(o.obs, "t"), [step / 8])
        venv.close()
    finally:
        source.close()


def protocol_1_still_plays(env: dict) -> None:
    """A version 1 game (float32 frames) is accepted and plays whole episodes."""
    config, host = _config(env, {"plugin": "ppo", "total_steps": 1})
    source = build_env(config, host.registry)
    try:
        assert source.hello.protocol == 1 and source.observation_space.dtype == np.float32
        venv = source.make_vec(2, seed=0)
        o = venv.reset()
        assert o.obs.shape == (2, 16, 16, 3) and o.obs.max() == 250.0
        for _ in range(8):
            tr = venv.step(np.zeros(2, np.int64))
        assert tr.episode_lengths == [8, 8]
        venv.close()
    finally:
        source.close()


#: the checks, by name (each client's test runs every one: ``pytest.mark.parametrize("check", CHECKS)``)
CHECKS = ("pixels", "dict", "protocol_1")


def run_check(check: str, command: str, game: str, run_dir: Path, spell=lambda key, value: f"--{key}={value}") -> None:
    """Run check ``check`` on the BrightSide port launched by ``command`` (``{port}`` and ``{instance}`` in it),
    whose hello says ``game``; ``spell(key, value)`` writes one of the port's own options."""
    def env(*options: tuple[str, str], num_envs: int = 2) -> dict:
        flags = " ".join(spell(k, v) for k, v in options)
        return {"plugin": "remote", "num_envs": num_envs, "connect_timeout": 60, "command": f"{command} {flags}".strip()}

    if check == "pixels":
        pixels_train_the_cnn_and_export_uint8(env(), run_dir, game)
    elif check == "dict":
        dict_entries_arrive_as_sent(env(("dict", "1"), num_envs=1))
    else:
        protocol_1_still_plays(env(("protocol", "1")))
