import math

import pytest

from rllib_av.health.q_bound import q_bound, q_bound_ratio, training_reward_range


def test_q_bound_is_largest_abs_reward_over_one_minus_gamma():
    # The incident's numbers: rewards in [-50, 200], gamma 0.99.
    assert math.isclose(q_bound(-50.0, 200.0, 0.99), 20_000.0)
    assert math.isclose(q_bound(-16.27, 0.0, 0.9), 162.7)


def test_q_bound_rejects_bad_gamma_and_inverted_range():
    with pytest.raises(ValueError):
        q_bound(-1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        q_bound(1.0, -1.0, 0.9)


def test_training_reward_range_clips_then_scales():
    assert training_reward_range(-50.0, 200.0, clip=10.0, scale=0.5) == (-5.0, 5.0)
    assert training_reward_range(-50.0, 200.0) == (-50.0, 200.0)
    with pytest.raises(ValueError):
        training_reward_range(-1.0, 1.0, scale=0.0)


def test_q_bound_ratio_uses_largest_magnitude():
    assert q_bound_ratio(10.0, -2.4e6, 5.0, 20_000.0) == pytest.approx(120.0)
