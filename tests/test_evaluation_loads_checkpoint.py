"""Evaluation acts with the checkpoint's weights, not with a module of the same
shape: the saved actor answers a constant action no initialisation produces,
and the evaluated policy must answer it too. No Ray, no sampling: the run's
learner group is built and saved under the path an Algorithm checkpoint keeps
it at (``learner_group/``), beside the run's config.yaml."""

import os

import numpy as np
import pytest
import torch

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.evaluation.trained_policy import TrainedPolicy
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config, new_run_dir

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart.yaml")
SAVED_ACTION = np.array([0.5, -0.25], np.float32)


@pytest.fixture
def checkpoint(tmp_path):
    rc = load_run_config(QUICKSTART, [f"run.output_dir={tmp_path}"])
    run_dir = new_run_dir(rc)
    env = DrivingEnv(rc.env)
    learner_group = build_td3_config(rc, run_dir).build_learner_group(env=env)
    actor = learner_group._learner.module["default_policy"].actor
    *hidden, last_bias = actor.parameters()
    assert last_bias.shape == SAVED_ACTION.shape
    with torch.no_grad():  # mu(s) = tanh(atanh(SAVED_ACTION)) whatever s is
        for p in hidden:
            p.zero_()
        last_bias.copy_(torch.atanh(torch.as_tensor(SAVED_ACTION)))
    path = os.path.join(run_dir, "checkpoints", "iter_000001")
    learner_group.save_to_path(os.path.join(path, "learner_group"))
    env.close()
    return path, rc


def test_evaluated_policy_acts_with_the_saved_weights(checkpoint):
    path, rc = checkpoint
    env = DrivingEnv(rc.env)
    policy = TrainedPolicy(path, env)
    obs, info = env.reset(seed=3)
    policy.reset()
    for _ in range(3):
        action = policy.act(obs, info)
        np.testing.assert_allclose(action, SAVED_ACTION, atol=1e-6)
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
    env.close()
