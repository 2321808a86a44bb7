"""Run a policy on DrivingEnv and record what the driving metrics and videos need.

A policy is anything with ``name``, ``reset()`` and ``act(obs, info) -> action``
(the trained TD3 policy in trained_policy.py, the baselines in baselines.py).
Episode ``i`` is reset with seed ``seed + i``, so every policy evaluated with
the same seed drives from the same spawn points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Container, Dict, List, Optional, Protocol

import numpy as np

from rllib_av.envs.driving_env import DrivingEnv, route_completion


class Policy(Protocol):
    name: str

    def reset(self) -> None: ...

    def act(self, obs: dict, info: dict) -> np.ndarray: ...


@dataclass
class EpisodeTrace:
    """One episode; per-state lists start with the reset state (len = steps + 1),
    per-step lists (actions, rewards, components) have one entry per step."""

    step_dt_s: float
    speed_mps: List[float] = field(default_factory=list)
    lateral_m: List[float] = field(default_factory=list)
    heading_rad: List[float] = field(default_factory=list)
    collision: List[bool] = field(default_factory=list)
    off_road: List[bool] = field(default_factory=list)
    actions: List[np.ndarray] = field(default_factory=list)
    rewards: List[float] = field(default_factory=list)
    components: List[Dict[str, float]] = field(default_factory=list)
    goal_reached: bool = False
    route_completion: float = 0.0
    episode_end: Optional[str] = None
    # Filled only for episodes chosen for video: the policy's camera frame and
    # the env's top-down render, per state.
    camera: List[np.ndarray] = field(default_factory=list)
    topdown: List[np.ndarray] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    def record_state(self, obs: dict, info: dict, env: Optional[DrivingEnv]) -> None:
        state = obs["state"]
        self.speed_mps.append(float(info["speed_mps"]))
        self.lateral_m.append(float(state[1]))
        self.heading_rad.append(float(state[2]))
        self.collision.append(bool(info["collision"]))
        self.off_road.append(bool(info["off_road"]))
        self.goal_reached = bool(info["goal_reached"])
        self.route_completion = route_completion(info)
        if env is not None:
            self.camera.append(np.array(obs["image"], np.uint8))
            self.topdown.append(env.render())


def run_episodes(env: DrivingEnv, policy: Policy, num_episodes: int, seed: int = 0,
                 record_frames: Container[int] = ()) -> List[EpisodeTrace]:
    """``num_episodes`` episodes of ``policy``; frames for the indices in ``record_frames``
    (the env needs ``render_mode="rgb_array"`` for those)."""
    return [run_episode(env, policy, seed + i, i in record_frames) for i in range(num_episodes)]


def run_episode(env: DrivingEnv, policy: Policy, seed: int,
                record_frames: bool = False) -> EpisodeTrace:
    framed = env if record_frames else None
    trace = EpisodeTrace(step_dt_s=env.settings.step_dt_s)
    obs, info = env.reset(seed=seed)
    policy.reset()
    trace.record_state(obs, info, framed)
    done = False
    while not done:
        action = np.asarray(policy.act(obs, info), np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.actions.append(action)
        trace.rewards.append(float(reward))
        trace.components.append(dict(info["reward_components"]))
        trace.record_state(obs, info, framed)
        trace.episode_end = info["episode_end"] or ("sim_failure" if info["sim_failure"] else None)
        done = terminated or truncated
    return trace
