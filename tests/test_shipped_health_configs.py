"""The shipped driving configs' health sections fit their own episode
structure. The driving preset's episode-length range ([5, 20] steps, or
growing) is the incident's; a config whose episodes run to a route's end
hundreds of steps away sets its own range from its route, speed and time
limit, so that an agent that drives (or still crashes early, as a learning
one does) is GO on that row and one that stands still until the time limit
is NO-GO. The preset itself stays the incident's table."""

import os

import pytest

from rllib_av.health.health_settings import DRIVING_PRESET
from rllib_av.health.preflight import episode_length_check
from rllib_av.run_config import load_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Embedded-backend driving configs: route to a goal, a time limit.
EMBEDDED = ["quickstart.yaml", "highway_light.yaml", "highway_medium.yaml", "highway_heavy.yaml"]


def lengths_row(rc, length, iterations=9):
    """The preflight's episode_length row over a run whose mean episode length
    stays at ``length`` after learning starts (neither growing nor collapsing)."""
    start = rc.training.learning_starts
    records = [{"env_steps": start + 500 * (i + 1), "episode_len_mean": float(length),
                "episode_return_mean": -5.0} for i in range(iterations)]
    return episode_length_check(records, rc.health, start)


@pytest.mark.parametrize("name", EMBEDDED)
def test_an_agent_that_drives_is_go_and_one_that_stands_still_is_not(name):
    rc = load_run_config(os.path.join(ROOT, "configs", name))
    env = rc.env
    assert rc.health.preset == "driving"
    # The route driven at the target speed: the episode ends at the goal.
    drives_route = env.route_length_m / (env.target_speed_mps * env.step_dt_s)
    assert drives_route < env.max_episode_steps
    for length in (drives_route, 30.0, 5.0):  # driving; crashing early while learning
        row = lengths_row(rc, length)
        assert row.passed, (name, length, row)
    still = lengths_row(rc, env.max_episode_steps)  # every episode hits the time limit
    assert still.passed is False, (name, still)
    assert lengths_row(rc, 2.0).passed is False  # ends at once: off the road at the start
    assert "set in the config (health.preflight_episode_len_max)" in still.why


def test_the_incidents_table_is_unchanged_where_it_came_from():
    """configs/carla_town01.yaml is the incident's task: the preset's range as is."""
    rc = load_run_config(os.path.join(ROOT, "configs", "carla_town01.yaml"))
    h = rc.health
    assert h.preset == "driving"
    assert (h.preflight_episode_len_min, h.preflight_episode_len_max) == (
        DRIVING_PRESET["preflight_episode_len_min"], DRIVING_PRESET["preflight_episode_len_max"])
    assert "the driving preset" in lengths_row(rc, 12.0).why
