"""The embedded backend: highway-env vehicles on the ``highway_track`` circuit.

highway-env supplies the physics (kinematic bicycle ego, IDM/MOBIL traffic with
lane changes, polygon collisions); this module adds the route (lane 0's
centre-line from a random spawn point), the numbers a ``Snapshot`` carries, and
the 84x84 camera (``topdown_camera``). One ``step`` is one ``road.step(dt)``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from highway_env.road.road import Road
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle

from rllib_av.envs import highway_track
from rllib_av.envs.backend import DrivingBackend, SimulatorFailure, Snapshot
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.envs.topdown_camera import EGO, NPC, TopDownCamera

#: NPC vehicles on the circuit (about 650 lane-metres with two lanes).
TRAFFIC_NPCS = {"none": 0, "light": 4, "medium": 10, "heavy": 20}
MAX_STEER_RAD = 0.35  # front wheel angle at steer = +-1 (turn radius ~ 15 m)
MAX_ACCEL_MPS2 = 4.0  # at throttle_brake = +1
MAX_BRAKE_MPS2 = 8.0  # at throttle_brake = -1
IMAGE_SIZE = 84
_SLOT_M = 12.0  # NPC spawn slots along each lane
_EGO_CLEARANCE_M = 25.0  # NPC to ego at spawn
_VIDEO_SIZE, _VIDEO_M_PER_PX = 256, 0.25


class _TrackRoad(Road):
    """A Road that knows it is one loop: every vehicle's place on the circuit
    (arc length, lateral offset) is computed once per step for all vehicles
    with numpy, and lane lookups and leader/follower searches read it.

    highway-env instead scans every lane of the network for every vehicle on
    every step and projects every vehicle onto a lane per neighbour query;
    that was 80% of a step with traffic. Here a leader is also seen across
    segment joins and around the lap, which highway-env's search misses.
    """

    def __init__(self, network, np_random, line, lanes: int, lane_width: float):
        super().__init__(network=network, np_random=np_random)
        self.line, self.lanes, self.lane_width = line, lanes, lane_width
        self._seg_starts = highway_track.segment_starts()
        n = len(self._seg_starts)
        self._edges = [(f"n{i}", f"n{(i + 1) % n}") for i in range(n)]
        self._s = self._lateral = None
        self._row = {}

    def locate(self) -> None:
        """Project every vehicle on the circuit and refresh its lane."""
        xy = np.array([v.position for v in self.vehicles])
        self._s, self._lateral = self.line.project_all(xy)
        self._row = {id(v): i for i, v in enumerate(self.vehicles)}
        seg = np.searchsorted(self._seg_starts, self._s, side="right") - 1
        lane = np.clip(np.rint(self._lateral / self.lane_width), 0, self.lanes - 1).astype(int)
        for v, g, k in zip(self.vehicles, seg, lane):
            v.lane_index = (*self._edges[g], int(k))
            v.lane = self.network.get_lane(v.lane_index)

    def step(self, dt: float) -> None:
        super().step(dt)
        self.locate()

    def gap_along_circuit(self, vehicle, other):
        a, b = self._row.get(id(vehicle)), self._row.get(id(other))
        if a is None or b is None:
            return None
        lap = self.line.lap_length
        return float((self._s[b] - self._s[a] + lap / 2) % lap - lap / 2)

    def neighbour_vehicles(self, vehicle, lane_index=None):
        lane_index = lane_index or vehicle.lane_index
        row = self._row.get(id(vehicle))
        if row is None or not lane_index:
            return super().neighbour_vehicles(vehicle, lane_index)
        # Same membership test as highway-env's lane.on_lane(margin=1).
        on_lane = np.abs(self._lateral - lane_index[2] * self.lane_width) <= self.lane_width / 2 + 1
        on_lane[row] = False
        lap = self.line.lap_length
        ahead_m = (self._s - self._s[row]) % lap
        front = np.flatnonzero(on_lane & (ahead_m < lap / 2))
        rear = np.flatnonzero(on_lane & (ahead_m >= lap / 2))
        return (self.vehicles[front[np.argmin(ahead_m[front])]] if front.size else None,
                self.vehicles[rear[np.argmax(ahead_m[rear])]] if rear.size else None)


class _RoadLocatesLanes:
    def on_state_update(self) -> None:
        """Lanes are refreshed for all vehicles at once by ``_TrackRoad.locate``."""

    def lane_distance_to(self, other, lane=None) -> float:
        """Signed gap along the circuit (IDM's spacing): highway-env measures it
        along this vehicle's lane segment, wrong once the other car is on the
        next segment of a bend."""
        gap = self.road.gap_along_circuit(self, other)
        return super().lane_distance_to(other, lane) if gap is None else gap


class _Npc(_RoadLocatesLanes, IDMVehicle):
    pass


class _Ego(_RoadLocatesLanes, Vehicle):
    pass


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


class HighwayBackend(DrivingBackend):
    def __init__(self, settings: EnvSettings):
        self.settings = settings
        hw = settings.highway
        self.dt = settings.step_dt_s
        self.line = highway_track.centreline()
        self.network = highway_track.road_network(hw.lanes, hw.lane_width_m,
                                                  speed_limit=settings.max_speed_mps)
        road_map = highway_track.road_map(hw.lanes, hw.lane_width_m)
        self.camera = TopDownCamera(road_map, IMAGE_SIZE, hw.view_m_per_px)
        self._video_camera = TopDownCamera(road_map, _VIDEO_SIZE, _VIDEO_M_PER_PX, 0.5)
        self._rng = np.random.default_rng()
        self.road: Optional[_TrackRoad] = None
        self.ego: Optional[_Ego] = None
        self.server_restarts = 0  # worlds rebuilt after a failure (sim_server_restarts_total)
        self._failed = False

    # -- DrivingBackend -------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> Snapshot:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self._failed:  # the world is rebuilt below, like a relaunched server
            self.server_restarts += 1
            self._failed = False
        s, hw = self.settings, self.settings.highway
        self.road = _TrackRoad(self.network, np.random.default_rng(self._rng.integers(2**63)),
                               self.line, hw.lanes, hw.lane_width_m)
        self._s0 = float(self._rng.uniform(0, self.line.lap_length))
        xy, heading = self.line.pose_at(np.array(self._s0))
        self.ego = _Ego(self.road, xy.copy(), float(heading),
                        s.initial_speed_fraction * s.target_speed_mps)
        self.road.vehicles.append(self.ego)
        self._spawn_npcs(TRAFFIC_NPCS[s.traffic])
        self.road.locate()
        self._index = self.line.nearest_index(self.ego.position)
        self._s_lap = self._s0
        self._s_unwrapped = self._s0
        self._progress = 0.0
        return self._snapshot()

    def step(self, steer: float, throttle_brake: float) -> Snapshot:
        if self.road is None:
            raise SimulatorFailure("step before reset")
        tb = float(throttle_brake)
        # Air and rolling resistance: full throttle holds max_speed_mps, less
        # throttle a lower cruising speed (max_speed_mps * sqrt(throttle)), and
        # a coasting car slows down. Without it throttle beyond what holds the
        # speed cap would change nothing (the cap clips it), and a critic that
        # never sees lifting off pay at top speed would keep the pedal floored.
        drag = MAX_ACCEL_MPS2 * (self.ego.speed / self.settings.max_speed_mps) ** 2
        accel = tb * (MAX_ACCEL_MPS2 if tb >= 0 else MAX_BRAKE_MPS2) - drag
        # steer > 0 turns right (CARLA's convention); highway-env's heading is CCW.
        self.ego.act({"steering": -float(steer) * MAX_STEER_RAD, "acceleration": accel})
        self.road.act()
        self.road.step(self.dt)
        # No reverse gear: braking stops the car.
        self.ego.speed = float(np.clip(self.ego.speed, 0.0, self.settings.max_speed_mps))
        if not (np.all(np.isfinite(self.ego.position)) and np.isfinite(self.ego.heading)):
            self._failed = True
            raise SimulatorFailure("highway-env produced a non-finite ego state")
        return self._snapshot()

    def render_topdown(self) -> Optional[np.ndarray]:
        if self.ego is None:
            return None
        gray = self._video_camera.render(self.ego.position, self.ego.heading, self._boxes())
        rgb = np.repeat(gray[..., None], 3, axis=2)
        # Route waypoints ahead as red dots.
        cam = self._video_camera
        for fwd, left in self._waypoints_ego():
            r = int(cam.ego_rc[0] - fwd / cam.m_per_px)
            c = int(cam.ego_rc[1] - left / cam.m_per_px)
            if 1 <= r < cam.size - 1 and 1 <= c < cam.size - 1:
                rgb[r - 1:r + 2, c - 1:c + 2] = (255, 0, 0)
        return rgb

    def close(self) -> None:
        self.road = None
        self.ego = None

    # -- internals ------------------------------------------------------------
    @property
    def npcs(self) -> list:
        return [v for v in self.road.vehicles if v is not self.ego]

    def _spawn_npcs(self, count: int) -> None:
        """Drop NPCs into random free slots (one per _SLOT_M of lane) away from the ego."""
        s, hw = self.settings, self.settings.highway
        lap = self.line.lap_length
        slot_s = np.arange(0.0, lap - _SLOT_M / 2, _SLOT_M)
        ahead = (slot_s - self._s0) % lap
        free = np.minimum(ahead, lap - ahead) >= _EGO_CLEARANCE_M
        slots = [(lane, si) for lane in range(hw.lanes) for si in slot_s[free]]
        if count > len(slots):
            raise SimulatorFailure(f"the circuit has room for {len(slots)} NPCs, not {count}")
        lo, hi = hw.npc_speed_fraction
        for k in self._rng.choice(len(slots), size=count, replace=False):
            lane, si = slots[k]
            xy, heading = self.line.pose_at(np.array(si + self._rng.uniform(-1.5, 1.5)))
            xy = xy + lane * hw.lane_width_m * np.array([-np.sin(heading), np.cos(heading)])
            speed = float(self._rng.uniform(lo, hi)) * s.target_speed_mps
            self.road.vehicles.append(_Npc(self.road, xy, float(heading), speed,
                                           target_speed=speed, enable_lane_change=hw.lanes > 1))

    def _boxes(self):
        return [(v.position, v.heading, v.LENGTH, v.WIDTH, EGO if v is self.ego else NPC)
                for v in self.road.vehicles]

    def _waypoints_ego(self) -> np.ndarray:
        """The lane every ``waypoint_spacing_m`` ahead of the car's own place on
        the route. Measured from the car, not from fixed marks: a list that
        jumped a spacing each time a mark was passed would jump the policy's
        input every few steps, and a policy jerks the car with it. Not capped
        at the goal: the road goes on past it, and points bunched up on the
        goal taught agents to stop short of it."""
        s = self.settings
        ahead = self._progress + (1 + np.arange(s.num_waypoints)) * s.waypoint_spacing_m
        xy, _ = self.line.pose_at(self._s0 + ahead)
        d = xy - self.ego.position
        c, sn = np.cos(self.ego.heading), np.sin(self.ego.heading)
        return np.stack([c * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + c * d[:, 1]], -1)

    def _waypoints_passed(self) -> int:
        s = self.settings
        total = int(s.route_length_m // s.waypoint_spacing_m)
        return min(int(self._progress // s.waypoint_spacing_m), total)

    def _snapshot(self) -> Snapshot:
        s, hw = self.settings, self.settings.highway
        ego = self.ego
        self._index, s_lap, lateral = self.line.project(ego.position, self._index)
        lap = self.line.lap_length
        self._s_unwrapped += (s_lap - self._s_lap + lap / 2) % lap - lap / 2
        self._s_lap = s_lap
        self._progress = max(self._progress, self._s_unwrapped - self._s0)
        heading_error = _wrap(ego.heading - float(self.line.pose_at(np.array(s_lap))[1]))
        half = hw.lane_width_m / 2
        return Snapshot(
            frame=self.camera.render(ego.position, ego.heading, self._boxes()),
            speed=float(ego.speed),
            lateral_deviation=lateral,
            heading_error=heading_error,
            waypoints_ego=self._waypoints_ego().astype(np.float32),
            route_progress=float(self._progress),
            route_length=float(s.route_length_m),
            waypoints_passed=self._waypoints_passed(),
            collision=bool(ego.crashed),
            off_road=not (-half <= lateral <= (hw.lanes - 1) * hw.lane_width_m + half),
            wrong_way=abs(heading_error) > np.pi / 2,
            goal_reached=self._progress >= s.route_length_m,
            position=(float(ego.position[0]), float(ego.position[1])),
        )
