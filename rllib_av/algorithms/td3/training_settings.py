"""The `training:` section of a run config: TD3 hyper-parameters.

Defaults follow Fujimoto et al. 2018 (and CleanRL / SB3), in the module's
normalized action space [-1, 1].
"""

from dataclasses import asdict
from typing import Annotated, Any, Dict, List, Literal, Optional

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

from rllib_av.config_schema import ConfigError, ConfigSection

# A hidden layer's width.
_Width = Annotated[StrictInt, Field(ge=1)]


@dataclass
class TrainingSettings(ConfigSection):
    gamma: StrictFloat = Field(0.99, gt=0, lt=1)
    n_step: StrictInt = Field(1, ge=1)
    tau: StrictFloat = Field(0.005, gt=0, le=1)
    actor_lr: StrictFloat = Field(3e-4, gt=0)
    critic_lr: StrictFloat = Field(3e-4, gt=0)
    batch_size: StrictInt = Field(256, ge=1)
    buffer_size: StrictInt = Field(1_000_000, ge=1)
    learning_starts: StrictInt = Field(1_000, ge=0)
    """Uniform-random actions for this many env steps before the policy acts."""
    updates_per_env_step: StrictFloat = Field(1.0, gt=0)
    """Gradient updates per sampled env step (the update-to-data ratio)."""
    rollout_fragment_length: StrictInt = Field(64, ge=1)
    """Env steps an env runner samples (per env) before it hands them over."""
    async_sampling: Optional[StrictBool] = None
    """Sampling overlaps learning: every env runner samples continuously while the learner
    trains at updates_per_env_step (rllib_av/algorithms/td3/async_sampling.py). null:
    whenever there is a remote env runner; false: sample, then learn, in lockstep."""
    max_policy_lag_updates: StrictInt = Field(64, ge=1)
    """Async sampling: weights reach every env runner at least every this many gradient
    updates (the learner publishes them at least that often)."""
    exploration_noise: StrictFloat = Field(0.1, ge=0)
    policy_noise: StrictFloat = Field(0.2, ge=0)
    noise_clip: StrictFloat = Field(0.5, ge=0)
    policy_delay: StrictInt = Field(2, ge=1)
    actor_grad_clip: Optional[StrictFloat] = Field(None, gt=0)
    critic_grad_clip: Optional[StrictFloat] = Field(None, gt=0)
    critic_l2: StrictFloat = Field(0.0, ge=0)
    actor_preactivation_l2: StrictFloat = Field(0.0, ge=0)
    """Actor loss + this x mean(pre-tanh action^2). Where the best action sits at a bound
    (full throttle from rest) the pre-tanh value otherwise grows without end; once tanh
    is saturated no gradient brings it back where the bound stops paying (full throttle
    at top speed). Logged actor_loss stays -mean Q1(s, mu(s)), as critic_l2 stays out of
    critic_loss."""
    actor_hiddens: List[_Width] = Field(default_factory=lambda: [256, 256])
    critic_hiddens: List[_Width] = Field(default_factory=lambda: [256, 256])
    reward_clip: Optional[StrictFloat] = Field(None, gt=0)
    """Reward processing at sampling time (raw rewards stay in the buffer)."""
    reward_scaling: StrictBool = False
    reward_range: Optional[List[StrictFloat]] = None
    """[r_min, r_max] per step for envs that do not declare one (gymnasium ids);
    DrivingEnv's comes from its reward config. Feeds the Q bound."""
    frame_stack: StrictInt = Field(4, ge=1)
    """Image frames stacked for the policy (Dict observations)."""
    image_encoder: Literal["nature_cnn", "small_cnn", "none"] = "nature_cnn"
    """The CNN over the image stack (networks.CNNS): nature_cnn (Mnih et al. 2015;
    GPU-sized), small_cnn (42x42 input, a CPU can train it); none drives from the state
    vector."""
    image_augmentation: StrictBool = True
    """DrQ random shifts (+-4 px) of obs and next_obs, fresh every gradient step, when an
    image encoder is on (augmentation.py)."""
    learner_class: Optional[StrictStr] = None
    """Your own TD3TorchLearner subclass as 'module:Class' (RLlib's learner_class), e.g.
    extra loss terms; the module must be importable (PYTHONPATH)."""

    def samples_async(self, num_env_runners: int) -> bool:
        return samples_async(self.async_sampling, num_env_runners)

    @model_validator(mode="after")
    def check(self) -> "TrainingSettings":
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
        return self

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
