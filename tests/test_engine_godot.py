"""The Godot game of exports/godot (the Maze scene, masked Discrete(4)) trains over the bridge against real
headless Godot 3 (Debian's godot3-server, installed by `make engines`), is evaluated in it, and exports.
Protocol 2 from GDScript: a game of uint8 pixels (tests/godot_games/bright_side) trains the CNN, a Dict of
uint8, float32 and int32 entries arrives as sent, and a protocol 1 game still plays. One Godot process serves
several Maze instances on one connection (`--instances=N`, `batch` frames: docs/bridge.md, "Several instances on
one connection")."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from agentkit_envs.remote.mux import decode_batch, encode_batch
from agentkit_envs.remote.protocol import decode, encode, header_text
from bridge_pixel_checks import CHECKS, run_check
from test_bridge import _free_port
from test_bridge_mux import listening

REPO = Path(__file__).resolve().parents[1]
#: the example's launch command: eval and export of its run dir may run it once the command line allows it
COMMAND = "godot3-server --path exports/godot --port={port} --instance={instance} --instances={instances}"
GODOT = shutil.which("godot3-server")
pytestmark = pytest.mark.skipif(
    GODOT is None, reason="Godot 3 is not installed: `make engines` (as root) installs Debian's godot3-server"
)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_godot_maze_trains_evaluates_and_exports(run_cli, tmp_path):
    run_dir = tmp_path / "maze"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-godot-maze.yaml", "--run-dir", run_dir,
        "--set", "algorithm.total_steps=1024", "--set", "env.num_envs=2", "--set", "algorithm.num_steps=256",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) == 1024
    ended = [r for r in rows if r.get("infos/illegal_moves")]
    assert ended, "no episode of the Godot game ended in 1024 steps"
    # The game counts moves into walls; the mask it sends stops the policy from ever choosing one.
    assert all(float(r["infos/illegal_moves"]) == 0.0 for r in ended)
    assert all(float(r["bridge/restarts"]) == 0.0 for r in rows)

    proc = run_cli("eval", run_dir, "--episodes", "3", "--json", "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["infos"]["illegal_moves"] == 0.0

    out = tmp_path / "maze.onnx"
    proc = run_cli("export", run_dir, "--out", out, "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = onnx.load(out)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["agentkit"])
    assert meta["env"]["plugin"] == "remote"
    assert meta["action"]["kind"] == "discrete" and meta["action"]["n"] == 4
    assert [i.name for i in model.graph.input] == ["obs", "action_mask"] and meta["mask"]["dim"] == 4

    # The exported file drives the real Godot game (onnxruntime in Python, the game over the bridge), and
    # plays the same episodes as the run's policy did.
    proc = run_cli("eval", out, "--episodes", "3", "--json", "--allow-import", COMMAND, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    played = json.loads(proc.stdout)
    assert played["infos"]["illegal_moves"] == 0.0
    assert played["mean_return"] == pytest.approx(report["mean_return"], abs=1e-5)


@pytest.fixture(scope="module")
def bright_side_project(tmp_path_factory) -> Path:
    """tests/godot_games/bright_side with the client (exports/godot/addons) beside it: a Godot project."""
    project = tmp_path_factory.mktemp("godot") / "bright_side"
    shutil.copytree(REPO / "tests" / "godot_games" / "bright_side", project)
    shutil.copytree(REPO / "exports" / "godot" / "addons", project / "addons")
    return project


@pytest.mark.parametrize("check", CHECKS)
def test_the_godot_client_speaks_protocol_2(check, tmp_path, bright_side_project):
    """Its BrightSide port: uint8 pixels train the CNN and export uint8; a Dict arrives as sent; version 1 plays."""
    run_check(check, f"godot3-server --path {bright_side_project} --port={{port}} --instance={{instance}}", "bright-side-godot", tmp_path / "run")


def test_one_godot_process_serves_four_maze_instances_in_training(run_cli, tmp_path):
    """``env.instances_per_process: 4``: PPO trains 4 Maze instances that one Godot process serves (``--instances=4``,
    batch frames); the process is launched once and exits 0 once the trainer has closed all four."""
    launches = tmp_path / "launches.txt"
    log = shlex.quote(str(launches))
    command = ("sh -c 'echo launched >> " + log + "; godot3-server --path exports/godot --port={port} "
               "--instance={instance} --instances={instances}; echo exited $? >> " + log + "'")
    run_dir = tmp_path / "maze4"
    proc = run_cli(
        "train", REPO / "examples" / "bridge-godot-maze.yaml", "--run-dir", run_dir,
        "--set", "algorithm.total_steps=1024", "--set", "env.num_envs=4", "--set", "env.instances_per_process=4",
        "--set", "algorithm.num_steps=128", "--set", f"env.command={command}",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = metrics(run_dir)
    assert int(rows[-1]["step"]) == 1024
    ended = [r for r in rows if r.get("infos/illegal_moves")]
    assert ended and all(float(r["infos/illegal_moves"]) == 0.0 for r in ended)
    assert all(float(r["bridge/restarts"]) == 0.0 for r in rows)
    assert launches.read_text().split("\n") == ["launched", "exited 0", ""]


def send_frame(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack("<I", len(payload)) + payload)


def recv_frame(conn: socket.socket) -> bytes:
    (size,) = struct.unpack("<I", conn.recv(4, socket.MSG_WAITALL))
    return conn.recv(size, socket.MSG_WAITALL)


def godot_maze_against(exchange, instance: int | None = 0) -> subprocess.CompletedProcess:
    """Start the Maze with ``--instances=2`` (and ``--instance``; None: none, as in listen mode), stand in for the
    trainer on a socket: take its hello, welcome it, run ``exchange(conn)``; returns the finished Godot process
    (its output as text)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        numbered = [] if instance is None else [f"--instance={instance}"]
        game = subprocess.Popen([GODOT, "--path", str(REPO / "exports" / "godot"), f"--port={port}", *numbered,
                                 "--instances=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            server.settimeout(15)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(15)
                hello, _ = decode(recv_frame(conn))
                assert hello["type"] == "hello" and hello["instance"] == instance and hello["instances"] == 2
                # listen mode: the trainer numbers the instances as it takes them, its welcome says null
                send_frame(conn, encode({"type": "welcome", "protocol": 2, "instance": instance, "instances": 2}))
                exchange(conn)
                out, err = game.communicate(timeout=15)
        finally:
            game.kill()
            game.wait()
    return subprocess.CompletedProcess(game.args, game.returncode, out, err)


@pytest.mark.parametrize("instance", [0, None], ids=["launched", "listen"])
def test_the_godot_client_answers_a_batch_for_the_same_slots_and_closes_with_the_last_slot(instance):
    def exchange(conn):
        send_frame(conn, encode_batch([1, 0], [encode({"type": "reset", "seed": 7}), encode({"type": "reset", "seed": 7})]))
        answers = decode_batch(recv_frame(conn), 2)
        assert sorted(slot for slot, _ in answers) == [0, 1]
        first = {slot: decode(part) for slot, part in answers}
        np.testing.assert_array_equal(first[0][1]["obs"], first[1][1]["obs"])  # the same seed: the same maze
        step = encode({"type": "step"}, {"action_int": np.array([int(first[1][1]["mask"].argmax())], np.int32),
                                         "action_float": np.zeros(0, np.float32)})
        send_frame(conn, encode_batch([1], [step]))  # one slot's step: one answer, for that slot
        [(slot, part)] = decode_batch(recv_frame(conn), 2)
        header, blobs = decode(part)
        assert slot == 1 and header["type"] == "step_result" and blobs["reward"].shape == (1,)
        send_frame(conn, encode_batch([0], [encode({"type": "close"})]))
        send_frame(conn, encode_batch([1], [encode({"type": "close", "reason": "done"})]))
        assert conn.recv(1) == b""  # no answer to a close; the game closes the connection after the last slot

    game = godot_maze_against(exchange, instance)
    assert game.returncode == 0, game.stderr


@pytest.mark.parametrize("field", ["slots", "parts"])
def test_the_godot_client_names_the_field_of_a_malformed_batch(field):
    reset = encode({"type": "reset", "seed": 1})
    if field == "slots":  # a slot the game does not serve
        batch = encode_batch([0, 5], [reset, reset])
        said = "a batch for 2 instances needs 'slots' (each 0 .. 1)"
    else:  # sizes that do not add up to the blob
        batch = header_text({"type": "batch", "slots": [0], "sizes": [3]}, [("parts", "uint8", len(reset))]) + reset
        said = f"a batch's one blob is 'parts' with sum(sizes) = 3 bytes; got blobs [\"parts\"] of {len(reset)} bytes"
    errors = []

    def exchange(conn):
        send_frame(conn, batch)
        errors.append(decode(recv_frame(conn))[0])  # the error itself, not in a batch

    game = godot_maze_against(exchange)
    [error] = errors
    assert error["type"] == "error" and error["code"] == "bad_frame" and error["field"] == field
    assert said in error["message"]
    assert game.returncode == 2 and f"agentkit bridge: bad_frame: {said}" in game.stderr


@pytest.mark.parametrize(("option", "env"), [("--instances=two", {}), ("--instances=0", {}),
                                             ("", {"AGENTKIT_BRIDGE_INSTANCES": "-3"})], ids=["two", "0", "env -3"])
def test_a_bad_instance_count_is_refused_with_one_message(option, env):
    value = option.partition("=")[2] or env["AGENTKIT_BRIDGE_INSTANCES"]
    proc = subprocess.run([GODOT, "--path", str(REPO / "exports" / "godot"), "--port=1", *filter(None, [option])],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2
    assert (f"agentkit bridge: --instances (or AGENTKIT_BRIDGE_INSTANCES) is '{value}': give a whole number from 1 "
            "to 1024") in proc.stderr


def test_a_godot_maze_started_before_the_trainer_connects_once_it_listens():
    """Listen mode, the game first (Play pressed before `agentkit train`): nothing listens on the port for 1 s (each
    try is refused, poll() trying again from _process), then the trainer listens and plays both instances; the
    game's retries found it, and it exits 0 once the trainer has closed them."""
    def play(venv):
        o = venv.reset()
        assert o.obs.shape[0] == 2 and [inst.number for inst in venv.multi.instances] == [0, 1]
        for _ in range(5):
            o = venv.step(o.mask.argmax(axis=1)).next

    listening([GODOT, "--path", str(REPO / "exports" / "godot"), "--instances=2"], 2, play,
              port_args=("--port={port}",), game_first_s=1.0)


@pytest.mark.parametrize(("option", "env"), [("--connect-timeout=1", {}), ("", {"AGENTKIT_BRIDGE_CONNECT_TIMEOUT": "1"})],
                         ids=["argument", "variable"])
def test_the_godot_client_gives_up_after_its_connect_timeout_naming_the_fix(option, env):
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run([GODOT, "--path", str(REPO / "exports" / "godot"), f"--port={port}", *filter(None, [option])],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2 and time.monotonic() - started >= 1.0, proc.stderr
    assert (f"agentkit bridge: cannot connect to 127.0.0.1:{port}: nothing listened there for 1 s (connection refused): "
            "start `agentkit train` with env.mode: listen first, or raise --connect-timeout") in proc.stderr


def test_the_godot_client_gives_up_on_an_address_that_never_answers():
    """A listener whose backlog is full drops the game's SYN, so the connection stays connecting (as behind a
    firewall that drops it): the client gives up after its connect timeout and says what happened (no answer;
    it used to block in start() and then report "connection refused"), naming the fix."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):  # fill the accept queue (never accepted)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        try:
            started = time.monotonic()
            proc = subprocess.run([GODOT, "--path", str(REPO / "exports" / "godot"), f"--port={port}",
                                   "--connect-timeout=1.5"], capture_output=True, text=True, timeout=60)
        finally:
            for filler in fillers:
                filler.close()
    assert proc.returncode == 2 and 1.5 <= time.monotonic() - started < 30, proc.stderr
    assert f"agentkit bridge: cannot connect to 127.0.0.1:{port}: no answer for 1.5 s" in proc.stderr, proc.stderr
    assert "check --host/--port, or raise --connect-timeout" in proc.stderr


def test_a_bad_connect_timeout_is_refused_with_one_message():
    proc = subprocess.run([GODOT, "--path", str(REPO / "exports" / "godot"), "--port=1", "--connect-timeout=soon"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert ("agentkit bridge: --connect-timeout (or AGENTKIT_BRIDGE_CONNECT_TIMEOUT) is 'soon': give a number of "
            "seconds above 0") in proc.stderr
