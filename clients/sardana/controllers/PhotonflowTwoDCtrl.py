"""Sardana 2D controller for a photonflow Controller device (add this folder to the Pool's PoolPath).

A scan arms photonflow once (``PrepareOne``: one ``Configure`` and ``Start`` for all its
points, one file; the arming overlaps the move to the first point), then each point's start
triggers one frame (trigger mode ``client``: the Acquirer's
``SoftwareTrigger``). The channel's value reference is the frame in that file,
``h5file:///<file>::/entry/data/data[<index>]`` (silx's DataUrl syntax); the photonflow scan
recorder (``../recorders``) links those frames into Sardana's NXscan file as a virtual dataset.
Without ``PrepareOne`` (a plain ``ct``), ``LoadOne`` configures a series of one frame.
With references off (value mode) a point waits until its frame is flushed to the file (the
Recorder's ``FramesFlushed``) and reads it from there: never the zeros an unflushed chunk
reads as. With references on, the series are armed with ``blissdata_scan`` false: a Sardana scan is
one blissdata scan (``PhotonflowBlissdataRecorder``'s, the frames by reference its image stream), not
two (``SeriesOnBlissdata``); in value mode the Recorder publishes the series' frames itself (never
pixels through Redis).

The measurement group's synchronization picks photonflow's trigger mode: software trigger (a
step scan) ``client``, one frame per point; software start (``set_meas_conf Synchronization
Start``: a timescan) ``internal``, the detector's own timing; hardware trigger, start and gate
``external``, ``external_start`` and ``external_enable`` (the detector's trigger input wired to
the synchronizer). Outside ``client`` the frames come by themselves, and each read gives the
references of the frames written since the last read.
"""

import json
import time

import h5py
import numpy
import tango
from sardana import State
from sardana.pool import AcqSynch
from sardana.pool.controller import (
    DefaultValue,
    Description,
    MaxDimSize,
    Referable,
    TwoDController,
    Type,
)

from photonflow.publishing.frame_reference import DATASET, frame_reference

STATES = {
    tango.DevState.ON: State.On,
    tango.DevState.ALARM: State.Alarm,
    tango.DevState.RUNNING: State.Moving,
    tango.DevState.MOVING: State.Moving,
    tango.DevState.STANDBY: State.Standby,
    tango.DevState.FAULT: State.Fault,
}

# a device that did not answer in time because a command of another client held it (Tango's
# serialization monitor, 3.2 s) or the call timed out: busy, not broken; Sardana asks again
BUSY_REASONS = {"API_CommandTimedOut", "API_DeviceTimedOut"}

TRIGGER_MODES = {  # Sardana's synchronization -> photonflow's trigger mode
    AcqSynch.SoftwareTrigger: "client",
    AcqSynch.SoftwareStart: "internal",
    AcqSynch.HardwareTrigger: "external",
    AcqSynch.HardwareStart: "external_start",
    AcqSynch.HardwareGate: "external_enable",
}


class PhotonflowTwoDController(TwoDController, Referable):
    """A photonflow Controller (Acquirer + Recorder) as one Sardana 2D channel (axis 1)."""

    gender = "photonflow"
    model = "Controller"
    organization = "photonflow"
    MaxDevice = 1

    ctrl_properties = {
        "Controller": {Type: str, Description: "Tango name of the photonflow Controller device (mandatory)"},
        "Latency": {Type: float, DefaultValue: 0.0,
                    Description: "Seconds added to the exposure to make each frame's period"},
        "Timeout": {Type: float, DefaultValue: 30.0,
                    Description: "Seconds a call to photonflow, or its arming, may take"},
        "SeriesOnBlissdata": {Type: bool, DefaultValue: False,
                              Description: "Also publish each series as a blissdata scan of its own (the "
                                           "Recorder's photonflow_series); off: its frames reach blissdata in "
                                           "the Sardana scan (PhotonflowBlissdataRecorder), one scan per scan"},
    }

    def __init__(self, inst, props, *args, **kwargs):
        TwoDController.__init__(self, inst, props, *args, **kwargs)
        self.controller = self._proxy(self.Controller)
        database = tango.Database()
        peers = database.get_device_property(self.Controller, ["Acquirer", "Recorder"])
        self.acquirer = self._proxy(peers["Acquirer"][0])
        self.recorder = self._proxy(peers["Recorder"][0])
        self._value_ref_enabled = False
        self._value_ref_pattern = ""
        self._busy_since = None  # since when photonflow's state could not be read (a device busy)
        self._frames = 0  # frames of the armed series
        self._triggered = 0  # frames triggered so far
        self._exposure = 0.0
        self._prepared = False
        self._file = ""
        self._stopped = False
        self._started = False
        self._trigger_mode = "client"
        self._reported = 0  # frames whose value or reference was given (trigger modes but client)

    def _proxy(self, name):
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(int(self.Timeout * 1000))
        return proxy

    def AddDevice(self, axis):
        if axis != 1:
            raise ValueError("a photonflow controller has one axis, 1")

    def GetAxisAttributes(self, axis):
        attributes = super().GetAxisAttributes(axis)
        attributes["Value"][MaxDimSize] = [2**16, 2**16]
        return attributes

    # -- state ------------------------------------------------------------------------------
    def StateOne(self, axis):
        try:
            answer = self._state_one()
        except tango.DevFailed as error:
            said = "; ".join(f"{e.reason}: {e.desc}" for e in error.args)
            if BUSY_REASONS & {e.reason for e in error.args}:  # a long command (the Recorder arming) held it
                now = time.monotonic()
                self._busy_since = self._busy_since if self._busy_since is not None else now
                if now - self._busy_since < self.Timeout:  # asked again, for Timeout seconds at most
                    return State.Moving, f"photonflow busy, asked again: {said}"
            self._busy_since = None
            self._log.error("photonflow's state could not be read: %s", said)
            raise
        self._busy_since = None
        return answer

    def _state_one(self):
        state = self.controller.state()
        if state == tango.DevState.FAULT:
            status = self.controller.status()
            if self._started and not self._stopped:  # a scan's point ends Fault: say why in Sardana's log
                self._log.error("photonflow's Controller is FAULT: %s", status)
            return State.Fault, status
        if self._stopped or not self._started:
            return STATES.get(state, State.Unknown), self.controller.status()
        if self._trigger_mode != "client":  # the frames come by themselves: busy until the file is closed
            if state == tango.DevState.RUNNING or self.recorder.state() == tango.DevState.RUNNING:
                return State.Moving, self.controller.status()
            return STATES.get(state, State.Unknown), self.controller.status()
        if self._triggered == 0:  # started at PrepareOne: armed, or arming, for the first point
            return State.On, f"Series of {self._frames} frames started: waiting for the first point"
        ready, done = self._ready()
        if ready < self._triggered:
            return State.Moving, f"Frame {self._triggered - 1}: {ready} of {self._frames} frames {done}"
        if self._triggered >= self._frames and state == tango.DevState.RUNNING:
            return State.Moving, f"Last frame {done}; closing the file"
        return State.On, f"{ready} of {self._frames} frames {done} in {self._file}"

    def _ready(self):
        """(frames a read may take, what they are): with references, the frames written; for
        values, those a reader of the file sees (FramesFlushed): one written but not yet flushed
        reads as zeros from another process, and a point must never record that."""
        if self._value_ref_enabled:
            return self.recorder.read_attribute("FramesWritten").value, "written"
        return self.recorder.read_attribute("FramesFlushed").value, "readable"

    # -- configuration --------------------------------------------------------------------------
    def SetCtrlPar(self, parameter, value):
        if parameter.lower() == "synchronization":
            if value not in TRIGGER_MODES:
                raise ValueError(f"photonflow has no trigger mode for {AcqSynch(value).name}: "
                                 "use a software or hardware trigger, a start, or a hardware gate")
            self._trigger_mode = TRIGGER_MODES[value]
        else:
            super().SetCtrlPar(parameter, value)

    def _configure(self, exposure, frames, latency=0.0):
        if self.controller.state() == tango.DevState.RUNNING:  # a scan stopped by the user before
            self.controller.Abort()
            self._wait(lambda: self.controller.state() != tango.DevState.RUNNING, "the last series to end")
        self.controller.Configure(json.dumps({
            "frames": int(frames), "exposure": float(exposure),
            "period": float(exposure) + max(float(self.Latency), float(latency)),
            "trigger_mode": self._trigger_mode,
            # with references on, Sardana's blissdata scan carries the frames; in value mode the Recorder's does
            "blissdata_scan": bool(self.SeriesOnBlissdata) or not self._value_ref_enabled,
        }))
        self._frames, self._triggered, self._exposure = int(frames), 0, float(exposure)
        self._reported = 0
        self._stopped = False
        self._started = False

    def PrepareOne(self, axis, value, repetitions, latency, nb_starts):
        """Once per scan: one series of repetitions x points frames, one file, started now so
        the detector arms while the motors move to the first point."""
        self._configure(value, repetitions * nb_starts, latency)
        self._prepared = True
        self._start_series()

    def LoadOne(self, axis, value, repetitions, latency):
        if self._prepared and self._triggered < self._frames:
            return  # the prepared series, still taking frames (StartOne outside client mode takes them all)
        self._prepared = False
        self._configure(value, repetitions, latency)

    # -- acquisition --------------------------------------------------------------------------
    def _start_series(self):
        self.controller.Start()
        self._file = self.controller.read_attribute("LastFile").value
        self._started = True

    def StartOne(self, axis, value):
        try:
            self._start_one()
        except Exception as error:
            # Sardana turns the channel Fault and logs why at debug level only: "ended acquisition
            # with Fault state" would be all a scientist sees
            self._log.error("photonflow could not start the point: %s", error)
            raise

    def _start_one(self):
        if not self._started:
            self._start_series()
        if self._triggered == 0:
            self._wait(self._acquirer_armed, "the Acquirer to be armed")
        if self._trigger_mode == "client":
            self.acquirer.command_inout("SoftwareTrigger")
            self._triggered += 1
        else:  # started once; the frames follow the detector's timing or its trigger input
            self._triggered = self._frames

    def _acquirer_armed(self):
        if self.controller.state() == tango.DevState.FAULT:
            raise RuntimeError(self.controller.status())
        try:
            return self.acquirer.state() in (tango.DevState.STANDBY, tango.DevState.RUNNING)
        except tango.CommunicationFailed:  # seen once while the Acquirer was being prepared: ask again
            return False

    def _wait(self, check, what):
        deadline = time.monotonic() + self.Timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"photonflow: timed out waiting for {what}")
            time.sleep(0.005)

    def _new_frames(self):
        """Frames ready since the last read (trigger modes but client), and marks them read."""
        first, self._reported = self._reported, self._ready()[0]
        return range(first, self._reported)

    def ReadOne(self, axis):
        if self._trigger_mode == "client":
            index = self._triggered - 1
            self._wait(lambda: self._ready()[0] > index, f"frame {index} to be readable in {self._file}")
            frames = [index]
        else:
            frames = self._new_frames()
        with h5py.File(self._file, "r", swmr=True) as f:
            dataset = f[DATASET]
            if frames and dataset.shape[0] <= frames[-1]:  # never a frame that is not there yet
                raise RuntimeError(f"photonflow: frame {frames[-1]} is not in {self._file} yet "
                                   f"({dataset.shape[0]} frames visible)")
            values = [numpy.array(dataset[index]) for index in frames]
        return values[0] if self._trigger_mode == "client" else values

    def RefOne(self, axis):
        if self._trigger_mode == "client":
            return frame_reference(self._file, self._triggered - 1)
        return [frame_reference(self._file, index) for index in self._new_frames()]

    def StopOne(self, axis):
        self._stopped = True
        if self.controller.state() == tango.DevState.RUNNING:
            self.controller.Stop()

    def AbortOne(self, axis):
        self._stopped = True
        self.controller.Abort()

    # -- axis parameters ------------------------------------------------------------------------
    def GetAxisPar(self, axis, parameter):
        name = parameter.lower()
        if name == "shape":
            rows, columns = self.acquirer.read_attribute("FrameShape").value
            return [int(rows), int(columns)]
        if name == "value_ref_enabled":
            return self._value_ref_enabled
        if name == "value_ref_pattern":
            return self._value_ref_pattern
        return super().GetAxisPar(axis, parameter)

    def SetAxisPar(self, axis, parameter, value):
        name = parameter.lower()
        if name == "value_ref_enabled":
            self._value_ref_enabled = bool(value)
        elif name == "value_ref_pattern":
            self._value_ref_pattern = value  # photonflow's Recorder names the file: kept, not used
        else:
            super().SetAxisPar(axis, parameter, value)
