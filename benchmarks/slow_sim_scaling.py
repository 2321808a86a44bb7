"""Slow simulators, sync vs async sampling, side by side in one run.

A stand-in for a CARLA server that costs no CPU: an env that sleeps ``--tick-s``
per step (default 0.05 s, CARLA's synchronous mode at ~20 ticks/s), a 16-float
state and 2 actions. For N = 1, 2, 4, 8 EnvRunners and update-to-data ratios
0.25 and 1.0 (batch 256), TD3 trains with ``async_sampling`` false and true.
Each cell warms up (learning started, then ``--warmup-s`` more, so the backlog
of the first fragments is worked off) and then times ``--seconds`` of training.
Reported per cell: env steps/s, updates/s, their ratio over the window, the
largest policy lag, the updates owed at either end of the window, what share
of the window the runners spent sampling and the learner updating, the CPU
the runner processes and the driver (with the learner in it) used, and the
load average at the start and end; and the ideal

    min(N / tick_s, learner_updates_per_s / ratio)

where ``learner_updates_per_s`` is the learner's own ceiling, measured in the
same run (gradient updates on a filled buffer, nothing else running), at the
start and at the end. The ideal takes runners that cost no CPU; on a machine
with few cores they do, and the CPU columns say how much. ``--slow-runner N``
adds cells with runner 1 made 3x slower than the others (heterogeneous
servers): there the ideal counts it as a third of a runner.

    python benchmarks/slow_sim_scaling.py [--runners 1 2 4 8] [--ratios 0.25 1.0]
        [--seconds 60] [--warmup-s 15] [--tick-s 0.05] [--slow-runner 4]
        [--device cpu|cuda] [--out PATH]

(``--runners`` with no N and ``--slow-runner 4``: the heterogeneous cells only.)

Writes benchmarks/results/slow_sim_scaling.json (after every cell, so a cut
run keeps what it measured). Numbers from a shared machine are noisy (its
load average is recorded); the ratios to the ideal are what compare.
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Snapshot:
    """The counters a window is measured between."""

    def __init__(self, algo, runner_pids):
        self.t = time.perf_counter()
        self.env_steps = int(algo._env_steps_sampled())
        self.updates = algo._updates_done
        self.owed = algo.rate_limiter.owed + algo.rate_limiter.under_way
        self.learner_s = algo._throughput.learner_s
        self.sample_s = algo._throughput.sample_s
        self.runner_cpu_s = sum(cpu_s(p) for p in runner_pids)
        self.driver_cpu_s = cpu_s(os.getpid())
        self.load = os.getloadavg()[0]


def _lag_max(result: dict):
    lag = result.get("learners", {}).get("default_policy", {}).get("policy_lag_max")
    return lag if lag is not None and np.isfinite(lag) else None  # NaN: no fragment arrived


def measure(runners: int, ratio: float, async_sampling: bool, tick_s: float, seconds: float,
            warmup_s: float, device: str, slow_runner: bool = False) -> dict:
    algo = config(runners, ratio, async_sampling, tick_s, device, slow_runner).build_algo()
    try:
        pids = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(),
                                                        local_env_runner=False)
        while algo._updates_done == 0:  # learning under way...
            algo.train()
        warm_until = time.perf_counter() + warmup_s
        while time.perf_counter() < warm_until:  # ...and the first fragments' backlog worked off
            algo.train()
        start, lags = Snapshot(algo, pids), []
        while time.perf_counter() - start.t < seconds:
            lag = _lag_max(algo.train())
            if lag is not None:
                lags.append(lag)
        end = Snapshot(algo, pids)
    finally:
        algo.stop()
    wall = end.t - start.t
    steps, updates = end.env_steps - start.env_steps, end.updates - start.updates
    learner_s = end.learner_s - start.learner_s
    row = {"mode": "async" if async_sampling else "sync", "num_env_runners": runners,
           "updates_per_env_step": ratio, "slow_runner": slow_runner, "wall_s": round(wall, 1),
           "env_steps": int(steps), "updates": int(updates),
           "env_steps_per_s": round(steps / wall, 2), "updates_per_s": round(updates / wall, 2),
           "updates_per_env_step_measured": round(updates / steps, 4) if steps else None,
           "updates_owed_start_end": [round(start.owed, 1), round(end.owed, 1)],
           "policy_lag_max": float(max(lags)) if lags else None,
           # The learner's pace while it updated (against its ceiling alone:
           # what sharing the cores cost it) and the share of the window it updated.
           "learner_updates_per_busy_s": round(updates / learner_s, 1) if learner_s else None,
           "learner_busy_share": round(learner_s / wall, 3),
           "runner_cpu_s_per_env_step": (round((end.runner_cpu_s - start.runner_cpu_s) / steps, 5)
                                         if steps else None),
           "runner_cpu_cores": round((end.runner_cpu_s - start.runner_cpu_s) / wall, 3),
           "driver_cpu_cores": round((end.driver_cpu_s - start.driver_cpu_s) / wall, 3),
           "load_average_1m_start_end": [round(start.load, 2), round(end.load, 2)]}
    if async_sampling:  # the runners' share of the window spent sampling (not waiting)
        row["runner_sampling_share"] = round((end.sample_s - start.sample_s) / (wall * runners), 3)
    return row


def report(args, ceilings, rows, load_start) -> dict:
    ceiling = float(np.mean(ceilings))
    for r in rows:
        n = r["num_env_runners"]
        runners = n - 1 + 1 / SLOWDOWN if r["slow_runner"] else n  # a 3x slower one is a third
        ideal = min(runners / args.tick_s, ceiling / r["updates_per_env_step"])
        r["ideal_env_steps_per_s"] = round(ideal, 2)
        r["of_ideal"] = round(r["env_steps_per_s"] / ideal, 3)
    asynchronous = [r for r in rows if r["mode"] == "async"]
    return {
        "benchmark": "slow_sim_scaling",
        "what": "env steps/s, sync vs async sampling, with simulators that sleep tick_s per step",
        "command": " ".join(["python", "benchmarks/slow_sim_scaling.py", *sys.argv[1:]]),
        "tick_s": args.tick_s, "batch_size": BATCH, "rollout_fragment_length": FRAGMENT,
        "warmup_s": args.warmup_s, "window_s": args.seconds, "device": args.device,
        "learner_updates_per_s": [round(c, 1) for c in ceilings],
        "ideal": "min(N / tick_s, learner_updates_per_s / ratio); a 3x slower runner counts 1/3",
        "target": "async >= 0.8 of the ideal at every N",
        "async_meets_target": bool(asynchronous) and all(r["of_ideal"] >= 0.8 for r in asynchronous),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1m_start": round(load_start, 2),
                    "load_average_1m_now": round(os.getloadavg()[0], 2)},
        "torch": torch.__version__, "ray": ray.__version__, "results": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--tick-s", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window per cell")
    ap.add_argument("--warmup-s", type=float, default=15.0,
                    help="training after the first update, before the window")
    ap.add_argument("--slow-runner", type=int, default=4,
                    help="N for the heterogeneous case (0: skip it)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    torch.set_num_threads(1)  # as rllib_av.training does
    load_start = os.getloadavg()[0]
    # EnvRunners ask for a CPU each; sleeping ones use little.
    ray.init(num_cpus=max(args.runners + [args.slow_runner]) + 2, num_gpus=1 if args.device == "cuda" else 0,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    ceilings = [learner_ceiling(args.device)]
    print(json.dumps({"learner_updates_per_s": ceilings[0]}), flush=True)
    # The largest N first: if a run is cut short, the cells that answer the
    # scaling question are in.
    cells = [(n, r, False) for n in sorted(args.runners, reverse=True) for r in args.ratios]
    if args.slow_runner:
        cells += [(args.slow_runner, r, True) for r in args.ratios]
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n, ratio, slow in cells:
        for async_sampling in (False, True):
            rows.append(measure(n, ratio, async_sampling, args.tick_s, args.seconds,
                                args.warmup_s, args.device, slow))
            print(json.dumps(rows[-1]), flush=True)
            args.out.write_text(json.dumps(report(args, ceilings, rows, load_start), indent=2)
                                + "\n")
    ceilings.append(learner_ceiling(args.device))
    ray.shutdown()
    final = report(args, ceilings, rows, load_start)
    args.out.write_text(json.dumps(final, indent=2) + "\n")
    print(json.dumps(final, indent=2))


if __name__ == "__main__":
    main()
