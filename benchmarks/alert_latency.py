"""Time from the first Prometheus scrape where Q exceeds the bound to the
Alertmanager webhook receiving RllibAvQBeyondBound, on loopback with the
repository's rules and routing.

Two settings side by side: "deployed" (cluster/ as shipped: 10s scrape and
evaluation, 10s group_wait for critical alerts) and "fast" (1s each, the test
settings). The exporter is fed synthetic TD3 results once a second (RLlib's
min_time_s_per_iteration), judged by the same health monitor the training callback uses.

    python benchmarks/alert_latency.py [--reps-deployed 2] [--reps-fast 3]
"""

import argparse
import json
import os
import platform
import statistics
import time

from rllib_av.monitoring.local_stack import LocalStack, wait_until
from rllib_av.monitoring.synthetic_results import SyntheticRun


def measure(fast: bool) -> dict:
    feed = SyntheticRun("bench", period=1.0)
    try:
        with LocalStack([feed.target], fast=fast) as stack:
            wait_until(lambda: stack.query('rllib_av_q_bound_ratio{run="bench"}'), 60, "first scrape")
            time.sleep(3.0)
            feed.diverge()
            t_diverge = time.time()
            alert = wait_until(
                lambda: [a for a in stack.webhook.alerts()
                         if a["labels"]["alertname"] == "RllibAvQBeyondBound"], 120, "webhook")[0]
            samples = stack.query('rllib_av_q_bound_ratio{run="bench"}[10m]')[0]["values"]
            t_scrape = min(float(t) for t, v in samples if float(v) > 1)
            return {"scrape_to_webhook_s": alert["t"] - t_scrape,
                    "export_to_webhook_s": alert["t"] - t_diverge}
    finally:
        feed.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps-deployed", type=int, default=2)
    ap.add_argument("--reps-fast", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "alert_latency.json"))
    args = ap.parse_args()
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "settings": {}}
    for name, fast, reps in (("deployed", False, args.reps_deployed), ("fast", True, args.reps_fast)):
        runs = [measure(fast) for _ in range(reps)]
        lat = [r["scrape_to_webhook_s"] for r in runs]
        out["settings"][name] = {
            "scrape_eval_interval_s": 1 if fast else 10, "critical_group_wait_s": 1 if fast else 10,
            "runs": runs, "scrape_to_webhook_s_median": statistics.median(lat),
            "scrape_to_webhook_s_max": max(lat)}
        print(name, [round(x, 1) for x in lat])
    d, f = (out["settings"][k]["scrape_to_webhook_s_median"] for k in ("deployed", "fast"))
    out["ratio_deployed_over_fast"] = d / f
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
