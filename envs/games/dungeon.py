"""``agentkit/Dungeon-v0``: a grid dungeon with walls, a key and a locked door, played with masked actions.

Each ``reset`` draws a new dungeon from the env's seeded RNG: a ``size x size`` grid with border walls, an
inner wall splitting it in two with one locked door, a few random wall blocks (never cutting a side in two),
the hero and the key on one side, the exit on the other. The split is vertical or horizontal and the sides
are mirrored at random. To win, the hero walks to the key, picks it up, walks next to the door, opens it
and walks to the exit.

Actions (``Discrete(6)``): 0 up, 1 down, 2 left, 3 right, 4 pick up the key, 5 open the door. Legal are:
a move onto a floor cell (not a wall, not the closed door); ``pick`` on the key's cell; ``open`` next to
the closed door while holding the key.

``action_space="multi_discrete"`` plays the same game with ``MultiDiscrete([5, 3])`` actions, one move and
one interaction per step: branch 0 is the move (0 none, 1 up, 2 down, 3 left, 4 right), branch 1 the
interaction (0 none, 1 pick up the key, 2 open the door). The interaction happens first, then the move, so
both branch masks are computed from the state at the start of the step and every combination of legal
branch values is legal: an interaction never makes a legal move illegal (picking the key changes no cell,
opening the door turns the door into floor), and a move onto the door cell is only legal once the door is
open at the start of a step. "none" is always legal, so each branch always has an allowed value. The mask
is the two branch masks concatenated, ``MultiBinary(8)`` = ``[none, up, down, left, right, none, pick,
open]``, the layout the ``multi_discrete`` head takes. ``gymnasium.make("agentkit/Dungeon-v0",
action_space="multi_discrete")`` or ``env.kwargs.action_space: multi_discrete`` in a run config selects it.

Observation: ``Dict(observation=Box float32, action_mask=MultiBinary(6 | 8) int8)`` (PettingZoo's
convention; 1 = legal). ``observation`` is flat: five one-hot ``size x size`` planes (wall, closed door, key, exit,
hero), then ``has_key``, ``door_open`` and the offsets (dx, dy) / size from the hero to the key, the door
and the exit.

Reward: -0.01 per step, +0.1 for picking the key, +0.1 for opening the door, +1 for reaching the exit
(terminated). Truncated after ``max_steps`` (default ``2 * size * size``). Best returns are about 1.0.

``illegal_move_penalty``: ``None`` (default) masks illegal actions. A number instead allows every action
(the mask is all ones): an illegal action changes nothing and costs that much reward (a positive number
is subtracted). This is the unmasked baseline of ``benchmarks/dungeon_mask_vs_penalty.py``. With masking
on, an illegal action that reaches ``step`` anyway (a tool that ignores the mask) is a no-op without extra
penalty; ``info["illegal_action"]`` flags it in both modes. With multi-discrete actions each illegal
branch value is a no-op for that branch (the other branch still acts) and costs the penalty once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import draw

UP, DOWN, LEFT, RIGHT, PICK, OPEN = range(6)
ACTION_NAMES = ("up", "down", "left", "right", "pick", "open")
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (row, col) deltas of UP, DOWN, LEFT, RIGHT
ACTION_SPACES = ("discrete", "multi_discrete")
MULTI_NVEC = (5, 3)  # (move: none/up/down/left/right, interact: none/pick/open)
MULTI_ACTION_NAMES = (("none", "up", "down", "left", "right"), ("none", "pick", "open"))

FLOOR, WALL, DOOR = 0, 1, 2
_PLANES = 5  # wall, closed door, key, exit, hero


class DungeonEnv(gym.Env):
    """The Dungeon game; see the module docstring for the rules."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        render_mode: str | None = None,
        size: int = 8,
        max_steps: int | None = None,
        illegal_move_penalty: float | None = None,
        obstacle_density: float = 0.15,
        step_penalty: float = 0.01,
        action_space: str = "discrete",
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if not 7 <= size <= 16:
            raise ValueError(f"DungeonEnv: size must be between 7 and 16, got {size}")
        if illegal_move_penalty is not None and illegal_move_penalty < 0:
            raise ValueError(
                f"DungeonEnv: illegal_move_penalty is the amount subtracted, so it must be >= 0 (or None to mask "
                f"illegal actions instead), got {illegal_move_penalty}"
            )
        if not 0.0 <= obstacle_density < 0.5:
            raise ValueError(f"DungeonEnv: obstacle_density must be in [0, 0.5), got {obstacle_density}")
        if action_space not in ACTION_SPACES:
            raise ValueError(
                f"DungeonEnv: action_space must be one of {', '.join(map(repr, ACTION_SPACES))}, got {action_space!r}"
            )
        self.render_mode = render_mode
        self.size = size
        self.max_steps = max_steps if max_steps is not None else 2 * size * size
        self.illegal_move_penalty = illegal_move_penalty
        self.obstacle_density = obstacle_density
        self.step_penalty = step_penalty
        self.multi_discrete = action_space == "multi_discrete"

        n = size * size
        self._obs_dim = _PLANES * n + 2 + 6
        self.action_space = spaces.MultiDiscrete(MULTI_NVEC) if self.multi_discrete else spaces.Discrete(6)
        self._mask_dim = sum(MULTI_NVEC) if self.multi_discrete else 6
        low = np.zeros(self._obs_dim, dtype=np.float32)
        low[-6:] = -1.0
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(low, np.ones(self._obs_dim, dtype=np.float32), dtype=np.float32),
                "action_mask": spaces.MultiBinary(self._mask_dim),
            }
        )
        self.cells = np.zeros((size, size), dtype=np.int8)
        self._rows = self.cells.tolist()
        self.hero = self.key = self.door = self.exit = (0, 0)
        self.has_key = self.door_open = False
        self.steps = 0
        self._static = np.zeros(self._obs_dim, dtype=np.float32)

    # -- gymnasium API ---------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._generate()
        self.has_key = self.door_open = False
        self.steps = 0
        return self._obs(), {"has_key": False, "door_open": False, "success": False, "illegal_action": False}

    def step(self, action):
        if self.multi_discrete:
            return self._step_multi(action)
        a = int(action)
        if not 0 <= a < 6:
            raise ValueError(f"DungeonEnv: action must be in 0..5, got {action!r}")
        legal = self._legal()
        reward = -self.step_penalty
        success = False
        if not legal[a]:
            # A masked policy never gets here; a tool that ignores the mask (e.g. gymnasium's checker) gets a
            # no-op, and info["illegal_action"] says so.
            if self.illegal_move_penalty is not None:
                reward -= self.illegal_move_penalty
        else:
            gained, success = self._apply(a)
            reward += gained
        return self._finish(reward, success, illegal=not legal[a])

    def _step_multi(self, action) -> tuple:
        a = np.asarray(action)
        move, interact = a.tolist() if a.shape == (2,) and a.dtype.kind in "iu" else (-1, -1)
        if not (0 <= move < MULTI_NVEC[0] and 0 <= interact < MULTI_NVEC[1]):
            raise ValueError(
                f"DungeonEnv: a multi_discrete action is two integers (move 0..4, interact 0..2), got {action!r}"
            )
        legal = self._legal()  # both branches are judged on the state at the start of the step
        reward = -self.step_penalty
        success = False
        illegal = 0
        for part, index in ((interact, 3 + interact), (move, move - 1)):  # interact first, then move
            if part == 0:
                continue
            if legal[index]:
                gained, won = self._apply(index)
                reward += gained
                success = success or won
            else:
                illegal += 1
        if illegal and self.illegal_move_penalty is not None:
            reward -= illegal * self.illegal_move_penalty
        return self._finish(reward, success, illegal=illegal > 0)

    def _apply(self, a: int) -> tuple[float, bool]:
        """Play the legal ``Discrete(6)`` action ``a``; returns (reward gained, reached the exit)."""
        if a < 4:
            dr, dc = _MOVES[a]
            self.hero = (self.hero[0] + dr, self.hero[1] + dc)
            if self.hero == self.exit:
                return 1.0, True
            return 0.0, False
        if a == PICK:
            self.has_key = True
        else:
            self.door_open = True
            self.cells[self.door] = FLOOR
            self._rows[self.door[0]][self.door[1]] = FLOOR
        return 0.1, False

    def _finish(self, reward: float, success: bool, illegal: bool) -> tuple:
        self.steps += 1
        truncated = not success and self.steps >= self.max_steps
        info = {
            "has_key": self.has_key,
            "door_open": self.door_open,
            "success": success,
            "illegal_action": illegal,
        }
        return self._obs(), reward, success, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        c = 32
        img = draw.canvas(self.size * c, self.size * c)
        for r in range(self.size):
            for col in range(self.size):
                x0, y0 = col * c, r * c
                cell = self.cells[r, col]
                if cell == WALL:
                    draw.fill_rect(img, x0, y0, x0 + c, y0 + c, draw.DARK)
                elif cell == DOOR:
                    draw.fill_rect(img, x0 + 2, y0 + 2, x0 + c - 2, y0 + c - 2, draw.BROWN)
                else:
                    draw.fill_rect(img, x0, y0, x0 + c, y0 + 1, draw.GRID)
                    draw.fill_rect(img, x0, y0, x0 + 1, y0 + c, draw.GRID)
        er, ec = self.exit
        draw.fill_rect(img, ec * c + 4, er * c + 4, ec * c + c - 4, er * c + c - 4, draw.GREEN)
        if not self.has_key:
            kr, kc = self.key
            draw.fill_circle(img, kc * c + c / 2, kr * c + c / 2, c / 5, draw.YELLOW)
        hr, hc = self.hero
        draw.fill_circle(img, hc * c + c / 2, hr * c + c / 2, c / 3, draw.BLUE)
        if self.has_key:
            draw.fill_circle(img, hc * c + c / 2, hr * c + c / 2, c / 8, draw.YELLOW)
        return img

    # -- rules -----------------------------------------------------------------------------------------

    def legal_actions(self) -> np.ndarray:
        """int8, 1 where the action is legal in the current state (whatever the penalty option): ``[6]``
        indexed like ``Discrete(6)``, or with multi-discrete actions ``[8]``, the branch masks concatenated
        (``[none, up, down, left, right, none, pick, open]``)."""
        legal = self._legal()
        if self.multi_discrete:
            legal = [1, *legal[:4], 1, *legal[4:]]
        return np.array(legal, dtype=np.int8)

    def _legal(self) -> list[int]:
        r, c = self.hero
        rows = self._rows  # nested lists: indexing them is much faster than numpy scalar indexing
        legal = [int(rows[r + dr][c + dc] == FLOOR) for dr, dc in _MOVES]
        legal.append(int(not self.has_key and self.hero == self.key))
        dr, dc = self.door[0] - r, self.door[1] - c
        legal.append(int(self.has_key and not self.door_open and abs(dr) + abs(dc) == 1))
        return legal

    def _obs(self) -> dict[str, np.ndarray]:
        n = self.size * self.size
        obs = self._static.copy()
        if not self.door_open:
            obs[n + self.door[0] * self.size + self.door[1]] = 1.0
        if not self.has_key:
            obs[2 * n + self.key[0] * self.size + self.key[1]] = 1.0
        obs[4 * n + self.hero[0] * self.size + self.hero[1]] = 1.0
        tail = 5 * n
        obs[tail] = float(self.has_key)
        obs[tail + 1] = float(self.door_open)
        hr, hc = self.hero
        s = float(self.size)
        for i, (r, c) in enumerate((self.key, self.door, self.exit)):
            obs[tail + 2 + 2 * i] = (c - hc) / s
            obs[tail + 3 + 2 * i] = (r - hr) / s
        if self.illegal_move_penalty is None:
            mask = self.legal_actions()
        else:
            mask = np.ones(self._mask_dim, dtype=np.int8)
        return {"observation": obs, "action_mask": mask}

    # -- generation ------------------------------------------------------------------------------------

    def _generate(self) -> None:
        rng = self.np_random
        s = self.size
        while True:
            cells = np.zeros((s, s), dtype=np.int8)
            cells[0, :] = cells[-1, :] = cells[:, 0] = cells[:, -1] = WALL
            split = int(rng.integers(3, s - 3))  # the inner wall's column; both sides at least 2 wide
            cells[:, split] = WALL
            door = (int(rng.integers(1, s - 1)), split)
            cells[door] = DOOR
            interior = [(r, c) for r in range(1, s - 1) for c in range(1, s - 1) if c != split]
            n_obstacles = int(round(self.obstacle_density * len(interior)))
            blocked = {(door[0], split - 1), (door[0], split + 1)}  # keep the door reachable from both sides
            free = [p for p in interior if p not in blocked]
            for i in rng.permutation(len(free))[:n_obstacles]:
                cells[free[i]] = WALL
            left = [p for p in interior if p[1] < split and cells[p] == FLOOR]
            right = [p for p in interior if p[1] > split and cells[p] == FLOOR]
            if len(left) < 3 or len(right) < 2 or not _connected(cells, left) or not _connected(cells, right):
                continue
            hero, key = (left[i] for i in rng.choice(len(left), size=2, replace=False))
            exit_ = right[int(rng.integers(len(right)))]
            break
        points = [hero, key, door, exit_]
        if rng.random() < 0.5:  # mirror left-right
            cells = cells[:, ::-1]
            points = [(r, s - 1 - c) for r, c in points]
        if rng.random() < 0.5:  # transpose: the split becomes horizontal
            cells = cells.T
            points = [(c, r) for r, c in points]
        self.cells = np.ascontiguousarray(cells)
        self._rows = self.cells.tolist()
        self.hero, self.key, self.door, self.exit = points
        n = s * s
        static = np.zeros(self._obs_dim, dtype=np.float32)
        static[:n] = (self.cells == WALL).reshape(-1)
        static[3 * n + self.exit[0] * s + self.exit[1]] = 1.0
        self._static = static


def _connected(cells: np.ndarray, region: list[tuple[int, int]]) -> bool:
    """Whether the floor cells ``region`` form one 4-connected component (walls and the door block)."""
    todo = set(region)
    start = region[0]
    seen = {start}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in _MOVES:
            p = (r + dr, c + dc)
            if p in todo and p not in seen:
                seen.add(p)
                queue.append(p)
    return len(seen) == len(todo)
