"""A running daemon for the status tests: real HTTP server, engine and forecast scorer over the simulated cluster,
ticked by hand on a stepped clock until the error regression has been undone."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from predictor.config import ServerConfig
from predictor.daemon import Daemon, serve_http
from predictor.demo import SimulatedCluster, demo_config
from predictor.domain import Action, DeploymentRef
from predictor.engine import Engine
from predictor.scoring import build_scorer
from predictor.simulate import SimulatedRollout

START = 1_767_268_800.0


class SteppedClock:
    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


@contextmanager
def running_daemon(ticks: int = 16) -> Iterator[tuple[Daemon, str]]:
    """(daemon, base URL) after `ticks` ticks of an error regression (undone) and a healthy release."""
    config = replace(demo_config(Action.UNDO), server=ServerConfig(host="127.0.0.1", port=0))
    cluster = SimulatedCluster([
        SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START, seed=7),
        SimulatedRollout(DeploymentRef("shop", "catalog"), "healthy", START, seed=9),
    ])
    scorer, _ = build_scorer(config, scorer="forecast")
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster, scorer=scorer)
    clock = SteppedClock(START)
    daemon = Daemon(config, engine, readiness_checks={}, clock=clock)
    daemon._server = serve_http(daemon, "127.0.0.1", 0)  # no scheduler: the test steps the clock and ticks itself
    try:
        for _ in range(ticks):
            clock.t += 15.0
            daemon.tick()
        assert cluster.actions, "the error regression was acted on"
        yield daemon, f"http://127.0.0.1:{daemon.port}"
    finally:
        daemon.stop()
