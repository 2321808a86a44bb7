"""Without a declared reward range (a user's gymnasium env declares none) the
critic is still bounded: by the rewards it trained on. A TD3 critic whose Q ran
off to -1e5 on Pendulum (returns ~ -800) was GO, healthy and diagnosed healthy
because every Q check needed training.reward_range (the blind set-up zoo,
tests/setup_zoo_blind.py)."""

import math

import pytest

from rllib_av.health.diagnosis import diagnose
from rllib_av.health.divergence import DivergenceState
from rllib_av.health.health_monitor import HealthMonitor
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.preflight import evaluate, is_go
from rllib_av.health.q_bound import observed_q_bound
from rllib_av.monitoring.synthetic_results import synthetic_result

from test_diagnosis import run_dir

# Pendulum's rewards as the critic trained on them, gamma 0.99.
OBSERVED = 16.27 / (1 - 0.99)


def stats(q):
    """A record's learner statistics with every Q statistic near ``q``, and no
    declared bound (no q_bound, no q_bound_ratio)."""
    keys = ("q_actor_mean", "q_actor_max", "q_actor_min", "q_target_mean", "q_target_max",
            "q_target_min", "q1_mean", "q2_mean")
    return {**{f"default_policy/{k}": q for k in keys}, "default_policy/actor_loss": -q,
            "default_policy/critic_loss": 1.0}


def records(qs):
    return [{"training_iteration": i + 1, "env_steps": 256 + 64 * i, "episode_len_mean": 200.0,
             "episode_return_mean": -900.0, **stats(q)} for i, q in enumerate(qs)]


PROBES = [{"env_steps": 512, "q_bound_observed": OBSERVED}]


def test_the_bound_is_the_rewards_plus_where_the_critic_started():
    assert observed_q_bound(OBSERVED, 0.3) == OBSERVED + 0.3
    # Rewards (so far) below the critic's initial noise: nothing to judge it by.
    assert observed_q_bound(1e-3, 0.3) is None
    assert observed_q_bound(None, 0.3) is None and observed_q_bound(0.0, 0.0) is None


@pytest.mark.parametrize("qs,passed", [
    ([0.1, -5.0, -60.0, -300.0, -700.0], True),          # learning Pendulum's values
    ([0.1, -50.0, -900.0, -9e3, -9.8e4], False),         # running off downward
    ([0.1, -50.0, -900.0, math.nan, math.nan], False),   # NaN is not healthy
])
def test_preflight_judges_q_against_the_rewards_it_trained_on(qs, passed):
    checks = {c.name: c for c in evaluate(records(qs), PROBES, HealthSettings(), 200)}
    row = checks["q_bound"]
    assert row.passed is passed, row
    assert "of the rewards the critic trained on" in row.measured
    assert is_go(list(checks.values())) is passed


def test_without_a_probe_there_is_nothing_to_bound_by():
    checks = {c.name: c for c in evaluate(records([0.1, -9.8e4]), [{}], HealthSettings(), 200)}
    assert checks["q_bound"].passed is None


def test_the_verdict_uses_the_probes_bound_once_a_probe_ran():
    monitor = HealthMonitor(HealthSettings(), num_env_runners=2)

    def state(i, q):
        r = synthetic_result(i)
        learner = r["learners"]["default_policy"]
        for k in ("q_bound", "q_bound_ratio"):
            learner.pop(k, None)
        learner.update({k.split("/", 1)[1]: v for k, v in stats(q).items()})
        return monitor.judge(r).verdicts["default_policy"].state

    assert state(1, 0.2) is DivergenceState.HEALTHY
    assert state(2, -9.8e4) is DivergenceState.HEALTHY  # no bound yet: nothing to judge by
    monitor.note_probe({"q_bound_observed": OBSERVED})
    assert state(3, -500.0) is DivergenceState.HEALTHY
    assert state(4, -9.8e4) is DivergenceState.DIVERGED


def test_diagnose_names_the_unstable_critic(tmp_path):
    recs = records([0.1, -50.0, -900.0, -9e3, -9.8e4])
    recs[-1]["divergence_state"] = 2
    d = diagnose(run_dir(tmp_path, recs, PROBES))
    text = d.format()
    assert d.branch == "overestimation", text
    assert "of the rewards the critic trained on: no declared reward range" in text
