"""TensorBoard scalars with the incident's tags, so old habits keep working:
debug/actor_q_*, debug/target_q_*, reward_components/*; everything else the
monitor knows goes under health/, reward_share/ and episode/."""

from __future__ import annotations

from typing import Mapping

from tensorboardX import SummaryWriter

from rllib_av.monitoring.iteration_metrics import IterationMetrics

DEBUG_TAGS = {
    "q_actor_mean": "debug/actor_q_mean", "q_actor_max": "debug/actor_q_max",
    "q_actor_min": "debug/actor_q_min", "q_actor_std": "debug/actor_q_std",
    "q_target_mean": "debug/target_q_mean", "q_target_max": "debug/target_q_max",
}
DEFAULT_MODULE = "default_policy"


class TensorBoardWriter:
    def __init__(self, logdir: str):
        self.logdir = logdir
        self._w = SummaryWriter(logdir)

    def write(self, m: IterationMetrics, divergence: Mapping[str, int]) -> None:
        add = lambda tag, v: self._w.add_scalar(tag, v, m.step)  # noqa: E731
        for mid, stats in m.modules.items():
            # Single-agent runs keep the bare incident tags; other modules get a suffix.
            sfx = "" if mid == DEFAULT_MODULE else f"/{mid}"
            for name, v in stats.items():
                add(DEBUG_TAGS.get(name, f"health/{name}") + sfx, v)
            if mid in divergence:
                add(f"health/divergence_state{sfx}", int(divergence[mid]))
        for comp, v in m.reward_mean.items():
            add(f"reward_components/{comp}", v)
        for comp, v in m.reward_share.items():
            add(f"reward_share/{comp}", v)
        if m.episode_return_mean is not None:
            add("episode/return_mean", m.episode_return_mean)
        if m.episode_length_mean is not None:
            add("episode/length_mean", m.episode_length_mean)
        self._w.flush()

    def close(self) -> None:
        self._w.close()
