"""``agentkit/Moving-v0``: drive a vehicle into a target area and stop there, with hybrid actions.

In the spirit of gym-hybrid's parameterised-action "Moving" task (Masson et al.'s Robot Soccer family):
each step the agent picks one action *type* and only that type's continuous parameter matters.

Action: ``HybridSpace`` with types
    ``accelerate(magnitude)``  magnitude in [0, 1]: speed += magnitude * max_acceleration (capped at max_speed)
    ``turn(angle)``            angle in [-max_turn, max_turn] radians, added to the heading
    ``brake()``                speed -= brake_value (not below 0)
then the vehicle moves ``dt * speed`` along its heading; the arena's walls (``[-1, 1]^2``) stop it.

Reward (gym-hybrid's scale): ``previous_distance - distance - step_penalty`` every step, plus ``goal_bonus``
(1.0) when a ``brake`` leaves the vehicle at speed 0 inside the target circle; that ends the episode
(terminated). Episodes are truncated after ``max_steps``. The start and the target are uniform in the arena,
so the best possible mean return is about 1.9 (mean start distance ≈ 1.0, minus the target radius, plus the
bonus); DI-engine's hybrid PPO stops training gym-hybrid's Moving-v0 at 1.8.

Observation, float32 ``[9]`` (gym-hybrid's): x, y, speed, cos/sin of the heading, target x, y, distance to
the target, and the elapsed fraction of the time limit. ``observe_bearing=True`` (an easier variant) adds
the cos/sin of the target's bearing in the vehicle's frame (``[11]``), so the policy need not work out
the steering angle from positions and heading itself.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentkit.spaces import HybridSpace

from . import draw

ACCELERATE, TURN, BRAKE = 0, 1, 2


class MovingEnv(gym.Env):
    """The Moving game. Keyword arguments tune the physics and the reward; defaults are the shipped task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        render_mode: str | None = None,
        max_steps: int = 200,
        target_radius: float = 0.1,
        max_acceleration: float = 0.5,
        max_speed: float = 1.0,
        max_turn: float = math.pi / 2,
        brake_value: float = 0.5,
        dt: float = 0.1,
        step_penalty: float = 0.001,
        goal_bonus: float = 1.0,
        observe_bearing: bool = False,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_steps < 1 or target_radius <= 0 or max_speed <= 0 or dt <= 0 or max_turn <= 0:
            raise ValueError("MovingEnv: max_steps, target_radius, max_speed, dt and max_turn must be positive")
        self.render_mode = render_mode
        self.max_steps = max_steps
        self.target_radius = target_radius
        self.max_acceleration = max_acceleration
        self.max_speed = max_speed
        self.max_turn = max_turn
        self.brake_value = brake_value
        self.dt = dt
        self.step_penalty = step_penalty
        self.goal_bonus = goal_bonus
        self.observe_bearing = observe_bearing

        self.action_space = HybridSpace(
            types={"accelerate": ["magnitude"], "turn": ["angle"], "brake": []},
            params={"magnitude": (0.0, 1.0), "angle": (-max_turn, max_turn)},
        )
        diag = 2.0 * math.sqrt(2.0)
        low = [-1, -1, 0, -1, -1, -1, -1, 0] + ([-1, -1] if observe_bearing else []) + [0]
        high = [1, 1, max_speed, 1, 1, 1, 1, diag] + ([1, 1] if observe_bearing else []) + [1]
        low, high = np.array(low, dtype=np.float32), np.array(high, dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

        self.x = self.y = self.heading = self.speed = 0.0
        self.tx = self.ty = 0.0
        self.steps = 0

    # -- gymnasium API ---------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        lim = 1.0 - self.target_radius
        self.tx, self.ty = (float(v) for v in rng.uniform(-lim, lim, size=2))
        self.x, self.y = (float(v) for v in rng.uniform(-1.0, 1.0, size=2))
        self.heading = float(rng.uniform(0.0, 2.0 * math.pi))
        self.speed = 0.0
        self.steps = 0
        return self._obs(), {"distance": self._distance(), "success": False}

    def step(self, action):
        kind, params = action
        kind = int(kind)
        if kind == ACCELERATE:
            magnitude = min(max(float(params[0]), 0.0), 1.0)
            self.speed = min(self.speed + magnitude * self.max_acceleration, self.max_speed)
        elif kind == TURN:
            angle = min(max(float(params[1]), -self.max_turn), self.max_turn)
            self.heading = (self.heading + angle) % (2.0 * math.pi)
        elif kind == BRAKE:
            self.speed = max(self.speed - self.brake_value, 0.0)
        else:
            raise ValueError(f"MovingEnv: action type must be 0 (accelerate), 1 (turn) or 2 (brake), got {kind}")

        before = self._distance()
        x = self.x + self.dt * self.speed * math.cos(self.heading)
        y = self.y + self.dt * self.speed * math.sin(self.heading)
        if abs(x) > 1.0 or abs(y) > 1.0:  # the wall stops the vehicle
            x, y = min(max(x, -1.0), 1.0), min(max(y, -1.0), 1.0)
            self.speed = 0.0
        self.x, self.y = x, y
        self.steps += 1

        after = self._distance()
        reward = before - after - self.step_penalty
        success = kind == BRAKE and self.speed == 0.0 and after <= self.target_radius
        if success:
            reward += self.goal_bonus
        truncated = not success and self.steps >= self.max_steps
        return self._obs(), float(reward), success, truncated, {"distance": after, "success": success}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        size = 256
        img = draw.canvas(size, size)
        for g in (-0.5, 0.0, 0.5):
            a, _ = draw.world_to_px(g, 0.0, 1.0, size)
            draw.fill_rect(img, a, 0, a + 1, size, draw.GRID)
            draw.fill_rect(img, 0, a, size, a + 1, draw.GRID)
        tx, ty = draw.world_to_px(self.tx, self.ty, 1.0, size)
        scale = size / 2.0
        draw.fill_circle(img, tx, ty, self.target_radius * scale, (200, 235, 200))
        draw.ring(img, tx, ty, self.target_radius * scale, draw.GREEN)
        vx, vy = draw.world_to_px(self.x, self.y, 1.0, size)
        hx, hy = draw.world_to_px(
            self.x + 0.08 * math.cos(self.heading), self.y + 0.08 * math.sin(self.heading), 1.0, size
        )
        draw.line(img, vx, vy, hx, hy, draw.DARK, width=3.0)
        draw.fill_circle(img, vx, vy, 6.0, draw.BLUE)
        # speed bar along the bottom edge
        draw.fill_rect(img, 0, size - 4, size * self.speed / self.max_speed, size, draw.YELLOW)
        return img

    # -- internals -------------------------------------------------------------------------------------

    def _distance(self) -> float:
        return math.hypot(self.tx - self.x, self.ty - self.y)

    def _obs(self) -> np.ndarray:
        dx, dy = self.tx - self.x, self.ty - self.y
        dist = math.hypot(dx, dy)
        c, s = math.cos(self.heading), math.sin(self.heading)
        values = [self.x, self.y, self.speed, c, s, self.tx, self.ty, dist]
        if self.observe_bearing:
            if dist > 1e-9:
                # bearing of the target in the vehicle's frame
                values.append(min(max((dx * c + dy * s) / dist, -1.0), 1.0))
                values.append(min(max((dy * c - dx * s) / dist, -1.0), 1.0))
            else:
                values += (1.0, 0.0)
        values.append(self.steps / self.max_steps)
        return np.array(values, dtype=np.float32)
