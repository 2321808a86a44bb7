"""Divergence verdicts: healthy / warning / diverged, every rule in one place.

``judge`` looks at one iteration's learner health statistics (the names of
DESIGN.md's health metrics) and returns the worst state any rule reached with
one human-readable reason per rule that fired. It is stateless: trends (runaway
growth) are Prometheus's job, where the history lives; the one run of
iterations it needs, NaN/inf persisting, the caller counts (``NonfiniteStreak``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import List, Mapping, Optional

from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.q_bound import q_bound_ratio


class DivergenceState(enum.IntEnum):
    HEALTHY = 0
    WARNING = 1
    DIVERGED = 2


@dataclass
class Verdict:
    state: DivergenceState = DivergenceState.HEALTHY
    reasons: List[str] = field(default_factory=list)

    def raise_to(self, state: DivergenceState, reason: str) -> None:
        self.state = max(self.state, state)
        self.reasons.append(f"{state.name.lower()}: {reason}")


# Statistics whose NaN/inf means the learner itself is broken.
_FINITE_REQUIRED = ("q_actor_mean", "q_actor_max", "q_actor_min", "q_target_mean",
                    "q_target_max", "q1_mean", "q2_mean", "critic_loss", "actor_loss",
                    "grad_norm_actor", "grad_norm_critic")


def bound_ratio(stats: Mapping[str, float]) -> Optional[float]:
    """q_bound_ratio as reported, else computed from the Q extremes and q_bound."""
    if stats.get("q_bound_ratio") is not None:
        return float(stats["q_bound_ratio"])
    needed = ("q_actor_max", "q_actor_min", "q_target_max", "q_bound")
    if any(stats.get(k) is None for k in needed) or not stats["q_bound"] > 0:
        return None
    return q_bound_ratio(stats["q_actor_max"], stats["q_actor_min"],
                         stats["q_target_max"], stats["q_bound"])


class NonfiniteStreak:
    """Consecutive iterations that brought new NaN/inf values."""

    def __init__(self):
        self.iters = 0

    def update(self, nonfinite_new: int) -> int:
        self.iters = self.iters + 1 if nonfinite_new > 0 else 0
        return self.iters


def judge(stats: Mapping[str, float], settings: HealthSettings,
          nonfinite_new: int = 0, nonfinite_iters: int = 1) -> Verdict:
    """Apply every rule to one iteration's learner stats.

    ``nonfinite_new``: NaN/inf values counted (obs, reward, loss, grads) since
    the previous verdict; ``nonfinite_iters``: consecutive iterations, this one
    included, that brought new ones.
    """
    v = Verdict()
    D, W = DivergenceState.DIVERGED, DivergenceState.WARNING

    bad = [k for k in _FINITE_REQUIRED if k in stats and not math.isfinite(stats[k])]
    if bad:
        v.raise_to(D, "non-finite " + ", ".join(f"{k}={stats[k]}" for k in bad))
    if nonfinite_new > 0:
        persistent = nonfinite_iters >= settings.nonfinite_diverge_iters
        v.raise_to(D if persistent else W,
                   f"{nonfinite_new:g} non-finite values in obs/reward/loss/grads, new in "
                   f"{nonfinite_iters} consecutive iteration{'s' * (nonfinite_iters > 1)}")

    ratio = bound_ratio(stats)
    if ratio is not None and math.isfinite(ratio):
        if ratio > settings.q_bound_diverge_ratio:
            v.raise_to(D, f"|Q| reached {ratio:.3g}x the bound {stats.get('q_bound', float('nan')):.4g}")
        elif ratio > settings.q_bound_warn_ratio:
            v.raise_to(W, f"|Q| at {ratio:.3g}x the bound {stats.get('q_bound', float('nan')):.4g}")

    loss = stats.get("actor_loss")
    if loss is not None and math.isfinite(loss):
        qb = stats.get("q_bound")
        if qb and abs(loss) > qb * settings.q_bound_diverge_ratio:
            v.raise_to(D, f"|actor_loss| {abs(loss):.4g} beyond the Q bound {qb:.4g}")
        elif abs(loss) > settings.actor_loss_abs_max:
            v.raise_to(W, f"|actor_loss| {abs(loss):.4g} > {settings.actor_loss_abs_max:.4g}")

    for net in ("actor", "critic"):
        g = stats.get(f"grad_norm_{net}")
        if g is None or not math.isfinite(g):
            continue
        if g > settings.grad_norm_diverge:
            v.raise_to(D, f"{net} grad norm {g:.4g} > {settings.grad_norm_diverge:.4g}")
        elif g > settings.grad_norm_warn:
            v.raise_to(W, f"{net} grad norm {g:.4g} > {settings.grad_norm_warn:.4g}")
    return v
