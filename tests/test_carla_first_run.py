"""A first CARLA run on one machine: what is missing is said in one line, at
once, before a run directory exists (never a silent wait for an actor RLlib
cannot place, or for a server nobody started)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from rllib_av.config_schema import ConfigError
from rllib_av.run_config import load_run_config
from rllib_av.startup_checks import check_before_build

ROOT = Path(__file__).resolve().parents[1]
CARLA_CONFIG = ROOT / "configs" / "carla_town01.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def the_error_line(stderr: str) -> str:
    """The CLI's one line for a user's mistake, and no traceback around it."""
    assert "Traceback" not in stderr, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("rllib-av: error:")]
    return line


def carla_config(**overrides):
    return load_run_config(str(CARLA_CONFIG), [f"{k}={v}" for k, v in overrides.items()])


def test_env_runners_asking_for_a_carla_slot_nobody_offers_are_refused(ray_local):
    with pytest.raises(ConfigError) as e:
        check_before_build(carla_config())
    message = str(e.value)
    assert message.startswith("resources.env_runner_resources: {carla_slot: 1} ")
    assert "no Ray node offers 1 carla_slot" in message
    assert """--resources='{"carla_slot": N}'""" in message
    assert "resources.env_runner_resources: {}" in message and "\n" not in message


def test_an_attached_server_on_this_machine_must_answer(ray_local):
    port = free_port()
    rc = carla_config(**{"resources.env_runner_resources": "{}", "env.carla.port": port,
                         "env.carla.rpc_timeout_s": 0.5,
                         "resources.num_gpus_per_learner": 0})
    with pytest.raises(ConfigError, match=f"no CARLA server answers at 127.0.0.1:{port} "
                                          r"within 0\.5 s"):
        check_before_build(rc)
    with socket.socket() as server:  # something listening: the check passes
        server.bind(("127.0.0.1", port))
        server.listen()
        check_before_build(rc)


def test_learner_actors_asking_for_a_gpu_nobody_offers_are_refused(ray_local):
    rc = load_run_config(str(ROOT / "configs" / "quickstart.yaml"),
                         ["resources.num_learners=1", "resources.num_gpus_per_learner=1"])
    if any(node["Resources"].get("GPU") for node in ray_local.nodes()):
        pytest.skip("this Ray node has a GPU")
    with pytest.raises(ConfigError, match=r"resources.learner_resources: \{GPU: 1\} .*"
                                          r"resources.num_gpus_per_learner: 0"):
        check_before_build(rc)


def test_a_driver_learner_asking_for_a_gpu_torch_cannot_see_is_refused(ray_local):
    import torch

    if torch.cuda.device_count():
        pytest.skip("torch sees a GPU here")
    rc = load_run_config(str(ROOT / "configs" / "quickstart.yaml"),
                         ["resources.num_gpus_per_learner=1"])
    with pytest.raises(ConfigError, match=r"resources.num_gpus_per_learner: 1 is not allowed "
                                          r"here; .* sees no CUDA GPU"):
        check_before_build(rc)


def test_a_placeable_config_passes(ray_local):
    check_before_build(load_run_config(str(ROOT / "configs" / "quickstart.yaml"),
                                       ["resources.num_env_runners=1"]))


def test_evaluate_on_carla_without_a_server_fails_within_the_rpc_timeout(tmp_path):
    """`rllib-av evaluate --scenario carla_town01` with no server: the one line
    names host:port and what to start (the shipped scenario, on a free port
    with a short client timeout)."""
    port = free_port()
    scenario = yaml.safe_load(CARLA_CONFIG.read_text())
    scenario["env"]["carla"].update(port=port, rpc_timeout_s=1.0)
    path = tmp_path / "carla_town01.yaml"
    path.write_text(yaml.safe_dump(scenario))
    out_dir = tmp_path / "eval"
    result = cli("evaluate", "--scenario", str(path), "--baselines", "--episodes", "1",
                 "--videos", "0", "--out", str(out_dir), cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    line = the_error_line(result.stderr)
    assert f"no CARLA server answers at 127.0.0.1:{port} within 1 s" in line
    assert "carlasim/carla:0.9.16" in line
    assert not out_dir.exists()


@pytest.mark.slow
def test_train_on_carla_on_one_machine_says_what_is_missing_and_leaves_no_run_dir(tmp_path):
    """The README's `rllib-av train --config configs/carla_town01.yaml` on a
    machine whose Ray offers no carla_slot: RLlib would wait for the EnvRunner
    forever."""
    runs = tmp_path / "runs"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix sockets
    env = dict(os.environ, RAY_TMPDIR=ray_tmp)
    env.pop("RAY_ADDRESS", None)
    try:
        result = cli("train", "--config", "configs/carla_town01.yaml",
                     "--set", f"run.output_dir={runs}", cwd=ROOT, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 2, result.stderr[-3000:]
    line = the_error_line(result.stderr)
    assert "resources.env_runner_resources: {carla_slot: 1}" in line
    assert not runs.exists()
