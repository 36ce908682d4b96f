"""The streaming detector that re-baselines after a persistent level shift (predictor.detectors.calibrated)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from predictor.detectors.calibrated import SelfCalibratingDetector
from predictor.detectors.streaming import StreamingAnomalyDetector
from predictor.nab import DETECTORS, run_nab

STEP = 300.0


def noisy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1.7e9 + STEP * np.arange(n)
    return t, 20.0 + 5.0 * np.sin(2 * np.pi * t / 86400.0) + rng.normal(0.0, 1.0, n)


def test_stationary_noise_with_a_daily_cycle_never_re_baselines():
    t, x = noisy(3000, seed=4)
    detector = SelfCalibratingDetector()
    scores = detector.score_series(t, x)
    assert detector.rebaselines_ == 0
    assert detector.max_history == 4 * 7 * 288  # four weeks of five-minute samples
    # and then it scores exactly as the detector it extends
    np.testing.assert_array_equal(scores, StreamingAnomalyDetector().score_series(t, x))


def test_a_persistent_shift_re_baselines_once_and_a_later_spike_stands_out_more():
    t, x = noisy(3000, seed=0)
    x[2000:] += 12.0  # a step far beyond the daily range
    x[2600] += 7.0  # then a spike in the new regime
    detector = SelfCalibratingDetector()
    scores = detector.score_series(t, x)
    plain = StreamingAnomalyDetector().score_series(t, x)
    assert detector.rebaselines_ == 1
    np.testing.assert_array_equal(scores[:2064], plain[:2064])  # the same until the shift has lasted 64 samples
    assert scores[2000] >= 0.5  # the step itself alarms
    level = [name for name in detector.last_surprises_ if name.startswith("l")]
    assert level and max(detector.last_surprises_[name] for name in level) < 3.0  # the new level is the norm
    assert scores[2600] > plain[2600]


def test_a_steady_ramp_re_baselines_repeatedly():
    t = 1.7e9 + STEP * np.arange(3000)
    x = np.random.default_rng(1).normal(0.0, 1.0, 3000)
    x[1000:] += 0.5 * np.arange(2000)  # a trend much steeper than the noise
    detector = SelfCalibratingDetector()
    detector.score_series(t, x)
    assert detector.rebaselines_ >= 10


@pytest.mark.parametrize("cut", [0, 1500, 2030, 2064, 2999])  # 2030: inside the run of a shift
def test_save_and_restore_mid_stream_continues_identically(cut):
    t, x = noisy(3000, seed=2)
    x[2000:] += 12.0
    whole = SelfCalibratingDetector().score_series(t, x)
    first = SelfCalibratingDetector()
    head = first.score_series(t[:cut], x[:cut])
    restored = SelfCalibratingDetector.from_state(json.loads(json.dumps(first.get_state())))
    np.testing.assert_array_equal(np.concatenate([head, restored.score_series(t[cut:], x[cut:])]), whole)
    state = first.get_state()
    del state["state"]["run"]
    with pytest.raises(ValueError, match="missing"):
        SelfCalibratingDetector.from_state(state)


def test_run_nab_runs_the_named_detector(tmp_path):
    t, x = noisy(600, seed=3)
    x[450:] += 20.0
    src = tmp_path / "data" / "cat" / "one.csv"
    src.parent.mkdir(parents=True)
    stamps = [str(np.datetime64(int(v), "s")).replace("T", " ") for v in t]
    src.write_text("timestamp,value\n" + "".join(f"{s},{v!r}\n" for s, v in zip(stamps, x.tolist(), strict=True)))
    written = {}
    for name in DETECTORS:
        out = tmp_path / name
        run_nab(tmp_path / "data", out, workers=1, detector=name)
        with open(out / "cat" / "one.csv", newline="") as fh:
            written[name] = [float(r["anomaly_score"]) for r in csv.DictReader(fh)]
    assert written["calibrated"] == SelfCalibratingDetector().score_series(t, x).tolist()
    assert written["ensemble"] == StreamingAnomalyDetector().score_series(t, x).tolist()
    assert written["calibrated"] != written["ensemble"]
    with pytest.raises(ValueError, match="unknown detector"):
        run_nab(tmp_path / "data", tmp_path / "x", detector="nope")
