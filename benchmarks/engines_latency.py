"""Per-call inference latency of one exported policy in three runtimes: onnxruntime-web (wasm, one thread,
in headless Chromium: what the web page plays with), onnxruntime-node and Python's onnxruntime (one thread
each), at batch 1 and 64, on the same file.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engines_latency.py [--policy FILE.onnx] [--append]

Without --policy it trains the browser example's policy (Moving, hybrid head, [128, 128]) in-process for a few
iterations and exports it: latency depends on the graph, not on how well it is trained. Each figure is the
median over 15 rounds of the mean time of 200 back-to-back session.run calls (benchmarks/engines_latency.mjs
measures the two JavaScript runtimes the same way). Needs `make engines` (Chromium) and node; the npm packages
are installed into the cache as the tests do (tests/conftest.py's npm_cached_install).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 64)
CALLS, ROUNDS = 200, 15


def _cached(folder: Path, marker: str) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from conftest import npm_cached_install
    finally:
        sys.path.remove(str(REPO / "tests"))
    return npm_cached_install(folder, marker)


def web_modules() -> Path:
    """exports/web's node_modules (onnxruntime-web, puppeteer-core), from the npm cache outside the repo."""
    return _cached(REPO / "exports" / "web", "onnxruntime-web")


def js_modules() -> Path:
    """exports/js's node_modules (onnxruntime-node), from the same cache."""
    return _cached(REPO / "exports" / "js", "onnxruntime-node")


def make_policy(folder: Path) -> Path:
    """The browser example's policy, trained for 2 iterations in-process on agentkit/Moving-v0 and exported."""
    run = folder / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "agentkit.cli"]
    subprocess.run([*cli, "train", str(REPO / "examples" / "bridge-browser-moving.yaml"), "--run-dir", str(run),
                    "--set", "env={plugin: gymnasium, id: agentkit/Moving-v0, num_envs: 2}",
                    "--set", "algorithm.total_steps=2048", "--set", "run.tensorboard=false"],
                   check=True, env=env, capture_output=True, cwd=REPO)
    out = folder / "policy.onnx"
    subprocess.run([*cli, "export", str(run), "--out", str(out)], check=True, env=env, capture_output=True, cwd=REPO)
    return out


def feeds_spec(policy: Path) -> dict:
    """Every float input of the file with its width: obs random, an action mask all ones, noise 0.5."""
    meta = json.loads({p.key: p.value for p in onnx.load(policy).metadata_props}["agentkit"])
    inputs = {}
    for item in meta["inputs"]:
        width = int(np.prod(item["shape"][1:]))
        inputs[item["name"]] = [width, None if item["name"] == "obs" else (0.5 if item["name"] == "noise" else 1.0)]
    return {"inputs": inputs, "batches": list(BATCHES), "calls": CALLS, "rounds": ROUNDS}


def python_latency(policy: Path, spec: dict) -> dict[int, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(policy), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = {}
    for batch in spec["batches"]:
        feeds = {name: (rng.uniform(-1, 1, (batch, w)) if fill is None else np.full((batch, w), fill)).astype(np.float32)
                 for name, (w, fill) in spec["inputs"].items()}
        for _ in range(CALLS):
            session.run(None, feeds)
        rounds = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(CALLS):
                session.run(None, feeds)
            rounds.append((time.perf_counter() - t0) / CALLS * 1e6)
        out[batch] = statistics.median(rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, help="an exported .onnx (default: the browser example's, made here)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or make_policy(Path(tmp))
        spec = feeds_spec(policy)
        (Path(tmp) / "feeds.json").write_text(json.dumps(spec))
        env = {**os.environ, "AGENTKIT_WEB_MODULES": str(web_modules()), "AGENTKIT_JS_MODULES": str(js_modules())}
        proc = subprocess.run(["node", str(REPO / "benchmarks" / "engines_latency.mjs"), str(policy),
                               str(Path(tmp) / "feeds.json")], env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"engines_latency.mjs failed:\n{proc.stdout}\n{proc.stderr}")
        js = json.loads(proc.stdout.strip().splitlines()[-1])
        py = python_latency(policy, spec)
        shape = {name: w for name, (w, _) in spec["inputs"].items()}
    rows = [f"| {b} | {js['web'][str(b)]:.1f} | {js['node'][str(b)]:.1f} | {py[b]:.1f} | "
            f"{js['web'][str(b)] / py[b]:.2f}× |" for b in BATCHES]
    table = "\n".join([
        f"### Exported policy latency: onnxruntime-web (Chromium, wasm) vs onnxruntime-node vs Python onnxruntime "
        f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engines_latency.py"
        f"{f' --policy {args.policy}' if args.policy else ''}` (load average {os.getloadavg()[0]:.1f} on the 2 shared"
        f" cores; {platform.machine()}). Policy: {'the file given' if args.policy else 'the browser example (Moving, hybrid head, [128, 128])'},"
        f" inputs {shape}. onnxruntime {ort.__version__} (Python), onnxruntime-node and onnxruntime-web from exports/js and"
        f" exports/web's package-lock.json, {js.get('web_user_agent', 'Chromium')}; one thread each; median over {ROUNDS}"
        f" rounds of {CALLS} back-to-back calls, µs per call.",
        "",
        "| batch | onnxruntime-web wasm µs | onnxruntime-node µs | Python onnxruntime µs | web / Python |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    print(table)
    if args.append:
        with open(REPO / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
