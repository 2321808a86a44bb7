"""CarlaBackend (and DrivingEnv on it) driven through full episodes on the in-process fake."""

import math

import numpy as np
import pytest

import fake_carla
from rllib_av.config_schema import ConfigError
from rllib_av.envs import carla_backend
from rllib_av.envs.backend import SimulatorFailure
from rllib_av.envs.carla_backend import CarlaBackend
from rllib_av.envs.carla_settings import CarlaSettings
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.envs.env_settings import EnvSettings

SHARED = ("127.0.0.1", 2000)  # where FakeSupervisor's server lives


@pytest.fixture
def sim(monkeypatch):
    """The fake carla module plus the supervisor every backend in the test gets."""
    fake_carla.install(monkeypatch)
    supervisor = fake_carla.FakeSupervisor()
    monkeypatch.setattr(carla_backend, "CarlaServer", lambda settings, runner_index: supervisor)
    return supervisor


@pytest.fixture
def shared_world(sim, monkeypatch):
    """Attach mode: a server someone else runs, already up (in another map)."""
    sim.launched = False
    world = fake_carla.SERVERS[SHARED] = fake_carla.World()
    monkeypatch.setattr(carla_backend, "answers", lambda host, port: not world.hang)
    return world


def settings(carla=None, **kw):
    carla = CarlaSettings(**{"tick_timeout_s": 0.2, **(carla or {})})
    return EnvSettings(**{**dict(backend="carla", traffic="none", carla=carla), **kw})


def follow(obs, throttle=0.6):
    """A lane keeper: steer (> 0 = right) against left deviation and left heading."""
    speed, lateral, heading = obs["state"][:3]
    return np.array([np.clip(0.3 * lateral + 1.5 * heading, -1, 1), throttle], np.float32)


def ego_of(sim):
    return next(a for a in sim.world.actors.values()
                if isinstance(a, fake_carla.Vehicle) and a.autopilot_port is None)


def lane_a_backend(sim, monkeypatch, **carla):
    """A reset backend whose ego and route run along +x on lane A (CARLA yaw 0)."""
    monkeypatch.setattr(fake_carla.Map, "get_spawn_points",
                        lambda self: [fake_carla.Waypoint("A", 20.0).transform])
    backend = CarlaBackend(settings(carla))
    backend.reset(seed=0)
    return backend, ego_of(sim)


def park_car(world, x):
    """A stationary car on lane A (no autopilot, no control)."""
    return world.try_spawn_actor(fake_carla.ActorBlueprint("vehicle.audi.tt"),
                                 fake_carla.Waypoint("A", x).transform)


def gap(ego, car):
    return car.transform.location.x - ego.transform.location.x


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
    assert world.map.name.endswith("Town01") and sim.starts == 1
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == 0.05
    assert world.settings.no_rendering_mode is False
    assert backend.ticks_per_step == 2 and backend.dt == pytest.approx(0.1)
    assert world.traffic_managers == {sim.tm_port: True}
    assert fake_carla.TRAFFIC_MANAGERS[sim.tm_port].seed == 1  # seeded reset, seeded traffic
    vehicles = [a for a in world.actors.values() if isinstance(a, fake_carla.Vehicle)]
    npcs = [v for v in vehicles if v.autopilot_port == sim.tm_port]
    assert len(npcs) == 20 and len(vehicles) == 21
    sensors = {a.type_id: a for a in world.actors.values() if isinstance(a, fake_carla.Sensor)}
    assert sorted(sensors) == ["sensor.camera.rgb", "sensor.other.collision",
                               "sensor.other.lane_invasion"]
    # A fixed exposure: brightness follows the scene, not the auto-exposure's history.
    assert sensors["sensor.camera.rgb"].attributes["exposure_mode"] == "manual"
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
    old_tm_port = sim.tm_port
    env.reset(seed=1)
    assert sim.restarts == 1 and sim.world is not hung and not hung.alive
    assert len(sim.world.actors) == 1 + 3 + 20  # a clean world: nothing carried over
    # The TM made for the dead server is gone from the process (every tick
    # would tick it: an abort), and the new one listens on a fresh port.
    assert set(fake_carla.TRAFFIC_MANAGERS) == {sim.tm_port} != {old_tm_port}
    obs, reward, terminated, truncated, info = env.step(follow(obs))
    assert not info["sim_failure"]
    env.close()
    assert fake_carla.TRAFFIC_MANAGERS == {}


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


def test_a_booting_server_is_waited_for_not_relaunched(sim):
    """A fresh server accepts connections before its world answers: get_world
    is retried with backoff, not counted as a crash."""
    sim.booting = 3
    backend = CarlaBackend(settings())
    backend.reset(seed=0)
    assert sim.starts == 1 and sim.restarts == 0
    backend.close()


def test_map_load_gets_its_own_timeout(shared_world):
    shared_world.load_seconds = 60.0  # longer than any sane RPC timeout (20 s here)
    backend = CarlaBackend(settings({"rpc_timeout_s": 20.0, "map_load_timeout_s": 120.0}))
    backend.reset(seed=0)
    world = fake_carla.SERVERS[SHARED]
    assert world is not shared_world and world.map.name == "Carla/Maps/Town01"
    assert backend._client.timeout == 20.0  # back to the RPC timeout after the load
    backend.close()


def test_a_shared_server_is_handed_back_asynchronous_after_a_failure(shared_world):
    backend = CarlaBackend(settings({"map": "Town10HD_Opt"}))
    backend.reset(seed=0)
    backend.step(0.0, 0.5)
    shared_world.hang = True  # a tick times out...
    with pytest.raises(SimulatorFailure):
        backend.step(0.0, 0.5)
    shared_world.hang = False  # ...and the server answers again by the time we leave
    backend.close()
    assert shared_world.settings.synchronous_mode is False
    assert shared_world.settings.fixed_delta_seconds is None
    assert shared_world.actors == {} and fake_carla.TRAFFIC_MANAGERS == {}
    assert shared_world.alive  # someone else's server: left running


def test_a_shared_server_with_rendering_off_still_gives_camera_frames(shared_world):
    shared_world.settings.no_rendering_mode = True  # set by another client
    backend = CarlaBackend(settings({"map": "Town10HD_Opt"}))
    snap = backend.reset(seed=0)
    assert snap.frame.shape == (84, 84)
    backend.close()


LATE = {"event_grace_s": 0.2}  # covers the fake's LATE_EVENT_S with room to spare


def test_a_collision_arriving_after_the_camera_frame_counts_in_its_own_step(sim, monkeypatch):
    backend, ego = lane_a_backend(sim, monkeypatch, **LATE)
    # 0.5 m per tick, no throttle or brake: the gap first drops below
    # COLLISION_M on tick 4, the last tick of step 2, so its event arrives
    # after that step's camera frame.
    car = park_car(sim.world, 25.75)
    ego.speed = 10.0
    for _ in range(10):
        snap = backend.step(0.0, 0.0)
        if gap(ego, car) < fake_carla.COLLISION_M:  # this step's ticks collided
            break
        assert not snap.collision
    assert snap.collision
    backend.close()


def test_a_collision_on_the_last_step_ends_the_episode_as_a_collision(sim, monkeypatch):
    monkeypatch.setattr(fake_carla.Map, "get_spawn_points",
                        lambda self: [fake_carla.Waypoint("A", 20.0).transform])
    env = DrivingEnv(settings(LATE, max_episode_steps=2))
    env.reset(seed=0)
    ego = ego_of(sim)
    car = park_car(sim.world, 25.75)
    ego.speed = 10.0  # the gap drops below COLLISION_M on the last tick of step 2
    for step in (1, 2):
        obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert gap(ego, car) < fake_carla.COLLISION_M
    assert (terminated, truncated, info["episode_end"], info["collision"]) == (
        True, False, "collision", True)
    env.close()


def test_events_from_the_warm_up_ticks_are_not_the_first_steps(sim, monkeypatch):
    """A car touching the ego at spawn collides during the warm-up ticks; those
    events arrive late, after reset returned: they belong to no step."""
    monkeypatch.setattr(fake_carla.Map, "get_spawn_points",
                        lambda self: [fake_carla.Waypoint("A", 20.0).transform])
    sim.ensure_running()
    car = park_car(sim.world, 23.0)
    backend = CarlaBackend(settings(LATE))
    backend.reset(seed=0)
    sim.world.destroy(car.id)  # gone before the first step
    assert not backend.step(0.0, 0.0).collision
    backend.close()


def test_step_dt_must_be_a_multiple_of_the_physics_step(sim):
    with pytest.raises(ConfigError, match="env.step_dt_s: 0.07 is not allowed"):
        CarlaBackend(settings(step_dt_s=0.07))
