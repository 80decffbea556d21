"""Every imaging deployment takes the tomography structure: a Standardizer writing NXtomo, a
DataManager to run the structure, and a simulated camera that follows what the structure moves
(the shutter for the darks, samx for the flats, omega for the projections), with samx's `out`
taking the phantom out of that camera's field of view."""

from __future__ import annotations

import pytest

from photonflow.datamanager.structure import load_structure
from photonflow.deployment import load_deployment_file
from photonflow.drivers.tucam import MODELS as TUCSEN_MODELS
from photonflow.simulators.andor_sdk3 import MODELS as ANDOR_MODELS
from photonflow.simulators.phantom import Phantom
from tests.helpers.paths import REPOSITORY

CONFIG = REPOSITORY / "config"
STRUCTURE = load_structure(CONFIG / "structures" / "tomography.yaml")


def camera_geometry(acquirer) -> tuple[tuple[int, int], float]:
    """The frame shape and pixel size (m) the deployment's simulated camera gives."""
    properties = {name: values[0] if len(values) == 1 else values for name, values in acquirer.properties.items()}
    if acquirer.tango_class == "AndorAcquirer":
        model, binning = ANDOR_MODELS[properties["Simulation"]], int(properties.get("Binning", 1))
        return (model.height // binning, model.width // binning), model.pixel_size * 1e-6 * binning
    model = TUCSEN_MODELS[properties["Simulation"]]
    _, _, width, height = (int(v) for v in properties.get("Roi", [0, 0, 0, 0]))
    return (height or model.height, width or model.width), model.pixel_size


@pytest.mark.parametrize("name", ["tomo", "zyla55", "dhyana95"])
def test_an_imaging_deployment_takes_a_tomography_with_a_camera_that_follows_what_it_moves(name):
    deployment = load_deployment_file(CONFIG / f"{name}.yaml", {})
    standardizer = deployment.device("PhotonflowStandardizer").properties
    assert standardizer["MappingFile"][0].endswith("/standard/tomo.yaml")
    prefix = standardizer["DevicePrefix"][0]
    assert deployment.device("PhotonflowDataManager").properties["Standardizer"] == [
        deployment.device("PhotonflowStandardizer").name]
    acquirer = next(d for s in deployment.servers for d in s.devices if d.tango_class.endswith("Acquirer"))
    _, flats, _ = STRUCTURE.nodes
    moved = {parameter: setting.setting for parameter, setting in STRUCTURE.beamline.items()}
    followed = {"BeamlineShutter": moved["shutter"], "BeamlineSampleMotor": moved["sample"],
                "BeamlineRotationMotor": moved["start_angle"]}
    devices = {d.name: d for s in deployment.servers for d in s.devices}
    for property_name, alias in followed.items():
        assert acquirer.properties[property_name] == [f"{prefix}/{alias}"]
        assert f"{prefix}/{alias}" in devices
    out = flats.beamline[moved["sample"]]
    low, high = (float(v) for v in devices[f"{prefix}/{moved['sample']}"].properties["SoftLimits"])
    assert low <= out <= high
    shape, pixel_size = camera_geometry(acquirer)
    phantom = Phantom.filling(shape[1] * pixel_size)
    for angle in (0.0, 45.0, 90.0, 135.0):
        assert phantom.line_integrals(angle, shape, pixel_size).max() > 0  # in: seen
        assert phantom.line_integrals(angle, shape, pixel_size, shift=out / 1000).max() == 0  # out: gone
