"""Entry points of the Tango device servers (console scripts with the ``Photonflow`` prefix,
so Astor/Starter can start them and their names are unique at a facility).

Usage, as for any Tango server:  PhotonflowRecorder <instance> [-v4]
"""

from __future__ import annotations

import logging

from tango.server import run


def _run(classes) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(classes)


def run_acquirer_server() -> None:
    """Every Acquirer class in one server; the database says which class each device is."""
    from photonflow.devices.andor_acquirer import AndorAcquirer
    from photonflow.devices.dectris_acquirer import DectrisAcquirer
    from photonflow.devices.pilatus_acquirer import PilatusAcquirer
    from photonflow.devices.simulator_acquirer import SimulatorAcquirer
    from photonflow.devices.tucsen_acquirer import TucsenAcquirer

    _run((SimulatorAcquirer, DectrisAcquirer, PilatusAcquirer, AndorAcquirer, TucsenAcquirer))


def run_recorder_server() -> None:
    from photonflow.allocator import reuse_frame_buffers

    reuse_frame_buffers()  # before any thread: see allocator.py
    from photonflow.devices.recorder import PhotonflowRecorder

    _run((PhotonflowRecorder,))


def run_controller_server() -> None:
    from photonflow.devices.controller import PhotonflowController

    _run((PhotonflowController,))
