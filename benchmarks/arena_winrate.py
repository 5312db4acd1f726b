"""Team Arena win rate of an exported team policy against the scripted red team.

Plays the raw PettingZoo env (no agentkit adapter) with `agentkit.runtime` — the way a game server would —
and reads the env's own `win` info at the end of each episode:

    agentkit train examples/arena-mappo.yaml --run-dir benchmarks/runs/arena-mappo-seed0
    agentkit export benchmarks/runs/arena-mappo-seed0 --out benchmarks/runs/arena-mappo-seed0/team.onnx
    python benchmarks/arena_winrate.py benchmarks/runs/arena-mappo-seed0/team-blue_0.onnx --episodes 200

The file name is the one `agentkit export` printed (one file per policy group); a group that plays both
sides (one policy for all four agents, `frame: team`) plays blue here. Prints the win rate and the
same figure for a policy that picks uniformly among the allowed action types with random parameters.
The policy plays its mode; with ``--stochastic`` (an export made with ``agentkit export --stochastic``) it
samples, drawing from the episode seeds' generator.

The opponent is always the env's scripted red team, whatever the export was trained against: a blue team
trained by self-play (examples/arena-selfplay.yaml, both teams learning, `opponent` unset) is played here
against a team it never met:

    agentkit train examples/arena-selfplay.yaml --run-dir benchmarks/runs/arena-selfplay-seed0
    agentkit export benchmarks/runs/arena-selfplay-seed0 --out benchmarks/runs/arena-selfplay-seed0/team.onnx
    python benchmarks/arena_winrate.py benchmarks/runs/arena-selfplay-seed0/team-blue.onnx --episodes 200
"""

from __future__ import annotations

import argparse

import numpy as np
from agentkit_envs.games.team_arena import parallel_env

import agentkit.runtime


def play(policy, episodes: int, seed: int, kwargs: dict, sample: bool = False) -> tuple[float, float]:
    """(win rate, mean per-agent return) over ``episodes`` episodes seeded seed, seed+1, ...; ``sample``: the
    policy samples its actions (an export made with ``--stochastic``) instead of playing its mode."""
    rng = np.random.default_rng(seed)
    wins, returns = [], []
    for i in range(episodes):
        env = parallel_env(**kwargs)
        observations, infos = env.reset(seed=seed + i)
        total = {agent: 0.0 for agent in env.agents}
        win = 0.0
        while env.agents:
            actions = {}
            for agent, ob in observations.items():
                if policy is None:
                    allowed = np.flatnonzero(ob["action_mask"])
                    actions[agent] = (int(rng.choice(allowed)), env.action_space(agent).sample()[1])
                else:
                    actions[agent] = policy.act(ob["observation"], mask=ob["action_mask"], agent=agent,
                                                deterministic=not sample, rng=rng)
            observations, rewards, terminations, truncations, infos = env.step(actions)
            for agent, r in rewards.items():
                total[agent] += float(r)
            for info in infos.values():
                win = float(info.get("win", win))
        wins.append(win)
        returns.append(float(np.mean(list(total.values()))))
    return float(np.mean(wins)), float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--stochastic", action="store_true",
                        help="sample the policy's actions (export with `agentkit export --stochastic`)")
    args = parser.parse_args()
    policy = agentkit.runtime.load(args.onnx)
    agents = policy.metadata["agents"]
    if not any(agent.startswith("blue_") for agent in agents):  # a policy of both sides plays blue here
        raise SystemExit(f"arena_winrate.py: {args.onnx} plays {agents}; pass an export that plays blue "
                         "(the scripted team is red).")
    kwargs = {**policy.metadata["env"]["config"]["kwargs"], "opponent": "scripted"}
    trained = play(policy, args.episodes, args.seed, kwargs, sample=args.stochastic)
    random = play(None, args.episodes, args.seed, kwargs)
    print(f"team arena {kwargs}, {args.episodes} episodes from seed {args.seed}")
    played = "sampled" if args.stochastic else "its mode"
    print(f"  exported policy ({played}): win rate {trained[0]:.1%}, mean per-agent return {trained[1]:.3f}")
    print(f"  random (allowed types): win rate {random[0]:.1%}, mean per-agent return {random[1]:.3f}")


if __name__ == "__main__":
    main()
