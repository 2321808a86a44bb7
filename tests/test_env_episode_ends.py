"""Every way a DrivingEnv episode ends, on the real highway-env backend."""

import numpy as np
import pytest

from rllib_av.envs import DrivingEnv
from rllib_av.envs.backend import SimulatorFailure
from rllib_av.envs.highway_backend import _Npc


def _lane_follower(obs, target_speed):
    """A P controller on the state vector: enough to drive the circuit."""
    speed, lateral, heading = obs["state"][:3]
    steer = np.clip(0.4 * lateral + 1.5 * heading, -1, 1)  # steer > 0 = right
    return np.array([steer, np.clip(0.5 * (target_speed - speed), -1, 1)])


def _run(env, policy, limit=2000):
    obs, info = env.reset(seed=0)
    for step in range(1, limit + 1):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            return step, reward, terminated, truncated, info
    raise AssertionError("episode did not end")


def test_goal_terminates_with_goal_bonus():
    env = DrivingEnv({"traffic": "none", "route_length_m": 40.0})
    step, reward, terminated, truncated, info = _run(
        env, lambda o: _lane_follower(o, env.settings.target_speed_mps))
    assert (terminated, truncated, info["episode_end"]) == (True, False, "goal")
    assert info["goal_reached"] and info["route_progress_m"] >= 40.0
    assert info["reward_components"]["progress"] >= env.settings.reward.goal_bonus


def test_lane_follower_stays_on_road_until_step_limit():
    env = DrivingEnv({"traffic": "none", "route_length_m": 5000.0, "max_episode_steps": 400})
    step, _, terminated, truncated, info = _run(
        env, lambda o: _lane_follower(o, env.settings.target_speed_mps))
    assert (step, terminated, truncated, info["episode_end"]) == (400, False, True, "step_limit")
    assert info["route_progress_m"] > 250.0  # more than a lap-quarter at ~8 m/s


@pytest.mark.parametrize("tolerance", [0, 3])
def test_off_road_terminates_after_tolerance(tolerance):
    env = DrivingEnv({"traffic": "none", "off_road_tolerance_steps": tolerance,
                      "initial_speed_fraction": 1.0})
    env.reset(seed=0)
    off_steps = 0
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step([1.0, 0.0])  # hard right
        off_steps += info["off_road"]
        if info["off_road"]:
            assert info["reward_components"]["safety"] < 0
        if terminated:
            break
    assert info["episode_end"] == "off_road" and not truncated
    assert off_steps == tolerance + 1


def test_collision_terminates():
    env = DrivingEnv({"traffic": "none", "initial_speed_fraction": 1.0})
    obs, _ = env.reset(seed=0)
    backend = env.backend
    # A stopped car 15 m ahead in the ego's lane (highway-env's own vehicle and
    # collision check; only its placement is ours).
    s_ahead = backend._s0 + 15.0
    xy, heading = backend.line.pose_at(np.array(s_ahead))
    backend.road.vehicles.append(_Npc(backend.road, xy.copy(), float(heading), 0.0, target_speed=0.0))
    for _ in range(50):
        steer = _lane_follower(obs, 0.0)[0]
        obs, reward, terminated, truncated, info = env.step([steer, 1.0])
        if terminated:
            break
    assert info["episode_end"] == "collision" and info["collision"] and not truncated
    assert info["reward_components"]["safety"] <= -env.settings.reward.collision_penalty


def test_step_limit_truncates():
    env = DrivingEnv({"traffic": "light", "max_episode_steps": 5})
    step, _, terminated, truncated, info = _run(env, lambda o: np.zeros(2))
    assert (step, terminated, truncated, info["episode_end"]) == (5, False, True, "step_limit")


def test_simulator_failure_truncates_and_next_reset_recovers(monkeypatch):
    env = DrivingEnv({"traffic": "light"})
    obs0, _ = env.reset(seed=0)
    real_step = env.backend.step

    def failing_step(steer, throttle_brake):
        raise SimulatorFailure("tick timed out")

    monkeypatch.setattr(env.backend, "step", failing_step)
    obs, reward, terminated, truncated, info = env.step([0.0, 0.5])
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["sim_failure"] and info["episode_end"] == "sim_failure"
    assert obs in env.observation_space
    monkeypatch.setattr(env.backend, "step", real_step)
    env.reset(seed=1)
    _, _, _, _, info = env.step([0.0, 0.5])
    assert not info["sim_failure"]


def test_non_finite_snapshot_is_a_simulator_failure(monkeypatch):
    env = DrivingEnv({"traffic": "none"})
    env.reset(seed=0)
    real_step = env.backend.step

    def nan_step(steer, throttle_brake):
        snap = real_step(steer, throttle_brake)
        snap.speed = float("nan")
        return snap

    monkeypatch.setattr(env.backend, "step", nan_step)
    _, reward, terminated, truncated, info = env.step([0.0, 0.5])
    assert (reward, terminated, truncated, info["sim_failure"]) == (0.0, False, True, True)
