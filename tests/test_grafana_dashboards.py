"""A real exporter fed synthetic TD3 results, scraped by a real Prometheus on
loopback: every Grafana panel query (template variables substituted) returns
data, and the dashboards' template variables list the run."""

import glob
import json
import os
import urllib.parse

import pytest

from rllib_av.monitoring.local_stack import LocalStack, http_json, wait_until
from rllib_av.monitoring.synthetic_results import SyntheticRun

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
    feed = SyntheticRun("dash", period=0.5)
    try:
        with LocalStack([feed.target]) as s:
            # rate() over 10s needs a few scrapes of the counters.
            wait_until(lambda: s.query("count_over_time(rllib_av_env_steps_total[10s]) >= 5"),
                       60, "5 scrapes of the exporter")
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
def test_template_variables_list_the_run(stack, path):
    for var in json.load(open(path))["templating"]["list"]:
        # label_values(<selector>, <label>) -> Prometheus' label values API.
        inner = var["query"]["query"][len("label_values("):-1]
        selector, label = (x.strip() for x in inner.rsplit(",", 1))
        url = (f"{stack.prom_url}/api/v1/label/{label}/values?"
               + urllib.parse.urlencode({"match[]": substitute(selector, "dash")}))
        expected = "dash" if label == "run" else "default_policy"
        assert expected in http_json(url)["data"], var["name"]
