"""TD3 (Fujimoto et al. 2018) as an RLlib Algorithm on the new API stack.

    config = TD3Config().environment("Pendulum-v1").training(actor_lr=1e-3)
    algo = config.build_algo()        # or tune.Tuner("TD3", param_space=config)

RLlib provides the EnvRunners, RLModule, Learner, optimizers, metrics and
fault tolerance; the replay buffer is this project's own (replay_buffer.py).
One ``training_step``: sample ``rollout_fragment_length`` env steps per
EnvRunner, journal and store them, then make as many gradient updates as the
update-to-data ratio owes, in one Learner call.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Optional

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.tune.registry import register_trainable

from rllib_av.algorithms.td3.debug_faults import DebugRewardFault
from rllib_av.algorithms.td3.frame_stacking import DictImageFrameStacking, stacks_frames
from rllib_av.algorithms.td3.replay_buffer import (
    EpisodeChunk, TransitionReplayBuffer, load_buffer, save_buffer,
)
from rllib_av.algorithms.td3.replay_journal import ReplayJournal
from rllib_av.algorithms.td3.reward_scaling import RewardProcessor
from rllib_av.algorithms.td3.training_settings import TrainingSettings
from rllib_av.health.q_bound import q_bound_ratio, training_q_bound
from rllib_av.health.statistics import Q_VALUES

# TD3Config's own settings (also `training(...)` keyword arguments). Their
# defaults are the run config's (training_settings.py), the one place they live;
# the rest of that section maps onto RLlib's own names (see training.py).
_RLLIB_NAMED = {"gamma", "batch_size", "rollout_fragment_length", "debug_diverge"}
_TD3_DEFAULTS = {
    **{k: v for k, v in dataclasses.asdict(TrainingSettings()).items() if k not in _RLLIB_NAMED},
    # The env's per-step reward range [r_min, r_max] (raw units): enables q_bound.
    "reward_range": None,
    # TEST ONLY: multiplies the bootstrap term of the target (> 1/gamma diverges).
    "debug_bootstrap_scale": 1.0,
}


class TD3Config(AlgorithmConfig):
    TD3_SETTINGS = frozenset(_TD3_DEFAULTS)

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or TD3)
        for key, value in _TD3_DEFAULTS.items():
            setattr(self, key, copy.copy(value))  # no list shared between configs
        defaults = TrainingSettings()
        self.gamma = defaults.gamma
        self.train_batch_size_per_learner = defaults.batch_size
        self.rollout_fragment_length = defaults.rollout_fragment_length
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
        td3 = {k: kwargs.pop(k) for k in list(kwargs) if k in _TD3_DEFAULTS}
        super().training(**kwargs)
        for key, value in td3.items():
            if value is not NotProvided:
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
            "random_warmup_steps": self.learning_starts,
        }


BUFFER_DIR = "replay_buffer"
# In a checkpoint: the newest replay journal entry its buffer holds.
JOURNAL_HEAD_FILE = "replay_journal_head.json"
REPLAY_JOURNAL_TIMER = "replay_journal_append"


class TD3(Algorithm):
    @classmethod
    def get_default_config(cls) -> TD3Config:
        return TD3Config()

    def setup(self, config: TD3Config) -> None:
        super().setup(config)
        self.reward_processor = RewardProcessor(
            gamma=config.gamma, clip=config.reward_clip, scale_by_return_std=config.reward_scaling)
        self.replay_buffer = TransitionReplayBuffer(
            config.buffer_size, frame_stack=config.frame_stack, gamma=config.gamma,
            reward_processor=self.reward_processor, seed=config.seed)
        self._updates_owed = 0.0
        self.replay_journal = (ReplayJournal(config.replay_journal_dir)
                               if config.replay_journal_dir else None)
        self._debug_reward_fault = (DebugRewardFault(config.debug_reward_mode)
                                    if config.debug_reward_mode != "none" else None)

    def training_step(self) -> None:
        cfg = self.config
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group, concat=True,
                sample_timeout_s=cfg.sample_timeout_s,
                _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)

        chunks = [EpisodeChunk.from_episode(ep) for ep in episodes]
        if self._debug_reward_fault is not None:  # TEST ONLY
            chunks = self._debug_reward_fault.apply(chunks)
        if self.replay_journal is not None:
            with self.metrics.log_time((TIMERS, REPLAY_JOURNAL_TIMER)):
                self.replay_journal.append(chunks, self._env_steps_sampled())
        self._store_and_learn(chunks)

    def _env_steps_sampled(self) -> int:
        return int(self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                     default=0))

    def _store_and_learn(self, chunks) -> None:
        """Store the chunks, then make the gradient updates the ratio owes."""
        cfg = self.config
        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            dropped_before = self.replay_buffer.num_nonfinite_dropped
            new_steps = self.replay_buffer.add_chunks(chunks)
            self.metrics.log_value(("nonfinite", "replay_chunks_dropped"),
                                   self.replay_buffer.num_nonfinite_dropped - dropped_before,
                                   reduce="lifetime_sum")

        sampled = self._env_steps_sampled()
        if sampled < cfg.learning_starts:
            return
        self._updates_owed += new_steps * cfg.updates_per_env_step
        num_updates = int(self._updates_owed)
        if num_updates == 0 or self.replay_buffer.num_transitions_added < cfg.train_batch_size_per_learner:
            return
        self._updates_owed -= num_updates

        with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
            batch = self.replay_buffer.sample(
                num_updates * cfg.train_batch_size_per_learner, n_step=cfg.n_step)
        module_id = DEFAULT_MODULE_ID
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                batch=MultiAgentBatch({module_id: SampleBatch(batch)},
                                      env_steps=len(batch["rewards"])),
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled})
        self._log_q_bound(learner_results[0][module_id], module_id)
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=[module_id], inference_only=True)

    def save_to_path(self, path=None, **kwargs) -> str:
        path = super().save_to_path(path, **kwargs)
        if self.config.checkpoint_replay_buffer:
            save_buffer(self.replay_buffer, os.path.join(path, BUFFER_DIR))
        if self.replay_journal is not None:
            with open(os.path.join(path, JOURNAL_HEAD_FILE), "w") as f:
                json.dump({"head": self.replay_journal.head}, f)
        return path

    def restore_from_path(self, path, *args, component=None, **kwargs) -> None:
        super().restore_from_path(path, *args, component=component, **kwargs)
        buffer_path = os.path.join(path, BUFFER_DIR)
        if component is None and os.path.isdir(buffer_path):
            load_buffer(self.replay_buffer, buffer_path)
            if self.replay_journal is not None:
                self.replay_journal.restored(_journal_head(path))

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
        """The checkpoint at ``path`` is in place: older journal entries can go."""
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


def _journal_head(checkpoint: str) -> int:
    """The journal head a checkpoint holds; -1 (no entry follows it) for one
    saved without a journal."""
    path = os.path.join(checkpoint, JOURNAL_HEAD_FILE)
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        return int(json.load(f)["head"])


register_trainable("TD3", TD3)
