"""The plugin host: a pluggy PluginManager that loads built-ins, entry points and named modules the same way,
then collects every registration into a ``Registry``.

Built-ins are ordinary plugin modules listed in ``BUILTIN_PLUGINS`` and go through ``load_module``
exactly like ``-p MODULE`` or a config's ``plugins:`` entry. Entry points (group ``agentkit``) are loaded
by hand rather than with ``PluginManager.load_setuptools_entrypoints`` so that a failure names the entry
point and its distribution, and so that each plugin's registrations carry their provider.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pluggy

from agentkit import hookspecs
from agentkit.errors import PluginError
from agentkit.registry import KINDS, Registry

ENTRY_POINT_GROUP = "agentkit"
DISABLE_AUTOLOAD_ENV = "AGENTKIT_DISABLE_PLUGIN_AUTOLOAD"

#: Built-in plugin modules, loaded first and exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "agentkit_envs.gymnasium_env",
    "agentkit_plugins.ppo",
)

_REGISTRATION_HOOKS = {
    "algorithm": "agentkit_register_algorithms",
    "action_head": "agentkit_register_action_heads",
    "env": "agentkit_register_envs",
    "exporter": "agentkit_register_exporters",
}
assert set(_REGISTRATION_HOOKS) == set(KINDS)


class PluginHost:
    """Loads plugins and holds the registry and the hook caller.

    ``modules`` are extra plugin module paths (from ``-p`` and the config's ``plugins:``).
    ``autoload`` loads entry points; by default it is on unless AGENTKIT_DISABLE_PLUGIN_AUTOLOAD is set.
    """

    def __init__(self, modules: Iterable[str] = (), autoload: bool | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[str, str] = {}  # pluggy plugin name -> provider label
        for name in BUILTIN_PLUGINS:
            self.load_module(name, provider="built-in")
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for name in modules:
            if name not in self._providers:
                self.load_module(name, provider=f"module {name}")
        self.registry = Registry()
        self._collect_registrations()

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- loading ----------------------------------------------------------------------------------------

    def load_module(self, module_path: str, provider: str) -> None:
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            raise PluginError(
                f'error importing plugin module "{module_path}": {type(exc).__name__}: {exc}. '
                "Check that the module path is importable (installed, or on PYTHONPATH)."
            ) from exc
        self._register(module, module_path, provider)

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._providers or self.pm.is_blocked(ep.name):
                continue
            dist = ep.dist
            dist_label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point '{ep.name} = {ep.value}' of distribution '{dist_label}' failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall that distribution, or set "
                    f"{DISABLE_AUTOLOAD_ENV}=1 to skip entry-point plugins."
                ) from exc
            self._register(plugin, ep.name, dist_label)

    def _register(self, plugin: ModuleType | object, name: str, provider: str) -> None:
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()  # a hookimpl with a name that matches no hookspec (e.g. misspelled)
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginError(f"plugin '{name}' ({provider}) is invalid: {exc}") from exc
        self._providers[name] = provider

    # -- registrations ----------------------------------------------------------------------------------

    def _collect_registrations(self) -> None:
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            # Call each implementation alone so each registration knows which plugin made it.
            for impl in reversed(caller.get_hookimpls()):  # pluggy keeps them last-registered-first
                provider = self._providers.get(impl.plugin_name, impl.plugin_name)
                register = self.registry.registrar(kind, provider, hook_name)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"{hook_name} of plugin '{impl.plugin_name}' ({provider}) raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc

    def provider_of(self, plugin_name: str) -> str:
        return self._providers.get(plugin_name, plugin_name)
