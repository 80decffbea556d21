"""The one table of photonflow's device servers: each executable and the Tango classes it runs,
with the module that defines each class. The deployment validator, the server entry points and
the tests all read it, so a new device class is one line here (and a new server one line more
in setup.cfg's console scripts, which a test checks). Names only: the core imports no device."""

SERVERS: dict[str, dict[str, str]] = {
    "PhotonflowAcquirer": {
        "SimulatorAcquirer": "photonflow.devices.simulator_acquirer",
        "DectrisAcquirer": "photonflow.devices.dectris_acquirer",
        "PilatusAcquirer": "photonflow.devices.pilatus_acquirer",
        "AndorAcquirer": "photonflow.devices.andor_acquirer",
        "TucsenAcquirer": "photonflow.devices.tucsen_acquirer",
    },
    "PhotonflowRecorder": {"PhotonflowRecorder": "photonflow.devices.recorder"},
    "PhotonflowController": {
        "PhotonflowController": "photonflow.devices.controller",
        "LimaCCDs": "photonflow.devices.lima",  # LImA's interface over a Controller of the same server
    },
    "PhotonflowStandardizer": {"PhotonflowStandardizer": "photonflow.devices.standardizer"},
    "PhotonflowDataManager": {"PhotonflowDataManager": "photonflow.devices.datamanager"},
    "PhotonflowAnalysis": {"PhotonflowAnalysis": "photonflow.devices.analysis"},
    "PhotonflowBeamline": {
        tango_class: "photonflow.devices.beamline"
        for tango_class in (
            "SimulatedMotor", "SimulatedMonochromator", "SimulatedShutter", "SimulatedStorageRing",
            "SimulatedSlits", "SimulatedAttenuator",
            "SimulatedPositionCompare",  # after the motors: it reads a motor this server runs
        )
    },
}
