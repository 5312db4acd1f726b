"""Run configs: validation by each plugin's model, readable errors, typed --set overrides, the JSON Schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentkit.config import (
    AlgorithmConfig,
    EnvConfig,
    RunConfig,
    apply_overrides,
    json_schema,
    load_config,
    read_yaml,
)
from agentkit.errors import ConfigError
from agentkit.host import PluginHost, load_run_config

BASE = {
    "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 2},
    "algorithm": {"plugin": "ppo", "total_steps": 1000},
}


@pytest.fixture(scope="module")
def registry():
    return PluginHost(autoload=False).registry


def config_error(data, registry) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data, registry)
    return str(info.value)


def test_minimal_config_gets_every_default_and_round_trips(registry):
    config = load_config(BASE, registry)
    assert type(config.env).__name__ != "EnvConfig" and isinstance(config.env, EnvConfig)
    assert isinstance(config.algorithm, AlgorithmConfig) and config.algorithm.total_steps == 1000
    assert config.policy.head == "auto" and config.policy.hidden_sizes == [64, 64]
    assert config.run.tensorboard is True and config.seed == 0 and config.plugins == []
    dumped = yaml.safe_load(config.to_yaml())
    assert list(dumped) == list(RunConfig.model_fields)
    assert dumped["env"]["id"] == "CartPole-v1" and "kwargs" in dumped["env"]  # the plugin's own defaults
    assert load_config(dumped, registry) == config


def test_every_error_is_reported_at_once_with_path_value_and_expectation(registry):
    data = {
        "seed": "abc",
        "env": {"plugin": "gymnasium", "id": "CartPole-v1", "num_envs": 0},
        "algorithm": {"plugin": "ppo", "total_steps": -5, "clip_rnge": 0.1},
        "policy": {"hiden_sizes": [8]},
        "run": {"progress": "fancy"},
        "extra": 1,
    }
    message = config_error(data, registry)
    lines = message.splitlines()[1:]
    assert len(lines) == 7, message
    expected = [
        "extra: unknown section.",
        "env.num_envs: Input should be greater than or equal to 1 (got 0)",
        "algorithm.total_steps: Input should be greater than 0 (got -5)",
        "algorithm.clip_rnge: unknown key (got 0.1). Did you mean 'clip_range'?",
        "policy.hiden_sizes: unknown key (got [8]). Did you mean 'hidden_sizes'?",
        "seed: Input should be a valid integer",
        "run.progress: Input should be 'auto', 'bar', 'plain' or 'none' (got 'fancy')",
    ]
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_unknown_plugin_names_available_and_closest(registry):
    message = config_error({**BASE, "algorithm": {"plugin": "ppo2", "total_steps": 10}}, registry)
    assert "algorithm.plugin: unknown algorithm plugin 'ppo2'. Available: " in message
    assert "ppo" in message.split("Available: ")[1] and "Did you mean 'ppo'?" in message

    message = config_error({**BASE, "policy": {"head": "discrete_"}}, registry)
    assert "policy.head.plugin: unknown action head plugin 'discrete_'" in message and "'discrete'?" in message

    message = config_error({"algorithm": BASE["algorithm"]}, registry)
    assert "env: a mapping with `plugin: NAME` is required; available: " in message and "gymnasium" in message


def test_head_by_name_or_section_is_validated_by_the_head_model(registry):
    by_name = load_config({**BASE, "policy": {"head": "discrete"}}, registry)
    by_section = load_config({**BASE, "policy": {"head": {"plugin": "discrete"}}}, registry)
    assert by_name.policy.head == by_section.policy.head
    assert by_name.policy.head.plugin == "discrete" and type(by_name.policy.head) is not RunConfig
    message = config_error({**BASE, "policy": {"head": {"plugin": "discrete", "bogus": 1}}}, registry)
    assert "policy.head.bogus: unknown key" in message


def test_set_overrides_are_typed_by_the_model(registry):
    data = apply_overrides(
        BASE,
        [
            "seed=7",
            "algorithm.total_steps=1e4",  # YAML reads 1e4 as text; the int field takes it as 10000
            "env.id=2048",  # a str field keeps the text
            "run.dir=null",
            "run.tensorboard=false",
            "policy.hidden_sizes=[32, 16]",
            "policy.head.plugin=discrete",  # `auto` becomes a section when one of its keys is set
            "env.kwargs.sutton_barto_reward=true",
        ],
        registry,
    )
    assert data["seed"] == 7 and data["algorithm"]["total_steps"] == 10_000 and data["env"]["id"] == "2048"
    assert data["run"] == {"dir": None, "tensorboard": False}
    assert data["policy"] == {"hidden_sizes": [32, 16], "head": {"plugin": "discrete"}}
    assert data["env"]["kwargs"] == {"sutton_barto_reward": True}
    assert BASE["env"]["id"] == "CartPole-v1"  # the input is not modified
    config = load_config(data, registry)
    assert config.algorithm.total_steps == 10_000 and config.env.id == "2048"

    # What does not fit is reported by load_config with its path, not silently coerced.
    message = config_error(apply_overrides(BASE, ["algorithm.total_steps=many"], registry), registry)
    assert "algorithm.total_steps: Input should be a valid integer" in message and "'many'" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("algorithm.total_steps", "expected dotted.key=value"),
        ("=5", "expected dotted.key=value"),
        ("algorithm..total_steps=5", "expected dotted.key=value"),
        ("seed.value=5", "'seed' is not a section"),
    ],
)
def test_malformed_set_is_a_config_error(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides({**BASE, "seed": 1}, [override])


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        read_yaml(listing)


def test_config_plugins_list_is_loaded_before_validation(plugin_site, monkeypatch, tmp_path):
    plugin_site.activate(monkeypatch)
    plugin_site.module("cfg_arena_plugin", """
        import agentkit
        from agentkit.config import EnvConfig

        class ArenaConfig(EnvConfig):
            size: int = 5

        @agentkit.hookimpl
        def agentkit_register_envs(register):
            register("cfg-arena", lambda config: None, ArenaConfig, "Arena for the config test.")
    """)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "env": {"plugin": "cfg-arena", "size": 9}, "plugins": ["cfg_arena_plugin"]}))
    config, host = load_run_config(path, overrides=["env.size=11"], autoload=False)
    assert config.env.plugin == "cfg-arena" and config.env.size == 11 and config.plugins == ["cfg_arena_plugin"]
    assert host.registry.get("env", "cfg-arena").provider == "module cfg_arena_plugin"
    with pytest.raises(ConfigError, match="plugins: expected a list of module paths"):
        load_run_config({**BASE, "plugins": [3]}, autoload=False)


def test_json_schema_offers_each_registered_plugin(registry):
    schema = json_schema(registry)
    assert schema["title"] == "agentkit run config" and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"env", "algorithm"}
    defs = schema["$defs"]

    def plugin_names(node) -> set[str]:
        members = node.get("oneOf") or node.get("anyOf") or [node]
        names = set()
        for member in members:
            target = defs[member["$ref"].split("/")[-1]] if "$ref" in member else member
            if "properties" in target:
                names.add(target["properties"]["plugin"]["const"])
        return names

    assert plugin_names(schema["properties"]["env"]) == set(registry.names("env"))
    assert plugin_names(schema["properties"]["algorithm"]) == set(registry.names("algorithm"))
    policy = defs[schema["properties"]["policy"]["$ref"].split("/")[-1]]
    head_members = policy["properties"]["head"]["anyOf"]
    names = next(m for m in head_members if m.get("type") == "string")
    assert set(names["enum"]) == {"auto", *registry.names("action_head")}  # `head: NAME` shorthand
    algo_defs = [d for d in defs.values() if d.get("properties", {}).get("plugin", {}).get("const") == "ppo"]
    assert algo_defs and "total_steps" in algo_defs[0]["properties"] and algo_defs[0]["additionalProperties"] is False


def test_p_modules_are_recorded_in_the_config(plugin_site, monkeypatch):
    plugin_site.activate(monkeypatch)
    plugin_site.module("recorded_plugin", "def agentkit_train_end(run, metrics, reason):\n    pass\n")
    config, host = load_run_config({**BASE, "plugins": ["recorded_plugin"]}, plugins=["recorded_plugin"],
                                   autoload=False)
    assert config.plugins == ["recorded_plugin"] and "recorded_plugin" in host.plugins
    config, host = load_run_config(BASE, plugins=["recorded_plugin"], overrides=["seed=2"], autoload=False)
    assert config.plugins == ["recorded_plugin"] and config.seed == 2  # the saved run config can reload it


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_example_configs_validate(path):
    config, _ = load_run_config(path, autoload=False)
    assert config.algorithm.total_steps > 0
