"""Run the streaming anomaly detector over a Numenta Anomaly Benchmark (NAB) style folder.

`run_nab(data_dir, out_dir)` finds every `CATEGORY/NAME.csv` (columns `timestamp,value`) under `data_dir`,
runs one fresh `StreamingAnomalyDetector` per file in row order (the stream order), and writes
`out_dir/CATEGORY/NAME.csv` with the columns `timestamp,value,anomaly_score`; the timestamp and value fields
are copied verbatim. Row i's score depends on rows 0..i only. Files are spread over `workers` processes.
docs/NAB.md has the scores on NAB and the commands that produce them.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from predictor.detectors.streaming import StreamingAnomalyDetector

HEADER = ("timestamp", "value", "anomaly_score")


def find_nab_files(data_dir: Path) -> list[Path]:
    """The `CATEGORY/NAME.csv` files one level below `data_dir`, sorted; anything else is skipped."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"NAB data folder not found: {data_dir}")
    files = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += sorted(p for p in category.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    return files


def parse_timestamp(text: str) -> float | None:
    """Seconds since the epoch of 'YYYY-MM-DD HH:MM:SS[.ffffff]' or ISO 8601 (naive: UTC), or a number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _parse_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def score_file(src: Path, dst: Path, params: Mapping[str, Any] | None = None) -> Path:
    """Score one `timestamp,value` CSV into `dst` (`timestamp,value,anomaly_score`)."""
    with open(src, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "timestamp" not in header or "value" not in header:
            raise ValueError(f"{src}: expected the columns timestamp,value, got {header}")
        it, iv = header.index("timestamp"), header.index("value")
        rows = [(row[it], row[iv]) for row in reader if row]
    detector = StreamingAnomalyDetector(**dict(params or {}))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        for stamp, value in rows:
            score = detector.update(parse_timestamp(stamp), _parse_value(value))
            writer.writerow((stamp, value, repr(float(score))))
    os.replace(tmp, dst)
    return dst


def _score_job(job: tuple[str, str, dict[str, Any] | None]) -> str:
    src, dst, params = job
    return str(score_file(Path(src), Path(dst), params))


def run_nab(
    data_dir: Path, out_dir: Path, *, workers: int = 2, params: Mapping[str, Any] | None = None
) -> list[Path]:
    """Score every `CATEGORY/NAME.csv` under `data_dir` into `out_dir/CATEGORY/NAME.csv`; returns the paths
    written, in the order of `find_nab_files`. `params` are passed to `StreamingAnomalyDetector`."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = find_nab_files(data_dir)
    jobs = [
        (str(src), str(out_dir / src.parent.name / src.name), None if params is None else dict(params))
        for src in files
    ]
    # longest files first, so that the processes finish together
    order = sorted(range(len(jobs)), key=lambda i: -os.path.getsize(jobs[i][0]))
    workers = max(1, min(int(workers), len(jobs) or 1))
    if workers == 1:
        for i in order:
            _score_job(jobs[i])
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            list(pool.imap_unordered(_score_job, [jobs[i] for i in order], chunksize=1))
    return [Path(job[1]) for job in jobs]
