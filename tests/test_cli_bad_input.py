"""A user's mistake on the command line is one line on stderr, exit code 2, no
traceback, nothing left behind, and (before anything would start) found
before torch or Ray is imported. Complements test_bad_configs.py, whose
generated cases cover the config schema itself."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rllib_av.config_schema import ConfigError
from rllib_av.envs.env_settings import EnvSettings
from rllib_av.startup_checks import check_env, discard_unstarted_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")

# Runs the real CLI in-process and reports which heavy modules it imported.
_PROBE = """
import json, sys
from rllib_av.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "heavy": sorted(m for m in ("torch", "ray") if m in sys.modules)}))
"""


def cli(args, cwd):
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return proc, report


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "a_file").write_text("not a run directory\n")
    run = tmp_path / "runs" / "quickstart-20260101-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("run: {name: quickstart}\n")
    return tmp_path


# (arguments, what the line must name, what it must not say)
CASES = [
    (["train", "--set", "env.id=NoSuchEnv-v0"], "env.id: 'NoSuchEnv-v0'", None),
    (["preflight", "--set", "env.id=Pendulm-v1"], "Did you mean", None),
    # A driving config's env keys do not apply to a gymnasium id: refused, not ignored.
    (["train", "--config", QUICKSTART, "--set", "env.id=Pendulum-v1"],
     "env.traffic: 'none' does not apply to env.id 'Pendulum-v1'", None),
    (["train", "--set", "env.id=Pendulum-v1", "--set", "env.max_episode_steps=500"],
     "env.max_episode_steps: 500 does not apply to env.id 'Pendulum-v1'", None),
    (["train", "--set", "env.id=Pendulum-v1", "--set", "env.kwargs={gravity: 9.81}"],
     "env.kwargs: {'gravity': 9.81} is not allowed for 'Pendulum-v1'", None),
    (["train", "--set", "env.kwargs={lanes: 3}"], "env.kwargs: {'lanes': 3} does not apply", None),
    (["train", "--set", "env.id=no_such_package:Foo-v0"], "cannot import 'no_such_package'", None),
    (["train", "--set", "run.output_dir=a_file"], "run.output_dir: 'a_file'", None),
    (["train", "--set", "run.output_dir=a_file/runs"], "is a file", None),
    (["train", "--resume", "a_file"], "--resume: 'a_file' is a file", None),
    (["train", "--resume", "runs"], "--resume: 'runs' is not a run directory", None),
    (["evaluate", "--checkpoint", "a_file"], "--checkpoint: 'a_file' is a file", "does not exist"),
    (["evaluate", "--checkpoint", "no_such_dir"], "--checkpoint: 'no_such_dir' does not exist", None),
    (["evaluate", "--checkpoint", "runs/quickstart-20260101-000000"], "no complete checkpoint", None),
    (["evaluate", "--baselines", "--scenario", "no_such_scenario"], "--scenario: 'no_such_scenario'", None),
    (["report", "a_file"], "RUN_DIR: 'a_file' is a file", None),
    (["diagnose", "a_file"], "RUN_DIR: 'a_file' is a file", None),
    (["diagnose", "runs/quickstart-20260101-000000"], "has no history yet", None),
    (["monitor", "a_file"], "RUN_DIR: 'a_file' is a file", None),
    (["monitor", "runs"], "is not a run directory", None),
]


@pytest.mark.parametrize("args,names,never", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_user_mistake_is_one_line_exit_2_before_heavy_imports(workdir, args, names, never):
    before = sorted(p.name for p in workdir.rglob("*"))
    proc, report = cli(args, workdir)
    assert report.get("rc") == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rllib-av: error: "), proc.stderr[-3000:]
    assert names in lines[0] and ("expected" in lines[0] or "allowed" in lines[0]
                                  or "no complete checkpoint" in lines[0]), lines[0]
    assert never is None or never not in lines[0]
    assert report["heavy"] == [], f"imported {report['heavy']} before reporting the mistake"
    assert sorted(p.name for p in workdir.rglob("*")) == before  # nothing written


def check_env_id(env_id, **kwargs):
    check_env(EnvSettings(id=env_id, kwargs=kwargs))


def test_env_ids_rllib_can_make_pass():
    check_env_id("driving")
    check_env_id("Pendulum-v1")
    check_env_id("Pendulum")  # gymnasium.make takes the highest registered version
    check_env_id("highway_env:highway-v0")  # imports the package that registers it
    from ray.tune.registry import register_env

    register_env("rllib_av_test_env", lambda cfg: None)
    check_env_id("rllib_av_test_env")
    with pytest.raises(ConfigError, match="Pendulum-v9"):
        check_env_id("Pendulum-v9")


def test_env_kwargs_are_checked_against_the_constructor():
    check_env_id("Pendulum-v1", g=9.81, max_episode_steps=500)  # gymnasium.make's own too
    with pytest.raises(ConfigError, match=r"env.kwargs: \{'gravity': 9.81\} is not allowed for "
                                          r"'Pendulum-v1' \(got an unexpected keyword"):
        check_env_id("Pendulum-v1", gravity=9.81)


def test_discard_unstarted_run_keeps_a_run_with_history(tmp_path):
    started, unstarted = tmp_path / "started", tmp_path / "unstarted"
    for d in (started, unstarted):
        d.mkdir()
        (d / "config.yaml").write_text("run: {}\n")
        (d / "metrics.jsonl").write_text("")
    (started / "metrics.jsonl").write_text('{"training_iteration": 1}\n')
    assert discard_unstarted_run(str(unstarted)) and not unstarted.exists()
    assert not discard_unstarted_run(str(started)) and started.exists()


@pytest.mark.slow
def test_run_that_never_starts_leaves_no_run_directory(tmp_path):
    """A port held by another process, asked for explicitly: Ray starts, the
    algorithm is being built when the exporter cannot bind, and the run directory
    made for it is gone again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "rllib_av.cli", "train", "--config", QUICKSTART,
             "--set", f"run.output_dir={tmp_path / 'runs'}",
             "--set", f"monitoring.exporter_port={port}"],
            capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
