"""nabu, run as its documentation says (``nabu-config --dataset``, then ``nabu CONF --slice middle``),
on an NXtomo written by the Standardizer's code over Recorder-like files of the phantom: the middle
slice it reconstructs is the phantom's; the same tomography with no object in the beam is not.

nabu reconstructs on the CPU through OpenCL (pyopencl and the pocl CPU device, from PyPI) and
filters with pyvkfft, which PyPI has only as source: where any of them is missing, the test skips
saying how to install it (README, "Tomography: NXtomo for nabu")."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers.tomography import TomographyTruth, write_tomography_of_phantom

TRUTH = TomographyTruth()
# Above what a tomography without the object reaches; below the phantom's (0.88 measured)
CORRELATION_THRESHOLD = 0.6
INSTALL = ("pip install -e '.[tomo]' (make test does); nabu's CPU filter needs pyvkfft built for OpenCL: "
           "apt-get install opencl-headers ocl-icd-opencl-dev && VKFFT_BACKEND=opencl pip install pyvkfft")


def nabu_missing() -> str:
    """Why nabu cannot reconstruct here, or "" when it can."""
    for module in ("nabu", "pyopencl", "pyvkfft"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: {INSTALL}"
    import pyopencl

    try:
        devices = [device for platform in pyopencl.get_platforms() for device in platform.get_devices()]
    except pyopencl.Error as error:
        return f"no OpenCL platform ({error}): {INSTALL}"
    return "" if devices else f"no OpenCL device: {INSTALL}"


pytestmark = pytest.mark.skipif(bool(nabu_missing()), reason=nabu_missing() or "nabu runs")


def reconstruct_middle_slice(nxtomo: Path) -> tuple[np.ndarray, float]:
    """nabu's middle slice of ``nxtomo`` and the seconds nabu took."""
    tools = Path(sys.executable).parent
    config = nxtomo.with_name("nabu.conf")
    subprocess.run([str(tools / "nabu-config"), "--dataset", str(nxtomo), "--output", str(config)],
                   check=True, capture_output=True, text=True, timeout=120)
    started = time.monotonic()
    done = subprocess.run([str(tools / "nabu"), str(config), "--slice", "middle"], cwd=nxtomo.parent,
                          capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with h5py.File(nxtomo.with_name(f"{nxtomo.stem}_rec.hdf5")) as f:
        return f["entry/reconstruction/results/data"][0], seconds


def correlation_with_phantom(reconstructed: np.ndarray) -> float:
    """Pearson's r between nabu's slice and the phantom's true slice at the middle row."""
    truth = TRUTH.phantom.true_slice(TRUTH.rows // 2, (TRUTH.rows, TRUTH.columns), TRUTH.pixel_size)
    return float(np.corrcoef(reconstructed.ravel(), truth.ravel())[0, 1])


def test_nabu_reconstructs_the_phantom_from_the_nxtomo(tmp_path):
    nxtomo = write_tomography_of_phantom(tmp_path)
    reconstructed, seconds = reconstruct_middle_slice(nxtomo)
    r = correlation_with_phantom(reconstructed)
    print(f"nabu: middle slice of {nxtomo.name} in {seconds:.1f} s, Pearson r with the phantom {r:.3f}")
    assert r > CORRELATION_THRESHOLD


def test_a_tomography_with_nothing_in_the_beam_does_not_pass_for_the_phantom(tmp_path):
    nxtomo = write_tomography_of_phantom(tmp_path, with_object=False)
    reconstructed, _ = reconstruct_middle_slice(nxtomo)
    r = correlation_with_phantom(reconstructed)
    print(f"nabu: flats only, Pearson r with the phantom {r:.3f}")
    assert r < CORRELATION_THRESHOLD
