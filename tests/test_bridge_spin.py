"""The bridge's busy-wait before a read blocks (env.spin_us, welcome.spin_us): when it is on, what it changes is
only when a read notices its frame; frames sent before, during and after the spin arrive whole, and a read
still times out at its deadline."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from agentkit_envs.remote import RemoteEnvConfig
from agentkit_envs.remote.protocol import BridgeTimeout, decode, encode
from agentkit_envs.remote.server import DEFAULT_SPIN_US, spin_us
from agentkit_envs.remote.transport import TcpListener
from conftest import REPO

sys.path.insert(0, str(REPO / "exports" / "python"))
import agentkit_bridge as bridge  # noqa: E402


def remote_config(**fields) -> RemoteEnvConfig:
    return RemoteEnvConfig(plugin="remote", command="game --port {port}", **fields)


@pytest.mark.parametrize(("num_envs", "per_process", "cpus", "expected"), [
    (8, 8, 2, DEFAULT_SPIN_US),  # the trainer and one game process: a core each
    (8, 1, 2, 0),  # 8 game processes on 2 cores: a spinning one takes a core another needs
    (8, 4, 2, 0),
    (8, 4, 4, DEFAULT_SPIN_US),
    (3, 2, 3, DEFAULT_SPIN_US),  # 2 processes (2 + 1 instances) and the trainer
])
def test_unset_spin_is_on_only_when_every_process_has_a_core(monkeypatch, num_envs, per_process, cpus, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert spin_us(remote_config(num_envs=num_envs, instances_per_process=per_process)) == expected


def test_a_set_spin_is_kept(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert spin_us(remote_config(spin_us=250)) == 250
    assert spin_us(remote_config(num_envs=1, instances_per_process=1, spin_us=0)) == 0


@pytest.fixture
def connected():
    """(the trainer's end, spinning 5 ms; the Python client's end)."""
    listener = TcpListener("127.0.0.1", 0, 1 << 20, spin=0.005)
    client = bridge._Tcp("127.0.0.1", listener.port, 10.0)
    trainer = listener.accept(10.0)
    yield trainer, client
    client.close()
    trainer.close()
    listener.close()


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.05])  # before, during and after the 5 ms of spinning
def test_a_spinning_read_gets_every_frame_whole(connected, delay):
    trainer, client = connected
    client.spin = 0.005
    big = bytes(range(256)) * 4096  # 1 MiB: arrives in many pieces
    for payload in (b"x", big, b"y"):
        threading.Timer(delay, client.send, (payload,)).start()
        assert trainer.recv(10.0) == payload
        threading.Timer(delay, trainer.send, (payload,)).start()
        assert client.recv() == payload


def test_a_spinning_read_still_times_out_at_its_deadline(connected):
    trainer, _ = connected
    trainer.spin = 5.0  # longer than the timeout: the deadline wins
    start = time.monotonic()
    with pytest.raises(BridgeTimeout):
        trainer.recv(0.1)
    assert 0.09 <= time.monotonic() - start < 2.0


def test_the_python_client_spins_as_the_welcome_says(connected):
    trainer, client = connected
    agents = [bridge.agent("a", [2], bridge.discrete(2))]
    session = bridge._Session(None, bridge._Layout(agents, 0), client)
    said = threading.Thread(target=session.handshake, args=("g", 0, None, agents, 0))
    said.start()
    hello, _ = decode(trainer.recv(10.0))
    trainer.send(encode({"type": "welcome", "protocol": hello["protocol"], "instance": 0, "instances": 1,
                         "max_frame_bytes": 1 << 20, "spin_us": 1500, "trainer": "test"}))
    said.join(10.0)
    assert client.spin == pytest.approx(0.0015)
