"""Simulator crash (issue 8.3), embedded backend: the tests' FailingBackend
(failing_simulator.py) raises SimulatorFailure from the highway backend's step;
the episode is truncated, the world is rebuilt on reset, counted once in
``info["sim_server_restarts"]``, and training goes on."""

import json
import os
import time

import numpy as np
import pytest

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.run_config import dump_yaml, load_run_config, load_yaml

from failing_simulator import FailingDrivingEnv

FAIL_EVERY = 7


def test_failure_truncates_and_reset_recovers():
    env = FailingDrivingEnv(FAIL_EVERY, traffic="none", max_episode_steps=100)
    obs, info = env.reset(seed=1)
    assert info["sim_server_restarts"] == 0
    for step in range(1, FAIL_EVERY + 1):
        last_obs = obs
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.3], np.float32))
        if step < FAIL_EVERY:
            assert not (terminated or truncated)
    # The failing step: truncated (not terminated, so the critic bootstraps),
    # no reward, the last good observation again.
    assert (terminated, truncated, reward) == (False, True, 0.0)
    assert info["sim_failure"] and info["episode_end"] == "sim_failure"
    np.testing.assert_array_equal(obs["state"], last_obs["state"])
    obs, info = env.reset()
    assert info["sim_server_restarts"] == 1  # reported once...
    obs, _, terminated, truncated, info = env.step(np.array([0.0, 0.3], np.float32))
    assert info["sim_server_restarts"] == 0  # ...not again
    assert not truncated and np.isfinite(obs["state"]).all()
    env.close()


def test_the_highway_backend_does_not_fail_on_its_own():
    env = DrivingEnv({"traffic": "none", "max_episode_steps": 300})
    env.reset(seed=0)
    for _ in range(300):
        *_, terminated, truncated, info = env.step(np.array([0.0, 0.0], np.float32))
        assert not info["sim_failure"]
        if terminated or truncated:
            break
    assert env.backend.server_restarts == 0


@pytest.mark.slow
def test_training_survives_simulator_failures_in_an_env_runner(ray_local, tmp_path):
    """A remote EnvRunner whose simulator crashes every 150 steps: every failure
    costs one truncated episode, training reaches its step target, and the
    recoveries show as sim_server_restarts in the results and the exporter."""
    from rllib_av.training import train

    # The quickstart, its env: section handed to FailingDrivingEnv as keyword arguments.
    with open("configs/quickstart.yaml") as f:
        quickstart = load_yaml(f)
    quickstart["env"] = {"id": "failing_simulator:FailingDrivingEnv-v0",
                         "kwargs": {**quickstart["env"], "fail_every_n_steps": 150}}
    config = tmp_path / "failing_quickstart.yaml"
    with open(config, "w") as f:
        dump_yaml(quickstart, f)
    rc = load_run_config(str(config), [
        f"run.output_dir={tmp_path}", "run.total_env_steps=900", "run.min_time_s_per_iteration=0",
        "run.checkpoint_every_iters=1000", "training.learning_starts=100",
        "training.batch_size=32", "training.buffer_size=5000", "training.rollout_fragment_length=100",
        "resources.num_env_runners=1", "monitoring.exporter_port=0",
    ])
    results = []
    t0 = time.perf_counter()
    run_dir = train(rc, on_result=results.append, verbose=False)
    wall = time.perf_counter() - t0
    last = results[-1]
    steps = last["env_runners"]["num_env_steps_sampled_lifetime"]
    restarts = last["env_runners"].get("sim_server_restarts", 0)
    assert steps >= 900
    # 900 steps, a failure every 150: 5-6 failures, each recovered on the next
    # reset (the last one may still be pending at the end).
    assert 4 <= restarts <= 6, restarts
    assert last["fault_tolerance"]["num_healthy_workers"] == 1
    assert last["fault_tolerance"]["num_remote_worker_restarts"] == 0  # the runner never died
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["env_steps"] == steps
    print(f"simulator faults: {restarts} recoveries, {steps} env steps in {wall:.1f}s, "
          f"0 steps lost (each failure truncates its episode; its transitions are kept)")


def test_carla_backend_gets_the_env_runner_index(tmp_path):
    """Each remote EnvRunner (worker_index 1..N) owns its own CARLA server slot;
    nothing is launched until reset."""
    from ray.rllib.env.env_context import EnvContext

    env = DrivingEnv(EnvContext({"backend": "carla", "carla": {"node_dir": str(tmp_path)}},
                                worker_index=3))
    assert env.backend.server.runner_index == 3
    # A relaunch by the supervisor is reported once, in the next info.
    env.backend.server.restarts += 1
    assert env._new_restarts() == 1 and env._new_restarts() == 0
