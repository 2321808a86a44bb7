"""Verdict rules that another rule would otherwise hide: each case below holds
only the statistics its rule reads, so no neighbouring rule can reach the same
verdict for it."""

from rllib_av.health.divergence import DivergenceState, judge
from rllib_av.health.health_settings import HealthSettings

# The driving preset sets the absolute ceiling this case must stay under.
S = HealthSettings(preset="driving")


def test_actor_loss_beyond_the_q_bound_diverges_on_its_own():
    """Before the Q statistics of an iteration exist (or when a learner reports
    only its losses), |actor_loss| past the bound is divergence: 3e4 lies below
    the absolute ceiling actor_loss_abs_max (1e5) but beyond q_bound 2e4."""
    assert S.actor_loss_abs_max > 3e4 > 2e4 * S.q_bound_diverge_ratio
    v = judge({"actor_loss": -3e4, "q_bound": 2e4}, S)
    assert v.state is DivergenceState.DIVERGED, v.reasons
    assert any("actor_loss" in r and "bound" in r for r in v.reasons), v.reasons
    within = judge({"actor_loss": -1.9e4, "q_bound": 2e4}, S)
    assert within.state is DivergenceState.HEALTHY, within.reasons
