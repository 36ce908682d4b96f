"""Pieces of the decisions benchmark that decide figures: the frozen plan, the shards, the Kayenta-like judge."""

from __future__ import annotations

import numpy as np

from benchmarks.decisions import WINDOW_START, kayenta_worse, plan, shard
from benchmarks.split import FAMILIES, SPLITS


def test_the_test_plan_is_the_frozen_one_and_shards_share_a_rate_window() -> None:
    planned = plan(SPLITS["test"], list(FAMILIES), WINDOW_START)
    again = plan(SPLITS["test"], list(FAMILIES), WINDOW_START)
    assert planned == again and len(planned) == len(FAMILIES) * SPLITS["test"].count
    assert {p.kind for p in planned} == set(FAMILIES)
    dev = plan(SPLITS["dev"], list(FAMILIES), WINDOW_START)
    assert not {p.seed for p in dev} & {p.seed for p in planned}
    groups = shard(planned, None, per_shard=10)
    assert sorted(p.number for _, group in groups for p in group) == list(range(len(planned)))
    for window, group in groups:
        assert len(group) <= 10 and {p.rollout().rate_window for p in group} == {window}
    assert {window for window, _ in shard(planned, "2m", per_shard=500)} == {"2m"}


def test_the_kayenta_like_judge_needs_confidence_and_an_effect_beyond_tolerance() -> None:
    rng = np.random.default_rng(3)
    old = list(rng.normal(0.2, 0.01, 40))
    assert kayenta_worse(list(rng.normal(0.4, 0.01, 20)), old)  # far worse, confidently
    assert not kayenta_worse(list(rng.normal(0.22, 0.01, 20)), old)  # confidently worse, but within 25 %
    assert not kayenta_worse(list(rng.normal(0.2, 0.01, 20)), old)
    assert not kayenta_worse([0.9, 0.9], old)  # too few samples to judge
    assert kayenta_worse([2.0, 3.0, 2.0, 4.0], [0.0] * 20)  # restarts of new pods the old ones do not show


def test_the_protocol_counts_slow_abrupt_healthy_and_quiet_releases_apart() -> None:
    from benchmarks.decisions import DETECTORS, Outcome, protocol_rows

    def outcome(number: int, kind: str, breach_after: float | None, acted_after: float | None) -> Outcome:
        start = 1000.0
        result = Outcome(number, kind, f"ns-{number}", "web", start, start + 3600)
        result.breach = None if breach_after is None else start + breach_after
        result.acted = {d: None for d in DETECTORS}
        result.acted["predictor"] = None if acted_after is None else start + acted_after
        return result

    outcomes = [
        outcome(0, "memory_leak", 1200.0, 600.0),  # slow, 10 minutes ahead
        outcome(1, "late_leak", 1800.0, 1800.0),  # slow, acted at the breach: a miss
        outcome(2, "error_regression", 120.0, 60.0),  # abrupt, ahead
        outcome(3, "mild_regression", None, 300.0),  # never breached: counted apart
        outcome(4, "healthy_warmup", None, 90.0),  # a false action
        outcome(5, "healthy_seasonal", 600.0, None),
    ]
    row = next(r for r in protocol_rows(outcomes) if r[0] == "predictor")
    assert row[1:] == ["1/2 (50.0%)", "5m00s", "1/1 (100.0%)", "2/3 (66.7%)", "1m00s", "1/2 (50.0%)",
                       "1/1 (100.0%)"]
