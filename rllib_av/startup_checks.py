"""What must hold before a run starts, and what a run that never started leaves.

Before Ray or torch is imported (the CLI calls these right after loading the
config, so a mistake costs well under a second):

- ``check_env``: the env id is one RLlib's EnvRunner can make, and a
  gymnasium env's constructor takes ``env.kwargs``;
- ``check_output_dir``: ``run.output_dir`` can hold run directories;
- ``run_dir_argument``: a RUN_DIR argument names a run directory (not a file,
  not a folder of runs).

Before a run builds its algorithm (Ray is up, no run directory exists yet),
``check_before_build``, because RLlib would otherwise wait forever or fail
deep inside:

- every actor the config asks for can be placed: RLlib waits without a
  time-out for an EnvRunner or learner actor whose resources no node offers,
  or for learners beyond what all nodes together offer;
- a learner in the driver that asks for a GPU finds one in this process;
- a CARLA server the envs attach to on this machine answers.

A failed check is one line (``ConfigError``: exit 2 at the command line).
``discard_unstarted_run`` removes a run directory whose run failed before its
first iteration was recorded: nothing half-made is left behind.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from typing import Dict, List

import gymnasium
from gymnasium.envs.registration import load_env_creator

from rllib_av.config_schema import ConfigError
from rllib_av.envs.env_settings import DRIVING_ENV_ID, EnvSettings
from rllib_av.envs.gymnasium_ids import gymnasium_spec
from rllib_av.envs.carla_server import require_answering
from rllib_av.run_config import RunConfig

_ENV_ID_ALLOWED = (f"expected {DRIVING_ENV_ID!r}, a gymnasium id such as 'Pendulum-v1' "
                   "('package:Id-v0' imports the package that registers it), or a name "
                   "registered with ray.tune.register_env")


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
        # RLlib's rule: a learner without a GPU takes one CPU.
        _require_room_for_learners(res.num_learners, {
            **asks, "CPU": 0 if res.num_gpus_per_learner > 0 else 1}, nodes)
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


def _require_room_for_learners(count: int, asks: Dict[str, float], nodes: List[dict]) -> None:
    """All ``count`` learner actors together fit in what the nodes offer."""
    for name, amount in asks.items():
        need, have = count * amount, sum(node.get(name, 0) for node in nodes)
        if need > have:
            raise ConfigError(
                f"resources.num_learners: {count} is not allowed on this cluster; {count} "
                f"learners x {amount:g} {name} need {need:g} {name}, its nodes offer {have:g}, "
                f"and RLlib would wait for the rest forever; expected at most "
                f"{int(have // amount)} learners, or fewer {name} each")


def _require_local_gpu(gpus: float) -> None:
    import torch

    if torch.cuda.device_count() == 0:
        raise ConfigError(
            f"resources.num_gpus_per_learner: {gpus:g} is not allowed here; the learner runs "
            f"in this process (resources.num_learners: 0) and torch {torch.__version__} sees "
            "no CUDA GPU; expected 0, or a CUDA build of torch on a machine with a GPU")


def check_env(env: EnvSettings) -> None:
    """Raise ConfigError unless ``env.id`` is DrivingEnv, a name registered with
    ``ray.tune.register_env`` or a gymnasium id (the ids RLlib's
    SingleAgentEnvRunner makes: it hands anything else to ``gymnasium.make``),
    and a gymnasium env's constructor accepts ``env.kwargs`` (checked on its
    signature: nothing is constructed)."""
    env_id = env.id
    if env_id == DRIVING_ENV_ID or _tune_registered(env_id):
        return
    try:
        spec = gymnasium_spec(env_id)
    except ImportError as e:
        raise ConfigError(f"env.id: {env_id!r} is not allowed (cannot import "
                          f"{env_id.rpartition(':')[0]!r}: {e}); {_ENV_ID_ALLOWED}") from None
    except gymnasium.error.Error as e:
        reason = str(e).split(" Use `gymnasium.pprint_registry()`")[0].rstrip(".")
        raise ConfigError(f"env.id: {env_id!r} is not allowed ({reason}); "
                          f"{_ENV_ID_ALLOWED}") from None
    _check_constructor_arguments(spec, env.kwargs)


# gymnasium.make's own keyword arguments (the rest go to the env's constructor).
_MAKE_ARGUMENTS = ("max_episode_steps", "disable_env_checker")


def _check_constructor_arguments(spec, kwargs: Dict) -> None:
    args = {k: v for k, v in kwargs.items() if k not in _MAKE_ARGUMENTS}
    creator = spec.entry_point
    if isinstance(creator, str):
        creator = load_env_creator(creator)
    try:
        inspect.signature(creator).bind(**{**spec.kwargs, **args})
    except TypeError as e:
        raise ConfigError(f"env.kwargs: {kwargs!r} is not allowed for {spec.id!r} ({e}); "
                          f"expected the arguments of {getattr(creator, '__name__', creator)}"
                          f"{inspect.signature(creator)}, or gymnasium.make's "
                          f"{', '.join(_MAKE_ARGUMENTS)}") from None
    except ValueError:  # a builtin without a signature: gymnasium will tell at make time
        pass


def _tune_registered(env_id: str) -> bool:
    # Only a process that imported Ray Tune can have registered an env with it;
    # importing it here just to look would cost the CLI seconds.
    registry = sys.modules.get("ray.tune.registry")
    return registry is not None and registry._global_registry.contains(
        registry.ENV_CREATOR, env_id)


def check_output_dir(output_dir: str) -> None:
    """``run.output_dir`` is a writable directory, or can be created."""
    path = os.path.abspath(os.path.expanduser(output_dir))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"run.output_dir: {output_dir!r} is not allowed ({existing!r} is a "
                          "file); expected a directory for run directories (created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"run.output_dir: {output_dir!r} is not allowed ({existing!r} is not "
                          "writable); expected a directory you can write to")


def existing_directory(path: str, what: str, expected: str) -> None:
    """``path`` exists and is a directory, else one line naming ``what`` and ``expected``."""
    if not os.path.exists(path):
        raise ConfigError(f"{what}: {path!r} does not exist; expected {expected}")
    if not os.path.isdir(path):
        raise ConfigError(f"{what}: {path!r} is a file; expected {expected}")


def run_dir_argument(path: str, what: str = "RUN_DIR") -> str:
    """The absolute path of RUN_DIR (a folder with config.yaml, as training writes it)."""
    existing_directory(path, what, "a run directory (runs/NAME-YYYYmmdd-HHMMSS)")
    if not os.path.isfile(os.path.join(path, "config.yaml")):
        raise ConfigError(f"{what}: {path!r} is not a run directory (no config.yaml in it); "
                          "expected runs/NAME-YYYYmmdd-HHMMSS")
    return os.path.abspath(path)


def discard_unstarted_run(run_dir: str) -> bool:
    """Remove ``run_dir`` if no iteration was recorded in it; returns whether it did."""
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True
