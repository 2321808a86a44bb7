"""Sampling transitions from ReplayStorage: index gathers on the storage's device.

RLlib's EpisodeReplayBuffer builds an episode slice object per sampled
transition (~0.2 ms each); here a batch of any size is a handful of tensor
gathers, on the GPU when the storage lives there, so a training batch is built
where it is consumed and never crosses the network.

Uniform over stored transitions; n-step returns stop at an episode's end;
frame stacks of ``padded_keys`` are rebuilt by following ``prev`` links,
padding with zero frames before the episode start exactly as RLlib's
frame-stacking connectors do on the EnvRunner side.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from ray.rllib.core.columns import Columns

from rllib_av.replay.reward_processing import training_rewards
from rllib_av.replay.storage import ReplayStorage

DISCOUNTS = "discounts"  # gamma^m per transition (m = steps actually bootstrapped over)
# Batches drawn by one gather hold at most this many bytes: one gather for many
# small (state-only) batches saves per-call overhead and syncs, a few big
# (camera) batches at a time keep device memory bounded.
GATHER_BYTES = 64 * 2**20


class TransitionSampler:
    def __init__(self, storage: ReplayStorage, *, gamma: float, frame_stack: int = 1,
                 reward_clip: Optional[float] = None, seed: Optional[int] = None):
        self.storage = storage
        self.gamma = float(gamma)
        self.frame_stack = int(frame_stack)
        self.reward_clip = reward_clip
        self.generator = torch.Generator(device=storage.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def sample(self, num_items: int, n_step: int = 1, reward_scale: float = 1.0) -> Dict[str, Any]:
        """``num_items`` uniformly drawn transitions as a batch of tensors on the
        storage's device: obs, actions, rewards (n-step, in training units at
        ``reward_scale``), next_obs, terminateds, discounts."""
        s = self.storage
        if s.obs is None or s.num_transitions_added == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        head = self._draw(num_items)
        bad = s.next[head] < 0  # final observations start no transition
        while bad.any():
            head = torch.where(bad, self._draw(num_items), head)
            bad = s.next[head] < 0
        return self.transitions(head, n_step, reward_scale)

    def batches(self, num_batches: int, size: int, n_step: int = 1,
                reward_scale: float = 1.0) -> Iterator[Dict[str, Any]]:
        """``num_batches`` independent batches of ``size`` transitions, gathered
        as many at a time as fit in GATHER_BYTES."""
        per_gather = max(1, GATHER_BYTES // (size * self.transition_bytes()))
        done = 0
        while done < num_batches:
            k = min(per_gather, num_batches - done)
            group = self.sample(k * size, n_step, reward_scale)
            for i in range(k):
                yield rows_of(group, i * size, (i + 1) * size)
            done += k

    def transition_bytes(self) -> int:
        """Bytes one sampled transition takes in a batch (obs and next obs, stacks built)."""
        s = self.storage
        obs = sum(v[0].numel() * v.element_size() * (self.frame_stack if k in s.padded_keys else 1)
                  for k, v in s.obs.items())
        return 2 * obs + s.action[0].numel() * 4 + 4 + 1 + 4

    def _draw(self, n: int) -> torch.Tensor:
        return torch.randint(0, len(self.storage), (n,), generator=self.generator,
                             device=self.storage.device)

    def transitions(self, start: torch.Tensor, n_step: int = 1,
                    reward_scale: float = 1.0) -> Dict[str, Any]:
        """The transitions starting at slots ``start`` (each must have a successor)."""
        s = self.storage
        n = len(start)
        ret = torch.zeros(n, dtype=torch.float32, device=s.device)
        disc = torch.ones(n, dtype=torch.float32, device=s.device)
        term = torch.zeros(n, dtype=torch.bool, device=s.device)
        active = torch.ones(n, dtype=torch.bool, device=s.device)
        head, boot = start, start
        for k in range(n_step):
            r = training_rewards(s.reward[head], self.reward_clip, reward_scale)
            ret = torch.where(active, ret + disc * r, ret)
            term = torch.where(active, s.terminated[head], term)
            boot = torch.where(active, s.next[head] % s.capacity, boot)
            disc = torch.where(active, disc * self.gamma, disc)
            if k + 1 < n_step:
                active = active & ~term & (s.next[boot] >= 0)
                head = torch.where(active, boot, head)
        return {
            Columns.OBS: self._gather_obs(start),
            Columns.ACTIONS: s.action[start],
            Columns.REWARDS: ret,
            Columns.NEXT_OBS: self._gather_obs(boot),
            Columns.TERMINATEDS: term,
            DISCOUNTS: disc,
        }

    def _gather_obs(self, slots: torch.Tensor):
        s = self.storage
        out = {k: v[self._stack_indices(slots)] if k in s.padded_keys else v[slots]
               for k, v in s.obs.items()}
        return out if s.is_dict else next(iter(out.values()))

    def _stack_indices(self, slots: torch.Tensor) -> torch.Tensor:
        """(B, frame_stack) slot indices, oldest first; ``capacity`` = zero pad frame."""
        s = self.storage
        oldest, cap = s.oldest, s.capacity
        columns = [slots]
        cur = slots
        for _ in range(self.frame_stack - 1):
            p = s.prev[cur]
            # Before the episode start: pad. Overwritten already (ring tail): repeat.
            cur = torch.where(p < 0, cap, torch.where(p >= oldest, p % cap, cur))
            columns.append(cur)
        return torch.stack(columns[::-1], dim=1)

    def get_state(self) -> np.ndarray:
        return self.generator.get_state().numpy()

    def set_state(self, state: np.ndarray) -> None:
        self.generator.set_state(torch.from_numpy(np.asarray(state, np.uint8)))


def rows_of(batch, start: int, stop: int):
    """A view of rows [start, stop) of a (nested) tensor batch."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    return {k: rows_of(v, start, stop) for k, v in batch.items()}
