"""RLlib's names: a TD3Config written the way one writes RLlib's SAC
(num_steps_sampled_before_learning_starts, replay_buffer_config's capacity,
tau, actor_lr / critic_lr, n_step) resolves to the same algorithm settings as
the run config's readable keys, and README's table names every key."""

import dataclasses
import os

import pytest

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.algorithms.td3.training_settings import RLLIB_NAMES, TrainingSettings
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PENDULUM_RANGE = [-16.3, 0.0]


def test_rllib_style_config_and_run_config_resolve_to_the_same_settings():
    rc = load_run_config(None, [
        "env.id=Pendulum-v1", f"training.reward_range={PENDULUM_RANGE}",
        "training.learning_starts=512", "training.buffer_size=30000", "training.batch_size=128",
        "training.tau=0.02", "training.actor_lr=1e-3", "training.critic_lr=2e-3",
        "training.n_step=3", "training.gamma=0.97", "training.rollout_fragment_length=32",
        "training.updates_per_env_step=0.5", "training.policy_delay=3",
        "training.actor_hiddens=[64, 64]", "training.image_encoder=none"])
    from_run_config = build_td3_config(rc)
    rllib_style = (TD3Config().environment("Pendulum-v1")
                   .training(num_steps_sampled_before_learning_starts=512,
                             replay_buffer_config={"capacity": 30000},
                             train_batch_size_per_learner=128, tau=0.02, actor_lr=1e-3,
                             critic_lr=2e-3, n_step=3, gamma=0.97, updates_per_env_step=0.5,
                             policy_delay=3, actor_hiddens=[64, 64], image_encoder="none",
                             reward_range=tuple(PENDULUM_RANGE))
                   .env_runners(rollout_fragment_length=32))
    keys = sorted(TD3Config.TD3_SETTINGS | {"gamma", "train_batch_size_per_learner",
                                             "rollout_fragment_length"})
    assert {k: getattr(from_run_config, k) for k in keys} == {
        k: getattr(rllib_style, k) for k in keys}
    # Not two copies of the defaults: the run config's values arrived.
    assert from_run_config.num_steps_sampled_before_learning_starts == 512
    assert from_run_config.replay_buffer_capacity == 30000
    assert from_run_config.n_step == 3 and from_run_config.tau == 0.02


def test_defaults_are_the_run_configs():
    t, config = TrainingSettings(), TD3Config()
    assert config.num_steps_sampled_before_learning_starts == t.learning_starts
    assert config.replay_buffer_config == {"capacity": t.buffer_size}
    assert config.train_batch_size_per_learner == t.batch_size
    same = [f.name for f in dataclasses.fields(TrainingSettings)
            if f.name in TD3Config.TD3_SETTINGS and f.name != "reward_range"]
    assert {k: getattr(config, k) for k in same} == {k: getattr(t, k) for k in same}


def test_replay_buffer_config_updates_capacity_and_refuses_what_the_replay_cannot_do():
    config = TD3Config().environment("Pendulum-v1").training(
        replay_buffer_config={"capacity": 5000})
    assert config.replay_buffer_capacity == 5000
    config.validate()
    config.training(replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer"})
    with pytest.raises(ValueError, match="replay_buffer_config.*'type'"):
        config.validate()


def test_readme_maps_every_training_key_to_its_rllib_name():
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = readme.split("| run config `training.` |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    named = {key.strip(" `") for cell in rows for key in cell.split(",")}
    assert named == {f.name for f in dataclasses.fields(TrainingSettings)}
    for key, rllib in RLLIB_NAMES.items():
        (row,) = [line for cell, line in rows.items() if f"`{key}`" in cell]
        assert rllib.split(" ")[0].split("[")[0] in row, row
