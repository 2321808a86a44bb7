"""Training on a real Ray cluster, as a user deploys it.

1. The on-prem launcher's head, started by cluster/ray/onprem.yaml's own
   ``head_start_ray_commands`` run as written (in a node-like home: the
   checkout at ~/rllib_av, the venv at ~/rllib_av-venv, the token at
   ~/.ray/auth_token, as ``ray up`` leaves them), then the first job the
   YAML documents, submitted with ``ray job submit`` and token auth exactly as
   written there. The head gets no PATH help: it finds ``rllib-av`` only if
   the YAML puts the venv on its PATH. It all runs in private PID, network and
   mount namespaces, so ``ray stop`` and the fixed ports (6379, 8265, 8080)
   touch nothing else on a shared machine.
2. A multi-node ``ray.cluster_utils.Cluster``: EnvRunners land only on the node
   offering ``carla_slot``, the learner only on the node offering the (simulated)
   GPU resource.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ONPREM = ROOT / "cluster" / "ray" / "onprem.yaml"
QUICKSTART = "configs/quickstart.yaml"
# A login shell's PATH on a fresh node: no venv on it.
LOGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.slow


def documented_job_submit(path: Path) -> str:
    """The first `ray job submit` command in the YAML's header, as written."""
    header = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(header) if line.startswith("RAY_AUTH_MODE=token ray job submit"))
    lines = [header[start]]
    while lines[-1].endswith("\\"):
        lines.append(header[start + len(lines)])
    return " ".join(line.rstrip("\\").strip() for line in lines)


# Runs inside the namespaces, as root of them. $NODE is the node's /tmp.
NODE_SCRIPT = r"""
set -u
ip link set lo up
mount --bind "$NODE" /tmp
mount -t tmpfs -o size=2g tmpfs /dev/shm
cd "$HOME"
i=0
while IFS= read -r -d '' command; do  # each start command in a fresh login-like shell
    i=$((i + 1))
    env -i HOME="$HOME" USER=root PATH="$LOGIN_PATH" bash -c "$command" > "start_$i.log" 2>&1 \
        || { echo "start command $i failed: $command" >&2; cat "start_$i.log" >&2; exit 3; }
done < start_commands
# Without the token the Job API says 401.
"$PYTHON" -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:8265/api/jobs/', timeout=10)
except urllib.error.HTTPError as e:
    print(e.code)
" > unauthenticated_status
# The client: ray on its PATH, the same token in ~/.ray/auth_token. Ray's job
# agent takes a moment after `ray start`; retry while it says so.
for attempt in $(seq 60); do
    env -i HOME="$HOME" PATH="$CLIENT_PATH" bash -c "$(cat submit_command)" > submit.log 2>&1
    rc=$?
    grep -q "No available agent" submit.log || break
    sleep 2
done
echo $rc > submit_rc
"""


@pytest.fixture(scope="module")
def onprem_job(tmp_path_factory):
    """The head from onprem.yaml's start commands and the YAML's first job;
    returns the node's home directory after the job ended."""
    pytest.importorskip("ray.dashboard.modules.job", reason="the Job API needs ray[default]")
    if subprocess.run(["unshare", "--pid", "--net", "--mount", "--fork", "--mount-proc", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("needs unshare (PID, network and mount namespaces) to run `ray stop` "
                    "and the YAML's fixed ports without touching the rest of the machine")
    node = tmp_path_factory.mktemp("node")  # the node's /tmp; home at /tmp/home
    home = node / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # file_mounts
    (home / "rllib_av").symlink_to(ROOT)  # file_mounts: "~/rllib_av": "."
    (home / "rllib_av-venv").symlink_to(VENV_BIN.parent)  # setup_commands
    # What `ray up` writes for the autoscaler on the head (this node alone).
    config = yaml.safe_load(ONPREM.read_text())
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    (home / "start_commands").write_text(
        "".join(c + "\0" for c in config["head_start_ray_commands"]))
    (home / "submit_command").write_text(documented_job_submit(ONPREM))
    env = dict(NODE=str(node), HOME="/tmp/home", LOGIN_PATH=LOGIN_PATH, PYTHON=sys.executable,
               CLIENT_PATH=f"{VENV_BIN}:{LOGIN_PATH}", PATH=os.environ["PATH"])
    out = subprocess.run(["unshare", "--pid", "--net", "--mount", "--fork", "--mount-proc",
                          "--propagation", "private", "bash", "-c", NODE_SCRIPT],
                         env=env, capture_output=True, text=True, timeout=420)
    # The namespace's first process has exited: every Ray process went with it.
    assert out.returncode == 0, out.stderr[-3000:]
    yield home
    shutil.rmtree(node, ignore_errors=True)


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


def test_the_documented_job_is_the_quickstart_over_the_token_protected_job_api():
    command = documented_job_submit(ONPREM)
    assert command.startswith("RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 -- ")
    assert "rllib-av train --config '~/rllib_av/configs/quickstart.yaml'" in command


def test_job_api_rejects_requests_without_the_token(onprem_job):
    assert (onprem_job / "unauthenticated_status").read_text().strip() == "401"


def test_documented_job_on_the_onprem_head_succeeds_and_exports(onprem_job):
    log = (onprem_job / "submit.log").read_text()
    assert (onprem_job / "submit_rc").read_text().strip() == "0", log[-3000:]
    assert re.search(r"Job '[^']+' succeeded", log), log[-3000:]
    # The job ran on the head, from its home ('~' expanded there), and the
    # monitoring fan-out ran: the incident's TensorBoard tags are on disk and
    # the per-iteration health record carries the critic's Q statistics.
    runs = onprem_job / "runs"
    (metrics,) = runs.glob("quickstart-*/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert records[-1]["env_steps"] >= 600
    assert any(key.endswith("/q_actor_mean") for key in records[-1]), records[-1]
    tags = _tensorboard_tags(runs)
    assert {"debug/actor_q_mean", "debug/target_q_max", "reward_components/total"} <= tags, tags


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
