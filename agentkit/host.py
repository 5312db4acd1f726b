"""The plugin host: a pluggy PluginManager that loads built-ins, entry points and named modules the same way,
then collects every registration into a ``Registry``.

Load order (which is also the order registrations are collected in):

1. built-ins, the modules in ``BUILTIN_PLUGINS`` (provider ``built-in``);
2. entry points in the group ``agentkit`` unless ``AGENTKIT_DISABLE_PLUGIN_AUTOLOAD`` is set
   (provider ``<distribution> <version>``);
3. module paths given by the caller: the config's ``plugins:`` list, then ``-p MODULE`` on the CLI
   (provider ``module <path>``).

All three go through ``_register``, so a built-in is checked exactly like a third-party plugin. Entry points
are loaded by hand rather than with ``PluginManager.load_setuptools_entrypoints`` so that a failure names the
entry point and its distribution. ``no:NAME`` in the module list blocks a plugin (a built-in module path or an
entry-point name), as pytest's ``-p no:NAME`` does.

Like pytest, a plugin function whose name starts with ``agentkit_`` is a hook implementation even without the
``@agentkit.hookimpl`` decorator; one whose name matches no hookspec (a misspelling) is rejected on load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from agentkit import hookspecs
from agentkit.errors import PluginError
from agentkit.registry import KINDS, Registry

if TYPE_CHECKING:
    from agentkit.config import RunConfig

ENTRY_POINT_GROUP = "agentkit"
DISABLE_AUTOLOAD_ENV = "AGENTKIT_DISABLE_PLUGIN_AUTOLOAD"
HOOK_PREFIX = "agentkit_"
BUILTIN = "built-in"

#: Built-in plugin modules, loaded first and exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "agentkit_plugins.encoders",
    "agentkit_plugins.heads.discrete",
    "agentkit_plugins.heads.gaussian",
    "agentkit_plugins.heads.multi_discrete",
    "agentkit_plugins.heads.hybrid",
    "agentkit_envs.gymnasium_env",
    "agentkit_plugins.ppo",
    "agentkit_envs.pettingzoo_env",
    "agentkit_envs.remote",
    "agentkit_plugins.mappo",
    "agentkit_exports.onnx_exporter",
    "agentkit_plugins.maddpg",
    "agentkit_plugins.opponents",
)

_REGISTRATION_HOOKS = {
    "algorithm": "agentkit_register_algorithms",
    "action_head": "agentkit_register_action_heads",
    "encoder": "agentkit_register_encoders",
    "env": "agentkit_register_envs",
    "exporter": "agentkit_register_exporters",
    "opponent": "agentkit_register_opponents",
}
assert set(_REGISTRATION_HOOKS) == set(KINDS)

#: Every hook name the host knows (the functions in ``agentkit.hookspecs``).
HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, fn in vars(hookspecs).items() if name.startswith(HOOK_PREFIX) and inspect.isfunction(fn)
)


def autoload_disabled() -> bool:
    """True when ``AGENTKIT_DISABLE_PLUGIN_AUTOLOAD`` is set to anything but ``""``, ``0`` or ``false``."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


class _AgentkitPluginManager(pluggy.PluginManager):
    """Treats undecorated ``agentkit_*`` functions as hook implementations (pytest does the same)."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            try:
                attr = inspect.getattr_static(plugin, name)
            except AttributeError:
                return None
            if inspect.isfunction(attr) or isinstance(attr, staticmethod | classmethod):
                return {}  # pluggy fills in the default options
        return opts


class PluginHost:
    """Loads plugins and holds the registry and the hook caller.

    ``modules`` are extra plugin module paths (from ``-p`` and the config's ``plugins:``), loaded after the
    entry points; ``"no:NAME"`` blocks the built-in module or entry point called NAME instead.
    ``autoload`` loads entry points; by default it is on unless AGENTKIT_DISABLE_PLUGIN_AUTOLOAD is set.
    Raises ``PluginError`` naming the culprit for a plugin that fails to import, implements an unknown hook,
    or registers something invalid or a name that another plugin already registered.
    """

    def __init__(self, modules: Iterable[str] = (), autoload: bool | None = None):
        self.pm = _AgentkitPluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._providers: dict[str, str] = {}  # pluggy plugin name -> provider label, in load order
        modules = [m.strip() for m in modules]
        for module in modules:
            if module.startswith("no:"):
                self.pm.set_blocked(module[3:])
        for name in BUILTIN_PLUGINS:
            if not self.pm.is_blocked(name):
                self.load_module(name, provider=BUILTIN)
        self.autoload = (not autoload_disabled()) if autoload is None else autoload
        if self.autoload:
            self._load_entry_points()
        for name in modules:
            if not name.startswith("no:"):
                self.load_module(name, provider=f"module {name}")
        self.registry = Registry()
        self._collect_registrations()

    @property
    def hook(self) -> Any:
        """The hook caller: ``host.hook.agentkit_iteration_end(run=..., ...)``."""
        return self.pm.hook

    @property
    def plugins(self) -> dict[str, str]:
        """Loaded plugins, in load order: pluggy name (module path or entry-point name) -> provider."""
        return dict(self._providers)

    def provider_of(self, plugin_name: str) -> str:
        return self._providers.get(plugin_name, plugin_name)

    def lifecycle_hooks(self) -> dict[str, list[str]]:
        """Loaded plugins that implement lifecycle (non-registration) hooks: plugin name -> hook names."""
        registration = set(_REGISTRATION_HOOKS.values())
        found: dict[str, list[str]] = {}
        for hook_name in HOOK_NAMES:
            if hook_name in registration:
                continue
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                found.setdefault(impl.plugin_name, []).append(hook_name)
        order = list(self._providers)
        return {name: found[name] for name in sorted(found, key=lambda n: order.index(n) if n in order else len(order))}

    # -- loading ----------------------------------------------------------------------------------------

    def load_module(self, module_path: str, provider: str) -> None:
        """Import ``module_path`` and register it as a plugin (a no-op when that module is loaded already)."""
        if not module_path or self.pm.has_plugin(module_path) or self.pm.is_blocked(module_path):
            return
        try:
            module = importlib.import_module(module_path)
        except SystemExit as exc:
            raise PluginError(_exit_at_import(f'plugin module "{module_path}"', exc)) from None
        except Exception as exc:
            raise PluginError(
                f'error importing plugin module "{module_path}": {type(exc).__name__}: {exc}. '
                "Check that the module path is importable (installed, or on PYTHONPATH)."
            ) from exc
        if self.pm.is_registered(module):  # loaded already, e.g. through an entry point
            return
        self._register(module, module_path, provider)

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self._providers or self.pm.is_blocked(ep.name):
                continue
            dist = ep.dist
            dist_label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
            try:
                plugin = ep.load()
            except SystemExit as exc:
                raise PluginError(
                    _exit_at_import(f"entry point '{ep.name} = {ep.value}' of distribution '{dist_label}'", exc)
                    + f" Block it with `-p no:{ep.name}`, or set {DISABLE_AUTOLOAD_ENV}=1."
                ) from None
            except Exception as exc:
                raise PluginError(
                    f"entry point '{ep.name} = {ep.value}' (group '{ENTRY_POINT_GROUP}') of distribution "
                    f"'{dist_label}' failed to import: {type(exc).__name__}: {exc}. Fix or uninstall that "
                    f"distribution, block it with `-p no:{ep.name}`, or set {DISABLE_AUTOLOAD_ENV}=1 to skip "
                    "entry-point plugins."
                ) from exc
            if self.pm.is_registered(plugin):  # e.g. a built-in module also exposed as an entry point
                continue
            self._register(plugin, ep.name, dist_label)

    def _register(self, plugin: ModuleType | object, name: str, provider: str) -> None:
        self._check_hook_names(plugin, name, provider)
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise PluginError(f"plugin '{name}' ({provider}) is invalid: {detail}") from exc
        self._providers[name] = provider

    def _check_hook_names(self, plugin: object, name: str, provider: str) -> None:
        """Reject hook implementations whose name matches no hookspec, suggesting the closest one."""
        for attr in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attr)
            if opts is None or opts.get("optionalhook"):
                continue
            hook_name = opts.get("specname") or attr
            if hook_name in HOOK_NAMES:
                continue
            close = difflib.get_close_matches(hook_name, HOOK_NAMES, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise PluginError(
                f"plugin '{name}' ({provider}) implements the hook '{hook_name}', which does not exist.{hint} "
                f"Known hooks: {', '.join(HOOK_NAMES)}."
            )

    # -- registrations ----------------------------------------------------------------------------------

    def _collect_registrations(self) -> None:
        order = {name: i for i, name in enumerate(self._providers)}
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            # Each implementation is called alone, in load order, so each registration knows its provider and
            # the built-ins come first (they win `policy.head: auto` ties and are named first in duplicates).
            impls = [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
            impls.sort(key=lambda impl: order.get(impl.plugin_name, len(order)))
            for impl in impls:
                provider = self.provider_of(impl.plugin_name)
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


def _exit_at_import(what: str, exc: SystemExit) -> str:
    return (
        f"{what} called sys.exit({exc.code!r}) while being imported; a plugin must not end the program. "
        "Move that code under `if __name__ == \"__main__\":` in the plugin."
    )


def merged_plugins(data: dict[str, Any], plugins: Sequence[str] = ()) -> list[str]:
    """The config's ``plugins:`` list followed by ``plugins`` (e.g. from ``-p``) not already in it."""
    listed = data.get("plugins") or []
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
        from agentkit.errors import ConfigError

        raise ConfigError(f"plugins: expected a list of module paths, e.g. [my_game.agent_plugin] (got {listed!r})")
    return [*listed, *(m for m in plugins if m not in listed)]


def host_for_config(data: dict[str, Any], plugins: Sequence[str] = (), autoload: bool | None = None) -> PluginHost:
    """The host a raw config needs: its ``plugins:`` list plus ``plugins`` (e.g. from ``-p``)."""
    return PluginHost(modules=merged_plugins(data, plugins), autoload=autoload)


def load_run_config(
    source: str | Path | dict[str, Any],
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    autoload: bool | None = None,
    saved_run: bool = False,
) -> tuple[RunConfig, PluginHost]:
    """Read (a YAML file) or take (a dict) a raw config, apply ``--set`` overrides, load the plugins it and
    ``plugins`` name, and validate it. Returns the validated config and the host that validated it.

    ``plugins`` (``-p`` on the CLI) are added to the config's ``plugins:`` list, so a run dir's saved config
    names every plugin module the run needs; ``agentkit eval``/``export`` of the run dir load them when the
    command line names them again (``-p``: the run dir may come from someone else, see ``agentkit.trust``).
    ``saved_run``: the config is a run dir's own config.yaml (former option names still load; see
    ``agentkit.config.load_config``).
    Raises ``ConfigError``/``PluginError`` (both ``UserError``) with the culprit named.
    """
    from agentkit.config import apply_overrides, load_config, read_yaml

    data = read_yaml(source) if isinstance(source, str | Path) else dict(source)
    data = apply_overrides(data, list(overrides))
    modules = merged_plugins(data, plugins)
    if modules:
        data["plugins"] = modules
    host = PluginHost(modules=modules, autoload=autoload)
    data = apply_overrides(data, list(overrides), host.registry)  # again, now typed by the plugins' models
    if modules:
        data["plugins"] = modules
    return load_config(data, host.registry, saved_run), host
