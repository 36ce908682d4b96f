"""A seasonal profile (a day by default) of one metric of one Deployment, fitted offline where the history covers
the season, used live to keep a daily rise from reading as a release's trend.

`fit` bins the history into `bin_seconds` means, fits statsmodels' Holt-Winters ETS(A,Ad,A) (additive errors, a
damped trend, an additive season of `period_seconds / bin_seconds` phases) and the same model without the season,
ETS(A,Ad,N). The season is kept (`significant_`) only when it lowers the AIC once its heuristic initial seasonal
states count as parameters too (P - 1 more than the plain model). The profile is the fitted model's last seasonal
state of each phase, centred on zero; phases are anchored to the Unix epoch, so `offset(t)` needs no reference
time, and it is interpolated linearly between bin centres.

Live, the scorer subtracts `offset(t)` from each sample before its damped-trend forecaster and local trend see it
(the season is then no trend), and adds back the highest offset the horizon reaches (`worst_offset`): the season's
next rise is expected, as a level, never extrapolated. Together that is a seasonal ETS whose season is
re-estimated by the retraining job rather than on each sample: a season changes over weeks, a rollout over minutes.
New pods and old pods compared at the same moment need no season at all: it cancels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from predictor.domain import Direction

STATE_FORMAT = 1
"""Version of the dict written by `get_state`; `from_state` refuses other versions."""


class SeasonalProfile:
    """An additive seasonal profile fitted by Holt-Winters ETS(A,Ad,A) on binned history.

    Parameters: `period_seconds` (the season; a day), `bin_seconds` (the resolution of the profile; it must divide
    the period), `min_cycles` (how many whole seasons the history must cover; statsmodels' heuristic start needs
    2), `max_missing` (the share of bins that may be empty: scrape gaps, an outage; they are interpolated).
    """

    def __init__(self, *, period_seconds: float = 86400.0, bin_seconds: float = 900.0, min_cycles: int = 2,
                 max_missing: float = 0.1) -> None:
        self.period_seconds = float(period_seconds)
        self.bin_seconds = float(bin_seconds)
        self.min_cycles = min_cycles
        self.max_missing = max_missing

    def check_params(self) -> None:
        if not (self.bin_seconds > 0 and math.isfinite(self.bin_seconds)):
            raise ValueError(f"bin_seconds: expected a positive number of seconds, got {self.bin_seconds!r}")
        phases = self.period_seconds / self.bin_seconds
        if not (math.isfinite(phases) and phases >= 4 and abs(phases - round(phases)) < 1e-9):
            raise ValueError(f"period_seconds: expected a whole multiple (>= 4) of bin_seconds "
                             f"{self.bin_seconds:g}, got {self.period_seconds!r}")
        if not (isinstance(self.min_cycles, int) and self.min_cycles >= 2):
            raise ValueError(f"min_cycles: expected an integer >= 2, got {self.min_cycles!r}")
        if not 0.0 <= self.max_missing < 1.0:
            raise ValueError(f"max_missing: expected 0..1, got {self.max_missing!r}")

    @property
    def phases(self) -> int:
        return round(self.period_seconds / self.bin_seconds)

    # Fitting ------------------------------------------------------------------------------------------------
    def fit(self, times: Sequence[float] | np.ndarray, values: Sequence[float | None] | np.ndarray) -> Self:
        """Fit on samples at `times` (seconds; NaN/None unknown). Raises ValueError when the history covers fewer
        than `min_cycles` seasons or too many bins are empty; the message says how much it covers."""
        self.check_params()
        stamps = np.asarray(times, dtype=float)
        data = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        if stamps.shape != data.shape:
            raise ValueError(f"times: expected {data.size} times like values, got {stamps.size}")
        known = np.isfinite(data) & np.isfinite(stamps)
        if not known.any():
            raise ValueError("values: no known sample")
        stamps, data = stamps[known], data[known]
        index = np.floor(stamps / self.bin_seconds).astype(np.int64)
        first, last = int(index.min()), int(index.max())
        count = last - first + 1
        need = self.min_cycles * self.phases
        if count < need:
            raise ValueError(f"history covers {count * self.bin_seconds / 3600:.1f} h, a season of "
                             f"{self.period_seconds / 3600:g} h needs {self.min_cycles} whole cycles "
                             f"({need * self.bin_seconds / 3600:g} h)")
        sums = np.bincount(index - first, weights=data, minlength=count)
        counts = np.bincount(index - first, minlength=count)
        filled = counts > 0
        missing = 1.0 - float(filled.mean())
        if missing > self.max_missing:
            raise ValueError(f"history: {missing:.0%} of its {self.bin_seconds / 60:g}-minute bins have no sample, "
                             f"at most {self.max_missing:.0%} may be missing")
        binned = np.full(count, np.nan)
        binned[filled] = sums[filled] / counts[filled]
        slots = np.arange(count)
        binned = np.interp(slots, slots[filled], binned[filled])
        self._estimate(binned, first)
        self.n_bins_ = count
        self.start_ = first * self.bin_seconds
        self.end_ = (last + 1) * self.bin_seconds
        return self

    def _estimate(self, binned: np.ndarray, first_bin: int) -> None:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        phases = self.phases
        spread = float(np.ptp(binned))
        if spread == 0.0:  # a constant series: no season, and nothing for the optimiser to do
            self.profile_ = np.zeros(phases)
            self.aic_seasonal_ = self.aic_plain_ = 0.0
            self.sigma_ = 0.0
            self.significant_ = False
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the AIC comparison judges the outcome
            seasonal = ETSModel(binned, error="add", trend="add", damped_trend=True, seasonal="add",
                                seasonal_periods=phases, initialization_method="heuristic").fit(disp=False)
            plain = ETSModel(binned, error="add", trend="add", damped_trend=True).fit(disp=False)
        states = np.asarray(seasonal.states, dtype=float)
        last = states[-phases:, -1]
        bins = np.arange(first_bin + binned.size - phases, first_bin + binned.size)
        profile = np.empty(phases)
        profile[bins % phases] = last
        self.profile_ = profile - profile.mean()
        # the heuristic start estimates P initial seasonal states (P - 1 free) that the AIC does not count
        self.aic_seasonal_ = float(seasonal.aic) + 2.0 * (phases - 1)
        self.aic_plain_ = float(plain.aic)
        self.sigma_ = math.sqrt(max(float(seasonal.mse), 0.0))
        self.significant_ = bool(self.aic_seasonal_ < self.aic_plain_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "profile_"):
            raise RuntimeError("SeasonalProfile is not fitted: call fit() or from_state()")

    # Using it -----------------------------------------------------------------------------------------------
    @property
    def amplitude(self) -> float:
        """Peak-to-trough height of the profile."""
        self._check_fitted()
        return float(np.ptp(self.profile_))

    def offset(self, t: float) -> float:
        """The season's share of the value at time `t` (seconds), interpolated between bin centres. The scalar twin
        of `offsets`, for the scorer's per-sample path, where numpy's per-call cost would dominate."""
        self._check_fitted()
        position = t / self.bin_seconds - 0.5
        below = math.floor(position)
        frac = position - below
        profile, phases = self.profile_, self.phases
        return float((1.0 - frac) * profile[below % phases] + frac * profile[(below + 1) % phases])

    def offsets(self, times: np.ndarray) -> np.ndarray:
        """`offset` at each of `times`."""
        self._check_fitted()
        position = np.asarray(times, dtype=float) / self.bin_seconds - 0.5
        below = np.floor(position)
        frac = position - below
        index = below.astype(np.int64) % self.phases
        return (1.0 - frac) * self.profile_[index] + frac * self.profile_[(index + 1) % self.phases]

    def worst_offset(self, start: float, end: float, direction: Direction) -> float:
        """The offset furthest toward the bad side between `start` and `end` (the ends and every bin centre
        between them: the interpolated profile is piecewise linear, so its extremes lie there)."""
        points = [start, end]
        centre = (math.floor(start / self.bin_seconds - 0.5) + 1.5) * self.bin_seconds
        while centre < end and len(points) < self.phases + 2:
            points.append(centre)
            centre += self.bin_seconds
        offsets = self.offsets(np.asarray(points))
        return float(offsets.max() if direction is Direction.ABOVE else offsets.min())

    # Persistence --------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Parameters and the fitted profile as plain JSON-able data (exact floats)."""
        self._check_fitted()
        return {
            "format": STATE_FORMAT,
            "class": type(self).__name__,
            "params": {"period_seconds": self.period_seconds, "bin_seconds": self.bin_seconds,
                       "min_cycles": self.min_cycles, "max_missing": self.max_missing},
            "fitted": {"profile": [float(v) for v in self.profile_], "aic_seasonal": self.aic_seasonal_,
                       "aic_plain": self.aic_plain_, "sigma": self.sigma_, "significant": self.significant_,
                       "n_bins": self.n_bins_, "start": self.start_, "end": self.end_},
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> SeasonalProfile:
        """Rebuild exactly what `get_state` wrote. Raises ValueError naming the first missing or bad field."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"season state: expected format {STATE_FORMAT}, got {data.get('format')!r}")
        if data.get("class") != cls.__name__:
            raise ValueError(f"season state: expected class {cls.__name__}, got {data.get('class')!r}")
        try:
            profile = cls(**dict(data["params"]))
            profile.check_params()
            fitted = data["fitted"]
            values = np.asarray([float(v) for v in fitted["profile"]])
            if values.size != profile.phases:
                raise ValueError(f"season state: profile has {values.size} phases, the period has {profile.phases}")
            if not np.all(np.isfinite(values)):
                raise ValueError("season state: profile is not finite")
            profile.profile_ = values
            profile.aic_seasonal_ = float(fitted["aic_seasonal"])
            profile.aic_plain_ = float(fitted["aic_plain"])
            profile.sigma_ = float(fitted["sigma"])
            profile.significant_ = bool(fitted["significant"])
            profile.n_bins_ = int(fitted["n_bins"])
            profile.start_ = float(fitted["start"])
            profile.end_ = float(fitted["end"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"season state: missing or malformed field {exc}") from exc
        return profile

    def __repr__(self) -> str:
        if not hasattr(self, "profile_"):
            return f"SeasonalProfile(period={self.period_seconds:g}s, bin={self.bin_seconds:g}s, unfitted)"
        return (f"SeasonalProfile(period={self.period_seconds:g}s, bin={self.bin_seconds:g}s, amplitude="
                f"{self.amplitude:.4g}, significant={self.significant_})")
