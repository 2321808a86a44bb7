"""Mutation testing of the Prometheus alert rules against their promtool tests.

Each mutant moves one threshold either way, turns ``>`` into ``>=``, changes a
range window or a ``for:`` duration, or drops a label filter, ``abs()`` or a
guard clause in cluster/prometheus/rules/rllib_av_health.yml; every test file in
cluster/prometheus/tests/ runs against it, and the mutant counts as killed when
one of them fails. The rules file is restored afterwards, whatever happens.
Writes benchmarks/results/alert_rule_mutations.json.

    python benchmarks/mutate_alert_rules.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from side_by_side import write_results

PROM = Path(__file__).resolve().parent.parent / "cluster" / "prometheus"
RULES = PROM / "rules" / "rllib_av_health.yml"

# (alert, text in that alert's rule, its replacement)
MUTANTS = [
    # Thresholds the verdict also uses are series (rllib_av_health_threshold):
    # their values are pinned by rllib_av_thresholds_test.yml; here the rule
    # must compare against the right setting, the right way, at once.
    ("RllibAvQBeyondBound", "ratio\n            > on", "ratio / 2.5\n            > on"),
    ("RllibAvQBeyondBound", "ratio\n            > on", "ratio\n            >= on"),
    ("RllibAvQBeyondBound", 'setting="q_bound_diverge_ratio"', 'setting="q_bound_warn_ratio"'),
    ("RllibAvQBeyondBound", 'setting="q_bound_diverge_ratio"}\n',
     'setting="q_bound_diverge_ratio"}\n        for: 1m\n'),
    ("RllibAvQOutsideReturnInterval", 'rule="q_interval",state="diverged"', 'state="diverged"'),
    ("RllibAvActorLossBeyondBound", "abs(rllib_av_actor_loss)", "-rllib_av_actor_loss"),
    ("RllibAvActorLossBeyondBound", "> on(run, module", ">= on(run, module"),
    ("RllibAvActorLossBeyondBound", "(rllib_av_q_bound *", "(1.5 * rllib_av_q_bound *"),
    ("RllibAvActorLossBeyondBound", 'setting="q_bound_diverge_ratio"',
     'setting="q_bound_warn_ratio"'),
    ("RllibAvRunawayQGrowth", "> 0.3", "> 0.25"),
    ("RllibAvRunawayQGrowth", "> 0.3", "> 0.35"),
    ("RllibAvRunawayQGrowth", "ratio > 0.5", "ratio > 0.45"),
    ("RllibAvRunawayQGrowth", "ratio > 0.5", "ratio > 0.55"),
    ("RllibAvRunawayQGrowth", "[5m]", "[10m]"),
    ("RllibAvRunawayQGrowth", "for: 1m", "for: 2m"),
    ("RllibAvRunawayQGrowth", "for: 1m", "for: 0m"),
    ("RllibAvNonFiniteValues", "[5m]) > 0", "[10m]) > 0"),
    ("RllibAvNonFiniteValues", "[5m]) > 0", "[3m]) > 0"),
    ("RllibAvNonFiniteValues", "[5m]) > 0", "[5m]) > 1"),
    ("RllibAvNonFiniteValues", "[5m]) > 0\n", "[5m]) > 0\n        for: 1m\n"),
    ("RllibAvNonFinitePersistent", 'rule="nonfinite",state="diverged"', 'rule="nonfinite"'),
    ("RllibAvGradientExplosion", "norm\n            > on", "norm\n            >= on"),
    ("RllibAvGradientExplosion", "norm\n            > on", "norm / 1.1\n            > on"),
    ("RllibAvGradientExplosion", 'setting="grad_norm_warn"', 'setting="grad_norm_diverge"'),
    ("RllibAvGradientExplosion", "for: 1m", "for: 2m"),
    ("RllibAvGradientExplosion", "for: 1m", "for: 0m"),
    ("RllibAvEpisodeLengthCollapse", "< 0.5 *", "< 0.49 *"),
    ("RllibAvEpisodeLengthCollapse", "< 0.5 *", "< 0.51 *"),
    ("RllibAvEpisodeLengthCollapse", "for: 2m", "for: 1m"),
    ("RllibAvEpisodeLengthCollapse", "for: 2m", "for: 3m"),
    ("RllibAvRewardComponentDominates", "> 0.9", "> 0.89"),
    ("RllibAvRewardComponentDominates", "> 0.9", "> 0.91"),
    ("RllibAvRewardComponentDominates", "for: 5m", "for: 4m"),
    ("RllibAvRewardComponentDominates", "for: 5m", "for: 6m"),
    ("RllibAvTrainingStalled", "[5m]", "[4m]"),
    ("RllibAvTrainingStalled", "[5m]", "[6m]"),
    ("RllibAvTrainingStalled", "== 0", "< 2"),
    ("RllibAvTrainingStalled", "for: 1m", "for: 2m"),
    ("RllibAvTrainingStalled", "for: 1m", "for: 0m"),
    ("RllibAvExporterDown", "for: 2m", "for: 1m"),
    ("RllibAvExporterDown", "for: 2m", "for: 3m"),
    ("RllibAvExporterDown", 'up{job="rllib_av"} == 0', "up == 0"),
    ("RllibAvEnvRunnersDown", "== 0", "<= 1"),
    ("RllibAvEnvRunnersDown", "for: 1m", "for: 2m"),
    ("RllibAvEnvRunnersDown", "for: 1m", "for: 0m"),
    ("RllibAvEnvRunnersDegraded", "rllib_av_env_runners_healthy > 0\n          and ", ""),
    ("RllibAvEnvRunnersDegraded", "< on(run, job, instance)", "<= on(run, job, instance)"),
    ("RllibAvEnvRunnersDegraded", "< on(run, job, instance)", "!= on(run, job, instance)"),
    ("RllibAvEnvRunnersDegraded", "for: 2m", "for: 1m"),
    ("RllibAvEnvRunnersDegraded", "for: 2m", "for: 3m"),
]


def mutate(source: str, alert: str, old: str, new: str) -> str:
    """``source`` with ``old`` replaced by ``new`` inside ``alert``'s rule only."""
    start = source.index(f"- alert: {alert}\n")
    end = source.find("- alert:", start + 1)
    end = len(source) if end < 0 else end
    rule = source[start:end]
    if rule.count(old) != 1:
        raise SystemExit(f"{alert}: {old!r} is not in its rule exactly once; update MUTANTS")
    return source[:start] + rule.replace(old, new) + source[end:]


def failing_test_files(test_files) -> list:
    return [f.name for f in test_files
            if subprocess.run(["promtool", "test", "rules", str(f)], cwd=PROM,
                              capture_output=True).returncode != 0]


def main() -> int:
    original = RULES.read_text()
    test_files = sorted((PROM / "tests").glob("*.yml"))
    if failing_test_files(test_files):
        print("the rule tests fail on the unmutated rules", file=sys.stderr)
        return 1
    rows = []
    try:
        for alert, old, new in MUTANTS:
            RULES.write_text(mutate(original, alert, old, new))
            killed_by = failing_test_files(test_files)
            rows.append({"alert": alert, "mutation": f"{old.strip()!r} -> {new.strip()!r}",
                         "killed_by": killed_by})
    finally:
        RULES.write_text(original)
    survivors = [r for r in rows if not r["killed_by"]]
    by_file = {f.name: sum(f.name in r["killed_by"] for r in rows) for f in test_files}
    write_results("alert_rule_mutations", {
        "summary": {"mutants": len(rows), "killed": len(rows) - len(survivors),
                    "killed_by_file": by_file},
        "survivors": survivors, "mutants": rows})
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
