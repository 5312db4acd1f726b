"""Before/after a refactor: train the same example configs with the code of an earlier commit and with this
tree, and compare their metrics.csv row by row (issue #21: one on-policy core for ppo, mappo and ippo).

    .venv/bin/python benchmarks/core_before_after.py --before-commit 0541531 --steps 20480 \
        --config cartpole-ppo --config spread-mappo

The earlier commit's code is extracted (``git archive``) into a temporary folder laid out under the installed
import names (agentkit, agentkit_plugins, agentkit_envs, agentkit_exports) and put first on PYTHONPATH; its own
copy of the example config is used (option spellings may have changed since). Each run is a whole
``agentkit train`` process (one torch thread); the two sides alternate. Reported per config: how many
iterations have identical figures in every column both sides log (wall-clock columns left out; the update's
loss means, reduced in another order since the core, by their largest relative difference), the last
row's episode return on each side, and each side's wall and CPU seconds (median over ``--repeats``).
Nothing is written to RESULTS.md: copy the lines into it with the command.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LAYOUT = {"agentkit": "agentkit", "agentkit_plugins": "plugins", "agentkit_envs": "envs", "agentkit_exports": "exports"}
CLOCK = ("time", "time/", "charts/steps_per_second", "charts/lr_", "charts/learning_rate")
# the update's reported means, reduced in another order since the core (ppo_update sums them once per update):
# compared by their largest relative difference; every other column (episode returns, explained variance, ...)
# must be identical
REDUCED = ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clip_fraction")


def extract(commit: str, into: Path) -> Path:
    """The tree of ``commit`` under ``into/src``, importable from ``into`` by the installed names."""
    data = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into / "src", filter="data")
    for name, folder in LAYOUT.items():
        (into / name).symlink_to(into / "src" / folder)
    return into


def train(config: Path, run_dir: Path, steps: int, pythonpath: str | None) -> tuple[float, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", AGENTKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [PY, "-m", "agentkit.cli", "train", str(config), "--run-dir", str(run_dir), "--set",
           f"algorithm.total_steps={steps}", "--set", "run.progress=none", "--set", "run.tensorboard=false"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # run from the tree whose code it is: ``python -m`` puts the working directory first on sys.path
    proc = subprocess.run(cmd, env=env, cwd=pythonpath or ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def same(a: str | None, b: str | None) -> bool:
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    x, y = float(a), float(b)
    return x == y or (math.isnan(x) and math.isnan(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-commit", required=True)
    parser.add_argument("--config", action="append", required=True, help="an examples/ config name")
    parser.add_argument("--steps", type=int, default=20480)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = extract(args.before_commit, Path(tmp) / "before")
        for name in args.config:
            times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for r in range(args.repeats):
                for side in ("before", "after"):
                    config = (before / "src" if side == "before" else ROOT) / "examples" / f"{name}.yaml"
                    times[side].append(train(config, Path(tmp) / f"{name}-{side}-{r}", args.steps,
                                             str(before) if side == "before" else None))
            a, b = rows(Path(tmp) / f"{name}-before-0"), rows(Path(tmp) / f"{name}-after-0")
            shared = [c for c in a[0] if c in b[0] and not c.startswith(CLOCK) and c not in REDUCED] if a and b else []
            identical = sum(all(same(x.get(c), y.get(c)) for c in shared) for x, y in zip(a, b, strict=False))
            rel = max((abs(float(x[c]) - float(y[c])) / max(abs(float(x[c])), 1e-12)
                       for x, y in zip(a, b, strict=False) for c in REDUCED
                       if c in x and c in y and x[c] not in ("", None) and y[c] not in ("", None)), default=0.0)
            ret = "charts/episode_return"
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
            print(f"{name} ({args.steps} steps): {identical}/{max(len(a), len(b))} iterations identical in "
                  f"{len(shared)} columns (the loss means within {rel:.1e} relative); last episode_return before {a[-1].get(ret)} after {b[-1].get(ret)}; "
                  f"before {med['before'][0]:.1f} s wall {med['before'][1]:.1f} s CPU, "
                  f"after {med['after'][0]:.1f} s wall {med['after'][1]:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main()
