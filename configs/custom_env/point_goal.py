"""An example custom environment: a point that must reach a goal on a plane.

configs/custom_env.yaml trains on it through a module-qualified gymnasium id,
``env.id: "point_goal:PointGoal-v0"``: gymnasium imports this module (it must
be importable, e.g. ``PYTHONPATH=configs/custom_env``), whose import registers
the id. ``env.kwargs`` reach the constructor (and gymnasium.make's own
``max_episode_steps``).

Per step the reward is minus the distance to the goal, in [-2 sqrt(2), 0]
(both points lie in [-1, 1]^2), plus ``goal_bonus`` on the step that reaches
it, which ends the episode (terminated); the time limit truncates it. So the
per-step range to declare (``training.reward_range``) is
[-2 sqrt(2), goal_bonus].
"""

import math

import gymnasium as gym
import numpy as np

MAX_DISTANCE = 2 * math.sqrt(2)  # corner to corner of [-1, 1]^2


class PointGoal(gym.Env):
    def __init__(self, max_speed: float = 0.1, goal_radius: float = 0.1,
                 goal_bonus: float = 10.0):
        self.max_speed, self.goal_radius, self.goal_bonus = max_speed, goal_radius, goal_bonus
        # Own position, then the goal relative to it.
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)  # velocity / max_speed

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {}

    def step(self, action):
        move = np.clip(np.asarray(action, np.float64), -1, 1) * self.max_speed
        self.pos = np.clip(self.pos + move, -1, 1)
        distance = float(np.linalg.norm(self.goal - self.pos))
        reached = distance <= self.goal_radius
        reward = -distance + (self.goal_bonus if reached else 0.0)
        return self._obs(), reward, reached, False, {}

    def _obs(self):
        return np.concatenate([self.pos, self.goal - self.pos]).astype(np.float32)


if "PointGoal-v0" not in gym.registry:  # a second import (a Ray worker) finds it there
    gym.register("PointGoal-v0", entry_point=PointGoal, max_episode_steps=200)
