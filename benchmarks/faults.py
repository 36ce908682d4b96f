"""Run the fault-injection suite (`tests/faults/`) and print its results table; writes
`benchmarks/results/faults.md`.

    .venv/bin/python benchmarks/faults.py

Each scenario of the suite appends one row (see `tests/faults/harness.py: record`): the faults injected, the
actions expected, taken, duplicated and lost, the alerts expected, delivered (notified firing, then resolved,
by a real Alertmanager to its webhook receiver) and lost. Every figure is counted by the test that ran: PATCHes
the fake API server applied, Events it stores, notifications the webhook received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "faults.md"
COLUMNS = ("scenario", "faults", "actions_expected", "actions_taken", "actions_duplicated", "actions_lost",
           "alerts_expected", "alerts_delivered", "alerts_lost", "notes")
HEADERS = ("scenario", "faults injected", "actions expected", "taken", "duplicated", "lost", "alerts expected",
           "delivered", "lost", "measured")


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in COLUMNS) + " |")
    totals = {c: sum(int(r[c]) for r in rows) for c in COLUMNS[2:9]}  # type: ignore[call-overload]
    lines.append("| **total** | | " + " | ".join(str(totals[c]) for c in COLUMNS[2:9]) + " | |")
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        rows_file = Path(scratch) / "rows.jsonl"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PREDICTOR_FAULTS_TABLE": str(rows_file)},
                              check=False)
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    text = (f"# Fault-injection suite\n\n`.venv/bin/python benchmarks/faults.py` (pytest exit code "
            f"{done.returncode}; {len(rows)} scenarios)\n\n{table(rows)}\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
