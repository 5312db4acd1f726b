"""The run (issue 4): run dir layout, checkpoints, hooks, resume, determinism, Ctrl-C and kill -9.

Smoke-sized PPO runs on CartPole (a few thousand steps); the kill/interrupt paths run the real CLI.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import AGENTKIT, cli_env

import agentkit
from agentkit import cli
from agentkit.checkpoint import load_checkpoint, step_checkpoints
from agentkit.config import load_config
from agentkit.environment import MultiAgentTransition, Observation, Transition
from agentkit.errors import CheckpointError, UserError
from agentkit.host import PluginHost
from agentkit.rundir import RunDirError, default_run_dir, load_run
from agentkit.runlog import EndedEpisodes, read_metrics
from agentkit.trainer import train

SMALL = {
    "seed": 1,
    "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 4},
    "algorithm": {"plugin": "ppo", "total_steps": 1024, "num_steps": 32, "minibatch_size": 64, "update_epochs": 2},
    "policy": {"hidden_sizes": [16, 16]},
    "run": {"checkpoint_every_steps": 256, "keep_checkpoints": 2, "progress": "none"},
}
WALL_CLOCK = ("time",)


def _config(host: PluginHost, **changes) -> agentkit.config.RunConfig:
    data = yaml.safe_load(yaml.safe_dump(SMALL))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return load_config(data, host.registry)


def _deterministic_columns(header: list[str]) -> list[str]:
    """Everything but wall-clock figures (time, time/*, */steps_per_second)."""
    return [c for c in header if c not in WALL_CLOCK and not c.startswith("time/") and "per_second" not in c]


class Recorder:
    """A plugin object that records lifecycle hooks (and may stop the run or add a metric)."""

    def __init__(self, stop_at: int | None = None, add_metric_from: int | None = None):
        self.calls: list[tuple] = []
        self.stop_at = stop_at
        self.add_metric_from = add_metric_from

    @agentkit.hookimpl
    def agentkit_train_start(self, run):
        self.calls.append(("start", run.step, run.resumed))

    @agentkit.hookimpl
    def agentkit_iteration_end(self, run, iteration, step, metrics):
        self.calls.append(("iteration", iteration, step))
        if self.add_metric_from is not None and iteration >= self.add_metric_from:
            metrics["custom/late_metric"] = float(iteration)
        return True if self.stop_at is not None and iteration >= self.stop_at else None

    @agentkit.hookimpl
    def agentkit_checkpoint_saved(self, run, path, step):
        self.calls.append(("checkpoint", Path(path).name, step))

    @agentkit.hookimpl
    def agentkit_train_end(self, run, metrics, reason):
        self.calls.append(("end", reason, run.step))


def _with(recorder: Recorder) -> PluginHost:
    h = PluginHost()
    h.pm.register(recorder, name=f"recorder-{id(recorder)}")
    return h


def test_a_run_writes_its_run_dir_and_calls_every_hook(tmp_path):
    rec = Recorder()
    h = _with(rec)
    run_dir = tmp_path / "run"
    result = train(_config(h), h, run_dir=run_dir)
    assert result.reason == "completed" and result["step"] >= 1024

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["algorithm"]["gamma"] == 0.99  # resolved: defaults filled in
    header, rows = read_metrics(run_dir / "metrics.csv")
    assert header[:3] == ["step", "iteration", "time"] and "charts/episode_return" in header
    assert [int(r["iteration"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [int(r["step"]) for r in rows] == [128 * i for i in range(1, len(rows) + 1)]
    assert int(rows[-1]["step"]) == 1024
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    returns = events.Scalars("charts/episode_return")
    assert [e.step for e in returns] == [int(r["step"]) for r in rows if r["charts/episode_return"] not in ("", "nan")]
    assert returns[-1].value == pytest.approx(float(rows[-1]["charts/episode_return"]))
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    steps = [s for s, _ in step_checkpoints(run_dir / "checkpoints")]
    assert steps == [768, 1024]  # every 256 steps, the newest 2 kept
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["step"] == 1024 and latest["iteration"] == 8
    assert torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["step"] == 1024

    assert rec.calls[0] == ("start", 0, False)
    assert rec.calls[1] == ("checkpoint", "latest.pt", 0)  # loadable from the start
    assert rec.calls[-1] == ("end", "completed", 1024)
    assert [c[1] for c in rec.calls if c[0] == "iteration"] == list(range(1, 9))
    assert ("checkpoint", "step_256.pt", 256) in rec.calls


def test_a_hook_can_stop_the_run_and_new_metrics_widen_the_csv(tmp_path):
    rec = Recorder(stop_at=5, add_metric_from=3)
    h = _with(rec)
    run_dir = tmp_path / "run"
    result = train(_config(h), h, run_dir=run_dir)
    assert result.reason == "stopped" and result["step"] == 5 * 128
    assert rec.calls[-1] == ("end", "stopped", 640)
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 640
    header, rows = read_metrics(run_dir / "metrics.csv")
    assert header[-1] == "custom/late_metric" and len(rows) == 5
    assert [r["custom/late_metric"] for r in rows] == ["", "", "3.0", "4.0", "5.0"]
    with open(run_dir / "metrics.csv", newline="") as f:
        assert all(len(line) == len(header) for line in csv.reader(f))


def test_an_existing_run_dir_needs_resume(tmp_path, host):
    run_dir = tmp_path / "run"
    train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir)
    with pytest.raises(RunDirError, match="--resume.*--run-dir"):
        train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir)
    with pytest.raises(RunDirError, match="no run to resume"):
        train(_config(host), host, run_dir=tmp_path / "empty", resume=True)
    with pytest.raises(RunDirError, match=r"algorithm\.gamma: 0\.99 in the run dir's config, 0\.9 now"):
        train(_config(host, algorithm__gamma=0.9), host, run_dir=run_dir, resume=True)
    # through the CLI: one clear message, exit code 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    assert cli.main(["train", str(cfg), "--run-dir", str(run_dir)]) == 2


def test_a_run_dir_in_use_is_refused(tmp_path, host):
    from agentkit.rundir import RunDirLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = RunDirLock(run_dir)  # what a training process holds for its whole run
    try:
        with pytest.raises(RunDirError, match="in use by another agentkit training process"):
            train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir)
    finally:
        other.release()
    assert train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir).reason == "completed"
    # a failed --resume of a dir that did not exist leaves nothing behind
    with pytest.raises(RunDirError):
        train(_config(host), host, run_dir=tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


def test_resume_continues_to_the_new_total_and_appends(tmp_path):
    rec = Recorder()
    h = _with(rec)
    run_dir = tmp_path / "run"
    train(_config(h, algorithm__total_steps=512), h, run_dir=run_dir)
    _, first = read_metrics(run_dir / "metrics.csv")
    rec.calls.clear()
    result = train(_config(h, algorithm__total_steps=1024), h, run_dir=run_dir, resume=True)
    assert result.reason == "completed" and result["step"] == 1024
    assert rec.calls[0] == ("start", 512, True)
    _, rows = read_metrics(run_dir / "metrics.csv")
    assert rows[: len(first)] == first
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times)  # training time carries over
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algorithm"]["total_steps"] == 1024
    # resuming a finished run does nothing more
    result = train(_config(h, algorithm__total_steps=1024), h, run_dir=run_dir, resume=True)
    assert result["step"] == 1024 and len(read_metrics(run_dir / "metrics.csv")[1]) == 8


def test_same_seed_same_metrics(tmp_path, host):
    tables = []
    for name in ("a", "b"):
        train(_config(host, algorithm__total_steps=768), host, run_dir=tmp_path / name)
        header, rows = read_metrics(tmp_path / name / "metrics.csv")
        columns = _deterministic_columns(header)
        assert "losses/policy" in columns and "charts/episode_return" in columns
        tables.append([[r[c] for c in columns] for r in rows])
    assert tables[0] == tables[1]
    train(_config(host, algorithm__total_steps=768, seed=2), host, run_dir=tmp_path / "c")
    header, rows = read_metrics(tmp_path / "c" / "metrics.csv")
    assert [[r[c] for c in _deterministic_columns(header)] for r in rows] != tables[0]


def test_load_run_restores_the_latest_weights(tmp_path, host):
    run_dir = tmp_path / "run"
    train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir)
    loaded = load_run(run_dir)
    try:
        saved = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]
        actor = loaded.algorithm.policies()[0].actor
        assert loaded.step == 256 and loaded.config.algorithm.total_steps == 256
        for name, value in actor.state_dict().items():
            assert torch.equal(value, saved["actor"][name]), name
    finally:
        loaded.algorithm.close()
    with pytest.raises(RunDirError, match="not a run dir"):
        load_run(tmp_path)


def test_a_damaged_latest_checkpoint_is_refused_on_resume_and_eval(tmp_path, host, capsys):
    run_dir = tmp_path / "run"
    train(_config(host, algorithm__total_steps=256), host, run_dir=run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    payload = torch.load(latest, weights_only=True)
    payload["algorithm"]["actor"][next(iter(payload["algorithm"]["actor"]))] += 1.0
    torch.save(payload, latest)
    with pytest.raises(CheckpointError, match="integrity"):
        train(_config(host, algorithm__total_steps=512), host, run_dir=run_dir, resume=True)
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "latest.pt" in err and "integrity check" in err and "Traceback" not in err
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_run(run_dir)
    assert issubclass(CheckpointError, UserError)


def test_default_run_dir_is_sanitised(host):
    class Env:
        env_id = "agentkit/Arena v2:hard"

    cfg = _config(host)
    assert default_run_dir(cfg, Env()) == Path("runs") / "agentkit_Arena_v2_hard-ppo-seed1"


# -- the real CLI: Ctrl-C and kill -9 ------------------------------------------------------------------------


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended early (exit {proc.returncode}):\n{out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for the run")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return read_metrics(run_dir / "metrics.csv")[1]


def test_ctrl_c_saves_and_kill_9_leaves_a_resumable_run(tmp_path, host):
    cfg = tmp_path / "cartpole.yaml"
    big = yaml.safe_load(yaml.safe_dump(SMALL))
    big["algorithm"]["total_steps"] = 200_000
    cfg.write_text(yaml.safe_dump(big))
    run_dir = tmp_path / "run"
    train_cmd = [*AGENTKIT, "train", str(cfg), "--run-dir", str(run_dir), "--set", "run.progress=plain"]

    # Ctrl-C: the iteration finishes, a checkpoint is saved, curve.png written, exit 0
    proc = subprocess.Popen(train_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    _wait_for(lambda: len(_rows(run_dir)) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted" in err and "--resume" in err
    last = int(_rows(run_dir)[-1]["step"])
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == last
    assert (run_dir / "curve.png").exists()

    # kill -9 in the middle of the resumed run, after at least one more periodic checkpoint
    proc = subprocess.Popen([*train_cmd, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    _wait_for(lambda: any(s >= last + 512 for s, _ in step_checkpoints(run_dir / "checkpoints")), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"]
    assert saved > last

    # --resume (with a smaller budget, the one change allowed) reaches total_steps from the saved step
    result = train(_config(host, algorithm__total_steps=saved + 512), host, run_dir=run_dir, resume=True)
    assert result.reason == "completed" and result["step"] == saved + 512
    steps = [int(r["step"]) for r in _rows(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 512  # rows past the checkpoint were replaced
    assert [int(r["iteration"]) for r in _rows(run_dir)] == list(range(1, len(steps) + 1))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("losses/policy")] == steps  # replayed steps purged there too



def test_ctrl_c_to_the_process_group_stops_a_run_with_env_workers_cleanly(tmp_path):
    """A terminal's Ctrl-C reaches the env worker processes of ``vectorization: async`` too: they must keep
    serving until the trainer has finished its iteration and saved, and be gone after it exits."""
    cfg = tmp_path / "spread.yaml"
    cfg.write_text(yaml.safe_dump({
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": "mpe2.simple_spread_v3", "num_envs": 2,
                "kwargs": {"N": 3, "max_cycles": 25, "continuous_actions": False},
                "vectorization": "async", "workers": 2},
        "algorithm": {"plugin": "mappo", "total_steps": 200_000, "num_steps": 32, "update_epochs": 1},
        "run": {"progress": "plain", "tensorboard": False},
    }))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AGENTKIT, "train", str(cfg), "--run-dir", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), start_new_session=True)
    _wait_for(lambda: len(_rows(run_dir)) >= 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to every process of the group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == int(_rows(run_dir)[-1]["step"])
    deadline = time.monotonic() + 20
    while True:  # the workers (and forkserver) end with the trainer
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "env worker processes outlived the trainer"
        time.sleep(0.2)


# -- progress ------------------------------------------------------------------------------------------------


def test_progress_modes():
    import io

    from agentkit.progress import ProgressReporter

    stream = io.StringIO()  # not a terminal: auto means plain lines
    p = ProgressReporter("auto", total_steps=1000, label="demo", stream=stream)
    assert p.mode == "plain"
    for step in range(10, 1001, 10):
        p.update(step, episode_return=float(step) if step % 20 == 0 else float("nan"))
    p.close()
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 12  # first, every 10% of the budget, last
    assert lines[0].startswith("demo step 10/1,000 (1%)") and "steps/s" in lines[0]
    assert lines[-1].startswith("demo step 1,000/1,000 (100%)") and "return 1000.00" in lines[-1]
    quiet = io.StringIO()
    p = ProgressReporter("none", total_steps=10, stream=quiet)
    p.update(10, 1.0)
    p.message("hello")
    assert quiet.getvalue() == ""


def _step(returns, infos=(), group_returns=None):
    none = np.zeros(2, dtype=bool)
    group = Transition(Observation(np.zeros((2, 3), np.float32)), np.zeros(2, np.float32), none, none)
    if group_returns is None:
        return Transition(group.next, group.reward, none, none, episode_returns=list(returns),
                          episode_lengths=[10] * len(returns), episode_infos=list(infos))
    return MultiAgentTransition({g: group for g in group_returns}, list(returns), [25] * len(returns),
                                group_returns, episode_infos=list(infos))


def test_ended_episodes_give_every_algorithm_the_same_figures():
    ended = EndedEpisodes()
    assert ended.metrics() == {}  # no episode ended: nothing to log, not zeros
    ended.add(_step([1.0]))
    ended.add(_step([]))
    ended.add(_step([3.0, 5.0], infos=[{"success": 1.0}, {"success": 0.0}]))
    assert ended.metrics() == {
        "charts/episode_return": 3.0, "charts/episode_length": 10.0, "charts/episodes": 3.0,
        "infos/success": 0.5,
    }

    teams = EndedEpisodes()
    teams.add(_step([-1.0], infos=[{"win": 1.0}], group_returns={"red": [-3.0], "blue": [1.0]}))
    teams.add(_step([0.0], infos=[{"win": 0.0}], group_returns={"red": [-1.0], "blue": [1.0]}))
    assert teams.metrics() == {
        "charts/episode_return": -0.5, "charts/episode_length": 25.0, "charts/episodes": 2.0,
        "charts/red/episode_return": -2.0, "charts/blue/episode_return": 1.0, "infos/win": 0.5,
    }
    one_group = EndedEpisodes()
    one_group.add(_step([2.0], group_returns={"agent": [2.0]}))
    assert "charts/agent/episode_return" not in one_group.metrics()  # the same figure as episode_return
