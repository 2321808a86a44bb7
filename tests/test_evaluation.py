"""Driving metrics on hand-made episodes, the CI math, the baselines on the real
quickstart env, and episode GIFs."""

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from rllib_av.config_schema import ConfigError
from rllib_av.envs.driving_env import DrivingEnv
from rllib_av.evaluation.baselines import PurePursuitPID, RandomPolicy
from rllib_av.evaluation.driving_metrics import (
    METRICS, episode_metrics, format_table, poisson_rate_interval, summarize, t_interval,
    wilson_interval,
)
from rllib_av.evaluation.evaluate import evaluate
from rllib_av.evaluation.evaluation_plan import scenario_env
from rllib_av.evaluation.rollouts import EpisodeTrace, run_episode, run_episodes
from rllib_av.evaluation.video import write_gif


def _trace(speeds, lateral, heading_deg, collision=None, off_road=None, goal=False,
           completion=0.5, dt=0.1) -> EpisodeTrace:
    n = len(speeds)
    return EpisodeTrace(
        step_dt_s=dt, speed_mps=list(speeds), lateral_m=list(lateral),
        heading_rad=list(np.radians(heading_deg)),
        collision=collision or [False] * n, off_road=off_road or [False] * n,
        actions=[np.zeros(2)] * (n - 1), rewards=[1.0] * (n - 1),
        components=[{}] * (n - 1), goal_reached=goal, route_completion=completion)


def test_episode_metrics_exact_values():
    # Reset state then 4 steps at dt = 0.1 s.
    trace = _trace(speeds=[0.0, 1.0, 3.0, 3.0, 2.0], lateral=[9.0, 0.5, -0.5, 1.0, -1.0],
                   heading_deg=[90, 10, -10, 20, 0],
                   off_road=[False, True, True, False, True], completion=0.8)
    m = episode_metrics(trace)
    assert m["success"] == 0.0  # no goal
    assert m["route_completion"] == 0.8
    assert m["collisions"] == 0.0
    assert m["off_road_events"] == 2.0  # two excursions, not three off-road steps
    assert m["distance_km"] == pytest.approx((1 + 3 + 3 + 2) * 0.1 / 1000)
    assert m["avg_speed_kmh"] == pytest.approx(9 / 4 * 3.6)  # the reset state is not driven
    assert m["lateral_error_m"] == pytest.approx(0.75)
    assert m["heading_error_deg"] == pytest.approx(10.0)
    # second differences of speed: (3-2+0, 3-6+1, 2-6+3) / 0.01 = 100, -200, -100
    assert m["jerk_mean_mps3"] == pytest.approx(400 / 3)
    assert m["jerk_max_mps3"] == pytest.approx(200.0)


def test_success_needs_goal_without_collision_or_off_road():
    flat = dict(speeds=[5.0] * 4, lateral=[0.0] * 4, heading_deg=[0.0] * 4, goal=True,
                completion=1.0)
    assert episode_metrics(_trace(**flat))["success"] == 1.0
    crash = [False, False, True, True]
    m = episode_metrics(_trace(**flat, collision=crash))
    assert (m["success"], m["collisions"]) == (0.0, 1.0)
    assert episode_metrics(_trace(**flat, off_road=[False, True, False, False]))["success"] == 0.0


def test_t_interval_matches_textbook_and_respects_bounds():
    iv = t_interval([1.0, 2.0, 3.0, 4.0])
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2  # 3.182 * 1.291 / 2
    assert (iv.mean, iv.n) == (2.5, 4)
    assert iv.high - iv.mean == pytest.approx(half) == pytest.approx(2.0543, abs=1e-4)
    clipped = t_interval([0.9, 1.0, 1.0], 0.0, 1.0)
    assert clipped.high == 1.0 and clipped.low < clipped.mean
    one = t_interval([7.0])
    assert (one.low, one.high) == (7.0, 7.0)


def test_wilson_interval_known_values():
    iv = wilson_interval(8, 10)  # textbook: [0.490, 0.943]
    assert (iv.mean, iv.low, iv.high) == pytest.approx((0.8, 0.4902, 0.9433), abs=1e-4)
    zero = wilson_interval(0, 5)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.4345, abs=1e-4)


def test_poisson_rate_interval_garwood():
    iv = poisson_rate_interval(2, 4.0)  # exact 95% for 2 events: [0.2422, 7.2247]
    assert (iv.mean, iv.low, iv.high) == pytest.approx((0.5, 0.2422 / 4, 7.2247 / 4), abs=1e-4)
    assert poisson_rate_interval(0, 1.0).high == pytest.approx(3.6889, abs=1e-4)
    assert math.isnan(poisson_rate_interval(1, 0.0).mean)


def test_summarize_pools_collisions_over_distance_and_formats_a_table():
    rows = [dict(episode_metrics(_trace([10.0] * 11, [0.0] * 11, [0.0] * 11)), collisions=c)
            for c in (0.0, 1.0, 0.0, 1.0)]  # 4 episodes of 10 steps x 1 m
    s = summarize(rows)
    assert list(s) == list(METRICS)
    assert s["collisions_per_km"].mean == pytest.approx(2 / 0.04)
    assert s["avg_speed_kmh"].mean == pytest.approx(36.0)
    table = format_table({"a": s, "b": s}, "scenario x")
    assert "collisions per km (1/km)" in table and "50 [" in table
    assert "over 4 episodes" in table


@pytest.fixture(scope="module")
def quickstart_env():
    env = DrivingEnv(scenario_env("quickstart"), render_mode="rgb_array")
    yield env
    env.close()


def test_pure_pursuit_completes_quickstart_route_and_beats_random(quickstart_env):
    env = quickstart_env
    pp = [episode_metrics(t) for t in run_episodes(env, PurePursuitPID.for_env(env.settings), 3)]
    rnd = [episode_metrics(t) for t in run_episodes(env, RandomPolicy(0), 3)]
    assert all(m["success"] == 1.0 for m in pp), pp
    assert min(m["route_completion"] for m in pp) == 1.0
    assert max(m["route_completion"] for m in rnd) < 0.5
    # Near the 6 m/s target, centred on the lane.
    assert all(15 < m["avg_speed_kmh"] < 24 and m["lateral_error_m"] < 1.0 for m in pp)


def test_video_has_a_frame_per_state(tmp_path):
    env = DrivingEnv(dataclasses.replace(scenario_env("quickstart"), max_episode_steps=30),
                     render_mode="rgb_array")
    trace = run_episode(env, PurePursuitPID.for_env(env.settings), seed=3, record_frames=True)
    assert trace.num_steps == 30
    path = write_gif(trace, str(tmp_path / "ep.gif"))
    gif = Image.open(path)
    assert gif.n_frames == trace.num_steps + 1 == len(trace.topdown)
    assert gif.size == (512, 256 + 300)
    first = np.asarray(gif.convert("RGB"))
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("RGB"))
    assert first.std() > 10 and not np.array_equal(first, last)  # drawn, and it moves
    trace.topdown = [None] * len(trace.topdown)  # a backend without a top-down view (CARLA)
    assert Image.open(write_gif(trace, str(tmp_path / "no_topdown.gif"))).n_frames == 31


def test_video_needs_recorded_frames(quickstart_env, tmp_path):
    trace = run_episode(quickstart_env, RandomPolicy(1), seed=3)
    with pytest.raises(ValueError, match="without frames"):
        write_gif(trace, str(tmp_path / "ep.gif"))


def test_evaluate_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="--scenario: 'nowhere' is not allowed.*quickstart"):
        scenario_env("nowhere")
    with pytest.raises(ConfigError, match="--checkpoint, or --baselines"):
        evaluate(scenarios=["quickstart"])
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(checkpoint="/nonexistent/ckpt")


def test_baselines_only_evaluation_writes_json_and_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output: ./eval
    result = evaluate(scenarios=["quickstart"], episodes=2, baselines=True, videos=0)
    saved = json.load(open(tmp_path / "eval" / "evaluation.json"))
    scenario = saved["scenarios"]["quickstart"]
    assert set(scenario["metrics"]) == {"random", "pure_pursuit"}
    assert scenario["ends"]["pure_pursuit"] == {"goal": 2}
    assert [e["end"] for e in scenario["episodes"]["pure_pursuit"]] == ["goal", "goal"]
    assert scenario["metrics"]["pure_pursuit"]["success_rate"]["n"] == 2
    table = (tmp_path / "eval" / "evaluation.txt").read_text()
    assert table.startswith("scenario quickstart") and "episode ends" in table
    assert result["out_dir"] == "eval"
