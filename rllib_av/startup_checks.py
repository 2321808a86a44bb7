"""What must hold before a run builds its algorithm (Ray is up, no run
directory exists yet), because RLlib would otherwise wait forever or fail
deep inside:

- every actor the config asks for can be placed: RLlib waits without a
  time-out for an EnvRunner or learner actor whose resources no node offers;
- a learner in the driver that asks for a GPU finds one in this process;
- a CARLA server the envs attach to on this machine answers.

A failed check is one line (``ConfigError``: exit 2 at the command line).
"""

from __future__ import annotations

from typing import Dict, List

from rllib_av.config_schema import ConfigError
from rllib_av.envs.carla_server import require_answering
from rllib_av.run_config import RunConfig


def check_before_build(rc: RunConfig) -> None:
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    res = rc.resources
    if res.num_env_runners > 0:
        _require_offered("resources.env_runner_resources", dict(res.env_runner_resources),
                         nodes, "or set resources.env_runner_resources: {} on a single machine")
    if res.num_learners > 0:
        asks = dict(res.learner_resources)
        if res.num_gpus_per_learner > 0:
            asks["GPU"] = res.num_gpus_per_learner
        _require_offered("resources.learner_resources", asks, nodes,
                         "or set resources.num_gpus_per_learner: 0")
    elif res.num_gpus_per_learner > 0:
        _require_local_gpu(res.num_gpus_per_learner)
    carla = rc.env.carla
    envs_here = res.num_env_runners == 0 or len(nodes) == 1
    if rc.env.id == "driving" and rc.env.backend == "carla" and carla.mode == "attach" \
            and envs_here:
        require_answering(carla.host, carla.port, carla.rpc_timeout_s, carla.map_path)


def _require_offered(key: str, asks: Dict[str, float], nodes: List[dict], other: str) -> None:
    for name, amount in asks.items():
        if not any(node.get(name, 0) >= amount for node in nodes):
            offered = sorted({k for node in nodes for k in node
                              if not k.startswith(("node:", "accelerator_type:"))})
            raise ConfigError(
                f"{key}: {{{name}: {amount:g}}} is not allowed on this cluster; no Ray node "
                f"offers {amount:g} {name} (they offer {', '.join(offered)}), and RLlib would "
                f"wait for one forever; expected nodes started with "
                f"`ray start ... --resources='{{\"{name}\": N}}'` (`ray status` lists what "
                f"joined), {other}")


def _require_local_gpu(gpus: float) -> None:
    import torch

    if torch.cuda.device_count() == 0:
        raise ConfigError(
            f"resources.num_gpus_per_learner: {gpus:g} is not allowed here; the learner runs "
            f"in this process (resources.num_learners: 0) and torch {torch.__version__} sees "
            "no CUDA GPU; expected 0, or a CUDA build of torch on a machine with a GPU")
