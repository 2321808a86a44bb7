"""Gymnasium ids as ``gymnasium.make`` reads them.

``"my_module:MyEnv-v0"`` imports ``my_module`` first (whose import registers
the id); an id without a version means the highest registered one.
"""

from __future__ import annotations

import importlib

import gymnasium
from gymnasium.envs.registration import EnvSpec, find_highest_version, get_env_id, parse_env_id


def gymnasium_spec(env_id: str) -> EnvSpec:
    """The spec ``gymnasium.make(env_id)`` would use. Raises ImportError for a
    module that cannot be imported, gymnasium.error.Error for an unknown id."""
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)
    ns, base, version = parse_env_id(name)
    if version is None:
        version = find_highest_version(ns, base)
    return gymnasium.spec(get_env_id(ns, base, version))
