"""The streaming anomaly detector on the Numenta Anomaly Benchmark (NAB) folder, scored with the NAB rules.

Runs `predictor.nab.run_nab` over DATA (default `../shared/data/nab`, relative to the project root), then the
clean-room scorer (default `../shared/tools/nab_score.py`), and prints the normalised score of the three
profiles (standard, reward_low_FP_rate, reward_low_FN_rate), the standard score per category and the wall time
of the detector run. Run from the project root:

    python benchmarks/run_nab.py [DATA] [--out DIR] [--workers 2] [--scorer PATH] [--json FILE] [--params JSON]

Without --out the scored CSVs go to a temporary folder, removed afterwards. docs/NAB.md has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from predictor.nab import run_nab  # noqa: E402

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def score(data: Path, results: Path, scorer: Path, json_path: Path) -> dict:
    cmd = [
        sys.executable, str(scorer), "--data", str(data), "--results", str(results),
        "--profile", "all", "--per-category", "--strict", "--json", str(json_path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "nab"))
    ap.add_argument("--out", help="keep the scored CSVs here (default: a temporary folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scorer", default=str(ROOT.parent / "shared" / "tools" / "nab_score.py"))
    ap.add_argument("--json", help="also write the scorer's numbers and the timing to this file")
    ap.add_argument(
        "--params", type=json.loads, default=None,
        help='detector parameters as a JSON object, e.g. \'{"alarm_refractory": 0}\' (default: the defaults)',
    )  # fmt: skip
    args = ap.parse_args(argv)

    data, scorer = Path(args.data).resolve(), Path(args.scorer).resolve()
    with tempfile.TemporaryDirectory(prefix="nab-") as tmp:
        out = Path(args.out).resolve() if args.out else Path(tmp) / "results"
        start = time.perf_counter()
        written = run_nab(data, out, workers=args.workers, params=args.params)
        wall = time.perf_counter() - start
        report = score(data, out, scorer, Path(tmp) / "scores.json")

    rows = sum(1 for _ in _rows(data))
    print(f"detector: {len(written)} files, {rows} rows in {wall:.1f} s wall with {args.workers} worker(s) "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})")  # fmt: skip
    print(f"{'profile':<20} {'threshold':>9} {'score':>7} {'windows hit':>12} {'FP rows':>8}")
    for name in PROFILES:
        prof = report["profiles"][name]
        print(f"{name:<20} {prof['threshold']:>9.4f} {prof['normalized']:>7.2f} "
              f"{prof['windows_hit']:>6}/{prof['windows']:<5} {prof['fp_rows']:>8}")  # fmt: skip
    print("standard profile by category (at the corpus threshold):")
    for cat, numbers in sorted(report["profiles"]["standard"]["per_category"].items()):
        norm = numbers["normalized"]
        shown = "n/a (no windows)" if norm is None or norm != norm else f"{norm:.2f}"
        print(f"  {cat:<24} {shown:>16}  hit {numbers['windows_hit']}/{numbers['windows']}, "
              f"FP rows {numbers['fp_rows']}")  # fmt: skip
    if args.json:
        summary = {
            "wall_seconds": wall,
            "workers": args.workers,
            "params": args.params,
            "files": len(written),
            "rows": rows,
            "profiles": {name: report["profiles"][name]["normalized"] for name in PROFILES},
            "standard_per_category": {
                cat: numbers["normalized"]
                for cat, numbers in report["profiles"]["standard"]["per_category"].items()
            },
        }
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


def _rows(data: Path):
    from predictor.nab import find_nab_files

    for path in find_nab_files(data):
        with open(path) as fh:
            next(fh, None)
            yield from (line for line in fh if line.strip())


if __name__ == "__main__":
    raise SystemExit(main())
