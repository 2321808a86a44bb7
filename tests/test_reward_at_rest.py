"""Standing still is never the best step from rest.

At rest, braking (any amount) or coasting leaves the car where it is: speed 0,
no jerk, no metres, so every such action earns the same reward. Moving off
must earn strictly more at once, for every weight setting, target speed,
step length and jerk scale, or a young critic's Q peaks at the brake/throttle
boundary and a deterministic actor can settle there (the quickstart's seed 0
did, at training.actor_preactivation_l2 0.1). Moving off is modelled as the
physics does it: from rest, constant acceleration a over one step.
"""

import itertools

import numpy as np
import pytest

from rllib_av.config_schema import from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import StepOutcome, reward_components

WEIGHTS = [dict(efficiency=e, progress=p, comfort=c)
           for e, p, c in itertools.product([0.0, 0.5, 1.0, 3.0], [0.0, 1.0], [0.25, 0.5, 1.0, 3.0])
           if e + p > 0]  # with neither, nothing pays for driving at all
ACCELS = np.geomspace(1e-3, 8.0, 60)  # m/s^2 over the first step


def _settings(weights, target, dt, jerk_scale) -> EnvSettings:
    return from_dict(EnvSettings, {
        "target_speed_mps": target, "max_speed_mps": 1.5 * target, "step_dt_s": dt,
        "reward": {"weights": {**weights, "lane_keeping": 1.0}, "jerk_scale_mps3": jerk_scale},
    }, "env")


def _step_from_rest(cfg, accel, steer_change=0.1):
    """The reward of one step from rest (off the lane centre, so lane keeping is
    in play), at constant ``accel`` (0: any brake or coasting)."""
    dt = cfg.step_dt_s
    return reward_components(cfg, StepOutcome(
        speed=accel * dt, prev_speed=0.0, prev_accel=0.0, steer_change=steer_change,
        lateral_deviation=0.3, heading_error=0.02, progress_delta=accel * dt * dt / 2,
        waypoints_delta=0, collision=False, off_road=False, wrong_way=False,
        goal_reached=False))["total"]


@pytest.mark.parametrize("target,dt,jerk_scale", [(3.0, 0.1, 5.0), (6.0, 0.1, 5.0),
                                                  (8.0, 0.05, 1.0), (15.0, 0.2, 20.0),
                                                  (30.0, 0.1, 2.0)])
def test_moving_off_pays_strictly_more_than_staying_at_rest(target, dt, jerk_scale):
    for weights in WEIGHTS:
        cfg = _settings(weights, target, dt, jerk_scale)
        stay = _step_from_rest(cfg, 0.0)
        move = np.array([_step_from_rest(cfg, a) for a in ACCELS])
        # The gentlest start already beats standing: a gradient out of rest.
        assert move[0] > stay, (weights, move[0], stay)
        # And the reward keeps rising from rest for a while (not a lucky point).
        assert move[1] > move[0], weights
