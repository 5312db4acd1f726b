"""The actor appends the one-hot agent id itself, and runs saved before it did play exactly as they did.

``tests/fixtures/agent-ids-mappo`` and ``agent-ids-maddpg`` were trained at commit 7f858a9 (when mappo, maddpg
and eval still built the ids themselves) from these configs, with ``agentkit train FILE --run-dir DIR``::

    env: {plugin: pettingzoo, module: mpe2.simple_spread_v3, kwargs: {N: 2, max_cycles: 10}, num_envs: 2}
    mappo:  {total_steps: 80, num_steps: 20, update_epochs: 1}
    maddpg: {total_steps: 80, iteration_steps: 40, batch_size: 8, learning_starts: 20, buffer_size: 100,
             train_every: 20, checkpoint_buffer: false}
    policy: {hidden_sizes: [8]}, seed 0

That commit's ``agentkit eval DIR --episodes 2 --json`` played the returns in ``RECORDED``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agentkit.config import PolicyConfig
from agentkit.evaluation import evaluate_onnx, evaluate_run
from agentkit.exporting import export_run
from agentkit.policy import agent_ids, build_actor

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = {
    "agent-ids-mappo": [-11.2143655583715, -12.480342450060247],
    "agent-ids-maddpg": [-12.452541106498483, -9.729817116470977],
}


def test_the_actor_appends_ids_to_env_major_rows_as_the_one_rule_builds_them(host):
    actor = build_actor(PolicyConfig(hidden_sizes=[8]), host.registry, spaces.Box(-1, 1, (4,)), spaces.Discrete(3),
                        id_dim=3)
    x = torch.randn(2 * 3, 4)  # 2 env copies of 3 agents, env-major
    given = agent_ids(3, 2).reshape(6, 3)
    torch.testing.assert_close(actor(x).logits, actor(x, agent_id=given).logits, rtol=0, atol=0)
    assert torch.equal(actor.ids(2), agent_ids(3, 2))
    other = agent_ids(3, 2).reshape(6, 3).roll(1, dims=0)  # other ids change the output: they are read
    assert not torch.equal(actor(x).logits, actor(x, agent_id=other).logits)
    with pytest.raises(ValueError, match="env-major order .* got 5 rows; pass agent_id"):
        actor(x[:5])
    plain = build_actor(PolicyConfig(hidden_sizes=[8]), host.registry, spaces.Box(-1, 1, (4,)), spaces.Discrete(3))
    assert plain.id_dim == 0 and plain.ids(2) is None and plain(x[:5]).logits.shape == (5, 3)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_run_saved_before_the_actor_built_its_ids_plays_and_exports_as_it_did(name, tmp_path):
    pytest.importorskip("mpe2")
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    result = evaluate_run(run, episodes=2, seed=0)
    assert result.returns == RECORDED[name]
    (path,) = export_run(run, out=tmp_path / f"{name}.onnx")
    onnx = evaluate_onnx(path, episodes=2, seed=0)
    np.testing.assert_allclose(onnx.returns, RECORDED[name], rtol=0, atol=1e-4)
