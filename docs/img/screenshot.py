"""Regenerates docs/img/decision.png: `predictor demo --report` and one decision of it as Chromium draws it.

Run: .venv/bin/python docs/img/screenshot.py  (Debian's /usr/bin/chromium through Playwright; nothing downloaded)
"""

import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from predictor.demo import run_demo

OUT = Path(__file__).with_name("decision.png")

with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
    run_demo(report=Path(folder), emit=lambda line: None)
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto((Path(folder) / "rollouts" / "shop" / "cart-r2.html").as_uri())
    page.evaluate("""() => {  // the decision and the chart of the metric it was taken on, nothing else
        const section = document.querySelector("section.revision");
        for (const metric of section.querySelectorAll("div.metric"))
            if (metric.dataset.metric !== "memory_limit_ratio") metric.remove();
    }""")
    page.locator("section.revision").screenshot(path=str(OUT))
    browser.close()
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
