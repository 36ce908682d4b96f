"""Project-level checks: the README's two commands, the CI script, and the import layers."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    demo, tests = readme_commands()
    assert demo.rstrip().endswith("predictor demo")
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests, ".ci/run must run the README's second command verbatim"


def test_the_demo_command_runs_the_installed_entry_point() -> None:
    exe = Path(sys.executable).parent / "predictor"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "predictor.cli"]
    result = subprocess.run([*command, "demo", "--speed", "0"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "what predictor did:" in result.stdout
    assert "(correct: the release is healthy)" in result.stdout


def test_import_layers_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
