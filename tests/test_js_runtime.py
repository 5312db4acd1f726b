"""The JavaScript reference runtime (exports/js, onnxruntime-node) acts exactly as the Python runtime.

Skipped, with the reason, only where node is absent. The runtime runs from a throwaway copy of exports/js
(conftest's ``js_ready``) whose onnxruntime-node comes from a cache outside the repo (``js_node_modules``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from agentkit_exports.onnx_exporter import OnnxExporter, OnnxExporterConfig
from conftest import NODE
from onnx_cases import CASES, make_artifact, random_masks

from agentkit import runtime

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript runtime test needs it")


def _run_jobs(jobs: list[dict], tmp_path: Path, js_dir: Path) -> list[dict]:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    proc = subprocess.run([NODE, str(js_dir / "act.mjs"), "--jobs", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_js_and_python_runtimes_act_identically_for_every_head(js_ready, tmp_path):
    rng = np.random.default_rng(0)
    jobs, expected = [], []
    n = 64
    for case in CASES:
        artifact = make_artifact(case)
        head = artifact.actor.head
        path = OnnxExporter(OnnxExporterConfig(plugin="onnx", stochastic=True)).export(
            artifact, tmp_path / f"{case.id}.onnx")
        policy = runtime.load(path)
        obs = rng.normal(0.5, 3.0, (n, case.obs_dim)).astype(np.float32)
        mask = random_masks(artifact, n, rng)
        agent = rng.integers(0, case.agent_id_dim, n).tolist() if case.agent_id_dim else None
        noise = rng.random((n, head.noise_dim), dtype=np.float32)
        for deterministic in (True, False):
            job = {"model": str(path), "obs": obs.tolist(), "deterministic": deterministic, "id": case.id,
                   "metadata": True}
            if mask is not None:
                job["mask"] = mask.astype(int).tolist()
            if agent is not None:
                job["agent"] = agent
            if not deterministic:
                job["noise"] = noise.tolist()
            jobs.append(job)
            expected.append(policy.outputs(obs, mask=mask, deterministic=deterministic,
                                           noise=None if deterministic else noise, agent=agent)[0])
        # one observation gives the action without the batch axis
        jobs.append({"model": str(path), "obs": obs[0].tolist(), "mask": None if mask is None else
                     mask[0].astype(int).tolist(), "agent": None if agent is None else agent[0], "id": case.id})
        expected.append({k: v[0] for k, v in policy.outputs(obs[:1], mask=None if mask is None else mask[:1],
                                                           agent=None if agent is None else agent[:1])[0].items()})
    results = _run_jobs(jobs, tmp_path, js_ready)
    assert len(results) == len(jobs)
    for job, got, want in zip(jobs, results, expected, strict=True):
        assert "error" not in got, f"{job['id']}: {got.get('error')}"
        if "metadata" in got:
            assert got["metadata"] == runtime.load(job["model"]).metadata
        for name, value in want.items():
            have = np.asarray(got[name])
            if np.issubdtype(value.dtype, np.integer):
                np.testing.assert_array_equal(have.reshape(value.shape), value, err_msg=f"{job['id']} {name}")
            else:
                # the JS runtime reshapes Box actions to the env's shape; compare values
                np.testing.assert_allclose(have.reshape(value.shape), value, rtol=0, atol=1e-6,
                                           err_msg=f"{job['id']} {name}")


def test_js_runtime_reports_bad_inputs(js_ready, tmp_path):
    artifact = make_artifact(CASES[0])  # discrete(5), obs 6
    path = str(OnnxExporter().export(artifact, tmp_path / "d.onnx"))
    results = _run_jobs([
        {"model": path, "obs": [1, 2, 3]},
        {"model": path, "obs": [[0] * 6], "mask": [[0, 0, 0, 0, 0]]},
        {"model": path, "obs": [0] * 6, "deterministic": False},
        {"model": str(tmp_path / "missing.onnx"), "obs": [0] * 6},
        {"model": path, "obs": [0] * 6, "mask": [0, 0, 1, 0, 0]},
    ], tmp_path, js_ready)
    assert "expected shape [6] (one) or [batch, 6], got [3]" in results[0]["error"]
    assert "row 0 allows no action" in results[1]["error"]
    assert "--stochastic" in results[2]["error"]
    assert "missing.onnx" in results[3]["error"]
    assert results[4] == {"action": 2}


def test_js_cli_prints_metadata(js_ready, tmp_path):
    artifact = make_artifact(CASES[6])  # hybrid
    path = OnnxExporter().export(artifact, tmp_path / "h.onnx")
    proc = subprocess.run([NODE, str(js_ready / "act.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == runtime.load(path).metadata
    proc = subprocess.run([NODE, str(js_ready / "act.mjs"), str(path), json.dumps([0.5] * 6)], capture_output=True,
                          text=True, timeout=120)
    out = json.loads(proc.stdout)
    k, params = runtime.load(path).act(np.full(6, 0.5, np.float32))
    assert out["action_type"] == int(k)
    np.testing.assert_allclose(out["action_params"], params, atol=1e-6)


def test_js_runtime_takes_the_envs_dict_observation_as_python_does(js_ready, tmp_path):
    """A policy whose env observes a Dict (with an action_mask entry): both runtimes flatten the env's own
    object by ``metadata.observation.fields`` and take its mask, and agree with acting on the flat vector."""
    from gymnasium import spaces

    from agentkit.observations import ObservationLayout

    env_space = spaces.Dict({"position": spaces.Box(-3.0, 3.0, (3,), np.float32), "cell": spaces.Discrete(3, start=1),
                             "action_mask": spaces.MultiBinary(5)}, seed=0)
    layout = ObservationLayout(env_space, "test")
    artifact = make_artifact(CASES[0])  # discrete(5), obs 6 = one-hot cell (3) + position (3)
    artifact.observation_fields = layout.fields
    path = str(OnnxExporter().export(artifact, tmp_path / "dict.onnx"))
    policy = runtime.load(path)
    raws = []
    for _ in range(32):
        raw = env_space.sample()
        raw["action_mask"][int(raw["cell"]) % 5] = 1  # at least one allowed action
        raws.append({"position": raw["position"].tolist(), "cell": int(raw["cell"]),
                     "action_mask": raw["action_mask"].astype(int).tolist()})
    flat, masks = zip(*(layout.split(r) for r in raws), strict=True)
    want = policy.act(np.concatenate(flat), mask=np.concatenate(masks))
    np.testing.assert_array_equal([policy.act(r) for r in raws], want)
    batched = {k: [r[k] for r in raws] for k in raws[0]}  # a vector env's Dict: a batch axis on each entry
    np.testing.assert_array_equal(policy.act(batched), want)
    results = _run_jobs([{"model": path, "obs": raws}] + [{"model": path, "obs": r} for r in raws[:4]]
                        + [{"model": path, "obs": {"position": [0, 0, 0]}}, {"model": path, "obs": batched}],
                        tmp_path, js_ready)
    assert results[0] == {"action": want.tolist()}
    assert [r["action"] for r in results[1:5]] == want[:4].tolist()
    assert 'observation entry "cell" is missing' in results[5]["error"]
    assert results[6] == {"action": want.tolist()}


def test_js_runtime_takes_a_discrete_observations_category(js_ready, tmp_path):
    from gymnasium import spaces

    from agentkit.observations import ObservationLayout

    artifact = make_artifact(CASES[0])  # discrete(5), obs 6: here the one-hot of a Discrete(6, start=-2)
    artifact.observation_fields = ObservationLayout(spaces.Discrete(6, start=-2), "test").fields
    path = str(OnnxExporter().export(artifact, tmp_path / "cat.onnx"))
    policy = runtime.load(path)
    mask = [1, 1, 1, 1, 1]
    results = _run_jobs([{"model": path, "obs": v, "mask": mask} for v in range(-2, 4)]
                        + [{"model": path, "obs": 4, "mask": mask}], tmp_path, js_ready)
    assert [r["action"] for r in results[:6]] == policy.act(np.arange(-2, 4)).tolist()
    assert "value 4 is not a category in -2 .. 3" in results[6]["error"]


def test_js_runtime_takes_the_envs_tuple_observation_as_python_does(js_ready, tmp_path):
    """A policy whose env observes a Tuple: both runtimes take the env's tuple (an array in JavaScript), one
    or a batch, and agree with acting on the flat vector."""
    from gymnasium import spaces

    from agentkit.observations import ObservationLayout

    env_space = spaces.Tuple((spaces.Discrete(3, start=1), spaces.Box(-3.0, 3.0, (3,), np.float32)), seed=0)
    layout = ObservationLayout(env_space, "test")
    artifact = make_artifact(CASES[0])  # discrete(5), obs 6 = one-hot (3) + box (3)
    artifact.observation_fields = layout.fields
    path = str(OnnxExporter().export(artifact, tmp_path / "tuple.onnx"))
    policy = runtime.load(path)
    raws = [(int(cell), box.tolist()) for cell, box in (env_space.sample() for _ in range(32))]
    want = policy.act(np.concatenate([layout.split(r)[0] for r in raws]), mask=np.ones((32, 5)))
    np.testing.assert_array_equal([policy.act(r) for r in raws], want)
    results = _run_jobs([{"model": path, "obs": [list(r) for r in raws]}]
                        + [{"model": path, "obs": list(r)} for r in raws[:4]]
                        + [{"model": path, "obs": [9, [0, 0, 0]]}], tmp_path, js_ready)
    assert results[0] == {"action": want.tolist()}
    assert [r["action"] for r in results[1:5]] == want[:4].tolist()
    assert 'observation entry "0": value 9 is not a category in 1 .. 3' in results[5]["error"]


# -- one input rule for both runtimes (tests/runtime_cases.py) --------------------------------------------------

CASES_DRIVER = r"""
import { readFile } from "node:fs/promises";
import { loadPolicy } from "./agentkit-runtime.mjs";

const decode = (v) => {
  if (Array.isArray(v)) return v.map(decode);
  if (v !== null && typeof v === "object" && "$" in v) return { NaN: NaN, inf: Infinity, "-inf": -Infinity }[v.$];
  if (v !== null && typeof v === "object" && "$bigint" in v) return BigInt(v.$bigint);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
  return v;
};
const jobs = JSON.parse(await readFile(process.argv[2], "utf8"));
const out = [];
for (const job of jobs) {
  try {
    const policy = await loadPolicy(job.model);
    if (job.load) { out.push({ loaded: true }); continue; }
    out.push(await policy.act(decode(job.obs), {
      mask: decode(job.mask ?? undefined), noise: decode(job.noise ?? undefined), deterministic: job.deterministic,
    }));
  } catch (err) {
    out.push({ error: String(err.message ?? err) });
  }
}
process.stdout.write(JSON.stringify(out), () => process.exit(0));
"""


def test_both_runtimes_follow_one_input_rule(js_workdir, run_node, tmp_path):
    from runtime_cases import INPUT_CASES, METADATA_CASES, build_metadata_files, build_models
    from test_runtime import python_result

    models = build_models(tmp_path)
    meta_files = build_metadata_files(tmp_path, models["discrete"])
    jobs = [{"model": str(models[c.model]), "obs": c.obs, "mask": c.mask, "noise": c.noise,
             "deterministic": c.deterministic} for c in INPUT_CASES]
    jobs += [{"model": str(meta_files[c.id]), "load": True} for c in METADATA_CASES]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    work = js_workdir({"cases.mjs": CASES_DRIVER})
    proc = run_node(work / "cases.mjs", tmp_path / "jobs.json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for case, got in zip(INPUT_CASES, results, strict=False):
        if case.error is not None:
            assert case.error in got.get("error", ""), (case.id, got)
        else:
            assert "error" not in got, (case.id, got)
        if case.js_only:
            continue
        want = python_result(runtime.load(models[case.model]), case)
        assert set(got) == set(want), (case.id, got, want)
        if "error" in want:
            continue
        for name, value in want.items():
            np.testing.assert_allclose(np.asarray(got[name], float), np.asarray(value, float), atol=1e-6,
                                       err_msg=case.id)
    for case, got in zip(METADATA_CASES, results[len(INPUT_CASES):], strict=True):
        assert case.error in got.get("error", ""), (case.id, got)
        assert str(meta_files[case.id]) in got["error"]


SPEED_DRIVER = r"""
import { loadPolicy } from "./agentkit-runtime.mjs";

const [model, n] = [process.argv[2], Number(process.argv[3])];
let seed = 1;
const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
const obs = Array.from({ length: n }, () => Array.from({ length: 6 }, () => random() * 4 - 2));
const mask = Array.from({ length: n }, (_, i) => Array.from({ length: 5 }, (_, j) => (j === i % 5 || random() < 0.5 ? 1 : 0)));
const policy = await loadPolicy(model);
await policy.act(obs, { mask });
const times = [];
for (let i = 0; i < 3; i++) {
  const t0 = process.hrtime.bigint();
  await policy.act(obs, { mask });
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
process.stdout.write(JSON.stringify(times.sort()[1]), () => process.exit(0));
"""


def test_js_masks_a_batch_of_100000_about_as_fast_as_python(js_workdir, run_node, tmp_path):
    """Issue 22 measured 8.3 s in JavaScript against 0.14 s in Python; the target is 3x (benchmarks/RESULTS.md,
    benchmarks/runtime_mask_speed.py). Asserted here with room for a loaded machine: 6x."""
    import time

    path = OnnxExporter().export(make_artifact(CASES[0]), tmp_path / "d.onnx")  # masked Discrete(5), obs 6
    n = 100_000
    rng = np.random.default_rng(0)
    obs = rng.normal(0.0, 2.0, (n, 6)).astype(np.float32)
    mask = rng.random((n, 5)) < 0.5
    mask[np.arange(n), np.arange(n) % 5] = True
    policy = runtime.load(path)
    policy.act(obs, mask=mask)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        policy.act(obs, mask=mask)
        times.append(time.perf_counter() - t0)
    python_s = sorted(times)[1]
    proc = run_node(js_workdir({"speed.mjs": SPEED_DRIVER}) / "speed.mjs", path, n)
    assert proc.returncode == 0, proc.stderr
    js_s = json.loads(proc.stdout)
    assert js_s < 6 * python_s, f"JavaScript {js_s:.3f} s, Python {python_s:.3f} s"
