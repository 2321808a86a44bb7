"""Learner settings the cluster or the learner's device cannot hold (issue 15,
bad input): one line naming the key, exit 2, no run directory, and no learner
actor left waiting for resources that never come."""

import os
import subprocess
import sys

import pytest

from rllib_av.config_schema import ConfigError
from rllib_av.run_config import load_run_config
from rllib_av.startup_checks import check_before_build

QUICKSTART = "configs/quickstart.yaml"


def test_learners_beyond_what_all_nodes_offer_together_are_refused(ray_local):
    """Each learner fits on a node, but not all of them on the cluster: RLlib
    would place two and wait for the third forever (ray_local has 2 CPUs)."""
    rc = load_run_config(QUICKSTART, ["resources.num_learners=3", "training.batch_size=255"])
    with pytest.raises(ConfigError, match=r"^resources.num_learners: 3 is not allowed on this "
                                          r"cluster; 3 learners x 1 CPU need 3 CPU, its nodes "
                                          r"offer 2, .*expected at most 2 learners") as e:
        check_before_build(rc)
    assert "\n" not in str(e.value)
    check_before_build(load_run_config(QUICKSTART, ["resources.num_learners=2"]))


def test_a_batch_the_learners_cannot_split_is_refused():
    with pytest.raises(ConfigError, match="training.batch_size: 255 is not allowed with "
                                          "resources.num_learners=2; expected a multiple of 2"):
        load_run_config(QUICKSTART, ["resources.num_learners=2", "training.batch_size=255"])
    load_run_config(QUICKSTART, ["resources.num_learners=2", "training.batch_size=256"])


def _train(tmp_path, *overrides):
    args = [a for o in ("run.total_env_steps=200", f"run.output_dir={tmp_path}",
                        "monitoring.exporter_port=0", "monitoring.tensorboard=false", *overrides)
            for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", "train", "--quiet",
                           "--config", QUICKSTART, *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": "local"})


@pytest.mark.slow
@pytest.mark.parametrize("overrides, key", [
    # More learners than any test machine has CPUs for.
    (["resources.num_learners=1000", "training.batch_size=1000"],
     "resources.num_learners: 1000 is not allowed"),
    # 1e10 camera transitions (~70 TB) in the learner's memory.
    (["training.buffer_size=10000000000", "training.image_encoder=nature_cnn"],
     "training.buffer_size: 10000000000 is not allowed"),
    (["resources.num_learners=2", "training.batch_size=255"],
     "training.batch_size: 255 is not allowed"),
], ids=["learners_beyond_cluster", "buffer_beyond_memory", "unshardable_batch"])
def test_cli_refuses_learner_settings_with_one_line(tmp_path, overrides, key):
    proc = _train(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rllib-av: error: ")]
    assert len(errors) == 1 and key in errors[0], proc.stderr[-3000:]
    assert not list(tmp_path.iterdir())  # no run directory left behind
