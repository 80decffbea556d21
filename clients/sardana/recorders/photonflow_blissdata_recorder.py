"""Every Sardana scan as a blissdata 2 scan on Redis, so that blissdata's consumers (Flint, the
ESRF NeXus writer, ewoks) follow Sardana's scans like photonflow's own series. Add this folder to
the MacroServer's RecorderPath, then

    senv DataRecorder PhotonflowBlissdataRecorder
    senv BlissdataURL redis://<host>:<port>

``BlissdataURL`` unset: blissdata's database (0) on the server of the event bus
``PHOTONFLOW_EVENT_BUS`` of the MacroServer's environment when it is a redis:// URL, else nothing is
published. ``PhotonflowDataManager`` set: the scan belongs to
that DataManager's proposal, session and sample (data policy ESRF), else to none (no_policy).
``PhotonflowController`` set (``start_sardana`` sets it): a frame is told readable once its
Recorder's ``FramesFlushed`` says a reader of the file sees it (else 0.4 s after its point).

Sardana pairs each ``ScanRecorder`` entry with the ``ScanFile`` entry of the same rank, so as a
scan recorder (``senv ScanRecorder "['PhotonflowNXscanH5_FileRecorder', 'PhotonflowBlissdataRecorder']"``)
it needs a second ScanFile entry; ``DataRecorder`` needs none. It writes no file either way.

The scan: name the macro's (``ascan``), number Sardana's serial number, title the command line;
streams ``timer:elapsed_time``, ``timer:epoch``, ``axis:<motor>``, ``<channel>:value`` per other
channel and ``<channel>:image`` per photonflow 2D channel, its frames referenced in the photonflow
file (see photonflow/publishing/blissdata_step_scan.py). The publishing happens in a thread of its
own: a Redis that is down costs the scan nothing (one warning in the MacroServer's log).
"""

import json
import os

import tango
from sardana.macroserver.msexception import UnknownEnv
from sardana.macroserver.scan.gscan import ScanEndStatus
from sardana.macroserver.scan.recorder import DataRecorder
from sardana.macroserver.scan.scandata import MoveableDesc

from photonflow.publishing import blissdata_scan
from photonflow.publishing.blissdata_step_scan import (
    ARRAY,
    AXIS,
    FRAMES,
    MOTOR,
    SCALAR,
    Column,
    PublishHealth,
    StepScan,
    StepScanPublisher,
)

END_REASONS = {"Normal": "SUCCESS", "Stop": "USER_ABORT", "Abort": "USER_ABORT", "Exception": "FAILURE"}
NOT_CHANNELS = ("point_nb", "timestamp")  # Sardana's own columns: the point number and the elapsed time
NEXUS_EXTENSIONS = (".h5", ".hdf5", ".nxs", ".nx5")
DEVICE_TIMEOUT_MS = 1000
END_WAIT = 5.0  # seconds the scan's end waits for its publishing to end, to report how it went
HEALTH = PublishHealth()  # across the scans of this MacroServer: warned once per Redis outage


def blissdata_url(setting, event_bus):
    """The Redis to publish on: the BlissdataURL setting, else blissdata's database on the event
    bus's server if that is Redis."""
    if setting and blissdata_scan.is_redis_url(str(setting)):
        return str(setting)
    return blissdata_scan.blissdata_url(str(event_bus or ""))


def scan_file(scan_dir, scan_files):
    """Sardana's NeXus scan file (the first ScanFile entry that is one), else its first file."""
    if not scan_dir or not scan_files:
        return ""
    files = [scan_files] if isinstance(scan_files, str) else list(scan_files)
    chosen = next((f for f in files if f.lower().endswith(NEXUS_EXTENSIONS)), files[0])
    return os.path.join(scan_dir, chosen)


def columns(datadesc):
    """The stream each of Sardana's columns becomes; a 2D channel with value references enabled
    is a photonflow frame per point. A 2D channel without (value mode) is left out: frames go to
    blissdata by reference, never as pixels through Redis (photonflow's Recorder publishes that
    series' frames itself)."""
    found = []
    for desc in datadesc:
        if desc.name in NOT_CHANNELS:
            continue
        label = str(desc.label)
        shape = tuple(int(n) for n in (desc.shape or ()))
        if isinstance(desc, MoveableDesc):
            found.append(Column(desc.name, f"{AXIS}:{label}", MOTOR, label, unit=_unit(desc)))
        elif len(shape) == 2 and getattr(desc, "value_ref_enabled", False):
            found.append(Column(desc.name, f"{label}:image", FRAMES, label, str(desc.dtype), shape))
        elif len(shape) == 2:
            continue
        elif shape:
            found.append(Column(desc.name, f"{label}:value", ARRAY, label, "float64", shape, _unit(desc)))
        else:
            found.append(Column(desc.name, f"{label}:value", SCALAR, label, unit=_unit(desc)))
    return found


def _unit(desc):
    unit = getattr(desc, "data_units", None)
    return str(unit) if unit and str(unit) != "No unit" else None


class PhotonflowBlissdataRecorder(DataRecorder):
    """Publishes the scan on blissdata: created at its start, a point per record, closed at its end."""

    def __init__(self, filename=None, macro=None, **pars):
        DataRecorder.__init__(self, **pars)
        self.macro = macro
        self.publisher = None
        self.url = blissdata_url(self._env("BlissdataURL"), os.environ.get("PHOTONFLOW_EVENT_BUS", ""))
        if not self.url:
            self.info("no blissdata: set BlissdataURL (senv BlissdataURL redis://host:port)")

    def _env(self, name, default=None):
        try:
            return self.macro.getEnv(name)
        except UnknownEnv:
            return default

    def _startRecordList(self, recordlist):
        if not self.url:
            return
        env = recordlist.getEnviron()
        macro = self.macro
        motors = [d for d in env["datadesc"] if isinstance(d, MoveableDesc)]
        scan = StepScan(
            name=macro.getName(),
            number=int(env["serialno"]),
            title=str(env.get("title", macro.getName())),
            npoints=int(getattr(macro, "nb_points", 0) or 0),
            count_time=_float(getattr(macro, "integ_time", None)),
            start_epoch=float(env["startts"]),
            file=scan_file(env.get("ScanDir"), env.get("ScanFile")),
            columns=columns(env["datadesc"]),
            positioners={str(d.label): _position(d) for d in motors},
            units={str(d.label): _unit(d) for d in motors},
            session=self._session(),
        )
        datamanager = self._env("PhotonflowDataManager")
        context = (lambda: data_policy_context(datamanager)) if datamanager else None
        controller = self._env("PhotonflowController")
        flushed = recorder_frames_flushed(controller) if controller else None
        self.publisher = StepScanPublisher(self.url, scan, context=context, health=HEALTH, frames_flushed=flushed)

    def _session(self):
        try:
            return str(self.macro.getMacroServer().get_name())
        except Exception:  # noqa: BLE001 - an older Sardana: any name will do, it only groups scans
            return "sardana"

    def _writeRecord(self, record):
        if self.publisher is not None:
            self.publisher.point(record.recordno, record.data)

    def _endRecordList(self, recordlist):
        if self.publisher is None:
            return
        status = recordlist.getEnviron().get("endstatus")
        reason = "SUCCESS" if status is None else END_REASONS.get(ScanEndStatus.whatis(status), "FAILURE")
        publisher, self.publisher = self.publisher, None
        publisher.end(reason)
        # the scientist hears of a scan readers could not follow, in spock, not only in the server's log
        scan = publisher.step_scan
        if not publisher.wait(END_WAIT):
            self.macro.warning(f"blissdata: {scan.name} {scan.number} still publishing to {self.url} after "
                               f"{END_WAIT:.0f} s")
        elif publisher.failure:
            self.macro.warning(f"{publisher.failure}. The scan itself went on: only blissdata readers missed it.")
        if publisher.flushed_error:
            self.macro.warning(f"blissdata: the Recorder's FramesFlushed could not be read "
                               f"({publisher.flushed_error}): readers of {scan.name} {scan.number} were told "
                               "its frames readable by time, not when they were")


def data_policy_context(datamanager):
    """The DataManager's data policy: proposal, beamline, session, sample (called in the
    publishing thread)."""
    proxy = tango.DeviceProxy(datamanager)
    proxy.set_timeout_millis(DEVICE_TIMEOUT_MS)
    policy = json.loads(proxy.read_attribute("DataPolicy").value or "{}")
    return {key: policy[key] for key in ("data_policy", "proposal", "beamline", "session", "sample") if key in policy}


def recorder_frames_flushed(controller):
    """A reader of the Recorder's FramesFlushed (its Recorder found from the Controller's property
    when first called, in the publishing thread): the frames a reader of the file sees."""
    proxies = []

    def frames_flushed():
        if not proxies:
            recorder = tango.DeviceProxy(controller).get_property("Recorder")["Recorder"][0]
            proxies.append(tango.DeviceProxy(recorder))
            proxies[0].set_timeout_millis(DEVICE_TIMEOUT_MS)
        return proxies[0].read_attribute("FramesFlushed").value

    return frames_flushed


def _position(desc):
    try:
        return float(desc.moveable.getPosition())
    except Exception:  # noqa: BLE001 - a motor that cannot be read has no start position, the scan goes on
        return None


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
