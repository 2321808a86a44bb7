"""One CARLA server per EnvRunner: reserve its ports, launch it, watch it, relaunch it.

Ports are reserved in a node-wide registry file guarded by ``fcntl.flock``:
probing a port by binding it is racy (two runners started together both see
2000 free), so the check-and-claim happens under one lock, and the claim
stays in the registry until its owner closes it or dies. An entry whose owner
process is gone is reclaimed, and the server that owner left behind (a
SIGKILLed Ray worker cannot clean up) is killed with it.

A launched server runs in its own process group (CarlaUE4.sh starts the real
binary as a child); the supervisor signals only that group. It boots straight
into the configured map, never as root (Unreal refuses to, after a slow start).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
import uuid
import weakref
from contextlib import contextmanager
from typing import Dict, List, Optional

from rllib_av.config_schema import ConfigError
from rllib_av.envs.carla_settings import SERVER_PORTS, CarlaSettings

log = logging.getLogger(__name__)

REGISTRY = "rllib_av_carla_ports.json"


# What an operator starts when nothing answers in attach mode.
CARLA_DOCKER_RUN = ("docker run -d --name carla --gpus all -e NVIDIA_DRIVER_CAPABILITIES=all "
                    "-p 127.0.0.1:{port}-{last}:{port}-{last} carlasim/carla:0.9.16 "
                    "bash ./CarlaUE4.sh {map} -RenderOffScreen -nosound -carla-rpc-port={port}")


class ServerStartError(ConfigError):
    """The CARLA server could not be started or reached: a set-up problem the
    user fixes, reported as one line (exit 2 at the command line)."""


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (tells a live process from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same flag CARLA's servers use, so a port in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_answering(host: str, port: int, timeout_s: float, map_path: str) -> None:
    """Wait up to ``timeout_s`` for a server someone else runs to accept
    connections; otherwise one line saying where and what to start."""
    deadline = time.monotonic() + timeout_s
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"env.carla: no CARLA server answers at {host}:{port} within {timeout_s:g} s "
                f"(env.carla.rpc_timeout_s); start one there, e.g. "
                f"`{CARLA_DOCKER_RUN.format(port=port, last=port + SERVER_PORTS - 1, map=map_path)}`, "
                "or set env.carla.mode: launch")
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in group ``pgid``. Zombies are
    skipped: an orphan's may linger until init reaps it, and it holds nothing."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def _kill_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
            os.killpg(pgid, signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.05)


class PortRegistry:
    """Node-wide port blocks: ``{base_port: {pid, start, token, server_pgid, server_start}}``."""

    def __init__(self, node_dir: str):
        os.makedirs(node_dir, exist_ok=True)
        self.path = os.path.join(node_dir, REGISTRY)

    @contextmanager
    def _locked(self):
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    with open(self.path) as f:
                        entries = json.load(f)
                except (OSError, ValueError):
                    entries = {}
                yield entries
                tmp = f"{self.path}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    json.dump(entries, f)
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _reap_orphans(entries: Dict[str, dict]) -> None:
        for base, e in list(entries.items()):
            if _start_time(e["pid"]) == e["start"]:
                continue
            pgid = e.get("server_pgid")
            if pgid and _start_time(pgid) == e.get("server_start"):
                log.warning("killing CARLA server group %d left by dead runner %d", pgid, e["pid"])
                _kill_group(pgid, grace_s=1.0)
            del entries[base]

    def reserve(self, start: int, end: int, size: int) -> tuple[int, str]:
        """Claim ``size`` consecutive free ports in [start, end); returns (base, token)."""
        token = uuid.uuid4().hex
        with self._locked() as entries:
            self._reap_orphans(entries)
            taken = {int(b) + i for b, e in entries.items() for i in range(e["size"])}
            for base in range(start, end - size + 1, size):
                ports = range(base, base + size)
                if taken.isdisjoint(ports) and all(_port_free(p) for p in ports):
                    entries[str(base)] = dict(pid=os.getpid(), start=_start_time(os.getpid()),
                                              token=token, size=size)
                    return base, token
        raise ServerStartError(f"env.carla.port_range_end: no {size} free consecutive ports in "
                               f"[{start}, {end}); expected a wider port_range_start/port_range_end")

    def record_server(self, base: int, token: str, pgid: Optional[int]) -> None:
        with self._locked() as entries:
            e = entries.get(str(base))
            if e is not None and e["token"] == token:
                e["server_pgid"] = pgid
                e["server_start"] = _start_time(pgid) if pgid else None

    def release(self, base: int, token: str) -> None:
        with self._locked() as entries:
            if entries.get(str(base), {}).get("token") == token:
                del entries[str(base)]


class CarlaServer:
    """The CARLA server this runner talks to: launched and owned, or attached to.

    ``ensure_running()`` before use; ``restart()`` after the backend saw it fail
    (a tick timeout, a lost connection); ``close()`` at the end. ``tm_port`` is
    where this runner's Traffic Manager listens: with ``traffic_manager_port:
    auto`` a fresh port after every restart, because CARLA keeps a Traffic
    Manager per process and port and hands the old one (bound to the dead
    server) back to whoever asks for that port again.
    """

    def __init__(self, settings: CarlaSettings, runner_index: int = 0):
        self.settings = settings
        self.runner_index = runner_index
        self.host = settings.host
        self.port: Optional[int] = None
        self.streaming_port: Optional[int] = None
        self.tm_port: Optional[int] = None
        self.restarts = 0  # relaunches after a failure (feeds sim_server_restarts_total)
        self.process: Optional[subprocess.Popen] = None
        self._registry = PortRegistry(settings.node_dir)
        self._reservation: Optional[tuple[int, str]] = None
        self._tm_reservation: Optional[tuple[int, str]] = None
        self._finalizer: Optional[weakref.finalize] = None

    @property
    def launched(self) -> bool:
        return self.settings.mode == "launch"

    # ---- lifecycle ---------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start on first use; relaunch a launched server whose process has died."""
        if self.port is None:
            self._assign_ports()
            if self.launched:
                self._launch()
            else:  # someone else's server: it is up, or the user forgot to start it
                require_answering(self.host, self.port, self.settings.rpc_timeout_s,
                                  self.settings.map_path)
        elif self.launched and (self.process is None or self.process.poll() is not None):
            log.warning("CARLA server on port %d exited (%s); relaunching", self.port,
                        None if self.process is None else self.process.returncode)
            self.restart()

    def restart(self) -> None:
        """Replace a crashed or hung server (attach mode: wait until it answers again)."""
        self.restarts += 1
        if self.port is None:
            self._assign_ports()
        self._stop_process()
        self._renew_tm_port()
        if self.launched:
            self._launch()
        elif not self._wait_answering(None, self.settings.startup_timeout_s):
            raise ServerStartError(f"env.carla: the CARLA server at {self.host}:{self.port} "
                                   f"stopped answering and is still down after "
                                   f"{self.settings.startup_timeout_s:g} s "
                                   "(env.carla.startup_timeout_s); restart it")

    def close(self) -> None:
        self._stop_process()
        for reservation in (self._reservation, self._tm_reservation):
            if reservation is not None:
                self._registry.release(*reservation)
        self._reservation = self._tm_reservation = None

    # ---- ports ---------------------------------------------------------------------

    def _assign_ports(self) -> None:
        s = self.settings
        if self.launched and s.port == "auto":
            self._reservation = self._registry.reserve(s.port_range_start, s.port_range_end,
                                                       SERVER_PORTS)
            self.port = self._reservation[0]
        else:
            self.port = s.port
        self.streaming_port = self.port + 1 if self.launched else None
        self._renew_tm_port()

    def _renew_tm_port(self) -> None:
        """The Traffic Manager listens in this (client) process, on this node."""
        s = self.settings
        if s.traffic_manager_port != "auto":
            self.tm_port = s.traffic_manager_port
            return
        old = self._tm_reservation
        self._tm_reservation = self._registry.reserve(s.port_range_start, s.port_range_end, 1)
        self.tm_port = self._tm_reservation[0]
        if old is not None:
            self._registry.release(*old)

    # ---- process -------------------------------------------------------------------

    def command(self) -> List[str]:
        s = self.settings
        # No -carla-primary-port: it only matters to secondary servers of a
        # multi-GPU set-up; a standalone server opens its secondary port at P+2.
        cmd = [self._executable(), s.map_path, "-RenderOffScreen", "-nosound",
               f"-carla-rpc-port={self.port}", f"-carla-streaming-port={self.streaming_port}",
               f"-quality-level={s.quality_level}"]
        if s.gpu_indices:
            cmd.append(f"-graphicsadapter={s.gpu_indices[self.runner_index % len(s.gpu_indices)]}")
        return cmd + list(s.extra_args)

    def _executable(self) -> str:
        s = self.settings
        root = s.carla_root or os.environ.get("CARLA_ROOT")
        exe = s.executable or (os.path.join(root, "CarlaUE4.sh") if root else None)
        if exe is None or not os.access(exe, os.X_OK):
            raise ServerStartError(
                f"env.carla.executable: {exe!r} is not an executable CARLA server; set "
                "env.carla.carla_root (or $CARLA_ROOT) to the CARLA folder holding CarlaUE4.sh, "
                "or use env.carla.mode: attach")
        return exe

    def _server_user(self) -> Optional[pwd.struct_passwd]:
        """Who the server runs as (None: this process's user). Unreal refuses
        root after a slow start, so that is refused here, at once."""
        name = self.settings.run_as_user
        if name is None:
            if os.geteuid() == 0:
                raise ServerStartError(
                    "env.carla.run_as_user: null is not allowed when the runner runs as root "
                    "(Unreal refuses to run as root); expected a non-root user for the server, "
                    "or run Ray as a non-root user, or use env.carla.mode: attach")
            return None
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            raise ServerStartError(f"env.carla.run_as_user: {name!r} is not allowed; "
                                   "expected a user that exists on this node") from None
        if user.pw_uid == 0:
            raise ServerStartError(f"env.carla.run_as_user: {name!r} is not allowed; "
                                   "expected a non-root user (Unreal refuses to run as root)")
        if user.pw_uid != os.geteuid() and os.geteuid() != 0:
            raise ServerStartError(f"env.carla.run_as_user: {name!r} is not allowed; only a "
                                   "runner running as root can start the server as another user")
        return user

    def log_path(self) -> str:
        return os.path.join(self.settings.node_dir, f"rllib_av_carla_{self.port}.log")

    def _launch(self) -> None:
        user = self._server_user()
        for attempt in range(1, self.settings.launch_attempts + 1):
            self._wait_ports_free()
            self._spawn(user)
            if self._wait_answering(self.process, self.settings.startup_timeout_s):
                log.info("CARLA server up on port %d (pid %d)", self.port, self.process.pid)
                return
            log.warning("CARLA server on port %d did not come up (attempt %d/%d)",
                        self.port, attempt, self.settings.launch_attempts)
            self._stop_process()
        raise ServerStartError(f"env.carla: the CARLA server on port {self.port} did not come up "
                               f"after {self.settings.launch_attempts} attempts of "
                               f"{self.settings.startup_timeout_s:g} s; see {self.log_path()}")

    def _spawn(self, user: Optional[pwd.struct_passwd]) -> None:
        as_user = {}
        if user is not None and user.pw_uid != os.geteuid():
            as_user = dict(user=user.pw_uid, group=user.pw_gid,
                           extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
                           env=dict(os.environ, HOME=user.pw_dir, USER=user.pw_name,
                                    LOGNAME=user.pw_name))
        with open(self.log_path(), "ab") as out:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            **as_user)
        # Also on interpreter exit: a dying runner must not leave a GPU-hungry server behind.
        self._finalizer = weakref.finalize(self, _kill_group, self.process.pid, 2.0)
        if self._reservation is not None:
            self._registry.record_server(*self._reservation, self.process.pid)

    def _wait_answering(self, process: Optional[subprocess.Popen], timeout_s: float) -> bool:
        ports = [self.port] + ([self.streaming_port] if process is not None else [])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False  # crashed while starting
            if all(answers(self.host, p) for p in ports):
                return True
            time.sleep(0.1)
        return False

    def _wait_ports_free(self, timeout_s: float = 10.0) -> None:
        """A killed server's ports take a moment to close; do not launch onto them."""
        ports = tuple(range(self.port, self.port + SERVER_PORTS))
        deadline = time.monotonic() + timeout_s
        while not all(_port_free(p) for p in ports):
            if time.monotonic() > deadline:
                raise ServerStartError(f"env.carla.port: ports {ports} stay busy; expected them "
                                       "free (is another CARLA server running on them outside "
                                       "this supervisor?)")
            time.sleep(0.1)

    def _stop_process(self) -> None:
        if self.process is None:
            return
        _kill_group(self.process.pid)
        self.process.wait()
        self._finalizer.detach()
        self.process = self._finalizer = None
        if self._reservation is not None:
            self._registry.record_server(*self._reservation, None)
