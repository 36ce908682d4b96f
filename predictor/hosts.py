"""Several hosts' adapters as one: the engine takes one RolloutSource and one Actuator, a config may watch
Deployments and Argo Rollouts side by side. `daemon.build_daemon` wires these; a decision goes to the actuator
of its workload's kind (`DeploymentRef.kind`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from predictor.domain import Decision, RolloutState
from predictor.ports import ActionResult, Actuator, RolloutSource


class CombinedRolloutSource:
    """The rollouts of every source, in one sorted list; online when every source is."""

    def __init__(self, sources: Sequence[RolloutSource]) -> None:
        self.sources = tuple(sources)

    def sync(self) -> None:
        for source in self.sources:
            sync = getattr(source, "sync", None)
            if sync is not None:
                sync()

    def list_rollouts(self, at: float) -> list[RolloutState]:
        states = [state for source in self.sources for state in source.list_rollouts(at)]
        return sorted(states, key=lambda state: state.ref)

    def is_online(self) -> bool:
        return all(source.is_online() for source in self.sources)

    def close(self, *args: Any) -> None:
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is not None:
                close(*args)


class ActuatorByKind:
    """Hands each decision to the actuator of its workload's kind (`deployment`, `rollout`, `service`)."""

    def __init__(self, actuators: Mapping[str, Actuator]) -> None:
        self.actuators = dict(actuators)

    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        actuator = self.actuators.get(decision.ref.kind)
        if actuator is None:
            raise RuntimeError(f"no actuator for {decision.ref.kind} {decision.ref}")
        return actuator.apply(decision, rollout)

    def ensure_recorded(self, rollout: RolloutState) -> bool:
        actuator = self.actuators.get(rollout.ref.kind)
        ensure = getattr(actuator, "ensure_recorded", None)
        return True if ensure is None else bool(ensure(rollout))
