"""The Q bound: the interval every true discounted return lies in, and its
largest |Q|.

With per-step reward in [r_min, r_max] and discount gamma, every discounted
return lies in [r_min / (1 - gamma), r_max / (1 - gamma)] (``return_interval``).
A critic whose estimates leave that interval, on either side, is wrong. The
design's ``q_bound`` is its largest magnitude: for a symmetric range |Q| <=
q_bound is the interval itself, for a lopsided one it is blind on the short
side (Pendulum's rewards in [-16.3, 0] let Q reach +1627), which
``interval_excursion`` judges. The range must be given in the reward units the
critic is trained on, so callers that clip or scale rewards before the Bellman
update map the range through ``training_reward_range`` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple

from rllib_av.envs.env_settings import DRIVING_ENV_ID, EnvSettings
from rllib_av.envs.reward import reward_range
from rllib_av.health.statistics import Q_VALUES


def return_interval(r_min: float, r_max: float, gamma: float) -> Tuple[float, float]:
    """[r_min / (1 - gamma), r_max / (1 - gamma)]: every true discounted return."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if r_min > r_max:
        raise ValueError(f"r_min ({r_min}) > r_max ({r_max})")
    return r_min / (1.0 - gamma), r_max / (1.0 - gamma)


def bound_of(interval: Tuple[float, float]) -> float:
    """q_bound of a return interval: its largest magnitude."""
    return max(abs(interval[0]), abs(interval[1]))


def q_bound(r_min: float, r_max: float, gamma: float) -> float:
    """max(|r_min|, |r_max|) / (1 - gamma)."""
    return bound_of(return_interval(r_min, r_max, gamma))


def training_reward_range(
    r_min: float,
    r_max: float,
    clip: Optional[float] = None,
    scale: float = 1.0,
) -> Tuple[float, float]:
    """The per-step reward range after clipping each reward to [-clip, clip],
    then multiplying by ``scale`` (> 0), i.e. in the critic's training units.

    Clipping maps the interval, not its ends one by one: [-20, -2] clipped to
    [-1, 1] is [-1, -1] (every reward becomes -1)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if clip is not None:
        r_min, r_max = (min(max(r, -clip), clip) for r in (r_min, r_max))
    return r_min * scale, r_max * scale


def training_return_interval(declared: Optional[Sequence[float]], gamma: float,
                             clip: Optional[float] = None, scale: float = 1.0
                             ) -> Optional[Tuple[float, float]]:
    """``return_interval`` in training units for a declared raw range, or None
    when there is no range or it cannot be mapped (a degenerate scale): never
    raises, so a training loop can call it on every update. Its largest
    magnitude is q_bound."""
    if declared is None:
        return None
    try:
        return return_interval(*training_reward_range(*declared, clip=clip, scale=scale), gamma)
    except ValueError:
        return None


def training_q_bound(declared: Optional[Sequence[float]], gamma: float,
                     clip: Optional[float] = None, scale: float = 1.0) -> Optional[float]:
    """q_bound in training units (None as ``training_return_interval``)."""
    interval = training_return_interval(declared, gamma, clip, scale)
    return None if interval is None else bound_of(interval)


def q_bound_ratio(stats: Mapping[str, float], bound: float) -> Optional[float]:
    """max |v| / bound over every Q statistic present (both ends: a critic running
    off towards minus infinity counts as much as one running up). None without
    a Q statistic; NaN if any of them is NaN (unknown, not healthy)."""
    values = [abs(float(stats[k])) for k in Q_VALUES if stats.get(k) is not None]
    if not values or not bound > 0:
        return None
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values) / bound


def observed_q_bound(rewards_bound: Optional[float], start_q: float) -> Optional[float]:
    """Without a declared range, the bound on what the critic trained on:
    ``rewards_bound`` is q_bound of the rewards in its replay (training units,
    the probes' ``q_bound_observed``), ``start_q`` the critic's largest |Q| in
    its first iteration. Each update y = r + gamma Q' contracts towards the
    rewards' ball: |Q_k| <= rewards_bound + gamma^k start_q, so a critic beyond
    their sum did not get there by fitting its data. None while the rewards
    bound less than the critic's initial noise (nothing to tell it from)."""
    if rewards_bound is None or not rewards_bound > 0 or rewards_bound < start_q:
        return None
    return rewards_bound + start_q


@dataclass(frozen=True)
class Excursion:
    """A Q statistic beyond an end of the return interval that |Q| <= q_bound
    does not guard (health_settings.q_interval_slack)."""
    key: str
    value: float
    above: bool  # beyond the highest true return (else below the lowest)
    end: float  # the end it left: the interval's, widened to where a critic starts
    slack: float  # what the rule allows beyond ``end``
    true_end: float  # the interval's own end (== end unless widened)

    @property
    def excess(self) -> float:
        return self.value - self.end if self.above else self.end - self.value

    def __str__(self) -> str:
        side = "above the highest" if self.above else "below the lowest"
        if self.end == self.true_end:
            end = f"{side} true return {self.end:.4g}"
        else:  # widened to where the critic started
            end = (f"{'above' if self.above else 'below'} {self.end:.4g} (where an untrained "
                   f"critic starts; the {side.split()[-1]} true return is {self.true_end:.4g})")
        return f"{self.key} {self.value:.4g} {end} by {self.excess:.4g} (allowed {self.slack:.4g})"


def q_span(stats: Mapping[str, float]) -> Optional[Tuple[float, float]]:
    """(lowest, highest) of the Q statistics present (NaN left out), or None."""
    qs = [float(stats[k]) for k in Q_VALUES
          if stats.get(k) is not None and not math.isnan(stats[k])]
    return (min(qs), max(qs)) if qs else None


def judged_interval(stats: Mapping[str, float],
                    start: Optional[Tuple[float, float]] = None
                    ) -> Optional[Tuple[float, float, float, float]]:
    """(low, high, from, to): the return interval the verdict judges Q against,
    the declared range's (``q_return_min``, ``q_return_max``), else the one of
    every reward the critic was trained on (``q_return_*_observed``), and
    where the critic started, [from, to] around 0, which the judged interval
    is widened to hold: 0 alone for a declared range; for an observed one also
    ``start``, the span of the critic's Q in its first iteration. Every target
    is y = r + gamma Q' with r in the observed range, so a critic that started
    in [from, to] and fits its targets stays in the union of that and the
    interval. None without either interval."""
    declared = stats.get("q_return_min"), stats.get("q_return_max")
    if None not in declared:
        return declared[0], declared[1], 0.0, 0.0
    low, high = stats.get("q_return_min_observed"), stats.get("q_return_max_observed")
    if low is None or high is None:
        return None
    start_low, start_high = start or (0.0, 0.0)
    return low, high, min(start_low, 0.0), max(start_high, 0.0)


def interval_excursion(stats: Mapping[str, float], gamma: float, slack_fraction: float,
                       start: Optional[Tuple[float, float]] = None) -> Optional[Excursion]:
    """The Q statistic farthest beyond a short end of the return interval
    (``judged_interval``; ``start``: the span of the critic's Q in its first
    iteration, for an observed interval), or None.

    The interval is widened to hold where the critic started (0 at least: one
    learning towards returns in [100, 200] passes through [0, 100] on its way:
    not wrong). Only an end shorter than q_bound is judged: the other one is
    |Q| <= q_bound already (so a symmetric range adds nothing). An excursion
    counts past ``slack_fraction`` of the spread of the Q statistics (the
    critic's fitting error grows with the spread of what it fits), and never
    under one step's reward span, (1 - gamma) x the interval's width: what a
    single Bellman target carries of a reward the critic cannot predict."""
    interval = judged_interval(stats, start)
    if interval is None:
        return None
    true_low, true_high, start_low, start_high = interval
    qs = {k: float(stats[k]) for k in Q_VALUES
          if stats.get(k) is not None and not math.isnan(stats[k])}
    if not qs:
        return None
    low, high = min(true_low, start_low), max(true_high, start_high)
    bound = bound_of((low, high))
    spread = max(qs.values()) - min(qs.values())
    slack = max((1.0 - gamma) * (high - low), slack_fraction * spread)
    found = []
    for k, v in qs.items():
        if high < bound and v > high + slack:
            found.append(Excursion(k, v, True, high, slack, true_high))
        elif -low < bound and v < low - slack:
            found.append(Excursion(k, v, False, low, slack, true_low))
    return max(found, key=lambda e: e.excess) if found else None


def largest_q(stats: Mapping[str, float]) -> Optional[Tuple[str, float]]:
    """(key, value) of the Q statistic farthest from zero (what drives the ratio)."""
    present = [(k, float(stats[k])) for k in Q_VALUES
               if stats.get(k) is not None and not math.isnan(stats[k])]
    return max(present, key=lambda kv: abs(kv[1])) if present else None


def declared_reward_range(env: EnvSettings,
                          override: Optional[Sequence[float]] = None
                          ) -> Optional[Tuple[float, float]]:
    """The per-step reward range (raw units) the Q bound is built on: the run
    config's ``training.reward_range`` if set, else the one DrivingEnv's reward
    declares, else None (a gymnasium env declares none)."""
    if override is not None:
        return float(override[0]), float(override[1])
    if env.id == DRIVING_ENV_ID:
        return reward_range(env)
    return None
