"""What the replay keeps of one RLlib episode chunk, and what crosses the
network to the learner: each observation once (no frame stacks), the actions,
the rewards, and how the chunk ends. ``ChunkMeta`` is the little the driver
needs to know of a chunk it does not hold (bookkeeping, reward statistics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Dict, Optional, Tuple

import numpy as np
import tree

BOX_KEY = ""  # leaf name of a non-Dict observation
# What of a chunk can hold NaN/inf (a chunk that does is dropped whole): the
# nonfinite_total{where} labels of the drops.
NONFINITE_PARTS = ("obs", "reward")


@dataclass(frozen=True)
class ChunkMeta:
    """An episode chunk without its observations and actions (~4 B per step)."""

    id: str
    rewards: np.ndarray  # (T,) float32, raw
    done: bool
    finite: bool  # whether the chunk may enter the replay (EpisodeChunk.is_finite)
    # No NaN/inf in a float observation. Not part of equality: ``finite`` says
    # whether the chunk is dropped, this only which part made it so.
    obs_finite: bool = field(default=True, compare=False)

    @property
    def num_steps(self) -> int:
        return len(self.rewards)

    def is_finite(self) -> bool:
        return self.finite

    def nonfinite_parts(self) -> Tuple[str, ...]:
        """The NONFINITE_PARTS holding NaN/inf (both, when both do)."""
        bad = {"obs": not self.obs_finite, "reward": not np.isfinite(self.rewards).all()}
        return tuple(p for p in NONFINITE_PARTS if bad[p])


@dataclass
class EpisodeChunk:
    """T steps, T + 1 observations of one episode."""

    id: str
    obs: Dict[str, np.ndarray]  # leaf name -> (T + 1, ...); BOX_KEY for a Box observation
    actions: np.ndarray  # (T, action_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminated: bool
    done: bool  # terminated or truncated: the episode has no further chunk

    @classmethod
    def from_episode(cls, ep, leaves: Optional[Collection[str]] = None) -> "EpisodeChunk":
        """``leaves``: the Dict observation's leaves to keep (None: all); the
        others are never shipped, journaled or stored."""
        obs = ep.get_observations()
        if isinstance(obs, list):  # an episode not yet converted with to_numpy()
            obs = tree.map_structure(lambda *xs: np.stack(xs), *obs)
        if isinstance(obs, dict):
            kept = {k: v for k, v in obs.items() if leaves is None or k in leaves}
        else:
            kept = {BOX_KEY: np.asarray(obs)}
        return cls(id=ep.id_, obs=kept,
                   actions=np.asarray(ep.get_actions(), np.float32).reshape(len(ep), -1),
                   rewards=np.asarray(ep.get_rewards(), np.float32),
                   terminated=bool(ep.is_terminated), done=bool(ep.is_done))

    @property
    def num_steps(self) -> int:
        return len(self.rewards)

    def is_finite(self) -> bool:
        """No NaN/inf in a reward or a float observation: the rule for what may
        enter the replay."""
        return bool(np.isfinite(self.rewards).all() and self.obs_finite())

    def obs_finite(self) -> bool:
        return all(np.isfinite(v).all() for v in self.obs.values() if v.dtype.kind == "f")

    def meta(self) -> ChunkMeta:
        obs_finite = self.obs_finite()
        return ChunkMeta(self.id, self.rewards, self.done,
                         bool(obs_finite and np.isfinite(self.rewards).all()), obs_finite)
