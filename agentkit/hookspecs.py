"""Every hook an agentkit plugin can implement, grouped by phase.

A plugin is a module (or object) with functions decorated by ``agentkit.hookimpl`` whose names match the
specs below. An implementation may accept a subset of a spec's arguments (pluggy passes them by name).
A hookimpl whose name starts with ``agentkit_`` but matches no spec here is rejected when it is loaded.

Plugins are found in three places, all loaded the same way as the built-ins:
entry points in the group ``agentkit``, module paths in a run config's ``plugins:`` list, and ``-p MODULE``
on the command line. ``AGENTKIT_DISABLE_PLUGIN_AUTOLOAD=1`` turns the entry points off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from agentkit.registry import Register
    from agentkit.trainer import RunContext

PROJECT_NAME = "agentkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------------------------
# Registration: called once per plugin host, right after all plugins are loaded, before any config is
# validated. Each receives a ``register`` callback:
#
#     register(name, factory, config_model, description)
#
# ``name`` is what configs use (``plugin: NAME``); ``factory`` builds the component (its signature is given
# per kind below); ``config_model`` is a subclass of the kind's base config model in ``agentkit.config``
# and validates the config section; ``description`` is one line shown by ``agentkit plugins``.
# Names must be unique within a kind: a second registration of a name is rejected, naming both providers.
# --------------------------------------------------------------------------------------------------------


@hookspec
def agentkit_register_algorithms(register: Register) -> None:
    """Register training algorithms.

    factory(config: AlgorithmConfig-subclass, context: agentkit.algorithm.BuildContext) -> Algorithm
    (see ``agentkit.algorithm.Algorithm`` for the protocol an algorithm follows).
    Called once per host, not firstresult; the return value is ignored.
    """


@hookspec
def agentkit_register_action_heads(register: Register) -> None:
    """Register action heads.

    factory(config: HeadConfig-subclass, action_space: gymnasium.Space, latent_dim: int) -> ActionHead
    (see ``agentkit.heads.ActionHead``). A head may also offer itself for ``policy.head: auto`` by giving
    its config model a classmethod ``supports(action_space) -> bool``.
    Called once per host, not firstresult; the return value is ignored.
    """


@hookspec
def agentkit_register_encoders(register: Register) -> None:
    """Register observation encoders (``policy.encoder``): the part of a policy from the raw observation to
    the latent its head (or value output) reads.

    factory(config: EncoderConfig-subclass, spec: agentkit.encoders.EncoderSpec, policy: PolicyConfig)
    -> agentkit.encoders.Encoder (an ``nn.Module`` taking the observation in its own shape and dtype, plus
    optional extra features such as a one-hot agent id, and returning ``[B, out_dim]``; scaling and layout
    happen inside it, so they are traced into exports). An encoder may offer itself for
    ``policy.encoder: auto`` by giving its config model a classmethod ``supports(spec) -> bool``.
    Called once per host, not firstresult; the return value is ignored.
    """


@hookspec
def agentkit_register_envs(register: Register) -> None:
    """Register environment plugins.

    factory(config: EnvConfig-subclass[, run_dir: Path | None]) -> agentkit.environment.EnvSource
    (``MultiAgentEnvSource`` when ``multi_agent``; see ``agentkit.environment`` for the protocols: spaces and
    groups, read without making a vector env, and vector env construction). A factory that declares the
    optional ``run_dir`` parameter gets the saved run a source is rebuilt for (``agentkit eval RUN``,
    ``agentkit export RUN``) and None otherwise (training, playing an export): there it may read back what
    it kept at train start (the ``remote`` plugin: the game's hello, so a run exports without a game).
    Called once per host, not firstresult; the return value is ignored.
    """


@hookspec
def agentkit_register_exporters(register: Register) -> None:
    """Register exporters (e.g. ONNX).

    factory(config: ExporterConfig-subclass) -> agentkit.exporting.Exporter, an object with
    ``export(artifact: agentkit.algorithm.PolicyArtifact, out_path: Path, run_config: RunConfig) -> Path``
    (one call per policy group; ``agentkit export`` uses the exporter named ``onnx``).
    Called once per host, not firstresult; the return value is ignored.
    """


@hookspec
def agentkit_register_opponents(register: Register) -> None:
    """Register fixed opponents for turn-based games (``agentkit eval --opponent NAME[:ARG]`` and
    ``algorithm.self_play.eval_opponents``; the built-ins are ``random`` and ``minimax``).

    factory(config: OpponentConfig-subclass, seed: int | None) -> agentkit.opponents.Opponent, an object with
    ``name``, ``reset(seed)`` (before each game) and ``act(env, agent) -> action`` (the move of ``agent``, the
    agent to move in the PettingZoo AEC env ``env``). The config model's ``argument`` names the field a
    spec's ``:ARG`` sets.
    Called once per host, not firstresult; the return value is ignored.
    """


# --------------------------------------------------------------------------------------------------------
# Lifecycle: called by the trainer (``agentkit.trainer.train``, i.e. ``agentkit train``), in this order:
# train_start, then per iteration iteration_end (and checkpoint_saved whenever a checkpoint is written),
# then train_end. None of these is firstresult or historic: every implementation is called.
#
# ``run`` is the ``agentkit.trainer.RunContext``: ``run.config`` (the validated RunConfig, plugin models
# included), ``run.run_dir``, ``run.host``, ``run.env``, ``run.algorithm``, ``run.step`` (env steps done),
# ``run.total_steps``, ``run.iteration``, ``run.resumed``, ``run.metrics`` (the latest iteration's) and
# ``run.request_stop()``. Treat it as read-only apart from ``request_stop``.
# --------------------------------------------------------------------------------------------------------


@hookspec
def agentkit_train_start(run: RunContext) -> None:
    """Called once before the first iteration of a ``train`` call, also when resuming.

    :param run: the run; ``run.resumed`` is True and ``run.step`` > 0 when it continues a run dir.
    The return value is ignored.
    """


@hookspec
def agentkit_iteration_end(run: RunContext, iteration: int, step: int, metrics: dict[str, float]) -> Any:
    """Called after every training iteration (one ``Algorithm.iterate()``), before its metrics are logged.

    :param run: the run.
    :param iteration: iterations done so far, over all sessions of the run (1 after the first).
    :param step: env steps done so far (the unit of ``algorithm.total_steps``).
    :param metrics: this iteration's metrics, namespaced names (``charts/episode_return``, ``losses/policy``,
        ...) to floats. An implementation may add entries; they are logged like the built-in ones.
    :returns: ``True`` to request a clean stop: the trainer saves a checkpoint and ends the run with reason
        ``"stopped"``. ``None``/``False`` to go on. Results from all implementations are collected; any
        ``True`` stops.
    """


@hookspec
def agentkit_checkpoint_saved(run: RunContext, path: str, step: int) -> None:
    """Called after a checkpoint file has been written atomically (periodic, final, on stop or interrupt).

    :param run: the run.
    :param path: the checkpoint file written.
    :param step: env steps done at that checkpoint.
    The return value is ignored.
    """


@hookspec
def agentkit_train_end(run: RunContext, metrics: dict[str, float], reason: str) -> None:
    """Called once when a ``train`` call ends; a checkpoint has been saved in every case.

    :param run: the run.
    :param metrics: the last iteration's metrics.
    :param reason: ``"completed"`` (the budget is spent), ``"stopped"`` (a hook or ``run.request_stop()``
        asked) or ``"interrupted"`` (Ctrl-C / SIGTERM).
    The return value is ignored.
    """
