"""The update-to-data rate limiter and the learner-ceiling warning (pure: no Ray)."""

import pytest

from rllib_av.algorithms.td3.rate_limiter import Throughput, UpdateRateLimiter


def test_learner_is_handed_only_what_is_owed_and_sampling_waits_past_the_error_buffer():
    limiter = UpdateRateLimiter(ratio=0.5, error_buffer=10)
    assert limiter.take(100) == 0  # nothing sampled: the learner waits, never overtrains
    limiter.add(9)
    assert limiter.take(100) == 4 and limiter.owed == pytest.approx(0.5)  # 4.5 owed, whole updates
    assert limiter.may_sample(0, 8)  # 0.5 owed + 4 under way + 4 to be owed
    assert not limiter.may_sample(4, 8)  # ... + 2 for the 4 steps already asked for
    limiter.add(16)  # 8.5 owed + 4 under way > 10: the learner is behind
    assert not limiter.may_sample(0, 1)
    limiter.done(4)
    assert limiter.may_sample(0, 2) and limiter.take(3) == 3  # at most what a call may make


def test_backlog_stays_within_the_error_buffer_with_every_runner_sampling():
    """Four runners ask for 16-step fragments whenever the limiter lets them and
    deliver them a few rounds later; the learner is slower than they are. The
    updates owed and under way never exceed the error buffer (steps asked for
    count from the moment they are asked for, so fragments in flight when the
    learner falls behind cannot push it past), and over the run updates /
    env steps stays within 5% of the ratio."""
    ratio, steps_per_fragment = 2.0, 16
    limiter = UpdateRateLimiter(ratio=ratio, error_buffer=ratio * 4 * steps_per_fragment + 8)
    out = {}  # runner -> rounds until its fragment is back
    steps = updates = 0
    for round_ in range(1000):
        for runner in [r for r, left in out.items() if left == 0]:
            del out[runner]
            limiter.add(steps_per_fragment)
            steps += steps_per_fragment
        out = {r: left - 1 for r, left in out.items()}
        for runner in range(4):
            if runner not in out and limiter.may_sample(steps_per_fragment * len(out),
                                                        steps_per_fragment):
                out[runner] = 1 + (runner + round_) % 3
        n = limiter.take(4)  # one call of at most 4 updates per round: slower than the runners
        updates += n
        assert limiter.owed + limiter.under_way <= limiter.error_buffer
        limiter.done(n)
    assert steps > 1500 and updates / steps == pytest.approx(ratio, rel=0.05)


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
