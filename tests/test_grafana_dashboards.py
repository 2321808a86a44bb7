"""A real exporter fed synthetic TD3 results, scraped by a real Prometheus on
loopback with the project's alert rules: every Grafana panel query and alert
annotation query (template variables substituted) returns data, and the
dashboards' template variables list the run. The synthetic run's Q leaves the
bound after a few iterations, so the Q-bound alert fires and ALERTS has a series."""

import glob
import json
import os
import re
import urllib.parse

import pytest

from rllib_av.monitoring.local_stack import LocalStack, http_json, wait_until
from rllib_av.monitoring.synthetic_results import STEPS_PER_ITER, UPDATES_PER_ITER, SyntheticRun

DASHBOARDS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "cluster",
                                           "grafana", "dashboards", "*.json")))
# Grafana's built-ins as it would resolve them for a 1s-scraped Prometheus.
GRAFANA_VARS = {"$__rate_interval": "10s", "$__interval": "1s"}


def substitute(expr, run):
    for k, v in dict(GRAFANA_VARS, **{"$run": run, "$module": "default_policy"}).items():
        expr = expr.replace(k, v)
    return expr


@pytest.fixture(scope="module")
def stack():
    feed = SyntheticRun("dash", period=0.5, diverge_from=6)
    # What the overestimation probe publishes at the end of a probe round.
    feed.exporter.set_overestimation_bias("default_policy", 12.5)
    try:
        with LocalStack([feed.target]) as s:
            # rate() over 10s needs a few scrapes of the counters.
            wait_until(lambda: s.query("count_over_time(rllib_av_env_steps_total[10s]) >= 5"),
                       60, "5 scrapes of the exporter")
            wait_until(lambda: s.query('ALERTS{alertstate="firing",run="dash"}'), 60,
                       "the Q-bound alert firing")
            yield s
    finally:
        feed.close()


@pytest.mark.slow
@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_every_panel_query_returns_data(stack, path):
    d = json.load(open(path))
    empty = []
    for p in d["panels"]:
        for t in p["targets"]:
            expr = substitute(t["expr"], "dash")
            if not stack.query(expr):
                empty.append(f'{p["title"]}: {expr}')
    assert not empty, empty


@pytest.mark.slow
@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_alert_annotations_come_from_prometheus_alerts(stack, path):
    annotations = json.load(open(path)).get("annotations", {}).get("list", [])
    exprs = [a["expr"] for a in annotations if "expr" in a]
    assert any(e.startswith("ALERTS{") for e in exprs), path
    for expr in exprs:
        assert stack.query(substitute(expr, "dash")), expr


# Statistics whose values span decades when a critic diverges (Q, losses,
# gradient norms): their panels need a log or symlog axis to show both regimes.
DECADES = re.compile(r"rllib_av_(q_actor|q_target|q1|q2|critic_loss|actor_loss|grad_norm|"
                     r"q_bound_ratio|overestimation_bias)")


@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_panels_of_values_spanning_decades_use_log_scales(path):
    for p in json.load(open(path))["panels"]:
        if p["type"] == "timeseries" and any(DECADES.search(t["expr"]) for t in p["targets"]):
            dist = p["fieldConfig"]["defaults"].get("custom", {}).get("scaleDistribution", {})
            assert dist.get("type") in ("log", "symlog"), p["title"]


def test_q_health_shows_ratio_over_time_guard_actions_and_overestimation():
    path = next(d for d in DASHBOARDS if d.endswith("q_health.json"))
    series = {t["expr"].split("{")[0].split("(")[-1]
              for p in json.load(open(path))["panels"] if p["type"] == "timeseries"
              for t in p["targets"]}
    assert {"rllib_av_q_bound_ratio", "rllib_av_guard_actions_total",
            "rllib_av_overestimation_bias"} <= series


@pytest.mark.slow
def test_cluster_dashboard_shows_the_update_to_data_ratio(stack):
    """The ratio panel, evaluated by Prometheus, is updates per env step: the
    synthetic run makes UPDATES_PER_ITER updates per STEPS_PER_ITER env steps."""
    path = next(d for d in DASHBOARDS if d.endswith("cluster.json"))
    [panel] = [p for p in json.load(open(path))["panels"] if "ratio" in p["title"].lower()]
    [target] = panel["targets"]
    assert {"rllib_av_learner_updates_total", "rllib_av_env_steps_total"} <= set(
        re.findall(r"rllib_av_\w+", target["expr"]))
    [series] = stack.query(substitute(target["expr"], "dash"))
    assert float(series["value"][1]) == pytest.approx(UPDATES_PER_ITER / STEPS_PER_ITER, rel=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_template_variables_list_the_run(stack, path):
    for var in json.load(open(path))["templating"]["list"]:
        # label_values(<selector>, <label>) -> Prometheus' label values API.
        inner = var["query"]["query"][len("label_values("):-1]
        selector, label = (x.strip() for x in inner.rsplit(",", 1))
        url = (f"{stack.prom_url}/api/v1/label/{label}/values?"
               + urllib.parse.urlencode({"match[]": substitute(selector, "dash")}))
        expected = "dash" if label == "run" else "default_policy"
        assert expected in http_json(url)["data"], var["name"]
