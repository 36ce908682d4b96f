"""How long one tick of scoring takes for 2,000 Deployments x 6 metrics, on one core, after a warm history.

Prints figures; not a timed test. Run: `python benchmarks/score_speed.py [--deployments 2000] [--ticks 3]`
(about a minute: building the synthetic history takes longer than scoring it).
Every Deployment is mid-rollout (new and old pods, the worst case: three series per metric), its history is
filled by `--warm-ticks` earlier ticks through the same scorer (so forecasters are warm and each measured tick
feeds one new sample per series), and the measured ticks then score every (Deployment, metric) once, as
`Engine._decide` does. The data are random walks around healthy levels; the cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from predictor.config import MetricSpec, default_metric_pack
from predictor.detectors.base import Scorer
from predictor.detectors.forest import RolloutIsolationForest, history_features
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.features import MetricHistory

STEP = 15.0
START = 1_767_268_800.0


def metric_specs() -> list[MetricSpec]:
    pack = list(default_metric_pack())
    extra = MetricSpec(name="saturation_ratio", query=pack[0].query, threshold=0.9)
    return [*pack, extra][:6]


def rollouts(count: int) -> list[RolloutState]:
    return [
        RolloutState(ref=DeploymentRef(f"ns{i % 50}", f"app{i}"), revision=2, new_hash="n", old_hashes=("o",),
                     desired_replicas=8, updated_replicas=3, ready_new_replicas=3, old_replicas=5,
                     started_at=START - 600.0)
        for i in range(count)
    ]


def observe(history: MetricHistory, states: list[RolloutState], specs: list[MetricSpec], t: float,
            rng: np.random.Generator) -> None:
    noise = rng.normal(0.0, 0.02, size=(len(states), len(specs), 3))
    for i, state in enumerate(states):
        for j, spec in enumerate(specs):
            base = spec.threshold * 0.4
            history.add(state.revision, [
                Observation(state.ref, spec.name, scope, t, base * (1.0 + noise[i, j, k]), pods=3 if k == 1 else 5)
                for k, scope in enumerate((Scope.DEPLOYMENT, Scope.NEW, Scope.OLD))
            ])


def tick(scorer: Scorer, history: MetricHistory, states: list[RolloutState], specs: list[MetricSpec],
         now: float) -> None:
    for state in states:
        for spec in specs:
            scorer.assess(state, spec, history, now, 600.0)


def healthy_forest(deployments: int, warm_ticks: int, seed: int) -> RolloutIsolationForest:
    """A forest fitted on the feature vectors of the same synthetic (healthy) rollouts, as the retraining job
    would fit one on history."""
    rng = np.random.default_rng(seed)
    specs = metric_specs()
    states = rollouts(deployments)
    history = MetricHistory(lookback_seconds=600.0)
    now = START
    for _ in range(warm_ticks):
        observe(history, states, specs, now, rng)
        now += STEP
    keys = [(s.ref, s.revision) for s in states]
    rows = history_features(history, keys, [s.name for s in specs], now - STEP)
    return RolloutIsolationForest([s.name for s in specs], random_state=seed).fit(rows)


def measure(name: str, make: Callable[[], Scorer], deployments: int, warm_ticks: int, ticks: int,
            seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    specs = metric_specs()
    states = rollouts(deployments)
    history = MetricHistory(lookback_seconds=600.0)
    scorer = make()
    now = START
    for _ in range(warm_ticks):
        observe(history, states, specs, now, rng)
        tick(scorer, history, states, specs, now)
        now += STEP
    timings = []
    for _ in range(ticks):
        observe(history, states, specs, now, rng)
        began = time.perf_counter()
        tick(scorer, history, states, specs, now)
        timings.append(time.perf_counter() - began)
        now += STEP
    print(f"{name:22s} {deployments} Deployments x {len(specs)} metrics: "
          f"median {statistics.median(timings):.2f} s per tick (min {min(timings):.2f}, max {max(timings):.2f}; "
          f"{statistics.median(timings) / (deployments * len(specs)) * 1e6:.0f} us per assessment)")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--warm-ticks", type=int, default=12, help="ticks of history before measuring")
    parser.add_argument("--ticks", type=int, default=3, help="measured ticks")
    parser.add_argument("--seed", type=int, default=None, help="seed of the synthetic data (default: random)")
    parser.add_argument("--no-forest", action="store_true", help="skip the run with an isolation forest")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    pinned = ""
    if hasattr(os, "sched_setaffinity"):  # one core, as the daemon's scoring runs in one thread
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = ", pinned to one core"
    print(f"python {platform.python_version()} on {platform.machine()}{pinned}, data seed {seed}; "
          f"tick budget {STEP:g} s")
    measure("ThresholdTrendScorer", ThresholdTrendScorer, args.deployments, args.warm_ticks, args.ticks, seed)
    measure("ForecastScorer", lambda: ForecastScorer(step_seconds=STEP), args.deployments, args.warm_ticks,
            args.ticks, seed)
    if not args.no_forest:
        forest = healthy_forest(args.deployments, args.warm_ticks, seed)
        measure("ForecastScorer+forest", lambda: ForecastScorer(step_seconds=STEP, forest=forest), args.deployments,
                args.warm_ticks, args.ticks, seed)


if __name__ == "__main__":
    main()
