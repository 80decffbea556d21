"""Entry points of the Tango device servers (console scripts with the ``Photonflow`` prefix,
so Astor/Starter can start them and their names are unique at a facility). Each runs the
classes ``photonflow.servers.SERVERS`` lists for it; the database says which class each
device is.

Usage, as for any Tango server:  PhotonflowRecorder <instance> [-v4]
"""

from __future__ import annotations

import importlib
import logging

from tango.server import run

from photonflow.servers import SERVERS


def run_server(executable: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    classes = [
        getattr(importlib.import_module(module), tango_class) for tango_class, module in SERVERS[executable].items()
    ]
    run(classes)


def run_acquirer_server() -> None:
    run_server("PhotonflowAcquirer")


def run_recorder_server() -> None:
    from photonflow.allocator import reuse_frame_buffers

    reuse_frame_buffers()  # before any thread: see allocator.py
    run_server("PhotonflowRecorder")


def run_controller_server() -> None:
    run_server("PhotonflowController")


def run_standardizer_server() -> None:
    run_server("PhotonflowStandardizer")


def run_beamline_server() -> None:
    run_server("PhotonflowBeamline")


def run_datamanager_server() -> None:
    run_server("PhotonflowDataManager")


def run_analysis_server() -> None:
    run_server("PhotonflowAnalysis")
