"""TD3 as a whole RLlib Algorithm: Dict observations, checkpoints, Tune registration."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.algorithms.algorithm import Algorithm

from rllib_av.algorithms.td3 import TD3, TD3Config

STATE_DIM = 5


class SyntheticDrivingEnv(gym.Env):
    """The driving env's Dict observation with a learnable-looking signal: the image's
    brightness tracks a hidden target the action should match."""

    observation_space = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (84, 84), np.uint8),
        "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
    })
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, config=None):
        self.t, self.target = 0, 0.0
        self.rng = np.random.default_rng(0)

    def _obs(self):
        image = np.full((84, 84), int(127 + 120 * self.target), np.uint8)
        return {"image": image, "state": np.full(STATE_DIM, self.t / 10, np.float32)}

    def reset(self, *, seed=None, options=None):
        self.t, self.target = 0, float(self.rng.uniform(-1, 1))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = -abs(float(action[0]) - self.target)
        return self._obs(), reward, False, self.t >= 12, {}


def dict_config():
    return (TD3Config().environment(SyntheticDrivingEnv)
            .training(num_steps_sampled_before_learning_starts=64, train_batch_size_per_learner=16,
                      replay_buffer_config={"capacity": 2000},
                      actor_hiddens=[32], critic_hiddens=[32], frame_stack=4)
            .env_runners(num_env_runners=0, rollout_fragment_length=32)
            .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
            .debugging(seed=0))


@pytest.mark.slow
def test_dict_observation_trains_through_cnn_and_frame_stacks(ray_local):
    algo = dict_config().build_algo()
    try:
        for _ in range(4):
            result = algo.train()
        stats = result["learners"]["default_policy"]
        assert stats["num_updates_lifetime"] > 0
        assert np.isfinite(stats["critic_loss"]) and np.isfinite(stats["q_actor_mean"])
        module = algo.get_module()
        assert module.observation_space["image"].shape == (4, 84, 84)
        assert module.encoder.cnn is not None
        # Frames are stored once, in the learner: (84, 84) uint8 frames, not stacks.
        storage = algo.learner_group._learner.replay_storage
        assert storage.obs["image"].shape[1:] == (84, 84)
        assert storage.obs["image"].dtype == torch.uint8
        assert storage.num_transitions_added == algo.num_replay_transitions == 4 * 32
    finally:
        algo.stop()


def _module_state(algo):
    return {k: v.clone() for k, v in algo.learner_group._learner.module["default_policy"]
            .state_dict().items()}


def _optim_state(algo):
    return algo.learner_group._learner._get_optimizer_state()


def test_checkpoint_round_trips_weights_targets_optimizers_and_delay_phase(ray_local, tmp_path):
    config = (TD3Config().environment("Pendulum-v1")
              .training(num_steps_sampled_before_learning_starts=64, train_batch_size_per_learner=32,
                        policy_delay=3, actor_hiddens=[32], critic_hiddens=[32])
              .env_runners(num_env_runners=0, rollout_fragment_length=50)
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0))
    algo = config.build_algo()
    for _ in range(4):
        algo.train()
    weights, optim = _module_state(algo), _optim_state(algo)
    phase = algo.learner_group._learner._critic_steps["default_policy"]
    assert any(k.startswith("target_actor") for k in weights)
    assert any(k.startswith("target_critic") for k in weights)
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()

    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored, TD3)
        new_weights = _module_state(restored)
        assert weights.keys() == new_weights.keys()
        for k in weights:
            assert torch.equal(weights[k], new_weights[k]), k
        new_optim = _optim_state(restored)
        for name in ("default_policy_actor", "default_policy_critic"):
            old_s, new_s = optim[name]["state"]["state"], new_optim[name]["state"]["state"]
            assert old_s and old_s.keys() == new_s.keys()
            for idx in old_s:
                assert torch.equal(torch.as_tensor(old_s[idx]["exp_avg"]),
                                   torch.as_tensor(new_s[idx]["exp_avg"]))
        assert restored.learner_group._learner._critic_steps["default_policy"] == phase
        restored.train()  # and it keeps training
    finally:
        restored.stop()


def test_registered_with_tune():
    from ray.tune.registry import get_trainable_cls

    assert get_trainable_cls("TD3") is TD3


@pytest.mark.parametrize("key,value", [("actor_lr", 0.0), ("gamma", 1.0), ("policy_delay", 0)])
def test_invalid_hyperparameters_are_rejected(key, value):
    config = TD3Config().environment("Pendulum-v1")
    if key == "gamma":
        config.training(gamma=value)
    else:
        config.training(**{key: value})
    with pytest.raises(ValueError, match=key):
        config.validate()
