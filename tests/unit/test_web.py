"""The web page's logic without a server: the run table as the page gets it (titles, units, groups,
a failed cell's reason, arrays to plot, CSV), which proposals a browser may name, who may write,
the series view's pace, and the run feed on a real Redis."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from photonflow.datamanager.catalogue import Catalogue
from photonflow.errors import ConfigurationError
from photonflow.events.bus import RedisStreamBus
from photonflow.events.redis_server import EmbeddedRedis
from photonflow.web import run_table
from photonflow.web.access import Access, ensure_token, is_loopback
from photonflow.web.live import RUN_STREAM, RunFeed, SeriesView, preview_png
from tests.helpers.runs import run_record as record
from tests.helpers.waiting import wait_until


@pytest.fixture
def catalogues(tmp_path):
    with Catalogue(tmp_path, "mx1234") as catalogue:
        for run in (1, 2):
            catalogue.add_run(record(run, "dark" if run == 1 else "data"))
        catalogue.set_variable(1, "ring_current", 199.5, attributes={"title": "Ring current", "units": "mA",
                                                                     "tags": ["source"]})
        catalogue.set_variable(2, "ring_current", 198.0, attributes={"title": "Ring current", "units": "mA",
                                                                     "tags": ["source"]})
        catalogue.set_variable(2, "peaks", None, error="ValueError: no ring found",
                               attributes={"title": "Peaks q", "units": "nm^-1", "tags": ["analysis"]})
        catalogue.set_variable(2, "profile", np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 15.0]]),
                               attributes={"title": "I(q)", "tags": ["analysis"]})
        catalogue.set_variable(2, "image", np.arange(12.0).reshape(3, 4), summary="max",
                               attributes={"title": "Summary image", "tags": ["detector"]})
    Catalogue(tmp_path, "other").close()
    return run_table.Catalogues(tmp_path)


def test_the_table_gives_titles_units_groups_failed_reasons_and_arrays_to_plot(catalogues):
    with catalogues.open("mx1234") as catalogue:
        data = run_table.table(catalogue)
        plotted = run_table.plot(catalogue, 2, "profile")
    by_key = {c["key"]: c for c in data["columns"]}
    assert by_key["ring_current"] == {"key": "ring_current", "title": "Ring current", "group": "source", "units": "mA"}
    assert by_key["peaks"]["group"] == "analysis" and by_key["run"]["group"] == "run"
    assert [c["key"] for c in data["columns"]][:3] == ["run", "start", "sample"]  # the run's own fields first
    rows = {row["run"]: row for row in data["rows"]}
    assert rows[1]["role"] == "dark" and rows[2]["ring_current"] == 198.0
    assert rows[2]["profile"] == {"array": [2, 3]} and rows[2]["peaks"] is None
    assert data["errors"] == {"2": {"peaks": "ValueError: no ring found"}}
    assert rows[2]["image"] == 11.0  # an image summarised in the table...
    assert data["plots"] == {"2": ["image", "profile"]}  # ...and plotted from its file, as I(q) is
    assert plotted == {"x": [1.0, 2.0, 3.0], "y": [10.0, 20.0, 15.0]}
    csv_lines = run_table.csv_text(data).splitlines()
    assert "Ring current [mA]" in csv_lines[0] and "Peaks q [nm^-1]" in csv_lines[0]
    assert csv_lines[2].startswith("2,") and "array 2x3" in csv_lines[2]
    json.dumps(data, allow_nan=False)  # what the page gets is strict JSON


def test_a_browser_names_only_proposals_the_folder_lists(catalogues, tmp_path):
    assert catalogues.proposals() == ["mx1234", "other"]
    for name in ("../mx1234", "mx1234/../other", "/etc/passwd", "nothere", "", None):
        with pytest.raises(run_table.UnknownProposal):
            catalogues.open(name)
    assert not (tmp_path / "nothere.sqlite").exists()  # never made by looking


def test_one_run_s_row_carries_its_values_and_why_a_value_is_missing(catalogues):
    with catalogues.open("mx1234") as catalogue:
        found = run_table.row(catalogue, 2)
        assert run_table.row(catalogue, 99) is None
    assert found["values"]["ring_current"] == 198.0 and found["values"]["sample"] == "ceo2"
    assert found["errors"] == {"peaks": "ValueError: no ring found"}


@pytest.mark.parametrize(("run", "text", "reason"), [
    (0, "x", "InvalidRun"), (True, "x", "InvalidRun"), (3, 42, "InvalidComment"), (3, "x" * 2001, "InvalidComment")])
def test_a_bad_comment_says_what_to_fix(run, text, reason):
    with pytest.raises(ConfigurationError) as refused:
        run_table.check_comment(run, text)
    assert refused.value.reason == reason


def test_writing_needs_the_token_or_the_proxys_user_and_binding_beyond_loopback_needs_either(tmp_path):
    token = ensure_token(tmp_path / "run" / "web.token")
    assert ensure_token(tmp_path / "run" / "web.token") == token  # made once
    assert (tmp_path / "run" / "web.token").stat().st_mode & 0o777 == 0o600
    access = Access(token=token)
    assert access.writer({"Authorization": f"Bearer {token}"}) == "token"
    assert access.writer({"Authorization": "Bearer wrong"}) is None and access.writer({}) is None
    assert access.writer({"X-Remote-User": "alice"}) is None  # no proxy configured: a browser's header is not trusted
    proxied = Access(user_header="X-Remote-User")
    assert proxied.writer({"X-Remote-User": "alice"}) == "alice"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    Access().check_bind("127.0.0.1")
    with pytest.raises(ConfigurationError, match="no authentication") as refused:
        Access().check_bind("0.0.0.0")
    assert refused.value.reason == "UnsafeBind"
    access.check_bind("0.0.0.0")


def test_the_series_is_told_at_most_five_times_a_second_and_its_last_news_is_never_dropped():
    now = [100.0]
    series = SeriesView(max_rate=5.0, clock=lambda: now[0])
    assert not series.due()  # nothing changed yet
    series.update(state="RUNNING", frames_requested=100, frames_written=10)
    assert series.due()
    series.update(frames_written=20)
    now[0] += 0.1
    assert not series.due()  # 0.1 s after the last telling: too soon
    now[0] += 0.11
    assert series.due() and series.snapshot()["frames_written"] == 20 and series.snapshot()["progress"] == 0.2
    series.set_preview(np.arange(12).reshape(3, 4), 7)
    assert series.snapshot()["preview_version"] == 1 and series.snapshot()["preview_frame"] == 7


def test_the_preview_is_a_png_stretched_between_its_percentiles():
    image = np.zeros((40, 50))
    image[10:20, 10:20] = 1000.0
    decoded = np.asarray(Image.open(io.BytesIO(preview_png(image))))
    assert decoded.shape == (40, 50) and decoded.dtype == np.uint8
    assert decoded[15, 15] == 255 and decoded[0, 0] == 0
    with pytest.raises(ValueError, match="2-D"):
        preview_png(np.zeros(5))


def test_the_run_feed_hands_each_change_to_its_proposal_once_for_every_page(tmp_path):
    delivered = []
    with EmbeddedRedis(tmp_path) as server:
        url = server.url + "/1"
        with RedisStreamBus(url, stream=RUN_STREAM) as bus:
            bus.publish({"msg_kind": "run_values_updated", "data": {"run": 1, "proposal": "old", "values": {}}})
            feed = RunFeed(RedisStreamBus(url, stream=RUN_STREAM), lambda p, r: delivered.append((p, r)),
                           block_ms=100)
            feed.start()
            try:
                bus.publish({"msg_kind": "run_values_updated", "data": {"proposal": "mx1234"}})  # no run: skipped
                bus.publish({"msg_kind": "something_else", "data": {"run": 3, "proposal": "mx1234"}})
                bus.publish({"msg_kind": "run_values_updated", "data": {"run": 7, "proposal": "mx1234",
                                                                        "values": {"comment": "good"}}})
                wait_until(lambda: feed.messages_read == 3, 10, what="the three new messages read")
            finally:
                feed.close()
    assert delivered == [("mx1234", 7)]  # the message before it started was the catalogue's to tell
