"""The `env.carla:` section of a run config: which server, which world, which traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from rllib_av.config_schema import ConfigError, bounds, choices, existing_path

# NPC vehicles per env.traffic scenario (Town01 has 255 spawn points).
TRAFFIC_VEHICLES = {"none": 0, "light": 20, "medium": 50, "heavy": 100}

# Ports a launched server listens on, as offsets from its RPC port P: P+1 sensor
# streaming, P+2 the secondary (multi-GPU) port CARLA opens by default even on
# one GPU. The Traffic Manager's port is reserved apart from these: it listens
# in the client process and is replaced after every relaunch.
SERVER_PORTS = 3


@dataclass
class CarlaSettings:
    # launch: this runner starts and owns CarlaUE4.sh; attach: a server someone
    # else runs (a compose sidecar, a shared box) at host:port.
    mode: str = field(default="launch", metadata=choices("launch", "attach"))
    host: str = "127.0.0.1"
    # RPC port; "auto" reserves a free block of SERVER_PORTS ports on this node.
    port: Union[int, Literal["auto"]] = "auto"
    # "auto" = a free port reserved on this node, a fresh one after every
    # relaunch (CARLA keeps one Traffic Manager per process and port).
    traffic_manager_port: Union[int, Literal["auto"]] = "auto"
    # Where auto ports are searched: [port_range_start, port_range_end).
    port_range_start: int = field(default=2000, metadata=bounds(ge=1024, lt=65536))
    port_range_end: int = field(default=3000, metadata=bounds(gt=1024, le=65536))
    # Node-local folder for the port registry (shared by every runner on the
    # node, so it must be the same path for all of them) and server logs.
    node_dir: str = "/tmp"
    # CARLA install folder (holds CarlaUE4.sh); falls back to $CARLA_ROOT.
    carla_root: Optional[str] = field(default=None, metadata=existing_path())
    # The server executable; overrides carla_root/CarlaUE4.sh.
    executable: Optional[str] = field(default=None, metadata=existing_path())
    extra_args: List[str] = field(default_factory=list)
    quality_level: str = field(default="Low", metadata=choices("Low", "Epic"))
    # Vulkan adapters to spread runners over: runner i renders on
    # gpu_indices[i % len(gpu_indices)]; empty = the server's default GPU.
    gpu_indices: List[int] = field(default_factory=list, metadata=bounds(ge=0))
    # Launch mode on a node whose runners run as root (Unreal refuses root):
    # the user the server runs as. Needs a home directory and read access to
    # the CARLA folder.
    run_as_user: Optional[str] = None
    # Seconds for a server to answer: a launched one from its start until its
    # world answers; an attached one when it stopped answering mid-run.
    startup_timeout_s: float = field(default=120.0, metadata=bounds(gt=0))
    # Launch attempts per (re)start before giving up.
    launch_attempts: int = field(default=3, metadata=bounds(ge=1))
    # Client RPC timeout (client.set_timeout), also how long the first
    # connection waits for an attached server to accept at all.
    rpc_timeout_s: float = field(default=20.0, metadata=bounds(gt=0))
    # A tick and its camera frame; a hung server is noticed within
    # rpc_timeout_s + tick_timeout_s (the tick's RPC, then the frame).
    tick_timeout_s: float = field(default=10.0, metadata=bounds(gt=0))
    # client.load_world when the server has another map loaded (big maps take
    # minutes on a cold cache).
    map_load_timeout_s: float = field(default=180.0, metadata=bounds(gt=0))
    # Collision and lane-invasion events come on their own streams, possibly
    # after the camera frame: how long a step waits for its last tick's events.
    # Later ones count in the next step (and are logged).
    event_grace_s: float = field(default=0.002, metadata=bounds(ge=0, le=1))

    # A name (Town01) or a full path (/Game/Carla/Maps/Town01).
    map: str = "Town01"
    # Physics step; one env step (env.step_dt_s) runs a whole number of these.
    fixed_delta_seconds: float = field(default=0.05, metadata=bounds(gt=0, le=0.1))
    ego_blueprint: str = "vehicle.tesla.model3"
    # The goal counts as reached within this distance of the route's end.
    goal_radius_m: float = field(default=3.0, metadata=bounds(gt=0))
    # Front camera, rendered straight at the 84x84 observation size, with a
    # fixed (manual) exposure so brightness does not drift with the scene.
    camera_fov: float = field(default=90.0, metadata=bounds(gt=0, lt=180))
    camera_x: float = 1.5
    camera_z: float = 2.4
    camera_pitch: float = -10.0

    @property
    def map_path(self) -> str:
        """The map as CarlaUE4.sh's first argument (Unreal's map URL)."""
        return self.map if self.map.startswith("/") else f"/Game/Carla/Maps/{self.map}"

    def check(self) -> None:
        for key in ("port", "traffic_manager_port"):
            value = getattr(self, key)
            if value != "auto" and not 1024 <= value < 65536:
                raise ConfigError(f"env.carla.{key}: {value!r} is not allowed; "
                                  "expected \"auto\" or a port in [1024, 65536)")
        if self.mode == "attach" and self.port == "auto":
            raise ConfigError("env.carla.port: 'auto' is not allowed with mode: attach; "
                              "expected the port of the running server")
        if self.port_range_end - self.port_range_start < SERVER_PORTS + 1:
            raise ConfigError(f"env.carla.port_range_end: {self.port_range_end!r} is not allowed; "
                              f"expected >= port_range_start + {SERVER_PORTS + 1}")
