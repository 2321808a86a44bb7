"""Edges of the Q bound that the formula's own tests leave open (found by
mutation testing: each assertion fails on a mutant that survived them)."""

import pytest

from rllib_av.health.q_bound import q_bound, training_reward_range


def test_gamma_zero_is_a_one_step_horizon():
    assert q_bound(-3.0, 2.0, 0.0) == 3.0


def test_a_constant_reward_is_a_valid_range():
    assert q_bound(-1.0, -1.0, 0.5) == 2.0


def test_bad_arguments_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\), got 1.0"):
        q_bound(-1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"r_min \(1.0\) > r_max \(-1.0\)"):
        q_bound(1.0, -1.0, 0.9)
    with pytest.raises(ValueError, match="scale must be a positive finite number, got 0.0"):
        training_reward_range(-1.0, 1.0, scale=0.0)
