"""The divergence verdict's exact words and edges, through ``judge`` and
``probe_findings``: each finding's subject, measured numbers, threshold and
reason as users read them (in logs, Alertmanager and as Prometheus labels),
each threshold just below and at its value, and which rule wins when one
statistic could fire two. The cases hold only the statistics a rule reads."""

import math

from rllib_av.health.divergence import (
    WHY_BOUND, WHY_NONFINITE, WHY_REWARDS, WHY_TERMINAL, DivergenceState, Finding, Verdict,
    judge, nonfinite_stats, probe_findings, rewards_measured, thresholds_in_effect,
)
from rllib_av.health.health_settings import HealthSettings

H, W, D = DivergenceState.HEALTHY, DivergenceState.WARNING, DivergenceState.DIVERGED
S = HealthSettings()
DRIVING = HealthSettings(preset="driving")
BOUND = {"q_bound": 2e4}
DRIVING_WHY = "the driving preset (the driving incident's GO/NO-GO table)"


def only(verdict):
    (finding,) = verdict.findings
    return finding.as_dict()


def test_a_q_statistic_past_the_bound_is_named_with_its_direction_and_numbers():
    down = judge({**BOUND, "q_target_min": -3e4, "q1_mean": 10.0}, S)
    assert down.state is D
    assert only(down) == {
        "rule": "q_bound", "state": "diverged", "subject": "q_target_min running off downward",
        "measured": "|Q| at 1.5x the bound 2e+04; farthest: q_target_min -3e+04 "
                    "(Q running off downward)",
        "threshold": "warning > 0.9, diverged > 1", "why": WHY_BOUND}
    up = judge({**BOUND, "q_actor_max": 1.9e4, "q1_mean": -10.0}, S)
    assert up.state is W
    assert only(up)["subject"] == "q_actor_max running off upward"
    assert only(up)["measured"] == "|Q| at 0.95x the bound 2e+04; farthest: q_actor_max 1.9e+04"
    assert str(up.findings[0]) == (
        "warning: q_bound: |Q| at 0.95x the bound 2e+04; farthest: q_actor_max 1.9e+04 "
        f"(threshold warning > 0.9, diverged > 1; {WHY_BOUND})")


def test_directions_come_from_the_sign_for_values_under_one():
    """A bound below 1 (per-step rewards of a few thousandths): Q of 0.6 runs
    off upward, an actor loss of 0.5 (mean Q -0.5) downward."""
    assert only(judge({"q_bound": 0.5, "q1_mean": 0.6}, S))["subject"] == \
        "q1_mean running off upward"
    assert only(judge({"q_bound": 0.2, "actor_loss": 0.5}, S))["subject"] == \
        "mean actor Q running off downward"


def test_a_reported_ratio_without_q_statistics_still_judges_and_says_so():
    v = judge({**BOUND, "q_bound_ratio": 1.5}, S)
    assert only(v)["subject"] == "|Q| beyond the bound"
    assert only(v)["measured"] == "|Q| at 1.5x the bound 2e+04"
    assert v.state is D


def test_the_bound_thresholds_are_strict_and_come_from_the_settings():
    assert judge({**BOUND, "q_bound_ratio": 0.9}, S).state is H
    assert judge({**BOUND, "q_bound_ratio": 0.9001}, S).state is W
    assert judge({**BOUND, "q_bound_ratio": 1.0}, S).state is W
    assert judge({**BOUND, "q_bound_ratio": 1.0001}, S).state is D
    own = HealthSettings(q_bound_warn_ratio=0.5, q_bound_diverge_ratio=2.0)
    assert judge({**BOUND, "q_bound_ratio": 0.6}, own).state is W
    assert judge({**BOUND, "q_bound_ratio": 1.9}, own).state is W
    assert judge({**BOUND, "q_bound_ratio": 2.1}, own).state is D
    assert only(judge({**BOUND, "q_bound_ratio": 2.1}, own))["threshold"] == \
        "warning > 0.5, diverged > 2"
    # Computed from the statistics when not reported: 2.1e4 / 2e4 = 1.05.
    assert judge({**BOUND, "q2_mean": 2.1e4}, S).state is D
    assert judge({**BOUND, "q2_mean": 1.7e4}, S).state is H


def test_no_bound_rule_without_a_bound_or_a_known_ratio():
    assert judge({"q_bound": 0.0, "q_actor_max": 1e9}, S).findings == []
    assert judge({"q_bound": 0.0, "q_bound_ratio": 5.0}, S).findings == []
    assert judge({**BOUND, "q_bound_ratio": math.nan, "q1_mean": 1e9}, S).findings == []
    assert judge({**BOUND, "q1_mean": math.nan}, S).findings == []
    assert judge(BOUND, S).findings == []


def test_the_actor_loss_against_the_bound_diverges_and_names_its_direction():
    v = judge({**BOUND, "actor_loss": 3e4}, S)  # a positive loss: Q running off downward
    assert v.state is D
    assert only(v) == {
        "rule": "actor_loss", "state": "diverged", "subject": "mean actor Q running off downward",
        "measured": "|actor_loss| 3e+04", "threshold": "> 1x the Q bound 2e+04",
        "why": "the actor loss is -mean Q, so it cannot exceed the bound either"}
    assert only(judge({**BOUND, "actor_loss": -3e4}, S))["subject"] == \
        "mean actor Q running off upward"
    # At the bound exactly, nothing; the multiple is the diverge ratio.
    assert judge({**BOUND, "actor_loss": -2e4}, S).findings == []
    own = HealthSettings(q_bound_diverge_ratio=2.0)
    assert judge({**BOUND, "actor_loss": -3e4}, own).findings == []
    assert only(judge({**BOUND, "actor_loss": -4.1e4}, own))["threshold"] == \
        "> 2x the Q bound 2e+04"


def test_the_absolute_actor_loss_ceiling_warns_only_when_set():
    assert judge({"actor_loss": -2e5}, S).findings == []
    v = judge({"actor_loss": -2e5}, DRIVING)
    assert v.state is W
    assert only(v) == {
        "rule": "actor_loss", "state": "warning", "subject": "mean actor Q running off upward",
        "measured": "|actor_loss| 2e+05", "threshold": "> 1e+05", "why": DRIVING_WHY}
    assert judge({"actor_loss": 2e5}, DRIVING).state is W
    assert judge({"actor_loss": -1e5}, DRIVING).findings == []  # at the ceiling: strict
    # Within the bound, past the ceiling: the ceiling still warns.
    assert judge({"q_bound": 1e7, "actor_loss": -2e5}, DRIVING).state is W
    for loss in (math.nan, math.inf, -math.inf):
        assert judge({**BOUND, "actor_loss": loss}, DRIVING).findings == []


def test_gradient_norms_warn_then_diverge_per_network():
    v = judge({"grad_norm_actor": 2e6, "grad_norm_critic": 2e4}, DRIVING)
    assert v.state is D
    assert [f.as_dict() for f in v.findings] == [
        {"rule": "grad_norm", "state": "diverged", "subject": "grad_norm_actor too large",
         "measured": "actor grad norm 2e+06", "threshold": "> 1e+06", "why": DRIVING_WHY},
        {"rule": "grad_norm", "state": "warning", "subject": "grad_norm_critic too large",
         "measured": "critic grad norm 2e+04", "threshold": "> 1e+04", "why": DRIVING_WHY}]
    assert judge({"grad_norm_critic": 1e4, "grad_norm_actor": 1e6 * (1 - 1e-9)}, DRIVING).state \
        is W
    assert judge({"grad_norm_critic": 1e4}, DRIVING).findings == []
    assert judge({"grad_norm_critic": 1e6}, DRIVING).state is W
    assert judge({"grad_norm_critic": math.nan, "grad_norm_actor": math.inf}, DRIVING).findings \
        == []
    # Only a diverge threshold set: it alone judges.
    own = HealthSettings(grad_norm_diverge=10.0)
    assert judge({"grad_norm_actor": 11.0}, own).state is D
    assert judge({"grad_norm_actor": 9.0}, own).findings == []
    assert judge({"grad_norm_actor": 1e9}, S).findings == []


def test_nonfinite_values_name_their_sources_and_persistence():
    v = judge({}, S, {"replay": "2 in replay", "grads": "3 in grads"})
    assert v.state is W
    assert only(v) == {
        "rule": "nonfinite", "state": "warning", "subject": "NaN/inf new in grads, replay",
        "measured": "NaN/inf new in 1 consecutive iteration (2 in replay, 3 in grads)",
        "threshold": "warning at 1, diverged at 3 in a row", "why": WHY_NONFINITE}
    two = judge({}, S, {"grads": "3 in grads"}, nonfinite_iters=2)
    assert two.state is W
    assert only(two)["measured"] == "NaN/inf new in 2 consecutive iterations (3 in grads)"
    assert judge({}, S, {"grads": "3 in grads"}, nonfinite_iters=3).state is D
    own = HealthSettings(nonfinite_diverge_iters=1)
    assert judge({}, own, {"grads": "3 in grads"}).state is D
    assert judge({}, S, {}, nonfinite_iters=5).findings == []


def test_the_verdict_is_the_worst_finding_and_keeps_them_in_order():
    v = Verdict()
    assert v.state is H
    for state in (D, W, H):
        v.add(Finding("r", state, "s", "m", "t", "w"))
    assert v.state is D
    assert v.reasons == ["diverged: r: m (threshold t; w)", "warning: r: m (threshold t; w)",
                         "healthy: r: m (threshold t; w)"]
    # Rules fire in a fixed order: NaN/inf, Q bound, actor loss, gradient norms.
    every = judge({**BOUND, "q1_mean": 3e4, "actor_loss": -3e4, "grad_norm_critic": 2e4}, DRIVING,
                  {"loss": "critic_loss=nan"})
    assert [f.rule for f in every.findings] == ["nonfinite", "q_bound", "actor_loss", "grad_norm"]


def test_probe_findings_describe_the_rewards_and_the_terminal_targets():
    rewards = {"reward_train_min": -2.0, "reward_train_max": 400.0, "reward_beyond_frac": 0.25,
               "reward_range_min": -1.0, "reward_range_max": 2.0}
    (scaled,) = probe_findings({**rewards, "reward_pipeline": "scale"})
    assert scaled.as_dict() == {
        "rule": "reward_range", "state": "warning",
        "subject": "critic's rewards beyond the declared range, scaled beyond it",
        "measured": "critic's rewards in [-2, 400], 25.0% beyond, scaled beyond it",
        "threshold": "in [-1, 2] (declared)", "why": WHY_REWARDS}
    (summed,) = probe_findings({**rewards, "reward_pipeline": "accumulation"})
    assert summed.subject == ("critic's rewards beyond the declared range, "
                              "growing along episodes: running sums")
    assert probe_findings({**rewards, "reward_pipeline": "ok"}) == []
    assert rewards_measured({**rewards, "reward_pipeline": "ok"}) == \
        "critic's rewards in [-2, 400], 25.0% beyond"
    terminal = {"terminal_masking": "unmasked", "terminal_target_max_diff": 0.5,
                "terminal_transitions": 12, "terminal_bootstrap_abs_mean": 0.25}
    (unmasked,) = probe_findings(terminal)
    assert unmasked.as_dict() == {
        "rule": "terminal_masking", "state": "warning",
        "subject": "targets on terminal rows bootstrap past r",
        "measured": "max |target - r| 0.5 on 12 terminal rows (bootstrap term there 0.25)",
        "threshold": "target == r on every terminal row", "why": WHY_TERMINAL}
    assert probe_findings({**terminal, "terminal_masking": "masked"}) == []
    both = probe_findings({**rewards, **terminal, "reward_pipeline": "scale"})
    assert [f.rule for f in both] == ["reward_range", "terminal_masking"]
    assert probe_findings({}) == []


def test_only_required_statistics_that_are_not_finite_are_named():
    stats = {"critic_loss": math.nan, "grad_norm_actor": -math.inf, "q1_mean": 1.0,
             "episode_return_mean": math.nan}
    assert nonfinite_stats(stats) == {"critic_loss": "critic_loss=nan",
                                      "grad_norm_actor": "grad_norm_actor=-inf"}


def test_thresholds_in_effect_are_the_set_ones_as_floats():
    assert thresholds_in_effect(S) == {"q_bound_warn_ratio": 0.9, "q_bound_diverge_ratio": 1.0,
                                       "nonfinite_diverge_iters": 3.0}
    driving = thresholds_in_effect(DRIVING)
    assert driving == {"q_bound_warn_ratio": 0.9, "q_bound_diverge_ratio": 1.0,
                       "actor_loss_abs_max": 1e5, "grad_norm_warn": 1e4,
                       "grad_norm_diverge": 1e6, "nonfinite_diverge_iters": 3.0}
    assert all(type(v) is float for v in driving.values())
