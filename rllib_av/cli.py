"""`rllib-av train | ...`: the command line.

A user's mistake (bad config, missing file) is one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from rllib_av.config_schema import ConfigError


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
    pre.add_argument("--verbose", action="store_true", help="per-iteration progress lines")

    diag = sub.add_parser("diagnose", help="walk the Q-divergence decision tree over a run directory")
    diag.add_argument("run_dir", metavar="RUN_DIR")
    return parser


def _train(args) -> int:
    import os

    from rllib_av.run_config import load_run_config
    from rllib_av.training import train

    config = args.config
    if args.resume:
        if not os.path.isfile(os.path.join(args.resume, "config.yaml")):
            raise ConfigError(f"--resume: {args.resume!r} is not a run directory "
                              "(no config.yaml in it)")
        config = config or os.path.join(args.resume, "config.yaml")
    rc = load_run_config(config, args.overrides)
    run_dir = train(rc, run_dir=args.resume, verbose=not args.quiet)
    print(f"run directory: {run_dir}")
    return 0


def _evaluate(args) -> int:
    from rllib_av.evaluation.evaluate import evaluate

    result = evaluate(args.checkpoint, args.scenarios, args.episodes, args.baselines,
                      args.videos, args.out)
    print("\n\n".join(s["table"] for s in result["scenarios"].values()))
    print(f"results: {result['out_dir']}")
    return 0


def _report(args) -> int:
    from rllib_av.evaluation.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def _preflight(args) -> int:
    from rllib_av.health.preflight import format_table, preflight
    from rllib_av.run_config import load_run_config

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps: {args.steps} is not allowed; expected a value >= 1")
    go, checks, run_dir = preflight(load_run_config(args.config, args.overrides), args.steps,
                                    verbose=args.verbose)
    print(format_table(checks, go, run_dir))
    return 0 if go else 1


def _diagnose(args) -> int:
    import os

    from rllib_av.health.diagnosis import diagnose

    if not os.path.isfile(os.path.join(args.run_dir, "config.yaml")) or not any(
            os.path.exists(os.path.join(args.run_dir, n)) for n in ("metrics.jsonl", "tensorboard")):
        raise ConfigError(f"RUN_DIR: {args.run_dir!r} is not a run directory "
                          "(expected config.yaml and metrics.jsonl or tensorboard/ in it)")
    print(diagnose(args.run_dir).format())
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "report": _report,
            "preflight": _preflight, "diagnose": _diagnose}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
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
