"""`make demo`: train a shipped game agent, export it to ONNX, pick how it should play, and play the file.

Each step is the command a user would type; this script only runs them in order and shows what they print:

    agentkit train examples/moving-hybrid-ppo.yaml --run-dir runs/demo --set algorithm.total_steps=...
    agentkit export runs/demo --stochastic --out runs/demo/policy.onnx
    agentkit eval runs/demo/policy.onnx --episodes 100 --json                # greedy: the mode of each choice
    agentkit eval runs/demo/policy.onnx --episodes 100 --json --stochastic   # sampled, as during training
    agentkit eval runs/demo --episodes 100 --json [--stochastic]            # the run: the same episodes
    agentkit eval runs/demo/policy.onnx --episodes 1 [--stochastic] --gif runs/demo/policy.gif

and finally plays one episode with the exported file through `agentkit.runtime` (onnxruntime + numpy, no
torch) in a plain gymnasium loop, the way a game's own code would. The game is agentkit/Moving-v0: hybrid
actions, accelerate(magnitude) / turn(angle) / brake(); an episode succeeds when the vehicle stops in the
target (``infos/success``).

Why both modes: a ``--stochastic`` export plays greedy (no noise) or sampled (with noise), and at the demo's
budget the two differ. Training's figures come from sampled play; a greedy policy takes the same action
every time it sees the same state, and on this deterministic game an unfinished policy can repeat itself
forever (say, braking at rest facing away from the target, where sampling soon turns or accelerates out).
So the demo measures both on the exported file and plays the mode with the higher success rate (the return
where the env reports no success), saying which and why; with a longer budget (DEMO_STEPS=1000000) the greedy
policy catches up (examples/moving-hybrid-ppo.yaml records the figures).

Environment: DEMO_STEPS (training budget, default 300k env steps, about two minutes on a 2-core machine),
DEMO_EPISODES (episodes per evaluation, default 100), DEMO_CONFIG (another example, e.g.
examples/dungeon-masked-ppo.yaml), DEMO_RUN_DIR (default runs/demo). The last lines, and
``RUN_DIR/demo.json``, give the mode played and its figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("DEMO_RUN_DIR", ROOT / "runs" / "demo")).resolve()
CONFIG = ROOT / os.environ.get("DEMO_CONFIG", "examples/moving-hybrid-ppo.yaml")
STEPS = int(os.environ.get("DEMO_STEPS", "300000"))
EPISODES = int(os.environ.get("DEMO_EPISODES", "100"))
AGENTKIT = [sys.executable, "-m", "agentkit.cli"]
#: The eval seed (episode i starts from seed + i) and the runtime loop's episode seed.
SEED, LOOP_SEED = 0, 123


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the repo when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def run_cli(*args: str, capture: bool = False) -> dict[str, Any] | None:
    print(f"\n$ agentkit {' '.join(args)}", flush=True)
    result = subprocess.run([*AGENTKIT, *args], cwd=ROOT, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            print(result.stdout, result.stderr, sep="\n")
        sys.exit(f"demo: `agentkit {args[0]}` failed with exit code {result.returncode}")
    if not capture:
        return None
    summary = json.loads(result.stdout)
    print(f"  {_figures(summary)} over {_count(summary['episodes'])}")
    return summary


def _count(n: int) -> str:
    return f"{n} episode" if n == 1 else f"{n} episodes"


def _success(summary: dict[str, Any]) -> float | None:
    value = (summary.get("infos") or {}).get("success")
    return None if value is None else float(value)


def _figures(summary: dict[str, Any]) -> str:
    success = _success(summary)
    text = f"mean return {summary['mean_return']:.3f} ± {summary['std_return']:.3f}"
    return text if success is None else f"success {success:.0%}, {text}"


def _score(summary: dict[str, Any]) -> tuple[float, float]:
    """What picks the mode: the success rate where the env reports one, then the return."""
    success = _success(summary)
    return (success if success is not None else summary["mean_return"], summary["mean_return"])


def _training_figures(run_dir: Path, last: int = 10) -> dict[str, float]:
    """The mean of the last ``last`` logged figures of sampled play during training (metrics.csv)."""
    from agentkit.runlog import read_metrics

    _, rows = read_metrics(run_dir / "metrics.csv")
    out = {}
    for key, name in (("charts/episode_return", "mean_return"), ("infos/success", "success")):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")][-last:]
        if values:
            out[name] = sum(values) / len(values)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python numbers and lists (rounded), for printing."""
    import numpy as np

    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return round(float(value), 3)
    return value


def play_in_a_game_loop(onnx_path: Path, stochastic: bool) -> float:
    """What a game does with the file: load it without torch and act in its own loop."""
    import agentkit_envs.games  # noqa: F401  (registers the agentkit/ gymnasium ids)
    import gymnasium as gym
    import numpy as np

    import agentkit.runtime

    policy = agentkit.runtime.load(onnx_path)
    rng = np.random.default_rng(LOOP_SEED)
    env_id = policy.metadata["env"]["id"]
    env = gym.make(env_id, **policy.metadata["env"]["config"]["kwargs"])
    obs, _ = env.reset(seed=LOOP_SEED)
    total, done, steps, info = 0.0, False, 0, {}
    while not done:
        if isinstance(obs, dict):  # masked envs put the legal actions next to the observation
            action = policy.act(obs["observation"], mask=obs["action_mask"], deterministic=not stochastic, rng=rng)
        else:
            action = policy.act(obs, deterministic=not stochastic, rng=rng)
        if steps == 0:
            mode = "sampled" if stochastic else "greedy"
            print(f"\nagentkit.runtime in a plain gymnasium loop on {env_id} ({mode}): first action {_plain(action)}")
        obs, reward, terminated, truncated, info = env.step(action)
        total, done, steps = total + float(reward), terminated or truncated, steps + 1
    outcome = "" if "success" not in info else (", reached the target" if info["success"] else ", missed the target")
    print(f"  one episode with the exported file: return {total:.3f} in {steps} steps{outcome}")
    return total


def main() -> None:
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)  # the demo always starts from scratch
    run = _shown(RUN_DIR)
    onnx_path = RUN_DIR / "policy.onnx"
    onnx = _shown(onnx_path)
    episodes = ["--episodes", str(EPISODES), "--seed", str(SEED), "--json"]
    run_cli("train", _shown(CONFIG), "--run-dir", run, "--set", f"algorithm.total_steps={STEPS}")
    training = _training_figures(RUN_DIR)
    # One --stochastic file serves both modes: without noise it plays greedy, with noise it samples.
    run_cli("export", run, "--stochastic", "--out", onnx)
    greedy = run_cli("eval", onnx, *episodes, capture=True)
    sampled = run_cli("eval", onnx, *episodes, "--stochastic", capture=True)
    stochastic = _score(sampled) > _score(greedy)  # a tie plays greedy: no noise needed
    mode_flag = ["--stochastic"] if stochastic else []
    exported = sampled if stochastic else greedy
    trained = run_cli("eval", run, *episodes, *mode_flag, capture=True)
    run_cli("eval", onnx, "--episodes", "1", "--seed", str(SEED), *mode_flag, "--gif", _shown(RUN_DIR / "policy.gif"))
    play_in_a_game_loop(onnx_path, stochastic)

    mode = "stochastic" if stochastic else "greedy"
    if stochastic:
        why = (f"sampled play does better than greedy play ({_figures(sampled)} against {_figures(greedy)}). "
               "A greedy policy takes the same action whenever it sees the same state; an unfinished policy can "
               "repeat itself forever that way where sampling moves on (see examples/demo.py). Train longer "
               "and greedy play catches up")
    else:
        why = (f"greedy play does at least as well as sampled play ({_figures(greedy)} against "
               f"{_figures(sampled)}), and it needs no random numbers")
    train_text = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" if k == "success" else f"{k.replace('_', ' ')} {v:.3f}"
                           for k, v in sorted(training.items(), reverse=True))
    print("\nSummary")
    print(f"  training (sampled play, last logged iterations): {train_text or 'no episode ended'}")
    print(f"  exported file, greedy:    {_figures(greedy)} over {_count(greedy['episodes'])}")
    print(f"  exported file, sampled:   {_figures(sampled)} over {_count(sampled['episodes'])}")
    print(f"  the run itself, {mode}: {_figures(trained)} (the same episodes as the file)")
    print(f"  plays {mode}: {why}.")
    print(f"  a game plays it so: policy.act(obs{', deterministic=False, rng=rng' if stochastic else ''})")
    print(f"  run dir: {run}  (metrics.csv, curve.png, checkpoints/, policy.onnx, policy.gif, demo.json)")
    result = {"mode": mode, "episodes": exported["episodes"], "mean_return": exported["mean_return"],
              "success": _success(exported), "greedy": greedy, "stochastic": sampled, "run": trained,
              "training": training}
    (RUN_DIR / "demo.json").write_text(json.dumps(result, indent=2))
    # Discrete choices match exactly; continuous parameters agree to ~1e-6, so returns may differ by rounding.
    if abs(trained["mean_return"] - exported["mean_return"]) > 1e-4 * max(1.0, abs(trained["mean_return"])):
        sys.exit("demo: the exported policy did not play like the trained one")


if __name__ == "__main__":
    main()
