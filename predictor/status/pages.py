"""Server-rendered HTML pages: the list of watched rollouts and one page per rollout with a chart per metric and
the decision text under it. No script, no front-end build; the same pages are written as static files by the
reports (`predictor.status.report`), so every link is relative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from predictor.config import format_duration, format_time
from predictor.status.api import page_path
from predictor.status.board import DecisionEntry, RolloutRecord
from predictor.status.charts import metric_chart

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #ddd; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.phase-acted, .action-undo, .action-pause { color: #b00; font-weight: bold; }
.phase-at_risk { color: #c60; font-weight: bold; }
.reason { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; margin: 4px 0 18px; }
.metric { margin-bottom: 10px; }
h2 { margin-top: 1.6em; }
.muted { color: #777; }
"""


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def _time(seconds: float | None) -> str:
    return escape(format_time(seconds) or "-")


def _short(text: str, limit: int = 180) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def default_page_href(record: RolloutRecord) -> str:
    """The rollout page's link from the daemon's `/`."""
    return page_path(record.ref.namespace, record.ref.name)


def _last_action(record: RolloutRecord) -> DecisionEntry | None:
    acted = record.actions
    return acted[-1] if acted else (record.decisions[-1] if record.decisions else None)


def index_page(records: Sequence[RolloutRecord], *, page_href: Callable[[RolloutRecord], str] = default_page_href,
               title: str = "predictor: watched rollouts", extra_columns: Sequence[tuple[str, Callable[
                   [RolloutRecord], str]]] = ()) -> str:
    """The list: one row per rollout, linking to its page. `extra_columns` (heading, cell text) serve reports."""
    head = "".join(f"<th>{escape(h)}</th>" for h in (
        "namespace", "deployment", "revision", "phase", "progress", "risk", "metric", "last action",
        *(h for h, _ in extra_columns), "reason"))
    rows = []
    for record in records:
        action = _last_action(record)
        action_text = (f'<span class="action-{action.action.value}">{action.action.value}</span> at '
                       f"{_time(action.time)}" if action else '<span class="muted">none</span>')
        extra = "".join(f"<td>{escape(cell(record))}</td>" for _, cell in extra_columns)
        rows.append(
            f'<tr class="rollout"><td>{escape(record.ref.namespace)}</td>'
            f'<td><a href="{escape(page_href(record))}">{escape(record.ref.name)}</a></td>'
            f'<td class="num">{record.revision}</td><td class="phase-{escape(record.phase)}">{escape(record.phase)}'
            f'{"" if record.watched else " (no longer watched)"}</td>'
            f'<td class="num">{record.state.updated_replicas}/{record.state.desired_replicas}</td>'
            f'<td class="num">{record.risk:.2f}</td><td>{escape(record.metric or "-")}</td><td>{action_text}</td>'
            f'{extra}<td class="reason" title="{escape(record.reason)}">{escape(_short(record.reason))}</td></tr>')
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows else
             '<p class="muted">No rollout watched yet: a Deployment of the targets appears here while it rolls out '
             "and for its bake time after.</p>")
    return _document(title, f"<h1>{escape(title)}</h1>{table}")


def _revision_section(record: RolloutRecord) -> str:
    state = record.state
    lines = [f'<section class="revision" data-revision="{record.revision}">',
             f"<h2>revision {record.revision}: <span class=\"phase-{escape(record.phase)}\">{escape(record.phase)}"
             f"</span>, risk {record.risk:.2f}</h2>",
             f"<p>{state.updated_replicas}/{state.desired_replicas} new pods ({state.ready_new_replicas} ready), "
             f"{state.old_replicas} old; started {_time(state.started_at)}"
             + (f", completed {_time(state.completed_at)}" if state.completed_at else "")
             + (", paused" if state.paused else "") + (", a rollback" if state.is_rollback else "")
             + f"; watched from {_time(record.first_seen)} to {_time(record.last_seen)}</p>"]
    if record.decisions:
        items = "".join(
            f'<li class="decision"><span class="action-{d.action.value}">{d.action.value}'
            f'{" (dry run)" if d.dry_run else ""}</span> at {_time(d.time)} ({escape(d.outcome)}), risk {d.risk:.2f}'
            + (f", breach predicted {_time(d.predicted_breach)}" if d.predicted_breach else "")
            + f'<div class="reason">{escape(d.reason)}</div></li>' for d in record.decisions)
        lines.append(f'<h3>decisions</h3><ul class="decisions">{items}</ul>')
    else:
        lines.append(f'<p class="decision-text">Latest decision: <span class="reason">{escape(record.reason)}'
                     "</span></p>")
    for track in record.metrics.values():
        latest = track.latest
        risk = f"risk {latest.risk:.2f}" if latest is not None else "not assessed yet"
        breach = ""
        if latest is not None and latest.predicted_breach is not None:
            ahead = latest.predicted_breach - record.last_seen
            breach = (f", breach predicted at {_time(latest.predicted_breach)}"
                      + (f" ({format_duration(ahead)} ahead)" if ahead > 0 else ""))
        seen = track.first_breach_seen()
        seen_text = f"; first seen beyond the threshold at {_time(seen)}" if seen is not None else ""
        lines.append(
            f'<div class="metric" data-metric="{escape(track.name)}"><h3>{escape(track.name)} '
            f'<span class="muted">(threshold {track.threshold:g}, {track.direction.value} is bad; {risk}{breach}'
            f"{seen_text})</span></h3>{metric_chart(track, list(record.decisions))}"
            f'<div class="reason assessment">{escape(latest.reason if latest is not None else "")}</div></div>')
    lines.append("</section>")
    return "".join(lines)


def rollout_page(records: Sequence[RolloutRecord], *, index_href: str = "../../") -> str:
    """One Deployment: its newest revision first, then the older ones still on the board (an undone one)."""
    newest = records[0]
    title = f"{newest.ref}: revision {newest.revision}"
    body = (f'<p><a href="{escape(index_href)}">all rollouts</a></p><h1>{escape(str(newest.ref))}</h1>'
            + "".join(_revision_section(record) for record in records))
    return _document(f"predictor: {title}", body)
