"""A driving task only the camera can solve: a stalled truck in lane 0 or lane 1.

``StalledTruckEnv`` is DrivingEnv on the embedded backend with two changes:
the ego starts on the line between the two lanes, and a stalled truck stands
``AHEAD_M`` along the route, on the centre of lane 0 (the route's lane) or of
lane 1, a coin flip per episode (``reset(options={"truck_lane": k})`` picks
it). The state vector is the same either way; only the camera shows which lane
is blocked. From the middle, either way round the truck is a short move.

Why no policy that ignores the image can pass both: the truck (``WIDTH`` 2.6 m)
stands on a lane centre, the lane centres are 4 m apart and the ego is 2 m
wide, so the ego clears the lane-0 truck only at lateral >= 2.3 m and the
lane-1 truck only at lateral <= 1.7 m; the road ends at -2 m and 6 m
(``off_road_tolerance_steps: 0`` ends the episode on the first step off it).
Two episodes with the same seed and different truck lanes give an
image-blind deterministic policy the same states until a collision, so it
drives the same line past both trucks and reaches the goal in at most one.
"""

from __future__ import annotations

import numpy as np
from highway_env.vehicle.kinematics import Vehicle

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.envs.highway_backend import HighwayBackend

AHEAD_M = 25.0

TASK_ENV = {
    "traffic": "none", "route_length_m": AHEAD_M + 20.0, "max_episode_steps": 100,
    "waypoint_spacing_m": 2.0, "target_speed_mps": 6.0, "max_speed_mps": 10.0,
    "initial_speed_fraction": 1.0, "off_road_tolerance_steps": 0,
}


class StalledTruck(Vehicle):
    LENGTH = 6.0
    WIDTH = 2.6


class StalledTruckBackend(HighwayBackend):
    truck_lane = None  # the next reset's lane; None: a coin flip

    def _spawn_npcs(self, count: int) -> None:
        super()._spawn_npcs(count)
        width = self.settings.highway.lane_width_m
        self.ego.position = self.ego.position + width / 2 * _left(self.ego.heading)
        lane = int(self._rng.integers(2)) if self.truck_lane is None else self.truck_lane
        xy, heading = self.line.pose_at(np.array(self._s0 + AHEAD_M))
        self.truck = StalledTruck(self.road, xy + lane * width * _left(heading), float(heading), 0.0)
        self.road.vehicles.append(self.truck)


def _left(heading: float) -> np.ndarray:
    return np.array([-np.sin(heading), np.cos(heading)])


class StalledTruckEnv(DrivingEnv):
    def __init__(self, env_config=None, render_mode=None):
        super().__init__(env_config, render_mode)
        self.backend = StalledTruckBackend(self.settings)

    def reset(self, *, seed=None, options=None):
        self.backend.truck_lane = (options or {}).get("truck_lane")
        return super().reset(seed=seed, options=options)
