"""``photonflow-web``: the experiment in a browser. The run table of a proposal's catalogue, live;
the series under way (the Controller's state, progress and counters, the Recorder's preview);
comments written back to the catalogue. Started by ``photonflow up`` beside the suite.

Tornado serves it: it is already here (Dask's distributed runs its dashboard on it), maintained,
and serves pages, JSON and server-sent events from one event loop, with no ASGI server beside it.
The logic it serves is ``photonflow.web`` (no Tornado, no Tango there); the Tango side is the
``SeriesFollower`` below: change events of the Controller and the Recorder, never a poll.

    photonflow-web --catalogues var/data/catalogue --controller demo/photonflow/controller \\
        --recorder demo/photonflow/recorder --datamanager demo/photonflow/datamanager --port 8050
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from photonflow.errors import ConfigurationError, PhotonflowError
from photonflow.web import run_table
from photonflow.web.access import Access, ensure_token
from photonflow.web.live import RUN_STREAM, RunFeed, SeriesView, preview_png

log = logging.getLogger("photonflow.web")

STATIC = Path(__file__).resolve().parent / "web_static"
KEEPALIVE_S = 15.0  # a comment line on every event stream this often: proxies keep it open
SERIES_TICK_S = 0.05  # how often the series view is looked at (it tells pages at most 5 times a second)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class WebState:
    """What every request shares: the catalogues, the pages listening, the series view."""

    def __init__(self, catalogues: run_table.Catalogues, access: Access, series: SeriesView,
                 datamanager: str = ""):
        self.catalogues = catalogues
        self.access = access
        self.series = series
        self.datamanager = datamanager
        self.publish = None  # the run stream's publish, when there is a bus: a comment written here is said there
        self.listeners: dict[str, set[asyncio.Queue]] = {}  # proposal -> each page's queue ("" : no proposal)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._preview: tuple[int, bytes] = (-1, b"")

    def catalogue(self, proposal: str):
        """The proposal's catalogue, opened once (``UnknownProposal`` for a proposal not in the folder)."""
        with self._lock:
            if proposal not in self._open:
                self._open[proposal] = self.catalogues.open(proposal)
            return self._open[proposal]

    def tell(self, proposal: str | None, kind: str, data: Any) -> None:
        """Queue an event for the pages of ``proposal`` (None: every page); from the event loop."""
        message = f"event: {kind}\ndata: {json.dumps(data, allow_nan=False)}\n\n"
        for name, queues in self.listeners.items():
            if proposal is None or name == proposal:
                for queue in list(queues):
                    if queue.qsize() < 1000:  # a page that stopped reading loses news, not the server memory
                        queue.put_nowait(message)

    def run_changed(self, proposal: str, run: int) -> None:
        """From the run feed's thread: the run's row, read once, to that proposal's pages."""
        if self.loop is not None and proposal in self.listeners:
            self.loop.call_soon_threadsafe(self._send_row, proposal, run)

    def _send_row(self, proposal: str, run: int) -> None:
        try:
            found = run_table.row(self.catalogue(proposal), run)
        except PhotonflowError as error:
            log.warning("run %s of %s not read: %s", run, proposal, error)
            return
        if found is not None:
            self.tell(proposal, "row", found)

    def preview(self) -> bytes:
        version = self.series.preview_version
        if self._preview[0] != version and self.series.preview is not None:
            self._preview = (version, preview_png(self.series.preview))
        return self._preview[1]


class Handler(tornado.web.RequestHandler):
    @property
    def state(self) -> WebState:
        return self.application.settings["state"]

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        reason = getattr(error, "reason", "") or self._reason
        text = str(error) if isinstance(error, PhotonflowError) else self._reason
        self.finish({"reason": reason, "description": text})

    def proposal_catalogue(self, proposal: str):
        try:
            return self.state.catalogue(proposal)
        except run_table.UnknownProposal as error:
            raise tornado.web.HTTPError(404, reason="UnknownProposal") from error


class IndexPage(Handler):
    def get(self):
        self.render("index.html")


class ProposalPage(Handler):
    def get(self, proposal: str):
        self.proposal_catalogue(proposal)
        self.render("proposal.html", proposal=proposal)


class Proposals(Handler):
    def get(self):
        self.finish({"proposals": self.state.catalogues.proposals()})


class Table(Handler):
    def get(self, proposal: str):
        data = run_table.table(self.proposal_catalogue(proposal))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, allow_nan=False))


class TableCsv(Handler):
    def get(self, proposal: str):
        data = run_table.table(self.proposal_catalogue(proposal))
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{proposal}_runs.csv"')
        self.finish(run_table.csv_text(data))


class Plot(Handler):
    def get(self, proposal: str, run: str, name: str):
        found = run_table.plot(self.proposal_catalogue(proposal), int(run), name)
        if found is None:
            raise tornado.web.HTTPError(404, reason="NoArray")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(found, allow_nan=False))


class Comment(Handler):
    async def post(self, proposal: str, run: str):
        catalogue = self.proposal_catalogue(proposal)
        writer = self.state.access.writer(self.request.headers)
        if writer is None:
            self.set_status(401, reason="NotAuthorised")
            self.finish({"reason": "NotAuthorised", "description": "writing a comment needs the suite's token "
                         "(Authorization: Bearer <token>) or the facility's login"})
            return
        try:
            body = json.loads(self.request.body or b"{}")
            number, text = run_table.check_comment(int(run), body.get("text") if isinstance(body, dict) else None)
        except (ValueError, ConfigurationError) as error:
            self.set_status(400, reason="InvalidComment")
            self.finish({"reason": getattr(error, "reason", "InvalidComment"), "description": str(error)})
            return
        if catalogue.run(number) is None:
            raise tornado.web.HTTPError(404, reason="UnknownRun")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._store, catalogue, number, text)
        log.info("comment of run %s of %s by %s", number, proposal, writer)
        self.state.run_changed(proposal, number)  # this server's pages at once; others through the stream
        self.finish({"run": number, "comment": text})

    def _store(self, catalogue, run: int, text: str) -> None:
        """Through the DataManager when this is its proposal now (it tells every reader on the run
        stream), else into the catalogue itself, said on the run stream by this server."""
        if self.state.datamanager:
            import tango

            datamanager = tango.DeviceProxy(self.state.datamanager)
            if Path(datamanager.CataloguePath).stem == catalogue.proposal:
                datamanager.SetComment([str(run), text])
                return
        catalogue.set_comment(run, text)
        if self.state.publish is not None:
            self.state.publish({"msg_kind": "run_values_updated",
                                "data": {"run": run, "proposal": catalogue.proposal, "values": {"comment": text}}})


class Series(Handler):
    def get(self):
        self.finish(self.state.series.snapshot())


class Preview(Handler):
    def get(self):
        image = self.state.preview()
        if not image:
            raise tornado.web.HTTPError(404, reason="NoPreview")
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "no-store")
        self.finish(image)


class Events(Handler):
    """Server-sent events of one proposal's page: ``row`` (a run catalogued or a value computed),
    ``series`` (the series under way, at most 5 times a second)."""

    async def get(self, proposal: str):
        self.proposal_catalogue(proposal)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        queue: asyncio.Queue = asyncio.Queue()
        listeners = self.state.listeners.setdefault(proposal, set())
        listeners.add(queue)
        try:
            self.write(f"event: series\ndata: {json.dumps(self.state.series.snapshot())}\n\n")
            await self.flush()
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    message = ": keep-alive\n\n"
                self.write(message)
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            listeners.discard(queue)


def make_app(state: WebState) -> tornado.web.Application:
    proposal = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data"
    return tornado.web.Application([
        (r"/", IndexPage),
        (rf"/p/{proposal}", ProposalPage),
        (r"/api/proposals", Proposals),
        (rf"/api/p/{proposal}/table", Table),
        (rf"/api/p/{proposal}/table\.csv", TableCsv),
        (rf"/api/p/{proposal}/runs/([0-9]{{1,9}})/plot/([A-Za-z_][A-Za-z0-9_]{{0,127}})", Plot),
        (rf"/api/p/{proposal}/runs/([0-9]{{1,9}})/comment", Comment),
        (rf"/events/{proposal}", Events),
        (r"/api/series", Series),
        (r"/api/preview\.png", Preview),
        (r"/static/plotly/(plotly\.min\.js)", tornado.web.StaticFileHandler, {"path": str(plotly_js)}),
        (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(STATIC)}),
    ], state=state, template_path=str(STATIC), xheaders=False, compress_response=True)


class SeriesFollower:
    """The series under way, from Tango change events (stateless subscriptions: a device that is not
    there yet is subscribed once it is): the Controller's State, Status and counters, the Recorder's
    Preview."""

    COUNTERS = {"FramesRequested": "frames_requested", "FramesAcquired": "frames_acquired",
                "FramesReceived": "frames_received", "FramesWritten": "frames_written",
                "MissingFrames": "missing_frames", "LastFile": "file", "SeriesId": "series_id"}

    def __init__(self, series: SeriesView, controller: str, recorder: str):
        self.series, self.controller, self.recorder = series, controller, recorder
        self._proxies: list = []

    def start(self) -> None:
        import tango

        if self.controller:
            proxy = tango.DeviceProxy(self.controller)
            for attribute in ("State", "Status", *self.COUNTERS):
                proxy.subscribe_event(attribute, tango.EventType.CHANGE_EVENT, self._controller_event, stateless=True)
            self._proxies.append(proxy)
        if self.recorder:
            proxy = tango.DeviceProxy(self.recorder)
            proxy.subscribe_event("PreviewFrameNumber", tango.EventType.CHANGE_EVENT, self._frame_event, stateless=True)
            proxy.subscribe_event("Preview", tango.EventType.CHANGE_EVENT, self._preview_event, stateless=True)
            self._proxies.append(proxy)

    def _controller_event(self, event) -> None:
        if event.err or event.attr_value is None:
            return
        name = event.attr_value.name
        value = event.attr_value.value
        if name.lower() == "state":
            self.series.update(state=str(value))
        elif name.lower() == "status":
            self.series.update(status=str(value))
        else:
            key = next((k for a, k in self.COUNTERS.items() if a.lower() == name.lower()), None)
            if key is not None:
                self.series.update(**{key: value.item() if hasattr(value, "item") else value})

    def _preview_event(self, event) -> None:
        if event.err or event.attr_value is None or event.attr_value.value is None:
            return
        image = event.attr_value.value
        if getattr(image, "ndim", 0) == 2 and image.size:
            self.series.set_preview(image, self._frame)

    _frame = -1

    def _frame_event(self, event) -> None:
        if not event.err and event.attr_value is not None:
            self._frame = int(event.attr_value.value)


def serve(args) -> int:
    access = Access(token=ensure_token(Path(args.token_file)) if args.token_file else "",
                    user_header=args.user_header or "")
    access.check_bind(args.bind)
    series = SeriesView(max_rate=args.max_rate)
    state = WebState(run_table.Catalogues(args.catalogues), access, series, args.datamanager)
    app = make_app(state)
    feed = None
    if args.event_bus:
        from photonflow.events.bus import RedisStreamBus

        feed = RunFeed(RedisStreamBus(args.event_bus, stream=RUN_STREAM), state.run_changed)
        state.publish = RedisStreamBus(args.event_bus, stream=RUN_STREAM).publish
    follower = SeriesFollower(series, args.controller, args.recorder)

    async def main() -> None:
        state.loop = asyncio.get_running_loop()
        server = app.listen(args.port, address=args.bind)
        if feed is not None:
            feed.start()
        try:
            follower.start()
        except Exception as error:  # noqa: BLE001 - the table works without the series' devices
            log.warning("the series under way is not followed: %s", error)
        port = next(iter(server._sockets.values())).getsockname()[1]
        print(f"photonflow-web: http://{args.bind}:{port}/ (catalogues in {args.catalogues})", flush=True)
        while True:
            await asyncio.sleep(SERIES_TICK_S)
            if series.due():
                try:
                    state.tell(None, "series", series.snapshot())
                except (TypeError, ValueError) as error:  # a value JSON cannot carry: said, the page goes on
                    log.warning("series not told: %s", error)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        if feed is not None:
            feed.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogues", required=True,
                        help="the folder of the proposals' catalogues (the DataManager's <DataRoot>/catalogue)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    parser.add_argument("--event-bus", default=os.environ.get("PHOTONFLOW_EVENT_BUS", ""),
                        help="the event bus whose photonflow:runs stream says what changed (redis://...)")
    parser.add_argument("--controller", default="", help="the Controller whose series the page shows")
    parser.add_argument("--recorder", default="", help="the Recorder whose preview the page shows")
    parser.add_argument("--datamanager", default="", help="comments go through this DataManager")
    parser.add_argument("--token-file", default="", help="the write token's file (made when missing, mode 0600)")
    parser.add_argument("--user-header", default="",
                        help="the header a trusted reverse proxy sets to the logged-in user (e.g. X-Remote-User)")
    parser.add_argument("--max-rate", type=float, default=5.0, help="series updates a second, at most")
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except ConfigurationError as error:
        print(f"photonflow-web: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
