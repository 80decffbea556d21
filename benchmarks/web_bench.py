"""The web page at a beamtime's size (``make bench-web``): a catalogue of 1000 runs of 10 variables
each, served by ``photonflow-web`` with a real event bus, opened in Debian's headless Chromium.

What it measures
    - **render**: from the page's navigation to the table drawn (every row in the DOM), as the
      browser's clock says it; median of ``LOADS`` loads, and the table request's own time.
    - **new value**: a variable of a run written into the catalogue and announced on the run
      stream (``run_values_updated``, as the DataManager does), until the page shows it in its
      cell, no reload; median and maximum of ``UPDATES`` updates.
Targets: both under 1 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

RUNS = 1000
VARIABLES = 10
LOADS = 5
UPDATES = 10
PROPOSAL = "bench0001"


def make_catalogue(folder: Path) -> None:
    from photonflow.datamanager.catalogue import Catalogue, RunRecord

    with Catalogue(folder, PROPOSAL) as catalogue:
        for run in range(1, RUNS + 1):
            catalogue.add_run(RunRecord(
                run=run, proposal=PROPOSAL, session="s1", sample=f"sample_{run % 17}", beamline="bench",
                start=f"2026-12-06T{run // 3600 % 24:02d}:{run // 60 % 60:02d}:{run % 60:02d}.000Z", end="",
                node=f"grid/{run % 50}", role=("dark", "flat", "data")[run % 3],
                raw_file=f"/data/{PROPOSAL}/run{run}.h5", nexus_file="", frames_requested=100,
                frames_written=100, missing_frames=0, end_reason="completed"))
            for index in range(VARIABLES):
                catalogue.set_variable(run, f"value_{index}", run * 0.5 + index,
                                       attributes={"title": f"Value {index}", "units": "counts",
                                                   "tags": [("detector", "beam", "analysis")[index % 3]]})


def main() -> int:
    from tests.helpers.browser import browser_missing, chromium

    missing = browser_missing()
    if missing:
        print(f"bench-web needs a browser: {missing}")
        return 1
    from photonflow.datamanager.catalogue import Catalogue
    from photonflow.events.bus import RedisStreamBus
    from photonflow.events.redis_server import EmbeddedRedis
    from photonflow.web.live import RUN_STREAM

    with tempfile.TemporaryDirectory(prefix="web_bench_") as temporary:
        folder = Path(temporary)
        started = time.perf_counter()
        make_catalogue(folder / "catalogue")
        made = time.perf_counter() - started
        with EmbeddedRedis(folder / "redis") as redis:
            bus_url = redis.url + "/1"
            server = subprocess.Popen(
                [str(Path(sys.executable).with_name("photonflow-web")), "--catalogues", str(folder / "catalogue"),
                 "--event-bus", bus_url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                address = server.stdout.readline().split()[1]
                url = f"{address}p/{PROPOSAL}"
                renders, requests = [], []
                with chromium() as browser:
                    # bypass_csp: the bench's own probes are evaluated strings, which the page's policy forbids
                    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
                    for _ in range(LOADS):
                        page.goto(url)
                        page.wait_for_selector("body[data-ready='1']", timeout=30000)
                        rows = page.locator("#runs tbody tr").count()
                        assert rows == RUNS, rows
                        renders.append(float(page.get_attribute("body", "data-ready-at")))  # page asked -> table drawn
                        requests.append(float(page.get_attribute("body", "data-rendered-ms")))
                    page.wait_for_selector("#live.on")
                    latencies = []
                    with Catalogue(folder / "catalogue", PROPOSAL) as catalogue, \
                            RedisStreamBus(bus_url, stream=RUN_STREAM) as bus:
                        for update in range(UPDATES):
                            run = 1 + update * 97
                            value = 100000.0 + update
                            written = time.perf_counter()
                            catalogue.set_variable(run, "value_3", value, attributes={
                                "title": "Value 3", "units": "counts", "tags": ["detector"]})
                            bus.publish({"msg_kind": "run_values_updated",
                                         "data": {"run": run, "proposal": PROPOSAL, "values": {"value_3": value}}})
                            page.wait_for_function(
                                f"[...document.querySelectorAll('#runs tbody tr[data-run=\"{run}\"] td')]"
                                f".some(td => td.textContent === '{value:g}')", timeout=10000, polling="raf")
                            latencies.append(1000 * (time.perf_counter() - written))
            finally:
                server.terminate()
                server.wait(10)
    result = {
        "runs": RUNS, "variables": VARIABLES, "catalogue_made_s": round(made, 1),
        "render_ms": {"median": round(statistics.median(renders)), "max": round(max(renders)),
                      "table_request_and_draw_median": round(statistics.median(requests))},
        "new_value_ms": {"median": round(statistics.median(latencies)), "max": round(max(latencies))},
        "targets_ms": {"render": 1000, "new_value": 1000},
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
