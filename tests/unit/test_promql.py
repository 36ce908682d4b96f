"""The form of a metric's query, read from its PromQL (`predictor.promql`), and what `load_config` refuses because
no form can use it: each refusal one line naming the field and the value, through `predictor check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictor.config import MetricSpec, default_metric_pack, parse_config
from predictor.promql import PromQLError, QueryForm, analyse_template
from tests.unit.test_config_bad_input import BASE, refused

SEL = 'namespace="{namespace}", pod=~"{pods}"'
ERROR_RATIO = f'sum(rate(http_requests_total{{{SEL}, code=~"5.."}}[1m])) / sum(rate(http_requests_total{{{SEL}}}[1m]))'
P99 = f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{SEL}}}[1m])))"
MEMORY = (f'max(container_memory_working_set_bytes{{{SEL}, container!=""}} / on(namespace,pod,container) '
          f'kube_pod_container_resource_limits{{{SEL}, resource="memory"}})')


@pytest.mark.parametrize(
    ("query", "form", "keeps"),
    [
        (ERROR_RATIO, QueryForm.AGGREGATE, "no labels"),
        (P99, QueryForm.AGGREGATE, "no labels"),
        (MEMORY, QueryForm.AGGREGATE, "no labels"),
        (f"sum by (namespace, pod) (rate(x{{{SEL}}}[1m]))", QueryForm.PER_POD, "only (namespace, pod)"),
        (f"sum by (namespace, pod, le) (rate(x_bucket{{{SEL}}}[1m]))", QueryForm.PER_POD, "only (le, namespace, pod)"),
        (f"sum without (container) (x{{{SEL}}})", QueryForm.PER_POD, "all input labels except (__name__, container)"),
        (f"sum without (pod) (x{{{SEL}}})", QueryForm.AGGREGATE, "all input labels except (__name__, pod)"),
        (f"max_over_time(x{{{SEL}}}[5m])", QueryForm.PER_POD, "all input labels"),
        (f"clamp_max(sum(rate(x{{{SEL}}}[1m])), 1)", QueryForm.AGGREGATE, "no labels"),
        (f"x{{{SEL}}} / ignoring(code) y{{{SEL}}}", QueryForm.PER_POD, "all input labels except (code)"),
        (f"x{{{SEL}}} / on(namespace) y{{{SEL}}}", QueryForm.AGGREGATE, "only (namespace)"),
        (f"x{{{SEL}}} * on(namespace, pod) group_left(node) y{{{SEL}}}", QueryForm.PER_POD, "all input labels"),
        (f"sum(x{{{SEL}}}) > 0.5", QueryForm.AGGREGATE, "no labels"),
        (f"(sum(x{{{SEL}}}) or vector(0)) / sum(y{{{SEL}}})", QueryForm.AGGREGATE, "no labels"),
        (f'label_replace(sum by (namespace) (x{{{SEL}}}), "pod", "p", "", "")', QueryForm.PER_POD,
         "only (namespace, pod)"),
        (f"max_over_time(sum(rate(x{{{SEL}}}[1m]))[5m:30s])", QueryForm.AGGREGATE, "no labels"),
        (f"topk(1, sum by (namespace, pod) (x{{{SEL}}}))", QueryForm.PER_POD, "only (namespace, pod)"),
    ],
)
def test_the_form_follows_the_labels_that_survive(query: str, form: QueryForm, keeps: str) -> None:
    shape = analyse_template(query)
    assert (shape.form, shape.labels.describe()) == (form, keeps)


def test_the_default_pack_is_per_pod_and_the_issues_queries_aggregate() -> None:
    assert {spec.form for spec in default_metric_pack()} == {QueryForm.PER_POD}
    for query in (ERROR_RATIO, P99, MEMORY):
        assert MetricSpec(name="m", query=query, threshold=1.0).form is QueryForm.AGGREGATE


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (f"sum(rate(x{{{SEL}}}[1m])", "expected PromQL that parses (unclosed left parenthesis)"),
        (f"x{{{SEL}}}[5m]", "not a range vector"),
        (f"scalar(sum(x{{{SEL}}}))", "not a scalar"),
        (f"sum by (pod) (x{{{SEL}}})", "expected the result to keep 'namespace' with 'pod'"),
    ],
)
def test_results_no_form_can_use_are_errors(query: str, message: str) -> None:
    with pytest.raises(PromQLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        analyse_template(query)


def metric_yaml(**fields: str) -> str:
    lines = [f"{key}: {value}" for key, value in {"name": "m", "threshold": "0.5", **fields}.items()]
    return BASE + "metrics:\n  - " + "\n    ".join(lines) + "\n"


def quoted(query: str) -> str:
    return "'" + query.replace("'", "''") + "'"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"query": quoted("sum(rate(x{" + SEL + "}[1m])")},
         ["metrics[0].query: expected PromQL that parses (unclosed left parenthesis), got "
          "'sum(rate(x{namespace=\"{namespace}\", pod=~\"{pods}\"}[1m])'"]),
        ({"query": quoted(P99), "quantile": "0.99"},
         ["metrics[0].quantile: expected no quantile with an aggregate query (its result has no pods to sum the "
          "buckets of: write histogram_quantile(0.99, sum by (le) (...)) in the query), got 0.99"]),
        ({"query": quoted("sum by (namespace, pod) (rate(x_bucket{" + SEL + "}[1m]))"), "quantile": "0.99"},
         ["metrics[0].quantile: expected a query that keeps the buckets' 'le' label with quantile (`sum by "
          "(namespace, pod, le)`); this one keeps only (namespace, pod), got 0.99"]),
        ({"query": quoted('sum(rate(x{pod=~"{pods}"}[1m]))')},
         ["metrics[0].query: expected a namespace matcher (namespace=\"{namespace}\") beside {pods} in an aggregate "
          "query (the same pod names in another namespace would be summed in), got 'x{pod=~\"{pods}\"}'"]),
        ({"query": quoted('sum(rate(x{deployment="{deployment}", namespace="{namespace}"}[1m]))')},
         ["metrics[0].query: expected pod=~\"{pods}\" in an aggregate query (it is rendered once per scope, {pods} "
          "the regex of that scope's pods, to tell new pods from old), got "
          "'sum(rate(x{deployment=\"{deployment}\", namespace=\"{namespace}\"}[1m]))'"]),
        ({"query": quoted("sum(x{" + SEL + "})"), "aggregate": "max"},
         ["metrics[0].aggregate: expected no aggregate with an aggregate query (it would be ignored: the query "
          "combines the pods itself), got 'max'"]),
        ({"query": quoted("sum(x{" + SEL + "})"), "denominator": quoted("sum by (namespace, pod) (y{" + SEL + "})")},
         ["metrics[0].denominator: expected the same form as the query (aggregate), got the per-pod form, got "
          "'sum by (namespace, pod) (y{namespace=\"{namespace}\", pod=~\"{pods}\"})'"]),
        ({"query": quoted("sum by (pod) (x{" + SEL + "})")},
         ["metrics[0].query: expected the result to keep 'namespace' with 'pod' (`by (namespace, pod)`), or neither "
          "(one value for the pods in {pods}); it keeps only (pod), got "
          "'sum by (pod) (x{namespace=\"{namespace}\", pod=~\"{pods}\"})'"]),
    ],
    ids=["no-parse", "quantile-on-aggregate", "quantile-without-le", "pods-without-namespace", "no-pods",
         "aggregate-option", "mixed-forms", "pod-without-namespace"],
)
def test_what_no_form_can_use_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, str], expected: list[str]
) -> None:
    assert refused(tmp_path, capsys, metric_yaml(**fields)) == expected


def test_the_issues_aggregate_queries_are_accepted() -> None:
    config = parse_config({
        "targets": [{"namespace": "shop"}],
        "metrics": [
            {"name": "error_ratio", "query": ERROR_RATIO, "threshold": 0.05, "unit": "ratio"},
            {"name": "latency_p99", "query": P99, "threshold": 0.5},
            {"name": "memory", "query": MEMORY, "threshold": 0.9, "unit": "ratio"},
            {"name": "errors", "query": f'sum(rate(x{{{SEL}, code=~"5.."}}[1m]))',
             "denominator": f"sum(rate(x{{{SEL}}}[1m]))", "threshold": 0.05, "min_denominator": 1},
        ],
    })
    assert [spec.form for spec in config.metrics] == [QueryForm.AGGREGATE] * 4
