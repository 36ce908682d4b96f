"""The status API, pages and `predictor status` against a running daemon (real HTTP server, real engine and
forecast scorer, over the in-memory simulated cluster), responses validated against docs/status-api.schema.json."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from predictor.daemon import Daemon
from predictor.demo import demo_config
from predictor.status.client import format_table, run_status
from tests.unit.status_daemon import START, running_daemon

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "status-api.schema.json").read_text())


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def validate(payload: object, definition: str) -> None:
    jsonschema.validate(payload, {**SCHEMA, "oneOf": [{"$ref": f"#/$defs/{definition}"}]},
                        format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Daemon, str]]:
    with running_daemon() as started:
        yield started


def test_the_list_names_every_watched_rollout_with_its_metrics(daemon: tuple[Daemon, str]) -> None:
    _, base = daemon
    status, content_type, body = get(base + "/api/v1/rollouts")
    assert status == 200 and content_type == "application/json"
    payload = json.loads(body)
    validate(payload, "list")
    by_name = {item["deployment"]: item for item in payload["rollouts"]}
    assert set(by_name) == {"checkout", "catalog"}
    checkout = by_name["checkout"]
    assert checkout["last_action"]["action"] == "undo" and checkout["last_action"]["revision"] == 2
    assert (checkout["revision"], checkout["rollback"]) == (3, True), "the rollback is listed, with the undo"
    assert checkout["risk"] < 0.5
    assert [m["name"] for m in checkout["metrics"]] == [spec.name for spec in demo_config().metrics]
    assert by_name["catalog"]["last_action"] is None
    assert checkout["page"] == "/rollouts/shop/checkout"


def test_the_detail_adds_samples_and_decisions(daemon: tuple[Daemon, str]) -> None:
    _, base = daemon
    status, _, body = get(base + "/api/v1/rollouts/shop/checkout")
    assert status == 200
    payload = json.loads(body)
    validate(payload, "detail")
    assert payload["revision"] == 3 and [r["revision"] for r in payload["previous"]] == [2]
    acted = payload["previous"][0]
    assert acted["phase"] == "acted" and acted["risk"] >= 0.9
    assert [d["action"] for d in acted["decisions"] if d["action"] != "alert"][-1] == "undo"
    decision = acted["decisions"][-1]
    assert decision["outcome"].startswith("applied") and "risk" in decision["reason"]
    metric = next(m for m in acted["metrics"] if m["name"] == decision["metric"])
    assert len(metric["samples"]) >= 2
    assert metric["samples"][-1]["new"] > metric["threshold"] > metric["samples"][-1]["old"]
    assert all(set(s) == {"t", "deployment", "new", "old"} for s in metric["samples"])


def test_unknown_rollouts_and_paths_are_404(daemon: tuple[Daemon, str]) -> None:
    _, base = daemon
    status, _, body = get(base + "/api/v1/rollouts/shop/nope")
    assert status == 404 and "not watched" in json.loads(body)["error"]
    assert get(base + "/api/v1/rollouts/shop")[0] == 404
    assert get(base + "/rollouts/shop/nope")[0] == 404


def test_pages_link_the_list_to_a_chart_per_metric(daemon: tuple[Daemon, str]) -> None:
    daemon_, base = daemon
    status, content_type, index = get(base + "/")
    assert status == 200 and content_type.startswith("text/html")
    assert 'href="rollouts/shop/checkout"' in index
    status, _, page = get(base + "/rollouts/shop/checkout")
    assert status == 200
    assert page.count('<svg class="chart"') >= len(daemon_.config.metrics)
    assert 'class="action action-' in page


def test_predictor_status_prints_a_table_from_the_running_daemon(daemon: tuple[Daemon, str]) -> None:
    _, base = daemon
    done = subprocess.run([sys.executable, "-m", "predictor.cli", "status", "--url", base],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split() == ["NAMESPACE", "DEPLOYMENT", "REVISION", "PHASE", "PROGRESS", "RISK", "METRIC", "BREACH",
                              "ACTION", "ACTED", "AGE"]
    assert sorted(row.split()[1] for row in rows) == ["catalog", "checkout"]
    checkout = next(row for row in rows if row.split()[1] == "checkout")
    assert checkout.split()[2:5] == ["3", "watching", "8/8"]
    assert checkout.split()[8] == "undo(r2)", "the rollback's row tells the undo of revision 2"

    as_json = subprocess.run([sys.executable, "-m", "predictor.cli", "status", "--url", base, "-o", "json"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert as_json.returncode == 0, as_json.stderr
    validate(json.loads(as_json.stdout), "list")


def test_watch_prints_again_every_interval(daemon: tuple[Daemon, str]) -> None:
    _, base = daemon
    printed: list[str] = []
    slept: list[float] = []
    run_status(base, output="wide", watch_seconds=3.0, emit=printed.append, sleep=slept.append, iterations=2)
    tables = [p for p in printed if p]
    assert len(tables) == 2 and slept == [3.0]
    assert all("error_ratio" in table and "THRESHOLD" in table for table in tables)


def test_status_says_why_it_cannot_read_the_api() -> None:
    done = subprocess.run([sys.executable, "-m", "predictor.cli", "status", "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "http://127.0.0.1:9/api/v1/rollouts" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "predictor.cli", "status", "--url", "localhost:8080"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "expected an http:// or https:// URL" in bad.stderr


def test_an_empty_board_is_said_in_words() -> None:
    assert format_table({"api_version": "v1", "updated_at": None, "rollouts": []}, START) == "No rollouts watched."
