"""The divergence guard: patience, alert / stop / rollback, every action
logged and counted; the rollback end to end on a real diverging run; its
remedy kept across a restart."""

import collections
import glob
import json
import os
import time

import pytest

from rllib_av.checkpoints import latest_checkpoint, read_meta
from rllib_av.guard_actions import carry_out
from rllib_av.health.guard import GUARD_FILE, REPORT_FILE, DivergenceGuard
from rllib_av.health.health_settings import HealthSettings
from rllib_av.health.probes import read_probes
from rllib_av.run_config import load_run_config
from rllib_av.training import train

from scrape import by_label, scrape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")


def result(iteration, state):
    return {"training_iteration": iteration, "env_runners": {"num_env_steps_sampled_lifetime": 64 * iteration},
            "health": {"divergence_state": {"default_policy": state},
                       "reasons": {"default_policy": [f"state {state}"]}}}


def entries(run_dir):
    path = os.path.join(run_dir, GUARD_FILE)
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


@pytest.mark.parametrize("action", ["alert", "stop"])
def test_acts_only_after_patience_consecutive_diverged_iterations(tmp_path, action):
    guard = DivergenceGuard(HealthSettings(guard_action=action, guard_patience=3), 3e-4, 0.2)
    states = [2, 2, 1, 2, 2, 0, 2, 2, 2]  # the streak breaks twice; acts at the 9th
    taken = []
    for i, s in enumerate(states):
        r = result(i + 1, s)
        decision = guard.after_iteration(r["health"], healthy_checkpoint=None)
        if decision is not None:
            carry_out(decision, guard, None, str(tmp_path), r)  # alert and stop need no algorithm
        taken.append(decision and decision.action)
    assert taken == [None] * 8 + [action]
    logged = entries(tmp_path)
    assert [e["action"] for e in logged] == [action]
    assert logged[0]["training_iteration"] == 9 and logged[0]["reasons"] == ["state 2"]
    assert os.path.exists(os.path.join(tmp_path, REPORT_FILE)) == (action == "stop")


def test_off_never_acts_and_rollback_without_healthy_checkpoint_stops(tmp_path):
    off = DivergenceGuard(HealthSettings(guard_action="off", guard_patience=1), 3e-4, 0.2)
    assert off.after_iteration(result(1, 2)["health"], "ckpt") is None
    rollback = DivergenceGuard(HealthSettings(guard_action="rollback", guard_patience=1),
                               3e-4, 0.2)
    decision = rollback.after_iteration(result(1, 2)["health"], healthy_checkpoint=None)
    assert decision.action == "stop"
    carry_out(decision, rollback, None, str(tmp_path), result(1, 2))
    assert entries(tmp_path)[-1]["why"] == "no healthy checkpoint"
    assert "no healthy checkpoint" in open(os.path.join(tmp_path, REPORT_FILE)).read()


def served_after_the_guard(output_dir):
    """The exporter's page once it counts every action guard.jsonl has logged and
    shows the bias of any probe taken: each count and bias reaches the server
    process over a pipe, so a scrape right after may get the page before (as a
    loaded CI machine showed)."""
    (run_dir,) = glob.glob(os.path.join(output_dir, "quickstart-*"))
    port = int(open(os.path.join(run_dir, "exporter_port")).read())
    logged = collections.Counter(e["action"] for e in entries(run_dir))
    probed = any("overestimation_bias" in p for p in read_probes(run_dir))
    deadline = time.monotonic() + 10
    while True:
        metrics = scrape(port)
        counted = by_label(metrics["rllib_av_guard_actions_total"], "action")
        if (all(counted.get(a) == n for a, n in logged.items())
                and (not probed or "rllib_av_overestimation_bias" in metrics)
                or time.monotonic() > deadline):
            return metrics
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("runners", [0, 1], ids=["sync", "async"])
def test_rollback_restores_healthy_checkpoint_with_lower_critic_lr_then_stops(ray_local, tmp_path,
                                                                             runners):
    """Async (a remote EnvRunner): the rollback pauses sampling (what was being
    sampled for the abandoned future is dropped), restores, and resumes."""
    rc = load_run_config(QUICKSTART, [
        f"run.output_dir={tmp_path}", f"resources.num_env_runners={runners}",
        "run.total_env_steps=8000", "run.min_time_s_per_iteration=0",
        "run.checkpoint_every_iters=1", "training.learning_starts=200", "training.batch_size=64",
        "training.buffer_size=10000", "training.learner_class=broken_learners:InflatedBootstrap",
        "monitoring.exporter_port=0", "monitoring.tensorboard=false", "health.guard_action=rollback", "health.guard_patience=2",
        "health.guard_max_rollbacks=1", "health.probe_every_iters=0"])
    seen = []

    def on_result(res):
        metrics = served_after_the_guard(tmp_path)
        seen.append({"steps": res["env_runners"]["num_env_steps_sampled_lifetime"],
                     "critic_lr": res.get("learners", {}).get("default_policy", {})
                     .get("critic_learning_rate"),
                     "policy_noise": res.get("learners", {}).get("default_policy", {})
                     .get("policy_noise"),
                     "counters": by_label(metrics["rllib_av_guard_actions_total"], "action"),
                     "bias_exported": "rllib_av_overestimation_bias" in metrics})

    run_dir = train(rc, on_result=on_result, verbose=False)

    logged = entries(run_dir)
    assert [e["action"] for e in logged] == ["rollback", "stop"], logged
    rollback, stop = logged
    assert any("bound" in r for r in rollback["reasons"]), rollback
    assert rollback["checkpoint_env_steps"] < rollback["env_steps"]
    assert rollback["critic_lr"] == pytest.approx(1.5e-4)
    assert rollback["policy_noise"] == pytest.approx(0.3)
    assert stop["why"] == "1 rollbacks spent"
    assert "1 rollbacks spent" in open(os.path.join(run_dir, REPORT_FILE)).read()

    # Counted when taken (async iterations can repeat a step count while sampling is
    # throttled, so the rollback's iteration is found by its counter, then pinned by its
    # step); training resumed from the checkpoint's step with the lower rate, which every
    # later update keeps (RLlib's lr scheduler does not put 3e-4 back).
    at = next(i for i, s in enumerate(seen) if s["counters"]["rollback"] == 1)
    assert seen[at]["steps"] == rollback["env_steps"] and seen[at - 1]["counters"]["rollback"] == 0
    assert seen[at + 1]["steps"] <= rollback["checkpoint_env_steps"] + 2 * rc.training.rollout_fragment_length
    assert seen[at - 1]["critic_lr"] == pytest.approx(3e-4)
    assert all(s["critic_lr"] == pytest.approx(1.5e-4) for s in seen[at + 1:] if s["critic_lr"])
    assert seen[at - 1]["policy_noise"] == pytest.approx(0.2)
    assert all(s["policy_noise"] == pytest.approx(0.3) for s in seen[at + 1:] if s["policy_noise"])
    assert seen[-1]["counters"] == {"alert": 0, "stop": 1, "rollback": 1}
    assert seen[-1]["steps"] < rc.run.total_env_steps  # stopped early
    # A stop probes the critic once more, so diagnose has the evidence.
    (probe,) = read_probes(run_dir)
    assert probe["env_steps"] == stop["env_steps"] and "overestimation_bias" in probe
    assert seen[-1]["bias_exported"] and not seen[-2]["bias_exported"]


def test_rollback_decision_compounds_the_remedy_until_rollbacks_are_spent():
    guard = DivergenceGuard(HealthSettings(guard_action="rollback", guard_patience=1,
                                           guard_max_rollbacks=2), 3e-4, 0.2)
    first = guard.after_iteration(result(1, 2)["health"], "ckpt")
    second = guard.after_iteration(result(2, 2)["health"], "ckpt")
    third = guard.after_iteration(result(3, 2)["health"], "ckpt")
    assert (first.action, first.critic_lr, first.policy_noise) == (
        "rollback", pytest.approx(1.5e-4), pytest.approx(0.3))
    assert (second.critic_lr, second.policy_noise) == (pytest.approx(7.5e-5), pytest.approx(0.45))
    assert (third.action, third.why) == ("stop", "2 rollbacks spent")
    assert guard.state.rollbacks == 2


@pytest.mark.slow
def test_the_remedy_and_rollback_count_survive_a_restart(ray_local, tmp_path):
    """After a rollback the lowered critic learning rate, the raised smoothing
    noise and the rollbacks spent are saved with each checkpoint: a resumed run
    keeps them instead of returning to the settings that diverged.

    The guard is made to act on a healthy Pendulum run by the user's own
    threshold (any gradient norm counts as diverged), so every rollback
    happens for real, without a test-only switch."""
    overrides = [
        "env.id=Pendulum-v1", f"run.output_dir={tmp_path}", "run.min_time_s_per_iteration=0",
        "run.total_env_steps=640", "run.checkpoint_every_iters=1", "run.keep_checkpoints=10",
        "training.learning_starts=100", "training.batch_size=32", "training.buffer_size=2000",
        "monitoring.exporter=false", "monitoring.tensorboard=false",
        "health.grad_norm_warn=1.0e-9", "health.grad_norm_diverge=1.0e-9",
        "health.guard_action=rollback", "health.guard_patience=2", "health.guard_max_rollbacks=2",
        "health.probe_every_iters=0", "health.probe_episodes=0"]
    run_dir = train(load_run_config(None, overrides), verbose=False)
    logged = entries(run_dir)
    assert [e["action"] for e in logged] == ["rollback", "rollback", "stop"], logged
    saved = read_meta(latest_checkpoint(run_dir))["guard"]
    assert saved["rollbacks"] == 2
    assert saved["critic_lr"] == pytest.approx(3e-4 * 0.25)
    assert saved["policy_noise"] == pytest.approx(0.2 * 1.5 ** 2)

    seen = []
    rc = load_run_config(os.path.join(run_dir, "config.yaml"), ["run.total_env_steps=1280"])
    train(rc, run_dir=run_dir, verbose=False, on_result=lambda r: seen.append(
        r["learners"].get("default_policy", {})))
    trained = [s for s in seen if s.get("critic_learning_rate")]
    assert trained and all(s["critic_learning_rate"] == pytest.approx(3e-4 * 0.25)
                           and s["policy_noise"] == pytest.approx(0.2 * 1.5 ** 2) for s in trained)
    # The rollbacks were spent before the restart: the next action is a stop.
    after = entries(run_dir)[len(logged):]
    assert [e["action"] for e in after] == ["stop"] and after[0]["why"] == "2 rollbacks spent"
