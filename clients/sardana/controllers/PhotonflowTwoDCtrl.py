"""Sardana 2D controller for a photonflow Controller device (add this folder to the Pool's PoolPath).

A scan arms photonflow once (``PrepareOne``: one ``Configure`` for all its points, one file),
then each point's start triggers one frame (trigger mode ``client``: the Acquirer's
``SoftwareTrigger``). The channel's value reference is the frame in that file,
``h5file:///<file>::/entry/data/data[<index>]`` (silx's DataUrl syntax); the photonflow scan
recorder (``../recorders``) links those frames into Sardana's NXscan file as a virtual dataset.
Without ``PrepareOne`` (a plain ``ct``), ``LoadOne`` configures a series of one frame.
"""

import json
import time

import h5py
import numpy
import tango
from sardana import State
from sardana.pool.controller import (
    DefaultValue,
    Description,
    MaxDimSize,
    Referable,
    TwoDController,
    Type,
)

from photonflow.recording.frame_reference import DATASET, frame_reference

STATES = {
    tango.DevState.ON: State.On,
    tango.DevState.ALARM: State.Alarm,
    tango.DevState.RUNNING: State.Moving,
    tango.DevState.MOVING: State.Moving,
    tango.DevState.STANDBY: State.Standby,
    tango.DevState.FAULT: State.Fault,
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
        self._frames = 0  # frames of the armed series
        self._triggered = 0  # frames triggered so far
        self._exposure = 0.0
        self._prepared = False
        self._file = ""
        self._stopped = False

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
        state = self.controller.state()
        if state == tango.DevState.FAULT:
            return State.Fault, self.controller.status()
        if self._triggered == 0 or self._stopped:
            return STATES.get(state, State.Unknown), self.controller.status()
        written = self.recorder.read_attribute("FramesWritten").value
        if written < self._triggered:
            return State.Moving, f"Frame {self._triggered - 1}: {written} of {self._frames} frames written"
        if self._triggered >= self._frames and state == tango.DevState.RUNNING:
            return State.Moving, "Last frame written; closing the file"
        return State.On, f"{written} of {self._frames} frames written to {self._file}"

    # -- configuration --------------------------------------------------------------------------
    def _configure(self, exposure, frames):
        if self.controller.state() == tango.DevState.RUNNING:  # a scan stopped by the user before
            self.controller.Abort()
            self._wait(lambda: self.controller.state() != tango.DevState.RUNNING, "the last series to end")
        self.controller.Configure(json.dumps({
            "frames": int(frames), "exposure": float(exposure),
            "period": float(exposure) + float(self.Latency), "trigger_mode": "client",
        }))
        self._frames, self._triggered, self._exposure = int(frames), 0, float(exposure)
        self._stopped = False

    def PrepareOne(self, axis, value, repetitions, latency, nb_starts):
        """Once per scan: one series of repetitions x points frames, one file."""
        self._configure(value, repetitions * nb_starts)
        self._prepared = True

    def LoadOne(self, axis, value, repetitions, latency):
        if self._prepared and self._triggered < self._frames:
            return  # a frame of the prepared series
        self._prepared = False
        self._configure(value, repetitions)

    # -- acquisition --------------------------------------------------------------------------
    def StartOne(self, axis, value):
        if self._triggered == 0:
            self.controller.Start()
            self._file = self.controller.read_attribute("LastFile").value
            self._wait(self._acquirer_armed, "the Acquirer to be armed")
        self.acquirer.command_inout("SoftwareTrigger")
        self._triggered += 1

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

    def ReadOne(self, axis):
        with h5py.File(self._file, "r", swmr=True) as f:
            return numpy.array(f[DATASET][self._triggered - 1])

    def RefOne(self, axis):
        return frame_reference(self._file, self._triggered - 1)

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
