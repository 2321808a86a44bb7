"""What is checked before a run starts, and what a run that never started leaves.

A user's mistake here is one ``ConfigError`` line, raised before Ray or torch
is imported (the CLI calls these right after loading the config):

- ``check_env_id``: the env id is one RLlib's EnvRunner can make;
- ``check_output_dir``: ``run.output_dir`` can hold run directories;
- ``run_dir_argument``: a RUN_DIR argument names a run directory (not a file,
  not a folder of runs).

``discard_unstarted_run`` removes a run directory whose run failed before its
first iteration was recorded: nothing half-made is left behind.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys

import gymnasium
from gymnasium.envs.registration import find_highest_version, get_env_id, parse_env_id

from rllib_av.config_schema import ConfigError

DRIVING_ENV_ID = "driving"
_ENV_ID_ALLOWED = (f"expected {DRIVING_ENV_ID!r}, a gymnasium id such as 'Pendulum-v1' "
                   "('package:Id-v0' imports the package that registers it), or a name "
                   "registered with ray.tune.register_env")


def check_env_id(env_id: str) -> None:
    """Raise ConfigError unless ``env_id`` is DrivingEnv, a name registered with
    ``ray.tune.register_env`` or a gymnasium id: the ids RLlib's
    SingleAgentEnvRunner makes (it hands anything else to ``gymnasium.make``)."""
    if env_id == DRIVING_ENV_ID or _tune_registered(env_id):
        return
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"env.id: {env_id!r} is not allowed (cannot import {module!r}: "
                              f"{e}); {_ENV_ID_ALLOWED}") from None
    try:
        ns, base, version = parse_env_id(name)
        if version is None:  # gymnasium.make picks the highest registered version
            version = find_highest_version(ns, base)
        gymnasium.spec(get_env_id(ns, base, version))
    except gymnasium.error.Error as e:
        reason = str(e).split(" Use `gymnasium.pprint_registry()`")[0].rstrip(".")
        raise ConfigError(f"env.id: {env_id!r} is not allowed ({reason}); "
                          f"{_ENV_ID_ALLOWED}") from None


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


def run_dir_argument(path: str, what: str = "RUN_DIR") -> str:
    """The absolute path of RUN_DIR (a folder with config.yaml, as training writes it)."""
    if not os.path.exists(path):
        raise ConfigError(f"{what}: {path!r} does not exist; expected a run directory "
                          "(runs/NAME-YYYYmmdd-HHMMSS)")
    if not os.path.isdir(path):
        raise ConfigError(f"{what}: {path!r} is a file; expected a run directory "
                          "(runs/NAME-YYYYmmdd-HHMMSS)")
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
