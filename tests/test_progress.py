"""The per-iteration progress line: steps of the target, % done and the time left."""

import pytest

from rllib_av.monitoring.synthetic_results import synthetic_result
from rllib_av.progress import ProgressClock, format_duration
from rllib_av.training import progress_line


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_eta_follows_the_recent_rate_not_the_warm_up():
    now = FakeClock()
    clock = ProgressClock(total_env_steps=10_000, clock=now)
    assert clock.tick(0) == (0.0, None)  # no rate yet
    now.t = 1.0
    rate, eta = clock.tick(1_000)  # uniform warm-up: 1000 steps/s
    assert rate == 1000 and eta == pytest.approx(9.0)
    for i in range(1, 21):  # training: 100 steps/s
        now.t = 1.0 + i
        rate, eta = clock.tick(1_000 + 100 * i)
    assert rate == 100
    assert eta == pytest.approx((10_000 - 3_000) / 100)  # warm-up has left the window
    now.t += 1
    assert clock.tick(10_050)[1] == 0  # past the target


@pytest.mark.parametrize("seconds,text", [(None, "?"), (0, "0s"), (42.4, "42s"), (61, "1m01s"),
                                          (3599, "59m59s"), (3600 * 26 + 120, "26h02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_line_shows_target_share_and_eta():
    result = synthetic_result(9)  # 2,000 env steps sampled
    line = progress_line(result, 55.0, total_env_steps=8_000, eta_s=125)
    assert line.startswith("steps    2,000/8,000 ( 25%) ETA  2m05s |     55/s |"), line
    assert "return" in line and "|Q|/bound" in line
    assert progress_line(result, 55.0).startswith("steps    2,000 |")  # no target known
