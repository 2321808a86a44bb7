"""Episode videos (GIF): what the policy saw beside where the car was, and why.

Each frame: the policy's camera view (84x84, scaled up) | the env's top-down
render with the route ahead; below, the actions and the reward components over
the whole episode with a cursor at the current step. The plot is drawn once per
episode and only the cursor is drawn per frame (matplotlib per frame would cost
~50 ms each).
"""

from __future__ import annotations

import os
from typing import List

import numpy as np
from PIL import Image, ImageDraw

from rllib_av.envs.reward import COMPONENTS

PANEL = 256  # pixels per view panel
PLOT_HEIGHT = 300
CURSOR_RGB = (220, 0, 0)
_NO_TOPDOWN = np.full((PANEL, PANEL, 3), 64, np.uint8)


def episode_frames(trace) -> List[np.ndarray]:
    """RGB frames (one per recorded state) of an episode recorded with frames."""
    if not trace.camera:
        raise ValueError("the episode was recorded without frames (record_frames)")
    plot, cursor_x, rows = _timeline(trace, width=2 * PANEL)
    frames = []
    for t, (camera, topdown) in enumerate(zip(trace.camera, trace.topdown)):
        cam = np.asarray(Image.fromarray(camera).resize((PANEL, PANEL), Image.NEAREST))
        top = (_NO_TOPDOWN if topdown is None else  # a backend without one (CARLA)
               np.asarray(Image.fromarray(topdown).resize((PANEL, PANEL), Image.NEAREST)))
        panel = plot.copy()
        for r0, r1 in rows:
            panel[r0:r1, cursor_x(t)] = CURSOR_RGB
        frame = Image.fromarray(np.vstack([
            np.hstack([np.repeat(cam[..., None], 3, axis=2), top]), panel]))
        ret = float(np.sum(trace.rewards[:t]))
        ImageDraw.Draw(frame).text((4, 4), f"step {t}  return {ret:.1f}", fill=(255, 255, 0))
        frames.append(np.asarray(frame))
    return frames


def write_gif(trace, path: str, fps: int = 10) -> str:
    frames = [Image.fromarray(f) for f in episode_frames(trace)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:],
                   duration=int(1000 / fps), loop=0, optimize=False)
    return path


def _timeline(trace, width: int):
    """The actions / reward components plot as an RGB array, a step -> pixel
    column map, and the pixel row ranges of its axes (for the cursor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    fig, (ax_a, ax_r) = plt.subplots(2, 1, figsize=(width / dpi, PLOT_HEIGHT / dpi), dpi=dpi,
                                     sharex=True)
    steps = np.arange(1, trace.num_steps + 1)
    actions = np.asarray(trace.actions).reshape(-1, 2)
    ax_a.plot(steps, actions[:, 0], label="steer")
    ax_a.plot(steps, actions[:, 1], label="throttle_brake")
    ax_a.set_ylim(-1.05, 1.05)
    for comp in COMPONENTS + ("total",):
        ax_r.plot(steps, [c.get(comp, 0.0) for c in trace.components], label=comp,
                  lw=1.8 if comp == "total" else 1.0)
    ax_r.set_xlim(0, max(trace.num_steps, 1))
    ax_r.set_xlabel("step", fontsize=7)
    for ax, title in ((ax_a, "actions"), (ax_r, "reward components")):
        ax.set_title(title, fontsize=7, pad=2)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="upper left", ncol=6, frameon=False)
    fig.tight_layout(pad=0.4)
    fig.canvas.draw()
    plot = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    height = plot.shape[0]
    rows = [(height - int(ax.bbox.y1), height - int(ax.bbox.y0)) for ax in (ax_a, ax_r)]
    to_px = ax_r.transData

    def cursor_x(t: int) -> int:
        return int(np.clip(to_px.transform((t, 0.0))[0], 0, plot.shape[1] - 1))

    plt.close(fig)
    return plot, cursor_x, rows
