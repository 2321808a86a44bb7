"""Mutation score per core module, from mutmut's last run (``make mutation``).

Reads ``mutmut results --all true`` (one ``name: status`` line per mutant) in
the repository root and writes benchmarks/results/mutation_score.json: counts
per module, the score, and the surviving mutants by name (``mutmut show NAME``
prints one's diff). docs/mutation_testing.md says, for each survivor, which
test now kills it or why it is equivalent.

A run narrowed with MUTANTS checks some modules only: those replace their
entries, every other module keeps the one its own last run wrote (each entry
says how long its run took and how loaded the machine was). When a run
re-checks a module's mutants (``mutmut run NAME ...``, e.g. the former
survivors after new tests), the entry keeps the score they had first as
``before`` and that pass's time as ``first_run``. A pass over functions the
entry has not checked (another ``mutants/``, narrowed with MUTANTS to the
functions an earlier pass left) adds to the entry, ``before`` included; any
other pass that checks more of a module's mutants than its entry holds starts
the entry afresh. Each entry counts the mutants it checked per function.
``--add REGEX`` adds only the mutants whose names match to their entries: a
pass whose patterns also re-ran mutants an entry holds (the rest of a
function an earlier pass stopped in, e.g. ``_build_replay__mutmut_([4-7]\d|3[89]|80)$``).

    python benchmarks/mutation_score.py [--elapsed-s SECONDS] [--add REGEX]
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
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ](?P<function>.*)__mutmut_\d+$")


def only(results: str, pattern: str) -> str:
    """``results`` less the mutants whose names do not match ``pattern``
    (a module's ``total`` still counts them: see ``main``)."""
    return "\n".join(line for line in results.splitlines() if ": " in line
                     and re.search(pattern, line.rsplit(": ", 1)[0].strip()))


def add(last: dict, now: dict) -> dict:
    """``extend`` for ``--add``: a function ``last`` checked part of adds its counts."""
    merged = extend(last, now)
    merged["functions"].update({f: last["functions"][f] + n for f, n in now["functions"].items()
                                if f in last["functions"]})
    return merged


def score(results: str) -> dict:
    """Per module with any mutant checked: counts and the survivors by name (a
    module none of whose mutants was checked is left out)."""
    statuses = defaultdict(dict)
    for line in results.splitlines():
        if ": " not in line:
            continue
        name, status = (part.strip() for part in line.rsplit(": ", 1))
        statuses[NAME.match(name)["module"]][name] = status
    modules = {}
    for module, by_name in sorted(statuses.items()):
        checked = {n: s for n, s in by_name.items() if s != "not checked"}
        if not checked:  # outside this run's MUTANTS
            continue
        detected = sum(s in DETECTED for s in checked.values())
        functions = Counter(NAME.match(n)["function"].replace("ǁ", ".") for n in checked)
        modules[module] = {"mutants": len(checked), "detected": detected,
                           "score": round(detected / len(checked), 4),
                           "statuses": dict(Counter(checked.values())),
                           "survivors": sorted(f"{n}: {s}" for n, s in checked.items()
                                               if s not in DETECTED),
                           "functions": dict(sorted(functions.items())), "total": len(by_name),
                           # False: a pass stopped before it checked every mutant
                           "complete": len(checked) == len(by_name), "checked": checked}
    return modules


def recheck(last: dict, statuses: dict) -> dict:
    """``last`` with each of its survivors that ``statuses`` (name -> status)
    now detects counted as detected."""
    counts, survivors = Counter(last["statuses"]), []
    for line in last["survivors"]:
        name, status = line.rsplit(": ", 1)
        if statuses.get(name) in DETECTED:
            counts[status] -= 1
            counts[statuses[name]] += 1
        else:
            survivors.append(line)
    detected = last["detected"] + len(last["survivors"]) - len(survivors)
    return {**last, "detected": detected, "score": round(detected / last["mutants"], 4),
            "statuses": {s: n for s, n in counts.items() if n}, "survivors": survivors,
            "before": last.get("before", f'{last["detected"]}/{last["mutants"]}')}


def extend(last: dict, now: dict) -> dict:
    """``last`` plus ``now``, a pass over functions ``last`` had not checked;
    complete when together they checked all ``total`` mutants of the module."""
    statuses = Counter(last["statuses"]) + Counter(now["statuses"])
    mutants, detected = last["mutants"] + now["mutants"], last["detected"] + now["detected"]
    first, of = map(int, last.get("before", f'{last["detected"]}/{last["mutants"]}').split("/"))
    return {**now, "mutants": mutants, "detected": detected,
            "score": round(detected / mutants, 4), "statuses": dict(statuses),
            "survivors": sorted(last["survivors"] + now["survivors"]),
            "functions": dict(sorted({**last["functions"], **now["functions"]}.items())),
            "complete": mutants == now["total"],
            "before": f'{first + now["detected"]}/{of + now["mutants"]}',
            "first_run": last.get("first_run", last.get("run"))}


def summary(modules: dict) -> dict:
    total = sum(m["mutants"] for m in modules.values())
    detected = sum(m["detected"] for m in modules.values())
    return {"mutants": total, "detected": detected,
            "score": round(detected / total, 4) if total else None,
            **{m: f'{v["detected"]}/{v["mutants"]}' for m, v in modules.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elapsed-s", type=float, help="wall time of the mutmut run, recorded")
    parser.add_argument("--add", metavar="REGEX",
                        help="add only the mutants whose names match to their entries")
    args = parser.parse_args()
    mutmut = Path(sys.executable).with_name("mutmut")
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    checked = score(only(results, args.add) if args.add else results)
    if args.add:  # a module's total counts all its mutants
        totals = {m: v["total"] for m, v in score(results).items()}
        for module, now in checked.items():
            now["total"] = totals[module]
    if not checked:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    run = {"elapsed_s": args.elapsed_s, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    path = RESULTS_DIR / "mutation_score.json"
    modules = json.loads(path.read_text())["modules"] if path.exists() else {}
    for module, now in checked.items():
        last, names = modules.get(module, {}), now.pop("checked")
        if now["statuses"] == last.get("statuses"):
            continue  # nothing of this module was checked in this run
        if args.add:
            now = add(last, now)
        elif not set(now["functions"]) & set(last.get("functions", now["functions"])):
            now = extend(last, now)
        else:
            if now["mutants"] < last.get("mutants", 0):  # some re-checked after a reset
                now = recheck(last, names)
            elif now["mutants"] == last.get("mutants"):
                # The same mutants re-checked (after new tests): the score they
                # had first stays on record as "before". (More mutants checked
                # than the entry holds: a new first pass, e.g. after
                # ``rm -rf mutants/``; it replaces the entry whole.)
                now["before"] = last.get("before", f'{last["detected"]}/{last["mutants"]}')
            if "before" in now:  # and the first pass's time with it
                now["first_run"] = last.get("first_run", last.get("run"))
        modules[module] = {**now, "run": run}
    modules = dict(sorted(modules.items()))
    write_results("mutation_score", {"modules": modules, "summary": summary(modules)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
