"""``report.html`` in a real headless Chromium: no console errors, nothing fetched, the controls work.

Chromium and its driver come from the Debian packages (``apt-get install chromium chromium-driver``,
which ``.ci/run`` does); selenium drives them (the ``dev`` extra) and downloads nothing. Without
them the test is skipped on a workstation, a failure in CI (``CI=true``, tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bicorseg.demo import DEMO_DATASET
from bicorseg.report import report_folder
from tests.helpers import require
from tests.helpers.report import ground_width, output_folder

CHROMIUM = Path(os.environ.get("BICORSEG_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BICORSEG_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1800",
)  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    require("selenium")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.skip(f"{path} is missing (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _visible(driver, selector: str) -> list[str]:
    return [
        f"{e.get_attribute('data-layer')}/{e.get_attribute('data-class')}"
        for e in driver.find_elements("css selector", selector)
        if e.is_displayed()
    ]


@pytest.mark.slow
def test_report_in_a_real_browser(browser, tmp_path) -> None:
    from selenium.webdriver.common.keys import Keys

    page = report_folder(output_folder(tmp_path / "out"))
    browser.get(page.resolve().as_uri())
    assert browser.title.startswith("bicorseg report")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    # nothing was fetched: every picture is inline
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    images = browser.find_elements("css selector", "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)

    overlay = browser.find_element("css selector", "img.overlay")
    slider = browser.find_element("css selector", "input.opacity")

    def opacity() -> float:
        return float(browser.execute_script("return getComputedStyle(arguments[0]).opacity", overlay))

    assert opacity() == pytest.approx(0.6)
    slider.send_keys(Keys.HOME)  # the keyboard moves the real slider and fires its input events
    assert opacity() == 0.0
    assert browser.find_element("css selector", "output.opacity-value").text == "0 %"
    slider.send_keys(Keys.END)
    assert opacity() == 1.0
    for _ in range(25):
        slider.send_keys(Keys.ARROW_LEFT)
    assert opacity() == pytest.approx(0.75)

    n = DEMO_DATASET.num_classes
    assert sorted(_visible(browser, "figure.heatmap")) == sorted(f"2/{c}" for c in range(n))  # last layer
    browser.find_element("css selector", 'input.layer[value="1"]').click()
    assert sorted(_visible(browser, "figure.heatmap")) == sorted(f"1/{c}" for c in range(n))
    browser.find_element("css selector", 'input.heat-class[value="5"]').click()  # hide "building"
    assert sorted(_visible(browser, "figure.heatmap")) == sorted(f"1/{c}" for c in range(n - 1))
    browser.find_element("css selector", 'input.layer[value="2"]').click()
    assert sorted(_visible(browser, "figure.heatmap")) == sorted(f"2/{c}" for c in range(n - 1))
    assert browser.get_log("browser") == []  # and the interaction logged nothing either


@pytest.mark.slow
def test_truth_views_scale_bar_and_pointer_in_a_real_browser(browser, tmp_path) -> None:
    import rasterio
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    out = output_folder(tmp_path / "out", metrics=False, labels=True)
    page = report_folder(out, labels=out / "labels")
    browser.get(page.resolve().as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []

    def shown() -> list[str]:  # the overlays laid out (is_displayed would also drop a transparent one)
        overlays = browser.find_elements("css selector", "img.overlay")
        script = "return getComputedStyle(arguments[0]).display !== 'none'"
        return [o.get_attribute("data-view") for o in overlays if browser.execute_script(script, o)]

    assert shown() == ["prediction"]
    browser.find_element("css selector", 'input.view[value="errors"]').click()
    assert shown() == ["errors"]
    browser.find_element("css selector", 'input.view[value="truth"]').click()
    assert shown() == ["truth"]
    # the slider moves the view shown
    browser.find_element("css selector", "input.opacity").send_keys(Keys.HOME)
    truth = browser.find_element("css selector", 'img.overlay[data-view="truth"]')
    assert browser.execute_script("return getComputedStyle(arguments[0]).opacity", truth) == "0"
    browser.find_element("css selector", 'input.view[value="prediction"]').click()
    assert shown() == ["prediction"]

    # the scale bar on the screen: its label's metres over the scene's ground width, of the picture's width
    base = browser.find_element("css selector", "img.base")
    bar = browser.find_element("css selector", ".scalebar")
    metres = float(bar.find_element("css selector", ".scale-label").text.removesuffix(" m"))
    assert bar.is_displayed() and bar.size["width"] > 20
    expected = metres / ground_width(out / "prediction.tif")
    assert bar.size["width"] / base.size["width"] == pytest.approx(expected, rel=0.01)

    # the pointer at a quarter of the picture's width and height: CRS coordinates of that pixel
    with rasterio.open(out / "prediction.tif") as src:
        t, width, height = src.transform, src.width, src.height
    w, h = base.size["width"], base.size["height"]
    ActionChains(browser).move_to_element_with_offset(base, -w // 4, -h // 4).perform()
    text = browser.find_element("css selector", "output.pointer").text
    x, y, col, row = (float(v) for v in re.findall(r"-?[\d.]+", text.replace(",", ""))[:4])
    assert abs(col - width / 4) <= 1 and abs(row - height / 4) <= 1
    expected_x, expected_y = t @ (width / 4, height / 4)
    assert abs(x - expected_x) <= abs(t.a) and abs(y - expected_y) <= abs(t.e)
    assert text.endswith(f"(pixel {int(col)}, {int(row)})") and " m, " in text
    assert browser.get_log("browser") == []
