"""``agentkit.runtime``: torch-free loading and acting, env-shaped results, clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from agentkit_exports.onnx_exporter import OnnxExporter, OnnxExporterConfig
from onnx_cases import CASES, make_artifact
from runtime_cases import INPUT_CASES, METADATA_CASES, InputCase, build_metadata_files, build_models, decode

from agentkit import runtime
from agentkit.errors import EmptyMaskError, InvalidInputError, UserError

CASE = {c.id: c for c in CASES}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One stochastic export per head kind that the tests below need."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for cid in ("discrete", "multi_discrete", "gaussian-2d-box", "hybrid", "shared-discrete"):
        artifact = make_artifact(CASE[cid])
        out[cid] = OnnxExporter(OnnxExporterConfig(plugin="onnx", stochastic=True)).export(
            artifact, folder / f"{cid}.onnx")
    artifact = make_artifact(CASE["discrete"])
    out["discrete-det"] = OnnxExporter().export(artifact, folder / "discrete-det.onnx")
    return out


def test_importing_the_runtime_does_not_import_torch(files):
    code = (
        "import sys, numpy as np\n"
        "import agentkit.runtime as rt\n"
        f"p = rt.load({str(files['hybrid'])!r})\n"
        "p.act(np.zeros(6, np.float32)); p.act(np.zeros((2, 6)), deterministic=False, rng=0)\n"
        "assert 'torch' not in sys.modules, 'agentkit.runtime imported torch'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_single_and_batch_results_have_the_env_structure(files):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 6)).astype(np.float32)
    d = runtime.load(files["discrete"])
    assert d.act(obs).shape == (5,) and d.act(obs).dtype == np.int64
    assert np.ndim(d.act(obs[0])) == 0 and d.act(obs[0]) == d.act(obs)[0]
    md = runtime.load(files["multi_discrete"])
    assert md.act(obs).shape == (5, 3) and md.act(obs[1]).shape == (3,)
    box = runtime.load(files["gaussian-2d-box"])
    assert box.act(obs).shape == (5, 2, 2) and box.act(obs).dtype == np.float32  # the Box's own shape
    assert (np.abs(box.act(obs)) <= 3.0).all()
    hy = runtime.load(files["hybrid"])
    types, params = hy.act(obs)
    assert types.shape == (5,) and params.shape == (5, 3)
    k, p = hy.act(obs[2])
    assert k == types[2] and np.array_equal(p, params[2])
    owned = np.array(hy.metadata["action"]["types"][int(k)]["param_indices"], int)
    inactive = np.setdiff1d(np.arange(3), owned)
    assert (p[inactive] == 0).all()
    # a batch row gives the same action alone as in a batch
    for i in range(5):
        assert hy.act(obs[i])[0] == types[i]


def test_metadata_and_attributes(files):
    p = runtime.load(files["hybrid"])
    assert p.metadata["action"]["kind"] == "hybrid"
    assert p.action_outputs == ["action_type", "action_params"]
    assert p.mask_dim == 3 and p.stochastic and p.noise_dim == p.metadata["stochastic"]["dim"]
    assert "hybrid" in repr(p)
    assert not runtime.load(files["discrete-det"]).stochastic


def test_stochastic_acting_is_reproducible_and_honours_masks(files):
    p = runtime.load(files["multi_discrete"])
    obs = np.random.default_rng(1).normal(size=(400, 6)).astype(np.float32)
    a = p.act(obs, deterministic=False, rng=np.random.default_rng(5))
    assert np.array_equal(a, p.act(obs, deterministic=False, rng=5))
    assert not np.array_equal(a, p.act(obs, deterministic=False, rng=6))
    noise = np.random.default_rng(2).random((400, 3), dtype=np.float32)
    assert np.array_equal(p.act(obs, deterministic=False, noise=noise), p.act(obs, deterministic=False, noise=noise))
    mask = np.zeros(9, bool)
    mask[[1, 3 + 2, 3 + 3, 7 + 0]] = True  # branch 0: only 1; branch 1: 2 or 3; branch 2: only 0
    sampled = p.act(obs, mask=mask, deterministic=False, rng=0)
    assert (sampled[:, 0] == 1).all() and np.isin(sampled[:, 1], [2, 3]).all() and (sampled[:, 2] == 0).all()
    assert set(np.unique(sampled[:, 1])) == {2, 3}


def test_shared_policy_takes_agent_names_indices_or_one_hot(files):
    p = runtime.load(files["shared-discrete"])
    obs = np.random.default_rng(4).normal(size=(6, 6)).astype(np.float32)
    by_index = p.act(obs, agent=[0, 1, 2, 0, 1, 2])
    assert np.array_equal(by_index, p.act(obs, agent=["a_0", "a_1", "a_2"] * 2))
    assert np.array_equal(by_index, p.act(obs, agent=np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]))
    assert p.act(obs[1], agent="a_1") == by_index[1]
    with pytest.raises(InvalidInputError, match=r"pass agent="):
        p.act(obs)
    with pytest.raises(InvalidInputError, match=r"unknown agent\(s\) \['b_0'\]"):
        p.act(obs[0], agent="b_0")
    with pytest.raises(InvalidInputError, match=r"out of range 0\.\.2"):
        p.act(obs[0], agent=3)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p.act(np.zeros(5)), InvalidInputError, r"expected shape \[6\] \(one\) or \[batch, 6\], got \[5\]"),
        (lambda p: p.act(np.zeros((2, 3, 6))), InvalidInputError, r"got \[2, 3, 6\]"),
        (lambda p: p.act(np.array(["a"] * 6)), InvalidInputError, r"expected numbers, got dtype <U1"),
        (lambda p: p.act(np.zeros((2, 6)), mask=np.ones(4)), InvalidInputError,
         r"action mask \(1 = allowed\): expected shape \[5\] \(one\) or \[2, 5\], got \[4\]"),
        (lambda p: p.act(np.zeros((3, 6)), mask=np.eye(5)[[0, 1, 2]] * [[1], [0], [1]]), EmptyMaskError,
         r"row 1 allows no action in the segment at 0 \(width 5\)"),
        (lambda p: p.act(np.zeros(6), deterministic=False, noise=np.ones((1, 2))), InvalidInputError,
         r"noise: expected uniform\(0, 1\) floats of shape \[1, 1\], got \[1, 2\]"),
    ],
)
def test_bad_inputs_name_expected_and_got(files, call, error, message):
    with pytest.raises(error, match=message):
        call(runtime.load(files["discrete"]))


def test_float64_and_int_observations_are_accepted(files):
    p = runtime.load(files["discrete"])
    obs = np.random.default_rng(0).normal(size=(4, 6))
    assert np.array_equal(p.act(obs), p.act(obs.astype(np.float32)))
    assert p.act([1, 2, 3, 4, 5, 6]).shape == ()


def test_deterministic_only_file_refuses_to_sample(files):
    p = runtime.load(files["discrete-det"])
    with pytest.raises(InvalidInputError, match=r"--stochastic"):
        p.act(np.zeros(6), deterministic=False)


def test_not_a_policy_file(tmp_path):
    with pytest.raises(runtime.PolicyFileError, match=r"does not exist"):
        runtime.load(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(runtime.PolicyFileError, match=r"not a loadable ONNX model"):
        runtime.load(junk)
    # a valid ONNX model without agentkit metadata
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    plain = tmp_path / "plain.onnx"
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 15)], ir_version=8)
    onnx.save(model, str(plain))
    with pytest.raises(runtime.PolicyFileError, match=r"not written by `agentkit export`") as info:
        runtime.load(plain)
    assert isinstance(info.value, UserError)


def test_load_from_bytes(files):
    data = files["discrete"].read_bytes()
    obs = np.ones((3, 6), np.float32)
    assert np.array_equal(runtime.load(data).act(obs), runtime.load(files["discrete"]).act(obs))


# -- the input rule shared with the JavaScript runtime (tests/runtime_cases.py) --------------------------------


def python_result(policy, case) -> dict:
    """What agentkit.runtime does with an InputCase: {"error": message} or {output: value as lists}."""
    try:
        out = policy.act(decode(case.obs), mask=decode(case.mask), noise=decode(case.noise),
                         deterministic=case.deterministic)
    except InvalidInputError as exc:
        return {"error": str(exc)}
    parts = out if isinstance(out, tuple) else (out,)
    return {name: np.asarray(v).tolist() for name, v in zip(policy.action_outputs, parts, strict=True)}


@pytest.fixture(scope="module")
def case_models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("cases"))


@pytest.mark.parametrize("case", [c for c in INPUT_CASES if not c.js_only], ids=lambda c: c.id)
def test_the_shared_input_cases(case_models, case):
    policy = runtime.load(case_models[case.model])
    got = python_result(policy, case)
    if case.error is not None:
        assert case.error in got.get("error", ""), got
        return
    assert "error" not in got, got
    if decode(case.obs) == []:  # a batch of 0: empty outputs of each output's row shape, without onnxruntime
        for name in policy.action_outputs:
            spec = next(o for o in policy.metadata["outputs"] if o["name"] == name)
            value = policy.outputs(np.zeros((0, *policy.observation_shape)))[0][name]
            assert value.shape == (0, *spec["shape"][1:]) and value.dtype == spec["dtype"]
        assert all(v == [] for v in got.values())


def test_a_dict_with_a_batch_axis_acts_as_the_list_of_its_rows(case_models):
    """The env's Dict as a vector env gives it (a batch axis on each entry) plays exactly as the list of its
    rows; test_js_runtime compares JavaScript with these same cases."""
    from runtime_cases import _dict

    policy = runtime.load(case_models["dict-image"])
    case = {c.id: c for c in INPUT_CASES}
    same = {"dict-image-batch-axis": "dict-image-batch", "dict-image-batch-axis-mask-entry": "dict-image-batch",
            "dict-image-batch-axis-sampled": "dict-image-sampled"}
    for batched, listed in same.items():
        assert python_result(policy, case[batched]) == python_result(policy, case[listed]), batched
    one_row = python_result(policy, case["dict-image-batch-axis-one-row"])
    assert one_row == {k: [v] for k, v in python_result(policy, InputCase("", "dict-image", _dict(1))).items()}


def test_the_shared_metadata_cases(case_models, tmp_path):
    files = build_metadata_files(tmp_path, case_models["discrete"])
    for case in METADATA_CASES:
        with pytest.raises(runtime.PolicyFileError) as info:
            runtime.load(files[case.id])
        assert case.error in str(info.value), (case.id, str(info.value))
        assert str(files[case.id]) in str(info.value)



@pytest.mark.parametrize("case_id", ["invalid-json", "a-list", "huge-mask", "inputs-differ"])
def test_eval_of_a_malformed_file_exits_2(case_models, tmp_path, capsys, case_id):
    from agentkit import cli

    files = build_metadata_files(tmp_path, case_models["discrete"])
    assert cli.main(["eval", str(files[case_id]), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentkit: error: ") and "malformed agentkit metadata" in err and "Traceback" not in err
