"""The critic probes of one moment of a run, appended to ``probes.jsonl``.

One record: the reward pipeline and terminal-masking checks on the replay
buffer (replay_checks.py) and the Monte-Carlo overestimation probe
(overestimation.py), with the bias also relative to the Q bound. Training runs
them every ``health.probe_every_iters`` iterations; preflight at its end;
diagnose reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List

from rllib_av.health.overestimation import overestimation_probe
from rllib_av.health.q_bound import q_bound, training_reward_range
from rllib_av.health.replay_checks import reward_pipeline_check, terminal_masking_check

logger = logging.getLogger(__name__)

PROBES_FILE = "probes.jsonl"


def run_probes(algo, rc, run_dir: str, result: Dict) -> Dict:
    """Probe, append the record, export the bias. A failing probe is logged, never
    fatal: it must not end a long run."""
    try:
        return _run_probes(algo, rc, run_dir, result)
    except Exception:
        logger.exception("critic probes failed at iteration %s", result.get("training_iteration"))
        return {}


def _run_probes(algo, rc, run_dir: str, result: Dict) -> Dict:
    from rllib_av.monitoring.callbacks import health_callbacks
    from rllib_av.training import env_reward_range

    started = time.perf_counter()
    record = {"training_iteration": result.get("training_iteration"),
              "env_steps": result.get("env_runners", {}).get("num_env_steps_sampled_lifetime")}
    declared = env_reward_range(rc)
    bound = None
    if declared is not None:
        r_range = training_reward_range(*declared, clip=rc.training.reward_clip,
                                        scale=algo.reward_processor.scale)
        bound = q_bound(*r_range, rc.training.gamma)
        record["q_bound"] = bound
        record.update(reward_pipeline_check(algo.replay_buffer, r_range))
    record.update(terminal_masking_check(algo))
    if rc.health.probe_episodes and not (rc.env.id == "driving" and rc.env.backend == "carla"):
        record.update(overestimation_probe(algo, rc, rc.health.probe_episodes))
    if bound and "overestimation_bias" in record:
        record["overestimation_ratio"] = record["overestimation_bias"] / bound
    record["probe_s"] = time.perf_counter() - started
    with open(os.path.join(run_dir, PROBES_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    callbacks = health_callbacks(algo)
    if callbacks is not None and callbacks.exporter is not None and "overestimation_bias" in record:
        callbacks.exporter.set_overestimation_bias("default_policy", record["overestimation_bias"])
    return record


def read_probes(run_dir: str) -> List[Dict]:
    path = os.path.join(run_dir, PROBES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
