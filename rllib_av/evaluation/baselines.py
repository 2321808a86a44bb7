"""Reference policies for the evaluation table: random, and pure pursuit + PID.

Both read only what the trained policy reads (the observation), so every
number in the table has a floor (random) and a classical reference.
"""

from __future__ import annotations

import math

import numpy as np

from rllib_av.envs.driving_env import SPEED, WAYPOINTS
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.highway_backend import MAX_STEER_RAD

# highway-env's kinematic bicycle turns at v * tan(beta) / (LENGTH / 2) with
# tan(beta) = tan(delta) / 2: the wheelbase of a pure-pursuit model is LENGTH.
HIGHWAY_WHEELBASE_M = 5.0


class RandomPolicy:
    """Uniform actions in [-1, 1]^2 (seeded: reproducible tables)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: dict, info: dict) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, 2).astype(np.float32)


class PurePursuitPID:
    """Steer by pure pursuit on the state vector's ego-frame route waypoints,
    hold the target speed with a PID on throttle_brake.

    Pure pursuit: pick the first waypoint at least ``lookahead`` ahead (it grows
    with speed), steer the front wheels to the arc through it:
    delta = atan(2 L sin(alpha) / d), alpha its bearing, d its distance.
    """

    name = "pure_pursuit"

    def __init__(self, target_speed_mps: float, step_dt_s: float,
                 wheelbase_m: float = HIGHWAY_WHEELBASE_M, max_steer_rad: float = MAX_STEER_RAD,
                 lookahead_min_m: float = 4.0, lookahead_s: float = 0.8,
                 kp: float = 0.5, ki: float = 0.05, kd: float = 0.02):
        self.target_speed, self.dt = target_speed_mps, step_dt_s
        self.wheelbase, self.max_steer = wheelbase_m, max_steer_rad
        self.lookahead_min, self.lookahead_s = lookahead_min_m, lookahead_s
        self.kp, self.ki, self.kd = kp, ki, kd
        self.reset()

    @classmethod
    def for_env(cls, settings: EnvSettings, **kwargs) -> "PurePursuitPID":
        return cls(settings.target_speed_mps, settings.step_dt_s, **kwargs)

    def reset(self) -> None:
        self._integral = 0.0
        self._prev_error = None

    def act(self, obs: dict, info: dict) -> np.ndarray:
        state = np.asarray(obs["state"], np.float64)
        speed, waypoints = state[SPEED], state[WAYPOINTS].reshape(-1, 2)
        return np.array([self.steer(waypoints, speed), self.throttle(speed)], np.float32)

    def steer(self, waypoints: np.ndarray, speed: float) -> float:
        """[-1, 1], > 0 = right; waypoints are (x forward, y left) in metres."""
        dist = np.hypot(waypoints[:, 0], waypoints[:, 1])
        lookahead = max(self.lookahead_min, self.lookahead_s * speed)
        far = np.flatnonzero(dist >= lookahead)
        x, y = waypoints[far[0] if len(far) else -1]
        d = max(math.hypot(x, y), 1e-6)
        alpha = math.atan2(y, x)
        delta = math.atan(2.0 * self.wheelbase * math.sin(alpha) / d)  # > 0 = left
        return float(np.clip(-delta / self.max_steer, -1.0, 1.0))

    def throttle(self, speed: float) -> float:
        error = self.target_speed - speed
        derivative = 0.0 if self._prev_error is None else (error - self._prev_error) / self.dt
        self._prev_error = error
        command = self.kp * error + self.ki * self._integral + self.kd * derivative
        if -1.0 < command < 1.0:  # anti-windup: integrate only while unsaturated
            self._integral += error * self.dt
        return float(np.clip(command, -1.0, 1.0))
