"""Team Arena win rate of an exported team policy against the scripted red team.

Plays the raw PettingZoo env (no agentkit adapter) with `agentkit.runtime` — the way a game server would —
and reads the env's own `win` info at the end of each episode:

    agentkit train examples/arena-mappo.yaml --run-dir benchmarks/runs/arena-mappo-seed0
    agentkit export benchmarks/runs/arena-mappo-seed0 --out benchmarks/runs/arena-mappo-seed0/team.onnx
    python benchmarks/arena_winrate.py benchmarks/runs/arena-mappo-seed0/team-blue_0.onnx --episodes 200

The file name is the one `agentkit export` printed (one file per policy group); a group that plays both
sides (one policy for all four agents, `frame: team`) plays blue here. Prints the win rate and the
same figure for a policy that picks uniformly among the allowed action types with random parameters.
It also reports how blue shoots: shots an episode, the share fired with no enemy within reach, and the aim
error of the others; which team made the first kill (and blue's win rate after its own), and the share of
blue reloading when the teams first come within reach (a shot fired at an enemy out of reach costs a
reload). The policy plays its mode; with ``--stochastic`` (an export made with ``agentkit export --stochastic``) it
samples, drawing from the episode seeds' generator.

The opponent is the env's scripted red team, whatever the export was trained against: a blue team
trained by self-play (examples/arena-selfplay.yaml, both teams learning, `opponent` unset) is played here
against a team it never met:

    agentkit train examples/arena-selfplay.yaml --run-dir benchmarks/runs/arena-selfplay-seed0
    agentkit export benchmarks/runs/arena-selfplay-seed0 --out benchmarks/runs/arena-selfplay-seed0/team.onnx
    python benchmarks/arena_winrate.py benchmarks/runs/arena-selfplay-seed0/team-blue.onnx --episodes 200

With ``--against self`` an export that plays all four agents (one group of both teams, ``frame: team``) plays
red as well: the game it trained on. Blue's and red's shots are then both reported, red's aim measured in
world coordinates; a policy that aims badly here too was not taught to aim by self-play (rather than meeting
a team it never saw).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from agentkit_envs.games.team_arena import SHOOT, parallel_env

import agentkit.runtime


def play(policy, episodes: int, seed: int, kwargs: dict, sample: bool = False) -> dict:
    """Over ``episodes`` episodes seeded seed, seed+1, ...: blue's win rate, the draw rate, the mean per-agent
    return of the agents played, and how blue shoots (``shot_stats``). ``sample``: the policy samples its
    actions (an export made with ``--stochastic``) instead of playing its mode. With ``kwargs["opponent"]`` None
    the policy plays all four agents (an export of both sides), and ``red`` holds red's shot stats too.
    ``first_kill_blue``: the share of games with a kill whose first kill was blue's (``win_after_first_kill``:
    blue's win rate in those); ``reloading_at_contact``: the share of blue's live agents reloading at the first
    step that starts with a blue and a red agent within a shot's reach."""
    rng = np.random.default_rng(seed)
    winners, returns, first_kills, reloading = [], [], [], []
    shots: dict[str, list] = {"blue": [], "red": []}
    for i in range(episodes):
        env = parallel_env(**kwargs)
        observations, infos = env.reset(seed=seed + i)
        total = {agent: 0.0 for agent in env.agents}
        winner, first_kill, contact = "draw", None, False
        while env.agents:
            if not contact and _within_reach(env):
                contact = True
                reloading.append(np.mean([env.reload[a] > 0 for a in env.all_agents if a.startswith("blue") and env.alive[a]]))
            alive = {a for a in env.all_agents if env.alive[a]}
            actions = {}
            for agent, ob in observations.items():
                if policy is None:
                    allowed = np.flatnonzero(ob["action_mask"])
                    actions[agent] = (int(rng.choice(allowed)), env.action_space(agent).sample()[1])
                else:
                    actions[agent] = policy.act(ob["observation"], mask=ob["action_mask"], agent=agent,
                                                deterministic=not sample, rng=rng)
                if int(actions[agent][0]) == SHOOT and ob["action_mask"][SHOOT]:
                    angle = float(np.asarray(actions[agent][1]).reshape(-1)[1])
                    shots[agent.split("_")[0]].append(_aim(env, agent, angle))
            observations, rewards, terminations, truncations, infos = env.step(actions)
            killed = {a.split("_")[0] for a in alive if not env.alive[a]}
            if first_kill is None and killed:
                first_kill = killed == {"red"}  # blue alone scored the first kill (a trade is not)
            for agent, r in rewards.items():
                total[agent] += float(r)
            for info in infos.values():
                winner = info.get("winner", winner)
        winners.append(winner)
        returns.append(float(np.mean(list(total.values()))))
        if first_kill is not None:
            first_kills.append((first_kill, winner == "blue"))
    result = {"win_rate": float(np.mean([w == "blue" for w in winners])),
              "draw_rate": float(np.mean([w == "draw" for w in winners])),
              "mean_return": float(np.mean(returns)), **shot_stats(np.array(shots["blue"]).reshape(-1, 3), episodes),
              "first_kill_blue": _mean([k for k, _ in first_kills]),
              "win_after_first_kill": _mean([w for k, w in first_kills if k]),
              "reloading_at_contact": _mean(reloading)}
    if kwargs.get("opponent") is None:
        result["red"] = shot_stats(np.array(shots["red"]).reshape(-1, 3), episodes)
    return result


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _within_reach(env) -> bool:
    """Whether some live blue agent and some live red one are within a shot's reach of each other."""
    live = [a for a in env.all_agents if env.alive[a]]
    return any(math.dist(env.pos[b], env.pos[r]) <= env.shot_range
               for b in live if b.startswith("blue") for r in live if r.startswith("red"))


def _aim(env, shooter: str, angle: float) -> tuple[float, float, float]:
    """(1.0 if the shooter's nearest live enemy is beyond the shot's reach else 0.0, the aim error at it in
    radians, the error that still hits it) of a shot fired now at ``angle``, in the shooter's own frame (a red
    agent of ``frame: team`` sends mirrored angles). The target moves before the shot resolves, so "on target"
    here is at the moment of firing."""
    world = math.pi - angle if env._x_sign[shooter] < 0 else angle
    x, y = env.pos[shooter]
    foes = [f for f in env._foes[shooter] if env.alive[f]]
    fx, fy = min((env.pos[f] for f in foes), key=lambda p: (p[0] - x) ** 2 + (p[1] - y) ** 2)
    distance = math.hypot(fx - x, fy - y)
    error = abs((world - math.atan2(fy - y, fx - x) + math.pi) % (2 * math.pi) - math.pi)
    return float(distance > env.shot_range), error, math.atan2(env.hit_radius, max(distance, 1e-6))


def shot_stats(shots: np.ndarray, episodes: int) -> dict:
    """How a team's shots (rows of ``_aim``) were fired: per episode, the share fired beyond the shot's reach
    (the nearest enemy farther than ``shot_range``: it cannot hit), and of those within reach the median aim
    error and the share on target."""
    within = shots[shots[:, 0] == 0.0]
    return {
        "shots_per_episode": len(shots) / episodes,
        "out_of_range": float(np.mean(shots[:, 0])) if len(shots) else float("nan"),
        "aim_error_in_range": float(np.median(within[:, 1])) if len(within) else float("nan"),
        "on_target_in_range": float(np.mean(within[:, 1] < within[:, 2])) if len(within) else float("nan"),
    }


def _shots(team: str, stats: dict) -> str:
    return (f"{team}'s shots: {stats['shots_per_episode']:.1f} an episode, {stats['out_of_range']:.0%} beyond reach, "
            f"within reach median aim error {stats['aim_error_in_range']:.3f} rad and "
            f"{stats['on_target_in_range']:.0%} on target")


def _report(name: str, result: dict) -> str:
    lines = [f"  {name}: blue wins {result['win_rate']:.1%}, draws {result['draw_rate']:.1%}, mean per-agent return "
             f"{result['mean_return']:.3f}; {_shots('blue', result)}",
             f"    first kill blue's in {result['first_kill_blue']:.0%} of the games with a kill (blue then wins "
             f"{result['win_after_first_kill']:.0%}); {result['reloading_at_contact']:.0%} of blue reloading when the "
             "teams first come within reach"]
    if "red" in result:
        lines.append(f"    {_shots('red', result['red'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--stochastic", action="store_true",
                        help="sample the policy's actions (export with `agentkit export --stochastic`)")
    parser.add_argument("--against", choices=("scripted", "self"), default="scripted",
                        help="red is the scripted team (default), or the export itself (an export of all four agents)")
    args = parser.parse_args()
    policy = agentkit.runtime.load(args.onnx)
    agents = policy.metadata["agents"]
    if not any(agent.startswith("blue_") for agent in agents):  # a policy of both sides plays blue here
        raise SystemExit(f"arena_winrate.py: {args.onnx} plays {agents}; pass an export that plays blue "
                         "(the scripted team is red).")
    if args.against == "self" and not any(agent.startswith("red_") for agent in agents):
        raise SystemExit(f"arena_winrate.py: --against self needs an export that plays both teams; "
                         f"{args.onnx} plays {agents}.")
    kwargs = {**policy.metadata["env"]["config"]["kwargs"],
              "opponent": "scripted" if args.against == "scripted" else None}
    trained = play(policy, args.episodes, args.seed, kwargs, sample=args.stochastic)
    random = play(None, args.episodes, args.seed, kwargs)
    print(f"team arena {kwargs}, {args.episodes} episodes from seed {args.seed}")
    print(_report(f"exported policy ({'sampled' if args.stochastic else 'its mode'})", trained))
    print(_report("random (allowed types)", random))


if __name__ == "__main__":
    main()
