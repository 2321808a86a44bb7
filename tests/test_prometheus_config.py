"""The deployed monitoring configs pass their own tools: promtool checks the
scrape config and rules and runs the rule unit tests (each alert fires on a
diverging series, stays silent on a healthy one); amtool checks the routing;
every dashboard query names only metrics the exporter serves."""

import glob
import json
import os
import re
import subprocess

import pytest
import yaml

from rllib_av.health.diagnosis import DOMINANT_SHARE
from rllib_av.health.divergence import VERDICT_THRESHOLDS
from rllib_av.health.preflight import COLLAPSE
from rllib_av.monitoring.exporter import HealthExporter

ROOT = os.path.join(os.path.dirname(__file__), "..", "cluster")
PROM = os.path.join(ROOT, "prometheus")
AM = os.path.join(ROOT, "alertmanager", "alertmanager.yml")
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json")))


def run(*args, cwd=None):
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_promtool_check_config():
    out = run("promtool", "check", "config", "prometheus.yml", cwd=PROM)
    assert "SUCCESS: 1 rule files found" in out


def test_promtool_check_rules():
    out = run("promtool", "check", "rules", *glob.glob(os.path.join(PROM, "rules", "*.yml")))
    assert "SUCCESS: 13 rules found" in out


def test_promtool_rule_unit_tests():
    run("promtool", "test", "rules", *glob.glob(os.path.join(PROM, "tests", "*.yml")), cwd=PROM)


def test_every_required_alert_has_severity_summary_description_and_a_unit_test():
    required = {"RllibAvQBeyondBound", "RllibAvActorLossBeyondBound", "RllibAvRunawayQGrowth",
                "RllibAvNonFiniteValues", "RllibAvNonFinitePersistent", "RllibAvGradientExplosion",
                "RllibAvEpisodeLengthCollapse", "RllibAvRewardComponentDominates",
                "RllibAvTrainingStalled", "RllibAvEnvRunnersDown", "RllibAvQOutsideReturnInterval"}
    rules = [r for f in glob.glob(os.path.join(PROM, "rules", "*.yml"))
             for g in yaml.safe_load(open(f))["groups"] for r in g["rules"]]
    assert required <= {r["alert"] for r in rules}
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        # Descriptions are templates: they name the numbers or the target.
        assert r["annotations"]["summary"] and "{{" in r["annotations"]["description"], r["alert"]
    tested = {t["alertname"] for f in glob.glob(os.path.join(PROM, "tests", "*.yml"))
              for case in yaml.safe_load(open(f))["tests"] for t in case["alert_rule_test"]
              if t.get("exp_alerts")}
    assert {r["alert"] for r in rules} <= tested


def test_alert_rules_use_the_thresholds_the_health_layer_defines():
    """Where the verdict has a rule, an alert compares against the threshold the
    run published (rllib_av_health_threshold{setting}): every setting it names
    is one the verdict judges by. Constants the rules must spell out (YAML
    cannot import them) are the health layer's own."""
    exprs = {r["alert"]: r["expr"] for f in glob.glob(os.path.join(PROM, "rules", "*.yml"))
             for g in yaml.safe_load(open(f))["groups"] for r in g["rules"]}
    settings = {s for e in exprs.values() for s in re.findall(r'setting="(\w+)"', e)}
    assert settings and settings <= set(VERDICT_THRESHOLDS), settings
    for alert in ("RllibAvQBeyondBound", "RllibAvActorLossBeyondBound",
                  "RllibAvGradientExplosion"):
        assert "rllib_av_health_threshold" in exprs[alert], alert
    assert "1e4" not in " ".join(exprs.values())  # the driving preset's, not every run's
    assert f"rllib_av_reward_component_share > {DOMINANT_SHARE}" in (
        exprs["RllibAvRewardComponentDominates"])
    assert f"< {COLLAPSE} * max_over_time(rllib_av_episode_length_mean" in (
        exprs["RllibAvEpisodeLengthCollapse"])


def test_alertmanager_config_and_routes_by_severity():
    run("amtool", "check-config", AM)
    for severity, receiver in (("critical", "page"), ("warning", "notify")):
        out = run("amtool", "config", "routes", "test", f"--config.file={AM}",
                  f"severity={severity}", "run=r1")
        assert out.split()[-1] == receiver
    assert yaml.safe_load(open(AM))["route"]["group_by"] == ["run"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_dashboard_queries_name_only_exported_metrics(path):
    e = HealthExporter("x", "127.0.0.1", 0)
    try:
        served = {m.name + ("_total" if m.type == "counter" else "")
                  for m in e.registry.collect()} | {"up"}
    finally:
        e.close()
    d = json.load(open(path))
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    assert exprs and all(p["datasource"]["uid"] == "prometheus" for p in d["panels"])
    for expr in exprs:
        names = set(re.findall(r"\b(rllib_av_\w+|up)\b(?=\{)", expr))
        assert names and names <= served, expr
