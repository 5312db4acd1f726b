"""Checkpoint files: weights_only loading, integrity digest, atomic writes, pruning."""

from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from agentkit import checkpoint as ckpt
from agentkit import files
from agentkit.errors import CheckpointError


def _payload() -> dict:
    return {
        "step": 1024,
        "iteration": 4,
        "config": {"seed": 3, "algorithm": {"plugin": "ppo", "total_steps": 5000, "lr": 1e-3}},
        "algorithm": {
            "actor": OrderedDict(w=torch.arange(1000, dtype=torch.float32).reshape(10, 100), b=torch.zeros(3)),
            "half": torch.ones(4, dtype=torch.bfloat16),
            "flags": torch.tensor([True, False]),
            "optimizer": {"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "rng": (3, tuple(range(5)), None),
            "nothing": None,
            "name": "ppo",
        },
        "trainer": {"elapsed": 12.5},
    }


def test_roundtrip_is_a_plain_weights_only_torch_file(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "c.pt", _payload())
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 1024 and loaded["format"] == ckpt.FORMAT and len(loaded["sha256"]) == 64
    assert torch.equal(loaded["algorithm"]["actor"]["w"], _payload()["algorithm"]["actor"]["w"])
    assert loaded["algorithm"]["rng"] == (3, (0, 1, 2, 3, 4), None)
    # anyone can open it with stock torch, without running code
    plain = torch.load(path, weights_only=True)
    assert plain["sha256"] == loaded["sha256"]


def test_digest_is_canonical_and_sensitive():
    a, b = _payload(), _payload()
    assert ckpt.digest(a) == ckpt.digest(b)
    b["algorithm"]["actor"]["w"][3, 7] += 0.5
    assert ckpt.digest(a) != ckpt.digest(b)
    c = _payload()
    c["algorithm"]["half"] = c["algorithm"]["half"].float()  # same values, other dtype
    assert ckpt.digest(a) != ckpt.digest(c)
    d = _payload()
    d["algorithm"]["rng"] = [3, tuple(range(5)), None]  # list instead of tuple
    assert ckpt.digest(a) != ckpt.digest(d)


def test_edited_values_fail_the_integrity_check(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "c.pt", _payload())
    payload = torch.load(path, weights_only=True)
    payload["algorithm"]["actor"]["w"][0, 0] = 123.0  # edited, digest left as it was
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="integrity check"):
        ckpt.load_checkpoint(path)


def test_flipped_bytes_in_tensor_data_are_refused(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "c.pt", _payload())
    raw = bytearray(path.read_bytes())
    needle = torch.arange(1000, dtype=torch.float32).numpy().tobytes()[400:432]
    at = raw.find(needle)
    assert at > 0
    raw[at + 5] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_file_is_refused(tmp_path, keep):
    path = ckpt.save_checkpoint(tmp_path / "c.pt", _payload())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        ckpt.load_checkpoint(path)


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "version": 1, "algorithm": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint_and_missing_file(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an agentkit checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"hello world" * 10)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(tmp_path / "garbage.pt")


def test_state_that_weights_only_cannot_reload_is_rejected_at_save_naming_the_key():
    payload = _payload()
    payload["algorithm"]["obs_rms"] = {"mean": np.zeros(3)}
    with pytest.raises(TypeError, match=r"\['algorithm'\]\['obs_rms'\]\['mean'\].*numpy"):
        ckpt.encode(payload)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint(tmp_path / "latest.pt", _payload())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(files.os, "replace", crash)
    new = _payload()
    new["step"] = 2048
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, new)
    monkeypatch.undo()
    assert path.read_bytes() == before and ckpt.load_checkpoint(path)["step"] == 1024
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # a failed write removes its temp file
    (tmp_path / f".latest.pt{ckpt.TMP_MARK}12345").write_bytes(b"half")  # what a kill -9 leaves ...
    ckpt.remove_stale_temp_files(tmp_path)  # ... is cleaned up by the next run
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_prune_keeps_the_newest(tmp_path):
    for step in (100, 2000, 300, 40000, 5000):
        (tmp_path / f"step_{step}.pt").write_bytes(b"x")
    (tmp_path / "latest.pt").write_bytes(b"x")
    removed = ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["step_100.pt", "step_2000.pt", "step_300.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step_40000.pt", "step_5000.pt"]


def test_encoded_bytes_are_a_standard_torch_zip():
    data = ckpt.encode(_payload())
    assert zipfile.is_zipfile(io.BytesIO(data))
