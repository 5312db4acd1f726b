"""The plugin host and registry: loading, provenance, and every error path, driven through the real CLI.

Fake plugin distributions are ``*.dist-info`` folders on PYTHONPATH (the ``plugin_site`` fixture), so nothing
is installed into the venv.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import Field

import agentkit
from agentkit.config import EnvConfig, HeadConfig
from agentkit.errors import PluginError
from agentkit.host import BUILTIN_PLUGINS, HOOK_NAMES, PluginHost
from agentkit.registry import Registration, Registry

ARENA_PLUGIN = """
    import agentkit
    from agentkit.config import EnvConfig

    class ArenaConfig(EnvConfig):
        size: int = 5

    def make(config):
        raise RuntimeError("not needed by these tests")

    @agentkit.hookimpl
    def agentkit_register_envs(register):
        register("arena", make, ArenaConfig, "A test arena from {who}.")
"""


def assert_user_error(proc, *fragments: str) -> str:
    """Exit code 2, no traceback, and every fragment in stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    return proc.stderr


def plugins_json(proc) -> dict[tuple[str, str], dict]:
    assert proc.returncode == 0, proc.stderr
    return {(row["kind"], row["name"]): row for row in json.loads(proc.stdout)}


# -- CLI: each error path in a real subprocess ------------------------------------------------------------


def test_entry_point_that_fails_to_import_names_entry_point_distribution_and_cause(run_cli, plugin_site):
    plugin_site.module("broken_game_plugin", "import no_such_module_xyz\n")
    plugin_site.dist("broken-game", "1.2.3", {"broken": "broken_game_plugin"})
    proc = run_cli("plugins", env=plugin_site.env)
    assert_user_error(
        proc, "entry point 'broken = broken_game_plugin'", "broken-game 1.2.3", "No module named 'no_such_module_xyz'"
    )
    # The way out the message offers works: block that entry point, or turn entry points off.


def test_blocking_a_broken_entry_point(plugin_site, monkeypatch):
    """The way out the import-failure message offers (AGENTKIT_DISABLE_PLUGIN_AUTOLOAD is checked through
    the CLI in the next test)."""
    plugin_site.activate(monkeypatch)
    plugin_site.module("broken_game_plugin2", "raise ImportError('this plugin is broken')\n")
    plugin_site.dist("broken-game2", "1.0", {"broken2": "broken_game_plugin2"})
    with pytest.raises(PluginError, match="entry point 'broken2 = broken_game_plugin2'.*broken-game2 1.0.*broken"):
        PluginHost()
    host = PluginHost(modules=["no:broken2"])
    assert "broken2" not in host.plugins and "gymnasium" in host.registry.names("env")


def test_check_algorithm_finds_installed_algorithms_as_check_env_plugin_finds_envs(plugin_site, monkeypatch):
    """The testing helpers build the host the CLI builds: an installed package's algorithm is checked by name,
    with no host to assemble by hand (and a config's ``plugins:`` modules load too)."""
    from agentkit.testing import check_algorithm

    monkeypatch.delenv("AGENTKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    plugin_site.activate(monkeypatch)
    plugin_site.module("ppo_alias_plugin", """
        import agentkit
        from agentkit_plugins.ppo import PPOConfig, make_ppo

        @agentkit.hookimpl
        def agentkit_register_algorithms(register):
            register("ppo_alias", make_ppo, PPOConfig, "PPO under another name, from an entry point.")
    """)
    plugin_site.dist("ppo-alias", "0.1", {"ppo_alias": "ppo_alias_plugin"})
    config = {"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
              "algorithm": {"plugin": "ppo_alias", "total_steps": 256, "num_steps": 32, "update_epochs": 1},
              "policy": {"hidden_sizes": [8]}}
    check_algorithm(config)
    monkeypatch.setenv("AGENTKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    check_algorithm({**config, "plugins": ["ppo_alias_plugin"]})  # the config's own plugin list


def test_entry_point_plugin_is_listed_with_its_distribution_and_autoload_switch(run_cli, plugin_site):
    plugin_site.module("arena_plugin", ARENA_PLUGIN.format(who="arena-dist"))
    plugin_site.dist("arena-dist", "0.4", {"arena": "arena_plugin"})
    rows = plugins_json(run_cli("plugins", "--json", env=plugin_site.env))
    assert rows[("env", "arena")] == {
        "kind": "env", "name": "arena", "description": "A test arena from arena-dist.", "provider": "arena-dist 0.4"
    }
    assert rows[("env", "gymnasium")]["provider"] == "built-in"
    assert {"algorithm", "action_head", "encoder", "env", "exporter", "opponent"} <= {kind for kind, _ in rows} <= {
        "algorithm", "action_head", "encoder", "env", "exporter", "opponent", "hooks"}

    # With autoload off the entry point is not loaded (else the provider would still be the distribution),
    # and -p loads the same module by its path.
    by_module = plugins_json(
        run_cli("plugins", "--json", "-p", "arena_plugin",
                env={**plugin_site.env, "AGENTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    )
    assert by_module[("env", "arena")]["provider"] == "module arena_plugin"


def test_two_plugins_registering_one_name_are_both_named(run_cli, plugin_site):
    plugin_site.module("arena_a", ARENA_PLUGIN.format(who="a"))
    plugin_site.module("arena_b", ARENA_PLUGIN.format(who="b"))
    plugin_site.dist("arena-a", "1.0", {"arena_a": "arena_a"})
    plugin_site.dist("arena-b", "2.0", {"arena_b": "arena_b"})
    err = assert_user_error(run_cli("plugins", env=plugin_site.env), "two plugins register the env 'arena'")
    assert "arena-a 1.0" in err and "arena-b 2.0" in err



def test_clash_with_a_builtin_names_the_builtin(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("fake_ppo", """
        import agentkit
        from agentkit.config import AlgorithmConfig

        class Cfg(AlgorithmConfig):
            pass

        @agentkit.hookimpl
        def agentkit_register_algorithms(register):
            register("ppo", lambda config, context: None, Cfg, "Another PPO.")
    """)
    with pytest.raises(PluginError, match="two plugins register the algorithm 'ppo': built-in and module fake_ppo"):
        PluginHost(modules=["fake_ppo"], autoload=False)


def test_misspelled_hook_is_rejected_naming_plugin_and_hook(run_cli, plugin_site):
    plugin_site.module("typo_plugin", """
        import agentkit

        @agentkit.hookimpl
        def agentkit_iteraton_end(run, iteration, step, metrics):
            return True
    """)
    proc = run_cli("plugins", "-p", "typo_plugin", env=plugin_site.env)
    assert_user_error(
        proc, "plugin 'typo_plugin' (module typo_plugin)", "'agentkit_iteraton_end', which does not exist",
        "Did you mean 'agentkit_iteration_end'?",
    )


def test_p_module_that_does_not_import_is_a_user_error(run_cli):
    proc = run_cli("plugins", "-p", "my_game.no_such_plugin")
    assert_user_error(proc, 'error importing plugin module "my_game.no_such_plugin"', "ModuleNotFoundError")


def test_bad_registration_names_the_hook_and_plugin(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("badreg_plugin", """
        import agentkit
        from pydantic import BaseModel

        class NotAnEnvConfig(BaseModel):
            plugin: str

        @agentkit.hookimpl
        def agentkit_register_envs(register):
            register("badreg", lambda config: None, NotAnEnvConfig, "Registers a config of the wrong base.")
    """)
    with pytest.raises(PluginError, match=r"agentkit_register_envs of module badreg_plugin registered env 'badreg' "
                                          r"with config model .* must be a subclass of agentkit.config.EnvConfig"):
        PluginHost(modules=["badreg_plugin"], autoload=False)


def test_undecorated_misspelled_hook_is_rejected_too(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("typo_undecorated", """
        def agentkit_register_env(register):  # missing the final s
            pass
    """)
    with pytest.raises(PluginError, match="Did you mean 'agentkit_register_envs'"):
        PluginHost(modules=["typo_undecorated"], autoload=False)


def test_hookimpl_with_an_argument_the_spec_lacks_is_rejected(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("badargs_plugin", """
        import agentkit

        @agentkit.hookimpl
        def agentkit_train_start(run, trainer):
            pass
    """)
    with pytest.raises(PluginError, match=r"plugin 'badargs_plugin' \(module badargs_plugin\) is invalid.*trainer"):
        PluginHost(modules=["badargs_plugin"], autoload=False)


def test_registration_hook_that_raises_is_named(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("raising_plugin", """
        def agentkit_register_exporters(register):
            raise KeyError("oops")
    """)
    with pytest.raises(PluginError, match="agentkit_register_exporters of plugin 'raising_plugin' .* raised KeyError"):
        PluginHost(modules=["raising_plugin"], autoload=False)


# -- in-process: the registry's checks and the host's load order --------------------------------------------


class _TinyEnvConfig(EnvConfig):
    size: int = Field(3, ge=1)


def _factory(config):
    return config


@pytest.mark.parametrize(
    ("name", "factory", "model", "description", "expected"),
    [
        ("Bad Name", _factory, _TinyEnvConfig, "ok", "names must be lowercase"),
        ("tiny", "not callable", _TinyEnvConfig, "ok", "factory that is not callable"),
        ("tiny", _factory, HeadConfig, "ok", "must be a subclass of agentkit.config.EnvConfig"),
        ("tiny", _factory, _TinyEnvConfig, "two\nlines", "one-line description"),
        ("tiny", _factory, _TinyEnvConfig, "  ", "one-line description"),
    ],
)
def test_registry_rejects_bad_registrations(name, factory, model, description, expected):
    register = Registry().registrar("env", "module tests", "agentkit_register_envs")
    with pytest.raises(PluginError, match=expected):
        register(name, factory, model, description)


def test_registry_unknown_name_lists_available_and_closest():
    registry = Registry()
    for name in ("gymnasium", "pettingzoo"):
        registry.add(Registration("env", name, _factory, _TinyEnvConfig, "x", "built-in"))
    with pytest.raises(Exception, match=r"unknown env plugin 'gymnasuim'. Available: gymnasium, pettingzoo. "
                                        r"Did you mean 'gymnasium'\?"):
        registry.get("env", "gymnasuim", where="env.plugin")


def test_builtins_come_first_and_load_like_any_plugin(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("order_plugin_mod", ARENA_PLUGIN.format(who="order"))
    host = PluginHost(modules=["order_plugin_mod", "order_plugin_mod"], autoload=False)  # a repeat is a no-op
    names = list(host.plugins)
    assert names[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)
    assert names[-1] == "order_plugin_mod" and names.count("order_plugin_mod") == 1
    envs = host.registry.names("env")
    assert envs[-1] == "arena" and host.registry.get("env", "arena").provider == "module order_plugin_mod"
    # built-ins in registration order first: the user plugin is last in every kind it registers in
    assert all(host.registry.get(k, n).provider == "built-in" for k in ("env",) for n in envs[:-1])


def test_blocking_a_builtin_with_no_prefix(plugin_site, monkeypatch):
    target = next(m for m in BUILTIN_PLUGINS if m.endswith("gymnasium_env"))
    host = PluginHost(modules=[f"no:{target}"], autoload=False)
    assert target not in host.plugins
    assert "gymnasium" not in host.registry.names("env")


def test_hook_names_cover_every_spec():
    assert set(HOOK_NAMES) == {
        "agentkit_register_algorithms", "agentkit_register_action_heads", "agentkit_register_encoders",
        "agentkit_register_envs",
        "agentkit_register_exporters", "agentkit_register_opponents", "agentkit_train_start", "agentkit_iteration_end",
        "agentkit_checkpoint_saved", "agentkit_train_end",
    }


def test_lifecycle_hooks_are_called_with_a_subset_of_arguments(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("stop_plugin_mod", """
        def agentkit_iteration_end(metrics):  # undecorated and with a subset of the spec's arguments
            metrics["custom/seen"] = 1.0
            return metrics.get("charts/episode_return", 0) > 10
    """)
    host = PluginHost(modules=["stop_plugin_mod"], autoload=False)
    assert host.lifecycle_hooks()["stop_plugin_mod"] == ["agentkit_iteration_end"]
    metrics = {"charts/episode_return": 12.0}
    results = host.hook.agentkit_iteration_end(run=None, iteration=1, step=100, metrics=metrics)
    assert True in results and metrics["custom/seen"] == 1.0
    assert agentkit.hookimpl is not None


# -- docs/plugins.md: its code runs and its hook reference is complete --------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def doc_files() -> dict[str, str]:
    """The ``<!-- file: PATH -->`` code blocks of docs/plugins.md."""
    found = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return dict(found)


def test_plugin_guide_lists_every_hook():
    text = DOC.read_text()
    missing = [name for name in HOOK_NAMES if f"`{name}`" not in text]
    assert not missing, f"docs/plugins.md does not document {missing}"


def test_plugin_guide_code_runs(tmp_path, monkeypatch):
    import gymnasium

    from agentkit.testing import check_action_head, check_algorithm

    files = doc_files()
    assert set(files) == {"my_game/__init__.py", "my_game/agent_plugin.py", "my_game/temperature_head.py",
                          "my_game/random_baseline.py"}
    pkg = "doc_game"  # a unique package name, so this test does not clash with a real `my_game`
    for path, source in files.items():
        target = tmp_path / path.replace("my_game", pkg)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.replace("my_game", pkg))
    monkeypatch.syspath_prepend(str(tmp_path))
    host = PluginHost(
        modules=[f"{pkg}.agent_plugin", f"{pkg}.temperature_head", f"{pkg}.random_baseline"], autoload=False
    )

    from types import SimpleNamespace

    def run_of(env_id):
        return SimpleNamespace(config=SimpleNamespace(env=SimpleNamespace(plugin="gymnasium", id=env_id)))

    metrics = {"charts/episode_return": 480.0}
    assert True in host.hook.agentkit_iteration_end(run=run_of("CartPole-v1"), iteration=1, step=10, metrics=metrics)
    assert metrics[f"{pkg}/gap_to_target"] == -5.0
    # The hook limits itself to the runs it is meant for: another game's run is neither stopped nor logged to.
    other = {"charts/episode_return": 480.0}
    assert True not in host.hook.agentkit_iteration_end(run=run_of("Acrobot-v1"), iteration=1, step=10, metrics=other)
    assert other == {"charts/episode_return": 480.0}
    module_run = SimpleNamespace(config=SimpleNamespace(env=SimpleNamespace(plugin="pettingzoo", module="m")))
    assert True not in host.hook.agentkit_iteration_end(run=module_run, iteration=1, step=10, metrics=dict(other))

    head_reg = host.registry.get("action_head", "temperature_discrete")
    assert head_reg.provider == f"module {pkg}.temperature_head"
    check_action_head(head_reg, gymnasium.spaces.Discrete(4), onnx=False)

    check_algorithm(
        {"env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
         "algorithm": {"plugin": "random", "total_steps": 512, "steps_per_iteration": 64}},
        host=host,
    )
