"""The overestimation probe of the TD3 paper (Fujimoto et al. 2018, fig. 1): the math.

On evaluation rollouts of the deterministic policy (rllib_av/critic_probes.py
runs them), compare the critic's Q1(s, mu(s)) with the discounted return
actually collected from s, in the critic's training reward units (after
clipping/scaling).

A return needs the rewards after s until their weight gamma^k is negligible.
A terminated episode has them all. A truncated one does not: the probe rolls
on past the time limit where the env allows it (the critic bootstraps through
truncation, so those rewards belong to its Q), and whatever tail is still
missing is bounded by the discounted return range of the declared per-step
rewards; a state whose tail can be neither rolled nor bounded is left out, and
a probe with no state left says so.

One snapshot of the bias means little: an early critic sits near 0, a return's
magnitude above the returns of a negative-reward task (below those of a
positive one). ``judge_overestimation`` looks for what overestimation is, a
bias that feeds on itself: growing from probe to probe and ending beyond what
initialization explains (``health.preflight_overestimation_max`` times the
returns' own scale).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# Probes whose bias must rise one after the other.
TREND_PROBES = 3
# A tail beyond the rollout that weighs at most this much (gamma^k) is dropped
# when no reward range bounds it.
NEGLIGIBLE_TAIL = 0.05


def discounted_returns(rewards: Sequence[float], gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} for every step of one rollout (nothing after its end)."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def tail_horizon(gamma: float, tail: float = NEGLIGIBLE_TAIL) -> int:
    """Steps after which the rest of a discounted return weighs at most ``tail``."""
    return math.ceil(math.log(tail) / math.log(gamma))


def returns_with_tail(rewards: Sequence[float], gamma: float, terminated: bool,
                      tail_range: Optional[Tuple[float, float]]
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step of one rollout: the return's lower and upper estimate and
    whether the step is usable.

    Terminated: exact (lower == upper). Cut off: G_t plus gamma^(T-t) times the
    missing tail, bounded by ``tail_range`` = [r_min, r_max] / (1 - gamma)
    when a reward range is declared; without one, only the steps whose tail
    weighs at most NEGLIGIBLE_TAIL are usable (their tail counted as 0 on both
    sides, as the weight says). A return through a NaN/inf reward is unknown:
    the steps before one are not usable."""
    g = discounted_returns(rewards, gamma)
    n = len(rewards)
    known = np.isfinite(g)
    if terminated:
        return g, g, known
    weight = gamma ** (n - np.arange(n))  # of the value after the last step
    if tail_range is not None:
        return g + weight * tail_range[0], g + weight * tail_range[1], known
    return g, g, known & (weight <= NEGLIGIBLE_TAIL)


def bias_record(q: np.ndarray, g_low: np.ndarray, g_high: np.ndarray,
                reward_scale: float) -> Dict:
    """The probe record's overestimation fields for scored states."""
    mid = (g_low + g_high) / 2
    return {"overestimation_states": int(len(q)), "probe_q_mean": float(q.mean()),
            "probe_mc_return_mean": float(mid.mean()),
            "overestimation_bias": float((q - mid).mean()),
            # How far the bounded tails leave the return open (0: all exact).
            "overestimation_tail_halfwidth": float(((g_high - g_low) / 2).mean()),
            # The scale the bias is judged against: the returns' own magnitude,
            # at least one step's largest reward.
            "overestimation_return_scale": float(max(np.abs(mid).mean(), reward_scale))}


def judge_overestimation(probes: List[Dict], factor: float
                         ) -> Tuple[Optional[bool], str, str, str]:
    """(passed or None when not measurable, measured, threshold, why) over a
    run's probe records, oldest first."""
    threshold = (f"rising at each of the last {TREND_PROBES} probes and ending "
                 f"> {factor:g}x the return scale")
    why = ("a critic still near its initial 0 is off by the returns' own magnitude (above "
           "negative returns, below positive ones), so one snapshot is initialization; "
           "overestimation feeds on itself: it grows from probe to probe, past what "
           "initialization explains")
    usable = [p for p in probes if p.get("overestimation_states")]
    if len(usable) < TREND_PROBES:
        missing = [p["overestimation_unmeasured"] for p in probes
                   if p.get("overestimation_unmeasured")]
        detail = f"; {missing[-1]}" if missing else ""
        return None, (f"not measured: {len(usable)} of {len(probes)} probes scored states, the "
                      f"trend needs {TREND_PROBES}{detail}"), threshold, why
    last = usable[-TREND_PROBES:]
    biases = [p["overestimation_bias"] for p in last]
    scale = last[-1]["overestimation_return_scale"]
    rising = all(a < b for a, b in zip(biases, biases[1:]))
    relative = biases[-1] / scale
    measured = (f"Q - return {' -> '.join(f'{b:.4g}' for b in biases)} (last "
                f"{relative:.3g}x the return scale {scale:.4g}, "
                f"{last[-1]['overestimation_states']} states)")
    return not (rising and relative > factor), measured, threshold, why
