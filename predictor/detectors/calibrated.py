"""The streaming detector with level shifts handled as such: after a persistent shift it re-baselines.

`StreamingAnomalyDetector` compares each time scale's mean with the median of the `baseline_window` values
before it. After a step that persists, that median needs half the window to cross over, and until then the
level statistics keep reporting the step: the episode alarms again once the suppression window has passed,
and those inflated values join the statistics' tails, so that later, genuine excursions look ordinary for the
rest of the stream. Here the shift is recognised and the baseline restarts from the new level:

* a sample is *beyond the baseline* when it lies outside the range (above the maximum or below the minimum) of
  the baseline of the longest scale K (the `baseline_window` values that precede the last K);
* when K consecutive samples are beyond it on the same side, the level has shifted: every scale's baseline is
  restarted with the values since the shift began (for scale k, those before its last k values).

No new constant: K is the longest time scale, already the span over which the detector judges a level. Under
exchangeable noise, K = 64 successive values above the maximum of the 250 before them has probability of order
(1/251)^64 for K = 64 (astronomically small): only a real change of level, or a trend steeper than the noise,
does it. A daily cycle does not, as long as the window covers most of the cycle.

Calibration uses the series' *recent* behaviour: each statistic's tail is fitted to its last `MEMORY` values,
four weeks of five-minute samples, instead of the last 20,000 (ten weeks). Four weeks hold several weekly
cycles, so a weekly habit is seen again before it would be judged, and a regime that has ended is forgotten
within a month rather than weighing on the tails for the rest of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from predictor.detectors.streaming import StreamingAnomalyDetector

MEMORY = 4 * 7 * 288
"""Values of history each statistic's tail is calibrated on: four weeks of five-minute samples (8064)."""


class SelfCalibratingDetector(StreamingAnomalyDetector):
    """`StreamingAnomalyDetector` that re-baselines after a persistent level shift and calibrates on the last
    four weeks (module docstring). Same parameters and state, plus the current run of samples beyond the
    baseline and the count of re-baselines; `max_history` defaults to 8064."""

    def __init__(self, *, max_history: int = MEMORY, **params: Any) -> None:
        super().__init__(max_history=max_history, **params)

    def reset(self) -> SelfCalibratingDetector:
        super().reset()
        self.run_side_ = 0  # +1: the current run lies above the baseline's range, -1 below, 0 none
        self.run_length_ = 0
        self.rebaselines_ = 0
        return self

    def _statistics(self, t: float, x: float) -> dict[str, float]:
        longest = max(int(k) for k in self.scales)
        base = self.baselines_[longest]
        ready = len(base.srt) >= min(20, int(self.baseline_window))  # the level statistic's own warm-up
        stats = super()._statistics(t, x)
        side = 0
        if ready:
            side = 1 if x > base.srt[-1] else -1 if x < base.srt[0] else 0
        if side and side == self.run_side_:
            self.run_length_ += 1
        else:
            self.run_side_, self.run_length_ = side, int(side != 0)
        if self.run_length_ >= longest:
            self._rebaseline(self.run_length_)
        return stats

    def _rebaseline(self, since: int) -> None:
        """Restart every scale's baseline with the last `since` values (those before its last k)."""
        vals = list(self.values_)[-since:]
        for k, window in self.baselines_.items():
            window.restart(vals[: max(len(vals) - k, 0)])
        self.run_side_, self.run_length_ = 0, 0
        self.rebaselines_ += 1

    def get_state(self) -> dict[str, Any]:
        out = super().get_state()
        out["state"]["run"] = [self.run_side_, self.run_length_, self.rebaselines_]
        return out

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> SelfCalibratingDetector:
        det = super().from_state(data)
        assert isinstance(det, SelfCalibratingDetector)
        try:
            det.run_side_, det.run_length_, det.rebaselines_ = (int(v) for v in data["state"]["run"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"detector state: bad or missing field ({exc!r})") from exc
        return det
