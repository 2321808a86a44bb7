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

from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.evaluation import RESULT_FILE
from rllib_av.evaluation.baselines import PurePursuitPID, RandomPolicy
from rllib_av.evaluation.driving_metrics import episode_metrics, format_table, summarize
from rllib_av.evaluation.rollouts import run_episodes
from rllib_av.evaluation.evaluation_plan import EvaluationPlan, plan_evaluation
from rllib_av.evaluation.trained_policy import TrainedPolicy
from rllib_av.evaluation.video import write_gif


def evaluate(checkpoint: Optional[str] = None, scenarios: Sequence[str] = (),
             episodes: int = 10, baselines: bool = False, videos: int = 1,
             out_dir: Optional[str] = None, seed: int = 10_000) -> Dict:
    """Evaluate and write the results; returns what evaluation.json holds, and ``out_dir``."""
    return run_evaluation(plan_evaluation(checkpoint, scenarios, episodes, baselines, videos,
                                          out_dir, seed))


def run_evaluation(plan: EvaluationPlan) -> Dict:
    """Run a checked plan (``plan_evaluation``) and write its results."""
    import torch

    if plan.rc is not None:
        torch.set_num_threads(plan.rc.resources.torch_threads)
    result = {"checkpoint": plan.checkpoint, "episodes": plan.episodes, "seed": plan.seed,
              "scenarios": {}}
    tables = []
    for name, env_settings in plan.scenarios.items():
        scenario = _evaluate_scenario(name, env_settings, plan)
        result["scenarios"][name] = scenario
        tables.append(scenario["table"])
    os.makedirs(plan.out_dir, exist_ok=True)
    with open(os.path.join(plan.out_dir, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(plan.out_dir, "evaluation.txt"), "w") as f:
        f.write("\n\n".join(tables) + "\n")
    result["out_dir"] = plan.out_dir
    return result


def _evaluate_scenario(name: str, env_settings: EnvSettings, plan: EvaluationPlan) -> Dict:
    checkpoint, episodes, videos, seed = plan.checkpoint, plan.episodes, plan.videos, plan.seed
    env = DrivingEnv(env_settings, render_mode="rgb_array")
    try:
        policies: List = [TrainedPolicy(checkpoint, env, plan.rc)] if checkpoint else []
        if plan.baselines:
            policies += [RandomPolicy(seed), PurePursuitPID.for_env(env_settings)]
        summaries, per_episode, video_paths = {}, {}, {}
        for policy in policies:
            traces = run_episodes(env, policy, episodes, seed, record_frames=range(videos))
            rows = [{**episode_metrics(t), "return": t.episode_return, "steps": t.num_steps,
                     "end": t.episode_end} for t in traces]
            summaries[policy.name] = summarize(rows)
            per_episode[policy.name] = rows
            video_dir = os.path.join(plan.out_dir, "videos")
            video_paths[policy.name] = [
                write_gif(t, os.path.join(video_dir, f"{name}-{policy.name}-ep{i}.gif"))
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
        "videos": {p: [os.path.relpath(v, plan.out_dir) for v in vs] for p, vs in video_paths.items()},
        "table": format_table(summaries, f"scenario {name}") + "\n" + ends_line,
    }
