"""`rllib-av monitor RUN_DIR`: a run's metrics.jsonl backfilled into a real
Prometheus under the names and labels its live exporter serves, a live exporter
scraped on top, the project's alert rules evaluated over a finished run's
history, and Ctrl-C stopping everything it started."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from rllib_av.health.iteration_metrics import from_result
from rllib_av.monitoring.local_stack import http_json
from rllib_av.monitoring.run_history import run_history
from rllib_av.monitoring.synthetic_results import SyntheticRun, synthetic_result
from rllib_av.training import _flat_record

from scrape import served_page

STEP_S = 10.0  # seconds between the synthetic run's iterations


def write_run(run_dir, iterations, diverge_from=None, end=None):
    """A run directory as training leaves it: config.yaml and metrics.jsonl lines
    made from TD3-shaped results, the last one written at ``end``."""
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write("run: {name: synth}\nmonitoring: {exporter_host: 127.0.0.1}\n")
    end = time.time() - 5 if end is None else end
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for i in range(iterations):
            result = synthetic_result(i, diverge_from)
            q_ratio = result["learners"]["default_policy"]["q_bound_ratio"]
            result["health"] = {"divergence_state": {"default_policy": 2 if q_ratio > 1 else 0}}
            record = _flat_record(result, from_result(result, 2))
            record["time_s"] = end - (iterations - 1 - i) * STEP_S
            f.write(json.dumps(record) + "\n")
    with open(os.path.join(run_dir, "probes.jsonl"), "w") as f:
        f.write(json.dumps({"training_iteration": iterations, "overestimation_bias": 4.5}) + "\n")
    with open(os.path.join(run_dir, "guard.jsonl"), "w") as f:
        f.write(json.dumps({"time_s": end, "action": "alert"}) + "\n")
    return run_dir


def families(parsed):
    """{family: set of label names} of parsed metric families."""
    return {f.name: {k for s in f.samples for k in s.labels} for f in parsed}


def test_history_carries_the_live_exporters_names_and_labels(tmp_path):
    feed = SyntheticRun("synth", period=3600)
    try:
        feed.exporter.publish(feed._health.judge(synthetic_result(1)))
        feed.exporter.set_overestimation_bias("default_policy", 1.0)
        live = families(text_string_to_metric_families(served_page(feed.exporter)))
    finally:
        feed.close()
    run = write_run(str(tmp_path / "synth-20260101-000000"), 5)
    text = run_history(run, {"run": "synth", "config": "synthetic"}).openmetrics()
    history = families(parse_openmetrics(text))  # strict: what promtool reads
    assert len(history) >= 15
    for name, labels in history.items():
        assert name in live, f"{name} is not a metric the exporter serves"
        assert labels == live[name], (name, labels, live[name])
    # Values at the times they were written: the last record's env steps.
    last = json.loads(open(os.path.join(run, "metrics.jsonl")).read().splitlines()[-1])
    assert re.search(rf'^rllib_av_env_steps_total\{{config="synthetic",run="synth"\}} '
                     rf'{last["env_steps"]:.1f} '
                     rf'{last["time_s"]:.3f}$', text, re.M), text[:2000]


def _start_monitor(run_dir):
    proc = subprocess.Popen([sys.executable, "-m", "rllib_av.cli", "monitor", run_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # bounded: the command prints these within seconds
        lines.append(line.rstrip())
        if "Ctrl-C stops" in line:
            break
    prom = re.search(r"Prometheus\s+(http://127\.0\.0\.1:\d+)", "\n".join(lines))
    assert prom, "\n".join(lines)
    return proc, lines, prom.group(1)


def _stop(proc):
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    rest, _ = proc.communicate(timeout=60)
    return proc.returncode, rest


def _range(prom, expr, start, end):
    url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": 10})
    return http_json(url)["data"]["result"]


@pytest.mark.slow
def test_finished_run_history_and_alert_conditions(tmp_path):
    end = time.time() - 5
    run = write_run(str(tmp_path / "synth-20260101-000000"), 30, diverge_from=20, end=end)
    proc, lines, prom = _start_monitor(run)
    try:
        out = "\n".join(lines)
        assert "not running" in out
        # Q left the bound for the last 10 iterations (100 s): the 0s-for alert would fire.
        assert re.search(r"RllibAvQBeyondBound: .*would have fired", out), out
        series = _range(prom, 'rllib_av_q_bound_ratio{run="synth-20260101-000000",config="synth"}',
                        end - 30 * STEP_S, end)
        assert len(series) == 1 and max(float(v) for _, v in series[0]["values"]) > 1
        assert _range(prom, "rllib_av_guard_actions_total", end - 300, end)
    finally:
        code, rest = _stop(proc)
    assert code == 0 and "stopping Prometheus and Alertmanager" in rest, rest
    with pytest.raises(OSError):
        urllib.request.urlopen(prom, timeout=5)


@pytest.mark.slow
def test_running_run_is_scraped_on_top_of_its_history(tmp_path):
    feed = SyntheticRun("live", period=1.0)
    try:
        run = write_run(str(tmp_path / "live-20260101-000000"), 10)
        with open(os.path.join(run, "exporter_port"), "w") as f:
            f.write(f"{feed.exporter.port}\n")
        proc, lines, prom = _start_monitor(run)
        try:
            assert f"running, exporter {feed.target}" in "\n".join(lines)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the first scrape (every 10 s)
                url = f"{prom}/api/v1/query?query=" + urllib.parse.quote("up{job='rllib_av'}")
                if http_json(url)["data"]["result"]:
                    break
                time.sleep(1)
            now = time.time()
            # Backfilled and scraped samples continue one series: same labels.
            series = _range(prom, "rllib_av_env_steps_total", now - 150, now)
            assert len(series) == 1, series
            assert series[0]["metric"]["run"] == "live"
        finally:
            code, rest = _stop(proc)
        assert code == 0, rest
    finally:
        feed.close()
