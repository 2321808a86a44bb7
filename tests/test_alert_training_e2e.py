"""Real short training runs scraped by a real Prometheus: a run made to
diverge on purpose (the tests' InflatedBootstrap learner, broken_learners.py)
pages through Alertmanager, while a healthy run trained beside it raises no
alert and every Grafana panel query returns data for it.

Needs the lead's entry point ``rllib_av.training.train`` (skipped until then).
"""

import glob
import json
import os
import threading

import pytest

from rllib_av.monitoring.callbacks import PORT_FILE
from rllib_av.monitoring.local_stack import LocalStack, wait_until

training = pytest.importorskip("rllib_av.training")
from rllib_av.run_config import load_run_config  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart.yaml")
DASHBOARDS = glob.glob(os.path.join(os.path.dirname(__file__), "..", "cluster", "grafana",
                                    "dashboards", "*.json"))


def start_training(tmp_path, name, *extra):
    cfg = load_run_config(CONFIG, [f"run.name={name}", f"run.output_dir={tmp_path}",
                                   "run.total_env_steps=3000", "training.learning_starts=200",
                                   "monitoring.exporter_port=0", *extra])
    outcome = {}

    def target():
        try:
            outcome["run_dir"] = training.train(cfg)
        except BaseException as e:  # surfaced by the test
            outcome["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    port_file = wait_until(lambda: glob.glob(f"{tmp_path}/{name}*/{PORT_FILE}"), 180,
                           f"{name} exporter port file")[0]
    # Series carry run = the run directory's name, config = run.name.
    return t, outcome, f"127.0.0.1:{int(open(port_file).read())}", os.path.basename(
        os.path.dirname(port_file))


def of_run(alerts, run, instance):
    """The alerts about one run: labelled with it, or with its exporter's address."""
    return [a for a in alerts
            if a["labels"].get("run") == run or a["labels"].get("instance") == instance]


@pytest.mark.slow
def test_diverging_training_run_pages_healthy_run_stays_silent(ray_local, tmp_path):
    """Two real runs side by side, scraped by one Prometheus: the run made to
    diverge pages; the healthy one fills every Grafana panel and raises nothing."""
    t_div, out_div, diverging, div_run = start_training(tmp_path, "diverging",
                                                        "training.learner_class="
                                                        "broken_learners:InflatedBootstrap")
    # Probes every 3 iterations: the overestimation panel has data early in the run.
    t_ok, out_ok, healthy, run = start_training(tmp_path, "healthy", "health.probe_every_iters=3")
    with LocalStack([diverging, healthy]) as stack:
        page = wait_until(lambda: [a for a in stack.webhook.alerts()
                                   if a["labels"]["alertname"] == "RllibAvQBeyondBound"],
                          300, "RllibAvQBeyondBound from a real run")[0]
        samples = stack.query(f'rllib_av_q_bound_ratio{{run="{div_run}"}}[30m]')[0]["values"]
        first = min(float(ts) for ts, v in samples if float(v) > 1)
        print(f"real run: first scrape beyond bound -> webhook {page['t'] - first:.1f}s")
        assert page["labels"]["run"] == div_run and page["labels"]["config"] == "diverging"
        assert page["path"] == "/page"

        # The healthy run learns (its updates, a probe and a finished episode are scraped:
        # the episode panels have nothing to show before its first episode ends, and an
        # unloaded machine gets here within the first 200-step episode) over the same time...
        wait_until(lambda: stack.query(f'rllib_av_q_bound{{run="{run}"}}') and
                   stack.query(f'rllib_av_overestimation_bias{{run="{run}"}}') and
                   stack.query(f'rllib_av_episode_length_mean{{run="{run}"}}') and stack.query(
                       f'count_over_time(rllib_av_learner_updates_total{{run="{run}"}}[10s]) >= 5'),
                   300, "the healthy run's learner metrics, a probe and an episode scraped")
        empty = []
        for path in DASHBOARDS:
            for p in json.load(open(path))["panels"]:
                for tgt in p["targets"]:
                    expr = (tgt["expr"].replace("$run", run).replace("$module", "default_policy")
                            .replace("$__rate_interval", "10s"))
                    if not stack.query(expr):
                        empty.append(f'{p["title"]}: {expr}')
        # ...and nothing about it fires or pages.
        firing = stack.firing()
        sent = stack.webhook.alerts()
    t_div.join(600)
    t_ok.join(600)
    assert "error" not in out_div, out_div.get("error")
    assert "error" not in out_ok, out_ok.get("error")
    assert not empty, empty
    assert not of_run(firing, run, healthy), [
        (a["labels"]["alertname"], a["annotations"]["description"]) for a in of_run(firing, run, healthy)]
    assert not of_run(sent, run, healthy), of_run(sent, run, healthy)
