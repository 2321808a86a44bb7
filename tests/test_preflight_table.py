"""The GO / NO-GO rules on hand-made run records: which rows pass, which count,
and how the table reads."""

import math

import pytest

from rllib_av.config_schema import ConfigError
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.preflight import evaluate, format_table, is_go
from rllib_av.run_config import load_run_config

PROBE = {"reward_train_min": -3.0, "reward_train_max": 0.97, "reward_range_min": -14.55,
         "reward_range_max": 11.5, "reward_pipeline": "ok", "terminal_transitions": 256,
         "terminal_residual_masked": 0.86, "terminal_residual_unmasked": 1.54,
         "terminal_masking": "ok", "overestimation_states": 132, "overestimation_bias": 0.8,
         "overestimation_ratio": 0.00055}


def rec(step, length=12.0, actor_loss=-0.7, ratio=0.004, grad=20.0):
    return {"env_steps": step, "episode_len_mean": length, "default_policy/actor_loss": actor_loss,
            "default_policy/q_bound_ratio": ratio, "default_policy/q_bound": 1455.0,
            "default_policy/grad_norm_actor": 0.1, "default_policy/grad_norm_critic": grad}


def rows(records, probe=PROBE, h=HealthSettings()):
    checks = evaluate(records, probe, h, learning_starts=200)
    return {c.name: c for c in checks}, is_go(checks)


def test_incident_defaults_go_on_a_sane_run():
    checks, go = rows([rec(256 + 64 * i) for i in range(6)])
    assert go and all(c.passed for c in checks.values())
    assert [n for n, c in checks.items() if c.required] == [
        "actor_loss", "episode_length", "q_bound", "reward_range", "terminal_masking"]


def test_incident_numbers_are_no_go():
    # The incident: actor loss -2.4e6 with rewards in [-50, 200].
    checks, go = rows([rec(256 + 64 * i, actor_loss=-2.4e6, ratio=240.0, grad=3e4) for i in range(6)])
    assert not go
    assert [n for n, c in checks.items() if c.passed is False] == ["actor_loss", "q_bound", "grad_norm"]
    assert checks["actor_loss"].measured == "|-2.4e+06|"


@pytest.mark.parametrize("lengths,passed", [
    ([12, 15, 18], True),              # final inside [5, 20]
    ([30, 35, 60, 70, 90, 110], True),  # outside, but growing (mean 32.5 -> 100)
    ([60, 65, 62, 61, 64, 60], False),  # outside and flat
    ([200, 200, 200], False),          # standing still until the step limit
])
def test_episode_length_inside_range_or_growing(lengths, passed):
    checks, _ = rows([rec(256 + 64 * i, length=n) for i, n in enumerate(lengths)])
    assert checks["episode_length"].passed is passed, checks["episode_length"]


def test_warmup_episodes_and_missing_values_are_not_judged():
    records = [rec(128, length=200.0)] + [rec(256 + 64 * i, length=None) for i in range(3)]
    checks, go = rows(records, probe={})
    assert checks["episode_length"].passed is False  # nothing finished after warm-up
    assert checks["reward_range"].passed is None and checks["terminal_masking"].passed is None
    assert not go
    # Not measurable (None) does not block GO; a required failure does.
    checks, go = rows([rec(256 + 64 * i) for i in range(3)], probe={})
    assert go


def test_a_nan_q_ratio_fails_the_bound_row():
    checks, _ = rows([rec(256), rec(320, ratio=math.nan)])
    assert checks["q_bound"].passed is False


def test_required_rows_and_thresholds_come_from_the_config():
    h = load_run_config(None, ["health.preflight_required=[actor_loss]",
                               "health.preflight_actor_loss_abs_max=0.5"]).health
    checks, go = rows([rec(256 + 64 * i, length=500.0) for i in range(3)], h=h)
    assert not go and checks["actor_loss"].threshold == "< 0.5"
    assert not checks["episode_length"].required
    with pytest.raises(ConfigError, match="health.preflight_required: 'gpu'"):
        load_run_config(None, ["health.preflight_required=[gpu]"])


def test_table_has_measured_threshold_result_and_verdict():
    checks = evaluate([rec(256 + 64 * i, actor_loss=-2e5) for i in range(3)], PROBE,
                      HealthSettings(), learning_starts=200)
    text = format_table(checks, is_go(checks), "/runs/x")
    lines = text.splitlines()
    assert lines[0].split() == ["check", "measured", "threshold", "result"]
    actor = next(line for line in lines if line.startswith("actor_loss"))
    assert "|-2e+05|" in actor and "< 1e+05" in actor and actor.endswith("FAIL")
    assert any(line.startswith("grad_norm (info)") for line in lines)
    assert lines[-1] == "NO-GO   (run: /runs/x)"


@pytest.mark.parametrize("args,needle", [
    (["--steps", "0"], "--steps: 0 is not allowed"),
    (["--config", "no/such.yaml"], "--config: 'no/such.yaml' does not exist"),
    (["--set", "health.preflight_episode_len_min=30", "--set", "health.preflight_episode_len_max=20"],
     "health.preflight_episode_len_min: 30.0 is not allowed"),
])
def test_preflight_cli_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    from rllib_av.cli import main

    assert main(["preflight", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
