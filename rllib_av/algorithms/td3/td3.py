"""TD3 (Fujimoto et al. 2018) as an RLlib Algorithm on the new API stack.

    config = TD3Config().environment("Pendulum-v1").training(actor_lr=1e-3)
    algo = config.build_algo()        # or tune.Tuner("TD3", param_space=config)

RLlib provides the EnvRunners, RLModule, Learner, optimizers, metrics and
fault tolerance; the replay is this project's own (rllib_av/replay/) and lives
in the Learner(s), on the learner's device. The driver keeps the bookkeeping
only: counts, the journal, the reward statistics, which shard holds which
episode, the update-to-data ratio (rate_limiter.py).

Two ways to run (``async_sampling``):

- async (the default whenever there is a remote EnvRunner): the EnvRunners
  sample continuously while the learner trains (async_sampling.py). Each
  ``training_step`` takes the fragments that came back, journals them, hands
  their chunks to the learners as object refs and keeps learner calls of at
  most a quarter of ``max_policy_lag_updates`` updates in flight, each
  followed by new weights for the runners; no call takes a fragment still
  being sampled (on time) past that lag.
- synchronous: sample ``rollout_fragment_length`` env steps per EnvRunner,
  journal them, then one call per learner stores its shard's chunks and makes
  every update the ratio owes, then the weights go to the EnvRunners. Exact
  and reproducible: what tests of exact semantics use.

The journal is written by the driver, as chunks arrive and before any learner
stores them: it is the record of what the driver counted (env steps, reward
statistics, which shard got which episode), one ordered log beside the
checkpoints in the run directory, so a resumed run or a replaced learner
replays it exactly, whichever node the learners run on. Reading a fragment for
it costs the driver ~7 KB per image env step, out of the shared-memory object
store when the runner shares its node; training batches never pass the driver.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import ray

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.tune.registry import register_trainable

from rllib_av.algorithms.td3.async_sampling import AsyncSampler, Fragment, start_weights_server
from rllib_av.algorithms.td3.frame_stacking import DictImageFrameStacking, stacks_frames
from rllib_av.algorithms.td3.learner_calls import (
    Completed, LearnerCalls, ShardFeed, store_and_update,
)
from rllib_av.algorithms.td3.networks import encoder_inputs
from rllib_av.algorithms.td3.rate_limiter import Throughput, UpdateRateLimiter
from rllib_av.algorithms.td3.replay_shards import load_shards, save_shards
from rllib_av.algorithms.td3.training_settings import TrainingSettings, samples_async
from rllib_av.config_schema import ConfigError
from rllib_av.health.q_bound import bound_of, q_bound_ratio, training_return_interval
from rllib_av.health.statistics import Q_VALUES
from rllib_av.replay.episode_chunk import NONFINITE_PARTS, ChunkMeta, EpisodeChunk
from rllib_av.replay.journal import ReplayJournal
from rllib_av.replay.reward_processing import ObservedRewardRange, RewardProcessor
from rllib_av.replay.sharding import ShardAssignment

logger = logging.getLogger(__name__)

# TD3Config's settings and their defaults, in RLlib's names (SAC's where SAC has
# the same setting): the run config's training section (training_settings.py),
# the one place the defaults live.
_DEFAULTS = TrainingSettings().td3_training_kwargs()
# TD3Config's own settings (also `training(...)` keyword arguments), beyond
# AlgorithmConfig's gamma and train_batch_size_per_learner.
_TD3_DEFAULTS = {
    **{k: v for k, v in _DEFAULTS.items() if k not in ("gamma", "train_batch_size_per_learner")},
    # The env's per-step reward range [r_min, r_max] (raw units): enables q_bound.
    "reward_range": None,
}
# replay_buffer_config's keys: the replay is this project's own (uniform, on the
# learner's device), so RLlib's "type", "alpha", "beta" have no meaning here.
REPLAY_BUFFER_KEYS = frozenset(_DEFAULTS["replay_buffer_config"])


class TD3Config(AlgorithmConfig):
    TD3_SETTINGS = frozenset(_TD3_DEFAULTS)

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or TD3)
        for key, value in _TD3_DEFAULTS.items():
            setattr(self, key, copy.deepcopy(value))  # no list or dict shared between configs
        self.gamma = _DEFAULTS["gamma"]
        self.train_batch_size_per_learner = _DEFAULTS["train_batch_size_per_learner"]
        self.rollout_fragment_length = TrainingSettings().rollout_fragment_length
        # The resolved rllib_av run config (a plain dict), for callbacks and reports.
        self.run_config = None
        # RLlib's checkpoints leave the replay buffer out; ours put it in.
        self.checkpoint_replay_buffer = True
        # Where each training step's samples are journaled before learning
        # (replay_journal.py); None: no journal.
        self.replay_journal_dir = None
        # Frame stacks reach back across episode-chunk cuts into the lookback.
        self.episode_lookback_horizon = max(1, self.frame_stack - 1)

    def training(self, **kwargs) -> "TD3Config":
        """AlgorithmConfig's settings plus TD3's; ``replay_buffer_config`` updates
        the keys it names (as SAC's does), e.g. ``{"capacity": 100_000}``."""
        td3 = {k: kwargs.pop(k) for k in list(kwargs) if k in _TD3_DEFAULTS}
        super().training(**kwargs)
        for key, value in td3.items():
            if value is NotProvided:
                continue
            if key == "replay_buffer_config":
                value = {**self.replay_buffer_config, **value}
            setattr(self, key, value)
        self.episode_lookback_horizon = max(1, self.frame_stack - 1)
        return self

    def rllib_av(self, *, run_config: Optional[dict] = NotProvided,
                 checkpoint_replay_buffer: bool = NotProvided,
                 replay_journal_dir: Optional[str] = NotProvided) -> "TD3Config":
        """rllib_av's service settings: the resolved run config (read by the
        monitoring callback), whether checkpoints carry the replay buffer, and
        the replay journal's directory (needs ``checkpoint_replay_buffer``)."""
        if run_config is not NotProvided:
            self.run_config = run_config
        if checkpoint_replay_buffer is not NotProvided:
            self.checkpoint_replay_buffer = checkpoint_replay_buffer
        if replay_journal_dir is not NotProvided:
            self.replay_journal_dir = replay_journal_dir
        return self

    def validate(self) -> None:
        super().validate()
        for key in ("actor_lr", "critic_lr", "tau", "updates_per_env_step"):
            if not getattr(self, key) > 0:
                raise ValueError(f"TD3Config.{key} must be > 0, got {getattr(self, key)}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"TD3Config.gamma must be in (0, 1), got {self.gamma}")
        if self.policy_delay < 1 or self.n_step < 1:
            raise ValueError("TD3Config.policy_delay and n_step must be >= 1")
        if self.replay_journal_dir and not self.checkpoint_replay_buffer:
            raise ValueError("TD3Config.replay_journal_dir needs checkpoint_replay_buffer: "
                             "the journal only holds what came after a checkpoint's buffer")
        shards = max(1, self.num_learners)
        unknown = set(self.replay_buffer_config) - REPLAY_BUFFER_KEYS
        if unknown:
            raise ValueError(f"TD3Config.replay_buffer_config: {sorted(unknown)} not supported; "
                             f"expected only {sorted(REPLAY_BUFFER_KEYS)} (a uniform replay)")
        if self.replay_buffer_capacity // shards < self.train_batch_size_per_learner:
            raise ValueError(f"TD3Config.replay_buffer_config['capacity'] "
                             f"{self.replay_buffer_capacity} split into {shards} "
                             f"learner shards holds fewer than train_batch_size_per_learner "
                             f"({self.train_batch_size_per_learner}) transitions each")
        if self.max_policy_lag_updates < 1:
            raise ValueError("TD3Config.max_policy_lag_updates must be >= 1, got "
                             f"{self.max_policy_lag_updates}")
        if self.async_sampling and self.num_env_runners == 0 and not self.in_evaluation:
            raise ValueError("TD3Config.async_sampling=True needs num_env_runners >= 1: the "
                             "driver's own EnvRunner cannot sample while the learner trains")
        if self.samples_async and self.batch_mode != "truncate_episodes" \
                and not self.in_evaluation:
            raise ValueError(f"TD3Config.batch_mode={self.batch_mode!r} is not supported with "
                             "async_sampling: fragments are cut at env steps; expected "
                             "batch_mode='truncate_episodes', or async_sampling=False")
        # Async: RLlib's per-iteration EnvRunner state sync would wait for every
        # runner to finish its fragment; the runners pull weights instead.
        self._dont_auto_sync_env_runner_states = self.samples_async

    @property
    def samples_async(self) -> bool:
        return samples_async(self.async_sampling, self.num_env_runners)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_av.algorithms.td3.td3_rl_module import TD3TorchRLModule

        return RLModuleSpec(module_class=TD3TorchRLModule)

    def get_default_learner_class(self):
        from rllib_av.algorithms.td3.td3_learner import TD3TorchLearner

        return TD3TorchLearner

    def build_env_to_module_connector(self, env=None, spaces=None, device=None):
        pipeline = super().build_env_to_module_connector(env=env, spaces=spaces, device=device)
        # Always for the Dict observation (a stack of 1 is still (1, 84, 84)), so
        # the CNN's input layout never depends on the stack depth.
        if stacks_frames(pipeline.input_observation_space):
            pipeline.prepend(DictImageFrameStacking(num_frames=self.frame_stack))
        return pipeline

    @property
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {
            "actor_hiddens": list(self.actor_hiddens),
            "critic_hiddens": list(self.critic_hiddens),
            "exploration_noise": self.exploration_noise,
            "image_encoder": self.image_encoder,
            "random_warmup_steps": self.num_steps_sampled_before_learning_starts,
        }

    @property
    def replay_buffer_capacity(self) -> int:
        """Transitions the replay holds, over all learner shards."""
        return self.replay_buffer_config["capacity"]


BUFFER_DIR = "replay_buffer"
# In a checkpoint: the driver's replay bookkeeping (journal head, reward
# statistics, shard assignment) as of its buffer.
REPLAY_STATE_FILE = "replay_state.json"
REPLAY_JOURNAL_TIMER = "replay_journal_append"
# Async: learner calls in flight (one running, one queued behind it, so the
# learner never waits for the driver to hand it the next).
LEARNER_CALLS_IN_FLIGHT = 2
# Async: the longest one training_step waits for a fragment or a learner call.
ASYNC_STEP_WAIT_S = 1.0
POLICY_LAG_MEAN, POLICY_LAG_MAX = "policy_lag_mean", "policy_lag_max"


class TD3(Algorithm):
    @classmethod
    def get_default_config(cls) -> TD3Config:
        return TD3Config()

    def setup(self, config: TD3Config) -> None:
        weights_server = (start_weights_server(config.env_runner_state_server_max_concurrency)
                          if config.samples_async else None)
        try:
            super().setup(config)
        except ray.exceptions.RayTaskError as e:  # a remote learner refused its settings
            if isinstance(e.cause, ConfigError):
                raise e.cause from None
            raise
        # Every learner shard trains in the units of one set of reward statistics.
        self.reward_processor = RewardProcessor(
            gamma=config.gamma, clip=config.reward_clip, scale_by_return_std=config.reward_scaling)
        self.rewards_seen = ObservedRewardRange()  # the return interval without a declared range
        self.replay_shards = ShardAssignment(config.num_learners)
        obs_space = self.env_runner_group.get_spaces()[DEFAULT_MODULE_ID][0]
        self._chunk_leaves = encoder_inputs(obs_space, config.image_encoder)
        self.rate_limiter = UpdateRateLimiter(config.updates_per_env_step, _error_buffer(config))
        self.replay_journal = (ReplayJournal(config.replay_journal_dir)
                               if config.replay_journal_dir else None)
        self._last_checkpoint: Optional[str] = None
        self._recovering = False
        self.learner_calls = LearnerCalls(self.learner_group)
        # Gradient updates made in this process: policy lag is counted on this
        # clock, which a restored checkpoint does not set back.
        self._updates_done = 0
        self._pending = self._no_feeds()  # async: chunks for the next learner call
        self._throughput = Throughput()
        self._last_learned = time.perf_counter()
        self.async_sampler = None
        if weights_server is not None:
            self.async_sampler = AsyncSampler(
                self.env_runner_group, weights_server, leaves=self._chunk_leaves,
                fragment_steps=_fragment_steps(config),
                max_lag_updates=config.max_policy_lag_updates)

    # -- one training step --------------------------------------------------------

    def _create_local_replay_buffer_if_necessary(self, config):
        """None: the replay is ours, in the learners (replay_buffer_config only
        sizes it); RLlib would otherwise build its own from that config."""
        return None

    def training_step(self) -> None:
        if self.async_sampler is not None:
            return self._async_training_step()
        cfg = self.config
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group, concat=True,
                sample_timeout_s=cfg.sample_timeout_s,
                _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)

        chunks = [EpisodeChunk.from_episode(ep, self._chunk_leaves) for ep in episodes]
        if chunks:  # sampled with the learner's newest weights
            self._log_policy_lag([0])
        self._journal(chunks)
        self._store_and_learn(chunks)

    def _async_training_step(self) -> None:
        """Take what came back (fragments, learner calls), keep the runners
        sampling and the learner busy; wait (briefly) only when nothing did."""
        sampler = self.async_sampler
        for runner_id in sampler.restart_hung(self.config.sample_timeout_s):
            logger.warning("env runner %d returned nothing for %gs (sample_timeout_s): "
                           "restarting it", runner_id, self.config.sample_timeout_s)
        deadline = time.monotonic() + ASYNC_STEP_WAIT_S
        while True:
            progressed = self._collect_learner_calls()
            fragments = sampler.ready()
            if fragments:
                self._take_fragments(fragments)
            sampler.request(self.rate_limiter.may_sample)  # runners just back sample on at once
            progressed = self._submit_learning() or progressed or bool(fragments)
            left = deadline - time.monotonic()
            if progressed or left <= 0:
                return
            waiting = sampler.in_flight() + self.learner_calls.in_flight()
            if not waiting:  # no healthy runner: let RLlib try to bring them back
                time.sleep(min(left, 0.05))
                return
            ray.wait(waiting, num_returns=1, timeout=left)

    def _take_fragments(self, fragments: List[Fragment]) -> None:
        """Count, journal and deal arriving fragments; their chunks wait for the
        next learner call (remote learners fetch them from where they were sampled)."""
        self.metrics.aggregate([f.metrics for f in fragments], key=ENV_RUNNER_RESULTS)
        self._log_policy_lag([self.async_sampler.policy_lag(f, self._updates_done)
                              for f in fragments])
        local = self.learner_group.is_local
        held = (ray.get([f.chunks for f in fragments])
                if self.replay_journal is not None or local else [None] * len(fragments))
        if self.replay_journal is not None:
            self._journal([c for chunks in held for c in chunks])
        for fragment, chunks in zip(fragments, held):
            shards = self._bookkeep(fragment.metas)
            source = chunks if local else fragment.chunks
            for shard, feed in enumerate(self._pending):
                feed.add(source, [i for i, s in enumerate(shards) if s == shard])
        self._throughput.sampled(sum(f.num_steps for f in fragments),
                                 sum(f.sample_s for f in fragments))
        warning = self._throughput.shortfall(self.config.updates_per_env_step,
                                             self.env_runner_group.num_healthy_remote_workers())
        if warning:
            logger.warning(warning)

    def _submit_learning(self, most: Optional[int] = None) -> bool:
        """Hand the learners the pending chunks and up to ``most`` owed updates
        (default: a learner call's worth, as many as keep every on-time
        fragment's policy lag within bounds); False if there was nothing to
        hand or enough calls are in flight."""
        if self.learner_calls.num_in_flight >= LEARNER_CALLS_IN_FLIGHT:
            return False
        if most is None:
            most = _updates_per_call(self.config)
            allowed = self.async_sampler.updates_allowed(
                self._updates_done + self.rate_limiter.under_way)
            most = most if allowed is None else min(most, allowed)
        if min(most, self.rate_limiter.owed) < 1 and not any(f.parts for f in self._pending):
            return False
        num_updates = self.rate_limiter.take(most)
        feeds, self._pending = self._pending, self._no_feeds()
        call = store_and_update(feeds, num_updates=num_updates,
                                reward_scale=self.reward_processor.scale,
                                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self._env_steps_sampled()})
        try:
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                self.learner_calls.submit(call, num_updates)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
            self._replace_lost_learners(e)
            return True
        self._collect_learner_calls()  # a learner in the driver is done already
        return True

    def _collect_learner_calls(self) -> bool:
        """Results of the learner calls done since the last look; each one's
        weights go to the EnvRunners."""
        try:
            done = self.learner_calls.completed()
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
            self._replace_lost_learners(e)
            return True
        updates = 0
        for call in done:
            self.rate_limiter.done(call.updates)
            self._learned(call)
            updates += call.updates
            if call.weights is not None:
                self.async_sampler.publish(call.weights, self._updates_done,
                                           self._env_steps_sampled())
        if updates:
            now = time.perf_counter()
            self.async_sampler.learner_rate(updates, now - self._last_learned)
            self._last_learned = now
        return bool(done)

    def _flush_learning(self) -> None:
        """Async: every learner call done and every arrived chunk stored (before
        a checkpoint, so the buffer holds all that was journaled)."""
        self._collect_learner_calls()
        while self.learner_calls.num_in_flight or any(f.parts for f in self._pending):
            if not self._submit_learning(most=0):
                ray.wait(self.learner_calls.in_flight(), num_returns=1, timeout=1.0)
                self._collect_learner_calls()

    # -- shared by both ways -------------------------------------------------------

    def _env_steps_sampled(self) -> int:
        return int(self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                     default=0))

    def _no_feeds(self) -> List[ShardFeed]:
        return [ShardFeed() for _ in self.replay_shards.transitions]

    def _journal(self, chunks: List[EpisodeChunk]) -> None:
        """Write-ahead: the chunks go to the journal before any learner stores them."""
        if self.replay_journal is not None and chunks:
            with self.metrics.log_time((TIMERS, REPLAY_JOURNAL_TIMER)):
                self.replay_journal.append(chunks, self._env_steps_sampled())

    def _bookkeep(self, metas: Sequence[ChunkMeta]) -> List[int]:
        """The driver's part for arriving chunks: reward statistics, which shard
        each goes to (returned), and the updates they owe once learning started."""
        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            finite = [m for m in metas if m.finite]  # the rest never enters a shard
            for m in finite:
                self.reward_processor.observe(m.id, m.rewards, m.done)
                self.rewards_seen.observe(m.rewards)
            shards = self.replay_shards.assign(metas)
        for part in NONFINITE_PARTS:  # chunks dropped for NaN/inf there (both, if both)
            self.metrics.log_value(("nonfinite", part),
                                   sum(part in m.nonfinite_parts() for m in metas),
                                   reduce="lifetime_sum")
        if self._learning_started():
            self.rate_limiter.add(sum(m.num_steps for m in finite))
        return shards

    def _learning_started(self) -> bool:
        """Updates are owed from ``num_steps_sampled_before_learning_starts`` on,
        once every shard can fill a batch."""
        cfg = self.config
        return (self._env_steps_sampled() >= cfg.num_steps_sampled_before_learning_starts
                and min(self.replay_shards.transitions) >= cfg.train_batch_size_per_learner)

    def _log_policy_lag(self, lags: List[int]) -> None:
        for lag in lags:
            for key, reduce in ((POLICY_LAG_MEAN, "mean"), (POLICY_LAG_MAX, "max")):
                self.metrics.log_value((LEARNER_RESULTS, DEFAULT_MODULE_ID, key), lag,
                                       reduce=reduce)

    @property
    def num_replay_transitions(self) -> int:
        """Transitions ever stored, over all learner shards (driver-side count)."""
        return sum(self.replay_shards.transitions)

    def recent_training_rewards(self, limit: int) -> Tuple[np.ndarray, np.ndarray]:
        """Every shard's newest (up to ``limit``) stored transitions: rewards in
        training units, and each one's step index within its episode."""
        parts = self._foreach_learner(lambda l: l.replay_storage.recent_transitions(limit))
        raw = np.concatenate([rewards for rewards, _ in parts])
        return self.reward_processor.process(raw), np.concatenate([pos for _, pos in parts])

    def _store_and_learn(self, chunks: List[EpisodeChunk]) -> None:
        """Synchronously: hand each learner its shard's chunks and every update
        the ratio owes, in one call per learner; then new weights for the runners.
        (The synchronous loop, and a journal replayed after a restore.)"""
        shards = self._bookkeep([c.meta() for c in chunks])
        feeds = self._no_feeds()
        for shard, feed in enumerate(feeds):
            mine = [c for c, s in zip(chunks, shards) if s == shard]
            if mine:  # remote learners: each shard one object, fetched by its learner only
                feed.add(ray.put(mine) if self.learner_group.is_remote else mine,
                         list(range(len(mine))))
        num_updates = self.rate_limiter.take(int(self.rate_limiter.owed))
        call = store_and_update(feeds, num_updates=num_updates,
                                reward_scale=self.reward_processor.scale,
                                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self._env_steps_sampled()})
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            try:
                results = self._foreach_learner(call)
            except ray.exceptions.RayActorError as e:
                self._replace_lost_learners(e)
                return
        self.rate_limiter.done(num_updates)
        self._learned(Completed(results, num_updates, None))
        if num_updates:
            self._share_weights()

    def _learned(self, call: Completed) -> None:
        """A learner call's results into the iteration's metrics."""
        if not call.updates:
            return
        self._updates_done += call.updates
        self._throughput.learned(call.updates, max(seconds for _, seconds in call.results))
        results = [r for r, _ in call.results]
        module_id = DEFAULT_MODULE_ID
        self._log_q_bound(results[0][module_id], module_id)
        self.metrics.aggregate(results, key=LEARNER_RESULTS)

    def _share_weights(self) -> None:
        """The learners' weights to the EnvRunners: pushed to every one and
        waited for (synchronous), or published for them to pull (async)."""
        if self.async_sampler is not None:
            self.async_sampler.publish(self.learner_calls.weights(), self._updates_done,
                                       self._env_steps_sampled())
            return
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=[DEFAULT_MODULE_ID], inference_only=True)

    def _foreach_learner(self, fn: Callable) -> list:
        """``fn(learner)`` on every learner; a lost learner actor raises RayActorError."""
        results = list(self.learner_group.foreach_learner(fn))
        for r in results:
            if not r.ok:
                raise r.get()
        if len(results) < max(1, self.config.num_learners):
            raise ray.exceptions.RayActorError()  # one already marked unhealthy
        return [r.get() for r in results]

    def _replace_lost_learners(self, error: Exception) -> None:
        """A learner actor died, and its replay shard with it (or a chunk on its
        way to it): start new learners and restore the newest checkpoint plus
        the journal, as a resumed run does."""
        if self._recovering or self._last_checkpoint is None:
            raise error
        logger.warning("a learner actor was lost (%s); restoring %s plus the replay journal",
                       error, self._last_checkpoint)
        args, kwargs = self.learner_group.get_ctor_args_and_kwargs()
        self.learner_group.shutdown()
        self.learner_group = type(self.learner_group)(*args, **kwargs)
        self.learner_calls.reset(self.learner_group)
        self._recovering = True
        try:
            self.restore_from_path(self._last_checkpoint)
            self.replay_journal_tail()
        finally:
            self._recovering = False
        self.metrics.log_value("learner_restarts", 1, reduce="lifetime_sum")

    # -- checkpoints ------------------------------------------------------------------

    def save_to_path(self, path=None, **kwargs) -> str:
        if self.async_sampler is not None:
            self._flush_learning()
            self._update_local_env_runner()
        path = super().save_to_path(path, **kwargs)
        if self.config.checkpoint_replay_buffer:
            save_shards(self._foreach_learner, os.path.join(path, BUFFER_DIR))
            with open(os.path.join(path, REPLAY_STATE_FILE), "w") as f:
                json.dump({"journal_head": self.replay_journal.head if self.replay_journal else -1,
                           "reward_statistics": self.reward_processor.get_state(),
                           "rewards_seen": self.rewards_seen.get_state(),
                           "shards": self.replay_shards.get_state(),
                           "updates_owed": self.rate_limiter.owed}, f)
        return path

    def restore_from_path(self, path, *args, component=None, **kwargs) -> None:
        if self.async_sampler is not None and component is None:
            # Sampling pauses: what runners sample now belongs to the abandoned
            # future (unless new learners are replacing lost ones), the learner
            # calls in flight finish before their learners are overwritten.
            if not self._recovering:
                self.async_sampler.drop_in_flight()
            for call in self.learner_calls.wait_all():  # their results describe the past
                self._updates_done += call.updates
            self._pending = self._no_feeds()
            self.rate_limiter.under_way = 0
        super().restore_from_path(path, *args, component=component, **kwargs)
        if component is not None:
            return
        self._last_checkpoint = str(path)
        if os.path.isdir(os.path.join(path, BUFFER_DIR)):
            with open(os.path.join(path, REPLAY_STATE_FILE)) as f:
                state = json.load(f)
            self.replay_shards.set_state(state["shards"])
            load_shards(self._foreach_learner, os.path.join(path, BUFFER_DIR))
            self.reward_processor.set_state(state["reward_statistics"])
            # A checkpoint written before the range was kept starts it afresh.
            self.rewards_seen.set_state(state.get("rewards_seen", {"low": None, "high": None}))
            self.rate_limiter.owed = state["updates_owed"]
            if self.replay_journal is not None:
                self.replay_journal.restored(state["journal_head"])
        if self.async_sampler is not None:  # and sampling resumes with the restored weights
            self._share_weights()

    def replay_journal_tail(self) -> int:
        """After a restore: re-add the env steps the journal holds beyond the
        checkpoint, each entry's with the gradient updates it owed.
        Returns the env steps recovered."""
        recovered = 0
        for chunks, lifetime in (self.replay_journal.replay() if self.replay_journal else ()):
            steps = lifetime - self._env_steps_sampled()
            self.metrics.log_value((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), steps,
                                   reduce="lifetime_sum")
            self._store_and_learn(chunks)
            recovered += steps
        return recovered

    def checkpoint_complete(self, path: str) -> None:
        """The checkpoint at ``path`` is in place: it is what a lost learner is
        restored from, and older journal entries can go."""
        self._last_checkpoint = path
        if self.replay_journal is not None:
            self.replay_journal.forget_through(_journal_head(path))

    # -- async: the driver's own EnvRunner, restarted EnvRunners, stop ------------------

    def _update_local_env_runner(self) -> None:
        """The driver's EnvRunner gets the learner's weights (async sampling never
        pushes them there; checkpoints and ``get_module`` read it)."""
        self.env_runner.set_state({COMPONENT_RL_MODULE: self.learner_calls.weights()})

    def get_module(self, module_id=DEFAULT_MODULE_ID):
        if self.async_sampler is not None:
            self._update_local_env_runner()
        return super().get_module(module_id)

    def restore_env_runners(self, env_runner_group) -> List[int]:
        restored = super().restore_env_runners(env_runner_group)
        # A restarted EnvRunner is a new process: it needs the weights server again.
        if restored and self.async_sampler is not None and env_runner_group is self.env_runner_group:
            self.async_sampler.share_server(restored)
        return restored

    def stop(self) -> None:
        if self.async_sampler is not None:
            self.async_sampler.stop()
        super().stop()

    def _log_q_bound(self, module_results, module_id) -> None:
        """q_bound and the return interval it is the largest magnitude of, in
        training units (after clipping/scaling), and how far the Q statistics,
        every one on both ends, are from the bound. Without a declared range,
        the return interval of every reward stored so far instead
        (q_return_*_observed): no q_bound from it, the verdict has its own.
        Never raises."""
        if not any(k in module_results for k in Q_VALUES):
            return
        interval = training_return_interval(self.config.reward_range, self.config.gamma,
                                            clip=self.config.reward_clip,
                                            scale=self.reward_processor.scale)
        if interval is None:
            observed = training_return_interval(self.rewards_seen.range,
                                                self.config.gamma, clip=self.config.reward_clip,
                                                scale=self.reward_processor.scale)
            if observed is not None:
                for key, value in zip(("q_return_min_observed", "q_return_max_observed"),
                                      observed):
                    self.metrics.log_value((LEARNER_RESULTS, module_id, key), value,
                                           reduce="mean")
            return
        bound = bound_of(interval)
        ratio = q_bound_ratio({k: module_results[k].peek() for k in Q_VALUES
                               if k in module_results}, bound)
        if ratio is None:
            return
        for key, value, reduce in (("q_bound", bound, "mean"), ("q_bound_ratio", ratio, "max"),
                                   ("q_return_min", interval[0], "mean"),
                                   ("q_return_max", interval[1], "mean")):
            self.metrics.log_value((LEARNER_RESULTS, module_id, key), value, reduce=reduce)


def _updates_per_call(config: TD3Config) -> int:
    """Async: the most updates one learner call makes (weights are published
    after each, so a fragment waits for at most a few of them)."""
    return max(1, config.max_policy_lag_updates // 4)


def _fragment_steps(config: TD3Config) -> int:
    """Env steps of one EnvRunner's fragment (all its envs; "auto" resolved)."""
    return config.get_rollout_fragment_length() * config.num_envs_per_env_runner


def _error_buffer(config: TD3Config) -> float:
    """Updates that may be owed, under way or to be owed by the steps asked
    for before sampling waits: one fragment from every runner (all of them
    sample at once while the learner keeps up), plus the learner calls in flight."""
    return (config.updates_per_env_step * _fragment_steps(config) * max(1, config.num_env_runners)
            + LEARNER_CALLS_IN_FLIGHT * _updates_per_call(config))


def _journal_head(checkpoint: str) -> int:
    """The journal head a checkpoint holds; -1 (no entry follows it) for one
    saved without a journal or without its buffer."""
    path = os.path.join(checkpoint, REPLAY_STATE_FILE)
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        return int(json.load(f)["journal_head"])


register_trainable("TD3", TD3)
