"""Mutation score per core module, from mutmut's last run (``make mutation``).

Reads ``mutmut results --all true`` (one ``name: status`` line per mutant) in
the repository root and writes benchmarks/results/mutation_score.json: counts
per module, the score, and the surviving mutants by name (``mutmut show NAME``
prints one's diff). docs/mutation_testing.md says, for each survivor, which
test now kills it or why it is equivalent.

A run narrowed with MUTANTS checks some modules only: those replace their
entries, every other module keeps the one its own last run wrote (each entry
says how long its run took and how loaded the machine was).

    python benchmarks/mutation_score.py [--elapsed-s SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from side_by_side import RESULTS_DIR, write_results

ROOT = Path(__file__).resolve().parent.parent
# Statuses that mean a test noticed the mutant.
DETECTED = ("killed", "timeout", "caught by type check")
# mutmut 3 names a mutant <module>.x_<function>__mutmut_<n> or
# <module>.xǁ<Class>ǁ<method>__mutmut_<n>.
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ].*__mutmut_\d+$")


def score(results: str) -> dict:
    """Counts per module of the mutants checked (a module none of whose mutants
    this run checked is left out)."""
    counts, survivors = defaultdict(Counter), defaultdict(list)
    for line in results.splitlines():
        if ": " not in line:
            continue
        name, status = (part.strip() for part in line.rsplit(": ", 1))
        module = NAME.match(name)["module"]
        counts[module][status] += 1
        if status not in DETECTED and status != "not checked":
            survivors[module].append(f"{name}: {status}")
    modules = {}
    for module, c in sorted(counts.items()):
        checked = sum(c.values()) - c["not checked"]
        if not checked:  # outside this run's MUTANTS
            continue
        detected = sum(c[s] for s in DETECTED)
        modules[module] = {"mutants": checked, "detected": detected,
                           "score": round(detected / checked, 4),
                           "statuses": {s: n for s, n in c.items() if n},
                           "survivors": sorted(survivors[module])}
    return modules


def summary(modules: dict) -> dict:
    total = sum(m["mutants"] for m in modules.values())
    detected = sum(m["detected"] for m in modules.values())
    return {"mutants": total, "detected": detected,
            "score": round(detected / total, 4) if total else None,
            **{m: f'{v["detected"]}/{v["mutants"]}' for m, v in modules.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elapsed-s", type=float, help="wall time of the mutmut run, recorded")
    args = parser.parse_args()
    mutmut = Path(sys.executable).with_name("mutmut")
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    checked = score(results)
    if not checked:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    run = {"elapsed_s": args.elapsed_s, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    path = RESULTS_DIR / "mutation_score.json"
    modules = json.loads(path.read_text())["modules"] if path.exists() else {}
    modules.update({m: {**v, "run": run} for m, v in checked.items()})
    modules = dict(sorted(modules.items()))
    write_results("mutation_score", {"modules": modules, "summary": summary(modules)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
