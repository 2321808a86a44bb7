"""Learner settings the cluster or the learner's device cannot hold (issue 15,
bad input): one line naming the key, exit 2, no run directory, and no learner
actor left waiting for resources that never come."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rllib_av.algorithms.td3.learner_resources import check_learner_resources, learner_demand
from rllib_av.config_schema import ConfigError
from rllib_av.run_config import load_run_config

CLUSTER = {"CPU": 16.0, "GPU": 2.0, "carla_slot": 4.0}


def learners(n, gpus=0.0, cpus="auto", custom=None):
    return SimpleNamespace(num_learners=n, num_gpus_per_learner=gpus, num_cpus_per_learner=cpus,
                           custom_resources_per_learner=custom or {})


def test_learner_demand_follows_rllib_placement():
    assert learner_demand(learners(0, gpus=1)) == {}  # in the driver: no actor
    assert learner_demand(learners(2)) == {"CPU": 2}
    assert learner_demand(learners(2, gpus=1)) == {"GPU": 2}  # "auto": no CPU slot
    assert learner_demand(learners(3, gpus=0.5, custom={"learner_gpu": 1})) == {
        "GPU": 1.5, "learner_gpu": 3}


@pytest.mark.parametrize("config, message", [
    (learners(3, gpus=1), "3 learner(s) x 1 GPU need 3 GPU, the Ray cluster has 2; expected at most 2"),
    (learners(17), "need 17 CPU, the Ray cluster has 16"),
    (learners(1, custom={"learner_gpu": 1}), "need 1 learner_gpu, the Ray cluster has 0"),
])
def test_learners_beyond_the_cluster_are_refused(config, message):
    with pytest.raises(ConfigError, match="^resources.num_learners: ") as e:
        check_learner_resources(config, CLUSTER)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_learners_the_cluster_holds_pass():
    check_learner_resources(learners(2, gpus=1), CLUSTER)
    check_learner_resources(learners(4, custom={"carla_slot": 1}), CLUSTER)
    check_learner_resources(learners(0), {})


def test_a_batch_the_learners_cannot_split_is_refused():
    with pytest.raises(ConfigError, match="training.batch_size: 255 is not allowed with "
                                          "resources.num_learners=2; expected a multiple of 2"):
        load_run_config("configs/quickstart.yaml",
                        ["resources.num_learners=2", "training.batch_size=255"])
    load_run_config("configs/quickstart.yaml", ["resources.num_learners=2", "training.batch_size=256"])


def _train(tmp_path, *overrides):
    args = [a for o in ("run.total_env_steps=200", f"run.output_dir={tmp_path}",
                        "monitoring.exporter_port=0", "monitoring.tensorboard=false", *overrides)
            for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", "train", "--quiet",
                           "--config", "configs/quickstart.yaml", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": "local"})


@pytest.mark.slow
@pytest.mark.parametrize("overrides, key", [
    # A custom resource no node declares: the learner actor would wait forever.
    (["resources.num_learners=1", "resources.learner_resources={learner_gpu: 1}"],
     "resources.num_learners: 1 is not allowed"),
    # 1e10 camera transitions (~70 TB) in the learner's memory.
    (["training.buffer_size=10000000000", "training.image_encoder=nature_cnn"],
     "training.buffer_size: 10000000000 is not allowed"),
    (["resources.num_learners=2", "training.batch_size=255"],
     "training.batch_size: 255 is not allowed"),
], ids=["learner_resources", "buffer_beyond_memory", "unshardable_batch"])
def test_cli_refuses_learner_settings_with_one_line(tmp_path, overrides, key):
    proc = _train(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rllib-av: error: ")]
    assert len(errors) == 1 and key in errors[0], proc.stderr[-3000:]
    assert not list(tmp_path.iterdir())  # no run directory left behind
