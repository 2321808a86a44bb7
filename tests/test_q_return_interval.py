"""The signed return interval: with per-step rewards in [r_min, r_max] every
true return lies in [r_min, r_max] / (1 - gamma). |Q| <= q_bound is that
interval only for a symmetric range; for a lopsided one the short end is
judged on its own (health.q_interval_slack: a fraction of the spread of the
critic's Q, at least one step's reward span), by the verdict, the preflight gate and diagnose. The real TD3 runs are
in the set-up zoo (lopsided_alive_with_crashes, lopsided_unstable_td_upward)."""

import pytest

from rllib_av.health.diagnosis import diagnose
from rllib_av.health.divergence import DivergenceState, judge
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.preflight import evaluate, is_go
from rllib_av.health.q_bound import interval_excursion, q_bound, return_interval

from test_diagnosis import HEALTHY_PROBE, HEALTHY_STATS, record, run_dir

S = HealthSettings()
GAMMA = 0.99
PENDULUM = return_interval(-16.2736044, 0.0, GAMMA)  # [-1627, 0]
UNIT = return_interval(0.0, 1.0, GAMMA)  # [0, 100]


def stats(interval, **q):
    """Every Q statistic inside ``interval`` (the maxima 1 under its top, the
    rest at its middle), then ``q``."""
    low, high = interval
    mid = (low + high) / 2
    base = {"q_actor_mean": mid, "q_actor_max": high - 1, "q_actor_min": mid,
            "q_target_mean": mid, "q_target_max": high - 1, "q_target_min": mid,
            "q1_mean": mid, "q2_mean": mid}
    base.update(q)
    bound = max(abs(low), abs(high))
    ratio = max(abs(v) for v in base.values()) / bound
    return {**base, "q_bound": bound, "q_bound_ratio": ratio, "q_return_min": low,
            "q_return_max": high}


def test_q_bound_is_the_intervals_larger_magnitude():
    assert q_bound(-16.2736044, 0.0, GAMMA) == pytest.approx(-PENDULUM[0])
    assert PENDULUM[1] == 0.0 and UNIT == (0.0, pytest.approx(100.0))


def spanning(lo, hi):
    """Q statistics spread over [lo, hi]: the actor's extremes at lo and hi (the
    targets' a little inside), the means between."""
    mid, inside = (lo + hi) / 2, 0.01 * (hi - lo)
    return {"q_actor_min": lo, "q_target_min": lo + inside, "q_actor_max": hi,
            "q_target_max": hi - inside,
            "q_actor_mean": mid, "q_target_mean": mid, "q1_mean": mid, "q2_mean": mid}


@pytest.mark.parametrize("interval,q,found", [
    # Pendulum: nothing true is above 0. A healthy 50k-step TD3 run (seed 1) peaked at
    # q_actor_max 11.9 with its values spread over [-273, 11.9]: a quarter is 71.
    (PENDULUM, spanning(-273.0, 11.9), None),
    (PENDULUM, spanning(-273.0, 70.0), None),
    (PENDULUM, spanning(-273.0, 100.0), "q_actor_max"),   # past a quarter of 373
    (PENDULUM, {"q_actor_max": 1460.0}, "q_actor_max"),   # what |Q| only saw at 0.9 x bound
    # A critic drifting past 0 as a whole (small spread): one step's span, 16.27.
    (PENDULUM, spanning(5.0, 16.0), None),
    (PENDULUM, spanning(10.0, 16.6), "q_actor_max"),
    # Rewards in [0, 1]: nothing true is below 0; a step's span is 1.
    (UNIT, spanning(-0.9, 0.5), None),
    (UNIT, spanning(-1.1, 0.5), "q_actor_min"),
    (UNIT, spanning(-12.0, 50.0), None),                  # a quarter of 62 is 15.5
    (UNIT, spanning(-20.0, 50.0), "q_actor_min"),
    (UNIT, {"q1_mean": -90.0}, "q1_mean"),
])
def test_the_short_end_is_judged_against_the_spread_of_q(interval, q, found):
    e = interval_excursion(stats(interval, **q), GAMMA, S.q_interval_slack)
    assert (e and e.key) == found


def test_a_symmetric_range_adds_nothing():
    sym = return_interval(-1.0, 1.0, GAMMA)
    for v in (99.0, 101.0, 1e4):
        assert interval_excursion(stats(sym, q_actor_max=v, q_target_min=-v), GAMMA, 1.0) is None
    # ... and the |Q| rule alone decides the verdict there, as before.
    assert [f.rule for f in judge(stats(sym, q_actor_max=150.0), S, gamma=GAMMA).findings] == \
        ["q_bound"]


def test_a_critic_on_its_way_from_zero_is_not_wrong():
    """Rewards in [1, 2]: returns in [100, 200], but an untrained critic starts
    at 0 and passes [0, 100] on its way; only below 0 is it wrong."""
    positive = return_interval(1.0, 2.0, GAMMA)
    assert interval_excursion(stats(positive, **spanning(0.5, 40.0)), GAMMA, 0.25) is None
    # Near 0 the spread is small: one step's span (2) is the slack.
    e = interval_excursion(stats(positive, **spanning(-2.5, 5.0)), GAMMA, 0.25)
    assert e.key == "q_actor_min" and e.end == 0.0 and not e.above
    assert str(e) == ("q_actor_min -2.5 below 0 (where an untrained critic starts; the lowest "
                      "true return is 100) by 2.5 (allowed 2)")


def test_the_verdict_names_the_end_and_by_how_much():
    s = stats(PENDULUM, q_actor_max=412.0)
    assert s["q_bound_ratio"] < S.q_bound_warn_ratio  # |Q| alone: healthy
    assert judge(s, S).state is DivergenceState.HEALTHY  # without gamma: |Q| only
    v = judge(s, S, gamma=GAMMA)
    assert v.state is DivergenceState.DIVERGED
    (f,) = v.findings
    assert f.rule == "q_interval" and f.subject == "q_actor_max above the highest true return"
    assert f.measured.startswith("q_actor_max 412 above the highest true return 0 by 412")


def records(qs, interval=PENDULUM):
    return [{"training_iteration": i + 1, "env_steps": 256 + 64 * i, "episode_len_mean": 200.0,
             "episode_return_mean": -900.0, "divergence_state": 0,
             **{f"default_policy/{k}": v for k, v in stats(interval, q_actor_max=q).items()}}
            for i, q in enumerate(qs)]


@pytest.mark.parametrize("qs,go", [([-50.0, -20.0, 3.0, 9.0], True),
                                   ([-50.0, 40.0, 300.0, 900.0], False)])
def test_the_gate_judges_the_short_end(qs, go):
    checks = {c.name: c for c in evaluate(records(qs), [HEALTHY_PROBE], S, 200, GAMMA)}
    row = checks["q_bound"]
    assert row.passed is go, row
    assert is_go(list(checks.values())) is go
    if not go:
        assert "q_actor_max 900 above the highest true return 0" in row.measured


def test_diagnose_answers_overestimation_for_q_past_the_short_end(tmp_path):
    """Quickstart's range is [-14.55, 11.5]: returns in [-1455, 1150]. A critic
    that moved up as a whole to [1000, 1300] is |Q| 0.89x the bound (not even a
    warning) but 150 past the highest true return, twice a quarter of its
    spread (75)."""
    reason = "diverged: q_interval: q_actor_max 1300 above the highest true return 1150"
    high = {**HEALTHY_STATS, **spanning(1000.0, 1300.0), "q_bound_ratio": 1300.0 / 1455.0,
            "q_return_min": -1455.0, "q_return_max": 1150.0}
    rs = [record(256 + 64 * i, {"q_return_min": -1455.0, "q_return_max": 1150.0})
          for i in range(2)] + [record(384, high, state=2, reasons=[reason])]
    d = diagnose(run_dir(tmp_path, rs, HEALTHY_PROBE))
    text = d.format()
    assert d.branch == "overestimation", text
    assert "q_actor_max 1300 above the highest true return 1150 by 150" in text
