"""The retraining job's seasonal profiles, fitted on three days of history in a real Prometheus.

`shop/web` follows a daily cycle through a rollout (its pods change names half-way); `shop/web-api`, whose pods'
names start like web's, is flat noise at a far higher level and must neither leak into web's profile nor get one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from predictor.config import Config, MetricSpec, parse_config
from predictor.domain import DeploymentRef
from predictor.sources.prometheus import PrometheusMetricSource
from predictor.train import TrainSettings, fit_seasons
from tests.fixtures.prometheus import PrometheusServer, key

DAY = 86400.0
STEP = 60
END = int(time.time() // 7200 * 7200) - 7200
START = END - int(3 * DAY)
WEB, API = DeploymentRef("shop", "web"), DeploymentRef("shop", "web-api")


def daily(t: float) -> float:
    return 40.0 + 15.0 * math.sin(2 * math.pi * (t % DAY) / DAY)


def history() -> dict[str, list[tuple[float, float]]]:
    rng = np.random.default_rng(5)
    series: dict[str, list[tuple[float, float]]] = {}
    switch = START + 1.5 * DAY
    for t in range(START, END, STEP):
        pods = ["web-6f7d9c-a1b2c", "web-6f7d9c-d3e4f"] if t < switch else ["web-84b5d7-g5h6i", "web-84b5d7-j7k8l"]
        for pod in pods:
            series.setdefault(key("queue_depth", namespace="shop", pod=pod), []).append(
                (float(t), daily(t) + float(rng.normal(0.0, 2.0))))
        series.setdefault(key("queue_depth", namespace="shop", pod="web-api-5c8d2f-x9y8z"), []).append(
            (float(t), 500.0 + float(rng.normal(0.0, 2.0))))
    return series


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    server = start_prometheus(history())
    yield server
    server.stop()


def config(prom: PrometheusServer) -> Config:
    return parse_config({
        "prometheus": {"url": prom.url},
        "targets": [{"namespace": "shop"}],
        "metrics": [{"name": "queue", "threshold": 1000,
                     "query": 'max by (namespace, pod) (queue_depth{namespace=~"{namespace}", pod=~"{pods}"})',
                     "aggregate": "mean"}],
    })


def test_a_daily_cycle_through_a_rollout_gets_a_profile_and_flat_noise_does_not(prom: PrometheusServer) -> None:
    cfg = config(prom)
    profiles, skipped = fit_seasons(cfg, PrometheusMetricSource(cfg.prometheus), [WEB, API], START, END,
                                    TrainSettings())
    assert set(profiles) == {"shop/web:queue"}
    web = profiles["shop/web:queue"]
    assert web.amplitude == pytest.approx(30.0, rel=0.15)  # web-api's 500s never counted as web's pods
    assert web.offset(6 * 3600.0) == pytest.approx(15.0, abs=3.0)
    assert skipped["shop/web-api:queue"].startswith("no season: AIC")


def test_a_window_shorter_than_two_days_fits_nothing_and_says_why(prom: PrometheusServer) -> None:
    cfg = config(prom)
    profiles, skipped = fit_seasons(cfg, PrometheusMetricSource(cfg.prometheus), [WEB], END - DAY, END,
                                    TrainSettings())
    assert profiles == {}
    assert skipped == {"*": "the window covers 24.0 h, a 24 h season needs 48 h"}


def test_a_long_window_is_read_in_range_queries_prometheus_accepts_without_gaps_or_overlaps() -> None:
    calls: list[tuple[float, float, float]] = []

    class Recording:
        def fetch_range(self, query: str, start: float, end: float, step: float) -> list[Any]:
            calls.append((start, end, step))
            return []

    cfg = parse_config({"prometheus": {"url": "http://127.0.0.1:9"}, "targets": [{"namespace": "shop"}]})
    settings = TrainSettings()
    profiles, skipped = fit_seasons(cfg, Recording(), [WEB], 0.0, 90 * DAY, settings)
    assert profiles == {} and skipped["shop/web:error_ratio"] == "no samples"
    per_metric = [c for c in calls if c[2] == settings.season_step_seconds]
    assert per_metric == calls
    # the default pack has six templates (the error ratio's query and denominator, four more), each read in 3 parts
    assert len(calls) == 18
    first = calls[:3]
    assert all((end - start) / step + 1 <= 10_000 for start, end, step in calls)
    assert first[0][0] == 0.0 and all(b[0] == a[1] + a[2] for a, b in pairwise(first))
    assert first[-1][1] == 90 * DAY


def test_an_aggregate_query_gets_the_same_profiles(prom: PrometheusServer) -> None:
    per_pod = config(prom)
    aggregate = dataclasses.replace(per_pod, metrics=(MetricSpec(
        name="queue", threshold=1000, query='avg(queue_depth{namespace="{namespace}", pod=~"{pods}"})'),))
    assert aggregate.metrics[0].form == "aggregate"
    expected, _ = fit_seasons(per_pod, PrometheusMetricSource(per_pod.prometheus), [WEB, API], START, END,
                              TrainSettings())
    profiles, skipped = fit_seasons(aggregate, PrometheusMetricSource(aggregate.prometheus), [WEB, API], START, END,
                                    TrainSettings())
    assert set(profiles) == set(expected) == {"shop/web:queue"}
    assert profiles["shop/web:queue"].amplitude == pytest.approx(expected["shop/web:queue"].amplitude, rel=1e-6)
    assert skipped["shop/web-api:queue"].startswith("no season: AIC")
