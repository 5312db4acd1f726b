"""The running-moments update every normaliser uses: folding batches in gives the whole data's moments."""

from __future__ import annotations

import numpy as np
import torch

from agentkit.moments import merge_moments


def test_batches_folded_in_give_the_mean_and_variance_of_all_the_data():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 4)) for n in (1, 7, 50, 3)]
    mean, var, count = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), torch.tensor(0.0)
    m, v, c = 0.0, 0.0, 0.0  # the same on floats, column 0
    for b in batches:
        t = torch.from_numpy(b)
        mean, var, count = merge_moments(mean, var, count.double(), t.mean(0), t.var(0, unbiased=False), len(b))
        m, v, c = merge_moments(m, v, c, float(b[:, 0].mean()), float(b[:, 0].var()), len(b))
    data = np.concatenate(batches)
    np.testing.assert_allclose(mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), data.var(0), rtol=1e-12)
    assert float(count) == c == len(data)
    assert np.isclose(m, data[:, 0].mean(), rtol=1e-12) and np.isclose(v, data[:, 0].var(), rtol=1e-12)
