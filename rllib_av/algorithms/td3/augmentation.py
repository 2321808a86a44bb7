"""DrQ's random-shift augmentation of image stacks (Kostrikov et al. 2020; Yarats et al. 2021).

The learner calls ``random_shift_obs`` once per gradient step, on that step's
batch, on the learner's device: obs and next_obs each get a fresh random
integer shift of up to ``PAD`` pixels per transition, so the critic (and the
shared encoder it trains) never sees the same crop of a stored frame twice.

As DrQ-v2 does:
- pad by ``PAD`` = 4 pixels (for 84x84 inputs) with edge replication, then
  crop back to the original size at a uniform integer offset in [0, 2 PAD];
- one shift per stack: every frame of a stack moves together (they are the
  channels of one image);
- obs and next_obs drawn independently, one augmented copy each (K = M = 1,
  no averaging of the target over several augmentations as DrQ-v1 allowed);
- the actor's loss uses the critic step's (augmented) features.

Not as DrQ-v2 does:
- the crop is an index gather on the uint8 stack (edge replication = clamped
  indices), not ``grid_sample`` on floats: with integer offsets both read
  exactly the same pixels, and uint8 moves a quarter of the bytes;
- the bootstrap reads next_obs through a Polyak-averaged *target* encoder
  (DrQ-v2 uses the online encoder under no_grad): TD3's targets are all
  slow-moving copies, and the encoder stays no exception;
- the critic trains on 1-step TD3 targets unless ``training.n_step`` says
  otherwise (DrQ-v2 uses 3-step returns), with TD3's target policy smoothing
  instead of DrQ-v2's scheduled exploration noise.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ray.rllib.core.columns import Columns

from rllib_av.algorithms.td3.networks import IMAGE_KEY

PAD = 4  # pixels: DrQ's shift for 84x84 frames


def random_shift(images: torch.Tensor, pad: int = PAD,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, F, H, W) -> same shape and dtype; stack b shifted by its own (dy, dx)
    in [-pad, pad]^2, pixels beyond the edge repeating the edge."""
    b, f, h, w = images.shape
    device = images.device
    shifts = torch.randint(-pad, pad + 1, (2, b, 1), device=device, generator=generator)
    rows = (torch.arange(h, device=device) + shifts[0]).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=device) + shifts[1]).clamp_(0, w - 1)  # (B, W)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, f, h * w)
    return images.reshape(b, f, h * w).gather(2, flat).view(b, f, h, w)


def random_shift_obs(batch: Dict[str, Any],
                     generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """The batch with obs and next_obs image stacks shifted independently
    (a new dict; the other columns are shared, not copied)."""
    out = dict(batch)
    for column in (Columns.OBS, Columns.NEXT_OBS):
        obs = batch[column]
        out[column] = {**obs, IMAGE_KEY: random_shift(obs[IMAGE_KEY], generator=generator)}
    return out
