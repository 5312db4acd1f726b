"""The masking path of the Python and JavaScript runtimes on one large batch, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/runtime_mask_speed.py [--batch 100000] [--append]
        [--js-runtime FILE]   # time another agentkit-runtime.mjs (e.g. an older one) in place of exports/js's

A masked Discrete(5) policy (obs 8, hidden [64, 64]) is exported; one batch of random observations and masks
(each row with at least one allowed action) is acted on by ``agentkit.runtime`` (numpy arrays in) and by the
JavaScript runtime on onnxruntime-node (nested arrays in, as a JavaScript caller holds them). Each time is the
median of ``--repeats`` calls after one warm-up call, the whole ``act()`` (input checks, mask, session call,
outputs). Both give the same actions (checked). Target (issue 22): JavaScript within 3x of Python.

onnxruntime-node comes from ``exports/js/node_modules`` or the tests' cache (``$AGENTKIT_JS_CACHE``, else
``~/.cache/agentkit/js``; running tests/test_js_runtime.py once fills it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from agentkit_exports.onnx_exporter import OnnxExporter
from gymnasium import spaces

from agentkit import runtime
from agentkit.algorithm import PolicyArtifact
from agentkit.config import PolicyConfig
from agentkit.host import PluginHost
from agentkit.policy import build_actor

REPO = Path(__file__).resolve().parents[1]
JS_DIR = REPO / "exports" / "js"
OBS_DIM, ACTIONS = 8, 5

JS_BENCH = r"""
import { readFile } from "node:fs/promises";
import { loadPolicy } from "./agentkit-runtime.mjs";

const [model, data, repeats] = process.argv.slice(2);
const { obs, mask } = JSON.parse(await readFile(data, "utf8"));
const policy = await loadPolicy(model);
let out = await policy.act(obs, { mask });  // warm-up
const times = [];
for (let i = 0; i < Number(repeats); i++) {
  const t0 = process.hrtime.bigint();
  out = await policy.act(obs, { mask });
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
process.stdout.write(JSON.stringify({ times, action: out.action }), () => process.exit(0));
"""


def node_modules() -> Path:
    if (JS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        return JS_DIR / "node_modules"
    cache = Path(os.environ.get("AGENTKIT_JS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "agentkit" / "js")
    target = cache / hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()[:16] / "node_modules"
    if not (target / "onnxruntime-node").is_dir():
        sys.exit(f"onnxruntime-node not found in {JS_DIR / 'node_modules'} or {target}: run "
                 "`npm ci --ignore-scripts` in exports/js, or tests/test_js_runtime.py once.")
    return target


def export_policy(folder: Path) -> Path:
    host = PluginHost(autoload=False)
    config = PolicyConfig(hidden_sizes=[64, 64], head=host.registry.get("action_head", "discrete").validate_config(
        {"plugin": "discrete"}))
    obs_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    torch.manual_seed(0)
    actor = build_actor(config, host.registry, obs_space, spaces.Discrete(ACTIONS))
    actor.normalizer.update(torch.randn(512, OBS_DIM) * 2 + 1)
    artifact = PolicyArtifact("policy", actor, obs_space, spaces.Discrete(ACTIONS), ["agent"], uses_mask=True)
    return OnnxExporter().export(artifact, folder / "masked.onnx")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--js-runtime", type=Path, default=JS_DIR / "agentkit-runtime.mjs")
    parser.add_argument("--append", action="store_true", help="add the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed")
    rng = np.random.default_rng(0)
    obs = rng.normal(0.5, 2.0, (args.batch, OBS_DIM)).astype(np.float32)
    mask = rng.random((args.batch, ACTIONS)) < 0.5
    mask[np.arange(args.batch), rng.integers(0, ACTIONS, args.batch)] = True

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = export_policy(folder)
        policy = runtime.load(model)
        want = policy.act(obs, mask=mask)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            policy.act(obs, mask=mask)
            times.append(time.perf_counter() - t0)
        python_s = statistics.median(times)

        shutil.copy(args.js_runtime, folder / "agentkit-runtime.mjs")
        shutil.copy(JS_DIR / "package.json", folder / "package.json")
        (folder / "node_modules").symlink_to(node_modules(), target_is_directory=True)
        (folder / "bench.mjs").write_text(JS_BENCH)
        (folder / "data.json").write_text(json.dumps({"obs": obs.tolist(), "mask": mask.astype(int).tolist()}))
        proc = subprocess.run([node, str(folder / "bench.mjs"), str(model), str(folder / "data.json"),
                               str(args.repeats)], capture_output=True, text=True, timeout=1800, cwd=folder)
        if proc.returncode != 0:
            sys.exit(f"the JavaScript benchmark failed:\n{proc.stderr}")
        result = json.loads(proc.stdout)
        js_s = statistics.median(result["times"])
        same = np.array_equal(np.asarray(result["action"]), want)

    ratio = js_s / python_s
    runtime_name = "exports/js" if args.js_runtime == JS_DIR / "agentkit-runtime.mjs" else str(args.js_runtime)
    lines = [
        f"| batch | Python `act()` | JavaScript `act()` ({runtime_name}) | JS / Python | same actions |",
        "|---|---|---|---|---|",
        f"| {args.batch:,} | {python_s:.3f} s | {js_s:.3f} s | {ratio:.2f}x | {'yes' if same else 'NO'} |",
    ]
    print("\n".join(lines))
    if not same:
        sys.exit("the two runtimes chose different actions")
    if args.append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        text = (f"\n### Runtime masking path, batch {args.batch:,} ({stamp}, load {load:.1f}, {platform.machine()}, "
                f"node {node_version})\n\nCommand: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/runtime_mask_speed.py "
                f"--batch {args.batch}{'' if runtime_name == 'exports/js' else ' --js-runtime ' + runtime_name} "
                "--append`; medians of " f"{args.repeats} calls after a warm-up.\n\n" + "\n".join(lines) + "\n")
        with open(REPO / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
