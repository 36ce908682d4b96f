"""`benchmarks/run_nab.py --loco`: the strict leave-one-category-out table, checked against the scorer run on
each split by hand (the threshold optimised on the other categories, then applied to the held-out one)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"min_history": 20, "baseline_window": 50, "scales": [1, 4], "season_period": 0}
ROWS = 400


def _run_nab_module():
    spec = importlib.util.spec_from_file_location("run_nab", ROOT / "benchmarks" / "run_nab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(data: Path) -> None:
    """Three categories: two with a labelled spike (one file each, plus a spike-free file), one without any."""
    windows: dict[str, list[list[str]]] = {}
    stamps = [str(np.datetime64(1_400_000_000 + 300 * i, "s")).replace("T", " ") for i in range(ROWS)]
    for c, (category, spikes) in enumerate({"catA": (250, 330), "catB": (300,), "quiet": ()}.items()):
        for f, with_spikes in enumerate((True, False)):
            rng = np.random.default_rng(10 * c + f)
            values = 50.0 + rng.normal(0.0, 1.0, ROWS)
            name = f"{category}/{'spiky' if with_spikes else 'plain'}.csv"
            windows[name] = []
            if with_spikes:
                for at in spikes:
                    values[at] += 9.0 + 3.0 * c
                    windows[name].append([stamps[at - 10] + ".000000", stamps[at + 10] + ".000000"])
            path = data / name
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{s},{v:.3f}\n" for s, v in zip(stamps, values, strict=True))
            path.write_text("timestamp,value\n" + lines)
    (data / "combined_windows.json").write_text(json.dumps(windows))


def _scorer(scorer: Path, data: Path, results: Path, *extra: str) -> dict:
    out = results.parent / "check.json"
    cmd = [sys.executable, str(scorer), "--data", str(data), "--results", str(results), "--profile", "standard",
           "--strict", "--json", str(out), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["profiles"]["standard"]


def test_loco_chooses_the_threshold_on_the_other_categories_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run_nab = _run_nab_module()
    scorer = run_nab.shared_path("tools", "nab_score.py")
    data, out, report = tmp_path / "data", tmp_path / "out", tmp_path / "report.json"
    _corpus(data)

    argv = [str(data), "--out", str(out), "--workers", "1", "--scorer", str(scorer), "--loco",
            "--params", json.dumps(SMALL), "--json", str(report)]  # fmt: skip
    assert run_nab.main(argv) == 0
    printed = capsys.readouterr().out
    assert "strict leave-one-category-out" in printed
    loco = json.loads(report.read_text())["loco"]
    rows = {r["category"]: r for r in loco["rows"]["standard"]}
    assert sorted(rows) == ["catA", "catB", "quiet"]

    for category, row in rows.items():
        others = ",".join(c for c in sorted(rows) if c != category)
        fitted = _scorer(scorer, data, out, "--categories", others)
        assert row["threshold"] == pytest.approx(fitted["threshold"])
        held_out = _scorer(scorer, data, out, "--categories", category, "--threshold", repr(row["threshold"]))
        assert row["fp_rows"] == held_out["fp_rows"] and row["windows_hit"] == held_out["windows_hit"]
        if row["windows"]:
            assert row["score"] == pytest.approx(held_out["normalized"])
    with_windows = [rows["catA"]["score"], rows["catB"]["score"]]
    assert loco["means"]["standard"] == pytest.approx(sum(with_windows) / 2)
    assert rows["quiet"]["windows"] == 0  # no windows: only its false positives are reported, not in the mean


def test_loco_with_a_grid_picks_per_held_out_category_the_configuration_best_on_the_others(tmp_path: Path):
    run_nab = _run_nab_module()
    data = tmp_path / "data"
    _corpus(data)
    blind = {**SMALL, "min_history": ROWS, "max_history": ROWS}  # never has enough history: every score is 0
    loco = {}
    for name, extra in {"plain": [], "grid": ["--grid", json.dumps([blind, SMALL])]}.items():
        report = tmp_path / f"{name}.json"
        argv = [str(data), "--workers", "1", "--loco", "--params", json.dumps(SMALL), "--json", str(report),
                *extra]  # fmt: skip
        assert run_nab.main(argv) == 0
        loco[name] = json.loads(report.read_text())["loco"]
    assert loco["grid"]["grid"] == [blind, SMALL]
    assert [r["candidate"] for r in loco["grid"]["rows"]["standard"]] == [1, 1, 1]
    for chosen, plain in zip(loco["grid"]["rows"]["standard"], loco["plain"]["rows"]["standard"], strict=True):
        assert {**chosen, "candidate": 0} == plain
    assert loco["grid"]["means"]["standard"] > 0.0
