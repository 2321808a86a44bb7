"""`rllib-av evaluate`: the trained policy (and baselines) per scenario -> table, JSON, GIFs.

    evaluate(checkpoint="runs/quickstart-.../checkpoints/iter_000150",
             scenarios=["quickstart", "highway_light"], episodes=20, baselines=True)

writes ``<out>/evaluation.json`` (per scenario and policy: the metrics as
mean/low/high/n and the per-episode numbers), ``<out>/evaluation.txt`` (the
tables) and ``<out>/videos/<scenario>-<policy>-ep<i>.gif``; ``out`` defaults to
``RUN_DIR/eval``, where ``rllib-av report`` finds it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

from rllib_av.checkpoints import latest_checkpoint
from rllib_av.config_schema import ConfigError
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.evaluation import EVAL_DIR, RESULT_FILE
from rllib_av.evaluation.baselines import PurePursuitPID, RandomPolicy
from rllib_av.evaluation.driving_metrics import episode_metrics, format_table, summarize
from rllib_av.evaluation.rollouts import run_episodes
from rllib_av.evaluation.trained_policy import TrainedPolicy, checkpoint_run_config, run_dir_of
from rllib_av.evaluation.video import write_gif
from rllib_av.run_config import load_run_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory, or a run directory (its newest healthy checkpoint,
    else its newest)."""
    if os.path.isfile(os.path.join(path, "config.yaml")):
        found = latest_checkpoint(path, healthy_only=True) or latest_checkpoint(path)
        if found is None:
            raise ConfigError(f"--checkpoint: run directory {path!r} has no complete checkpoint")
        return found
    if not os.path.isdir(path):
        raise ConfigError(f"--checkpoint: {path!r} does not exist")
    return path


def scenario_env(name: str) -> EnvSettings:
    """The ``env:`` section of configs/<name>.yaml (or of a YAML path)."""
    path = name if name.endswith((".yaml", ".yml")) else os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
        raise ConfigError(f"--scenario: {name!r} is not allowed; expected one of "
                          f"{', '.join(known)} or a YAML path")
    return load_run_config(path).env


def evaluate(checkpoint: Optional[str] = None, scenarios: Sequence[str] = (),
             episodes: int = 10, baselines: bool = False, videos: int = 1,
             out_dir: Optional[str] = None, seed: int = 10_000) -> Dict:
    """Evaluate and write the results; returns what evaluation.json holds, and ``out_dir``."""
    import torch

    if episodes < 1 or not 0 <= videos <= episodes:
        raise ConfigError(f"evaluate: --episodes {episodes} / --videos {videos} is not allowed; "
                          "expected episodes >= 1 and 0 <= videos <= episodes")
    if checkpoint is None and not (baselines and scenarios):
        raise ConfigError("evaluate: give --checkpoint, or --baselines with --scenario")
    rc = None
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        rc = checkpoint_run_config(checkpoint)
        if rc.env.id != "driving":
            raise ConfigError(f"--checkpoint: its run trained on env.id {rc.env.id!r}; driving "
                              "metrics need DrivingEnv (env.id 'driving')")
        torch.set_num_threads(rc.resources.torch_threads)
    named = {name: scenario_env(name) for name in scenarios} or {rc.run.name: rc.env}
    out_dir = out_dir or (os.path.join(run_dir_of(checkpoint), EVAL_DIR) if checkpoint
                          else EVAL_DIR)
    result = {"checkpoint": checkpoint, "episodes": episodes, "seed": seed, "scenarios": {}}
    tables = []
    for name, env_settings in named.items():
        scenario = _evaluate_scenario(name, env_settings, checkpoint, rc, episodes, baselines,
                                      videos, out_dir, seed)
        result["scenarios"][name] = scenario
        tables.append(scenario["table"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, "evaluation.txt"), "w") as f:
        f.write("\n\n".join(tables) + "\n")
    result["out_dir"] = out_dir
    return result


def _evaluate_scenario(name, env_settings, checkpoint, rc, episodes, baselines, videos,
                       out_dir, seed) -> Dict:
    env = DrivingEnv(env_settings, render_mode="rgb_array")
    try:
        policies: List = [TrainedPolicy(checkpoint, env, rc)] if checkpoint else []
        if baselines:
            policies += [RandomPolicy(seed), PurePursuitPID.for_env(env_settings)]
        summaries, per_episode, video_paths = {}, {}, {}
        for policy in policies:
            traces = run_episodes(env, policy, episodes, seed, record_frames=range(videos))
            rows = [{**episode_metrics(t), "return": t.episode_return, "steps": t.num_steps,
                     "end": t.episode_end} for t in traces]
            summaries[policy.name] = summarize(rows)
            per_episode[policy.name] = rows
            video_paths[policy.name] = [
                write_gif(t, os.path.join(out_dir, "videos", f"{name}-{policy.name}-ep{i}.gif"))
                for i, t in enumerate(traces[:videos])]
    finally:
        env.close()
    ends = {p: dict(Counter(str(r["end"]) for r in rows)) for p, rows in per_episode.items()}
    ends_line = "episode ends: " + "; ".join(
        f"{p}: " + ", ".join(f"{e} {n}" for e, n in sorted(c.items())) for p, c in ends.items())
    return {
        "metrics": {p: {k: iv.as_dict() for k, iv in s.items()} for p, s in summaries.items()},
        "episodes": per_episode,
        "ends": ends,
        "videos": {p: [os.path.relpath(v, out_dir) for v in vs] for p, vs in video_paths.items()},
        "table": format_table(summaries, f"scenario {name}") + "\n" + ends_line,
    }
