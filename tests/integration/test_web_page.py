"""The web page in a real browser (Debian's headless Chromium through Playwright) on a real suite
(`photonflow up`: database, event bus, Controller, Recorder, DataManager, the page beside them):
the run table loads, a run made by a real series appears without reloading, a filter works, a
comment round-trips to the catalogue (and the Qt run table shows it), the Recorder's preview
updates while the series runs, and a write without the token is refused. Screenshots of what it
rendered go to var/screenshots/web_*.png."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tango

from photonflow.datamanager.catalogue import Catalogue
from tests.helpers.browser import browser_missing, chromium
from tests.helpers.cli import run_photonflow
from tests.helpers.devices import wait_for_state, wait_until
from tests.helpers.paths import DEMO_CONFIG, REPOSITORY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "browser present")]

PROPOSAL = "web0001"
SCREENSHOTS = REPOSITORY / "var" / "screenshots"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    data = folder / "data"
    up = run_photonflow(folder, "up", "--config", str(DEMO_CONFIG), PHOTONFLOW_DATA_ROOT=str(data))
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        address = re.search(r"(http://127\.0\.0\.1:\d+/)\s+\(the web page", up.stdout)
        assert address, up.stdout
        tango_host = next(line.split("=", 1)[1] for line in up.stdout.splitlines()
                          if line.strip().startswith("export TANGO_HOST="))

        def device(name: str) -> tango.DeviceProxy:
            proxy = tango.DeviceProxy(f"tango://{tango_host}/{name}")
            proxy.set_timeout_millis(15000)
            return proxy

        yield {"url": address.group(1), "device": device, "catalogues": data / "catalogue",
               "token": (folder / "run" / "web.token").read_text().strip()}
    finally:
        run_photonflow(folder, "down")


def acquire(suite, frames: int, period: float, sample: str) -> None:
    """A real series through the Controller, as the DataManager's acquisition of ``sample``."""
    controller, datamanager = suite["device"]("demo/photonflow/controller"), suite["device"]("demo/photonflow/datamanager")
    datamanager.SetExperiment(json.dumps({"proposal": PROPOSAL, "session": "20261206", "sample": sample}))
    datamanager.SetRole("data")
    wait_for_state(controller, "ON", "ALARM")
    controller.Configure(json.dumps({"frames": frames, "exposure": 0.01, "period": period}))
    controller.Start()


def catalogued_runs(suite) -> int:
    path = suite["catalogues"] / f"{PROPOSAL}.sqlite"
    if not path.is_file():
        return 0
    with Catalogue(suite["catalogues"], PROPOSAL) as catalogue:
        return catalogue.count()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"web_{name}.png"), full_page=True)


def test_the_run_table_in_a_browser_is_live_filters_and_writes_comments_with_the_token(suite):
    acquire(suite, 10, 0.02, "lysozyme")  # run 1: the proposal's catalogue exists
    wait_until(lambda: catalogued_runs(suite) == 1, 120, what="run 1 catalogued")
    with chromium() as browser:
        # bypass_csp: the test's own probes are evaluated strings, which the page's policy forbids
        page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
        page.goto(suite["url"])
        page.wait_for_selector(f"#proposals a[href='/p/{PROPOSAL}']")
        page.click(f"#proposals a[href='/p/{PROPOSAL}']")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#live.on")  # the page listens to the server's events
        assert page.locator("#runs tbody tr").count() == 1
        assert page.locator("#runs tbody tr[data-run='1'] td").nth(2).inner_text() == "lysozyme"
        screenshot(page, "table")

        # a real series: the series panel follows it, its preview updates, its run appears, no reload
        acquire(suite, 60, 0.05, "thaumatin")
        page.wait_for_function("document.getElementById('series-state').textContent === 'RUNNING'", timeout=30000)
        page.wait_for_function("Number(document.getElementById('preview').dataset.version || 0) >= 1", timeout=30000)
        first = int(page.get_attribute("#preview", "data-version"))
        page.wait_for_function(f"Number(document.getElementById('preview').dataset.version) > {first}", timeout=30000)
        # a PNG the browser decoded
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0", timeout=30000)
        screenshot(page, "series")
        page.wait_for_selector("#runs tbody tr[data-run='2']", timeout=120000)
        assert page.locator("#runs tbody tr[data-run='2'] td").nth(2).inner_text() == "thaumatin"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
        # its variables follow, computed by the DataManager's jobs, into the same row
        page.wait_for_function("[...document.querySelectorAll('#runs thead tr.titles th')]"
                               ".some(th => th.textContent === 'Ring current [mA]')", timeout=120000)
        groups = page.locator("#runs thead tr.groups th").all_text_contents()
        assert groups[0] == "run" and "source" in groups  # column groups: the run's fields, then by tag
        screenshot(page, "live")

        # a run's I(q) and its summary image, plotted in the page by plotly.js
        page.wait_for_selector("#runs tbody tr[data-run='2'] td.array", timeout=120000)
        key = "azimuthal_integration"
        page.wait_for_selector(f"#runs tbody tr[data-run='2'] td.array[data-key='{key}']", timeout=120000)
        page.click(f"#runs tbody tr[data-run='2'] td.array[data-key='{key}']")
        page.wait_for_selector("#plot .main-svg .scatterlayer path.js-line", timeout=30000)
        assert page.inner_text("#plot-title") == "run 2: I(q)"
        screenshot(page, "plot")
        page.wait_for_selector("#runs tbody tr[data-run='2'] td.array[data-key='summary_image']", timeout=120000)
        page.click("#runs tbody tr[data-run='2'] td.array[data-key='summary_image']")
        page.wait_for_selector("#plot .main-svg .heatmaplayer image, #plot .main-svg .hm", timeout=30000)
        screenshot(page, "image")

        # a filter
        page.fill("#filter", "sample:thaum")
        assert page.locator("#runs tbody tr").count() == 1
        assert page.locator("#runs tbody tr").get_attribute("data-run") == "2"
        page.fill("#filter", "")
        assert page.locator("#runs tbody tr").count() == 2

        # a comment without the token is refused and changes nothing
        page.click("#runs tbody tr[data-run='1'] td.comment")
        page.fill("#runs tbody tr[data-run='1'] td.comment input", "not allowed")
        page.press("#runs tbody tr[data-run='1'] td.comment input", "Enter")
        page.wait_for_selector("#message.error")
        assert "token" in page.inner_text("#message")
        with Catalogue(suite["catalogues"], PROPOSAL) as catalogue:
            assert catalogue.run(1).comment == ""
        refused = page.evaluate(f"fetch('/api/p/{PROPOSAL}/runs/1/comment', {{method: 'POST', "
                                "body: JSON.stringify({text: 'x'})}).then(r => r.status)")
        assert refused == 401

        # with the token, it reaches the catalogue, the other pages, and the Qt run table
        page.fill("#token", suite["token"])
        page.click("#runs tbody tr[data-run='1'] td.comment")
        page.fill("#runs tbody tr[data-run='1'] td.comment input", "crystal cracked at 40 s")
        page.press("#runs tbody tr[data-run='1'] td.comment input", "Enter")
        page.wait_for_selector("#message.ok")
        wait_until(lambda: Catalogue(suite["catalogues"], PROPOSAL).run(1).comment == "crystal cracked at 40 s", 30,
                   what="the comment in the catalogue")
        other = browser.new_page(bypass_csp=True)
        other.goto(f"{suite['url']}p/{PROPOSAL}")
        other.wait_for_selector("body[data-ready='1']")
        assert other.locator("#runs tbody tr[data-run='1'] td.comment").inner_text() == "crystal cracked at 40 s"
        screenshot(page, "comment")
    _qt_run_table_shows(suite["catalogues"] / f"{PROPOSAL}.sqlite", 1, "crystal cracked at 40 s")


def _qt_run_table_shows(path: Path, run: int, comment: str) -> None:
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # as make test runs it: no display
    from taurus.external.qt import QtWidgets

    from photonflow.clients.run_table import RunTableModel

    QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    with Catalogue(path.parent, path.stem) as catalogue:
        model = RunTableModel(catalogue)
        row = next(i for i, values in enumerate(model.rows) if values["run"] == run)
        assert model.data(model.index(row, model.columns.index("comment"))) == comment
