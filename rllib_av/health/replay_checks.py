"""Checks on what the critic actually trains on, read from the replay buffer.

- ``reward_pipeline_check``: are the rewards reaching the critic (training
  units) inside the env's declared per-step range? If not, is it a scale (every
  step too large, the first step of an episode included) or an accumulation
  (first steps fine, magnitudes growing along the episode: rewards summed up)?
- ``terminal_transitions``: terminal transitions for the terminal-masking
  check (rllib_av/critic_probes.py): on them a correct critic fits Q(s, a) ~ r;
  one trained without the (1 - terminated) mask fits r + gamma * Q'(s', a')
  instead. Whichever target the critic fits better says which one it was
  trained on (``MASK_FIT_RATIO``).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ray.rllib.core.columns import Columns

RECENT = 20_000  # transitions looked at (the newest)
LATE_STEP = 10  # "late in the episode" starts here
ACCUMULATION_GROWTH = 3.0  # mean |r| late / mean |r| at the first step
MASK_FIT_RATIO = 0.5  # unmasked residual below this fraction of the masked one: unmasked


def episode_positions(prev: np.ndarray, numbers: np.ndarray, capacity: int) -> np.ndarray:
    """Step index within its episode of each observation number (ascending)."""
    pos: Dict[int, int] = {}
    out = np.zeros(len(numbers), np.int64)
    for i, n in enumerate(numbers.tolist()):
        p = int(prev[n % capacity])
        out[i] = pos[p] + 1 if p >= 0 and p in pos else 0
        pos[n] = out[i]
    return out


def reward_pipeline_check(buffer, training_range: Tuple[float, float]) -> Dict:
    state = buffer.get_state()
    arrays = state.get("arrays")
    if arrays is None:
        return {}
    cap, added = state["capacity"], state["num_added"]
    numbers = np.arange(max(added - min(cap, RECENT), 0), added)
    slots = numbers % cap
    pos = episode_positions(arrays["prev"], numbers, cap)
    is_transition = arrays["next"][slots] >= 0
    rewards = buffer.rewards.process(arrays["reward"][slots][is_transition]).astype(np.float64)
    pos = pos[is_transition]
    if not len(rewards):
        return {}
    lo, hi = training_range
    tol = 1e-3 * max(abs(lo), abs(hi)) + 1e-6
    beyond = (rewards < lo - tol) | (rewards > hi + tol)
    first, late = pos == 0, pos >= LATE_STEP
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


def terminal_transitions(buffer, want: int = 256, chunk: int = 2048,
                         tries: int = 8) -> Optional[Dict]:
    """Up to ``want`` terminal transitions as a batch (the buffer's RNG is left as it was)."""
    if buffer.num_transitions_added == 0:
        return None
    rng_state = buffer.rng.bit_generator.state
    parts = []
    try:
        for _ in range(tries):
            batch = buffer.sample(chunk)
            keep = np.asarray(batch[Columns.TERMINATEDS], bool)
            if keep.any():
                parts.append(_take(batch, keep))
            if sum(len(p[Columns.REWARDS]) for p in parts) >= want:
                break
    finally:
        buffer.rng.bit_generator.state = rng_state
    if not parts:
        return None
    return _take(_concat(parts), slice(0, want))


def _map(batch, fn):
    return {k: _map(v, fn) if isinstance(v, dict) else fn(v) for k, v in batch.items()}


def _take(batch, index):
    return _map(batch, lambda x: np.asarray(x)[index])


def _concat(parts):
    first = parts[0]
    return {k: _concat([p[k] for p in parts]) if isinstance(first[k], dict)
            else np.concatenate([p[k] for p in parts]) for k in first}
