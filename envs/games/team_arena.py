"""Team Arena: two teams shoot it out in a square arena (a PettingZoo ``ParallelEnv`` with hybrid actions).

    from agentkit_envs.games.team_arena import parallel_env
    env = parallel_env(team_size=2, opponent=None)          # blue_0.. and red_0.. are all agents
    env = parallel_env(team_size=2, opponent="scripted")    # only blue is exposed; red is scripted

Agents ``blue_i`` start on the left, ``red_i`` on the right of ``[-1, 1]^2``. Every step each live agent
picks a hybrid action (``HybridSpace``):
    ``move(direction)``  direction in [-pi, pi]: moves ``move_speed`` that way (walls stop it)
    ``shoot(angle)``     angle in [-pi, pi]: an instant ray of length ``shot_range``; it kills the first
                         enemy whose centre is within ``hit_radius`` of the ray. Then ``cooldown`` steps of
                         reloading, during which ``shoot`` is masked out (and ignored if sent anyway).
    ``idle()``
All moves happen first, then all shots, simultaneously (two agents can kill each other). A killed agent
is terminated and removed from ``agents`` (PettingZoo semantics). The episode ends when a team is wiped
out (everyone left is terminated) or after ``max_cycles`` steps (everyone left is truncated).

Observation: ``Dict(observation=Box float32 [3 + 3 (T-1) + 4 T + 1], action_mask=Box int8 [3])`` where the
mask is the type mask (move, shoot, idle). ``observation``: own x, y, reload fraction; per teammate (fixed
order) dx, dy, alive; per enemy dx, dy, bearing / pi, alive (zeros when dead); elapsed time fraction.

Reward (each agent of a team gets its team's): ``(enemies killed - teammates lost) / team_size`` per step,
plus +1 to the team left standing (-1 to the wiped-out one) when a team is eliminated.

Frame (``frame``): ``"world"`` (the default) gives every agent the arena's own coordinates. ``"team"`` mirrors
the arena left to right for the red agents, in what they observe and in the angles they send: each team then
sees itself starting on the left, and an angle of 0 points at the other side for both. A red agent then
observes exactly what a blue one would in the mirrored position, and red's natural aim no longer sits at the ends of the
bounded angle range, where +-pi wrap. The scripted red, ``state()``, ``render()`` and the infos
stay in world coordinates.

Infos: ``team``; on the last step every agent still returned gets ``winner`` (``"blue"``, ``"red"`` or
``"draw"``), and with the scripted opponent ``win`` (1.0 or 0.0): the evaluation win rate is the mean of
``win``. ``state()`` is the global state: per agent of both teams x, y, alive, reload fraction, then the
elapsed time fraction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from agentkit.spaces import HybridSpace

from . import draw

MOVE, SHOOT, IDLE = 0, 1, 2
TEAMS = ("blue", "red")


def parallel_env(**kwargs: Any) -> TeamArenaEnv:
    """Build the Team Arena parallel env; keyword arguments are ``TeamArenaEnv``'s."""
    return TeamArenaEnv(**kwargs)


class TeamArenaEnv(ParallelEnv):
    """Two teams of ``team_size`` agents; see the module docstring for the rules."""

    metadata = {"render_modes": ["rgb_array"], "name": "team_arena_v0", "is_parallelizable": True, "render_fps": 10}

    def __init__(
        self,
        team_size: int = 2,
        opponent: str | None = None,
        max_cycles: int = 100,
        cooldown: int = 5,
        move_speed: float = 0.06,
        shot_range: float = 1.0,
        hit_radius: float = 0.08,
        scripted_aim_noise: float = 0.25,
        frame: str = "world",
        render_mode: str | None = None,
    ):
        if not 1 <= team_size <= 5:
            raise ValueError(f"TeamArenaEnv: team_size must be between 1 and 5, got {team_size}")
        if opponent not in (None, "scripted"):
            raise ValueError(f"TeamArenaEnv: opponent must be None (both teams are agents) or 'scripted', got {opponent!r}")
        if frame not in ("world", "team"):
            raise ValueError(f"TeamArenaEnv: frame must be 'world' or 'team' (red mirrored), got {frame!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_cycles < 1 or cooldown < 0 or move_speed <= 0 or shot_range <= 0 or hit_radius <= 0:
            raise ValueError("TeamArenaEnv: max_cycles, move_speed, shot_range and hit_radius must be positive")
        self.team_size = team_size
        self.opponent = opponent
        self.max_cycles = max_cycles
        self.cooldown = cooldown
        self.move_speed = move_speed
        self.shot_range = shot_range
        self.hit_radius = hit_radius
        self.scripted_aim_noise = scripted_aim_noise
        self.render_mode = render_mode

        self.all_agents = [f"{team}_{i}" for team in TEAMS for i in range(team_size)]
        self.possible_agents = [a for a in self.all_agents if opponent is None or a.startswith("blue")]
        self.agents: list[str] = []
        self._team = {a: a.split("_")[0] for a in self.all_agents}
        self._mates = {a: [b for b in self.all_agents if self._team[b] == self._team[a] and b != a] for a in self.all_agents}
        self._foes = {a: [b for b in self.all_agents if self._team[b] != self._team[a]] for a in self.all_agents}
        #: +1, or -1 for an agent that sees the arena mirrored (x -> -x): red's learned agents in the team frame
        mirrored = {a for a in self.possible_agents if frame == "team" and self._team[a] == "red"}
        self._x_sign = {a: -1.0 if a in mirrored else 1.0 for a in self.all_agents}

        obs_dim = 3 + 3 * (team_size - 1) + 4 * team_size + 1
        self._obs_dim = obs_dim
        low = np.full(obs_dim, -2.0, dtype=np.float32)
        high = np.full(obs_dim, 2.0, dtype=np.float32)
        low[2] = 0.0
        high[2] = 1.0
        low[-1], high[-1] = 0.0, 1.0
        obs_space = spaces.Dict(
            {
                "observation": spaces.Box(low, high, dtype=np.float32),
                "action_mask": spaces.Box(0, 1, (3,), dtype=np.int8),
            }
        )
        act_space = HybridSpace(
            types={"move": ["direction"], "shoot": ["angle"], "idle": []},
            params={"direction": (-math.pi, math.pi), "angle": (-math.pi, math.pi)},
        )
        # One object per agent, returned every call (PettingZoo's API test checks identity).
        self._obs_spaces = {a: obs_space for a in self.possible_agents}
        self._act_spaces = {a: act_space for a in self.possible_agents}
        self._state_space = spaces.Box(-1.0, 1.0, (4 * len(self.all_agents) + 1,), dtype=np.float32)

        self.np_random, _ = seeding.np_random(None)
        self.pos: dict[str, list[float]] = {}
        self.alive: dict[str, bool] = {}
        self.reload: dict[str, int] = {}
        self.steps = 0
        self._shots: list[tuple[float, float, float, float, str]] = []

    # -- spaces ----------------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    @property
    def state_space(self) -> spaces.Box:
        return self._state_space

    # -- PettingZoo API --------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
            for i, agent in enumerate(self.possible_agents):
                self._act_spaces[agent].seed(seed + i)
        rng = self.np_random
        self.steps = 0
        self._shots = []
        for team, x_lo, x_hi in (("blue", -0.9, -0.6), ("red", 0.6, 0.9)):
            ys = rng.uniform(-0.9, 0.9, size=self.team_size)
            xs = rng.uniform(x_lo, x_hi, size=self.team_size)
            for i in range(self.team_size):
                agent = f"{team}_{i}"
                self.pos[agent] = [float(xs[i]), float(ys[i])]
                self.alive[agent] = True
                self.reload[agent] = 0
        self.agents = list(self.possible_agents)
        observations = {a: self._observe(a) for a in self.agents}
        infos = {a: {"team": self._team[a]} for a in self.agents}
        return observations, infos

    def step(self, actions: dict[str, Any]):
        acting = [a for a in self.all_agents if self.alive.get(a, False)]
        chosen: dict[str, tuple[int, float]] = {}
        for agent in acting:
            if agent in self.possible_agents:
                if agent not in actions:
                    raise KeyError(f"TeamArenaEnv.step: no action for live agent {agent!r}")
                kind, params = actions[agent]
                kind = int(kind)
                param = float(params[0] if kind == MOVE else params[1]) if kind in (MOVE, SHOOT) else 0.0
                if self._x_sign[agent] < 0:
                    param = math.pi - param  # the mirrored agent's angle, in world coordinates
            else:
                kind, param = self._scripted(agent)
            if kind == SHOOT and self.reload[agent] > 0:
                kind = IDLE  # shooting while reloading does nothing (the mask says so)
            if kind not in (MOVE, SHOOT, IDLE):
                raise ValueError(f"TeamArenaEnv.step: {agent!r} sent action type {kind}; expected 0, 1 or 2")
            chosen[agent] = (kind, param)

        for agent, (kind, param) in chosen.items():
            if kind == MOVE:
                p = self.pos[agent]
                p[0] = min(max(p[0] + self.move_speed * math.cos(param), -1.0), 1.0)
                p[1] = min(max(p[1] + self.move_speed * math.sin(param), -1.0), 1.0)
            if self.reload[agent] > 0:
                self.reload[agent] -= 1

        self._shots = []
        killed: set[str] = set()
        for agent, (kind, param) in chosen.items():
            if kind != SHOOT:
                continue
            self.reload[agent] = self.cooldown
            victim = self._ray(agent, param, acting)
            x0, y0 = self.pos[agent]
            length = self.shot_range
            if victim is not None:
                killed.add(victim)
                vx, vy = self.pos[victim]
                length = math.hypot(vx - x0, vy - y0)
            self._shots.append(
                (x0, y0, x0 + length * math.cos(param), y0 + length * math.sin(param), self._team[agent])
            )
        for victim in killed:
            self.alive[victim] = False
        self.steps += 1

        kills = {t: sum(1 for v in killed if self._team[v] != t) for t in TEAMS}
        losses = {t: sum(1 for v in killed if self._team[v] == t) for t in TEAMS}
        standing = {t: any(self.alive[a] for a in self.all_agents if self._team[a] == t) for t in TEAMS}
        over = not (standing["blue"] and standing["red"])
        team_reward = {t: (kills[t] - losses[t]) / self.team_size for t in TEAMS}
        if over:
            for t in TEAMS:
                team_reward[t] += 1.0 if standing[t] else -1.0 if any(standing.values()) else 0.0
        truncate = not over and self.steps >= self.max_cycles

        returned = list(self.agents)
        observations = {a: self._observe(a) for a in returned}
        rewards = {a: float(team_reward[self._team[a]]) for a in returned}
        terminations = {a: over or not self.alive[a] for a in returned}
        truncations = {a: truncate and self.alive[a] for a in returned}
        infos: dict[str, dict[str, Any]] = {a: {"team": self._team[a]} for a in returned}
        if over or truncate:
            winner = "draw" if truncate or not any(standing.values()) else ("blue" if standing["blue"] else "red")
            for a in returned:
                infos[a]["winner"] = winner
                if self.opponent == "scripted":
                    infos[a]["win"] = float(winner == "blue")
            self.agents = []
        else:
            self.agents = [a for a in returned if self.alive[a]]
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        out = np.zeros(self._state_space.shape, dtype=np.float32)
        for i, agent in enumerate(self.all_agents):
            if self.alive.get(agent, False):
                x, y = self.pos[agent]
                out[4 * i : 4 * i + 4] = (x, y, 1.0, self._reload_frac(agent))
        out[-1] = min(self.steps / self.max_cycles, 1.0)
        return out

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = 256
        img = draw.canvas(size, size)
        mid, _ = draw.world_to_px(0.0, 0.0, 1.0, size)
        draw.fill_rect(img, mid, 0, mid + 1, size, draw.GRID)
        colors = {"blue": draw.BLUE, "red": draw.RED}
        for x0, y0, x1, y1, team in self._shots:
            a, b = draw.world_to_px(x0, y0, 1.0, size)
            c, d = draw.world_to_px(x1, y1, 1.0, size)
            draw.line(img, a, b, c, d, colors[team], width=1.5)
        for agent in self.all_agents:
            if agent not in self.pos:
                continue
            x, y = draw.world_to_px(*self.pos[agent], 1.0, size)
            if self.alive[agent]:
                draw.fill_circle(img, x, y, self.hit_radius * size / 2, colors[self._team[agent]])
                if self.reload[agent] > 0:
                    draw.ring(img, x, y, self.hit_radius * size / 2 + 3, draw.GREY, width=1.5)
            else:
                draw.ring(img, x, y, self.hit_radius * size / 2, draw.GREY, width=2.0)
        return img

    def close(self) -> None:
        pass

    # -- rules -----------------------------------------------------------------------------------------

    def _reload_frac(self, agent: str) -> float:
        return self.reload[agent] / self.cooldown if self.cooldown else 0.0

    def _observe(self, agent: str) -> dict[str, np.ndarray]:
        sign = self._x_sign[agent]
        x, y = self.pos[agent]
        values = [sign * x, y, self._reload_frac(agent)]  # a list, then one array: much faster than slice writes
        for mate in self._mates[agent]:
            if self.alive[mate]:
                mx, my = self.pos[mate]
                values += (sign * (mx - x), my - y, 1.0)
            else:
                values += (0.0, 0.0, 0.0)
        for foe in self._foes[agent]:
            if self.alive[foe]:
                fx, fy = self.pos[foe]
                dx = sign * (fx - x)
                values += (dx, fy - y, math.atan2(fy - y, dx) / math.pi, 1.0)
            else:
                values += (0.0, 0.0, 0.0, 0.0)
        values.append(min(self.steps / self.max_cycles, 1.0))
        can_shoot = self.alive[agent] and self.reload[agent] == 0
        return {
            "observation": np.array(values, dtype=np.float32),
            "action_mask": np.array((1, int(can_shoot), 1), dtype=np.int8),
        }

    def _ray(self, shooter: str, angle: float, targets: list[str]) -> str | None:
        """The first enemy (alive at the start of the step) the shot hits, or None."""
        x0, y0 = self.pos[shooter]
        c, s = math.cos(angle), math.sin(angle)
        best, best_t = None, math.inf
        for foe in self._foes[shooter]:
            if foe not in targets:
                continue
            dx, dy = self.pos[foe][0] - x0, self.pos[foe][1] - y0
            t = dx * c + dy * s
            if 0.0 < t <= self.shot_range and abs(dy * c - dx * s) <= self.hit_radius and t < best_t:
                best, best_t = foe, t
        return best

    def _scripted(self, agent: str) -> tuple[int, float]:
        """The scripted opponent: shoot the nearest enemy in range (with aim noise), else close in on it."""
        x, y = self.pos[agent]
        foes = [f for f in self._foes[agent] if self.alive[f]]
        if not foes:
            return IDLE, 0.0
        foe = min(foes, key=lambda f: (self.pos[f][0] - x) ** 2 + (self.pos[f][1] - y) ** 2)
        dx, dy = self.pos[foe][0] - x, self.pos[foe][1] - y
        bearing = math.atan2(dy, dx)
        if self.reload[agent] == 0 and math.hypot(dx, dy) <= self.shot_range:
            return SHOOT, bearing + float(self.np_random.normal(0.0, self.scripted_aim_noise))
        return MOVE, bearing + float(self.np_random.uniform(-0.5, 0.5))
