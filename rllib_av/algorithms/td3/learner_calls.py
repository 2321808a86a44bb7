"""What the driver asks of the learners: store chunks, make updates, hand out weights.

One call per learner stores that learner's shard of the new chunks and makes
the gradient updates the update-to-data ratio owes, on batches it samples
itself (``store_and_update``). A learner gets its chunks as ``ShardFeed``
parts: chunks the driver holds, or object refs it fetches itself (an
EnvRunner's fragment, straight from where it was sampled, or a shard the
driver put), with the indices of the chunks that are its own.

``LearnerCalls`` keeps such calls in flight while sampling goes on (async
sampling): remote learners run them as RLlib async actor requests, each update
call followed on the first learner by a weights call whose result stays in
the object store (the driver hands the ref to the EnvRunners, it never fetches
the weights); a learner in the driver process runs them at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import ray
from ray.rllib.core import COMPONENT_RL_MODULE

from rllib_av.algorithms.td3.async_sampling import in_flight
from rllib_av.replay.episode_chunk import EpisodeChunk

Source = Union[ray.ObjectRef, Sequence[EpisodeChunk]]


@dataclass
class ShardFeed:
    """One learner's new chunks: (source, indices of its chunks in that source) parts."""

    parts: List[Tuple[Source, List[int]]] = field(default_factory=list)

    def add(self, source: Source, indices: List[int]) -> None:
        if indices:
            self.parts.append((source, indices))

    def chunks(self) -> List[EpisodeChunk]:
        """The chunks, in order; object refs fetched together."""
        refs = [src for src, _ in self.parts if isinstance(src, ray.ObjectRef)]
        fetched = iter(ray.get(refs))
        out = []
        for src, indices in self.parts:
            chunks = next(fetched) if isinstance(src, ray.ObjectRef) else src
            out.extend(chunks[i] for i in indices)
        return out


def store_and_update(feeds: List[ShardFeed], *, num_updates: int, reward_scale: float,
                     timesteps: dict) -> Callable:
    """What each learner runs: store its feed's chunks, then make ``num_updates``
    updates. Returns (RLlib's reduced results or None without updates, seconds
    spent updating)."""

    def call(learner):
        learner.add_chunks(feeds[learner.shard_index].chunks())
        if not num_updates:
            return None, 0.0
        start = time.perf_counter()
        results = learner.update_from_replay(num_updates, reward_scale=reward_scale,
                                             timesteps=timesteps)
        return results, time.perf_counter() - start

    return call


def inference_weights(learner) -> Dict[str, Any]:
    """What an EnvRunner's module needs of the learner's (actor and encoder)."""
    return learner.get_state(components=COMPONENT_RL_MODULE,
                             inference_only=True)[COMPONENT_RL_MODULE]


@dataclass
class Completed:
    results: list  # one (results, seconds) per learner
    updates: int
    weights: Optional[ray.ObjectRef]  # the weights right after this call (None: no updates)


class LearnerCalls:
    UPDATE, WEIGHTS = "td3_update", "td3_weights"

    def __init__(self, learner_group):
        self.group = learner_group
        self._next = 0
        # tag -> [updates, per-learner results, weights tag, weights ref], in submit order
        self._calls: Dict[str, list] = {}
        self._done: List[Completed] = []  # a learner in the driver: done at submit

    @property
    def num_in_flight(self) -> int:
        return len(self._calls)

    def in_flight(self) -> List[ray.ObjectRef]:
        return [] if self.group.is_local else in_flight(self.group._worker_manager, "td3_")

    def submit(self, fn: Callable, updates: int) -> None:
        """``fn`` on every learner; with updates, then the weights of the first."""
        if self.group.is_local:
            learner = self.group._learner
            results = [fn(learner)]
            weights = ray.put(inference_weights(learner)) if updates else None
            self._done.append(Completed(results, updates, weights))
            return
        manager = self.group._worker_manager
        tag = f"{self.UPDATE}:{self._next}"
        self._next += 1
        expected = manager.num_actors()
        if manager.foreach_actor_async(fn, tag=tag) != expected:
            raise ray.exceptions.RayActorError()  # a learner is already marked unhealthy
        weights_tag = None
        if updates:
            weights_tag = f"{self.WEIGHTS}:{tag}"
            manager.foreach_actor_async(inference_weights, tag=weights_tag,
                                        remote_actor_ids=[manager.actor_ids()[0]])
        self._calls[tag] = [updates, [], weights_tag, None]

    def weights(self) -> ray.ObjectRef:
        """The first learner's inference weights now, as an object ref."""
        if self.group.is_local:
            return ray.put(inference_weights(self.group._learner))
        first = self.group._worker_manager.actor_ids()[0]
        (result,) = self.group.foreach_learner(inference_weights, remote_actor_ids=[first],
                                               return_obj_refs=True)
        if not result.ok:
            raise result.get()
        return result.get()

    def completed(self) -> List[Completed]:
        """Calls done since the last look, in submit order. A failed learner
        raises (RayActorError, or the RayTaskError of a call that failed)."""
        if not self.group.is_local and self._calls:
            self._fetch()
        done, self._done = self._done, []
        return done

    def wait_all(self) -> List[Completed]:
        """Block until every call in flight is done."""
        done = []
        while self._calls:
            ray.wait(self.in_flight(), num_returns=1, timeout=1.0)
            done += self.completed()
        return done + self.completed()

    def _fetch(self) -> None:
        manager = self.group._worker_manager
        expected = manager.num_actors()
        calls = self._calls
        updates = [t for t in calls]
        weights = [c[2] for c in calls.values() if c[2]]
        for result in manager.fetch_ready_async_reqs(tags=updates, timeout_seconds=0.0):
            if not result.ok:
                raise result.get()
            calls[result.tag][1].append(result.get())
        if weights:
            by_weights = {c[2]: c for c in calls.values() if c[2]}
            for result in manager.fetch_ready_async_reqs(tags=weights, timeout_seconds=0.0,
                                                         return_obj_refs=True):
                if not result.ok:
                    raise result.get()
                by_weights[result.tag][3] = result.get()
        for tag in list(calls):  # in submit order: stop at the first still running
            n, results, weights_tag, ref = calls[tag]
            if len(results) < expected or (weights_tag and ref is None):
                break
            del calls[tag]
            self._done.append(Completed(results, n, ref))

    def reset(self, learner_group) -> None:
        """New learners (the old ones and whatever they were doing are gone)."""
        self.group = learner_group
        self._calls.clear()
        self._done.clear()
