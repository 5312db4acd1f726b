"""A run's parts from its config, through the registry: the env source and the algorithm.

Training (``agentkit.trainer.train``) and loading a run back (``agentkit.rundir.load_run``) build them the
same way, so a loaded run has exactly the networks it was trained with.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agentkit.algorithm import Algorithm, BuildContext, resolve_device
from agentkit.config import RunConfig
from agentkit.envcheck import CheckedSource
from agentkit.environment import EnvSource
from agentkit.registry import Registry


def build_env(config: RunConfig, registry: Registry, run_dir: Path | None = None) -> CheckedSource:
    """The env source of ``config.env`` from its registered plugin, behind the env boundary's checks
    (``agentkit.envcheck.CheckedSource``: the source declares what ``EnvSource`` does; its vector envs return
    finite, well-shaped values within ``env.step_timeout``).

    ``run_dir``: the saved run the source is rebuilt for (``load_run``: eval, export), None otherwise. It
    reaches a factory that declares a ``run_dir`` parameter (``factory(config, run_dir=...)``), where the
    plugin reads back what it kept there at train start; a factory of ``config`` alone is called as such.
    """
    reg = registry.get("env", config.env.plugin, where="env.plugin")
    if takes_run_dir(reg.factory):
        return CheckedSource(reg.factory(config.env, run_dir=run_dir), config.env.step_timeout)
    return CheckedSource(reg.factory(config.env), config.env.step_timeout)


def takes_run_dir(factory: Callable[..., Any]) -> bool:
    """Whether an env factory declares the optional ``run_dir`` parameter (or takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "run_dir" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def build_algorithm(config: RunConfig, registry: Registry, env: EnvSource, run_dir: Path | None,
                    device: torch.device | None = None) -> Algorithm:
    """The algorithm of ``config.algorithm`` from its registered plugin, on ``device`` (default: the one
    ``run.device`` names; loading a run for eval or export uses the CPU, wherever it was trained).

    Building opens no env (the ``Algorithm`` contract): its networks come from the source's description.
    """
    reg = registry.get("algorithm", config.algorithm.plugin, where="algorithm.plugin")
    context = BuildContext(config=config, registry=registry, env=env, run_dir=run_dir,
                           device=resolve_device(config.run.device) if device is None else device)
    return reg.factory(config.algorithm, context)
