import math

import pytest

from rllib_av.config_schema import ConfigError, from_dict
from rllib_av.health.divergence import DivergenceState, NonfiniteStreak, judge
from rllib_av.health.health_monitor import HealthMonitor, LifetimeCounts
from rllib_av.health.health_settings import HealthSettings
from rllib_av.monitoring.synthetic_results import synthetic_result

S = HealthSettings()
H, W, D = DivergenceState.HEALTHY, DivergenceState.WARNING, DivergenceState.DIVERGED
# Rewards in [-50, 200], gamma 0.99: q_bound = 20000.
HEALTHY = dict(q_actor_mean=310.0, q_actor_max=900.0, q_actor_min=-40.0, q_target_mean=305.0,
               q_target_max=880.0, q_target_min=-45.0, q1_mean=300.0, q2_mean=298.0,
               critic_loss=12.0, actor_loss=-310.0, grad_norm_actor=3.0, grad_norm_critic=40.0,
               q_bound=20_000.0)


def test_healthy_stats_are_healthy():
    v = judge(HEALTHY, S)
    assert v.state is H and v.reasons == []


def test_the_incident_is_diverged_and_names_the_numbers():
    # actor loss -2.4e6 while rewards are bounded by [-50, 200].
    stats = dict(HEALTHY, q_actor_mean=2.4e6, q_actor_max=3.1e6, actor_loss=-2.4e6)
    v = judge(stats, S)
    assert v.state is D
    text = " ".join(v.reasons)
    assert "155x the bound 2e+04" in text and "2.4e+06" in text


def test_near_bound_warns():
    v = judge(dict(HEALTHY, q_actor_max=19_000.0), S)
    assert v.state is W
    assert "0.95x" in v.reasons[0]


@pytest.mark.parametrize("key", ["q_target_min", "q_actor_min", "q1_mean", "q2_mean",
                                 "q_target_mean"])
def test_q_running_off_downward_is_seen_on_every_statistic(key):
    """A critic whose values head to minus infinity (all-negative rewards: the
    blind side of a bound on the maximum only) diverges like one running up."""
    v = judge(dict(HEALTHY, **{key: -3e4}), S)
    assert v.state is D, v.reasons
    (f,) = v.findings
    assert f.rule == "q_bound" and f"farthest: {key} -3e+04 (Q running off downward)" in f.measured


DRIVING = HealthSettings(preset="driving")


def test_every_finding_says_what_it_measured_the_threshold_and_why():
    v = judge(dict(HEALTHY, q_target_min=-3e4, grad_norm_critic=2e4), DRIVING)
    assert [f.rule for f in v.findings] == ["q_bound", "grad_norm"]
    bound, grad = v.findings
    assert bound.threshold == "warning > 0.9, diverged > 1"
    assert "within +/- q_bound" in bound.why
    assert v.reasons[0].startswith("diverged: q_bound: |Q| at 1.5x the bound 2e+04")
    assert grad.as_dict()["state"] == "warning"
    assert grad.why == "the driving preset (the driving incident's GO/NO-GO table)"
    assert v.reasons[1] == (f"warning: grad_norm: {grad.reason}")


def test_reported_ratio_wins_over_computed():
    assert judge(dict(HEALTHY, q_bound_ratio=0.95), S).state is W
    assert judge(dict(HEALTHY, q_actor_max=19_000.0, q_bound_ratio=0.5), S).state is H
    # No bound known: no bound rule, whatever Q is.
    no_bound = {k: v for k, v in HEALTHY.items() if k != "q_bound"}
    assert judge(dict(no_bound, q_actor_max=1e9), S).state is H


def test_infinite_q_is_beyond_the_bound():
    assert judge(dict(HEALTHY, q_target_min=-math.inf), S).state is D


def test_counted_nonfinite_values_warn_then_diverge_when_they_persist():
    """NaN/inf kept out of buffer and weights: one iteration's worth is a
    warning; nonfinite_diverge_iters in a row is divergence; a clean
    iteration starts the count again."""
    streak = NonfiniteStreak()
    new_per_iter = [2, 0, 1, 5, 0, 1, 1, 1, 1]
    states = [judge(HEALTHY, S, {"replay": f"{n} in replay"} if n else {},
                    streak.update(n)).state
              for n in new_per_iter]
    assert S.nonfinite_diverge_iters == 3
    assert states == [W, H, W, W, H, W, W, D, D]
    v = judge(HEALTHY, S, {"grads": "4 in grads"}, nonfinite_iters=3)
    assert "NaN/inf new in 3 consecutive iterations (4 in grads)" in v.reasons[0]


def learner_result(i, **stats):
    r = synthetic_result(i)
    r["learners"]["default_policy"].update(stats)
    return r


def test_learner_nan_gets_the_same_grace_as_every_other_source():
    """A skipped learner step (NaN loss or grads) warns first and diverges only
    when it persists, like NaN/inf from the env (health_settings.py's promise)."""
    monitor = HealthMonitor(S, num_env_runners=2)
    results = [learner_result(0), learner_result(1, grad_norm_critic=math.nan),
               learner_result(2, critic_loss=math.inf, nonfinite_loss=1.0),
               learner_result(3, grad_norm_actor=math.nan, nonfinite_loss=1.0),
               learner_result(4, nonfinite_loss=1.0)]  # nothing new: healthy again
    states = [monitor.judge(r).verdicts["default_policy"].state for r in results]
    assert states == [H, W, W, D, H]
    assert "grad_norm_critic=nan" in monitor.judge(
        learner_result(5, grad_norm_critic=math.nan)).verdicts["default_policy"].reasons[0]


def test_the_verdict_needs_nothing_but_the_result():
    """The health layer judges a result dict alone: no exporter, no callback."""
    monitor = HealthMonitor(S, num_env_runners=2)
    health = monitor.judge(synthetic_result(3, diverge_from=2))
    assert health.states == {"default_policy": 2}
    assert health.as_result()["reasons"]["default_policy"][0].startswith("diverged: q_bound:")


def test_an_iteration_without_an_update_is_still_judged_on_nonfinite_values():
    monitor = HealthMonitor(S, num_env_runners=2)
    r = synthetic_result(0)
    del r["learners"]
    r["nonfinite"] = {"obs": 2.0}
    assert monitor.judge(r).states == {"default_policy": 1}


def test_lifetime_counts_neither_stall_nor_double_count_after_a_restore():
    counts = LifetimeCounts()
    steps = lambda n: {("env_steps", ()): float(n)}  # noqa: E731
    assert counts.advance(1, steps(100)) == steps(100)
    assert counts.advance(2, steps(200)) == steps(100)
    assert counts.advance(3, steps(300)) == steps(100)
    # Rollback to the checkpoint of iteration 1: the next result is iteration 2 again.
    assert counts.advance(2, steps(160)) == steps(60)
    assert counts.advance(3, steps(260)) == steps(100)
    # A resumed process: its first result has no base, nothing counts as new.
    assert LifetimeCounts().advance(40, steps(4000)) == steps(0)


def test_grad_norm_and_absolute_actor_loss_thresholds_come_from_a_preset_or_the_config():
    assert judge(dict(HEALTHY, grad_norm_critic=2e4), DRIVING).state is W
    assert judge(dict(HEALTHY, grad_norm_actor=2e6), DRIVING).state is D
    no_bound = {k: v for k, v in HEALTHY.items() if k != "q_bound"}
    assert judge(dict(no_bound, actor_loss=-2e5), DRIVING).state is W
    own = from_dict(HealthSettings, {"grad_norm_warn": 50.0}, "health")
    (f,) = judge(dict(HEALTHY, grad_norm_critic=60.0), own).findings
    assert f.why == "set in the config (health.grad_norm_warn)"


def test_default_rules_hold_for_any_reward_scale():
    """A healthy critic of an env with large rewards (per-step up to 1e3: bound
    1e5) has gradient norms and an actor loss the driving incident's absolute
    numbers called unhealthy; by default only the env's own bound judges."""
    big = {k: 100 * v for k, v in HEALTHY.items()}  # rewards 100x, same shape
    big.update(grad_norm_critic=3e4, grad_norm_actor=2e4, q_bound=2e6)
    assert judge(big, S).state is H, judge(big, S).reasons
    assert judge(big, DRIVING).state is W


def test_settings_validate_thresholds_in_one_line():
    with pytest.raises(ConfigError, match="health.q_bound_warn_ratio: 2.0 is not allowed"):
        from_dict(HealthSettings, {"q_bound_warn_ratio": 2.0}, "health")
    with pytest.raises(ConfigError, match="health.grad_norm_warn"):
        from_dict(HealthSettings, {"grad_norm_warn": -1}, "health")
