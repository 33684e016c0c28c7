"""The report of a real tiny run, rendered in headless Chromium (Debian's chromium + chromium-driver).

`make test` installs them (the Makefile's `browser` target); without /usr/bin/chromium the test is
skipped with the reason.
"""
from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

import pytest

from webtune.report.stage import REPORT_SECTIONS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900),   # the shared tiny run may be built here
              pytest.mark.skipif(not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
                                 reason="needs Debian chromium and chromium-driver (`make browser` installs them)")]

# Count the distinct colours of a PNG inside the browser itself (a canvas), so no image library is needed.
COUNT_COLOURS = """
const done = arguments[arguments.length - 1];
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  done(seen.size);
};
img.onerror = () => done(-1);
img.src = 'data:image/png;base64,' + arguments[0];
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="webtune-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1280,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_every_section_without_errors(browser, tiny_run, tmp_path):
    from selenium.webdriver.common.by import By
    browser.get((tiny_run / "report.html").as_uri())
    assert browser.title.startswith("webtune")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    # nothing fetched from anywhere: the page is self-contained
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    for section in REPORT_SECTIONS:
        el = browser.find_element(By.ID, section)
        assert el.is_displayed() and el.size["height"] > 40, section
        assert el.find_element(By.TAG_NAME, "h2").text, section
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) >= 5 and all(c.size["width"] > 100 and c.size["height"] > 20 for c in charts)
    summary = browser.find_element(By.ID, "summary").text
    assert "domain test loss" in summary and "General test loss" in summary
    rows = browser.find_elements(By.CSS_SELECTOR, "#samples table.sample tr")
    assert len(rows) == 1 + 4                                        # header + eval.samples
    assert "preferred the tuned answer" in browser.find_element(By.ID, "judge").text
    # the paired evidence: one row per measure with its interval drawn, the items, the data fixes
    evidence = browser.find_element(By.ID, "evidence")
    measures = evidence.find_elements(By.CSS_SELECTOR, "table.evidence tr")
    assert len(measures) >= 1 + 4 and "domain test loss" in measures[1].text and "95% CI" in evidence.text
    plots = evidence.find_elements(By.CSS_SELECTOR, "svg.ci")
    assert len(plots) == len(measures) - 1 and all(p.size["width"] > 100 and p.size["height"] > 20 for p in plots)
    assert len(evidence.find_elements(By.CSS_SELECTOR, "table.items tr")) == 1 + 6    # every generated prompt
    assert "Items that got worse" in evidence.text
    assert "Grounded targets and decontamination" in browser.find_element(By.ID, "data").text

    shot = browser.get_screenshot_as_png()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "report.png").write_bytes(shot)
    colours = browser.execute_async_script(COUNT_COLOURS, base64.b64encode(shot).decode())
    assert colours > 20, f"screenshot looks blank: {colours} distinct colours"
