"""The driving reward: five weighted components, pure functions of one step.

No simulator is imported here: every backend's ``Snapshot`` is reduced to a
``StepOutcome`` and scored the same way. Each component's raw term is bounded
by construction (saturations and caps below), so ``reward_range`` is a true
per-step bound computed from the config alone; it feeds the critic's Q bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

from rllib_av.envs.env_settings import EnvSettings

COMPONENTS = ("efficiency", "lane_keeping", "comfort", "safety", "progress")


@dataclass(frozen=True)
class StepOutcome:
    """What the reward reads from one env step."""

    speed: float  # m/s after the step
    prev_speed: float  # m/s before the step
    prev_accel: float  # m/s^2 over the previous step (0 after a reset)
    steer_change: float  # steering command minus the previous one (0 before the first step)
    lateral_deviation: float  # m
    heading_error: float  # rad
    progress_delta: float  # m along the route during the step
    waypoints_delta: int  # route waypoints passed during the step
    collision: bool
    off_road: bool
    wrong_way: bool
    goal_reached: bool


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _max_progress_per_step(cfg: EnvSettings) -> float:
    """Progress earns up to the target-speed pace: faster driving gains nothing,
    so efficiency's overspeed penalty is never outweighed (uncapped, the
    quickstart agent drove 37% over its target speed for the metres)."""
    return cfg.target_speed_mps * cfg.step_dt_s


def _max_waypoints_per_step(cfg: EnvSettings) -> int:
    return math.ceil(_max_progress_per_step(cfg) / cfg.waypoint_spacing_m)


def raw_components(cfg: EnvSettings, o: StepOutcome) -> Dict[str, float]:
    """Unweighted component terms (see ``raw_ranges`` for their bounds)."""
    r = cfg.reward
    v_star = cfg.target_speed_mps
    # Never negative, so that ending an episode early (off the road) never pays.
    # Below the target, x (1 + x) / 2 of x = speed/target: per metre driven,
    # efficiency plus progress then grows with speed up to the target (with x
    # alone a route would pay the same at any speed below it), and moving off
    # from rest still pays at once (x^2 would not). Linear down to 0 at
    # max_speed_mps, so throttle matters up to the cap.
    if o.speed <= v_star:
        x = _clip(o.speed / v_star, 0.0, 1.0)
        efficiency = x * (1.0 + x) / 2
    elif cfg.max_speed_mps > v_star:
        efficiency = max(1.0 - (o.speed - v_star) / (cfg.max_speed_mps - v_star), 0.0)
    else:
        efficiency = 0.0
    lane_keeping = -0.5 * (min(abs(o.lateral_deviation) / r.lateral_scale_m, 1.0)
                           + min(abs(o.heading_error) / r.heading_scale_rad, 1.0))
    accel = (o.speed - o.prev_speed) / cfg.step_dt_s
    jerk = (accel - o.prev_accel) / cfg.step_dt_s
    # Longitudinal jerk and the steering rate, half each: a policy that flips
    # its steering every step rides as badly as one that pumps the brake.
    # The jerk is priced per metre of the ride, as progress pays: scaled by
    # the step's mean speed over the target (capped at 1: full price at
    # cruise). Per second, standing still dodged it: braking at rest moves
    # nothing at any pedal, while a step off from rest cost up to the whole
    # jerk half (-0.25 at the quickstart's weights) for ~0.02 of efficiency;
    # a young critic's Q then peaked at the brake/throttle boundary and the
    # actor stood there. Per metre, a gentle start's price grows with the
    # square of its throttle and its pay linearly, so moving off always pays
    # at once. The steering half costs the same standing or moving.
    pace = min((abs(o.speed) + abs(o.prev_speed)) / 2 / v_star, 1.0)
    comfort = -0.5 * (pace * min(abs(jerk) / r.jerk_scale_mps3, 1.0)
                      + min(abs(o.steer_change) / r.steer_change_scale, 1.0))
    safety = -(r.collision_penalty * o.collision + r.off_road_penalty * o.off_road
               + r.wrong_way_penalty * o.wrong_way)
    progress = (r.progress_per_m * _clip(o.progress_delta, 0.0, _max_progress_per_step(cfg))
                + r.waypoint_bonus * _clip(o.waypoints_delta, 0, _max_waypoints_per_step(cfg))
                + r.goal_bonus * o.goal_reached)
    return dict(efficiency=efficiency, lane_keeping=lane_keeping, comfort=comfort,
                safety=safety, progress=progress)


def raw_ranges(cfg: EnvSettings) -> Dict[str, Tuple[float, float]]:
    r = cfg.reward
    return dict(
        efficiency=(0.0, 1.0),  # 1 at the target speed; 0 at rest, reversing (CARLA), max speed
        lane_keeping=(-1.0, 0.0),
        comfort=(-1.0, 0.0),
        safety=(-(r.collision_penalty + r.off_road_penalty + r.wrong_way_penalty), 0.0),
        progress=(0.0, r.progress_per_m * _max_progress_per_step(cfg)
                  + r.waypoint_bonus * _max_waypoints_per_step(cfg) + r.goal_bonus),
    )


def reward_components(cfg: EnvSettings, o: StepOutcome) -> Dict[str, float]:
    """Weighted components plus their sum under ``"total"``."""
    w = cfg.reward.weights
    out = {k: getattr(w, k) * v for k, v in raw_components(cfg, o).items()}
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out


def reward_range(cfg: EnvSettings) -> Tuple[float, float]:
    """(r_min, r_max): every step's total reward lies in this interval."""
    w = cfg.reward.weights
    lo = hi = 0.0
    for k, (a, b) in raw_ranges(cfg).items():
        lo += getattr(w, k) * a
        hi += getattr(w, k) * b
    return lo, hi
