"""The ``agentkit`` command line, run as a user runs it (a subprocess of the installed script).

Plugin-loading error paths are in test_host.py; config validation details in test_config.py.
"""

from __future__ import annotations

import csv
import json

import pytest
import yaml

import agentkit
from agentkit.cli import build_parser

CARTPOLE = {
    "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
    "algorithm": {"plugin": "ppo", "total_steps": 256},
}


def assert_user_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("agentkit: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def write_config(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_version_and_usage_errors(run_cli):
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"agentkit {agentkit.__version__}"
    assert_user_error(run_cli(), "the following arguments are required: COMMAND", "usage: agentkit")
    assert_user_error(run_cli("trian", "x.yaml"), "invalid choice: 'trian'")
    assert_user_error(run_cli("eval", "runs/x", "--episodes", "0"), "expected a positive integer, got '0'")


def test_every_documented_option_parses():
    parser = build_parser()
    args = parser.parse_args(
        ["train", "c.yaml", "--set", "a.b=1", "--set", "c=2", "--run-dir", "d", "--resume", "-p", "m1", "-p", "m2"]
    )
    assert (args.file, args.set, args.run_dir, args.resume, args.plugin) == ("c.yaml", ["a.b=1", "c=2"], "d", True,
                                                                             ["m1", "m2"])
    args = parser.parse_args(["eval", "p.onnx", "--episodes", "3", "--seed", "4", "--json", "--stochastic",
                              "--gif", "g.gif", "--env", "CartPole-v1"])
    assert (args.episodes, args.seed, args.json, args.stochastic, args.gif, args.env) == (3, 4, True, True, "g.gif",
                                                                                         "CartPole-v1")
    args = parser.parse_args(["export", "run", "--out", "a.onnx", "--stochastic", "--opset", "17"])
    assert (args.run_dir, args.out, args.stochastic, args.opset) == ("run", "a.onnx", True, 17)
    args = parser.parse_args(["config", "show", "c.yaml", "--set", "seed=1", "-p", "m"])
    assert (args.file, args.set, args.plugin) == ("c.yaml", ["seed=1"], ["m"])
    assert parser.parse_args(["config", "schema", "--out", "s.json"]).out == "s.json"
    assert parser.parse_args(["plugins", "--json"]).json is True


def test_plugins_table_lists_every_kind_with_provider(run_cli):
    proc = run_cli("plugins")
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if "kind" in line)
    assert all(column in header for column in ("kind", "name", "description", "provider"))
    for expected in ("algorithm", "action_head", "env", "exporter", "ppo", "gymnasium", "onnx", "built-in"):
        assert expected in proc.stdout, expected


def test_config_show_resolves_defaults_and_typed_set(run_cli, tmp_path):
    path = write_config(tmp_path / "c.yaml", CARTPOLE)
    proc = run_cli("config", "show", path, "--set", "algorithm.total_steps=2e4", "--set", "env.num_envs=4",
                   "--set", "policy.head=discrete", "--set", "seed=3")
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["seed"] == 3 and shown["algorithm"]["total_steps"] == 20_000 and shown["env"]["num_envs"] == 4
    assert shown["policy"]["head"]["plugin"] == "discrete" and shown["policy"]["hidden_sizes"] == [64, 64]
    assert "gamma" in shown["algorithm"] and "checkpoint_every_steps" in shown["run"]  # defaults filled in


def test_config_errors_are_one_message_with_dotted_paths(run_cli, tmp_path):
    bad = {
        "env": {"plugin": "gymnasum", "id": "CartPole-v1"},
        "algorithm": {"plugin": "ppo", "total_steps": 100, "learning_rat": 0.1, "gamma": "high"},
    }
    proc = run_cli("config", "show", write_config(tmp_path / "bad.yaml", bad), "--set", "run.keep_checkpoints=0")
    assert_user_error(
        proc,
        "env.plugin: unknown env plugin 'gymnasum'. Available: ",
        "Did you mean 'gymnasium'?",
        "algorithm.learning_rat: unknown key (got 0.1). Did you mean 'learning_rate'?",
        "algorithm.gamma: Input should be a valid number",
        "(got 'high')",
        "run.keep_checkpoints: Input should be greater than or equal to 1 (got 0)",
    )
    assert_user_error(run_cli("config", "show", str(tmp_path / "missing.yaml")), "missing.yaml' does not exist")


def test_config_schema_written_to_file(run_cli, tmp_path):
    out = tmp_path / "schema" / "agentkit.schema.json"
    proc = run_cli("config", "schema", "--out", out)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(out.read_text())
    assert schema["title"] == "agentkit run config"
    assert set(schema["properties"]) == {"seed", "env", "algorithm", "policy", "run", "plugins"}


def test_eval_and_export_reject_missing_targets(run_cli, tmp_path):
    assert_user_error(run_cli("eval", tmp_path / "nope"), "neither a run directory nor an .onnx file")
    assert_user_error(run_cli("eval", tmp_path / "nope.onnx"), "nope.onnx' does not exist")
    assert_user_error(run_cli("export", tmp_path / "nope"), "run directory")
    assert_user_error(run_cli("eval", tmp_path, "--env", "CartPole-v1"), "--env applies to .onnx files only")


def test_unexpected_failure_exits_1_with_traceback(run_cli, plugin_site, tmp_path):
    plugin_site.module("exploding_env", """
        import agentkit
        from agentkit.config import EnvConfig

        class BoomConfig(EnvConfig):
            pass

        def make(config):
            raise RuntimeError("boom inside the env factory")

        @agentkit.hookimpl
        def agentkit_register_envs(register):
            register("boom", make, BoomConfig, "An env plugin with a bug.")
    """)
    config = {**CARTPOLE, "env": {"plugin": "boom"}, "plugins": ["exploding_env"]}
    proc = run_cli("train", write_config(tmp_path / "boom.yaml", config), env=plugin_site.env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" in proc.stderr and "RuntimeError: boom inside the env factory" in proc.stderr


def test_example_plugin_package_is_installed_listed_and_trains(run_cli, example_plugin_package, tmp_path):
    """The example package, installed through pip, is found by its entry point and drives a real run: its
    env plugin provides the game and its iteration_end hook stops training once the game is solved."""
    rows = json.loads(run_cli("plugins", "--json").stdout)
    corridor = next(row for row in rows if (row["kind"], row["name"]) == ("env", "corridor"))
    assert corridor["provider"] == "agentkit-example-corridor 0.1.0"
    head = next(row for row in rows if (row["kind"], row["name"]) == ("action_head", "epsilon_discrete"))
    assert head["provider"] == "agentkit-example-corridor 0.1.0"
    hooks = next(row for row in rows if row["kind"] == "hooks" and row["name"] == "corridor")
    assert hooks == {"kind": "hooks", "name": "corridor", "description": "lifecycle hooks: iteration_end",
                     "provider": "agentkit-example-corridor 0.1.0"}

    run_dir = tmp_path / "corridor-run"
    args = ["train", example_plugin_package / "corridor.yaml", "--run-dir", run_dir,
            "--set", "algorithm.total_steps=12000", "--set", "env.solved_return=0.8", "--set", "run.progress=plain",
            "--set", "run.tensorboard=false", "--set", "algorithm.num_steps=64"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    assert float(last["corridor/solved"]) == 1.0 and float(last["charts/episode_return"]) >= 0.8
    assert int(float(last["step"])) < 12000  # stopped by the plugin, not by the budget

    # A run dir stands for its saved config; training into it again without --resume is refused, with the
    # way out named.
    assert_user_error(run_cli("train", run_dir), "already holds a run", "--resume")

    result = run_cli("eval", run_dir, "--episodes", "4", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    from_run = json.loads(result.stdout)
    assert from_run["episodes"] == 4 and from_run["mean_return"] >= 0.5

    onnx_path = tmp_path / "corridor.onnx"
    proc = run_cli("export", run_dir, "--out", onnx_path)
    assert proc.returncode == 0 and onnx_path.is_file(), proc.stderr
    result = run_cli("eval", onnx_path, "--episodes", "4", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["returns"] == pytest.approx(from_run["returns"])


@pytest.mark.parametrize("algorithm", [
    {"plugin": "mappo", "total_steps": 160, "num_steps": 10},
    {"plugin": "maddpg", "total_steps": 400, "iteration_steps": 100, "learning_starts": 100, "batch_size": 32,
     "train_every": 20, "buffer_size": 2000},
], ids=["mappo", "maddpg"])
def test_example_plugin_head_trains_with_the_multi_agent_algorithms_and_exports(run_cli, example_plugin_package,
                                                                                tmp_path, algorithm):
    """The head defined in the example package (outside the repo, installed through pip) trains with mappo and
    maddpg as it is (ppo: the test above, from corridor.yaml), and its export plays exactly as the run dir."""
    config = {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": "mpe2.simple_spread_v3", "num_envs": 2,
                "kwargs": {"N": 2, "max_cycles": 10, "continuous_actions": False}},
        "algorithm": algorithm,
        "policy": {"hidden_sizes": [16], "head": {"plugin": "epsilon_discrete", "epsilon": 0.1}},
        "run": {"progress": "none", "tensorboard": False},
    }
    run_dir = tmp_path / "run"
    proc = run_cli("train", write_config(tmp_path / "spread.yaml", config), "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr
    with open(run_dir / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(float(last["step"])) >= algorithm["total_steps"]
    onnx_path = tmp_path / "spread.onnx"
    proc = run_cli("export", run_dir, "--out", onnx_path)
    assert proc.returncode == 0 and onnx_path.is_file(), proc.stderr
    results = []
    for source in (run_dir, onnx_path):
        proc = run_cli("eval", source, "--episodes", "3", "--seed", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout)["returns"])
    assert results[1] == pytest.approx(results[0], abs=1e-4)


def test_example_plugin_package_own_tests_pass(example_plugin_package):
    """The example's tests (gymnasium's checker, agentkit.testing.check_env_plugin, the hook) run as its author
    would run them, against the installed package."""
    import subprocess
    import sys

    from conftest import cli_env

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(example_plugin_package / "tests")],
        capture_output=True, text=True, env=cli_env(), cwd=example_plugin_package, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout


def test_a_multi_agent_export_is_evaluated_by_the_name_given_to_export(run_cli, tmp_path):
    """`export RUN --out tag.onnx` writes one file per group and names each; `eval tag.onnx` (the README's
    pattern), one of the group files or their folder plays every group from the .onnx files, exactly as the
    run dir plays; a name that matches nothing lists the .onnx files that do exist."""
    config = {
        "seed": 0,
        "env": {"plugin": "pettingzoo", "module": "mpe2.simple_tag_v3",
                "kwargs": {"num_good": 1, "num_adversaries": 1, "num_obstacles": 0, "max_cycles": 10}, "num_envs": 2},
        "algorithm": {"plugin": "mappo", "total_steps": 80, "num_steps": 20, "update_epochs": 1},
        "policy": {"hidden_sizes": [8]},
        "run": {"progress": "none", "tensorboard": False},
    }
    run_dir = tmp_path / "run"
    assert run_cli("train", write_config(tmp_path / "tag.yaml", config), "--run-dir", run_dir).returncode == 0
    proc = run_cli("export", run_dir, "--out", tmp_path / "out" / "tag.onnx")
    assert proc.returncode == 0, proc.stderr
    written = [tmp_path / "out" / "tag-adversary.onnx", tmp_path / "out" / "tag-agent.onnx"]
    assert proc.stdout.split() == [str(p) for p in written] and all(p.is_file() for p in written)
    assert f"agentkit eval {tmp_path / 'out' / 'tag.onnx'}` plays them all" in proc.stderr

    from_run = json.loads(run_cli("eval", run_dir, "--episodes", "2", "--json").stdout)
    for target in (tmp_path / "out" / "tag.onnx", written[1], tmp_path / "out"):
        proc = run_cli("eval", target, "--episodes", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert set(result["groups"]) == {"adversary", "agent"}
        assert result["returns"] == pytest.approx(from_run["returns"], abs=1e-4)

    assert_user_error(run_cli("eval", tmp_path / "out" / "nope.onnx"), "does not exist",
                      "tag-adversary.onnx, tag-agent.onnx")
    assert_user_error(run_cli("eval", tmp_path / "elsewhere" / "tag.onnx"), "does not exist", "no folder")


def test_p_loads_plugins_before_or_after_the_subcommand(run_cli, plugin_site):
    plugin_site.module("early_plugin", """
        import agentkit

        @agentkit.hookimpl
        def agentkit_train_start(run):
            pass
    """)
    plugin_site.module("late_plugin", """
        import agentkit

        @agentkit.hookimpl
        def agentkit_train_end(run):
            pass
    """)
    proc = run_cli("-p", "early_plugin", "plugins", "--json", "-p", "late_plugin", env=plugin_site.env)
    assert proc.returncode == 0, proc.stderr
    providers = {row["provider"] for row in json.loads(proc.stdout) if row["kind"] == "hooks"}
    assert {"module early_plugin", "module late_plugin"} <= providers
    assert_user_error(run_cli("-p", "no_such_module_xyz", "plugins"), "no_such_module_xyz")


EXIT_PROCESS_SCRIPT = """
import atexit, sys, threading, time
from agentkit.cli import exit_process
atexit.register(lambda: print("atexit ran"))
print("buffered output", end="; ")
sys.stderr.write("error output")
if sys.argv[1] == "thread":  # a non-daemon thread still running: the exit waits for it
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", end="; "))).start()
exit_process(int(sys.argv[2]))
print("not reached")
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_exit_process_runs_atexit_flushes_and_keeps_the_code(thread):
    """The console script ends its process without the interpreter's teardown (``exit_process``): what a normal
    exit shows still happens, in order, and a running non-daemon thread is waited for."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe: block-buffered
    proc = subprocess.run([sys.executable, "-c", EXIT_PROCESS_SCRIPT, thread, "3"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 3, proc.stderr
    expected = "buffered output; thread done; atexit ran\n" if thread == "thread" else "buffered output; atexit ran\n"
    assert proc.stdout == expected
    assert proc.stderr == "error output"



def test_train_imports_with_the_collector_paused_then_frozen():
    """``agentkit train`` imports torch and the plugins with the cyclic collector off, then freezes what they
    loaded; the collector is left as it was, and nothing is frozen when the imports fail."""
    import gc

    from agentkit.cli import _collector_paused

    gc.unfreeze()
    try:
        with _collector_paused():
            assert not gc.isenabled()
            loaded = [[i] for i in range(1000)]  # what an import leaves behind: tracked, long-lived objects
        assert gc.isenabled() and gc.get_freeze_count() >= len(loaded)
        gc.unfreeze()
        gc.disable()
        with pytest.raises(ImportError), _collector_paused():
            raise ImportError("no module named ...")
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        gc.enable()
