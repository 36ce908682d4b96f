"""A streaming univariate anomaly detector: an ensemble of tail-calibrated surprises, fused by agreement.

Each sample costs the same whatever the length of the stream (bounded by `max_history`), and its score uses
only the samples before it and itself. The method (docs/NAB.md has its measurement on the Numenta Anomaly
Benchmark):

1. **Surprises.** After each value x_t the detector computes signed statistics (20 by default), each the error
   of a simple predictor at a time scale k in `scales` (mean_k is the mean of the last k values):

   * change   d_k = mean_k(t) - mean_k(t - k)   (persistence predictor; up and down)
   * level    l_k = mean_k(t) - median of the `baseline_window` values before those k   (up and down)
   * season   s_k = mean_k(t) - median of mean_k at t - P, t - 2P, ..., t - `season_cycles` P, looked up by
     timestamp with P = `season_period` (a day by default; up and down; only when each of those moments has
     a sample within `season_tolerance`, an hour by default, or within half a sampling step)
   * volatility v_w = mean of |x_i - x_(i-1)| over the last w values, w in `volatility_windows` (up only)

2. **Calibration.** Each statistic gets a right-tail p-value against its *own* history in this stream (up to
   `max_history` values, the current one excluded): the empirical rank below the (1 - `tail_fraction`)
   quantile u, and above u a generalised Pareto tail fitted by the method of moments to the values over u
   (peaks over threshold; the shape is kept in [0, `max_shape`], so the tail is never assumed lighter than
   exponential). A recurring pattern such as a daily step thus stops being surprising after a few repeats,
   heavy-tailed series need bigger excursions than quiet ones, and a change in a constant series is extreme.

3. **Fusion.** With L_(1) >= L_(2) >= ... the surprises -log10 p in decreasing order, the evidence is
   F = sum_i `fusion_decay`^(i-1) L_(i): one statistic alone counts fully, several agreeing count more (a real
   change moves the value, its level, its season and its volatility at once; noise rarely does).

4. **Alarm suppression.** If F does not exceed the largest F of the previous `suppress_window` samples, it is
   multiplied by `suppress_factor`, so that the rest of an episode (the decay of a spike, the plateau after a
   step) does not raise the alarm again.

5. **Alarm and refractory period.** The detector raises an alarm when the (suppressed) evidence reaches
   `half_evidence`, i.e. when the score reaches 0.5. For the next `alarm_refractory` samples the evidence is
   multiplied by `suppress_factor` again, so a rising episode (evidence 13, 14, 16, 18, ... over a few
   samples, each a new maximum) gives one alarm instead of one per sample, while a new maximum at twice
   the alarm level still alarms. NAB, like an operator, counts only the first detection of an event; later
   ones are false positives when they fall outside the labelled window.

6. **Score.** score = F / (F + `half_evidence`), in [0, 1): 0.5 means `half_evidence` decades of combined
   surprise and is the alarm level. The map is monotone and the same for every series, so one threshold means
   one level of evidence.

NaN and infinite values get the score 0 and leave the state untouched; the first values score 0 until the
statistics have `min_history` values of history. There is no randomness.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

STATE_FORMAT = 3
"""Version of the dict written by `get_state`; `from_state` refuses other versions."""

_LOG10_MIN_P = 300.0  # -log10 of the smallest p-value we report (keeps F finite)


class _Tail:
    """History of one statistic and its right-tail p-value (empirical body, generalised Pareto tail)."""

    __slots__ = ("cap", "head", "hist", "srt")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.hist = array("d")  # insertion order; a ring buffer once `cap` is reached
        self.head = 0  # index of the oldest value in `hist` when full
        self.srt = array("d")  # the same values, sorted

    def __len__(self) -> int:
        return len(self.srt)

    def add(self, value: float) -> None:
        if len(self.hist) < self.cap:
            self.hist.append(value)
        else:
            old = self.hist[self.head]
            self.hist[self.head] = value
            self.head = (self.head + 1) % self.cap
            del self.srt[bisect.bisect_left(self.srt, old)]
        bisect.insort(self.srt, value)

    def log10_p(
        self, value: float, tail_fraction: float, min_tail: int, max_shape: float, floor: float
    ) -> float:
        """-log10 of P(X >= value) under this history (0 when value is in the body)."""
        srt = self.srt
        m = len(srt)
        k = max(int(tail_fraction * m), min_tail)
        if k >= m:
            return 0.0
        u = srt[m - k - 1]
        if value <= u + floor:
            ge = m - bisect.bisect_left(srt, value)
            return -math.log10((ge + 1) / (m + 1))
        q = (k + 1) / (m + 1)
        total = 0.0
        total2 = 0.0
        for i in range(m - k, m):
            y = srt[i] - u
            total += y
            total2 += y * y
        mean = total / k
        var = max(total2 / k - mean * mean, 0.0)
        if mean <= floor:
            shape, scale = 0.0, floor
        else:
            shape = 0.5 * (1.0 - mean * mean / var) if var > 0.0 else 0.0
            shape = min(max(shape, 0.0), max_shape)
            scale = max(mean * (1.0 - shape), floor)
        z = (value - u) / scale
        out = z / math.log(10.0) if shape < 1e-9 else math.log10(1.0 + shape * z) / shape
        out = -math.log10(q) + out
        # overflowing magnitudes (|x| near the float maximum) give inf or nan: the most extreme surprise
        return out if out < _LOG10_MIN_P else _LOG10_MIN_P


class _SortedWindow:
    """The last `size` values pushed, in arrival order and sorted for the median (insertion and removal cost
    O(size) memmove). `restart` replaces them, e.g. with the values since a level shift."""

    __slots__ = ("fifo", "size", "srt")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque[float] = deque()
        self.srt = array("d")

    def push(self, value: float) -> None:
        if len(self.fifo) >= self.size:
            del self.srt[bisect.bisect_left(self.srt, self.fifo.popleft())]
        self.fifo.append(value)
        bisect.insort(self.srt, value)

    def restart(self, values: Iterable[float]) -> None:
        self.fifo = deque(values)
        while len(self.fifo) > self.size:
            self.fifo.popleft()
        self.srt = array("d", sorted(self.fifo))

    def median(self) -> float:
        s = self.srt
        n = len(s)
        mid = n // 2
        return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


class StreamingAnomalyDetector:
    """Streaming anomaly score in [0, 1] for one univariate series (see the module docstring).

    `update(timestamp, value)` returns the score of that sample from the samples so far;
    `score_series(timestamps, values)` runs a whole series; `get_state()` / `from_state()` save and restore
    the running state exactly. Parameters follow scikit-learn conventions: `__init__` only stores them,
    running state lives in attributes ending in `_`.

    Parameters
    ----------
    scales: window lengths (samples) of the change, level and season statistics.
    baseline_window: samples in the running median that the level statistic compares with.
    season_period: seconds of the seasonal cycle (a day); 0 disables the season statistics.
    season_cycles: how many past cycles the seasonal median uses.
    season_tolerance: seconds; the sample nearest to t - jP counts if it is this close (at least half a step).
    volatility_windows: window lengths (samples) of the mean absolute first difference.
    tail_fraction: share of a statistic's history treated as its tail (peaks over threshold).
    min_tail: at least this many values form the tail.
    min_history: a statistic is scored once it has this many values of history.
    max_history: at most this many past values per statistic (the oldest are forgotten): bounds memory and
        time per sample.
    max_shape: upper bound of the generalised Pareto shape.
    fusion_decay: weight ratio between successive surprises in decreasing order.
    suppress_window: samples during which an evidence not above the recent maximum is damped.
    suppress_factor: the damping factor (of the suppression and of the refractory period).
    half_evidence: evidence (decades) that maps to the score 0.5, the alarm level.
    alarm_refractory: samples after an alarm during which the evidence is damped by `suppress_factor`
        (0: no refractory period).
    """

    def __init__(
        self,
        *,
        scales: Sequence[int] = (1, 8, 64),
        baseline_window: int = 250,
        season_period: float = 86400.0,
        season_cycles: int = 3,
        season_tolerance: float = 3600.0,
        volatility_windows: Sequence[int] = (8, 64),
        tail_fraction: float = 0.02,
        min_tail: int = 8,
        min_history: int = 100,
        max_history: int = 20000,
        max_shape: float = 0.9,
        fusion_decay: float = 0.85,
        suppress_window: int = 100,
        suppress_factor: float = 0.5,
        half_evidence: float = 13.25,
        alarm_refractory: int = 10,
    ) -> None:
        self.scales = scales
        self.baseline_window = baseline_window
        self.season_period = season_period
        self.season_cycles = season_cycles
        self.season_tolerance = season_tolerance
        self.volatility_windows = volatility_windows
        self.tail_fraction = tail_fraction
        self.min_tail = min_tail
        self.min_history = min_history
        self.max_history = max_history
        self.max_shape = max_shape
        self.fusion_decay = fusion_decay
        self.suppress_window = suppress_window
        self.suppress_factor = suppress_factor
        self.half_evidence = half_evidence
        self.alarm_refractory = alarm_refractory

    # Parameters ---------------------------------------------------------------------------------------------
    _PARAMS = (
        "scales",
        "baseline_window",
        "season_period",
        "season_cycles",
        "season_tolerance",
        "volatility_windows",
        "tail_fraction",
        "min_tail",
        "min_history",
        "max_history",
        "max_shape",
        "fusion_decay",
        "suppress_window",
        "suppress_factor",
        "half_evidence",
        "alarm_refractory",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._PARAMS}
        out["scales"] = [int(k) for k in out["scales"]]
        out["volatility_windows"] = [int(w) for w in out["volatility_windows"]]
        return out

    def set_params(self, **params: Any) -> StreamingAnomalyDetector:
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        if hasattr(self, "n_"):
            self.reset()
        return self

    def _validate_params(self) -> None:
        scales = [int(k) for k in self.scales]
        if not scales or min(scales) < 1:
            raise ValueError("scales must be positive window lengths")
        if any(int(w) < 1 for w in self.volatility_windows):
            raise ValueError("volatility_windows must be positive")
        if int(self.baseline_window) < 1 or int(self.season_cycles) < 1:
            raise ValueError("baseline_window and season_cycles must be >= 1")
        if not 0.0 < float(self.tail_fraction) < 1.0:
            raise ValueError("tail_fraction must be in (0, 1)")
        if int(self.min_tail) < 2 or int(self.min_history) < int(self.min_tail) + 1:
            raise ValueError("need min_tail >= 2 and min_history > min_tail")
        if int(self.max_history) < int(self.min_history):
            raise ValueError("max_history must be >= min_history")
        if not 0.0 <= float(self.max_shape) < 1.0:
            raise ValueError("max_shape must be in [0, 1)")
        if not 0.0 <= float(self.fusion_decay) <= 1.0 or not 0.0 <= float(self.suppress_factor) <= 1.0:
            raise ValueError("fusion_decay and suppress_factor must be in [0, 1]")
        if int(self.suppress_window) < 0 or float(self.half_evidence) <= 0.0:
            raise ValueError("suppress_window >= 0 and half_evidence > 0 required")
        if int(self.alarm_refractory) < 0:
            raise ValueError("alarm_refractory must be >= 0")
        if float(self.season_period) < 0.0 or float(self.season_tolerance) < 0.0:
            raise ValueError("season_period and season_tolerance must be >= 0")

    # State --------------------------------------------------------------------------------------------------
    def _feature_names(self) -> list[str]:
        names = []
        for family in ("d", "l", "s"):
            for k in self.scales:
                names += [f"{family}{int(k)}+", f"{family}{int(k)}-"]
        names += [f"v{int(w)}" for w in self.volatility_windows]
        return names

    def reset(self) -> StreamingAnomalyDetector:
        """Forget everything seen so far (parameters are kept)."""
        self._validate_params()
        scales = [int(k) for k in self.scales]
        kmax = max(scales)
        self.n_ = 0  # finite values seen
        self.values_: deque[float] = deque(maxlen=int(self.baseline_window) + 2 * kmax + 1)
        self.abs_diffs_: deque[float] = deque(maxlen=max(int(w) for w in self.volatility_windows))
        self.baselines_ = {k: _SortedWindow(int(self.baseline_window)) for k in scales}
        self.season_times_: list[float] = []
        self.season_means_: list[tuple[float, ...]] = []
        self.steps_: deque[float] = deque(maxlen=31)  # recent sampling steps (seconds)
        self.last_time_: float | None = None
        self.tails_ = {name: _Tail(int(self.max_history)) for name in self._feature_names()}
        self.recent_evidence_: deque[tuple[int, float]] = deque()  # (index, F) with decreasing F
        self.last_evidence_ = 0.0
        self.last_alarm_: int | None = None  # sample index (n_) of the last alarm
        self.last_surprises_: dict[str, float] = {}
        return self

    def _ensure_started(self) -> None:
        if not hasattr(self, "n_"):
            self.reset()

    # Streaming ----------------------------------------------------------------------------------------------
    def update(self, timestamp: float | None, value: float | None) -> float:
        """Add one sample (timestamp in seconds; None: one second after the previous) and return its score.

        Constant cost per sample. NaN, None and infinite values return 0 and leave the state untouched.
        """
        self._ensure_started()
        if value is None:
            return 0.0
        x = float(value)
        if not math.isfinite(x):
            return 0.0
        t = self._time(timestamp)
        stats = self._statistics(t, x)
        evidence = self._evidence(stats)
        return self._suppress_and_score(evidence)

    def score_series(self, timestamps: Iterable[Any] | None, values: Iterable[Any]) -> np.ndarray:
        """Run `values` (with their `timestamps`: seconds or numpy datetime64; None: one per second) through
        `update` and return the scores. The detector keeps the state, so a later call continues the stream."""
        vals = np.asarray(values, dtype=float)
        if timestamps is None:
            times: list[float | None] = [None] * len(vals)
        else:
            ts = np.asarray(timestamps)
            if np.issubdtype(ts.dtype, np.datetime64):
                ts = (ts.astype("datetime64[ns]") - np.datetime64(0, "ns")) / np.timedelta64(1, "s")
            ts = np.asarray(ts, dtype=float)
            if len(ts) != len(vals):
                raise ValueError(f"timestamps ({len(ts)}) and values ({len(vals)}) differ in length")
            times = [float(v) for v in ts]
        out = np.zeros(len(vals))
        for i, (t, v) in enumerate(zip(times, vals.tolist(), strict=True)):
            out[i] = self.update(t, v)
        return out

    def _time(self, timestamp: float | None) -> float:
        if timestamp is None or not math.isfinite(float(timestamp)):
            t = (self.last_time_ + 1.0) if self.last_time_ is not None else 0.0
        else:
            t = float(timestamp)
        if self.last_time_ is not None and t > self.last_time_:
            self.steps_.append(t - self.last_time_)
        return t

    def _statistics(self, t: float, x: float) -> dict[str, float]:
        """Update the running windows with x and return the statistics available at this sample."""
        scales = [int(k) for k in self.scales]
        vals = self.values_
        if vals:
            self.abs_diffs_.append(abs(x - vals[-1]))
        vals.append(x)
        self.n_ += 1
        n = len(vals)
        stats: dict[str, float] = {}
        means: list[float] = []
        for k in scales:
            # baseline for scale k: the values before the last k ones
            if n > k:
                self.baselines_[k].push(vals[n - k - 1])
            if n >= k:
                mean_k = _mean(vals, n - k, n)
                means.append(mean_k)
                if n >= 2 * k:
                    prev = _mean(vals, n - 2 * k, n - k)
                    stats[f"d{k}+"] = mean_k - prev
                    stats[f"d{k}-"] = prev - mean_k
                base = self.baselines_[k]
                if len(base.srt) >= min(20, int(self.baseline_window)):
                    med = base.median()
                    stats[f"l{k}+"] = mean_k - med
                    stats[f"l{k}-"] = med - mean_k
            else:
                means.append(math.nan)
        self._season(t, means, scales, stats)
        diffs = self.abs_diffs_
        for w in self.volatility_windows:
            w = int(w)
            if len(diffs) >= w:
                m = len(diffs)
                stats[f"v{w}"] = _mean(diffs, m - w, m)
        self.last_time_ = t if self.last_time_ is None else max(self.last_time_, t)
        return stats

    def _season(self, t: float, means: list[float], scales: list[int], stats: dict[str, float]) -> None:
        period = float(self.season_period)
        if period <= 0.0:
            return
        times, store = self.season_times_, self.season_means_
        step = _median(self.steps_) if self.steps_ else None
        if step is not None and step > 0.0 and step <= period / 8.0:
            tol = max(0.5 * step, float(self.season_tolerance))
            refs: list[tuple[float, ...]] = []
            for j in range(1, int(self.season_cycles) + 1):
                target = t - j * period
                i = bisect.bisect_left(times, target - tol)
                if i >= len(times) or times[i] > target + tol:
                    break
                # nearest sample to the target within the tolerance
                best = i
                while (
                    best + 1 < len(times)
                    and times[best + 1] <= target + tol
                    and (abs(times[best + 1] - target) < abs(times[best] - target))
                ):
                    best += 1
                refs.append(store[best])
            if len(refs) == int(self.season_cycles):
                for idx, k in enumerate(scales):
                    cur = means[idx]
                    past = sorted(r[idx] for r in refs)
                    if math.isnan(cur) or any(math.isnan(p) for p in past):
                        continue
                    mid = len(past) // 2
                    med = past[mid] if len(past) % 2 else 0.5 * (past[mid - 1] + past[mid])
                    stats[f"s{k}+"] = cur - med
                    stats[f"s{k}-"] = med - cur
        if not times or t >= times[-1]:
            times.append(t)
            store.append(tuple(means))
            # forget what no lookup can reach any more, in batches (amortised constant cost)
            horizon = t - int(self.season_cycles) * period - period / 8.0
            stale = max(bisect.bisect_left(times, horizon), len(times) - int(self.max_history))
            if stale > max(64, len(times) // 4):
                del times[:stale]
                del store[:stale]

    def _evidence(self, stats: Mapping[str, float]) -> float:
        """Surprise of each statistic against its own history, fused; then the statistic joins its history."""
        floor = self._resolution()
        surprises: dict[str, float] = {}
        for name, tail in self.tails_.items():
            v = stats.get(name)
            if v is None or not math.isfinite(v):
                continue
            if len(tail) >= int(self.min_history):
                surprises[name] = tail.log10_p(
                    v, float(self.tail_fraction), int(self.min_tail), float(self.max_shape), floor
                )
            tail.add(v)
        self.last_surprises_ = surprises
        ordered = sorted(surprises.values(), reverse=True)
        decay = float(self.fusion_decay)
        evidence = 0.0
        weight = 1.0
        for s in ordered:
            if s <= 0.0 or weight < 1e-12:
                break
            evidence += weight * s
            weight *= decay
        return evidence

    def _resolution(self) -> float:
        """Differences smaller than this are rounding noise (relative to the magnitude of the values)."""
        vals = self.values_
        return 1e-9 * max(abs(vals[-1]), abs(vals[0]), 1e-300) if vals else 1e-300

    def _suppress_and_score(self, evidence: float) -> float:
        """Damp the repeats of an episode (steps 4 and 5 of the module docstring) and map to [0, 1)."""
        recent = self.recent_evidence_
        i = self.n_
        window = int(self.suppress_window)
        factor = float(self.suppress_factor)
        half = float(self.half_evidence)
        while recent and recent[0][0] < i - window:
            recent.popleft()
        previous_max = recent[0][1] if recent else -1.0
        reported = evidence if evidence > previous_max else evidence * factor
        if window > 0:
            while recent and recent[-1][1] <= evidence:
                recent.pop()
            recent.append((i, evidence))
        if self.last_alarm_ is not None and i - self.last_alarm_ <= int(self.alarm_refractory):
            reported *= factor  # refractory period: the episode has already raised its alarm
        elif reported >= half:
            self.last_alarm_ = i
        self.last_evidence_ = reported
        return reported / (reported + half)

    # Persistence --------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Parameters and running state as plain JSON-able data (exact floats)."""
        self._ensure_started()
        return {
            "format": STATE_FORMAT,
            "class": type(self).__name__,
            "params": self.get_params(),
            "state": {
                "n": self.n_,
                "values": list(self.values_),
                "abs_diffs": list(self.abs_diffs_),
                "baselines": {str(k): list(w.fifo) for k, w in self.baselines_.items()},
                "season_times": list(self.season_times_),
                "season_means": [list(m) for m in self.season_means_],
                "steps": list(self.steps_),
                "last_time": self.last_time_,
                "tails": {
                    name: {"hist": list(tail.hist), "head": tail.head} for name, tail in self.tails_.items()
                },
                "recent_evidence": [[i, f] for i, f in self.recent_evidence_],
                "last_evidence": self.last_evidence_,
                "last_alarm": self.last_alarm_,
            },
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> StreamingAnomalyDetector:
        """Rebuild exactly what `get_state` wrote. Raises ValueError on another format or a missing field."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"detector state: expected format {STATE_FORMAT}, got {data.get('format')!r}")
        if data.get("class") != cls.__name__:
            raise ValueError(f"detector state: expected class {cls.__name__}, got {data.get('class')!r}")
        try:
            det = cls(**dict(data["params"]))
            det.reset()
            st = data["state"]
            det.n_ = int(st["n"])
            det.values_.extend(float(v) for v in st["values"])
            det.abs_diffs_.extend(float(v) for v in st["abs_diffs"])
            for k, fifo in st["baselines"].items():
                det.baselines_[int(k)].restart(float(v) for v in fifo)
            det.season_times_.extend(float(v) for v in st["season_times"])
            det.season_means_.extend(tuple(float(v) for v in m) for m in st["season_means"])
            det.steps_.extend(float(v) for v in st["steps"])
            det.last_time_ = None if st["last_time"] is None else float(st["last_time"])
            for name, saved in st["tails"].items():
                tail = det.tails_[name]
                tail.hist = array("d", (float(v) for v in saved["hist"]))
                tail.head = int(saved["head"])
                tail.srt = array("d", sorted(tail.hist))
            det.recent_evidence_.extend((int(i), float(f)) for i, f in st["recent_evidence"])
            det.last_evidence_ = float(st["last_evidence"])
            det.last_alarm_ = None if st["last_alarm"] is None else int(st["last_alarm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"detector state: bad or missing field ({exc!r})") from exc
        return det


def _mean(values: Sequence[float], lo: int, hi: int) -> float:
    """Mean of values[lo:hi], exactly rounded (so a constant window has exactly its value as mean)."""
    try:
        return math.fsum(values[i] for i in range(lo, hi)) / (hi - lo)
    except OverflowError:
        return math.nan


def _median(values: Iterable[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])
