"""Playing a policy: ``agentkit eval``.

The episode loop, ``play_episodes``, is shared by every way of acting (the trained torch actors of a run
dir here; an exported ONNX file in ``evaluate_onnx``), so the same seed gives exactly the same episodes for
a run dir and its deterministic export. It plays on one env copy and resets episode ``i`` with seed
``seed + i``.

It acts through an ``Act``: ``act(obs, mask) -> env action``, called with a batch of raw observations
``obs`` ``[B, *obs_shape]`` (the env's dtype: uint8 images, float32 otherwise) and the matching mask ``[B, mask_dim]`` (bool, True = allowed) or None,
returning what the vector env's ``step`` takes for those B rows (what ``head.to_env`` returns). Single-agent
envs call it with B = 1. Multi-agent envs (see docs/multi-agent.md) take one ``Act`` per policy group, a
mapping ``{group: act}``, each called with the group's agents flattened env-major (B = A_g); an act that
serves a group whose policy reads a one-hot agent id gives it (the torch actor appends it itself, the runtime
builds the export's ``agent_id`` input).

Returns are undiscounted sums of rewards. ``infos`` is the mean over episodes of each numeric figure the env
reported in its infos (single-agent: at the episode's last step, e.g. Dungeon's ``success``; multi-agent:
``win`` in Team Arena, the win rate). Multi-agent: ``returns`` are the mean per-agent episode returns (the
VecEnv's ``episode_returns``), and ``groups[g]`` holds each group's mean and std.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from agentkit.algorithm import PolicyArtifact
from agentkit.environment import EnvSource, MultiAgentEnvSource, mean_episode_infos
from agentkit.errors import InvalidInputError, UserError
from agentkit.files import write_atomic

Act = Callable[[np.ndarray, "np.ndarray | None"], Any]

GIF_FPS = 30


@dataclass
class EvalResult:
    """The outcome of an evaluation: per-episode returns and lengths and their summary."""

    mean_return: float
    std_return: float
    episodes: int
    returns: list[float]
    lengths: list[int]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    infos: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data: a figure that is not finite (NaN, an infinity) is None (``null``),
        so ``json.dumps(..., allow_nan=False)`` always writes valid JSON."""
        return json_ready(asdict(self))


def json_ready(value: Any) -> Any:
    """``value`` (nested dicts, lists, numbers) with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def _summary(returns: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(returns, dtype=np.float64)
    return float(values.mean()), float(values.std())


def _frame(venv: Any) -> np.ndarray:
    frame = venv.render()
    if frame is None:
        raise UserError(
            "--gif: the env returned no frame from render(); it needs to support render_mode='rgb_array'."
        )
    frame = np.asarray(frame)
    if frame.ndim == 4:  # a batch of frames, one per env copy
        frame = frame[0]
    return frame


def check_gif_path(path: Path | str) -> Path:
    """``path`` if a GIF can be written there (a ``.gif`` name, not a directory), else UserError; called before
    any episode is played."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise UserError(f"--gif {str(path)!r}: give a file name ending in .gif (an animated GIF is written).")
    if path.is_dir():
        raise UserError(f"--gif {str(path)!r} is a directory: give a file name ending in .gif.")
    return path


def offscreen_sdl() -> None:
    """Point SDL at its dummy video and audio drivers, unless the user chose drivers (a non-empty value).

    Envs drawn with pygame (gymnasium's classic control, Box2D) call ``pygame.init()`` even for
    ``rgb_array`` frames, which only need an off-screen surface; SDL then opens the real display and audio
    drivers, and on a machine without a session prints ``XDG_RUNTIME_DIR is invalid or not set``. A GIF
    needs neither a window nor sound.
    """
    for name in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        if not os.environ.get(name):
            os.environ[name] = "dummy"


def write_gif(frames: Sequence[np.ndarray], path: Path, fps: int = GIF_FPS) -> Path:
    """Write RGB frames ``[H, W, 3]`` (uint8) as a looping GIF, atomically: a failed write (a full disk, a
    folder it may not write) raises UserError and leaves no file behind.

    All frames share one 256-colour palette computed from a sample of them: several times faster than
    Pillow's per-frame quantisation, and smaller files.
    """

    from PIL import Image

    if not frames:
        raise UserError("--gif: no frames were recorded.")
    arrays = [_rgb(f) for f in frames]
    sample = arrays[:: max(1, len(arrays) // 8)][:8]
    palette = Image.fromarray(np.concatenate([a for a in sample if a.shape == arrays[0].shape])).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT
    )
    images = [Image.fromarray(a).quantize(palette=palette, dither=Image.Dither.NONE) for a in arrays]
    path = check_gif_path(path)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"--gif: cannot write {str(path)!r}: {exc.strerror or exc}.") from exc
    return path


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A frame as uint8 ``[H, W, 3]`` (grayscale repeated, alpha dropped)."""
    frame = np.asarray(frame, dtype=np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return np.ascontiguousarray(frame[..., :3])


def _render_fps(venv: Any) -> int:
    """The env's ``metadata['render_fps']`` where the vector env exposes it, else ``GIF_FPS``."""
    for holder in (venv, getattr(venv, "envs", None)):
        metadata = getattr(holder, "metadata", None)
        if isinstance(metadata, dict) and metadata.get("render_fps"):
            return int(metadata["render_fps"])
    return GIF_FPS


def play_episodes(
    env: EnvSource,
    act: Act | Mapping[str, Act],
    episodes: int = 10,
    seed: int = 0,
    gif: Path | str | None = None,
) -> EvalResult:
    """Play ``episodes`` episodes of ``env`` with ``act`` on one env copy; episode ``i`` starts from a
    reset with seed ``seed + i``. With ``gif``, the first episode is rendered into that GIF file.
    """
    if episodes < 1:
        raise InvalidInputError(f"episodes must be at least 1 (got {episodes}).")
    if gif is not None:
        check_gif_path(gif)
        offscreen_sdl()
    venv = env.make_vec(1, seed, render_mode="rgb_array" if gif else None)
    try:
        if env.multi_agent:
            return _play_multi(venv, _group_acts(env, act), episodes, seed, gif)
        if isinstance(act, Mapping):
            if len(act) != 1:
                raise InvalidInputError("a single-agent env is played with one act, not a mapping of groups.")
            act = next(iter(act.values()))
        return _play_single(venv, act, episodes, seed, gif)
    finally:
        venv.close()


def _group_acts(env: Any, act: Act | Mapping[str, Act]) -> dict[str, Act]:
    groups = list(env.groups)
    if not isinstance(act, Mapping):
        if len(groups) != 1:
            raise InvalidInputError(
                f"this env has {len(groups)} policy groups ({', '.join(groups)}): give one act per group."
            )
        return {groups[0]: act}
    missing = [g for g in groups if g not in act]
    if missing:
        raise InvalidInputError(f"no policy for the group(s) {', '.join(missing)} (have: {', '.join(act)}).")
    return dict(act)


def _play_single(venv: Any, act: Act, episodes: int, seed: int, gif: Path | str | None) -> EvalResult:
    returns: list[float] = []
    lengths: list[int] = []
    ended_infos: list[dict[str, float]] = []
    frames: list[np.ndarray] = []
    for i in range(episodes):
        o = venv.reset(seed=seed + i)
        record = gif is not None and i == 0
        if record:
            frames.append(_frame(venv))
        total, length = 0.0, 0
        while True:
            tr = venv.step(act(np.asarray(o.obs), o.mask))
            total += float(tr.reward[0])
            length += 1
            if bool(tr.terminated[0]) or bool(tr.truncated[0]):
                ended_infos += tr.episode_infos[:1]
                break
            o = tr.next
            if record:
                frames.append(_frame(venv))
        returns.append(total)
        lengths.append(length)
    if gif is not None:
        write_gif(frames, Path(gif), _render_fps(venv))
    mean, std = _summary(returns)
    return EvalResult(mean, std, episodes, returns, lengths, infos=mean_episode_infos(ended_infos))


def _play_multi(venv: Any, acts: dict[str, Act], episodes: int, seed: int, gif: Path | str | None) -> EvalResult:
    returns: list[float] = []
    lengths: list[int] = []
    group_returns: dict[str, list[float]] = {g: [] for g in acts}
    ended_infos: list[dict[str, float]] = []
    frames: list[np.ndarray] = []
    for i in range(episodes):
        obs = venv.reset(seed=seed + i)
        record = gif is not None and i == 0
        if record:
            frames.append(_frame(venv))
        while True:
            actions = {}
            for g, act in acts.items():
                o = obs[g]
                n, a = o.obs.shape[:2]
                x = np.asarray(o.obs).reshape(n * a, *o.obs.shape[2:])
                mask = None if o.mask is None else o.mask.reshape(n * a, -1)
                actions[g] = act(x, mask)
            tr = venv.step(actions)
            if tr.episode_returns:
                returns.append(float(tr.episode_returns[0]))
                lengths.append(int(tr.episode_lengths[0]))
                for g in acts:
                    values = tr.group_returns.get(g)
                    if values:
                        group_returns[g].append(float(values[0]))
                ended_infos += tr.episode_infos[:1]
                break
            obs = {g: t.next for g, t in tr.groups.items()}
            if record:
                frames.append(_frame(venv))
    if gif is not None:
        write_gif(frames, Path(gif), _render_fps(venv))
    mean, std = _summary(returns)
    groups = {}
    for g, values in group_returns.items():
        g_mean, g_std = _summary(values) if values else (math.nan, math.nan)
        groups[g] = {"mean_return": g_mean, "std_return": g_std}
    return EvalResult(mean, std, episodes, returns, lengths, groups, mean_episode_infos(ended_infos))


def torch_act(artifact: PolicyArtifact, deterministic: bool = True, rng: np.random.Generator | None = None) -> Act:
    """An ``Act`` that plays a policy artifact's torch actor: ``dist.mode()`` when ``deterministic`` (or
    when the policy is deterministic only), else a sample from uniform noise ``[B, noise_dim]`` drawn from
    ``rng`` exactly as ``agentkit.runtime`` draws it (float32, one row per observation), so that a run dir and
    its ``--stochastic`` export given the same ``rng`` seed sample the same actions."""
    actor = artifact.actor
    head = actor.head
    use_mode = deterministic or artifact.deterministic_only
    rng = rng if rng is not None else np.random.default_rng()

    @torch.no_grad()
    def act(obs: np.ndarray, mask: np.ndarray | None) -> Any:
        x = torch.as_tensor(obs)
        m = torch.as_tensor(mask) if mask is not None and head.mask_dim else None
        dist = actor(x, m)  # env-major rows: the actor appends the agent ids
        noise = None if use_mode else torch.from_numpy(rng.random((x.shape[0], head.noise_dim), dtype=np.float32))
        _, outputs = head.choose(dist, deterministic=use_mode, noise=noise)
        outs = {k: v.cpu().numpy() for k, v in outputs.items()}
        return head.to_env(outs)

    return act


def evaluate_run(
    run_dir: Path | str,
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    gif: Path | str | None = None,
    extra_plugins: Sequence[str] = (),
    checkpoint: str | None = None,
    allow_imports: Sequence[str] = (),
) -> EvalResult:
    """Play a run dir's latest policy, or that of ``checkpoint`` (a file name in its ``checkpoints/``), see
    ``play_episodes``; the same seed gives the same episodes.

    Stochastic play (``deterministic=False``) samples with noise from a numpy generator seeded with ``seed``,
    as ``evaluate_onnx`` does: it repeats, and a ``--stochastic`` export of the run plays the same episodes.
    A run whose policies are deterministic only (MADDPG's) refuses stochastic play (UserError).
    The run dir's config.yaml is foreign: its plugins load only when named in ``extra_plugins`` (``-p``) or
    ``allow_imports``, the code its env names only when ``allow_imports`` allows it (``agentkit.trust``).
    """
    from agentkit.rundir import load_run

    if episodes < 1:
        raise InvalidInputError(f"--episodes must be at least 1 (got {episodes}).")
    loaded = load_run(Path(run_dir), extra_plugins, checkpoint, allow_imports)
    try:
        artifacts = loaded.algorithm.policies()
        if not deterministic and any(a.deterministic_only for a in artifacts):
            raise UserError(
                f"eval --stochastic: {run_dir}'s policies ({loaded.config.algorithm.plugin}) are deterministic "
                "only, there is nothing to sample; evaluate without --stochastic."
            )
        rng = np.random.default_rng(seed)
        if loaded.env.multi_agent:
            act: Act | dict[str, Act] = {a.name: torch_act(a, deterministic, rng) for a in artifacts}
        else:
            act = torch_act(artifacts[0], deterministic, rng)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return play_episodes(loaded.env, act, episodes=episodes, seed=seed, gif=gif)
    finally:
        loaded.close()


# -- exported policies (helper "onnx") -----------------------------------------------------------------------


def _onnx_env(meta: dict[str, Any], path: Path, env: str | None, extra_plugins: Sequence[str],
              allow_imports: Sequence[str] = ()) -> EnvSource:
    """The env recorded in an export's metadata (``env`` replaces its id or module, or names a gymnasium id
    where the recorded env has neither: none recorded, or a game played over the bridge).

    The metadata is a file made elsewhere: its plugins and the code its env names are imported only when
    allowed (``agentkit.trust``); ``env`` is the user's own.
    """
    from agentkit.trust import foreign_host

    recorded = meta.get("env") or {}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config") or {}, dict):
        raise UserError(f"{path.name}: its metadata 'env' must be an object with a 'config' object.")
    section = dict(recorded.get("config") or {})
    user_keys: tuple[str, ...] = ()
    if env is not None:
        if "id" not in section and "module" not in section:
            section = {"plugin": "gymnasium", "id": env}
        elif "module" in section and "id" not in section:  # e.g. pettingzoo's env module path
            section["module"] = env
            user_keys = ("module",)
        else:
            section["id"] = env
        user_keys = user_keys or ("id",)
    if not section:
        raise UserError(
            f"{path}: the export records no env (it was not exported from a run dir); name one with --env ID."
        )
    host = foreign_host(meta, path.name, extra_plugins, allow_imports, env_section=section,
                        skip_env_keys=user_keys)
    reg = host.registry.get("env", section.get("plugin", ""), where=f"{path.name}: env.plugin")
    try:
        config = reg.validate_config(section)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise UserError(f"{path.name}: the recorded env config does not validate: {exc.errors()[0]['msg']}") from None
        raise
    return reg.factory(config)


def _group_files(path: Path, policy: Any, groups: Sequence[str]) -> dict[str, Path]:
    """The export of every policy group of a multi-agent env, found beside ``path`` by its naming
    (``<stem>-<group>.onnx``, as ``agentkit export`` writes them)."""
    own = str(policy.metadata.get("policy"))
    stem = path.stem
    prefix = stem[: -len(own) - 1] if stem.endswith(f"-{own}") else stem
    files = {}
    for g in groups:
        candidate = path if g == own else path.with_name(f"{prefix}-{g}{path.suffix}")
        if not candidate.is_file():
            raise UserError(
                f"{path.name} holds the policy of group {own!r}; playing the env also needs group {g!r}, "
                f"expected in {candidate} (export the run dir: `agentkit export RUN_DIR`)."
            )
        files[g] = candidate
    return files


def onnx_act(policy: Any, deterministic: bool = True, rng: np.random.Generator | None = None) -> Act:
    """An ``Act`` playing an ``agentkit.runtime`` policy: deterministic outputs, or samples with noise from
    ``rng``. A shared policy gets each row's agent id from its position (rows are env-major, ``n * A + a``)."""
    rng = rng if rng is not None else np.random.default_rng()
    sample = not deterministic and policy.stochastic and not policy.metadata.get("deterministic_only")

    def act(obs: np.ndarray, mask: np.ndarray | None) -> Any:
        agent = np.arange(obs.shape[0]) % policy.agent_id_dim if policy.agent_id_dim else None
        return policy.act(obs, mask=mask if policy.mask_dim else None, deterministic=not sample, rng=rng,
                          agent=agent)

    return act


def evaluate_onnx(
    path: Path | str,
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    gif: Path | str | None = None,
    env: str | None = None,
    extra_plugins: Sequence[str] = (),
    allow_imports: Sequence[str] = (),
) -> EvalResult:
    """Play an exported policy file in the env recorded in its metadata (``env`` overrides the env id) with
    the shared episode loop: the same seed gives exactly the episodes ``evaluate_run`` gives for the run dir
    it was exported from (deterministic play; continuous actions agree to float rounding, ~1e-7, as
    onnxruntime's kernels round differently from torch's). Multi-agent exports are played with the other groups' files
    found beside ``path``. Stochastic play needs a ``--stochastic`` export and samples with numpy noise
    seeded by ``seed``. The file's metadata is foreign: the plugins and env code it names are imported only
    when ``extra_plugins`` / ``allow_imports`` allow them (``agentkit.trust``).
    """
    from agentkit import runtime

    if episodes < 1:
        raise InvalidInputError(f"--episodes must be at least 1 (got {episodes}).")
    path = Path(path)
    policy = runtime.load(path)
    if not deterministic and policy.metadata.get("deterministic_only"):
        raise UserError(
            f"eval --stochastic: {path.name}'s policy is deterministic only (e.g. MADDPG's), there is "
            "nothing to sample; evaluate without --stochastic."
        )
    if not deterministic and not policy.stochastic:
        raise UserError(
            f"{path.name} was exported deterministic-only; stochastic eval needs `agentkit export --stochastic`."
        )
    source = _onnx_env(policy.metadata, path, env, extra_plugins, allow_imports)
    rng = np.random.default_rng(seed)
    if source.multi_agent:
        groups = list(cast(MultiAgentEnvSource, source).groups)
        files = _group_files(path, policy, groups)
        act: Act | dict[str, Act] = {
            g: onnx_act(policy if f == path else runtime.load(f), deterministic, rng) for g, f in files.items()
        }
    else:
        act = onnx_act(policy, deterministic, rng)
    return play_episodes(source, act, episodes=episodes, seed=seed, gif=gif)
