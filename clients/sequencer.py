"""A sequencer in Python: runs a data structure description through the DataManager, the
simulated beamline and the Controller, acquisition after acquisition, as a beamline's macro would
(Sardana and SPEC macros call the same DataManager commands).

A tomography is such a structure (config/structures/tomography.yaml): ``run_tomography`` runs it
with a client's values, and the Standardizer joins its darks, flats and projections in one NXtomo.
"""

from __future__ import annotations

import json
import sys
import time

import tango

from photonflow.clients.demo import run_acquisition, wait_for_standardized, wait_for_state


class Beamline:
    """Applies an acquisition's beamline settings: ``shutter`` (open/closed), ``<alias>/<Attribute>``
    (e.g. mono/Energy) or a motor ``<alias>`` (its Position), waiting until each is reached."""

    def __init__(self, prefix: str, url=lambda name: name):
        self.prefix = prefix
        self.url = url
        self._proxies: dict[str, tango.DeviceProxy] = {}

    def proxy(self, alias: str) -> tango.DeviceProxy:
        if alias not in self._proxies:
            proxy = tango.DeviceProxy(self.url(f"{self.prefix}/{alias}"))
            proxy.set_timeout_millis(10000)
            self._proxies[alias] = proxy
        return self._proxies[alias]

    def apply(self, settings: dict) -> None:
        for key, value in settings.items():
            if key == "shutter":
                self.set_shutter(str(value).lower() in ("open", "true", "1"))
            elif "/" in key:
                alias, attribute = key.rsplit("/", 1)
                self.proxy(alias).write_attribute(attribute, value)
                self.wait_still(alias)
            else:
                self.proxy(key).write_attribute("Position", float(value))
                self.wait_still(key)

    def set_shutter(self, open_: bool) -> None:
        shutter = self.proxy("shutter")
        wanted = "OPEN" if open_ else "CLOSE"
        if str(shutter.state()) != wanted:
            shutter.command_inout("Open" if open_ else "Close")
        wait_for_state(shutter, {wanted}, 30)

    def wait_still(self, alias: str, timeout: float = 120) -> None:
        proxy = self.proxy(alias)
        deadline = time.monotonic() + timeout
        while str(proxy.state()) == "MOVING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proxy.dev_name()} still moving after {timeout} s")
            time.sleep(0.05)


def rotation_scan(rotation: dict | None, frames: int) -> dict | None:
    """A structure's turn ({"axis", "start", "end"} over the frames) as the Controller's continuous
    scan: the axis crosses start + i * step at frame i, triggered by its position-compare."""
    if not rotation:
        return None
    start, end = float(rotation["start"]), float(rotation["end"])
    return {"axis": rotation["axis"], "start": start, "step": (end - start) / frames}


def run_structure(datamanager: tango.DeviceProxy, controller: tango.DeviceProxy, beamline: Beamline,
                  structure: str, experiment: dict | None, timeout: float = 600, log=sys.stderr,
                  overrides: dict | None = None) -> list[dict]:
    """Every acquisition of ``structure`` (with ``overrides`` of its values), for ``experiment``
    (None: the DataManager's as it is); returns what each was (node, role, run, file)."""
    if experiment is not None:
        datamanager.SetExperiment(json.dumps(experiment))
    if overrides:
        count = datamanager.LoadStructureWith([structure, json.dumps(overrides)])
    else:
        count = datamanager.LoadStructure(structure)
    datamanager.BeginSequence()
    done = []
    try:
        while True:
            text = datamanager.NextAcquisition()
            if not text:
                break
            step = json.loads(text)
            print(f"[{len(done) + 1}/{count}] {step['node']} ({step['role']}): {step['beamline']}", file=log)
            beamline.apply(step["beamline"])
            settings = step["controller"]
            before = datamanager.LastRun
            frames, period = int(settings["frames"]), float(settings["period"])
            summary = run_acquisition(controller, frames, float(settings["exposure"]), period, settings["file"],
                                      timeout, scan=rotation_scan(step.get("rotation"), frames), quiet=True)
            deadline = time.monotonic() + 60
            while datamanager.LastRun == before and time.monotonic() < deadline:
                time.sleep(0.05)
            done.append({"node": step["node"], "role": step["role"], "run": datamanager.LastRun,
                         "file": summary["file"], "state": summary["state"],
                         "frames_written": summary["frames_written"], "missing_frames": summary["missing_frames"]})
            if summary["state"] != "ON":
                raise RuntimeError(f"{step['node']} ended {summary['state']}: {summary.get('status', '')}")
    finally:
        datamanager.EndSequence()
    return done


# `photonflow tomo`'s options as overrides of the tomography structure: option -> (section, key)
TOMOGRAPHY_OPTIONS = {
    "projections": ("frames", "data"), "darks": ("frames", "dark"), "flats": ("frames", "flat"),
    "exposure": ("parameters", "exposure"), "period": ("parameters", "period"),
    "start_angle": ("parameters", "start_angle"), "end_angle": ("parameters", "end_angle"),
}


def tomography_overrides(**options) -> dict:
    """The options given (None: the structure's value) as the DataManager's structure overrides;
    ``sample_out`` is the sample translation's ``out`` position."""
    overrides: dict = {}
    for option, value in options.items():
        if value is None:
            continue
        if option == "sample_out":
            overrides.setdefault("beamline", {})["sample"] = {"out": value}
        elif option in TOMOGRAPHY_OPTIONS:
            section, key = TOMOGRAPHY_OPTIONS[option]
            overrides.setdefault(section, {})[key] = value
        else:
            raise ValueError(f"unknown tomography option {option!r}; known: {', '.join(TOMOGRAPHY_OPTIONS)}, "
                             "sample_out")
    return overrides


def run_tomography(datamanager: tango.DeviceProxy, controller: tango.DeviceProxy, standardizer: tango.DeviceProxy,
                   beamline: Beamline, structure: str, experiment: dict | None, overrides: dict,
                   timeout: float = 600, log=sys.stderr) -> dict:
    """The tomography ``structure`` through the DataManager; the summary names the NXtomo the
    Standardizer wrote beside the projections (joining the darks and flats), validated."""
    started = time.monotonic()
    done = run_structure(datamanager, controller, beamline, structure, experiment, timeout, log, overrides)
    frames: dict[str, int] = {}
    for step in done:
        kind = {"data": "projection", "white": "flat"}.get(step["role"], step["role"])
        frames[kind] = frames.get(kind, 0) + step["frames_written"]
    summary = {"frames": frames, "runs": [step["run"] for step in done],
               "missing_frames": sum(step["missing_frames"] for step in done),
               "state": "ON" if all(step["state"] == "ON" for step in done) else "ALARM"}
    projections = [step for step in done if step["role"] == "data"]
    if not projections:
        return {**summary, "nexus": "", "definition": "NXtomo",
                "nexus_error": f"{structure} has no data acquisition (the projections)"}
    summary["run"] = projections[-1]["run"]  # the catalogued run of the projections: the NXtomo's
    summary.update(wait_for_standardized(standardizer, projections[-1]["file"], 120))
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["catalogue"] = datamanager.CataloguePath
    return summary
