"""Which learner's replay shard each episode goes to (``num_learners > 1``).

An episode stays on one shard (its frame stacks and n-step returns follow the
links inside it); each new episode goes to the shard holding the fewest
transitions, so the shards fill evenly whatever the episode lengths. The
assignment is driver-side bookkeeping, checkpointed with the buffer, and
replaying the journal after a restore deals every chunk as it was dealt.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, TypeVar, Union

from rllib_av.replay.episode_chunk import ChunkMeta, EpisodeChunk

Chunk = TypeVar("Chunk", EpisodeChunk, ChunkMeta)


class ShardAssignment:
    def __init__(self, num_shards: int):
        self.transitions = [0] * max(1, num_shards)  # per shard, as its storage counts them
        self._open: Dict[Any, int] = {}  # episode id -> shard, while the episode runs

    def deal(self, chunks: Sequence[Chunk]) -> List[List[Chunk]]:
        """The chunks, per shard."""
        shards: List[List[Chunk]] = [[] for _ in self.transitions]
        for chunk, shard in zip(chunks, self.assign(chunks)):
            shards[shard].append(chunk)
        return shards

    def assign(self, chunks: Sequence[Union[EpisodeChunk, ChunkMeta]]) -> List[int]:
        """The shard of each chunk, in order (chunks of one episode must come in order)."""
        out = []
        for chunk in chunks:
            shard = self._open.pop(chunk.id, None)
            if shard is None:
                shard = min(range(len(self.transitions)), key=self.transitions.__getitem__)
            if not chunk.done:
                self._open[chunk.id] = shard
            if chunk.is_finite():
                self.transitions[shard] += chunk.num_steps
            out.append(shard)
        return out

    def get_state(self) -> Dict[str, Any]:
        return {"transitions": list(self.transitions), "open": dict(self._open)}

    def set_state(self, state: Dict[str, Any]) -> None:
        if len(state["transitions"]) != len(self.transitions):
            raise ValueError(f"replay buffer: saved in {len(state['transitions'])} shards, this "
                             f"run has {len(self.transitions)}; keep resources.num_learners "
                             "unchanged to resume")
        self.transitions = list(state["transitions"])
        self._open = dict(state["open"])
