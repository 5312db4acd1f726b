"""A file made elsewhere (an .onnx's metadata, a run dir's config.yaml) imports and calls no code unless the
command line allows it (docs/runs.md, "What is trusted"). The exploits of issue 22 are replayed with a harmless
side effect: a module that writes a marker file when imported, `os:system` running `touch MARKER`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import onnx
import pytest
import yaml
from agentkit_envs.gymnasium_env import GymnasiumEnvConfig
from agentkit_envs.pettingzoo_env import PettingZooEnvConfig
from agentkit_exports.onnx_exporter import OnnxExporter
from conftest import AGENTKIT, cli_env
from gymnasium import spaces
from onnx_cases import Case, make_artifact

from agentkit import cli
from agentkit.errors import UserError
from agentkit.trust import check_imports, code_refs, is_allowed

CARTPOLE_ENV = {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 1}
CARTPOLE_RUN = {
    "seed": 0,
    "env": {**CARTPOLE_ENV, "num_envs": 2},
    "algorithm": {"plugin": "ppo", "total_steps": 128, "num_steps": 32, "minibatch_size": 32, "update_epochs": 1},
    "policy": {"hidden_sizes": [8]},
    "run": {"progress": "none", "tensorboard": False},
}


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A module ``marker_<n>`` on sys.path (and PYTHONPATH) that writes ``tmp_path/MARKER`` when imported."""
    site = tmp_path / "site"
    site.mkdir()
    name = f"marker_{abs(hash(str(tmp_path))) % 10**8}"
    flag = tmp_path / "MARKER"
    (site / f"{name}.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(flag)!r}).write_text("imported")
        def make(**kwargs):
            raise RuntimeError("called")
    """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.chdir(tmp_path)

    class Marker:
        module = name
        path = flag
        command = f"touch {flag}"

    yield Marker
    sys.modules.pop(name, None)


def _export(tmp_path, name="policy.onnx", **meta_changes):
    """A CartPole-shaped policy file whose metadata is then changed as an attacker would."""
    path = tmp_path / name
    if not (tmp_path / "clean.onnx").exists():
        artifact = make_artifact(Case("cartpole", "discrete", spaces.Discrete(2), obs_dim=4, uses_mask=False))
        OnnxExporter().export(artifact, tmp_path / "clean.onnx")
    model = onnx.load(str(tmp_path / "clean.onnx"))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["agentkit"])
    meta.update(env={"plugin": "gymnasium", "id": "CartPole-v1", "config": CARTPOLE_ENV}, plugins=[])
    for key, value in meta_changes.items():
        meta[key] = value
    onnx.helper.set_model_props(model, {"agentkit": json.dumps(meta)})
    onnx.save(model, str(path))
    return path


def _env(**config):
    return {"plugin": config.get("plugin", "gymnasium"), "id": config.get("id") or config.get("module"),
            "config": config}


def _main(capsys, *args) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("agentkit: error: ") and "Traceback" not in err, err
    assert "asks to import code" in err and "What is trusted" in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- the rule --------------------------------------------------------------------------------------------------


def test_allowing_a_module_allows_what_lies_inside_it():
    assert is_allowed("my_game.envs:make", ["my_game"])
    assert is_allowed("my_game.envs:make", ["my_game.envs"])
    assert is_allowed("my_game.envs:make", ["my_game.envs:make"])
    assert not is_allowed("my_game.envs:make", ["my_game.envs:other"])
    assert not is_allowed("my_gamex", ["my_game"])
    assert not is_allowed("os:system", ["my_game"])
    assert code_refs({"a": ["x", {"b": "pkg.mod:fn"}], "c": "10:30", "d": "mode:easy"}, "kwargs") == {
        "kwargs.a[1].b": "pkg.mod:fn", "kwargs.d": "mode:easy"}
    with pytest.raises(UserError, match=r"(?s)plugins: 'evil'.*-p evil.*env.module: 'os:system'"):
        check_imports("f.onnx", ["evil"], {"module": "os:system"})
    check_imports("f.onnx", ["evil"], {"module": "os:system"}, extra_plugins=["evil"], allow_imports=["os"])


def test_env_configs_list_the_code_they_import():
    assert GymnasiumEnvConfig(plugin="gymnasium", id="CartPole-v1").imports() == {}
    assert GymnasiumEnvConfig(plugin="gymnasium", id="agentkit/Moving-v0").imports() == {}
    assert GymnasiumEnvConfig(plugin="gymnasium", id="this:Foo-v0").imports() == {"id": "this"}
    assert GymnasiumEnvConfig(plugin="gymnasium", id="CartPole-v1", kwargs={"f": "pkg:fn"}).imports() == {
        "kwargs.f": "pkg:fn"}
    for known in ("mpe2.simple_spread_v3", "agentkit_envs.games.team_arena", "pettingzoo.classic.rps_v2"):
        assert PettingZooEnvConfig(plugin="pettingzoo", module=known).imports() == {}
    for other in ("os:system", "my_game.envs", "mpe2.simple_spread_v3:parallel_env", "mpe2x.env"):
        assert PettingZooEnvConfig(plugin="pettingzoo", module=other).imports() == {"module": other}


# -- .onnx files ----------------------------------------------------------------------------------------------


def test_a_plain_registered_env_still_evaluates(tmp_path, capsys):
    code, err = _main(capsys, "eval", _export(tmp_path), "--episodes", "1")
    assert code == 0, err


def test_onnx_env_module_os_system_is_refused(tmp_path, capsys, marker):
    env = _env(plugin="pettingzoo", module="os:system", kwargs={"command": marker.command})
    code, err = _main(capsys, "eval", _export(tmp_path, env=env), "--episodes", "1")
    _refused(code, err, "env.module: 'os:system'", "--allow-import os:system")
    assert not marker.path.exists()


def test_onnx_plugins_are_imported_only_when_named_with_p(tmp_path, capsys, marker):
    path = _export(tmp_path, plugins=[marker.module])
    code, err = _main(capsys, "eval", path, "--episodes", "1")
    _refused(code, err, f"plugins: '{marker.module}'", f"-p {marker.module}")
    assert not marker.path.exists()
    code, err = _main(capsys, "eval", path, "--episodes", "1", "-p", marker.module)
    assert code == 0, err
    assert marker.path.exists()


def test_onnx_gymnasium_id_with_a_module_prefix_is_refused_unless_allowed(tmp_path, capsys, marker):
    path = _export(tmp_path, env=_env(**{**CARTPOLE_ENV, "id": f"{marker.module}:CartPole-v1"}))
    code, err = _main(capsys, "eval", path, "--episodes", "1")
    _refused(code, err, f"env.id: '{marker.module}'", f"--allow-import {marker.module}")
    assert not marker.path.exists()
    # the user's own --env replaces the recorded id: nothing from the file is imported
    code, err = _main(capsys, "eval", path, "--episodes", "1", "--env", "CartPole-v1")
    assert code == 0 and not marker.path.exists(), err
    code, err = _main(capsys, "eval", path, "--episodes", "1", "--allow-import", marker.module)
    assert code == 0, err
    assert marker.path.exists()


def test_onnx_kwargs_naming_a_callable_are_refused(tmp_path, capsys, marker):
    env = _env(**{**CARTPOLE_ENV, "kwargs": {"factory": f"{marker.module}:make"}})
    code, err = _main(capsys, "eval", _export(tmp_path, env=env), "--episodes", "1")
    _refused(code, err, f"env.kwargs.factory: '{marker.module}:make'")
    assert not marker.path.exists()


def test_issue_exploit_in_a_subprocess(tmp_path, marker):
    """As the issue ran it: the real CLI on a trojaned file; exit 2, one message, the command not run."""
    env = _env(plugin="pettingzoo", module="os:system", kwargs={"command": marker.command})
    path = _export(tmp_path, env=env, plugins=[marker.module])
    proc = subprocess.run([*AGENTKIT, "eval", str(path), "--json"], capture_output=True, text=True,
                          env=cli_env(PYTHONPATH=str(tmp_path / "site")), cwd=tmp_path, timeout=300)
    _refused(proc.returncode, proc.stderr, "os:system", marker.module)
    assert not marker.path.exists()


def test_python_dash_m_does_not_import_from_the_working_directory(tmp_path):
    """`python -m agentkit.cli`, run inside a received folder, imports nothing lying in that folder: here a
    module that gymnasium imports, shadowed by a file beside the policy."""
    folder = tmp_path / "received"
    folder.mkdir()
    flag = tmp_path / "MARKER"
    (folder / "farama_notifications.py").write_text(f"import pathlib\npathlib.Path({str(flag)!r}).touch()\n")
    path = _export(folder)
    proc = subprocess.run([sys.executable, "-m", "agentkit.cli", "eval", path.name, "--episodes", "1", "--json"],
                          capture_output=True, text=True, env=cli_env(), cwd=folder, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not flag.exists()


# -- run dirs -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_run(trained_run):
    return trained_run(CARTPOLE_RUN)


def _tampered(cartpole_run, tmp_path, **changes):
    run_dir = tmp_path / "sent-run"
    shutil.copytree(cartpole_run, run_dir)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data.update(changes)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    return run_dir


def test_run_dir_plugins_are_refused_by_eval_export_resume_and_show(cartpole_run, tmp_path, capsys, marker):
    run_dir = _tampered(cartpole_run, tmp_path, plugins=[marker.module])
    for args in (["eval", run_dir, "--episodes", "1"], ["export", run_dir, "--out", tmp_path / "p.onnx"],
                 ["train", run_dir, "--resume"], ["config", "show", run_dir]):
        code, err = _main(capsys, *args)
        _refused(code, err, f"plugins: '{marker.module}'", f"-p {marker.module}", "config.yaml")
        assert not marker.path.exists(), args
    assert not (tmp_path / "p.onnx").exists()
    code, err = _main(capsys, "eval", run_dir, "--episodes", "1", "-p", marker.module)
    assert code == 0, err
    assert marker.path.exists()


def test_run_dir_env_code_is_refused(cartpole_run, tmp_path, capsys, marker):
    run_dir = _tampered(cartpole_run, tmp_path, env={"plugin": "pettingzoo", "module": "os:system",
                                                     "kwargs": {"command": marker.command}})
    for args in (["eval", run_dir], ["export", run_dir], ["train", run_dir, "--resume"]):
        code, err = _main(capsys, *args)
        _refused(code, err, "env.module: 'os:system'", "--allow-import os:system")
    assert not marker.path.exists()
    run_dir = _tampered(cartpole_run, tmp_path / "b", env={**CARTPOLE_RUN["env"], "id": f"{marker.module}:CartPole-v1"})
    code, err = _main(capsys, "eval", run_dir, "--episodes", "1")
    _refused(code, err, f"env.id: '{marker.module}'")
    assert not marker.path.exists()
    code, err = _main(capsys, "eval", run_dir, "--episodes", "1", "--allow-import", marker.module)
    assert marker.path.exists()  # allowed, so imported
    # The edit also makes the run's checkpoint (trained with env.id CartPole-v1) another run's, refused on its
    # fingerprint (docs/runs.md, "Checkpoints").
    assert code == 2 and "belongs to another run" in err and "env.id: 'CartPole-v1' in the checkpoint" in err


def test_a_users_own_config_may_name_code(tmp_path, capsys, marker):
    """`agentkit train CONFIG` runs the user's own file: its plugins load without -p (as before)."""
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({**CARTPOLE_RUN, "plugins": [marker.module]}))
    code, err = _main(capsys, "config", "show", config)
    assert code == 0, err
    assert marker.path.exists()


def test_eval_help_names_the_allow_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--allow-import MODULE" in out and "What is trusted" in " ".join(out.split())
