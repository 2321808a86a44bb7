"""Can the cluster place the learners? Checked before any actor starts.

Without this, Ray keeps learner actors it cannot place pending forever: a run
that never starts and never says why.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch

from rllib_av.config_schema import ConfigError


def learner_demand(config) -> Dict[str, float]:
    """Ray resources all learner actors together ask for (none for a learner in
    the driver process)."""
    n = config.num_learners
    if n == 0:
        return {}
    gpus = config.num_gpus_per_learner
    cpus = config.num_cpus_per_learner
    if cpus == "auto":  # RLlib's rule (LearnerGroup): a GPU learner needs no CPU slot
        cpus = 0 if gpus > 0 else 1
    demand = {"CPU": n * cpus, "GPU": n * gpus}
    for name, amount in (config.custom_resources_per_learner or {}).items():
        demand[name] = n * amount
    return {name: amount for name, amount in demand.items() if amount > 0}


def check_learner_resources(config, cluster: Mapping[str, float]) -> None:
    """Raise ConfigError (one line) when ``cluster`` (``ray.cluster_resources()``)
    cannot hold the learners ``config`` asks for."""
    n = config.num_learners
    if n == 0 and config.num_gpus_per_learner > 0 and torch.cuda.device_count() == 0:
        raise ConfigError(
            f"resources.num_gpus_per_learner: {config.num_gpus_per_learner:g} is not allowed with "
            "resources.num_learners=0 on a driver without a GPU; expected 0, or "
            "resources.num_learners >= 1 to place the learner on a GPU node")
    for name, amount in learner_demand(config).items():
        have = cluster.get(name, 0.0)
        if amount > have:
            per = amount / n
            raise ConfigError(
                f"resources.num_learners: {n} is not allowed; {n} learner(s) x {per:g} {name} "
                f"need {amount:g} {name}, the Ray cluster has {have:g}; expected at most "
                f"{int(have // per)} (or fewer {name} per learner)")
