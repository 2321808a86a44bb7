"""TEST ONLY: deliberately broken reward pipelines for the preflight gate and
the diagnosis tree (training.debug_reward_mode).

Applied to the chunks arriving for the replay buffer (the EnvRunner's episodes
are left alone), so the critic trains on the broken rewards while the env, its
reward components, the reported episode returns and the declared reward range
stay correct, as in the bugs they imitate.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List

import numpy as np

from rllib_av.replay.episode_chunk import EpisodeChunk

# "blown_up": a reward scale nobody declared (the Q bound still uses the env's range).
BLOWN_UP_SCALE = 1e4


class DebugRewardFault:
    def __init__(self, mode: str):
        if mode not in ("running_sum", "blown_up"):
            raise ValueError(f"unknown debug reward mode {mode!r}")
        self.mode = mode
        self._sums: Dict[object, float] = {}  # episode id -> running sum so far

    def apply(self, chunks: Iterable[EpisodeChunk]) -> List[EpisodeChunk]:
        """``chunks`` with broken rewards."""
        out = []
        for chunk in chunks:
            rewards = chunk.rewards.astype(np.float64)
            if len(rewards):
                if self.mode == "blown_up":
                    rewards = rewards * BLOWN_UP_SCALE
                else:  # "running_sum": each step returns the episode's undiscounted sum so far
                    rewards = self._sums.pop(chunk.id, 0.0) + np.cumsum(rewards)
                    if not chunk.done:
                        self._sums[chunk.id] = float(rewards[-1])
                chunk = dataclasses.replace(chunk, rewards=rewards.astype(np.float32))
            out.append(chunk)
        return out
