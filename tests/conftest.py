"""Fixture modules for the real Prometheus, the real Alertmanager and the fake Kubernetes API server."""

pytest_plugins = [
    "tests.fixtures.kube", "tests.fixtures.prometheus", "tests.fixtures.alertmanager", "tests.fixtures.docker",
]
