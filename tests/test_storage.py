"""Rollout storage and GAE: hand-computed advantages, termination vs truncation, shapes, minibatches."""

from __future__ import annotations

import pytest
import torch

from agentkit.storage import RolloutStorage

GAMMA, LAM = 0.9, 0.8


def _three_cases() -> RolloutStorage:
    """T=3, three env copies with the same rewards/values: column 0 never ends, column 1 terminates at
    t=1, column 2 is truncated at t=1 with V(final obs) = 4."""
    st = RolloutStorage(3, (3,), obs_shape=2)
    st.rewards[:] = torch.tensor([1.0, 2.0, 3.0]).unsqueeze(1)
    st.values[:] = torch.tensor([0.5, 1.0, 1.5]).unsqueeze(1)
    st.dones[1, 1] = 1.0
    st.dones[1, 2] = 1.0
    st.bootstrap[1, 2] = 4.0
    st.compute_gae(torch.full((3,), 2.0), GAMMA, LAM)
    return st


def test_gae_matches_hand_computation():
    st = _three_cases()
    gl = GAMMA * LAM
    # no episode end: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}
    d2, d1, d0 = 3 + GAMMA * 2.0 - 1.5, 2 + GAMMA * 1.5 - 1.0, 1 + GAMMA * 1.0 - 0.5
    expected_open = [d0 + gl * (d1 + gl * d2), d1 + gl * d2, d2]
    # terminated at t=1: no bootstrap at t=1, nothing flows back from t=2
    expected_term = [d0 + gl * (2 - 1.0), 2 - 1.0, d2]
    # truncated at t=1: bootstrap from V(final obs)=4, still nothing flows back from t=2 (a new episode)
    trunc1 = 2 + GAMMA * 4.0 - 1.0
    expected_trunc = [d0 + gl * trunc1, trunc1, d2]
    expected = torch.tensor([expected_open, expected_term, expected_trunc]).T
    torch.testing.assert_close(st.advantages, expected)
    torch.testing.assert_close(st.returns, st.advantages + st.values)
    assert expected_open[0] == pytest.approx(4.80272)
    assert expected_term[0] == pytest.approx(2.12)
    assert expected_trunc[0] == pytest.approx(4.712)


def test_last_value_is_ignored_after_an_episode_end():
    st = RolloutStorage(1, (2,), obs_shape=1)
    st.rewards[0] = 1.0
    st.dones[0, 1] = 1.0
    st.compute_gae(torch.tensor([10.0, 10.0]), GAMMA, LAM)
    torch.testing.assert_close(st.advantages[0], torch.tensor([1.0 + GAMMA * 10.0, 1.0]))


@pytest.mark.parametrize("batch_shape", [(4,), (4, 3)])
def test_shapes_single_and_multi_agent(batch_shape):
    st = RolloutStorage(5, batch_shape, obs_shape=7, action_shape=(2,), action_dtype=torch.float32, mask_dim=6,
                        critic_dim=9)
    assert st.obs.shape == (5, *batch_shape, 7)
    assert st.critic_obs.shape == (5, *batch_shape, 9)
    assert st.actions.shape == (5, *batch_shape, 2) and st.actions.dtype == torch.float32
    assert st.masks.shape == (5, *batch_shape, 6) and st.masks.dtype == torch.bool
    for name in ("logprobs", "rewards", "values", "dones", "bootstrap", "advantages", "returns", "valid"):
        assert getattr(st, name).shape == (5, *batch_shape), name
    st.compute_gae(torch.zeros(batch_shape), GAMMA, LAM)
    b = st.batch()
    m = 5 * int(torch.Size(batch_shape).numel())
    assert b.obs.shape == (m, 7) and b.critic_obs.shape == (m, 9) and b.actions.shape == (m, 2)
    assert b.masks.shape == (m, 6) and b.advantages.shape == (m,)


def test_batch_keeps_only_valid_entries_and_minibatches_cover_them_once():
    st = RolloutStorage(4, (2, 3), obs_shape=1)
    st.obs[..., 0] = torch.arange(24, dtype=torch.float32).reshape(4, 2, 3)
    st.valid[2:, 1, 2] = False  # agent 2 of env copy 1 died at t=2
    st.valid[0, 0, 0] = False
    b = st.batch()
    assert len(b) == 21
    kept = set(b.obs[:, 0].long().tolist())
    assert kept == set(range(24)) - {0, 17, 23}
    seen = []
    for mb in b.minibatches(5, torch.Generator().manual_seed(0)):
        assert len(mb) <= 5
        seen += mb.obs[:, 0].long().tolist()
    assert sorted(seen) == sorted(kept)
    # one minibatch that holds everything is the batch itself
    assert [len(mb) for mb in b.minibatches(64)] == [21]


def test_multi_agent_gae_treats_agents_independently():
    st = RolloutStorage(2, (1, 2), obs_shape=1)
    st.rewards[:] = 1.0
    st.dones[0, 0, 1] = 1.0  # agent 1 dies at t=0; agent 0 goes on
    st.compute_gae(torch.zeros(1, 2), 1.0, 1.0)
    torch.testing.assert_close(st.advantages[:, 0, 0], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(st.advantages[:, 0, 1], torch.tensor([1.0, 1.0]))


def test_images_are_stored_as_uint8_and_the_estimate_is_what_is_allocated():
    from agentkit.storage import rollout_bytes

    args = dict(num_steps=4, batch_shape=(2, 3), obs_shape=(16, 16, 3), obs_dtype=torch.uint8, action_shape=(2,),
                action_dtype=torch.float32, mask_dim=5, critic_dim=7, extra_dim=3)
    st = RolloutStorage(**args)
    assert st.obs.dtype == torch.uint8 and st.obs.shape == (4, 2, 3, 16, 16, 3)
    allocated = sum(t.element_size() * t.nelement() for t in vars(st).values() if isinstance(t, torch.Tensor))
    assert rollout_bytes(**args) == allocated


def test_storage_that_does_not_fit_is_refused_naming_the_knobs():
    from agentkit.errors import ConfigError
    from agentkit.storage import ensure_fits

    ensure_fits(500, "obs", "env.num_envs", available=1000)  # half of what is available may be used
    with pytest.raises(ConfigError, match=r"storage needs 501 bytes \(501 bytes: obs\) but only 1,000 bytes .*Lower env.num_envs"):
        ensure_fits(501, "obs", "env.num_envs", available=1000)


def _packed_storage():
    """T=4, (N=2, A=3) of a flat observation [progress, 2x2x3 frame, hp]: 14 columns, 12 of them pixels."""
    from agentkit.storage import ObsPacking

    packing = ObsPacking(14, range(1, 13))
    st = RolloutStorage(4, (2, 3), obs_shape=14, packing=packing)
    gen = torch.Generator().manual_seed(0)
    flat = torch.rand(4, 2, 3, 14, generator=gen)
    flat[..., 1:13] = torch.randint(0, 256, (4, 2, 3, 12), generator=gen).float()
    for t in range(4):
        st.obs[t] = flat[t]
    return st, flat


def test_a_dicts_pixels_are_stored_as_uint8_and_come_back_exactly():
    from agentkit.storage import PackedObs, rollout_bytes

    st, flat = _packed_storage()
    assert isinstance(st.obs, PackedObs) and st.obs.shape == (4, 2, 3, 14)
    assert st.obs.pixels.dtype == torch.uint8 and st.obs.pixels.shape == (4, 2, 3, 12)
    assert st.obs.values.dtype == torch.float32 and st.obs.values.shape == (4, 2, 3, 2)
    assert torch.equal(st.obs.unpack(), flat)
    allocated = sum(t.element_size() * t.nelement() for t in (*vars(st).values(), st.obs.pixels, st.obs.values)
                    if isinstance(t, torch.Tensor))
    assert rollout_bytes(4, (2, 3), 14, torch.float32, packing=st.obs.packing) == allocated
    # 1 byte a pixel instead of 4: the frame's share of the estimate is a quarter of the float32 one
    assert rollout_bytes(4, (2, 3), 14, torch.float32) - rollout_bytes(4, (2, 3), 14, torch.float32,
                                                                       packing=st.obs.packing) == 24 * 12 * 3


def test_packing_copies_its_indices_to_a_device_once():
    """pack/unpack run every step and minibatch: their index tensors reach a device once, not at each call."""
    from agentkit.storage import ObsPacking

    packing, meta = ObsPacking(14, range(1, 13)), torch.device("meta")  # meta: a device other than the CPU
    first = packing.indices_on(meta)
    assert first[0].device == meta and first[1].device == meta
    pixels, values = packing.pack(torch.zeros(5, 14, device=meta))
    assert pixels.device == meta and pixels.dtype == torch.uint8 and pixels.shape == (5, 12) and values.shape == (5, 2)
    assert packing.unpack(pixels, values).shape == (5, 14)
    assert packing.indices_on(meta) is first


def test_minibatches_of_a_packed_rollout_are_the_flat_float32_observations():
    st, flat = _packed_storage()
    st.valid[3, 1, 2] = False  # a dead agent: its entry is left out, the rest stays packed
    st.compute_gae(torch.zeros(2, 3), GAMMA, LAM)
    b = st.batch()
    assert b.packed and len(b) == 23 and b.critic_obs is b.obs
    rows = {tuple(r.tolist()) for r in flat.reshape(24, 14)[torch.arange(24) != 23]}
    seen = []
    for mb in b.minibatches(5, torch.Generator().manual_seed(0)):
        assert not mb.packed and mb.obs.dtype == torch.float32 and mb.critic_obs is mb.obs
        seen += [tuple(r.tolist()) for r in mb.obs]
    assert sorted(seen) == sorted(rows)
    [whole] = b.minibatches(64)
    assert not whole.packed and {tuple(r.tolist()) for r in whole.obs} == rows
    parts = list(b.parts(10))
    assert [len(p) for p in parts] == [10, 10, 3] and not any(p.packed for p in parts)
    assert torch.equal(torch.cat([p.obs for p in parts]), whole.obs)
