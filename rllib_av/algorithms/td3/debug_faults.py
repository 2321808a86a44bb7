"""TEST ONLY: deliberately broken reward pipelines for the preflight gate and
the diagnosis tree (training.debug_reward_mode).

Applied to copies of arriving episode chunks before they reach the replay
buffer, so the critic trains on the broken rewards while the env, its reward
components, the reported episode returns and the declared reward range stay
correct, as in the bugs they imitate.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterable, List

import numpy as np

# "blown_up": a reward scale nobody declared (the Q bound still uses the env's range).
BLOWN_UP_SCALE = 1e4


class DebugRewardFault:
    def __init__(self, mode: str):
        if mode not in ("running_sum", "blown_up"):
            raise ValueError(f"unknown debug reward mode {mode!r}")
        self.mode = mode
        self._sums: Dict[object, float] = {}  # episode id -> running sum so far

    def apply(self, episodes: Iterable) -> List:
        """Copies of ``episodes`` with broken rewards (the EnvRunner still reports
        returns from the originals)."""
        out = []
        for ep in episodes:
            ep = copy.deepcopy(ep)
            out.append(ep)
            rewards = np.asarray(ep.get_rewards(), np.float64)
            if not len(rewards):
                continue
            if self.mode == "blown_up":
                new = rewards * BLOWN_UP_SCALE
            else:  # "running_sum": each step returns the episode's undiscounted sum so far
                new = self._sums.pop(ep.id_, 0.0) + np.cumsum(rewards)
                if not ep.is_done:
                    self._sums[ep.id_] = float(new[-1])
            new = new.astype(np.float32)
            ep.set_rewards(new_data=new if isinstance(ep.get_rewards(), np.ndarray) else list(new))
        return out
