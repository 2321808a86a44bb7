"""The `env.carla:` section of a run config: which server, which world, which traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from rllib_av.config_schema import ConfigError, bounds, choices, existing_path

# NPC vehicles per env.traffic scenario (Town01 has 255 spawn points).
TRAFFIC_VEHICLES = {"none": 0, "light": 20, "medium": 50, "heavy": 100}

# Ports one server needs, as offsets from its RPC port P: P+1 sensor streaming,
# P+2 the multi-GPU primary port (CARLA listens there even on one GPU),
# P+3 this runner's Traffic Manager (the TM listens in the client process).
PORT_BLOCK = 4


@dataclass
class CarlaSettings:
    # launch: this runner starts and owns CarlaUE4.sh; attach: a server someone
    # else runs (a compose sidecar, a shared box) at host:port.
    mode: str = field(default="launch", metadata=choices("launch", "attach"))
    host: str = "127.0.0.1"
    # RPC port; "auto" reserves a free block of PORT_BLOCK ports on this node.
    port: Union[int, Literal["auto"]] = "auto"
    # "auto" = RPC port + 3 (launch) or a reserved free port (attach).
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
    # Seconds for a launched server to open its RPC port.
    startup_timeout_s: float = field(default=120.0, metadata=bounds(gt=0))
    # Launch attempts per (re)start before giving up.
    launch_attempts: int = field(default=3, metadata=bounds(ge=1))
    # Client RPC timeout (client.set_timeout) and the per-tick timeout.
    rpc_timeout_s: float = field(default=20.0, metadata=bounds(gt=0))
    tick_timeout_s: float = field(default=10.0, metadata=bounds(gt=0))

    map: str = "Town01"
    # Physics step; one env step (env.step_dt_s) runs a whole number of these.
    fixed_delta_seconds: float = field(default=0.05, metadata=bounds(gt=0, le=0.1))
    ego_blueprint: str = "vehicle.tesla.model3"
    # The goal counts as reached within this distance of the route's end.
    goal_radius_m: float = field(default=3.0, metadata=bounds(gt=0))
    # Front camera, rendered straight at the 84x84 observation size.
    camera_fov: float = field(default=90.0, metadata=bounds(gt=0, lt=180))
    camera_x: float = 1.5
    camera_z: float = 2.4
    camera_pitch: float = -10.0

    def check(self) -> None:
        for key in ("port", "traffic_manager_port"):
            value = getattr(self, key)
            if value != "auto" and not 1024 <= value < 65536:
                raise ConfigError(f"env.carla.{key}: {value!r} is not allowed; "
                                  "expected \"auto\" or a port in [1024, 65536)")
        if self.mode == "attach" and self.port == "auto":
            raise ConfigError("env.carla.port: 'auto' is not allowed with mode: attach; "
                              "expected the port of the running server")
        if self.port_range_end - self.port_range_start < PORT_BLOCK:
            raise ConfigError(f"env.carla.port_range_end: {self.port_range_end!r} is not allowed; "
                              f"expected >= port_range_start + {PORT_BLOCK}")
