"""What the replay journal costs training: two TD3s from one config, one
journaling into a run directory and one not, trained in alternating slices in
one process (the machine's noise hits both alike).

    python benchmarks/replay_journal.py [--rounds 4] [--seconds 10]

The quickstart's policy reads the state vector only, so its journal (like its
replay) holds no camera frames: about 125 bytes per step instead of a frame's 7 KB.
Writes benchmarks/results/replay_journal.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME, TIMERS

from rllib_av.algorithms.td3.td3 import REPLAY_JOURNAL_TIMER
from rllib_av.monitoring.callbacks import health_callbacks
from rllib_av.run_config import load_run_config
from rllib_av.training import JOURNAL_DIR, build_td3_config
from side_by_side import rate, write_results

ROOT = Path(__file__).resolve().parents[1]


def _steps(result) -> int:
    return int(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME])


def train_slice(algo, seconds: float) -> dict:
    steps0, t0 = _steps(algo.train()), time.perf_counter()
    steps, append_s, iters = steps0, [], 0
    while time.perf_counter() - t0 < seconds:
        result = algo.train()
        steps, iters = _steps(result), iters + 1
        if REPLAY_JOURNAL_TIMER in result[TIMERS]:
            append_s.append(result[TIMERS][REPLAY_JOURNAL_TIMER])
    elapsed = time.perf_counter() - t0
    out = {"env_steps": steps - steps0, "seconds": elapsed, "iterations": iters}
    if append_s:
        out["append_ms_mean"] = 1e3 * sum(append_s) / len(append_s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    overrides = ["run.min_time_s_per_iteration=0", "training.learning_starts=200",
                 "training.buffer_size=20000", "monitoring.exporter_port=0",
                 "monitoring.tensorboard=false"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rc = load_run_config(str(ROOT / "configs" / "quickstart.yaml"), overrides)
    torch.set_num_threads(rc.resources.torch_threads)  # as rllib_av.training.train
    run_dir = tempfile.mkdtemp(prefix="journal-bench-")
    algos = {"journal": build_td3_config(rc, run_dir).build_algo(),
             "no_journal": build_td3_config(rc).build_algo()}
    assert algos["journal"].replay_journal and not algos["no_journal"].replay_journal
    journal_dir = os.path.join(run_dir, JOURNAL_DIR)
    try:
        for algo in algos.values():
            while _steps(algo.train()) <= rc.training.learning_starts + 100:
                pass  # replay warm-up: time updates, not random sampling
        rounds = []
        for r in range(args.rounds):
            order = list(algos) if r % 2 == 0 else list(reversed(algos))
            rounds.append({kind: train_slice(algos[kind], args.seconds) for kind in order})
            print(json.dumps(rounds[-1]), flush=True)
        journal_bytes = sum(os.path.getsize(os.path.join(journal_dir, f))
                            for f in os.listdir(journal_dir))
        journal_steps = algos["journal"].num_replay_transitions
    finally:
        for algo in algos.values():
            algo.stop()
            health_callbacks(algo).close()
        ray.shutdown()

    appends = [r["journal"]["append_ms_mean"] for r in rounds]
    summary = {
        "journal_steps_per_s": rate(rounds, "journal"),
        "no_journal_steps_per_s": rate(rounds, "no_journal"),
        "throughput_ratio": rate(rounds, "journal") / rate(rounds, "no_journal"),
        "append_ms_mean": sum(appends) / len(appends),
        # Nothing checkpointed here, so the journal holds every step sampled.
        "journal_bytes_per_env_step": journal_bytes / journal_steps,
    }
    write_results("replay_journal", {"args": vars(args), "overrides": overrides,
                                     "summary": summary, "rounds": rounds})


if __name__ == "__main__":
    main()
