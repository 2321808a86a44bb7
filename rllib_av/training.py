"""From a run config to a running TD3: the RLlib config, the run directory, the loop.

    run_dir = train(load_run_config("configs/quickstart.yaml"))

A run directory holds ``config.yaml`` (the resolved run config),
``metrics.jsonl`` (one line of health numbers per iteration), ``tensorboard/``,
``exporter_port``, ``checkpoints/`` and ``replay_journal/`` (the samples taken
since the newest checkpoint: a killed driver resumes without losing them),
``probes.jsonl`` and ``guard.jsonl``. Inside a Ray cluster (``ray job submit``,
``RAY_ADDRESS`` set) ``ray.init()`` joins it instead of starting one.

The loop hands what the health layer decided to whoever acts on it: the
divergence guard's decision to rllib_av/guard_actions.py, the critic probes'
record (rllib_av/critic_probes.py) and the guard's action to the exporter.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
from typing import Callable, Optional, Sequence

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.algorithms.td3 import TD3, TD3Config
from rllib_av.algorithms.td3.td3_learner import TD3TorchLearner
from rllib_av.checkpoints import latest_checkpoint, read_meta, save_checkpoint
from rllib_av.config_schema import ConfigError
from rllib_av.critic_probes import ProbeSchedule, run_probes
from rllib_av.envs.env_settings import DRIVING_ENV_ID
from rllib_av.guard_actions import carry_out, resume_remedy
from rllib_av.health.guard import DivergenceGuard, GuardState
from rllib_av.health.health_monitor import HEALTH_REASONS_KEY
from rllib_av.health.iteration_metrics import from_result
from rllib_av.health.q_bound import declared_reward_range
from rllib_av.monitoring.callbacks import HealthCallbacks, check_exporter_port, health_callbacks
from rllib_av.progress import ProgressClock, format_duration
from rllib_av.run_config import RunConfig, dump_yaml
from rllib_av.startup_checks import check_before_build, discard_unstarted_run

logger = logging.getLogger(__name__)

JOURNAL_DIR = "replay_journal"


def build_td3_config(rc: RunConfig, run_dir: Optional[str] = None) -> TD3Config:
    t, res = rc.training, rc.resources
    run_config = dataclasses.asdict(rc)
    run_config["run"]["run_dir"] = run_dir
    config = TD3Config()
    if rc.env.id == DRIVING_ENV_ID:
        from rllib_av.envs.driving_env import DrivingEnv

        config.environment(DrivingEnv, env_config=dataclasses.asdict(rc.env))
    else:  # gymnasium.make(id, **env.kwargs)
        config.environment(rc.env.id, env_config=dict(rc.env.kwargs))
    if t.learner_class is not None:
        config.learners(learner_class=learner_class(t.learner_class))
    (config
     .training(reward_range=declared_reward_range(rc.env, t.reward_range),
               **t.td3_training_kwargs(res.num_learners))
     .env_runners(num_env_runners=res.num_env_runners,
                  num_envs_per_env_runner=res.num_envs_per_env_runner,
                  rollout_fragment_length=t.rollout_fragment_length,
                  custom_resources_per_env_runner=dict(res.env_runner_resources))
     .learners(num_learners=res.num_learners, num_gpus_per_learner=res.num_gpus_per_learner,
               custom_resources_per_learner=dict(res.learner_resources))
     .fault_tolerance(restart_failed_env_runners=True)
     .callbacks(HealthCallbacks)
     .reporting(min_time_s_per_iteration=rc.run.min_time_s_per_iteration,
                min_sample_timesteps_per_iteration=0)
     .debugging(seed=rc.run.seed)
     .rllib_av(run_config=run_config,
               checkpoint_replay_buffer=rc.run.checkpoint_replay_buffer,
               # Training into a run dir journals every sample until it is checkpointed.
               replay_journal_dir=(os.path.join(run_dir, JOURNAL_DIR)
                                   if run_dir and rc.run.checkpoint_replay_buffer else None)))
    return config


def learner_class(name: str) -> type:
    """training.learner_class ("module:Class") imported and checked to be a TD3 learner."""
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"training.learner_class: {name!r} is not allowed ({e}); expected "
                          "'module:Class' importable here (PYTHONPATH)") from None
    if not (isinstance(cls, type) and issubclass(cls, TD3TorchLearner)):
        raise ConfigError(f"training.learner_class: {name!r} is not allowed; expected a "
                          "subclass of rllib_av.algorithms.td3.td3_learner.TD3TorchLearner")
    return cls


def new_run_dir(rc: RunConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.abspath(os.path.join(rc.run.output_dir, f"{rc.run.name}-{stamp}"))
    os.makedirs(run_dir, exist_ok=False)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        dump_yaml(dataclasses.asdict(rc), f)
    return run_dir


def init_ray() -> None:
    import ray

    if not ray.is_initialized():
        # Joins the cluster named by RAY_ADDRESS (ray job submit sets it), else local.
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)


def progress_line(result: dict, steps_per_s: float, total_env_steps: Optional[int] = None,
                  eta_s: Optional[float] = None) -> str:
    """One line: steps (of the target, with the time left), return, Q health at a glance."""
    m = from_result(result, 0)

    def fmt(value, spec):
        return "-".rjust(len(format(0.0, spec))) if value is None else format(value, spec)

    steps = f"steps {m.step:>8,}"
    if total_env_steps:
        steps += (f"/{total_env_steps:,} ({min(m.step / total_env_steps, 1):4.0%}) "
                  f"ETA {format_duration(eta_s):>6}")
    parts = [steps, f"{steps_per_s:6.0f}/s",
             f"return {fmt(m.episode_return_mean, '8.2f')}",
             f"len {fmt(m.episode_length_mean, '6.1f')}"]
    for stats in m.modules.values():
        if "q_actor_mean" in stats:
            parts.append(f"Q {stats['q_actor_mean']:8.2f} [{stats['q_actor_min']:.1f}, "
                         f"{stats['q_actor_max']:.1f}]")
        if "q_bound_ratio" in stats:
            parts.append(f"|Q|/bound {stats['q_bound_ratio']:.3f}")
    health = result.get("health", {}).get("divergence_state", {})
    if health:
        parts.append(("healthy", "WARNING", "DIVERGED")[max(health.values())])
    return " | ".join(parts)


def train(rc: RunConfig, run_dir: Optional[str] = None,
          on_result: Optional[Callable[[dict], None]] = None, verbose: bool = True,
          probe_at_steps: Sequence[int] = ()) -> str:
    """Train until ``run.total_env_steps``; returns the run directory.

    ``run_dir`` given and holding checkpoints: resume from the latest complete one.
    The critic probes run every ``health.probe_every_iters`` iterations, once
    past each of ``probe_at_steps`` env steps, and at the end.
    """
    import torch

    torch.set_num_threads(rc.resources.torch_threads)
    check_exporter_port(rc.monitoring)
    init_ray()
    check_before_build(rc)
    resume = run_dir is not None
    run_dir = run_dir or new_run_dir(rc)
    try:
        algo = build_td3_config(rc, run_dir).build_algo()
    except BaseException:  # e.g. a taken port: a run that never started leaves no directory
        if not resume:
            discard_unstarted_run(run_dir)
        raise
    guard = DivergenceGuard(rc.health, critic_lr=rc.training.critic_lr,
                            policy_noise=rc.training.policy_noise)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint:
        algo.restore_from_path(checkpoint)
        meta = read_meta(checkpoint)
        # The guard's rollbacks and their remedy survive the restart.
        guard.state = GuardState(**(meta.get("guard") or {}))
        resume_remedy(algo, guard.state)
        _truncate_history(run_dir, meta["training_iteration"])
        recovered = algo.replay_journal_tail()
        logger.info("resumed from %s, plus %d env steps sampled after it (replay journal)",
                    checkpoint, recovered)
    try:
        _loop(rc, algo, guard, run_dir, on_result, verbose, probe_at_steps)
    finally:
        algo.stop()
        callbacks = health_callbacks(algo)
        if callbacks is not None:
            callbacks.close()
    return run_dir


def _loop(rc, algo: TD3, guard: DivergenceGuard, run_dir: str, on_result,
          verbose: bool, probe_at_steps: Sequence[int]) -> None:
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    exporter = getattr(health_callbacks(algo), "exporter", None)
    clock = ProgressClock(rc.run.total_env_steps)
    schedule = ProbeSchedule(rc.health.probe_every_iters, probe_at_steps)
    with open(metrics_path, "a") as metrics_file:
        while True:
            result = algo.train()
            m = from_result(result, rc.resources.num_env_runners, algo.config.reward_range)
            rate, eta = clock.tick(m.step)
            metrics_file.write(json.dumps(_flat_record(result, m)) + "\n")
            metrics_file.flush()
            if verbose:
                print(progress_line(result, rate, rc.run.total_env_steps, eta), flush=True)
            done = m.step >= rc.run.total_env_steps
            decision = guard.after_iteration(result.get("health") or {},
                                             latest_checkpoint(run_dir, healthy_only=True))
            action = decision.action if decision else None
            if decision is not None:
                report = carry_out(decision, guard, algo, run_dir, result)
                if exporter is not None:
                    exporter.count_guard_action(action)
                if report and verbose:
                    print(report, flush=True)
            if action != "rollback" and (schedule.due(result["training_iteration"], m.step, done)
                                         or action == "stop"):
                probe = run_probes(algo, rc, run_dir, result)
                # What the probes found wrong joins the verdict from the next iteration on.
                health_callbacks(algo).health.note_probe(probe)
                if exporter is not None and "overestimation_bias" in probe:
                    exporter.set_overestimation_bias(DEFAULT_MODULE_ID,
                                                     probe["overestimation_bias"])
            if on_result is not None:
                on_result(result)
            if action == "stop":
                return
            if action == "rollback":  # the algorithm is no longer the one this result describes
                continue
            if done or result["training_iteration"] % rc.run.checkpoint_every_iters == 0:
                save_checkpoint(algo, run_dir, result, keep=rc.run.keep_checkpoints,
                                guard=dataclasses.asdict(guard.state))
            if done:
                return


def _truncate_history(run_dir: str, iteration: int) -> None:
    """Drop metrics.jsonl lines after the checkpoint we resume from: those
    iterations run again, and the history keeps one line per iteration."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["training_iteration"] <= iteration:
                    kept.append(line)
            except (ValueError, KeyError):  # a line cut short by the crash
                break
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def _flat_record(result: dict, m) -> dict:
    record = {"training_iteration": result["training_iteration"], "env_steps": m.step,
              "time_s": time.time(), "episode_return_mean": m.episode_return_mean,
              "episode_len_mean": m.episode_length_mean}
    for mid, stats in m.modules.items():
        record.update({f"{mid}/{key}": value for key, value in stats.items()})
    record.update({f"reward_components/{k}": v for k, v in m.reward_mean.items()})
    record.update({f"reward_share/{k}": v for k, v in m.reward_share.items()})
    record.update({f"nonfinite/{k}": v for k, v in m.nonfinite_lifetime.items()})
    health = result.get("health", {})
    if health.get("divergence_state"):
        record["divergence_state"] = max(health["divergence_state"].values())
    # Why the verdict is not healthy, kept with the numbers (diagnose prints them).
    reasons = {mid: r for mid, r in health.get("reasons", {}).items() if r}
    if reasons:
        record[HEALTH_REASONS_KEY] = reasons
    return record
