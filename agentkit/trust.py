"""What a file made elsewhere may make agentkit import (docs/runs.md, "What is trusted").

A user's own config file and command line may name any code to import. An ``.onnx`` file's metadata and a run
dir's ``config.yaml`` are foreign: someone else may have written them, so the code they name is imported only
when the command line names it too. A file asks for code in two places:

- ``plugins:``, plugin modules other than the built-in ones: allowed by ``-p MODULE`` (which loads it) or
  ``--allow-import MODULE``;
- the env section, whatever its plugin's ``EnvConfig.imports()`` lists (a gymnasium id ``pkg:Env-v0``, a
  pettingzoo ``module`` outside the known env packages, a ``module:callable`` string anywhere in it): allowed
  by ``--allow-import REF``.

``--allow-import X`` allows ``X`` itself and everything inside it: ``--allow-import my_game`` allows
``my_game.envs`` and ``my_game.envs:make``. Env plugins (built-in or installed), the ids gymnasium already has
registered and the SDK's own games are not imports the file asks for: they are code the user installed.

Everything here runs before the first import a file asks for: a refused file has run nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentkit.errors import UserError

if TYPE_CHECKING:
    from agentkit.config import EnvConfig
    from agentkit.host import PluginHost

#: ``package.module:attribute``, how Python tools (entry points, gymnasium ids, pettingzoo modules) name code.
CODE_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_][\w.\-/]*)$")

ALLOW_FLAG = "--allow-import"


class UntrustedImportError(UserError):
    """A file made elsewhere names code to import that the command line did not allow."""

    def __init__(self, message: str, refused: Sequence[tuple[str, str]]):
        super().__init__(message)
        #: (where in the file, the reference) of every refused import
        self.refused = list(refused)


def code_refs(value: Any, where: str) -> dict[str, str]:
    """Every string in ``value`` (nested dicts and lists) that reads as ``module:attribute``, by dotted key."""
    found: dict[str, str] = {}
    if isinstance(value, str):
        if CODE_REF.match(value.strip()):
            found[where] = value.strip()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.update(code_refs(item, f"{where}.{key}" if where else str(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found.update(code_refs(item, f"{where}[{i}]"))
    return found


def is_allowed(ref: str, allowed: Iterable[str]) -> bool:
    """Whether ``ref`` (``a.b``, ``a.b:c``) is ``allowed`` itself or lies inside an allowed module or package."""
    module = ref.partition(":")[0]
    for item in allowed:
        item = item.strip()
        if not item:
            continue
        if ref == item or module == item or module.startswith(item + "."):
            return True
    return False


def _describe(ref: str) -> str:
    module, _, attr = ref.partition(":")
    if not attr:
        return f"imports the module {module!r}"
    return f"imports {module!r} and calls or looks up {attr!r} in it"


def check_imports(
    source: str,
    plugins: Sequence[str],
    env_imports: Mapping[str, str],
    extra_plugins: Sequence[str] = (),
    allow_imports: Sequence[str] = (),
) -> None:
    """Raise UntrustedImportError listing every import ``source`` asks for that the command line did not allow.

    ``plugins``: the file's ``plugins:`` list; ``env_imports``: its env section's ``imports()`` (key -> ref);
    ``extra_plugins``: ``-p`` modules; ``allow_imports``: ``--allow-import`` references.
    """
    refused: list[tuple[str, str, str]] = []
    for module in plugins:
        if module.startswith("no:") or module in extra_plugins or is_allowed(module, allow_imports):
            continue
        refused.append(("plugins", module, f"-p {module}"))
    for key, ref in env_imports.items():
        if not is_allowed(ref, allow_imports):
            refused.append((f"env.{key}", ref, f"{ALLOW_FLAG} {ref}"))
    if not refused:
        return
    lines = [f"  {where}: {ref!r} ({'a plugin module' if where == 'plugins' else _describe(ref)}); allow it with "
             f"`{flag}`" for where, ref, flag in refused]
    raise UntrustedImportError(
        f"{source} asks to import code, which agentkit does not do for a file made elsewhere unless the command "
        "line allows it:\n" + "\n".join(lines) + "\nAllow only code you trust (docs/runs.md, \"What is trusted\").",
        [(where, ref) for where, ref, _ in refused],
    )


def foreign_plugins(data: Mapping[str, Any], source: str) -> list[str]:
    """The ``plugins:`` list of a foreign config or metadata, checked to be a list of strings."""
    listed = data.get("plugins") or []
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
        raise UserError(f"{source}: 'plugins' must be a list of module paths, got {listed!r}.")
    return listed


def env_imports(host: PluginHost, section: Any, rebuilt_from: Path | None = None) -> dict[str, str]:
    """What a foreign env section asks to import (its plugin's ``EnvConfig.imports()``, or with ``rebuilt_from``,
    a saved run whose env is rebuilt and not played, ``EnvConfig.rebuild_imports(rebuilt_from)``); the section's
    code references when it does not validate or names no registered plugin (validating it later reports that)."""
    if not isinstance(section, Mapping):
        return {}
    plugin = section.get("plugin")
    if not isinstance(plugin, str) or plugin not in host.registry.names("env"):
        return code_refs({k: v for k, v in section.items() if k != "plugin"}, "")
    try:
        config = host.registry.get("env", plugin).validate_config(dict(section))
    except Exception:  # pydantic's ValidationError: reported by the caller's own validation
        return code_refs({k: v for k, v in section.items() if k != "plugin"}, "")
    env = cast("EnvConfig", config)  # the env registry holds EnvConfig models
    return dict(env.imports() if rebuilt_from is None else env.rebuild_imports(rebuilt_from))


def foreign_host(
    data: Mapping[str, Any],
    source: str,
    extra_plugins: Sequence[str] = (),
    allow_imports: Sequence[str] = (),
    env_section: Any = None,
    skip_env_keys: Sequence[str] = (),
    rebuilt_from: Path | None = None,
) -> PluginHost:
    """The plugin host for a foreign config or export metadata ``data`` (described as ``source`` in errors):
    its ``plugins:`` and ``extra_plugins``, once every import it asks for is allowed (else
    UntrustedImportError, before anything it names is imported).

    ``env_section``: the env section to check (default ``data["env"]``); ``skip_env_keys``: its keys the user
    gave on the command line (``eval --env``), which are the user's own; ``rebuilt_from``: the saved run whose env
    is only rebuilt, never played (``export``): what rebuilding it imports is checked (``env_imports``).
    """
    from agentkit.host import BUILTIN_PLUGINS, PluginHost

    plugins = foreign_plugins(data, source)
    refused = [p for p in plugins if not p.startswith("no:") and p not in BUILTIN_PLUGINS and p not in extra_plugins
               and not is_allowed(p, allow_imports)]
    section = data.get("env") if env_section is None else env_section
    modules = [*plugins, *(p for p in extra_plugins if p not in plugins)]
    if refused:  # report the env's imports too, as far as the installed plugins alone can tell them
        host = PluginHost(modules=[*(p for p in plugins if p.startswith("no:")), *extra_plugins])
    else:
        host = PluginHost(modules=modules)
    wanted = {k: v for k, v in env_imports(host, section, rebuilt_from).items()
              if k.split(".")[0] not in skip_env_keys}
    check_imports(source, refused, wanted, extra_plugins, allow_imports)
    return host
