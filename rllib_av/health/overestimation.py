"""The overestimation probe of the TD3 paper (Fujimoto et al. 2018, fig. 1): the math.

On evaluation rollouts of the deterministic policy (rllib_av/critic_probes.py
runs them), compare the critic's Q1(s, mu(s)) with the discounted Monte-Carlo
return actually collected from s. A critic that overestimates shows Q far
above the return; the bias is reported in the critic's training reward units
(after clipping/scaling).
"""

from __future__ import annotations

import math
from typing import List

import numpy as np


def discounted_returns(rewards: List[float], gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} for every step of one finished episode."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def usable_steps(length: int, terminated: bool, gamma: float, tail: float = 0.25) -> int:
    """How many leading states of an episode have a usable MC return: all of a
    terminated one; of a truncated one only those whose cut-off tail weighs at
    most ``tail`` (gamma^remaining <= tail), so short step limits still leave some."""
    if terminated:
        return length
    horizon = math.ceil(math.log(tail) / math.log(gamma))
    return max(length - horizon, 0)
