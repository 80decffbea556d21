"""Run-table variables (DAMNIT's context API) over a real Recorder file and its NXmx, computed in
a separate process: dependencies in order, a raising, a hanging, a skipped and an unsupported
variable each recorded for its own cell, the per-run HDF5 file only ever seen complete; bad
context files refused with file, line and reason; the demo context finds the CeO2 rings."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from photonflow.acquisition.acquirer import Acquirer
from photonflow.camera import BeamConditions
from photonflow.datamanager.context import Cell, RunData, Skip, Variable, load_context
from photonflow.datamanager.processing import nxmx_geometry
from photonflow.datamanager.runner import Results, run_variables, save_results
from photonflow.errors import ConfigurationError
from photonflow.recording.recorder import Recorder, RecordingRequest
from photonflow.simulators.diffraction import calibrant_d_spacings
from photonflow.simulators.simulated_camera import SimulatedCamera, SimulatedSensor
from photonflow.stream.transport import StreamSender
from tests.helpers.processing_inputs import write_small_nxtomo
from tests.helpers.recording import acquire_into
from tests.helpers.standardizing import BeamlineReader, beamline_values, standardize
from tests.helpers.variables_sink import read_cells

DEMO_CONTEXT = Path(__file__).resolve().parents[2] / "config" / "context.py"
SINK = "tests.helpers.variables_sink:JsonLinesSink"
PROPOSAL = "4242"
# CeO2 rings on a 420 x 440 detector of 100 µm pixels, 50 mm from the sample, at 0.7 Å
WAVELENGTH_ANGSTROM, DISTANCE_MM, CENTRE = 0.7, 50.0, (210.0, 220.0)


def record_series(root: Path, camera_class: type[SimulatedCamera] = SimulatedCamera) -> dict:
    """A real Recorder file of 4 simulated CeO2 frames and its standardized NXmx (ring current
    logged during the exposure), as a run's dict for the runner."""
    sensor = SimulatedSensor(height=420, width=440, seed=11, pixel_size=100e-6, serial_number="SIM-V")
    beam = BeamConditions(wavelength_angstrom=WAVELENGTH_ANGSTROM, distance_mm=DISTANCE_MM)
    camera = camera_class(sensor, beamline=lambda: beam, beam_centre=CENTRE)
    sender = StreamSender("tcp://127.0.0.1:*")
    acquirer = Acquirer(camera, sender)
    acquirer.update_settings(frame_count=4, exposure=0.02, period=0.03)
    acquirer.set_series_id(7)
    try:
        raw = acquire_into(acquirer, Recorder(root), RecordingRequest(4, 7, acquirer.stream_endpoint, "mx/run.h5"))
    finally:
        sender.close()
    values = {**beamline_values(), "mono/Wavelength": WAVELENGTH_ANGSTROM, "detz/Position": DISTANCE_MM}
    nexus, _ = standardize(raw, BeamlineReader(values), polls_during=2)
    return {"number": 12, "proposal": PROPOSAL, "role": "data", "node": "eff/energy[2]/data",
            "sample": "CeO2", "raw_file": str(raw), "nexus": str(nexus)}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict:
    return record_series(tmp_path_factory.mktemp("data"))


CONTEXT = '''
import time
import numpy as np
from photonflow.datamanager.context import Cell, Skip, Variable

@Variable(title="Frame means", summary="mean", units="counts")
def frame_means(run):
    return run.frames[:].mean(axis=(1, 2))

@Variable(title="Twice the mean")
def twice(run, means: "var#frame_means"):
    return Cell(2 * float(means.mean()), bold=True, units="counts")

@Variable(title="Label")
def label(run, number: "meta#run_number", sample: "mymdc#sample_name", role: "meta#role"):
    return f"{sample} {role} #{number}"

@Variable(title="Wavelength", units="angstrom")
def wavelength(run):
    return run.metadata("instrument/beam/incident_wavelength")

@Variable(title="Broken")
def broken(run):
    raise ValueError("the motor log is missing")

@Variable(title="Needs broken")
def needs_broken(run, value: "var#broken"):
    return value

@Variable(title="Hangs")
def hangs(run):
    time.sleep(60)

@Variable(title="After the hang")
def after_hang(run, means: "var#frame_means"):
    return int(means.size)

@Variable(title="Not for this run")
def not_this_run(run):
    raise Skip("no flat field for a dark")

@Variable(title="Needs skipped")
def needs_skipped(run, value: "var#not_this_run"):
    return value

@Variable(title="A dict")
def a_dict(run):
    return {"a": 1}

@Variable(title="Scratch", transient=True)
def scratch(run):
    return object()

@Variable(title="Uses scratch")
def uses_scratch(run, thing: "var#scratch"):
    return type(thing).__name__
'''


@pytest.fixture(scope="module")
def computed(series, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("variables")
    context = work / "context.py"
    context.write_text(CONTEXT)
    summary = run_variables(context, series, work / "catalogue", PROPOSAL, work / "extracted",
                            timeout_s=1.0, sink=SINK, process_timeout=120)
    assert "failed" not in summary, summary
    return {"summary": summary, "work": work, "cells": read_cells(work / "catalogue", PROPOSAL)}


def test_dependent_variables_get_their_dependencies_results_and_the_runs_facts(series, computed):
    cells = computed["cells"]
    with h5py.File(series["raw_file"]) as raw:
        means = raw["entry/data/data"][()].mean(axis=(1, 2))
    assert cells[(12, "frame_means")]["value"] == pytest.approx(means.mean())
    assert cells[(12, "frame_means")]["summary"] == "mean"
    assert cells[(12, "frame_means")]["attributes"]["units"] == "counts"
    assert cells[(12, "twice")]["value"] == pytest.approx(2 * means.mean())
    assert cells[(12, "twice")]["attributes"]["bold"] is True
    assert cells[(12, "label")]["value"] == "CeO2 data #12"
    assert cells[(12, "wavelength")]["value"] == pytest.approx(WAVELENGTH_ANGSTROM)
    assert cells[(12, "after_hang")]["value"] == 4  # computed after the hanging one was abandoned
    assert cells[(12, "uses_scratch")]["value"] == "object"  # a transient result passes anything on
    assert (12, "scratch") not in cells


def test_each_failure_is_recorded_for_its_own_cell(computed):
    cells, summary = computed["cells"], computed["summary"]
    assert cells[(12, "broken")]["error"] == "ValueError: the motor log is missing"
    assert cells[(12, "broken")]["value"] is None
    assert cells[(12, "needs_broken")]["error"].startswith("DependencyError:")
    assert "broken: ValueError: the motor log is missing" in cells[(12, "needs_broken")]["error"]
    assert cells[(12, "hangs")]["attributes"]["state"] == "timeout"
    assert "did not finish within 1 s" in cells[(12, "hangs")]["error"]
    assert cells[(12, "not_this_run")]["attributes"]["state"] == "skipped"
    assert cells[(12, "not_this_run")]["error"] == "Skip: no flat field for a dark"
    assert cells[(12, "needs_skipped")]["error"].startswith("Skip:")
    assert "TypeError" in cells[(12, "a_dict")]["error"] and "cannot be saved" in cells[(12, "a_dict")]["error"]
    assert set(summary["errors"]) == {"broken", "needs_broken", "hangs", "a_dict"}
    assert set(summary["skipped"]) == {"not_this_run", "needs_skipped"}


def test_the_run_file_holds_summaries_previews_errors_and_full_data(series, computed):
    path = Path(computed["summary"]["file"])
    assert path == computed["work"] / "extracted" / f"p{PROPOSAL}_r12.h5"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    with h5py.File(path) as f, h5py.File(series["raw_file"]) as raw:
        means = raw["entry/data/data"][()].mean(axis=(1, 2))
        np.testing.assert_allclose(f["frame_means/data"][()], means)
        assert f[".reduced/frame_means"][()] == pytest.approx(means.mean())
        assert f[".reduced/frame_means"].attrs["summary_method"] == "mean"
        assert f[".reduced/label"][()] == b"CeO2 data #12"
        assert f[".errors/broken"][()] == b"the motor log is missing"
        assert f[".errors/broken"].attrs["type"] == "ValueError"
        assert f[".errors/hangs"].attrs["type"] == "VariableTimeout"
        assert f[".errors/not_this_run"].attrs["type"] == "Skip"
        assert f[".errors/a_dict"].attrs["type"] == "TypeError"
        assert "scratch" not in f and "scratch" not in f[".errors"]
        assert "broken" not in f[".reduced"]


def test_reprocessing_one_variable_keeps_the_others_results(series, computed):
    work = computed["work"]
    context = work / "context.py"
    summary = run_variables(context, series, work / "catalogue", PROPOSAL, work / "extracted",
                            only=["label"], timeout_s=1.0, sink=SINK, process_timeout=120)
    assert summary["computed"] == ["label"] and summary["errors"] == {}
    with h5py.File(summary["file"]) as f:
        assert f[".reduced/label"][()] == b"CeO2 data #12"
        assert ".reduced/frame_means" in f and f[".errors/broken"].attrs["type"] == "ValueError"


def test_the_run_file_appears_only_complete(series, tmp_path):
    """While the process runs (a variable hangs for its 1 s timeout) the final name never holds a
    half file: whenever it exists it opens with every group and variable in it."""
    context = tmp_path / "context.py"
    context.write_text(CONTEXT)
    output = tmp_path / "extracted"
    started = run_variables(context, series, tmp_path / "catalogue", PROPOSAL, output, timeout_s=1.0,
                            sink=SINK, wait=False)
    process, final, seen = started["process"], output / f"p{PROPOSAL}_r12.h5", []
    while process.poll() is None:
        if final.exists():
            with h5py.File(final) as f:
                seen.append(sorted(f[".reduced"]) + sorted(f[".errors"]))
        time.sleep(0.02)
    process.communicate(timeout=60)
    assert process.returncode == 0
    with h5py.File(final) as f:
        complete = sorted(f[".reduced"]) + sorted(f[".errors"])
    assert all(names == complete for names in seen)
    assert [p.name for p in output.iterdir()] == [final.name]


def test_a_write_that_fails_leaves_the_earlier_file_and_no_temporary(tmp_path):
    earlier = Results(run=3, names=("a",), cells={"a": Cell(1.5)})
    path = save_results(earlier, tmp_path, "p1")

    class Unwritable(Cell):
        def get_summary(self):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_results(Results(run=3, names=("a", "b"), cells={"a": Cell(2.5), "b": Unwritable(1)}), tmp_path, "p1")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with h5py.File(path) as f:
        assert f[".reduced/a"][()] == 1.5


def write(tmp_path: Path, code: str) -> Path:
    path = tmp_path / "context.py"
    path.write_text(textwrap.dedent(code))
    return path


def test_a_syntax_error_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, """\
        from photonflow.datamanager.context import Variable

        @Variable(title="Fine")
        def fine(run):
            return 1 +
        """)
    with pytest.raises(ConfigurationError) as refused:
        load_context(path)
    assert str(refused.value).startswith(f"{path}:5: syntax error")


def test_an_unknown_dependency_is_refused_with_the_variables_line(tmp_path):
    path = write(tmp_path, """\
        from photonflow.datamanager.context import Variable

        @Variable(title="Fine")
        def fine(run):
            return 1

        @Variable(title="Needs ghost")
        def needs_ghost(run, value: "var#ghost"):
            return value
        """)
    with pytest.raises(ConfigurationError) as refused:
        load_context(path)
    assert f"{path}:7: variable needs_ghost: argument 'value' depends on 'var#ghost'" in str(refused.value)
    assert "does not define" in str(refused.value)


def test_a_cycle_is_refused_with_the_variables_in_it(tmp_path):
    path = write(tmp_path, """\
        from photonflow.datamanager.context import Variable

        @Variable(title="A")
        def a(run, b: "var#b"):
            return b

        @Variable(title="B")
        def b(run, a: "var#a"):
            return a
        """)
    with pytest.raises(ConfigurationError) as refused:
        load_context(path)
    message = str(refused.value)
    assert message.startswith(f"{path}:") and "cyclical dependencies" in message
    assert "a -> b" in message or "b -> a" in message
    assert message.split(":")[1] in ("3", "7")


def test_an_error_while_importing_and_a_bad_annotation_are_refused_with_their_lines(tmp_path):
    path = write(tmp_path, """\
        from photonflow.datamanager.context import Variable
        import no_such_module_anywhere
        """)
    with pytest.raises(ConfigurationError, match=rf"^{path}:2: the context raised ModuleNotFoundError"):
        load_context(path)
    path = write(tmp_path, """\
        from photonflow.datamanager.context import Variable

        @Variable(title="Bad", data="calibrated")
        def bad(run, n: "meta#shoe_size"):
            return n
        """)
    with pytest.raises(ConfigurationError) as refused:
        load_context(path)
    assert f"{path}:3: variable bad: data='calibrated'" in str(refused.value)
    assert "unknown 'meta#shoe_size'" in str(refused.value)


def test_a_refused_context_is_reported_by_the_process_with_file_and_line(series, tmp_path):
    path = write(tmp_path, "x = (\n")
    summary = run_variables(path, series, tmp_path, PROPOSAL, tmp_path / "out", sink=SINK, process_timeout=60)
    assert summary["failed"].startswith(f"{path}:1: syntax error")
    assert summary["reason"] == "InvalidConfiguration"
    assert not (tmp_path / "out").exists()


def test_the_api_keeps_damnits_decorator_forms():
    @Variable
    def bare(run):
        """A docstring becomes the description."""
        return 1

    assert bare.title == "bare" and bare.description == "A docstring becomes the description."
    tagged = Variable(title="T", tags="detector", data="proc", cluster=True)(lambda run: 1)
    assert tagged.tags == ("detector",) and tagged.data == "proc" and tagged.cluster
    with pytest.raises(TypeError, match="cannot be saved"):
        Cell(object())
    assert Cell(np.arange(4), summary="max").get_summary() == 3
    assert Cell(np.ones((2, 3))).get_summary() == "float64: (2, 3)"
    assert issubclass(Skip, Exception)
    run = RunData.from_dict({"run": 5, "nexus_file": "/x.nxs", "sample": "s", "role": "dark"})
    assert (run.number, run.nexus, run.argument("mymdc#run_type")) == (5, "/x.nxs", "dark")


def test_the_demo_context_finds_the_ceo2_rings_from_the_nxmx_geometry(series, tmp_path):
    summary = run_variables(DEMO_CONTEXT, series, tmp_path / "catalogue", PROPOSAL, tmp_path / "extracted",
                            timeout_s=120, sink=SINK, process_timeout=300)
    assert summary["errors"] == {} and summary["skipped"] == {}, summary.get("log")
    assert "no Dask scheduler given: cluster variables computed locally" in summary["notes"]
    cells = read_cells(tmp_path / "catalogue", PROPOSAL)
    with h5py.File(series["raw_file"]) as raw, h5py.File(series["nexus"]) as nexus:
        frames = raw["entry/data/data"][()]
        current = nexus["entry/during_exposure/source/current/value"][()]
    assert cells[(12, "mean_intensity")]["value"] == pytest.approx(frames.mean())
    assert cells[(12, "ring_current")]["value"] == pytest.approx(current.mean())
    assert cells[(12, "hot_pixels")]["value"] == int((frames >= 60000).any(axis=0).sum())
    assert cells[(12, "azimuthal_integration")]["attributes"]["where"] == "local"
    assert cells[(12, "azimuthal_integration")]["attributes"]["shape"] == [2, 2000]  # a run table plots it
    expected = [2 * math.pi / (d / 10.0) for d in calibrant_d_spacings("CeO2")[:3]]  # nm^-1
    with h5py.File(summary["file"]) as f:
        peaks = f["peak_positions/data"][()]
        q, intensity = f["azimuthal_integration/data"][()]
        assert f[".preview/azimuthal_integration"].shape == intensity.shape
    for q_ring in expected:
        nearest = peaks[np.argmin(abs(peaks - q_ring))]
        assert abs(nearest - q_ring) / q_ring < 0.005, f"no peak near q={q_ring:.3f} nm^-1 in {peaks}"
    assert cells[(12, "peak_positions")]["value"].startswith(f"{peaks[0]:.3f}")


class PilatusCamera(SimulatedCamera):
    """The simulator under another name: its NXmx detector group is /entry/instrument/pilatus."""

    def describe(self, settings):
        return {**super().describe(settings), "name": "pilatus"}


def test_the_demo_ring_and_peaks_use_the_nxmx_geometry_whatever_the_detector_is_named(tmp_path):
    run = RunData.from_dict(record_series(tmp_path, PilatusCamera))
    variables = load_context(DEMO_CONTEXT).vars
    try:
        with h5py.File(run.nexus) as f:
            assert "pilatus" in f["entry/instrument"] and "simulator" not in f["entry/instrument"]
            geometry = nxmx_geometry(f, Path(run.nexus))
        assert geometry["detector"] == "/entry/instrument/pilatus"
        assert geometry["distance"] == pytest.approx(DISTANCE_MM / 1000)
        assert geometry["wavelength"] == pytest.approx(WAVELENGTH_ANGSTROM * 1e-10)
        assert (geometry["beam_center_y"], geometry["beam_center_x"]) == pytest.approx(CENTRE)
        assert geometry["x_pixel_size"] == geometry["y_pixel_size"] == pytest.approx(100e-6)
        curve = variables["azimuthal_integration"].func(run, variables["summed_image"].func(run)).data
        peaks = variables["peak_positions"].func(run, curve).data
        assert variables["exposure"].func(run) == pytest.approx(0.02)
    finally:
        run.close()
    for d in calibrant_d_spacings("CeO2")[:3]:
        q_ring = 2 * math.pi / (d / 10.0)
        nearest = peaks[np.argmin(abs(peaks - q_ring))]
        assert abs(nearest - q_ring) / q_ring < 0.005, f"no peak near q={q_ring:.3f} nm^-1 in {peaks}"


def test_a_run_without_nxmx_skips_the_integration_with_a_reason(series, tmp_path):
    integrate = load_context(DEMO_CONTEXT).vars["azimuthal_integration"].func
    image = np.ones((420, 440))
    tomo = RunData.from_dict({**series, "nexus": str(write_small_nxtomo(tmp_path / "tomo.nxs"))})
    try:
        with pytest.raises(Skip, match="is NXtomo, not NXmx"):
            integrate(tomo, image)
    finally:
        tomo.close()
    with pytest.raises(Skip, match="has no standardized"):
        integrate(RunData.from_dict({**series, "nexus": ""}), image)


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    """A real Dask scheduler and one worker, separate processes on 127.0.0.1 with free ports."""
    import os
    import subprocess
    import sys

    pytest.importorskip("distributed")
    run_dir = tmp_path_factory.mktemp("dask")
    scheduler_file = run_dir / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                 cwd=run_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        while not scheduler_file.exists() and scheduler.poll() is None:
            time.sleep(0.1)
        worker = subprocess.Popen([str(bin_dir / "dask"), "worker", "--scheduler-file", str(scheduler_file),
                                   "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                  cwd=Path(__file__).resolve().parents[2], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import json

        yield json.loads(scheduler_file.read_text())["address"]
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(30)


CLUSTER_CONTEXT = '''
import os
from photonflow.datamanager.context import Variable

@Variable(title="Runner pid")
def runner_pid(run):
    return os.getpid()

@Variable(title="Worker pid", cluster=True)
def worker_pid(run, local: "var#runner_pid", number: "meta#run_number"):
    return [os.getpid(), local, number]

@Variable(title="Frames on the worker", cluster=True, summary="sum")
def frames_shape(run):
    return list(run.frames.shape)
'''


def test_cluster_variables_run_on_the_dask_workers_and_light_ones_locally(series, dask_scheduler, tmp_path):
    context = write(tmp_path, CLUSTER_CONTEXT)
    summary = run_variables(context, series, tmp_path / "catalogue", PROPOSAL, tmp_path / "extracted",
                            timeout_s=60, cluster=dask_scheduler, sink=SINK, process_timeout=180)
    assert summary["errors"] == {}, summary.get("log")
    assert summary["where"] == {"runner_pid": "local", "worker_pid": f"cluster {dask_scheduler}",
                                "frames_shape": f"cluster {dask_scheduler}"}
    with h5py.File(summary["file"]) as f:
        worker, runner, number = f["worker_pid/data"][()]
        assert runner == f["runner_pid/data"][()] and worker != runner and number == 12
        assert list(f["frames_shape/data"][()]) == [4, 420, 440]


def test_the_variables_process_reads_bslz4_frames_as_recorded(tmp_path):
    """EIGER frames are bitshuffle/LZ4 compressed: ``run.frames`` reads them in a fresh process
    (the variables process, a Dask worker) where nothing else has registered the HDF5 filter."""
    import subprocess
    import sys

    import hdf5plugin

    truth = np.arange(3 * 16 * 24, dtype=np.uint32).reshape(3, 16, 24) % 1000
    raw = tmp_path / "raw.h5"
    with h5py.File(raw, "w") as f:
        f.create_dataset("entry/data/data", data=truth, chunks=(1, 16, 24),
                         **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    script = ("import sys; from photonflow.datamanager.context import RunData; "
              "assert 'hdf5plugin' not in sys.modules, 'already registered'; "
              f"print(RunData(number=1, raw_file={str(raw)!r}).frames[:].astype(float).mean())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(truth.astype(float).mean(), rel=0, abs=1e-9)
