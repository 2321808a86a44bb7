"""`rllib-av train | preflight | evaluate | report | diagnose | monitor | config`: the command line.

A user's mistake (bad config, missing file, unknown env id) is one line on
stderr and exit code 2, never a traceback; it is found before torch or Ray is
imported, so it takes well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from rllib_av.config_schema import ConfigError
from rllib_av.dependency_noise import quiet_dependency_notices
from rllib_av.evaluation.evaluation_plan import plan_evaluation
from rllib_av.run_config import RunConfig, load_run_config, run_config_schema
from rllib_av.startup_checks import check_env, check_output_dir, run_dir_argument


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rllib-av", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train TD3 (embedded simulator by default)")
    train.add_argument("--config", help="run config YAML (configs/*.yaml)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. run.total_env_steps=5000")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run from its latest complete checkpoint")
    train.add_argument("--quiet", action="store_true", help="no per-iteration progress line")

    ev = sub.add_parser("evaluate", help="driving metrics of the deterministic policy (+ baselines)")
    ev.add_argument("--checkpoint", help="RUN_DIR/checkpoints/iter_N, or RUN_DIR (newest healthy)")
    ev.add_argument("--scenario", dest="scenarios", action="append", default=[], metavar="NAME",
                    help="configs/NAME.yaml's env (repeatable; default: the run's own env)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--baselines", action="store_true", help="also random and pure pursuit + PID")
    ev.add_argument("--videos", type=int, default=1, help="GIFs of the first N episodes per policy")
    ev.add_argument("--out", help="output directory (default RUN_DIR/eval)")

    report = sub.add_parser("report", help="static HTML report of a run directory")
    report.add_argument("run_dir", metavar="RUN_DIR")

    pre = sub.add_parser("preflight", help="short diagnostic run -> GO / NO-GO table (exit 0 / 1)")
    pre.add_argument("--config", help="run config YAML (configs/*.yaml)")
    pre.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pre.add_argument("--steps", type=int, help="env steps to train (default health.preflight_steps)")
    pre.add_argument("--quiet", action="store_true", help="no per-iteration progress line")

    diag = sub.add_parser("diagnose", help="walk the Q-divergence decision tree over a run directory")
    diag.add_argument("run_dir", metavar="RUN_DIR")

    mon = sub.add_parser("monitor", help="Prometheus + Alertmanager on this machine for a running "
                                         "or finished run (Ctrl-C stops)")
    mon.add_argument("run_dir", metavar="RUN_DIR")

    config = sub.add_parser("config", help="about run configs")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("schema", help="print the run config's JSON Schema "
                                         "(configs/run_config.schema.json)")
    return parser


def _startable(config: Optional[str], overrides: List[str]) -> RunConfig:
    """The run config, checked for what would stop a run before its first iteration."""
    rc = load_run_config(config, overrides)
    check_env(rc.env)
    check_output_dir(rc.run.output_dir)
    return rc


def _train(args) -> int:
    config, run_dir = args.config, None
    if args.resume:
        run_dir = run_dir_argument(args.resume, "--resume")
        config = config or os.path.join(run_dir, "config.yaml")
    rc = _startable(config, args.overrides)
    from rllib_av.training import train

    print(f"run directory: {train(rc, run_dir=run_dir, verbose=not args.quiet)}")
    return 0


def _evaluate(args) -> int:
    plan = plan_evaluation(args.checkpoint, args.scenarios, args.episodes, args.baselines,
                           args.videos, args.out)
    from rllib_av.evaluation.evaluate import run_evaluation

    result = run_evaluation(plan)
    print("\n\n".join(s["table"] for s in result["scenarios"].values()))
    print(f"results: {result['out_dir']}")
    return 0


def _report(args) -> int:
    run_dir = run_dir_argument(args.run_dir)
    from rllib_av.evaluation.report import write_report

    print(f"report: {write_report(run_dir)}")
    return 0


def _preflight(args) -> int:
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps: {args.steps} is not allowed; expected a value >= 1")
    rc = _startable(args.config, args.overrides)
    from rllib_av.health.preflight import format_table
    from rllib_av.preflight_run import preflight

    go, checks, run_dir = preflight(rc, args.steps, verbose=not args.quiet)
    print(format_table(checks, go, run_dir))
    return 0 if go else 1


def _diagnose(args) -> int:
    run_dir = run_dir_argument(args.run_dir)
    if not any(os.path.exists(os.path.join(run_dir, n)) for n in ("metrics.jsonl", "tensorboard")):
        raise ConfigError(f"RUN_DIR: {args.run_dir!r} has no history yet "
                          "(expected metrics.jsonl or tensorboard/ in it)")
    from rllib_av.health.diagnosis import diagnose

    print(diagnose(run_dir).format())
    return 0


def _monitor(args) -> int:
    run_dir = run_dir_argument(args.run_dir)
    from rllib_av.monitoring.local_stack import monitor

    monitor(run_dir)
    return 0


def _config(args) -> int:
    print(json.dumps(run_config_schema(), indent=2))  # args.config_command is "schema"
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "report": _report,
            "preflight": _preflight, "diagnose": _diagnose, "monitor": _monitor,
            "config": _config}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    quiet_dependency_notices()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"rllib-av: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rllib-av: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
