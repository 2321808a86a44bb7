"""Data-parallel TD3 learners (``num_learners > 1``) hold identical weights.

RLlib wraps each module in DDP when there are several learners, but DDP's
reducer only acts on a forward through the wrapper followed by one backward
over all its parameters. A TD3 update makes separate optimizer steps on
separate losses (the critic; then, delayed, the actor on detached features),
each confined to its own network by ``backward(inputs=...)``. So the TD3
learner does not use the wrapper: it broadcasts learner 0's weights once at
build, then averages every optimizer step's gradients across learners with one
all-reduce of a flat buffer (torch.distributed, set up by RLlib's learner
group: gloo on CPUs, NCCL on GPUs). Same gradients, same Adam state, same
weights on every learner after every step.
"""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def world_size() -> int:
    """Learners training together (1: this one alone)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_from_first(module: torch.nn.Module) -> None:
    """Every learner takes learner 0's parameters and buffers (targets included)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(params: List[torch.Tensor], poison: bool = False) -> None:
    """Replace each parameter's gradient by its mean over all learners.

    ``poison``: this learner's step is void (a non-finite loss, no gradients);
    it still joins the all-reduce, with NaN, so every learner sees a non-finite
    gradient and skips the step too, and the weights stay identical.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    if poison:
        flat.fill_(float("nan"))
    dist.all_reduce(flat)
    flat /= world_size()
    for p, synced in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = synced
