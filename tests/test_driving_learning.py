"""TD3 learns to drive the quickstart route (embedded highway-env backend).

Budget: QUICKSTART_STEPS env steps of the quickstart config (state-vector
encoder, as on CPU), a few minutes on two cores. The trained deterministic
policy must cover clearly more of the route than a uniform-random policy and
than a zero-throttle policy (which never leaves the spawn point).
"""

import dataclasses

import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns

from rllib_av.envs import DrivingEnv, route_completion
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

QUICKSTART_STEPS = 10_000
EPISODES = 5
MARGIN = 0.25  # route fraction the trained policy must beat each baseline by


def completion(env, act, episodes=EPISODES, seed=100):
    out = []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(act(obs))
            done = term or trunc
        out.append(route_completion(info))
    return float(np.mean(out))


def module_policy(module):
    """Deterministic actions; the quickstart stacks 1 frame: image (1, 1, 84, 84)."""
    def act(obs):
        batch = {"image": torch.as_tensor(obs["image"][None, None]),
                 "state": torch.as_tensor(obs["state"][None])}
        with torch.no_grad():
            return module.forward_inference({Columns.OBS: batch})[Columns.ACTIONS][0].numpy()
    return act


@pytest.mark.slow
def test_td3_drives_farther_than_random_and_zero_throttle(ray_local):
    torch.set_num_threads(1)
    rc = load_run_config("configs/quickstart.yaml", ["monitoring.exporter_port=0",
                                                     "run.min_time_s_per_iteration=0"])
    algo = build_td3_config(rc).build_algo()
    try:
        steps = 0
        while steps < QUICKSTART_STEPS:
            steps = algo.train()["env_runners"]["num_env_steps_sampled_lifetime"]
        module = algo.get_module()
        env = DrivingEnv(dataclasses.asdict(rc.env))
        rng = np.random.default_rng(0)
        trained = completion(env, module_policy(module))
        random = completion(env, lambda obs: rng.uniform(-1, 1, 2).astype(np.float32))
        zero = completion(env, lambda obs: np.zeros(2, np.float32))
        env.close()
    finally:
        algo.stop()
    print(f"route completion after {steps} steps: trained {trained:.2f}, "
          f"random {random:.2f}, zero throttle {zero:.2f}")
    assert trained > random + MARGIN
    assert trained > zero + MARGIN
