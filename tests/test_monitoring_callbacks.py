"""HealthCallbacks inside a real RLlib algorithm: reward components logged on
a remote EnvRunner reach the driver's one exporter and TensorBoard."""

import os
import re
import sys
import urllib.request

import gymnasium as gym
import pytest
import ray.cloudpickle

from rllib_av.monitoring.callbacks import PORT_FILE, HealthCallbacks, health_callbacks

COMPONENTS = ("efficiency", "lane_keeping", "comfort", "safety", "progress")


class ComponentsPendulum(gym.Wrapper):
    """Pendulum whose reward is reported as DrivingEnv-style components."""

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        comps = {"efficiency": 0.5 * r, "lane_keeping": 0.3 * r, "comfort": 0.1 * r,
                 "safety": 0.0, "progress": 0.1 * r}
        info["reward_components"] = dict(comps, total=r)
        return obs, r, term, trunc, info


@pytest.mark.slow
def test_remote_env_runner_components_reach_the_driver_exporter(ray_local, tmp_path):
    from ray import tune
    from ray.rllib.algorithms.sac import SACConfig

    # Ray workers cannot import this test module: ship its classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tune.register_env("components_pendulum",
                      lambda cfg: ComponentsPendulum(gym.make("Pendulum-v1")))
    config = (
        SACConfig()
        .environment("components_pendulum")
        .env_runners(num_env_runners=1, rollout_fragment_length=50)
        .training(num_steps_sampled_before_learning_starts=100, train_batch_size_per_learner=32)
        .reporting(min_sample_timesteps_per_iteration=100)
        .callbacks(HealthCallbacks)
    )
    config.run_config = {"run": {"name": "cbtest", "run_dir": str(tmp_path)},
                         "monitoring": {"exporter_port": 0}}
    algo = config.build_algo()
    cb = health_callbacks(algo)
    try:
        # On a loaded machine the remote runner's first iterations may finish no
        # step with components; train until the driver has seen some (bounded).
        for _ in range(6):
            result = algo.train()
            abs_means = result["env_runners"].get("reward_components_abs", {})
            if result["training_iteration"] >= 2 and abs_means.get("total", 0) > 0:
                break
        port = int((tmp_path / PORT_FILE).read_text())
        assert port == cb.exporter.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        algo.stop()
        cb.close()
    comps = result["env_runners"]["reward_components"]
    labels = f'config="cbtest",run="{tmp_path.name}"'  # run: the run directory's name
    # Per-step means: the weighted parts add up to the total.
    assert sum(comps[c] for c in COMPONENTS) == pytest.approx(comps["total"], rel=1e-6)
    assert comps["total"] < 0  # Pendulum rewards are <= 0
    assert f'rllib_av_reward_component_mean{{component="efficiency",{labels}}}' in text
    # 0.5 of |reward|, up to the rounding of five separately averaged components.
    share = re.search(rf'^rllib_av_reward_component_share{{component="efficiency",{labels}}} '
                      r'(\S+)$', text, re.M)
    assert share and float(share.group(1)) == pytest.approx(0.5), [
        line for line in text.splitlines() if "share" in line]
    assert f'rllib_av_env_runners_healthy{{{labels}}} 1.0' in text
    assert f'rllib_av_env_steps_total{{{labels}}}' in text
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
