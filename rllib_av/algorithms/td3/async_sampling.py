"""Env runners that sample continuously while the learner trains.

Every healthy remote EnvRunner has one fragment request in flight at a time
(``sample_fragment`` runs on it): it samples ``rollout_fragment_length`` steps
per env in pieces, taking the newest published weights before each piece
(RLlib's ``EnvRunnerStateServer`` pull, as IMPALA/APPO do), turns its episodes
into compact episode chunks and keeps them in its node's object store. The
driver gets a ``Fragment`` back: the chunks' object ref, the little bookkeeping
it needs (``ChunkMeta``), the weights it sampled with, its metrics; the chunks
themselves go from there to the learner that stores them. As soon as a runner's
fragment is back it is asked for the next one (unless the rate limiter holds
sampling back): no runner waits for another, a slow or hung one delays only
its own fragments.

Weights are published after every learner call (at most
``max_policy_lag_updates`` updates), numbered by a publish sequence that never
goes back (a runner then also takes the weights a rollback restored). Each
piece is as long as lets the learner make about ``max_policy_lag_updates``
updates meanwhile, from the learner's measured update rate and the runner's
measured step time, so weights reach every runner at least that often.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional

import ray
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.env.env_runner_state_server import EnvRunnerStateServer
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME, WEIGHTS_SEQ_NO

from rllib_av.replay.episode_chunk import ChunkMeta, EpisodeChunk

TAG = "td3_fragment"
# Smoothing of the measured rates that size the pieces.
EMA = 0.2


@dataclass
class Fragment:
    """What an EnvRunner hands back for one fragment (the chunks stay in the object store)."""

    chunks: ray.ObjectRef  # List[EpisodeChunk], in sampling order
    metas: List[ChunkMeta]
    weights_seq_no: int  # the weights its first piece was sampled with
    sample_s: float  # wall time the runner spent sampling it
    metrics: Dict[str, Any]  # the EnvRunner's metrics since its previous fragment
    epoch: int  # the driver's sampling epoch it was asked in (older ones are dropped)

    @property
    def num_steps(self) -> int:
        return sum(m.num_steps for m in self.metas)


def sample_fragment(runner, *, steps: int, piece: int, leaves: Optional[Collection[str]],
                    epoch: int) -> Fragment:
    """Runs on the EnvRunner: ``steps`` env steps in pieces of ``piece`` steps,
    each piece with the newest weights published before it."""
    start = time.perf_counter()
    episodes, sampled, seq_no = [], 0, None
    while sampled < steps:
        pieces = runner.sample(num_timesteps=min(piece, steps - sampled))
        if seq_no is None:  # sample() pulled the weights first and logged their number
            seq_no = int(runner.metrics.peek(WEIGHTS_SEQ_NO, default=0))
        episodes.extend(pieces)
        sampled += sum(len(ep) for ep in pieces)
    chunks = [EpisodeChunk.from_episode(ep, leaves) for ep in episodes]
    return Fragment(chunks=ray.put(chunks), metas=[c.meta() for c in chunks],
                    weights_seq_no=seq_no, sample_s=time.perf_counter() - start,
                    metrics=runner.get_metrics(), epoch=epoch)


def in_flight(manager, prefix: str) -> List[ray.ObjectRef]:
    """The refs of an RLlib actor manager's outstanding async requests whose tag
    starts with ``prefix`` (to wait for any of them; others, e.g. RLlib's own
    set_state calls at start-up, stay listed there until fetched by tag)."""
    return [ref for ref, (tag, _) in manager._in_flight_req_to_actor_id.items()
            if tag and tag.startswith(prefix)]


def start_weights_server(max_concurrency: int) -> ray.actor.ActorHandle:
    """RLlib's EnvRunnerStateServer, the actor the EnvRunners pull weights from.
    Started before the EnvRunners, so its process comes up while they do."""
    return ray.remote(num_cpus=0, max_restarts=-1,
                      max_concurrency=max_concurrency)(EnvRunnerStateServer).remote()


class AsyncSampler:
    """The driver's side: fragment requests, arrivals, the weights EnvRunners pull."""

    def __init__(self, env_runner_group, server, *, fragment_steps: int, max_lag_updates: int,
                 leaves: Optional[Collection[str]]):
        self.group = env_runner_group
        self.fragment_steps = fragment_steps
        self.max_lag_updates = max_lag_updates
        self.leaves = leaves
        self.epoch = 0
        self.seq_no = 0  # weights published so far
        # publish sequence number -> learner updates the weights had made
        self._updates_at: Dict[int, int] = {0: 0}
        self.updates_per_s: Optional[float] = None  # the learner's, measured
        self._step_s: Dict[int, float] = {}  # per runner: seconds per env step, measured
        self.server = server
        self.share_server(None)

    # -- weights ------------------------------------------------------------------

    def share_server(self, runner_ids: Optional[List[int]]) -> None:
        """Let EnvRunners pull from the server (new ones, or restarted ones)."""
        def share(runner, server=self.server):
            runner._env_runner_state_server = server

        self.group.foreach_env_runner(share, local_env_runner=False, remote_worker_ids=runner_ids)

    def publish(self, weights: ray.ObjectRef, updates: int, env_steps: int) -> None:
        """New weights (made by ``updates`` learner updates, an object ref the
        runners fetch themselves) for every runner's next piece."""
        self.seq_no += 1
        self._updates_at[self.seq_no] = updates
        for old in [s for s in self._updates_at if s < self.seq_no - 10_000]:
            del self._updates_at[old]
        self.server.push.remote({COMPONENT_RL_MODULE: weights, WEIGHTS_SEQ_NO: self.seq_no,
                                 NUM_ENV_STEPS_SAMPLED_LIFETIME: int(env_steps)})

    def policy_lag(self, fragment: Fragment, updates_now: int) -> int:
        """Learner updates between the weights a fragment started with and now."""
        known = self._updates_at.get(fragment.weights_seq_no)
        return updates_now - (known if known is not None else min(self._updates_at.values()))

    # -- fragments ------------------------------------------------------------------

    def request(self) -> int:
        """Ask every healthy runner without a request in flight for its next fragment."""
        ids = self.group.healthy_env_runner_ids()
        if not ids:
            return 0
        kwargs = [dict(steps=self.fragment_steps, piece=self.piece_steps(i),
                       leaves=self.leaves, epoch=self.epoch) for i in ids]
        return self.group.foreach_env_runner_async([sample_fragment] * len(ids), tag=TAG,
                                                   kwargs=kwargs, remote_worker_ids=ids)

    def piece_steps(self, runner_id: int) -> int:
        """Steps of a piece on this runner: about ``max_lag_updates`` learner
        updates' worth of its time (the whole fragment before learning starts)."""
        step_s = self._step_s.get(runner_id)
        if not self.updates_per_s or not step_s:
            return self.fragment_steps
        piece = int(self.max_lag_updates / (self.updates_per_s * step_s))
        return max(1, min(self.fragment_steps, piece))

    def ready(self) -> List[Fragment]:
        """Fragments back since the last call (a failed runner is marked unhealthy
        for RLlib to restart; fragments asked for before a rollback are dropped)."""
        out = []
        for runner_id, fragment in self.group.fetch_ready_async_reqs(tags=TAG,
                                                                     timeout_seconds=0.0):
            if fragment.epoch != self.epoch:
                continue
            if fragment.num_steps:
                step_s = fragment.sample_s / fragment.num_steps
                old = self._step_s.get(runner_id, step_s)
                self._step_s[runner_id] = (1 - EMA) * old + EMA * step_s
            out.append(fragment)
        return out

    def in_flight(self) -> List[ray.ObjectRef]:
        return in_flight(self.group._worker_manager, TAG)

    def drop_in_flight(self) -> None:
        """Whatever the runners are sampling now is not wanted (a rollback):
        their fragments are dropped on arrival."""
        self.epoch += 1

    def learner_rate(self, updates: int, seconds: float) -> None:
        """``updates`` made in ``seconds`` of wall time: the pace pieces are sized for."""
        if seconds <= 0 or not updates:
            return
        rate = updates / seconds
        self.updates_per_s = rate if self.updates_per_s is None else (
            (1 - EMA) * self.updates_per_s + EMA * rate)

    def stop(self) -> None:
        ray.kill(self.server)
