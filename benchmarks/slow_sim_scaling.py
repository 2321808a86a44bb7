"""Slow simulators, sync vs async sampling, side by side in one run.

A stand-in for a CARLA server that costs no CPU: an env that sleeps ``--tick-s``
per step (default 0.05 s, CARLA's synchronous mode at ~20 ticks/s), a 16-float
state and 2 actions. For N = 1, 2, 4, 8 EnvRunners and update-to-data ratios
0.25 and 1.0 (batch 256), TD3 trains with ``async_sampling`` false and true;
after warm-up (learning started, weights flowing) it times ``--seconds`` of
training. Reported per setting: env steps/s, updates/s, their ratio over the
window, the policy lag, and the ideal

    min(N / tick_s, learner_updates_per_s / ratio)

where ``learner_updates_per_s`` is the learner's own ceiling, measured in the
same run (gradient updates on a filled buffer, nothing else running), at the
start and at the end. ``--slow-runner`` repeats a setting with runner 1 made
3x slower than the others (heterogeneous servers): there the ideal counts it
as a third of a runner.

    python benchmarks/slow_sim_scaling.py [--runners 1 2 4 8] [--ratios 0.25 1.0]
        [--seconds 20] [--tick-s 0.05] [--device cpu|cuda]

Writes benchmarks/results/slow_sim_scaling.json. Numbers from a shared 2-core
machine are small and noisy (its load average is recorded); the ratios to the
ideal are what compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import ray
import torch

from rllib_av.algorithms.td3 import TD3Config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "slow_sim_scaling.json"
BATCH = 256
FRAGMENT = 64
SLOWDOWN = 3.0  # the heterogeneous case: runner 1 ticks this much slower


class SleepingSim(gym.Env):
    """Each step sleeps ``tick_s`` (``tick_s * slowdown`` on EnvRunner 1 when
    ``slow_runner``): simulator time, no CPU."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (16,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, config=None):
        config = config or {}
        slow = config.get("slow_runner") and getattr(config, "worker_index", 0) == 1
        self.tick_s = config.get("tick_s", 0.05) * (SLOWDOWN if slow else 1.0)
        self.rng = np.random.default_rng(getattr(config, "worker_index", 0))

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return self.rng.uniform(-1, 1, 16).astype(np.float32)

    def step(self, action):
        time.sleep(self.tick_s)
        self.t += 1
        return self._obs(), -float(np.sum(np.square(action))), False, self.t >= 200, {}


# EnvRunner processes unpickle the env class by value, not by import.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def config(runners: int, ratio: float, async_sampling: bool, tick_s: float, device: str,
           slow_runner: bool = False) -> TD3Config:
    return (TD3Config()
            .environment(SleepingSim, env_config={"tick_s": tick_s, "slow_runner": slow_runner})
            .training(updates_per_env_step=ratio, async_sampling=async_sampling,
                      train_batch_size_per_learner=BATCH,
                      num_steps_sampled_before_learning_starts=BATCH,
                      replay_buffer_config={"capacity": 100_000})
            .env_runners(num_env_runners=runners, rollout_fragment_length=FRAGMENT)
            .learners(num_learners=0, num_gpus_per_learner=1 if device == "cuda" else 0)
            .reporting(min_time_s_per_iteration=1.0, min_sample_timesteps_per_iteration=0)
            .debugging(seed=0))


def learner_ceiling(device: str, updates: int = 300) -> float:
    """Gradient updates per second of the learner alone, on a filled buffer."""
    algo = config(0, 1.0, False, 0.0, device).build_algo()
    try:
        while algo.num_replay_transitions < 4 * BATCH:
            algo.train()

        def timed(learner):
            learner.update_from_replay(20)  # warm
            start = time.perf_counter()
            for _ in range(updates // 50):
                learner.update_from_replay(50)
            return (updates // 50) * 50 / (time.perf_counter() - start)

        return float(algo.learner_group.foreach_learner(timed).result_or_errors[0].get())
    finally:
        algo.stop()


def _counts(result: dict):
    updates = result.get("learners", {}).get("default_policy", {}).get("num_updates_lifetime", 0)
    return result["env_runners"]["num_env_steps_sampled_lifetime"], updates


def measure(runners: int, ratio: float, async_sampling: bool, tick_s: float, seconds: float,
            device: str, slow_runner: bool = False) -> dict:
    algo = config(runners, ratio, async_sampling, tick_s, device, slow_runner).build_algo()
    try:
        while True:  # warm-up: learning under way for a few iterations
            result = algo.train()
            if "env_runners" in result and _counts(result)[1] > 0:
                break
        for _ in range(3):
            result = algo.train()
        steps0, updates0 = _counts(result)
        t0 = time.perf_counter()
        lags = []
        while time.perf_counter() - t0 < seconds:
            result = algo.train()
            lag = result["learners"].get("default_policy", {}).get("policy_lag_max")
            if lag is not None and np.isfinite(lag):  # NaN: no fragment arrived
                lags.append(lag)
        wall = time.perf_counter() - t0
        steps, updates = _counts(result)
    finally:
        algo.stop()
    steps, updates = steps - steps0, updates - updates0
    return {"mode": "async" if async_sampling else "sync", "num_env_runners": runners,
            "updates_per_env_step": ratio, "slow_runner": slow_runner, "wall_s": round(wall, 2),
            "env_steps": int(steps), "updates": int(updates),
            "env_steps_per_s": round(steps / wall, 2), "updates_per_s": round(updates / wall, 2),
            "updates_per_env_step_measured": round(updates / steps, 4) if steps else None,
            "policy_lag_max": float(max(lags)) if lags else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--tick-s", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--slow-runner", type=int, default=4,
                    help="N for the heterogeneous case (0: skip it)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(1)  # as rllib_av.training does
    load_start = os.getloadavg()
    # EnvRunners ask for a CPU each; sleeping ones use none.
    ray.init(num_cpus=max(args.runners) + 2, num_gpus=1 if args.device == "cuda" else 0,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    ceilings = [learner_ceiling(args.device)]
    print(json.dumps({"learner_updates_per_s": ceilings[0]}), flush=True)
    settings = [(n, r, False) for r in args.ratios for n in args.runners]
    if args.slow_runner:
        settings += [(args.slow_runner, r, True) for r in args.ratios]
    rows = []
    for n, ratio, slow in settings:
        for async_sampling in (False, True):
            rows.append(measure(n, ratio, async_sampling, args.tick_s, args.seconds, args.device,
                                slow))
            print(json.dumps(rows[-1]), flush=True)
    ceilings.append(learner_ceiling(args.device))
    load_end = os.getloadavg()
    ray.shutdown()

    ceiling = float(np.mean(ceilings))
    for r in rows:
        n = r["num_env_runners"]
        # A 3x slower runner contributes a third of one.
        runners = n - 1 + 1 / SLOWDOWN if r["slow_runner"] else n
        ideal = min(runners / args.tick_s, ceiling / r["updates_per_env_step"])
        r["ideal_env_steps_per_s"] = round(ideal, 2)
        r["of_ideal"] = round(r["env_steps_per_s"] / ideal, 3)
    report = {
        "benchmark": "slow_sim_scaling",
        "what": "env steps/s, sync vs async sampling, with simulators that sleep tick_s per step",
        "tick_s": args.tick_s, "batch_size": BATCH, "rollout_fragment_length": FRAGMENT,
        "device": args.device, "learner_updates_per_s": [round(c, 1) for c in ceilings],
        "ideal": "min(N / tick_s, learner_updates_per_s / ratio); a 3x slower runner counts 1/3",
        "target": "async >= 0.8 of the ideal at every N",
        "async_meets_target": all(r["of_ideal"] >= 0.8 for r in rows if r["mode"] == "async"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1m_start": round(load_start[0], 2),
                    "load_average_1m_end": round(load_end[0], 2)},
        "torch": torch.__version__, "ray": ray.__version__, "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
