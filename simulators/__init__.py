"""Simulated hardware: models of detectors and beamline devices, so photonflow runs and is
tested without a beamline. Installed as ``photonflow.simulators``."""
