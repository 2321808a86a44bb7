import math

import pytest

from rllib_av.config_schema import ConfigError, from_dict
from rllib_av.health.divergence import DivergenceState, NonfiniteStreak, bound_ratio, judge
from rllib_av.health.health_settings import HealthSettings

S = HealthSettings()
# Rewards in [-50, 200], gamma 0.99: q_bound = 20000.
HEALTHY = dict(q_actor_mean=310.0, q_actor_max=900.0, q_actor_min=-40.0, q_target_mean=305.0,
               q_target_max=880.0, q1_mean=300.0, q2_mean=298.0, critic_loss=12.0,
               actor_loss=-310.0, grad_norm_actor=3.0, grad_norm_critic=40.0, q_bound=20_000.0)


def test_healthy_stats_are_healthy():
    v = judge(HEALTHY, S)
    assert v.state is DivergenceState.HEALTHY and v.reasons == []


def test_the_incident_is_diverged_and_names_the_numbers():
    # actor loss -2.4e6 while rewards are bounded by [-50, 200].
    stats = dict(HEALTHY, q_actor_mean=2.4e6, q_actor_max=3.1e6, actor_loss=-2.4e6)
    v = judge(stats, S)
    assert v.state is DivergenceState.DIVERGED
    text = " ".join(v.reasons)
    assert "155x the bound 2e+04" in text and "2.4e+06" in text


def test_near_bound_warns():
    v = judge(dict(HEALTHY, q_actor_max=19_000.0), S)
    assert v.state is DivergenceState.WARNING
    assert "0.95x" in v.reasons[0]


def test_reported_ratio_wins_over_computed():
    assert bound_ratio(dict(HEALTHY, q_bound_ratio=0.5)) == 0.5
    assert bound_ratio(HEALTHY) == pytest.approx(900.0 / 20_000.0)
    assert bound_ratio({k: v for k, v in HEALTHY.items() if k != "q_bound"}) is None


def test_nonfinite_learner_stats_diverge_at_once():
    assert judge(dict(HEALTHY, critic_loss=math.nan), S).state is DivergenceState.DIVERGED
    assert judge(dict(HEALTHY, grad_norm_critic=math.inf), S).state is DivergenceState.DIVERGED


def test_counted_nonfinite_values_warn_then_diverge_when_they_persist():
    """NaN/inf kept out of buffer and weights: one iteration's worth is a
    warning; nonfinite_diverge_iters in a row is divergence; a clean
    iteration starts the count again."""
    streak = NonfiniteStreak()
    new_per_iter = [2, 0, 1, 5, 0, 1, 1, 1, 1]
    states = [judge(HEALTHY, S, n, streak.update(n)).state for n in new_per_iter]
    H, W, D = DivergenceState.HEALTHY, DivergenceState.WARNING, DivergenceState.DIVERGED
    assert S.nonfinite_diverge_iters == 3
    assert states == [W, H, W, W, H, W, W, D, D]
    v = judge(HEALTHY, S, nonfinite_new=4, nonfinite_iters=3)
    assert "4 non-finite values" in v.reasons[0] and "new in 3 consecutive iterations" in v.reasons[0]


def test_grad_norm_and_absolute_actor_loss_thresholds():
    assert judge(dict(HEALTHY, grad_norm_critic=2e4), S).state is DivergenceState.WARNING
    assert judge(dict(HEALTHY, grad_norm_actor=2e6), S).state is DivergenceState.DIVERGED
    no_bound = {k: v for k, v in HEALTHY.items() if k != "q_bound"}
    assert judge(dict(no_bound, actor_loss=-2e5), S).state is DivergenceState.WARNING


def test_settings_validate_thresholds_in_one_line():
    with pytest.raises(ConfigError, match="health.q_bound_warn_ratio: 2.0 is not allowed"):
        from_dict(HealthSettings, {"q_bound_warn_ratio": 2.0}, "health")
    with pytest.raises(ConfigError, match="health.grad_norm_warn"):
        from_dict(HealthSettings, {"grad_norm_warn": -1}, "health")
