"""Divergence verdicts: healthy / warning / diverged, every rule in one place.

``judge`` applies each rule to one iteration's learner statistics (the keys of
statistics.py) and returns the worst state any rule reached, with one
``Finding`` per rule that fired: what it measured, the threshold, and why that
threshold holds. It is stateless: trends (runaway growth) are Prometheus's job,
where the history lives; the one run of iterations it needs, NaN/inf
persisting, the caller counts (``NonfiniteStreak``, health_monitor.py).
``probe_findings`` turns what a critic probe found wrong with the rewards or
the Bellman update into findings the monitor adds to each verdict.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.q_bound import interval_excursion, largest_q, q_bound_ratio
from rllib_av.health.statistics import FINITE_REQUIRED


class DivergenceState(enum.IntEnum):
    HEALTHY = 0
    WARNING = 1
    DIVERGED = 2


@dataclass
class Finding:
    """One rule that fired: what it measured, against what, and why.

    ``subject`` names what went wrong without its numbers (which statistic,
    which way): it, ``threshold`` and ``why`` stay the same for as long as the
    situation does, so they can be Prometheus labels; ``measured`` holds the
    numbers, which change every iteration and live in the gauges."""
    rule: str
    state: DivergenceState
    subject: str
    measured: str
    threshold: str
    why: str

    @property
    def reason(self) -> str:
        """What was measured, against what, and why (without state and rule)."""
        return f"{self.measured} (threshold {self.threshold}; {self.why})"

    def __str__(self) -> str:
        return f"{self.state.name.lower()}: {self.rule}: {self.reason}"

    def as_dict(self) -> Dict:
        return {"rule": self.rule, "state": self.state.name.lower(), "subject": self.subject,
                "measured": self.measured, "threshold": self.threshold, "why": self.why}


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


# The settings ``judge`` compares against. The exporter publishes the ones in
# effect (rllib_av_health_threshold{setting}), so the alert rules fire where
# the verdict does, with this run's preset and overrides. (q_interval_slack
# is not among them: its rule needs gamma, so its alert reads the verdict's
# finding, rllib_av_health_reason_info{rule="q_interval"}.)
VERDICT_THRESHOLDS = ("q_bound_warn_ratio", "q_bound_diverge_ratio", "actor_loss_abs_max",
                      "grad_norm_warn", "grad_norm_diverge", "nonfinite_diverge_iters")


def thresholds_in_effect(settings: HealthSettings) -> Dict[str, float]:
    """setting -> value for each verdict threshold that is set (an unset one judges nothing)."""
    return {k: float(getattr(settings, k)) for k in VERDICT_THRESHOLDS
            if getattr(settings, k) is not None}


WHY_BOUND = ("every discounted return of per-step rewards in [r_min, r_max] lies within "
             "+/- q_bound, so no correct critic goes past it on either side")
WHY_INTERVAL = ("every discounted return of per-step rewards in [r_min, r_max] lies in "
                "[r_min, r_max] / (1 - gamma); past an end that |Q| <= q_bound does not reach, "
                "by more than its fitting noise, no correct critic goes")
WHY_REWARDS = ("the Q bound and every check on it assume the declared per-step range; rewards "
               "beyond it (scaled, or summed along the episode) invalidate both")
WHY_TERMINAL = ("a terminal transition has no next state: the Bellman target must be r alone, "
                "exactly, whatever the critic has learned; anything else bootstraps through the end")
WHY_NONFINITE = ("NaN/inf is counted and kept out of the buffer and the weights, so one "
                 "iteration's worth is survivable; new ones in every iteration mean a broken "
                 "sensor, reward or critic")


REWARD_PIPELINE_KINDS = {"ok": "", "scale": "scaled beyond it",
                         "accumulation": "growing along episodes: running sums"}


def rewards_measured(probe: Mapping) -> str:
    """The reward pipeline probe in words."""
    kind = REWARD_PIPELINE_KINDS[probe["reward_pipeline"]]
    return (f"critic's rewards in [{probe['reward_train_min']:.4g}, "
            f"{probe['reward_train_max']:.4g}], {probe['reward_beyond_frac']:.1%} beyond"
            + (f", {kind}" if kind else ""))


def rewards_threshold(probe: Mapping) -> str:
    return f"in [{probe['reward_range_min']:.4g}, {probe['reward_range_max']:.4g}] (declared)"


TERMINAL_THRESHOLD = "target == r on every terminal row"


def terminal_measured(probe: Mapping) -> str:
    """The learner's terminal-masking check in words."""
    return (f"max |target - r| {probe['terminal_target_max_diff']:.3g} on "
            f"{probe['terminal_transitions']} terminal rows (bootstrap term there "
            f"{probe['terminal_bootstrap_abs_mean']:.3g})")


def probe_findings(probe: Mapping) -> List[Finding]:
    """What a critic probe found wrong with what the critic trains on. Warnings:
    a broken reward or Bellman update neither heals by waiting nor by a rollback."""
    W = DivergenceState.WARNING
    out = []
    if probe.get("reward_pipeline") in ("scale", "accumulation"):
        out.append(Finding("reward_range", W, "critic's rewards beyond the declared range, "
                           + REWARD_PIPELINE_KINDS[probe["reward_pipeline"]],
                           rewards_measured(probe), rewards_threshold(probe), WHY_REWARDS))
    if probe.get("terminal_masking") == "unmasked":
        out.append(Finding("terminal_masking", W, "targets on terminal rows bootstrap past r",
                           terminal_measured(probe), TERMINAL_THRESHOLD, WHY_TERMINAL))
    return out


def nonfinite_stats(stats: Mapping[str, float]) -> Dict[str, str]:
    """The statistics that must be finite but are not: {"critic_loss": "critic_loss=nan"}."""
    return {k: f"{k}={stats[k]}" for k in FINITE_REQUIRED
            if k in stats and not math.isfinite(stats[k])}


class NonfiniteStreak:
    """Consecutive iterations that brought new NaN/inf values."""

    def __init__(self):
        self.iters = 0

    def update(self, nonfinite_new: float) -> int:
        self.iters = self.iters + 1 if nonfinite_new > 0 else 0
        return self.iters


def interval_threshold(settings: HealthSettings) -> str:
    return (f"within [q_return_min, q_return_max] (undeclared: [q_return_min_observed, "
            f"q_return_max_observed]) widened to hold where the critic started (0) +/- "
            f"{settings.q_interval_slack:g}x the spread of Q, at least one step's reward span")


def interval_finding(stats: Mapping[str, float], settings: HealthSettings,
                     gamma: Optional[float], start: Optional[Tuple[float, float]] = None
                     ) -> Optional[Finding]:
    """Q past a short end of the return interval (q_bound.interval_excursion)."""
    found = None if gamma is None else interval_excursion(stats, gamma,
                                                           settings.q_interval_slack, start)
    if found is None:
        return None
    return Finding("q_interval", DivergenceState.DIVERGED,
                   f"{found.key} {'above the highest' if found.above else 'below the lowest'} "
                   "true return", str(found), interval_threshold(settings), WHY_INTERVAL)


def judge(stats: Mapping[str, float], settings: HealthSettings,
          nonfinite: Optional[Mapping[str, str]] = None, nonfinite_iters: int = 1,
          gamma: Optional[float] = None, start: Optional[Tuple[float, float]] = None
          ) -> Verdict:
    """Apply every rule to one iteration's learner stats.

    ``nonfinite``: what brought NaN/inf this iteration, source -> what it
    brought ({"grads": "3 in grads", "critic_loss": "critic_loss=nan"});
    ``nonfinite_iters``: consecutive iterations, this one included, that
    brought some; ``gamma``: the run's discount, for the return interval's
    short ends (without it only |Q| <= q_bound is judged); ``start``: the span
    of the critic's Q in its first iteration (an observed interval holds it).
    """
    v = Verdict()
    D, W = DivergenceState.DIVERGED, DivergenceState.WARNING
    s = settings

    if nonfinite:
        persistent = nonfinite_iters >= s.nonfinite_diverge_iters
        v.add(Finding("nonfinite", D if persistent else W,
                      "NaN/inf new in " + ", ".join(sorted(nonfinite)),
                      f"NaN/inf new in {nonfinite_iters} consecutive iteration"
                      f"{'s' * (nonfinite_iters > 1)} ({', '.join(nonfinite.values())})",
                      f"warning at 1, diverged at {s.nonfinite_diverge_iters} in a row",
                      WHY_NONFINITE))

    bound = stats.get("q_bound")
    reported = stats.get("q_bound_ratio")
    ratio = reported if reported is not None else q_bound_ratio(stats, bound or 0.0)
    if ratio is not None and not math.isnan(ratio) and bound:
        top = largest_q(stats)
        if top is None:
            subject, what = "|Q| beyond the bound", ""
        else:
            down = top[1] < 0
            subject = f"{top[0]} running off {'downward' if down else 'upward'}"
            what = f"; farthest: {top[0]} {top[1]:.4g}" + (" (Q running off downward)" * down)
        threshold = f"warning > {s.q_bound_warn_ratio:g}, diverged > {s.q_bound_diverge_ratio:g}"
        measured = f"|Q| at {ratio:.3g}x the bound {bound:.4g}{what}"
        if ratio > s.q_bound_diverge_ratio:
            v.add(Finding("q_bound", D, subject, measured, threshold, WHY_BOUND))
        elif ratio > s.q_bound_warn_ratio:
            v.add(Finding("q_bound", W, subject, measured, threshold, WHY_BOUND))

    beyond = interval_finding(stats, s, gamma, start)
    if beyond is not None:
        v.add(beyond)

    loss = stats.get("actor_loss")
    if loss is not None and math.isfinite(loss):
        # actor_loss = -mean Q1(s, mu(s)): a positive loss is Q running off downward.
        subject = f"mean actor Q running off {'downward' if loss > 0 else 'upward'}"
        if bound and abs(loss) > bound * s.q_bound_diverge_ratio:
            v.add(Finding("actor_loss", D, subject, f"|actor_loss| {abs(loss):.4g}",
                          f"> {s.q_bound_diverge_ratio:g}x the Q bound {bound:.4g}",
                          "the actor loss is -mean Q, so it cannot exceed the bound either"))
        elif s.actor_loss_abs_max is not None and abs(loss) > s.actor_loss_abs_max:
            v.add(Finding("actor_loss", W, subject, f"|actor_loss| {abs(loss):.4g}",
                          f"> {s.actor_loss_abs_max:.4g}", s.source("actor_loss_abs_max")))

    for net in ("actor", "critic"):
        g = stats.get(f"grad_norm_{net}")
        if g is None or not math.isfinite(g):
            continue
        for state, key in ((D, "grad_norm_diverge"), (W, "grad_norm_warn")):
            limit = getattr(s, key)
            if limit is not None and g > limit:
                v.add(Finding("grad_norm", state, f"grad_norm_{net} too large",
                              f"{net} grad norm {g:.4g}", f"> {limit:.4g}", s.source(key)))
                break
    return v
