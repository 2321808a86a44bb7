"""Checks on what the critic actually trains on, read from the replay where it
lives (the learners' shards, by rllib_av/critic_probes.py).

- ``reward_pipeline_check``: are the rewards reaching the critic (training
  units) inside the env's declared per-step range? If not, is it a scale (every
  step too large, the first step of an episode included) or an accumulation
  (first steps fine, magnitudes growing along the episode: rewards summed up)?
- ``TERMINAL_BATCH``: how many of a shard's newest terminal transitions the
  terminal-masking check (rllib_av/critic_probes.py) runs through the
  learner's own Bellman targets: on them the target must be r alone.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

RECENT = 20_000  # transitions looked at (the newest, per learner shard)
TERMINAL_BATCH = 256  # terminal transitions the masking check fits (the newest)
LATE_STEP = 10  # "late in the episode" starts here
ACCUMULATION_GROWTH = 3.0  # mean |r| late / mean |r| at the first step


def reward_pipeline_check(rewards: np.ndarray, positions: np.ndarray,
                          training_range: Tuple[float, float]) -> Dict:
    """``rewards``: stored transitions' rewards in training units; ``positions``:
    each one's step index within its episode (the replay's ``recent_transitions``)."""
    rewards = np.asarray(rewards, np.float64)
    if not len(rewards):
        return {}
    lo, hi = training_range
    tol = 1e-3 * max(abs(lo), abs(hi)) + 1e-6
    beyond = (rewards < lo - tol) | (rewards > hi + tol)
    first, late = positions == 0, positions >= LATE_STEP
    out = {"reward_train_min": float(rewards.min()), "reward_train_max": float(rewards.max()),
           "reward_range_min": lo, "reward_range_max": hi,
           "reward_beyond_frac": float(beyond.mean())}
    if first.any():
        out["reward_first_step_beyond_frac"] = float(beyond[first].mean())
    if first.any() and late.any():
        out["reward_growth"] = float(np.abs(rewards[late]).mean()
                                     / max(np.abs(rewards[first]).mean(), 1e-9))
    out["reward_pipeline"] = classify_rewards(out)
    return out


def classify_rewards(check: Dict) -> str:
    """'ok', 'accumulation' (rewards summed along the episode) or 'scale'."""
    if check.get("reward_beyond_frac", 0.0) == 0.0:
        return "ok"
    if (check.get("reward_first_step_beyond_frac", 1.0) <= 0.05
            and check.get("reward_growth", 0.0) >= ACCUMULATION_GROWTH):
        return "accumulation"
    return "scale"

