"""Builds the scorer the engine runs with: the forecast scorer seeded by the newest usable trained artifact under
`models.dir`, the untrained forecast scorer when there is none, or the threshold-and-trend scorer.

Called by the daemon at start and on every `models.reload`, and by `predictor train` to score the model it would
replace. A bad artifact never stops the daemon: it is refused with a WARNING that names the file and what does not
match (checksum, library versions, a tick or metrics other than the config's), and an older version or the
untrained scorer takes its place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from predictor.config import Config, format_time
from predictor.detectors.base import Scorer
from predictor.detectors.forest import feature_names
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.models import Artifact, ArtifactError, list_versions, load_artifact

_LOG = logging.getLogger(__name__)

MODEL_NAME = "rollout-risk"
"""The artifact name `predictor train` writes and the daemon reads: `<models.dir>/rollout-risk/<version>/`."""
SCORERS = ("forecast", "trend")


def build_scorer(
    config: Config, *, scorer: str = "forecast", log: logging.Logger = _LOG
) -> tuple[Scorer, Artifact | None]:
    """The scorer named `scorer` for `config`, and the artifact it was built from (None: untrained).

    "forecast": `ForecastScorer` with the newest artifact under `config.models.dir` that loads and fits the config,
    else untrained (logged at WARNING with every refusal's reason). "trend": `ThresholdTrendScorer`, which uses no
    trained model. Raises ValueError only for an unknown scorer name, never for a bad artifact.
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer: expected one of {', '.join(SCORERS)}, got {scorer!r}")
    if scorer == "trend":
        if config.models.dir is not None:
            log.info("scorer 'trend' uses no trained model: models.dir %s is not read", config.models.dir)
        return ThresholdTrendScorer(), None
    untrained = ForecastScorer(step_seconds=config.policy.interval_seconds)
    if config.models.dir is None:
        log.info("no models.dir configured: scoring with the untrained forecast scorer")
        return untrained, None
    found = newest_usable_artifact(config.models.dir, config, log=log)
    if found is None:
        return untrained, None
    artifact, trained = found
    return trained, artifact


def newest_usable_artifact(
    models_dir: str | Path, config: Config, *, log: logging.Logger = _LOG
) -> tuple[Artifact, ForecastScorer] | None:
    """The newest version of `MODEL_NAME` that loads (checksums, library versions), fits `config` and builds a
    `ForecastScorer`, with that scorer. Each refused version is logged at WARNING with the reason; when none is
    usable, one more WARNING says the untrained scorer is used. Never raises."""
    try:
        versions = list_versions(models_dir, MODEL_NAME)
    except OSError as exc:
        log.warning("cannot list model artifacts under %s: %s; scoring with the untrained forecast scorer",
                    Path(models_dir) / MODEL_NAME, exc.strerror or exc)
        return None
    refused = 0
    for path in versions:
        try:
            artifact = load_artifact(path)
            problem = compatibility_problem(artifact, config)
            if problem is not None:
                raise ArtifactError(f"{path}: {problem}")
            scorer = ForecastScorer(step_seconds=config.policy.interval_seconds, **artifact.scorer_kwargs())
        except ArtifactError as exc:
            refused += 1
            log.warning("refusing model artifact: %s", exc)
            continue
        except Exception as exc:  # an unreadable file, a forecaster the scorer rejects: refuse, never crash
            refused += 1
            log.warning("refusing model artifact: %s: %s: %s", path, type(exc).__name__, exc)
            continue
        window = artifact.metadata.get("training_window", {})
        log.info("using model artifact %s (version %s, trained on %s .. %s)", path, artifact.version,
                 _fmt(window.get("start")), _fmt(window.get("end")))
        return artifact, scorer
    where = Path(models_dir) / MODEL_NAME
    if refused:
        log.warning("no usable model artifact under %s (%d version(s) refused, see above): scoring with the "
                    "untrained forecast scorer", where, refused)
    else:
        log.warning("no model artifact under %s yet (run `predictor train`): scoring with the untrained forecast "
                    "scorer", where)
    return None


def compatibility_problem(artifact: Artifact, config: Config) -> str | None:
    """Why an artifact that loads does not fit `config`, or None. Checked: the tick the forecasters count in, and
    the metrics the isolation forest was trained on (its features are per metric, in config order)."""
    step = config.policy.interval_seconds
    trained = artifact.metadata.get("config")
    trained_step = trained.get("step_seconds") if isinstance(trained, dict) else None
    if isinstance(trained_step, int | float) and float(trained_step) != step:
        return f"trained for a {trained_step:g}s tick, policy.interval is {step:g}s (retrain with this config)"
    for key, forecaster in artifact.forecasters().items():
        if forecaster.step_seconds != step:
            return (f"forecaster {key!r} counts in {forecaster.step_seconds:g}s steps, policy.interval is {step:g}s "
                    f"(retrain with this config)")
    forest = artifact.forest()
    metrics = [spec.name for spec in config.metrics]
    if forest is not None and list(forest.metrics) != metrics:
        return (f"the isolation forest was trained on metrics {list(forest.metrics)}, the config has {metrics} "
                f"(retrain with this config)")
    names = artifact.metadata.get("feature_names")
    if forest is not None and names is not None and list(names) != feature_names(metrics):
        return f"metadata feature_names {names} do not match the config's metrics {metrics}"
    return None


def _fmt(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    return format_time(float(seconds)) or "?"
