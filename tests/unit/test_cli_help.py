"""The command line reads like a tool: `predictor --help` describes it, every command and option says what it is
for, defaults are the documented ones, and bad arguments are one usage error (exit 2), not a traceback."""

from __future__ import annotations

import argparse
import time

import pytest

from predictor.cli import _parser, main, subcommands
from predictor.config import PolicyConfig


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = _parser(time.time())
    return [("predictor", parser), *((f"predictor {name}", sub) for name, sub in subcommands(parser).items())]


def test_every_command_and_option_has_help() -> None:
    found = []
    for name, parser in parsers():
        assert parser.description, f"{name} has no description"
        for action in parser._actions:
            found.append((name, action.dest))
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.option_strings or action.dest}"
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{name} {choice.dest}"
    assert ("predictor check-config", "offline") in found and ("predictor nab", "workers") in found
    assert len(parsers()) == 8


def test_help_describes_the_tool(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: predictor [-h] [--version] COMMAND ...")
    assert "predictor stops bad Kubernetes releases before they hurt users." in out
    assert "Command line" not in out and "No logic here" not in out
    for command in ("run", "check-config", "backtest", "demo", "train", "nab"):
        assert f"\n    {command} " in out or f"\n    {command}\n" in out, command


def test_the_demo_defaults_to_the_documented_policy_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert PolicyConfig().action.value == "pause"
    assert subcommands(_parser())["demo"].parse_args([]).action == "pause"
    assert main(["demo", "--help"]) == 0
    assert "(default pause)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "--config", "c.yaml", "--start", "-1h", "--end", "now", "--step", "-15s", "--output", "o"],
         "argument --step: expected a positive duration, got '-15s'"),
        (["backtest", "--config", "c.yaml", "--start", "-1h", "--end", "now", "--step", "0s", "--output", "o"],
         "argument --step: expected a positive duration, got '0s'"),
        (["backtest", "--config", "c.yaml", "--start", "yesterday", "--end", "now", "--output", "o"],
         "argument --start: expected RFC 3339 time, POSIX seconds, 'now' or '-7d', got 'yesterday'"),
        (["train", "--config", "c.yaml", "--from", "now", "--to", "-7d", "--out", "m"],
         "argument --to: expected start < end: a time after --from"),
        (["demo", "--speed", "-1"], "argument --speed: expected a number of seconds >= 0, got '-1'"),
        (["demo", "--speed", "nan"], "argument --speed: expected a number of seconds >= 0, got 'nan'"),
        (["demo", "--action", "rollback"], "argument --action: invalid choice: 'rollback'"),
        (["deploy"], "argument COMMAND: invalid choice: 'deploy'"),
    ],
)
def test_bad_arguments_are_one_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str],
                                           message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("usage: predictor") and message in err.splitlines()[-1], err
