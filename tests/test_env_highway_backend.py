"""The embedded highway-env backend: traffic, determinism, camera, circuit."""

import numpy as np
import pytest

from rllib_av.envs import DrivingEnv
from rllib_av.envs.env_settings import EnvSettings, HighwaySettings
from rllib_av.envs.highway_backend import TRAFFIC_NPCS, HighwayBackend
from rllib_av.envs.highway_track import GRASS, ROAD, centreline, road_network
from rllib_av.envs.topdown_camera import EGO, NPC
from rllib_av.evaluation.baselines import PurePursuitPID


@pytest.mark.parametrize("traffic", ["none", "light", "medium", "heavy"])
def test_traffic_levels_spawn_their_npc_counts_clear_of_the_ego(traffic):
    backend = HighwayBackend(EnvSettings(traffic=traffic))
    backend.reset(seed=7)
    npcs = backend.npcs
    assert len(npcs) == TRAFFIC_NPCS[traffic]
    for v in npcs:
        assert np.linalg.norm(v.position - backend.ego.position) >= 20.0
    # NPCs drive (IDM) and none has crashed right away.
    for _ in range(20):
        backend.step(0.0, 0.0)
    assert not any(v.crashed for v in npcs)
    assert all(v.speed > 0 for v in npcs)


def test_traffic_counts_are_increasing():
    counts = [TRAFFIC_NPCS[k] for k in ("none", "light", "medium", "heavy")]
    assert counts[0] == 0 and counts == sorted(counts) and len(set(counts)) == 4


def _rollout(seed, steps=60):
    env = DrivingEnv({"traffic": "medium"})
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    frames, rewards = [obs["image"]], []
    for _ in range(steps):
        obs, r, terminated, truncated, _ = env.step(rng.uniform(-0.3, 1, 2))
        frames.append(obs["image"])
        rewards.append(r)
        if terminated or truncated:
            break
    return np.stack(frames), np.array(rewards), obs["state"]


def test_same_seed_same_episode_other_seed_other_episode():
    f1, r1, s1 = _rollout(seed=11)
    f2, r2, s2 = _rollout(seed=11)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    f3, _, _ = _rollout(seed=12)
    assert not np.array_equal(f1[0], f3[0])


def test_camera_shows_road_under_ego_and_the_car_ahead():
    backend = HighwayBackend(EnvSettings(traffic="none"))
    snap = backend.reset(seed=0)
    frame = snap.frame
    assert frame.shape == (84, 84) and frame.dtype == np.uint8
    row, col = int(backend.camera.ego_rc[0]), int(backend.camera.ego_rc[1])
    assert frame[row, col] == EGO
    assert frame[row - 20, col] == ROAD  # the lane 10 m ahead
    assert GRASS in frame  # the view is wider than the road
    assert NPC not in frame
    # Put a car 12 m ahead: it appears in the upper half of the image.
    from rllib_av.envs.highway_backend import _Npc

    xy, heading = backend.line.pose_at(np.array(backend._s0 + 12.0))
    backend.road.vehicles.append(_Npc(backend.road, xy.copy(), float(heading), 0.0))
    frame = backend.step(0.0, 0.0).frame
    rows, _ = np.nonzero(frame == NPC)
    assert rows.size > 10 and rows.max() < row


def test_circuit_lanes_match_the_route_centreline():
    """highway-env's lanes (which NPCs follow) and our route geometry agree."""
    line = centreline()
    net = road_network(lanes=2, lane_width=4.0, speed_limit=15.0)
    for lane in net.lanes_list():
        for s in np.linspace(0, lane.length, 7):
            xy = lane.position(s, 0.0)
            _, _, lateral = line.project(xy, line.nearest_index(xy))
            assert min(abs(lateral), abs(lateral - 4.0)) < 0.05
    # The lap closes on itself.
    assert np.linalg.norm(line.xy[-1] + (line.xy[1] - line.xy[0]) - line.xy[0]) < 0.5


def test_route_progress_is_monotone_and_waypoints_count_with_it():
    settings = EnvSettings(traffic="none", initial_speed_fraction=1.0, waypoint_spacing_m=2.0,
                           highway=HighwaySettings(lanes=1))
    backend = HighwayBackend(settings)
    snap = backend.reset(seed=3)
    progress = [snap.route_progress]
    for steer in [0.0] * 10 + [1.0] * 20:
        snap = backend.step(steer, -0.2)
        progress.append(snap.route_progress)
    assert np.all(np.diff(progress) >= 0) and progress[-1] > 5.0
    assert snap.waypoints_passed == int(progress[-1] // 2.0)


def test_waypoints_slide_with_the_car_without_jumps():
    """The route points ahead are measured from the car's place on the route:
    the first is always one spacing ahead, and the list changes little from a
    step to the next (points anchored to fixed marks jumped a whole spacing
    whenever the car passed a mark)."""
    settings = EnvSettings(traffic="none", initial_speed_fraction=1.0, waypoint_spacing_m=2.0,
                           route_length_m=200.0)
    backend = HighwayBackend(settings)
    driver = PurePursuitPID.for_env(settings)  # keeps the car on the route
    snap = backend.reset(seed=4)
    for _ in range(30):
        before = snap.waypoints_ego.copy()
        snap = backend.step(driver.steer(before, snap.speed), 0.0)
        assert np.hypot(*snap.waypoints_ego[0]) == pytest.approx(2.0, abs=0.25)
        assert np.abs(snap.waypoints_ego - before).max() < 1.0


def test_waypoints_run_on_past_the_goal():
    """Near the goal the points keep their spacing along the road (bunched up
    on the goal, they read like a stop line)."""
    settings = EnvSettings(traffic="none", initial_speed_fraction=1.0, waypoint_spacing_m=2.0,
                           route_length_m=12.0, num_waypoints=5)
    backend = HighwayBackend(settings)
    driver = PurePursuitPID.for_env(settings)
    snap = backend.reset(seed=4)
    while snap.route_progress < 10.0:
        snap = backend.step(driver.steer(snap.waypoints_ego, snap.speed), 0.0)
    gaps = np.linalg.norm(np.diff(snap.waypoints_ego, axis=0), axis=1)
    assert gaps == pytest.approx(np.full(4, 2.0), abs=0.1)


@pytest.mark.parametrize("lanes", [1, 2])
def test_npcs_queue_behind_a_stopped_ego_without_crashing(lanes):
    """IDM must see leaders across segment joins and around the bends (a
    180-degree lane or a per-segment gap made NPCs rear-end each other)."""
    backend = HighwayBackend(EnvSettings(traffic="medium", highway=HighwaySettings(lanes=lanes)))
    backend.reset(seed=0)
    for _ in range(300):
        backend.step(0.0, -1.0)
    assert not backend.ego.crashed
    assert not any(v.crashed for v in backend.npcs)
    if lanes == 1:  # nowhere to overtake: the queue behind the ego has stopped
        assert min(v.speed for v in backend.npcs) < 0.5
