"""Which labels a metric's PromQL keeps, hence in which form its result comes: per pod, or one value per scope.

`predictor.config` calls `analyse_template` on every `query` and `denominator` at load time; the Prometheus source
reads the form from the `MetricSpec` it gives. Pure: the PyPI package `promql-parser` (the Rust parser of
GreptimeDB, the grammar of Prometheus 2.x) builds the syntax tree, this module walks it.

The placeholders `{namespace}`, `{deployment}` and `{pods}` are replaced by harmless literals before parsing (they
sit inside string literals of matchers). The labels that survive to the result follow Prometheus's evaluation
(`promql/engine.go`): aggregations keep their `by` labels or drop their `without` ones; a binary operator between
two vectors keeps the left side's labels (restricted to `on(...)`, less `ignoring(...)`, for one-to-one matching;
the "many" side's plus `group_left/right(...)` ones otherwise); functions keep their vector argument's labels
(`histogram_quantile` drops `le`, `label_replace`/`label_join` add their destination).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import promql_parser as pp

POD_LABEL = "pod"
NAMESPACE_LABEL = "namespace"
LE_LABEL = "le"
_PLACEHOLDER_LITERALS = {"namespace": "predictor-namespace", "deployment": "predictor-deployment",
                         "pods": "predictor-pods"}
_PLACEHOLDER = re.compile(r"\{(namespace|deployment|pods)\}")
_DROPS_LE = frozenset({"histogram_quantile", "histogram_fraction"})
_ADDS_LABEL = frozenset({"label_replace", "label_join"})
_NO_INPUT_LABELS = frozenset({"vector", "absent", "absent_over_time"})
"""Functions whose result carries none of their argument's series labels (absent's come from its `=` matchers at
most, never a pod's)."""


class QueryForm(enum.StrEnum):
    """How a metric's result is split into the scopes of a rollout."""

    PER_POD = "per-pod"
    """The result keeps `namespace` and `pod`: one query per tick for every Deployment, split per pod in Python."""
    AGGREGATE = "aggregate"
    """The pods are aggregated away: the query is rendered once per scope, `{pods}` the regex of its pods."""


class PromQLError(ValueError):
    """A query that does not parse, or whose result no form can use; the message says why."""


@dataclass(frozen=True)
class LabelSet:
    """The labels a result's series carry: exactly `names` when `closed`, else every input label except `names`."""

    names: frozenset[str] = frozenset()
    closed: bool = False

    def keeps(self, label: str) -> bool:
        return label in self.names if self.closed else label not in self.names

    def only(self, labels: frozenset[str]) -> LabelSet:
        return LabelSet(self.names & labels, True) if self.closed else LabelSet(labels - self.names, True)

    def without(self, labels: frozenset[str]) -> LabelSet:
        return LabelSet(self.names - labels, True) if self.closed else LabelSet(self.names | labels, False)

    def plus(self, labels: frozenset[str]) -> LabelSet:
        return LabelSet(self.names | labels, True) if self.closed else LabelSet(self.names - labels, False)

    def describe(self) -> str:
        listed = ", ".join(sorted(self.names))
        if self.closed:
            return f"only ({listed})" if listed else "no labels"
        return f"all input labels except ({listed})" if listed else "all input labels"


@dataclass(frozen=True)
class QueryShape:
    """What the parser tells of one template."""

    form: QueryForm
    labels: LabelSet
    selectors_without_namespace: tuple[str, ...] = ()
    """Vector selectors that use `{pods}` without any matcher on `namespace` (as written, placeholders restored)."""
    uses_pods: bool = False
    metric_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keeps_le(self) -> bool:
        return self.labels.keeps(LE_LABEL)


class _Kind(enum.Enum):
    SCALAR = "scalar"
    STRING = "string"
    VECTOR = "instant vector"
    MATRIX = "range vector"


@dataclass(frozen=True)
class _Value:
    kind: _Kind
    labels: LabelSet = LabelSet()


def substitute_placeholders(template: str) -> str:
    """The template with its placeholders replaced by literals that parse wherever a string can stand."""
    return _PLACEHOLDER.sub(lambda m: _PLACEHOLDER_LITERALS[m.group(1)], template)


def parse_template(template: str) -> pp.Expr:
    """The syntax tree of a query template. Raises PromQLError with the parser's message."""
    try:
        return pp.parse(substitute_placeholders(template))
    except (ValueError, TypeError) as exc:
        raise PromQLError(f"expected PromQL that parses ({str(exc).strip() or type(exc).__name__})") from None


def analyse_template(template: str) -> QueryShape:
    """The form of a query template's result and what it keeps. Raises PromQLError."""
    expr = parse_template(template)
    value = _evaluate(expr)
    if value.kind is not _Kind.VECTOR:
        raise PromQLError(f"expected a query whose result is an instant vector, not a {value.kind.value}")
    keeps_pod = value.labels.keeps(POD_LABEL)
    if keeps_pod and not value.labels.keeps(NAMESPACE_LABEL):
        raise PromQLError("expected the result to keep 'namespace' with 'pod' (`by (namespace, pod)`), or neither "
                          f"(one value for the pods in {{pods}}); it keeps {value.labels.describe()}")
    selectors = list(_vector_selectors(expr))
    pods_literal = _PLACEHOLDER_LITERALS["pods"]
    uses_pods = [vs for vs in selectors if any(pods_literal in m.value for m in _matchers(vs))]
    lacking = tuple(
        _restore(str(vs)) for vs in uses_pods if not any(m.name == NAMESPACE_LABEL for m in _matchers(vs))
    )
    names = tuple(sorted({vs.name for vs in selectors if vs.name}))
    return QueryShape(
        form=QueryForm.PER_POD if keeps_pod else QueryForm.AGGREGATE,
        labels=value.labels,
        selectors_without_namespace=lacking,
        uses_pods=bool(uses_pods),
        metric_names=names,
    )


def _restore(text: str) -> str:
    for word, literal in _PLACEHOLDER_LITERALS.items():
        text = text.replace(literal, "{" + word + "}")
    return text


def _matchers(vs: pp.VectorSelector) -> list[pp.Matcher]:
    found = list(vs.matchers.matchers)
    for group in vs.matchers.or_matchers:
        found.extend(group)
    return found


def _vector_selectors(expr: pp.Expr) -> list[pp.VectorSelector]:
    if isinstance(expr, pp.VectorSelector):
        return [expr]
    if isinstance(expr, pp.MatrixSelector):
        return [expr.vector_selector]
    children: list[pp.Expr] = []
    if isinstance(expr, pp.AggregateExpr):
        children = [expr.expr] + ([expr.param] if isinstance(expr.param, pp.Expr) else [])
    elif isinstance(expr, pp.BinaryExpr):
        children = [expr.lhs, expr.rhs]
    elif isinstance(expr, pp.Call):
        children = list(expr.args)
    elif isinstance(expr, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        children = [expr.expr]
    return [vs for child in children for vs in _vector_selectors(child)]


_KINDS = ((pp.ValueType.Scalar, _Kind.SCALAR), (pp.ValueType.String, _Kind.STRING),
          (pp.ValueType.Vector, _Kind.VECTOR), (pp.ValueType.Matrix, _Kind.MATRIX))
"""The parser's value types are not hashable: a list of pairs."""
_SET_OPERATORS = frozenset({"and", "or", "unless"})


def _evaluate(expr: pp.Expr) -> _Value:
    """The kind and labels of an expression's result."""
    if isinstance(expr, pp.NumberLiteral):
        return _Value(_Kind.SCALAR)
    if isinstance(expr, pp.StringLiteral):
        return _Value(_Kind.STRING)
    if isinstance(expr, pp.VectorSelector):
        return _Value(_Kind.VECTOR, LabelSet())
    if isinstance(expr, pp.MatrixSelector | pp.SubqueryExpr):
        inner = _evaluate(expr.vector_selector if isinstance(expr, pp.MatrixSelector) else expr.expr)
        return _Value(_Kind.MATRIX, inner.labels)
    if isinstance(expr, pp.ParenExpr | pp.UnaryExpr):
        return _evaluate(expr.expr)
    if isinstance(expr, pp.AggregateExpr):
        return _aggregate(expr)
    if isinstance(expr, pp.BinaryExpr):
        return _binary(expr)
    if isinstance(expr, pp.Call):
        return _call(expr)
    raise PromQLError(f"expected PromQL this version understands, got a {type(expr).__name__}")


def _aggregate(expr: pp.AggregateExpr) -> _Value:
    inner = _evaluate(expr.expr)
    operator = str(expr.op)
    modifier = expr.modifier
    if operator in ("topk", "bottomk", "limitk", "limit_ratio"):
        return _Value(_Kind.VECTOR, inner.labels)  # these pick series, whole
    if modifier is None:
        labels = LabelSet(frozenset(), True)
    elif modifier.type == pp.AggModifierType.By:
        labels = inner.labels.only(frozenset(modifier.labels))
    else:
        labels = inner.labels.without(frozenset(modifier.labels) | {"__name__"})
    if operator == "count_values" and isinstance(expr.param, pp.StringLiteral):
        labels = labels.plus(frozenset({expr.param.val}))
    return _Value(_Kind.VECTOR, labels)


def _binary(expr: pp.BinaryExpr) -> _Value:
    lhs, rhs = _evaluate(expr.lhs), _evaluate(expr.rhs)
    if lhs.kind is _Kind.SCALAR and rhs.kind is _Kind.SCALAR:
        return _Value(_Kind.SCALAR)
    if lhs.kind is _Kind.SCALAR:
        return _Value(_Kind.VECTOR, rhs.labels)
    if rhs.kind is _Kind.SCALAR:
        return _Value(_Kind.VECTOR, lhs.labels)
    operator = str(expr.op)
    modifier = expr.modifier
    matching = getattr(modifier, "matching", None) if modifier is not None else None
    if operator in _SET_OPERATORS:
        if operator == "or":  # series of both sides: a label survives when both keep it
            return _Value(_Kind.VECTOR, _intersection(lhs.labels, rhs.labels))
        return _Value(_Kind.VECTOR, lhs.labels)
    card = getattr(modifier, "card", None)
    if card == pp.VectorMatchCardinality.ManyToOne:
        return _Value(_Kind.VECTOR, lhs.labels.plus(frozenset(modifier.group_labels or ())))
    if card == pp.VectorMatchCardinality.OneToMany:
        return _Value(_Kind.VECTOR, rhs.labels.plus(frozenset(modifier.group_labels or ())))
    if matching is None:
        return _Value(_Kind.VECTOR, lhs.labels)
    labels = frozenset(matching.labels)
    if matching.type == pp.LabelModifierType.Include:
        return _Value(_Kind.VECTOR, lhs.labels.only(labels))
    return _Value(_Kind.VECTOR, lhs.labels.without(labels))


def _intersection(a: LabelSet, b: LabelSet) -> LabelSet:
    if a.closed and b.closed:
        return LabelSet(a.names & b.names, True)
    if a.closed:
        return LabelSet(a.names - b.names, True)
    if b.closed:
        return LabelSet(b.names - a.names, True)
    return LabelSet(a.names | b.names, False)


def _call(expr: pp.Call) -> _Value:
    function = expr.func
    name = function.name
    kind = next((ours for theirs, ours in _KINDS if theirs == function.return_type), _Kind.VECTOR)
    if kind is not _Kind.VECTOR:
        return _Value(kind)
    if name in _NO_INPUT_LABELS:
        return _Value(_Kind.VECTOR, LabelSet(frozenset(), True))
    arguments = [_evaluate(arg) for arg in expr.args]
    source = next((a for a in arguments if a.kind in (_Kind.VECTOR, _Kind.MATRIX)), None)
    labels = source.labels if source is not None else LabelSet(frozenset(), True)
    if name in _DROPS_LE:
        labels = labels.without(frozenset({LE_LABEL}))
    if name in _ADDS_LABEL and len(expr.args) > 1 and isinstance(expr.args[1], pp.StringLiteral):
        labels = labels.plus(frozenset({expr.args[1].val}))
    return _Value(_Kind.VECTOR, labels)
