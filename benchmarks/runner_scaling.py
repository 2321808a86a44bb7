"""Env steps/s with 0 (driver samples), 1 and 2 remote EnvRunners on the
embedded highway backend, side by side in one run, in two modes:

  sampling  learning has not started (``learning_starts`` beyond the timed
            window): what the EnvRunners deliver, the rate more CARLA nodes
            scale.
  training  TD3 doing ``updates_per_env_step`` updates per sampled step (at
            ``--batch-size``): the rate a run actually makes progress at.

    python benchmarks/runner_scaling.py [--iters 8] [--runners 0 1 2]

Each setting builds the algorithm from configs/quickstart.yaml on one local
Ray instance, trains until the actors are up (and, in training mode, until
learning has started), then times ``--iters`` iterations. Writes
benchmarks/results/runner_scaling.json with ratios against 1 runner.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import ray
import torch
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "runner_scaling.json"
NEVER = 10**9  # learning_starts that the sampling mode never reaches
WARMUP_ITERS = 2


def _env_steps(result: dict) -> int:
    return int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])


def measure(mode: str, num_env_runners: int, iters: int, learning_starts: int,
            batch_size: int) -> dict:
    starts = learning_starts if mode == "training" else NEVER
    config = load_run_config(str(ROOT / "configs" / "quickstart.yaml"), [
        f"resources.num_env_runners={num_env_runners}",
        f"training.learning_starts={starts}",
        f"training.batch_size={batch_size}",
        "monitoring.exporter_port=0",
    ])
    torch.set_num_threads(config.resources.torch_threads)  # as rllib_av.training.train
    algo = build_td3_config(config).build_algo()
    try:
        for _ in range(WARMUP_ITERS):  # actors up, first episodes reset
            steps0 = _env_steps(algo.train())
        while mode == "training" and steps0 <= learning_starts:
            steps0 = _env_steps(algo.train())  # replay warm-up, updates start
        t0 = time.perf_counter()
        for _ in range(iters):
            result = algo.train()
        wall = time.perf_counter() - t0
        steps = _env_steps(result) - steps0
    finally:
        algo.stop()
    return {"mode": mode, "num_env_runners": num_env_runners, "iterations": iters,
            "env_steps": steps, "wall_s": round(wall, 3),
            "env_steps_per_s": round(steps / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=["sampling", "training"],
                    choices=["sampling", "training"])
    ap.add_argument("--learning-starts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    rows = []
    for mode in args.modes:
        for n in args.runners:
            rows.append(measure(mode, n, args.iters, args.learning_starts, args.batch_size))
            print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()

    for r in rows:
        base = next((b["env_steps_per_s"] for b in rows
                     if b["mode"] == r["mode"] and b["num_env_runners"] == 1), None)
        r["ratio_vs_1_runner"] = round(r["env_steps_per_s"] / base, 3) if base else None
    report = {
        "benchmark": "runner_scaling", "backend": "highway (embedded)",
        "config": "configs/quickstart.yaml", "learning_starts": args.learning_starts,
        "batch_size": args.batch_size, "cpus": os.cpu_count(),
        "machine": platform.platform(), "ray": ray.__version__, "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
