"""CarlaServer supervision against a real stand-in server process (tests/carla_standin.py).

The stand-in refuses root as Unreal does. Where this suite runs as root, the
launched servers run as ``nobody`` through ``env.carla.run_as_user``, as on a
node whose Ray workers run as root."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from rllib_av.config_schema import ConfigError, from_dict
from rllib_av.envs.carla_server import REGISTRY, CarlaServer, ServerStartError
from rllib_av.envs.carla_settings import CarlaSettings
from rllib_av.run_config import load_run_config

STANDIN = os.path.join(os.path.dirname(__file__), "carla_standin.py")
PORTS = dict(port_range_start=23000, port_range_end=23400)
AS_ROOT = os.geteuid() == 0
# Whom launched servers run as here: never root. Its interpreter must be one
# that user can run (this one may live in root's home).
SERVER_USER = dict(run_as_user="nobody") if AS_ROOT else {}
SERVER_PYTHON = "/usr/bin/python3" if AS_ROOT else sys.executable


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def shared(tmp_path):
    """A folder the server's user can use too (pytest's tmp_path is private to us)."""
    path = tempfile.mkdtemp(prefix="carla_standin_")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def exe(shared):
    """A CarlaUE4.sh look-alike: a shell script that runs the server as its child."""
    path = os.path.join(shared, "CarlaUE4.sh")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\n"{SERVER_PYTHON}" "{STANDIN}" "$@"\n')
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def record(shared):
    return os.path.join(shared, "record.jsonl")


@pytest.fixture
def settings(tmp_path, exe, record):
    def make(**kw):
        base = dict(executable=exe, node_dir=str(tmp_path), startup_timeout_s=15.0,
                    extra_args=[f"--record={record}", "--child"], **SERVER_USER, **PORTS)
        return CarlaSettings(**{**base, **kw})
    return make


def test_launches_headless_on_its_map_and_gpu_and_close_kills_only_its_group(
        settings, tmp_path, record):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 start_new_session=True)
    server = CarlaServer(settings(gpu_indices=[0, 1], quality_level="Epic"), runner_index=3)
    try:
        server.ensure_running()
        (rec,) = records(record)
        p = server.port
        # Straight into the map (no default-map boot, then load_world); no
        # -carla-primary-port, which a standalone server ignores.
        assert rec["argv"][:6] == ["/Game/Carla/Maps/Town01", "-RenderOffScreen", "-nosound",
                                   f"-carla-rpc-port={p}", f"-carla-streaming-port={p + 1}",
                                   "-quality-level=Epic"]
        assert "-graphicsadapter=1" in rec["argv"]
        assert not any(a.startswith("-carla-primary-port") for a in rec["argv"])
        # The TM's port is a reservation of its own, clear of the server's three.
        assert 23000 <= server.tm_port < 23400 and server.tm_port not in (p, p + 1, p + 2)
        assert listening(p) and listening(p + 1)
        assert rec["pgid"] == server.process.pid != os.getpgid(0)
    finally:
        server.close()
    assert not alive(rec["pid"]) and not alive(rec["child"])
    assert not listening(p)
    assert alive(bystander.pid)
    bystander.kill()
    bystander.wait()
    assert json.load(open(tmp_path / REGISTRY)) == {}


def test_relaunches_after_kill_9_with_a_fresh_traffic_manager_port(settings, record):
    server = CarlaServer(settings())
    try:
        server.ensure_running()
        first, first_tm = records(record)[0], server.tm_port
        os.kill(first["pid"], signal.SIGKILL)
        wait_until(lambda: server.process.poll() is not None)
        server.ensure_running()
        second = records(record)[-1]
        assert second["pid"] != first["pid"]
        assert server.restarts == 1
        assert listening(server.port)
        assert f"-carla-rpc-port={server.port}" in second["argv"]  # same server ports as before
        # CARLA would hand back the TM still registered on the old port, bound
        # to the dead server: this runner's next TM listens elsewhere.
        assert server.tm_port != first_tm
        assert not alive(first["child"])  # the crashed server's group went with it
    finally:
        server.close()


def test_restart_replaces_a_hung_server(settings, record):
    server = CarlaServer(settings())
    try:
        server.ensure_running()
        hung = records(record)[0]
        os.kill(hung["pid"], signal.SIGSTOP)  # alive, port open, answers nothing
        server.restart()  # what the backend does after a tick timeout
        assert not alive(hung["pid"])
        assert records(record)[-1]["pid"] != hung["pid"]
        assert listening(server.port) and server.restarts == 1
    finally:
        server.close()


def test_startup_crash_is_retried(settings, record, shared):
    server = CarlaServer(settings(extra_args=[f"--record={record}", "--child",
                                              f"--fail-first={shared}/failed-once"]))
    try:
        server.ensure_running()
        failed, ok = records(record)
        assert not alive(failed["child"])
        assert listening(server.port) and server.restarts == 0
    finally:
        server.close()


def test_server_that_never_listens_gives_a_clear_error_and_no_leftovers(settings, record):
    server = CarlaServer(settings(startup_timeout_s=1.0, launch_attempts=2,
                                  extra_args=[f"--record={record}", "--child", "--never-listen"]))
    with pytest.raises(ServerStartError, match="did not come up after 2 attempts"):
        server.ensure_running()
    server.close()
    recs = records(record)
    assert len(recs) == 2
    assert not any(alive(r["pid"]) or alive(r["child"]) for r in recs)


@pytest.mark.skipif(not AS_ROOT, reason="needs root: what Unreal refuses")
def test_the_standin_refuses_root_like_unreal(exe):
    out = subprocess.run([exe, "-carla-rpc-port=23399", "-carla-streaming-port=23398"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "Refusing to run with the root privileges" in out.stdout


@pytest.mark.skipif(not AS_ROOT, reason="needs root: what Unreal refuses")
def test_launch_as_root_is_refused_at_once_in_one_line(settings, record):
    """Not launch_attempts x startup_timeout_s of a server that exits, then a
    generic "did not come up": no launch at all, and a line saying what to do."""
    server = CarlaServer(settings(run_as_user=None))
    with pytest.raises(ServerStartError) as e:
        server.ensure_running()
    server.close()
    message = str(e.value)
    assert "\n" not in message and "env.carla.run_as_user" in message and "root" in message
    assert not os.path.exists(record)  # nothing was started
    with pytest.raises(ServerStartError, match="env.carla.run_as_user: 'root' is not allowed"):
        CarlaServer(settings(run_as_user="root")).ensure_running()


def test_missing_executable_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    server = CarlaServer(CarlaSettings(node_dir=str(tmp_path), **SERVER_USER, **PORTS))
    with pytest.raises(ServerStartError, match="carla_root"):
        server.ensure_running()
    server.close()


RUNNER = textwrap.dedent("""
    import json, os, sys, time
    from rllib_av.envs.carla_server import CarlaServer
    from rllib_av.envs.carla_settings import CarlaSettings
    go = sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.005)
    server = CarlaServer(CarlaSettings(**json.loads(sys.argv[1])))
    server.ensure_running()
    print(json.dumps([server.port, server.streaming_port, server.tm_port,
                      server.process.pid]), flush=True)
    sys.stdin.read()  # hold the server until the test closes stdin
    server.close()
""")


def start_runners(n, kw, go):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(STANDIN)))
    return [subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(kw), str(go)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(n)]


@pytest.mark.slow
def test_eight_runners_started_at_once_get_disjoint_ports(exe, tmp_path):
    kw = dict(executable=exe, node_dir=str(tmp_path), startup_timeout_s=60.0, **SERVER_USER,
              **PORTS)
    go = tmp_path / "go"
    runners = start_runners(8, kw, go)
    go.touch()  # release all runners in the same instant
    try:
        got = [json.loads(r.stdout.readline()) for r in runners]
        ports = [p for rpc, stream, tm, _ in got for p in (rpc, stream, rpc + 2, tm)]
        assert len(set(ports)) == len(ports) == 32
        assert all(listening(rpc) and listening(stream) for rpc, stream, _, _ in got)
    finally:
        for r in runners:
            r.stdin.close()
            r.wait(timeout=30)
    assert all(r.returncode == 0 for r in runners)
    assert not any(listening(rpc) for rpc, *_ in got)
    assert json.load(open(tmp_path / REGISTRY)) == {}


def test_server_left_by_a_killed_runner_is_reaped_and_its_ports_reused(exe, tmp_path, settings):
    go = tmp_path / "go"
    go.touch()
    (runner,) = start_runners(1, dict(executable=exe, node_dir=str(tmp_path), **SERVER_USER,
                                      **PORTS), go)
    port, _, _, orphan = json.loads(runner.stdout.readline())
    runner.kill()  # SIGKILL: no chance to close its server
    runner.wait()
    assert alive(orphan) and listening(port)
    server = CarlaServer(settings())
    try:
        server.ensure_running()
        assert not alive(orphan)
        assert server.port == port
    finally:
        server.close()


def _free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_attach_waits_for_external_server_and_leaves_it_running(tmp_path):
    port = _free_port()
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    sidecar = subprocess.Popen((as_nobody if AS_ROOT else []) + [
        SERVER_PYTHON, STANDIN, f"-carla-rpc-port={port}", f"-carla-streaming-port={port + 1}"])
    try:
        server = CarlaServer(CarlaSettings(mode="attach", port=port, node_dir=str(tmp_path),
                                           rpc_timeout_s=15.0, **PORTS))
        server.ensure_running()
        assert server.process is None and server.port == port
        first_tm = server.tm_port
        assert 23000 <= first_tm < 23400
        server.restart()  # after a failure: same server, a fresh TM port
        assert server.tm_port != first_tm and server.restarts == 1
        server.close()
        assert sidecar.poll() is None
    finally:
        sidecar.kill()
        sidecar.wait()
    assert json.load(open(tmp_path / REGISTRY)) == {}


def test_attach_to_nothing_fails_within_rpc_timeout_naming_where_and_what_to_start(tmp_path):
    port = _free_port()
    gone = CarlaServer(CarlaSettings(mode="attach", port=port, node_dir=str(tmp_path),
                                     rpc_timeout_s=0.5, startup_timeout_s=600, **PORTS))
    with pytest.raises(ConfigError) as e:  # the CLI's one line and exit 2
        gone.ensure_running()
    gone.close()
    message = str(e.value)
    assert "\n" not in message
    assert f"no CARLA server answers at 127.0.0.1:{port} within 0.5 s" in message
    assert "carlasim/carla:0.9.16" in message and "env.carla.mode: launch" in message


def test_several_envs_per_runner_on_one_attached_server_are_refused():
    """Each env ticks its world synchronously: two on one server tick it twice."""
    config = os.path.join(os.path.dirname(STANDIN), "..", "configs", "carla_town01.yaml")
    with pytest.raises(ConfigError, match=r"resources\.num_envs_per_env_runner: 2 is not allowed "
                                          r"with env\.carla\.mode: attach"):
        load_run_config(config, ["resources.num_envs_per_env_runner=2"])
    load_run_config(config, ["resources.num_envs_per_env_runner=2", "env.carla.mode=launch",
                             "env.carla.port=auto"])


@pytest.mark.parametrize("section, message", [
    ({"mode": "attach"}, "env.carla.port: 'auto' is not allowed with mode: attach"),
    ({"port": 80}, "env.carla.port: 80 is not allowed"),
    ({"quality_level": "Medium"}, "env.carla.quality_level: 'Medium' is not allowed"),
    ({"carla_root": "/no/such/carla"}, "env.carla.carla_root: '/no/such/carla' does not exist"),
])
def test_bad_carla_settings_are_one_clear_line(section, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        from_dict(CarlaSettings, section, "env.carla")


@pytest.mark.parametrize("traffic, vehicles", [("light", 20), ("medium", 50), ("heavy", 100)])
def test_town01_config_scenarios_and_placement(traffic, vehicles):
    from rllib_av.envs.carla_settings import TRAFFIC_VEHICLES

    config = load_run_config(os.path.join(os.path.dirname(STANDIN), "..", "configs",
                                          "carla_town01.yaml"), [f"env.traffic={traffic}"])
    assert config.env.backend == "carla" and config.env.carla.map == "Town01"
    assert TRAFFIC_VEHICLES[config.env.traffic] == vehicles
    assert config.resources.env_runner_resources == {"carla_slot": 1.0}
