"""Atomic, health-tagged checkpoints inside a run directory.

A checkpoint is written to ``checkpoints/.partial-<iter>`` and renamed to
``checkpoints/iter_<iter>`` only once complete, with ``rllib_av_meta.json``
(iteration, env steps, divergence state, and the divergence guard's state: its
rollbacks and the remedy they put in place) written last inside it. A write cut
short by a crash leaves only a ``.partial-*`` folder, which is never loaded and
is cleared by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional

META = "rllib_av_meta.json"
PREFIX = "iter_"


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def complete_checkpoints(run_dir: str) -> List[str]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith(PREFIX)
                   and os.path.isfile(os.path.join(root, n, META)))
    return [os.path.join(root, n) for n in names]


def read_meta(path: str) -> dict:
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def latest_checkpoint(run_dir: str, healthy_only: bool = False) -> Optional[str]:
    for path in reversed(complete_checkpoints(run_dir)):
        if not healthy_only or read_meta(path)["healthy"]:
            return path
    return None


def save_checkpoint(algo, run_dir: str, result: dict, keep: int = 3,
                    guard: Optional[Dict] = None) -> str:
    """``guard``: the divergence guard's state, restored with the checkpoint."""
    root = checkpoint_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):  # leftovers of an interrupted save
        if name.startswith(".partial-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    iteration = int(result["training_iteration"])
    partial = os.path.join(root, f".partial-{iteration:06d}")
    final = os.path.join(root, f"{PREFIX}{iteration:06d}")
    algo.save_to_path(partial)
    states = (result.get("health") or {}).get("divergence_state") or {}
    meta = {
        "training_iteration": iteration,
        "env_steps": result.get("env_runners", {}).get("num_env_steps_sampled_lifetime"),
        "divergence_state": max(states.values()) if states else None,
        "healthy": not states or max(states.values()) == 0,
        "guard": guard,
    }
    with open(os.path.join(partial, META), "w") as f:
        json.dump(meta, f)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(partial, final)
    algo.checkpoint_complete(final)
    _prune(run_dir, keep)
    return final


def _prune(run_dir: str, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints and the newest healthy one."""
    paths = complete_checkpoints(run_dir)
    healthy = latest_checkpoint(run_dir, healthy_only=True)
    for path in paths[:-keep]:
        if path != healthy:
            shutil.rmtree(path, ignore_errors=True)
