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
