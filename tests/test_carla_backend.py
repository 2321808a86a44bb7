"""CarlaBackend (and DrivingEnv on it) driven through full episodes on the in-process fake."""

import math

import numpy as np
import pytest

import fake_carla
from rllib_av.config_schema import ConfigError
from rllib_av.envs import carla_backend
from rllib_av.envs.carla_backend import CarlaBackend
from rllib_av.envs.carla_settings import CarlaSettings
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.envs.env_settings import EnvSettings


@pytest.fixture
def sim(monkeypatch):
    """The fake carla module plus the supervisor every backend in the test gets."""
    fake_carla.install(monkeypatch)
    supervisor = fake_carla.FakeSupervisor()
    monkeypatch.setattr(carla_backend, "CarlaServer", lambda settings, runner_index: supervisor)
    return supervisor


def settings(**kw):
    carla = CarlaSettings(tick_timeout_s=0.2)
    return EnvSettings(**{**dict(backend="carla", traffic="none", carla=carla), **kw})


def follow(obs, throttle=0.6):
    """A lane keeper: steer (> 0 = right) against left deviation and left heading."""
    speed, lateral, heading = obs["state"][:3]
    return np.array([np.clip(0.3 * lateral + 1.5 * heading, -1, 1), throttle], np.float32)


def ego_of(sim):
    return next(a for a in sim.world.actors.values()
                if isinstance(a, fake_carla.Vehicle) and a.autopilot_port is None)


def lane_a_backend(sim, monkeypatch):
    """A reset backend whose ego and route run along +x on lane A (CARLA yaw 0)."""
    monkeypatch.setattr(fake_carla.Map, "get_spawn_points",
                        lambda self: [fake_carla.Waypoint("A", 20.0).transform])
    backend = CarlaBackend(settings())
    backend.reset(seed=0)
    return backend, ego_of(sim)


def run_episode(env, policy, seed=0, limit=2000):
    obs, _ = env.reset(seed=seed)
    for _ in range(limit):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            return terminated, truncated, info
    raise AssertionError("episode did not end")


def test_reset_builds_a_synchronous_world_with_own_traffic_manager(sim):
    backend = CarlaBackend(settings(traffic="light"))
    snap = backend.reset(seed=1)
    world = sim.world
    assert world.map.name.endswith("Town01")
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == 0.05
    assert backend.ticks_per_step == 2 and backend.dt == pytest.approx(0.1)
    assert world.traffic_managers == {sim.tm_port: True}
    vehicles = [a for a in world.actors.values() if isinstance(a, fake_carla.Vehicle)]
    npcs = [v for v in vehicles if v.autopilot_port == sim.tm_port]
    assert len(npcs) == 20 and len(vehicles) == 21
    sensors = sorted(a.type_id for a in world.actors.values() if isinstance(a, fake_carla.Sensor))
    assert sensors == ["sensor.camera.rgb", "sensor.other.collision", "sensor.other.lane_invasion"]
    # BGRA (10, 100, 200) -> 0.114*10 + 0.587*100 + 0.299*200 = 119.6
    assert snap.frame.shape == (84, 84) and snap.frame.dtype == np.uint8
    assert (snap.frame == 120).all()
    assert snap.route_length == pytest.approx(300, abs=3)
    assert snap.waypoints_ego.shape == (10, 2) and snap.waypoints_ego.dtype == np.float32
    backend.close()


def test_route_geometry_is_right_handed(sim, monkeypatch):
    backend, ego = lane_a_backend(sim, monkeypatch)
    ego.transform.location.y = 1.0  # CARLA +y is to the right of the lane
    ego.transform.rotation.yaw = 10.0  # CARLA yaw grows clockwise: nose to the right
    snap = backend.step(0.0, 0.0)
    assert snap.lateral_deviation == pytest.approx(-1.0)
    assert snap.heading_error == pytest.approx(-math.radians(10))
    x, y = snap.waypoints_ego[0]
    assert x > 0 and y > 0  # the route is ahead and to the left
    assert np.all(np.diff(snap.waypoints_ego[:, 0]) > 0)
    assert snap.position[1] == pytest.approx(1.0)  # CARLA's own world frame
    ego.speed = 2.0
    assert backend.step(0.0, 0.0).speed == pytest.approx(2.0)
    backend.close()


def test_vehicle_control_mapping(sim):
    backend = CarlaBackend(settings())
    backend.reset(seed=0)
    ego = ego_of(sim)
    backend.step(0.25, 0.7)
    assert (ego.control.steer, ego.control.throttle, ego.control.brake) == (0.25, 0.7, 0.0)
    backend.step(-0.5, -0.4)
    assert (ego.control.steer, ego.control.throttle, ego.control.brake) == (-0.5, 0.0, 0.4)
    backend.close()


def test_episode_reaches_goal(sim):
    env = DrivingEnv(settings(route_length_m=45.0))
    terminated, truncated, info = run_episode(env, follow)
    assert (terminated, truncated, info["episode_end"]) == (True, False, "goal")
    assert info["route_progress_m"] == pytest.approx(info["route_length_m"], abs=3.5)
    assert not (info["collision"] or info["off_road"] or info["wrong_way"])
    env.close()


def test_episode_ends_in_collision(sim):
    env = DrivingEnv(settings(traffic="heavy"))
    terminated, truncated, info = run_episode(env, lambda obs: follow(obs, throttle=1.0))
    assert (terminated, info["episode_end"], info["collision"]) == (True, "collision", True)
    env.close()


def test_episode_ends_off_road(sim):
    env = DrivingEnv(settings(off_road_tolerance_steps=2))
    terminated, truncated, info = run_episode(env, lambda obs: np.array([1.0, 0.8], np.float32))
    assert (terminated, info["episode_end"], info["off_road"]) == (True, "off_road", True)
    env.close()


def test_driving_on_the_opposite_lane_is_wrong_way(sim, monkeypatch):
    backend, ego = lane_a_backend(sim, monkeypatch)
    assert not backend.step(0.0, 0.0).wrong_way
    ego.transform.location.y = -3.5  # lane B drives the other way
    assert backend.step(0.0, 0.0).wrong_way
    backend.close()


def test_episode_truncates_at_step_limit(sim):
    env = DrivingEnv(settings(max_episode_steps=5))
    terminated, truncated, info = run_episode(env, lambda obs: np.array([0.0, -1.0], np.float32))
    assert (terminated, truncated, info["episode_end"]) == (False, True, "step_limit")
    env.close()


def test_tick_timeout_truncates_and_next_reset_relaunches_the_server(sim):
    env = DrivingEnv(settings(traffic="light"))
    env.reset(seed=0)
    env.step(follow(env._obs))
    hung = sim.world
    hung.hang = True  # every tick now times out after tick_timeout_s
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert (terminated, truncated, info["sim_failure"], reward) == (False, True, True, 0.0)
    assert sim.restarts == 0  # relaunch happens on the next reset, not inside step
    env.reset(seed=1)
    assert sim.restarts == 1 and sim.world is not hung
    assert len(sim.world.actors) == 1 + 3 + 20  # a clean world: nothing carried over
    obs, reward, terminated, truncated, info = env.step(follow(obs))
    assert not info["sim_failure"]
    env.close()


def test_reset_recovers_from_a_server_that_stopped_answering(sim):
    backend = CarlaBackend(settings())
    backend.reset(seed=0)
    sim.world.hang = True
    backend.reset(seed=1)
    assert sim.restarts == 1
    backend.step(0.0, 0.5)
    backend.close()


def test_no_actor_leaks_over_many_episodes(sim):
    backend = CarlaBackend(settings(traffic="medium"))
    for episode in range(300):
        backend.reset(seed=episode)
        world = sim.world
        npcs = sum(1 for a in world.actors.values()
                   if isinstance(a, fake_carla.Vehicle) and a.autopilot_port is not None)
        assert npcs >= 45 and len(world.actors) == 1 + 3 + npcs
        for _ in range(3):
            backend.step(0.0, 1.0)
    backend.close()
    assert world.actors == {} and world.spawned == world.destroyed > 300 * 49
    assert world.destroyed_listening == 0  # sensors were stopped before destruction
    assert sim.closed and sim.restarts == 0


def test_step_dt_must_be_a_multiple_of_the_physics_step(sim):
    with pytest.raises(ConfigError, match="env.step_dt_s: 0.07 is not allowed"):
        CarlaBackend(settings(step_dt_s=0.07))
