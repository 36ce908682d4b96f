"""Run the streaming anomaly detector over a Numenta Anomaly Benchmark (NAB) style folder.

`run_nab(data_dir, out_dir)` finds every `CATEGORY/NAME.csv` (columns `timestamp,value`) under `data_dir`,
runs one fresh streaming detector (`DETECTORS`, by default the self-calibrating one) per file in row order
(the stream order), and writes `out_dir/CATEGORY/NAME.csv` with the columns `timestamp,value,anomaly_score`;
the timestamp and value fields are copied verbatim. Row i's score depends on rows 0..i only. Files are spread
over `workers` processes. docs/NAB.md has the scores on NAB and the commands that produce them.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from predictor.detectors.calibrated import SelfCalibratingDetector
from predictor.detectors.streaming import StreamingAnomalyDetector

HEADER = ("timestamp", "value", "anomaly_score")

DETECTORS: dict[str, type[Any]] = {"ensemble": StreamingAnomalyDetector, "calibrated": SelfCalibratingDetector}
"""The streaming detectors `run_nab` can run, by name (docs/NAB.md compares them)."""
DEFAULT_DETECTOR = "calibrated"


class NabInputError(ValueError):
    """A NAB folder or file that cannot be scored: the message names the folder, or the file and its line."""


def find_nab_files(data_dir: Path) -> list[Path]:
    """The `CATEGORY/NAME.csv` files one level below `data_dir`, sorted; anything else is skipped. Raises
    NabInputError when `data_dir` is not a folder or holds no such file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NabInputError(f"{data_dir}: {'not a folder' if data_dir.exists() else 'no such folder'}")
    files = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += sorted(p for p in category.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise NabInputError(f"{data_dir}: no CATEGORY/NAME.csv file (expected NAB's data folder, with one folder "
                            "per category such as realKnownCause/)")
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


def read_rows(src: Path) -> list[tuple[str, str, float, float]]:
    """(timestamp text, value text, seconds, value) per data row of a `timestamp,value` CSV, in file order.

    An empty value is a missing sample (NaN). Raises NabInputError naming the file and the line of the first row
    that is not one: a missing column, a timestamp or a value that does not parse, bytes that are not UTF-8.
    """
    reader = csv.reader(io.StringIO(_read_text(src), newline=""), strict=True)
    try:
        it, iv = _columns(src, next(reader, []))
        return [_parse_row(row, it, iv, f"{src}:{reader.line_num}") for row in reader if row]
    except csv.Error as exc:
        raise NabInputError(f"{src}:{reader.line_num}: not CSV: {exc}") from None


def check_header(src: Path) -> None:
    """Raise NabInputError unless `src` is UTF-8 CSV with the columns timestamp and value."""
    try:
        _columns(src, next(csv.reader(io.StringIO(_read_text(src), newline=""), strict=True), []))
    except csv.Error as exc:
        raise NabInputError(f"{src}:1: not CSV: {exc}") from None


def _read_text(src: Path) -> str:
    data = src.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise NabInputError(f"{src}:{line}: expected UTF-8 text, got {data[exc.start:exc.end]!r} at byte offset "
                            f"{exc.start}") from None


def _columns(src: Path, header: list[str]) -> tuple[int, int]:
    """The positions of the timestamp and value columns in a header row. Raises NabInputError."""
    names = [h.strip() for h in header]
    if "timestamp" not in names or "value" not in names:
        raise NabInputError(f"{src}:1: expected the columns timestamp,value, got {','.join(names)!r}")
    return names.index("timestamp"), names.index("value")


def _parse_row(row: list[str], it: int, iv: int, where: str) -> tuple[str, str, float, float]:
    if len(row) <= max(it, iv):
        raise NabInputError(f"{where}: expected the fields timestamp,value, got {','.join(row)!r}")
    stamp, text = row[it], row[iv]
    seconds = parse_timestamp(stamp)
    if seconds is None:
        raise NabInputError(f"{where}: expected a timestamp such as '2014-04-01 00:00:00', got {stamp!r}")
    if not text.strip():
        return stamp, text, seconds, math.nan
    try:
        value = float(text)
    except ValueError:
        raise NabInputError(f"{where}: expected a number in the value column, got {text!r}") from None
    return stamp, text, seconds, value


def score_file(
    src: Path, dst: Path, params: Mapping[str, Any] | None = None, detector_name: str = DEFAULT_DETECTOR
) -> Path:
    """Score one `timestamp,value` CSV into `dst` (`timestamp,value,anomaly_score`). Raises NabInputError."""
    rows = read_rows(src)
    detector = DETECTORS[detector_name](**dict(params or {}))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        for stamp, text, seconds, value in rows:
            score = detector.update(seconds, value)
            writer.writerow((stamp, text, repr(float(score))))
    os.replace(tmp, dst)
    return dst


def _score_job(job: tuple[str, str, dict[str, Any] | None, str]) -> str:
    src, dst, params, detector = job
    return str(score_file(Path(src), Path(dst), params, detector))


def run_nab(
    data_dir: Path,
    out_dir: Path,
    *,
    workers: int = 2,
    params: Mapping[str, Any] | None = None,
    detector: str = DEFAULT_DETECTOR,
) -> list[Path]:
    """Score every `CATEGORY/NAME.csv` under `data_dir` into `out_dir/CATEGORY/NAME.csv`; returns the paths
    written, in the order of `find_nab_files`. `detector` names one of `DETECTORS`, `params` are passed to it.
    Raises NabInputError on a missing or empty folder, or a malformed file (a bad header before anything is
    scored)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (known: {', '.join(sorted(DETECTORS))})")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = find_nab_files(data_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise NabInputError(f"{out_dir}: the output folder is the data folder (the scores would overwrite the data)")
    for src in files:  # a folder of other CSVs stops at once; a bad row stops the run when its file is read
        check_header(src)
    jobs = [
        (str(src), str(out_dir / src.parent.name / src.name), None if params is None else dict(params), detector)
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
