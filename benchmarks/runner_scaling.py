"""Env steps/s of TD3 training with 0 (driver samples), 1 and 2 remote
EnvRunners on the embedded highway backend, side by side in one run.

    python benchmarks/runner_scaling.py [--iters 5] [--runners 0 1 2]

Each setting builds the algorithm from configs/quickstart.yaml on one local
Ray instance and trains until learning has started (actor start-up, replay
warm-up), then times ``--iters`` training iterations. Throughput counts
sampled env steps while the learner does its configured updates per step, so
the numbers are training throughput, not bare simulator speed.
Writes benchmarks/results/runner_scaling.json with ratios against 1 runner.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import ray
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "runner_scaling.json"


def _env_steps(result: dict) -> int:
    return int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])


def measure(num_env_runners: int, iters: int, learning_starts: int) -> dict:
    config = load_run_config(str(ROOT / "configs" / "quickstart.yaml"), [
        f"resources.num_env_runners={num_env_runners}",
        f"training.learning_starts={learning_starts}",
        "monitoring.exporter_port=0",
    ])
    algo = build_td3_config(config).build_algo()
    try:
        while (steps0 := _env_steps(algo.train())) <= learning_starts:
            pass  # warm-up: actors up, replay filled, updates running
        t0 = time.perf_counter()
        for _ in range(iters):
            result = algo.train()
        wall = time.perf_counter() - t0
        steps = _env_steps(result) - steps0
    finally:
        algo.stop()
    return {"num_env_runners": num_env_runners, "iterations": iters,
            "env_steps": steps, "wall_s": round(wall, 3),
            "env_steps_per_s": round(steps / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--learning-starts", type=int, default=256)
    args = ap.parse_args()

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    rows = []
    for n in args.runners:
        rows.append(measure(n, args.iters, args.learning_starts))
        print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()

    base = next((r["env_steps_per_s"] for r in rows if r["num_env_runners"] == 1), None)
    for r in rows:
        r["ratio_vs_1_runner"] = round(r["env_steps_per_s"] / base, 3) if base else None
    report = {
        "benchmark": "runner_scaling", "backend": "highway (embedded)",
        "config": "configs/quickstart.yaml", "learning_starts": args.learning_starts,
        "cpus": os.cpu_count(),
        "machine": platform.platform(), "ray": ray.__version__, "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
