"""The preflight GO / NO-GO gate: a short diagnostic run judged by a table.

    rllib-av preflight --config configs/quickstart.yaml [--steps 5000]

rllib_av/preflight_run.py trains ``--steps`` env steps (guard off, critic probes
at the end); this module checks the run against the incident's table with the
``health.preflight_*`` thresholds: |actor loss|, final episode length (or
growing), max |Q| / q_bound, gradient norm, the rewards the critic trains on,
terminal masking and overestimation bias. GO when every row named in
``health.preflight_required`` passes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_av.health.tensorboard_records import read_tensorboard_records

GROWTH = 1.25  # "growing": mean length over the last third >= this x the first third


@dataclass
class Check:
    name: str
    measured: str
    threshold: str
    passed: Optional[bool]  # None: not measurable in this run (not counted against GO)
    required: bool = False


def read_records(run_dir: str) -> List[Dict]:
    """The run's per-iteration records: metrics.jsonl, else its TensorBoard events."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return read_tensorboard_records(run_dir)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _stat(record: Dict, key: str) -> Optional[float]:
    v = record.get(f"{DEFAULT_MODULE_ID}/{key}")
    return None if v is None else float(v)


def _last(records: List[Dict], key: str) -> Optional[float]:
    for r in reversed(records):
        if _stat(r, key) is not None:
            return _stat(r, key)
    return None


def evaluate(records: List[Dict], probe: Dict, h, learning_starts: int) -> List[Check]:
    """The table's rows from a run's metrics and its final probe record."""
    checks = []
    loss = _last(records, "actor_loss")
    checks.append(Check("actor_loss", "no actor update" if loss is None else f"|{loss:.4g}|",
                        f"< {h.preflight_actor_loss_abs_max:.4g}",
                        loss is not None and math.isfinite(loss)
                        and abs(loss) < h.preflight_actor_loss_abs_max))

    lengths = [r["episode_len_mean"] for r in records
               if r.get("episode_len_mean") is not None and r["env_steps"] > learning_starts]
    lo, hi = h.preflight_episode_len_min, h.preflight_episode_len_max
    if lengths:
        third = max(len(lengths) // 3, 1)
        first, last = sum(lengths[:third]) / third, sum(lengths[-third:]) / third
        growing = len(lengths) >= 3 and last >= GROWTH * first
        checks.append(Check("episode_length",
                            f"final {lengths[-1]:.1f} (mean {first:.1f} -> {last:.1f})",
                            f"in [{lo:g}, {hi:g}] or growing x{GROWTH}",
                            lo <= lengths[-1] <= hi or growing))
    else:
        checks.append(Check("episode_length", "no finished episode", f"in [{lo:g}, {hi:g}]", False))

    ratios = [(_stat(r, "q_bound_ratio"), r) for r in records
              if _stat(r, "q_bound_ratio") is not None]
    if ratios:
        ratio, at = max(ratios, key=lambda x: x[0] if math.isfinite(x[0]) else math.inf)
        checks.append(Check("q_bound", f"max |Q|/bound {ratio:.3g} "
                                       f"(bound {_stat(at, 'q_bound'):.4g}, step {at['env_steps']})",
                            f"< {h.preflight_q_bound_ratio_max:g}",
                            math.isfinite(ratio) and ratio < h.preflight_q_bound_ratio_max))
    else:
        checks.append(Check("q_bound", "no bound (reward range unknown) or no update", "-", None))

    norms = [n for n in (_last(records, "grad_norm_actor"), _last(records, "grad_norm_critic"))
             if n is not None]
    checks.append(Check("grad_norm", f"{max(norms):.4g}" if norms else "no update",
                        f"< {h.preflight_grad_norm_max:.4g}",
                        bool(norms) and math.isfinite(max(norms))
                        and max(norms) < h.preflight_grad_norm_max))

    if "reward_pipeline" in probe:
        checks.append(Check("reward_range",
                            f"train r in [{probe['reward_train_min']:.4g}, "
                            f"{probe['reward_train_max']:.4g}] ({probe['reward_pipeline']})",
                            f"in [{probe['reward_range_min']:.4g}, "
                            f"{probe['reward_range_max']:.4g}]",
                            probe["reward_pipeline"] == "ok"))
    else:
        checks.append(Check("reward_range", "no declared range or no probe", "-", None))

    if "terminal_masking" in probe:
        checks.append(Check("terminal_masking",
                            f"|Q-r| {probe['terminal_residual_masked']:.3g} vs |Q-(r+gQ')| "
                            f"{probe['terminal_residual_unmasked']:.3g} "
                            f"({probe['terminal_transitions']} terminal)",
                            "critic fits r on terminals", probe["terminal_masking"] == "ok"))
    else:
        checks.append(Check("terminal_masking", "no terminal transition", "-", None))

    if "overestimation_ratio" in probe:
        ratio = probe["overestimation_ratio"]
        checks.append(Check("overestimation",
                            f"Q - MC return {probe['overestimation_bias']:.4g} "
                            f"({ratio:.3g} x bound, {probe['overestimation_states']} states)",
                            f"< {h.preflight_overestimation_max:g} x bound",
                            ratio < h.preflight_overestimation_max))
    else:
        checks.append(Check("overestimation", "no usable evaluation state", "-", None))

    for c in checks:
        c.required = c.name in h.preflight_required
    return checks


def is_go(checks: List[Check]) -> bool:
    return all(c.passed is not False for c in checks if c.required)


def format_table(checks: List[Check], go: bool, run_dir: str) -> str:
    rows = [("check", "measured", "threshold", "result")]
    for c in checks:
        result = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        rows.append((c.name + ("" if c.required else " (info)"), c.measured, c.threshold, result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"\n{'GO' if go else 'NO-GO'}   (run: {run_dir})")
    return "\n".join(lines)
