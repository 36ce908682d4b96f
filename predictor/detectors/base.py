"""The scorer interface the policy consumes: one Assessment per rollout and metric, pure and clock-free."""

from __future__ import annotations

from typing import Protocol

from predictor.config import MetricSpec
from predictor.domain import Assessment, RolloutState
from predictor.features import MetricHistory


class Scorer(Protocol):
    def assess(
        self, rollout: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon_seconds: float
    ) -> Assessment:
        """Risk (0..1) that `spec` breaches its threshold within the horizon because of this rollout."""
        ...
