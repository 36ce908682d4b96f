"""The pages as a person sees them: Debian's Chromium, headless, driven by Playwright (no browser download), opens
the running daemon's list and a rollout's page, and the demo's static report, and measures what it drew."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from predictor.demo import run_demo
from tests.unit.status_daemon import running_daemon

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 900})
        try:
            yield context
        finally:
            context.close()


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not drawn"
    return dict(found)


def drawn(page: Page, chart: str) -> dict[str, Any]:
    """What one chart drew, as the browser laid it out."""
    return dict(page.evaluate("""(chart) => {
        const svg = document.querySelector(`svg.chart[data-metric="${chart}"]`);
        const size = (el) => { if (!el) return null; const b = el.getBoundingClientRect();
                               return {x: b.x, y: b.y, width: b.width, height: b.height}; };
        const series = {};
        for (const key of ["deployment", "new", "old"]) {
            const path = svg.querySelector(`path.series-${key}`);
            series[key] = path ? {length: path.getTotalLength(), box: size(path)} : null;
        }
        const actions = [...svg.querySelectorAll("g.action")].map(g => ({
            kind: [...g.classList].find(c => c.startsWith("action-")), box: size(g.querySelector("line")),
            label: g.querySelector("text").textContent}));
        return {svg: size(svg), plot: size(svg.querySelector("rect.plot")), series, actions,
                threshold: size(svg.querySelector("line.threshold")),
                band: size(svg.querySelector("path.forecast-band")),
                breach: size(svg.querySelector("line.predicted-breach"))};
    }""", chart))


def test_the_rollout_page_draws_each_metric_and_marks_the_undo_where_it_happened(browser: BrowserContext) -> None:
    with running_daemon() as (daemon, base):
        page = browser.new_page()
        page.goto(base + "/")
        page.click("text=checkout")
        page.wait_for_url("**/rollouts/shop/checkout")
        assert page.locator("section.revision").count() == 2, "the rollback and the undone revision"
        undone = page.locator('section.revision[data-revision="2"]')
        assert undone.locator("svg.chart").count() == len(daemon.config.metrics)
        page.evaluate("""() => { for (const s of document.querySelectorAll('section.revision[data-revision="3"]'))
                                   s.remove(); }""")  # what is left to measure: the undone revision's charts
        chart = drawn(page, "error_ratio")
        plot = chart["plot"]
        assert chart["svg"]["width"] > 500 and chart["svg"]["height"] > 200
        for key in ("deployment", "new", "old"):
            line = chart["series"][key]
            assert line is not None and line["length"] > 50 and line["box"]["width"] > 50, f"{key}: {line}"
        assert chart["series"]["new"]["box"]["height"] > 5, "the new pods' errors move"
        assert plot["y"] <= chart["threshold"]["y"] <= plot["y"] + plot["height"]
        undo = [a for a in chart["actions"] if a["kind"] == "action-undo"]
        assert len(undo) == 1 and undo[0]["label"] == "undo"
        mark = undo[0]["box"]
        assert mark["height"] > 0.9 * plot["height"], "the mark spans the plot"
        new_pods = chart["series"]["new"]["box"]
        assert new_pods["x"] < mark["x"] <= new_pods["x"] + new_pods["width"] + 1, \
            "the undo is marked within the samples, where it happened"
        text = page.locator('section.revision[data-revision="2"] li.decision').last.inner_text()
        assert text.startswith("undo") and "risk" in text and "error_ratio" in text
        page.close()


def test_the_demo_report_shows_its_three_rollouts_with_forecast_and_predicted_breach(
        browser: BrowserContext, tmp_path: Path) -> None:
    run_demo(report=tmp_path, emit=lambda line: None)
    page = browser.new_page()
    page.goto((tmp_path / "index.html").as_uri())
    rows = page.locator("tr.rollout")
    assert sorted(rows.nth(i).locator("a").inner_text() for i in range(rows.count())) == [
        "cart", "catalog", "checkout"]
    assert "before" in page.locator("tr.rollout", has_text="cart").inner_text(), "the lead before the breach seen"
    page.click("text=cart")
    page.wait_for_url("**/cart-r2.html")
    chart = drawn(page, "memory_limit_ratio")
    assert chart["band"] is not None and chart["band"]["width"] > 10 and chart["band"]["height"] > 1
    assert chart["breach"] is not None and chart["breach"]["height"] > 0
    pause = [a for a in chart["actions"] if a["kind"] == "action-pause"]
    assert len(pause) == 1
    assert chart["breach"]["x"] > pause[0]["box"]["x"], "the breach was predicted after the pause, ahead of it"
    assert box(page, 'svg.chart[data-metric="memory_limit_ratio"] path.series-new')["height"] > 20, \
        "the leak rises on the chart"
    page.click("text=all rollouts")
    page.wait_for_url("**/index.html")
    page.close()
