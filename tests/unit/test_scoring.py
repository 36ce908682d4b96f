"""build_scorer: the newest usable artifact seeds the forecast scorer; a refused one is logged with its reason and
never stops the daemon; without one the scorer is untrained; "trend" stays selectable."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictor.config import Config, parse_config
from predictor.detectors.forecast import DampedTrendForecaster
from predictor.detectors.forest import RolloutIsolationForest, feature_names
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.models import save_artifact
from predictor.scoring import MODEL_NAME, build_scorer

CREATED = 1_767_268_800.0
METRICS = ["error_ratio", "latency_p99", "memory_limit_ratio", "cpu_limit_ratio", "restarts_5m"]


def config(models: Path | None, interval: str = "15s") -> Config:
    raw: dict[str, Any] = {"targets": [{"namespace": "shop"}], "policy": {"interval": interval}}
    if models is not None:
        raw["models"] = {"dir": str(models)}
    return parse_config(raw)


def write_artifact(models: Path, *, created: float = CREATED, step: float = 15.0,
                   metrics: list[str] | None = None) -> Path:
    metrics = metrics or METRICS
    t = np.arange(80, dtype=float)
    forecasters = {m: DampedTrendForecaster.from_params(alpha=0.3 + 0.1 * i, beta=0.05, phi=0.96, sigma=0.01,
                                                        step_seconds=step)
                   for i, m in enumerate(metrics)}
    rows = np.column_stack([np.sin(t * (k + 1) / 7.0) for k in range(3 * len(metrics))])
    forest = RolloutIsolationForest(metrics, n_estimators=10, random_state=7).fit(rows)
    return save_artifact(models, MODEL_NAME, {**forecasters, "forest": forest}, {
        "training_window": {"start": created - 86400.0, "end": created},
        "feature_names": feature_names(metrics),
        "config": {"step_seconds": step},
    }, created=created)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_without_a_models_dir_the_scorer_is_untrained(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config(None))
    assert artifact is None and isinstance(scorer, ForecastScorer)
    assert scorer.forecasters == {} and scorer.forest is None and scorer.step_seconds == 15.0
    assert warnings_of(caplog) == [] and "no models.dir" in caplog.text


def test_the_trend_scorer_stays_selectable_and_unknown_names_are_refused(tmp_path: Path) -> None:
    write_artifact(tmp_path)
    scorer, artifact = build_scorer(config(tmp_path), scorer="trend")
    assert isinstance(scorer, ThresholdTrendScorer) and artifact is None
    with pytest.raises(ValueError, match="scorer: expected one of forecast, trend, got 'magic'"):
        build_scorer(config(tmp_path), scorer="magic")


def test_an_empty_models_dir_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config(tmp_path / "absent"))
    assert artifact is None and isinstance(scorer, ForecastScorer) and scorer.forest is None
    assert any("no model artifact under" in m and "untrained" in m for m in warnings_of(caplog))


def test_the_newest_valid_artifact_seeds_the_scorer(tmp_path: Path) -> None:
    write_artifact(tmp_path, created=CREATED)
    newest = write_artifact(tmp_path, created=CREATED + 60)
    scorer, artifact = build_scorer(config(tmp_path))
    assert artifact is not None and artifact.path == newest
    assert isinstance(scorer, ForecastScorer) and set(scorer.forecasters) == set(METRICS)
    assert scorer.forest is not None and list(scorer.forest.metrics) == METRICS


def test_an_artifact_for_another_tick_is_refused_and_an_older_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = write_artifact(tmp_path, created=CREATED)
    newest = write_artifact(tmp_path, created=CREATED + 60, step=30.0)
    with caplog.at_level(logging.WARNING, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config(tmp_path))
    assert artifact is not None and artifact.path == older
    assert isinstance(scorer, ForecastScorer) and scorer.forest is not None
    [refusal] = warnings_of(caplog)
    assert str(newest) in refusal and "trained for a 30s tick, policy.interval is 15s" in refusal


def test_an_artifact_trained_on_other_metrics_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_artifact(tmp_path, metrics=["error_ratio", "queue_depth"])
    with caplog.at_level(logging.WARNING, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config(tmp_path))
    assert artifact is None and isinstance(scorer, ForecastScorer) and scorer.forest is None
    refusals = warnings_of(caplog)
    assert "isolation forest was trained on metrics ['error_ratio', 'queue_depth']" in refusals[0]
    assert "1 version(s) refused" in refusals[1] and "untrained" in refusals[1]


@pytest.mark.parametrize("damage", ["metadata", "libraries", "object"])
def test_a_damaged_artifact_is_refused_with_the_reason(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_artifact(tmp_path)
    metadata = json.loads((path / "metadata.json").read_text())
    if damage == "metadata":
        (path / "metadata.json").write_text("{not json")
        expected = "metadata.json: unreadable"
    elif damage == "libraries":
        metadata["libraries"]["scikit-learn"] = "0.1.0"
        (path / "metadata.json").write_text(json.dumps(metadata))
        expected = "saved with scikit-learn 0.1.0"
    else:
        target = path / metadata["objects"]["error_ratio"]["file"]
        target.write_text(target.read_text().replace('"alpha": 0.', '"alpha": 1.', 1))
        expected = f"{target.name} checksum mismatch"
    with caplog.at_level(logging.WARNING, logger="predictor.scoring"):
        scorer, artifact = build_scorer(config(tmp_path))
    assert artifact is None and isinstance(scorer, ForecastScorer) and scorer.forecasters == {}
    assert any(expected in m for m in warnings_of(caplog)), warnings_of(caplog)


def test_a_given_logger_receives_the_refusals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_artifact(tmp_path, step=30.0)
    with caplog.at_level(logging.WARNING, logger="daemon"):
        build_scorer(config(tmp_path), log=logging.getLogger("daemon"))
    assert {r.name for r in caplog.records if r.levelno == logging.WARNING} == {"daemon"}
