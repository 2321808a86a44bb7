"""The progress line's clock: env steps per second and the time left to the target.

The ETA divides the steps still to go by the rate over the last few iterations
(a window, not the whole run: the uniform warm-up samples far faster than
training does, and a resumed run starts its clock again).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional, Tuple

WINDOW = 10  # iterations the ETA's rate is measured over


class ProgressClock:
    def __init__(self, total_env_steps: int, clock: Callable[[], float] = time.perf_counter):
        self.total = total_env_steps
        self._clock = clock
        self._marks: deque = deque(maxlen=WINDOW + 1)

    def tick(self, env_steps: int) -> Tuple[float, Optional[float]]:
        """After an iteration: (steps/s over that iteration, seconds left or None)."""
        self._marks.append((env_steps, self._clock()))
        if len(self._marks) < 2:
            return 0.0, None
        (s0, t0), (s1, t1), (s2, t2) = self._marks[0], self._marks[-2], self._marks[-1]
        last = (s2 - s1) / (t2 - t1) if t2 > t1 else 0.0
        window = (s2 - s0) / (t2 - t0) if t2 > t0 else 0.0
        eta = max(self.total - env_steps, 0) / window if window > 0 else None
        return last, eta


def format_duration(seconds: Optional[float]) -> str:
    """1h05m, 4m10s, 35s; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
