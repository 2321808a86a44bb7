"""Each reward component's value, worked out by hand from the settings' own
definitions (env_settings.RewardSettings), in the regime where no term
saturates. The other reward tests check bounds, sums and directions; mutation
testing showed a wrong scale or sign inside a term got past all of them."""

import pytest

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import StepOutcome, raw_components

CFG = EnvSettings()  # target 8 m/s, cap 15 m/s, dt 0.1 s; lateral 2 m, heading 0.5 rad, jerk 5,
# steering change 0.5


def raw(**kw):
    base = dict(speed=8.0, prev_speed=8.0, prev_accel=0.0, steer_change=0.0, lateral_deviation=0.0,
                heading_error=0.0, progress_delta=0.0, waypoints_delta=0, collision=False,
                off_road=False, wrong_way=False, goal_reached=False)
    return raw_components(CFG, StepOutcome(**{**base, **kw}))


def test_the_defaults_these_numbers_assume():
    r = CFG.reward
    assert (CFG.target_speed_mps, CFG.max_speed_mps, CFG.step_dt_s) == (8.0, 15.0, 0.1)
    assert (r.lateral_scale_m, r.heading_scale_rad, r.jerk_scale_mps3, r.steer_change_scale) == \
        (2.0, 0.5, 5.0, 0.5)


def test_efficiency_below_and_above_the_target_speed():
    # x = 6 / 8 below the target: x (1 + x) / 2.
    assert raw(speed=6.0, prev_speed=6.0)["efficiency"] == pytest.approx(0.75 * 1.75 / 2)
    assert raw()["efficiency"] == pytest.approx(1.0)  # at the target
    # 2 m/s over, linear to 0 at the 15 m/s cap: 1 - 2 / 7.
    assert raw(speed=10.0, prev_speed=10.0)["efficiency"] == pytest.approx(5 / 7)


def test_lane_keeping_averages_the_scaled_lateral_and_heading_errors():
    # -(0.5 / 2 + 0.1 / 0.5) / 2
    assert raw(lateral_deviation=-0.5, heading_error=0.1)["lane_keeping"] == pytest.approx(-0.225)


def test_comfort_averages_the_scaled_jerk_and_steering_change():
    # accel = (8.01 - 8.0) / 0.1 = 0.1 m/s^2; jerk = (0.1 - 0) / 0.1 = 1 m/s^3: -(1 / 5) / 2.
    assert raw(speed=8.01)["comfort"] == pytest.approx(-0.1)
    assert raw(steer_change=-0.25)["comfort"] == pytest.approx(-0.25)  # -(0.25 / 0.5) / 2
    assert raw(speed=8.01, steer_change=0.25)["comfort"] == pytest.approx(-0.35)
    # Accelerating after braking: accel +2, jerk (2 + 1) / 0.1 = 30; a full
    # steering swing: both saturated.
    assert raw(speed=8.2, prev_accel=-1.0, steer_change=2.0)["comfort"] == pytest.approx(-1.0)


def test_comfort_prices_the_jerk_per_metre_below_the_target_pace():
    # The same 1 m/s^3 at half the target speed: the step's mean speed 4.005
    # over the 8 m/s target scales the jerk half, -(4.005 / 8 x 1 / 5) / 2.
    assert raw(speed=4.01, prev_speed=4.0)["comfort"] == pytest.approx(-4.005 / 8 / 5 / 2)
    # At rest the jerk costs nothing, the steering change its full price.
    assert raw(speed=0.0, prev_speed=0.0, prev_accel=3.0)["comfort"] == 0.0
    assert raw(speed=0.0, prev_speed=0.0, steer_change=0.25)["comfort"] == pytest.approx(-0.25)
    # Above the target the price is capped at the full one (as at 8 m/s above).
    assert raw(speed=12.01, prev_speed=12.0)["comfort"] == pytest.approx(-0.1)


def test_progress_pays_at_most_the_target_pace_and_the_waypoints_it_passes():
    # The target pace, 8 m/s * 0.1 s = 0.8 m per step, at 1 per metre.
    assert raw(progress_delta=0.5)["progress"] == pytest.approx(0.5)
    assert raw(progress_delta=1.2)["progress"] == pytest.approx(0.8)
    # Waypoints 2 m apart: ceil(0.8 / 2) = 1 per step at most.
    cfg = from_dict(EnvSettings, {"waypoint_spacing_m": 2.0,
                                  "reward": {"waypoint_bonus": 0.5, "progress_per_m": 0.0}}, "env")
    outcome = StepOutcome(speed=8.0, prev_speed=8.0, prev_accel=0.0, steer_change=0.0,
                          lateral_deviation=0.0, heading_error=0.0, progress_delta=0.8,
                          waypoints_delta=3, collision=False, off_road=False, wrong_way=False,
                          goal_reached=False)
    assert raw_components(cfg, outcome)["progress"] == pytest.approx(0.5)
