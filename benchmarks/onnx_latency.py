"""Inference latency of exported policies vs a bare MLP of the same size, in onnxruntime (1 thread).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/onnx_latency.py [--append] [--obs-dim 8 --hidden 64 64]

For each head (discrete and hybrid, for an env without masks and one with; gaussian clipped), the exported
deterministic policy (normaliser + trunk + head + env-boundary bounding, plus the mask input where the env
supplies masks) is timed at batch 1 and batch 256 against the
bare MLP ``obs → hidden → logits`` (tanh, the policy's default) exported directly with the same exporter settings
(default 8 → 64 → 64; ``--obs-dim`` and ``--hidden`` time other sizes). Sessions are timed
interleaved in rounds; each time shown is the fastest 20-call chunk, the ratio the median of the rounds'
ratios (this machine's 2 cores are shared). "kernels" counts the nodes onnxruntime runs per call. Target:
exported batch-1 latency ≤ 1.3× the bare MLP's. Also shown: ``agentkit.runtime`` ``act()`` (input checks
in numpy on top of the session call), and both sessions called through IOBinding with preallocated inputs
and outputs (an engine's way: no per-call numpy conversion). ``--append`` adds the table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import itertools
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from agentkit_exports.onnx_exporter import DEFAULT_OPSET, OnnxExporter
from gymnasium import spaces

from agentkit import runtime
from agentkit.algorithm import PolicyArtifact
from agentkit.config import PolicyConfig
from agentkit.host import PluginHost
from agentkit.policy import build_actor
from agentkit.spaces import HybridSpace

ROUNDS, CALLS = 15, 1000


def session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bare_mlp(obs_dim: int, hidden: list[int], out_dim: int) -> bytes:
    torch.manual_seed(0)
    widths = [obs_dim, *hidden]
    layers: list[torch.nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.Tanh()]
    mlp = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], out_dim)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(3, obs_dim),), buffer, dynamo=False, opset_version=DEFAULT_OPSET,
                          input_names=["obs"], output_names=["out"],
                          dynamic_axes={"obs": {0: "batch"}, "out": {0: "batch"}})
    return buffer.getvalue()


def exported(head: dict, action_space, folder: Path, obs_dim: int, hidden: list[int], normalize_obs: bool = True,
             uses_mask: bool = True) -> Path:
    host = PluginHost(autoload=False)
    reg = host.registry.get("action_head", head["plugin"])
    config = PolicyConfig(hidden_sizes=hidden, head=reg.validate_config(head), normalize_obs=normalize_obs)
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    actor = build_actor(config, host.registry, obs_space, action_space)
    actor.normalizer.update(torch.randn(512, obs_dim) * 2 + 1)
    artifact = PolicyArtifact("policy", actor, obs_space, action_space, ["agent"], uses_mask=uses_mask)
    return OnnxExporter().export(artifact, folder / f"{head['plugin']}-{normalize_obs}-{uses_mask}.onnx")


def time_call(fn, calls: int) -> float:
    """Microseconds per call: the fastest mean of 20-call chunks over ``calls`` calls (after a warm-up).
    The fastest chunk is the one no other process preempted (the 2 cores here are shared)."""
    for _ in range(100):
        fn()
    samples = []
    for _ in range(calls // 20):
        start = time.perf_counter()
        for _ in range(20):
            fn()
        samples.append((time.perf_counter() - start) / 20 * 1e6)
    return min(samples)


def feeds_for(sess: ort.InferenceSession, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in sess.get_inputs():
        width = inp.shape[1]
        feeds[inp.name] = (rng.normal(size=(batch, width)).astype(np.float32) if inp.name == "obs"
                           else np.ones((batch, width), np.float32))
    return feeds


def bound_call(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]):
    """A call of ``sess`` through IOBinding with inputs and outputs preallocated, as an engine calls it: no
    per-call numpy conversion of inputs or outputs, so what is left is the graph's own cost."""
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")
    sess.run_with_iobinding(binding)  # once, to learn the output shapes and dtypes
    produced = binding.get_outputs()
    binding.clear_binding_outputs()
    for out, value in zip(sess.get_outputs(), produced, strict=True):
        buffer = np.empty(value.shape(), dtype=value.numpy().dtype)
        binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy(buffer))
    return lambda: sess.run_with_iobinding(binding)


def measure(pol_sess, bare_sess, policy, out_names, batch: int, rng: np.random.Generator) -> dict[str, float]:
    """Fastest-chunk µs per call of the bare MLP, the exported policy, and ``runtime`` ``act()``, and
    ``ratio``: the median over rounds of each round's policy/bare ratio (both timed back to back, so a
    round slowed by other processes slows both; the median discards the rounds where it hit only one).
    ``bound_ratio`` is the same ratio with both sessions called through preallocated IOBinding."""
    pf, bf = feeds_for(pol_sess, batch, rng), feeds_for(bare_sess, batch, rng)
    obs = pf["obs"] if batch > 1 else pf["obs"][0]
    bound_policy, bound_bare = bound_call(pol_sess, pf), bound_call(bare_sess, bf)
    best: dict[str, list[float]] = {"policy": [], "bare": [], "act": [], "bound_policy": [], "bound_bare": []}
    for _ in range(ROUNDS):  # interleaved rounds: load changes hit both alike
        best["bare"].append(time_call(lambda: bare_sess.run(["out"], bf), CALLS))
        best["policy"].append(time_call(lambda: pol_sess.run(out_names, pf), CALLS))
        best["act"].append(time_call(lambda: policy.act(obs), CALLS // 2))
        best["bound_bare"].append(time_call(bound_bare, CALLS))
        best["bound_policy"].append(time_call(bound_policy, CALLS))

    def median_ratio(num: str, den: str) -> float:
        return float(np.median([p / b for p, b in zip(best[num], best[den], strict=True)]))

    return {**{k: min(v) for k, v in best.items()}, "ratio": median_ratio("policy", "bare"),
            "bound_ratio": median_ratio("bound_policy", "bound_bare")}


def kernels(model: bytes | str) -> int:
    """Nodes onnxruntime runs per call: the graph after its own optimisations (fusions, constant folding)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        import onnx

        return len(onnx.load(options.optimized_model_filepath).graph.node)


def probe_kernels() -> None:
    """Single-op graphs at batch 1: what one onnxruntime call and each extra kernel of a policy cost."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    def model(nodes, inputs, out_type, inits=()):
        graph = h.make_graph(nodes, "probe", inputs, [h.make_tensor_value_info("y", out_type, None)], list(inits))
        return h.make_model(graph, opset_imports=[h.make_opsetid("", DEFAULT_OPSET)], ir_version=8).SerializeToString()

    x = h.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    m = h.make_tensor_value_info("m", TensorProto.FLOAT, ["b", 4])
    consts = [nh.from_array(np.array(0.5, np.float32), "half"), nh.from_array(np.array(-1e8, np.float32), "low")]
    one, two = {"x": np.ones((1, 4), np.float32)}, {"x": np.ones((1, 4), np.float32), "m": np.ones((1, 4), np.float32)}
    probes = [
        ("Identity (the cost of a run)", model([h.make_node("Identity", ["x"], ["y"])], [x], TensorProto.FLOAT), one),
        ("Identity, 2 inputs", model([h.make_node("Identity", ["x"], ["y"])], [x, m], TensorProto.FLOAT), two),
        ("ArgMax", model([h.make_node("ArgMax", ["x"], ["y"], axis=-1, keepdims=0)], [x], TensorProto.INT64), one),
        ("Sub", model([h.make_node("Sub", ["x", "half"], ["y"])], [x], TensorProto.FLOAT, consts[:1]), one),
        ("Greater + Where (a mask), 2 inputs", model(
            [h.make_node("Greater", ["m", "half"], ["c"]), h.make_node("Where", ["c", "x", "low"], ["y"])], [x, m],
            TensorProto.FLOAT, consts), two),
        # other ways to write the mask; the same logits on 0/1 masks, but not adopted: Log + Add turns a mask
        # value other than 0/1 into a logit shift (NaN below 0), Cast to bool reads any non-zero as allowed
        ("Log + Add (a mask), 2 inputs", model(
            [h.make_node("Log", ["m"], ["l"]), h.make_node("Add", ["x", "l"], ["y"])], [x, m], TensorProto.FLOAT), two),
        ("Cast (bool) + Where (a mask), 2 inputs", model(
            [h.make_node("Cast", ["m"], ["c"], to=TensorProto.BOOL), h.make_node("Where", ["c", "x", "low"], ["y"])],
            [x, m], TensorProto.FLOAT, consts[1:]), two),
    ]
    sessions = [(label, session(data), feeds) for label, data, feeds in probes]
    best = {label: float("inf") for label, _, _ in sessions}
    for _ in range(ROUNDS):  # interleaved rounds, fastest kept
        for label, sess, feeds in sessions:
            best[label] = min(best[label], time_call(lambda sess=sess, feeds=feeds: sess.run(None, feeds), CALLS))
    print("| probe graph (batch 1) | µs |\n|---|---|")
    for label, value in best.items():
        print(f"| {label} | {value:.2f} |")


def probe_normaliser() -> None:
    """Where a discrete policy's extra time goes: the same 8 → 64 → 64 → 5 ReLU MLP + ArgMax with the
    observation normaliser written four ways, each vs the bare MLP (batch 1). ``BatchNormalization`` with
    ``scale = 1/std``, ``var = 1``, ``epsilon = 0`` is ``(x - mean) * (1/std)`` in one kernel; its actions are
    checked against the exported ``Sub``/``Div`` form on 10 000 observations."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    dim, hidden, n = 8, 64, 5
    arrays = {
        "W1": rng.normal(size=(dim, hidden)), "b1": rng.normal(size=hidden), "W2": rng.normal(size=(hidden, hidden)),
        "b2": rng.normal(size=hidden), "W3": rng.normal(size=(hidden, n)), "b3": rng.normal(size=n),
        "mean": rng.normal(size=dim), "std": rng.random(dim) + 0.5, "lo": -10.0, "hi": 10.0,
    }
    arrays.update(inv=1 / arrays["std"], ones=np.ones(dim), zeros=np.zeros(dim))
    inits = [nh.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()]
    mlp = [
        h.make_node("Gemm", ["x", "W1", "b1"], ["h1"]), h.make_node("Relu", ["h1"], ["r1"]),
        h.make_node("Gemm", ["r1", "W2", "b2"], ["h2"]), h.make_node("Relu", ["h2"], ["r2"]),
        h.make_node("Gemm", ["r2", "W3", "b3"], ["logits"]),
    ]
    argmax = [h.make_node("ArgMax", ["logits"], ["action"], axis=-1, keepdims=0)]
    batch_norm = h.make_node("BatchNormalization", ["obs", "inv", "zeros", "mean", "ones"], ["n"], epsilon=0.0)
    variants = {
        "bare MLP (logits)": [h.make_node("Identity", ["obs"], ["x"]), *mlp],
        "exported: Sub, Div, Clip + MLP + ArgMax": [
            h.make_node("Sub", ["obs", "mean"], ["c"]), h.make_node("Div", ["c", "std"], ["n"]),
            h.make_node("Clip", ["n", "lo", "hi"], ["x"]), *mlp, *argmax],
        "BatchNormalization, Clip + MLP + ArgMax": [batch_norm, h.make_node("Clip", ["n", "lo", "hi"], ["x"]), *mlp, *argmax],
        "BatchNormalization (no clip) + MLP + ArgMax": [batch_norm, h.make_node("Identity", ["n"], ["x"]), *mlp, *argmax],
        "no normaliser + MLP + ArgMax": [h.make_node("Identity", ["obs"], ["x"]), *mlp, *argmax],
    }
    obs = h.make_tensor_value_info("obs", TensorProto.FLOAT, ["b", dim])
    models = {}
    for label, nodes in variants.items():
        out = nodes[-1].output[0]
        shape = ["b"] if out == "action" else ["b", n]
        kind = TensorProto.INT64 if out == "action" else TensorProto.FLOAT
        used = [i for i in inits if any(i.name in node.input for node in nodes)]
        graph = h.make_graph(nodes, "probe", [obs], [h.make_tensor_value_info(out, kind, shape)], used)
        models[label] = h.make_model(graph, opset_imports=[h.make_opsetid("", DEFAULT_OPSET)], ir_version=8)
    sessions = {label: session(model.SerializeToString()) for label, model in models.items()}
    many = {"obs": rng.normal(0.0, 3.0, (10_000, dim)).astype(np.float32)}
    exported_actions = sessions["exported: Sub, Div, Clip + MLP + ArgMax"].run(None, many)[0]
    same = (sessions["BatchNormalization, Clip + MLP + ArgMax"].run(None, many)[0] == exported_actions).mean()
    one = {"obs": rng.normal(0.0, 3.0, (1, dim)).astype(np.float32)}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(ROUNDS):  # interleaved rounds; the ratio is the median of the rounds' ratios
        for label, sess in sessions.items():
            times[label].append(time_call(lambda sess=sess: sess.run(None, one), CALLS))
    bare = np.array(times["bare MLP (logits)"])
    print(f"BatchNormalization + Clip vs exported form: {same:.4%} of 10 000 actions identical\n")
    print("| graph (batch 1) | kernels | µs | ratio to bare |\n|---|---|---|---|")
    for label, values in times.items():
        ratio = float(np.median(np.array(values) / bare))
        print(f"| {label} | {kernels(models[label].SerializeToString())} | {min(values):.2f} | {ratio:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--obs-dim", type=int, default=8, help="observation width of both networks")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="hidden layer widths")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--probe", action="store_true", help="time single-op graphs instead (kernel costs)")
    parser.add_argument(
        "--probe-normaliser", action="store_true", help="time the observation normaliser written four ways"
    )
    args = parser.parse_args()
    if args.probe_normaliser:
        probe_normaliser()
        return
    if args.probe:
        probe_kernels()
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    hybrid = HybridSpace(types={"go": ["speed"], "turn": ["angle"], "wait": []},
                         params={"speed": (0.0, 1.0), "angle": (-1.0, 1.0)})
    heads = [  # label, head, action space, bare MLP outputs, env supplies masks
        ("discrete (no mask)", {"plugin": "discrete"}, spaces.Discrete(4), 4, False),
        ("discrete (mask)", {"plugin": "discrete"}, spaces.Discrete(4), 4, True),
        ("discrete (mask), normalize_obs: false", {"plugin": "discrete"}, spaces.Discrete(4), 4, True),
        ("gaussian (clip)", {"plugin": "gaussian"}, spaces.Box(-1.0, 1.0, (2,), np.float32), 2, False),
        ("hybrid (no mask)", {"plugin": "hybrid"}, hybrid, 5, False),
        ("hybrid (mask)", {"plugin": "hybrid"}, hybrid, 5, True),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, head, space, bare_out, uses_mask in heads:
            path = exported(head, space, Path(tmp), args.obs_dim, args.hidden,
                            normalize_obs="normalize_obs: false" not in label, uses_mask=uses_mask)
            bare = bare_mlp(args.obs_dim, args.hidden, bare_out)
            pol_sess, bare_sess = session(str(path)), session(bare)
            policy = runtime.load(path)
            out_names = [o.name for o in pol_sess.get_outputs()]
            result = {batch: measure(pol_sess, bare_sess, policy, out_names, batch, rng) for batch in (1, 256)}
            rows.append((label, result, kernels(str(path)), kernels(bare)))
    size_options = f"--obs-dim {args.obs_dim} --hidden {' '.join(map(str, args.hidden))}"
    lines = [
        f"### ONNX inference latency (onnxruntime {ort.__version__}, 1 thread, {platform.machine()}, "
        f"obs {args.obs_dim}, hidden {args.hidden}, opset {DEFAULT_OPSET})",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/onnx_latency.py --append {size_options}`",
        "",
        "| head | batch | kernels (policy / bare) | bare MLP µs | exported policy µs | ratio | runtime act() µs "
        "| IOBinding: bare / policy µs | IOBinding ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst_ratio = worst_bound = 0.0
    for label, result, pol_kernels, bare_kernels in rows:
        for batch, r in result.items():
            ratio = r["ratio"]
            if batch == 1:
                worst_ratio = max(worst_ratio, ratio)
                worst_bound = max(worst_bound, r["bound_ratio"])
            lines.append(f"| {label} | {batch} | {pol_kernels} / {bare_kernels} | {r['bare']:.1f} | {r['policy']:.1f} "
                         f"| {ratio:.2f}× | {r['act']:.1f} | {r['bound_bare']:.1f} / {r['bound_policy']:.1f} "
                         f"| {r['bound_ratio']:.2f}× |")
    verdict = "met" if worst_ratio <= 1.3 else "NOT met"
    lines += ["", f"Target (exported batch-1 ≤ 1.3× bare MLP): {verdict}, worst batch-1 ratio {worst_ratio:.2f}× "
              f"({worst_bound:.2f}× through IOBinding).", ""]
    text = "\n".join(lines)
    print(text)
    if args.append:
        results = Path(__file__).with_name("RESULTS.md")
        with results.open("a") as fh:
            fh.write("\n" + text + "\n")
        print(f"appended to {results}", file=sys.stderr)


if __name__ == "__main__":
    main()
