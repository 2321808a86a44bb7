"""Env runners that sample continuously while the learner trains.

Every healthy remote EnvRunner has one fragment request in flight at a time
(``sample_fragment`` runs on it): it takes the newest published weights
(RLlib's ``EnvRunnerStateServer`` pull, as IMPALA/APPO do), samples a fragment,
turns its episodes into compact episode chunks and keeps them in its node's
object store. The driver gets a ``Fragment`` back: the chunks' object ref, the
little bookkeeping it needs (``ChunkMeta``), the weights it sampled with, its
metrics; the chunks themselves go from there to the learner that stores them.
As soon as a runner's fragment is back it is asked for the next one (unless the
rate limiter holds sampling back: the steps asked for count there from the
moment they are asked for): no runner waits for another, a slow or hung one
delays only its own fragments.

Policy lag (learner updates between the weights a fragment was sampled with
and its arrival) is bounded by ``max_policy_lag_updates``: weights are
published after every learner call (a quarter of that bound at most), a
fragment is as long as lets the learner make about half of it meanwhile
(from the learner's measured update rate and the runner's measured step
time), and the learner is never handed updates that would take an on-time
fragment past the bound (``updates_allowed``). A fragment overdue by more than
``LATE_FACTOR`` times its runner's usual round trip (a hung simulator) stops
holding the learner back; its lag, when it arrives, shows in the metric. One
out for longer than ``sample_timeout_s`` is hung: its actor is killed, and
RLlib's fault tolerance restarts it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

import ray
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.env.env_runner_state_server import EnvRunnerStateServer
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME, WEIGHTS_SEQ_NO

from rllib_av.replay.episode_chunk import ChunkMeta, EpisodeChunk

TAG = "td3_fragment"
# Smoothing of the measured rates that size the fragments.
EMA = 0.2
# A fragment out for longer than this factor of its runner's usual round trip
# (request to arrival), and at least LATE_MIN_S, no longer holds the learner
# back (the policy-lag bound): its simulator is slow or hung.
LATE_FACTOR = 4.0
LATE_MIN_S = 5.0
# Before a runner's round trip is measured, its fragment is allowed this long.
UNMEASURED_S = 30.0


@dataclass
class Fragment:
    """What an EnvRunner hands back for one fragment (the chunks stay in the object store)."""

    chunks: ray.ObjectRef  # List[EpisodeChunk], in sampling order
    metas: List[ChunkMeta]
    weights_seq_no: int  # the weights it was sampled with
    sample_s: float  # wall time the runner spent sampling it
    metrics: Dict[str, Any]  # the EnvRunner's metrics since its previous fragment
    epoch: int  # the driver's sampling epoch it was asked in (older ones are dropped)

    @property
    def num_steps(self) -> int:
        return sum(m.num_steps for m in self.metas)


def sample_fragment(runner, *, steps: int, leaves: Optional[Collection[str]],
                    epoch: int) -> Fragment:
    """Runs on the EnvRunner: ``steps`` env steps with the newest published weights."""
    start = time.perf_counter()
    episodes = runner.sample(num_timesteps=steps)  # pulls the weights first, logs their number
    seq_no = int(runner.metrics.peek(WEIGHTS_SEQ_NO, default=0))
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


class NewestWeightsServer(EnvRunnerStateServer):
    """RLlib's EnvRunnerStateServer, keeping only ever newer weights: its pushes
    run on a thread pool (``max_concurrency``), so two close together may land
    out of order, and a runner would pull the older."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def push(self, state) -> None:
        with self._lock:
            if self.get_version() < state.get(WEIGHTS_SEQ_NO, -1):
                super().push(state)


def start_weights_server(max_concurrency: int) -> ray.actor.ActorHandle:
    """The actor the EnvRunners pull weights from. Started before the
    EnvRunners, so its process comes up while they do."""
    return ray.remote(num_cpus=0, max_restarts=-1,
                      max_concurrency=max_concurrency)(NewestWeightsServer).remote()


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
        # per runner, measured: seconds per env step sampled, seconds per round trip
        self._step_s: Dict[int, float] = {}
        self._round_trip_s: Dict[int, float] = {}
        # per runner with a request out: (asked at, updates of the newest weights
        # then, env steps asked for)
        self._asked: Dict[int, Tuple[float, int, int]] = {}
        self.server = server
        self._pushed: Optional[ray.ObjectRef] = None  # the newest push to it
        self.share_server(None)

    # -- weights ------------------------------------------------------------------

    def share_server(self, runner_ids: Optional[List[int]]) -> None:
        """Let EnvRunners pull from the server (new ones, or restarted ones)."""
        def share(runner, server=self.server):
            runner._env_runner_state_server = server

        self.group.foreach_env_runner(share, local_env_runner=False, remote_worker_ids=runner_ids)

    def publish(self, weights: ray.ObjectRef, updates: int, env_steps: int) -> None:
        """New weights (made by ``updates`` learner updates, an object ref the
        runners fetch themselves) for every runner's next fragment."""
        self.seq_no += 1
        self._updates_at[self.seq_no] = updates
        for old in [s for s in self._updates_at if s < self.seq_no - 10_000]:
            del self._updates_at[old]
        self._pushed = self.server.push.remote({
            COMPONENT_RL_MODULE: weights, WEIGHTS_SEQ_NO: self.seq_no,
            NUM_ENV_STEPS_SAMPLED_LIFETIME: int(env_steps)})

    def policy_lag(self, fragment: Fragment, updates_now: int) -> int:
        """Learner updates between the weights a fragment was sampled with and now."""
        known = self._updates_at.get(fragment.weights_seq_no)
        return updates_now - (known if known is not None else min(self._updates_at.values()))

    def updates_allowed(self, committed: int) -> Optional[int]:
        """How many more updates the learner may be handed, ``committed`` (done
        or under way) so far, without taking an on-time fragment out past
        ``max_lag_updates``; None: no fragment out constrains it."""
        now = time.monotonic()
        bases = [base for runner_id, (asked, base, _) in self._asked.items()
                 if now - asked <= self._late_after_s(runner_id)]
        return max(0, min(bases) + self.max_lag_updates - committed) if bases else None

    # -- fragments ------------------------------------------------------------------

    @property
    def steps_in_flight(self) -> int:
        """Env steps asked for and not back yet (fragments to be dropped aside)."""
        return sum(steps for _, _, steps in self._asked.values())

    def request(self, may_sample: Callable[[int, int], bool]) -> int:
        """Ask every healthy runner without a request out for its next fragment,
        as long as ``may_sample(steps in flight, steps)`` (the rate limiter's)."""
        busy = {actor_id for tag, actor_id in self.group._worker_manager
                ._in_flight_req_to_actor_id.values() if tag == TAG}
        self._asked = {i: v for i, v in self._asked.items() if i in busy}  # failed ones go
        ids, steps = [], []
        for i in self.group.healthy_env_runner_ids():
            n = self.steps_for(i)
            if i not in busy and may_sample(self.steps_in_flight + sum(steps), n):
                ids.append(i)
                steps.append(n)
        if not ids:
            return 0
        # The runners pull what the server holds: the newest weights, once pushed.
        if self._pushed is not None:
            ray.get(self._pushed)
        now, base = time.monotonic(), self._updates_at[self.seq_no]
        self._asked.update({i: (now, base, n) for i, n in zip(ids, steps)})
        kwargs = [dict(steps=n, leaves=self.leaves, epoch=self.epoch) for n in steps]
        return self.group.foreach_env_runner_async([sample_fragment] * len(ids), tag=TAG,
                                                   kwargs=kwargs, remote_worker_ids=ids)

    def steps_for(self, runner_id: int) -> int:
        """Steps of a fragment on this runner: about half ``max_lag_updates``
        learner updates' worth of its time (the longest before that is measured)."""
        step_s = self._step_s.get(runner_id)
        if not self.updates_per_s or not step_s:
            return self.fragment_steps
        steps = int(self.max_lag_updates / 2 / (self.updates_per_s * step_s))
        return max(1, min(self.fragment_steps, steps))

    def ready(self) -> List[Fragment]:
        """Fragments back since the last call (a failed runner is marked unhealthy
        for RLlib to restart; fragments asked for before a rollback are dropped)."""
        out, now = [], time.monotonic()
        for runner_id, fragment in self.group.fetch_ready_async_reqs(tags=TAG,
                                                                     timeout_seconds=0.0):
            asked = self._asked.pop(runner_id, None)
            if fragment.epoch != self.epoch:
                continue
            if asked is not None:
                _smooth(self._round_trip_s, runner_id, now - asked[0])
            if fragment.num_steps:
                _smooth(self._step_s, runner_id, fragment.sample_s / fragment.num_steps)
            out.append(fragment)
        return out

    def _late_after_s(self, runner_id: int) -> float:
        round_trip_s = self._round_trip_s.get(runner_id)
        if round_trip_s is None:
            return UNMEASURED_S
        return max(LATE_MIN_S, LATE_FACTOR * round_trip_s)

    def in_flight(self) -> List[ray.ObjectRef]:
        return in_flight(self.group._worker_manager, TAG)

    def restart_hung(self, timeout_s: Optional[float]) -> List[int]:
        """Runners whose fragment has been out for more than ``timeout_s`` (a hung
        simulator): their actor is killed and marked unhealthy, so that RLlib's
        fault tolerance restarts it as it does a crashed one. Returns their ids."""
        if timeout_s is None:  # RLlib's "no timeout"
            return []
        now = time.monotonic()
        hung = [i for i, (asked, _, _) in self._asked.items() if now - asked > timeout_s]
        manager = self.group._worker_manager
        for runner_id in hung:
            del self._asked[runner_id]
            manager.set_actor_state(runner_id, healthy=False)  # forgets its request
            ray.kill(manager._actors[runner_id], no_restart=False)
        return hung

    def drop_in_flight(self) -> None:
        """Whatever the runners are sampling now is not wanted (a rollback):
        their fragments are dropped on arrival."""
        self.epoch += 1
        self._asked.clear()

    def learner_rate(self, updates: int, seconds: float) -> None:
        """``updates`` made in ``seconds`` of wall time: the pace fragments are sized for."""
        if seconds <= 0 or not updates:
            return
        rate = updates / seconds
        self.updates_per_s = rate if self.updates_per_s is None else (
            (1 - EMA) * self.updates_per_s + EMA * rate)

    def stop(self) -> None:
        ray.kill(self.server)


def _smooth(averages: Dict[int, float], key: int, value: float) -> None:
    """An exponential moving average per key (the first value as it is)."""
    averages[key] = (1 - EMA) * averages.get(key, value) + EMA * value
