"""Damped-trend exponential smoothing, ETS(A,Ad,N), with a constant-cost streaming update.

`fit` estimates the parameters (alpha, beta, phi and the residual sigma) with statsmodels' `ETSModel` on a
training series; the live loop then calls `update(t, value)` once per sample, which costs the same whatever the
length of the history (no refit per tick). `ForecastScorer` keeps one forecaster per (rollout, metric, scope);
the retraining job re-estimates the parameters on its schedule and writes them as an artifact (`predictor.models`).

State-space form (Hyndman et al. 2008, ch. 2; statsmodels' ETSModel uses the same, which the tests check):

    y_t = l_{t-1} + phi b_{t-1} + e_t,   l_t = l_{t-1} + phi b_{t-1} + alpha e_t,   b_t = phi b_{t-1} + beta e_t

The h-step forecast is l + b (phi + ... + phi^h) and its variance sigma^2 (1 + sum_{j<h} (alpha + beta phi_j)^2)
with phi_j = phi + ... + phi^j (the closed form of class-1 ETS models). Because the trend is damped, a curve that
rises then flattens (a cache filling up) is not extrapolated linearly: the forecast levels off at
l + b phi / (1 - phi).

Robustness (why the update is not plain ETS; `median_window=1, huber_k=None` gives plain ETS):
1. each value goes through a running median of the last `median_window` known values, so a lone outlier (a
   counter reset, a scrape of a restarting pod) never reaches the state and a real step passes one sample later;
2. a one-step error beyond `huber_k` sigmas moves the state by `huber_k` sigmas only (robust Holt-Winters,
   Gelper, Fried & Croux 2010) unless the last 3 raw values all lie beyond it on the same side (a change);
3. sigma is a running, Huber-clipped estimate, bootstrapped from second differences when not fitted;
4. NaN and None are skipped and leave the state untouched; a gap of k steps is bridged in closed form (k - 1
   forecast steps), so irregular samples cost the same as regular ones.

The season is not in this model: a seasonal ETS with a day-long season at a 15 s step (5,760 seasonal states)
would be neither cheap to fit nor to update. Where the history covers a season, the retraining job fits one on
15-minute bins (`predictor.detectors.season`), and the scorer feeds this forecaster the values net of it. New pods
compared with old pods at the same moment need none: it cancels.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, Self

import numpy as np
from scipy.special import ndtr

from predictor.domain import Direction

STATE_FORMAT = 1
"""Version of the dict written by `get_state`; `from_state` refuses other versions."""

DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = {
    "smoothing_level": (0.3, 0.9),
    "smoothing_trend": (0.05, 0.5),
    "damping_trend": (0.96, 0.98),
}
"""Parameter bounds for the statsmodels fit, chosen for a rollout check with a horizon of minutes:
1. healthy history is mostly flat noise, on which maximum likelihood drives alpha and beta to 0 and phi anywhere;
   a forecaster fitted that way would never follow the regression it is meant to see, hence the lower bounds;
2. with phi below 0.96 per 15 s step a trend adds at most 24 steps' worth to the forecast, so a leak is seen
   only shortly before it breaches; above 0.98 a cache filling up is extrapolated almost as if it never flattened
   (0.98 is also statsmodels' own upper bound)."""


SIGMA_CLIP = 3.0
"""One-step errors beyond this many sigmas count as this many in the running sigma (Gelper, Fried & Croux 2010,
robust Holt-Winters): an outlier or the start of a trend does not blow up the prediction interval at once."""


CHANGE_SAMPLES = 3
"""Raw values in a row beyond huber_k sigmas on one side that make a change (a step, the start of a trend) rather
than outliers to clip."""
SIGMA_BOOTSTRAP = 5
"""Samples a forecaster without a fitted sigma collects before its running sigma starts (see `_bootstrap_sigma`)."""


class BreachForecast(NamedTuple):
    """Probability that the value is beyond the threshold within the horizon, and when the forecast mean gets there.

    `probability` is the largest per-step probability of the Gaussian predictive distribution being beyond the
    threshold: a lower bound of the probability that the path crosses at some step. `seconds` counts from the last
    sample (None: the mean stays on the good side within the horizon). `forecast` and `sd` are the predictive mean
    and standard deviation at the step of the largest probability.
    """

    probability: float
    seconds: float | None
    forecast: float
    sd: float
    step: int


class DampedTrendForecaster:
    """ETS(A,Ad,N) with parameters estimated by statsmodels and a streaming, constant-cost `update`.

    Parameters: `step_seconds`, the sampling step the parameters refer to (the tick); `smoothing_level`,
    `smoothing_trend`, `damping_trend` (alpha, beta, phi) are estimated by `fit` when None and held fixed
    otherwise, within `bounds`; `median_window` and `huber_k` make the update robust (see the module doc);
    `sigma_weight` is the weight of each new one-step error in the running sigma (0 keeps the fitted sigma);
    `min_sigma` floors sigma so a constant series still has a proper predictive distribution; `min_fit_samples`
    is the shortest series `fit` accepts.
    """

    def __init__(
        self,
        *,
        step_seconds: float = 15.0,
        smoothing_level: float | None = None,
        smoothing_trend: float | None = None,
        damping_trend: float | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = DEFAULT_BOUNDS,
        median_window: int = 3,
        huber_k: float | None = 3.0,
        sigma_weight: float = 0.05,
        min_sigma: float = 0.0,
        min_fit_samples: int = 10,
    ) -> None:
        self.step_seconds = step_seconds
        self.smoothing_level = smoothing_level
        self.smoothing_trend = smoothing_trend
        self.damping_trend = damping_trend
        self.bounds = bounds
        self.median_window = median_window
        self.huber_k = huber_k
        self.sigma_weight = sigma_weight
        self.min_sigma = min_sigma
        self.min_fit_samples = min_fit_samples

    # Parameters ---------------------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {
            "step_seconds": self.step_seconds,
            "smoothing_level": self.smoothing_level,
            "smoothing_trend": self.smoothing_trend,
            "damping_trend": self.damping_trend,
            "bounds": None if self.bounds is None else {k: list(v) for k, v in self.bounds.items()},
            "median_window": self.median_window,
            "huber_k": self.huber_k,
            "sigma_weight": self.sigma_weight,
            "min_sigma": self.min_sigma,
            "min_fit_samples": self.min_fit_samples,
        }

    def _validate_params(self) -> None:
        if not (self.step_seconds > 0 and math.isfinite(self.step_seconds)):
            raise ValueError(f"step_seconds: expected a positive number of seconds, got {self.step_seconds!r}")
        if not (isinstance(self.median_window, int) and self.median_window >= 1):
            raise ValueError(f"median_window: expected an integer >= 1, got {self.median_window!r}")
        if self.huber_k is not None and not self.huber_k > 0:
            raise ValueError(f"huber_k: expected a positive number of sigmas or None, got {self.huber_k!r}")
        if not 0.0 <= self.sigma_weight <= 1.0:
            raise ValueError(f"sigma_weight: expected 0..1, got {self.sigma_weight!r}")
        if not self.min_sigma >= 0.0:
            raise ValueError(f"min_sigma: expected >= 0, got {self.min_sigma!r}")
        if self.min_fit_samples < 4:
            raise ValueError(f"min_fit_samples: expected >= 4, got {self.min_fit_samples!r}")
        for name, value, low, high in (
            ("smoothing_level", self.smoothing_level, 0.0, 1.0),
            ("smoothing_trend", self.smoothing_trend, 0.0, 1.0),
            ("damping_trend", self.damping_trend, 0.0, 1.0),
        ):
            if value is not None and not low <= value <= high:
                raise ValueError(f"{name}: expected {low:g}..{high:g}, got {value!r}")

    # Fitting ------------------------------------------------------------------------------------------------
    def fit(self, y: Sequence[float | None] | np.ndarray, times: Sequence[float] | np.ndarray | None = None) -> Self:
        """Estimate alpha, beta, phi and sigma on `y` (NaN/None dropped), then run the state through `y`.

        The estimation sees the raw known values in order: the running median and the clipping are live defences,
        not part of the model (fitted on the median-filtered series, the filter's smoothing reads as persistence
        and drives alpha up). `times` (seconds, as long as `y`) makes the replay bridge gaps as `update` does. A
        constant series gets the fixed or lower-bound parameters and sigma 0.
        """
        self._validate_params()
        values = np.asarray([np.nan if v is None else v for v in y], dtype=float)
        stamps = None if times is None else np.asarray(times, dtype=float)
        if stamps is not None and stamps.shape != values.shape:
            raise ValueError(f"times: expected {values.size} times like y, got {stamps.size}")
        if stamps is not None and np.any(np.diff(stamps) <= 0):
            raise ValueError("times: expected strictly increasing times")
        known = np.isfinite(values)
        clean = values[known]
        if clean.size < self.min_fit_samples:
            raise ValueError(
                f"y: expected at least {self.min_fit_samples} known values to estimate a damped trend, "
                f"got {clean.size} (of {values.size})"
            )
        self.fit_warnings_: list[str] = []
        if float(np.ptp(clean)) == 0.0:
            alpha, beta, phi = self._fallback_params()
            level0, trend0, sigma = float(clean[0]), 0.0, 0.0
            self.converged_ = True
        else:
            alpha, beta, phi, level0, trend0, sigma = self._estimate(clean)
        self.alpha_, self.beta_, self.phi_, self.sigma_ = alpha, beta, phi, sigma
        self.n_train_ = int(clean.size)
        self._reset_state()
        self._replay(values, stamps, level0, trend0)
        return self

    def _fallback_params(self) -> tuple[float, float, float]:
        bounds = self.bounds or DEFAULT_BOUNDS
        alpha = self.smoothing_level if self.smoothing_level is not None else bounds["smoothing_level"][0]
        beta = self.smoothing_trend if self.smoothing_trend is not None else min(bounds["smoothing_trend"][0], alpha)
        phi = self.damping_trend if self.damping_trend is not None else bounds["damping_trend"][1]
        return float(alpha), float(beta), float(phi)

    def _estimate(self, clean: np.ndarray) -> tuple[float, float, float, float, float, float]:
        from statsmodels.tools.sm_exceptions import ConvergenceWarning
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        bounds = None if self.bounds is None else {k: tuple(v) for k, v in self.bounds.items()}
        model = ETSModel(clean, error="add", trend="add", damped_trend=True, bounds=bounds)
        fixed = {
            name: value
            for name, value in (
                ("smoothing_level", self.smoothing_level),
                ("smoothing_trend", self.smoothing_trend),
                ("damping_trend", self.damping_trend),
            )
            if value is not None
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fixed:
                with model.fix_params(fixed):
                    result = model.fit(disp=False)
            else:
                result = model.fit(disp=False)
        self.fit_warnings_ = [f"{w.category.__name__}: {w.message}" for w in caught]
        retvals = getattr(result, "mle_retvals", None) or {}
        self.converged_ = bool(retvals.get("converged", True)) and not any(
            issubclass(w.category, ConvergenceWarning) for w in caught
        )
        params = dict(zip(result.param_names, np.asarray(result.params, dtype=float), strict=True))
        return (
            float(params["smoothing_level"]),
            float(params["smoothing_trend"]),
            float(params["damping_trend"]),
            float(params["initial_level"]),
            float(params["initial_trend"]),
            math.sqrt(max(float(result.mse), 0.0)),
        )

    def _replay(self, values: np.ndarray, stamps: np.ndarray | None, level0: float, trend0: float) -> None:
        """Run the training values through the streaming update from statsmodels' initial state (its l_0 and b_0
        precede the first observation), so that fitted state and live updates agree exactly. The running sigma
        is then reset to the fitted one."""
        self._started = True
        self.level_, self.trend_ = level0, trend0
        for i, value in enumerate(values):
            self.update(float(stamps[i]) if stamps is not None else None, float(value))
        self.var_ = self.sigma_ * self.sigma_ if self.sigma_ is not None else self.var_

    @classmethod
    def from_params(
        cls, *, alpha: float, beta: float, phi: float, sigma: float | None = None, **params: Any
    ) -> DampedTrendForecaster:
        """A forecaster with known parameters and no data yet (what the scorer uses without a trained artifact).

        With `sigma` None the residual sigma is learnt from the first one-step errors.
        """
        forecaster = cls(smoothing_level=alpha, smoothing_trend=beta, damping_trend=phi, **params)
        forecaster._validate_params()
        forecaster.alpha_, forecaster.beta_, forecaster.phi_ = float(alpha), float(beta), float(phi)
        forecaster.sigma_ = None if sigma is None else float(sigma)
        forecaster.n_train_ = 0
        forecaster.converged_ = True
        forecaster.fit_warnings_ = []
        forecaster._reset_state()
        return forecaster

    def spawn(self, *, keep_sigma: bool = True) -> DampedTrendForecaster:
        """A copy with the same fitted parameters and an empty state: one per live series. `keep_sigma=False`
        lets the copy learn its own sigma (a series with other noise than the training one, e.g. fewer pods)."""
        self._check_fitted()
        child = DampedTrendForecaster.from_params(
            alpha=self.alpha_, beta=self.beta_, phi=self.phi_, sigma=self.sigma_ if keep_sigma else None,
            **_spawn_params(self),
        )
        child.n_train_ = self.n_train_
        child.converged_ = self.converged_
        return child

    def _reset_state(self) -> None:
        self._started = False
        self.level_ = 0.0
        self.trend_ = 0.0
        sigma = getattr(self, "sigma_", None)
        self.var_ = 0.0 if sigma is None else sigma * sigma
        self.n_errors_ = 0 if sigma is None else max(getattr(self, "n_train_", 0), 1)
        self.last_time_: float | None = None
        self.n_updates_ = 0
        self.window_: list[float] = []
        self.boot_: list[float] = []

    def _check_fitted(self) -> None:
        if not hasattr(self, "alpha_"):
            raise RuntimeError("DampedTrendForecaster is not fitted: call fit() or use from_params()")

    # Streaming ----------------------------------------------------------------------------------------------
    def update(self, t: float | None, value: float | None) -> None:
        """Add one sample at time `t` (seconds; None: one step after the previous). Constant cost.

        NaN, None and infinities are skipped without touching the state; a sample not after the previous one is
        ignored (a repeated scrape).
        """
        if value is None or not math.isfinite(value):
            return
        steps = 1
        if t is not None and self.last_time_ is not None:
            if t <= self.last_time_:
                return
            steps = max(1, round((t - self.last_time_) / self.step_seconds))
        if t is not None:
            self.last_time_ = t
        window = self.window_
        window.append(value)
        if len(window) > max(self.median_window, CHANGE_SAMPLES):
            del window[0]
        filtered = _median_small(window[-self.median_window:])
        if self.n_errors_ == 0:
            self._bootstrap_sigma(filtered)
        if not self._started:
            self._started = True
            self.level_, self.trend_ = filtered, 0.0
            self.n_updates_ = 1
            return
        phi, trend = self.phi_, self.trend_
        level = self.level_
        if steps > 1:  # bridge the gap: k - 1 forecast steps in closed form
            gap = steps - 1
            decay = phi**gap
            level += trend * _damped_sum(phi, gap)
            trend *= decay
        predicted = level + phi * trend
        error = filtered - predicted
        used = error
        if self.huber_k is not None and self.n_errors_:
            # robust Holt-Winters (Gelper, Fried & Croux 2010): an outlier moves the state by at most huber_k
            # sigmas, unless the last CHANGE_SAMPLES raw values all lie beyond that on the same side: a change
            limit = self.huber_k * self.sigma
            if error > limit or error < -limit:
                side = 1.0 if error > 0 else -1.0
                recent = window[-CHANGE_SAMPLES:]
                changed = len(recent) == CHANGE_SAMPLES and all(side * (v - predicted) > limit for v in recent)
                if not changed:
                    used = side * limit
        self.level_ = predicted + self.alpha_ * used
        self.trend_ = phi * trend + self.beta_ * used
        if self.n_errors_:
            self.n_errors_ += 1
            weight = max(self.sigma_weight, 1.0 / self.n_errors_)
            # Huber-clipped scale: the start of a trend or a step widens sigma gradually, not in one jump
            limit = SIGMA_CLIP * SIGMA_CLIP * max(self.var_, self.min_sigma * self.min_sigma)
            self.var_ += weight * (min(error * error, limit) - self.var_)
        self.n_updates_ += 1

    def _bootstrap_sigma(self, value: float) -> None:
        """Without a fitted sigma, the first SIGMA_BOOTSTRAP (median-filtered) values give it from their second
        differences, which a linear trend does not inflate (var(y_t - 2 y_{t-1} + y_{t-2}) = 6 sigma^2 for white
        noise); the one-step errors of those first samples would mostly measure how far the trend has to adapt."""
        boot = self.boot_
        boot.append(value)
        if len(boot) >= 3:
            second = [boot[i] - 2.0 * boot[i - 1] + boot[i - 2] for i in range(2, len(boot))]
            self.var_ = sum(d * d for d in second) / (6.0 * len(second))
        if len(boot) >= SIGMA_BOOTSTRAP:
            self.n_errors_ = len(boot)
            self.boot_ = []

    @property
    def sigma(self) -> float:
        """The current one-step residual standard deviation (running estimate, floored at `min_sigma`)."""
        return max(math.sqrt(max(self.var_, 0.0)), self.min_sigma)

    @property
    def ready(self) -> bool:
        return self._started

    def forecast(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive standard deviation for 1..`steps` steps after the last sample."""
        self._check_fitted()
        if not self._started:
            raise RuntimeError("no sample yet: nothing to forecast from")
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps!r}")
        damped, spread = _profile(self.alpha_, self.beta_, self.phi_, int(steps))
        return self.level_ + self.trend_ * damped, self.sigma * spread

    def breach_profile(self, threshold: float, direction: Direction, steps: int) -> tuple[np.ndarray, np.ndarray,
                                                                                            np.ndarray]:
        """Per step 1..`steps`: probability of being beyond `threshold`, forecast mean, predictive sd."""
        mean, sd = self.forecast(steps)
        sign = 1.0 if direction is Direction.ABOVE else -1.0
        margin = sign * (mean - threshold)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, margin / np.where(sd > 0, sd, 1.0), np.where(margin >= 0, np.inf, -np.inf))
        return ndtr(z), mean, sd

    def breach_bound(self, threshold: float, direction: Direction, steps: int) -> tuple[float, float, float]:
        """(upper bound of the per-step breach probability over 1..`steps`, mean and sd at `steps`), in constant
        time: the mean is monotone in h and the sd grows with h, so no step is further beyond the threshold than
        the nearer of the two ends, nor has a wider interval than the last. Lets a caller skip `breach_profile`
        for the many series nowhere near their threshold."""
        damped, spread = _profile(self.alpha_, self.beta_, self.phi_, int(steps))
        sign = 1.0 if direction is Direction.ABOVE else -1.0
        first = self.level_ + self.trend_ * float(damped[0])
        last = self.level_ + self.trend_ * float(damped[-1])
        margin = max(sign * (first - threshold), sign * (last - threshold))
        sd_last = self.sigma * float(spread[-1])
        if margin >= 0:
            return 1.0, last, sd_last
        if sd_last <= 0:
            return 0.0, last, sd_last
        return 0.5 * math.erfc(-margin / sd_last / math.sqrt(2.0)), last, sd_last

    def breach(self, threshold: float, direction: Direction | str, horizon_steps: int) -> BreachForecast:
        """Probability of being beyond `threshold` within `horizon_steps`, and when the mean forecast gets there."""
        probs, mean, sd = self.breach_profile(threshold, Direction(direction), horizon_steps)
        best = int(np.argmax(probs))
        sign = 1.0 if Direction(direction) is Direction.ABOVE else -1.0
        crossed = np.flatnonzero(sign * (mean - threshold) >= 0)
        seconds = float((crossed[0] + 1) * self.step_seconds) if crossed.size else None
        return BreachForecast(float(probs[best]), seconds, float(mean[best]), float(sd[best]), best + 1)

    def asymptote(self) -> float:
        """Where the forecast levels off: l + b phi / (1 - phi)."""
        self._check_fitted()
        phi = self.phi_
        return self.level_ + (self.trend_ * phi / (1.0 - phi) if phi < 1.0 else math.copysign(math.inf, self.trend_))

    # Persistence --------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Parameters, fitted parameters and streaming state as plain JSON-able data (exact floats)."""
        self._check_fitted()
        return {
            "format": STATE_FORMAT,
            "class": type(self).__name__,
            "params": self.get_params(),
            "fitted": {
                "alpha": self.alpha_,
                "beta": self.beta_,
                "phi": self.phi_,
                "sigma": self.sigma_,
                "n_train": self.n_train_,
                "converged": self.converged_,
                "fit_warnings": list(self.fit_warnings_),
            },
            "state": {
                "started": self._started,
                "level": self.level_,
                "trend": self.trend_,
                "var": self.var_,
                "n_errors": self.n_errors_,
                "last_time": self.last_time_,
                "n_updates": self.n_updates_,
                "window": list(self.window_),
                "boot": list(self.boot_),
            },
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> DampedTrendForecaster:
        """Rebuild exactly what `get_state` wrote. Raises ValueError naming the first missing or bad field."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"forecaster state: expected format {STATE_FORMAT}, got {data.get('format')!r}")
        if data.get("class") != cls.__name__:
            raise ValueError(f"forecaster state: expected class {cls.__name__}, got {data.get('class')!r}")
        try:
            params = dict(data["params"])
            if params.get("bounds") is not None:
                params["bounds"] = {k: (float(v[0]), float(v[1])) for k, v in params["bounds"].items()}
            fitted, state = data["fitted"], data["state"]
            forecaster = cls(**params)
            forecaster._validate_params()
            forecaster.alpha_ = float(fitted["alpha"])
            forecaster.beta_ = float(fitted["beta"])
            forecaster.phi_ = float(fitted["phi"])
            forecaster.sigma_ = None if fitted["sigma"] is None else float(fitted["sigma"])
            forecaster.n_train_ = int(fitted["n_train"])
            forecaster.converged_ = bool(fitted["converged"])
            forecaster.fit_warnings_ = [str(w) for w in fitted["fit_warnings"]]
            forecaster._started = bool(state["started"])
            forecaster.level_ = float(state["level"])
            forecaster.trend_ = float(state["trend"])
            forecaster.var_ = float(state["var"])
            forecaster.n_errors_ = int(state["n_errors"])
            forecaster.last_time_ = None if state["last_time"] is None else float(state["last_time"])
            forecaster.n_updates_ = int(state["n_updates"])
            forecaster.window_ = [float(v) for v in state["window"]]
            forecaster.boot_ = [float(v) for v in state["boot"]]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"forecaster state: missing or malformed field {exc}") from exc
        for name in ("alpha_", "beta_", "phi_", "level_", "trend_", "var_"):
            if not math.isfinite(getattr(forecaster, name)):
                raise ValueError(f"forecaster state: {name.rstrip('_')} is not finite")
        return forecaster

    def __repr__(self) -> str:
        if not hasattr(self, "alpha_"):
            return f"DampedTrendForecaster(step_seconds={self.step_seconds:g}, unfitted)"
        return (f"DampedTrendForecaster(alpha={self.alpha_:.3g}, beta={self.beta_:.3g}, phi={self.phi_:.3g}, "
                f"sigma={self.sigma:.3g}, level={self.level_:.4g}, trend={self.trend_:+.3g}/step)")


def _spawn_params(forecaster: DampedTrendForecaster) -> dict[str, Any]:
    params = forecaster.get_params()
    for fixed in ("smoothing_level", "smoothing_trend", "damping_trend"):
        params.pop(fixed)
    if params["bounds"] is not None:
        params["bounds"] = {k: tuple(v) for k, v in params["bounds"].items()}
    return params


def _damped_sum(phi: float, steps: int) -> float:
    """phi + phi^2 + ... + phi^steps."""
    if phi == 1.0:
        return float(steps)
    return phi * (1.0 - phi**steps) / (1.0 - phi)


@lru_cache(maxsize=256)
def _profile_cached(alpha: float, beta: float, phi: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    damped = np.cumsum(phi ** np.arange(1, steps + 1, dtype=float))
    c = alpha + beta * damped
    spread = np.sqrt(1.0 + np.concatenate(([0.0], np.cumsum(c[:-1] ** 2))))
    damped.flags.writeable = False
    spread.flags.writeable = False
    return damped, spread


def _profile(alpha: float, beta: float, phi: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(phi_h, sqrt(1 + sum_{j<h} c_j^2)) for h = 1..steps; cached because many series share parameters."""
    return _profile_cached(alpha, beta, phi, steps)


def _median_small(values: list[float]) -> float:
    n = len(values)
    if n == 1:
        return values[0]
    if n == 2:
        return 0.5 * (values[0] + values[1])
    if n == 3:
        a, b, c = values
        return max(min(a, b), min(max(a, b), c))
    ordered = sorted(values)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


class TrendForecast(NamedTuple):
    """Where a local trend takes a series within a horizon, and how sure that is (see `LocalTrend.breach`).

    `probability` is P(the trend's path is beyond the threshold within the horizon); `seconds` when the mean path
    gets there (None: not within the horizon); `forecast` and `sd` the mean and standard deviation at the horizon;
    `damping_seconds` the time constant of the flattening assumed (None: the path is a straight line)."""

    probability: float
    seconds: float | None
    forecast: float
    sd: float
    level: float
    slope: float
    damping_seconds: float | None

    def path_shape(self, seconds: float) -> float:
        """How far along its way to the horizon the mean path is `seconds` after the last sample, as the model
        moves it: straight, or levelling off with `damping_seconds` (the status page draws the path with it)."""
        if self.damping_seconds is None:
            return seconds
        return self.damping_seconds * (1.0 - math.exp(-seconds / self.damping_seconds))


CORRELATION_LAGS = 6
"""Lags over which `LocalTrend` measures how correlated its samples are: a [1m] rate scraped every 15 s shares data
with the next 3 samples, and the scorer's running median of 3 spreads that by 2 more."""


class LocalTrend:
    """A discounted local quadratic regression y ~ a + b tau + c tau^2 around the last sample, in constant time.

    The scorer's answer to "does this trend keep going?": a leak grows at the same rate at every age (c = 0), a
    cache filling up flattens (c < 0 on the bad side), and the data decides which, with its own uncertainty.
    Sufficient statistics (weighted moments of tau up to the 4th and of y tau up to the 2nd) are shifted to the new
    sample's time and discounted by `exp(-dt / memory_seconds)` on each update, so a sample costs the same whatever
    the history. Times are counted in `step_seconds` so that the moments stay well scaled.

    `breach` projects the path under the flattest curvature the data does not reject (the one-sided `flatten_z`
    bound of c): until enough samples show that a rise keeps its pace, it is assumed to level off, so an uncertain
    trend waits and a confident one is extrapolated (as a straight line; an acceleration is never extrapolated).
    The probability counts the uncertainty of the level and slope (the regression's covariance with the residual
    sigma, inflated by the samples' long-run variance factor, since overlapping rate windows and running medians
    make successive samples correlated, and floored at `min_sigma`), not the noise of single future samples: a
    breach is of the level, and a path that rises (and at most flattens) is beyond the threshold within the horizon
    exactly when it is at the horizon.
    """

    def __init__(self, *, step_seconds: float = 15.0, memory_seconds: float = 600.0, flatten_z: float = 2.0,
                 min_sigma: float = 0.0) -> None:
        if not (step_seconds > 0 and memory_seconds > 0 and flatten_z >= 0 and min_sigma >= 0):
            raise ValueError(f"LocalTrend: expected positive step_seconds and memory_seconds, flatten_z and "
                             f"min_sigma >= 0, got {step_seconds}, {memory_seconds}, {flatten_z}, {min_sigma}")
        self.step_seconds = step_seconds
        self.memory_seconds = memory_seconds
        self.flatten_z = flatten_z
        self.min_sigma = min_sigma
        self.m = [0.0] * 5
        """Weighted sums of tau^k, k = 0..4 (tau: steps before the last sample, negative)."""
        self.n = [0.0] * 3
        """Weighted sums of y tau^k, k = 0..2."""
        self.yy = 0.0
        self.lag_squares = [0.0] * CORRELATION_LAGS
        """Weighted sums of (y_t - y_t-k)^2 over samples k steps apart, k = 1..CORRELATION_LAGS."""
        self.lag_weights = [0.0] * CORRELATION_LAGS
        self.recent: deque[float] = deque(maxlen=CORRELATION_LAGS)
        """The last samples, one step apart (emptied by a gap)."""
        self.count = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def update(self, t: float, value: float) -> None:
        """Add a sample (NaN/None and samples not after the last are ignored)."""
        if value is None or not math.isfinite(value) or (self.last_time is not None and t <= self.last_time):
            return
        if self.last_time is not None:
            d = (t - self.last_time) / self.step_seconds
            decay = math.exp(-(t - self.last_time) / self.memory_seconds)
            m, n = self.m, self.n
            # tau' = tau - d: binomial shift of the moments to the new origin
            m0, m1, m2, m3, m4 = m
            self.m = [decay * v for v in (
                m0,
                m1 - d * m0,
                m2 - 2 * d * m1 + d * d * m0,
                m3 - 3 * d * m2 + 3 * d * d * m1 - d**3 * m0,
                m4 - 4 * d * m3 + 6 * d * d * m2 - 4 * d**3 * m1 + d**4 * m0,
            )]
            n0, n1, n2 = n
            self.n = [decay * v for v in (n0, n1 - d * n0, n2 - 2 * d * n1 + d * d * n0)]
            self.yy *= decay
            self.lag_squares = [decay * v for v in self.lag_squares]
            self.lag_weights = [decay * v for v in self.lag_weights]
            if d > 1.5:
                self.recent.clear()  # a gap: the samples before it are not a whole number of steps back
        for k, earlier in enumerate(reversed(self.recent)):
            self.lag_squares[k] += (value - earlier) ** 2
            self.lag_weights[k] += 1.0
        self.recent.append(value)
        self.m[0] += 1.0
        self.n[0] += value
        self.yy += value * value
        self.count += 1
        if self.first_time is None:
            self.first_time = t
        self.last_time = t

    def fit(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(a, b, c) at the last sample (per step), their covariance and the residual sigma (inflated for correlated
        samples, floored at `min_sigma`); None when singular."""
        if self.count < 4:
            return None
        m, n = self.m, self.n
        gram = np.array([[m[0], m[1], m[2]], [m[1], m[2], m[3]], [m[2], m[3], m[4]]])
        rhs = np.array(n)
        try:
            inverse = np.linalg.inv(gram)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(inverse)):
            return None
        beta = inverse @ rhs
        rss = max(self.yy - float(beta @ rhs), 0.0)
        dof = max(m[0] - 3.0, 1.0)
        raw = math.sqrt(rss / dof)
        # the residual sigma as the level and slope see it: inflated for correlated samples, then floored
        sigma = max(raw * math.sqrt(self.variance_inflation(raw, float(beta[1]))), self.min_sigma)
        return beta, inverse * sigma * sigma, sigma

    def variance_inflation(self, sigma: float, slope: float) -> float:
        """How much a regression's variances understate the truth when successive samples are correlated, as rate
        windows overlapping from one scrape to the next make them: Newey-West's long-run variance factor
        1 + 2 sum_k (1 - k / (K + 1)) rho_k, with the autocorrelation at lag k read from the samples k steps apart
        (E[(y_t - y_t-k - k slope)^2] = 2 sigma^2 (1 - rho_k))."""
        if sigma <= 0:
            return 1.0
        factor = 1.0
        for k, (squares, weight) in enumerate(zip(self.lag_squares, self.lag_weights, strict=True), start=1):
            if weight < 3.0:
                break
            mean_square = max(squares / weight - (k * slope) ** 2, 0.0)
            rho = min(max(1.0 - mean_square / (2.0 * sigma * sigma), 0.0), 1.0)
            factor += 2.0 * (1.0 - k / (CORRELATION_LAGS + 1)) * rho
        return factor

    def _line(self, sigma: float) -> tuple[float, float, np.ndarray] | None:
        """(level at the last sample, slope per step, covariance) of the weighted straight line, or None."""
        m, n = self.m, self.n
        det = m[0] * m[2] - m[1] * m[1]
        if det <= 0:
            return None
        a = (m[2] * n[0] - m[1] * n[1]) / det
        b = (m[0] * n[1] - m[1] * n[0]) / det
        inverse = np.array([[m[2], -m[1]], [-m[1], m[0]]]) / det
        return a, b, inverse * sigma * sigma

    def slope_z(self, direction: Direction) -> float | None:
        """The weighted straight line's slope toward the bad side in its standard errors (residual sigma inflated
        for correlated samples, as in `fit`); None before the regression can be solved."""
        fitted = self.fit()
        if fitted is None:
            return None
        line = self._line(fitted[2])
        if line is None:
            return None
        se = math.sqrt(max(float(line[2][1, 1]), 0.0))
        sign = 1.0 if direction is Direction.ABOVE else -1.0
        return sign * line[1] / se if se > 0 else None

    def breach(self, threshold: float, direction: Direction, horizon_seconds: float,
               lag_seconds: float = 0.0) -> TrendForecast | None:
        """P(the path is beyond `threshold` within `horizon_seconds` of now, `lag_seconds` after the last sample)."""
        fitted = self.fit()
        if fitted is None:
            return None
        beta, cov, sigma = fitted
        sign = 1.0 if direction is Direction.ABOVE else -1.0
        a, b, c = float(beta[0]), sign * float(beta[1]), sign * float(beta[2])
        se_c = math.sqrt(max(float(cov[2, 2]), 0.0))
        # The slope is the smaller (toward the threshold) of the quadratic's slope now and the straight line's over
        # the memory: a rise must show at both scales. A cache filling up is rising slower now than on average, a
        # new pod's jump (a warm-up) steeply now but not on average; a leak the same at both.
        line = self._line(sigma)
        if line is not None and sign * line[1] < b:
            a, b = line[0], sign * line[1]
            cov = np.array([[line[2][0, 0], line[2][0, 1], 0.0], [line[2][1, 0], line[2][1, 1], 0.0],
                            [0.0, 0.0, float(cov[2, 2])]])
        steps = (horizon_seconds + lag_seconds) / self.step_seconds
        level = sign * (a - threshold)
        curvature = min(0.0, c - self.flatten_z * se_c)
        damping = None
        if b <= 0:
            gain, reach = 0.0, 0.0
        elif curvature < 0:
            damping = b / (-2.0 * curvature)  # exponential approach: y'' = -y' / T, c = y'' / 2
            gain = damping * (1.0 - math.exp(-steps / damping))
            reach = b * damping
        else:
            gain, reach = steps, math.inf
        margin = level + b * gain
        var = float(cov[0, 0]) + gain * gain * float(cov[1, 1]) + 2.0 * gain * float(cov[0, 1])
        sd = math.sqrt(max(var, 0.0))
        probability = float(ndtr(margin / sd)) if sd > 0 else float(margin >= 0)
        seconds: float | None = None
        if level >= 0:
            seconds = 0.0
        elif b > 0 and -level < reach:
            needed = -level / b if damping is None else -damping * math.log(1.0 - (-level) / (b * damping))
            until = needed * self.step_seconds - lag_seconds
            seconds = None if until > horizon_seconds else max(until, 0.0)
        return TrendForecast(probability, seconds, threshold + sign * margin, sd, a, sign * b / self.step_seconds,
                             None if damping is None else damping * self.step_seconds)
