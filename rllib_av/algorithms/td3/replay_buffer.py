"""The replay buffer: flat, preallocated arrays; frames stored once.

RLlib's EpisodeReplayBuffer builds an episode slice object per sampled
transition (~0.2 ms each); here a sample is a handful of vectorized numpy
gathers straight into batch arrays.

Layout: a ring of ``capacity`` observation slots. Every observation an
EnvRunner produced gets one global, increasing number ``n`` and lives in slot
``n % capacity``. Slot arrays:
  prev[s] / next[s]  number of the previous / next observation of the same
                     episode (-1: episode start / no successor yet or episode end);
  action, reward, terminated: the transition from slot s to next[s].
An episode chunk of T steps therefore costs T (or T+1 for a new episode) slots,
and a chunk continuing an episode links to the slot its previous chunk ended in,
so episodes from several EnvRunners may interleave freely.

Frame stacks for the image leaf are rebuilt at sample time by following prev
pointers, padding with zero frames before the episode start exactly as RLlib's
frame-stacking connectors do on the EnvRunner side.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

import numpy as np
import tree

from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3.networks import IMAGE_KEY
from rllib_av.algorithms.td3.reward_scaling import RewardProcessor
from rllib_av.algorithms.td3.td3_learner import DISCOUNTS

BOX_KEY = ""  # leaf name of a non-Dict observation


@dataclass
class EpisodeChunk:
    """What the buffer keeps of one RLlib episode chunk: T steps, T + 1 observations."""

    id: str
    obs: Dict[str, np.ndarray]  # leaf name -> (T + 1, ...); BOX_KEY for a Box observation
    actions: np.ndarray  # (T, action_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminated: bool
    done: bool  # terminated or truncated: the episode has no further chunk

    @classmethod
    def from_episode(cls, ep) -> "EpisodeChunk":
        obs = ep.get_observations()
        if isinstance(obs, list):  # an episode not yet converted with to_numpy()
            obs = tree.map_structure(lambda *xs: np.stack(xs), *obs)
        leaves = dict(obs) if isinstance(obs, dict) else {BOX_KEY: np.asarray(obs)}
        return cls(id=ep.id_, obs=leaves,
                   actions=np.asarray(ep.get_actions(), np.float32).reshape(len(ep), -1),
                   rewards=np.asarray(ep.get_rewards(), np.float32),
                   terminated=bool(ep.is_terminated), done=bool(ep.is_done))


class TransitionReplayBuffer:
    def __init__(self, capacity: int, *, frame_stack: int = 1, gamma: float = 0.99,
                 reward_processor: Optional[RewardProcessor] = None, seed: Optional[int] = None):
        self.capacity = int(capacity)
        self.frame_stack = int(frame_stack)
        self.gamma = float(gamma)
        self.rewards = reward_processor or RewardProcessor(gamma=gamma)
        self.rng = np.random.default_rng(seed)
        self.num_added = 0  # observations ever stored (= the next global number)
        self.num_transitions_added = 0
        self.num_nonfinite_dropped = 0
        self._open: Dict[Any, int] = {}  # episode id -> number of its last stored obs
        self._obs: Optional[Dict[str, np.ndarray]] = None
        self._is_dict = False

    # -- storage -------------------------------------------------------------

    def _allocate(self, obs_leaves: Dict[str, np.ndarray], action_dim: int) -> None:
        c = self.capacity
        # Stacked leaves get one extra all-zero row (index c): the pad frame.
        self._obs = {
            k: np.zeros((c + (k in self._stacked_keys(obs_leaves)),) + v.shape[1:], v.dtype)
            for k, v in obs_leaves.items()
        }
        self._prev = np.full(c + 1, -1, np.int64)  # prev[c] = -1: pad chains to pad
        self._next = np.full(c, -1, np.int64)
        self._action = np.zeros((c, action_dim), np.float32)
        self._reward = np.zeros(c, np.float32)
        self._terminated = np.zeros(c, bool)

    @staticmethod
    def _stacked_keys(leaves) -> set:
        return {IMAGE_KEY} & set(leaves)

    def __len__(self) -> int:
        """Stored observations (transitions are at most this many)."""
        return min(self.num_added, self.capacity)

    def nbytes(self) -> int:
        arrays = list(self._obs.values()) + [self._prev, self._next, self._action,
                                             self._reward, self._terminated]
        return sum(a.nbytes for a in arrays)

    def add_episodes(self, episodes: Iterable) -> int:
        """Store RLlib SingleAgentEpisode chunks; returns transitions stored."""
        return self.add_chunks([EpisodeChunk.from_episode(ep) for ep in episodes])

    def add_chunks(self, chunks: Iterable["EpisodeChunk"]) -> int:
        """Store episode chunks; returns transitions stored.

        A chunk with a non-finite observation or reward is dropped whole (and its
        episode cut there), so NaN/inf never reaches a training batch.
        """
        return sum(self._add_chunk(chunk) for chunk in chunks)

    def _add_chunk(self, chunk: "EpisodeChunk") -> int:
        leaves, actions, rewards = chunk.obs, chunk.actions, chunk.rewards
        if not (np.isfinite(rewards).all() and all(
                np.isfinite(v).all() for v in leaves.values() if v.dtype.kind == "f")):
            self._open.pop(chunk.id, None)
            self.num_nonfinite_dropped += 1
            return 0
        if self._obs is None:
            self._is_dict = BOX_KEY not in leaves
            self._allocate(leaves, actions.shape[1])
        steps = len(rewards)
        last = self._open.pop(chunk.id, None)
        # Continue the stored episode only while its last observation is still stored.
        continuing = last is not None and last >= self.num_added - self.capacity
        first_new = 1 if continuing else 0
        n_new = steps + 1 - first_new
        new_nums = np.arange(self.num_added, self.num_added + n_new)
        nums = np.concatenate([[last], new_nums]) if continuing else new_nums
        slots = new_nums % self.capacity
        for k, v in leaves.items():
            self._obs[k][slots] = v[first_new:]
        # Each new observation's predecessor; -1 marks an episode start.
        self._prev[slots] = nums[:-1] if continuing else np.concatenate([[-1], nums[:-1]])
        self._next[slots] = -1
        if steps:
            src = nums[:-1] % self.capacity
            self._next[src] = nums[1:]
            self._action[src] = actions
            self._reward[src] = rewards
            self._terminated[src] = False
            self._terminated[src[-1]] = chunk.terminated
            self.rewards.observe(chunk.id, rewards, chunk.done)
        self.num_added += n_new
        self.num_transitions_added += steps
        if not chunk.done:
            self._open[chunk.id] = int(nums[-1])
        return steps

    # -- sampling --------------------------------------------------------------

    def sample(self, num_items: int, n_step: int = 1) -> Dict[str, Any]:
        """``num_items`` uniformly drawn transitions as a batch of numpy arrays:
        obs, actions, rewards (n-step, processed), next_obs, terminateds, discounts."""
        size = len(self)
        if self._obs is None or self.num_transitions_added == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        head = self.rng.integers(0, size, num_items)
        bad = self._next[head] < 0  # final observations start no transition
        while bad.any():
            head[bad] = self.rng.integers(0, size, int(bad.sum()))
            bad = self._next[head] < 0
        start = head.copy()

        ret = np.zeros(num_items, np.float32)
        disc = np.ones(num_items, np.float32)
        term = np.zeros(num_items, bool)
        active = np.ones(num_items, bool)
        boot = head
        for k in range(n_step):
            r = self.rewards.process(self._reward[head])
            ret = np.where(active, ret + disc * r, ret)
            term = np.where(active, self._terminated[head], term)
            boot = np.where(active, self._next[head] % self.capacity, boot)
            disc = np.where(active, disc * self.gamma, disc)
            if k + 1 < n_step:
                active &= ~term & (self._next[boot] >= 0)
                head = np.where(active, boot, head)
        return {
            Columns.OBS: self._gather_obs(start),
            Columns.ACTIONS: self._action[start],
            Columns.REWARDS: ret,
            Columns.NEXT_OBS: self._gather_obs(boot),
            Columns.TERMINATEDS: term,
            DISCOUNTS: disc,
        }

    def _gather_obs(self, slots: np.ndarray):
        out = {}
        for k, arr in self._obs.items():
            if k in self._stacked_keys(self._obs):
                out[k] = arr[self._stack_indices(slots)]
            else:
                out[k] = arr[slots]
        return out if self._is_dict else out[BOX_KEY]

    def _stack_indices(self, slots: np.ndarray) -> np.ndarray:
        """(B, frame_stack) slot indices, oldest first; ``capacity`` = zero pad frame."""
        oldest = self.num_added - len(self)
        idx = np.empty((len(slots), self.frame_stack), np.int64)
        cur = slots
        idx[:, -1] = cur
        for j in range(self.frame_stack - 2, -1, -1):
            p = self._prev[cur]
            # Before the episode start: pad. Overwritten already (ring tail): repeat.
            cur = np.where(p < 0, self.capacity, np.where(p >= oldest, p % self.capacity, cur))
            idx[:, j] = cur
        return idx

    # -- checkpointing -----------------------------------------------------------

    def get_state(self) -> Dict[str, Any]:
        state = {
            "capacity": self.capacity,
            "num_added": self.num_added,
            "num_transitions_added": self.num_transitions_added,
            "num_nonfinite_dropped": self.num_nonfinite_dropped,
            "open": dict(self._open),
            "is_dict": self._is_dict,
            "rewards": self.rewards.get_state(),
            "rng": self.rng.bit_generator.state,
        }
        if self._obs is not None:
            # Only the filled slots (a checkpoint of a 1M-slot buffer holding 3k
            # transitions stays small); the pad frame row is rebuilt on load.
            n = len(self)
            state["arrays"] = {
                "prev": self._prev[:n], "next": self._next[:n], "action": self._action[:n],
                "reward": self._reward[:n], "terminated": self._terminated[:n],
                **{f"obs/{k}": v[:n] for k, v in self._obs.items()},
            }
        return state

    def set_state(self, state: Dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer: the saved buffer holds {state['capacity']} slots, "
                             f"this one {self.capacity}; keep training.buffer_size unchanged "
                             "to resume")
        self.num_added = state["num_added"]
        self.num_transitions_added = state["num_transitions_added"]
        self.num_nonfinite_dropped = state["num_nonfinite_dropped"]
        self._open = dict(state["open"])
        self._is_dict = state["is_dict"]
        self.rewards.set_state(state["rewards"])
        self.rng.bit_generator.state = state["rng"]
        arrays = state.get("arrays")
        if arrays is not None:
            leaves = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
            self._allocate(leaves, arrays["action"].shape[1])
            n = len(arrays["reward"])
            for k, v in leaves.items():
                self._obs[k][:n] = v
            self._prev[:n], self._next[:n] = arrays["prev"], arrays["next"]
            self._action[:n], self._reward[:n] = arrays["action"], arrays["reward"]
            self._terminated[:n] = arrays["terminated"]


def save_buffer(buffer: TransitionReplayBuffer, path: str) -> None:
    """Arrays to one .npy each (no pickling of bulk data), the rest to a small pickle."""
    os.makedirs(path, exist_ok=True)
    state = buffer.get_state()
    for name, array in state.pop("arrays", {}).items():
        np.save(os.path.join(path, name.replace("/", "__") + ".npy"), array)
    with open(os.path.join(path, "meta.pkl"), "wb") as f:
        pickle.dump(state, f)


def load_buffer(buffer: TransitionReplayBuffer, path: str) -> None:
    with open(os.path.join(path, "meta.pkl"), "rb") as f:
        state = pickle.load(f)
    arrays = {f[:-4].replace("__", "/"): np.load(os.path.join(path, f))
              for f in os.listdir(path) if f.endswith(".npy")}
    if arrays:
        state["arrays"] = arrays
    buffer.set_state(state)
