"""Reward processing for training: optional clipping, then optional scaling by
a running standard deviation of discounted returns.

Raw rewards stay in the replay; ``training_rewards`` is applied where they are
sampled (numpy or torch, on any device), so the scale can keep adapting. The
statistics live in one ``RewardProcessor`` (the driver's: every learner shard
trains in the same units), and ``scale`` (the current factor) also converts
the env's declared reward range into training units for the Q bound.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np


def training_rewards(raw, clip: Optional[float], scale: float):
    """Raw per-step rewards -> the units the critic trains on: clipped to
    [-clip, clip] (when set), then times ``scale``. numpy arrays and torch
    tensors alike."""
    rewards = raw if clip is None else raw.clip(-clip, clip)
    return rewards * scale


class RewardProcessor:
    def __init__(self, gamma: float, clip: Optional[float] = None, scale_by_return_std: bool = False,
                 epsilon: float = 1e-8):
        self.gamma = gamma
        self.clip = clip
        self.scale_by_return_std = scale_by_return_std
        self.epsilon = epsilon
        # Welford statistics of the running discounted return G_t = gamma G_{t-1} + r_t.
        self._count, self._mean, self._m2 = 0, 0.0, 0.0
        self._returns: Dict[Any, float] = {}  # episode id -> G so far

    @property
    def scale(self) -> float:
        if not self.scale_by_return_std or self._count < 2:
            return 1.0
        return 1.0 / (np.sqrt(self._m2 / (self._count - 1)) + self.epsilon)

    def observe(self, episode_id, rewards: np.ndarray, done: bool) -> None:
        """Track the discounted returns of arriving (raw) rewards."""
        if not self.scale_by_return_std or not len(rewards):
            return
        g = self._returns.pop(episode_id, 0.0)
        for r in training_rewards(np.asarray(rewards, np.float64), self.clip, 1.0).tolist():
            g = self.gamma * g + r
            self._count += 1
            delta = g - self._mean
            self._mean += delta / self._count
            self._m2 += delta * (g - self._mean)
        if not done:
            self._returns[episode_id] = g

    def process(self, rewards):
        """Raw rewards in training units, at the current scale."""
        return training_rewards(rewards, self.clip, self.scale)

    def get_state(self) -> Dict[str, Any]:
        return {"count": self._count, "mean": self._mean, "m2": self._m2,
                "returns": dict(self._returns)}

    def set_state(self, state: Dict[str, Any]) -> None:
        self._count, self._mean, self._m2 = state["count"], state["mean"], state["m2"]
        self._returns = dict(state["returns"])


class ObservedRewardRange:
    """The lowest and highest raw reward ever stored: every Bellman target's
    reward lies between them, whatever the replay holds now or a probe
    samples (a rare crash included). Raw, so that a moving scale maps it into
    training units at use (q_bound.training_return_interval), as it does a
    declared range."""

    def __init__(self):
        self.low: Optional[float] = None
        self.high: Optional[float] = None

    @property
    def range(self) -> Optional[Tuple[float, float]]:
        """(min, max) of every reward observed so far, or None before any."""
        return None if self.low is None else (self.low, self.high)

    def observe(self, rewards: np.ndarray) -> None:
        if not len(rewards):
            return
        low, high = float(np.min(rewards)), float(np.max(rewards))
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def get_state(self) -> Dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def set_state(self, state: Dict[str, Any]) -> None:
        self.low, self.high = state["low"], state["high"]
