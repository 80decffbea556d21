"""The shipped PILATUS3 1M deployment (config/pilatus3.yaml) masks what its detector flags: the
simulated camserver writes -1 in the gaps between the ten modules and -2 at the pixels of its
bad-pixel map (its ``--bad-pixels``), and the Standardizer's NXmx has exactly those as its
pixel_mask (NeXus bits 1 gap, 2 dead), so DIALS and pyFAI leave them out."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the Recorder's bitshuffle frames, read through the NXmx)
import numpy as np
import yaml

from photonflow.drivers.camserver import MODELS, flagged_pixels, pixel_positions
from photonflow.drivers.minicbf import pixel_mask
from tests.helpers.devices import proxy, running_deployment, wait_for_state, wait_until
from tests.helpers.paths import REPOSITORY

FRAMES = 3
EXPERIMENT = {"proposal": "mx0001", "session": "20261205", "sample": "lysozyme_7"}


def camservers_flags(text: str) -> np.ndarray:
    """The truth: what the deployment's simulated camserver was told to be (model, bad pixels)."""
    command = yaml.safe_load(text)["simulators"]["camserver"]["command"]
    model = command[command.index("--model") + 1]
    columns, rows = MODELS[model]
    return flagged_pixels((rows, columns), pixel_positions(command[command.index("--bad-pixels") + 1]))


def test_the_nxmx_masks_the_simulated_camservers_module_gaps_and_bad_pixels(tmp_path):
    text = (REPOSITORY / "config" / "pilatus3.yaml").read_text()
    flags = camservers_flags(text)
    demo = yaml.safe_load(text)["demo"]
    with running_deployment(text, tmp_path, {"PHOTONFLOW_DATA_ROOT": str(tmp_path / "data")}) as suite:
        controller = proxy(suite.device_url("pilatus3/photonflow/controller"), timeout_s=60)
        standardizer = proxy(suite.device_url("pilatus3/photonflow/standardizer"))
        wait_for_state(controller, "ON", timeout=60)
        proxy(suite.device_url("pilatus3/photonflow/datamanager")).SetExperiment(json.dumps(EXPERIMENT))
        controller.Configure(json.dumps({"frames": FRAMES, "exposure": demo["exposure"], "period": demo["period"],
                                         "file": "mask/series.h5"}))
        controller.Start()
        wait_until(lambda: str(controller.state()) != "RUNNING", timeout=180, what="the series' end")
        assert str(controller.state()) == "ON", controller.status()
        nxs = Path(controller.LastFile).with_suffix(".nxs")
        wait_until(lambda: standardizer.LastFile == str(nxs), timeout=120, what=f"{nxs} written")
        with h5py.File(nxs) as f:
            detector = next(g for g in f["entry/instrument"].values() if g.attrs.get("NX_class") == "NXdetector")
            mask = detector["pixel_mask"][()]
            assert mask.dtype == np.uint32
            np.testing.assert_array_equal(mask, pixel_mask(flags))
            assert (mask == 1).sum() == (flags == -1).sum() == 4 * 17 * 981 + 7 * 1043 - 4 * 17 * 7  # 2 x 5 modules
            assert sorted(map(tuple, np.argwhere(mask == 2).tolist())) == sorted(
                pixel_positions(yaml.safe_load(text)["servers"]["PhotonflowAcquirer/pilatus3"]["PilatusAcquirer"]
                                ["pilatus3/photonflow/acquirer"]["properties"]["BadPixels"]))
            frames = f["entry/data/data"]
            for number in range(FRAMES):  # what the detector flagged in each image it took
                np.testing.assert_array_equal(pixel_mask(frames[number]), mask)
            assert detector["underload_value"][()] == 0 and detector["saturation_value"][()] == 1048574
