"""Alerts end to end on loopback: exporter -> Prometheus (the deployed rules)
-> Alertmanager (the deployed routing) -> a webhook. A diverging run pages
with the numbers and the health verdict's reasons; a healthy run scraped
alongside raises nothing."""

import pytest

from rllib_av.monitoring.local_stack import LocalStack, wait_until
from rllib_av.monitoring.synthetic_results import SyntheticRun


def first_scrape_beyond_bound(stack, run):
    """Timestamp of the first scraped sample with q_bound_ratio > 1."""
    series = stack.query(f'rllib_av_q_bound_ratio{{run="{run}"}}[10m]')
    return min(float(t) for s in series for t, v in s["values"] if float(v) > 1)


@pytest.mark.slow
def test_diverging_run_pages_through_alertmanager_healthy_run_stays_silent():
    healthy = SyntheticRun("healthy", period=0.5)
    diverging = SyntheticRun("diverging", period=0.5, diverge_from=6)
    try:
        with LocalStack([healthy.target, diverging.target]) as stack:
            page = wait_until(
                lambda: [a for a in stack.webhook.alerts()
                         if a["labels"]["alertname"] == "RllibAvQBeyondBound"],
                90, "RllibAvQBeyondBound at the webhook")[0]
            assert page["path"] == "/page"  # critical -> the paging receiver
            assert page["labels"]["run"] == "diverging"
            assert page["labels"]["module"] == "default_policy"
            assert "x the bound q_bound = 20k" in page["annotations"]["description"]
            # The verdict's reasons ride along (rllib_av_health_reason_info): which
            # statistic ran off which way, the threshold and why it holds.
            reasons = page["annotations"]["reasons"]
            assert ("diverged: q_bound: q_actor_max running off upward (threshold warning > "
                    "0.9, diverged > 1; ") in reasons, reasons
            assert "no correct critic goes past it on either side)." in reasons
            # Diverged over several scrapes with Q growing at each: still one
            # reason series per rule (no numbers in its labels), not one per scrape.
            ratios = stack.query(f'rllib_av_q_bound_ratio{{run="diverging"}}[10m]')[0]["values"]
            assert len({v for _, v in ratios if float(v) > 1}) >= 2, ratios
            per_rule = stack.query('count by (rule) (count_over_time('
                                   'rllib_av_health_reason_info{run="diverging"}[10m]))')
            assert {s["metric"]["rule"]: s["value"][1] for s in per_rule} == {
                "q_bound": "1", "actor_loss": "1"}, per_rule
            # The healthy run was scraped and evaluated over the same time.
            assert stack.query('rllib_av_q_bound_ratio{run="healthy"} < 0.1')
            assert not [a for a in stack.firing() if a["labels"].get("run") == "healthy"]
            assert not [a for a in stack.webhook.alerts() if a["labels"].get("run") == "healthy"]
            latency = page["t"] - first_scrape_beyond_bound(stack, "diverging")
            print(f"first scrape beyond bound -> webhook: {latency:.1f}s (1s scrape/eval, 1s group_wait)")
            assert latency > 0
    finally:
        healthy.close()
        diverging.close()
