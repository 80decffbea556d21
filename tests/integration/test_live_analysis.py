"""The live analysis as a server process beside a Recorder: every frame of a series analysed from
the Recorder's push fan-out (never re-read from the file), its results beside the Recorder's
file equal to an offline run of the same functions on the written frames, and change events a
panel plots."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tango

from photonflow.analysis.frame_analysis import AnalysisSettings, FrameAnalyzer, parse_rois
from tests.helpers.devices import acquire, proxy, running_deployment, wait_for_state, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROIS = ["centre 80 100 40 40", "corner 0 0 16 16"]
DEPLOYMENT = """
servers:
  PhotonflowAcquirer/live:
    SimulatorAcquirer:
      test/live/acquirer:
        properties: {ImageWidth: 256, ImageHeight: 200, Seed: 9, BeamCentre: "100.5,120.5"}
  PhotonflowRecorder/live:
    PhotonflowRecorder:
      test/live/recorder:
        properties:
          DataRoot: ${LIVE_DATA}
          FanOutAddress: tcp://127.0.0.1:*
          FanOutMode: push
          FanOutEvery: 1
  PhotonflowController/live:
    PhotonflowController:
      test/live/controller:
        properties: {Acquirer: test/live/acquirer, Recorder: test/live/recorder}
  PhotonflowAnalysis/live:
    PhotonflowAnalysis:
      test/live/analysis:
        properties:
          Recorder: test/live/recorder
          AzimuthalPoints: 300
          ROIs: ["centre 80 100 40 40", "corner 0 0 16 16"]
          EventInterval: 0.1
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("live")
    with running_deployment(DEPLOYMENT, var_dir, {"LIVE_DATA": str(var_dir / "data")}) as suite:
        yield suite


def description_in(data_file) -> dict:
    """The detector's description as the Recorder wrote it: what the series announced."""
    with h5py.File(data_file, "r") as f:
        detector = f["entry/instrument/simulator"]
        described = {key: float(detector[key][()]) for key in ("x_pixel_size", "y_pixel_size", "beam_center_x",
                                                               "beam_center_y", "distance", "saturation_value")}
        described["incident_wavelength"] = float(detector["detector_specific/incident_wavelength"][()])
        return described


def test_every_frame_is_analysed_live_and_equals_an_offline_run_on_the_written_frames(suite):
    analysis = proxy(suite.device_url("test/live/analysis"))
    wait_for_state(analysis, "ON", "ALARM")  # INIT while its Recorder starts
    intensities = []
    analysis.subscribe_event("Intensity", tango.EventType.CHANGE_EVENT,
                             lambda event: None if event.err else intensities.append(event.attr_value.value))
    controller = proxy(suite.device_url("test/live/controller"))
    assert acquire(controller, frames=40, exposure=0.001, period=0.01, file="live.h5") == "ON", controller.status()
    wait_until(lambda: analysis.FramesAnalysed == 40 and str(analysis.state()) == "ON", 60,
               what=lambda: f"the analysis of 40 frames ({analysis.status()})")
    data_file = controller.LastFile
    results = analysis.ResultsFile
    assert results == data_file.replace(".h5", "_live.h5")
    with h5py.File(data_file, "r") as f:
        frames = f["entry/data/data"][()]
    offline = FrameAnalyzer(AnalysisSettings(npt=300, rois=parse_rois(ROIS)), frames.shape[1:], description_in(data_file))
    expected = [offline.analyse(n, frame) for n, frame in enumerate(frames)]
    assert offline.missing_geometry == ()
    with h5py.File(results, "r") as f:
        process = f["entry/process"]
        assert process["spot_finding/spots"][()].tolist() == [r.spots for r in expected]
        for name in ("centre", "corner"):
            np.testing.assert_array_equal(process[f"roi/{name}"][()], [r.roi_sums[name] for r in expected])
        np.testing.assert_allclose(process["integration/q"][()], offline.q)
        np.testing.assert_allclose(process["integration/I"][()], np.stack([r.intensity for r in expected]))
    wait_until(lambda: intensities and len(intensities[-1]) == 300, 30, what="an I(q) change event")
    np.testing.assert_allclose(analysis.Intensity, expected[-1].intensity)
    print(f"\nlive analysis latency, frame made -> result: median {analysis.LatencyMedian:.1f} ms, "
          f"p99 {analysis.LatencyP99:.1f} ms")


@pytest.mark.parametrize("recorders", [1, 2])
def test_the_demo_with_live_analysis_puts_results_equal_to_an_offline_run_into_its_nxmx(tmp_path, recorders):
    """`make demo ANALYSIS=1` (and RECORDERS=2): a worker beside each Recorder, every frame's spots
    and I(q) in the standardized NXmx (one Recorder: linked; two: their parts merged in frame
    order) equal to the same functions run offline on the frames the master presents."""
    from tests.helpers.cli import run_photonflow, summary_of
    from tests.helpers.paths import DEMO_CONFIG

    demo = run_photonflow(tmp_path, "demo", "--config", str(DEMO_CONFIG), "--analysis", "--recorders", str(recorders),
                          "--frames", "30", "--exposure", "0.01", "--period", "0.1",
                          PHOTONFLOW_DATA_ROOT=str(tmp_path / "data"))
    summary = summary_of(demo)
    assert summary["state"] == "ON" and summary["recorders"] == recorders, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert summary["nexus_problems"] == 0, demo.stdout[-3000:]
    live = summary["live_analysis"]
    assert live["frames_analysed"] == 30 and live["states"] == ["ON"] * recorders, live
    if recorders == 1:  # its results also went into the series' blissdata scan, frame by frame
        assert live["results_in_redis"] == 30, live
    master = summary["file"]
    with h5py.File(master, "r") as f:
        frames = f["entry/data/data"][()]
    offline = FrameAnalyzer(AnalysisSettings(npt=500), frames.shape[1:], description_in(master))
    expected = [offline.analyse(n, frame) for n, frame in enumerate(frames)]
    with h5py.File(summary["nexus"], "r") as nxmx:
        results = nxmx["entry/live_analysis"]
        assert results["spot_finding/spots"][()].tolist() == [r.spots for r in expected]
        assert any(r.spots > 0 for r in expected)  # the powder rings' bright pixels: not an all-zero comparison
        np.testing.assert_allclose(results["integration/q"][()], offline.q)
        np.testing.assert_allclose(results["integration/I"][()], np.stack([r.intensity for r in expected]))
