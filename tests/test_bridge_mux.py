"""Several game instances in one process on one connection (``env.instances_per_process``, the Python client's
``serve_many``, ``batch`` frames: docs/bridge.md, "Several instances on one connection")."""

from __future__ import annotations

import os
import subprocess
import time

import gymnasium as gym
import numpy as np
import pytest
from agentkit_envs.remote.mux import decode_batch, encode_batch
from agentkit_envs.remote.protocol import BridgeError, encode, header_text
from test_bridge import PY, SERVE_GYM, _free_port, counter, gym_game, source_of

from agentkit.config import load_config
from agentkit.host import PluginHost
from agentkit.trainer import train


def test_a_batch_round_trips_and_a_malformed_one_names_the_field():
    parts = [encode({"type": "step"}, {"action_int": np.array([k], np.int32)}) for k in range(3)]
    batch = encode_batch([2, 0, 1], parts)
    assert [(slot, bytes(p)) for slot, p in decode_batch(batch, 3)] == list(zip([2, 0, 1], parts, strict=True))
    with pytest.raises(BridgeError, match=r"'slots' \(each 0 \.\. 1\)") as info:
        decode_batch(batch, 2)  # slot 2 on a connection of 2
    assert info.value.details["field"] == "slots"
    wrong = header_text({"type": "batch", "slots": [0], "sizes": [3]}, [("parts", "uint8", len(parts[0]))]) + parts[0]
    with pytest.raises(BridgeError, match=r"sum\(sizes\) = 3 bytes") as info:
        decode_batch(wrong, 1)
    assert info.value.details["field"] == "parts"
    with pytest.raises(BridgeError, match="after the welcome every message is a 'batch'"):
        decode_batch(parts[0], 3)


def test_one_process_serves_every_instance_with_the_in_process_transitions():
    """4 instances in one launched process, 2 messages a vector step: the same transitions as gymnasium's envs."""
    import agentkit_envs.games  # noqa: F401

    source = source_of(gym_game("agentkit/Moving-v0", "--instances {instances}", num_envs=4, instances_per_process=4))
    try:
        venv = source.make_vec(4, seed=5)
        local = [gym.make("agentkit/Moving-v0") for _ in range(4)]
        o = venv.reset()
        assert len({inst.game.pid for inst in venv.multi.instances}) == 1
        np.testing.assert_array_equal(o.obs, np.stack([e.reset(seed=5 + i)[0] for i, e in enumerate(local)]))
        rng = np.random.default_rng(0)
        for _ in range(210):  # past the 200-step time limit: each instance resets, in a batch of the ended ones only
            types = rng.integers(0, 3, size=4)
            params = rng.uniform(-1, 1, size=(4, 2)).astype(np.float32)
            tr = venv.step((types, params))
            for i, e in enumerate(local):
                obs, r, term, trunc, _ = e.step((int(types[i]), params[i]))
                assert tr.reward[i] == np.float32(r) and tr.terminated[i] == term and tr.truncated[i] == trunc
                if term or trunc:
                    np.testing.assert_array_equal(tr.final_obs[i], obs)
                    obs, _ = e.reset()
                np.testing.assert_array_equal(tr.next.obs[i], obs)
        venv.close()
    finally:
        source.close()


def test_a_crashed_process_loses_all_its_instances_and_each_is_restarted(tmp_path):
    host = PluginHost()
    config = load_config({
        "seed": 0, "env": gym_game("agentkit/Moving-v0", "--instances {instances} --crash-at 150",
                                   instances_per_process=2),
        "algorithm": {"plugin": "ppo", "total_steps": 512, "num_steps": 128},
        "run": {"progress": "none", "tensorboard": False},
    }, host.registry)
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 512
    # the process of both crashed at its 150th step: one game restarted, both instances' episodes dropped
    assert result["bridge/restarts"] == 1
    assert result["bridge/dropped_episodes"] >= 2


def test_a_crashed_process_is_started_again_with_all_its_instances_and_counts_once():
    source = source_of(gym_game("agentkit/Moving-v0", "--instances {instances} --crash-at 40", num_envs=3,
                                instances_per_process=3))
    try:
        venv = source.make_vec(3, seed=0)
        venv.reset()
        first = {inst.game.pid for inst in venv.multi.instances}
        for _ in range(45):  # the process exits at the 40th step of its first instance: the 40th vector step
            tr = venv.step((np.zeros(3, np.int64), np.zeros((3, 2), np.float32)))
        again = {inst.game.pid for inst in venv.multi.instances}
        assert len(first) == len(again) == 1 and first != again  # one new process for the three instances
        assert source.server.restarts == 1 and source.stats["restarts"] == 1  # bridge/restarts: games, once
        assert source.stats["dropped_episodes"] >= 3 and tr.reward.shape == (3,)
        venv.close()
    finally:
        source.close()


def test_a_game_that_serves_fewer_instances_than_it_was_started_with_is_refused():
    env = counter(instances_per_process=2)  # tests/bridge_games.py serves one instance whatever {instances} says
    with pytest.raises(BridgeError, match=r"bad_hello: instances: the game started as \{instance\} = 0 with "
                                          r"\{instances\} = 2 declares 1 instances") as info:
        source_of(env)
    assert "env.instances_per_process" in str(info.value)


def listening(argv: list[str], num_envs: int, play, *, port_args: tuple[str, ...] = ("--port", "{port}"),
              game_first_s: float = 0.0, env: dict[str, str] | None = None, trainer_env: dict | None = None) -> str:
    """Start the game process ``argv`` (``port_args`` is added, the port in place of ``{port}``), let it connect
    to a trainer that listens for ``num_envs`` instances, run ``play(venv)`` on them, and check that the game then
    exits 0; returns its output. ``game_first_s``: the trainer listens only that long after the game started
    (nothing listens on the port before: the game must keep trying), and the game must still be running then.
    ``trainer_env``: the trainer's env section (default: listen mode over TCP for ``num_envs``; the port is added)."""
    port = _free_port()
    game = subprocess.Popen([*argv, *(a.format(port=port) for a in port_args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=None if env is None else {**os.environ, **env})
    try:
        if game_first_s:
            time.sleep(game_first_s)
            assert game.poll() is None, game.communicate()
        section = trainer_env or {"plugin": "remote", "mode": "listen", "connect_timeout": 20, "num_envs": num_envs}
        source = source_of({**section, "port": port})
        try:
            venv = source.make_vec(num_envs, seed=0)
            play(venv)
            venv.close()
        finally:
            source.close()
        out, err = game.communicate(timeout=20)
        assert game.returncode == 0, err
        return out
    finally:
        game.kill()
        game.wait()


def test_listen_mode_takes_every_instance_a_game_serves():
    def play(venv):
        o = venv.reset()
        assert o.obs.shape[0] == 3 and [inst.number for inst in venv.multi.instances] == [0, 1, 2]
        for _ in range(5):
            o = venv.step(o.mask.argmax(axis=1)).next

    listening([PY, str(SERVE_GYM), "agentkit/Dungeon-v0", "--instances", "3"], 3, play)


def test_serve_many_of_one_game_is_serve():
    """serve_gymnasium.py always calls ``serve_many``: with one game (``--instances`` 1, the default) its hello says
    nothing of instances and the trainer's plain messages are answered (the Python README's example)."""
    def play(venv):
        o = venv.reset()
        assert len(venv.multi.instances) == 1
        for _ in range(3):
            o = venv.step(o.mask.argmax(axis=1)).next

    listening([PY, str(SERVE_GYM), "agentkit/Dungeon-v0"], 1, play)


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
def test_a_python_game_started_before_the_trainer_listens_connects_once_it_does(transport):
    def play(venv):
        o = venv.reset()
        for _ in range(3):
            o = venv.step(o.mask.argmax(axis=1)).next

    if transport == "websocket":
        pytest.importorskip("websockets")
    argv = [PY, str(SERVE_GYM), "agentkit/Dungeon-v0", "--transport", transport]
    trainer_env = {"plugin": "remote", "mode": "listen", "connect_timeout": 20, "num_envs": 1, "transport": transport}
    listening(argv, 1, play, game_first_s=1.0, trainer_env=trainer_env)


def test_a_python_game_with_nothing_listening_gives_up_after_its_connect_timeout():
    port = _free_port()
    start = time.monotonic()
    proc = subprocess.run([PY, str(SERVE_GYM), "agentkit/Dungeon-v0", "--port", str(port), "--connect-timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and time.monotonic() - start >= 1.0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"serve_gymnasium: cannot connect to 127.0.0.1:{port}: nothing listened there for 1 s (connection refused): "
        "start `agentkit train` with env.mode: listen first, or raise --connect-timeout")
