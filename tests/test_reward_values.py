"""Each reward component's value, worked out by hand from the settings' own
definitions (env_settings.RewardSettings), in the regime where no term
saturates. The other reward tests check bounds, sums and directions; mutation
testing showed a wrong scale or sign inside a term got past all of them."""

import pytest

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import StepOutcome, raw_components

CFG = EnvSettings()  # target 8 m/s, dt 0.1 s; overspeed 2, lateral 2 m, heading 0.5 rad, jerk 30


def raw(**kw):
    base = dict(speed=8.0, prev_speed=8.0, prev_accel=0.0, lateral_deviation=0.0,
                heading_error=0.0, progress_delta=0.0, waypoints_delta=0, collision=False,
                off_road=False, wrong_way=False, goal_reached=False)
    return raw_components(CFG, StepOutcome(**{**base, **kw}))


def test_the_defaults_these_numbers_assume():
    r = CFG.reward
    assert (CFG.target_speed_mps, CFG.step_dt_s) == (8.0, 0.1)
    assert (r.overspeed_penalty, r.lateral_scale_m, r.heading_scale_rad, r.jerk_scale_mps3) == \
        (2.0, 2.0, 0.5, 30.0)


def test_efficiency_below_and_above_the_target_speed():
    assert raw(speed=6.0, prev_speed=6.0)["efficiency"] == pytest.approx(0.75)  # 6 / 8
    # 2 m/s over: 1 - 2 * 2 / 8.
    assert raw(speed=10.0, prev_speed=10.0)["efficiency"] == pytest.approx(0.5)


def test_lane_keeping_averages_the_scaled_lateral_and_heading_errors():
    # -(0.5 / 2 + 0.1 / 0.5) / 2
    assert raw(lateral_deviation=-0.5, heading_error=0.1)["lane_keeping"] == pytest.approx(-0.225)


def test_comfort_is_the_scaled_jerk():
    # accel = (8.2 - 8.0) / 0.1 = 2 m/s^2; jerk = (2 - 1) / 0.1 = 10 m/s^3; -10 / 30.
    assert raw(speed=8.2, prev_accel=1.0)["comfort"] == pytest.approx(-1 / 3)
    # Braking after accelerating: accel -2, jerk (-2 - 1) / 0.1 = -30: saturated.
    assert raw(speed=7.8, prev_accel=1.0)["comfort"] == pytest.approx(-1.0)
    assert raw(speed=8.05, prev_accel=0.2)["comfort"] == pytest.approx(-0.1)  # jerk 3


def test_progress_counts_at_most_the_waypoints_one_step_can_pass():
    # 10 m/s * 0.1 s = 1 m per step at most; waypoints 2 m apart: ceil(1 / 2) = 1.
    cfg = from_dict(EnvSettings, {"max_speed_mps": 10.0, "waypoint_spacing_m": 2.0,
                                  "reward": {"waypoint_bonus": 0.5, "progress_per_m": 0.0}}, "env")
    outcome = StepOutcome(speed=8.0, prev_speed=8.0, prev_accel=0.0, lateral_deviation=0.0,
                          heading_error=0.0, progress_delta=0.8, waypoints_delta=3,
                          collision=False, off_road=False, wrong_way=False, goal_reached=False)
    assert raw_components(cfg, outcome)["progress"] == pytest.approx(0.5)
