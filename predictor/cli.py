"""Command line: parse arguments, load the config, run the start-up checks, call the one function that does the
work. No logic here."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from predictor import __version__
from predictor.config import ConfigError, PolicyConfig, load_config, parse_time, read_duration, url_problem

EXIT_FAILURE = 1
"""The work could not be done (Prometheus unreachable, no data): worth retrying as is."""
EXIT_CONFIG = 2
"""Bad configuration or arguments: retrying will not help."""

DESCRIPTION = """\
predictor stops bad Kubernetes releases before they hurt users. While a Deployment rolls out, it reads the
release's SLO metrics from Prometheus (for the new pods, the old pods and the whole Deployment), predicts whether
and when a threshold will be breached, and acts ahead of the breach: it pauses the rollout or undoes it, records
why on the Deployment and alerts through Alertmanager."""

EPILOG = """\
Start with `predictor demo` (no cluster needed), then `predictor check-config config/predictor.yaml`, whose
comments document every key. Exit status: 0 done, 1 failed in a way worth retrying (e.g. Prometheus unreachable),
2 bad configuration or arguments (every problem is named with its field and value)."""


def _time(now: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return parse_time(text, now)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _positive_duration(text: str) -> float:
    try:
        return read_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def _base_url(text: str) -> str:
    problem = url_problem(text, "/api/v1/rollouts")
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
    return text


def _number(kind: type, low: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= low:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _parser(now: float | None = None) -> argparse.ArgumentParser:
    """The argument parser; relative times ('-6h') are read against `now` (default: the time of the call)."""
    now = time.time() if now is None else now
    parser = argparse.ArgumentParser(prog="predictor", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"predictor {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `predictor COMMAND --help` for its options")

    def command(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}")

    config_help = "the YAML configuration (config/predictor.yaml documents every key)"
    when = "RFC 3339 ('2026-11-20T00:00:00Z'), POSIX seconds, 'now', or a time before now ('-6h', 'now-7d')"
    parse_when = _time(now)

    run = command("run", "watch rollouts and act on predicted SLO breaches",
                  "Checks the configuration, the Kubernetes credentials, the HTTP address and every query against "
                  "Prometheus first: any problem stops it with exit status 2. Serves /healthz, /readyz and "
                  "/metrics; SIGTERM lets the running tick finish.")
    run.add_argument("--config", required=True, type=Path, help=config_help)

    check = command("check-config", "validate a config file and exit",
                    "Checks the file and, on this machine, the kubeconfig it names, that server.host resolves to "
                    "an address here, and that Prometheus accepts every query (if it is reachable). It does not "
                    "bind server.port (the daemon may be running) nor load credentials the file does not name "
                    "(the daemon's pod has its own). Exit status 0 when the file is valid, 2 otherwise.")
    check.add_argument("file", type=Path, help="the YAML configuration to check")
    check.add_argument("--offline", action="store_true",
                       help="check the file only: no Prometheus, no kubeconfig, no DNS")

    backtest = command("backtest", "replay the decision loop over Prometheus history (always dry-run)",
                       "Rollouts come from kube-state-metrics series, metrics from the configured queries, each "
                       "evaluated at the simulated time. Prints how many rollouts it replayed and on how many ticks "
                       "it had data; exit status 1 when it saw none.")
    backtest.add_argument("--config", required=True, type=Path, help=config_help)
    backtest.add_argument("--start", required=True, type=parse_when, help=f"first tick: {when}")
    backtest.add_argument("--end", required=True, type=parse_when, help="last tick, after --start (same forms)")
    backtest.add_argument("--step", default=15.0, type=_positive_duration, metavar="DURATION",
                          help="simulated tick (default 15s)")
    backtest.add_argument("--output", required=True, type=Path,
                          help="where to write the actions, as JSON Lines (one object per action)")
    backtest.add_argument("--report", type=Path, metavar="DIR",
                          help="also write the status pages of every rollout replayed to DIR, with an index.html")

    demo = command("demo", "simulated rollouts through the real decision core; no cluster needed",
                   "Three rollouts (an error regression, a memory leak, a healthy release) on a simulated clock.")
    default_action = PolicyConfig().action.value
    demo.add_argument("--action", choices=["pause", "undo", "alert"], default=default_action,
                      help=f"the most predictor may do, as policy.action (default {default_action})")
    demo.add_argument("--speed", type=_number(float, 0.0, "a number of seconds >= 0"), default=0.04,
                      help="wall seconds per simulated tick (default 0.04; 0: no waiting)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated data (default 7)")
    demo.add_argument("--report", type=Path, metavar="DIR",
                      help="also write the status pages of the demo's rollouts to DIR, with an index.html")

    status = command("status", "the daemon's rollouts as a table, read from its status API",
                     "One line per watched rollout: revision, phase, progress, risk, the metric at risk, the predicted "
                     "breach and the last action (`-o wide`: one line per metric with its values). Exit status 1 when "
                     "the API cannot be read.")
    status.add_argument("--url", default="http://127.0.0.1:8080", type=_base_url,
                        help="the daemon's HTTP address (default http://127.0.0.1:8080, as `kubectl port-forward` "
                        "gives it)")
    status.add_argument("--watch", nargs="?", const=2.0, default=None, type=_positive_duration, metavar="DURATION",
                        help="print again every DURATION (default 2s) until interrupted")
    status.add_argument("-o", "--output", choices=["table", "wide", "json"], default="table",
                        help="table (default), wide (one line per metric) or json (the API's answer)")

    train = command("train", "retrain the models on Prometheus history; promoted only if not worse",
                    "Exit status 1 when Prometheus is unreachable (the CronJob retries), 2 when the data or the "
                    "configuration cannot make a model.")
    train.add_argument("--config", required=True, type=Path, help=config_help)
    train.add_argument("--from", dest="start", required=True, type=parse_when, help=f"start of the history: {when}")
    train.add_argument("--to", dest="end", required=True, type=parse_when, help="end of the history (same forms)")
    train.add_argument("--out", required=True, type=Path, help="models directory (artifacts go to OUT/rollout-risk/)")

    nab = command("nab", "streaming anomaly scores over a Numenta Anomaly Benchmark folder",
                  "Reads DATA/CATEGORY/NAME.csv (columns timestamp,value) and writes OUT/CATEGORY/NAME.csv with an "
                  "anomaly_score column; a malformed file is named with its line (exit status 2).")
    nab.add_argument("--data", required=True, type=Path, help="NAB's data folder (one folder per category)")
    nab.add_argument("--out", required=True, type=Path, help="where to write the scored files (not DATA)")
    nab.add_argument("--workers", type=_number(int, 1, "a whole number >= 1"), default=2,
                     help="processes scoring files in parallel (default 2)")
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


_TIME_OPTIONS = ("--from", "--to", "--start", "--end", "--step")


def _attach_relative_times(argv: Sequence[str]) -> list[str]:
    """`--from -7d` as `--from=-7d`: argparse would take '-7d' for an option (and `--step -15s` for a missing
    value, instead of saying that a step must be positive)."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _TIME_OPTIONS and token.startswith("-"):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    now = time.time()
    parser = _parser(now)
    try:
        args = parser.parse_args(_attach_relative_times(sys.argv[1:] if argv is None else argv))
        if args.command in ("backtest", "train") and args.end <= args.start:
            first, last = ("--start", "--end") if args.command == "backtest" else ("--from", "--to")
            subcommands(parser)[args.command].error(f"argument {last}: expected start < end: a time after {first}")
    except SystemExit as exc:  # argparse's usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_CONFIG
    try:
        return _dispatch(args, now)
    except ConfigError as exc:
        print(f"predictor: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace, now: float) -> int:
    if args.command == "check-config":
        return _check_config(args.file, offline=args.offline)
    if args.command == "demo":
        from predictor.demo import demo_config, run_demo
        from predictor.domain import Action

        logging.basicConfig(level=logging.ERROR)
        run_demo(config=demo_config(Action(args.action)), seed=args.seed, realtime_factor=args.speed,
                 report=args.report)
        return 0
    if args.command == "status":
        from predictor.status.client import StatusError, run_status

        try:
            run_status(args.url, output=args.output, watch_seconds=args.watch)
        except StatusError as exc:
            print(f"predictor status: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            return 0
        return 0
    if args.command == "nab":
        from predictor.nab import NabInputError, run_nab

        try:
            written = run_nab(args.data, args.out, workers=args.workers)
        except NabInputError as exc:
            print(f"predictor nab: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"wrote {len(written)} file(s) under {args.out}")
        return 0

    from predictor import preflight
    from predictor.telemetry import configure_logging

    config = load_config(args.config)
    configure_logging(config.logging.format, config.logging.level)
    if args.command in ("backtest", "train") and (problems := preflight.check_replayable(config, args.command)):
        raise ConfigError(problems, str(args.config))
    if args.command in ("run", "backtest"):
        preflight.log_query_forms(config)
    if args.command == "run":
        from predictor.daemon import build_daemon

        problems = preflight.check_daemon_start(config)
        if problems:
            raise ConfigError(problems, str(args.config))
        build_daemon(config, config_path=args.config).run_until_signalled()
        return 0
    if args.command == "backtest":
        from predictor.backtest import ReplayResult, run_backtest, tick_count, write_actions

        queries = preflight.check_queries(config)
        if queries.problems:
            raise ConfigError(list(queries.problems), str(args.config))
        if queries.unreachable:
            write_actions(args.output, [])
            print(f"predictor backtest: {queries.unreachable}", file=sys.stderr)
            print(ReplayResult([], tick_count(args.start, args.end, args.step), 0, 0).summary(args.output))
            return EXIT_FAILURE
        result = run_backtest(config, start=args.start, end=args.end, step_seconds=args.step, output=args.output,
                              report=args.report)
        print(result.summary(args.output))
        if result.blind:
            print(f"predictor backtest: nothing to replay: {result.first_problem}", file=sys.stderr)
            return EXIT_FAILURE
        return 0
    if args.command == "train":
        from predictor.train import TrainingError, TrainingSourceError, train

        try:
            result = train(config, start=args.start, end=args.end, out_dir=args.out, now=now)
        except TrainingError as exc:
            print(f"predictor train: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except TrainingSourceError as exc:  # Prometheus unreachable: the CronJob retries
            print(f"predictor train: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(result.summary())
        return 0
    raise AssertionError(args.command)


def _check_config(path: Path, *, offline: bool) -> int:
    from predictor import preflight

    config = load_config(path)
    if offline:
        checked = "Prometheus, the kubeconfig and server.host not checked (--offline)"
    else:
        problems = preflight.check_kubernetes(config, named_only=True)
        problems += preflight.check_listen(config, bind_port=False)
        queries = preflight.check_queries(config)
        problems += queries.problems
        if problems:
            raise ConfigError(problems, str(path))
        for warning in queries.warnings:
            print(f"predictor: warning: {warning}", file=sys.stderr)
        checked = (f"queries not checked: {queries.unreachable}" if queries.unreachable else
                   f"Prometheus at {config.prometheus.url} accepts all {queries.accepted} queries")
    policy = config.policy
    targets = len(config.targets) or len(config.swarm_targets)
    print(f"{path}: ok: {targets} target(s), {len(config.metrics)} metric(s), action {policy.action}"
          f"{' (dry run)' if policy.dry_run else ''}; {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
