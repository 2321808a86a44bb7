"""The Q bound: the largest |Q| any true discounted return can have.

With per-step reward in [r_min, r_max] and discount gamma, every discounted
return lies in [r_min / (1 - gamma), r_max / (1 - gamma)]. A critic whose
estimates leave that interval is wrong. The range must be given in the reward
units the critic is trained on, so callers that clip or scale rewards before
the Bellman update map the range through ``training_reward_range`` first.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple


def q_bound(r_min: float, r_max: float, gamma: float) -> float:
    """max(|r_min|, |r_max|) / (1 - gamma)."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if r_min > r_max:
        raise ValueError(f"r_min ({r_min}) > r_max ({r_max})")
    return max(abs(r_min), abs(r_max)) / (1.0 - gamma)


def training_reward_range(
    r_min: float,
    r_max: float,
    clip: Optional[float] = None,
    scale: float = 1.0,
) -> Tuple[float, float]:
    """The per-step reward range after clipping to [-clip, clip], then
    multiplying by ``scale`` (> 0), i.e. in the critic's training units."""
    if clip is not None:
        r_min, r_max = max(r_min, -clip), min(r_max, clip)
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return r_min * scale, r_max * scale


def q_bound_ratio(q_actor_max: float, q_actor_min: float, q_target_max: float,
                  bound: float) -> float:
    """max(|q_actor_max|, |q_actor_min|, |q_target_max|) / bound (> 1: beyond)."""
    return max(abs(q_actor_max), abs(q_actor_min), abs(q_target_max)) / bound
