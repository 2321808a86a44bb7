"""The `env:` section of a run config: the driving task, its reward, its backends,
or a gymnasium env and its constructor arguments."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from rllib_av.config_schema import ConfigError, bounds, choices
from rllib_av.envs.carla_settings import CarlaSettings


@dataclass
class RewardWeights:
    efficiency: float = field(default=1.0, metadata=bounds(ge=0))
    lane_keeping: float = field(default=0.5, metadata=bounds(ge=0))
    comfort: float = field(default=0.5, metadata=bounds(ge=0))
    safety: float = field(default=1.0, metadata=bounds(ge=0))
    progress: float = field(default=1.0, metadata=bounds(ge=0))


@dataclass
class RewardSettings:
    """Each component's raw term is bounded by construction (see reward.py), so
    the per-step range follows from these numbers alone."""

    weights: RewardWeights = field(default_factory=RewardWeights)
    # efficiency: 1 at the target speed, x (1 + x) / 2 of x = speed/target
    # below it, falling linearly to 0 at env.max_speed_mps above it (reward.py).
    # lane_keeping: -(|lat|/lateral_scale_m + |heading|/heading_scale_rad)/2,
    # each term saturating at 1.
    lateral_scale_m: float = field(default=2.0, metadata=bounds(gt=0))
    heading_scale_rad: float = field(default=0.5, metadata=bounds(gt=0))
    # comfort: -(|jerk|/jerk_scale_mps3 + |steering change|/steer_change_scale)/2,
    # each term saturating at 1 (steering in action units per step, [-1, 1]).
    jerk_scale_mps3: float = field(default=5.0, metadata=bounds(gt=0))
    steer_change_scale: float = field(default=0.5, metadata=bounds(gt=0))
    # safety: event penalties (each per step it is true).
    collision_penalty: float = field(default=10.0, metadata=bounds(ge=0))
    off_road_penalty: float = field(default=2.0, metadata=bounds(ge=0))
    wrong_way_penalty: float = field(default=1.0, metadata=bounds(ge=0))
    # progress: per metre along the route (capped at the target-speed pace,
    # target_speed_mps * step_dt_s per step), per route waypoint passed, once at the goal.
    progress_per_m: float = field(default=1.0, metadata=bounds(ge=0))
    waypoint_bonus: float = field(default=0.0, metadata=bounds(ge=0))
    goal_bonus: float = field(default=10.0, metadata=bounds(ge=0))


@dataclass
class HighwaySettings:
    """The embedded highway-env backend's circuit."""

    lanes: int = field(default=2, metadata=bounds(ge=1, le=4))
    lane_width_m: float = field(default=4.0, metadata=bounds(ge=2.5, le=6))
    # NPC cruise speeds are drawn from this fraction range of env.target_speed_mps.
    npc_speed_fraction: list[float] = field(default_factory=lambda: [0.6, 0.9],
                                            metadata=bounds(gt=0, le=2))
    # Camera footprint: metres per pixel of the 84x84 top-down view.
    view_m_per_px: float = field(default=0.5, metadata=bounds(gt=0.05, le=2))

    def check(self) -> None:
        lo_hi = self.npc_speed_fraction
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"env.highway.npc_speed_fraction: {lo_hi!r} is not allowed; "
                              "expected [low, high] with low <= high")


DRIVING_ENV_ID = "driving"


@dataclass
class EnvSettings:
    # "driving" = DrivingEnv (configured by every key below but kwargs);
    # anything else is a gymnasium id such as "Pendulum-v1", or
    # "my_module:MyEnv-v0" (gymnasium imports my_module, which registers it).
    id: str = DRIVING_ENV_ID
    # A gymnasium env's constructor arguments (and gymnasium.make's own, e.g.
    # max_episode_steps): gymnasium.make(id, **kwargs). The only key besides id
    # a gymnasium id takes.
    kwargs: Dict[str, Any] = field(default_factory=dict)
    backend: str = field(default="highway", metadata=choices("highway", "carla"))
    # NPC traffic around the ego vehicle.
    traffic: str = field(default="light", metadata=choices("none", "light", "medium", "heavy"))
    # Next K route waypoints in the state vector, spaced along the lane centre.
    num_waypoints: int = field(default=10, metadata=bounds(ge=1, le=100))
    waypoint_spacing_m: float = field(default=3.0, metadata=bounds(gt=0))
    # The goal lies this far along the route from the spawn point.
    route_length_m: float = field(default=300.0, metadata=bounds(gt=0))
    max_episode_steps: int = field(default=1000, metadata=bounds(ge=1))
    # Simulated seconds per env step (every backend runs at this rate).
    step_dt_s: float = field(default=0.1, metadata=bounds(gt=0, le=1))
    target_speed_mps: float = field(default=8.0, metadata=bounds(gt=0))
    # The ego vehicle's speed cap.
    max_speed_mps: float = field(default=15.0, metadata=bounds(gt=0))
    # Consecutive off-road steps allowed before the episode terminates (0 = none).
    off_road_tolerance_steps: int = field(default=2, metadata=bounds(ge=0))
    # Control applied = this x the previous control + (1 - this) x the action:
    # a first-order actuator lag that keeps a jittery policy from jerking the
    # car (0 = the action as is). The state vector reports the applied control.
    action_smoothing: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    # Spawn speed as a fraction of target_speed_mps (0 = start at rest).
    initial_speed_fraction: float = field(default=0.0, metadata=bounds(ge=0, le=1))
    reward: RewardSettings = field(default_factory=RewardSettings)
    highway: HighwaySettings = field(default_factory=HighwaySettings)
    carla: CarlaSettings = field(default_factory=CarlaSettings)

    def check(self) -> None:
        if self.id != DRIVING_ENV_ID:
            key = _first_difference(self, EnvSettings(id=self.id, kwargs=self.kwargs), "env")
            if key is not None:
                raise ConfigError(
                    f"{key[0]}: {key[1]!r} does not apply to env.id {self.id!r} (a gymnasium "
                    "id; DrivingEnv's keys are ignored by it); expected it unset, and the env's "
                    "constructor arguments (or gymnasium.make's max_episode_steps) in env.kwargs")
            return
        if self.kwargs:
            raise ConfigError(f"env.kwargs: {self.kwargs!r} does not apply to env.id "
                              f"{DRIVING_ENV_ID!r}; expected {{}} (DrivingEnv is configured by "
                              "the other env.* keys)")
        if self.target_speed_mps > self.max_speed_mps:
            raise ConfigError(
                f"env.target_speed_mps: {self.target_speed_mps} is not allowed; expected "
                f"<= env.max_speed_mps ({self.max_speed_mps})"
            )


def _first_difference(value, default, key: str) -> Optional[tuple]:
    """(dotted key, value) of the first leaf where ``value`` differs from ``default``."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            found = _first_difference(getattr(value, f.name), getattr(default, f.name),
                                      f"{key}.{f.name}")
            if found is not None:
                return found
        return None
    return None if value == default else (key, value)
