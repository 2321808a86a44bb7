"""The report's view of an image run's encoder input: frame stacks after the DrQ shifts.

A few stacks come from the run's own env (pure pursuit driving, the run's
``frame_stack``) and go through the learner's augmentation exactly as a
training batch does, so a reader sees what the critic trains on: every frame
of a stack moved by one shift, the edge pixels repeated into the gap.
"""

from __future__ import annotations

import html
import os

import numpy as np
import torch

from rllib_av.algorithms.td3.augmentation import PAD, random_shift
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.evaluation.baselines import PurePursuitPID
from rllib_av.run_config import load_run_config

PNG = "augmented_frames.png"
_ROLLOUT_STEPS = 60


def augmented_frames_html(run_dir: str, out: str, stacks: int = 3, seed: int = 0) -> str:
    """Write ``out``/augmented_frames.png and return its report section; "" for a
    run without an image encoder. Only the embedded backend is rolled out (a
    CARLA run would need its simulator to render a frame)."""
    path = os.path.join(run_dir, "config.yaml")
    rc = load_run_config(path) if os.path.isfile(path) else None
    if rc is None or rc.env.id != "driving" or rc.training.image_encoder == "none":
        return ""
    title = "<h2>What the encoder sees</h2>"
    if rc.env.backend != "highway":
        return f"{title}<p>Shown for runs on the embedded backend (this is a {rc.env.backend} run).</p>"
    t = rc.training
    observed = torch.as_tensor(_frame_stacks(rc, stacks, seed))
    seen = (random_shift(observed, generator=torch.Generator().manual_seed(seed))
            if t.image_augmentation else observed)
    _plot(observed.numpy(), seen.numpy(), os.path.join(out, PNG))
    shift = (f"shifted by up to {PAD} pixels each way, one shift per stack (DrQ)"
             if t.image_augmentation else "not augmented (training.image_augmentation: false)")
    return (f"{title}<p>{t.frame_stack}-frame stacks for the {html.escape(t.image_encoder)} "
            f"encoder, {shift}; left, the newest frame as the camera took it.</p>\n"
            f'<img src="{PNG}" alt="frame stacks after augmentation">')


def _frame_stacks(rc, stacks: int, seed: int) -> np.ndarray:
    """(stacks, frame_stack, H, W) uint8 spread over one pure-pursuit episode;
    zero frames before the reset, as the training connector pads them."""
    n = rc.training.frame_stack
    env, policy = DrivingEnv(rc.env), PurePursuitPID.for_env(rc.env)
    try:
        obs, info = env.reset(seed=seed)
        frames = [np.zeros_like(obs["image"])] * (n - 1) + [obs["image"]]
        for _ in range(_ROLLOUT_STEPS):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            frames.append(obs["image"])
            if terminated or truncated:
                break
    finally:
        env.close()
    first_full = min(2 * (n - 1), len(frames) - 1)
    ends = np.linspace(first_full, len(frames) - 1, stacks).astype(int)
    return np.stack([frames[e - n + 1:e + 1] for e in ends])


def _plot(observed: np.ndarray, seen: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, n = seen.shape[:2]
    fig, axes = plt.subplots(rows, n + 1, figsize=(1.9 * (n + 1), 2.0 * rows), squeeze=False)
    for r in range(rows):
        panels = [(observed[r, -1], "camera, newest")] + [
            (seen[r, i], f"encoder input t-{n - 1 - i}" if i < n - 1 else "encoder input t")
            for i in range(n)]
        for ax, (image, label) in zip(axes[r], panels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
