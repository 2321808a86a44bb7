"""Numbers in run configs as users write them. Scientific notation (``1e-4``,
``3e-4``, ``1e7``) is a number in config files and in ``--set``: PyYAML alone
follows YAML 1.1, which reads ``1e-4`` as the string "1e-4", and the README's
own ``--set training.critic_lr=1e-4`` was refused with "expected a number"."""

import pytest

from rllib_av.config_schema import ConfigError
from rllib_av.run_config import load_run_config
from rllib_av.training import new_run_dir


@pytest.mark.parametrize("raw,value", [
    ("1e-4", 1e-4), ("3e-4", 3e-4), ("3E-4", 3e-4), ("2.5e-3", 2.5e-3), ("1.0e-05", 1e-5),
    ("5e+0", 5.0), (".5e-2", 0.005), ("0.0003", 3e-4),
])
def test_scientific_notation_in_set_is_a_number(raw, value):
    assert load_run_config(None, [f"training.critic_lr={raw}"]).training.critic_lr == value


def test_scientific_notation_in_a_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run:\n  total_env_steps: 2e4\n"
                    "training:\n  actor_lr: 3e-4\n  critic_lr: 1e-4\n"
                    "health:\n  grad_norm_warn: 1e5\n  grad_norm_diverge: 1e7\n")
    rc = load_run_config(str(path))
    assert (rc.training.actor_lr, rc.training.critic_lr) == (3e-4, 1e-4)
    assert (rc.health.grad_norm_warn, rc.health.grad_norm_diverge) == (1e5, 1e7)
    assert rc.run.total_env_steps == 20_000 and isinstance(rc.run.total_env_steps, int)


def test_an_integer_key_takes_a_whole_number_in_any_notation_and_nothing_else():
    assert load_run_config(None, ["run.total_env_steps=1e6"]).run.total_env_steps == 1_000_000
    with pytest.raises(ConfigError, match=r"run.total_env_steps: 1.5 is not allowed; "
                                          r"expected an integer"):
        load_run_config(None, ["run.total_env_steps=1.5e0"])


def test_words_are_still_words():
    """Only a full number is read as one: a name like "1e" or "e5" stays a string."""
    assert load_run_config(None, ["run.name=1e"]).run.name == "1e"
    assert load_run_config(None, ["run.name=e5"]).run.name == "e5"
    with pytest.raises(ConfigError, match="training.critic_lr: 'fast' is not allowed"):
        load_run_config(None, ["training.critic_lr=fast"])


def test_a_run_dirs_config_reads_back_the_same(tmp_path):
    """config.yaml as training writes it (large and small floats in exponent form)."""
    rc = load_run_config(None, [f"run.output_dir={tmp_path}", "training.critic_lr=1e-7",
                                "health.grad_norm_warn=1e19", "health.grad_norm_diverge=1e20"])
    run_dir = new_run_dir(rc)
    assert load_run_config(f"{run_dir}/config.yaml") == rc


def test_a_string_that_looks_like_a_number_reads_back_as_written(tmp_path):
    rc = load_run_config(None, [f"run.output_dir={tmp_path}", "run.name='1e5'"])
    assert rc.run.name == "1e5"
    assert load_run_config(f"{new_run_dir(rc)}/config.yaml") == rc
