"""A simulated PILATUS3 camserver: its TCP text protocol, and real CBF files on disk.

Why: the Pilatus Acquirer must work unchanged against a real camserver, so it is tested
against a process that speaks the same protocol on a real socket and writes the same
files. What it follows (the camserver protocol as the PILATUS user manual and EPICS
areaDetector's pilatusDetector driver use it):

- one command per line; every reply is ``<code> <OK|ERR> <text>`` ended by ``\\x18``;
  code 15 acknowledges settings, 10 ``imgpath``, 7 ends an exposure (``7 OK <file>`` when
  the last image is written, ``7 ERR kill`` after ``k``), 1 an unknown command;
- ``exptime``, ``expperiod``, ``nimages``, ``delay``, ``imgpath``, ``setthreshold
  [gain] <eV>``, ``mxsettings <key> <value> [...]`` (Wavelength, Detector_distance,
  Beam_xy, Start_angle, Angle_increment, Oscillation_axis, ...), ``exposure <file>`` (one
  image: that name; several: ``<stem>_00000.cbf``, ``<stem>_00001.cbf``, ...), ``k``,
  ``version``;
- each image is a CBF file (byte-offset compressed int32, written with fabio) whose header
  is the miniCBF ``PILATUS_1.2`` block (detector and serial number, date, pixel size, sensor,
  exposure time and period, tau, count cutoff, threshold, wavelength, distance, beam xy,
  angles, oscillation axis), as in the MANACÁ example. A file is written under a temporary
  name and renamed, so a reader never sees half an image;
- as a real PILATUS3's, each image holds -1 in the gaps between its 487 x 195-pixel modules and
  -2 at the pixels of its bad-pixel map (``--bad-pixels``; the header's N_excluded_pixels).

``simfail <error|drop|stall>`` (not camserver's) makes the next command fail that way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from fabio.cbfimage import CbfImage

from photonflow.drivers.camserver import END, MODELS, PIXEL_SIZE, flagged_pixels, image_names, pixel_positions
from photonflow.errors import ConfigurationError
from photonflow.simulators.diffraction import DiffractionFrames, PatternSettings, preload_calibrant
from photonflow.simulators.frame_timing import REAL_TIME, FrameSchedule
from photonflow.simulators.trigger_input import TriggerInput

log = logging.getLogger(__name__)

MX_KEYS = {  # mxsettings key -> number of values
    "Wavelength": 1, "Energy_range": 2, "Detector_distance": 1, "Detector_Voffset": 1, "Beam_xy": 2,
    "Flux": 1, "Filter_transmission": 1, "Start_angle": 1, "Angle_increment": 1, "Detector_2theta": 1,
    "Polarization": 1, "Alpha": 1, "Kappa": 1, "Phi": 1, "Phi_increment": 1, "Chi": 1,
    "Chi_increment": 1, "Omega": 1, "Omega_increment": 1, "Oscillation_axis": 1, "N_oscillations": 1,
}


@dataclass
class CamserverState:
    model: str
    serial_number: str
    image_path: Path
    seed: int = 0
    bad_pixels: tuple[tuple[int, int], ...] = ()  # (row, column): the detector's bad-pixel map
    exposure_time: float = 1.0
    exposure_period: float = 1.05
    n_images: int = 1
    gain: str = "autog"
    threshold: float = 6000.0
    mx: dict[str, str] = field(default_factory=lambda: {
        "Wavelength": "1.0000", "Detector_distance": "0.25000", "Beam_xy": "(0.00, 0.00)",
        "Start_angle": "0.0000", "Angle_increment": "0.0000", "Oscillation_axis": "X, CW",
    })

    @property
    def shape(self) -> tuple[int, int]:
        columns, rows = MODELS[self.model]
        return rows, columns


def frame_source(state: CamserverState) -> DiffractionFrames:
    """The powder rings follow the header camserver writes: Wavelength, Detector_distance and
    Beam_xy (x = column, y = row; (0, 0), camserver's default, means not set: near the middle)."""
    rows, columns = state.shape
    beam_x, beam_y = (float(v) for v in state.mx["Beam_xy"].strip("()").split(","))
    return DiffractionFrames(PatternSettings(
        height=rows, width=columns, dtype="int32", seed=state.seed, exposure=state.exposure_time,
        wavelength=float(state.mx["Wavelength"]) * 1e-10, distance=float(state.mx["Detector_distance"]),
        pixel_size=PIXEL_SIZE, beam_centre=None if (beam_x, beam_y) == (0.0, 0.0) else (beam_y, beam_x),
    ))


def minicbf_header(state: CamserverState, number: int, when: datetime) -> str:
    """The ``PILATUS_1.2`` header block of image ``number`` (0-based) of the series."""
    start = float(state.mx["Start_angle"]) + number * float(state.mx["Angle_increment"])
    name = "PILATUS3 " + state.model.split("_", 1)[1].upper()
    lines = [
        f"# Detector: {name}, S/N {state.serial_number}",
        f"# {when.isoformat(timespec='milliseconds')}",
        f"# Pixel_size {PIXEL_SIZE * 1e6:.0f}e-6 m x {PIXEL_SIZE * 1e6:.0f}e-6 m",
        "# Silicon sensor, thickness 0.001000 m",
        f"# Exposure_time {state.exposure_time:.7f} s",
        f"# Exposure_period {state.exposure_period:.7f} s",
        "# Tau = 124.0e-09 s",
        "# Count_cutoff 1048574 counts",
        f"# Threshold_setting: {state.threshold:.0f} eV",
        f"# Gain_setting: {state.gain} (vrf = 1.000)",
        f"# N_excluded_pixels = {len(state.bad_pixels)}",
        f"# Excluded_pixels: {'badpix_mask.tif' if state.bad_pixels else '(nil)'}",
        "# Flat_field: (nil)",
        "# Trim_file: (nil)",
        f"# Image_path: {state.image_path}/",
    ]
    for key, value in state.mx.items():
        if key == "Start_angle":
            value = f"{start:.4f}"
        unit = {"Wavelength": " A", "Detector_distance": " m", "Detector_Voffset": " m", "Beam_xy": " pixels",
                "Energy_range": " eV"}.get(key, " deg." if "angle" in key.lower() or key in
                                           ("Alpha", "Kappa", "Phi", "Chi", "Omega", "Detector_2theta") else "")
        lines.append(f"# {key} {value}{unit}")
    return "\r\n".join(lines)


class Camserver:
    """The camserver's logic: one connection's commands, and the exposure thread."""

    def __init__(self, state: CamserverState, trigger_line: str = ""):
        """``trigger_line``: the address of the trigger line cabled to the external-trigger input."""
        self.state = state
        self.fault: str | None = None
        self._kill = threading.Event()
        self.trigger_input = TriggerInput()
        self.trigger_input.plug(trigger_line)
        self._exposure: threading.Thread | None = None
        self._frames: DiffractionFrames | None = None
        self._flags = flagged_pixels(state.shape, state.bad_pixels)
        self._flagged = self._flags < 0
        preload_calibrant()
        self.images_written = 0

    def frame(self, number: int) -> np.ndarray:
        """Image ``number`` of the current series, as the detector counted it: -1 between the
        modules, -2 at the bad pixels."""
        image = self._frames.frame(number)
        np.copyto(image, self._flags, where=self._flagged)
        return image

    def handle(self, line: str, reply) -> None:
        words = line.split()
        if not words:
            return
        command, arguments = words[0].lower(), words[1:]
        try:
            handler = getattr(self, f"_cmd_{command}", None)
            if handler is None:
                reply(1, "ERR", f"*** Unrecognized command: {words[0]}")
                return
            handler(arguments, reply)
        except (ValueError, IndexError) as error:
            reply(15, "ERR", f"{words[0]}: {error}")

    @staticmethod
    def _number(arguments: list[str], kind=float, minimum: float = 0.0):
        if len(arguments) != 1:
            raise ValueError("expected one value")
        value = kind(arguments[0])
        if value < minimum:
            raise ValueError(f"value {value} below the minimum {minimum}")
        return value

    def _busy(self) -> bool:
        return self._exposure is not None and self._exposure.is_alive()

    @property
    def exposing(self) -> bool:
        """An exposure is under way: its trigger input was cleared, pulses from now on are its own."""
        return self._busy()

    def _cmd_exptime(self, arguments, reply):
        self.state.exposure_time = self._number(arguments, float, 1e-7)
        reply(15, "OK", f"Exposure time set to: {self.state.exposure_time:.7f} sec.")

    def _cmd_expperiod(self, arguments, reply):
        self.state.exposure_period = self._number(arguments, float, 1e-7)
        reply(15, "OK", f"Exposure period set to: {self.state.exposure_period:.7f} sec")

    def _cmd_nimages(self, arguments, reply):
        self.state.n_images = self._number(arguments, int, 1)
        reply(15, "OK", f"N images set to: {self.state.n_images}")

    def _cmd_delay(self, arguments, reply):
        reply(15, "OK", f"Delay time set to: {self._number(arguments, float):.7f} sec.")

    def _cmd_imgpath(self, arguments, reply):
        path = Path(arguments[0])
        if not path.is_dir():
            reply(10, "ERR", f"{path} does not exist or is not a directory")
            return
        self.state.image_path = path
        reply(10, "OK", str(path))

    def _cmd_setthreshold(self, arguments, reply):
        gain = arguments[0].lower() if len(arguments) == 2 else self.state.gain
        if gain not in ("lowg", "midg", "highg", "uhighg", "autog"):
            raise ValueError(f"unknown gain {gain}")
        threshold = float(arguments[-1])
        if not 2000 <= threshold <= 40000:
            raise ValueError(f"threshold {threshold:.0f} eV outside 2000 to 40000 eV")
        self.state.gain, self.state.threshold = gain, threshold
        reply(15, "OK", f"Settings: {gain} gain; threshold: {threshold:.0f} eV; vcmp: 0.639 V")

    def _cmd_mxsettings(self, arguments, reply):
        position = 0
        while position < len(arguments):
            key = arguments[position]
            if key not in MX_KEYS:
                raise ValueError(f"unknown mxsettings key {key}")
            count = MX_KEYS[key]
            values = arguments[position + 1 : position + 1 + count]
            if len(values) != count:
                raise ValueError(f"{key} needs {count} value(s)")
            if key == "Beam_xy":
                self.state.mx[key] = f"({float(values[0].strip('(,')):.2f}, {float(values[1].strip(')')):.2f})"
            elif key == "Oscillation_axis":
                self.state.mx[key] = values[0]
            else:
                self.state.mx[key] = " ".join(f"{float(v):.5f}" for v in values)
            position += 1 + count
        reply(15, "OK", "")

    def _cmd_version(self, arguments, reply):
        reply(24, "OK", "Code release:  tvx-7.3.13-121212 (photonflow simulator)")

    def _cmd_k(self, arguments, reply):
        self._kill.set()
        if self._exposure is not None:
            self._exposure.join(30)
        else:
            reply(13, "OK", "nothing to kill")

    def _cmd_exposure(self, arguments, reply):
        self._start_exposure(arguments, reply, "exposure")

    def _cmd_exttrigger(self, arguments, reply):
        """One external edge starts the series, timed by exptime/expperiod."""
        self._start_exposure(arguments, reply, "exttrigger")

    def _cmd_extmtrigger(self, arguments, reply):
        """One image of exptime per external edge."""
        self._start_exposure(arguments, reply, "extmtrigger")

    def _cmd_extenable(self, arguments, reply):
        """One image per external gate, exposed while the gate is open."""
        self._start_exposure(arguments, reply, "extenable")

    def _cmd_simtrigger(self, arguments, reply):
        """The simulator's trigger input (no camserver command): an edge now, or a gate of the width
        given; pulses with their edge time come on the trigger line (``--trigger-input``)."""
        self.trigger_input.fire(self._number(arguments, float, 1e-7) if arguments else None)
        reply(15, "OK", "trigger")

    def _start_exposure(self, arguments, reply, mode: str) -> None:
        if self._busy():
            reply(15, "ERR", "an exposure is already running; send k to stop it")
            return
        if len(arguments) != 1:
            raise ValueError("expected the image file name")
        self._kill.clear()
        self._frames = frame_source(self.state)
        self._frames.draw(self.state.n_images)  # before "Starting": no image of the series late
        self.images_written = 0
        names = image_names(arguments[0], self.state.n_images)
        self.trigger_input.clear()
        started = "background" if mode == "exposure" else "externally triggered exposure(s)"
        reply(15, "OK", f"Starting {self.state.exposure_time:.7f} second {started}: "
                        f"{datetime.now().isoformat(timespec='milliseconds')}")
        self._exposure = threading.Thread(target=self._expose, args=(names, reply, mode), name="camserver-exposure",
                                          daemon=True)
        self._exposure.start()

    def _cmd_simfail(self, arguments, reply):
        if arguments not in (["error"], ["drop"], ["stall"]):
            raise ValueError("simfail takes error, drop or stall")
        self.fault = arguments[0]
        reply(15, "OK", f"the next command will {arguments[0]}")

    def _expose(self, names: list[str], reply, mode: str = "exposure") -> None:
        """Each image's header date is the start of its exposure: the pulse's edge for an image per
        pulse, else its place on the detector's own timing (the achieved one, never a catch-up burst)."""
        directory = self.state.image_path
        schedule = FrameSchedule(time.time(), self.state.exposure_period)
        if mode == "exttrigger":
            pulse = self.trigger_input.take(self._kill.is_set)
            if pulse is None:
                reply(7, "ERR", "kill")
                return
            schedule.origin = pulse.time
        for number, name in enumerate(names):
            if mode in ("extmtrigger", "extenable"):  # each image waits for its own edge or gate
                pulse = self.trigger_input.take(self._kill.is_set)
                if pulse is None:
                    reply(7, "ERR", "kill")
                    return
                start = pulse.time
                exposure = pulse.width if mode == "extenable" and pulse.width else self.state.exposure_time
            else:
                start, exposure = schedule.due(number), self.state.exposure_time
            if REAL_TIME.wait_until(self._kill, start + exposure):
                reply(7, "ERR", "kill")
                return
            if mode not in ("extmtrigger", "extenable"):
                start = time.time() - exposure  # later than due when the machine fell behind
                schedule.taken(number, start)
            header = minicbf_header(self.state, number, datetime.fromtimestamp(start))
            image = CbfImage(data=self.frame(number), header={
                "_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header})
            target = directory / name
            partial = target.with_name(f".{target.name}.part")
            image.write(str(partial))
            os.replace(partial, target)  # whole files only
            self.images_written += 1
        reply(7, "OK", str(directory / names[-1]))

    def stop(self) -> None:
        self._kill.set()
        if self._exposure is not None:
            self._exposure.join(30)
        self.trigger_input.unplug()


class CamserverHandler(socketserver.StreamRequestHandler):
    server: CamserverServer

    def handle(self) -> None:
        lock = threading.Lock()

        def reply(code: int, status: str, text: str) -> None:
            with lock:
                try:
                    self.wfile.write(f"{code} {status} {text}".encode() + END)
                    self.wfile.flush()
                except (OSError, ValueError):  # the client hung up (ValueError: its file is closed)
                    pass

        camserver = self.server.camserver
        for raw in self.rfile:
            line = raw.decode(errors="replace").strip()
            fault, camserver.fault = camserver.fault, None
            if fault == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "stall":
                time.sleep(self.server.stall_seconds)
                continue
            if fault == "error":
                reply(15, "ERR", "simulated camserver failure: detector not responding")
                continue
            camserver.handle(line, reply)


class CamserverServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], camserver: Camserver):
        super().__init__(address, CamserverHandler)
        self.camserver = camserver
        self.stall_seconds = 30.0

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


def start_server(camserver: Camserver, host: str = "127.0.0.1", port: int = 0) -> CamserverServer:
    server = CamserverServer((host, port), camserver)
    threading.Thread(target=server.serve_forever, name="camserver", daemon=True).start()
    return server


def _pixels(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return pixel_positions(text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A simulated PILATUS3 camserver writing CBF files")
    parser.add_argument("--model", choices=sorted(MODELS), default="pilatus3_1m")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one; camserver's is 41234)")
    parser.add_argument("--image-path", type=Path, default=Path("."), help="where images go until imgpath says")
    parser.add_argument("--serial-number", default="24-0111")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-pixels", default=(), type=_pixels, metavar="'ROW,COLUMN ...'",
                        help="the detector's bad-pixel map: these pixels read -2 in every image")
    parser.add_argument("--trigger-input", default="", metavar="ADDRESS",
                        help="trigger line cabled to the external-trigger input (a ZeroMQ address); default none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.image_path.mkdir(parents=True, exist_ok=True)  # the detector computer's image disk
    camserver = Camserver(CamserverState(args.model, args.serial_number, args.image_path.resolve(), args.seed,
                                         args.bad_pixels), args.trigger_input)
    server = CamserverServer((args.host, args.port), camserver)
    print(json.dumps({"camserver": server.address, "model": args.model}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        camserver.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
