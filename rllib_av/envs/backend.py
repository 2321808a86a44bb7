"""The seam between DrivingEnv and a simulator.

DrivingEnv owns the observation/action contract, the reward and the episode
ends; a backend only moves a car in a world and reports what happened, in SI
units, as a ``Snapshot``. Training code never sees which backend it has.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional

import numpy as np


class SimulatorFailure(RuntimeError):
    """The simulator crashed or a tick did not return in time.

    DrivingEnv truncates the episode (the state was fine; the world failed)
    and asks the backend to recover on the next reset.
    """


@dataclass
class Snapshot:
    """What the ego vehicle's world looks like after a reset or a step."""

    frame: np.ndarray  # uint8 (84, 84) grayscale front view
    speed: float  # m/s, forward
    lateral_deviation: float  # m from the route's lane centre, left positive
    heading_error: float  # rad, vehicle yaw minus route yaw, wrapped to [-pi, pi]
    waypoints_ego: np.ndarray  # float32 (K, 2) next route points, ego frame (x fwd, y left), m
    route_progress: float  # m driven along the route since reset (monotone, >= 0)
    route_length: float  # m from spawn to goal
    waypoints_passed: int  # route waypoints passed since reset
    collision: bool  # a collision happened during the last step
    off_road: bool  # the vehicle is outside the drivable area / its lane's road
    wrong_way: bool  # driving against the lane direction
    goal_reached: bool
    position: tuple = (0.0, 0.0)  # world x, y in m (for evaluation and videos)


class DrivingBackend(abc.ABC):
    """A simulator world with one ego vehicle following one route."""

    #: seconds of simulated time per ``step``
    dt: float = 0.1

    @abc.abstractmethod
    def reset(self, seed: Optional[int] = None) -> Snapshot:
        """Start a new route (new ego, new traffic); recover a failed simulator."""

    @abc.abstractmethod
    def step(self, steer: float, throttle_brake: float) -> Snapshot:
        """Apply [steer, throttle_brake] in [-1, 1] for ``dt`` seconds.

        Raises ``SimulatorFailure`` when the simulator does not answer.
        """

    def render_topdown(self) -> Optional[np.ndarray]:
        """An RGB top-down view with the route, for videos; None if unsupported."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release every actor and connection this backend created."""
