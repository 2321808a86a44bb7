"""The `training:` section of a run config: TD3 hyper-parameters.

Defaults follow Fujimoto et al. 2018 (and CleanRL / SB3), in the module's
normalized action space [-1, 1].
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from rllib_av.config_schema import ConfigError, bounds, choices


@dataclass
class TrainingSettings:
    gamma: float = field(default=0.99, metadata=bounds(gt=0, lt=1))
    n_step: int = field(default=1, metadata=bounds(ge=1))
    tau: float = field(default=0.005, metadata=bounds(gt=0, le=1))
    actor_lr: float = field(default=3e-4, metadata=bounds(gt=0))
    critic_lr: float = field(default=3e-4, metadata=bounds(gt=0))
    batch_size: int = field(default=256, metadata=bounds(ge=1))
    buffer_size: int = field(default=1_000_000, metadata=bounds(ge=1))
    # Uniform-random actions for this many env steps before the policy acts.
    learning_starts: int = field(default=1_000, metadata=bounds(ge=0))
    # Gradient updates per sampled env step (the update-to-data ratio).
    updates_per_env_step: float = field(default=1.0, metadata=bounds(gt=0))
    # Env steps an env runner samples (per env) before it hands them over.
    rollout_fragment_length: int = field(default=64, metadata=bounds(ge=1))
    # Sampling overlaps learning: every env runner samples continuously while the
    # learner trains at updates_per_env_step (rllib_av/algorithms/td3/async_sampling.py).
    # None: whenever there is a remote env runner; false: sample, then learn, in lockstep.
    async_sampling: Optional[bool] = None
    # Async sampling: weights reach every env runner at least every this many
    # gradient updates (the learner publishes them at least that often).
    max_policy_lag_updates: int = field(default=64, metadata=bounds(ge=1))
    exploration_noise: float = field(default=0.1, metadata=bounds(ge=0))
    policy_noise: float = field(default=0.2, metadata=bounds(ge=0))
    noise_clip: float = field(default=0.5, metadata=bounds(ge=0))
    policy_delay: int = field(default=2, metadata=bounds(ge=1))
    actor_grad_clip: Optional[float] = field(default=None, metadata=bounds(gt=0))
    critic_grad_clip: Optional[float] = field(default=None, metadata=bounds(gt=0))
    critic_l2: float = field(default=0.0, metadata=bounds(ge=0))
    # Actor loss + this x mean(pre-tanh action^2). Where the best action sits at
    # a bound (full throttle from rest) the pre-tanh value otherwise grows
    # without end; once tanh is saturated no gradient brings it back where the
    # bound stops paying (full throttle at top speed). Logged actor_loss stays
    # -mean Q1(s, mu(s)), as critic_l2 stays out of critic_loss.
    actor_preactivation_l2: float = field(default=0.0, metadata=bounds(ge=0))
    actor_hiddens: List[int] = field(default_factory=lambda: [256, 256], metadata=bounds(ge=1))
    critic_hiddens: List[int] = field(default_factory=lambda: [256, 256], metadata=bounds(ge=1))
    # Reward processing at sampling time (raw rewards stay in the buffer).
    reward_clip: Optional[float] = field(default=None, metadata=bounds(gt=0))
    reward_scaling: bool = False
    # [r_min, r_max] per step for envs that do not declare one (gymnasium ids);
    # DrivingEnv's comes from its reward config. Feeds the Q bound.
    reward_range: Optional[List[float]] = None
    # Image frames stacked for the policy (Dict observations).
    frame_stack: int = field(default=4, metadata=bounds(ge=1))
    # The CNN over the image stack (networks.CNNS): "nature_cnn" (Mnih et al.
    # 2015; GPU-sized), "small_cnn" (42x42 input, a CPU can train it); "none"
    # drives from the state vector.
    image_encoder: str = field(default="nature_cnn",
                               metadata=choices("nature_cnn", "small_cnn", "none"))
    # DrQ random shifts (+-4 px) of obs and next_obs, fresh every gradient step,
    # when an image encoder is on (augmentation.py).
    image_augmentation: bool = True
    # Your own TD3TorchLearner subclass as "module:Class" (RLlib's learner_class),
    # e.g. extra loss terms; the module must be importable (PYTHONPATH).
    learner_class: Optional[str] = None

    def samples_async(self, num_env_runners: int) -> bool:
        return samples_async(self.async_sampling, num_env_runners)

    def check(self) -> None:
        if self.learner_class is not None and not _is_qualified_name(self.learner_class):
            raise ConfigError(f"training.learner_class: {self.learner_class!r} is not allowed; "
                              "expected 'module:Class', e.g. 'my_learners:MyTD3Learner'")
        if self.reward_range is not None and (
                len(self.reward_range) != 2 or self.reward_range[0] > self.reward_range[1]):
            raise ConfigError(f"training.reward_range: {self.reward_range!r} is not allowed; "
                              "expected [r_min, r_max] with r_min <= r_max")
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"training.batch_size: {self.batch_size} is not allowed; expected "
                f"<= training.buffer_size ({self.buffer_size})"
            )

    def td3_training_kwargs(self, num_learners: int = 0) -> Dict[str, Any]:
        """This section as ``TD3Config.training(...)`` keyword arguments, in
        RLlib's names: the keys in ``RLLIB_NAMES`` are renamed, every other key
        keeps its name (rollout_fragment_length goes to ``env_runners()``,
        learner_class to ``learners()`` and reward_range through the env's
        declared range: see rllib_av/training.py)."""
        kwargs = {k: v for k, v in asdict(self).items()
                  if k not in RLLIB_NAMES and k not in _SET_ELSEWHERE}
        kwargs.update(num_steps_sampled_before_learning_starts=self.learning_starts,
                      replay_buffer_config={"capacity": self.buffer_size},
                      # One update's batch, split evenly over the learners
                      # (run_config.py checks that it divides).
                      train_batch_size_per_learner=self.batch_size // max(1, num_learners))
        return kwargs


# Run-config keys whose TD3Config (RLlib) setting has another name; README's
# "Run config and RLlib's names" table shows every key.
RLLIB_NAMES = {
    "learning_starts": "num_steps_sampled_before_learning_starts",
    "buffer_size": "replay_buffer_config['capacity']",
    "batch_size": "train_batch_size_per_learner (x num_learners)",
}
_SET_ELSEWHERE = ("rollout_fragment_length", "learner_class", "reward_range")


def _is_qualified_name(text: str) -> bool:
    module, _, name = text.partition(":")
    return all(part.isidentifier() for part in module.split(".") + [name])


def samples_async(async_sampling: Optional[bool], num_env_runners: int) -> bool:
    """Whether sampling overlaps learning: ``async_sampling``, or (None) whenever
    there is a remote env runner."""
    return num_env_runners > 0 if async_sampling is None else bool(async_sampling)
