"""The pieces of evidence of the rollout scorer, each a function of one `Reading` returning its risk and why.

`ForecastScorer.assess` builds one `Reading` per rollout, metric and tick, asks every piece in `PIECES` order, and
`strongest` keeps the highest risk (the first of equal ones). A piece returns `Evidence(risk, breach_at, reason)`,
an `Abstention(note)` that says why it could not speak (the note joins the assessment's reason), or None when it
has nothing to say. The pieces:

1. `current_breach`: the Deployment breaches now (the median of its last 5 samples, so an outlier or two is not a
   breach);
2. `new_against_old`: new pods against old pods at the same moments, a sequential test. The Deployment once every
   pod runs the new revision is the old pods' level plus the new-minus-old gap. Each aligned sample adds one gap;
   the evidence is the smaller of the mean gap and the margin beyond the threshold held `settle_seconds` ahead
   (following the margins' line when it closes, never when it grows), in standard errors built from the scatter
   seen in old pods scaled to the new pods' count. A gap many times the scatter counts from the first new pods'
   first sample (an abrupt regression breaches within a minute); a small one needs more samples; a gap that
   closes (the warm-up of new pods) is held back by the line's prediction error as much as by its slope. A gap of
   DECISIVE_Z standard errors (a one-sided z-test, false-positive probability DECISIVE_FALSE_POSITIVE) that is
   beyond the threshold by more than old pods are within it is `decisive`: the policy pauses on its first tick;
3. `recurring_events`: a count of events (`increase()` of restarts: read from the MetricSpec's query or unit) is
   never extrapolated (a restart is one event, not a trend); new pods whose count recurs (`recurring_events`
   within the window, on two samples in a row) while old pods stay below one count as a crash loop when the
   restarts keep new pods from being ready or the count still rises (two counter resets of a pod that serves
   again are no loop);
4. `pod_states`: the new pods' own states (`RolloutState.pods`) on the metric that counts restarts: a container
   waiting in a crash reason, restarts old pods' rate does not explain, unready beyond the readiness allowance
   while old pods are ready; no pod information, no evidence;
5. `trend_forecasts`: the local trend of the new pods (and of the Deployment once every pod is new: before, its
   value moves with the mix of new and old pods, so its trend starts afresh then and counts once it spans half its
   memory): P(the trend's path is beyond the threshold within the horizon), from a discounted quadratic
   regression (`LocalTrend`), extrapolated at most EXTRAPOLATION_FACTOR times as far as it reaches back (a young
   trend says little about the next half hour). A rise is extrapolated as a straight line only when the data
   rules out its flattening (`flatten_z` standard errors of the curvature); until then it is assumed to level off
   at the flattest curvature the data allows, so a cache filling up waits and a leak of constant pace acts early.
   With a trained daily season (`SeasonalProfile`) the trends see the samples net of it and the season's worst
   offset within the horizon is added back as a level; a breach the season alone brings is capped at alert.

`still_building` is no risk: it says whether a trend still heads for the threshold, which keeps a revision watched
beyond `bake`. The isolation forest's verdict (`ForecastScorer._with_forest`) joins these when a forest is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from predictor.config import format_duration
from predictor.detectors.evidence_reading import (
    EXTRAPOLATION_FACTOR,
    RELEASE_Z,
    Reading,
    fmt,
    normal_cdf,
)
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import Direction, PodState, Scope

SETTLING_RISK_CAP = 0.5
"""Risk of a breach by new pods whose forecast decays back below the threshold: warming up, not broken."""
NEW_POD_BREACH_RISK = 0.95
"""Risk of a persisted, release-specific breach of the new pods (times the confidence of the margin)."""
DECISIVE_FALSE_POSITIVE = 1e-6
"""The one-sided z-test of new against old pods that makes a gap decisive from one sample: with no release effect
(the gap's mean at most zero, its scatter the old pods'), a statistic this far out has at most this probability."""
DECISIVE_Z = NormalDist().inv_cdf(1.0 - DECISIVE_FALSE_POSITIVE)
"""4.75 standard errors."""


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: the risk it gives, when it dates the breach (None: not dated), and why."""

    risk: float
    breach_at: float | None
    reason: str
    decisive: bool = False
    """Overwhelming on its own: the policy need not wait for a second tick (`Assessment.decisive`)."""


@dataclass(frozen=True)
class Abstention:
    """A piece of evidence that could not speak, and why (e.g. too few new pods to compare)."""

    note: str


Finding = Evidence | Abstention | None


def current_breach(r: Reading) -> Evidence | None:
    if not r.dep_fresh:
        return None
    level = r.robust_now(Scope.DEPLOYMENT)
    if level is None or not r.spec.breached(level):
        return None
    name, thr = r.spec.name, r.spec.threshold
    head = (f"{name}: deployment {level:.4g} {r.op} {thr:g} now (median of the last "
            f"{min(r.settings.robust_samples, len(r.tracks[Scope.DEPLOYMENT].values))} samples)")
    shared = r.shared_note()
    if shared:
        return Evidence(SHARED_CAUSE_RISK_CAP, r.now, f"{head}; {shared}")
    if r.settles(Scope.DEPLOYMENT):
        return Evidence(SETTLING_RISK_CAP, r.now, f"{head}, but its forecast falls back below within "
                         f"{format_duration(r.settings.settle_seconds)}: settling, not acting yet")
    return Evidence(1.0, r.now, head)

def new_against_old(r: Reading) -> Evidence | Abstention | None:
    """New pods against old pods at the same moments, projected to the whole Deployment: a sequential test.
    Each aligned sample adds one new-minus-old difference; the statistic is the smaller of the mean gap and the
    margin of the projected level beyond the threshold held `settle_seconds` ahead (`held_margin`), in standard
    errors from the scatter of old pods scaled to the new pods' count. A gap many times the scatter counts from
    the first sample; a small one needs more samples; a gap that closes (warm-up) is held back. The risk is
    NEW_POD_BREACH_RISK times the normal CDF of the statistic less RELEASE_Z."""
    if not r.new_fresh or not r.old_fresh or r.rollout.old_replicas == 0:
        return None
    new_track = r.tracks[Scope.NEW]
    pairs = r.pairs(r.settings.robust_samples)
    pods = new_track.pods[-1] if new_track.pods else 0
    if not r.enough_new_pods():
        return Abstention(f"new pods abstained: {pods} new pod(s) < {r.settings.min_new_pods}")
    if len(pairs) < r.settings.min_new_samples:
        return Abstention(f"new-vs-old abstained: {len(pairs)} aligned sample(s) < {r.settings.min_new_samples}")
    old_ref = r.old_ref()
    assert old_ref is not None
    gaps = [r.sign * (v - o) for _, v, o in pairs]
    margins = [r.badness(old_ref + r.sign * g, Scope.NEW) for g in gaps]
    if margins[-1] < 0 or not r.over(pairs[-1][1], Scope.NEW):
        return None  # the latest sample is within the threshold: no persistent breach
    n = len(pairs)
    delta = r.sign * (sum(gaps) / n)
    per_new_pod = old_ref + delta
    projected = per_new_pod * r.rollout.desired_replicas if r.per_pod else per_new_pod
    name, thr = r.spec.name, r.spec.threshold
    new_now = new_track.values[-1]
    head = (f"{name}: new pods {new_now:.4g} vs old pods {old_ref:.4g} ({delta:+.4g} over {n} "
            f"sample(s), {pods} new pod(s)); with every pod new the deployment reaches {projected:.4g} {r.op} "
            f"{thr:g}")
    effect = r.release_effect
    if r.over(old_ref, Scope.OLD) or (effect is not None and not effect[1]):
        return Evidence(SHARED_CAUSE_RISK_CAP, r.now, f"{head}, but old pods are as bad (median "
                         f"{old_ref:.4g}): not this release")
    scatter = r.scatter(pods)
    held, error, closing = r.held_margin(pairs, margins, scatter)
    z = min(held, sum(gaps) / n) / error
    confidence = normal_cdf(z - RELEASE_Z)
    breach_at = r.mix_breach_time(new_now, old_ref)
    when = "now" if breach_at <= r.now else f"in {format_duration(breach_at - r.now)}"
    trend = f", closing by {closing * 60:.3g}/min" if closing > 0 else ""
    reason = (f"{head}; margin held {format_duration(r.settings.settle_seconds)} on {held:+.3g}{trend}: {z:.1f} "
              f"standard errors (scatter {scatter:.2g} per sample), confidence {confidence:.2f}")
    if held <= 0:
        return Evidence(min(SETTLING_RISK_CAP, NEW_POD_BREACH_RISK * confidence), None,
                         f"{reason}: the gap closes, back within the threshold by then: warming up")
    # decisive: many standard errors (DECISIVE_Z) and far beyond the threshold, beyond it by at least as much again
    # as the old pods are within it; a marginal gap keeps the warm-up guard (a second sample to see it close)
    decisive = z >= DECISIVE_Z and held >= -r.badness(old_ref, Scope.OLD)
    if decisive:
        reason += (f"; decisive from this sample: >= {DECISIVE_Z:.2f} standard errors (false-positive probability "
                   f"{DECISIVE_FALSE_POSITIVE:g}) and beyond the threshold by more than old pods are within it")
    return Evidence(NEW_POD_BREACH_RISK * confidence, breach_at, f"{reason} (breach {when} as the rollout "
                    f"proceeds)", decisive=decisive)


def recurring_events(r: Reading) -> Evidence | None:
    """A count of events (restarts) that recurs in the new pods (at least `recurring_events` within the window,
    on the last two samples) while old pods stay below one, and goes on: either the restarts keep new pods
    from being ready (a crash loop: the kubelet backs off, the pod never serves), or the count still rises on
    each of the last two samples. New pods that restarted a few times and serve again (counter resets, an
    OOM kill or two) are worth an alert, not an action: one or two events are no loop."""
    if not r.counts_events or not r.new_fresh or r.spec.direction is not Direction.ABOVE:
        return None
    values = list(r.tracks[Scope.NEW].values)
    needed = min(float(r.settings.recurring_events), r.spec.threshold)
    if len(values) < 2 or min(values[-2:]) < needed:
        return None
    name, thr = r.spec.name, r.spec.threshold
    old = r.old_ref()
    rollout = r.rollout
    unready = rollout.updated_replicas - rollout.ready_new_replicas
    rising = len(values) >= 3 and values[-3] < values[-2] < values[-1]
    head = (f"{name}: new pods {values[-1]:.4g} (>= {needed:g} events on the last 2 samples: recurring) while "
            f"old pods {fmt(old)}; threshold {thr:g}: a count is not extrapolated")
    if old is not None and old >= 1.0:
        return Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head}, but old pods restart too: not this release")
    if old is None:
        shared = r.shared_note()
        if shared:
            return Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head}; {shared}")
    if unready <= 0 and not rising:
        return Evidence(SETTLING_RISK_CAP, None, f"{head}; every new pod is ready and the count no longer "
                         f"rises: restarts the pods recovered from, no loop")
    why = (f"{unready} of {rollout.updated_replicas} new pod(s) not ready: a crash loop" if unready > 0 else
           f"still rising ({values[-3]:.4g}, {values[-2]:.4g}, {values[-1]:.4g})")
    return Evidence(NEW_POD_BREACH_RISK, None, f"{head}; {why}, it goes on (P(breach within "
                     f"{format_duration(r.horizon)}) = {NEW_POD_BREACH_RISK:.2f})")

def trend_forecasts(r: Reading) -> list[Evidence]:
    found: list[Evidence] = []
    if r.counts_events:
        return found
    old = r.trend_risk(Scope.OLD) if r.old_fresh else None
    old_level = r.old_ref()
    for scope, label, fresh in ((Scope.DEPLOYMENT, "deployment", r.dep_fresh and not r.mixing),
                                (Scope.NEW, "new pods", r.new_fresh and r.enough_new_pods())):
        if not fresh:
            continue
        result = r.trend_risk(scope)
        if result is None:
            continue
        risk, fc = result
        if risk < 0.05:
            continue
        name, thr = r.spec.name, r.limit(scope)
        if thr != r.spec.threshold:
            label += " (per pod)"
        reach = r.reach(scope)
        within = format_duration(reach)
        when = f"reaches it in {format_duration(fc.seconds)}" if fc.seconds is not None else "stays short of it"
        shape = ("keeping its pace" if fc.damping_seconds is None else
                 f"levelling off with time constant {format_duration(fc.damping_seconds)} at the flattest the "
                 f"data allows")
        reason = (f"{name}: {label} {fc.level:.4g} trending {fc.slope * 60:+.3g}/min ({shape}), forecast "
                  f"{fc.forecast:.4g} ± {1.96 * fc.sd:.2g} in {within}; threshold {thr:g}: mean {when}, "
                  f"P(breach within {within}) = {fc.probability:.2f}{r.season_note(scope)}")
        if reach < r.horizon:
            reason += (f"; a trend of {format_duration(reach / EXTRAPOLATION_FACTOR)} is extrapolated "
                       f"{EXTRAPOLATION_FACTOR:g} times as far, not the whole {format_duration(r.horizon)}")
        if scope is Scope.NEW:
            reason += "; the deployment follows as the rollout completes"
        if risk > SETTLING_RISK_CAP and r.settles(scope):
            risk = SETTLING_RISK_CAP
            reason += (f"; but it falls back below within {format_duration(r.settings.settle_seconds)}: "
                       f"warming up or settling")
        if risk > SHARED_CAUSE_RISK_CAP:
            shared = r.shared_note()
            alone = r.season_alone_probability(scope)
            if not shared and alone is not None and alone >= r.settings.shared_fraction * fc.probability:
                shared = (f"the trained season alone takes it there (P = {alone:.2f} with no trend of its "
                          f"own): the time of day's, not this release's")
            if old is not None and old[1].probability >= 0.2 and (
                    old[1].probability >= r.settings.shared_fraction * fc.probability):
                shared = f"old pods forecast to breach too (P = {old[1].probability:.2f}): not this release"
            elif old_level is not None and r.over(old_level, Scope.OLD):
                shared = f"old pods breach too ({old_level:.4g}): not this release"
            if shared:
                risk = SHARED_CAUSE_RISK_CAP
                reason += f"; {shared}"
        breach_at = r.now + fc.seconds if fc.seconds is not None else None
        found.append(Evidence(risk, breach_at, reason))
    return found

def quiet_forecast(r: Reading) -> str:
    within = format_duration(r.horizon)
    if r.mixing and not r.counts_events:
        return (f"no breach predicted within {within} (the deployment's own trend waits until every pod is new; "
                f"neither the new pods' trend nor their comparison with old pods predicts one)")
    result = r.trend_risk(Scope.DEPLOYMENT) if r.dep_fresh and not r.counts_events else None
    if result is None:
        return f"no breach predicted within {within} (" + (
            "a count is not extrapolated)" if r.counts_events else "forecast not ready)")
    fc = result[1]
    within = format_duration(r.reach(Scope.DEPLOYMENT))
    return (f"forecast {fc.forecast:.4g} ± {1.96 * fc.sd:.2g}, P(breach within {within}) = "
            f"{fc.probability:.2f}; no breach predicted")


# Pod states -------------------------------------------------------------------------------------------------
CRASH_WAITING_REASONS = frozenset({
    "CrashLoopBackOff", "Error", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerError",
    "CreateContainerConfigError", "RunContainerError", "StartError",
})
"""A container's `state.waiting.reason` that says it cannot run: crashing, or its image or config unusable."""
RESTART_SURPRISE = 0.01
"""New pods' restarts are this release's when old pods, restarting at their own rate per pod-second, would make as
many in the new pods' summed age with at most this probability (a Poisson tail: the test's false-positive rate)."""
UNREADY_RISK = 0.8
"""Risk of new pods that stay unready beyond the readiness allowance while old pods are ready: pause, not undo (an
allowance set too short for a slow start would otherwise roll back a sound release)."""


def _poisson_tail(count: int, mean: float) -> float:
    """P(N >= count) for N ~ Poisson(mean)."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    term, below = math.exp(-mean), 0.0
    for i in range(count):
        below += term
        term *= mean / (i + 1)
    return max(0.0, 1.0 - below)


def _age(pod: PodState, now: float) -> float | None:
    return max(0.0, now - pod.created_at) if pod.created_at is not None else None


def pod_states(r: Reading) -> Evidence | None:
    """New pods' own states (`RolloutState.pods`), from their first occurrence, on the metric that counts restarts
    (the crash-loop family's breach: more than 3 restarts in 5 minutes):

    - a new pod's container waiting in a CRASH_WAITING_REASONS reason while no old pod waits in one;
    - new pods' restarts beyond what old pods' own restart rate explains (RESTART_SURPRISE): acting when a
      restarted pod is not ready or restarted twice, an alert for one restart of a pod that serves again;
    - new pods unready for longer than the readiness allowance (`RolloutState.ready_allowance_seconds`, else the
      scorer's `ready_allowance_seconds`) while every old pod is ready.

    Without pod information (the source does not know pods, or none of the new ReplicaSet is listed yet) there is no
    evidence: never a signal by itself."""
    if not r.counts_events or r.spec.direction is not Direction.ABOVE:
        return None
    rollout, name = r.rollout, r.spec.name
    new, old = rollout.new_pods, rollout.old_pods
    if not new:
        return None
    waiting = [p for p in new if p.waiting_reason in CRASH_WAITING_REASONS]
    if waiting:
        pod = waiting[0]
        head = (f"{name}: new pod {pod.name} waiting in {pod.waiting_reason} ({pod.restarts} restart(s)"
                + (f", {len(waiting)} of {len(new)} new pods waiting" if len(waiting) > 1 else "") + ")")
        also = next((p for p in old if p.waiting_reason in CRASH_WAITING_REASONS), None)
        if also is not None:
            return Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head}, but old pod {also.name} waits in "
                            f"{also.waiting_reason} too: not this release")
        return Evidence(NEW_POD_BREACH_RISK, None, f"{head} while no old pod does: it cannot run, evidence from "
                        f"its first occurrence")
    restarts = sum(p.restarts for p in new)
    if restarts > 0:
        return _new_restarts(r, new, old, restarts)
    return _never_ready(r, new, old)


def _new_restarts(r: Reading, new: Sequence[PodState], old: Sequence[PodState], restarts: int) -> Evidence:
    name, now = r.spec.name, r.now
    old_restarts = sum(p.restarts for p in old)
    old_ages = [_age(p, now) for p in old]
    new_ages = [_age(p, now) for p in new]
    if old_restarts == 0:
        expected = 0.0
        basis = f"no old pod restarted ({len(old)} old pod(s))"
    elif all(a is not None for a in old_ages + new_ages) and sum(a for a in old_ages if a is not None) > 0:
        rate = old_restarts / sum(a for a in old_ages if a is not None)
        expected = rate * sum(a for a in new_ages if a is not None)
        basis = (f"old pods restart {rate * 3600:.3g} times an hour per pod, {expected:.2g} expected in the new "
                 f"pods' age")
    else:
        expected = math.inf
        basis = f"old pods restarted {old_restarts} time(s), at a rate unknown without their ages"
    tail = _poisson_tail(restarts, expected) if math.isfinite(expected) else 1.0
    restarted = [p for p in new if p.restarts > 0]
    head = (f"{name}: new pods restarted {restarts} time(s) ({', '.join(f'{p.name} {p.restarts}' for p in restarted)})"
            f"; {basis}")
    if tail >= RESTART_SURPRISE:
        return Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head} (P = {tail:.2g}): old pods restart as much, not this "
                        f"release")
    head += f" (P = {tail:.2g} < {RESTART_SURPRISE:g})"
    unready = [p for p in restarted if not p.ready]
    if unready:
        return Evidence(NEW_POD_BREACH_RISK, None, f"{head}; {unready[0].name} restarted and is not ready: a crash "
                        f"loop from its first restart")
    if max(p.restarts for p in restarted) >= 2:
        return Evidence(NEW_POD_BREACH_RISK, None, f"{head}; a new pod restarted twice or more: a crash loop")
    return Evidence(SETTLING_RISK_CAP, None, f"{head}; the pod serves again after one restart: an alert, no loop yet")


def _never_ready(r: Reading, new: Sequence[PodState], old: Sequence[PodState]) -> Evidence | None:
    allowance = r.rollout.ready_allowance_seconds
    if allowance is None:
        allowance = r.settings.ready_allowance_seconds
    overdue = [p for p in new if not p.ready and (age := _age(p, r.now)) is not None and age > allowance]
    if not overdue or not old or not all(p.ready for p in old):
        return None
    pod = overdue[0]
    age = _age(pod, r.now)
    assert age is not None
    return Evidence(UNREADY_RISK, None, f"{r.spec.name}: {len(overdue)} of {len(new)} new pod(s) not ready "
                    f"({pod.name} for {format_duration(age)}, beyond the readiness allowance of "
                    f"{format_duration(allowance)}) while all {len(old)} old pod(s) are ready: the new revision does "
                    f"not become ready")


BUILDING_Z = 2.0
"""A trend whose straight-line slope toward the threshold is this many standard errors is still building."""


def still_building(r: Reading) -> bool:
    """Whether a trend of the new pods (or of the Deployment once every pod is new) still heads for the threshold:
    its slope toward it is BUILDING_Z standard errors or more, however far the breach. Not a risk: it keeps the
    revision watched beyond `bake` (`policy.beyond_bake`), so a leak too slow to predict a breach yet is still
    read when it is. A count of events has no trend."""
    if r.counts_events:
        return False
    for scope, fresh in ((Scope.NEW, r.new_fresh), (Scope.DEPLOYMENT, r.dep_fresh and not r.mixing)):
        trend = r.tracks[scope].trend
        if not fresh or trend is None or trend.count < r.settings.min_forecast_samples:
            continue
        z = trend.slope_z(r.spec.direction)
        if z is not None and z >= BUILDING_Z:
            return True
    return False


def _as_findings(result: Finding | Sequence[Evidence]) -> Iterable[Evidence | Abstention]:
    if result is None:
        return ()
    if isinstance(result, Evidence | Abstention):
        return (result,)
    return result


Piece = Callable[[Reading], Finding | Sequence[Evidence]]
"""A piece of evidence: a function of one reading."""
PIECES: tuple[Piece, ...] = (
    current_breach, new_against_old, recurring_events, pod_states, trend_forecasts,
)
"""The pieces of evidence in the order they are asked; on equal risks the first wins."""


def gather(reading: Reading, pieces: Sequence[Piece] = PIECES) -> tuple[list[Evidence], list[str]]:
    """Every piece's evidence on this reading, in order, and the notes of those that abstained."""
    evidence: list[Evidence] = []
    notes: list[str] = []
    for piece in pieces:
        for found in _as_findings(piece(reading)):
            if isinstance(found, Abstention):
                notes.append(found.note)
            else:
                evidence.append(found)
    return evidence, notes


def strongest(evidence: Sequence[Evidence]) -> Evidence | None:
    """The one place pieces of evidence are combined: the highest risk wins (the first of equal ones)."""
    return max(evidence, key=lambda e: e.risk) if evidence else None
