"""The checkpoint's deterministic policy runs through the training connectors:
with a CNN over 4 stacked frames, each action is mu(stack of the last 4 camera
frames, zero-padded before the reset; latest state vector)."""

import dataclasses
import os

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_av.checkpoints import latest_checkpoint
from rllib_av.config_schema import ConfigError
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.evaluation.evaluation_plan import resolve_checkpoint
from rllib_av.evaluation.trained_policy import TrainedPolicy
from rllib_av.run_config import load_run_config
from test_report import QUICKSTART, train_short_run


@pytest.fixture(scope="module")
def cnn_run(ray_local, tmp_path_factory):
    # One sampling round, no gradient update (learning_starts > steps): a
    # checkpoint of a randomly initialised CNN policy, enough to check the plumbing.
    return train_short_run(tmp_path_factory.mktemp("runs"), "run.total_env_steps=32",
                           "training.rollout_fragment_length=32", "training.learning_starts=1000",
                           "training.image_encoder=nature_cnn", "training.frame_stack=4",
                           "run.checkpoint_replay_buffer=false")


@pytest.mark.slow
def test_actions_are_mu_of_the_training_frame_stack(cnn_run):
    rc, run_dir = cnn_run
    checkpoint = resolve_checkpoint(run_dir)  # a run dir resolves to its newest checkpoint
    assert checkpoint == latest_checkpoint(run_dir)
    # Rolling at the target speed from the reset, so the frames change
    # whatever the untrained policy does with the pedals.
    env = DrivingEnv(dataclasses.replace(rc.env, initial_speed_fraction=1.0))
    policy = TrainedPolicy(checkpoint, env)
    obs, info = env.reset(seed=5)
    policy.reset()
    frames = [np.zeros_like(obs["image"])] * 3 + [obs["image"]]
    for _ in range(6):
        action = policy.act(obs, info)
        stack = torch.as_tensor(np.stack(frames[-4:]))[None]
        state = torch.as_tensor(obs["state"])[None]
        with torch.no_grad():
            expected = policy.module.forward_inference(
                {Columns.OBS: {"image": stack, "state": state}})[Columns.ACTIONS][0].numpy()
        np.testing.assert_allclose(action, expected, atol=1e-5)
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
        frames.append(obs["image"])
    # The frames really differ (the car moves), so a wrong stack would show.
    assert not np.array_equal(frames[3], frames[-1])


@pytest.mark.slow
def test_scenario_with_another_state_size_is_refused(cnn_run):
    rc, run_dir = cnn_run
    other = DrivingEnv(load_run_config(QUICKSTART, ["env.num_waypoints=4"]).env)
    theirs = other.observation_space["state"].shape[0]
    ours = DrivingEnv(rc.env).observation_space["state"].shape[0]
    with pytest.raises(ConfigError, match=rf"state vector has shape \({theirs},\).*\({ours},\)"):
        TrainedPolicy(latest_checkpoint(run_dir), other)


@pytest.mark.slow
def test_relative_run_dir_loads_as_readme_shows_it(cnn_run, monkeypatch):
    """`rllib-av evaluate --checkpoint runs/quickstart-...`: RLlib reads checkpoints
    through pyarrow, which rejects a relative path ("URI has empty scheme")."""
    rc, run_dir = cnn_run
    monkeypatch.chdir(os.path.dirname(run_dir))
    checkpoint = resolve_checkpoint(os.path.basename(run_dir))
    assert checkpoint == latest_checkpoint(run_dir) and os.path.isabs(checkpoint)
    TrainedPolicy(checkpoint, DrivingEnv(rc.env))
