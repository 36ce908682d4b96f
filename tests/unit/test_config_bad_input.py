"""Every bad input a user can write in the config file is refused by `predictor check-config` (and `run`, which
loads the file the same way): exit 2, one `  <path>: <message>, got <value>` line per problem under one
`predictor: invalid configuration: <file>: N problem(s):` header, and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from predictor.cli import main
from predictor.config import parse_config

BASE = "targets:\n  - namespace: shop\n"
QUERY = 'up{namespace=~"{namespace}", pod=~"{pods}"}'


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes,
            command: str = "check-config") -> list[str]:
    """Write `content`, run the command offline, assert the error shape and return the problem lines."""
    path = tmp_path / "predictor.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    argv = ["check-config", "--offline", str(path)] if command == "check-config" else ["run", "--config", str(path)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    header, *lines = captured.err.splitlines()
    assert header == f"predictor: invalid configuration: {path}: {len(lines)} problem(s):"
    assert lines and all(line.startswith("  ") and ", got " in line for line in lines), lines
    return [line[2:] for line in lines]


def metric(**fields: object) -> str:
    """A `metrics:` section with one metric: a valid one, with `fields` replacing or adding keys (raw YAML)."""
    spec = {"name": "x", "query": f"'{QUERY}'", "threshold": "1", **{k: str(v) for k, v in fields.items()}}
    return "metrics:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in spec.items()) + "\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # NaN and Inf, as YAML spells them and as strings
        (metric(threshold=".nan"), "metrics[0].threshold: expected a finite number above 0 with direction above "
                                   "(every value >= 0 would breach), got .nan"),
        (metric(threshold="-.inf", direction="below"),
         "metrics[0].threshold: expected a finite number of at least 0 with direction below (no value < 0 can "
         "breach), got -.inf"),
        ("policy:\n  risk_threshold: .inf\n", "policy.risk_threshold: expected a finite number above 0 and at most 1, "
                                              "got .inf"),
        ("policy:\n  alert_threshold: 'NaN'\n", "policy.alert_threshold: expected a number above 0 and at most 1, "
                                                "got 'NaN'"),
        (metric(quantile=".nan"), "metrics[0].quantile: expected a finite number above 0 and at most 1 (0.99 for "
                                  "p99), got .nan"),
        ("policy:\n  horizon: .nan\n", "policy.horizon: expected a finite duration, got .nan"),
        ("policy:\n  bake: .inf\n", "policy.bake: expected a finite duration, got .inf"),
        ("policy:\n  bake: 10m\n  max_watch: 5m\n", "policy.max_watch: expected at least policy.bake (10m): it "
                                                   "extends the bake while evidence still builds, got '5m'"),
        ("policy:\n  lookback: NaN\n", "policy.lookback: expected a duration such as '30s', '10m' or '1h30m', "
                                       "got 'NaN'"),
        # zero and negative durations: "positive", never an example
        ("policy:\n  interval: -15s\n", "policy.interval: expected a positive duration, got '-15s'"),
        ("policy:\n  horizon: -15\n", "policy.horizon: expected a positive duration, got -15"),
        ("policy:\n  interval: 0s\n", "policy.interval: expected a positive duration, got '0s'"),
        ("policy:\n  bake: -1m\n", "policy.bake: expected 0 or a positive duration, got '-1m'"),
        ("prometheus:\n  timeout: 0\n", "prometheus.timeout: expected a positive duration, got 0"),
        # sub-second where it is nonsense
        ("policy:\n  interval: 500ms\n", "policy.interval: expected a duration of at least 1s, got '500ms'"),
        ("prometheus:\n  timeout: 50ms\n", "prometheus.timeout: expected a duration of at least 100ms, got '50ms'"),
        ("alertmanager:\n  url: http://am:9093\n  timeout: 0.05\n",
         "alertmanager.timeout: expected a duration of at least 100ms, got 0.05"),
        ("models:\n  reload: 10ms\n", "models.reload: expected a duration of at least 1s, got '10ms'"),
        ("policy:\n  interval: 1m\n  horizon: 30s\n  lookback: 10m\n",
         "policy.horizon: expected at least one tick (1m, policy.interval), got '30s'"),
        ("policy:\n  interval: 10000y\n", "policy.interval: expected a duration of at most 1y, got '10000y'"),
        ("policy:\n  horizon: 15\n", None),  # a bare number is seconds: valid
        # thresholds that can never, or always, breach
        (metric(threshold=0), "metrics[0].threshold: expected a number above 0 with direction above (every value "
                              ">= 0 would breach), got 0"),
        (metric(threshold=-1, direction="below"),
         "metrics[0].threshold: expected a number of at least 0 with direction below (no value < 0 can breach), "
         "got -1"),
        (metric(threshold=0, direction="below"), None),  # "falls to 0" is a legitimate SLO
        (metric(threshold=5, unit="ratio"), "metrics[0].threshold: expected at most 1 with unit ratio (5 % is 0.05), "
                                            "got 5"),
        (metric(quantile=99), "metrics[0].quantile: expected a number above 0 and at most 1 (0.99 for p99), got 99"),
        (metric(quantile=0), "metrics[0].quantile: expected a number above 0 and at most 1 (0.99 for p99), got 0"),
        ("policy:\n  risk_threshold: 0\n", "policy.risk_threshold: expected a number above 0 and at most 1, got 0"),
        (metric(min_denominator=-1, denominator=f"'{QUERY}'"),
         "metrics[0].min_denominator: expected a number of at least 0, got -1"),
        # placeholders that are not exactly {namespace}, {deployment} or {pods}
        (metric(query="'up{namespace=\"{Namespace}\", pod=~\"{pods}\"}'"),
         "metrics[0].query: expected exactly {namespace}, {deployment} or {pods} (did you mean {namespace}?), got "
         "'{Namespace}'"),
        (metric(query="'up{pod=~\"{ pods }\"}'"),
         "metrics[0].query: expected exactly {namespace}, {deployment} or {pods} (did you mean {pods}?), got "
         "'{ pods }'"),
        (metric(query="'up{pod=~\"{pod}\"}'"),
         "metrics[0].query: expected exactly {namespace}, {deployment} or {pods} (did you mean {pods}?), got "
         "'{pod}'"),
        (metric(query="'up{pod=~\"{{pods}}\"}'"),
         "metrics[0].query: expected {namespace}, {deployment} or {pods} in single braces (Argo Rollouts', "
         "Flagger's and Helm's {{ }} variables are not filled in here), got '{{pods}}'"),
        (metric(denominator="'up{pod=~\"{pods}\", namespace=\"{{ args.namespace }}\"}'"),
         "metrics[0].denominator: expected {namespace}, {deployment} or {pods} in single braces (Argo Rollouts', "
         "Flagger's and Helm's {{ }} variables are not filled in here), got '{{ args.namespace }}'"),
        (metric(query="'up{namespace=~\"{namespace}\"}'"),
         "metrics[0].query: expected a query that selects pods with {pods} (or {deployment}), so that results split "
         "per rollout, got 'up{namespace=~\"{namespace}\"}'"),
        # wrong types everywhere
        ("server:\n  port: '8080'\n", "server.port: expected a whole number from 0 to 65535 (without quotes), "
                                      "got '8080'"),
        ("server:\n  port: 80800\n", "server.port: expected a whole number from 0 to 65535, got 80800"),
        ("policy:\n  consecutive: 2.0\n", "policy.consecutive: expected a whole number of at least 1, got 2.0"),
        ("policy:\n  blind_after: true\n", "policy.blind_after: expected a whole number of at least 1, got true"),
        ("policy:\n  dry_run: 'true'\n", "policy.dry_run: expected true or false (without quotes), got 'true'"),
        ("prometheus: http://prometheus:9090\n", "prometheus: expected a mapping with the keys url, "
                                                  "bearer_token_file, ca_file, verify_tls, timeout, got "
                                                  "'http://prometheus:9090'"),
        ("policy:\n  interval: [15s]\n", "policy.interval: expected a duration such as '30s', '10m' or '1h30m', "
                                         "got ['15s']"),
        ("prometheus:\n  url: 9090\n", "prometheus.url: expected a string (quote it), got 9090"),
        (metric(threshold="'0.05'"), "metrics[0].threshold: expected a number above 0 with direction above (every "
                                     "value >= 0 would breach) (without quotes), got '0.05'"),
        (metric(name="error-ratio"), "metrics[0].name: expected an identifier such as 'error_ratio', "
                                     "got 'error-ratio'"),
        (metric(direction="up"), "metrics[0].direction: expected one of above, below, got 'up'"),
        (metric(aggregate="p99"), "metrics[0].aggregate: expected one of max, min, mean, sum, got 'p99'"),
        ("metrics:\n  name: x\n", "metrics: expected a non-empty list (or leave it out for the default pack), "
                                  "got {'name': 'x'}"),
        ("logging:\n  level: verbose\n", "logging.level: expected one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"),
        ("models:\n  scorer: forest\n", "models.scorer: expected one of forecast, trend, got 'forest'"),
        # what a Kubernetes user might write
        ("policy:\n  hoizon: 5m\n", "policy.hoizon: unknown field (did you mean horizon? allowed: action, dry_run, "
                                    "bake, horizon, interval, consecutive, risk_threshold, alert_threshold, "
                                    "undo_threshold, blind_after, blind_action, lookback, max_watch), got '5m'"),
        ("server:\n  host: 0.0.0.0:8080\n", "server.host: expected a host name or IP address to listen on, such as "
                                            "0.0.0.0 (no scheme; the port goes in server.port), got '0.0.0.0:8080'"),
        ("server:\n  host: http://localhost\n", "server.host: expected a host name or IP address to listen on, such "
                                                "as 0.0.0.0 (no scheme; the port goes in server.port), got "
                                                "'http://localhost'"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_field_and_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str | None
) -> None:
    if expected is None:
        path = tmp_path / "ok.yaml"
        path.write_text(BASE + content, encoding="utf-8")
        assert main(["check-config", "--offline", str(path)]) == 0, capsys.readouterr().err
        return
    assert refused(tmp_path, capsys, BASE + content) == [expected]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("targets: []\n", "targets: expected a non-empty list of {namespace, selector, names}, got []"),
        ("targets:\n", "targets: required: a list of {namespace, selector, names} to watch, got nothing"),
        ("targets:\n  - namespace: no\n", "targets[0].namespace: expected a namespace name (quote it: YAML reads "
                                          "unquoted yes, no, on, off, true and false as booleans), got false"),
        ("targets:\n  - namespace: Shop\n", "targets[0].namespace: expected a namespace name (lowercase letters, "
                                            "digits and '-', at most 63 characters), got 'Shop'"),
        ("targets:\n  - names: [web]\n", "targets[0].namespace: required: the namespace to watch, got nothing"),
        ("targets:\n  - namespace: shop\n  - namespace: shop\n",
         "targets[1]: expected each target once, but it repeats targets[0], got {'namespace': 'shop'}"),
        ("targets:\n  - namespace: shop\n    names: [cart, web]\n  - namespace: shop\n    names: [web, cart]\n",
         "targets[1]: expected each target once, but it repeats targets[0], got {'namespace': 'shop', 'names': "
         "['web', 'cart']}"),
        ("targets:\n  - namespace: shop\n    names: checkout\n",
         "targets[0].names: expected a list of Deployment names such as [checkout, cart], got 'checkout'"),
        ("targets:\n  - namespace: shop\n    names: [web, Web_1]\n",
         "targets[0].names[1]: expected a Deployment name (lowercase letters, digits, '-' and '.'), got 'Web_1'"),
        ("targets:\n  - namespace: shop\n    names: [web, web]\n", "targets[0].names[1]: expected each name once, "
                                                                   "got 'web'"),
        ("targets:\n  - namespace: shop\n    selector: app==web;tier=api\n",
         "targets[0].selector: expected a label selector such as 'app=web,tier in (api,worker),!canary' (cannot "
         "read 'app==web;tier=api'), got 'app==web;tier=api'"),
        ("targets:\n  - namespace: shop\n    selector: 'app=web,'\n",
         "targets[0].selector: expected a label selector such as 'app=web,tier in (api,worker),!canary' (cannot "
         "read ''), got 'app=web,'"),
        ("targets:\n  - namespace: shop\n    selector: '!app=web'\n",
         "targets[0].selector: expected a label selector such as 'app=web,tier in (api,worker),!canary' (cannot "
         "read '!app=web'), got '!app=web'"),
        ("targets:\n  - namespace: shop\n    selector: 'tier in ()'\n",
         "targets[0].selector: expected a label selector such as 'app=web,tier in (api,worker),!canary' (cannot "
         "read 'tier in ()'), got 'tier in ()'"),
        ("targets:\n  - namespace: shop\n    selector: {matchLabels: {app: web, version: 2}}\n",
         "targets[0].selector.matchLabels.version: expected a string (quote it), got 2"),
        ("targets:\n  - namespace: shop\n    selector:\n      matchExpressions: [{key: tier, operator: in, "
         "values: [api]}]\n",
         "targets[0].selector.matchExpressions[0].operator: expected one of In, NotIn, Exists, DoesNotExist, got 'in'"),
    ],
)
def test_bad_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str], targets: str, expected: str) -> None:
    assert refused(tmp_path, capsys, targets) == [expected]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("prometheus:\n  url: http://prometheus:9090/api/v1/query\n",
         "prometheus.url: expected the server's base URL such as 'http://host:port' (predictor adds /api/v1/query; "
         "a path is only for a route prefix), got 'http://prometheus:9090/api/v1/query'"),
        ("prometheus:\n  url: http://prometheus:9090/graph?g0.expr=up\n",
         "prometheus.url: expected the server's base URL such as 'http://host:port' (predictor adds /api/v1/query; "
         "a path is only for a route prefix), got 'http://prometheus:9090/graph?g0.expr=up'"),
        ("alertmanager:\n  url: 'http://alertmanager:9093/#/alerts'\n",
         "alertmanager.url: expected the server's base URL such as 'http://host:port' (predictor adds "
         "/api/v2/alerts; a path is only for a route prefix), got 'http://alertmanager:9093/#/alerts'"),
        ("prometheus:\n  url: prometheus:9090\n", "prometheus.url: expected an http:// or https:// URL, got "
                                                  "'prometheus:9090'"),
        ("prometheus:\n  url: http://prometheus:99999\n", "prometheus.url: expected an http:// or https:// URL with a "
                                                          "port from 1 to 65535, got 'http://prometheus:99999'"),
        ("prometheus:\n  url: http://prom etheus:9090\n", "prometheus.url: expected an http:// or https:// URL "
                                                          "without spaces, got 'http://prom etheus:9090'"),
        ("alertmanager:\n  url: http://am:9093\n  generator_url: grafana.example.com\n",
         "alertmanager.generator_url: expected an http:// or https:// URL, got 'grafana.example.com'"),
        ("prometheus:\n  verify_tls: false\n  ca_file: /etc/hostname\n",
         "prometheus.ca_file: expected no ca_file with verify_tls: false (it would be ignored), got '/etc/hostname'"),
        ("prometheus:\n  ca_file: /etc\n", "prometheus.ca_file: expected a file, not a directory, got '/etc'"),
        ("models:\n  dir: /etc/hostname\n", "models.dir: expected a directory, not a file, got '/etc/hostname'"),
    ],
)
def test_bad_addresses_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str,
                                 expected: str) -> None:
    assert refused(tmp_path, capsys, BASE + section) == [expected]


def test_a_route_prefix_is_a_valid_prometheus_url() -> None:
    config = parse_config({"prometheus": {"url": "https://monitoring.example.com/prometheus/"},
                           "targets": [{"namespace": "shop"}]})
    assert config.prometheus.url == "https://monitoring.example.com/prometheus"


def test_all_problems_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = refused(tmp_path, capsys, BASE + "policy:\n  interval: -15s\n  risk_threshold: .nan\nserver:\n"
                    "  port: '8080'\n" + metric(threshold=0, query="'up{pod=~\"{Pods}\"}'"), command="run")
    assert [line.split(":")[0] for line in lines] == [
        "metrics[0].query", "metrics[0].threshold", "policy.interval", "policy.risk_threshold", "server.port"]


def test_a_file_that_is_not_utf8_is_named_with_the_byte_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = (BASE + "policy:\n  action: pause # d\xe9faut\n").encode("latin-1")
    offset = content.index(b"\xe9")
    assert refused(tmp_path, capsys, content) == [
        f"(file): expected UTF-8 text, got the byte(s) b'\\xe9' at byte offset {offset} (line 4)"]
    assert refused(tmp_path, capsys, (BASE + "policy: {}\n").encode("utf-16")) == [
        "(file): expected UTF-8 text, got UTF-16 (a byte-order mark at offset 0: save the file as UTF-8)"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert main(["check-config", "--offline", str(path)]) == 0


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = refused(tmp_path, capsys, BASE + "policy:\n  action: undo\n  dry_run: true\n  action: pause\n")
    assert lines == ["line 6, column 3: expected each key once in a mapping (first on line 4), got 'action' again"]
    lines = refused(tmp_path, capsys, "policy:\n  action: undo\n" + BASE + "policy:\n  dry_run: true\n")
    assert lines == ["line 5, column 1: expected each key once in a mapping (first on line 1), got 'policy' again"]


def test_yaml_syntax_errors_have_the_same_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = refused(tmp_path, capsys, BASE + "policy:\n  action: [pause\n")
    assert len(lines) == 1 and re.match(r"line \d+, column \d+: expected valid YAML: ", lines[0]), lines


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"predictor: invalid configuration: {path}: 1 problem(s):",
        f"  (file): expected a readable file: No such file or directory, got {str(path)!r}"]


def test_what_kubernetes_users_write_is_understood(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config({
        "kubernetes": {"kubeconfig": "~/.kube/config"},
        "targets": [{"namespace": "shop", "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "worker"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}}],
        "logging": {"level": "info", "format": "JSON"},
    })
    assert config.kubernetes.kubeconfig == Path("~/.kube/config"), "expanded where loaded (tests/integration)"
    assert config.kubernetes.kubeconfig.expanduser() == tmp_path / ".kube" / "config"
    assert config.targets[0].selector == "app=web,tier in (api,worker),!canary"
    assert (config.logging.level, config.logging.format) == ("INFO", "json")


def test_overlapping_targets_are_valid() -> None:
    """A namespace watched whole and a selection in it overlap; the rollout sources watch each Deployment once."""
    config = parse_config({"targets": [{"namespace": "shop"}, {"namespace": "shop", "selector": "app=web"}]})
    assert len(config.targets) == 2


def test_options_that_would_be_ignored_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = refused(tmp_path, capsys, BASE + metric(quantile=0.99, aggregate="max") + "  - name: y\n"
                    f"    query: '{QUERY}'\n    threshold: 1\n    min_denominator: 5\n")
    assert lines == [
        "metrics[0].aggregate: expected no aggregate with a denominator or quantile (it would be ignored: those "
        "combine pods by their own rule), got 'max'",
        "metrics[1].min_denominator: expected no min_denominator without a denominator (it would be ignored), got 5",
    ]


def test_numbers_and_booleans_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`port: ${PORT}` is the text '8080' after expansion: read as the number it means, and checked as one."""
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("DRY_RUN", "true")
    monkeypatch.setenv("TICK", "30")
    config = parse_config({"targets": [{"namespace": "shop"}], "server": {"port": "${PORT}"},
                           "policy": {"dry_run": "${DRY_RUN}", "interval": "${TICK}"}})
    assert (config.server.port, config.policy.dry_run, config.policy.interval_seconds) == (9000, True, 30.0)
    monkeypatch.setenv("PORT", "80800")
    assert refused(tmp_path, capsys, BASE + "server:\n  port: ${PORT}\n") == [
        "server.port: expected a whole number from 0 to 65535, got 80800"]


def test_alertmanager_options_without_a_url_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(tmp_path, capsys, BASE + "alertmanager:\n  generator_url: https://grafana.example.com\n") == [
        "alertmanager.generator_url: expected alertmanager.url with it (without a url alerts are only logged, and "
        "this would be ignored), got 'https://grafana.example.com'"]
