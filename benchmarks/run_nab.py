"""The streaming anomaly detector on the Numenta Anomaly Benchmark (NAB) folder, scored with the NAB rules.

Runs `predictor.nab.run_nab` over DATA (default `../shared/data/nab`, relative to the project root), then the
clean-room scorer (default `../shared/tools/nab_score.py`), and prints the normalised score of the three
profiles (standard, reward_low_FP_rate, reward_low_FN_rate), the standard score per category and the wall time
of the detector run. Run from the project root:

    python benchmarks/run_nab.py [DATA] [--out DIR] [--workers 2] [--scorer PATH] [--json FILE] [--params JSON]
                                 [--detector NAME] [--loco] [--grid JSON]

`--loco` adds the strict leave-one-category-out table (docs/NAB.md, "Protocol"): for each category in turn,
everything that is chosen (the alarm threshold, and with `--grid` the detector parameters among the listed
configurations) is chosen on the other categories alone, then applied unchanged to the held-out one. Its mean
over the categories with anomaly windows is the headline next to the all-category score.

Without --out the scored CSVs go to a temporary folder, removed afterwards. docs/NAB.md has the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from predictor.nab import DEFAULT_DETECTOR, DETECTORS, run_nab  # noqa: E402

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def shared_path(*parts: str) -> Path:
    """`shared/<parts>` in the nearest folder above the project root that has it (the checkout's `../shared`,
    or a worktree's `../../shared`); the first candidate when none has it, so the error names a path."""
    for folder in ROOT.parents:
        candidate = folder.joinpath("shared", *parts)
        if candidate.exists():
            return candidate
    return ROOT.parent.joinpath("shared", *parts)


def score(data: Path, results: Path, scorer: Path, json_path: Path) -> dict:
    cmd = [
        sys.executable, str(scorer), "--data", str(data), "--results", str(results),
        "--profile", "all", "--per-category", "--strict", "--json", str(json_path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_path.read_text())


def load_scorer(path: Path) -> ModuleType:
    """The clean-room scorer as a module, so that one load of the scored files serves every split."""
    spec = importlib.util.spec_from_file_location("nab_score", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot load the NAB scorer")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scored(scorer: ModuleType, data: Path, results: Path) -> list[Any]:
    """The scorer's series (data rows, windows and scores) of every labelled file, read from `results`."""
    windows = scorer.load_windows(str(data / "combined_windows.json"))
    keys = scorer.select_keys(windows, None)
    return scorer.load_series(str(data), str(results), windows, keys, None, strict=True)


def leave_one_category_out(scorer: ModuleType, candidates: list[list[Any]], profile: str) -> list[dict[str, Any]]:
    """Strict leave-one-category-out over the scored series of each candidate configuration.

    For each held-out category: the candidate and threshold with the best score on the *other* categories (the
    scorer's optimiser, run on those alone), then that candidate's score on the held-out category at that
    threshold. Nothing about the held-out category is used to choose. One row per category, sorted by name.
    """
    categories = sorted({s.category for s in candidates[0]})
    rows = []
    for held_out in categories:
        best: tuple[float, int, float] | None = None
        for index, series in enumerate(candidates):
            train = [s for s in series if s.category != held_out]
            fitted = scorer.score_profile(train, profile)
            if best is None or fitted["normalized"] > best[0]:
                best = (fitted["normalized"], index, fitted["threshold"])
        assert best is not None
        train_score, index, threshold = best
        test = [s for s in candidates[index] if s.category == held_out]
        result = scorer.score_profile(test, profile, threshold)
        rows.append({
            "category": held_out,
            "candidate": index,
            "threshold": threshold,
            "train_score": train_score,
            "score": result["normalized"],
            "windows": result["windows"],
            "windows_hit": result["windows_hit"],
            "fp_rows": result["fp_rows"],
        })  # fmt: skip
    return rows


def loco_mean(rows: list[dict[str, Any]]) -> float:
    """Mean held-out score over the categories that have windows (one without has no normalised score)."""
    scores = [r["score"] for r in rows if r["windows"] and not math.isnan(r["score"])]
    return sum(scores) / len(scores) if scores else math.nan


def print_loco(rows: list[dict[str, Any]], means: dict[str, float], corpus: float, grid: list[Any] | None) -> None:
    print("strict leave-one-category-out, standard profile (threshold"
          + (" and configuration" if grid else "") + " chosen on the other categories only):")  # fmt: skip
    head = f"  {'held-out category':<24} {'threshold':>9} {'score':>7} {'windows hit':>12} {'FP rows':>8}"
    print(head + ("  configuration" if grid else ""))
    for r in rows:
        shown = "n/a" if not r["windows"] else f"{r['score']:.2f}"
        line = (f"  {r['category']:<24} {r['threshold']:>9.4f} {shown:>7} "
                f"{r['windows_hit']:>6}/{r['windows']:<5} {r['fp_rows']:>8}")  # fmt: skip
        print(line + (f"  {json.dumps(grid[r['candidate']])}" if grid else ""))
    print(f"  {'mean (categories with windows)':<34} {means['standard']:>7.2f}   all-category score {corpus:.2f}")
    others = ", ".join(f"{p} {means[p]:.2f}" for p in PROFILES if p != "standard")
    print(f"  strict leave-one-category-out means of the other profiles: {others}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", default=str(shared_path("data", "nab")))
    ap.add_argument("--out", help="keep the scored CSVs here (default: a temporary folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scorer", default=str(shared_path("tools", "nab_score.py")))
    ap.add_argument("--json", help="also write the scorer's numbers and the timing to this file")
    ap.add_argument(
        "--params", type=json.loads, default=None,
        help='detector parameters as a JSON object, e.g. \'{"alarm_refractory": 0}\' (default: the defaults)',
    )  # fmt: skip
    ap.add_argument("--detector", choices=sorted(DETECTORS), default=DEFAULT_DETECTOR,
                    help=f"which streaming detector (default {DEFAULT_DETECTOR})")  # fmt: skip
    ap.add_argument("--loco", action="store_true", help="also print the strict leave-one-category-out table")
    ap.add_argument(
        "--grid", type=json.loads, default=None,
        help="with --loco: a JSON list of parameter objects; each held-out category gets the one that scores "
             "best on the other categories (the all-category figures are those of --params)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.grid is not None and (not args.loco or not isinstance(args.grid, list) or not args.grid):
        ap.error("--grid needs --loco and a non-empty JSON list of parameter objects")

    data, scorer = Path(args.data).resolve(), Path(args.scorer).resolve()
    with tempfile.TemporaryDirectory(prefix="nab-") as tmp:
        out = Path(args.out).resolve() if args.out else Path(tmp) / "results"
        start = time.perf_counter()
        written = run_nab(data, out, workers=args.workers, params=args.params, detector=args.detector)
        wall = time.perf_counter() - start
        report = score(data, out, scorer, Path(tmp) / "scores.json")
        loco: dict[str, list[dict[str, Any]]] = {}
        if args.loco:
            module = load_scorer(scorer)
            candidates = [load_scored(module, data, out)]
            for i, params in enumerate(args.grid or []):
                grid_out = Path(tmp) / f"grid-{i}"
                run_nab(data, grid_out, workers=args.workers, params=params, detector=args.detector)
                candidates.append(load_scored(module, data, grid_out))
            if args.grid:
                candidates = candidates[1:]  # with a grid, choose among the grid's configurations only
            loco = {p: leave_one_category_out(module, candidates, p) for p in PROFILES}

    rows = sum(1 for _ in _rows(data))
    print(f"detector {args.detector}: {len(written)} files, {rows} rows in {wall:.1f} s wall with {args.workers} "
          f"worker(s) ({os.cpu_count()} CPUs, Python {platform.python_version()})")  # fmt: skip
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
    means = {p: loco_mean(r) for p, r in loco.items()}
    if loco:
        print_loco(loco["standard"], means, report["profiles"]["standard"]["normalized"], args.grid)
    if args.json:
        summary = {
            "detector": args.detector,
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
        if loco:
            summary["loco"] = {"grid": args.grid, "means": means, "rows": loco}
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
