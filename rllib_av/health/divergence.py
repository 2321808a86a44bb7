"""Divergence verdicts: healthy / warning / diverged, every rule in one place.

``judge`` applies each rule to one iteration's learner statistics (the keys of
statistics.py) and returns the worst state any rule reached, with one
``Finding`` per rule that fired: what it measured, the threshold, and why that
threshold holds. It is stateless: trends (runaway growth) are Prometheus's job,
where the history lives; the one run of iterations it needs, NaN/inf
persisting, the caller counts (``NonfiniteStreak``, health_monitor.py).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.q_bound import largest_q, q_bound_ratio
from rllib_av.health.statistics import FINITE_REQUIRED


class DivergenceState(enum.IntEnum):
    HEALTHY = 0
    WARNING = 1
    DIVERGED = 2


@dataclass
class Finding:
    """One rule that fired: what it measured, against what, and why."""
    rule: str
    state: DivergenceState
    measured: str
    threshold: str
    why: str

    def __str__(self) -> str:
        return (f"{self.state.name.lower()}: {self.rule}: {self.measured} "
                f"(threshold {self.threshold}; {self.why})")

    def as_dict(self) -> Dict:
        return {"rule": self.rule, "state": self.state.name.lower(), "measured": self.measured,
                "threshold": self.threshold, "why": self.why}


@dataclass
class Verdict:
    state: DivergenceState = DivergenceState.HEALTHY
    findings: List[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.state = max(self.state, finding.state)
        self.findings.append(finding)

    @property
    def reasons(self) -> List[str]:
        return [str(f) for f in self.findings]


WHY_BOUND = ("every discounted return of per-step rewards in [r_min, r_max] lies within "
             "+/- q_bound, so no correct critic goes past it on either side")
WHY_NONFINITE = ("NaN/inf is counted and kept out of the buffer and the weights, so one "
                 "iteration's worth is survivable; new ones in every iteration mean a broken "
                 "sensor, reward or critic")
WHY_INCIDENT = "the incident's GO/NO-GO table (health.* settings)"


def nonfinite_stats(stats: Mapping[str, float]) -> List[str]:
    """The statistics that must be finite but are not ("critic_loss=nan")."""
    return [f"{k}={stats[k]}" for k in FINITE_REQUIRED
            if k in stats and not math.isfinite(stats[k])]


class NonfiniteStreak:
    """Consecutive iterations that brought new NaN/inf values."""

    def __init__(self):
        self.iters = 0

    def update(self, nonfinite_new: float) -> int:
        self.iters = self.iters + 1 if nonfinite_new > 0 else 0
        return self.iters


def judge(stats: Mapping[str, float], settings: HealthSettings,
          nonfinite: Optional[List[str]] = None, nonfinite_iters: int = 1) -> Verdict:
    """Apply every rule to one iteration's learner stats.

    ``nonfinite``: what brought NaN/inf this iteration, from any source ("3 in
    grads", "critic_loss=nan"); ``nonfinite_iters``: consecutive iterations,
    this one included, that brought some.
    """
    v = Verdict()
    D, W = DivergenceState.DIVERGED, DivergenceState.WARNING
    s = settings

    if nonfinite:
        persistent = nonfinite_iters >= s.nonfinite_diverge_iters
        v.add(Finding("nonfinite", D if persistent else W,
                      f"NaN/inf new in {nonfinite_iters} consecutive iteration"
                      f"{'s' * (nonfinite_iters > 1)} ({', '.join(nonfinite)})",
                      f"warning at 1, diverged at {s.nonfinite_diverge_iters} in a row",
                      WHY_NONFINITE))

    bound = stats.get("q_bound")
    reported = stats.get("q_bound_ratio")
    ratio = reported if reported is not None else q_bound_ratio(stats, bound or 0.0)
    if ratio is not None and not math.isnan(ratio) and bound:
        top = largest_q(stats)
        what = "" if top is None else (f"; farthest: {top[0]} {top[1]:.4g}"
                                       + (" (Q running off downward)" if top[1] < 0 else ""))
        threshold = f"warning > {s.q_bound_warn_ratio:g}, diverged > {s.q_bound_diverge_ratio:g}"
        measured = f"|Q| at {ratio:.3g}x the bound {bound:.4g}{what}"
        if ratio > s.q_bound_diverge_ratio:
            v.add(Finding("q_bound", D, measured, threshold, WHY_BOUND))
        elif ratio > s.q_bound_warn_ratio:
            v.add(Finding("q_bound", W, measured, threshold, WHY_BOUND))

    loss = stats.get("actor_loss")
    if loss is not None and math.isfinite(loss):
        if bound and abs(loss) > bound * s.q_bound_diverge_ratio:
            v.add(Finding("actor_loss", D, f"|actor_loss| {abs(loss):.4g}",
                          f"> {s.q_bound_diverge_ratio:g}x the Q bound {bound:.4g}",
                          "the actor loss is -mean Q, so it cannot exceed the bound either"))
        elif abs(loss) > s.actor_loss_abs_max:
            v.add(Finding("actor_loss", W, f"|actor_loss| {abs(loss):.4g}",
                          f"> {s.actor_loss_abs_max:.4g}", WHY_INCIDENT))

    for net in ("actor", "critic"):
        g = stats.get(f"grad_norm_{net}")
        if g is None or not math.isfinite(g):
            continue
        if g > s.grad_norm_diverge:
            v.add(Finding("grad_norm", D, f"{net} grad norm {g:.4g}",
                          f"> {s.grad_norm_diverge:.4g}", WHY_INCIDENT))
        elif g > s.grad_norm_warn:
            v.add(Finding("grad_norm", W, f"{net} grad norm {g:.4g}",
                          f"> {s.grad_norm_warn:.4g}", WHY_INCIDENT))
    return v
