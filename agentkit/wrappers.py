"""Env wrappers named in the config (``env.wrappers``), for the gymnasium and pettingzoo env plugins.

    env:
      wrappers:
        - {wrapper: "minigrid.wrappers:ImgObsWrapper"}
        - {wrapper: "gymnasium.wrappers:FrameStackObservation", kwargs: {stack_size: 4}}

Each entry names a callable as ``module:attribute`` and is applied in
order as ``wrapper(env, **kwargs)`` around the env the plugin built, at training and at eval alike (the
config, and so an export's ``metadata.env.config``, records the list). A gymnasium wrapper receives the
``gymnasium.Env``; a pettingzoo one the ``ParallelEnv`` (e.g. supersuit's ``color_reduction_v0``).

Naming a wrapper imports its module: that is the user's own config asking for code. A config read from a
file made elsewhere (a run dir, an ``.onnx``'s metadata) is checked before anything is built
(``agentkit.trust``: ``EnvConfig.imports()`` lists each ``wrappers[i].wrapper``, and ``agentkit eval`` asks for
``--allow-import`` unless it lies in ``KNOWN_WRAPPER_PACKAGES``, gymnasium's own wrappers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import Field

from agentkit.config import StrictModel
from agentkit.errors import ConfigError

#: Wrappers a file made elsewhere may name without --allow-import: gymnasium's (a dependency; they only wrap) and
#: agentkit's own (``agentkit_envs.pixels``, ``agentkit_envs.frames``).
KNOWN_WRAPPER_PACKAGES = ("gymnasium.wrappers", "agentkit_envs.pixels", "agentkit_envs.frames")


class WrapperSpec(StrictModel):
    """One entry of ``env.wrappers``."""

    wrapper: str = Field(
        pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*$",
        description="The wrapper as 'module:attribute', e.g. gymnasium.wrappers:FrameStackObservation.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the wrapper.")


def known_wrapper_keys(imports: dict[str, str]) -> dict[str, str]:
    """``imports`` (an ``EnvConfig.imports()`` result) without the ``wrappers[i].wrapper`` entries that name
    gymnasium's own wrappers."""
    from agentkit.trust import is_allowed

    return {k: v for k, v in imports.items()
            if not (k.startswith("wrappers[") and is_allowed(v, KNOWN_WRAPPER_PACKAGES))}


WRAPPERS_HELP = (
    "Wrappers applied in order around each env copy (also at eval): [{wrapper: 'module:attribute', kwargs: {...}}]."
)


def import_wrapper(path: str, where: str) -> Callable[..., Any]:
    """The callable ``path`` names (``module:attribute``), or a ConfigError naming ``where``
    (``env.wrappers[0]``) and the fix."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}.wrapper: {path!r} is not 'module:attribute' (e.g. gymnasium.wrappers:FrameStackObservation).")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{where}.wrapper: cannot import {module_name!r} ({type(exc).__name__}: {exc}). Install the package "
            "that provides it, or fix the module path."
        ) from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"{where}.wrapper: {module_name!r} has no attribute {attr!r}.")
    if not callable(fn):
        raise ConfigError(f"{where}.wrapper: {path!r} is not callable.")
    return fn


def apply_wrappers(env: Any, specs: list[WrapperSpec], owner: str) -> Any:
    """``env`` wrapped by each of ``specs`` in order. A wrapper that rejects the env (or its kwargs) closes it
    and raises a ConfigError naming the entry; ``owner`` names the env in that message."""
    for i, spec in enumerate(specs):
        where = f"env.wrappers[{i}]"
        fn = import_wrapper(spec.wrapper, where)
        try:
            env = fn(env, **spec.kwargs)
        except Exception as exc:
            try:
                env.close()
            except Exception:  # noqa: S110 - the wrapper's failure is the message; a close failure adds nothing
                pass
            raise ConfigError(
                f"{where}: {spec.wrapper}(env, **{spec.kwargs}) failed on {owner} ({type(exc).__name__}: {exc}). "
                "Check the wrapper's kwargs and that it fits this env's observation (the wrappers before it in "
                "the list have been applied already)."
            ) from exc
    return env
