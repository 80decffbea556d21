"""Sardana beside photonflow: a Pool and a MacroServer (with its Door) registered in the suite's
Tango database, photonflow's controllers, recorder and macros on their paths, and the elements
(a 2D channel per photonflow Controller, a motor per simulated beamline motor, a trigger/gate per
simulated position-compare, and a measurement group per channel and position-compare for
hardware-synchronised continuous scans) created.

Sardana is an optional extra (``pip install -e ".[sardana]"``); nothing here imports it until
``start_sardana`` is called.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import tango

from photonflow.clients.launcher import Suite, executable, orb_endpoint_arguments, wait_for
from photonflow.deployment import Deployment
from photonflow.publishing.blissdata_scan import blissdata_url

PLUGINS = Path(__file__).resolve().parent / "sardana"


def limaccd_controllers() -> list[str]:
    """sardana-limaccd's controller folder (Lima2DCtrl: LimaCCDCtrl.py), when it is installed: its
    LimaCCDTwoDController drives photonflow's LimaCCDs face as it drives LImA."""
    spec = importlib.util.find_spec("sardana_limaccd")
    if spec is None or spec.origin is None:
        return []
    return [str(Path(spec.origin).parent / "ctrl")]


# what a facility adds to its Pool's and MacroServer's properties
SARDANA_PATHS = {
    "Pool": {"PoolPath": [str(PLUGINS / "controllers"), *limaccd_controllers()]},
    "MacroServer": {"MacroPath": [str(PLUGINS / "macros")], "RecorderPath": [str(PLUGINS / "recorders")]},
}
SCAN_RECORDER = "PhotonflowNXscanH5_FileRecorder"
HARDWARE_TRIGGER = 0  # Sardana's AcqSynchType.Trigger: with a trigger/gate synchronizer, AcqSynch.HardwareTrigger
# every scan also as a blissdata 2 scan (a recorder that writes no file: Sardana's DataRecorder)
BLISSDATA_RECORDER = "PhotonflowBlissdataRecorder"


@dataclass(frozen=True)
class SardanaDevices:
    instance: str
    pool: str
    macroserver: str
    door: str
    channels: dict[str, str]  # Sardana 2D channel name -> photonflow Controller
    motors: dict[str, str]  # Sardana motor name -> SimulatedMotor device
    # Sardana trigger/gate name -> SimulatedPositionCompare device
    triggers: dict[str, str] = field(default_factory=dict)
    # measurement group -> its hardware-synchronised continuous scan: {"channel", "motor", "trigger"}
    continuous: dict[str, dict[str, str]] = field(default_factory=dict)
    # measurement group -> its channel, for step scans and ct (value references on)
    groups: dict[str, str] = field(default_factory=dict)
    # the MacroServer environment photonflow set (its macros' devices, the active measurement group)
    environment: dict[str, str] = field(default_factory=dict)


def register_sardana(database: tango.Database, instance: str) -> dict[str, str]:
    """``Sardana <instance>`` (Pool + MacroServer + Door) in the database, once; returns the device
    name of each class. photonflow's plugin folders are put on the paths each time."""
    server = f"Sardana/{instance}"
    if server not in database.get_server_list(server):
        from sardana.tango.core.util import register_sardana as register

        register(database, "Sardana", instance)
    listing = list(database.get_device_class_list(server))
    devices = {klass: name for name, klass in zip(listing[::2], listing[1::2], strict=True)}
    for klass, properties in SARDANA_PATHS.items():
        database.put_device_property(devices[klass], properties)
    return devices


def element_name(device: str) -> str:
    return device.rsplit("/", 1)[-1]


def start_sardana(suite: Suite, deployment: Deployment, instance: str = "photonflow",
                  timeout: float = 60) -> SardanaDevices:
    """Register and start ``Sardana <instance>`` as a process of the suite (one that answers
    already is used as it is), then create the controllers and elements of the deployment (those
    that exist already are kept)."""
    database = suite.database()
    devices = register_sardana(database, instance)
    # the MacroServer's environment (senv) in the suite's own folder: by default it is a file under
    # /tmp/tango-<user> shared by every MacroServer of that instance name on the host
    environment = suite.var_dir / "sardana" / instance / "macroserver.properties"
    environment.parent.mkdir(parents=True, exist_ok=True)
    database.put_device_property(devices["MacroServer"], {"EnvironmentDb": [str(environment)]})

    def answering(process=None):
        if process is not None:
            suite._check_alive(process, f"Sardana {instance}")
        for name in (devices["Pool"], devices["MacroServer"], devices["Door"]):
            tango.DeviceProxy(suite.device_url(name)).ping()
        return True

    try:
        answering()  # already running (started earlier in this suite): used as it is, never started twice
    except tango.DevFailed:
        process = suite._spawn(f"Sardana/{instance}", [executable("Sardana"), instance, *orb_endpoint_arguments()],
                               suite.environment())
        wait_for(lambda: answering(process), timeout, f"Sardana {instance}", interval=0.2)
    pool = tango.DeviceProxy(suite.device_url(devices["Pool"]))
    pool.set_timeout_millis(30000)
    channels, motors, triggers = create_elements(pool, deployment)
    limit_motors(pool, deployment, suite.device_url)
    continuous = create_continuous_groups(pool, deployment, channels, triggers)
    groups = create_step_groups(pool, channels)
    macroserver = tango.DeviceProxy(suite.device_url(devices["MacroServer"]))
    environment = set_macro_environment(macroserver, macro_environment(deployment, groups, suite.event_bus))
    return SardanaDevices(instance, devices["Pool"], devices["MacroServer"], devices["Door"], channels, motors,
                          triggers, continuous, groups, environment)


def step_group_name(channel: str) -> str:
    return f"mg_{channel}"


def create_step_groups(pool: tango.DeviceProxy, channels: dict[str, str]) -> dict[str, str]:
    """A measurement group ``mg_<channel>`` per photonflow channel for ct and step scans, with
    value references on: each point records where its frame is in photonflow's file (Sardana's
    own default, values, copies every frame into its scan file as float64)."""
    groups = {}
    for channel in channels:
        name = step_group_name(channel)
        _group(pool, name, channel, {"value_ref_enabled": True})
        groups[name] = channel
    return groups


def _group(pool: tango.DeviceProxy, name: str, channel: str, channel_settings: dict,
           controller_settings: dict | None = None) -> None:
    """Create measurement group ``name`` of ``channel`` unless it exists, then set
    ``channel_settings`` on its channels and ``controller_settings`` on its controllers."""
    elements = _elements(pool)
    if name not in elements:
        pool.CreateMeasurementGroup([name, channel])
        wait_for(lambda: name in _existing(pool), 10, f"the measurement group {name}", interval=0.1)
        elements = _elements(pool)
    group = tango.DeviceProxy(elements[name]["full_name"])
    configuration = json.loads(group.read_attribute("Configuration").value)
    for controller in configuration["controllers"].values():
        controller.update(controller_settings or {})
        for settings in controller["channels"].values():
            settings.update(channel_settings)
    group.write_attribute("Configuration", json.dumps(configuration))


# macro environment variable -> the Tango class of the deployment's device it names
MACRO_DEVICES = {
    "PhotonflowController": "PhotonflowController",
    "PhotonflowDataManager": "PhotonflowDataManager",
    "PhotonflowStandardizer": "PhotonflowStandardizer",
}


def macro_environment(deployment: Deployment, groups: dict[str, str], event_bus: str = "") -> dict[str, str]:
    """What photonflow's macros and Sardana's scans need in the MacroServer's environment, from the
    deployment (not the demo's names): its Controller, DataManager, Standardizer, the simulated
    beamline's prefix (its shutter's domain/family), the first step-scan measurement group and, with
    a Redis event bus, the blissdata recorder (every scan a blissdata scan, on that server)."""
    first = {}
    for server in deployment.servers:
        for device in server.devices:
            first.setdefault(device.tango_class, device.name)
    environment = {variable: first[tango_class] for variable, tango_class in MACRO_DEVICES.items()
                   if tango_class in first}
    if "SimulatedShutter" in first:
        environment["PhotonflowBeamline"] = first["SimulatedShutter"].rsplit("/", 1)[0]
    if groups:
        environment["ActiveMntGrp"] = next(iter(groups))
    if blissdata_url(event_bus):
        environment["DataRecorder"] = BLISSDATA_RECORDER
    return environment


def set_macro_environment(macroserver: tango.DeviceProxy, wanted: dict[str, str]) -> dict[str, str]:
    """Put ``wanted`` into the MacroServer's environment, as spock's senv does; an ActiveMntGrp or
    DataRecorder the scientist chose already is kept. Returns the environment photonflow's variables
    now have."""
    from taurus.core.util.codecs import CodecFactory

    codec = CodecFactory().getCodec("pickle")
    current = codec.decode(macroserver.read_attribute("Environment").value)[1].get("new", {})
    wanted = {**wanted, **{name: current[name] for name in ("ActiveMntGrp", "DataRecorder") if current.get(name)}}
    macroserver.write_attribute("Environment", codec.encode(("", {"new": wanted})))
    return wanted


def _elements(pool: tango.DeviceProxy) -> dict[str, dict]:
    """The Pool's elements by name (each with its ``full_name``, ``type``...)."""
    _, data = pool.read_attribute("Elements").value  # DevEncoded: ("json", text)
    return {element["name"]: element for element in json.loads(data)["new"]}


def _existing(pool: tango.DeviceProxy) -> set[str]:
    return set(_elements(pool))


def create_elements(pool: tango.DeviceProxy, deployment: Deployment
                    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """A ``PhotonflowTwoDController`` and its channel ``<name>`` per photonflow Controller
    (``pf_<member>``), a ``PhotonflowMotorController`` with every SimulatedMotor as a motor named
    as its device's member (omega, samx, ...), a ``PhotonflowPositionCompareController`` with every
    SimulatedPositionCompare as a trigger/gate named as its member (omega_pcomp)."""
    existing = _existing(pool)
    devices = [d for s in deployment.servers for d in s.devices]
    channels = {f"pf_{element_name(d.name)}": d.name for d in devices if d.tango_class == "PhotonflowController"}
    motors = {element_name(d.name): d.name for d in devices if d.tango_class == "SimulatedMotor"}
    triggers = {element_name(d.name): d.name for d in devices if d.tango_class == "SimulatedPositionCompare"}
    for channel, controller in channels.items():
        if f"{channel}_ctrl" not in existing:
            pool.CreateController(["TwoDExpChannel", "PhotonflowTwoDCtrl.py", "PhotonflowTwoDController",
                                   f"{channel}_ctrl", "Controller", controller])
        if channel not in existing:
            pool.CreateElement(["TwoDExpChannel", f"{channel}_ctrl", "1", channel])
    if motors:
        if "pf_motor_ctrl" not in existing:
            pool.CreateController(["Motor", "PhotonflowMotorCtrl.py", "PhotonflowMotorController", "pf_motor_ctrl",
                                   "Devices", ",".join(motors.values())])
        for axis, motor in enumerate(motors, start=1):
            if motor not in existing:
                pool.CreateElement(["Motor", "pf_motor_ctrl", str(axis), motor])
    if triggers:
        if "pf_pcomp_ctrl" not in existing:
            pool.CreateController(["TriggerGate", "PhotonflowPositionCompareCtrl.py",
                                   "PhotonflowPositionCompareController", "pf_pcomp_ctrl",
                                   "Devices", ",".join(triggers.values())])
        for axis, trigger in enumerate(triggers, start=1):
            if trigger not in existing:
                pool.CreateElement(["TriggerGate", "pf_pcomp_ctrl", str(axis), trigger])
    deadline = time.monotonic() + 10
    wanted = set(channels) | set(motors) | set(triggers)
    while not wanted <= _existing(pool) and time.monotonic() < deadline:
        time.sleep(0.1)
    return channels, motors, triggers


def limit_motors(pool: tango.DeviceProxy, deployment: Deployment, url=lambda name: name) -> None:
    """Each SimulatedMotor's limits as its Sardana motor's attribute ranges, where Sardana's scans
    look for them: Position within the soft limits, Velocity up to ``MaximumVelocity`` (a
    continuous scan faster than that is refused before anything moves; fast moves go at it)."""
    elements = _elements(pool)
    for device in (d for s in deployment.servers for d in s.devices if d.tango_class == "SimulatedMotor"):
        name = element_name(device.name)
        if name not in elements:
            continue
        motor = tango.DeviceProxy(url(device.name))
        ranges = {"Position": tuple(a.value for a in motor.read_attributes(["SoftLimitLow", "SoftLimitHigh"]))}
        try:
            ranges["Velocity"] = (0.0, motor.read_attribute("MaximumVelocity").value)
        except tango.DevFailed:  # a SimulatedMotor without a maximum velocity: no range to give
            pass
        element = tango.DeviceProxy(elements[name]["full_name"])
        for attribute, (low, high) in ranges.items():
            config = element.get_attribute_config(attribute)
            if math.isfinite(low):
                config.min_value = repr(float(low))
            if math.isfinite(high):
                config.max_value = repr(float(high))
            element.set_attribute_config(config)


def continuous_group_name(channel: str, axis: str) -> str:
    return f"mg_{channel}_{axis}"


def create_continuous_groups(pool: tango.DeviceProxy, deployment: Deployment, channels: dict[str, str],
                             triggers: dict[str, str]) -> dict[str, dict[str, str]]:
    """A measurement group ``mg_<channel>_<axis>`` per photonflow channel and position-compare:
    the channel (value references on), synchronised by the position-compare's trigger/gate
    (hardware trigger: photonflow's trigger mode external), so that ``ascanct <axis> ...`` with it
    takes one frame per position the axis crosses."""
    motors_of = {d.name: d.properties.get("Motor", [""])[0] for s in deployment.servers for d in s.devices}
    elements = _elements(pool)
    groups = {}
    for trigger, device in triggers.items():
        axis = element_name(motors_of.get(device, "")) or trigger
        for channel in channels:
            name = continuous_group_name(channel, axis)
            _group(pool, name, channel, {"value_ref_enabled": True},
                   {"synchronizer": elements[trigger]["full_name"], "synchronization": HARDWARE_TRIGGER})
            groups[name] = {"channel": channel, "motor": axis, "trigger": trigger}
    return groups


def usage(sardana: SardanaDevices, tango_host: str, event_bus: str = "") -> str:
    motor = next(iter(sardana.motors), "omega")
    blissdata = blissdata_url(event_bus) or "redis://<host>:<port>"
    continuous = "".join(
        f"  Door> senv ActiveMntGrp {group} ; ascanct {scan['motor']} 0 18 180 0.01    "
        f"(hardware-synchronised by {scan['trigger']})\n"
        for group, scan in sardana.continuous.items())
    environment = " ".join(f"{name}={value}" for name, value in sardana.environment.items())
    return (
        f"Sardana '{sardana.instance}' is up: Pool {sardana.pool}, MacroServer {sardana.macroserver}, "
        f"Door {sardana.door}\n"
        f"  environment set: {environment}\n"
        f"  measurement groups (value references on): {', '.join(sardana.groups) or 'none'}\n"
        f"  export TANGO_HOST={tango_host}\n"
        f"  {executable('spock')} --profile=photonflow            (answer the Door question with {sardana.door})\n"
        f"  Door> senv ScanDir /tmp/scans ; senv ScanFile scan.h5 ; senv ScanRecorder {SCAN_RECORDER}\n"
        f"  (every scan is also a blissdata scan on {blissdata}: DataRecorder {BLISSDATA_RECORDER}; "
        "senv BlissdataURL redis://host:port for another Redis)\n"
        f"  Door> ct 0.1 ; ascan {motor} 0 10 20 0.1 ; pf_set_sample mx0001 ceo2 ; pf_darks 10 0.1\n"
        f"{continuous}"
        f"  channels {', '.join(sardana.channels)}; motors {', '.join(sardana.motors)}"
    )
