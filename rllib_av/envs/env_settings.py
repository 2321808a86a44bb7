"""The `env:` section of a run config: the driving task, its reward, its backends,
or a gymnasium env and its constructor arguments."""

import dataclasses
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import Field, StrictFloat, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

from rllib_av.config_schema import ConfigError, ConfigSection
from rllib_av.envs.carla_settings import CarlaSettings


Smoothing = Annotated[StrictFloat, Field(ge=0, lt=1)]


@dataclass
class RewardWeights(ConfigSection):
    efficiency: StrictFloat = Field(1.0, ge=0)
    lane_keeping: StrictFloat = Field(0.5, ge=0)
    comfort: StrictFloat = Field(0.5, ge=0)
    safety: StrictFloat = Field(1.0, ge=0)
    progress: StrictFloat = Field(1.0, ge=0)


@dataclass
class RewardSettings(ConfigSection):
    """Each component's raw term is bounded by construction (see reward.py), so
    the per-step range follows from these numbers alone."""

    weights: RewardWeights = Field(default_factory=RewardWeights)
    # efficiency: 1 at the target speed, x (1 + x) / 2 of x = speed/target
    # below it, falling linearly to 0 at env.max_speed_mps above it (reward.py).
    # lane_keeping: -(|lat|/lateral_scale_m + |heading|/heading_scale_rad)/2,
    # each term saturating at 1.
    lateral_scale_m: StrictFloat = Field(2.0, gt=0)
    heading_scale_rad: StrictFloat = Field(0.5, gt=0)
    # comfort: -(pace |jerk|/jerk_scale_mps3 + |steering change|/steer_change_scale)/2,
    # each term saturating at 1 (steering in action units per step, [-1, 1];
    # pace = the step's mean speed / target_speed_mps, capped at 1: reward.py).
    jerk_scale_mps3: StrictFloat = Field(5.0, gt=0)
    steer_change_scale: StrictFloat = Field(0.5, gt=0)
    # safety: event penalties (each per step it is true).
    collision_penalty: StrictFloat = Field(10.0, ge=0)
    off_road_penalty: StrictFloat = Field(2.0, ge=0)
    wrong_way_penalty: StrictFloat = Field(1.0, ge=0)
    # progress: per metre along the route (capped at the target-speed pace,
    # target_speed_mps * step_dt_s per step), per route waypoint passed, once at the goal.
    progress_per_m: StrictFloat = Field(1.0, ge=0)
    waypoint_bonus: StrictFloat = Field(0.0, ge=0)
    goal_bonus: StrictFloat = Field(10.0, ge=0)


@dataclass
class HighwaySettings(ConfigSection):
    """The embedded highway-env backend's circuit."""

    lanes: StrictInt = Field(2, ge=1, le=4)
    lane_width_m: StrictFloat = Field(4.0, ge=2.5, le=6)
    npc_speed_fraction: List[Annotated[StrictFloat, Field(gt=0, le=2)]] = Field(
        default_factory=lambda: [0.6, 0.9])
    """NPC cruise speeds are drawn from this fraction range of env.target_speed_mps."""
    view_m_per_px: StrictFloat = Field(0.5, gt=0.05, le=2)
    """Camera footprint: metres per pixel of the 84x84 top-down view."""

    @model_validator(mode="after")
    def check(self) -> "HighwaySettings":
        lo_hi = self.npc_speed_fraction
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"env.highway.npc_speed_fraction: {lo_hi!r} is not allowed; "
                              "expected [low, high] with low <= high")
        return self


DRIVING_ENV_ID = "driving"


@dataclass
class EnvSettings(ConfigSection):
    id: StrictStr = DRIVING_ENV_ID
    """'driving' = DrivingEnv (configured by every key below but kwargs); anything else is
    a gymnasium id such as 'Pendulum-v1', or 'my_module:MyEnv-v0' (gymnasium imports
    my_module, which registers it)."""
    kwargs: Dict[StrictStr, Any] = Field(default_factory=dict)
    """A gymnasium env's constructor arguments (and gymnasium.make's own, e.g.
    max_episode_steps): gymnasium.make(id, **kwargs). The only key besides id a
    gymnasium id takes."""
    backend: Literal["highway", "carla"] = "highway"
    traffic: Literal["none", "light", "medium", "heavy"] = "light"
    """NPC traffic around the ego vehicle."""
    num_waypoints: StrictInt = Field(10, ge=1, le=100)
    """Next K route waypoints in the state vector, spaced along the lane centre."""
    waypoint_spacing_m: StrictFloat = Field(3.0, gt=0)
    route_length_m: StrictFloat = Field(300.0, gt=0)
    """The goal lies this far along the route from the spawn point."""
    max_episode_steps: StrictInt = Field(1000, ge=1)
    step_dt_s: StrictFloat = Field(0.1, gt=0, le=1)
    """Simulated seconds per env step (every backend runs at this rate)."""
    target_speed_mps: StrictFloat = Field(8.0, gt=0)
    max_speed_mps: StrictFloat = Field(15.0, gt=0)
    """The ego vehicle's speed cap."""
    off_road_tolerance_steps: StrictInt = Field(2, ge=0)
    """Consecutive off-road steps allowed before the episode terminates (0 = none)."""
    action_smoothing: Union[Smoothing, List[Smoothing]] = 0.0
    """Control applied = this x the previous control + (1 - this) x the action: a
    first-order actuator lag that keeps a jittery policy from jerking the car (0 = the
    action as is). One number for both channels, or [steer, throttle_brake]: pedals
    can take a longer lag than steering, which must answer a curve or a car ahead
    within a few steps. The state vector reports the applied control."""
    initial_speed_fraction: StrictFloat = Field(0.0, ge=0, le=1)
    """Spawn speed as a fraction of target_speed_mps (0 = start at rest)."""
    reward: RewardSettings = Field(default_factory=RewardSettings)
    highway: HighwaySettings = Field(default_factory=HighwaySettings)
    carla: CarlaSettings = Field(default_factory=CarlaSettings)

    @model_validator(mode="after")
    def check(self) -> "EnvSettings":
        if self.id != DRIVING_ENV_ID:
            key = _first_set_driving_key(self)
            if key is not None:
                raise ConfigError(
                    f"{key[0]}: {key[1]!r} does not apply to env.id {self.id!r} (a gymnasium "
                    "id; DrivingEnv's keys are ignored by it); expected it unset, and the env's "
                    "constructor arguments (or gymnasium.make's max_episode_steps) in env.kwargs")
            return self
        if self.kwargs:
            raise ConfigError(f"env.kwargs: {self.kwargs!r} does not apply to env.id "
                              f"{DRIVING_ENV_ID!r}; expected {{}} (DrivingEnv is configured by "
                              "the other env.* keys)")
        if isinstance(self.action_smoothing, list) and len(self.action_smoothing) != 2:
            raise ConfigError(
                f"env.action_smoothing: {self.action_smoothing!r} is not allowed; expected a "
                "number in [0, 1), or [steer, throttle_brake] of two")
        if self.target_speed_mps > self.max_speed_mps:
            raise ConfigError(
                f"env.target_speed_mps: {self.target_speed_mps} is not allowed; expected "
                f"<= env.max_speed_mps ({self.max_speed_mps})"
            )
        return self


def _first_set_driving_key(env: EnvSettings) -> Optional[tuple]:
    """(dotted key, value) of the first DrivingEnv key that ``env`` sets away
    from its default."""
    for name, info in EnvSettings.__pydantic_fields__.items():
        if name not in ("id", "kwargs"):
            found = _first_difference(getattr(env, name),
                                      info.get_default(call_default_factory=True), f"env.{name}")
            if found is not None:
                return found
    return None


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
