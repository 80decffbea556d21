"""photonflow-web's HTTP face on a real loopback socket (Tornado's test server), no browser: what
each address answers, the 401 of a write without the token, the 404 of a proposal the folder does
not list, the security headers, and a change pushed to a page's event stream."""

from __future__ import annotations

import json

import numpy as np
from tornado.testing import AsyncHTTPTestCase, gen_test

from photonflow.clients.web import WebState, make_app
from photonflow.datamanager.catalogue import Catalogue
from photonflow.web import run_table
from photonflow.web.access import Access
from photonflow.web.live import SeriesView
from tests.helpers.runs import run_record as record

TOKEN = "s3cret-token"


class WebServerTest(AsyncHTTPTestCase):
    def get_app(self):
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="web_server_")
        with Catalogue(self.folder, "mx1234") as catalogue:
            catalogue.add_run(record(1))
            catalogue.set_variable(1, "ring_current", 199.5, attributes={"title": "Ring current", "units": "mA",
                                                                         "tags": ["source"]})
        self.series = SeriesView(max_rate=5.0)
        self.state = WebState(run_table.Catalogues(self.folder), Access(token=TOKEN), self.series)
        return make_app(self.state)

    def tearDown(self):
        import shutil

        super().tearDown()
        shutil.rmtree(self.folder, ignore_errors=True)

    def test_the_table_and_its_csv_are_the_catalogue_s(self):
        answer = self.fetch("/api/p/mx1234/table")
        assert answer.code == 200
        data = json.loads(answer.body)
        assert data["rows"][0]["ring_current"] == 199.5 and data["rows"][0]["sample"] == "ceo2"
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        csv_answer = self.fetch("/api/p/mx1234/table.csv")
        assert csv_answer.headers["Content-Type"].startswith("text/csv")
        assert "Ring current [mA]" in csv_answer.body.decode().splitlines()[0]
        page = self.fetch("/p/mx1234")
        assert page.code == 200 and b'data-proposal="mx1234"' in page.body

    def test_a_proposal_the_folder_does_not_list_is_not_found_and_nothing_is_made(self):
        for path in ("/p/nothere", "/api/p/nothere/table", "/api/p/..%2Fmx1234/table", "/events/nothere"):
            assert self.fetch(path).code == 404, path
        import os

        assert not any(name.startswith("nothere") for name in os.listdir(self.folder))

    def test_a_comment_needs_the_token_and_then_reaches_the_catalogue(self):
        body = json.dumps({"text": "beam lost at 12:03"})
        refused = self.fetch("/api/p/mx1234/runs/1/comment", method="POST", body=body)
        assert refused.code == 401 and json.loads(refused.body)["reason"] == "NotAuthorised"
        wrong = self.fetch("/api/p/mx1234/runs/1/comment", method="POST", body=body,
                           headers={"Authorization": "Bearer nope"})
        assert wrong.code == 401
        with Catalogue(self.folder, "mx1234") as catalogue:
            assert catalogue.run(1).comment == ""
        bad = self.fetch("/api/p/mx1234/runs/1/comment", method="POST", body=json.dumps({"text": 5}),
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.code == 400 and json.loads(bad.body)["reason"] == "InvalidComment"
        unknown_run = self.fetch("/api/p/mx1234/runs/9/comment", method="POST", body=body,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert unknown_run.code == 404
        saved = self.fetch("/api/p/mx1234/runs/1/comment", method="POST", body=body,
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert saved.code == 200
        with Catalogue(self.folder, "mx1234") as catalogue:
            assert catalogue.run(1).comment == "beam lost at 12:03"

    def test_the_preview_is_served_once_there_is_one(self):
        assert self.fetch("/api/preview.png").code == 404
        self.series.set_preview(np.arange(64, dtype=np.uint16).reshape(8, 8), 3)
        answer = self.fetch("/api/preview.png")
        assert answer.code == 200 and answer.body[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads(self.fetch("/api/series").body)["preview_frame"] == 3

    @gen_test(timeout=20)
    async def test_a_change_on_the_run_stream_reaches_the_pages_of_its_proposal(self):
        import asyncio

        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        self.state.loop = asyncio.get_running_loop()
        received: list[str] = []
        seen_row = asyncio.Event()

        def chunk(data: bytes) -> None:
            received.append(data.decode())
            if "event: row" in "".join(received):
                seen_row.set()

        request = HTTPRequest(self.get_url("/events/mx1234"), streaming_callback=chunk, request_timeout=20)
        fetching = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))
        while not self.state.listeners.get("mx1234"):
            await asyncio.sleep(0.01)
        with Catalogue(self.folder, "mx1234") as catalogue:
            catalogue.set_variable(1, "ring_current", 150.0, attributes={"title": "Ring current", "units": "mA",
                                                                         "tags": ["source"]})
        self.state.run_changed("mx1234", 1)  # what the run feed does on the DataManager's message
        await asyncio.wait_for(seen_row.wait(), 10)
        text = "".join(received)
        row = json.loads(text.split("event: row\ndata: ", 1)[1].split("\n\n", 1)[0])
        assert row["run"] == 1 and row["values"]["ring_current"] == 150.0
        fetching.cancel()
