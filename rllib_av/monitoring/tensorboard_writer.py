"""TensorBoard scalars with the incident's tags, so old habits keep working:
debug/actor_q_*, debug/target_q_*, reward_components/*; the other statistics
go under health/ (tags from the statistics spec), reward_share/ and episode/."""

from __future__ import annotations

from ray.rllib.core import DEFAULT_MODULE_ID
from tensorboardX import SummaryWriter

from rllib_av.health.health_monitor import IterationHealth
from rllib_av.health.statistics import BY_KEY
from rllib_av.health.tensorboard_records import DIVERGENCE_TAG, EPISODE_TAGS


class TensorBoardWriter:
    def __init__(self, logdir: str):
        self.logdir = logdir
        self._w = SummaryWriter(logdir)

    def write(self, health: IterationHealth) -> None:
        m = health.metrics
        add = lambda tag, v: self._w.add_scalar(tag, v, m.step)  # noqa: E731
        for mid, stats in m.modules.items():
            # Single-agent runs keep the bare incident tags; other modules get a suffix.
            sfx = "" if mid == DEFAULT_MODULE_ID else f"/{mid}"
            for key, v in stats.items():
                if key in BY_KEY:  # the statistics; update counts are Prometheus counters
                    add(BY_KEY[key].tag + sfx, v)
        for mid, state in health.states.items():
            add(DIVERGENCE_TAG + ("" if mid == DEFAULT_MODULE_ID else f"/{mid}"), state)
        for comp, v in m.reward_mean.items():
            add(f"reward_components/{comp}", v)
        for comp, v in m.reward_share.items():
            add(f"reward_share/{comp}", v)
        for tag, value in zip(EPISODE_TAGS, (m.episode_return_mean, m.episode_length_mean)):
            if value is not None:
                add(tag, value)
        self._w.flush()

    def close(self) -> None:
        self._w.close()
