"""Figures a user reads must not mislead: the progress line, the final table, curve.png, the infos averages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agentkit import cli
from agentkit.config import load_config
from agentkit.environment import is_info_metric
from agentkit.host import PluginHost
from agentkit.progress import ProgressReporter
from agentkit.runlog import RETURN_METRIC, MetricsCSV, write_curve
from agentkit.trainer import train


def test_progress_shows_each_groups_return_and_stops_at_100_percent():
    stream = io.StringIO()
    p = ProgressReporter("plain", total_steps=1000, label="tag", stream=stream)
    p.update(500, episode_return=-1.53, group_returns={"adversary": 10.5, "agent": -13.56})
    p.update(1024, episode_return=float("nan"), group_returns={}, steps_per_second=1234.0)  # no episode ended
    p.close()
    first, last = stream.getvalue().splitlines()
    assert "return adversary 10.50 · agent -13.56" in first and "-1.53" not in first
    assert last.startswith("tag step 1,024/1,000 (100%)") and "1,234 steps/s" in last
    assert "return adversary 10.50 · agent -13.56" in last  # the latest known, kept


def test_final_table_always_has_a_return_row(capsys):
    cli._print_metrics({"losses/policy": 0.1}, (3072, {RETURN_METRIC: 1.5, "charts/red/episode_return": 2.0}))
    out = capsys.readouterr().out
    assert "charts/episode_return (last logged, step 3,072)" in out and "1.5" in out
    assert "charts/red/episode_return (last logged, step 3,072)" in out
    cli._print_metrics({"losses/policy": 0.1})
    assert "no episode ended" in capsys.readouterr().out


def test_a_run_whose_last_iteration_ends_no_episode_keeps_its_latest_return(tmp_path):
    host = PluginHost()
    # Moving's episodes last up to 200 steps: one env copy, 64-step iterations; the 5th ends none
    config = load_config({
        "seed": 0, "env": {"plugin": "gymnasium", "id": "agentkit/Moving-v0", "num_envs": 1},
        "algorithm": {"plugin": "ppo", "total_steps": 320, "num_steps": 64, "minibatch_size": 64,
                      "update_epochs": 1},
        "policy": {"hidden_sizes": [8], "head": {"plugin": "hybrid"}},
        "run": {"progress": "none", "tensorboard": False},
    }, host.registry)
    result = train(config, host, run_dir=tmp_path / "run")
    assert RETURN_METRIC not in result
    step, returns = result.last_returns
    assert step < 320 and np.isfinite(returns[RETURN_METRIC])
    # One measure of speed, the trainer's: this session's and this iteration's, nothing from the algorithm.
    assert result["time/steps_per_second"] > 0 and result["time/iteration_steps_per_second"] > 0
    assert not [k for k in result if "per_second" in k and not k.startswith("time/")] and "charts/sps" not in result


def _blue_pixels(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    c0 = np.array([31, 119, 180])  # matplotlib's first line colour
    return int((np.abs(rgb - c0).sum(-1) < 60).sum())


@pytest.mark.parametrize("points", [1, 2])
def test_curve_of_a_run_with_few_return_points_is_visible(tmp_path, points):
    csv = MetricsCSV(tmp_path / "metrics.csv")
    for i in range(1, 4):
        csv.append(128 * i, i, float(i), {RETURN_METRIC: 0.5 * i} if i <= points else {"losses/policy": 0.0})
    csv.close()
    write_curve(tmp_path / "metrics.csv", tmp_path / "curve.png")
    assert _blue_pixels(tmp_path / "curve.png") > 20


def test_infos_average_floats_and_bools_not_integer_labels():
    from agentkit_envs.gymnasium_env import _final_scalars
    from agentkit_envs.pettingzoo_env import _numeric_scalars

    assert _numeric_scalars({"action": 2, "team": "red", "win": 1.0, "success": True, "d": np.float32(0.5)}) == {
        "win": 1.0, "success": 1.0, "d": 0.5}
    final = {"action": np.array([2, 1]), "_action": np.array([True, True]),
             "success": np.array([True, False]), "_success": np.array([True, True]),
             "distance": np.array([0.25, 0.0]), "_distance": np.array([True, False])}
    assert _final_scalars(final, 0) == {"success": 1.0, "distance": 0.25}
    assert _final_scalars(final, 1) == {"success": 0.0}
    assert not is_info_metric(np.int64(3)) and is_info_metric(np.bool_(True)) and is_info_metric(0.5)


def _metrics_with_returns(path) -> None:
    csv = MetricsCSV(path)
    for i in range(1, 30):
        csv.append(256 * i, i, float(i), {RETURN_METRIC: float(i * i % 17)})
    csv.close()


CURVE_IN_A_HELPER = """
import sys
from pathlib import Path
from agentkit.curve_process import CurveProcess
folder = Path(sys.argv[1])
with CurveProcess() as curves:
    assert curves.draw(folder / "metrics.csv", folder / "helper.png", title="t") == folder / "helper.png"
print("matplotlib" in sys.modules)
"""


def test_curve_process_draws_the_same_png_in_a_helper_process(tmp_path):
    """``agentkit train``'s curve.png comes from a helper process (matplotlib's import overlaps training): the
    same bytes as ``write_curve`` here, and this process never imports matplotlib."""
    import subprocess
    import sys

    _metrics_with_returns(tmp_path / "metrics.csv")
    proc = subprocess.run([sys.executable, "-c", CURVE_IN_A_HELPER, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    write_curve(tmp_path / "metrics.csv", tmp_path / "here.png", title="t")
    assert (tmp_path / "helper.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_curve_process_draws_here_when_its_helper_is_gone_and_raises_write_curves_errors(tmp_path):
    from agentkit.curve_process import CurveProcess

    _metrics_with_returns(tmp_path / "metrics.csv")
    with CurveProcess() as curves:
        assert curves._proc is not None
        curves._proc.kill()  # died (killed, out of memory ...)
        curves._proc.wait()
        curves.draw(tmp_path / "metrics.csv", tmp_path / "curve.png", title="t")
    assert _blue_pixels(tmp_path / "curve.png") > 20
    (tmp_path / "a-file").write_text("")
    with CurveProcess() as curves, pytest.raises(OSError):  # the helper fails: the error is write_curve's, here
        curves.draw(tmp_path / "metrics.csv", tmp_path / "a-file" / "curve.png")


def test_the_train_command_draws_its_curve_in_the_helper(tmp_path):
    import subprocess
    import sys

    script = ("import sys\nfrom agentkit import cli\n"
              "code = cli.main(['train', sys.argv[1], '--run-dir', sys.argv[2], '--set', 'run.progress=none'])\n"
              "print('matplotlib' in sys.modules, code)")
    config = tmp_path / "c.yaml"
    config.write_text("env: {plugin: gymnasium, id: CartPole-v1, num_envs: 2}\n"
                      "algorithm: {plugin: ppo, total_steps: 512, num_steps: 64, minibatch_size: 64, update_epochs: 1}\n")
    proc = subprocess.run([sys.executable, "-c", script, str(config), "run"], capture_output=True,  # relative
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False 0"
    assert _blue_pixels(tmp_path / "run" / "curve.png") > 20
