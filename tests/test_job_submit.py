"""Training on a real Ray cluster, as a user deploys it.

1. A head started with `ray start --head` (token auth on, loopback only): a short
   `rllib-av train` submitted through the Job API connects to that cluster,
   finishes SUCCEEDED and leaves its exported metrics in the run directory.
2. A multi-node `ray.cluster_utils.Cluster`: EnvRunners land only on the node
   offering `carla_slot`, the learner only on the node offering the (simulated)
   GPU resource.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
QUICKSTART = "configs/quickstart.yaml"
# Enough steps for learner updates (and so Q statistics) to happen, on 2 cores.
SHORT_RUN = ("--set run.total_env_steps=300 --set training.learning_starts=100 "
             "--set training.batch_size=32")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not come up at {url}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` in its own session, temp dir and token.

    Stopped by signalling the process this fixture started (never `ray stop`,
    which would stop every Ray instance on a shared machine)."""
    pytest.importorskip("ray.dashboard.modules.job", reason="the Job API needs ray[default]")
    tmp = Path(tempfile.mkdtemp(prefix="rayhead", dir="/tmp"))  # short: unix sockets
    token = secrets.token_hex(32)
    (tmp / "auth_token").write_text(token)
    dashboard_port = _free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(tmp / "auth_token"),
               RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "ray_start.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={_free_port()}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats",
         # Own agent ports: the defaults may already be held by another Ray on
         # this machine (the suite's ray_local), and then no job agent comes up.
         f"--dashboard-agent-listen-port={_free_port()}",
         f"--dashboard-agent-grpc-port={_free_port()}",
         f"--metrics-export-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for(f"{url}/api/gcs_healthz", proc)
        yield url, token, tmp
    finally:
        proc.send_signal(signal.SIGTERM)  # the head drains, then stops its processes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session only
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _tensorboard_tags(run_root: Path) -> set:
    """Scalar tags in every TensorBoard event file under ``run_root``
    (TFRecord framing: u64 length, u32 crc, payload, u32 crc)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in run_root.rglob("events.out.tfevents*"):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
    return tags


def _submit(client, entrypoint: str, timeout_s: float = 120) -> str:
    """Submit, retrying while the head's job agent is still starting (Ray answers
    500 "No available agent to submit job, please try again later")."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_job_api_rejects_requests_without_the_token(ray_head):
    url, _, _ = ray_head
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
    assert e.value.code == 401


def test_training_job_submitted_to_a_running_cluster_succeeds_and_exports(ray_head):
    pytest.importorskip("rllib_av.cli", reason="rllib-av train not available yet")
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, token, tmp = ray_head
    runs = tmp / "runs"
    client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
    job_id = _submit(client, (
        f"rllib-av train --config {QUICKSTART} --quiet {SHORT_RUN} "
        f"--set run.output_dir={runs} --set monitoring.exporter_port=0"))
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    deadline = time.monotonic() + 900
    while (status := client.get_job_status(job_id)) not in terminal:
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    # Its driver joined this cluster (rather than starting its own): the
    # cluster's GCS recorded a driver for this submission.
    (details,) = [j for j in client.list_jobs() if j.submission_id == job_id]
    assert details.driver_info is not None, logs[-3000:]
    # The monitoring fan-out ran: the incident's TensorBoard tags are on disk,
    # and the per-iteration health record carries the critic's Q statistics.
    tags = _tensorboard_tags(runs)
    assert {"debug/actor_q_mean", "debug/target_q_max", "reward_components/total"} <= tags, tags
    (metrics,) = runs.glob("*/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert records[-1]["env_steps"] >= 300
    assert any(key.endswith("/q_actor_mean") for key in records[-1]), records[-1]


def _placement_on_cluster() -> dict:
    """In a fresh interpreter (no other Ray connection): build the training
    algorithm on a 3-node cluster and report where its actors run."""
    import ray
    from ray.cluster_utils import Cluster

    from rllib_av.run_config import load_run_config
    from rllib_av.training import build_td3_config

    os.chdir(ROOT)
    # Plenty of CPUs everywhere: only the custom resources may decide placement.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    carla_node = cluster.add_node(num_cpus=4, resources={"carla_slot": 2})
    gpu_node = cluster.add_node(num_cpus=4, resources={"learner_gpu": 1})
    ray.init(address=cluster.address)
    algo = None
    try:
        config = load_run_config(QUICKSTART, [
            "resources.num_env_runners=2",
            "resources.env_runner_resources={carla_slot: 1}",
            "resources.num_learners=1",
            "resources.learner_resources={learner_gpu: 1}",
            "monitoring.exporter_port=0",
        ])
        algo = build_td3_config(config).build_algo()
        node_id = lambda _actor: ray.get_runtime_context().get_node_id()  # noqa: E731
        return {
            "carla": carla_node.node_id, "gpu": gpu_node.node_id,
            "head": cluster.head_node.node_id,
            "env_runners": algo.env_runner_group.foreach_env_runner(
                node_id, local_env_runner=False),
            "learners": [r.get() for r in algo.learner_group.foreach_learner(node_id)],
        }
    finally:
        if algo is not None:
            algo.stop()
        ray.shutdown()
        cluster.shutdown()


def test_env_runners_on_carla_slot_node_learner_on_gpu_node():
    pytest.importorskip("rllib_av.training", reason="rllib_av.training not available yet")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        where = pool.apply(_placement_on_cluster)
    assert len(where["env_runners"]) == 2
    assert set(where["env_runners"]) == {where["carla"]}
    assert where["learners"] and set(where["learners"]) == {where["gpu"]}
