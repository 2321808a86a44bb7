"""DrivingEnv's observation/action contract on the real highway-env backend."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rllib_av.envs import GYM_ID, DrivingEnv, route_completion
from rllib_av.envs.driving_env import CONTROLS, WAYPOINTS
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.reward import COMPONENTS


def test_spaces_and_dtypes():
    env = DrivingEnv({"num_waypoints": 7})
    assert env.observation_space["image"] == gym.spaces.Box(0, 255, (84, 84), np.uint8)
    assert env.observation_space["state"].shape == (5 + 2 * 7,)
    assert env.observation_space["state"].dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs, info = env.reset(seed=0)
    assert obs["image"].dtype == np.uint8 and obs["state"].dtype == np.float32
    assert obs in env.observation_space
    assert route_completion(info) == 0.0


def test_gymnasium_env_checker_passes():
    check_env(DrivingEnv({"traffic": "light"}), skip_render_check=True)


def test_obs_in_space_and_components_sum_to_reward_every_step():
    env = DrivingEnv({"traffic": "light", "max_episode_steps": 100})
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    for _ in range(300):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 2))
        assert obs in env.observation_space
        comps = info["reward_components"]
        assert set(comps) == set(COMPONENTS) | {"total"}
        assert comps["total"] == pytest.approx(reward)
        assert sum(comps[k] for k in COMPONENTS) == pytest.approx(reward)
        assert 0.0 <= info["route_progress_m"] <= info["route_length_m"] + 2.0
        if terminated or truncated:
            env.reset()


def test_state_reports_route_in_ego_frame_with_left_positive():
    env = DrivingEnv({"traffic": "none", "initial_speed_fraction": 1.0, "waypoint_spacing_m": 2.0})
    obs, _ = env.reset(seed=5)
    speed, lateral, heading = obs["state"][:3]
    assert speed == pytest.approx(env.settings.target_speed_mps)
    assert abs(lateral) < 1e-3 and abs(heading) < 1e-3
    assert np.array_equal(obs["state"][CONTROLS], [0.0, 0.0])  # no control applied yet
    wps = obs["state"][WAYPOINTS].reshape(-1, 2)
    assert wps[0, 0] == pytest.approx(2.0, abs=0.05)  # first waypoint one spacing ahead
    assert np.all(np.diff(wps[:, 0]) > 0)  # all ahead, in order
    # steer > 0 is a right turn: the car moves right of the lane centre (negative
    # lateral) and its heading falls behind the route's (negative heading error).
    for _ in range(5):
        obs, *_ = env.step([1.0, 0.0])
    assert obs["state"][1] < -0.1 and obs["state"][2] < -0.1


@pytest.mark.parametrize("smoothing", [0.0, 0.5, [0.2, 0.9]])
def test_applied_control_lags_the_action_by_the_smoothing_and_the_state_reports_it(smoothing):
    """One number lags both channels; [steer, throttle_brake] lags each its own."""
    env = DrivingEnv({"traffic": "none", "action_smoothing": smoothing})
    env.reset(seed=0)
    applied, lag = np.zeros(2), np.broadcast_to(smoothing, 2)
    for action in ([1.0, 1.0], [1.0, 1.0], [-0.5, 0.2], [-0.5, 0.2]):
        obs, *_ = env.step(action)
        applied = lag * applied + (1 - lag) * np.array(action)
        assert obs["state"][CONTROLS] == pytest.approx(applied)


def test_throttle_sets_a_cruising_speed_below_the_cap():
    """Drag makes full throttle hold max_speed_mps and half throttle a lower
    speed: lifting off changes what the car does at any speed."""
    def cruise(throttle):
        env = DrivingEnv({"traffic": "none", "max_episode_steps": 400,
                          "route_length_m": 400.0})
        env.reset(seed=0)
        for _ in range(300):
            obs, *_ = env.step([0.0, throttle])
        return obs["state"][0]

    full, half = cruise(1.0), cruise(0.5)
    assert full == pytest.approx(DrivingEnv().settings.max_speed_mps, rel=0.05)
    assert half < 0.8 * full


def test_constructible_from_gymnasium_registry_and_asdict_config():
    cfg = dataclasses.asdict(EnvSettings(traffic="medium", num_waypoints=4))
    env = gym.make(GYM_ID, env_config=cfg)
    obs, _ = env.reset(seed=1)
    assert obs["state"].shape == (13,)
    assert env.unwrapped.settings.traffic == "medium"


def test_render_rgb_array_for_videos():
    env = DrivingEnv({"traffic": "light"}, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    # Route waypoints drawn in red on the gray scene.
    assert np.any((frame[..., 0] == 255) & (frame[..., 1] == 0))


@pytest.mark.slow
def test_rllib_env_runner_samples_from_driving_env():
    """RLlib builds the env from the class and an env_config dict (the module
    is a random one: the TD3 module is tested with the algorithm)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.rllib.core.rl_module.torch import TorchRLModule

    class Untrained(TorchRLModule):  # random_actions=True never calls it
        def setup(self):
            pass

    config = (PPOConfig().environment(DrivingEnv, env_config={"traffic": "light"})
              .env_runners(num_env_runners=0)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=Untrained)))
    runner = SingleAgentEnvRunner(config=config)
    try:
        episodes = runner.sample(num_timesteps=20, random_actions=True)
        assert sum(len(e) for e in episodes) >= 20
        assert episodes[0].get_observations(0)["image"].shape == (84, 84)
        assert "reward_components" in episodes[0].get_infos(-1)
    finally:
        runner.stop()


@pytest.mark.parametrize("config, key", [
    ({"traffic": "jam"}, "env.traffic"),
    ({"reward": {"weights": {"safety": -1.0}}}, "env.reward.weights.safety"),
    ({"target_speed_mps": 30.0}, "env.target_speed_mps"),
    ({"num_waypoint": 5}, "env.num_waypoint"),
])
def test_bad_env_config_is_one_clear_line(config, key):
    from rllib_av.config_schema import ConfigError

    with pytest.raises(ConfigError) as err:
        DrivingEnv(config)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


@pytest.mark.parametrize("name", ["quickstart", "highway_light", "highway_medium", "highway_heavy",
                                  "highway_traffic_camera"])
def test_scenario_configs_build_their_env(name):
    """configs/<name>.yaml -> RunConfig -> asdict (what training hands RLlib) -> env."""
    import os

    from rllib_av.envs.highway_backend import TRAFFIC_NPCS
    from rllib_av.run_config import load_run_config

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    cfg = load_run_config(os.path.join(root, f"{name}.yaml"))
    env = DrivingEnv(dataclasses.asdict(cfg.env))
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    assert env.settings == cfg.env
    assert len(env.backend.npcs) == TRAFFIC_NPCS[cfg.env.traffic]
