"""The GO / NO-GO rules on hand-made run records: which rows pass, which count,
what cannot be measured, and how the table reads. The defaults must hold for
any env (they derive from the env's own bound, lengths and returns); the
driving incident's numbers are a preset."""

import math

import pytest

from rllib_av.config_schema import ConfigError
from rllib_av.health.health_settings import DRIVING_PRESET, HealthSettings
from rllib_av.health.preflight import evaluate, format_table, is_go
from rllib_av.run_config import load_run_config

BOUND = 1455.0
PROBE = {"reward_train_min": -3.0, "reward_train_max": 0.97, "reward_range_min": -14.55,
         "reward_range_max": 11.5, "reward_beyond_frac": 0.0, "reward_pipeline": "ok",
         "terminal_transitions": 256, "terminal_target_max_diff": 0.0,
         "terminal_bootstrap_abs_mean": 3.1, "terminal_masking": "ok"}


def probes(*biases, scale=700.0, states=300):
    """Probe records whose overestimation bias runs through ``biases``."""
    return [{**PROBE, "overestimation_states": states, "overestimation_bias": b,
             "overestimation_return_scale": scale} for b in biases] or [PROBE]


def rec(step, length=12.0, actor_loss=-0.7, ratio=0.004, grad=20.0, ret=-300.0):
    return {"training_iteration": step // 64, "env_steps": step, "episode_len_mean": length,
            "episode_return_mean": ret,
            "default_policy/actor_loss": actor_loss, "default_policy/q_bound_ratio": ratio,
            "default_policy/q_bound": BOUND, "default_policy/grad_norm_actor": 0.1,
            "default_policy/grad_norm_critic": grad}


def rows(records, probe_records=None, h=HealthSettings()):
    checks = evaluate(records, probes(700, 650, 600) if probe_records is None else probe_records,
                      h, learning_starts=200)
    return {c.name: c for c in checks}, is_go(checks)


def test_defaults_go_on_a_sane_run_and_every_row_says_why():
    checks, go = rows([rec(256 + 64 * i) for i in range(6)])
    assert go
    assert [n for n, c in checks.items() if c.required] == [
        "actor_loss", "episode_length", "q_bound", "reward_range", "terminal_masking", "nonfinite"]
    assert all(c.passed for n, c in checks.items() if n != "grad_norm")
    assert all(c.why for c in checks.values())


def test_a_healthy_pendulum_is_go_with_default_settings():
    """Pendulum's episodes all last 200 steps (its time limit): the driving
    incident's [5, 20] made it NO-GO; the general rule asks only that episodes
    do not collapse."""
    checks, go = rows([rec(256 + 200 * i, length=200.0, ret=-1400.0 + 10 * i) for i in range(6)])
    assert go and checks["episode_length"].passed, checks["episode_length"]
    assert checks["episode_length"].threshold.startswith("last third >= 0.5x the longest")


@pytest.mark.parametrize("lengths,returns,passed", [
    ([200] * 6, [-1400] * 6, True),                          # the time limit every time
    ([40, 45, 50, 60, 70, 80], [-50, -45, -40, -30, -20, -10], True),  # growing
    ([100, 95, 90, 40, 30, 20], [-5, -4, -3, -2, -1, 0], True),  # finished sooner, better return
    ([100, 95, 90, 40, 30, 20], [-5, -6, -8, -20, -30, -40], False),  # collapsing, worse return
])
def test_episode_length_must_not_collapse(lengths, returns, passed):
    checks, _ = rows([rec(256 + 64 * i, length=n, ret=r)
                      for i, (n, r) in enumerate(zip(lengths, returns))])
    assert checks["episode_length"].passed is passed, checks["episode_length"]


@pytest.mark.parametrize("replay,critic_loss,passed", [
    ([0, 0, 0, 0, 0, 0], [1.0] * 6, True),
    ([0, 2, 2, 2, 2, 2], [1.0] * 6, True),  # one iteration's worth: survivable
    ([0, 2, 2, 3, 3, 5], [1.0] * 6, True),  # never as many in a row as the verdict's 3
    ([1, 2, 3, 4, 5, 6], [1.0] * 6, False),  # an env that keeps sending NaN/inf
    ([0] * 6, [1.0, 1.0, math.nan, math.inf, math.nan, 1.0], False),  # a learner's losses
])
def test_nan_or_inf_that_keeps_coming_is_no_go(replay, critic_loss, passed):
    """The verdict's own rule: NaN/inf new in nonfinite_diverge_iters iterations
    in a row is diverged; a run the verdict called diverged is not GO."""
    records = [{**rec(256 + 64 * i), "nonfinite/obs": float(n), "nonfinite/loss": 0.0,
                "default_policy/critic_loss": c}
               for i, (n, c) in enumerate(zip(replay, critic_loss))]
    checks, go = rows(records)
    assert checks["nonfinite"].passed is passed and go is passed, checks["nonfinite"]
    assert checks["nonfinite"].required


def test_nan_that_keeps_coming_through_a_rollback_is_still_no_go():
    """A guard rollback puts the lifetime totals back to the checkpoint's: the
    iterations after it that brought NaN/inf count as new (they used to read
    as nothing new until the total passed its old maximum)."""
    iterations, totals = [1, 2, 3, 2, 3, 4], [1, 2, 3, 3, 4, 5]
    records = [{**rec(256 + 64 * i), "training_iteration": it, "nonfinite/obs": float(n)}
               for i, (it, n) in enumerate(zip(iterations, totals))]
    checks, go = rows(records)
    assert checks["nonfinite"].passed is False and not go, checks["nonfinite"]
    assert "at most 6 in a row" in checks["nonfinite"].measured


def test_too_few_episodes_is_not_measured_and_not_counted():
    records = [rec(128, length=200.0)] + [rec(256 + 64 * i, length=None) for i in range(3)]
    checks, go = rows(records, probe_records=[{}])
    assert checks["episode_length"].passed is None
    assert checks["episode_length"].measured.startswith("not measured: 0 iterations")
    assert checks["reward_range"].passed is None and checks["terminal_masking"].passed is None
    assert go  # nothing failed: not measured is neither pass nor fail


PRESET = HealthSettings(preset="driving")


@pytest.mark.parametrize("lengths,passed", [
    ([12, 15, 18], True),              # final inside [5, 20]
    ([30, 35, 60, 70, 90, 110], True),  # outside, but growing (mean 32.5 -> 100)
    ([60, 65, 62, 61, 64, 60], False),  # outside and flat
    ([200, 200, 200], False),          # standing still until the step limit
])
def test_driving_preset_episode_length_inside_range_or_growing(lengths, passed):
    checks, _ = rows([rec(256 + 64 * i, length=n) for i, n in enumerate(lengths)], h=PRESET)
    assert checks["episode_length"].passed is passed, checks["episode_length"]
    assert "driving preset" in checks["episode_length"].why


def test_the_incident_is_no_go_on_the_bound_by_default_and_on_its_table_with_the_preset():
    # The incident: actor loss -2.4e6 with rewards in [-50, 200] (bound 2e4).
    records = [dict(rec(256 + 64 * i, actor_loss=-2.4e6, ratio=240.0, grad=3e4),
                    **{"default_policy/q_bound": 2e4}) for i in range(6)]
    checks, go = rows(records)
    assert not go
    assert [n for n, c in checks.items() if c.passed is False] == ["actor_loss", "q_bound"]
    assert checks["actor_loss"].threshold == "<= 1x q_bound 2e+04"
    assert checks["grad_norm"].passed is None and "no env-independent scale" in checks[
        "grad_norm"].why
    checks, go = rows(records, h=PRESET)
    assert [n for n, c in checks.items() if c.passed is False] == [
        "actor_loss", "q_bound", "grad_norm"]
    assert checks["actor_loss"].threshold == "<= 1x q_bound 2e+04 and < 1e+05"
    assert checks["grad_norm"].threshold == "< 1e+04"


def test_without_a_bound_the_actor_loss_is_not_measured_unless_a_ceiling_is_set():
    no_bound = [{k: v for k, v in rec(256 + 64 * i).items() if "q_bound" not in k}
                for i in range(3)]
    checks, _ = rows(no_bound)
    assert checks["actor_loss"].passed is None and checks["q_bound"].passed is None
    assert "declare training.reward_range" in checks["actor_loss"].why
    checks, _ = rows(no_bound, h=PRESET)
    assert checks["actor_loss"].passed is True


def test_a_nan_q_ratio_fails_the_bound_row():
    checks, _ = rows([rec(256), rec(320, ratio=math.nan)])
    assert checks["q_bound"].passed is False


def test_terminal_masking_reads_the_learners_targets_not_the_critics_fit():
    sane = [rec(256 + 64 * i) for i in range(3)]
    checks, go = rows(sane, [dict(PROBE, terminal_target_max_diff=12.5,
                                  terminal_masking="unmasked")])
    assert not go and checks["terminal_masking"].passed is False
    assert checks["terminal_masking"].measured == (
        "max |target - r| 12.5 on 256 terminal rows (bootstrap term there 3.1)")
    assert checks["terminal_masking"].threshold == "target == r on every terminal row"
    unmeasured = dict(PROBE, terminal_masking="unmeasured",
                      terminal_masking_unmeasured="no terminal transition in the replay buffer")
    checks, go = rows(sane, [unmeasured])
    assert go and checks["terminal_masking"].passed is None
    assert "not measured: no terminal transition" in checks["terminal_masking"].measured


def test_rewards_beyond_the_declared_range_fail_and_say_how():
    sums = dict(PROBE, reward_train_min=-1810.0, reward_beyond_frac=0.967,
                reward_pipeline="accumulation")
    checks, go = rows([rec(256 + 64 * i) for i in range(3)], [sums])
    assert not go and checks["reward_range"].passed is False
    assert "96.7% beyond, growing along episodes: running sums" in checks["reward_range"].measured


def test_a_negative_reward_early_critic_is_not_overestimating():
    """Early in training Q ~ 0 sits above the (negative) returns: a bias of about
    the returns' own magnitude that shrinks as the critic learns. A fixed
    0.25 x bound on one snapshot called that overestimation."""
    checks, _ = rows([rec(256 + 64 * i) for i in range(3)], probes(739.0, 728.6, 691.7))
    assert checks["overestimation"].passed is True, checks["overestimation"]
    assert checks["overestimation"].measured.startswith("Q - return 739 -> 728.6 -> 691.7")


@pytest.mark.parametrize("biases,passed", [
    ((200.0, 900.0, 1500.0), False),   # growing, ending > 2x the return scale 700
    ((200.0, 900.0, 1300.0), True),    # growing, but within 2x the returns
    ((1600.0, 1500.0, 1450.0), True),  # large but shrinking: the critic is learning
])
def test_overestimation_is_a_growing_bias_beyond_the_return_scale(biases, passed):
    checks, _ = rows([rec(256 + 64 * i) for i in range(3)], probes(*biases))
    assert checks["overestimation"].passed is passed, checks["overestimation"]


def test_overestimation_without_three_scored_probes_is_not_measured_and_says_why():
    unscored = dict(PROBE, overestimation_states=0, overestimation_unmeasured="no state has a "
                    "usable return")
    checks, _ = rows([rec(256 + 64 * i) for i in range(3)], probes(10.0, 20.0) + [unscored])
    assert checks["overestimation"].passed is None
    assert checks["overestimation"].measured == (
        "not measured: 2 of 3 probes scored states, the trend needs 3; no state has a usable "
        "return")


def test_required_rows_and_thresholds_come_from_the_config():
    h = load_run_config(None, ["health.preflight_required=[actor_loss]",
                               "health.preflight_actor_loss_abs_max=0.5"]).health
    checks, go = rows([rec(256 + 64 * i, length=500.0) for i in range(3)], h=h)
    assert not go and checks["actor_loss"].threshold == "<= 1x q_bound 1455 and < 0.5"
    assert "set in the config (health.preflight_actor_loss_abs_max)" in checks["actor_loss"].why
    assert not checks["episode_length"].required
    with pytest.raises(ConfigError, match="health.preflight_required: 'gpu'"):
        load_run_config(None, ["health.preflight_required=[gpu]"])


def test_the_driving_preset_fills_what_the_config_leaves_unset():
    h = load_run_config(None, ["health.preset=driving",
                               "health.preflight_episode_len_max=150"]).health
    assert h.preflight_episode_len_max == 150 and h.preflight_episode_len_min == 5.0
    assert h.grad_norm_warn == DRIVING_PRESET["grad_norm_warn"]
    assert h.source("preflight_episode_len_max") == (
        "set in the config (health.preflight_episode_len_max)")
    assert h.source("preflight_episode_len_min").startswith("the driving preset")
    defaults = HealthSettings()
    assert all(getattr(defaults, key) is None for key in DRIVING_PRESET)
    for name in ("quickstart", "highway_light", "highway_medium", "highway_heavy",
                 "carla_town01"):
        assert load_run_config(f"configs/{name}.yaml").health.preset == "driving", name


def test_table_has_measured_threshold_result_why_and_verdict():
    checks = evaluate([rec(256 + 64 * i, actor_loss=-2e3) for i in range(3)], probes(),
                      HealthSettings(), learning_starts=200)
    text = format_table(checks, is_go(checks), "/runs/x")
    lines = text.splitlines()
    assert lines[0].split() == ["check", "measured", "threshold", "result"]
    actor = next(line for line in lines if line.startswith("actor_loss"))
    assert "max |-2000|" in actor and "<= 1x q_bound 1455" in actor and actor.endswith("FAIL")
    assert any(line.startswith("grad_norm (info)") for line in lines)
    assert "why each threshold holds:" in lines
    assert any(line.startswith("  actor_loss: the actor loss is -mean Q1(s, mu(s))")
               for line in lines)
    assert lines[-1] == "NO-GO   (run: /runs/x)"


@pytest.mark.parametrize("args,needle", [
    (["--steps", "0"], "--steps: 0 is not allowed"),
    (["--config", "no/such.yaml"], "--config: 'no/such.yaml' does not exist"),
    (["--set", "health.preflight_episode_len_min=30", "--set", "health.preflight_episode_len_max=20"],
     "health.preflight_episode_len_min: 30.0 is not allowed"),
    (["--set", "health.preset=carla"], "health.preset: 'carla' is not allowed; expected one of"),
])
def test_preflight_cli_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    from rllib_av.cli import main

    assert main(["preflight", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
