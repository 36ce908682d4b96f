"""`predictor train` on a real Prometheus holding a simulated cluster's history.

Backfilled from `predictor.scenarios.scenario_series` (kube-state-metrics with the revision annotation, cAdvisor and
app series every 15 s), plus the daemon's own `predictor_rollout_risk` gauge:
- namespace `shop`: nine Deployments roll out 30 s apart. `checkout`'s release is an error regression that the
  daemon undid 150 s in: its risk gauge reached 0.95 and kube-state-metrics shows the rollback. The gauge of the
  eight healthy releases stays at 0.05.
- namespace `lab`: eight healthy releases, the first six through a regime in which every metric oscillates (±50 %
  over 10 minutes), the last two (the validation slice) very noisy. A model fitted there chases trends that are
  not there, so it validates worse than the model trained on `shop`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictor.config import Config, aggregate_metric_pack, format_time, parse_config
from predictor.detectors.base import Scorer
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.domain import Assessment, DeploymentRef
from predictor.features import MetricHistory
from predictor.models import list_versions, load_artifact
from predictor.rollouts.replay import KubeStateMetricsRolloutSource
from predictor.scenarios import ScenarioRollout, scenario_series, series_key
from predictor.scoring import MODEL_NAME, build_scorer
from predictor.simulate import SimulatedRollout
from predictor.sources.prometheus import PrometheusMetricSource
from predictor.train import TrainingError, TrainResult, collect, train, worse_than
from tests.fixtures.prometheus import PrometheusServer, history_start

B = history_start()
STEP = 15
FROM = B + 660
"""The window starts after the data's first 10 minutes: a backfill starts with every Deployment 'just completed'."""
STARTS = [B + 720 + k * 30 for k in range(9)]
UNDONE = STARTS[2] + 150
END = B + 2040
"""The last rollout completes at STARTS[-1] + 420 s and bakes 10 minutes."""
GAUGE_KEY = "predictor_rollout_risk"


@dataclasses.dataclass
class Oscillating(ScenarioRollout):
    """Every pod's metrics swing by ±`amplitude` of their baseline over `period_seconds`."""

    amplitude: float = 0.5
    period_seconds: float = 600.0

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        if metric == "restarts_5m":
            return value
        swing = self.amplitude * getattr(self.baseline, metric) * math.sin(2 * math.pi * t / self.period_seconds)
        return max(0.0, value + swing)


@dataclasses.dataclass
class Noisy(ScenarioRollout):
    """Every pod's metrics get extra white noise of `noise` times their baseline."""

    noise: float = 0.5

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        if metric == "restarts_5m":
            return value
        rng = np.random.default_rng([self.seed, pod, int(t), 7])
        return max(0.0, value + self.noise * getattr(self.baseline, metric) * float(rng.normal()))


def shop_rollouts() -> list[ScenarioRollout]:
    found = []
    for k, start in enumerate(STARTS):
        if k == 2:
            found.append(ScenarioRollout(DeploymentRef("shop", "checkout"), "error_regression", float(start),
                                         seed=100 + k, undone_at=float(UNDONE)))
        else:
            found.append(ScenarioRollout(DeploymentRef("shop", f"app{k}"), "healthy", float(start), seed=100 + k))
    return found


def lab_rollouts() -> list[ScenarioRollout]:
    return [(Oscillating if k < 6 else Noisy)(DeploymentRef("lab", f"svc{k}"), "healthy", float(start), seed=200 + k)
            for k, start in enumerate(STARTS[:8])]


def risk_gauges(rollouts: list[ScenarioRollout]) -> dict[str, list[tuple[float, float]]]:
    """The daemon's gauge as Prometheus scraped it: 0.95 on the two ticks before the undo of `checkout`."""
    series = {}
    for rollout in rollouts:
        start = int(rollout.start)
        if rollout.undone_at is not None:
            points = [(float(t), 0.95 if t >= rollout.undone_at - 30 else 0.1)
                      for t in range(start, int(rollout.undone_at), STEP)]
            points += [(float(t), 0.05) for t in range(int(rollout.undone_at), start + 900, STEP)]
        else:
            points = [(float(t), 0.05) for t in range(start, start + 1000, STEP)]
        series[series_key(GAUGE_KEY, namespace=rollout.ref.namespace, deployment=rollout.ref.name,
                          metric="error_ratio")] = points
    return series


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    shop = shop_rollouts()
    series = scenario_series([*shop, *lab_rollouts()], float(B), float(END))
    series.update(risk_gauges(shop))
    server = start_prometheus(series)
    yield server
    server.stop()


def config_for(prom: PrometheusServer, namespace: str, models: Path | None = None) -> Config:
    raw: dict[str, Any] = {"prometheus": {"url": prom.url}, "targets": [{"namespace": namespace}],
                           "policy": {"action": "undo"}}
    if models is not None:
        raw["models"] = {"dir": str(models)}
    return parse_config(raw)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def first(prom: PrometheusServer, out_dir: Path) -> TrainResult:
    return train(config_for(prom, "shop"), start=float(FROM), end=float(END), out_dir=out_dir, now=float(END + 3600))


@pytest.fixture(scope="module")
def second(prom: PrometheusServer, out_dir: Path, first: TrainResult) -> TrainResult:
    return train(config_for(prom, "lab"), start=float(FROM), end=float(END), out_dir=out_dir, now=float(END + 7200))


# The artifact --------------------------------------------------------------------------------------------------------
@pytest.mark.prometheus
def test_the_first_training_writes_an_artifact_with_the_metadata_the_brief_asks(first: TrainResult) -> None:
    assert first.promoted and first.artifact is not None, first.summary()
    assert first.current_model == "untrained"
    metadata = json.loads((first.artifact / "metadata.json").read_text())
    assert metadata["version"] == first.artifact.name and metadata["created"] == format_time(END + 3600)
    assert metadata["training_window"] == {"start": float(FROM), "end": float(END)}
    assert metadata["feature_names"][:3] == ["error_ratio:value", "error_ratio:delta", "error_ratio:rate"]
    assert metadata["thresholds"]["risk_threshold"] == 0.7 and 0.9 < metadata["thresholds"]["forest_verdict"] < 1
    validation = metadata["validation"]
    assert validation["candidate"]["ticks"] > 100 and validation["candidate"]["false_actions"] == 0
    assert validation["current"]["model"] == "untrained" and "worse" in validation["promotion_rule"]
    assert set(metadata["libraries"]) >= {"python", "numpy", "scikit-learn", "statsmodels", "joblib"}
    assert metadata["config"]["step_seconds"] == 15.0 and len(metadata["config"]["metrics"]) == 5
    assert set(metadata["objects"]) == {"error_ratio", "latency_p99", "memory_limit_ratio", "cpu_limit_ratio",
                                        "restarts_5m", "forest"}
    for entry in metadata["objects"].values():
        digest = hashlib.sha256((first.artifact / entry["file"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], entry["file"]
    assert load_artifact(first.artifact).forest() is not None
    # 23 minutes of history hold no day: no seasonal profile, and the summary says why
    assert metadata["data_summary"]["seasons"] == {}
    assert metadata["data_summary"]["no_season"] == {"*": "the window covers 0.4 h, a 24 h season needs 48 h"}
    assert "seasonal profiles: none (none for 1: *: the window covers 0.4 h" in first.summary()


@pytest.mark.prometheus
def test_the_rollout_that_was_acted_on_is_left_out(first: TrainResult) -> None:
    summary = first.data_summary
    left_out = summary["left_out"]
    assert [item["deployment"] for item in left_out] == ["shop/checkout"]
    reasons = " | ".join(left_out[0]["reasons"])
    assert "rollback" in reasons and 'predictor_rollout_risk{metric="error_ratio"} 0.95 >= 0.7' in reasons
    assert left_out[0]["revisions"] == [2, 3]
    used = set(summary["training"]["deployments"]) | set(summary["validation"]["deployments"])
    assert used == {f"shop/app{k}" for k in range(9) if k != 2}
    assert summary["training"]["rollouts"] == 6 and summary["validation"]["rollouts"] == 2
    assert min(summary["training"]["samples"].values()) >= 240
    # the artifact's metadata carries the same summary
    assert first.artifact is not None
    metadata = json.loads((first.artifact / "metadata.json").read_text())
    assert metadata["data_summary"]["left_out"] == left_out


# Reloaded by the daemon's scorer factory --------------------------------------------------------------------------
def drive(sim: SimulatedRollout, scorer: Scorer, config: Config) -> list[list[Assessment]]:
    history = MetricHistory(config.policy.lookback_seconds)
    run = []
    for i in range(40):
        t = sim.start + i * STEP
        state = sim.state(t)
        for spec in config.metrics:
            history.add(state.revision, sim.observations(spec.name, t))
        run.append([scorer.assess(state, spec, history, t, config.policy.horizon_seconds) for spec in config.metrics])
    return run


@pytest.mark.prometheus
def test_build_scorer_loads_the_artifact_and_scores_exactly_as_the_trained_models(
    first: TrainResult, prom: PrometheusServer, out_dir: Path
) -> None:
    config = config_for(prom, "shop", models=out_dir)
    scorer, artifact = build_scorer(config)
    assert artifact is not None and first.artifact is not None and artifact.path == first.artifact
    assert isinstance(scorer, ForecastScorer) and scorer.forest is not None
    objects = dict(first.model_objects)
    forest = objects.pop("forest")
    for kind, seed in (("memory_leak", 3), ("healthy", 4), ("error_regression", 5)):
        sim = SimulatedRollout(DeploymentRef("shop", "app1"), kind, float(END), seed=seed)
        reloaded = drive(sim, build_scorer(config)[0], config)
        assert reloaded == drive(sim, ForecastScorer(step_seconds=STEP, forecasters=objects, forest=forest), config)
        assert reloaded != drive(sim, ForecastScorer(step_seconds=STEP), config), "the artifact changes the scores"


# Promotion ---------------------------------------------------------------------------------------------------------
@pytest.mark.prometheus
def test_a_model_that_validates_worse_than_the_current_one_is_not_promoted(
    first: TrainResult, second: TrainResult, out_dir: Path
) -> None:
    assert not second.promoted and second.artifact is None, second.summary()
    assert first.artifact is not None and second.current_model == str(first.artifact)
    assert list_versions(out_dir, MODEL_NAME) == [first.artifact], "nothing written"
    assert "forecast error" in second.reason and "worse than the current model" in second.reason
    assert second.figures["forecast_error"] > 1.1 * second.current_figures["forecast_error"]
    assert second.figures["ticks"] == second.current_figures["ticks"] > 0, "the same validation slice"
    assert "not promoted" in second.summary()


def test_the_promotion_rule() -> None:
    current = {"false_actions": 1, "false_alarm_rate": 0.02, "forecast_error": 0.10}
    assert worse_than(current, current) == []
    assert worse_than({**current, "false_alarm_rate": 0.029, "forecast_error": 0.109}, current) == []
    assert "acted on 2" in worse_than({**current, "false_actions": 2}, current)[0]
    assert "false-alarm rate" in worse_than({**current, "false_alarm_rate": 0.031}, current)[0]
    assert "forecast error 0.1110 > 1.1 x 0.1000" in worse_than({**current, "forecast_error": 0.111}, current)[0]


# A corrupted artifact --------------------------------------------------------------------------------------------
@pytest.mark.prometheus
def test_a_corrupted_artifact_is_refused_and_scoring_falls_back_to_untrained(
    first: TrainResult, prom: PrometheusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert first.artifact is not None
    copy = tmp_path / MODEL_NAME / first.artifact.name
    shutil.copytree(first.artifact, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    target = copy / metadata["objects"]["forest"]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config_for(prom, "shop", models=tmp_path))
    assert artifact is None
    assert isinstance(scorer, ForecastScorer) and scorer.forecasters == {} and scorer.forest is None
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(target.name in m and "checksum mismatch" in m for m in refusals), refusals
    assert any("scoring with the untrained forecast scorer" in m for m in refusals), refusals


# Data -----------------------------------------------------------------------------------------------------------------
@pytest.mark.prometheus
def test_range_queries_give_the_observations_the_live_instant_queries_give(prom: PrometheusServer) -> None:
    """Around the bad rollout (new and old pods, then the undo): what training pulls with one range query per
    metric equals what `PrometheusMetricSource.fetch` answers tick by tick."""
    config = config_for(prom, "shop")
    source = PrometheusMetricSource(config.prometheus)
    rollouts = KubeStateMetricsRolloutSource(config.prometheus, config.targets)
    collected = collect(config, start=float(STARTS[2] + 60), end=float(UNDONE + 45), source=source,
                        rollouts=rollouts)
    assert len(collected.states) >= 9
    checked = 0
    for i, states in collected.states.items():
        watched = list(states.values())
        for spec in config.metrics:
            live = source.fetch(spec, watched, collected.times[i])
            assert live == collected.observations[i][spec.name], (spec.name, format_time(collected.times[i]))
            checked += sum(1 for o in live if o.known)
    assert checked > 100


@pytest.mark.prometheus
def test_aggregate_queries_range_queries_give_what_the_live_instant_queries_give(prom: PrometheusServer) -> None:
    """The same for the pack in the aggregate form: a range query per batch of scopes, each rollout state's scopes
    at each tick equal to the live per-scope instant queries, and to the per-pod form's values."""
    per_pod = config_for(prom, "shop")
    config = dataclasses.replace(per_pod, metrics=aggregate_metric_pack())
    source = PrometheusMetricSource(config.prometheus)
    rollouts = KubeStateMetricsRolloutSource(config.prometheus, config.targets)
    collected = collect(config, start=float(STARTS[2] + 60), end=float(UNDONE + 45), source=source,
                        rollouts=rollouts)
    assert len(collected.states) >= 9
    checked = 0
    for i, states in collected.states.items():
        watched = list(states.values())
        for spec, pod_spec in zip(config.metrics, per_pod.metrics, strict=True):
            live = source.fetch(spec, watched, collected.times[i])
            assert [(o.ref, o.scope, o.value) for o in live] == [
                (o.ref, o.scope, o.value) for o in collected.observations[i][spec.name]], spec.name
            per_pod_values = [o.value for o in source.fetch(pod_spec, watched, collected.times[i])]
            for got, want in zip([o.value for o in live], per_pod_values, strict=True):
                assert (got is None) == (want is None), spec.name
                assert got is None or got == pytest.approx(want, rel=1e-9, abs=1e-12), spec.name
            checked += sum(1 for o in live if o.known)
    assert checked > 100


@pytest.mark.prometheus
def test_too_little_data_names_what_is_missing(prom: PrometheusServer, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"training window .*: \d+ samples of error_ratio, .* need >= 240"):
        train(config_for(prom, "shop"), start=float(STARTS[0] - 30), end=float(STARTS[0] + 180), out_dir=tmp_path,
              now=float(END))
    assert not list(tmp_path.iterdir())


def test_a_window_that_ends_before_it_starts_is_refused(tmp_path: Path) -> None:
    config = parse_config({"targets": [{"namespace": "shop"}]})
    with pytest.raises(TrainingError, match="expected --from before --to"):
        train(config, start=float(END), end=float(END - 60), out_dir=tmp_path, now=float(END))

