"""Write-ahead journal of the replay: nothing sampled dies with the driver, or
with a learner actor and the replay shard it holds.

A checkpoint holds the replay as of its iteration; every env step sampled after
it would be lost with a killed driver or learner. So each training step writes
the episode chunks it hands the learners to ``<dir>/<seq>.npz`` *before* any
gradient update (a temp file renamed into place: an entry is whole or absent).
A resumed run (or new learners replacing a lost one) restores the newest
checkpoint and replays the entries that follow it; a completed checkpoint
makes every older entry deletable.

Survives a killed process (the kernel's page cache keeps the file), not a power
cut: entries are not fsynced, which would cost a disk flush per training step.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, Tuple

import numpy as np

from rllib_av.replay.episode_chunk import EpisodeChunk

SUFFIX = ".npz"


class ReplayJournal:
    """Entries get increasing ids, never reused in a run, and name their
    parent: the entry before them, or the last one the restored checkpoint
    holds. Replay follows that chain, so after a guard rollback the entries of
    the abandoned future are never mistaken for the restored one's."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.head = 0  # id of the newest entry the buffer holds (0: none)
        self._next_id = max(self._ids(), default=0) + 1

    def _path(self, entry_id: int) -> str:
        return os.path.join(self.directory, f"{entry_id:09d}{SUFFIX}")

    def _ids(self) -> List[int]:
        return sorted(int(n[:-len(SUFFIX)]) for n in os.listdir(self.directory)
                      if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())

    def append(self, chunks: List[EpisodeChunk], env_steps_lifetime: int) -> None:
        meta = {"parent": self.head, "env_steps_lifetime": int(env_steps_lifetime),
                "chunks": [{"id": c.id, "terminated": c.terminated, "done": c.done,
                            "leaves": list(c.obs)} for c in chunks]}
        arrays = {"meta": np.array(json.dumps(meta))}
        for i, c in enumerate(chunks):
            arrays[f"{i}/actions"], arrays[f"{i}/rewards"] = c.actions, c.rewards
            arrays.update({f"{i}/obs/{k}": v for k, v in c.obs.items()})
        tmp = os.path.join(self.directory, f".{self._next_id:09d}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self._path(self._next_id))
        self.head, self._next_id = self._next_id, self._next_id + 1

    def restored(self, head: int) -> None:
        """The buffer was restored from a checkpoint holding entries up to ``head``.

        New ids go on above ``head`` too: a checkpoint deletes the entries it
        holds, so the directory alone may no longer show how far ids went, and
        an entry numbered below the head would never be replayed."""
        self.head = head
        self._next_id = max(self._next_id, head + 1)

    def replay(self) -> Iterator[Tuple[List[EpisodeChunk], int]]:
        """The entries that follow the restored checkpoint, oldest first, as
        (chunks, env_steps_lifetime); each becomes the head as it is yielded.

        Where a restore forked the chain, the newest child is the live future:
        it was written after the restore that abandoned the older one."""
        children = {}
        for entry_id in self._ids():  # ascending: a newer child replaces an older
            if entry_id > self.head:
                with np.load(self._path(entry_id), allow_pickle=False) as data:
                    children[json.loads(str(data["meta"]))["parent"]] = entry_id
        while self.head in children:
            entry_id = children[self.head]
            with np.load(self._path(entry_id), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                chunks = [EpisodeChunk(
                    id=m["id"], obs={k: data[f"{i}/obs/{k}"] for k in m["leaves"]},
                    actions=data[f"{i}/actions"], rewards=data[f"{i}/rewards"],
                    terminated=m["terminated"], done=m["done"])
                    for i, m in enumerate(meta["chunks"])]
            self.head = entry_id
            yield chunks, meta["env_steps_lifetime"]

    def forget_through(self, entry_id: int) -> None:
        """A complete checkpoint holds the head ``entry_id``: nothing written
        before it (its own lineage or an abandoned one) is needed any more."""
        for i in self._ids():
            if i <= entry_id:
                os.remove(self._path(i))
