"""What every photonflow publisher of blissdata 2 scans shares, so that a detector series and a
Sardana scan look alike to blissdata's consumers (Flint, the ESRF NeXus writer, ewoks):

- the connection: a Redis URL with timeouts; blissdata on database 0 of the event bus's server,
  the bus on a database of its own (``blissdata_url``), so blissdata sets it up unaided;
- the description: ``ScanDescription`` turns what a publisher knows of its scan into blissdata's
  identity and the ``scan_info`` keys its consumers read (one timer as top master, devices and
  channels named ``<device>:<channel>``, data policy, saving);
- the NeXus dataset: ``h5maps``, the layout ESRF's NeXus writer (``blisswriter``) writes into the
  scan's ``nexus_file`` (``<stem>_bliss.h5`` beside the data, never photonflow's own open file):
  an entry ``<number>.1`` with the image streams in ``instrument/<device>/data`` (a virtual dataset
  of the frames in photonflow's file) and every stream in ``measurement``;
- the frames: a Lima stream that references them in photonflow's HDF5 files, never sends pixels;
- the entries: ``StreamWriter`` sends batches of points through blissdata's own stream writers
  and waits, bounded, until Redis has them;
- the end: ``end_scan`` seals the streams and closes the scan with its end time and reason.

Publishers: the Recorder's ``BlissdataSink`` (blissdata_sink.py) and Sardana's
``PhotonflowBlissdataRecorder`` through ``blissdata_step_scan.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import photonflow
from photonflow.errors import ConfigurationError, PhotonflowError

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 1.0  # seconds: a dead Redis is found out within this
TIMER = "timer"  # the top master of every photonflow scan
NEXUS_WRITER = "nexus"  # scan_info's data_writer when ESRF's NeXus writer (blisswriter) saves the scan
NEXUS_FILE_SUFFIX = "_bliss.h5"


def is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme in ("redis", "rediss", "unix")


def check_redis_url(url: str) -> None:
    """A publisher's Redis URL, or a ConfigurationError saying what one looks like."""
    if not is_redis_url(url):
        raise ConfigurationError(f"blissdata needs a Redis URL such as redis://127.0.0.1:6379, got {url!r}")


def with_timeouts(url: str, timeout: float = REDIS_TIMEOUT) -> str:
    """The URL with socket timeouts (unless it sets its own), so no Redis call waits forever."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(timeout))
    query.setdefault("socket_connect_timeout", str(timeout))
    return urlunsplit(parts._replace(query=urlencode(query)))


def blissdata_url(event_bus: str) -> str:
    """Where blissdata publishes, given the event bus's URL: database 0 of the same server ("" if
    the bus is no Redis). RediSearch, which blissdata's scan index needs, indexes database 0 only,
    so it is blissdata's; photonflow's bus keeps its events on a database of its own (the suite's
    embedded bus on 1: ``redis://host:port/1``)."""
    if not is_redis_url(event_bus):
        return ""
    parts = urlsplit(event_bus)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    if parts.scheme == "unix":  # unix:///path/to/socket?db=N
        return f"unix://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    return urlunsplit(parts._replace(path="", query=query))


def url_from_property(value: str) -> str:
    """A device's Blissdata property as a URL: ``${PHOTONFLOW_EVENT_BUS}`` (the default) is blissdata's
    database on that variable's server when it names a Redis server, else nothing; empty disables;
    any other value must be a Redis URL."""
    value = (value or "").strip()
    if value in ("${PHOTONFLOW_EVENT_BUS}", "$PHOTONFLOW_EVENT_BUS"):
        return blissdata_url(os.environ.get("PHOTONFLOW_EVENT_BUS", ""))
    if value and not is_redis_url(value):
        raise ValueError(f"Blissdata must be a Redis URL such as redis://127.0.0.1:6379 (or empty), got {value!r}")
    return value


def open_data_store(url: str):
    """blissdata's DataStore on ``url``, set up for blissdata on first use by blissdata itself,
    which takes only an empty database."""
    from blissdata.redis_engine.store import DataStore

    try:
        return DataStore(url)
    except RuntimeError as error:
        if "No blissdata protocol version" not in str(error):
            raise
    try:
        with warnings.catch_warnings():
            # valkey 8.1 takes only FT.CONFIG SET, which redis-py 7 calls deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return DataStore(url, init_db=True)
    except RuntimeError as error:
        if "non-empty" not in str(error):
            raise
        try:
            return DataStore(url)  # another publisher set it up in the meantime
        except RuntimeError:
            raise ConfigurationError(
                f"blissdata cannot set up {url}: the database holds other keys ({error}). blissdata needs "
                "database 0 of its Redis to itself: put the event bus on another one (redis://host:port/1) "
                "or give blissdata another server",
                reason="BlissdataDatabaseShared",
            ) from error


def now_iso() -> str:
    return datetime.now().astimezone().isoformat()


def iso(text: str) -> str:
    """An ISO 8601 time with its offset, as blissdata's consumers parse it ('Z' spelled +00:00)."""
    return text[:-1] + "+00:00" if text.endswith("Z") else text


def nexus_file_beside(file: str) -> str:
    """Where ESRF's NeXus writer saves the scan whose data are in ``file``: ``<stem>_bliss.h5`` in
    the same folder ("" without a file). Never ``file`` itself: its writer (the Recorder, Sardana)
    has it open, and blisswriter writes only files of its own."""
    if not file:
        return ""
    path = Path(file)
    return str(path.with_name(path.stem + NEXUS_FILE_SUFFIX))


@dataclass(frozen=True)
class DataPolicy:
    """Whose data a scan is: blissdata's identity fields, echoed in scan_info."""

    session: str
    dataset: str
    proposal: str | None = None
    collection: str | None = None  # the sample
    beamline: str = "photonflow"
    user: str = "photonflow"
    policy: str = "no_policy"

    @classmethod
    def from_context(cls, context: Mapping[str, Any], session: str, dataset: str, beamline: str) -> DataPolicy:
        """From a context such as the DataManager's (proposal, session, sample...), missing keys
        taking the publisher's defaults; a proposal makes the policy ESRF's, else none."""
        context = {k: v for k, v in context.items() if v not in (None, "")}
        proposal = str(context.get("proposal", "")) or None
        return cls(
            session=str(context.get("session", session)),
            dataset=str(context.get("dataset", "")) or dataset,
            proposal=proposal,
            collection=str(context.get("sample", context.get("collection", ""))) or None,
            beamline=str(context.get("beamline", beamline)),
            user=str(context.get("user", "")) or "photonflow",
            policy=str(context.get("data_policy", "ESRF" if proposal else "no_policy")),
        )


@dataclass(frozen=True)
class Channel:
    """One stream of a scan, named ``<device>:<short name>`` as blissdata's consumers group them."""

    name: str
    dim: int = 0
    unit: str | None = None
    display_name: str = ""  # default: the short name

    @property
    def device(self) -> str:
        return self.name.split(":", 1)[0]

    def info(self) -> dict[str, Any]:
        described = {"dim": self.dim, "display_name": self.display_name or self.name.split(":", 1)[-1]}
        if self.unit:
            described["unit"] = self.unit
        return described


@dataclass
class ScanDescription:
    """What a publisher knows of its scan when it starts; ``identity()`` and ``scan_info()`` say it
    in blissdata's words. Devices are the channels' prefixes; ``timer`` triggers every other one."""

    name: str  # the scan's type: photonflow_series, ascan...
    number: int
    title: str
    npoints: int
    count_time: float | None
    start_time: str  # ISO 8601 with its offset
    file: str  # the file the scan is saved in ("" if none)
    policy: DataPolicy
    channels: Sequence[Channel]
    masters: tuple[str, ...] = (TIMER,)  # devices whose channels say where each point is
    device_info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # e.g. type, metadata
    positioners: Mapping[str, Any] = field(default_factory=dict)
    images_path: str = ""  # default: the file
    publisher: str = "photonflow"
    data_writer: str = "photonflow"  # who saves the scan when blisswriter does not (no nexus_file)
    sections: Mapping[str, Any] = field(default_factory=dict)  # the publisher's own, e.g. "photonflow"
    nexus_file: str = ""  # where blisswriter writes the scan's NeXus entry ("": not saved by it)

    @property
    def entry(self) -> str:
        """The scan's NeXus entry, as BLISS names it."""
        return f"{self.number}.1"

    def identity(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "name": self.name, "number": self.number, "data_policy": policy.policy, "session": policy.session,
            "proposal": policy.proposal, "collection": policy.collection, "dataset": policy.dataset,
            "path": self.nexus_file or None,  # blisswriter saves a scan with a path, into its h5maps
        }

    def h5maps(self) -> dict[str, Any]:
        """blissdata's h5maps: the NeXus layout blisswriter writes into ``nexus_file``, as BLISS
        lays a scan out (``<number>.1``: title, start_time, instrument, measurement); each channel a
        stream dataset with its unit, an image's in ``instrument/<device>/data`` and linked from
        ``measurement/<device>``. ``end_scan`` adds end_time."""
        if not self.nexus_file:
            return {}
        instrument: dict[str, Any] = {}
        measurement: dict[str, Any] = {}
        shorts = [c.display_name or c.name.split(":", 1)[-1] for c in self.channels]
        for channel, short in zip(self.channels, shorts, strict=True):
            data = _stream_dataset(channel)
            if channel.dim == 2:
                instrument[channel.device] = _group("NXdetector", {"data": data})
                measurement[channel.device] = {"type": "soft_link",
                                               "target_path": f"/{self.entry}/instrument/{channel.device}/data"}
            else:  # by its display name (else short name); one two channels share is spelt <device>_<name>
                measurement[short if shorts.count(short) == 1 else channel.name.replace(":", "_")] = data
        entry = _group("NXentry", {
            "title": self.title, "start_time": self.start_time,
            "instrument": _group("NXinstrument", {"name": self.policy.beamline, **instrument}),
            "measurement": _group("NXcollection", measurement),
        })
        root = _group("NXroot", {self.entry: entry}, creator=f"{self.publisher} {photonflow.__version__}")
        return {self.nexus_file: root}

    def scan_info(self) -> dict[str, Any]:
        policy = self.policy
        devices: dict[str, list[Channel]] = {TIMER: []}
        for channel in self.channels:
            devices.setdefault(channel.device, []).append(channel)
        by_dim = {dim: [c.name for c in self.channels if c.dim == dim] for dim in (0, 1, 2)}
        master = [c for c in self.channels if c.device in self.masters]
        displayed = by_dim[2] or [c.name for c in self.channels if c.dim == 0 and c not in master]
        return {
            "name": self.name,
            "scan_nb": self.number,
            "session_name": policy.session,
            "user_name": policy.user,
            "data_policy": policy.policy,
            "proposal": policy.proposal,
            "beamline": policy.beamline,
            "sample_name": policy.collection,
            "dataset": policy.dataset,
            "title": self.title,
            "type": self.name,
            "npoints": self.npoints,
            "count_time": self.count_time,
            "start_time": self.start_time,
            "end_time": None,
            "acquisition_chain": {
                TIMER: {
                    "top_master": TIMER,
                    "devices": list(devices),
                    "scalars": by_dim[0],
                    "spectra": by_dim[1],
                    "images": by_dim[2],
                    "master": {"scalars": [c.name for c in master if c.dim == 0],
                               "spectra": [c.name for c in master if c.dim == 1],
                               "images": [c.name for c in master if c.dim == 2]},
                }
            },
            "devices": {
                name: {
                    "name": name, "channels": [c.name for c in channels],
                    **({"triggered_devices": [d for d in devices if d != TIMER]} if name == TIMER else {}),
                    **self.device_info.get(name, {}),
                }
                for name, channels in devices.items()
            },
            "channels": {c.name: c.info() for c in self.channels},
            "display_extra": {"plotselect": [], "displayed_channels": displayed},
            "save": bool(self.nexus_file),
            "filename": self.nexus_file,
            "images_path": self.images_path or self.file,
            "h5maps": self.h5maps(),
            "publisher": self.publisher,
            "publisher_version": photonflow.__version__,
            "data_writer": NEXUS_WRITER if self.nexus_file else self.data_writer,
            "writer_options": {"chunk_options": {}, "separate_scan_files": False},
            "scan_meta_categories": ["positioners", "instrument", "technique"],
            "positioners": dict(self.positioners),
            "instrument": {"name": policy.beamline},
            "technique": {},
            **self.sections,
        }


def _group(nx_class: str, children: Mapping[str, Any], **attributes: str) -> dict[str, Any]:
    return {"type": "group", "attributes": {"NX_class": nx_class, **attributes}, "children": dict(children)}


def _stream_dataset(channel: Channel) -> dict[str, Any]:
    stream = {"type": "stream", "stream": channel.name}
    if not channel.unit:
        return stream
    return {"type": "dataset", "attributes": {"units": channel.unit}, "value": stream}


def numeric(name: str, dtype, shape: Sequence[int] = ()):
    """A stream of numbers, one value (or array of ``shape``) per point."""
    from blissdata.streams.default import Stream

    return Stream.make_definition(name, dtype, tuple(shape))


def frames_by_reference(name: str, file: str, data_path: str, dtype: str, shape: Sequence[int], frames: int,
                        frames_per_file: int = 0):
    """A Lima stream (blissdata's ``lima`` plugin) whose frames are read from photonflow's HDF5
    file by reference: its entries only say how many are written (``last_index``) and readable
    (``last_index_saved``). ``frames_per_file`` > 0: a split series, frames in data files
    ``<stem>_data_000001.h5``... beside ``file``."""
    from blissdata.streams.lima import LimaStream

    if frames_per_file:
        escaped = Path(file.replace("%", "%%"))  # blissdata fills in the file number with %
        saving = {  # the names of data_file_path: <stem>_data_000001.h5 holds frames 0..frames_per_file-1
            "file_path": str(escaped.with_name(f"{escaped.stem}_data_%06d{escaped.suffix}")),
            "data_path": data_path, "file_format": "hdf5",
            "file_offset": 1, "frames_per_file": frames_per_file,
        }
    else:  # one file: "%.0s" takes the file number and prints nothing
        saving = {
            "file_path": file.replace("%", "%%") + "%.0s", "data_path": data_path, "file_format": "hdf5",
            "file_offset": 0, "frames_per_file": frames,
        }
    return LimaStream.make_definition(
        name, dtype=dtype, shape=list(shape), server_url=f"photonflow:{file}",
        buffer_max_number=0,  # no detector server to ask: frames come from the file only
        frames_per_acquisition=frames, acquisition_offset=0, saving=saving,
    )


class PublishingTimeout(PhotonflowError):
    """Redis did not acknowledge what blissdata's writers sent in time: slow, or gone."""

    reason = "BlissdataTimeout"


class QueuedPublisher:
    """What a publisher whose own thread talks to Redis shares with its callers: the events queued
    for that thread (``_events``), the condition that wakes it (``_wake``), ``close`` and
    ``wait_idle``. The subclass starts ``_thread``, which sets ``_busy`` while it publishes."""

    def __init__(self) -> None:
        self._events: deque = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (what is still open is ended), then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is published (or given up); True if it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._wake:
                if not self._events and not self._busy:
                    return True
                self._wake.notify()
            time.sleep(0.005)
        return False


class StreamWriter:
    """A scan's streams, written through blissdata's own stream writers: each ``send`` is one batch
    of points (one entry, indexed by blissdata); ``flush`` waits until Redis has them all.

    blissdata's writers send from threads of their own, which end with an error of their own when
    Redis goes, and never time out: ``flush`` waits at most ``timeout`` then asks Redis (``url``)
    why, and ``abandon`` lets the writers end once Redis failed."""

    def __init__(self, url: str, timeout: float = REDIS_TIMEOUT):
        self.url = url
        self.timeout = timeout
        self._streams: dict[str, Any] = {}
        self._image_status: dict[str, tuple[int, int]] = {}  # Lima stream -> what readers were told

    def add(self, scan, definition) -> None:
        """Create the stream ``definition`` describes in ``scan`` (still CREATED)."""
        self._streams[definition.name] = scan.create_stream(definition)

    def attach(self, scan, name: str) -> None:
        """Write the stream ``name`` of a prepared scan another process created (one writer per
        stream: blissdata's indices allow no second)."""
        self._streams[name] = scan.get_writer_stream(name)

    def send(self, name: str, data) -> None:
        """Queue one batch of points (a numpy array, first axis the points) for the stream."""
        self._streams[name].send(data)

    def image_status(self, name: str, last_index: int, last_index_saved: int) -> None:
        """Tell readers of a Lima stream the last frame written and the last one readable, if
        that changed since last told."""
        status = (last_index, last_index_saved)
        if self.told(name) != status:
            self.send(name, {"last_index": last_index, "last_index_saved": last_index_saved})
            self._image_status[name] = status

    def told(self, name: str) -> tuple[int, int]:
        return self._image_status.get(name, (-1, -1))

    def flush(self) -> None:
        """Wait until Redis has acknowledged everything sent; raise if it failed or took longer
        than ``timeout``."""
        def join_all():
            for stream in self._streams.values():
                stream.join()

        try:
            _bounded(join_all, self.timeout, "acknowledge blissdata's entries")
        except PublishingTimeout:
            self._ping()  # a Redis that is gone says so (ConnectionError); a slow one: the timeout
            raise

    def _ping(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.ping()
        finally:
            client.close()

    def seal(self) -> None:
        """Seal every stream (what was sent first reaches Redis); raise if Redis took too long."""
        def seal_all():
            for stream in self._streams.values():
                stream.seal()

        _bounded(seal_all, 3 * self.timeout, "seal the streams")
        self._streams = {}

    def abandon(self) -> None:
        """After a failure: stop blissdata's writers (sealing what Redis still takes) without
        waiting for them, so that their threads, which wait for more, can end."""
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            threading.Thread(target=_quietly, args=(stream.seal,), name="blissdata-abandon", daemon=True).start()


def _bounded(action, timeout: float, what: str) -> None:
    """Run ``action`` in a thread and wait ``timeout`` s for it: blissdata's joins have no timeout."""
    outcome: list[BaseException | None] = []

    def run():
        try:
            action()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(error)

    thread = threading.Thread(target=run, name="blissdata-join", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise PublishingTimeout(f"Redis did not {what} within {timeout} s")
    if outcome[0] is not None:
        raise outcome[0]


def _quietly(action) -> None:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - Redis is already known to have failed: nothing more to report
        log.debug("blissdata writer ended with %s", error)


def end_scan(scan, end_reason: str, sections: Mapping[str, Mapping[str, Any]] | None = None,
             timeout: float = REDIS_TIMEOUT) -> None:
    """Seal every stream, then close the scan with its end time, ``end_reason`` (SUCCESS,
    USER_ABORT, FAILURE) and what the publisher adds to its own ``sections``; raise if Redis has
    not taken it all within a few ``timeout``."""
    from blissdata.redis_engine.scan import ScanState

    def end():
        if scan.state == ScanState.STARTED:
            scan.stop()  # seals every stream
        scan.info["end_time"] = end_time = now_iso()
        scan.info["end_reason"] = end_reason
        for root in scan.info.get("h5maps", {}).values():  # blisswriter adds what is new at the end
            for entry in root.get("children", {}).values():
                entry.setdefault("children", {})["end_time"] = end_time
        for section, values in (sections or {}).items():
            scan.info.setdefault(section, {}).update(values)
        scan.close()

    _bounded(end, 3 * timeout, "close the scan")
