"""A killed EnvRunner (issue 8.1): SIGKILL its process mid-training; RLlib
restarts the actor (restart_failed_env_runners=True), training goes on, and the
restart shows in result["fault_tolerance"] and env_runner_restarts_total."""

import os
import signal
import time

import pytest

from rllib_av.monitoring.callbacks import health_callbacks
from rllib_av.run_config import load_run_config
from rllib_av.training import build_td3_config

from scrape import scrape

pytestmark = pytest.mark.slow


def _runner_pids(algo):
    return algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(),
                                                    local_env_runner=False)


def test_killed_env_runner_is_restarted_and_training_continues(ray_local, tmp_path):
    rc = load_run_config("configs/quickstart.yaml", [
        f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
        "training.learning_starts=100", "training.batch_size=32", "training.buffer_size=5000",
        "training.rollout_fragment_length=50", "resources.num_env_runners=1",
        "monitoring.exporter_port=0",
    ])
    algo = build_td3_config(rc, str(tmp_path)).build_algo()
    port = health_callbacks(algo).exporter.port
    try:
        for _ in range(2):
            before = algo.train()
        steps_before = before["env_runners"]["num_env_steps_sampled_lifetime"]
        [pid] = _runner_pids(algo)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter()

        recovered_at, iterations, result = None, 0, before
        while iterations < 40:
            result = algo.train()
            iterations += 1
            fault = result["fault_tolerance"]
            if fault["num_remote_worker_restarts"] >= 1 and fault["num_healthy_workers"] == 1:
                if recovered_at is None:
                    recovered_at = time.perf_counter()
                steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
                if steps > steps_before + 100:  # the new runner has sampled
                    break
        assert recovered_at is not None, result["fault_tolerance"]
        [new_pid] = _runner_pids(algo)
        assert new_pid != pid
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] > steps_before + 100
        metrics = scrape(port)
        assert metrics["rllib_av_env_runner_restarts_total"][()] >= 1
        assert metrics["rllib_av_env_runners_healthy"][()] == 1
        print(f"env runner kill: healthy again after {recovered_at - killed_at:.1f}s, "
              f"{iterations} iterations; steps {steps_before} -> "
              f"{result['env_runners']['num_env_steps_sampled_lifetime']}")
    finally:
        algo.stop()
        health_callbacks(algo).close()
