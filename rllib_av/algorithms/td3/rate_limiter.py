"""Holding the update-to-data ratio while sampling and learning overlap.

Reverb's ``SampleToInsertRatio`` idea, with gradient updates for samples and
env steps for inserts: every env step that enters the replay once learning has
started owes ``ratio`` updates; the learner is handed only what is owed (when
data comes slower than it can learn, it waits: it never trains more than the
ratio says). Sampling is requested only while the updates owed, under way and
to be owed by the env steps already asked for stay within ``error_buffer``
(when the learner is behind, sampling is throttled; nothing sampled is
dropped). The learner's backlog is therefore never more than ``error_buffer``,
and over a window updates / env steps stay within
``error_buffer / (ratio * env steps in the window)`` of ``ratio``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class UpdateRateLimiter:
    ratio: float  # gradient updates per env step
    error_buffer: float  # updates owed (or under way) beyond which sampling waits
    owed: float = 0.0  # updates owed, not yet handed to the learner
    under_way: int = 0  # updates handed to the learner, not yet done

    def add(self, env_steps: int) -> None:
        """``env_steps`` new transitions that count toward the ratio."""
        self.owed += env_steps * self.ratio

    def take(self, most: int) -> int:
        """Updates for the next learner call: what is owed, at most ``most``."""
        n = min(int(self.owed), most)
        self.owed -= n
        self.under_way += n
        return n

    def done(self, updates: int) -> None:
        self.under_way -= updates

    def may_sample(self, steps_in_flight: int, steps: int) -> bool:
        """Whether ``steps`` more env steps may be asked for, ``steps_in_flight``
        being asked for and not back yet: whether the learner keeps up well
        enough for the updates they will all owe."""
        return (self.owed + self.under_way + self.ratio * (steps_in_flight + steps)
                <= self.error_buffer)


# Measure this much before judging whether the learner can hold the ratio.
_MIN_UPDATES, _MIN_STEPS = 500, 500
# The learner falls short when its ceiling covers less than this share of what
# the runners offer (measurements are noisy; a run near balance is fine).
_SHORTFALL = 0.9


@dataclass
class Throughput:
    """The learner's own ceiling (updates per second of learner time) against
    what the runners offer (env steps per second of sampling time, times the
    runners), measured as a run goes: when the ratio cannot be held, sampling is
    throttled, and the user is told once, with the numbers."""

    updates: int = 0
    learner_s: float = 0.0
    steps: int = 0
    sample_s: float = 0.0
    told: bool = False

    def learned(self, updates: int, seconds: float) -> None:
        self.updates += updates
        self.learner_s += seconds

    def sampled(self, steps: int, seconds: float) -> None:
        self.steps += steps
        self.sample_s += seconds

    def shortfall(self, ratio: float, num_runners: int) -> Optional[str]:
        """A one-line warning, once, if the learner cannot keep up at ``ratio``."""
        if (self.told or self.updates < _MIN_UPDATES or self.steps < _MIN_STEPS
                or self.learner_s <= 0 or self.sample_s <= 0):
            return None
        ceiling = self.updates / self.learner_s
        offered = self.steps / self.sample_s * num_runners
        if ceiling >= _SHORTFALL * offered * ratio:
            return None
        self.told = True
        return (f"training.updates_per_env_step: {ratio:g} is more than the learner can hold "
                f"at {num_runners} env runners: they sample {offered:.0f} env steps/s, which "
                f"would need {offered * ratio:.0f} updates/s, and the learner makes "
                f"{ceiling:.0f}; sampling is throttled to about {ceiling / ratio:.0f} env "
                "steps/s (nothing is dropped). Expected a lower ratio, fewer env runners or "
                "a faster learner (resources.num_gpus_per_learner)")
