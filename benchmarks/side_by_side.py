"""What the slice-alternating benchmarks share: the rate of one kind of slice
over all rounds, and the results file with the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def rate(rounds: list, kind: str) -> float:
    """Env steps/s of ``kind`` over every round (total steps / total seconds)."""
    return sum(r[kind]["env_steps"] for r in rounds) / sum(r[kind]["seconds"] for r in rounds)


def write_results(name: str, report: dict) -> None:
    """benchmarks/results/<name>.json; prints the report's summary."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "load_avg_1m_at_end": os.getloadavg()[0]}
    (RESULTS_DIR / f"{name}.json").write_text(
        json.dumps({"benchmark": name, "machine": machine, **report}, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
