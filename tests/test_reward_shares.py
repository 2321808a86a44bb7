"""Reward component shares: a share of a total that is rounding noise is no
data, so neither the exporter (RllibAvRewardComponentDominates), metrics.jsonl
nor the diagnosis sees a component "dominating" a reward of ~0."""

import pytest

from rllib_av.health.health_monitor import HealthMonitor
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.iteration_metrics import from_result, reward_shares
from rllib_av.monitoring.synthetic_results import synthetic_result

QUICKSTART_RANGE = (-14.55, 11.5)
STANDING_STILL = {"efficiency": 0.0, "lane_keeping": 4.1e-16, "comfort": 0.0, "safety": 0.0,
                  "progress": 0.0}


def test_shares_of_rounding_noise_are_no_data():
    assert reward_shares(STANDING_STILL, QUICKSTART_RANGE) == {}
    assert reward_shares(dict.fromkeys(STANDING_STILL, 0.0), QUICKSTART_RANGE) == {}


def test_small_but_real_rewards_still_have_shares():
    # A car creeping along: 1e-3 per step is small, not noise, against a scale of 14.55.
    shares = reward_shares({**STANDING_STILL, "lane_keeping": 1e-3, "efficiency": 3e-3},
                           QUICKSTART_RANGE)
    assert shares["efficiency"] == pytest.approx(0.75)
    assert shares["lane_keeping"] == pytest.approx(0.25)


def test_the_monitor_and_the_metrics_record_judge_shares_against_the_declared_range():
    result = synthetic_result(3)
    result["env_runners"]["reward_components_abs"] = dict(STANDING_STILL)
    health = HealthMonitor(HealthSettings(), 2, reward_range=QUICKSTART_RANGE).judge(result)
    assert health.metrics.reward_share == {}
    # metrics.jsonl's record is made from the same result and range.
    assert from_result(result, 2, QUICKSTART_RANGE).reward_share == {}
    healthy = HealthMonitor(HealthSettings(), 2, reward_range=QUICKSTART_RANGE).judge(
        synthetic_result(3))
    assert healthy.metrics.reward_share["efficiency"] == pytest.approx(0.6 / 1.37)
