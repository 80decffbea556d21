"""A sequencer in Python: runs a data structure description through the DataManager, the
simulated beamline and the Controller, acquisition after acquisition, as a beamline's macro would
(Sardana and SPEC macros call the same DataManager commands)."""

from __future__ import annotations

import json
import sys
import time

import tango

from photonflow.clients.demo import run_acquisition, wait_for_state


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


def run_structure(datamanager: tango.DeviceProxy, controller: tango.DeviceProxy, beamline: Beamline,
                  structure: str, experiment: dict, timeout: float = 600, log=sys.stderr) -> list[dict]:
    """Every acquisition of ``structure``; returns what each was (node, role, run)."""
    datamanager.SetExperiment(json.dumps(experiment))
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
            summary = run_acquisition(controller, int(settings["frames"]), float(settings["exposure"]),
                                      float(settings["period"]), settings["file"], timeout, quiet=True)
            deadline = time.monotonic() + 60
            while datamanager.LastRun == before and time.monotonic() < deadline:
                time.sleep(0.05)
            done.append({"node": step["node"], "role": step["role"], "run": datamanager.LastRun,
                         "file": summary["file"], "state": summary["state"]})
            if summary["state"] != "ON":
                raise RuntimeError(f"{step['node']} ended {summary['state']}: {summary.get('status', '')}")
    finally:
        datamanager.EndSequence()
    return done
