"""The JavaScript bridge client in Node: the Moving port trains with PPO over TCP and WebSocket, Team Forage
(masks, foragers that leave mid-episode) with MAPPO, and the port follows the Python game's rules; protocol 2:
a game of uint8 pixels (tests/js_games/bright_side.mjs) trains the CNN, a Dict of uint8, float32 and int32
entries arrives as sent, and a protocol 1 game still plays."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
import yaml
from bridge_pixel_checks import CHECKS, run_check
from conftest import NODE, REPO
from test_bridge import _free_port
from test_bridge_mux import listening

from agentkit.build import build_env
from agentkit.config import load_config
from agentkit.host import PluginHost
from agentkit.trainer import train

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript client cannot run")

JS = REPO / "exports" / "js"


def run_config(env: dict, algorithm: dict) -> tuple:
    host = PluginHost()
    config = load_config({"seed": 0, "env": env, "algorithm": algorithm,
                          "run": {"progress": "none", "tensorboard": False}}, host.registry)
    return config, host


def test_node_moving_trains_with_ppo_over_tcp(tmp_path):
    env = {"plugin": "remote", "command": f"{NODE} {JS / 'games' / 'moving.mjs'} --port {{port}} --instance {{instance}}",
           "num_envs": 4, "connect_timeout": 30}
    config, host = run_config(env, {"plugin": "ppo", "total_steps": 1024, "num_steps": 128})
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 1024 and result["charts/episodes"] >= 4
    assert 0.0 <= result["infos/success"] <= 1.0 and result["bridge/restarts"] == 0.0


def test_the_shipped_node_example_trains_and_its_run_plays_from_the_cli(run_cli, tmp_path):
    """examples/bridge-moving-node.yaml as a user runs it (one Node process for its 16 instances), shortened;
    then eval of the run, which launches the game again once the command line allows its command."""
    example = REPO / "examples" / "bridge-moving-node.yaml"
    command = yaml.safe_load(example.read_text())["env"]["command"]
    proc = run_cli("train", example, "--run-dir", tmp_path / "run", "--set", "algorithm.total_steps=4096",
                   "--set", "run.progress=none", cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    proc = run_cli("eval", tmp_path / "run", "--episodes", "2", "--json", "--allow-import", command, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["episodes"] == 2


def moving_node(**env) -> dict:
    command = f"{NODE} {JS / 'games' / 'moving.mjs'} --port {{port}} --instance {{instance}} --instances {{instances}}"
    return {"plugin": "remote", "command": command, "num_envs": 4, "connect_timeout": 30, **env}


def test_one_node_process_serves_four_instances_with_the_transitions_of_four(tmp_path):
    """``instances_per_process: 4``: one Node process (``serveMany``, batch frames) gives the transitions of a
    process per instance, for the same seeds and actions, resets after the 200-step time limit included."""
    sources = [build_env(run_config(moving_node(instances_per_process=k), {"plugin": "ppo", "total_steps": 1})[0],
                         PluginHost().registry) for k in (1, 4)]
    try:
        apart, together = (source.make_vec(4, seed=5) for source in sources)
        np.testing.assert_array_equal(apart.reset().obs, together.reset().obs)
        assert len({inst.game.pid for inst in apart.multi.instances}) == 4
        assert len({inst.game.pid for inst in together.multi.instances}) == 1
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(210):
            action = (rng.integers(0, 3, size=4), rng.uniform(-1, 1, size=(4, 2)).astype(np.float32))
            a, b = apart.step(action), together.step(action)
            for field in ("reward", "terminated", "truncated", "final_obs"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
            np.testing.assert_array_equal(a.next.obs, b.next.obs)
            assert (a.episode_returns, a.episode_lengths, a.episode_infos) == (
                b.episode_returns, b.episode_lengths, b.episode_infos)
            ends += len(a.episode_returns)
        assert ends >= 4  # every instance's episode ended at least once (then it reset in a batch of its own)
        apart.close()
        together.close()
    finally:
        for source in sources:
            source.close()


def test_node_moving_and_team_forage_train_with_one_process_for_every_instance(tmp_path):
    config, host = run_config(moving_node(instances_per_process=4), {"plugin": "ppo", "total_steps": 1024,
                                                                     "num_steps": 128})
    result = train(config, host, tmp_path / "moving")
    assert result["step"] == 1024 and result["charts/episodes"] >= 4 and result["bridge/restarts"] == 0.0
    command = f"{NODE} {JS / 'games' / 'team.mjs'} --port {{port}} --instance {{instance}} --instances {{instances}}"
    env = {"plugin": "remote", "command": command, "num_envs": 2, "instances_per_process": 2, "connect_timeout": 30}
    config, host = run_config(env, {"plugin": "mappo", "total_steps": 256, "num_steps": 64})
    result = train(config, host, tmp_path / "team")
    assert result["step"] == 256 and "infos/eaten" in result and result["bridge/restarts"] == 0.0


def test_listen_mode_takes_the_three_instances_one_node_process_serves():
    def play(venv):
        o = venv.reset()
        assert o.obs.shape == (3, 9) and [inst.number for inst in venv.multi.instances] == [0, 1, 2]
        for _ in range(3):
            tr = venv.step((np.zeros(3, np.int64), np.array([[1.0, 0], [0.5, 0], [0.25, 0]], np.float32)))
        # three accelerations of magnitude m: speed min(3 * 0.5 * m, 1): each instance got its own action
        np.testing.assert_allclose(tr.next.obs[:, 2], [1.0, 0.75, 0.375], atol=1e-6)

    listening([NODE, str(JS / "games" / "moving.mjs"), "--instances", "3"], 3, play)


def test_a_node_game_started_before_the_trainer_connects_once_it_listens():
    """Listen mode, the game first: nothing listens on the port for 1 s (each try is refused), then the trainer
    listens, takes both instances and plays them; the game's retries found it and it exits 0."""
    def play(venv):
        o = venv.reset()
        assert o.obs.shape == (2, 9)
        for _ in range(3):
            venv.step((np.zeros(2, np.int64), np.zeros((2, 2), np.float32)))

    listening([NODE, str(JS / "games" / "moving.mjs"), "--instances", "2"], 2, play, game_first_s=1.0)


def test_a_node_game_gives_up_after_its_connect_timeout_naming_the_fix():
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run([NODE, str(JS / "games" / "moving.mjs"), "--port", str(port), "--connect-timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and 1.0 <= time.monotonic() - started < 15, proc.stderr
    assert (f"cannot connect to 127.0.0.1:{port}: nothing listened there for 1 s (connection refused): start "
            "`agentkit train` with env.mode: listen first, or raise --connect-timeout") in proc.stderr


def test_the_js_client_names_a_malformed_batch():
    """A trainer that sends a batch for a slot the game does not serve: the Node game stops, naming the slots."""
    import socket
    import struct

    from agentkit_envs.remote.mux import encode_batch
    from agentkit_envs.remote.protocol import decode, encode

    def send(conn: socket.socket, payload: bytes) -> None:
        conn.sendall(struct.pack("<I", len(payload)) + payload)

    def recv(conn: socket.socket) -> bytes:
        (size,) = struct.unpack("<I", conn.recv(4, socket.MSG_WAITALL))
        return conn.recv(size, socket.MSG_WAITALL)

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        game = subprocess.Popen([NODE, str(JS / "games" / "moving.mjs"), "--port", str(port), "--instances", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            server.settimeout(30)
            conn, _ = server.accept()
            with conn:
                hello, _ = decode(recv(conn))
                assert hello["type"] == "hello" and hello["instances"] == 2
                send(conn, encode({"type": "welcome", "protocol": 2, "instance": 0, "instances": 2}))
                send(conn, encode_batch([0, 5], [encode({"type": "reset", "seed": 1})] * 2))
                assert game.wait(timeout=30) != 0
        finally:
            game.kill()
            game.wait()
    assert "bad_frame: a batch for 2 instances has slots [0,5]" in game.stderr.read()


def test_the_js_client_refuses_a_bad_instance_count():
    proc = subprocess.run([NODE, str(JS / "games" / "moving.mjs"), "--port", "1", "--instances", "two"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--instances (or AGENTKIT_BRIDGE_INSTANCES) is NaN" in proc.stderr


@pytest.mark.parametrize("per_process", [1, 2], ids=["a-process-each", "one-process"])
def test_node_moving_over_websocket_with_the_ws_package(per_process, js_workdir, tmp_path):
    work = js_workdir({"agentkit-bridge.mjs": JS / "agentkit-bridge.mjs", "games/moving.mjs": JS / "games" / "moving.mjs"})
    env = {"plugin": "remote", "transport": "websocket", "num_envs": 2, "connect_timeout": 30,
           "instances_per_process": per_process,
           "command": f"{NODE} {work / 'games' / 'moving.mjs'} --port {{port}} --instance {{instance}} "
                      "--instances {instances} --transport {transport}"}
    source = build_env(run_config(env, {"plugin": "ppo", "total_steps": 1})[0], PluginHost().registry)
    try:
        assert source.env_id == "moving-js" and source.action_space.type_names == ["accelerate", "turn", "brake"]
        venv = source.make_vec(2, seed=0)
        o = venv.reset()
        assert o.obs.shape == (2, 9) and np.all(o.obs[:, 2] == 0) and np.all(o.obs[:, 8] == 0)
        assert len({inst.game.pid for inst in venv.multi.instances}) == 2 // per_process
        for _ in range(3):
            tr = venv.step((np.array([0, 0]), np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)))
        # three full accelerations: speed capped at max_speed 1.0; half ones: 0.75
        np.testing.assert_allclose(tr.next.obs[:, 2], [1.0, 0.75], atol=1e-6)
        venv.close()
    finally:
        source.close()


def test_the_moving_port_follows_the_python_rules(tmp_path):
    """Same state, same actions: the JS game's observation and reward are the Python game's."""
    from agentkit_envs.games.moving import MovingEnv

    script = tmp_path / "check.mjs"
    script.write_text(f"""
import {{ Moving }} from {json.dumps(str(JS / 'games' / 'moving.mjs'))};
const g = new Moving();
g.reset(1);
Object.assign(g, {{ x: 0.2, y: -0.3, heading: 1.0, tx: 0.5, ty: 0.4, speed: 0, steps: 0 }});
const out = [];
for (const a of [[0, [0.8, 0]], [1, [0, -0.7]], [0, [1, 0]], [0, [1, 0]], [2, [0, 0]], [1, [0, 3]]]) {{
  const [obs, reward, term, trunc] = g.step({{ type: a[0], params: a[1] }});
  out.push([obs, reward, term, trunc]);
}}
console.log(JSON.stringify(out));
""")
    proc = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    env = MovingEnv()
    env.reset(seed=0)
    env.x, env.y, env.heading, env.tx, env.ty, env.speed, env.steps = 0.2, -0.3, 1.0, 0.5, 0.4, 0.0, 0
    for (obs_js, r_js, term_js, trunc_js), (k, p) in zip(js, [(0, [0.8, 0]), (1, [0, -0.7]), (0, [1, 0]), (0, [1, 0]),
                                                             (2, [0, 0]), (1, [0, 3])], strict=True):
        obs, r, term, trunc, _ = env.step((k, np.array(p, np.float32)))
        np.testing.assert_allclose(obs_js, obs, atol=1e-6)
        assert abs(r_js - r) < 1e-6 and term_js == term and trunc_js == trunc


def test_team_forage_trains_with_mappo_and_foragers_leave(tmp_path):
    env = {"plugin": "remote", "command": f"{NODE} {JS / 'games' / 'team.mjs'} --port {{port}} --instance {{instance}}",
           "num_envs": 2, "connect_timeout": 30}
    config, host = run_config(env, {"plugin": "mappo", "total_steps": 256, "num_steps": 64})
    source = build_env(config, host.registry)
    try:
        assert list(source.groups) == ["forager"] and source.groups["forager"].mask_dim == 5
        venv = source.make_vec(1, seed=3)
        o = venv.reset()["forager"]
        assert o.alive.tolist() == [[True, True, True]] and o.mask.shape == (1, 3, 5)
        left = set()
        for _ in range(12):  # nobody eats: every forager starves after 10 steps, then a new episode starts
            tr = venv.step({"forager": np.zeros(3, np.int64)}).groups["forager"]
            left |= {a for a in range(3) if tr.terminated[0, a]}
        assert left == {0, 1, 2}
        venv.close()
    finally:
        source.close()
    result = train(config, host, tmp_path / "run")
    assert result["step"] == 256 and "infos/eaten" in result



@pytest.mark.parametrize("check", CHECKS)
def test_the_js_client_speaks_protocol_2(check, tmp_path):
    """tests/js_games/bright_side.mjs: uint8 pixels train the CNN and export uint8 (no --allow-import: the run kept
    the game's hello); a Dict of uint8, float32 and int32 entries arrives as sent; a version 1 game plays."""
    command = f"{NODE} {REPO / 'tests' / 'js_games' / 'bright_side.mjs'} --port {{port}} --instance {{instance}} --seed {{seed}}"
    run_check(check, command, "bright-side-js", tmp_path / "run", spell=lambda key, value: f"--{key} {value}")


def test_the_js_client_reads_options_as_key_value_and_key_equals_value():
    """`--port=5555` is the form the C# and Godot clients read; the JS client takes both forms."""
    script = ('import { parseArgs } from "./exports/js/agentkit-bridge.mjs"; console.log(JSON.stringify(parseArgs('
              '["--port=5555", "--instances", "3", "--connect-timeout=2", "--token=a=b", "--crash-at", "7"])));')
    proc = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    args = json.loads(proc.stdout)
    assert (args["port"], args["instances"], args["connectTimeoutMs"], args["token"], args["crashAt"]) == (
        5555, 3, 2000, "a=b", "7")
