"""The Prometheus exporter under scrape load during training (issue 8.6).

A loopback client in its own process scrapes ``/metrics`` 1000 times in 10 s
(one new connection per scrape, paced at 100/s) while TD3 trains on the
embedded backend. The exporter's HTTP side is a process of its own
(rllib_av/monitoring/metrics_server.py); the driver renders the page once per
change. Three kinds of slice, rotated each round, in one process:

  baseline     training, no scrapes
  scraped      training while the client scrapes the training's own exporter
  client_only  training while the client scrapes a second, idle exporter: the
               client's and the server process's CPU share without the
               training exporter's rendering in the driver (on a 2-core box
               the client alone costs steps)

A slice's clock and its client's scrapes start together, at an iteration
boundary, after the client process is up: its start (spawn re-imports this
module, torch and Ray with it) is no scrape load.

Reports failed scrapes, scrape latency, and env steps/s per kind.

    python benchmarks/exporter_load.py [--rounds 4] [--seconds 10] [--scrapes 1000]

Writes benchmarks/results/exporter_load.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import urllib.request
from pathlib import Path

import ray
import torch
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_av.monitoring.callbacks import health_callbacks
from rllib_av.monitoring.exporter import HealthExporter
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config
from side_by_side import rate, write_results

ROOT = Path(__file__).resolve().parents[1]


def scrape_client(url: str, scrapes: int, seconds: float, go, out) -> None:
    """Once ``go`` is set, scrape ``url`` ``scrapes`` times, paced evenly over ``seconds``."""
    out.put("ready")
    go.wait()
    ok, failed, latencies = 0, [], []
    start = time.perf_counter()
    for i in range(scrapes):
        delay = start + i * seconds / scrapes - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        try:
            body = urllib.request.urlopen(url, timeout=5).read()
            if b"rllib_av_env_steps_total" not in body:
                raise ValueError("scrape without rllib_av_env_steps_total")
            ok += 1
        except Exception as e:  # every failure kind counts the same
            failed.append(repr(e)[:200])
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    out.put({"scrapes": scrapes, "ok": ok, "failed": len(failed), "errors": failed[:5],
             "duration_s": time.perf_counter() - start,
             "latency_ms_p50": 1e3 * latencies[len(latencies) // 2],
             "latency_ms_p99": 1e3 * latencies[int(len(latencies) * 0.99)],
             "latency_ms_max": 1e3 * latencies[-1]})


def _steps(algo) -> int:
    return int(algo.train()[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])


def train_slice(algo, seconds: float, url=None, scrapes=0) -> dict:
    """Train for ``seconds`` (whole iterations), the scrape client running if ``url``."""
    ctx = mp.get_context("spawn")
    client, go, queue = None, ctx.Event(), ctx.Queue()
    if url:
        client = ctx.Process(target=scrape_client, args=(url, scrapes, seconds, go, queue))
        client.start()
        queue.get(timeout=120)  # "ready"
    steps0 = _steps(algo)  # an iteration boundary: the slice and its scrapes start together
    go.set()
    t0 = time.perf_counter()
    steps = steps0
    while time.perf_counter() - t0 < seconds:
        steps = _steps(algo)
    elapsed = time.perf_counter() - t0
    out = {"env_steps": steps - steps0, "seconds": elapsed,
           "steps_per_s": (steps - steps0) / elapsed}
    if client is not None:
        out["client"] = queue.get(timeout=seconds + 120)
        client.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--scrapes", type=int, default=1000)
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rc = load_run_config(str(ROOT / "configs" / "quickstart.yaml"), [
        # Short iterations: a 10 s slice is then ~40 of them, not ~5.
        "run.min_time_s_per_iteration=0", "training.rollout_fragment_length=16",
        "training.learning_starts=200",
        "training.buffer_size=50000", "monitoring.exporter_port=0",
        "monitoring.tensorboard=false",
    ])
    torch.set_num_threads(rc.resources.torch_threads)  # as rllib_av.training.train
    algo = build_td3_config(rc).build_algo()
    exporter = health_callbacks(algo).exporter
    elsewhere = HealthExporter("elsewhere", port=0)  # never updated: nothing to render
    try:
        while _steps(algo) <= rc.training.learning_starts + 100:
            pass  # replay warm-up: time updates, not random sampling
        urls = {"baseline": None,
                "scraped": f"http://{exporter.host}:{exporter.port}/metrics",
                "client_only": f"http://{elsewhere.host}:{elsewhere.port}/metrics"}
        kinds = list(urls)
        rounds = []
        for r in range(args.rounds):
            slices = {}
            for kind in kinds[r % 3:] + kinds[:r % 3]:
                slices[kind] = train_slice(algo, args.seconds, urls[kind], args.scrapes)
                print(kind, json.dumps(slices[kind]), flush=True)
            rounds.append(slices)
    finally:
        elsewhere.close()
        algo.stop()
        health_callbacks(algo).close()
        ray.shutdown()

    base, scraped = rate(rounds, "baseline"), rate(rounds, "scraped")
    client_only = rate(rounds, "client_only")
    clients = [r[kind]["client"] for r in rounds for kind in ("scraped", "client_only")]
    summary = {
        "baseline_steps_per_s": base,
        "scraped_steps_per_s": scraped,
        "client_only_steps_per_s": client_only,
        "throughput_drop": 1 - scraped / base,
        "throughput_drop_client_only": 1 - client_only / base,
        "scrapes_total": sum(c["scrapes"] for c in clients),
        "scrapes_failed": sum(c["failed"] for c in clients),
        "client_duration_s_max": max(c["duration_s"] for c in clients),
        "latency_ms_p99_max": max(c["latency_ms_p99"] for c in clients),
        "meets_target": all(c["failed"] == 0 for c in clients) and 1 - scraped / base < 0.10,
    }
    write_results("exporter_load", {
        "config": "configs/quickstart.yaml (state-only TD3)", "args": vars(args),
        "summary": summary, "rounds": rounds})


if __name__ == "__main__":
    main()
