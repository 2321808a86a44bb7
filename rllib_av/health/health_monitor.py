"""Health of each training result in turn, from the result dict alone.

``HealthMonitor.judge(result)`` reads the iteration's numbers, works out what
is new since the previous iteration (counters, NaN/inf) and gives each module a
verdict. It carries the little history that needs: the lifetime totals seen at
each iteration, the NaN/inf streak, what the latest critic probe found wrong
with the rewards or the Bellman update (``note_probe``), and, without a
declared reward range, the bound of the rewards the critic trained on (the
probes') and where the critic started (q_bound.observed_q_bound). Whatever
publishes (the exporter, TensorBoard, metrics.jsonl) takes the
``IterationHealth`` it returns; nothing here depends on a publisher being there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.health.divergence import (
    Finding, NonfiniteStreak, Verdict, judge, nonfinite_stats, probe_findings,
    thresholds_in_effect,
)
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.iteration_metrics import CounterKey, IterationMetrics, from_result
from rllib_av.health.q_bound import largest_q, observed_q_bound, q_span


# metrics.jsonl: the verdict's reasons per module, on iterations that are not healthy.
HEALTH_REASONS_KEY = "health_reasons"


@dataclass
class IterationHealth:
    metrics: IterationMetrics
    # Increase of each lifetime total during this iteration.
    new: Dict[CounterKey, float] = field(default_factory=dict)
    verdicts: Dict[str, Verdict] = field(default_factory=dict)
    # The thresholds the verdicts were judged by (divergence.VERDICT_THRESHOLDS).
    thresholds: Dict[str, float] = field(default_factory=dict)

    @property
    def states(self) -> Dict[str, int]:
        return {mid: int(v.state) for mid, v in self.verdicts.items()}

    def as_result(self) -> Dict:
        """What goes into ``result["health"]``."""
        return {"divergence_state": self.states,
                "reasons": {mid: v.reasons for mid, v in self.verdicts.items()}}


class LifetimeCounts:
    """What each lifetime total added in an iteration.

    RLlib's lifetime totals are part of the algorithm's state, so a restored
    checkpoint (a guard rollback) puts them back to that iteration's values.
    The training iteration tells: a result whose iteration is not past the
    previous one continues from iteration ``iteration - 1``, whose totals are
    remembered (the last ``HISTORY`` of them); so counters neither stall after
    a rollback nor count twice.
    """

    HISTORY = 10_000

    def __init__(self):
        self._at: Dict[int, Dict[CounterKey, float]] = {}
        self._last_iteration = 0

    def advance(self, iteration: int,
                totals: Mapping[CounterKey, float]) -> Dict[CounterKey, float]:
        if iteration <= self._last_iteration:  # restored: drop the abandoned future
            self._at = {i: t for i, t in self._at.items() if i < iteration}
        # The first result of a resumed process has no base: nothing is counted new.
        base = self._at.get(iteration - 1, {} if iteration <= 1 else dict(totals))
        new = {k: max(v - base.get(k, 0.0), 0.0) for k, v in totals.items()}
        self._at[iteration] = dict(totals)
        self._at.pop(iteration - self.HISTORY, None)
        self._last_iteration = iteration
        return new


class HealthMonitor:
    """``reward_range``: the declared per-step range (raw units), against which
    reward component shares are told from rounding noise (iteration_metrics.py);
    ``gamma``: the run's discount, for the return interval's short ends
    (divergence.interval_finding)."""

    def __init__(self, settings: HealthSettings, num_env_runners: int,
                 reward_range: Optional[Sequence[float]] = None,
                 gamma: Optional[float] = None):
        self.settings = settings
        self.num_env_runners = num_env_runners
        self.reward_range = reward_range
        self.gamma = gamma
        self._counts = LifetimeCounts()
        self._streak = NonfiniteStreak()
        self._modules = [DEFAULT_MODULE_ID]
        self._probe_findings: List[Finding] = []
        self._rewards_bound: Optional[float] = None  # the probes' q_bound_observed, largest
        self._start_q: Optional[float] = None
        self._start_span: Optional[Tuple[float, float]] = None  # Q's, first iteration

    def note_probe(self, probe: Mapping) -> None:
        """A critic probe's record: what it found wrong stands in every verdict
        until the next probe."""
        self._probe_findings = probe_findings(probe)
        seen = probe.get("q_bound_observed")
        if seen is not None:
            self._rewards_bound = max(seen, self._rewards_bound or 0.0)

    def _bounded(self, stats: Mapping[str, float]) -> Mapping[str, float]:
        """``stats`` with the observed bound where the learner has no declared one."""
        top = largest_q(stats)
        if self._start_q is None and top is not None:
            self._start_q = abs(top[1])
            self._start_span = q_span(stats)
        bound = observed_q_bound(self._rewards_bound, self._start_q or 0.0)
        if stats.get("q_bound") is not None or bound is None:
            return stats
        return {**stats, "q_bound": bound}

    def judge(self, result: Mapping) -> IterationHealth:
        m = from_result(result, self.num_env_runners, self.reward_range)
        new = self._counts.advance(m.iteration, m.lifetime)
        # Every source of NaN/inf, one rule: counted ones (replay, skipped
        # learner steps) and learner statistics that came out non-finite.
        sources = {dict(labels)["where"]: f"{n:g} in {dict(labels)['where']}"
                   for (name, labels), n in new.items() if name == "nonfinite" and n > 0}
        for stats in m.modules.values():
            sources.update(nonfinite_stats(stats))
        iters = self._streak.update(len(sources))
        if m.modules:
            self._modules = list(m.modules)
        # An iteration without a gradient update still gets a verdict (on NaN/inf).
        verdicts = {mid: judge(self._bounded(m.modules.get(mid, {})), self.settings, sources,
                               iters, self.gamma, self._start_span)
                    for mid in self._modules}
        for verdict in verdicts.values():
            for finding in self._probe_findings:
                verdict.add(finding)
        return IterationHealth(m, new, verdicts, thresholds_in_effect(self.settings))
