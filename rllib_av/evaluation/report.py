"""`rllib-av report RUN_DIR`: a static HTML page with PNG plots of a run.

RUN_DIR/report/index.html shows, from metrics.jsonl, the learning curves
(return, episode length), the critic's Q health against the +/- bound (and the
divergence verdict), losses and TD error, gradient norms, throughput and the
reward components' shares over time; from probes.jsonl, Q against the
discounted Monte-Carlo return on evaluation rollouts (the overestimation
probe); and, when ``rllib-av evaluate`` has written RUN_DIR/eval/evaluation.json,
its tables with one episode video shown in the page (copied beside it) and
links to the others. Plain files: open it from disk or copy report/ anywhere.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from typing import Dict, List, Optional

import numpy as np

from rllib_av.config_schema import ConfigError
from rllib_av.envs.reward import COMPONENTS
from rllib_av.evaluation import EVAL_DIR, RESULT_FILE
from rllib_av.evaluation.augmented_frames import augmented_frames_html
from rllib_av.evaluation.driving_metrics import METRICS
from rllib_av.health.probes import PROBES_FILE
from rllib_av.monitoring.run_history import read_jsonl

REPORT_DIR = "report"
VIDEO = "episode.gif"  # the evaluation video shown in the page, copied into report/
_Q_LINES = ("q_actor_max", "q_actor_mean", "q_actor_min", "q_target_max", "q_target_mean")


def load_metrics(run_dir: str) -> List[Dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ConfigError(f"report: {run_dir!r} is not a run directory (no metrics.jsonl)")
    records = read_jsonl(path)
    if not records:
        raise ConfigError(f"report: {path!r} has no iterations yet")
    return records


def write_report(run_dir: str) -> str:
    """Write RUN_DIR/report/index.html and its PNGs; returns the HTML path."""
    records = load_metrics(run_dir)
    probes = read_jsonl(os.path.join(run_dir, PROBES_FILE))
    out = os.path.join(run_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    figures = [
        ("learning_curves.png", "Learning curves", _plot_learning(records)),
        ("q_health.png", "Q health against the bound", _plot_q_health(records)),
        ("losses.png", "Losses and TD error", _plot_losses(records)),
        ("grad_norms.png", "Gradient norms (pre-clip)", _plot_grad_norms(records)),
        ("q_vs_mc_return.png", "Q against the Monte-Carlo return (overestimation probe)",
         _plot_q_vs_mc(records, probes)),
        ("throughput.png", "Throughput", _plot_throughput(records)),
        ("reward_shares.png", "Reward component shares", _plot_reward_shares(records)),
    ]
    sections = []
    for name, title, fig in figures:
        fig.savefig(os.path.join(out, name), dpi=100)
        _close(fig)
        sections.append(f'<h2>{html.escape(title)}</h2>\n'
                        f'<img src="{name}" alt="{html.escape(title)}">')
    sections.append(_evaluation_html(run_dir, out))
    sections.append(augmented_frames_html(run_dir, out))
    page = _PAGE.format(title=html.escape(os.path.basename(os.path.abspath(run_dir))),
                        summary=_summary_html(records), body="\n".join(sections))
    path = os.path.join(out, "index.html")
    with open(path, "w") as f:
        f.write(page)
    return path


# -- plots -----------------------------------------------------------------------
def _series(records: List[Dict], key: str) -> np.ndarray:
    return np.array([_num(r.get(key)) for r in records], np.float64)


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _figure(rows: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.8 * rows), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def _label_axis(ax, ylabel: str, ncol: int = 1) -> None:
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=ncol, loc="upper left")
    ax.grid(alpha=0.3)


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plot_learning(records):
    fig, (ax_ret, ax_len) = _figure(2)
    steps = _series(records, "env_steps")
    for ax, key, label in ((ax_ret, "episode_return_mean", "episode return (mean)"),
                           (ax_len, "episode_len_mean", "episode length (steps)")):
        ax.plot(steps, _series(records, key), marker=".", label=label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_len.set_xlabel("env steps")
    fig.tight_layout()
    return fig


def _modules(records) -> List[str]:
    return sorted({k.split("/")[0] for r in records for k in r
                   if k.endswith(("/q_bound", "/q_actor_mean"))})


def _plot_q_health(records):
    modules = _modules(records)
    fig, axes = _figure(max(1, len(modules)) + 1)
    steps = _series(records, "env_steps")
    for ax, mid in zip(axes, modules):
        for stat in _Q_LINES:
            ax.plot(steps, _series(records, f"{mid}/{stat}"), label=stat, lw=1)
        bound = _series(records, f"{mid}/q_bound")
        ax.plot(steps, bound, "k--", lw=1.5, label="+/- q_bound")
        ax.plot(steps, -bound, "k--", lw=1.5)
        # symlog: a healthy Q (units) and its bound (thousands) on one axis.
        ax.set_yscale("symlog", linthresh=1.0)
        _label_axis(ax, f"{mid}: Q", ncol=3)
    ax = axes[-1]
    for mid in modules:
        ax.plot(steps, _series(records, f"{mid}/q_bound_ratio"), label=f"{mid} |Q|/bound")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    state = _series(records, "divergence_state")
    for level, color in ((1, "orange"), (2, "red")):
        ax.fill_between(steps, 0, 1, where=state >= level, color=color, alpha=0.2,
                        transform=ax.get_xaxis_transform(),
                        label=("warning", "diverged")[level - 1])
    ax.set_yscale("log")
    _label_axis(ax, "|Q| / bound")
    ax.set_xlabel("env steps")
    fig.tight_layout()
    return fig


def _plot_losses(records):
    """Critic and actor loss, |TD error|: symlog, as a diverging critic spans decades
    (and the actor loss, -Q, has either sign)."""
    modules = _modules(records)
    fig, axes = _figure(max(1, len(modules)))
    steps = _series(records, "env_steps")
    for ax, mid in zip(axes, modules):
        for stat in ("critic_loss", "actor_loss", "td_error_abs_mean"):
            ax.plot(steps, _series(records, f"{mid}/{stat}"), label=stat, lw=1)
        ax.set_yscale("symlog", linthresh=1e-2)
        _label_axis(ax, f"{mid}: loss", ncol=3)
    axes[-1].set_xlabel("env steps")
    fig.tight_layout()
    return fig


def _plot_grad_norms(records):
    modules = _modules(records)
    fig, axes = _figure(max(1, len(modules)))
    steps = _series(records, "env_steps")
    for ax, mid in zip(axes, modules):
        for net in ("actor", "critic"):
            ax.plot(steps, _series(records, f"{mid}/grad_norm_{net}"), label=f"{net}", lw=1)
        ax.set_yscale("log")
        _label_axis(ax, f"{mid}: global grad norm")
    axes[-1].set_xlabel("env steps")
    fig.tight_layout()
    return fig


def _plot_q_vs_mc(records, probes):
    """The probe's mean Q(s, mu(s)) beside the discounted Monte-Carlo return from
    the same states, and their difference in units of the returns' own scale
    (what preflight and diagnose judge, with its trend)."""
    fig, (ax_q, ax_bias) = _figure(2)
    rows = [p for p in probes if p.get("probe_q_mean") is not None]
    steps = _series(rows, "env_steps")
    ax_q.plot(steps, _series(rows, "probe_q_mean"), marker="o", label="Q(s, mu(s)) (critic)")
    ax_q.plot(steps, _series(rows, "probe_mc_return_mean"), marker="s",
              label="discounted Monte-Carlo return")
    ax_q.set_yscale("symlog", linthresh=1.0)
    _label_axis(ax_q, "mean over probe states")
    ax_bias.plot(steps, _series(rows, "overestimation_bias")
                 / _series(rows, "overestimation_return_scale"), marker="o", color="tab:red",
                 label="(Q - MC return) / return scale")
    ax_bias.axhline(0.0, color="k", lw=1)
    _label_axis(ax_bias, "overestimation / return scale")
    ax_bias.set_xlabel("env steps")
    if not rows:
        ax_q.text(0.5, 0.5, "no overestimation probe yet (probes.jsonl)", ha="center",
                  transform=ax_q.transAxes)
    fig.tight_layout()
    return fig


def _plot_throughput(records):
    """Env steps and gradient updates per second of wall time, per iteration."""
    fig, (ax,) = _figure(1)
    steps, times = _series(records, "env_steps"), _series(records, "time_s")
    dt = np.diff(times)
    ok = dt > 0
    ax.plot(steps[1:][ok], (np.diff(steps) / np.where(ok, dt, 1))[ok], lw=2,
            label="env steps / s")
    for mid in _modules(records):  # dashed: at update-to-data ratio 1 it lies on the line above
        updates = _series(records, f"{mid}/num_updates_lifetime")
        ax.plot(steps[1:][ok], (np.diff(updates) / np.where(ok, dt, 1))[ok], ls="--",
                label=f"{mid} gradient updates / s")
    _label_axis(ax, "per second")
    ax.set_xlabel("env steps")
    fig.tight_layout()
    return fig


def _plot_reward_shares(records):
    fig, (ax_share, ax_mean) = _figure(2)
    steps = _series(records, "env_steps")
    shares = np.nan_to_num(np.array([_series(records, f"reward_share/{c}") for c in COMPONENTS]))
    ax_share.stackplot(steps, shares, labels=COMPONENTS)
    ax_share.set_ylim(0, 1)
    ax_share.set_ylabel("share of mean |component|")
    ax_share.legend(fontsize=7, ncol=5, loc="upper left")
    for comp in COMPONENTS + ("total",):
        ax_mean.plot(steps, _series(records, f"reward_components/{comp}"), label=comp,
                     lw=2 if comp == "total" else 1)
    _label_axis(ax_mean, "per-step mean", ncol=6)
    ax_mean.set_xlabel("env steps")
    fig.tight_layout()
    return fig


# -- HTML ------------------------------------------------------------------------
def _summary_html(records) -> str:
    last = records[-1]
    # Iterations without a finished episode report none: show the latest that did.
    returns = [r["episode_return_mean"] for r in records
               if r.get("episode_return_mean") is not None]
    items = [("iterations", last.get("training_iteration")), ("env steps", last.get("env_steps")),
             ("latest episode return (mean)", returns[-1] if returns else None),
             ("divergence state", ("healthy", "warning", "diverged")[int(last["divergence_state"])]
              if last.get("divergence_state") is not None else None)]
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in items)
    return f"<table class='summary'>{cells}</table>"


def _evaluation_html(run_dir: str, out: str) -> str:
    path = os.path.join(run_dir, EVAL_DIR, RESULT_FILE)
    if not os.path.isfile(path):
        return ("<h2>Evaluation</h2><p>No evaluation yet: run <code>rllib-av evaluate "
                f"--checkpoint {html.escape(run_dir)} --baselines</code>, "
                "then this report again.</p>")
    with open(path) as f:
        result = json.load(f)
    parts = [f"<h2>Evaluation</h2><p>{result['episodes']} episodes per policy, deterministic "
             f"policy from <code>{html.escape(str(result['checkpoint']))}</code>; "
             "mean [95% CI].</p>"]
    for name, scenario in result["scenarios"].items():
        policies = list(scenario["metrics"])
        head = "".join(f"<th>{html.escape(p)}</th>" for p in policies)
        rows = []
        for key, (label, unit) in METRICS.items():
            cells = "".join(f"<td>{_interval(scenario['metrics'][p][key])}</td>" for p in policies)
            rows.append(f"<tr><th>{label}{f' ({unit})' if unit else ''}</th>{cells}</tr>")
        ends = scenario.get("ends", {})
        cells = "".join("<td>" + html.escape(", ".join(
            f"{end} {count}" for end, count in sorted(ends.get(p, {}).items()))) + "</td>"
            for p in policies)
        rows.append(f"<tr><th>episode ends</th>{cells}</tr>")
        videos = [f'<a href="../{EVAL_DIR}/{html.escape(v)}">{html.escape(v)}</a>'
                  for vs in scenario.get("videos", {}).values() for v in vs]
        parts.append(f"<h3>scenario {html.escape(name)}</h3><table class='eval'>"
                     f"<tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"
                     + (f"<p>Videos: {' '.join(videos)}</p>" if videos else ""))
    shown = _show_video(run_dir, result, out)
    if shown is not None:
        parts.insert(1, f"<h3>Episode video</h3><p>{html.escape(shown)}: the policy's camera "
                        "| top-down view, actions and reward components below.</p>"
                        f'<img class="video" src="{VIDEO}" alt="episode video {html.escape(shown)}">')
    return "\n".join(parts)


def _show_video(run_dir: str, result: Dict, out: str) -> Optional[str]:
    """Copy the trained policy's first episode video (else any) beside the page."""
    videos = [(policy, v) for scenario in result["scenarios"].values()
              for policy, vs in scenario.get("videos", {}).items() for v in vs]
    videos.sort(key=lambda pv: pv[0] != "td3")
    for _, video in videos:
        path = os.path.join(run_dir, EVAL_DIR, video)
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(out, VIDEO))
            return video
    return None


def _interval(iv: Dict) -> str:
    if iv["mean"] is None or math.isnan(iv["mean"]):
        return "n/a"
    return f"{iv['mean']:.3g} [{iv['low']:.3g}, {iv['high']:.3g}]"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rllib_av run {title}</title>
<style>
body {{ font-family: sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
img.video {{ image-rendering: pixelated; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 90%; }}
</style></head>
<body>
<h1>rllib_av run {title}</h1>
{summary}
{body}
</body></html>
"""
