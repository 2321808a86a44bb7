"""`rllib-av evaluate` and `rllib-av report` end to end on a short real run,
the report opened in a real headless Chromium."""

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rllib_av.run_config import load_run_config
from rllib_av.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
PLOTS = ("learning_curves.png", "q_health.png", "losses.png", "grad_norms.png",
         "q_vs_mc_return.png", "throughput.png", "reward_shares.png")

# Appended to a copy of the page: after load, record what each <img> decoded to.
_PROBE = """<script>
window.addEventListener("load", () => document.body.setAttribute("data-images", JSON.stringify(
  Array.from(document.images, i => [i.getAttribute("src"), i.complete, i.naturalWidth,
                                    i.naturalHeight]))));
</script></body>"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rllib_av.cli", *args], capture_output=True,
                          text=True, timeout=300)


def chromium(*args, user_dir):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={user_dir}", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=120)


def _records(n):
    """metrics.jsonl lines shaped like training.py's, Q growing towards the bound."""
    for i in range(1, n + 1):
        q = 10.0 * i
        yield {"training_iteration": i, "env_steps": 64 * i,
               "episode_return_mean": None if i < 3 else -5.0 + i,
               "episode_len_mean": None if i < 3 else 20.0 + i,
               "default_policy/q_actor_mean": q, "default_policy/q_actor_max": 2 * q,
               "default_policy/q_actor_min": -q, "default_policy/q_target_max": 2.1 * q,
               "default_policy/q_target_mean": q, "default_policy/q_bound": 150.0,
               "default_policy/q_bound_ratio": 2.1 * q / 150.0,
               "default_policy/critic_loss": 0.1 * 3.0 ** i, "default_policy/actor_loss": -q,
               "default_policy/td_error_abs_mean": 0.05 * 2.0 ** i,
               "default_policy/grad_norm_actor": 1.0 + i, "default_policy/grad_norm_critic": 10.0 ** (i / 3),
               "default_policy/num_updates_lifetime": 64.0 * i, "time_s": 1e9 + 2.0 * i + 0.1 * i * i,
               "reward_components/progress": 0.5, "reward_components/total": 0.2,
               "reward_share/progress": 0.6, "reward_share/lane_keeping": 0.4,
               "divergence_state": 2 if 2.1 * q > 150.0 else 0}


def _probes(n):
    """probes.jsonl lines: the critic's Q drifting above the Monte-Carlo return."""
    for i in range(2, n + 1, 2):
        yield {"training_iteration": i, "env_steps": 64 * i, "probe_q_mean": 5.0 * i,
               "probe_mc_return_mean": 8.0, "overestimation_bias": 5.0 * i - 8.0,
               "overestimation_return_scale": 8.0}


def _plotted_pixels(path):
    """Pixels that are neither white nor axis/grid grey: what the plot's lines drew."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((rgb.max(axis=2) - rgb.min(axis=2) > 60).sum())


def test_report_from_metrics_without_evaluation(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for record in _records(10):
            f.write(json.dumps(record) + "\n")
        f.write('{"training_iteration": 11, "env_st')  # a line cut short by a crash
    (tmp_path / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in _probes(10)))
    from rllib_av.evaluation.report import write_report

    page = open(write_report(str(tmp_path))).read()
    for name in PLOTS:
        assert f'src="{name}"' in page
        image = np.asarray(Image.open(tmp_path / "report" / name).convert("L"))
        assert image.shape[1] > 500 and image.std() > 5
        assert _plotted_pixels(tmp_path / "report" / name) > 500, name  # coloured lines drawn
    assert "No evaluation yet" in page and "diverged" in page
    assert "<td>5</td>" in page  # latest episode return (-5 + 10)


@pytest.mark.parametrize("what,message", [
    ("empty", "RUN_DIR: {path!r} is not a run directory (no config.yaml in it); "
              "expected runs/NAME-YYYYmmdd-HHMMSS"),
    ("file", "RUN_DIR: {path!r} is a file; expected a run directory (runs/NAME-YYYYmmdd-HHMMSS)"),
    ("no_history", "report: {path!r} is not a run directory (no metrics.jsonl)"),
])
def test_report_bad_run_dir_is_one_line(tmp_path, what, message):
    path = tmp_path / "run"
    if what == "file":
        path.write_text("not a run\n")
    else:
        path.mkdir()
    if what == "no_history":
        (path / "config.yaml").write_text("run: {name: x}\n")
    out = cli("report", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == "rllib-av: error: " + message.format(path=str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written


def train_short_run(output_dir, *overrides):
    """A real quickstart run of a few hundred env steps; returns (run config, run dir)."""
    rc = load_run_config(QUICKSTART, [
        f"run.output_dir={output_dir}", "run.total_env_steps=384", "run.checkpoint_every_iters=100",
        "run.min_time_s_per_iteration=0", "training.learning_starts=128",
        "training.batch_size=32", "training.image_encoder=none", "monitoring.exporter_port=0",
        *overrides])
    return rc, train(rc, verbose=False)


@pytest.fixture(scope="module")
def short_run(ray_local, tmp_path_factory):
    return train_short_run(tmp_path_factory.mktemp("runs"), "env.max_episode_steps=40")[1]


@pytest.mark.slow
def test_evaluate_then_report_in_headless_chromium(short_run, tmp_path):
    out = cli("evaluate", "--checkpoint", short_run, "--episodes", "2", "--baselines")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "scenario quickstart" in out.stdout and "episode ends: td3:" in out.stdout
    result = json.load(open(os.path.join(short_run, "eval", "evaluation.json")))
    metrics = result["scenarios"]["quickstart"]["metrics"]
    assert set(metrics) == {"td3", "random", "pure_pursuit"}
    assert metrics["pure_pursuit"]["route_completion"]["mean"] > \
        metrics["random"]["route_completion"]["mean"]
    for policy, videos in result["scenarios"]["quickstart"]["videos"].items():
        gif = Image.open(os.path.join(short_run, "eval", videos[0]))
        assert gif.n_frames > 1, policy

    out = cli("report", short_run)
    assert out.returncode == 0, out.stderr[-3000:]
    report_dir = os.path.join(short_run, "report")
    page = open(os.path.join(report_dir, "index.html")).read()
    probe = os.path.join(report_dir, "probe.html")
    with open(probe, "w") as f:
        f.write(page.replace("</body>", _PROBE))

    dom = chromium("--dump-dom", f"file://{probe}", user_dir=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-images="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    images = json.loads(html.unescape(found.group(1)))
    assert sorted(src for src, *_ in images) == sorted(PLOTS + ("episode.gif",))
    for src, complete, width, height in images:
        assert complete and width > 500 and height > 200, (src, width, height)
    video = Image.open(os.path.join(report_dir, "episode.gif"))
    assert video.n_frames > 1  # the episode itself, shown in the page, not a link
    assert "scenario quickstart" in dom.stdout and "pure_pursuit" in dom.stdout
    assert "episode ends" in dom.stdout

    shot = tmp_path / "page.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1000,1400",
                   f"file://{report_dir}/index.html", user_dir=tmp_path / "profile2")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # plots drawn, not a blank page
