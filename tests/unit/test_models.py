"""Model artifacts on disk: what metadata.json records, checksums before unpickling, library versions, and picking
the newest valid version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictor import models
from predictor.detectors.forecast import DampedTrendForecaster
from predictor.detectors.forest import RolloutIsolationForest, feature_names
from predictor.detectors.season import SeasonalProfile
from predictor.models import ArtifactError, list_versions, load_artifact, newest_valid_artifact, save_artifact

METRICS = ["error_ratio"]
CREATED = 1_767_268_800.0
META: dict[str, Any] = {
    "training_window": {"start": CREATED - 86400.0, "end": CREATED},
    "feature_names": feature_names(METRICS),
    "thresholds": {"forest_verdict": 0.99},
    "validation": {"calibration_alarm_share": 0.01},
    "config": {"step_seconds": 15.0},
    "data_summary": {"rows": 200},
}


@pytest.fixture(scope="module")
def objects() -> dict[str, Any]:
    rng = np.random.default_rng(21)
    y = 0.5 + 0.001 * np.arange(60) + rng.normal(0, 0.01, 60)
    rows = np.column_stack([rng.normal(0.004, 0.001, 120), rng.normal(0, 0.001, 120), rng.normal(0, 0.001, 120)])
    return {
        "error_ratio": DampedTrendForecaster().fit(y),
        "shop/checkout:error_ratio": DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96),
        "forest": RolloutIsolationForest(METRICS, n_estimators=10, random_state=21).fit(rows),
        "notes": {"trained_by": "test"},
    }


def test_metadata_records_what_the_brief_asks(objects: dict[str, Any], tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "rollout-risk", objects, META, created=CREATED)
    assert path == tmp_path / "rollout-risk" / "20260101T120000Z"
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["version"] == "20260101T120000Z" and metadata["created"] == "2026-01-01T12:00:00Z"
    assert metadata["training_window"] == META["training_window"]
    for key in ("feature_names", "thresholds", "validation", "config", "data_summary"):
        assert metadata[key] == META[key]
    assert set(metadata["libraries"]) >= {"python", "numpy", "scikit-learn", "statsmodels"}
    entries = metadata["objects"]
    assert entries["error_ratio"]["kind"] == "forecaster" and entries["forest"]["kind"] == "joblib"
    assert all(len(e["sha256"]) == 64 for e in entries.values())
    assert not list(tmp_path.glob("rollout-risk/.*")), "no staging directory left behind"


def test_round_trip_scores_identically(objects: dict[str, Any], tmp_path: Path) -> None:
    artifact = load_artifact(save_artifact(tmp_path, "rollout-risk", objects, META, created=CREATED))
    assert artifact.objects["notes"] == {"trained_by": "test"}
    forecaster, loaded = objects["error_ratio"], artifact.forecasters()["error_ratio"]
    assert loaded.get_state() == forecaster.get_state()
    np.testing.assert_array_equal(loaded.forecast(30)[1], forecaster.forecast(30)[1])
    rows = np.array([[0.004, 0.0, 0.0], [0.05, 0.04, 0.01]])
    forest = artifact.forest()
    assert forest is not None
    np.testing.assert_array_equal(forest.score(rows), objects["forest"].score(rows))
    assert set(artifact.scorer_kwargs()["forecasters"]) == {"error_ratio", "shop/checkout:error_ratio"}


def test_a_seasonal_profile_round_trips_under_its_own_key_and_a_damaged_one_is_refused(
    objects: dict[str, Any], tmp_path: Path
) -> None:
    times = CREATED + np.arange(0.0, 3 * 86400.0, 300.0)
    season = SeasonalProfile().fit(times, np.sin(2 * np.pi * times / 86400.0))
    saved = {**objects, models.SEASON_PREFIX + "shop/checkout:error_ratio": season}
    artifact = load_artifact(save_artifact(tmp_path, "rollout-risk", saved, META, created=CREATED))
    loaded = artifact.scorer_kwargs()["seasons"]
    assert set(loaded) == {"shop/checkout:error_ratio"}  # the key the scorer looks up, next to the forecaster's
    assert set(artifact.forecasters()) == {"error_ratio", "shop/checkout:error_ratio"}
    grid = CREATED + np.arange(0.0, 86400.0, 77.0)
    np.testing.assert_array_equal(loaded["shop/checkout:error_ratio"].offsets(grid), season.offsets(grid))
    path = artifact.path
    metadata = json.loads((path / "metadata.json").read_text())
    entry = metadata["objects"][models.SEASON_PREFIX + "shop/checkout:error_ratio"]
    state = json.loads((path / entry["file"]).read_text())
    state["fitted"]["profile"] = state["fitted"]["profile"][:10]
    (path / entry["file"]).write_text(json.dumps(state))
    entry["sha256"] = models._sha256(path / entry["file"])  # a consistent but wrong file: only the content tells
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="profile has 10 phases, the period has 96"):
        load_artifact(path)


def test_a_second_save_in_the_same_second_gets_its_own_version(objects: dict[str, Any], tmp_path: Path) -> None:
    first = save_artifact(tmp_path, "m", {"f": objects["error_ratio"]}, META, created=CREATED)
    second = save_artifact(tmp_path, "m", {"f": objects["error_ratio"]}, META, created=CREATED)
    assert second.name == first.name + "-2"
    assert list_versions(tmp_path, "m") == [second, first]


def test_corrupted_pickle_is_refused_before_it_is_unpickled(objects: dict[str, Any], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_artifact(tmp_path, "m", objects, META, created=CREATED)
    pickle = next(path.glob("*.joblib"))
    pickle.write_bytes(pickle.read_bytes()[:-10] + b"tampered!!")
    calls: list[Path] = []
    monkeypatch.setattr(models.joblib, "load", lambda p: calls.append(p))
    with pytest.raises(ArtifactError, match=rf"{pickle.name} checksum mismatch: metadata says sha256 [0-9a-f]{{64}}"):
        load_artifact(path)
    assert calls == []


def test_a_missing_file_or_metadata_is_named(objects: dict[str, Any], tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "m", objects, META, created=CREATED)
    victim = next(path.glob("*forest*"))
    victim.unlink()
    with pytest.raises(ArtifactError, match=rf"{victim.name} \(object 'forest'\) is missing"):
        load_artifact(path)
    (path / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match=r"no metadata\.json"):
        load_artifact(path)


def test_library_mismatch_says_which_library_and_versions(objects: dict[str, Any], tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "m", objects, META, created=CREATED)
    metadata = json.loads((path / "metadata.json").read_text())
    current = metadata["libraries"]["scikit-learn"]
    metadata["libraries"]["scikit-learn"] = "0.24.2"
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=rf"saved with scikit-learn 0.24.2, this process has {current}"):
        load_artifact(path)


def test_json_only_artifacts_do_not_depend_on_pickle_libraries(objects: dict[str, Any], tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "m", {"error_ratio": objects["error_ratio"]}, META, created=CREATED)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["libraries"]["scikit-learn"] = "0.24.2"
    (path / "metadata.json").write_text(json.dumps(metadata))
    assert load_artifact(path).forecasters()["error_ratio"].get_state() == objects["error_ratio"].get_state()


def test_expectations_and_feature_names_are_checked(objects: dict[str, Any], tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "m", objects, META, created=CREATED)
    with pytest.raises(ArtifactError, match=r"metadata feature_names is \['error_ratio:value'.*expected \['x'\]"):
        load_artifact(path, expect={"feature_names": ["x"]})
    wrong = save_artifact(tmp_path, "w", objects, {**META, "feature_names": ["other:value"]}, created=CREATED)
    with pytest.raises(ArtifactError, match="object 'forest' was fitted on features"):
        load_artifact(wrong)


def test_newest_valid_artifact_skips_broken_versions_and_says_why(objects: dict[str, Any], tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    assert newest_valid_artifact(tmp_path, "m") is None
    good = save_artifact(tmp_path, "m", objects, META, created=CREATED)
    newest = save_artifact(tmp_path, "m", objects, META, created=CREATED + 3600)
    next(newest.glob("*.json")).write_text("{}")
    (tmp_path / "m" / "not-a-version").mkdir()
    with caplog.at_level(logging.WARNING, logger="predictor.models"):
        artifact = newest_valid_artifact(tmp_path, "m")
    assert artifact is not None and artifact.path == good
    assert any("skipping model artifact" in r.message and "checksum mismatch" in r.message for r in caplog.records)


def test_save_validates_its_arguments(objects: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata: missing training_window"):
        save_artifact(tmp_path, "m", objects, {"feature_names": []})
    with pytest.raises(ValueError, match="unknown key"):
        save_artifact(tmp_path, "m", objects, {**META, "colour": "blue"})
    with pytest.raises(ValueError, match="name: expected"):
        save_artifact(tmp_path, "Bad Name", objects, META)
    with pytest.raises(ValueError, match="training_window"):
        save_artifact(tmp_path, "m", objects, {"training_window": {"start": 2.0, "end": 1.0}})
    assert not (tmp_path / "m").exists() or list_versions(tmp_path, "m") == []
