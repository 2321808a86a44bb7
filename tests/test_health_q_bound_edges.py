"""Edges of the Q bound that the formula's own tests leave open (found by
mutation testing: each assertion fails on a mutant that survived them)."""

import pytest

from rllib_av.health.q_bound import (
    interval_excursion, judged_interval, observed_q_bound, q_bound, q_span,
    training_return_interval, training_reward_range,
)


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


def test_a_critic_above_a_negative_interval_is_named_against_where_it_started():
    """Returns in [-200, -100]: the judged interval is widened up to 0 (where an
    untrained critic starts), and a Q above that names both ends, the
    widened one it left and the true one."""
    stats = {"q_return_min": -200.0, "q_return_max": -100.0,
             "q_actor_max": 5.0, "q_actor_min": -150.0}
    e = interval_excursion(stats, 0.99, 0.01)
    assert (e.key, e.above, e.end, e.true_end) == ("q_actor_max", True, 0.0, -100.0)
    assert str(e) == ("q_actor_max 5 above 0 (where an untrained critic starts; the highest "
                      "true return is -100) by 5 (allowed 2)")


def test_an_observed_interval_needs_both_ends_and_starts_at_zero_by_default():
    """Without a declared range the observed one is judged only when both of
    its ends are known; with no start span given the critic started at 0, and
    a start span on one side of 0 still reaches 0."""
    assert judged_interval({"q_return_min_observed": 1.0}) is None
    assert judged_interval({"q_return_max_observed": 2.0}) is None
    assert judged_interval({"q_return_min_observed": 1.0, "q_return_max_observed": 2.0}) == \
        (1.0, 2.0, 0.0, 0.0)
    observed = {"q_return_min_observed": 1.0, "q_return_max_observed": 2.0}
    assert judged_interval(observed, start=(0.5, 3.0)) == (1.0, 2.0, 0.0, 3.0)
    assert judged_interval(observed, start=(-3.0, -0.5)) == (1.0, 2.0, -3.0, 0.0)


def test_a_mapped_interval_defaults_to_unscaled_rewards():
    assert training_return_interval((-1.0, 2.0), 0.5) == (-2.0, 4.0)


def test_an_observed_bound_counts_small_rewards_and_rewards_level_with_the_start():
    """Rewards bounded by 0.5 still bound the critic; a rewards bound equal to
    the critic's initial |Q| is enough to tell them apart."""
    assert observed_q_bound(0.5, 0.0) == 0.5
    assert observed_q_bound(0.3, 0.3) == 0.6


def test_the_start_span_is_the_lowest_and_highest_q_present():
    """Missing and NaN statistics left out; None when none is left."""
    assert q_span({"q_actor_min": -2.0, "q_actor_max": 5.0, "q1_mean": float("nan")}) == \
        (-2.0, 5.0)
    assert q_span({"q1_mean": 3.0}) == (3.0, 3.0)
    assert q_span({"q1_mean": float("nan")}) is None
    assert q_span({}) is None


def test_an_excursion_is_strictly_past_its_slack_at_either_end():
    """gamma 0.5, no spread slack: one step's reward span, 0.5 x the judged
    interval's width, is the slack. Returns in [-8, -4], widened up to 0: Q
    may reach 0 + 4; returns in [4, 8], widened down to 0: Q may reach 0 - 4."""
    below_zero = {"q_return_min": -8.0, "q_return_max": -4.0, "q_actor_min": -6.0}
    assert interval_excursion({**below_zero, "q_actor_max": 4.0}, 0.5, 0.0) is None
    assert interval_excursion({**below_zero, "q_actor_max": 4.5}, 0.5, 0.0).excess == 4.5
    above_zero = {"q_return_min": 4.0, "q_return_max": 8.0, "q_actor_max": 6.0}
    assert interval_excursion({**above_zero, "q_actor_min": -4.0}, 0.5, 0.0) is None
    assert interval_excursion({**above_zero, "q_actor_min": -4.5}, 0.5, 0.0).excess == 4.5


def test_a_symmetric_interval_leaves_both_ends_to_the_bound():
    """|Q| <= q_bound already judges both ends of [-100, 100]: however far Q
    leaves it, on either side, no excursion is reported."""
    symmetric = {"q_return_min": -100.0, "q_return_max": 100.0}
    for q in (-1000.0, 1000.0):
        assert interval_excursion({**symmetric, "q_actor_min": q}, 0.99, 0.0) is None
