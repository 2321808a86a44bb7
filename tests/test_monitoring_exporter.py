"""The exporter and TensorBoard writer fed synthetic TD3-shaped results, judged
by the health monitor as in training."""

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

from rllib_av.config_schema import ConfigError
from rllib_av.health.health_monitor import HealthMonitor
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.statistics import STATISTICS
from rllib_av.monitoring.callbacks import start_exporter
from rllib_av.monitoring.exporter import FAMILIES, HealthExporter
from rllib_av.monitoring.metrics_server import MetricsServerError
from rllib_av.monitoring.monitoring_settings import DEFAULT_EXPORTER_PORT, MonitoringSettings
from rllib_av.monitoring.synthetic_results import Q_BOUND, STEPS_PER_ITER, synthetic_result
from rllib_av.monitoring.tensorboard_writer import TensorBoardWriter

from scrape import served_page

# The design's metric table: name -> (type, labels beyond `run`).
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
    e = HealthExporter("unit-20260101-000000", "127.0.0.1", 0, config="unit")
    yield e
    e.close()


def feed(exporter, results, num_env_runners=2):
    monitor = HealthMonitor(HealthSettings(), num_env_runners)
    for r in results:
        exporter.publish(monitor.judge(r))
    return monitor


def scrape(e):
    """The served page's families once the server has the latest page."""
    return {f.name: f for f in text_string_to_metric_families(served_page(e))}


def value(fams, name, **labels):
    fam = fams[name]
    suffix = "_total" if fam.type == "counter" else ""
    hits = [s.value for s in fam.samples if s.name == name + suffix
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, fam.samples)
    return hits[0]


def test_every_design_metric_is_served_with_its_type_and_labels(exporter):
    feed(exporter, [synthetic_result(i) for i in range(2)])
    fams = scrape(exporter)
    for short, (kind, labels) in DESIGN_METRICS.items():
        fam = fams.get("rllib_av_" + short)
        assert fam is not None, short
        assert fam.type == kind, short
        sample = next(s for s in fam.samples if not s.name.endswith("_created"))
        assert set(sample.labels) == {"run", "config"} | labels, short
        # run: the run directory's name (unique per run); config: the config's name.
        assert sample.labels["run"] == "unit-20260101-000000" and sample.labels["config"] == "unit"
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
    result["env_runners"]["num_env_steps_sampled"] = 200.0
    feed(exporter, [result], num_env_runners=0)
    fams = scrape(exporter)
    assert value(fams, "rllib_av_episode_return_mean") == 120.0
    assert value(fams, "rllib_av_env_runners_healthy") == 1  # the local EnvRunner sampled
    assert not [s for s in fams["rllib_av_reward_component_mean"].samples]
    assert value(fams, "rllib_av_nonfinite", where="loss") == 0


def test_a_local_env_runner_that_sampled_nothing_is_not_healthy(exporter):
    """Sampling in the driver, env_runners_healthy measures whether it sampled
    (it used to be a constant 1)."""
    result = synthetic_result(0)
    result["env_runners"]["num_env_steps_sampled"] = 0.0
    feed(exporter, [result], num_env_runners=0)
    assert value(scrape(exporter), "rllib_av_env_runners_healthy") == 0


def test_nonfinite_lifetime_totals_become_counters(exporter):
    # TD3 reports lifetime totals: learner steps skipped, chunks dropped for a
    # NaN/inf observation or reward (one with both counts in both).
    results = [synthetic_result(i) for i in range(3, 6)]
    results[0]["nonfinite"] = {"obs": 2.0, "reward": 1.0}
    results[0]["learners"]["default_policy"]["nonfinite_grads"] = 1.0
    results[1]["nonfinite"] = {"obs": 7.0, "reward": 1.0}
    results[1]["learners"]["default_policy"]["nonfinite_grads"] = 4.0
    results[2] = dict(results[1], training_iteration=results[2]["training_iteration"])
    monitor = HealthMonitor(HealthSettings(), 2)
    new = []
    for r in results:
        health = monitor.judge(r)
        exporter.publish(health)
        new.append(sum(n for (name, _), n in health.new.items() if name == "nonfinite"))
    assert new == [0, 8, 0]  # the first result of a resumed process has no base
    fams = scrape(exporter)
    assert value(fams, "rllib_av_nonfinite", where="grads") == 3
    assert value(fams, "rllib_av_nonfinite", where="obs") == 5
    assert value(fams, "rllib_av_nonfinite", where="reward") == 0
    assert value(fams, "rllib_av_nonfinite", where="loss") == 0


def test_counters_keep_counting_through_a_rollback(exporter):
    """A guard rollback restores RLlib's lifetime totals to the checkpoint's:
    the exported counter neither stalls until it passes its old maximum nor jumps."""
    results = [synthetic_result(i) for i in range(5)]   # iterations 1..5, 200 steps each
    results += [synthetic_result(i) for i in (2, 3)]    # restored to iteration 2's checkpoint
    feed(exporter, results)
    assert value(scrape(exporter), "rllib_av_env_steps") == 7 * STEPS_PER_ITER


def test_learner_gauges_are_absent_in_an_iteration_without_an_update(exporter):
    """No stale numbers: an iteration without a gradient update has no learner
    statistics, so none are served (the verdict still is)."""
    idle = synthetic_result(1)
    idle["learners"]["default_policy"] = {"num_module_steps_trained": float("nan"),
                                          "num_updates_lifetime": 200.0}
    feed(exporter, [synthetic_result(0), idle])
    fams = scrape(exporter)
    for s in STATISTICS:
        assert not fams["rllib_av_" + (s.metric or s.key)].samples, s.key
    assert value(fams, "rllib_av_divergence_state", module="default_policy") == 0
    assert value(fams, "rllib_av_learner_updates", module="default_policy") == 200


def test_help_says_exactly_what_each_number_is(exporter):
    fams = scrape(exporter)
    for f in FAMILIES:  # the parser strips a counter's _total, not an info's _info
        name = f.served_name if f.type == "info" else "rllib_av_" + f.name
        assert fams[name].documentation == f.help
    assert fams["rllib_av_actor_loss"].documentation == (
        "Mean over the iteration's actor updates of the actor loss -mean Q1(s, mu(s)) on the batch")
    assert fams["rllib_av_q_actor_max"].documentation.startswith(
        "Max over the iteration's actor updates of the batch max of Q1(s, mu(s))")
    assert "q_target_min" in fams["rllib_av_q_bound_ratio"].documentation


def test_restarts_come_from_rllib_fault_tolerance_stats(exporter):
    result = synthetic_result(0)
    result["fault_tolerance"] = {"num_healthy_workers": 1, "num_remote_worker_restarts": 3}
    feed(exporter, [result])
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
    monitor = HealthMonitor(HealthSettings(), 2)
    for i in range(2):
        w.write(monitor.judge(synthetic_result(i, diverge_from=1)))
    w.close()
    tags = read_scalars(tmp_path)
    for t in ("debug/actor_q_mean", "debug/actor_q_max", "debug/actor_q_min", "debug/actor_q_std",
              "debug/target_q_mean", "debug/target_q_max", "debug/target_q_min",
              "reward_components/efficiency",
              "reward_components/lane_keeping", "reward_components/comfort",
              "reward_components/safety", "reward_components/progress", "reward_components/total",
              "health/q_bound_ratio", "health/divergence_state"):
        assert t in tags, t
    # Steps are env steps sampled; iteration 1 is where Q leaves the bound.
    assert tags["debug/actor_q_max"] == [(200, 800.0), (400, pytest.approx(3 * Q_BOUND))]
    assert tags["health/divergence_state"] == [(200, 0.0), (400, 2.0)]


def test_a_taken_port_is_one_error_naming_host_and_port(exporter):
    with pytest.raises(MetricsServerError, match=f"cannot listen on 127.0.0.1:{exporter.port}: "):
        HealthExporter("other", "127.0.0.1", exporter.port)


def test_a_port_asked_for_explicitly_suggests_any_free_port(exporter, tmp_path):
    mon = MonitoringSettings(exporter_port=exporter.port)
    with pytest.raises(ConfigError) as e:
        start_exporter(mon, "second", str(tmp_path / "second-run"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"monitoring.exporter_port: {exporter.port} ")
    assert "set monitoring.exporter_port=0 for any free port" in msg
    assert not (tmp_path / "second-run").exists()  # nothing left behind


def test_a_second_run_on_the_default_port_gets_a_free_one_and_says_which(tmp_path, caplog):
    first = start_exporter(MonitoringSettings(), "quickstart", str(tmp_path / "a"))
    try:
        with caplog.at_level("WARNING"):
            second = start_exporter(MonitoringSettings(), "quickstart", str(tmp_path / "b"))
        try:
            assert second.port != first.port and second.port != DEFAULT_EXPORTER_PORT
            assert (tmp_path / "b" / "exporter_port").read_text() == f"{second.port}\n"
            said = " ".join(r.getMessage() for r in caplog.records)
            assert f"127.0.0.1:{DEFAULT_EXPORTER_PORT}" in said
            assert f"serving on 127.0.0.1:{second.port} instead" in said
            urllib.request.urlopen(f"http://127.0.0.1:{second.port}/metrics", timeout=5).close()
        finally:
            second.close()
    finally:
        first.close()


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


def test_an_address_not_of_this_machine_names_the_host():
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    with pytest.raises(ConfigError, match=r"^monitoring.exporter_host: '192.0.2.77' is not "
                                          r"allowed \(cannot listen on 192.0.2.77:0: .*\); "
                                          r"expected an address of this machine$"):
        start_exporter(MonitoringSettings(exporter_host="192.0.2.77"), "x", None)


def test_a_taken_port_is_refused_before_ray_starts_or_a_run_dir_exists(exporter, tmp_path, capsys):
    """`rllib-av train` with the port of a running exporter: one line, exit 2,
    no run directory (the check runs before Ray starts)."""
    from rllib_av.cli import main

    code = main(["train", "--set", "env.id=Pendulum-v1", "--set", f"run.output_dir={tmp_path}",
                 "--set", f"monitoring.exporter_port={exporter.port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"rllib-av: error: monitoring.exporter_port: {exporter.port} is not "
                      f"available (cannot listen on 127.0.0.1:{exporter.port}: Address already in "
                      "use); set monitoring.exporter_port=0 for any free port")
    assert not list(tmp_path.iterdir())


def test_the_verdicts_reasons_are_served_while_it_is_not_healthy(exporter):
    """Why the run is not healthy, on the exporter: one info series per rule
    that fired (an alert annotation quotes it), gone once healthy again."""
    monitor = HealthMonitor(HealthSettings(), 2)
    exporter.publish(monitor.judge(synthetic_result(3, diverge_from=2)))
    reasons = {s.labels["rule"]: s for s in scrape(exporter)["rllib_av_health_reason_info"].samples}
    assert set(reasons) == {"q_bound", "actor_loss"}  # Q and the actor loss past the bound
    reason = reasons["q_bound"]
    assert reason.value == 1 and reason.labels["state"] == "diverged"
    assert reason.labels["subject"] == "q_actor_max running off upward"
    assert reason.labels["threshold"] == "warning > 0.9, diverged > 1"
    assert "within +/- q_bound" in reason.labels["why"]  # why the threshold holds
    assert reasons["actor_loss"].labels["subject"] == "mean actor Q running off upward"
    assert reason.labels["run"] == "unit-20260101-000000" and reason.labels["module"] == (
        "default_policy")
    exporter.publish(monitor.judge(synthetic_result(4)))
    assert not scrape(exporter)["rllib_av_health_reason_info"].samples


def test_a_run_diverged_for_many_iterations_keeps_one_reason_series_per_rule(exporter):
    """The numbers change every iteration (Q keeps growing, NaN counts vary),
    the situation does not: the reason series' labels carry no numbers, so a
    long diverged run leaves one series per rule, not one per iteration."""
    monitor = HealthMonitor(HealthSettings(), 2)
    seen, numbers, skipped = set(), set(), 0.0
    for i in range(2, 40):
        r = synthetic_result(i, diverge_from=2)
        skipped += i % 3 + 1  # learner steps skipped for NaN grads, a few more each iteration
        r["learners"]["default_policy"]["nonfinite_grads"] = skipped
        health = monitor.judge(r)
        numbers.add(tuple(f.measured for f in health.verdicts["default_policy"].findings))
        exporter.publish(health)
        seen |= {tuple(sorted(s.labels.items()))
                 for s in scrape(exporter)["rllib_av_health_reason_info"].samples}
    assert len(numbers) == 38  # every iteration measured other numbers
    rules = [dict(labels)["rule"] for labels in seen]
    # nonfinite: a warning first, then diverged (a change of situation): two.
    assert sorted(rules) == ["actor_loss", "nonfinite", "nonfinite", "q_bound"], seen


def test_the_thresholds_the_verdict_used_are_served_for_the_alert_rules(exporter):
    """The alert rules compare against the run's own thresholds: defaults, the
    preset's and the config's, and none for a threshold the run leaves unset."""
    monitor = HealthMonitor(HealthSettings(), 2)
    exporter.publish(monitor.judge(synthetic_result(1)))
    served = {s.labels["setting"]: s.value
              for s in scrape(exporter)["rllib_av_health_threshold"].samples}
    assert served == {"q_bound_warn_ratio": 0.9, "q_bound_diverge_ratio": 1.0,
                      "nonfinite_diverge_iters": 3.0}  # no grad norm, no |actor loss| scale
    driving = HealthMonitor(HealthSettings(preset="driving", grad_norm_warn=50.0), 2)
    exporter.publish(driving.judge(synthetic_result(1)))
    served = {s.labels["setting"]: s.value
              for s in scrape(exporter)["rllib_av_health_threshold"].samples}
    assert served["grad_norm_warn"] == 50.0 and served["grad_norm_diverge"] == 1e6
    assert served["actor_loss_abs_max"] == 1e5


def test_what_a_probe_found_wrong_stands_in_the_verdict_until_the_next_probe():
    monitor = HealthMonitor(HealthSettings(), 2)
    unmasked = {"terminal_masking": "unmasked", "terminal_transitions": 40,
                "terminal_target_max_diff": 17.2, "terminal_bootstrap_abs_mean": 7.3}
    monitor.note_probe(unmasked)
    for i in range(2):
        verdict = monitor.judge(synthetic_result(i)).verdicts["default_policy"]
        assert verdict.state == 1 and verdict.reasons == [
            "warning: terminal_masking: max |target - r| 17.2 on 40 terminal rows (bootstrap "
            "term there 7.3) (threshold target == r on every terminal row; a terminal "
            "transition has no next state: the Bellman target must be r alone, exactly, "
            "whatever the critic has learned; anything else bootstraps through the end)"]
    monitor.note_probe({**unmasked, "terminal_masking": "ok"})
    assert monitor.judge(synthetic_result(2)).verdicts["default_policy"].state == 0
