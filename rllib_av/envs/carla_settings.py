"""The `env.carla:` section of a run config: which server, which world, which traffic."""

from __future__ import annotations

import os
from typing import Annotated, List, Literal, Optional, Union

from pydantic import AfterValidator, Field, StrictFloat, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from rllib_av.config_schema import ConfigError, ConfigSection

# NPC vehicles per env.traffic scenario (Town01 has 255 spawn points).
TRAFFIC_VEHICLES = {"none": 0, "light": 20, "medium": 50, "heavy": 100}

# Ports a launched server listens on, as offsets from its RPC port P: P+1 sensor
# streaming, P+2 the secondary (multi-GPU) port CARLA opens by default even on
# one GPU. The Traffic Manager's port is reserved apart from these: it listens
# in the client process and is replaced after every relaunch.
SERVER_PORTS = 3


def _must_exist(path: str) -> str:
    if not os.path.exists(os.path.expanduser(path)):
        raise PydanticCustomError("path_not_found", "does not exist; expected an existing path")
    return path


# A file or folder that must exist when set.
ExistingPath = Annotated[StrictStr, AfterValidator(_must_exist)]
Port = Union[StrictInt, Literal["auto"]]


@dataclass
class CarlaSettings(ConfigSection):
    mode: Literal["launch", "attach"] = "launch"
    """launch: this runner starts and owns CarlaUE4.sh; attach: a server someone else runs
    (a compose sidecar, a shared box) at host:port."""
    host: StrictStr = "127.0.0.1"
    port: Port = "auto"
    """RPC port; 'auto' reserves a free block of SERVER_PORTS ports on this node."""
    traffic_manager_port: Port = "auto"
    """'auto' = a free port reserved on this node, a fresh one after every relaunch (CARLA
    keeps one Traffic Manager per process and port)."""
    port_range_start: StrictInt = Field(2000, ge=1024, lt=65536)
    """Where auto ports are searched: [port_range_start, port_range_end)."""
    port_range_end: StrictInt = Field(3000, gt=1024, le=65536)
    node_dir: StrictStr = "/tmp"
    """Node-local folder for the port registry (shared by every runner on the node, so it
    must be the same path for all of them) and server logs."""
    carla_root: Optional[ExistingPath] = None
    """CARLA install folder (holds CarlaUE4.sh); falls back to $CARLA_ROOT."""
    executable: Optional[ExistingPath] = None
    """The server executable; overrides carla_root/CarlaUE4.sh."""
    extra_args: List[StrictStr] = Field(default_factory=list)
    quality_level: Literal["Low", "Epic"] = "Low"
    gpu_indices: List[Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=list)
    """Vulkan adapters to spread runners over: runner i renders on
    gpu_indices[i % len(gpu_indices)]; empty = the server's default GPU."""
    run_as_user: Optional[StrictStr] = None
    """Launch mode on a node whose runners run as root (Unreal refuses root): the user the
    server runs as. Needs a home directory and read access to the CARLA folder."""
    startup_timeout_s: StrictFloat = Field(120.0, gt=0)
    """Seconds for a server to answer: a launched one from its start until its world
    answers; an attached one when it stopped answering mid-run."""
    launch_attempts: StrictInt = Field(3, ge=1)
    """Launch attempts per (re)start before giving up."""
    rpc_timeout_s: StrictFloat = Field(20.0, gt=0)
    """Client RPC timeout (client.set_timeout), also how long the first connection waits
    for an attached server to accept at all."""
    tick_timeout_s: StrictFloat = Field(10.0, gt=0)
    """A tick and its camera frame; a hung server is noticed within rpc_timeout_s +
    tick_timeout_s (the tick's RPC, then the frame)."""
    map_load_timeout_s: StrictFloat = Field(180.0, gt=0)
    """client.load_world when the server has another map loaded (big maps take minutes on a
    cold cache)."""
    event_grace_s: StrictFloat = Field(0.002, ge=0, le=1)
    """Collision and lane-invasion events come on their own streams, possibly after the
    camera frame: how long a step waits for its last tick's events. Later ones count in
    the next step (and are logged)."""

    map: StrictStr = "Town01"
    """A name (Town01) or a full path (/Game/Carla/Maps/Town01)."""
    fixed_delta_seconds: StrictFloat = Field(0.05, gt=0, le=0.1)
    """Physics step; one env step (env.step_dt_s) runs a whole number of these."""
    ego_blueprint: StrictStr = "vehicle.tesla.model3"
    goal_radius_m: StrictFloat = Field(3.0, gt=0)
    """The goal counts as reached within this distance of the route's end."""
    # Front camera, rendered straight at the 84x84 observation size, with a
    # fixed (manual) exposure so brightness does not drift with the scene.
    camera_fov: StrictFloat = Field(90.0, gt=0, lt=180)
    camera_x: StrictFloat = 1.5
    camera_z: StrictFloat = 2.4
    camera_pitch: StrictFloat = -10.0

    @property
    def map_path(self) -> str:
        """The map as CarlaUE4.sh's first argument (Unreal's map URL)."""
        return self.map if self.map.startswith("/") else f"/Game/Carla/Maps/{self.map}"

    @model_validator(mode="after")
    def check(self) -> "CarlaSettings":
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
        return self
