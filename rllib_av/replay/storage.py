"""Replay storage: flat, preallocated torch tensors on the learner's device;
frames stored once.

Layout: a ring of ``capacity`` observation slots. Every observation that
reaches this storage gets one global, increasing number ``n`` and lives in slot
``n % capacity``. Slot tensors:
  prev[s] / next[s]  number of the previous / next observation of the same
                     episode (-1: episode start / no successor yet or episode end);
  action, reward, terminated: the transition from slot s to next[s].
An episode chunk of T steps therefore costs T (or T+1 for a new episode) slots,
and a chunk continuing an episode links to the slot its previous chunk ended in,
so episodes from several EnvRunners may interleave freely. Leaves named in
``padded_keys`` (frame-stacked images) get one extra all-zero row at index
``capacity``: the pad frame before an episode start (sampling.py).

Rewards are stored raw; sampling applies reward processing.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Collection, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import torch

from rllib_av.replay.episode_chunk import BOX_KEY, EpisodeChunk

# leaf name -> (shape of one observation, numpy dtype)
LeafSpecs = Mapping[str, Tuple[Tuple[int, ...], np.dtype]]

_LINK_BYTES = 2 * 8  # prev, next (int64)


def slot_bytes(leaves: LeafSpecs, action_dim: int) -> int:
    """Bytes one observation slot takes (its outgoing transition included)."""
    obs = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in leaves.values())
    return obs + _LINK_BYTES + 4 * action_dim + 4 + 1  # + action, reward, terminated


# A slot's links and transition, one tensor each beside the observation leaves.
_SLOT_ARRAYS = ("prev", "next", "action", "reward", "terminated")


def device_free_bytes(device: torch.device) -> int:
    """Memory a new allocation on ``device`` can still get: free GPU memory, or
    the host's available memory for a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class ReplayStorage:
    def __init__(self, capacity: int, *, device="cpu", padded_keys: Collection[str] = ()):
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.padded_keys = frozenset(padded_keys)
        self.num_added = 0  # observations ever stored (= the next global number)
        self.num_transitions_added = 0
        self.num_nonfinite_dropped = 0
        self._open: Dict[Any, int] = {}  # episode id -> number of its last stored obs
        self.obs: Optional[Dict[str, torch.Tensor]] = None
        self.is_dict = False

    def allocate(self, leaves: LeafSpecs, action_dim: int) -> None:
        """Slot tensors for the whole ring. A slot is written in full when an
        observation first takes it, so the rest stays uninitialized (on a CPU
        the OS then commits pages as the ring fills); the pad rows are zero."""
        c, dev = self.capacity, self.device
        self.is_dict = BOX_KEY not in leaves
        self.obs = {}
        for k, (shape, dtype) in leaves.items():
            torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
            self.obs[k] = torch.empty((c + (k in self.padded_keys),) + tuple(shape),
                                      dtype=torch_dtype, device=dev)
            if k in self.padded_keys:
                self.obs[k][c] = 0
        self.prev = torch.full((c + 1,), -1, dtype=torch.int64, device=dev)  # prev[c]: pad -> pad
        self.next = torch.full((c,), -1, dtype=torch.int64, device=dev)
        self.action = torch.empty((c, action_dim), dtype=torch.float32, device=dev)
        self.reward = torch.empty(c, dtype=torch.float32, device=dev)
        self.terminated = torch.zeros(c, dtype=torch.bool, device=dev)

    def __len__(self) -> int:
        """Stored observations (transitions are at most this many)."""
        return min(self.num_added, self.capacity)

    @property
    def oldest(self) -> int:
        """Number of the oldest observation still stored."""
        return self.num_added - len(self)

    def arrays(self) -> Dict[str, torch.Tensor]:
        """The ring's tensors by their saved names (empty before ``allocate``)."""
        if self.obs is None:
            return {}
        return {**{name: getattr(self, name) for name in _SLOT_ARRAYS},
                **{f"obs/{k}": v for k, v in self.obs.items()}}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.arrays().values())

    # -- adding ----------------------------------------------------------------

    def add_chunks(self, chunks: Iterable[EpisodeChunk]) -> int:
        """Store episode chunks; returns transitions stored.

        A chunk with a non-finite observation or reward is dropped whole (and its
        episode cut there), so NaN/inf never reaches a training batch.
        """
        return sum(self._add_chunk(chunk) for chunk in chunks)

    def _add_chunk(self, chunk: EpisodeChunk) -> int:
        if not chunk.is_finite():
            self._open.pop(chunk.id, None)
            self.num_nonfinite_dropped += 1
            return 0
        if self.obs is None:
            self.allocate({k: (v.shape[1:], v.dtype) for k, v in chunk.obs.items()},
                          chunk.actions.shape[1])
        steps = chunk.num_steps
        last = self._open.pop(chunk.id, None)
        # Continue the stored episode only if its last observation is still stored
        # once this chunk's new ones are (they must not overwrite what they link to).
        continuing = last is not None and last >= self.num_added + steps - self.capacity
        first_new = 1 if continuing else 0
        n_new = steps + 1 - first_new
        new_nums = np.arange(self.num_added, self.num_added + n_new)
        nums = np.concatenate([[last], new_nums]) if continuing else new_nums
        slots = self._index(new_nums % self.capacity)
        for k, v in chunk.obs.items():
            _put(self.obs[k], slots, v[first_new:])
        # Each new observation's predecessor; -1 marks an episode start.
        _put(self.prev, slots, nums[:-1] if continuing else np.concatenate([[-1], nums[:-1]]))
        # A reused slot forgets its old transition (a final observation has none).
        self.next[slots] = -1
        self.action[slots] = 0.0
        self.reward[slots] = 0.0
        self.terminated[slots] = False
        if steps:
            src = self._index(nums[:-1] % self.capacity)
            _put(self.next, src, nums[1:])
            _put(self.action, src, chunk.actions)
            _put(self.reward, src, chunk.rewards)
            self.terminated[src[-1:]] = chunk.terminated  # a 1-element index: no device sync
        self.num_added += n_new
        self.num_transitions_added += steps
        if not chunk.done:
            self._open[chunk.id] = int(nums[-1])
        return steps

    def _index(self, slots: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(slots.astype(np.int64)).to(self.device)

    # -- what the critic probes read ---------------------------------------------

    def recent_transitions(self, limit: int) -> Tuple[np.ndarray, np.ndarray]:
        """The newest (up to ``limit``) stored transitions, oldest first: their raw
        rewards and each one's step index within its episode (0: first step;
        counted from the oldest observation looked at where the window cuts an
        episode's start)."""
        if self.obs is None:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        numbers = np.arange(max(self.num_added - min(len(self), limit), 0), self.num_added)
        slots = self._index(numbers % self.capacity)
        prev = self.prev[slots].cpu().numpy()
        has_next = (self.next[slots] >= 0).cpu().numpy()
        rewards = self.reward[slots].cpu().numpy()
        position: Dict[int, int] = {}
        out = np.zeros(len(numbers), np.int64)
        for i, (n, p) in enumerate(zip(numbers.tolist(), prev.tolist())):
            out[i] = position[p] + 1 if p >= 0 and p in position else 0
            position[n] = out[i]
        return rewards[has_next], out[has_next]

    def terminal_slots(self, limit: int) -> torch.Tensor:
        """Slots of the newest (up to ``limit``) stored terminal transitions."""
        if self.obs is None:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        numbers = torch.arange(self.oldest, self.num_added, device=self.device)
        slots = numbers % self.capacity
        terminal = slots[self.terminated[slots] & (self.next[slots] >= 0)]
        return terminal[-limit:]

    # -- checkpointing -------------------------------------------------------------

    def get_state(self) -> Dict[str, Any]:
        state = {
            "capacity": self.capacity,
            "num_added": self.num_added,
            "num_transitions_added": self.num_transitions_added,
            "num_nonfinite_dropped": self.num_nonfinite_dropped,
            "open": dict(self._open),
            "is_dict": self.is_dict,
        }
        if self.obs is not None:
            # Only the filled slots (a checkpoint of a 1M-slot buffer holding 3k
            # transitions stays small); the pad frame row is rebuilt on load.
            n = len(self)
            state["arrays"] = {k: v[:n].cpu().numpy() for k, v in self.arrays().items()}
        return state

    def set_state(self, state: Dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer: the saved shard holds {state['capacity']} slots, "
                             f"this one {self.capacity}; keep training.buffer_size and "
                             "resources.num_learners unchanged to resume")
        self.num_added = state["num_added"]
        self.num_transitions_added = state["num_transitions_added"]
        self.num_nonfinite_dropped = state["num_nonfinite_dropped"]
        self._open = dict(state["open"])
        self.is_dict = state["is_dict"]
        arrays = state.get("arrays")
        if arrays is not None:
            leaves = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
            if self.obs is None or any(k not in self.obs for k in leaves):
                self.allocate({k: (v.shape[1:], v.dtype) for k, v in leaves.items()},
                              arrays["action"].shape[1])
            n = len(arrays["reward"])
            for k, v in leaves.items():
                _put(self.obs[k], slice(0, n), v)
            for name in _SLOT_ARRAYS:
                _put(getattr(self, name), slice(0, n), arrays[name])


def _put(target: torch.Tensor, index, values: np.ndarray) -> None:
    """target[index] = values, converted to the target's dtype and device."""
    if not values.flags.writeable:  # read straight out of Ray's object store: torch wants a copy
        values = values.copy()
    target[index] = torch.from_numpy(np.ascontiguousarray(values)).to(target.device, target.dtype)


def save_state(state: Dict[str, Any], path: str) -> None:
    """A state dict to ``path``: its ``arrays`` one .npy each (no pickling of
    bulk data), the rest to a small pickle."""
    os.makedirs(path, exist_ok=True)
    state = dict(state)
    for name, array in state.pop("arrays", {}).items():
        np.save(os.path.join(path, name.replace("/", "__") + ".npy"), array)
    with open(os.path.join(path, "meta.pkl"), "wb") as f:
        pickle.dump(state, f)


def load_state(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, "meta.pkl"), "rb") as f:
        state = pickle.load(f)
    arrays = {f[:-4].replace("__", "/"): np.load(os.path.join(path, f))
              for f in os.listdir(path) if f.endswith(".npy")}
    if arrays:
        state["arrays"] = arrays
    return state
