"""ONNX batch-1 latency of an exported CNN policy vs a bare CNN of the same size, in onnxruntime (1 thread).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/images_latency.py [--size 84] [--append]

The exported policy is a PPO actor with the ``cnn`` encoder (Nature-CNN: 32-64-64 channels, kernels 8-4-3,
strides 4-2-1, 512 features) and a discrete head (6 actions) for ``uint8 [H, W, 3]`` frames: its graph
includes the 1/255 scaling, the HWC → CHW transpose and the env-boundary argmax. The bare CNN is the same
convolutions and linear layers exported on its own, taking float32 ``[1, 3, H, W]`` already scaled and
transposed and returning logits. Sessions are timed interleaved in rounds (this machine's 2 cores are
shared); each time shown is the fastest 20-call chunk of its round, the ratio the median of the rounds'
ratios. ``--append`` adds the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from agentkit_exports.onnx_exporter import DEFAULT_OPSET, OnnxExporter
from gymnasium import spaces

from agentkit.algorithm import PolicyArtifact
from agentkit.config import PolicyConfig
from agentkit.host import PluginHost
from agentkit.policy import build_actor

ROUNDS, CALLS = 15, 400


def session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bare_cnn(size: int, n_actions: int) -> bytes:
    """Conv 32-64-64 (8/4, 4/2, 3/1) + Linear 512 + logits, float32 NCHW input: the same arithmetic."""
    torch.manual_seed(0)
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 8, 4), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 4, 2), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, 1), torch.nn.ReLU(), torch.nn.Flatten(),
    )
    flat = convs(torch.zeros(1, 3, size, size)).shape[1]
    net = torch.nn.Sequential(convs, torch.nn.Linear(flat, 512), torch.nn.ReLU(), torch.nn.Linear(512, n_actions)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, size, size), buffer, dynamo=False, opset_version=DEFAULT_OPSET,
                          input_names=["obs"], output_names=["logits"],
                          dynamic_axes={"obs": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def exported_policy(size: int, n_actions: int, folder: Path) -> Path:
    host = PluginHost(autoload=False)
    space = spaces.Box(0, 255, (size, size, 3), np.uint8)
    config = PolicyConfig()
    config.encoder = host.registry.get("encoder", "cnn").validate_config({"plugin": "cnn"})
    torch.manual_seed(0)
    actor = build_actor(config, host.registry, space, spaces.Discrete(n_actions))
    artifact = PolicyArtifact(name="policy", actor=actor, observation_space=space,
                              action_space=spaces.Discrete(n_actions), agents=["agent"], uses_mask=False)
    return OnnxExporter().export(artifact, folder / "cnn.onnx")


def chunk_time(sess: ort.InferenceSession, feeds: dict, calls: int) -> float:
    """Fastest 20-call chunk, in microseconds per call."""
    best = float("inf")
    for _ in range(calls // 20):
        start = time.perf_counter()
        for _ in range(20):
            sess.run(None, feeds)
        best = min(best, (time.perf_counter() - start) / 20)
    return best * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=84, help="frame side in pixels (square RGB frames)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    n_actions = 6
    with tempfile.TemporaryDirectory() as tmp:
        path = exported_policy(args.size, n_actions, Path(tmp))
        policy, bare = session(str(path)), session(bare_cnn(args.size, n_actions))
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
        feeds_policy = {"obs": frame}
        feeds_bare = {"obs": (frame.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)}
        kernels = (len(__import__("onnx").load(str(path)).graph.node),)
        for sess, feeds in ((policy, feeds_policy), (bare, feeds_bare)):
            chunk_time(sess, feeds, 100)  # warm-up
        times_p, times_b, ratios = [], [], []
        for _ in range(ROUNDS):
            tp, tb = chunk_time(policy, feeds_policy, CALLS), chunk_time(bare, feeds_bare, CALLS)
            times_p.append(tp)
            times_b.append(tb)
            ratios.append(tp / tb)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### ONNX batch-1 latency: CNN policy vs bare CNN ({args.size}x{args.size}x3, {when})",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/images_latency.py --size {args.size}` "
        f"(onnxruntime {ort.__version__}, 1 thread, {platform.processor() or platform.machine()}, {ROUNDS} "
        f"interleaved rounds of {CALLS} calls, shared 2-core machine).",
        "",
        "| graph | input | nodes | batch-1 latency (best chunk, median over rounds) |",
        "|---|---|---|---|",
        f"| exported CNN policy (scale + transpose + Nature-CNN + discrete head + argmax) | uint8 [1, {args.size}, "
        f"{args.size}, 3] | {kernels[0]} | {np.median(times_p):.0f} µs |",
        f"| bare CNN (same convs and linears, logits) | float32 [1, 3, {args.size}, {args.size}] | — | "
        f"{np.median(times_b):.0f} µs |",
        f"| ratio (median of rounds) | | | **{np.median(ratios):.3f}x** (min {min(ratios):.3f}, max "
        f"{max(ratios):.3f}) |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        results = Path(__file__).with_name("RESULTS.md")
        results.write_text(results.read_text().rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main(sys.argv[1:])
