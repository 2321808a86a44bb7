"""TD3 (Fujimoto et al. 2018) as an RLlib Algorithm on the new API stack.

    config = TD3Config().environment("Pendulum-v1").training(actor_lr=1e-3)
    algo = config.build_algo()        # or tune.Tuner("TD3", param_space=config)

RLlib provides the EnvRunners, RLModule, Learner, optimizers, metrics and
fault tolerance; the replay is this project's own (rllib_av/replay/) and lives
in the Learner(s), on the learner's device. One ``training_step``: sample
``rollout_fragment_length`` env steps per EnvRunner, journal them as compact
episode chunks, then one call per learner stores its shard's chunks and makes
as many gradient updates as the update-to-data ratio owes on batches it
samples itself. The driver keeps the bookkeeping only: counts, the journal,
the reward statistics, which shard holds which episode.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Callable, List, Optional, Tuple

import numpy as np
import ray

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
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

from rllib_av.algorithms.td3.frame_stacking import DictImageFrameStacking, stacks_frames
from rllib_av.algorithms.td3.networks import encoder_inputs
from rllib_av.algorithms.td3.replay_shards import load_shards, save_shards
from rllib_av.algorithms.td3.training_settings import TrainingSettings
from rllib_av.config_schema import ConfigError
from rllib_av.health.q_bound import q_bound_ratio, training_q_bound
from rllib_av.health.statistics import Q_VALUES
from rllib_av.replay.episode_chunk import EpisodeChunk
from rllib_av.replay.journal import ReplayJournal
from rllib_av.replay.reward_processing import RewardProcessor
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


class TD3(Algorithm):
    @classmethod
    def get_default_config(cls) -> TD3Config:
        return TD3Config()

    def setup(self, config: TD3Config) -> None:
        try:
            super().setup(config)
        except ray.exceptions.RayTaskError as e:  # a remote learner refused its settings
            if isinstance(e.cause, ConfigError):
                raise e.cause from None
            raise
        # Every learner shard trains in the units of one set of reward statistics.
        self.reward_processor = RewardProcessor(
            gamma=config.gamma, clip=config.reward_clip, scale_by_return_std=config.reward_scaling)
        self.replay_shards = ShardAssignment(config.num_learners)
        obs_space = self.env_runner_group.get_spaces()[DEFAULT_MODULE_ID][0]
        self._chunk_leaves = encoder_inputs(obs_space, config.image_encoder)
        self._updates_owed = 0.0
        self.replay_journal = (ReplayJournal(config.replay_journal_dir)
                               if config.replay_journal_dir else None)
        self._last_checkpoint: Optional[str] = None
        self._recovering = False

    def _create_local_replay_buffer_if_necessary(self, config):
        """None: the replay is ours, in the learners (replay_buffer_config only
        sizes it); RLlib would otherwise build its own from that config."""
        return None

    def training_step(self) -> None:
        cfg = self.config
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group, concat=True,
                sample_timeout_s=cfg.sample_timeout_s,
                _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)

        chunks = [EpisodeChunk.from_episode(ep, self._chunk_leaves) for ep in episodes]
        if self.replay_journal is not None:
            with self.metrics.log_time((TIMERS, REPLAY_JOURNAL_TIMER)):
                self.replay_journal.append(chunks, self._env_steps_sampled())
        self._store_and_learn(chunks)

    def _env_steps_sampled(self) -> int:
        return int(self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                     default=0))

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
        """Hand each learner its shard's chunks and the gradient updates the ratio
        owes, in one call per learner; each samples its batches from its shard."""
        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            finite = [c for c in chunks if c.is_finite()]  # the rest never enters a shard
            for chunk in finite:
                self.reward_processor.observe(chunk.id, chunk.rewards, chunk.done)
            shards = self.replay_shards.deal(chunks)
        self.metrics.log_value(("nonfinite", "replay_chunks_dropped"), len(chunks) - len(finite),
                               reduce="lifetime_sum")
        num_updates = self._updates_due(sum(c.num_steps for c in finite))
        store_and_update = _store_and_update_call(
            shards, remote=self.learner_group.is_remote, num_updates=num_updates,
            reward_scale=self.reward_processor.scale,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self._env_steps_sampled()})
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            try:
                learner_results = self._foreach_learner(store_and_update)
            except ray.exceptions.RayActorError as e:
                self._replace_lost_learners(e)
                return
        if not num_updates:
            return
        module_id = DEFAULT_MODULE_ID
        self._log_q_bound(learner_results[0][module_id], module_id)
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=[module_id], inference_only=True)

    def _updates_due(self, new_steps: int) -> int:
        """Gradient updates owed for ``new_steps`` new transitions: none before
        ``num_steps_sampled_before_learning_starts`` or before every shard can
        fill a batch."""
        cfg = self.config
        if (self._env_steps_sampled() < cfg.num_steps_sampled_before_learning_starts
                or min(self.replay_shards.transitions) < cfg.train_batch_size_per_learner):
            return 0
        self._updates_owed += new_steps * cfg.updates_per_env_step
        num_updates = int(self._updates_owed)
        self._updates_owed -= num_updates
        return num_updates

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
        """A learner actor died, and its replay shard with it: start new learners
        and restore the newest checkpoint plus the journal, as a resumed run does."""
        if self._recovering or self._last_checkpoint is None:
            raise error
        logger.warning("a learner actor was lost (%s); restoring %s plus the replay journal",
                       error, self._last_checkpoint)
        args, kwargs = self.learner_group.get_ctor_args_and_kwargs()
        self.learner_group.shutdown()
        self.learner_group = type(self.learner_group)(*args, **kwargs)
        self._recovering = True
        try:
            self.restore_from_path(self._last_checkpoint)
            self.replay_journal_tail()
        finally:
            self._recovering = False
        self.metrics.log_value("learner_restarts", 1, reduce="lifetime_sum")

    def save_to_path(self, path=None, **kwargs) -> str:
        path = super().save_to_path(path, **kwargs)
        if self.config.checkpoint_replay_buffer:
            save_shards(self._foreach_learner, os.path.join(path, BUFFER_DIR))
            with open(os.path.join(path, REPLAY_STATE_FILE), "w") as f:
                json.dump({"journal_head": self.replay_journal.head if self.replay_journal else -1,
                           "reward_statistics": self.reward_processor.get_state(),
                           "shards": self.replay_shards.get_state(),
                           "updates_owed": self._updates_owed}, f)
        return path

    def restore_from_path(self, path, *args, component=None, **kwargs) -> None:
        super().restore_from_path(path, *args, component=component, **kwargs)
        if component is not None:
            return
        self._last_checkpoint = str(path)
        if not os.path.isdir(os.path.join(path, BUFFER_DIR)):
            return
        with open(os.path.join(path, REPLAY_STATE_FILE)) as f:
            state = json.load(f)
        self.replay_shards.set_state(state["shards"])
        load_shards(self._foreach_learner, os.path.join(path, BUFFER_DIR))
        self.reward_processor.set_state(state["reward_statistics"])
        self._updates_owed = state["updates_owed"]
        if self.replay_journal is not None:
            self.replay_journal.restored(state["journal_head"])

    def replay_journal_tail(self) -> int:
        """After a restore: re-add the env steps the journal holds beyond the
        checkpoint, each training step's with the gradient updates it owed.
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

    def _log_q_bound(self, module_results, module_id) -> None:
        """q_bound in training units (after clipping/scaling) and how far the Q
        statistics, every one on both ends, are from it. Never raises."""
        bound = training_q_bound(self.config.reward_range, self.config.gamma,
                                 clip=self.config.reward_clip, scale=self.reward_processor.scale)
        if bound is None:
            return
        ratio = q_bound_ratio({k: module_results[k].peek() for k in Q_VALUES
                               if k in module_results}, bound)
        if ratio is None:
            return
        self.metrics.log_value((LEARNER_RESULTS, module_id, "q_bound"), bound, reduce="mean")
        self.metrics.log_value((LEARNER_RESULTS, module_id, "q_bound_ratio"), ratio, reduce="max")


def _store_and_update_call(shards: List[List[EpisodeChunk]], *, remote: bool, num_updates: int,
                           reward_scale: float, timesteps: dict) -> Callable:
    """What each learner runs: store its shard's chunks, then make ``num_updates``
    updates (returning RLlib's reduced results; None without updates). For
    remote learners each shard travels as its own object ref, fetched only by
    the learner that owns it."""
    payload = [ray.put(s) for s in shards] if remote else shards

    def store_and_update(learner):
        chunks = payload[learner.shard_index]
        learner.add_chunks(ray.get(chunks) if remote else chunks)
        if not num_updates:
            return None
        return learner.update_from_replay(num_updates, reward_scale=reward_scale,
                                          timesteps=timesteps)

    return store_and_update


def _journal_head(checkpoint: str) -> int:
    """The journal head a checkpoint holds; -1 (no entry follows it) for one
    saved without a journal or without its buffer."""
    path = os.path.join(checkpoint, REPLAY_STATE_FILE)
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        return int(json.load(f)["journal_head"])


register_trainable("TD3", TD3)
