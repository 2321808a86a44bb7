"""The production backend: CARLA 0.9.16 through the ``carla`` client package.

One backend = one CarlaServer (launched or attached), one synchronous world,
one Traffic Manager on this runner's own port, one ego vehicle with a front
camera, a collision and a lane-invasion sensor, and NPC traffic. Every actor
it spawns is destroyed on reset and close, sensors stopped first.

A tick (or camera frame) that does not arrive in time raises SimulatorFailure;
the next reset then relaunches the server. CARLA keeps one Traffic Manager per
process and port, and every ``world.tick()`` in the process ticks all of them:
the backend shuts its Traffic Manager down before the server goes (a TM left
bound to a dead server aborts the process) and takes a fresh port after a
relaunch. An attached (shared) server is handed back asynchronous whenever it
still answers.

Collision and lane-invasion events arrive on their own streams, possibly after
the camera frame: each is counted in the step whose ticks produced its frame.

CARLA's world frame is left-handed (y right, yaw clockwise). Everything in a
Snapshot except ``position`` is computed in the right-handed frame the
contract uses (y left, yaw counter-clockwise): y -> -y, yaw -> -yaw.
``position`` is CARLA's own world (x, y), to compare with CARLA's maps.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import List, Optional, Tuple

import numpy as np

from rllib_av.config_schema import ConfigError
from rllib_av.envs.backend import DrivingBackend, SimulatorFailure, Snapshot
from rllib_av.envs.carla_server import CarlaServer, answers
from rllib_av.envs.carla_settings import TRAFFIC_VEHICLES
from rllib_av.envs.env_settings import EnvSettings

log = logging.getLogger(__name__)

FRAME_SIZE = 84
# Heading against the lane beyond this angle counts as wrong-way driving.
WRONG_WAY_COS = math.cos(math.radians(120))
# Route segments searched ahead of the last matched one.
SEARCH_AHEAD = 20
# Ticks after spawning so sensors attach and the first frame renders.
WARMUP_TICKS = 2
# Pauses between get_world attempts while a server boots (it accepts
# connections before its game loop answers); the last one repeats.
CONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
COLLISION, OFF_ROAD = "collision", "off_road"


def _carla():
    """The ``carla`` module; tests substitute an in-process fake via sys.modules."""
    import carla

    return carla


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _map_name(name: str) -> str:
    """"Carla/Maps/Town01", "/Game/Carla/Maps/Town01" and "Town01" are one map."""
    return name.rstrip("/").rsplit("/", 1)[-1]


class CarlaBackend(DrivingBackend):
    def __init__(self, env: EnvSettings, runner_index: int = 0,
                 server: Optional[CarlaServer] = None):
        self.env = env
        self.cfg = env.carla
        ticks = env.step_dt_s / self.cfg.fixed_delta_seconds
        self.ticks_per_step = round(ticks)
        if self.ticks_per_step < 1 or abs(ticks - self.ticks_per_step) > 1e-6:
            raise ConfigError(
                f"env.step_dt_s: {env.step_dt_s} is not allowed; expected a whole multiple "
                f"of env.carla.fixed_delta_seconds ({self.cfg.fixed_delta_seconds})")
        self.dt = self.ticks_per_step * self.cfg.fixed_delta_seconds
        self.server = server if server is not None else CarlaServer(self.cfg, runner_index)
        self._rng = np.random.default_rng()
        self._client = self._world = self._map = self._tm = None
        self._failed = False
        self._ego = None
        self._sensors: List = []
        self._npc_ids: List[int] = []
        self._frames: queue.Queue = queue.Queue()
        # (frame, COLLISION | OFF_ROAD) as the sensor threads deliver them.
        self._events: List[Tuple[int, str]] = []
        self._events_lock = threading.Lock()
        self._episode_start = 0  # events up to this frame belong to no step (spawn, warm-up)
        self._counted_through = 0  # the last frame a step has reported events for
        self._speed = 0.0

    @property
    def server_restarts(self) -> int:
        return self.server.restarts

    # ---- DrivingBackend ----------------------------------------------------------

    def reset(self, seed: Optional[int] = None) -> Snapshot:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        for attempt in (1, 2):
            try:
                if self._failed:
                    self._recover()
                if self._client is None:
                    self._connect()
                if seed is not None:  # the same seed, the same traffic decisions
                    self._tm.set_random_device_seed(seed)
                self._destroy_actors()
                self._spawn_episode()
                for _ in range(WARMUP_TICKS):
                    frame, image = self._tick_and_frame()
                self._episode_start = self._counted_through = frame
                return self._snapshot(image)
            except RuntimeError as e:  # carla raises RuntimeError for time-outs and lost servers
                self._failed = True
                log.warning("CARLA reset failed (attempt %d/2): %s", attempt, e)
                if attempt == 2:
                    raise SimulatorFailure(f"CARLA reset failed twice: {e}") from e

    def step(self, steer: float, throttle_brake: float) -> Snapshot:
        if self._failed or self._ego is None:
            raise SimulatorFailure("CARLA backend needs a reset after a failure")
        carla = _carla()
        try:
            # Speed cap: no throttle at or above env.max_speed_mps.
            throttle = 0.0 if self._speed >= self.env.max_speed_mps else max(float(throttle_brake), 0.0)
            self._ego.apply_control(carla.VehicleControl(
                throttle=throttle, steer=float(np.clip(steer, -1, 1)),
                brake=max(-float(throttle_brake), 0.0)))
            for _ in range(self.ticks_per_step):
                frame, image = self._tick_and_frame()
            arrived = time.monotonic()
            snap = self._snapshot(image)
            snap.collision, crossed_off_road = self._take_events(frame, arrived)
            snap.off_road = snap.off_road or crossed_off_road
            return snap
        except RuntimeError as e:
            self._failed = True
            if isinstance(e, SimulatorFailure):
                raise
            raise SimulatorFailure(f"CARLA step failed: {e}") from e

    def close(self) -> None:
        try:
            # A failed launched server is killed anyway; a shared one is cleaned
            # up and handed back asynchronous whenever it still answers.
            if self._client is not None and (not self._failed or self._shared_server_answers()):
                self._destroy_actors()
                if not self.server.launched:
                    self._release_world()
        except RuntimeError as e:
            log.warning("CARLA clean-up failed: %s", e)
        finally:
            self._release_traffic_manager()
            self._forget_actors()
            self._client = self._world = self._map = None
            self.server.close()

    # ---- connection --------------------------------------------------------------

    def _connect(self) -> None:
        carla = _carla()
        self.server.ensure_running()
        client = carla.Client(self.server.host, self.server.port)
        world = self._first_world(client)
        if _map_name(world.get_map().name) != _map_name(self.cfg.map):
            client.set_timeout(self.cfg.map_load_timeout_s)
            world = client.load_world(self.cfg.map)
        client.set_timeout(self.cfg.rpc_timeout_s)
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.cfg.fixed_delta_seconds
        settings.no_rendering_mode = False  # a shared server may have it on: no camera then
        world.apply_settings(settings)
        tm = client.get_trafficmanager(self.server.tm_port)
        self._tm = tm  # from here on, this process owns a TM on that port
        tm.set_synchronous_mode(True)
        self._client, self._world, self._map = client, world, world.get_map()
        self._blueprints = world.get_blueprint_library()
        self._spawn_points = self._map.get_spawn_points()

    def _first_world(self, client):
        """``get_world`` retried with backoff: a server accepts connections before
        its game loop answers, and a fresh one may still be loading its map."""
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        delays = iter(CONNECT_BACKOFF_S)
        while True:
            client.set_timeout(max(min(self.cfg.rpc_timeout_s, deadline - time.monotonic()), 0.5))
            try:
                return client.get_world()
            except RuntimeError as e:
                delay = next(delays, CONNECT_BACKOFF_S[-1])
                if time.monotonic() + delay > deadline:
                    raise RuntimeError(
                        f"CARLA at {self.server.host}:{self.server.port} accepts connections but "
                        f"its world did not answer within {self.cfg.startup_timeout_s:g} s: {e}"
                    ) from e
                log.info("CARLA world not ready yet (%s); retrying in %g s", e, delay)
                time.sleep(delay)

    def _recover(self) -> None:
        """After a failure: a launched server is replaced (its actors die with it);
        an attached one gets a best-effort clean-up and is waited for."""
        if self._client is not None and self._shared_server_answers():
            try:
                self._destroy_actors()
            except RuntimeError as e:
                log.warning("could not destroy actors on the failed CARLA server: %s", e)
        self._release_traffic_manager()
        self._forget_actors()
        self._client = self._world = self._map = None
        self.server.restart()
        self._failed = False

    def _shared_server_answers(self) -> bool:
        return not self.server.launched and answers(self.server.host, self.server.port)

    def _release_world(self) -> None:
        """Leave a shared (attached) server asynchronous, so it does not wait for us."""
        settings = self._world.get_settings()
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = None
        self._world.apply_settings(settings)
        if self._tm is not None:
            self._tm.set_synchronous_mode(False)

    def _release_traffic_manager(self) -> None:
        """Remove this process's TM from CARLA's per-process registry before its
        server goes: every later tick would tick it too."""
        tm, self._tm = self._tm, None
        if tm is not None:
            try:
                tm.shut_down()
            except RuntimeError as e:
                log.warning("CARLA Traffic Manager shut-down failed: %s", e)

    # ---- actors --------------------------------------------------------------------

    def _spawn_episode(self) -> None:
        carla = _carla()
        order = self._rng.permutation(len(self._spawn_points))
        ego_bp = self._blueprints.find(self.cfg.ego_blueprint)
        ego_bp.set_attribute("role_name", "hero")
        for k, i in enumerate(order):
            self._ego = self._world.try_spawn_actor(ego_bp, self._spawn_points[i])
            if self._ego is not None:
                break
        if self._ego is None:
            raise RuntimeError("no free spawn point for the ego vehicle")
        start = self._spawn_points[order[k]]
        self._plan_route(start)

        self._frames = queue.Queue()
        with self._events_lock:
            self._events = []
        camera_bp = self._blueprints.find("sensor.camera.rgb")
        for name, value in (("image_size_x", FRAME_SIZE), ("image_size_y", FRAME_SIZE),
                            ("fov", self.cfg.camera_fov), ("exposure_mode", "manual")):
            camera_bp.set_attribute(name, str(value))
        mount = carla.Transform(carla.Location(x=self.cfg.camera_x, z=self.cfg.camera_z),
                                carla.Rotation(pitch=self.cfg.camera_pitch))
        for blueprint, transform, callback in (
                (camera_bp, mount, self._frames.put),
                (self._blueprints.find("sensor.other.collision"), carla.Transform(),
                 self._on_collision),
                (self._blueprints.find("sensor.other.lane_invasion"), carla.Transform(),
                 self._on_lane_invasion)):
            sensor = self._world.spawn_actor(blueprint, transform, attach_to=self._ego)
            self._sensors.append(sensor)
            sensor.listen(callback)

        if self.env.initial_speed_fraction > 0:
            v = self.env.initial_speed_fraction * self.env.target_speed_mps
            yaw = math.radians(start.rotation.yaw)
            self._ego.set_target_velocity(carla.Vector3D(v * math.cos(yaw), v * math.sin(yaw), 0.0))
        self._spawn_traffic([self._spawn_points[i] for i in order[k + 1:]])
    def _spawn_traffic(self, points) -> None:
        carla = _carla()
        n = min(TRAFFIC_VEHICLES[self.env.traffic], len(points))
        if n == 0:
            return
        cars = [bp for bp in self._blueprints.filter("vehicle.*")
                if not bp.has_attribute("base_type") or bp.get_attribute("base_type").as_str() == "car"]
        batch = []
        for point in points[:n]:
            bp = cars[self._rng.integers(len(cars))]
            bp.set_attribute("role_name", "autopilot")
            batch.append(carla.command.SpawnActor(bp, point).then(
                carla.command.SetAutopilot(carla.command.FutureActor, True, self.server.tm_port)))
        for response in self._client.apply_batch_sync(batch, False):
            if response.has_error():
                log.debug("NPC spawn failed: %s", response.error)
            else:
                self._npc_ids.append(response.actor_id)

    def _destroy_actors(self) -> None:
        carla = _carla()
        for sensor in self._sensors:
            if sensor.is_listening():
                sensor.stop()
        ids = [s.id for s in self._sensors] + ([self._ego.id] if self._ego else []) + self._npc_ids
        if ids:
            responses = self._client.apply_batch_sync(
                [carla.command.DestroyActor(i) for i in ids], False)
            errors = [r.error for r in responses if r.has_error()]
            if errors:
                log.warning("%d of %d CARLA actors were not destroyed: %s",
                            len(errors), len(ids), errors[0])
        self._forget_actors()

    def _forget_actors(self) -> None:
        self._sensors, self._ego, self._npc_ids = [], None, []

    # ---- sensors -------------------------------------------------------------------

    def _on_collision(self, event) -> None:
        with self._events_lock:
            self._events.append((event.frame, COLLISION))

    def _on_lane_invasion(self, event) -> None:
        # Crossing a curb or grass edge means the wheels left the road.
        edges = (_carla().LaneMarkingType.Curb, _carla().LaneMarkingType.Grass)
        if any(m.type in edges for m in event.crossed_lane_markings):
            with self._events_lock:
                self._events.append((event.frame, OFF_ROAD))

    def _take_events(self, through: int, arrived: float) -> Tuple[bool, bool]:
        """(collided, crossed off road) in the frames since the last step, up to
        ``through``. Events trail the camera frame on their own streams: wait
        up to ``event_grace_s`` after it arrived. One of an earlier step that
        arrives later still is counted now, never dropped; warm-up ones are."""
        wait = arrived + self.cfg.event_grace_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with self._events_lock:
            due = [e for e in self._events if e[0] <= through]
            self._events = [e for e in self._events if e[0] > through]
        kinds = set()
        for frame, kind in due:
            if frame <= self._episode_start:
                continue
            if frame <= self._counted_through:
                log.warning("CARLA %s event of frame %d arrived after its step (frame %d); "
                            "counted one step late (raise env.carla.event_grace_s)",
                            kind, frame, self._counted_through)
            kinds.add(kind)
        self._counted_through = through
        return COLLISION in kinds, OFF_ROAD in kinds

    def _tick_and_frame(self) -> Tuple[int, object]:
        """One world tick and the camera image rendered in it. The tick's request
        waits up to rpc_timeout_s; its frame and image share tick_timeout_s."""
        deadline = time.monotonic() + self.cfg.tick_timeout_s
        try:
            frame = self._world.tick(self.cfg.tick_timeout_s)
        except RuntimeError as e:
            raise SimulatorFailure(f"CARLA tick timed out or failed: {e}") from e
        while True:
            try:
                image = self._frames.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise SimulatorFailure(f"no camera frame {frame} within "
                                       f"{self.cfg.tick_timeout_s:g} s") from None
            if image.frame >= frame:
                return frame, image

    # ---- route and snapshot ----------------------------------------------------------

    def _plan_route(self, start) -> None:
        """Waypoints every env.waypoint_spacing_m from the spawn point, taking a
        random branch at junctions, until env.route_length_m."""
        spacing = self.env.waypoint_spacing_m
        waypoint = self._map.get_waypoint(start.location)
        route = [waypoint]
        for _ in range(math.ceil(self.env.route_length_m / spacing)):
            branches = waypoint.next(spacing)
            if not branches:
                break
            waypoint = branches[self._rng.integers(len(branches))]
            route.append(waypoint)
        xy = np.array([(w.transform.location.x, -w.transform.location.y) for w in route])
        if len(xy) < 2:
            raise RuntimeError(f"no route from spawn point {start.location}")
        seg = np.diff(xy, axis=0)
        self._route = xy
        self._seg_len = np.maximum(np.hypot(seg[:, 0], seg[:, 1]), 1e-6)
        self._seg_dir = seg / self._seg_len[:, None]
        self._route_s = np.concatenate([[0.0], np.cumsum(self._seg_len)])
        self._segment = 0
        self._progress = 0.0

    def _snapshot(self, image) -> Snapshot:
        """The ego's state after the tick that rendered ``image``; the caller
        fills in the step's collision and curb crossings."""
        carla = _carla()
        transform = self._ego.get_transform()
        location, velocity = transform.location, self._ego.get_velocity()
        pos = np.array([location.x, -location.y])
        yaw = -math.radians(transform.rotation.yaw)
        self._speed = speed = velocity.x * math.cos(yaw) - velocity.y * math.sin(yaw)

        # Nearest route segment at or ahead of the last one matched.
        lo, hi = self._segment, min(self._segment + SEARCH_AHEAD, len(self._seg_len))
        rel = pos - self._route[lo:hi]
        along = np.clip(np.einsum("ij,ij->i", rel, self._seg_dir[lo:hi]), 0, self._seg_len[lo:hi])
        closest = self._route[lo:hi] + along[:, None] * self._seg_dir[lo:hi]
        j = int(np.argmin(np.hypot(*(pos - closest).T)))
        i = lo + j
        self._segment = i
        direction = self._seg_dir[i]
        offset = pos - self._route[i]
        lateral = float(direction[0] * offset[1] - direction[1] * offset[0])
        heading_error = float(_wrap(yaw - math.atan2(direction[1], direction[0])))
        self._progress = max(self._progress, float(self._route_s[i] + along[j]))
        passed = int(np.searchsorted(self._route_s, self._progress, side="right")) - 1

        ahead = self._route[i + 1:i + 1 + self.env.num_waypoints]
        ahead = np.concatenate([ahead, np.repeat(ahead[-1:], self.env.num_waypoints - len(ahead), 0)])
        d = ahead - pos
        c, s = math.cos(yaw), math.sin(yaw)
        waypoints_ego = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], 1)

        on_lane = self._map.get_waypoint(location, project_to_road=False,
                                         lane_type=carla.LaneType.Driving)
        lane = self._map.get_waypoint(location)
        lane_yaw = -math.radians(lane.transform.rotation.yaw)
        wrong_way = not lane.is_junction and math.cos(yaw - lane_yaw) < WRONG_WAY_COS

        return Snapshot(
            frame=self._gray(image),
            speed=float(speed),
            lateral_deviation=lateral,
            heading_error=heading_error,
            waypoints_ego=waypoints_ego.astype(np.float32),
            route_progress=self._progress,
            route_length=float(self._route_s[-1]),
            waypoints_passed=passed,
            collision=False,
            off_road=on_lane is None,
            wrong_way=bool(wrong_way),
            goal_reached=bool(np.hypot(*(pos - self._route[-1])) < self.cfg.goal_radius_m),
            position=(float(location.x), float(location.y)),
        )

    @staticmethod
    def _gray(image) -> np.ndarray:
        """CARLA's BGRA bytes -> 84x84 uint8 luminance (ITU-R 601 weights)."""
        bgra = np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)
        gray = bgra[..., :3].astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32)
        return np.clip(gray + 0.5, 0, 255).astype(np.uint8)
