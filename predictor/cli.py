"""Command line: parse arguments, load the config, call the one function that does the work. No logic here."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from predictor import __version__
from predictor.config import ConfigError, load_config, parse_duration, parse_time

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predictor", description=__doc__)
    parser.add_argument("--version", action="version", version=f"predictor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="watch rollouts and act on predicted SLO breaches")
    run.add_argument("--config", required=True, type=Path)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path)

    backtest = sub.add_parser("backtest", help="replay the decision loop over Prometheus history (always dry-run)")
    backtest.add_argument("--config", required=True, type=Path)
    backtest.add_argument("--start", required=True, help="RFC 3339, POSIX seconds, 'now' or '-6h'")
    backtest.add_argument("--end", required=True)
    backtest.add_argument("--step", default="15s", help="simulated tick (default 15s)")
    backtest.add_argument("--output", required=True, type=Path, help="JSON Lines, one object per action")

    demo = sub.add_parser("demo", help="simulated rollouts through the real decision core; no cluster needed")
    demo.add_argument("--action", choices=["pause", "undo", "alert"], default="undo")
    demo.add_argument("--speed", type=float, default=0.04, help="wall seconds per simulated tick (0: no waiting)")
    demo.add_argument("--seed", type=int, default=7)

    train = sub.add_parser("train", help="retrain the models on Prometheus history; promoted only if not worse")
    train.add_argument("--config", required=True, type=Path)
    train.add_argument("--from", dest="start", required=True, help="RFC 3339, POSIX seconds, 'now' or '-7d'")
    train.add_argument("--to", dest="end", required=True)
    train.add_argument("--out", required=True, type=Path, help="models directory (artifacts go to OUT/rollout-risk/)")

    nab = sub.add_parser("nab", help="streaming anomaly scores over a Numenta Anomaly Benchmark folder")
    nab.add_argument("--data", required=True, type=Path)
    nab.add_argument("--out", required=True, type=Path)
    nab.add_argument("--workers", type=int, default=2)
    return parser


_TIME_OPTIONS = ("--from", "--to", "--start", "--end")


def _attach_relative_times(argv: Sequence[str]) -> list[str]:
    """`--from -7d` as `--from=-7d`: argparse would take '-7d' for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _TIME_OPTIONS and token.startswith("-"):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_attach_relative_times(sys.argv[1:] if argv is None else argv))
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"predictor: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        config = load_config(args.file)
        print(f"{args.file}: ok ({len(config.targets)} target(s), {len(config.metrics)} metric(s), "
              f"action {config.policy.action}{', dry run' if config.policy.dry_run else ''})")
        return 0
    if args.command == "demo":
        from predictor.demo import demo_config, run_demo
        from predictor.domain import Action

        logging.basicConfig(level=logging.ERROR)
        run_demo(config=demo_config(Action(args.action)), seed=args.seed, realtime_factor=args.speed)
        return 0
    if args.command == "nab":
        from predictor.nab import run_nab

        written = run_nab(args.data, args.out, workers=args.workers)
        print(f"wrote {len(written)} file(s) under {args.out}")
        return 0

    from predictor.telemetry import configure_logging

    config = load_config(args.config)
    configure_logging(config.logging.format, config.logging.level)
    if args.command == "run":
        from predictor.daemon import build_daemon

        build_daemon(config).run_until_signalled()
        return 0
    if args.command == "backtest":
        from predictor.backtest import run_backtest

        now = time.time()
        try:
            start, end = parse_time(args.start, now), parse_time(args.end, now)
            step = parse_duration(args.step)
        except ValueError as exc:
            raise ConfigError([f"--start/--end/--step: {exc}"], "command line") from exc
        if end <= start or step <= 0:
            raise ConfigError([f"--start/--end/--step: expected start < end and step > 0, got {args.start!r}, "
                               f"{args.end!r}, {args.step!r}"], "command line")
        count = run_backtest(config, start=start, end=end, step_seconds=step, output=args.output)
        print(f"backtest: {count} action(s) written to {args.output}")
        return 0
    if args.command == "train":
        from predictor.train import TrainingError, TrainingSourceError, train

        now = time.time()
        try:
            start, end = parse_time(args.start, now), parse_time(args.end, now)
        except ValueError as exc:
            raise ConfigError([f"--from/--to: {exc}"], "command line") from exc
        try:
            result = train(config, start=start, end=end, out_dir=args.out, now=now)
        except TrainingError as exc:
            print(f"predictor train: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except TrainingSourceError as exc:  # Prometheus unreachable: the CronJob retries
            print(f"predictor train: {exc}", file=sys.stderr)
            return 1
        print(result.summary())
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
