"""Why greedy play of a hybrid policy falls short of sampled play: which half of the greedy choice costs what.

Plays a run dir's policy (default: the demo's, `make demo` → runs/demo) with the action type and the
parameters each taken greedily (the type's argmax, the Gaussian's clipped mean) or sampled (uniform noise
from a numpy generator seeded with --seed, as `agentkit eval --stochastic` draws it), over the same
episodes. Prints one Markdown row per
combination, for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/hybrid_greedy_gap.py runs/demo --episodes 100 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from agentkit.evaluation import play_episodes
from agentkit.rundir import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loaded = load_run(Path(args.run_dir))
    actor = loaded.algorithm.policies()[0].actor
    head = actor.head

    def act_with(greedy_type: bool, greedy_params: bool):
        rng = np.random.default_rng(args.seed)

        @torch.no_grad()
        def act(obs, mask):
            dist = actor(torch.as_tensor(obs, dtype=torch.float32), None if mask is None else torch.as_tensor(mask))
            noise = torch.from_numpy(rng.random((obs.shape[0], head.noise_dim), dtype=np.float32))
            k_sampled, p_sampled = dist.parts(noise=noise)
            k_mode, p_mode = dist.parts(deterministic=True)
            k = k_mode if greedy_type else k_sampled
            p = p_mode if greedy_params else p_sampled
            return head.to_env({name: v.numpy() for name, v in head._outputs(k, p).items()})

        return act

    print("| type | parameters | success | mean return | mean length |")
    print("|---|---|---|---|---|")
    for greedy_type in (True, False):
        for greedy_params in (True, False):
            r = play_episodes(loaded.env, act_with(greedy_type, greedy_params), episodes=args.episodes, seed=args.seed)
            print(f"| {'argmax' if greedy_type else 'sampled'} | {'mean' if greedy_params else 'sampled'} | "
                  f"{r.infos.get('success', float('nan')):.0%} | {r.mean_return:.3f} | {np.mean(r.lengths):.1f} |")
    loaded.algorithm.close()


if __name__ == "__main__":
    main()
