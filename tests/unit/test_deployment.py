"""Deployment YAML: parsed into servers/devices/properties, errors name file, line and key."""

import pytest

from photonflow.deployment import (
    DatabaseView,
    SimulatorSpec,
    load_deployment,
    load_deployment_file,
    plan_changes,
    simulator_environment,
    with_instance,
)
from photonflow.errors import ConfigurationError
from tests.helpers.paths import DEMO_CONFIG

GOOD = """\
servers:
  PhotonflowRecorder/bl1:
    PhotonflowRecorder:
      bl1/pf/recorder:
        properties:
          DataRoot: ${ROOT}
          Extra: [a, b]
"""


def test_the_demo_configuration_is_valid():
    deployment = load_deployment_file(DEMO_CONFIG, {"PHOTONFLOW_DATA_ROOT": "/data"})
    assert deployment.device("PhotonflowRecorder").properties["DataRoot"] == ["/data"]
    controller = deployment.device("PhotonflowController")
    assert controller.properties["Acquirer"] == [deployment.device("SimulatorAcquirer").name]


def test_properties_become_string_lists_with_the_environment_expanded():
    deployment = load_deployment(GOOD, "bl1.yaml", {"ROOT": "/gpfs/bl1"})
    (server,) = deployment.servers
    assert server.name == "PhotonflowRecorder/bl1"
    assert server.devices[0].properties == {"DataRoot": ["/gpfs/bl1"], "Extra": ["a", "b"]}


def test_a_default_applies_when_the_variable_is_unset():
    deployment = load_deployment(GOOD.replace("${ROOT}", "${ROOT:-/tmp/data}"), "bl1.yaml", {})
    assert deployment.servers[0].devices[0].properties["DataRoot"] == ["/tmp/data"]


@pytest.mark.parametrize(
    "text, complaint",
    [
        (GOOD.replace("PhotonflowRecorder:\n", "RecorderX:\n"), "bl1.yaml:3: PhotonflowRecorder/bl1: unknown class 'RecorderX'"),
        (GOOD.replace("PhotonflowRecorder/bl1", "Nonsense/bl1"), "bl1.yaml:2: servers: unknown server 'Nonsense'"),
        (GOOD.replace("bl1/pf/recorder", "not-a-device-name"), "bl1.yaml:4: PhotonflowRecorder: 'not-a-device-name' is not a domain/family/member"),
        (GOOD.replace("properties:", "propertys:"), "bl1.yaml:5: bl1/pf/recorder: unknown key 'propertys'"),
        (GOOD + "  : [\n", "bl1.yaml:8: not valid YAML"),
        ("servers:\n  - a\n", "bl1.yaml:2: servers must be a mapping"),
        ("", "the file is empty"),
        ("server:\n  {}\n", "bl1.yaml:1: unknown top-level key 'server'"),
        (GOOD + "demo:\n  frame: 10\n", "bl1.yaml:9: demo: unknown key 'frame'; expected frames, exposure, period"),
        (GOOD + "demo:\n  period: -1\n", "bl1.yaml:9: demo period: expected a positive number, got '-1'"),
        (GOOD + "demo:\n  frames: 1.5\n", "bl1.yaml:9: demo frames: expected a positive number, got '1.5'"),
        (GOOD, "bl1.yaml:6: bl1/pf/recorder->DataRoot: environment variable ROOT is not set"),
        ("event_bus: http://bus:80\n" + GOOD, "bl1.yaml:1: event_bus: event bus URL 'http://bus:80': unsupported scheme 'http'"),
        (GOOD + "event_bus: kafka://broker:9092\n", "bl1.yaml:8: event_bus: event bus URL 'kafka://broker:9092' is malformed; expected kafka://host:port[,host:port]/topic"),
        (GOOD + "event_bus: [redis://a:1]\n", "bl1.yaml:8: event_bus: expected a single value"),
        (GOOD.replace("${ROOT}", "/x") + "starter:\n  servers:\n    PhotonflowRecorder/bl2: 1\n",
         "bl1.yaml:10: starter: 'PhotonflowRecorder/bl2' is not a server of this deployment"),
        (GOOD.replace("${ROOT}", "/x") + "starter:\n  servers:\n    PhotonflowRecorder/bl1: {level: high}\n",
         "bl1.yaml:10: starter PhotonflowRecorder/bl1: the level must be a whole number 0-200, got 'high'"),
        (GOOD.replace("${ROOT}", "/x") + "starter:\n  hosts: a\n",
         "bl1.yaml:9: starter: unknown key 'hosts'; expected one of host, servers"),
        (GOOD.replace("${ROOT}", "/x") + "classes:\n  Nope: {}\n", "bl1.yaml:9: classes: unknown class 'Nope'"),
        (GOOD + "eventbus: embedded\n", "bl1.yaml:8: unknown top-level key 'eventbus'; expected 'servers' (and 'classes', 'starter', 'simulators', 'demo', 'event_bus')"),
    ],
)
def test_errors_name_the_line_and_key(text, complaint):
    with pytest.raises(ConfigurationError) as caught:
        load_deployment(text, "bl1.yaml", {})
    assert complaint in str(caught.value)


@pytest.mark.parametrize("setting, event_bus", [
    ("", "embedded"),
    ("event_bus: embedded\n", "embedded"),
    ("event_bus: redis://redis.bl1.example:6379\n", "redis://redis.bl1.example:6379"),
    ("event_bus: kafka://kafka1:9092,kafka2:9092/experiments\n", "kafka://kafka1:9092,kafka2:9092/experiments"),
    ("event_bus: ${BUS}\n", "redis://bus:6380"),
])
def test_the_event_bus_is_embedded_unless_a_url_says_otherwise(setting, event_bus):
    text = setting + GOOD
    assert load_deployment(text, "bl1.yaml", {"ROOT": "/x", "BUS": "redis://bus:6380"}).event_bus == event_bus
    assert load_deployment(text, "bl1.yaml", {"BUS": "redis://bus:6380"}, simulators_only=True).event_bus == event_bus


def test_a_device_defined_twice_is_refused():
    text = GOOD + GOOD.split("\n", 1)[1].replace("PhotonflowRecorder/bl1", "PhotonflowRecorder/bl2")
    with pytest.raises(ConfigurationError, match="device bl1/pf/recorder is already defined"):
        load_deployment(text, "bl1.yaml", {"ROOT": "/x"})


def test_plan_is_empty_when_the_database_already_matches():
    deployment = load_deployment(GOOD, "bl1.yaml", {"ROOT": "/x"})
    current = DatabaseView(
        device_servers={"bl1/pf/recorder": ("PhotonflowRecorder/bl1", "PhotonflowRecorder")},
        properties={"bl1/pf/recorder": {"DataRoot": ["/x"], "Extra": ["a", "b"]}},
    )
    assert plan_changes(deployment, current) == []


def test_plan_lists_only_what_differs():
    deployment = load_deployment(GOOD, "bl1.yaml", {"ROOT": "/new"})
    current = DatabaseView(
        device_servers={"bl1/pf/recorder": ("PhotonflowRecorder/bl1", "PhotonflowRecorder")},
        properties={"bl1/pf/recorder": {"DataRoot": ["/old"], "Extra": ["a", "b"]}},
    )
    (change,) = plan_changes(deployment, current)
    assert change.describe() == "set bl1/pf/recorder->DataRoot: /old -> /new"


def test_plan_adds_a_device_registered_elsewhere():
    deployment = load_deployment(GOOD, "bl1.yaml", {"ROOT": "/x"})
    current = DatabaseView(device_servers={"bl1/pf/recorder": ("PhotonflowRecorder/old", "PhotonflowRecorder")})
    changes = plan_changes(deployment, current)
    assert changes[0].describe() == "add device bl1/pf/recorder (class PhotonflowRecorder) to server PhotonflowRecorder/bl1"


WITH_ATTRIBUTES = GOOD + """\
        attribute_properties:
          QueueDepth: {unit: frames, rel_change: "0.1"}
          Comment: {__value: []}
"""


def test_attribute_properties_are_read_and_planned_and_an_empty_value_deletes():
    deployment = load_deployment(WITH_ATTRIBUTES, "bl1.yaml", {"ROOT": "/x"})
    device = deployment.device("PhotonflowRecorder")
    assert device.attribute_properties == {"QueueDepth": {"unit": ["frames"], "rel_change": ["0.1"]},
                                           "Comment": {"__value": []}}
    current = DatabaseView(
        device_servers={"bl1/pf/recorder": ("PhotonflowRecorder/bl1", "PhotonflowRecorder")},
        properties={"bl1/pf/recorder": {"DataRoot": ["/x"], "Extra": ["a", "b"]}},
        attribute_properties={"bl1/pf/recorder": {"QueueDepth": {"unit": ["frames"]}, "Comment": {"__value": ["hi"]}}},
    )
    assert [change.describe() for change in plan_changes(deployment, current)] == [
        "set bl1/pf/recorder/QueueDepth->rel_change: unset -> 0.1",
        "delete bl1/pf/recorder/Comment->__value (was hi)",
    ]


def test_a_prune_deletes_devices_and_properties_the_file_no_longer_has_but_not_tangos_own():
    deployment = load_deployment(GOOD, "bl1.yaml", {"ROOT": "/x"})
    stored = {"DataRoot": ["/x"], "Extra": ["a", "b"], "Old": ["1"], "polled_attr": ["state", "3000"],
              "__SubDevices": ["bl1/pf/acq"]}
    current = DatabaseView(
        device_servers={"bl1/pf/recorder": ("PhotonflowRecorder/bl1", "PhotonflowRecorder")},
        properties={"bl1/pf/recorder": stored},
        server_devices={"photonflowrecorder/bl1": [("bl1/pf/recorder", "PhotonflowRecorder"),
                                                   ("bl1/pf/recorder2", "PhotonflowRecorder")]},
        property_names={"bl1/pf/recorder": list(stored)},
    )
    assert plan_changes(deployment, current) == []  # no prune: what the file does not name stays
    assert [change.describe() for change in plan_changes(deployment, current, prune=True)] == [
        "delete device bl1/pf/recorder2 (class PhotonflowRecorder) from server PhotonflowRecorder/bl1",
        "delete bl1/pf/recorder->Old (was 1)",
    ]


def test_an_unknown_device_section_is_named():
    text = GOOD + "        attributes: {}\n"
    with pytest.raises(ConfigurationError, match="unknown key 'attributes'; expected 'properties', "
                                                  "'attribute_properties' or 'alias'"):
        load_deployment(text, "bl1.yaml", {"ROOT": "/x"})


EIGER = """
simulators:
  dcu:
    command: [photonflow-dectris-dcu, --model, eiger2_4m]
servers:
  PhotonflowAcquirer/eiger:
    DectrisAcquirer:
      bl/eiger/acquirer:
        properties:
          DcuUrl: ${PHOTONFLOW_SIM_DCU_SIMPLON}
"""


def test_simulators_are_read_first_without_the_variables_they_will_define():
    simulators = load_deployment(EIGER, "eiger.yaml", {}, simulators_only=True)
    assert simulators.servers == ()
    assert simulators.simulators == (SimulatorSpec("dcu", ("photonflow-dectris-dcu", "--model", "eiger2_4m")),)
    with pytest.raises(ConfigurationError, match="environment variable PHOTONFLOW_SIM_DCU_SIMPLON is not set"):
        load_deployment(EIGER, "eiger.yaml", {})
    variables = simulator_environment("dcu", {"simplon": "http://127.0.0.1:4242", "stream": "tcp://127.0.0.1:5"})
    assert variables == {
        "PHOTONFLOW_SIM_DCU_SIMPLON": "http://127.0.0.1:4242",
        "PHOTONFLOW_SIM_DCU_STREAM": "tcp://127.0.0.1:5",
    }
    deployment = load_deployment(EIGER, "eiger.yaml", variables)
    assert deployment.device("DectrisAcquirer").properties["DcuUrl"] == ["http://127.0.0.1:4242"]


@pytest.mark.parametrize("text, complaint", [
    ("simulators:\n  dcu:\n    program: x\nservers: {}\n", "eiger.yaml:2: dcu: expected exactly the key 'command'"),
    ("simulators:\n  dcu:\n    command: []\nservers: {}\n", "eiger.yaml:3: dcu: 'command' must be a non-empty list"),
    ("simulators:\n  a b:\n    command: [x]\nservers: {}\n", "eiger.yaml:2: simulators: 'a b' must be a plain name"),
])
def test_a_malformed_simulator_is_refused_naming_the_line(text, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        load_deployment(text, "eiger.yaml", {}, simulators_only=True)


def test_the_eiger_configuration_is_valid():
    path = DEMO_CONFIG.parent / "eiger4m.yaml"
    assert load_deployment_file(path, {}, simulators_only=True).simulators[0].command[0] == "photonflow-dectris-dcu"
    variables = {"PHOTONFLOW_SIM_DCU_SIMPLON": "http://h:1", "PHOTONFLOW_SIM_DCU_STREAM": ""}
    deployment = load_deployment_file(path, variables)
    assert deployment.device("DectrisAcquirer").properties["DcuUrl"] == ["http://h:1"]


class _AnyVariable(dict):
    """An environment in which every variable is set (to a placeholder)."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return "placeholder"


@pytest.mark.parametrize("path", sorted(DEMO_CONFIG.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_configuration_is_valid(path):
    deployment = load_deployment_file(path, _AnyVariable())
    assert deployment.device("PhotonflowController") and deployment.device("PhotonflowRecorder")
    assert deployment.demo.get("period", 1) >= deployment.demo.get("exposure", 0)


def test_a_detector_says_what_its_demo_acquires():
    deployment = load_deployment_file(DEMO_CONFIG.parent / "dhyana95.yaml", _AnyVariable())
    assert deployment.demo == {"frames": 90, "exposure": 0.01, "period": 0.025, "sample": "phantom"}  # a tomography
    assert load_deployment_file(DEMO_CONFIG, _AnyVariable()).demo == {
        "frames": 1000, "exposure": 0.001, "period": 0.002, "step": 0.1,  # a rotation scan, 0.1 deg per frame
        "sample": "CeO2"}  # the DataManager's Sample for the demo's experiment


def test_every_server_in_the_table_is_installed_and_every_class_exists():
    """One table names the servers and their classes: setup.cfg installs each server, and each
    class is defined where the table says (read from the source: no Tango needed)."""
    import configparser
    import re

    from photonflow.servers import SERVERS
    from tests.helpers.paths import REPOSITORY

    setup = configparser.ConfigParser()
    setup.read(REPOSITORY / "setup.cfg")
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].split("\n") if line)
    for executable, classes in SERVERS.items():
        assert scripts[executable].startswith("photonflow.devices.servers:run_"), executable
        for tango_class, module in classes.items():
            source = REPOSITORY / "devices" / (module.rsplit(".", 1)[1] + ".py")
            assert re.search(rf"^class {tango_class}\(", source.read_text(), re.M), (tango_class, module)


def test_an_instance_renames_every_server_and_its_starter_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("PHOTONFLOW_DATA_ROOT", str(tmp_path))
    deployment = load_deployment_file(DEMO_CONFIG)
    renamed = with_instance(deployment, "b2")
    assert [server.name for server in renamed.servers] == [f"{s.executable}/b2" for s in deployment.servers]
    assert [(entry.server, entry.level) for entry in renamed.starter] == [
        (entry.server.replace("/demo", "/b2"), entry.level) for entry in deployment.starter]
    # the devices are the same: each suite has a database of its own
    assert [s.devices for s in renamed.servers] == [s.devices for s in deployment.servers]


@pytest.mark.parametrize("instance, complaint", [
    ("b 2", "instance 'b 2': use letters, digits"),
    ("b1", "instance 'b1' would merge servers of this configuration into PhotonflowBeamline/b1"),
])
def test_an_instance_is_refused_when_it_is_malformed_or_would_merge_servers(instance, complaint):
    two_of_one_executable = load_deployment(
        "servers:\n"
        "  PhotonflowBeamline/ring:\n    SimulatedStorageRing:\n      x/beamline/ring: {}\n"
        "  PhotonflowBeamline/motors:\n    SimulatedMotor:\n      x/beamline/omega: {}\n")
    with pytest.raises(ConfigurationError, match=complaint):
        with_instance(two_of_one_executable, instance)



def test_recorders_copy_the_controllers_recorder_into_servers_of_their_own(monkeypatch, tmp_path):
    from photonflow.deployment import with_recorders

    monkeypatch.setenv("PHOTONFLOW_DATA_ROOT", str(tmp_path))
    deployment = load_deployment_file(DEMO_CONFIG)
    shared = with_recorders(deployment, 3)
    assert shared.device("PhotonflowController").properties["Recorder"] == [
        "demo/photonflow/recorder", "demo/photonflow/recorder_2", "demo/photonflow/recorder_3"]
    assert shared.device("SimulatorAcquirer").properties["StreamOutputs"] == ["3"]
    copies = [s for s in shared.servers if s.executable == "PhotonflowRecorder"]
    assert [s.name for s in copies] == ["PhotonflowRecorder/demo", "PhotonflowRecorder/demo_r2",
                                        "PhotonflowRecorder/demo_r3"]
    original = deployment.device("PhotonflowRecorder")
    assert all(s.devices[0].properties == original.properties for s in copies)  # same data root, same settings
    levels = {entry.server: entry.level for entry in shared.starter}
    assert levels["PhotonflowRecorder/demo_r3"] == levels["PhotonflowRecorder/demo"]
    assert with_recorders(deployment, 1) == deployment


@pytest.mark.parametrize("count", [0, 17])
def test_a_number_of_recorders_out_of_range_is_refused(count):
    from photonflow.deployment import with_recorders

    with pytest.raises(ConfigurationError, match=f"recorders: {count}; give 1 to 16"):
        with_recorders(load_deployment_file(DEMO_CONFIG), count)


def test_live_analysis_puts_a_worker_beside_each_recorder_dealt_every_frame(monkeypatch, tmp_path):
    from photonflow.deployment import with_live_analysis, with_recorders

    monkeypatch.setenv("PHOTONFLOW_DATA_ROOT", str(tmp_path))
    analysed = with_live_analysis(with_recorders(load_deployment_file(DEMO_CONFIG), 2), {"AzimuthalPoints": ["300"]})
    workers = {s.name: s.devices[0] for s in analysed.servers if s.executable == "PhotonflowAnalysis"}
    assert {name: (w.name, w.properties["Recorder"]) for name, w in workers.items()} == {
        "PhotonflowAnalysis/demo": ("demo/photonflow/recorder_analysis", ["demo/photonflow/recorder"]),
        "PhotonflowAnalysis/demo_r2": ("demo/photonflow/recorder_2_analysis", ["demo/photonflow/recorder_2"])}
    assert all(w.properties["AzimuthalPoints"] == ["300"] for w in workers.values())
    recorders = [d for s in analysed.servers for d in s.devices if d.tango_class == "PhotonflowRecorder"]
    # the demo's viewers' fan-out (pub, every 10th frame) gives way to one dealing every frame to the worker
    assert all((r.properties["FanOutMode"], r.properties["FanOutEvery"]) == (["push"], ["1"]) for r in recorders)
    levels = {entry.server: (entry.host, entry.level) for entry in analysed.starter}
    assert levels["PhotonflowAnalysis/demo_r2"] == levels["PhotonflowRecorder/demo_r2"]
    assert with_live_analysis(analysed) == analysed  # a deployment with its own workers is left as it is
