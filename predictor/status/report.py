"""Reports over history: the status pages written as static files for every rollout a backtest or the demo replayed.

`DIR/index.html` lists every rollout (Deployment and revision) with its actions and their lead before the first
breach seen; `DIR/rollouts/<namespace>/<deployment>-r<revision>.html` is its page, the same one the daemon serves. A
page is written when its record leaves the status board (or at the end), so a replay of a week stays within the
board's caps; the index keeps only a line per rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from predictor.config import format_duration, format_time
from predictor.domain import DeploymentRef
from predictor.status.board import RolloutRecord, StatusBoard
from predictor.status.pages import index_page, rollout_page


@dataclass(frozen=True)
class ReportLine:
    """What the index says of one rollout."""

    ref: DeploymentRef
    revision: int
    href: str
    actions: str
    breach_seen: float | None
    breach_metric: str | None
    lead_seconds: float | None
    """First pause or undo before the first breach seen: how long before (negative: after)."""


def _file_name(record: RolloutRecord) -> str:
    return f"rollouts/{quote(record.ref.namespace, safe='')}/{quote(record.ref.name, safe='')}-r{record.revision}.html"


def report_line(record: RolloutRecord, href: str) -> ReportLine:
    breaches = [(t, name) for name, track in record.metrics.items() if (t := track.first_breach_seen()) is not None]
    breach_seen, breach_metric = min(breaches) if breaches else (None, None)
    acted = record.actions
    lead = breach_seen - acted[0].time if acted and breach_seen is not None else None
    actions = ", ".join(f"{d.action.value}{' (dry run)' if d.dry_run else ''} at {format_time(d.time)}"
                        for d in acted) or "none"
    return ReportLine(record.ref, record.revision, href, actions, breach_seen, breach_metric, lead)


class ReportWriter:
    """Writes each rollout's page as its record leaves the board, and the index at `finish`."""

    def __init__(self, out_dir: Path, title: str) -> None:
        self.out_dir = out_dir
        self.title = title
        self.lines: dict[tuple[DeploymentRef, int], tuple[ReportLine, RolloutRecord]] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, record: RolloutRecord) -> None:
        """Write one rollout's page (the board's `on_evict`)."""
        name = _file_name(record)
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rollout_page([record], index_href="../../index.html"), encoding="utf-8")
        light = replace(record, metrics={})  # the index needs no samples
        self.lines[(record.ref, record.revision)] = (report_line(record, name), light)

    def finish(self, board: StatusBoard) -> Path:
        """Write the pages still on the board and the index; returns the index's path."""
        board.flush()
        ordered = [self.lines[key] for key in sorted(self.lines, key=lambda k: (k[0], k[1]))]
        by_key = {(line.ref, line.revision): line for line, _ in ordered}

        def cell(fn):  # type: ignore[no-untyped-def]
            return lambda record: fn(by_key[(record.ref, record.revision)])

        def lead(line: ReportLine) -> str:
            if line.lead_seconds is None:
                return "-" if line.breach_seen is None else "no action"
            when = format_duration(abs(line.lead_seconds))
            return f"{when} before" if line.lead_seconds >= 0 else f"{when} AFTER"

        columns = [
            ("actions", cell(lambda line: line.actions)),
            ("first breach seen", cell(lambda line: f"{line.breach_metric} at {format_time(line.breach_seen)}"
                                       if line.breach_seen is not None and math.isfinite(line.breach_seen)
                                       else "none")),
            ("lead", cell(lead)),
        ]
        index = index_page([record for _, record in ordered], page_href=lambda r: by_key[(r.ref, r.revision)].href,
                           title=self.title, extra_columns=columns)
        path = self.out_dir / "index.html"
        path.write_text(index, encoding="utf-8")
        return path


def report_board(out_dir: Path, title: str) -> tuple[StatusBoard, ReportWriter]:
    """A status board whose records become report pages as they leave it."""
    writer = ReportWriter(out_dir, title)
    return StatusBoard(on_evict=writer.write), writer
