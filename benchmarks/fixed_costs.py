"""Where an ``agentkit train`` process spends its time outside the training iterations, item by item.

    .venv/bin/python benchmarks/fixed_costs.py [--steps 100000] [--repeats 2] [--before-commit c860dcc]

Each run is one whole ``agentkit train examples/cartpole-ppo.yaml`` process (one torch thread, entry points
off, ``run.progress=none``), started through a small bootstrap that imports torch and agentkit's modules
(timed; as the command does, with the garbage collector paused where the code has ``cli._collector_paused``),
wraps the steps of the command in timers (functions looked up by name; an item the code does not have is left
out) and then runs the command's own entry point (``console_main``, or ``main`` for code that has none). Interpreter start
is the time from launching the process to the bootstrap's first line; teardown, from the end of the command
to the end of the process. With ``--before-commit`` the code of that commit (extracted as
``core_before_after.py`` does, byte-compiled like this tree) alternates with this tree. Median milliseconds
per item are printed; nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core_before_after import ROOT, extract

PY = sys.executable
CONFIG = "examples/cartpole-ppo.yaml"
PACKAGES = ("agentkit", "plugins", "envs", "exports")

BOOTSTRAP = r"""
import json, os, sys, time
started = time.time()
acc = {}

def timed(owner, name, item):
    f = getattr(owner, name, None)
    if f is None:
        return
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            acc[item] = acc.get(item, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)

import contextlib
import agentkit.cli as cli
paused = getattr(cli, "_collector_paused", None)  # the command's own imports run so, where it has it
with paused() if paused else contextlib.nullcontext():
    t = time.perf_counter()
    import torch
    acc["import torch"] = time.perf_counter() - t
    t = time.perf_counter()
    import agentkit.host as host, agentkit.trainer as tr, agentkit.runlog as runlog
    acc["agentkit's own modules"] = time.perf_counter() - t
timed(host, "load_run_config", "config + plugins (PluginHost: built-in plugin modules, validation)")
for name in ("seed_everything", "build_env", "build_algorithm"):
    timed(tr, name, "seed, env and algorithm built")
timed(tr, "write_config", "run dir: config.yaml")
timed(tr, "MetricsCSV", "metrics.csv opened")
timed(tr, "TensorBoardLog", "TensorBoard writer started (its imports)")
timed(tr._Session, "save", "checkpoints (step 0, periodic, final)")
timed(tr._Session, "check_finite", "per iteration: finite check")
timed(runlog.MetricsCSV, "append", "per iteration: metrics.csv row")
timed(runlog.TensorBoardLog, "append", "per iteration: TensorBoard event")
timed(tr, "write_curve", "curve.png")
try:
    import agentkit.curve_process as cp
    timed(cp.CurveProcess, "draw", "curve.png")
except ImportError:
    pass
timed(runlog.TensorBoardLog, "close", "TensorBoard writer closed")
timed(cli, "_print_metrics", "final metrics table")
orig = tr.build_algorithm
def build_algorithm(*args, **kwargs):
    algorithm = orig(*args, **kwargs)
    timed(algorithm, "iterate", "iterations (algorithm.iterate)")
    return algorithm
tr.build_algorithm = build_algorithm
timed(cli, "main", "main")

def report():
    with open(os.environ["FIXED_COSTS_OUT"], "w") as f:
        json.dump({"started": started, "ended": time.time(), "items": acc}, f)

import atexit
atexit.register(report)
sys.argv = ["agentkit", *sys.argv[1:]]
entry = getattr(cli, "console_main", None)
sys.exit(entry() if entry else cli.main())
"""


def run(tree: Path, steps: int, out: Path) -> dict[str, float]:
    """One process from ``tree`` (a folder with the packages under their installed names, or the repo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", AGENTKIT_DISABLE_PLUGIN_AUTOLOAD="1", FIXED_COSTS_OUT=str(out),
               PYTHONPATH=str(tree))
    run_dir = out.with_suffix(".run")
    cmd = [PY, "-c", BOOTSTRAP, "train", str(ROOT / CONFIG), "--run-dir", str(run_dir), "--set",
           f"algorithm.total_steps={steps}", "--set", "run.progress=none"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    # from the tree itself: ``-c`` puts the working directory first on sys.path
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    exited = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    items = {k: 1000 * v for k, v in data["items"].items()}
    main = items.pop("main")
    items["interpreter start"] = 1000 * (data["started"] - launched)
    named = sum(v for k, v in items.items() if k not in ("import torch", "agentkit's own modules",
                                                          "interpreter start"))
    items["the rest of the command (hooks, closing, messages)"] = main - named
    items["teardown (end of the command to the end of the process)"] = 1000 * (exited - data["ended"])
    items["whole process, wall"] = 1000 * (exited - launched)
    items["whole process, CPU"] = 1000 * ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before-commit")
    args = parser.parse_args()
    print(f"load average at start {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.before_commit:
            trees = {args.before_commit: extract(args.before_commit, Path(tmp) / "before"), **trees}
        for tree in trees.values():
            folders = [str(tree / "src" / p) if tree != ROOT else str(ROOT / p) for p in PACKAGES]
            subprocess.run([PY, "-m", "compileall", "-q", *folders], check=True, stdout=subprocess.DEVNULL)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for r in range(args.repeats):
            for i, (name, tree) in enumerate(trees.items()):
                results[name].append(run(tree, args.steps, Path(tmp) / f"round{r}-tree{i}.json"))
                print(f"{name}: {results[name][-1]['whole process, wall'] / 1000:.2f} s wall", flush=True)
    print(f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    names = list(trees)
    order = list(dict.fromkeys(k for runs in results.values() for r in runs for k in r))
    print("| item | " + " | ".join(f"{n} (ms)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for item in order:
        cells = [f"{statistics.median(r[item] for r in results[n]):.0f}" if all(item in r for r in results[n])
                 else "—" for n in names]
        print(f"| {item} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
