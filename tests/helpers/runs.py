"""A catalogued run as the DataManager records one, for tests of what reads the catalogue."""

from photonflow.datamanager.catalogue import RunRecord


def run_record(run: int, role: str = "data", proposal: str = "mx1234") -> RunRecord:
    return RunRecord(run=run, proposal=proposal, session="s1", sample="ceo2", beamline="id00",
                     start=f"2026-12-06T10:0{run % 10}:00.000Z", end=f"2026-12-06T10:0{run % 10}:30.000Z", node="scan",
                     role=role, raw_file=f"/data/{proposal}/run{run}.h5", nexus_file="", frames_requested=10,
                     frames_written=10, missing_frames=0, end_reason="completed")
