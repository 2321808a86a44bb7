"""The update-to-data rate limiter and the learner-ceiling warning (pure: no Ray)."""

import pytest

from rllib_av.algorithms.td3.rate_limiter import Throughput, UpdateRateLimiter


def test_learner_is_handed_only_what_is_owed_and_sampling_waits_past_the_error_buffer():
    limiter = UpdateRateLimiter(ratio=0.5, error_buffer=10)
    assert limiter.take(100) == 0  # nothing sampled: the learner waits, never overtrains
    limiter.add(9)
    assert limiter.take(100) == 4 and limiter.owed == pytest.approx(0.5)  # 4.5 owed, whole updates
    assert limiter.may_sample
    limiter.add(16)  # 8.5 owed + 4 under way > 10: the learner is behind
    assert not limiter.may_sample
    limiter.done(4)
    assert limiter.may_sample and limiter.take(3) == 3  # at most what a call may make


def test_updates_track_the_ratio_over_any_window():
    """Fragments of 16 steps arrive; the learner takes at most 4 updates per call:
    over every window the updates done stay within the error buffer of ratio x steps."""
    limiter = UpdateRateLimiter(ratio=2.0, error_buffer=40)
    steps = updates = 0
    for i in range(200):
        if limiter.may_sample:
            limiter.add(16)
            steps += 16
        for _ in range(3):  # the learner makes three calls per arrival
            n = limiter.take(4)
            limiter.done(n)
            updates += n
        assert abs(updates - 2.0 * steps) <= 40 + 2.0 * 16
    assert updates / steps == pytest.approx(2.0, rel=0.05)


def test_a_learner_slower_than_the_runners_is_reported_once_with_the_numbers():
    t = Throughput()
    t.sampled(1000, 1.0)  # one runner: 1000 env steps/s
    t.learned(500, 1.0)  # the learner: 500 updates/s
    assert t.shortfall(1.0, num_runners=2) is not None
    assert t.shortfall(1.0, num_runners=2) is None  # once
    t = Throughput()
    t.sampled(1000, 1.0)
    t.learned(500, 1.0)
    message = t.shortfall(1.0, num_runners=2)
    assert "training.updates_per_env_step" in message and "\n" not in message
    assert "2000 env steps/s" in message and "500" in message
    ok = Throughput()
    ok.sampled(1000, 1.0)
    ok.learned(600, 1.0)
    assert ok.shortfall(0.25, num_runners=2) is None  # 500 updates/s needed, 600 made
