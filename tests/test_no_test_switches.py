"""The product carries no switch that exists only to be broken: no run-config
key or TD3Config setting for fault injection, no code marked as test-only.
The faults live in the tests (broken_envs.py, broken_learners.py,
failing_simulator.py, setup_zoo.py)."""

import dataclasses
import os
import typing

from rllib_av.algorithms.td3 import TD3Config
from rllib_av.run_config import RunConfig

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rllib_av")


def _keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], prefix + f.name + ".")


def test_no_debug_key_in_the_run_config_or_td3_config():
    assert [k for k in _keys(RunConfig) if "debug" in k.rsplit(".", 1)[-1]] == []
    assert [k for k in vars(TD3Config()) if "debug" in k] == []


def test_no_code_marked_test_only():
    marked = []
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                marked += [f"{path}:{i}" for i, line in enumerate(open(path), 1)
                           if "TEST ONLY" in line]
    assert marked == []
