"""The streaming univariate anomaly detector (predictor.detectors.streaming) and the NAB runner."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictor.detectors.streaming import StreamingAnomalyDetector
from predictor.nab import find_nab_files, parse_timestamp, run_nab

STEP = 300.0  # five-minute samples
SMALL = {"min_history": 20, "baseline_window": 50, "scales": (1, 4)}  # scores short series too


def noisy(n: int, seed: int = 0, *, daily: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1.7e9 + STEP * np.arange(n)
    season = 5.0 * np.sin(2 * np.pi * t / 86400.0) if daily else 0.0
    return t, 20.0 + season + rng.normal(0.0, 1.0, n)


def test_scores_are_in_unit_interval_and_deterministic():
    t, x = noisy(1500)
    x[::97] += np.random.default_rng(3).standard_cauchy(len(x[::97])) * 10  # heavy-tailed outliers
    first = StreamingAnomalyDetector().score_series(t, x)
    second = StreamingAnomalyDetector().score_series(t, x)
    assert first.shape == (1500,)
    assert np.all(np.isfinite(first)) and first.min() >= 0.0 and first.max() < 1.0
    np.testing.assert_array_equal(first, second)


def test_spike_and_level_shift_score_above_the_normal_part():
    t, x = noisy(2400, seed=1)
    x[1800] += 12.0  # a spike of 12 sigma
    x[2100:] += 6.0  # a level shift of 6 sigma
    scores = StreamingAnomalyDetector().score_series(t, x)
    normal = scores[400:1800]
    assert scores[1800] > normal.max()
    assert scores[2100:2110].max() > normal.max()
    assert scores[1800] > 0.5 and normal.max() < 0.5


def test_one_alarm_per_episode_then_a_refractory_period():
    # two spikes a few samples apart, the second larger: one event for NAB (and an operator), so one alarm
    t, x = noisy(2400, seed=1)
    x[1800] += 12.0
    x[1804] += 13.0
    scores = StreamingAnomalyDetector().score_series(t, x)
    assert scores[1800] >= 0.5 and scores[1804] < 0.5
    without = StreamingAnomalyDetector(alarm_refractory=0).score_series(t, x)
    np.testing.assert_array_equal(without[:1801], scores[:1801])
    assert without[1804] >= 0.5  # a new maximum of the evidence: only the refractory period holds it back
    # a much stronger event still alarms inside the refractory period
    x[1806] += 60.0
    assert StreamingAnomalyDetector().score_series(t, x)[1806] >= 0.5


def test_a_recurring_daily_pattern_stops_being_anomalous():
    # a square wave: the daily jump is a surprise at first, then a known pattern
    t = 1.7e9 + STEP * np.arange(288 * 10)
    x = np.where((t // 3600) % 24 < 12, 10.0, 50.0) + np.random.default_rng(2).normal(0, 0.5, len(t))
    scores = StreamingAnomalyDetector().score_series(t, x)
    jumps = np.flatnonzero(np.abs(np.diff(x)) > 20.0) + 1
    assert scores[jumps[1]] > 0.9  # the first jump after the warm-up
    later = scores[jumps[jumps > 288 * 3]]
    assert later.mean() < 0.4 and later.max() < 0.6


def test_nan_and_inf_score_zero_and_leave_the_state_untouched():
    t, x = noisy(900, seed=4)
    dirty_t, dirty_x = t.copy(), x.copy().astype(object)
    bad = [0, 5, 300, 301, 600, 899]
    for i, v in zip(bad, [math.nan, math.inf, -math.inf, None, math.nan, math.inf], strict=True):
        dirty_x[i] = v
    detector = StreamingAnomalyDetector()
    dirty_scores = np.array([detector.update(float(ti), xi) for ti, xi in zip(dirty_t, dirty_x, strict=True)])
    clean = np.ones(len(x), dtype=bool)
    clean[bad] = False
    expected = StreamingAnomalyDetector().score_series(t[clean], x[clean])
    assert np.all(dirty_scores[bad] == 0.0)
    np.testing.assert_array_equal(dirty_scores[clean], expected)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 30])
def test_very_short_series(n):
    t, x = noisy(max(n, 1))
    scores = StreamingAnomalyDetector().score_series(t[:n], x[:n])
    assert scores.shape == (n,)
    assert np.all(scores == 0.0)


def test_constant_series_scores_zero_then_a_change_is_extreme():
    t = 1.7e9 + STEP * np.arange(1200)
    x = np.full(1200, 45.0)
    x[1000:] = 46.0
    scores = StreamingAnomalyDetector().score_series(t, x)
    assert np.all(scores[:1000] == 0.0)
    assert scores[1000] > 0.9


def test_without_timestamps_and_with_datetime64():
    t, x = noisy(600, seed=5)
    by_seconds = StreamingAnomalyDetector().score_series(t, x)
    by_datetime = StreamingAnomalyDetector().score_series((t * 1e9).astype("datetime64[ns]"), x)
    np.testing.assert_array_equal(by_seconds, by_datetime)
    no_time = StreamingAnomalyDetector().score_series(None, x)
    assert no_time.shape == (600,) and np.all((no_time >= 0) & (no_time < 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.one_of(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
            st.sampled_from([math.nan, math.inf, 0.0, 1.0]),
        ),
        min_size=1,
        max_size=160,
    ),
    cut=st.integers(min_value=0, max_value=160),
)
def test_no_look_ahead_prefix_scores_equal_the_first_scores_of_the_whole(values, cut):
    x = np.array(values, dtype=float)
    t = STEP * np.arange(len(x))
    whole = StreamingAnomalyDetector(**SMALL).score_series(t, x)
    cut = min(cut, len(x))
    prefix = StreamingAnomalyDetector(**SMALL).score_series(t[:cut], x[:cut])
    np.testing.assert_array_equal(prefix, whole[:cut])
    assert np.all((whole >= 0.0) & (whole < 1.0))


@pytest.mark.parametrize("cut", [0, 50, 700, 1503, 1999])  # 1503: inside the refractory period
def test_save_and_restore_mid_stream_continues_identically(cut):
    t, x = noisy(2000, seed=6)
    x[1500] += 15.0
    whole = StreamingAnomalyDetector().score_series(t, x)
    first = StreamingAnomalyDetector()
    head = first.score_series(t[:cut], x[:cut])
    state = json.loads(json.dumps(first.get_state()))  # through JSON, as the daemon would store it
    restored = StreamingAnomalyDetector.from_state(state)
    tail = restored.score_series(t[cut:], x[cut:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    assert restored.get_params() == StreamingAnomalyDetector().get_params()


def test_state_errors_and_parameters():
    with pytest.raises(ValueError, match="format"):
        StreamingAnomalyDetector.from_state({"format": 99})
    state = StreamingAnomalyDetector().get_state()
    del state["state"]["tails"]
    with pytest.raises(ValueError, match="missing"):
        StreamingAnomalyDetector.from_state(state)
    with pytest.raises(ValueError):
        StreamingAnomalyDetector(tail_fraction=1.5).update(0.0, 1.0)
    detector = StreamingAnomalyDetector()
    detector.update(0.0, 1.0)
    detector.set_params(fusion_decay=0.5)
    assert detector.fusion_decay == 0.5 and detector.n_ == 0  # a new parameter restarts the stream
    with pytest.raises(ValueError, match="unknown"):
        detector.set_params(bogus=1)
    assert set(vars(StreamingAnomalyDetector())) == set(StreamingAnomalyDetector().get_params())


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write("timestamp,value\n")
        for stamp, value in rows:
            fh.write(f"{stamp},{value}\n")


def test_run_nab_writes_one_scored_csv_per_data_file(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    t, x = noisy(400, seed=7)
    stamps = [str(np.datetime64(int(ti), "s")).replace("T", " ") for ti in t]
    files = {
        "catA/one.csv": list(zip(stamps, [f"{v:.4f}" for v in x], strict=True)),
        "catA/two.csv": list(zip(stamps[:50], ["7"] * 50, strict=True)),
        "catB/three.csv": list(zip(stamps[:3], ["1.5", "", "2"], strict=True)),
    }
    for name, rows in files.items():
        _write(data / name, rows)
    (data / "combined_windows.json").write_text("{}")
    (data / "README.md").write_text("not data")
    (data / "catA" / "notes.txt").write_text("not data")

    written = run_nab(data, out, workers=2, detector="ensemble")

    assert [p.relative_to(out).as_posix() for p in written] == sorted(files)
    assert [p.relative_to(data).as_posix() for p in find_nab_files(data)] == sorted(files)
    for name, rows in files.items():
        with open(out / name, newline="") as fh:
            got = list(csv.reader(fh))
        assert got[0] == ["timestamp", "value", "anomaly_score"]
        assert len(got) == len(rows) + 1
        assert [(r[0], r[1]) for r in got[1:]] == rows  # timestamps and values exactly as in the input
        scores = [float(r[2]) for r in got[1:]]
        assert all(0.0 <= s <= 1.0 for s in scores)
    # the same scores as the detector run directly on the parsed stream
    expected = StreamingAnomalyDetector().score_series(
        [parse_timestamp(s) for s in stamps], [float(f"{v:.4f}") for v in x]
    )
    with open(out / "catA/one.csv", newline="") as fh:
        got_scores = [float(r["anomaly_score"]) for r in csv.DictReader(fh)]
    np.testing.assert_array_equal(got_scores, expected)


def test_parse_timestamp():
    assert parse_timestamp("1970-01-01 00:01:00") == 60.0
    assert parse_timestamp("2015-09-01 11:30:00.000000") == parse_timestamp("2015-09-01T11:30:00Z")
    assert parse_timestamp("12.5") == 12.5
    assert parse_timestamp("not a time") is None
