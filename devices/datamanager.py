"""The DataManager device: a thin Tango face on ``photonflow.datamanager.manager``.

It follows its Controller (a series ends: catalogue it) and its Standardizer (the standardized
file is written: the run's variables can be computed), and answers a sequencer's questions: which
acquisition comes next, with which role, settings and file.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import tango
from tango.server import attribute, command, device_property

from photonflow.control.controller import BUSY_STATES
from photonflow.datamanager.manager import DataManager, SeriesResult
from photonflow.datamanager.policy import Experiment
from photonflow.devices.base import PhotonflowDevice, counter
from photonflow.devices.common import SeriesEdges, SeriesRanSince, follow_events, operator_errors, wait_unlocked
from photonflow.errors import ConfigurationError
from photonflow.events.bus import event_bus_from_url
from photonflow.requests import json_object

log = logging.getLogger(__name__)
RUN_STREAM = "photonflow:runs"  # the run table's messages ({msg_kind, data}, as DAMNIT sends them)


def _text(value) -> str:
    return value or ""


def _percent(fraction) -> float:
    return 100.0 * float(fraction or 0.0)


class PhotonflowDataManager(PhotonflowDevice):
    """The experiment's structure, the run catalogue and the run table of computed variables."""

    Controller = device_property(dtype=str, mandatory=True, doc="Mandatory. The Controller whose series are catalogued")
    Standardizer = device_property(
        dtype=str, default_value="", doc="The Standardizer whose files complete each run (empty: none)"
    )
    DataRoot = device_property(dtype=str, mandatory=True, doc="Mandatory. Root of the data policy's folders")
    Beamline = device_property(dtype=str, default_value="photonflow", doc="The beamline's name in paths and records")
    CatalogueDirectory = device_property(
        dtype=str, default_value="", doc="Where the run catalogues (one SQLite per proposal) are; empty: "
        "<DataRoot>/catalogue"
    )
    CatalogueTimeout = device_property(
        dtype=float, default_value=30.0,
        doc="Seconds a catalogue write waits for another process holding the catalogue; then the run waits "
        "in <proposal>.waiting.jsonl beside it (ALARM) and is written when it can",
    )
    ContextFile = device_property(
        dtype=str, default_value="", doc="The context file of variables computed after each run (empty: none)"
    )
    VariablesTimeout = device_property(
        dtype=float, default_value=600.0,
        doc="Seconds every variable of one run may take together; then the run's variables process (and all "
        "it started) is killed, its cells not computed say so, and the next run goes on",
    )
    JobEngine = device_property(
        dtype=str, default_value="local",
        doc="Where cluster variables and processing run: local, or a Dask scheduler tcp://host:port",
    )
    EventBus = device_property(dtype=str, default_value="", doc="Default: $PHOTONFLOW_EVENT_BUS if set")
    IcatConfig = device_property(
        dtype=str, default_value="",
        doc='The facility\'s ICAT as JSON for pyicat-plus, e.g. {"metadata_urls": ["icat-broker:61613"]}; '
        "empty: each run is exported as ICAT JSON only",
    )

    def create_core(self, listener) -> DataManager:
        url = self.EventBus or os.environ.get("PHOTONFLOW_EVENT_BUS", "")
        self.bus = event_bus_from_url(url, stream=RUN_STREAM) if url else None
        catalogue_directory = self.CatalogueDirectory or os.path.join(self.DataRoot, "catalogue")
        variables = None
        if self.ContextFile:
            from photonflow.datamanager.variables_launcher import VariablesInProcess

            if not self.VariablesTimeout > 0:
                raise ConfigurationError(f"VariablesTimeout must be a positive number of seconds, not "
                                         f"{self.VariablesTimeout:g}")
            variables = VariablesInProcess(self.ContextFile, catalogue_directory, self.JobEngine,
                                           run_timeout_s=self.VariablesTimeout)
        self._stop = threading.Event()
        self._edges = SeriesEdges(BUSY_STATES)
        self.controller = tango.DeviceProxy(self.Controller)
        self._series_ran = SeriesRanSince(lambda: self.controller.read_attribute("SeriesId").value)
        jobs = None
        if self.JobEngine.startswith("tcp://"):
            from photonflow.datamanager.jobs import JobBoard

            # connected on first use, and again after the scheduler was lost: a scheduler down at
            # Init, or restarted since, never needs another Init
            jobs = self.job_board = JobBoard(address=self.JobEngine)
        icat = json.loads(self.IcatConfig) if self.IcatConfig else None
        return DataManager(self.DataRoot, self.Beamline, catalogue_directory, listener, variables,
                           self.bus.publish if self.bus is not None else None, jobs=jobs, icat=icat,
                           catalogue_timeout=self.CatalogueTimeout)

    def core_ready(self, core) -> None:
        threading.Thread(target=follow_events, args=(self._stop, self.controller, self._wanted_events),
                         name="datamanager-follow", daemon=True).start()

    def release_core(self, core) -> None:
        self._stop.set()
        core.close()
        if getattr(self, "job_board", None) is not None:
            self.job_board.close()
            self.job_board = None
        if self.bus is not None:
            self.bus.close()

    # -- following the Controller and the Standardizer -----------------------------------------
    def _wanted_events(self) -> list:
        wanted = [(self.controller, "State", self._on_controller_state)]
        if self.Standardizer:
            wanted.append((tango.DeviceProxy(self.Standardizer), "LastFile", self._on_standardized))
        return wanted

    def _on_controller_state(self, event) -> None:
        if event.err or self.core is None:
            return
        state = str(event.attr_value.value)
        try:
            # a series that ended before the subscription was live (0.12 s of darks, or a first series
            # right after start-up) ended for the state the subscription found
            if self._edges.edge(state, self._series_ran) != "ended":
                return
            values = {reading.name: reading.value for reading in self.controller.read_attributes(
                ["SeriesId", "LastFile", "FramesRequested", "FramesWritten", "MissingFrames"])}
            reason = "completed" if state == "ON" else f"{state}: {self.controller.status()}"
        except tango.DevFailed as error:
            log.warning("could not read the Controller's report: %s", error.args[0].desc)
            return
        if values["LastFile"]:
            self.core.series_ended(SeriesResult(
                int(values["SeriesId"]), values["LastFile"], int(values["FramesRequested"]),
                int(values["FramesWritten"]), int(values["MissingFrames"]), reason))

    def _on_standardized(self, event) -> None:
        if event.err or self.core is None or not event.attr_value.value:
            return
        self.core.standardized(event.attr_value.value)

    # -- attributes ---------------------------------------------------------------------------
    LastRun = counter("last_run", int, "The last run catalogued")
    Runs = counter("runs", int, "Runs in the proposal's catalogue")
    RunTableVersion = counter("run_table_version", int,
                              "Increments whenever the run table changes (a run, a variable, a comment)")
    Proposal = counter("proposal", str, "The proposal (experiment) runs are catalogued under", convert=_text)
    Sample = counter("sample", str, "The sample being measured", convert=_text)

    @attribute(dtype=str, doc="The session (visit) of the proposal")
    def Session(self):
        return self.core.session if self.core else ""

    CurrentNode = counter("current_node", str, "The structure node being acquired (empty: none)", convert=_text)

    @attribute(dtype=str, doc="What the acquisition under way means: dark, flat, white, data, monopos... (empty: none)")
    def CurrentRole(self):
        return self.core.current_role if self.core is not None else ""

    @attribute(dtype=str, doc="JSON: the data-policy fields of the acquisition under way (proposal, beamline, "
               "session, sample, dataset, role, node), as the Recorder's blissdata scans carry them")
    def DataPolicy(self):
        return json.dumps(self.core.data_policy() if self.core is not None else {})

    Progress = counter("progress", float, "Acquisitions of the structure done", convert=_percent,
                       unit="%", format="%.1f", min_value=0, max_value=100)

    @attribute(dtype=str, doc="The proposal's run catalogue (SQLite)")
    def CataloguePath(self):
        core = self.core
        return str(core.catalogue.path) if core is not None and core.catalogue is not None else ""

    # -- commands -----------------------------------------------------------------------------
    @command(dtype_in=str, doc_in='JSON {"proposal": "mx1234", "session": "20261127", "sample": "lysozyme"}')
    @operator_errors
    def SetExperiment(self, text):
        given = Experiment.parse(text)
        self._core().set_experiment(given.proposal, given.session, given.sample)

    @command(dtype_in=str, doc_in="The sample measured from now on")
    @operator_errors
    def SetSample(self, sample):
        self._core().set_sample(sample)

    @command(dtype_in=str, doc_in="What the series recorded from now on outside a structure mean: dark, flat, "
             "white, data, monopos, alignment, reference (empty: none)")
    @operator_errors
    def SetRole(self, role):
        self._core().set_role(role)

    @command(dtype_in=str, dtype_out=str, doc_in="The dataset's name, e.g. dark (letters, digits, - _ .)",
             doc_out="The data policy's file for one acquisition outside a structure: a new numbered dataset")
    @operator_errors
    def DatasetFile(self, name):
        return self._core().dataset_file(name)

    @command(dtype_in=str, dtype_out=int, doc_in="A data structure description (YAML)", doc_out="Its acquisitions")
    @operator_errors
    def LoadStructure(self, path):
        return self._core().load_structure(path)

    @command(dtype_in=(str,), dtype_out=int,
             doc_in='[file, overrides as JSON], e.g. ["tomography.yaml", \'{"frames": {"data": 30}, '
             '"parameters": {"exposure": 0.01}, "beamline": {"sample": {"out": 6.0}}}\']',
             doc_out="Its acquisitions")
    @operator_errors
    def LoadStructureWith(self, arguments):
        if len(arguments) != 2:
            tango.Except.throw_exception("InvalidArgument", "Give [structure file, overrides as JSON], e.g. "
                                         "['tomography.yaml', '{\"frames\": {\"data\": 30}}']",
                                         "PhotonflowDataManager.LoadStructureWith")
        overrides = json_object(arguments[1], "LoadStructureWith", {"frames": {"data": 30}}, reason="InvalidArgument")
        return self._core().load_structure(arguments[0], overrides)

    @command(doc_in="Start running the loaded structure")
    @operator_errors
    def BeginSequence(self):
        self._core().begin_sequence()

    @command(dtype_out=str, doc_out='JSON {"node", "role", "controller": {frames, exposure, period, file}, '
             '"beamline": {...}, "rotation": {axis, start, end} or null}; "" when the structure is done')
    @operator_errors
    def NextAcquisition(self):
        node = self._core().next_acquisition()
        return json.dumps(node) if node is not None else ""

    @command(doc_in="End the sequence (an acquisition under way is marked failed)")
    @operator_errors
    def EndSequence(self):
        self._core().end_sequence()

    @command(dtype_in=(str,), doc_in="[run number, comment]")
    @operator_errors
    def SetComment(self, arguments):
        if len(arguments) != 2 or not arguments[0].strip().isdigit():
            tango.Except.throw_exception("InvalidArgument", "Give [run number, comment], e.g. ['12', 'beam lost']",
                                         "PhotonflowDataManager.SetComment")
        self._core().set_comment(int(arguments[0]), arguments[1])

    @attribute(dtype=str, doc="The variables' computation: the run being computed and how many wait")
    def VariablesStatus(self):
        launcher = self.core.variables if self.core is not None else None
        if launcher is None:
            return "no context file"
        running = launcher.running
        return f"computing run {running.run}, {launcher.queued} waiting" if running else \
            f"idle, {launcher.queued} waiting"

    @command(dtype_in=(int,), dtype_out=int, doc_in="Run numbers to compute again with the context as it is now "
             "([] or [0]: every run of the proposal)", doc_out="Runs queued")
    @operator_errors
    def Reprocess(self, runs):
        numbers = [int(run) for run in runs]
        if numbers == [0]:
            numbers = []
        if any(number < 1 for number in numbers):
            tango.Except.throw_exception(
                "InvalidArgument", f"run numbers start at 1 (got {', '.join(map(str, numbers))}); give [0] or [] "
                "alone for every run of the proposal", "PhotonflowDataManager.Reprocess")
        return self._core().reprocess(numbers)

    @command(dtype_out=(str,), doc_out="The context's variables, loaded in a process of its own (an error names "
             "its file and line, or how that process ended)")
    @operator_errors
    def ReloadContext(self):
        core = self._core()
        with tango.AutoTangoAllowThreads(self):  # loading takes a second: other clients go on meanwhile
            return core.reload_context()

    @attribute(dtype=str, doc="The processing jobs as JSON: id, run, kind, state (queued, running, done, failed, "
               "cancelled), error, output")
    @operator_errors
    def Jobs(self):
        return json.dumps(self.core.job_states()) if self.core is not None else "[]"

    @command(dtype_in=(str,), dtype_out=str, doc_in="[run number, processing: integration, normalization or "
             "alignment]", doc_out="The job id")
    @operator_errors
    def Process(self, arguments):
        if len(arguments) != 2 or not arguments[0].strip().isdigit():
            tango.Except.throw_exception("InvalidArgument", "Give [run number, processing], e.g. ['12', 'integration']",
                                         "PhotonflowDataManager.Process")
        return self._core().process(int(arguments[0]), arguments[1].strip())

    @command(dtype_in=str, doc_in="A job id (see Jobs)")
    @operator_errors
    def CancelJob(self, job_id):
        self._core().cancel_job(job_id)

    @command(dtype_in=float, dtype_out=bool, doc_in="Seconds to wait", doc_out="True once every run told is catalogued")
    def WaitIdle(self, timeout):
        return wait_unlocked(self, self._core().wait_idle, timeout)
