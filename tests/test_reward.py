"""The reward is pure, its components add up, and reward_range() truly bounds it."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import (COMPONENTS, StepOutcome, raw_components, reward_components,
                                  reward_range)


def _random_settings(rng) -> EnvSettings:
    weights = {k: float(rng.choice([0.0, rng.uniform(0, 5)])) for k in COMPONENTS}
    max_speed = float(rng.uniform(1, 40))
    return from_dict(EnvSettings, {
        "target_speed_mps": float(rng.uniform(0.5, 1.0)) * max_speed,
        "max_speed_mps": max_speed,
        "step_dt_s": float(rng.choice([0.05, 0.1, 0.2])),
        "waypoint_spacing_m": float(rng.uniform(0.5, 5)),
        "reward": {
            "weights": weights,
            "lateral_scale_m": float(rng.uniform(0.5, 3)),
            "heading_scale_rad": float(rng.uniform(0.1, 1)),
            "jerk_scale_mps3": float(rng.uniform(1, 50)),
            "steer_change_scale": float(rng.uniform(0.05, 2)),
            "collision_penalty": float(rng.uniform(0, 100)),
            "off_road_penalty": float(rng.uniform(0, 10)),
            "wrong_way_penalty": float(rng.uniform(0, 10)),
            "progress_per_m": float(rng.uniform(0, 3)),
            "waypoint_bonus": float(rng.uniform(0, 2)),
            "goal_bonus": float(rng.uniform(0, 200)),
        },
    }, "env")


def _random_outcome(rng, cfg: EnvSettings) -> StepOutcome:
    # Wild inputs on purpose: backends may report anything (teleports, reversing,
    # huge jumps); the bound must hold regardless.
    def speed():
        return float(rng.choice([0.0, cfg.target_speed_mps, rng.uniform(-10, 3 * cfg.max_speed_mps)]))

    return StepOutcome(
        speed=speed(), prev_speed=speed(), prev_accel=float(rng.uniform(-200, 200)),
        steer_change=float(rng.uniform(-2, 2)),
        lateral_deviation=float(rng.uniform(-50, 50)), heading_error=float(rng.uniform(-np.pi, np.pi)),
        progress_delta=float(rng.uniform(-20, 50)), waypoints_delta=int(rng.integers(-3, 30)),
        collision=bool(rng.integers(2)), off_road=bool(rng.integers(2)),
        wrong_way=bool(rng.integers(2)), goal_reached=bool(rng.integers(2)),
    )


def test_reward_range_bounds_every_step_for_random_configs_and_inputs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cfg = _random_settings(rng)
        lo, hi = reward_range(cfg)
        totals = [reward_components(cfg, _random_outcome(rng, cfg))["total"] for _ in range(200)]
        assert lo - 1e-9 <= min(totals) and max(totals) <= hi + 1e-9, (cfg, lo, hi)


def _extreme(cfg: EnvSettings, best: bool) -> StepOutcome:
    big = 1e3
    return StepOutcome(
        speed=cfg.target_speed_mps if best else 3 * cfg.max_speed_mps,
        prev_speed=cfg.target_speed_mps if best else 0.0,
        prev_accel=0.0 if best else -big, steer_change=0.0 if best else 2.0,
        lateral_deviation=0.0 if best else big, heading_error=0.0 if best else np.pi,
        progress_delta=big if best else -big, waypoints_delta=int(big) if best else 0,
        collision=not best, off_road=not best, wrong_way=not best, goal_reached=best,
    )


def test_reward_range_is_attained_at_both_ends():
    """The bound is tight: the best and the worst step reach it exactly, so a
    wrong formula on either side fails."""
    cfg = from_dict(EnvSettings, {"reward": {"waypoint_bonus": 0.5}}, "env")
    lo, hi = reward_range(cfg)
    assert reward_components(cfg, _extreme(cfg, best=True))["total"] == pytest.approx(hi)
    assert reward_components(cfg, _extreme(cfg, best=False))["total"] == pytest.approx(lo)
    # The default config's numbers, for the Q bound's reader.
    assert reward_range(EnvSettings()) == pytest.approx((-14.0, 11.8))


def test_components_are_weighted_and_sum_to_total():
    rng = np.random.default_rng(1)
    cfg = _random_settings(rng)
    o = _random_outcome(rng, cfg)
    raw = raw_components(cfg, o)
    out = reward_components(cfg, o)
    assert set(out) == set(COMPONENTS) | {"total"}
    for k in COMPONENTS:
        assert out[k] == pytest.approx(getattr(cfg.reward.weights, k) * raw[k])
    assert out["total"] == pytest.approx(sum(out[k] for k in COMPONENTS))


def test_components_react_to_what_they_measure():
    cfg = EnvSettings()
    base = dict(speed=cfg.target_speed_mps, prev_speed=cfg.target_speed_mps, prev_accel=0.0,
                steer_change=0.0,
                lateral_deviation=0.0, heading_error=0.0, progress_delta=0.8, waypoints_delta=0,
                collision=False, off_road=False, wrong_way=False, goal_reached=False)

    def r(**kw):
        return reward_components(cfg, StepOutcome(**{**base, **kw}))

    assert r()["efficiency"] > r(speed=cfg.target_speed_mps / 2, prev_speed=cfg.target_speed_mps / 2)["efficiency"]
    assert r()["efficiency"] > r(speed=cfg.max_speed_mps, prev_speed=cfg.max_speed_mps)["efficiency"]
    assert r()["lane_keeping"] > r(lateral_deviation=1.0)["lane_keeping"] > r(lateral_deviation=3.0)["lane_keeping"]
    assert r()["lane_keeping"] > r(heading_error=-0.3)["lane_keeping"]
    assert r()["comfort"] == 0.0 > r(prev_accel=5.0)["comfort"]
    assert r()["comfort"] > r(steer_change=0.1)["comfort"] > r(steer_change=-0.7)["comfort"]
    assert r()["safety"] == 0.0 > r(off_road=True)["safety"] > r(collision=True)["safety"]
    assert r(progress_delta=0.0)["progress"] < r()["progress"] < r(goal_reached=True)["progress"]


def test_reward_is_pure():
    cfg = EnvSettings()
    before = dataclasses.asdict(cfg)
    o = _extreme(cfg, best=False)
    assert reward_components(cfg, o) == reward_components(cfg, o)
    assert dataclasses.asdict(cfg) == before
    # No simulator behind it: importing the reward loads neither backend.
    code = ("import sys, rllib_av.envs.reward; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('highway_env', 'carla', 'pygame')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _steady(cfg, speed):
    """Components of a step on the lane centre at a constant ``speed``."""
    return reward_components(cfg, StepOutcome(
        speed=speed, prev_speed=speed, prev_accel=0.0, steer_change=0.0,
        lateral_deviation=0.0, heading_error=0.0, progress_delta=speed * cfg.step_dt_s,
        waypoints_delta=0, collision=False, off_road=False, wrong_way=False, goal_reached=False))


def test_the_target_speed_pays_best_per_step_and_per_metre():
    """The speed incentive points at the target from both sides: per step,
    nothing beats it (metres beyond the target pace earn no progress, so the
    overspeed penalty is never bought back); per metre of route, driving
    slower pays strictly less (else a route would pay the same at any speed
    below the target). And no speed is paid below zero, so leaving the road
    to end an episode never pays."""
    cfg = from_dict(EnvSettings, {"target_speed_mps": 6.0, "max_speed_mps": 10.0}, "env")
    speeds = np.linspace(0.5, 10.0, 39)
    per_step = np.array([_steady(cfg, v)["total"] for v in speeds])
    assert speeds[np.argmax(per_step)] == pytest.approx(6.0, abs=0.25)
    assert np.all(np.diff(per_step[speeds >= 6.0]) < 0)
    below = speeds <= 6.0
    per_metre = per_step[below] / (speeds[below] * cfg.step_dt_s)
    assert np.all(np.diff(per_metre) > 0)
    assert min(_steady(cfg, v)["efficiency"] for v in np.linspace(0, 12, 49)) >= 0.0
