"""What the bridge costs: the same Python game (Dungeon, masked actions) in-process vs through the bridge.

    python benchmarks/bridge_overhead.py                      # 8 instances, 2 rounds of each, 49k steps per run
    python benchmarks/bridge_overhead.py --steps 98304 --rounds 3

Every side uses examples/dungeon-masked-ppo.yaml with num_envs 8. In-process: the gymnasium plugin steps 8
Dungeon copies in the trainer's process. Bridged: the remote plugin launches 8 processes of
exports/python/serve_gymnasium.py agentkit/Dungeon-v0 (the numpy Python client over TCP) and steps them
together. Bridged, one process: ``env.instances_per_process: 8``, one process of the same script serving the 8
instances on one connection (``serve_many``, batch frames), as an engine runs several training areas in one
game. Those two leave ``env.spin_us`` unset: the default busy-waits only where every process has a core (so on 2
CPUs the one-process side spins and the other does not). "one process, spin_us 0" is the one-process side with
reads that block at once, to show what the spinning buys. The sides alternate (in-process, bridged, one
process, no spin, in-process, ...) so that all see the same load.

Two figures per side:
* PPO training steps/s: ``time/steps_per_second`` of the whole run (collection and updates), median of the rounds;
* collection only: random allowed actions (from the mask), ``--collect`` vector steps, no policy, env steps/s.
The claim checked (issue 23): bridged training >= 0.7x in-process, for each bridged side.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import resource
import shlex
import shutil
import struct
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


#: the three sides: name -> (bridged, instances per game process)
#: the sides: name -> (bridged, instances per game process (0: all), env.spin_us (None: unset, the default))
SIDES = {"in-process": (False, 0, None), "bridged": (True, 1, None), "bridged, one process": (True, 0, None),
         "one process, spin_us 0": (True, 0, 0)}


def env_section(bridged: bool, num_envs: int, per_process: int = 1, spin: int | None = None) -> dict:
    """``per_process``: instances each launched game process serves (``env.instances_per_process``); ``spin``:
    ``env.spin_us`` (None: left unset)."""
    base = yaml.safe_load(EXAMPLE.read_text())["env"]
    if not bridged:
        return {**base, "num_envs": num_envs}
    command = (f"{sys.executable} {SERVE} agentkit/Dungeon-v0 --port {{port}} --instance {{instance}} "
               "--instances {instances}")
    if GAME_AUTOGROUP_NICE is not None:  # a launched game starts a session, hence an autogroup, of its own
        command = (f"sh -c 'echo {GAME_AUTOGROUP_NICE} > /proc/self/autogroup; exec \"$0\" \"$@\"' " + command)
    section = {"plugin": "remote", "num_envs": num_envs, "command": command, "instances_per_process": per_process}
    return section if spin is None else {**section, "spin_us": spin}


def _autogroups() -> bool:
    """Whether the kernel schedules each session as one group (Linux's ``sched_autogroup_enabled``)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def set_autogroup_nice(nice: int) -> None:
    """Give this process's autogroup the nice ``nice``. Linux (``kernel.sched_autogroup_enabled``) schedules
    each session's processes as one group, and a process's nice ranks it only within its group: ``nice -n -10``
    alone does not rank the benchmark above other sessions' jobs."""
    Path("/proc/self/autogroup").write_text(str(nice))


def train_speed(side: str, num_envs: int, steps: int, out: Path) -> float:
    bridged, per_process, spin = SIDES[side]
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["env"] = env_section(bridged, num_envs, per_process or num_envs, spin)
    cfg["algorithm"]["total_steps"] = steps
    cfg["run"] = {"progress": "none", "tensorboard": False, "checkpoint_every_steps": 0}
    run_dir = out / side.replace(", ", "-").replace(" ", "-")
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


def spin_of(side: str, num_envs: int) -> int:
    """The busy-wait, µs, a bridged side's reads get (env.spin_us unset: by processes and CPUs)."""
    from agentkit_envs.remote import RemoteEnvConfig
    from agentkit_envs.remote.server import spin_us

    _, per_process, spin = SIDES[side]
    return spin_us(RemoteEnvConfig(**env_section(True, num_envs, per_process or num_envs, spin)))


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (pid None) or of process ``pid`` (from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collect_speed(side: str, num_envs: int, vector_steps: int) -> tuple[float, float, float]:
    """(env steps/s, CPU milliseconds per 1000 env steps summed over the trainer and the game processes, the
    game processes' share of it)."""
    bridged, per_process, spin = SIDES[side]
    from agentkit.build import build_env
    from agentkit.config import load_config
    from agentkit.host import PluginHost

    host = PluginHost()
    config = load_config({"env": env_section(bridged, num_envs, per_process or num_envs, spin),
                          "algorithm": {"plugin": "ppo", "total_steps": 1}}, host.registry)
    source = build_env(config, host.registry)
    venv = source.make_vec(num_envs, seed=0)
    rng = np.random.default_rng(0)
    try:
        o = venv.reset()
        games = sorted({inst.game.pid for inst in venv.env.multi.instances}) if bridged else []
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
    parser.add_argument("--cpu-latency-zero", action="store_true",
                        help="hold /dev/cpu_dma_latency at 0 for the whole run (Linux, root): idle CPUs poll instead of "
                        "halting, so a process woken on an idle CPU starts at once (every side gets it)")
    parser.add_argument("--autogroup-nice", type=int, default=None,
                        help="the nice of the benchmark's autogroup and of each game's (Linux; see set_autogroup_nice); "
                        "run the benchmark in a session of its own (setsid) so that nothing else shares it")
    parser.add_argument("--busy", type=int, default=0,
                        help="processes that keep a CPU busy (nice 0) for the whole run: the machine shared with "
                        "other work, which a busy-waiting read must not make worse")
    args = parser.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0)) for _ in range(args.busy)]
    try:
        return measure(args)
    finally:
        for p in busy:
            p.kill()


def measure(args: argparse.Namespace) -> int:
    if args.cpu_latency_zero:  # kept open until the process exits: the kernel honours it while the file is open
        latency = os.open("/dev/cpu_dma_latency", os.O_RDWR)
        os.write(latency, struct.pack("i", 0))
    global GAME_AUTOGROUP_NICE
    if args.autogroup_nice is not None:
        set_autogroup_nice(args.autogroup_nice)
        GAME_AUTOGROUP_NICE = args.autogroup_nice
    train: dict[str, list[float]] = {side: [] for side in SIDES}
    collect: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    game_cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    spins = {side: spin_of(side, args.num_envs) for side in list(SIDES)[1:]}
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for side in SIDES:
            speed, cpu_ms, games_ms = collect_speed(side, args.num_envs, args.collect)
            collect[side].append(speed)
            cpu[side].append(cpu_ms)
            game_cpu[side].append(games_ms)
            train[side].append(train_speed(side, args.num_envs, args.steps, args.out))
            print(f"round {r} {side}: train {train[side][-1]:.0f} steps/s, collect {collect[side][-1]:.0f} steps/s, "
                  f"{cpu[side][-1]:.0f} CPU ms per 1000 steps", flush=True)
    med = {name: {side: float(np.median(xs)) for side, xs in figures.items()}
           for name, figures in (("train", train), ("collect", collect), ("cpu", cpu), ("games", game_cpu))}
    t, c = med["train"], med["collect"]
    ratios = {side: t[side] / t["in-process"] for side in SIDES}
    verdicts = {side: "PASS" if ratios[side] >= 0.7 else "FAIL" for side in SIDES}
    load = os.getloadavg()[0]
    for side in list(SIDES)[1:]:
        print(f"training: in-process {t['in-process']:.0f}, {side} {t[side]:.0f} steps/s ({ratios[side]:.2f}x, "
              f"{verdicts[side]}); collection {c[side]:.0f} vs {c['in-process']:.0f} steps/s "
              f"({c[side] / c['in-process']:.2f}x); CPU ms per 1000 steps {med['cpu'][side]:.0f} vs "
              f"{med['cpu']['in-process']:.0f}")
    if not args.no_results:
        command = "python benchmarks/bridge_overhead.py " + shlex.join(sys.argv[1:])
        fmt = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
        n = args.num_envs

        def row(label: str, figures: dict[str, list[float]], ratio: bool) -> str:
            cells = [f"{float(np.median(figures[side])):.0f} ({fmt(figures[side])})" for side in SIDES]
            if ratio:
                base = float(np.median(figures["in-process"]))
                cells += [f"{float(np.median(figures[side])) / base:.2f}x" for side in list(SIDES)[1:]]
            else:
                cells += [""] * (len(SIDES) - 1)
            return f"| {label} | " + " | ".join(cells) + " |\n"

        text = (
            f"\n## Bridge overhead: Dungeon in-process vs bridged ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"Command: `{command.strip()}` (examples/dungeon-masked-ppo.yaml, num_envs {n}, "
            f"{args.steps:,} steps per training run, {args.rounds} alternating rounds, collection {args.collect} "
            f"vector steps of random allowed actions; \"bridged\": {n} processes of "
            f"exports/python/serve_gymnasium.py over TCP, one instance each; \"bridged, one process\": "
            f"`env.instances_per_process: {n}`, one process serving the {n} instances (`serve_many`); "
            + (f"autogroup nice {args.autogroup_nice} for the benchmark's session and each game's"
               if args.autogroup_nice is not None else
               "autogroups off (`kernel.sched_autogroup_enabled = 0`): `nice` ranks every process" if not _autogroups()
               else "autogroup nice: left as it is, so `nice` ranks the benchmark only within its own session")
            + "; reads busy-wait before blocking (env.spin_us): "
            + ", ".join(f"{spins[side]} µs on \"{side}\"" + (" (unset: the default)" if SIDES[side][2] is None else "")
                        for side in spins)
            + (f"; {args.busy} other processes keeping a CPU busy each (nice 0)" if args.busy else "")
            + ("; /dev/cpu_dma_latency held at 0 (idle CPUs poll, no halt)" if args.cpu_latency_zero else
               "; CPU idle states as the machine has them")
            + ").\n\n"
            "| median (rounds) | " + " | ".join(SIDES) + " | "
            + " | ".join(f"{side} / in-process" for side in list(SIDES)[1:]) + " |\n"
            + "|---" * (2 * len(SIDES)) + "|\n"
            + row("PPO training steps/s", train, True)
            + row("collection only, env steps/s", collect, True)
            + row("collection CPU ms per 1000 env steps (trainer + games)", cpu, False)
            + row("of which the game processes", game_cpu, False)
            + f"\nLoad average (1 min) at the start: {load_start:.1f}, at the end: {load:.1f} on 2 cores.\n"
            "Bridged training ≥ 0.7x in-process: "
            + ", ".join(f"**{verdicts[side]}** on \"{side}\"" for side in list(SIDES)[1:]) + ".\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
