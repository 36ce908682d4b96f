"""Tables for predictor.sources.split: pods to scopes, combining per scope, histogram quantiles, query rendering."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from predictor.config import MetricSpec
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.sources.split import (
    NEVER_MATCHES,
    PodSample,
    bucket_quantile,
    escape_regex,
    parse_pod_name,
    render_query,
    split_observations,
)

AT = 1_700_000_000.0
INF = math.inf
NAN = math.nan


def rollout(
    name: str = "web", namespace: str = "shop", new: str | None = "n3w", old: tuple[str, ...] = ("0ld",)
) -> RolloutState:
    return RolloutState(
        ref=DeploymentRef(namespace, name), revision=2, new_hash=new, old_hashes=old, desired_replicas=4,
        updated_replicas=2, ready_new_replicas=2, old_replicas=2, started_at=AT - 300,
    )


def spec(**kwargs: object) -> MetricSpec:
    fields: dict[str, object] = {"name": "m", "query": "q", "threshold": 1.0}
    fields.update(kwargs)
    return MetricSpec(**fields)  # type: ignore[arg-type]


def by_scope(observations: list[Observation], ref: DeploymentRef | None = None) -> dict[Scope, Observation]:
    return {o.scope: o for o in observations if ref is None or o.ref == ref}


# --- pod names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ("web-n3w-abcde", ("web", "n3w")),
        ("web-api-v2-7d4b9c-x2x9z", ("web-api-v2", "7d4b9c")),
        ("web-abcde", None),
        ("web", None),
        ("web--abcde", None),
        ("-n3w-abcde", None),
    ],
)
def test_parse_pod_name_splits_from_the_right(pod: str, expected: tuple[str, str] | None) -> None:
    assert parse_pod_name(pod) == expected


# --- aggregate -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregate", "deployment", "new", "old"),
    [("max", 5.0, 3.0, 5.0), ("min", 1.0, 1.0, 4.0), ("sum", 13.0, 4.0, 9.0), ("mean", 13.0 / 4, 2.0, 4.5)],
)
def test_aggregate_per_scope(aggregate: str, deployment: float, new: float, old: float) -> None:
    samples = [
        PodSample("shop", "web-n3w-aaaaa", 1.0),
        PodSample("shop", "web-n3w-bbbbb", 3.0),
        PodSample("shop", "web-0ld-ccccc", 4.0),
        PodSample("shop", "web-0ld-ddddd", 5.0),
    ]
    obs = by_scope(split_observations(spec(aggregate=aggregate), [rollout()], samples, AT))
    assert [obs[s].value for s in (Scope.DEPLOYMENT, Scope.NEW, Scope.OLD)] == pytest.approx([deployment, new, old])
    assert [obs[s].pods for s in (Scope.DEPLOYMENT, Scope.NEW, Scope.OLD)] == [4, 2, 2]
    assert all(o.error is None and o.time == AT and o.metric == "m" for o in obs.values())


def test_unknown_hashes_other_namespaces_and_other_deployments_are_ignored() -> None:
    samples = [
        PodSample("shop", "web-n3w-aaaaa", 1.0),
        PodSample("shop", "web-0ld-bbbbb", 2.0),
        PodSample("shop", "web-0th3r-ccccc", 100.0),  # a hash the rollout does not track
        PodSample("other", "web-n3w-ddddd", 100.0),  # same name and hash, other namespace
        PodSample("shop", "web-api-n3w-eeeee", 100.0),  # 'web-api' is another Deployment
        PodSample("shop", "web-n3w", 100.0),  # not a pod name of a ReplicaSet
    ]
    obs = by_scope(split_observations(spec(aggregate="max"), [rollout()], samples, AT))
    assert (obs[Scope.DEPLOYMENT].value, obs[Scope.NEW].value, obs[Scope.OLD].value) == (2.0, 1.0, 2.0)


def test_deployment_names_with_dashes_and_prefixes_do_not_mix() -> None:
    web = rollout("web", new="aaa111", old=())
    web_api = rollout("web-api", new="bbb222", old=("ccc333",))
    samples = [
        PodSample("shop", "web-aaa111-xxxxx", 1.0),
        PodSample("shop", "web-api-bbb222-yyyyy", 2.0),
        PodSample("shop", "web-api-ccc333-zzzzz", 3.0),
        PodSample("shop", "web-api-aaa111-zzzzz", 50.0),  # web's hash under web-api's name: neither
    ]
    observations = split_observations(spec(aggregate="sum"), [web, web_api], samples, AT)
    assert len(observations) == 6
    w, a = by_scope(observations, web.ref), by_scope(observations, web_api.ref)
    assert (w[Scope.DEPLOYMENT].value, w[Scope.NEW].value, w[Scope.OLD].value) == (1.0, 1.0, None)
    assert "no old ReplicaSet" in (w[Scope.OLD].error or "")
    assert (a[Scope.DEPLOYMENT].value, a[Scope.NEW].value, a[Scope.OLD].value) == (5.0, 2.0, 3.0)


def test_nan_and_inf_are_dropped_and_counted() -> None:
    samples = [
        PodSample("shop", "web-n3w-aaaaa", NAN),
        PodSample("shop", "web-n3w-bbbbb", INF),
        PodSample("shop", "web-0ld-ccccc", 2.0),
        PodSample("shop", "web-0ld-ddddd", -INF),
    ]
    obs = by_scope(split_observations(spec(aggregate="max"), [rollout()], samples, AT))
    assert obs[Scope.NEW].value is None and obs[Scope.NEW].pods == 0
    assert obs[Scope.NEW].error == "m: no finite value: ignored 2 NaN/Inf pod value(s)"
    assert obs[Scope.OLD].value == 2.0 and obs[Scope.OLD].pods == 1
    assert obs[Scope.OLD].error == "m: ignored 1 NaN/Inf pod value(s)"
    assert obs[Scope.DEPLOYMENT].value == 2.0 and obs[Scope.DEPLOYMENT].pods == 1
    assert "ignored 3" in (obs[Scope.DEPLOYMENT].error or "")


@pytest.mark.parametrize(
    ("state", "scope", "error"),
    [
        (rollout(new=None, old=()), Scope.DEPLOYMENT, "no ReplicaSet known"),
        (rollout(new=None, old=()), Scope.NEW, "no new ReplicaSet"),
        (rollout(new=None, old=()), Scope.OLD, "no old ReplicaSet"),
        (rollout(old=()), Scope.OLD, "no old ReplicaSet"),
        (rollout(), Scope.NEW, "no new-revision pods in the query result"),
        (rollout(), Scope.OLD, "no old-revision pods in the query result"),
        (rollout(), Scope.DEPLOYMENT, "no Deployment pods in the query result"),
    ],
)
def test_empty_scopes_are_unknown_with_a_reason(state: RolloutState, scope: Scope, error: str) -> None:
    observations = split_observations(spec(), [state], [], AT)
    assert [o.scope for o in observations] == [Scope.DEPLOYMENT, Scope.NEW, Scope.OLD]
    obs = by_scope(observations)[scope]
    assert obs.value is None and obs.pods == 0 and not obs.known
    assert obs.error is not None and obs.error.startswith("m: ") and error in obs.error


def test_always_three_observations_per_rollout_in_order() -> None:
    rollouts = [rollout("a"), rollout("b", namespace="x"), rollout("c", new=None, old=())]
    observations = split_observations(spec(), rollouts, [PodSample("shop", "a-n3w-aaaaa", 1.0)], AT)
    assert [(o.ref.name, o.scope) for o in observations] == [
        (name, scope) for name in "abc" for scope in (Scope.DEPLOYMENT, Scope.NEW, Scope.OLD)
    ]


# --- ratio -----------------------------------------------------------------------------------------------------


def test_ratio_sums_numerators_and_denominators_per_scope() -> None:
    errors = [PodSample("shop", "web-n3w-aaaaa", 0.5), PodSample("shop", "web-0ld-ccccc", 0.1)]
    requests = [
        PodSample("shop", "web-n3w-aaaaa", 5.0),
        PodSample("shop", "web-n3w-bbbbb", 5.0),  # no 5xx series at all: counts 0
        PodSample("shop", "web-0ld-ccccc", 10.0),
    ]
    obs = by_scope(split_observations(spec(denominator="d", min_denominator=0.1), [rollout()], errors, AT, requests))
    assert obs[Scope.NEW].value == pytest.approx(0.5 / 10.0) and obs[Scope.NEW].pods == 2
    assert obs[Scope.OLD].value == pytest.approx(0.1 / 10.0) and obs[Scope.OLD].pods == 1
    assert obs[Scope.DEPLOYMENT].value == pytest.approx(0.6 / 20.0) and obs[Scope.DEPLOYMENT].pods == 3
    # the scope's traffic is its pods' median denominator (the scorer tells a load-driven rise by it): a pod
    # whose rate window is not full yet, or whose series is gone, moves a median little
    assert [obs[s].traffic for s in (Scope.DEPLOYMENT, Scope.NEW, Scope.OLD)] == [5.0, 5.0, 10.0]


@pytest.mark.parametrize(
    ("den", "min_den", "known"),
    [(0.05, 0.1, False), (0.1, 0.1, True), (0.0, 0.0, False), (1e-12, 0.0, False), (0.001, 0.0, True)],
)
def test_ratio_with_too_little_traffic_is_unknown(den: float, min_den: float, known: bool) -> None:
    requests = [PodSample("shop", "web-n3w-aaaaa", den)]
    obs = by_scope(split_observations(spec(denominator="d", min_denominator=min_den), [rollout()], [], AT, requests))
    assert obs[Scope.NEW].known is known
    assert obs[Scope.NEW].traffic == den  # known even when too little for the ratio
    if known:
        assert obs[Scope.NEW].value == 0.0
    else:
        assert "too little traffic" in (obs[Scope.NEW].error or "") and obs[Scope.NEW].pods == 0


def test_ratio_drops_pods_with_nan_in_either_part() -> None:
    errors = [PodSample("shop", "web-n3w-aaaaa", NAN), PodSample("shop", "web-n3w-bbbbb", 1.0)]
    requests = [PodSample("shop", "web-n3w-aaaaa", 10.0), PodSample("shop", "web-n3w-bbbbb", 4.0),
                PodSample("shop", "web-0ld-ccccc", INF)]
    obs = by_scope(split_observations(spec(denominator="d"), [rollout()], errors, AT, requests))
    assert obs[Scope.NEW].value == pytest.approx(0.25) and obs[Scope.NEW].pods == 1
    assert "ignored 1 pod(s) with NaN/Inf" in (obs[Scope.NEW].error or "")
    assert obs[Scope.OLD].value is None and "no finite value" in (obs[Scope.OLD].error or "")


def test_ratio_needs_the_denominator_result() -> None:
    with pytest.raises(ValueError, match="denominator"):
        split_observations(spec(denominator="d"), [rollout()], [], AT)


# --- histogram quantile ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # 100 observations: 50 <= 0.1, 90 <= 0.5, 99 <= 1, all <= +Inf.
        (0.5, [(0.1, 50), (0.5, 90), (1.0, 99), (INF, 100)], 0.1),
        (0.9, [(0.1, 50), (0.5, 90), (1.0, 99), (INF, 100)], 0.5),
        (0.95, [(0.1, 50), (0.5, 90), (1.0, 99), (INF, 100)], 0.5 + 0.5 * 5 / 9),
        (0.25, [(0.1, 50), (0.5, 90), (1.0, 99), (INF, 100)], 0.05),  # lowest bucket interpolates from 0
        (0.995, [(0.1, 50), (0.5, 90), (1.0, 99), (INF, 100)], 1.0),  # in the +Inf bucket: 2nd highest bound
        (1.0, [(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)], 1.0),
        (0.0, [(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)], 0.0),
        (0.5, [(INF, 100), (0.5, 90), (0.1, 50), (1.0, 99)], 0.1),  # order does not matter
        (0.3, [(-1.0, 40), (0.0, 60), (INF, 100)], -1.0),  # lowest bound <= 0 is returned as is
        (0.5, [(-1.0, 40), (0.0, 60), (INF, 100)], -0.5),
        (0.5, [(0.1, 50), (0.1, 10), (INF, 120)], 0.1),  # equal bounds merge: 60 <= 0.1
        (0.5, [(0.1, 60), (0.5, 40), (INF, 100)], 0.1 * 50 / 60),  # decreasing count raised to 60
        (0.7, [(0.1, 60), (0.5, 40), (INF, 100)], 0.5),  # rank 70 > 60 = raised 0.5 bucket: in +Inf bucket
        (0.5, [(0.1, 1), (INF, 2)], 0.1),
        (0.5, [(0.1, 0), (INF, 0)], NAN),  # no observations
        (0.5, [(0.1, 5), (1.0, 10)], NAN),  # no +Inf bucket
        (0.5, [(INF, 10)], NAN),  # a single bucket
        (0.5, [], NAN),
        (NAN, [(0.1, 5), (INF, 10)], NAN),
        (-0.1, [(0.1, 5), (INF, 10)], -INF),
        (1.1, [(0.1, 5), (INF, 10)], INF),
    ],
)
def test_bucket_quantile_matches_promql(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    result = bucket_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(result)
    else:
        assert result == pytest.approx(expected, rel=1e-12, abs=1e-15)


@given(
    st.lists(st.tuples(st.floats(0.001, 100), st.floats(0, 1e6)), min_size=1, max_size=12),
    st.floats(0, 1e6), st.floats(0, 1),
)
def test_bucket_quantile_stays_within_the_bucket_bounds(
    buckets: list[tuple[float, float]], inf_count: float, q: float
) -> None:
    result = bucket_quantile(q, [*buckets, (INF, inf_count)])
    if not math.isnan(result):
        assert 0.0 <= result <= max(b for b, _ in buckets)


def test_quantile_sums_buckets_over_the_scope_pods() -> None:
    def pod(name: str, counts: list[float]) -> list[PodSample]:
        return [PodSample("shop", name, c, le) for le, c in zip((0.1, 0.5, INF), counts, strict=True)]

    samples = pod("web-n3w-aaaaa", [1, 3, 4]) + pod("web-n3w-bbbbb", [1, 5, 6]) + pod("web-0ld-ccccc", [8, 9, 10])
    obs = by_scope(split_observations(spec(quantile=0.5), [rollout()], samples, AT))
    # New: buckets 2 <= 0.1, 8 <= 0.5, 10 total; rank 5 lies in (0.1, 0.5]: 0.1 + 0.4 * (5 - 2) / 6.
    assert obs[Scope.NEW].value == pytest.approx(0.1 + 0.4 * 3 / 6) and obs[Scope.NEW].pods == 2
    # Old: rank 5 <= 8 in the first bucket: 0.1 * 5 / 8.
    assert obs[Scope.OLD].value == pytest.approx(0.1 * 5 / 8)
    # Deployment: 10 <= 0.1, 17 <= 0.5, 20 total; rank 10: 0.1.
    assert obs[Scope.DEPLOYMENT].value == pytest.approx(0.1) and obs[Scope.DEPLOYMENT].pods == 3


def test_quantile_edge_cases_give_reasons() -> None:
    no_inf = [PodSample("shop", "web-n3w-aaaaa", 1.0, 0.1), PodSample("shop", "web-n3w-aaaaa", 2.0, 0.5)]
    idle = [PodSample("shop", "web-0ld-bbbbb", 0.0, 0.1), PodSample("shop", "web-0ld-bbbbb", 0.0, INF)]
    broken = [PodSample("shop", "web-0ld-ccccc", NAN, 0.1), PodSample("shop", "web-0ld-ccccc", 1.0, INF)]
    obs = by_scope(split_observations(spec(quantile=0.99), [rollout()], no_inf + idle + broken, AT))
    assert obs[Scope.NEW].value is None and "no le=\"+Inf\" bucket" in (obs[Scope.NEW].error or "")
    assert obs[Scope.OLD].value is None and "no observations" in (obs[Scope.OLD].error or "")
    assert "ignored 1 pod(s) with NaN/Inf buckets" in (obs[Scope.OLD].error or "")


def test_quantile_ignores_series_without_le() -> None:
    samples = [PodSample("shop", "web-n3w-aaaaa", 1.0, None), PodSample("shop", "web-n3w-aaaaa", 2.0, INF),
               PodSample("shop", "web-n3w-aaaaa", 1.0, 0.2)]
    obs = by_scope(split_observations(spec(quantile=0.5), [rollout()], samples, AT))
    assert obs[Scope.NEW].value == pytest.approx(0.2)
    assert "1 series without a numeric 'le'" in (obs[Scope.NEW].error or "")


# --- render_query ----------------------------------------------------------------------------------------------


def test_render_query_substitutes_only_the_three_tokens() -> None:
    template = (
        'sum by (namespace, pod) (rate(x{namespace=~"{namespace}", pod=~"{pods}", d=~"{deployment}"}[1m]))'
        ' or vector(0){le="{nope}"} {namespace=~"{namespace}"}'
    )
    rollouts = [rollout("web", "shop", "abc123", ("def456",)), rollout("api", "core", "aaa111", ())]
    rendered = render_query(template, rollouts)
    assert rendered == (
        'sum by (namespace, pod) (rate(x{namespace=~"core|shop", '
        'pod=~"(?:api-(?:aaa111)|web-(?:abc123|def456))-[a-z0-9]+", d=~"api|web"}[1m]))'
        ' or vector(0){le="{nope}"} {namespace=~"core|shop"}'
    )


def test_render_query_escapes_regex_and_string_metacharacters() -> None:
    # Deployment names may hold dots (DNS subdomains); exotic characters must survive both escapings.
    rollouts = [rollout("web.v2", "shop", "abc", ()), rollout('we"i\\rd+(x)', "shop", "h4sh", ())]
    rendered = render_query('pod=~"{pods}", d=~"{deployment}"', rollouts)
    assert rendered == (
        'pod=~"(?:we\\"i\\\\\\\\rd\\\\+\\\\(x\\\\)-(?:h4sh)|web\\\\.v2-(?:abc))-[a-z0-9]+", '
        'd=~"we\\"i\\\\\\\\rd\\\\+\\\\(x\\\\)|web\\\\.v2"'
    )


def test_rendered_pod_regex_matches_the_pod_names_literally() -> None:
    rendered = render_query("{pods}", [rollout("web.v2", "shop", "abc", ("d3f",))])
    regex = rendered.replace("\\\\", "\\")  # undo the PromQL string escaping: what RE2 receives
    assert re.fullmatch(regex, "web.v2-abc-xyz12") and re.fullmatch(regex, "web.v2-d3f-xyz12")
    assert not re.fullmatch(regex, "webXv2-abc-xyz12") and not re.fullmatch(regex, "web.v2-abc")


def test_render_query_with_nothing_to_match() -> None:
    assert render_query('pod=~"{pods}"', []) == f'pod=~"{NEVER_MATCHES.replace(chr(92), chr(92) * 2)}"'
    assert render_query('pod=~"{pods}"', [rollout(new=None, old=())]).count("x00") == 1


@given(st.text(min_size=1, max_size=20))
def test_escape_regex_matches_itself_literally(text: str) -> None:
    assert re.fullmatch(escape_regex(text), text, flags=re.DOTALL)
