"""Run configuration: pydantic models, YAML loading, ``--set`` overrides and readable errors.

A run config has the sections ``seed``, ``env``, ``algorithm``, ``policy``, ``run`` and ``plugins``.
The pluggable sections (``env``, ``algorithm``, ``policy.head``, ``policy.encoder``) name their plugin with ``plugin: NAME``
and are validated by the model that plugin registered, a subclass of the base models below.
Validation is two-stage on purpose: each plugin section is validated by its own model, so an error's
dotted path reads like the YAML (``algorithm.clip_range``) rather than naming pydantic's union members.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    create_model,
)

from agentkit.errors import ConfigError

if TYPE_CHECKING:
    from agentkit.registry import Registry


#: The largest ``seed`` (numpy's legacy seeding and many envs take 32-bit seeds).
MAX_SEED = 2**32 - 1
#: ``env.step_timeout``'s default, in seconds: generous for envs stepped in this process, and what a remote game
#: gets unless its plugin says otherwise.
DEFAULT_STEP_TIMEOUT = 60.0
#: How deeply a config may nest (a run config is a few levels deep; this stops runaway YAML early).
MAX_DEPTH = 64


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginConfig(StrictModel):
    """A config section that names the plugin validating it.

    ``renamed`` maps an option's former name to its name today. A config that spells an option the old way
    is refused (naming the new spelling); a run dir saved before the rename still loads, through
    ``upgrade_saved``, which a plugin overrides where a value's meaning changed with its name.
    """

    renamed: ClassVar[dict[str, str]] = {}

    plugin: str = Field(description="Name of the registered plugin that handles this section.")

    @classmethod
    def upgrade_saved(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A section saved with former option names, with today's (values kept as they are)."""
        return {cls.renamed.get(k, k): v for k, v in section.items()}


class AlgorithmConfig(PluginConfig):
    """Base of every algorithm plugin's config model."""

    total_steps: int = Field(
        gt=0,
        description=(
            "Total env steps to train for, summed over env copies; one multi-agent env step moves every agent once."
        ),
    )


class EnvConfig(PluginConfig):
    """Base of every env plugin's config model."""

    num_envs: int = Field(1, ge=1, description="Number of env copies collected in parallel.")
    step_timeout: float | None = Field(
        DEFAULT_STEP_TIMEOUT,
        gt=0,
        description="Seconds a reset or vector step may take before the run stops with an error naming the env "
        "(null: no limit).",
    )

    def imports(self) -> dict[str, str]:
        """The code building this env would import beyond installed plugins and registered envs, by config key:
        ``{"module": "my_game.envs"}``. agentkit builds the env of a file made elsewhere (an .onnx, a run
        dir) only when the command line allows each (``agentkit.trust``). A plugin whose config names code
        (an import path, a launch command) overrides this; the default lists every string value that reads
        as ``module:attribute``.
        """
        from agentkit.trust import code_refs

        return code_refs(self.model_dump(mode="json", exclude={"plugin"}), "")

    def rebuild_imports(self, run_dir: Path) -> dict[str, str]:
        """The part of ``imports()`` that rebuilding this env's source from the saved run ``run_dir`` needs when
        no env is played (``agentkit export``): all of it by default. A plugin that keeps what it needs in the
        run dir may need less (the ``remote`` plugin: with the game's hello kept in ``game.json`` no game starts,
        so its launch command is not run)."""
        return self.imports()


class HeadConfig(PluginConfig):
    """Base of every action-head plugin's config model.

    A head that wants to be chosen by ``policy.head: auto`` gives its model a classmethod
    ``supports(action_space) -> bool``.
    """


class ExporterConfig(PluginConfig):
    """Base of every exporter plugin's config model."""


class OpponentConfig(PluginConfig):
    """Base of every opponent plugin's config model (``agentkit eval --opponent NAME[:ARG]``,
    ``algorithm.self_play.eval_opponents``).

    ``argument`` names the field that a spec's ``:ARG`` sets (``minimax:4`` sets ``depth``); None: the
    opponent takes no argument.
    """

    argument: ClassVar[str | None] = None


class EncoderConfig(PluginConfig):
    """Base of every encoder plugin's config model (``policy.encoder``).

    An encoder that wants to be chosen by ``policy.encoder: auto`` gives its model a classmethod
    ``supports(spec: agentkit.encoders.EncoderSpec) -> bool``; the first registered one that says yes wins.
    """


class PolicyConfig(StrictModel):
    """The network: observation normaliser, trunk(s), value output and action head."""

    hidden_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [64, 64],
        description="Trunk layer widths, each at least 1 ([] : no hidden layer, a linear policy).",
    )
    activation: Literal["tanh", "relu", "elu"] = "tanh"
    shared_trunk: Literal["auto"] | bool = Field(
        "auto",
        description="Actor and critic share one encoder (and trunk). 'auto': shared for image observations (one "
        "CNN instead of two, as SB3's CnnPolicy), separate otherwise and wherever the critic reads a global state.",
    )
    normalize_obs: bool = Field(True, description="Running mean/std observation normalisation (exported).")
    obs_clip: float = Field(10.0, gt=0, description="Normalised observations are clipped to ±obs_clip.")
    head: Literal["auto"] | SerializeAsAny[HeadConfig] = Field(
        "auto", description="'auto' picks the head from the action space, or {plugin: NAME, ...options}."
    )
    encoder: Literal["auto"] | SerializeAsAny[EncoderConfig] = Field(
        "auto",
        description="'auto': a CNN for image observations (uint8 Box, HWC or CHW), the multi-input encoder for a "
        "Dict holding images, the MLP otherwise; or {plugin: NAME, ...options} (mlp, cnn, impala, multi).",
    )


class RunSettings(StrictModel):
    """Where and how the run records itself."""

    dir: str | None = Field(None, description="Run directory; default runs/<env>-<algorithm>-<seed>.")
    checkpoint_every_steps: int = Field(50_000, ge=0, description="Periodic checkpoint interval (0: off).")
    keep_checkpoints: int = Field(3, ge=1, description="Periodic checkpoints kept besides latest.")
    tensorboard: bool = True
    progress: Literal["auto", "bar", "plain", "none"] = Field(
        "auto", description="auto: a rich progress bar on a terminal, plain lines otherwise."
    )
    torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads (1 is fastest for the small networks of game agents)."
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="Where networks and rollouts live: cpu (fastest for the small networks of game agents), cuda "
        "(an error when torch finds no CUDA device), or auto (cuda when there is one, else cpu).",
    )


class RunConfig(StrictModel):
    """A whole, validated run config."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description=f"Seeds python, numpy, torch and the envs (0 to {2**32 - 1}).")
    env: SerializeAsAny[EnvConfig]
    algorithm: SerializeAsAny[AlgorithmConfig]
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    run: RunSettings = Field(default_factory=RunSettings)
    plugins: list[str] = Field(default_factory=list, description="Extra plugin modules to load.")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_REST = ("seed", "run", "plugins")
#: The sections of RunConfig that no plugin validates, validated together with the plugin sections.
_RestOfConfig = create_model(
    "_RestOfConfig",
    __base__=StrictModel,
    # field definitions built at run time: typed as create_model's loose ``Any``
    **cast(dict[str, Any], {name: (field.annotation, field) for name, field in RunConfig.model_fields.items()
                            if name in _REST}),
)


# -- loading -------------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error (``ConfigError``) for a missing file, something
    that is not a regular file (a directory, ``/dev/zero``), a binary or non-UTF-8 file, malformed YAML, a
    number too long to read, or nesting deeper than ``MAX_DEPTH``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is not a regular file: give a YAML config file (or a run dir).")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not a YAML config: byte {exc.start} is not UTF-8 text (a binary file?). Save the config as "
            "UTF-8 text."
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}.") from None
    if "\x00" in text:
        raise ConfigError(f"{path} is not a YAML config: it holds NUL bytes (a binary file?).")
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}.")
    return data


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, every failure a ``ConfigError`` naming ``where``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{where}: the YAML nests too deeply to read; a run config is a few levels deep (at most {MAX_DEPTH})."
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits, an impossible date
        raise ConfigError(f"{where}: a value cannot be read: {exc}. Write a number of sensible size.") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(
            f"{where}: the YAML nests more than {MAX_DEPTH} levels deep; a run config is a few levels deep."
        )
    return data


def _depth(data: Any) -> int:
    """How many levels of mappings and lists ``data`` nests, counted up to ``MAX_DEPTH + 1`` (iteratively: no
    recursion limit)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def apply_overrides(
    data: dict[str, Any], overrides: list[str], registry: Registry | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a raw config (a copy); later overrides win.

    A value is read as YAML (``5000``, ``0.5``, ``true``, ``null``, ``[64, 64]``) and then typed by the model
    of the field it lands in when ``registry`` is given: a string field keeps the text as written
    (``env.id=2048`` stays ``"2048"``), an int field takes ``1e5``. Whatever still does not fit is left for
    ``load_config`` to report with its dotted path.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set algorithm.total_steps=5000")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"--set {key}=...: the value cannot be read ({type(exc).__name__}: {exc}).") from None
        if _depth(value) > MAX_DEPTH:
            raise ConfigError(f"--set {key}=...: the value nests more than {MAX_DEPTH} levels deep.")
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                # e.g. `policy.head: auto` becomes a mapping when one of its keys is set
                if node.get(part) not in (None, "auto"):
                    where = ".".join(parts[: i + 1])
                    raise ConfigError(f"--set {item!r}: {where!r} is not a section (it is {node[part]!r}).")
                node[part] = {}
            node = node[part]
        if registry is not None:
            value = _typed_override(value, raw, _field_annotation(data, parts, registry))
        node[parts[-1]] = value
    return data


_NO_ANNOTATION = object()


def _field_annotation(data: dict[str, Any], parts: list[str], registry: Registry) -> Any:
    """The annotation of the field at dotted ``parts`` in the model that will validate it, if known."""
    from agentkit.errors import UserError

    def plugin_model(section: Any, kind: str) -> Any:
        if not isinstance(section, dict) or not isinstance(section.get("plugin"), str):
            return _NO_ANNOTATION
        try:
            return registry.get(kind, section["plugin"]).config_model
        except UserError:
            return _NO_ANNOTATION

    head, rest = parts[0], parts[1:]
    if head in ("env", "algorithm"):
        annotation = plugin_model(data.get(head), head)
    elif head == "policy" and rest[:1] == ["head"] and len(rest) > 1:
        annotation = plugin_model((data.get("policy") or {}).get("head"), "action_head")
        rest = rest[1:]
    elif head == "policy" and rest[:1] == ["encoder"] and len(rest) > 1:
        annotation = plugin_model((data.get("policy") or {}).get("encoder"), "encoder")
        rest = rest[1:]
    elif head in RunConfig.model_fields and head not in ("env", "algorithm"):
        annotation = RunConfig.model_fields[head].annotation
    else:
        return _NO_ANNOTATION
    for part in rest:
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return _NO_ANNOTATION
        field = annotation.model_fields.get(part)
        if field is None:
            return _NO_ANNOTATION
        annotation = field.annotation
    return annotation


def _typed_override(value: Any, raw: str, annotation: Any) -> Any:
    if annotation is _NO_ANNOTATION:
        return value
    from pydantic import TypeAdapter

    try:
        adapter = TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot adapt on its own (e.g. a forward reference)
        return value
    candidates = [value, raw.strip()]
    try:
        number = float(raw)
        if number.is_integer():
            candidates.append(int(number))
    except ValueError:
        pass
    for candidate in candidates:
        try:
            adapter.validate_python(candidate)
        except ValidationError:
            continue
        return candidate
    return value


def _close_key(model: Any, loc: tuple[Any, ...]) -> str:
    """' Did you mean ...?' for an unknown key at ``loc`` inside ``model``, or ''."""
    for part in loc[:-1]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return ""
        model = model.model_fields[part].annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def format_validation_error(exc: ValidationError, prefix: str, data: Any, model: Any = None) -> list[str]:
    """One line per error: dotted path, what was expected, and the bad value."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            hint = _close_key(model, tuple(err["loc"])) if model is not None else ""
            lines.append(
                f"{path}: unknown key (got {got!r}).{hint} `agentkit config schema` lists the valid keys."
            )
            continue
        got_text = "" if err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{path}: {err['msg']}{got_text}")
    return lines


def _validate_section(reg_model: type[BaseModel], section: Any, where: str, errors: list[str]) -> Any:
    try:
        return reg_model.model_validate(section)
    except ValidationError as exc:
        errors.extend(format_validation_error(exc, where, section, reg_model))
        return None


def _plugin_section(data: dict, key: str, where: str, kind: str, registry: Registry, errors: list[str],
                    saved_run: bool = False):
    section = data.get(key)
    available = ", ".join(registry.names(kind)) or "none registered"
    if not isinstance(section, dict):
        got = "" if section is None else f" (got {section!r})"
        errors.append(f"{where}: a mapping with `plugin: NAME` is required{got}; available: {available}")
        return None
    if "plugin" not in section:
        errors.append(f"{where}.plugin: missing; available: {available}")
        return None
    try:
        reg = registry.get(kind, section["plugin"], where=f"{where}.plugin")
    except ConfigError as exc:
        errors.append(str(exc))
        return None
    model = reg.config_model
    renamed = [k for k in section if k in getattr(model, "renamed", {})]
    if renamed and saved_run:
        section = model.upgrade_saved(section)
    elif renamed:
        errors.extend(
            f"{where}.{old}: renamed {where}.{model.renamed[old]} (docs/ppo.md, \"Renamed options\"); spell it the new "
            "way (run dirs saved with the old name still load)"
            for old in renamed
        )
        return None
    return _validate_section(model, section, where, errors)


def load_config(data: dict[str, Any], registry: Registry, saved_run: bool = False) -> RunConfig:
    """Validate a raw config dict against the registered plugins' models.

    Raises ConfigError listing every problem at once, each with its dotted path, the bad value and what
    was expected. ``saved_run``: ``data`` is a run dir's own config.yaml, which may spell options the way the
    agentkit that wrote it did (``PluginConfig.renamed``).
    """
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping of sections (seed, env, algorithm, policy, run, plugins)")
    errors: list[str] = []
    known = list(RunConfig.model_fields)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.append(f"{key}: unknown section.{hint} Sections: {', '.join(known)}.")
    env = _plugin_section(data, "env", "env", "env", registry, errors)
    algorithm = _plugin_section(data, "algorithm", "algorithm", "algorithm", registry, errors, saved_run)

    policy_raw = data.get("policy")
    if policy_raw is None:
        policy_raw = {}
    if not isinstance(policy_raw, dict):
        errors.append(f"policy: expected a mapping (got {policy_raw!r})")
        policy_raw = {}
    policy_raw = dict(policy_raw)
    chosen: dict[str, Any] = {}
    for key, kind in (("head", "action_head"), ("encoder", "encoder")):
        raw = policy_raw.pop(key, "auto")
        if raw != "auto":
            if isinstance(raw, str):
                raw = {"plugin": raw}
            raw = _plugin_section({key: raw}, key, f"policy.{key}", kind, registry, errors)
        chosen[key] = raw
    head, encoder = chosen["head"], chosen["encoder"]
    policy = _validate_section(PolicyConfig, policy_raw, "policy", errors)
    rest = _validate_section(_RestOfConfig, {k: v for k, v in data.items() if k in _REST}, "", errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    policy.head = head
    policy.encoder = encoder
    return RunConfig(env=env, algorithm=algorithm, policy=policy, **dict(rest))


def json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a run config, with each pluggable section a union over registered plugins."""
    from typing import Annotated, Union

    def union(kind: str):
        members = []
        for reg in registry.all():
            if reg.kind == kind:
                members.append(
                    create_model(
                        f"{reg.config_model.__name__}_{reg.name.replace('-', '_').replace('.', '_')}",
                        __base__=reg.config_model,
                        # a Literal of a run-time name: a valid model field, not a static type
                        plugin=cast(Any, (Literal[reg.name], Field(description=reg.description))),
                    )
                )
        if not members:
            return dict
        if len(members) == 1:
            return members[0]
        return Annotated[Union[tuple(members)], Field(discriminator="plugin")]  # noqa: UP007

    head_union = union("action_head")
    # `head: NAME` is shorthand for `head: {plugin: NAME}`, so the names are valid strings too.
    head_names = Literal[("auto", *registry.names("action_head"))]  # type: ignore[valid-type]
    encoder_union = union("encoder")
    encoder_names = Literal[("auto", *registry.names("encoder"))]  # type: ignore[valid-type]
    policy_model = create_model(
        "PolicyConfigSchema", __base__=PolicyConfig, head=(head_names | head_union, "auto"),
        encoder=(encoder_names | encoder_union, "auto"),
    )
    model = create_model(
        "RunConfigSchema",
        __base__=RunConfig,
        env=(union("env"), ...),
        algorithm=(union("algorithm"), ...),
        policy=(policy_model, Field(default_factory=policy_model)),
    )
    schema = model.model_json_schema()
    schema["title"] = "agentkit run config"
    return schema
