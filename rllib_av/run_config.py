"""The run config: one YAML file (configs/*.yaml), one typed object.

Sections are pydantic dataclasses owned by the packages that use them; this
module composes them, reads and writes their YAML (numbers the way users write
them: ``1e-4`` is a number, not YAML 1.1's string) and publishes the JSON
Schema. ``load_run_config`` raises ``ConfigError`` with one line naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any, Dict, List, Optional, Union

import yaml
from pydantic import (Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter,
                      model_validator)
from pydantic.dataclasses import dataclass

from rllib_av.algorithms.td3.training_settings import TrainingSettings
from rllib_av.config_schema import ConfigError, ConfigSection, from_dict
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.health.health_settings import HealthSettings
from rllib_av.monitoring.monitoring_settings import MonitoringSettings


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2: an exponent needs no dot and no
    sign (``1e-4``, ``3E5``); YAML 1.1's forms still read as before."""


class _ConfigDumper(yaml.SafeDumper):
    """Quotes the strings ``_ConfigLoader`` would read as numbers (a run named
    "1e5"), so what is written reads back the same."""


for _cls in (_ConfigLoader, _ConfigDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )


def load_yaml(source: Union[str, IO[str]]) -> Any:
    """Parse run-config YAML (a string or an open file); raises yaml.YAMLError."""
    return yaml.load(source, Loader=_ConfigLoader)


def dump_yaml(data: Any, stream: IO[str]) -> None:
    """Write ``data`` as run-config YAML that ``load_yaml`` reads back unchanged."""
    yaml.dump(data, stream, Dumper=_ConfigDumper, sort_keys=False)


def override(data: Dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` command-line override (value parsed as YAML)."""
    if "=" not in dotted:
        raise ConfigError(f"--set {dotted!r}: expected KEY=VALUE, e.g. training.gamma=0.98")
    key, raw = dotted.split("=", 1)
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    try:
        node[parts[-1]] = load_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: {raw!r} is not a valid YAML value")


@dataclass
class RunSettings(ConfigSection):
    name: StrictStr = "run"
    output_dir: StrictStr = "runs"
    """Run directories are created under here: <output_dir>/<name>-<timestamp>."""
    seed: StrictInt = Field(0, ge=0)
    total_env_steps: StrictInt = Field(20_000, gt=0)
    """Stop after this many env steps (sampled lifetime)."""
    checkpoint_every_iters: StrictInt = Field(50, gt=0)
    keep_checkpoints: StrictInt = Field(3, ge=1)
    """Complete checkpoints kept (oldest pruned first; the newest healthy one is
    kept too)."""
    checkpoint_replay_buffer: StrictBool = True
    """Save the replay buffer with each checkpoint (exact resume; large for images)."""
    min_time_s_per_iteration: StrictFloat = Field(1.0, ge=0)
    """Cap on a training iteration's wall time; keeps metrics flowing."""


@dataclass
class ResourceSettings(ConfigSection):
    num_env_runners: StrictInt = Field(0, ge=0)
    """0 = sample in the driver process (fastest on one machine)."""
    num_envs_per_env_runner: StrictInt = Field(1, ge=1)
    num_learners: StrictInt = Field(0, ge=0)
    """0 = the learner lives in the driver; 1 = a learner actor (e.g. on a GPU node)."""
    num_gpus_per_learner: StrictFloat = Field(0.0, ge=0)
    env_runner_resources: Dict[StrictStr, StrictFloat] = Field(default_factory=dict)
    """Custom Ray resources each EnvRunner asks for, e.g. {"carla_slot": 1}: its actor then
    lands only on nodes that declare that resource."""
    learner_resources: Dict[StrictStr, StrictFloat] = Field(default_factory=dict)
    """Custom Ray resources each learner actor asks for (needs num_learners >= 1)."""
    torch_threads: StrictInt = Field(1, ge=1)
    """Torch intra-op threads in the driver/learner (1 is fastest for small nets)."""


@dataclass
class RunConfig(ConfigSection):
    run: RunSettings = Field(default_factory=RunSettings)
    env: EnvSettings = Field(default_factory=EnvSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

    @model_validator(mode="after")
    def check(self) -> "RunConfig":
        envs = self.resources.num_envs_per_env_runner
        if self.env.backend == "carla" and self.env.carla.mode == "attach" and envs > 1:
            # Every env ticks its world synchronously: one server, one env.
            raise ConfigError(f"resources.num_envs_per_env_runner: {envs} is not allowed with "
                              "env.carla.mode: attach; expected 1 (one env per attached server), "
                              "or env.carla.mode: launch for a server per env")
        t, runners = self.training, self.resources.num_env_runners
        if t.async_sampling and runners == 0:
            raise ConfigError("training.async_sampling: true is not allowed with "
                              "resources.num_env_runners: 0; expected resources.num_env_runners"
                              " >= 1 (the driver's own env runner cannot sample while the "
                              "learner trains), or training.async_sampling: false")
        n, batch = self.resources.num_learners, self.training.batch_size
        if n > 1 and batch % n:
            raise ConfigError(
                f"training.batch_size: {batch} is not allowed with resources.num_learners={n}; "
                f"expected a multiple of {n} (each learner samples batch_size / num_learners "
                "transitions per update from its own replay shard)")
        return self


def load_run_config(path: Optional[str] = None, overrides: List[str] = ()) -> RunConfig:
    """Load, apply ``KEY=VALUE`` overrides, validate."""
    data = {}
    if path is not None:
        # `ray job submit -- rllib-av train --config '~/...'` hands '~' over unexpanded.
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise ConfigError(f"--config: {path!r} does not exist; expected a YAML file")
        try:
            with open(path) as f:
                data = load_yaml(f) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"--config: {path!r} is not valid YAML{where}")
        if not isinstance(data, dict):
            raise ConfigError(f"--config: {path!r} must hold a mapping of sections")
    for item in overrides:
        override(data, item)
    return from_dict(RunConfig, data)


def run_config_schema() -> Dict[str, Any]:
    """The run config's JSON Schema (``rllib-av config schema``; committed as
    configs/run_config.schema.json, which the YAML files there name so editors
    complete and check them)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **TypeAdapter(RunConfig).json_schema(),
            "title": "rllib-av run config",
            "description": "A run config (configs/*.yaml). Loading it also checks what a "
                           "schema cannot say: rules between keys and paths that must exist."}
