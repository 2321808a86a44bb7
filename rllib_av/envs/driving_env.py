"""DrivingEnv: the one observation/action/reward contract over any backend.

Observation ``{"image": uint8 (84, 84), "state": float32 (5 + 2K,)}`` with state
= [speed m/s, lateral deviation m, heading error rad, steer, throttle_brake
(the control applied over the last step), K waypoints (x fwd, y left) m];
action ``[steer, throttle_brake]`` in [-1, 1] (steer > 0 = right,
throttle_brake < 0 = brake). One frame per step: the 4-frame stack is built
by RLlib connectors so the replay buffer stores each frame once.

The control applied is the action low-pass filtered by
``env.action_smoothing`` (a first-order actuator lag; 0 = the action as is).
The state reports it, as a car reports its steering angle and pedals: the
comfort reward prices a change of control, and a critic that cannot see the
control it changes from could not learn that price.

Episode ends: terminated on collision, on more than
``env.off_road_tolerance_steps`` consecutive off-road steps, or at the goal;
truncated at ``env.max_episode_steps`` or when the simulator fails
(``info["sim_failure"]``); the backend recovers on the next reset and
``info["sim_server_restarts"]`` carries each recovery once.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import gymnasium as gym
import numpy as np

from rllib_av.config_schema import from_dict
from rllib_av.envs.backend import SimulatorFailure, Snapshot
from rllib_av.envs.backends import make_backend
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import COMPONENTS, StepOutcome, reward_components

IMAGE_SHAPE = (84, 84)
# The state vector's layout.
SPEED, LATERAL, HEADING = 0, 1, 2
CONTROLS = slice(3, 5)  # [steer, throttle_brake] applied over the last step (0 after a reset)
WAYPOINTS = slice(5, None)  # K (x forward, y left) pairs, m
# Generous physical limits for the state Box; values are clipped into it.
_SPEED_MAX, _LATERAL_MAX, _WAYPOINT_MAX = 100.0, 100.0, 500.0


def env_settings(env_config: Union[None, EnvSettings, Mapping[str, Any]]) -> EnvSettings:
    """The typed ``env:`` section from what RLlib hands an env (a dict)."""
    if env_config is None:
        return EnvSettings()
    if isinstance(env_config, EnvSettings):
        return env_config
    return from_dict(EnvSettings, dict(env_config), "env")


def route_completion(info: Mapping[str, Any]) -> float:
    """Fraction of the route driven, from a step's ``info``."""
    return min(info["route_progress_m"] / info["route_length_m"], 1.0)


class DrivingEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, env_config=None, render_mode: Optional[str] = None):
        self.settings = env_settings(env_config)
        self.render_mode = render_mode
        k = self.settings.num_waypoints
        high = np.array([_SPEED_MAX, _LATERAL_MAX, np.pi, 1.0, 1.0] + [_WAYPOINT_MAX] * (2 * k),
                        np.float32)
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, IMAGE_SHAPE, np.uint8),
            "state": gym.spaces.Box(-high, high, dtype=np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        # (steer, throttle_brake) lag: one number applies to both.
        self._smoothing = np.broadcast_to(np.asarray(self.settings.action_smoothing, np.float64), 2)
        # RLlib hands an EnvContext (a dict with .worker_index): 1..N for remote EnvRunners.
        self.backend = make_backend(self.settings,
                                    runner_index=getattr(env_config, "worker_index", 0))
        self._restarts_reported = 0
        self._snap: Optional[Snapshot] = None
        self._obs = None

    def reset(self, *, seed: Optional[int] = None, options=None):
        super().reset(seed=seed)
        self._snap = self.backend.reset(seed=seed)
        self._steps = 0
        self._off_road_steps = 0
        self._prev_accel = 0.0
        self._control = np.zeros(2)
        self._obs = self._observe(self._snap)
        return self._obs, self._info(self._snap, dict.fromkeys(COMPONENTS + ("total",), 0.0))

    def step(self, action):
        action = np.clip(np.nan_to_num(np.asarray(action, np.float64)), -1, 1)
        prev_control = self._control
        smoothing = self._smoothing
        self._control = smoothing * prev_control + (1 - smoothing) * action
        steer, throttle_brake = self._control
        prev = self._snap
        self._steps += 1
        try:
            snap = self.backend.step(float(steer), float(throttle_brake))
            if not _finite(snap):
                raise SimulatorFailure("backend returned a non-finite snapshot")
        except SimulatorFailure:
            # The world failed, not the policy: cut the episode without a
            # terminal so the critic bootstraps from the last good state.
            zeros = dict.fromkeys(COMPONENTS + ("total",), 0.0)
            info = self._info(prev, zeros, end="sim_failure")
            info["sim_failure"] = True
            return self._obs, 0.0, False, True, info

        accel = (snap.speed - prev.speed) / self.settings.step_dt_s
        components = reward_components(self.settings, StepOutcome(
            speed=snap.speed, prev_speed=prev.speed, prev_accel=self._prev_accel,
            steer_change=float(steer - prev_control[0]),
            lateral_deviation=snap.lateral_deviation, heading_error=snap.heading_error,
            progress_delta=snap.route_progress - prev.route_progress,
            waypoints_delta=snap.waypoints_passed - prev.waypoints_passed,
            collision=snap.collision, off_road=snap.off_road, wrong_way=snap.wrong_way,
            goal_reached=snap.goal_reached,
        ))
        self._prev_accel = accel
        self._off_road_steps = self._off_road_steps + 1 if snap.off_road else 0

        end = None
        if snap.collision:
            end = "collision"
        elif self._off_road_steps > self.settings.off_road_tolerance_steps:
            end = "off_road"
        elif snap.goal_reached:
            end = "goal"
        elif self._steps >= self.settings.max_episode_steps:
            end = "step_limit"
        self._snap = snap
        self._obs = self._observe(snap)
        terminated = end in ("collision", "off_road", "goal")
        truncated = end == "step_limit"
        return self._obs, components["total"], terminated, truncated, self._info(snap, components, end)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.backend.render_topdown()
        return None

    def close(self):
        self.backend.close()

    # -- internals ------------------------------------------------------------
    def _observe(self, snap: Snapshot):
        state = np.concatenate([
            [snap.speed, snap.lateral_deviation, snap.heading_error], self._control,
            np.asarray(snap.waypoints_ego, np.float64).reshape(-1),
        ]).astype(np.float32)
        space = self.observation_space["state"]
        return {"image": np.asarray(snap.frame, np.uint8),
                "state": np.clip(state, space.low, space.high)}

    def _info(self, snap: Snapshot, components, end: Optional[str] = None):
        return {
            "reward_components": components,
            "route_progress_m": snap.route_progress,
            "route_length_m": snap.route_length,
            "speed_mps": snap.speed,
            "collision": snap.collision,
            "off_road": snap.off_road,
            "wrong_way": snap.wrong_way,
            "goal_reached": snap.goal_reached,
            "position": snap.position,
            "episode_end": end,
            "sim_failure": False,
            # Simulator relaunches since the previous info (the callback sums them).
            "sim_server_restarts": self._new_restarts(),
        }

    def _new_restarts(self) -> int:
        total = getattr(self.backend, "server_restarts", 0)
        new, self._restarts_reported = total - self._restarts_reported, total
        return new


def _finite(snap: Snapshot) -> bool:
    return bool(np.isfinite([snap.speed, snap.lateral_deviation, snap.heading_error,
                             snap.route_progress]).all()
                and np.isfinite(snap.waypoints_ego).all())
