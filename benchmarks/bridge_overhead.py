"""What the bridge costs: the same Python game (Dungeon, masked actions) in-process vs through the bridge.

    python benchmarks/bridge_overhead.py                      # 8 instances, 2 rounds of each, 49k steps per run
    python benchmarks/bridge_overhead.py --steps 98304 --rounds 3

Both sides use examples/dungeon-masked-ppo.yaml with num_envs 8. In-process: the gymnasium plugin steps 8
Dungeon copies in the trainer's process. Bridged: the remote plugin launches 8 processes of
exports/python/serve_gymnasium.py agentkit/Dungeon-v0 (the numpy Python client over TCP) and steps them
together. The runs alternate (in-process, bridged, in-process, ...) so that both see the same machine load.

Two figures per side:
* PPO training steps/s: ``time/steps_per_second`` of the whole run (collection and updates), median of the rounds;
* collection only: random allowed actions (from the mask), ``--collect`` vector steps, no policy, env steps/s.
The claim checked (issue 23): bridged training >= 0.7x in-process.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dungeon-masked-ppo.yaml"
SERVE = ROOT / "exports" / "python" / "serve_gymnasium.py"


#: the nice of each launched game's autogroup (``--autogroup-nice``), None: leave it
GAME_AUTOGROUP_NICE: int | None = None


def env_section(bridged: bool, num_envs: int) -> dict:
    base = yaml.safe_load(EXAMPLE.read_text())["env"]
    if not bridged:
        return {**base, "num_envs": num_envs}
    command = f"{sys.executable} {SERVE} agentkit/Dungeon-v0 --port {{port}} --instance {{instance}}"
    if GAME_AUTOGROUP_NICE is not None:  # a launched game starts a session, hence an autogroup, of its own
        command = (f"sh -c 'echo {GAME_AUTOGROUP_NICE} > /proc/self/autogroup; exec \"$0\" \"$@\"' " + command)
    return {"plugin": "remote", "num_envs": num_envs, "command": command}


def set_autogroup_nice(nice: int) -> None:
    """Give this process's autogroup the nice ``nice``. Linux (``kernel.sched_autogroup_enabled``) schedules
    each session's processes as one group, and a process's nice ranks it only within its group: ``nice -n -10``
    alone does not rank the benchmark above other sessions' jobs."""
    Path("/proc/self/autogroup").write_text(str(nice))


def train_speed(bridged: bool, num_envs: int, steps: int, out: Path) -> float:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["env"] = env_section(bridged, num_envs)
    cfg["algorithm"]["total_steps"] = steps
    cfg["run"] = {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0}
    run_dir = out / ("bridged" if bridged else "in-process")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = out / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "agentkit.cli", "train", str(path), "--run-dir", str(run_dir)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True)
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time/steps_per_second"])


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (pid None) or of process ``pid`` (from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collect_speed(bridged: bool, num_envs: int, vector_steps: int) -> tuple[float, float, float]:
    """(env steps/s, CPU milliseconds per 1000 env steps summed over the trainer and the game processes, the
    game processes' share of it)."""
    from agentkit.build import build_env
    from agentkit.config import load_config
    from agentkit.host import PluginHost

    host = PluginHost()
    config = load_config({"env": env_section(bridged, num_envs), "algorithm": {"plugin": "ppo", "total_steps": 1}},
                         host.registry)
    source = build_env(config, host.registry)
    venv = source.make_vec(num_envs, seed=0)
    rng = np.random.default_rng(0)
    try:
        o = venv.reset()
        games = [inst.game.pid for inst in venv.env.multi.instances] if bridged else []
        games0 = sum(_cpu_seconds(p) for p in games)
        cpu0 = _cpu_seconds() + games0
        start = time.perf_counter()
        for _ in range(vector_steps):
            # a random allowed action per copy: the first allowed after a random rotation of the mask
            k = rng.integers(0, o.mask.shape[1], size=num_envs)
            rolled = np.array([np.roll(m, -s) for m, s in zip(o.mask, k, strict=True)])
            actions = (rolled.argmax(axis=1) + k) % o.mask.shape[1]
            o = venv.step(actions).next
        elapsed = time.perf_counter() - start
        games1 = sum(_cpu_seconds(p) for p in games)
        cpu = _cpu_seconds() + games1 - cpu0
        steps = num_envs * vector_steps
        return steps / elapsed, 1e6 * cpu / steps, 1e6 * (games1 - games0) / steps
    finally:
        venv.close()
        if hasattr(source, "wrapped") and hasattr(source.wrapped, "close"):
            source.wrapped.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=49_152)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--collect", type=int, default=2000, help="vector steps of the collection-only figure")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "bridge_overhead")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--autogroup-nice", type=int, default=None,
                        help="the nice of the benchmark's autogroup and of each game's (Linux; see set_autogroup_nice); "
                        "run the benchmark in a session of its own (setsid) so that nothing else shares it")
    args = parser.parse_args()
    global GAME_AUTOGROUP_NICE
    if args.autogroup_nice is not None:
        set_autogroup_nice(args.autogroup_nice)
        GAME_AUTOGROUP_NICE = args.autogroup_nice
    train = {False: [], True: []}
    collect = {False: [], True: []}
    cpu = {False: [], True: []}
    game_cpu: list[float] = []
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for bridged in (False, True):
            speed, cpu_ms, games_ms = collect_speed(bridged, args.num_envs, args.collect)
            collect[bridged].append(speed)
            cpu[bridged].append(cpu_ms)
            if bridged:
                game_cpu.append(games_ms)
            train[bridged].append(train_speed(bridged, args.num_envs, args.steps, args.out))
            print(f"round {r} {'bridged' if bridged else 'in-process'}: train {train[bridged][-1]:.0f} steps/s, "
                  f"collect {collect[bridged][-1]:.0f} steps/s, {cpu[bridged][-1]:.0f} CPU ms per 1000 steps", flush=True)
    t_in, t_br = float(np.median(train[False])), float(np.median(train[True]))
    c_in, c_br = float(np.median(collect[False])), float(np.median(collect[True]))
    u_in, u_br = float(np.median(cpu[False])), float(np.median(cpu[True]))
    u_games = float(np.median(game_cpu))
    load = os.getloadavg()[0]
    ratio = t_br / t_in
    verdict = "PASS" if ratio >= 0.7 else "FAIL"
    print(f"training: in-process {t_in:.0f}, bridged {t_br:.0f} steps/s ({ratio:.2f}x, {verdict}); collection: "
          f"in-process {c_in:.0f}, bridged {c_br:.0f} steps/s ({c_br / c_in:.2f}x); CPU ms per 1000 steps {u_in:.0f} vs {u_br:.0f}")
    if not args.no_results:
        command = "python benchmarks/bridge_overhead.py " + shlex.join(sys.argv[1:])
        fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
        text = (
            f"\n## Bridge overhead: Dungeon in-process vs bridged ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` (examples/dungeon-masked-ppo.yaml, num_envs {args.num_envs}, "
            f"{args.steps:,} steps per training run, {args.rounds} alternating rounds, collection {args.collect} "
            f"vector steps of random allowed actions; the bridged side is 8 processes of "
            f"exports/python/serve_gymnasium.py over TCP; sharing the 2-core machine with other jobs; "
            + ("autogroup nice: left as it is, so `nice` ranks the benchmark only within its own session"
               if args.autogroup_nice is None else
               f"autogroup nice {args.autogroup_nice} for the benchmark's session and each game's")
            + ").\n\n"
            f"| | in-process | bridged (Python client) | bridged / in-process |\n|---|---|---|---|\n"
            f"| PPO training steps/s (median; rounds) | {t_in:.0f} ({fmt(train[False])}) | {t_br:.0f} "
            f"({fmt(train[True])}) | **{ratio:.2f}x** |\n"
            f"| collection only, env steps/s (median; rounds) | {c_in:.0f} ({fmt(collect[False])}) | {c_br:.0f} "
            f"({fmt(collect[True])}) | {c_br / c_in:.2f}x |\n"
            f"| collection CPU ms per 1000 env steps (trainer + games; median) | {u_in:.0f} | {u_br:.0f} | "
            f"{u_br / u_in:.2f}x |\n| of which the 8 game processes (median) | — | {u_games:.0f} | |\n\n"
            f"Load average (1 min) at the start: {load_start:.1f}, at the end: {load:.1f} on 2 cores.\n"
            f"Bridged training ≥ 0.7x in-process: **{verdict}**.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
