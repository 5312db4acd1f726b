"""The registry: every algorithm, action head, encoder, env, exporter and opponent a plugin registered, in one place.

Registration goes through ``Registry.registrar(kind, provider)``, which hands the plugin a ``register``
callback. All checks on a registration (name syntax, callable factory, config model of the right base,
one-line description, no duplicate name) live in ``Registry.add`` and nowhere else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from agentkit.config import (
    AlgorithmConfig,
    EncoderConfig,
    EnvConfig,
    ExporterConfig,
    HeadConfig,
    OpponentConfig,
    PluginConfig,
)
from agentkit.errors import ConfigError, PluginError

#: The kinds of component, with the base class each kind's config model must extend.
KINDS: dict[str, type[PluginConfig]] = {
    "algorithm": AlgorithmConfig,
    "action_head": HeadConfig,
    "encoder": EncoderConfig,
    "env": EnvConfig,
    "exporter": ExporterConfig,
    "opponent": OpponentConfig,
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")


class Register(Protocol):
    """The callback a registration hook receives."""

    def __call__(
        self, name: str, factory: Callable[..., Any], config_model: type[PluginConfig], description: str
    ) -> None: ...


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config_model: type[PluginConfig]
    description: str
    provider: str  # "built-in", "<distribution> <version>", or "module <path>"

    def validate_config(self, section: dict[str, Any]) -> PluginConfig:
        """Validate a config section with this plugin's model (errors are pydantic's)."""
        return self.config_model.model_validate(section)

    def default_config(self) -> PluginConfig:
        return self.config_model.model_validate({"plugin": self.name})


class Registry:
    """Registered components by kind and name."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    # -- registering ------------------------------------------------------------------------------------

    def registrar(self, kind: str, provider: str, hook_name: str) -> Register:
        """Return the ``register`` callback handed to one plugin's registration hook."""

        def register(
            name: str, factory: Callable[..., Any], config_model: type[PluginConfig], description: str
        ) -> None:
            self.add(
                Registration(kind, name, factory, config_model, description, provider), hook_name=hook_name
            )

        return register

    def add(self, reg: Registration, hook_name: str = "") -> None:
        where = f"{hook_name} of {reg.provider}" if hook_name else reg.provider
        base = KINDS[reg.kind]
        if not isinstance(reg.name, str) or not _NAME_RE.match(reg.name):
            raise PluginError(
                f"{where} registered the {reg.kind} name {reg.name!r}: names must be lowercase, start with a "
                "letter and use only letters, digits, '_', '-' and '.'."
            )
        if not callable(reg.factory):
            raise PluginError(f"{where} registered {reg.kind} {reg.name!r} with a factory that is not callable.")
        if not (isinstance(reg.config_model, type) and issubclass(reg.config_model, base)):
            raise PluginError(
                f"{where} registered {reg.kind} {reg.name!r} with config model {reg.config_model!r}; "
                f"it must be a subclass of agentkit.config.{base.__name__}."
            )
        if not isinstance(reg.description, str) or not reg.description.strip() or "\n" in reg.description.strip():
            raise PluginError(
                f"{where} registered {reg.kind} {reg.name!r} without a one-line description."
            )
        existing = self._by_kind[reg.kind].get(reg.name)
        if existing is not None:
            raise PluginError(
                f"two plugins register the {reg.kind} {reg.name!r}: {existing.provider} and {reg.provider}. "
                "Rename one, or uninstall / stop loading the other."
            )
        self._by_kind[reg.kind][reg.name] = reg

    # -- looking up -------------------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return list(self._by_kind[kind])

    def all(self) -> Iterator[Registration]:
        for regs in self._by_kind.values():
            yield from regs.values()

    def get(self, kind: str, name: str, where: str = "") -> Registration:
        """The registration ``name`` of ``kind``, or a ConfigError listing what exists and the closest."""
        regs = self._by_kind[kind]
        if name in regs:
            return regs[name]
        available = ", ".join(sorted(regs)) or "(none registered)"
        close = difflib.get_close_matches(str(name), list(regs), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown {kind.replace('_', ' ')} plugin {name!r}. Available: {available}.{hint}"
        )

    def auto_head(self, action_space: Any) -> Registration:
        """The first registered head whose config model declares it ``supports`` this action space."""
        return self._first_supporting("action_head", action_space, "policy.head", f"the action space {action_space}")

    def auto_encoder(self, spec: Any) -> Registration:
        """The first registered encoder whose config model declares it ``supports`` this observation
        (``agentkit.encoders.EncoderSpec``); built-ins register first, the MLP last as the catch-all."""
        return self._first_supporting("encoder", spec, "policy.encoder", f"the observation {spec.space}")

    def _first_supporting(self, kind: str, subject: Any, key: str, described: str) -> Registration:
        for reg in self._by_kind[kind].values():
            supports = getattr(reg.config_model, "supports", None)
            if supports is not None and supports(subject):
                return reg
        what = "action head" if kind == "action_head" else kind
        raise ConfigError(
            f"{key}: auto found no {what} for {described}. Name one with "
            f"{key}.plugin (registered: {', '.join(self.names(kind)) or 'none'})."
        )
