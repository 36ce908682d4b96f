"""RBAC with nothing spare: every rendered Role and ClusterRole of both packagings and both modes stays within
the allow-list below, and the rights the daemon needs are all there, bound to the account it runs as.

The allow-list is what the daemon calls (predictor/rollouts/kubernetes.py, predictor/actuators/kubernetes.py,
predictor/leader.py): list+watch Deployments and ReplicaSets, get (re-read) and patch (pause, undo,
annotations) Deployments, create core/v1 Events, get the one kill-switch ConfigMap in its own namespace, and with
leader election get/create/update one Lease.
Growing it needs a reason in docs/DEPLOY.md and a change here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from predictor.leader import LeaderElectionConfig
from tests.deploy.rendering import (
    ALL_SCENARIOS,
    Obj,
    Rendered,
    container_env,
    daemon_config,
    daemon_container,
    pod_spec,
    render,
)

ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("apps", "deployments"): frozenset({"get", "list", "watch", "patch"}),
    ("apps", "replicasets"): frozenset({"get", "list", "watch"}),
    ("", "pods"): frozenset({"list", "watch"}),
    ("", "events"): frozenset({"create"}),
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
    ("", "configmaps"): frozenset({"get"}),
}
"""(apiGroup, resource) -> verbs. Nothing else: no Secrets, no get on pods, no pods/exec, no events.k8s.io."""
NEEDED_TO_WATCH_AND_ACT: dict[tuple[str, str], frozenset[str]] = {
    ("apps", "deployments"): frozenset({"get", "list", "watch", "patch"}),
    ("apps", "replicasets"): frozenset({"get", "list", "watch"}),
    ("", "pods"): frozenset({"list", "watch"}),
    ("", "events"): frozenset({"create"}),
}
NEEDED_FOR_LEADER_ELECTION: dict[tuple[str, str], frozenset[str]] = {
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
}
KILL_SWITCH = "predictor-kill-switch"
"""The one ConfigMap the daemon may read (`safety.kill_switch.configmap`'s default), in its own namespace."""
RESTRICTABLE_BY_NAME = frozenset({"get", "update", "patch", "delete"})
"""Verbs that resourceNames can restrict (list, watch and create carry no name in the request)."""


def _rules(rendered: Rendered) -> Iterator[tuple[Obj, Obj]]:  # (role, rule)
    for role in rendered.of_kind("Role", "ClusterRole"):
        for rule in role.get("rules") or []:
            yield role, rule


def _grants(roles: list[Obj]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted without a name restriction (a restricted rule counts too when
    the restriction names what the daemon uses; checked separately)."""
    out: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    out.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return out


def violations(role: Obj) -> list[str]:
    """What in `role` goes beyond the allow-list, one line each."""
    found = []
    where = f"{role['kind']} {role['metadata'].get('namespace')}/{role['metadata']['name']}"
    for rule in role.get("rules") or []:
        if set(rule) - {"apiGroups", "resources", "verbs", "resourceNames"}:
            found.append(f"{where}: unexpected fields in {rule}")
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            if "*" in rule.get(field, []):
                found.append(f"{where}: wildcard in {field}")
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                allowed = ALLOWED.get((group, resource))
                if allowed is None:
                    found.append(f"{where}: {group or 'core'}/{resource} is not on the allow-list")
                elif extra := set(rule.get("verbs", [])) - allowed:
                    found.append(f"{where}: verbs {sorted(extra)} on {group or 'core'}/{resource}")
        if "resourceNames" in rule:
            if not rule["resourceNames"]:
                found.append(f"{where}: empty resourceNames")
            if set(rule.get("verbs", [])) - RESTRICTABLE_BY_NAME:
                found.append(f"{where}: resourceNames cannot restrict {rule['verbs']}")
    return found


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_rule_is_within_the_allow_list(scenario: str) -> None:
    rendered = render(scenario)
    roles = rendered.of_kind("Role", "ClusterRole")
    assert roles, "the scenario renders RBAC"
    assert [line for role in roles for line in violations(role)] == []


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        (
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            "core/secrets is not on the allow-list",
        ),
        ({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}, "core/pods/exec is not on"),
        ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}, "wildcard in verbs"),
        ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}, "verbs ['delete']"),
        (
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
            "events.k8s.io/events",
        ),
        (
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list"], "resourceNames": ["x"]},
            "resourceNames cannot restrict ['list']",
        ),
        ({"nonResourceURLs": ["/metrics"], "verbs": ["get"]}, "unexpected fields"),
    ],
)
def test_the_allow_list_check_catches_what_it_is_for(rule: Obj, complaint: str) -> None:
    role = {"kind": "Role", "metadata": {"name": "bad", "namespace": "x"}, "rules": [rule]}
    assert any(complaint in line for line in violations(role)), violations(role)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_no_cluster_wide_rights(scenario: str) -> None:
    rendered = render(scenario)
    assert not rendered.of_kind("ClusterRole", "ClusterRoleBinding"), "per-namespace Roles only"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_watched_namespace_grants_what_the_daemon_needs_to_its_service_account(scenario: str) -> None:
    rendered = render(scenario)
    workload, container = daemon_container(rendered)
    home = workload["metadata"]["namespace"]
    account = pod_spec(workload)["serviceAccountName"]
    watched = {
        home if t["namespace"] == "${POD_NAMESPACE}" else t["namespace"]
        for t in daemon_config(rendered)["targets"]
    }
    bindings = rendered.of_kind("RoleBinding")
    for binding in bindings:
        meta = binding["metadata"]
        assert binding["roleRef"]["kind"] == "Role"
        rendered.find(
            "Role", binding["roleRef"]["name"], meta["namespace"]
        )  # bound Role exists, same namespace
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": home}], (
            f"{meta['namespace']}/{meta['name']} binds exactly the daemon's account"
        )

    def roles_bound_in(namespace: str) -> list[Obj]:
        names = {b["roleRef"]["name"] for b in bindings if b["metadata"]["namespace"] == namespace}
        return [rendered.find("Role", name, namespace) for name in sorted(names)]

    bound_namespaces = {b["metadata"]["namespace"] for b in bindings}
    assert bound_namespaces <= watched | {home}, (
        "no rights in a namespace the daemon neither watches nor runs in"
    )
    for namespace in watched:
        grants = _grants(roles_bound_in(namespace))
        for key, verbs in NEEDED_TO_WATCH_AND_ACT.items():
            assert verbs <= grants.get(key, set()), f"{namespace}: {key} needs {sorted(verbs)}"

    election = LeaderElectionConfig.from_env(
        container_env(container, "pod-0", home, workload["spec"]["template"]["metadata"]["labels"])
    )
    home_grants = _grants(roles_bound_in(home))
    if election is None:
        assert ("coordination.k8s.io", "leases") not in home_grants, "Lease rights only with leader election"
    else:
        for key, verbs in NEEDED_FOR_LEADER_ELECTION.items():
            assert verbs <= home_grants.get(key, set())
        for namespace in watched - {home}:
            assert ("coordination.k8s.io", "leases") not in _grants(roles_bound_in(namespace))


@pytest.mark.parametrize("scenario", [s for s in ALL_SCENARIOS if "sidecar" in s])
def test_a_sidecar_may_patch_only_its_own_deployment(scenario: str) -> None:
    rendered = render(scenario)
    patch_rules = [rule for _, rule in _rules(rendered) if "patch" in rule["verbs"]]
    assert patch_rules == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["patch"],
            "resourceNames": ["checkout"],
        }
    ]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_only_the_daemon_gets_an_api_token(scenario: str) -> None:
    """The retraining job talks to Prometheus only; a sidecar's application containers get no token."""
    rendered = render(scenario)
    for workload in rendered.of_kind("CronJob"):
        assert pod_spec(workload)["automountServiceAccountToken"] is False
    if rendered.mode == "sidecar":
        workload, _ = daemon_container(rendered)
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        token_mounts = {
            c["name"]
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
        }
        assert token_mounts == {"predictor"}


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_the_kill_switch_is_readable_in_the_daemons_namespace_and_nothing_more(scenario: str) -> None:
    rendered = render(scenario)
    workload, _ = daemon_container(rendered)
    home = workload["metadata"]["namespace"]
    account = pod_spec(workload)["serviceAccountName"]
    configmap_rules = [(role, rule) for role, rule in _rules(rendered) if "configmaps" in rule.get("resources", [])]
    assert [(role["metadata"]["namespace"], rule) for role, rule in configmap_rules] == [
        (home, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": [KILL_SWITCH]})
    ]
    role_name = configmap_rules[0][0]["metadata"]["name"]
    bound = [b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["name"] == role_name]
    assert [b["subjects"] for b in bound] == [[{"kind": "ServiceAccount", "name": account, "namespace": home}]]
    assert "kill_switch" not in (daemon_config(rendered).get("safety") or {}), "the default name is the one granted"
