import math

import pytest

from rllib_av.health.q_bound import (
    declared_reward_range, q_bound, q_bound_ratio, training_q_bound, training_reward_range,
)
from rllib_av.health.statistics import Q_VALUES
from rllib_av.run_config import load_run_config


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


@pytest.mark.parametrize("declared,clip,expected", [
    ((-20.0, -2.0), 1.0, (-1.0, -1.0)),   # wholly below: every reward becomes -clip
    ((3.0, 8.0), 1.0, (1.0, 1.0)),        # wholly above
    ((-20.0, 0.5), 1.0, (-1.0, 0.5)),     # one end inside
])
def test_clipping_maps_the_interval_not_its_ends(declared, clip, expected):
    lo, hi = training_reward_range(*declared, clip=clip)
    assert (lo, hi) == expected and lo <= hi
    assert q_bound(lo, hi, 0.99) == pytest.approx(max(map(abs, expected)) / 0.01)


def test_training_q_bound_never_raises():
    assert training_q_bound((-20.0, -2.0), 0.99, clip=1.0) == pytest.approx(100.0)
    assert training_q_bound(None, 0.99) is None
    assert training_q_bound((-1.0, 1.0), 0.99, scale=0.0) is None  # degenerate scale
    assert training_q_bound((-1.0, 1.0), 0.99, scale=math.inf) is None


def test_q_bound_ratio_covers_every_q_statistic_on_both_ends():
    quiet = {k: 1.0 for k in Q_VALUES}
    for key in Q_VALUES:
        assert q_bound_ratio(dict(quiet, **{key: -2.4e6}), 20_000.0) == pytest.approx(120.0), key
    # Every Q the learner reports, by name: dropping one from the spec (issue 21's
    # mutation 3 dropped q_target_max) shrinks the loop above with it.
    assert set(Q_VALUES) == {"q1_mean", "q2_mean", "q_target_mean", "q_target_max",
                             "q_target_min", "q_actor_mean", "q_actor_max", "q_actor_min"}
    assert q_bound_ratio({"critic_loss": 5.0}, 1.0) is None
    assert math.isnan(q_bound_ratio(dict(quiet, q1_mean=math.nan), 1.0))


def test_declared_reward_range_prefers_the_run_config():
    rc = load_run_config(None, ["env.id=Pendulum-v1"])
    assert declared_reward_range(rc.env) is None
    assert declared_reward_range(rc.env, [-16.3, 0]) == (-16.3, 0.0)
    driving = load_run_config(None)
    lo, hi = declared_reward_range(driving.env)
    assert lo < 0 < hi
