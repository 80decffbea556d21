"""dsconfig both ways, against a real pytango-db database and the real dsconfig tools:
json2tango applies `photonflow config export --dsconfig` unchanged, and `photonflow config apply`
reads dsconfig JSON (tango2json's dumps, v1 and v2 nesting, classes, aliases, tango_host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tango

from tests.helpers.paths import DEMO_CONFIG

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def run(tango_host: str, *command: str) -> subprocess.CompletedProcess:
    """dsconfig's tools and photonflow's command, each as its own process."""
    return photonflow({"TANGO_HOST": tango_host, "PHOTONFLOW_DATA_ROOT": "/data/bl1", "PHOTONFLOW_VAR": "/tmp"},
                      *command)


def photonflow(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    """``command`` (a tool of this environment) with ``env`` over this process's environment, less
    its TANGO_HOST: the database is the one ``env`` or the file names."""
    inherited = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    return subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True,
                          env={**inherited, **env}, timeout=60)


@pytest.fixture(autouse=True)
def backups_in_the_tests_folder(monkeypatch, tmp_path):
    """json2tango keeps a dump of the database it changes in $TMPDIR: the test's folder, not /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A pytango-db database of this module's own; yields its TANGO_HOST."""
    from photonflow.clients.launcher import Suite

    directory = tmp_path_factory.mktemp("dsconfig_db")
    suite = Suite("", directory)
    suite.start_database(directory / "tango.db")
    try:
        yield suite.tango_host
    finally:
        suite.stop()


def db(tango_host: str) -> tango.Database:
    host, port = tango_host.rsplit(":", 1)
    return tango.Database(host, int(port))


def test_json2tango_applies_the_export_and_photonflow_then_sees_nothing_to_change(database, tmp_path):
    exported = tmp_path / "demo.json"
    result = run(database, "photonflow", "config", "export", "--dsconfig", str(exported), "--config", str(DEMO_CONFIG))
    assert result.returncode == 0, result.stderr
    document = json.loads(exported.read_text())
    recorder = document["servers"]["PhotonflowRecorder"]["demo"]["PhotonflowRecorder"]["demo/photonflow/recorder"]
    assert recorder["properties"]["DataRoot"] == ["/data/bl1"]
    assert all(isinstance(v, list) and all(isinstance(x, str) for x in v)
               for server in document["servers"].values() for instance in server.values()
               for devices in instance.values() for device in devices.values()
               for v in device["properties"].values())

    from dsconfig.formatting import normalize_config, validate_json

    validate_json(normalize_config(document))  # dsconfig's own schema check (exits on failure)

    applied = run(database, "json2tango", "-w", str(exported))
    assert applied.returncode == 2, applied.stdout + applied.stderr  # dsconfig: CONFIG_APPLIED
    info = db(database).get_device_info("demo/photonflow/controller")
    assert (info.ds_full_name, info.class_name) == ("PhotonflowController/demo", "PhotonflowController")
    assert list(db(database).get_device_property("demo/photonflow/recorder", "DataRoot")["DataRoot"]) == ["/data/bl1"]

    again = run(database, "photonflow", "config", "apply", str(DEMO_CONFIG), "--dry-run")
    assert again.returncode == 0, again.stderr
    # all json2tango wrote is what photonflow would; only the starter: section has no place in dsconfig
    changes = again.stdout.splitlines()[1:]
    assert "would change 6 item(s)" in again.stdout and len(changes) == 6
    assert all(line.startswith("  set Starter info of Photonflow") for line in changes), changes
    assert run(database, "json2tango", str(exported)).returncode == 0  # dsconfig: no changes needed


def test_photonflow_applies_what_tango2json_dumps(database, tmp_path):
    first = run(database, "photonflow", "config", "apply", str(DEMO_CONFIG))
    assert first.returncode == 0, first.stderr
    dumped = run(database, "tango2json", "server:Photonflow*")  # tango2json's wildcard is Tango's "*"
    assert dumped.returncode == 0, dumped.stderr
    dump = tmp_path / "dump.json"
    dump.write_text(dumped.stdout)
    document = json.loads(dumped.stdout)
    assert document["tango_host"]
    assert sorted(document["servers"]) == sorted({server.executable for server in demo_servers()})
    again = run(database, "photonflow", "config", "apply", str(dump), "--dry-run")
    assert again.returncode == 0, again.stderr
    assert f"{dump}: would change 0 item(s)" in again.stdout


def demo_servers():
    from photonflow.deployment import load_deployment_file

    return load_deployment_file(DEMO_CONFIG, {"PHOTONFLOW_DATA_ROOT": "/data/bl1"}).servers


def without_volatile(document: dict) -> dict:
    return {key: value for key, value in document.items() if key not in ("_date", "tango_host")}


def test_a_running_suites_dump_with_attribute_properties_applies_back_unchanged_and_elsewhere_the_same(
        running_suite, database, tmp_path):
    """What an operator set on a running suite (a label, a unit, an event threshold: attribute
    properties in the database) survives tango2json -> photonflow config apply, both onto the same
    database (0 changes) and onto another one (which then dumps the same)."""
    recorder = tango.DeviceProxy(running_suite.recorder)
    original = recorder.get_attribute_config("QueueDepth")
    changed = recorder.get_attribute_config("QueueDepth")
    changed.label, changed.unit = "Frames waiting", "frame"
    changed.events.arch_event.archive_abs_change = "5"
    recorder.set_attribute_config(changed)
    try:
        dumped = run(running_suite.tango_host, "tango2json", "-c", "server:Photonflow*")
        assert dumped.returncode == 0, dumped.stderr
        dump_path = tmp_path / "running.json"
        dump_path.write_text(dumped.stdout)
        document = json.loads(dumped.stdout)
        name = running_suite.deployment.device("PhotonflowRecorder").name
        instance = next(server.instance for server in running_suite.deployment.servers if server.executable ==
                        "PhotonflowRecorder")
        stored = document["servers"]["PhotonflowRecorder"][instance]["PhotonflowRecorder"][name]
        assert stored["attribute_properties"]["QueueDepth"] == {
            "label": ["Frames waiting"], "unit": ["frame"], "archive_abs_change": ["-5", "5"]}  # Tango stores both bounds

        same = run(running_suite.tango_host, "photonflow", "config", "apply", str(dump_path))
        assert same.returncode == 0, same.stderr
        assert f"{dump_path}: changed 0 item(s)" in same.stdout

        elsewhere = run(database, "photonflow", "config", "apply", str(dump_path))
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert f"set {name}/QueueDepth->unit: unset -> frame" in elsewhere.stdout
        redumped = run(database, "tango2json", "-c", "server:Photonflow*")
        assert without_volatile(json.loads(redumped.stdout)) == without_volatile(document)
    finally:
        recorder.set_attribute_config(original)


def test_a_prune_shows_then_deletes_what_the_file_no_longer_has(database, tmp_path):
    config = tmp_path / "prune.json"
    servers = {"PhotonflowRecorder": {"prn1": {"PhotonflowRecorder": {
        "prn/pf/recorder": {"properties": {"DataRoot": ["/data/prn"], "FanOutMode": ["off"]}},
        "prn/pf/recorder2": {"properties": {"DataRoot": ["/data/prn2"]}}}}}}
    config.write_text(json.dumps({"servers": servers}))
    assert run(database, "photonflow", "config", "apply", str(config)).returncode == 0
    db(database).put_device_property("prn/pf/recorder", {"polled_attr": ["state", "3000"]})  # Tango's own
    del servers["PhotonflowRecorder"]["prn1"]["PhotonflowRecorder"]["prn/pf/recorder2"]
    del servers["PhotonflowRecorder"]["prn1"]["PhotonflowRecorder"]["prn/pf/recorder"]["properties"]["FanOutMode"]
    config.write_text(json.dumps({"servers": servers}))

    assert "would change 0 item(s)" in run(database, "photonflow", "config", "apply", str(config), "--dry-run").stdout
    preview = run(database, "photonflow", "config", "apply", str(config), "--dry-run", "--prune")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines()[1:] == [
        "  delete device prn/pf/recorder2 (class PhotonflowRecorder) from server PhotonflowRecorder/prn1",
        "  delete prn/pf/recorder->FanOutMode (was off)",
    ]
    assert "FanOutMode" in db(database).get_device_property_list("prn/pf/recorder", "*")  # a dry run writes nothing

    pruned = run(database, "photonflow", "config", "apply", str(config), "--prune")
    assert "changed 2 item(s)" in pruned.stdout, pruned.stdout + pruned.stderr
    assert list(db(database).get_device_property_list("prn/pf/recorder", "*")) == ["DataRoot", "polled_attr"]
    with pytest.raises(tango.DevFailed):
        db(database).get_device_info("prn/pf/recorder2")
    # dsconfig's own tool agrees there is nothing left to remove
    assert run(database, "json2tango", str(config)).returncode == 0


V1_WITH_CLASSES = {
    "_title": "a hand-written dsconfig file",
    "servers": {
        "PhotonflowRecorder/dsc1": {  # v1 nesting
            "PhotonflowRecorder": {
                "dsc/pf/recorder": {"alias": "dsc_recorder",
                                    "properties": {"DataRoot": ["/data/dsc"], "FanOutMode": ["off"]}}}},
        "PhotonflowController": {  # v2 nesting
            "dsc1": {"PhotonflowController": {
                "dsc/pf/controller": {"properties": {"Acquirer": ["dsc/pf/acq"], "Recorder": ["dsc/pf/recorder"]}}}}},
    },
    "classes": {"PhotonflowRecorder": {"properties": {"QueueFrames": ["500"]}}},
}


def test_config_apply_reads_v1_and_v2_nesting_classes_and_aliases(database, tmp_path):
    config = tmp_path / "dsc.json"
    config.write_text(json.dumps({**V1_WITH_CLASSES, "tango_host": database}))
    result = photonflow({"PHOTONFLOW_VAR": str(tmp_path)}, "photonflow", "config", "apply", str(config))  # tango_host says where
    assert result.returncode == 0, result.stderr
    assert "add device dsc/pf/recorder (class PhotonflowRecorder) to server PhotonflowRecorder/dsc1" in result.stdout
    assert "set alias of dsc/pf/recorder: none -> dsc_recorder" in result.stdout
    assert "set class PhotonflowRecorder->QueueFrames: unset -> 500" in result.stdout
    database_ = db(database)
    assert database_.get_device_info("dsc/pf/controller").ds_full_name == "PhotonflowController/dsc1"
    assert database_.get_device_from_alias("dsc_recorder") == "dsc/pf/recorder"
    assert list(database_.get_class_property("PhotonflowRecorder", "QueueFrames")["QueueFrames"]) == ["500"]
    assert "changed 0 item(s)" in run(database, "photonflow", "config", "apply", str(config)).stdout


def test_a_file_that_fails_the_schema_lists_every_error_and_writes_nothing(database, tmp_path):
    broken = json.loads(json.dumps(V1_WITH_CLASSES).replace("dsc", "dsb"))  # names of its own
    recorder = broken["servers"]["PhotonflowRecorder/dsb1"]["PhotonflowRecorder"]["dsb/pf/recorder"]
    recorder["properties"]["DataRoot"] = "/data/dsb"  # not a list
    recorder["properties"]["QueueFrames"] = [500]  # not strings
    broken["servers"]["PhotonflowController"]["dsb1"]["PhotonflowController"]["not-a-device"] = {}
    broken["servers"]["Photonflow Recorder"] = {}
    broken["devices"] = {}
    config = tmp_path / "broken.json"
    config.write_text(json.dumps(broken, indent=1))
    result = run(database, "photonflow", "config", "apply", str(config))
    assert result.returncode == 2
    assert f"{config}: 5 problem(s), nothing written" in result.stderr
    for line in (
        "$.devices: unknown top-level key",
        '$.servers["PhotonflowRecorder/dsb1"].PhotonflowRecorder["dsb/pf/recorder"].properties.DataRoot: '
        "'/data/dsb' is not of type 'array'",
        '$.servers["PhotonflowRecorder/dsb1"].PhotonflowRecorder["dsb/pf/recorder"].properties.QueueFrames[0]: '
        "500 is not of type 'string'",
        "$.servers.PhotonflowController.dsb1.PhotonflowController: 'not-a-device' does not match any of the regexes",
        "$.servers: 'Photonflow Recorder' does not match any of the regexes",
    ):
        assert line in result.stderr
    with pytest.raises(tango.DevFailed):
        db(database).get_device_info("dsb/pf/controller")
