"""An in-process fake of exactly the ``carla`` 0.9.16 surface CarlaBackend uses.

``install(monkeypatch)`` puts it in ``sys.modules["carla"]``. Worlds live in
``SERVERS[(host, port)]``; ``FakeSupervisor`` stands in for CarlaServer and
boots a fresh world on (re)start, as a relaunched CARLA server would.

Where the real client is unforgiving, so is the fake:
- Traffic Managers live in a per-process registry keyed by port
  (``TRAFFIC_MANAGERS``): ``get_trafficmanager(port)`` hands back the one
  already there, whatever world it was made for, and only ``shut_down()``
  removes it. Every ``world.tick()`` ticks every TM in the process; one bound
  to a server that is gone raises ``ProcessAbort`` (the real process dies in a
  C++ abort no ``except`` catches, CARLA #4577/#6748).
- Collision and lane-invasion events arrive on their own thread, LATE_EVENT_S
  after the tick returned with its camera frame.
- A freshly booted server accepts connections before ``get_world()`` answers
  (``World.booting``); ``load_world`` fails when the client's timeout is
  shorter than the load (``World.load_seconds``).
- Blueprints reject attributes their real counterparts do not have.

The map is one straight two-lane road along +x from x=0 to x=ROAD_END:
lane A (centre y=0, yaw 0) and the opposite lane B (centre y=-3.5, yaw 180)
in CARLA's left-handed frame (y right). Its edges are curbs at y=+1.75 and
y=-5.25. Vehicles follow a kinematic bicycle model; autopilot NPCs drive
their lane at NPC_SPEED; the ego collides within COLLISION_M of another car.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import sys
import threading
import time
import types
from enum import IntEnum, IntFlag

LANE_WIDTH, ROAD_END, NPC_SPEED, COLLISION_M = 3.5, 1000.0, 5.0, 4.0
LANES = {"A": (0.0, 0.0), "B": (-3.5, 180.0)}  # centre y, yaw
EDGES = (-5.25, 1.75)
LATE_EVENT_S = 0.01
SERVERS: dict = {}
TRAFFIC_MANAGERS: dict = {}  # port -> TrafficManager, for this whole process


class ProcessAbort(AssertionError):
    """Where the real client process would abort (not an exception it could catch)."""


class Vector3D:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = x, y, z


Location = Vector3D


class Rotation:
    def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
        self.pitch, self.yaw, self.roll = pitch, yaw, roll


class Transform:
    def __init__(self, location=None, rotation=None):
        self.location = location or Location()
        self.rotation = rotation or Rotation()


class LaneType(IntFlag):
    Any = -2
    Driving = 2


class LaneMarkingType(IntEnum):
    Solid = 2
    Grass = 8
    Curb = 9


class VehicleControl:
    def __init__(self, throttle=0.0, steer=0.0, brake=0.0):
        assert 0 <= throttle <= 1 and -1 <= steer <= 1 and 0 <= brake <= 1
        self.throttle, self.steer, self.brake = throttle, steer, brake


class WorldSettings:
    def __init__(self):
        self.synchronous_mode, self.fixed_delta_seconds = False, None
        self.no_rendering_mode = False


class Waypoint:
    def __init__(self, lane, x):
        self.lane, self.x = lane, x
        y, yaw = LANES[lane]
        self.transform = Transform(Location(x, y, 0.0), Rotation(yaw=yaw))
        self.is_junction = False
        self.lane_type = LaneType.Driving

    def next(self, distance):
        x = self.x + (distance if self.lane == "A" else -distance)
        return [Waypoint(self.lane, x)] if 0 <= x <= ROAD_END else []


class Map:
    def __init__(self, name):
        self.name = name

    def get_spawn_points(self):
        return [Waypoint(lane, x).transform for lane in LANES for x in range(10, 900, 15)]

    def get_waypoint(self, location, project_to_road=True, lane_type=LaneType.Driving):
        if not project_to_road and not EDGES[0] <= location.y <= EDGES[1]:
            return None
        lane = "A" if location.y > -LANE_WIDTH / 2 else "B"
        return Waypoint(lane, min(max(location.x, 0.0), ROAD_END))


# Attributes the real blueprints have (of those a client might set), with the
# values allowed where CARLA restricts them (None: any).
_CAMERA = {"image_size_x": None, "image_size_y": None, "fov": None, "sensor_tick": None,
           "exposure_mode": ("manual", "histogram"), "shutter_speed": None, "iso": None,
           "fstop": None, "gamma": None, "motion_blur_intensity": None, "role_name": None}
ATTRIBUTES = {"vehicle.tesla.model3": {"role_name": None, "color": None},
              "vehicle.audi.tt": {"role_name": None, "color": None},
              "vehicle.lincoln.mkz_2020": {"role_name": None, "color": None},
              "sensor.camera.rgb": _CAMERA,
              "sensor.other.collision": {"role_name": None},
              "sensor.other.lane_invasion": {"role_name": None}}


class ActorBlueprint:
    def __init__(self, id):
        self.id, self.attributes = id, {}

    def set_attribute(self, key, value):
        assert isinstance(value, str), "carla blueprint attributes are strings"
        allowed = ATTRIBUTES[self.id]
        if key not in allowed:
            raise IndexError(f"{self.id} has no attribute {key!r}")
        if allowed[key] is not None and value not in allowed[key]:
            raise ValueError(f"{self.id}: {key}={value!r} is not one of {allowed[key]}")
        self.attributes[key] = value

    def has_attribute(self, key):
        return False


class BlueprintLibrary:
    IDS = tuple(ATTRIBUTES)

    def find(self, id):
        assert id in self.IDS, id
        return ActorBlueprint(id)

    def filter(self, pattern):
        return [ActorBlueprint(i) for i in self.IDS if fnmatch.fnmatch(i, pattern)]


class Actor:
    def __init__(self, world, id, type_id, transform):
        self.world, self.id, self.type_id = world, id, type_id
        self.transform = Transform(Location(transform.location.x, transform.location.y),
                                   Rotation(yaw=transform.rotation.yaw))

    @property
    def is_alive(self):
        return self.id in self.world.actors

    def get_transform(self):
        loc, rot = self.transform.location, self.transform.rotation
        return Transform(Location(loc.x, loc.y), Rotation(yaw=rot.yaw))


class Vehicle(Actor):
    def __init__(self, *a):
        super().__init__(*a)
        self.speed, self.control, self.autopilot_port = 0.0, VehicleControl(), None

    def get_velocity(self):
        yaw = math.radians(self.transform.rotation.yaw)
        return Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw))

    def apply_control(self, control):
        self.control = control

    def set_target_velocity(self, v):
        self.speed = math.hypot(v.x, v.y)

    def move(self, dt):
        t, yaw = self.transform, math.radians(self.transform.rotation.yaw)
        if self.autopilot_port is not None:
            self.speed = NPC_SPEED
        else:
            c = self.control
            self.speed = max(0.0, self.speed + (5 * c.throttle - 8 * c.brake) * dt)
            # CARLA steers right for steer > 0: yaw grows clockwise (left-handed frame).
            yaw += self.speed * math.tan(math.radians(35) * c.steer) / 2.8 * dt
            t.rotation.yaw = math.degrees(yaw)
        t.location.x += self.speed * math.cos(yaw) * dt
        t.location.y += self.speed * math.sin(yaw) * dt


class Sensor(Actor):
    def __init__(self, world, id, blueprint, transform, parent):
        super().__init__(world, id, blueprint.id, transform)
        self.attributes, self.parent, self.callback = dict(blueprint.attributes), parent, None

    def listen(self, callback):
        self.callback = callback

    def is_listening(self):
        return self.callback is not None

    def stop(self):
        self.callback = None


class Image:
    def __init__(self, frame, width, height):
        self.frame, self.width, self.height = frame, width, height
        # B, G, R, A: a wrong channel order gives a different grey.
        self.raw_data = bytes([10, 100, 200, 255]) * (width * height)


class CollisionEvent:
    def __init__(self, frame, actor, other_actor):
        self.frame, self.actor, self.other_actor = frame, actor, other_actor


class LaneMarking:
    def __init__(self, type):
        self.type = type


class LaneInvasionEvent:
    def __init__(self, frame, actor, markings):
        self.frame, self.actor = frame, actor
        self.crossed_lane_markings = [LaneMarking(m) for m in markings]


class Response:
    def __init__(self, actor_id=0, error=""):
        self.actor_id, self.error = actor_id, error

    def has_error(self):
        return bool(self.error)


class World:
    """Also the fake server's state: actors, counters and failure knobs."""

    def __init__(self, map_name="Carla/Maps/Town10HD_Opt", booting=0, load_seconds=0.0):
        self.map = Map(map_name)
        self.settings = WorldSettings()
        self.actors: dict = {}
        self.ids = itertools.count(1)
        self.frame = 0
        self.spawned = self.destroyed = self.destroyed_listening = 0
        self.alive = True  # False once its server process is gone
        self.hang = False  # ticks never return (the real client times out)
        self.booting = booting  # get_world() calls that time out before the world answers
        self.load_seconds = load_seconds  # what load_world takes on this server
        self._delivery = None  # the thread bringing this tick's events, late

    @property
    def traffic_managers(self) -> dict:
        """{port: synchronous} of the process's TMs made for this world."""
        return {p: tm.synchronous for p, tm in TRAFFIC_MANAGERS.items() if tm.world is self}

    # -- the API ---------------------------------------------------------------
    def get_map(self):
        return self.map

    def get_settings(self):
        s = WorldSettings()
        s.__dict__.update(self.settings.__dict__)
        return s

    def apply_settings(self, settings):
        self.settings = settings
        return self.frame

    def get_blueprint_library(self):
        return BlueprintLibrary()

    def try_spawn_actor(self, blueprint, transform):
        if self._occupied(transform.location):
            return None
        return self._add(Vehicle(self, next(self.ids), blueprint.id, transform))

    def spawn_actor(self, blueprint, transform, attach_to=None):
        assert blueprint.id.startswith("sensor.") and attach_to.is_alive
        return self._add(Sensor(self, next(self.ids), blueprint, transform, attach_to))

    def tick(self, seconds=10.0):
        if self._delivery is not None:  # events stream in at most a frame late
            self._delivery.join()
        if self.hang:
            time.sleep(seconds)
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the simulator")
        assert self.settings.synchronous_mode and self.settings.fixed_delta_seconds, \
            "tick() outside synchronous mode with a fixed step"
        self.frame += 1
        dt = self.settings.fixed_delta_seconds
        vehicles = [a for a in self.actors.values() if isinstance(a, Vehicle)]
        # Only sensors make events: the vehicles they are attached to.
        sensed = {id(a.parent) for a in self.actors.values() if isinstance(a, Sensor)}
        events = []
        for v in vehicles:
            if v.autopilot_port is not None:
                assert TRAFFIC_MANAGERS[v.autopilot_port].synchronous, \
                    "Traffic Manager not synchronous"
            before = v.transform.location.y
            v.move(dt)
            if id(v) in sensed:
                events += self._lane_invasion(v, before, v.transform.location.y)
        for v in (v for v in vehicles if id(v) in sensed):
            for other in vehicles:
                if other is not v and math.hypot(
                        v.transform.location.x - other.transform.location.x,
                        v.transform.location.y - other.transform.location.y) < COLLISION_M:
                    events.append((v, "sensor.other.collision", CollisionEvent(self.frame, v, other)))
        for tm in list(TRAFFIC_MANAGERS.values()):  # the client ticks every TM in the process
            if not tm.world.alive:
                raise ProcessAbort(f"world.tick() ticked the Traffic Manager on port {tm.port}, "
                                   "bound to a server that is gone")
        if not self.settings.no_rendering_mode:
            for s in list(self.actors.values()):
                if isinstance(s, Sensor) and s.type_id == "sensor.camera.rgb" and s.callback:
                    s.callback(Image(self.frame, int(s.attributes["image_size_x"]),
                                     int(s.attributes["image_size_y"])))
        if events:
            self._delivery = threading.Thread(target=self._deliver, args=(events,), daemon=True)
            self._delivery.start()
        return self.frame

    # -- internals -------------------------------------------------------------
    def _add(self, actor):
        self.actors[actor.id] = actor
        self.spawned += 1
        return actor

    def _occupied(self, location):
        return any(math.hypot(a.transform.location.x - location.x,
                              a.transform.location.y - location.y) < 2.0
                   for a in self.actors.values() if isinstance(a, Vehicle))

    def _deliver(self, events):
        time.sleep(LATE_EVENT_S)
        for vehicle, type_id, event in events:
            for s in list(self.actors.values()):
                if (isinstance(s, Sensor) and s.parent is vehicle and s.type_id == type_id
                        and s.callback):
                    s.callback(event)

    def _lane_invasion(self, v, y0, y1):
        lines = {EDGES[0]: LaneMarkingType.Curb, EDGES[1]: LaneMarkingType.Curb,
                 -LANE_WIDTH / 2: LaneMarkingType.Solid}
        crossed = [m for y, m in lines.items() if min(y0, y1) < y <= max(y0, y1)]
        return [(v, "sensor.other.lane_invasion", LaneInvasionEvent(self.frame, v, crossed))
                ] if crossed else []

    def destroy(self, actor_id):
        actor = self.actors.pop(actor_id, None)
        if actor is None:
            return Response(error=f"actor {actor_id} not found")
        self.destroyed += 1
        self.destroyed_listening += isinstance(actor, Sensor) and actor.is_listening()
        return Response(actor_id)

    def spawn_by_command(self, cmd):
        if self._occupied(cmd.transform.location):
            return Response(error="Spawn failed because of collision at spawn position")
        vehicle = self._add(Vehicle(self, next(self.ids), cmd.blueprint.id, cmd.transform))
        for then in cmd.chain:
            tm = TRAFFIC_MANAGERS.get(then.port)
            assert then.actor is FutureActor and tm is not None and tm.world is self, \
                f"no Traffic Manager for this world on port {then.port}"
            vehicle.autopilot_port = then.port if then.enabled else None
        return Response(vehicle.id)


class TrafficManager:
    def __init__(self, world, port):
        self.world, self.port = world, port
        self.synchronous, self.seed = False, None

    def get_port(self):
        return self.port

    def set_synchronous_mode(self, mode=True):
        self.synchronous = mode

    def set_random_device_seed(self, value):
        self.seed = value

    def shut_down(self):
        TRAFFIC_MANAGERS.pop(self.port, None)


class Client:
    def __init__(self, host="127.0.0.1", port=2000, worker_threads=0):
        self.address, self.timeout = (host, port), 5.0

    def _world(self):
        world = SERVERS.get(self.address)
        if world is None or world.hang:
            raise self._timeout()
        return world

    def _timeout(self):
        return RuntimeError(f"time-out of {int(self.timeout * 1000)}ms while waiting for the "
                            f"simulator, make sure the simulator is ready and connected to "
                            f"{self.address[0]}:{self.address[1]}")

    def set_timeout(self, seconds):
        self.timeout = seconds

    def get_world(self):
        world = self._world()
        if world.booting:
            world.booting -= 1
            raise self._timeout()
        return world

    def load_world(self, map_name):
        old = self._world()
        if self.timeout < old.load_seconds:
            raise self._timeout()
        SERVERS[self.address] = World("Carla/Maps/" + map_name.rsplit("/", 1)[-1],
                                      load_seconds=old.load_seconds)
        return SERVERS[self.address]

    def get_trafficmanager(self, port=8000):
        """The process's TM on ``port`` if there is one (whatever world it was
        made for), else a new one for this client's world."""
        if port not in TRAFFIC_MANAGERS:
            TRAFFIC_MANAGERS[port] = TrafficManager(self._world(), port)
        return TRAFFIC_MANAGERS[port]

    def apply_batch_sync(self, commands, do_tick=False):
        world = self._world()
        return [world.destroy(c.actor_id) if isinstance(c, DestroyActor) else world.spawn_by_command(c)
                for c in commands]


# -- carla.command ----------------------------------------------------------------
class FutureActor:
    pass


class DestroyActor:
    def __init__(self, actor):
        self.actor_id = actor


class SetAutopilot:
    def __init__(self, actor, enabled, port=8000):
        self.actor, self.enabled, self.port = actor, enabled, port


class SpawnActor:
    def __init__(self, blueprint, transform):
        self.blueprint, self.transform, self.chain = blueprint, transform, []

    def then(self, command):
        self.chain.append(command)
        return self


class FakeSupervisor:
    """Stands in for CarlaServer. Launched: a (re)start boots a fresh world on
    its port, in ``boot_map`` (the map it is launched on), and close() kills it.
    Attached: the world is someone else's and outlives the runner. Either way a
    restart moves the Traffic Manager to a fresh port, as CarlaServer does."""

    def __init__(self, port=2000, launched=True, boot_map="Town01", booting=0):
        self.host, self.port, self.tm_port = "127.0.0.1", port, port + 3
        self.launched, self.boot_map, self.booting = launched, boot_map, booting
        self.restarts = self.starts = 0
        self.closed = False

    def ensure_running(self):
        if (self.host, self.port) not in SERVERS:
            self._boot()

    def restart(self):
        self.restarts += 1
        self.tm_port += 10
        if self.launched:
            self._kill()
            self._boot()

    def close(self):
        self.closed = True
        if self.launched:
            self._kill()

    def _kill(self):
        world = SERVERS.pop((self.host, self.port), None)
        if world is not None:
            world.alive = False

    def _boot(self):
        self.starts += 1
        SERVERS[(self.host, self.port)] = World("Carla/Maps/" + self.boot_map,
                                                booting=self.booting)

    @property
    def world(self) -> World:
        return SERVERS[(self.host, self.port)]


def install(monkeypatch) -> types.ModuleType:
    """Make ``import carla`` return this fake for the test's duration."""
    module = types.ModuleType("carla")
    for name in ("Client", "Location", "Rotation", "Transform", "Vector3D", "VehicleControl",
                 "LaneType", "LaneMarkingType"):
        setattr(module, name, globals()[name])
    module.command = types.SimpleNamespace(SpawnActor=SpawnActor, SetAutopilot=SetAutopilot,
                                           DestroyActor=DestroyActor, FutureActor=FutureActor)
    monkeypatch.setitem(sys.modules, "carla", module)
    monkeypatch.setattr(sys.modules[__name__], "SERVERS", {})
    monkeypatch.setattr(sys.modules[__name__], "TRAFFIC_MANAGERS", {})
    return module
