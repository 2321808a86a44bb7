"""The exporter and TensorBoard writer fed synthetic TD3-shaped results."""

import glob
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorboardX.proto import event_pb2

from rllib_av.health.divergence import DivergenceState
from rllib_av.monitoring.exporter import HealthExporter
from rllib_av.monitoring.iteration_metrics import from_result
from rllib_av.monitoring.metrics_server import MetricsServerError
from rllib_av.monitoring.synthetic_results import Q_BOUND, STEPS_PER_ITER, synthetic_result
from rllib_av.monitoring.tensorboard_writer import TensorBoardWriter

# DESIGN.md's metric table: name -> (type, labels beyond `run`).
DESIGN_METRICS = {
    **{n: ("gauge", {"module"}) for n in (
        "q_actor_mean", "q_actor_max", "q_actor_min", "q_actor_std", "q_target_mean",
        "q_target_max", "q_target_min", "q1_mean", "q2_mean", "q_bound", "q_bound_ratio",
        "critic_loss", "actor_loss", "td_error_abs_mean", "divergence_state")},
    "grad_norm": ("gauge", {"module", "network"}),
    "reward_component_mean": ("gauge", {"component"}),
    "reward_component_share": ("gauge", {"component"}),
    "episode_return_mean": ("gauge", set()),
    "episode_length_mean": ("gauge", set()),
    "env_steps": ("counter", set()),
    "learner_updates": ("counter", {"module"}),
    "env_runners_healthy": ("gauge", set()),
    "env_runner_restarts": ("counter", set()),
    "sim_server_restarts": ("counter", set()),
    "nonfinite": ("counter", {"where"}),
}


@pytest.fixture
def exporter():
    e = HealthExporter("unit", "127.0.0.1", 0)
    yield e
    e.close()


def scrape(e):
    with urllib.request.urlopen(f"http://127.0.0.1:{e.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    fam = fams[name]
    suffix = "_total" if fam.type == "counter" else ""
    hits = [s.value for s in fam.samples if s.name == name + suffix
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, fam.samples)
    return hits[0]


def test_every_design_metric_is_served_with_its_type_and_labels(exporter):
    for i in range(2):
        exporter.update(from_result(synthetic_result(i), num_env_runners=2))
    exporter.set_divergence({"default_policy": DivergenceState.HEALTHY})
    fams = scrape(exporter)
    for short, (kind, labels) in DESIGN_METRICS.items():
        fam = fams.get("rllib_av_" + short)
        assert fam is not None, short
        assert fam.type == kind, short
        sample = next(s for s in fam.samples if not s.name.endswith("_created"))
        assert set(sample.labels) == {"run"} | labels, short
        assert sample.labels["run"] == "unit"
    # Counters follow RLlib's lifetime totals: the second iteration adds its delta only.
    assert value(fams, "rllib_av_env_steps") == 2 * STEPS_PER_ITER
    assert value(fams, "rllib_av_learner_updates", module="default_policy") == 200
    assert value(fams, "rllib_av_q_bound", module="default_policy") == pytest.approx(Q_BOUND)
    assert value(fams, "rllib_av_grad_norm", network="critic") == 30.0
    assert value(fams, "rllib_av_env_runners_healthy") == 2
    shares = {c: value(fams, "rllib_av_reward_component_share", component=c)
              for c in ("efficiency", "lane_keeping", "comfort", "safety", "progress")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["efficiency"] == pytest.approx(0.6 / 1.37)
    assert value(fams, "rllib_av_reward_component_mean", component="total") == pytest.approx(1.23)


def test_results_without_components_or_learner_stats_are_served(exporter):
    # Pendulum-like: no reward components; first iterations: no learner stats yet.
    result = synthetic_result(0, with_components=False)
    del result["learners"]
    exporter.update(from_result(result, num_env_runners=0))
    fams = scrape(exporter)
    assert value(fams, "rllib_av_episode_return_mean") == 120.0
    assert value(fams, "rllib_av_env_runners_healthy") == 1  # the local EnvRunner
    assert not [s for s in fams["rllib_av_reward_component_mean"].samples]
    assert value(fams, "rllib_av_nonfinite", where="loss") == 0


def test_nonfinite_lifetime_totals_become_counters(exporter):
    # TD3 reports lifetime totals: learner steps skipped, replay chunks dropped.
    result = synthetic_result(3)
    result["nonfinite"] = {"replay_chunks_dropped": 2.0}
    result["learners"]["default_policy"]["nonfinite_grads"] = 1.0
    assert exporter.update(from_result(result, num_env_runners=2)) == 3
    result["learners"]["default_policy"]["nonfinite_grads"] = 4.0
    assert exporter.update(from_result(result, num_env_runners=2)) == 3
    assert exporter.update(from_result(result, num_env_runners=2)) == 0
    fams = scrape(exporter)
    assert value(fams, "rllib_av_nonfinite", where="replay") == 2
    assert value(fams, "rllib_av_nonfinite", where="grads") == 4
    assert value(fams, "rllib_av_nonfinite", where="loss") == 0


def test_restarts_come_from_rllib_fault_tolerance_stats(exporter):
    result = synthetic_result(1)
    result["fault_tolerance"] = {"num_healthy_workers": 1, "num_remote_worker_restarts": 3}
    exporter.update(from_result(result, num_env_runners=2))
    fams = scrape(exporter)
    assert value(fams, "rllib_av_env_runner_restarts") == 3
    assert value(fams, "rllib_av_env_runners_healthy") == 1
    assert value(fams, "rllib_av_env_runners_desired") == 2


def read_scalars(logdir):
    """tag -> [(step, value)] from tensorboardX event files (TFRecord framing)."""
    out = {}
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_keeps_the_incident_tags(tmp_path):
    w = TensorBoardWriter(str(tmp_path))
    for i in range(2):
        w.write(from_result(synthetic_result(i, diverge_from=1), 2), {"default_policy": 0})
    w.close()
    tags = read_scalars(tmp_path)
    for t in ("debug/actor_q_mean", "debug/actor_q_max", "debug/actor_q_min", "debug/actor_q_std",
              "debug/target_q_mean", "debug/target_q_max", "reward_components/efficiency",
              "reward_components/lane_keeping", "reward_components/comfort",
              "reward_components/safety", "reward_components/progress", "reward_components/total",
              "health/q_bound_ratio", "health/divergence_state"):
        assert t in tags, t
    # Steps are env steps sampled; iteration 1 is where Q leaves the bound.
    assert tags["debug/actor_q_max"] == [(200, 800.0), (400, pytest.approx(3 * Q_BOUND))]


def test_a_taken_port_is_one_error_naming_host_and_port(exporter):
    with pytest.raises(MetricsServerError, match=f"cannot listen on 127.0.0.1:{exporter.port}: "):
        HealthExporter("other", "127.0.0.1", exporter.port)


def test_the_metrics_server_dies_with_a_killed_driver():
    driver = subprocess.Popen([sys.executable, "-c", (
        "import time; from rllib_av.monitoring.exporter import HealthExporter; "
        "print(HealthExporter('killed', port=0).port, flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE)
    port = int(driver.stdout.readline())
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).close()
    driver.kill()  # SIGKILL: no close(), no atexit
    driver.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    pytest.fail(f"port {port} still served after the driver was killed")
