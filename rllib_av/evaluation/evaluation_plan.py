"""What `rllib-av evaluate` was asked to do, checked before torch or Ray load.

    plan = plan_evaluation("runs/quickstart-...", ["highway_light"], episodes=20)

resolves the checkpoint (a run directory means its newest healthy checkpoint),
reads the run config it was trained with and each scenario's ``env:`` section,
and raises ``ConfigError`` (one line) for anything a user got wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from rllib_av.checkpoints import latest_checkpoint
from rllib_av.config_schema import ConfigError
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.evaluation import EVAL_DIR
from rllib_av.run_config import RunConfig, load_run_config
from rllib_av.startup_checks import DRIVING_ENV_ID, existing_directory

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


@dataclass
class EvaluationPlan:
    checkpoint: Optional[str]  # absolute path, or None (baselines only)
    rc: Optional[RunConfig]  # the checkpoint's run config
    scenarios: Dict[str, EnvSettings]
    episodes: int
    baselines: bool
    videos: int
    out_dir: str
    seed: int


def plan_evaluation(checkpoint: Optional[str] = None, scenarios: Sequence[str] = (),
                    episodes: int = 10, baselines: bool = False, videos: int = 1,
                    out_dir: Optional[str] = None, seed: int = 10_000) -> EvaluationPlan:
    if episodes < 1 or not 0 <= videos <= episodes:
        raise ConfigError(f"evaluate: --episodes {episodes} / --videos {videos} is not allowed; "
                          "expected episodes >= 1 and 0 <= videos <= episodes")
    if checkpoint is None and not (baselines and scenarios):
        raise ConfigError("evaluate: give --checkpoint, or --baselines with --scenario")
    rc = None
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        rc = checkpoint_run_config(checkpoint)
        if rc.env.id != DRIVING_ENV_ID:
            raise ConfigError(f"--checkpoint: its run trained on env.id {rc.env.id!r}; driving "
                              f"metrics need DrivingEnv (env.id {DRIVING_ENV_ID!r})")
    named = {name: scenario_env(name) for name in scenarios} or {rc.run.name: rc.env}
    out_dir = out_dir or (os.path.join(run_dir_of(checkpoint), EVAL_DIR) if checkpoint
                          else EVAL_DIR)
    return EvaluationPlan(checkpoint, rc, named, episodes, baselines, videos, out_dir, seed)


def resolve_checkpoint(path: str) -> str:
    """The absolute path of a checkpoint directory, or of a run directory's newest
    healthy checkpoint (else its newest)."""
    existing_directory(path, "--checkpoint",
                       "a run directory or RUN_DIR/checkpoints/iter_NNNNNN")
    if os.path.isfile(os.path.join(path, "config.yaml")):
        found = latest_checkpoint(path, healthy_only=True) or latest_checkpoint(path)
        if found is None:
            raise ConfigError(f"--checkpoint: run directory {path!r} has no complete checkpoint")
        path = found
    # RLlib reads checkpoints through pyarrow, which takes a relative path for a URI.
    return os.path.abspath(path)


def run_dir_of(checkpoint: str) -> str:
    """RUN_DIR of RUN_DIR/checkpoints/iter_NNNNNN."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))


def checkpoint_run_config(checkpoint: str) -> RunConfig:
    """The run config the checkpoint was trained with (its run dir's config.yaml)."""
    if not os.path.isdir(os.path.join(checkpoint, "learner_group")):
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not a TD3 checkpoint "
                          "(expected RUN_DIR/checkpoints/iter_NNNNNN)")
    path = os.path.join(run_dir_of(checkpoint), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"--checkpoint: no config.yaml beside {checkpoint!r} "
                          f"(expected it at {path})")
    return load_run_config(path)


def scenario_env(name: str) -> EnvSettings:
    """The ``env:`` section of configs/<name>.yaml (or of a YAML path)."""
    path = name if name.endswith((".yaml", ".yml")) else os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
        raise ConfigError(f"--scenario: {name!r} is not allowed; expected one of "
                          f"{', '.join(known)} or a YAML path")
    return load_run_config(path).env
