"""Sardana's NXscan recorder, knowing photonflow's value references (add this folder to the
MacroServer's RecorderPath and set ``ScanRecorder`` to ``PhotonflowNXscanH5_FileRecorder``).

A photonflow channel refers to one frame of one file per scan:
``h5file:///<file>::/entry/data/data[<index>]``. Sardana's own recorder links a whole dataset per
point; this one links frame ``index`` of that dataset, so the scan file's measurement holds a
virtual dataset of the photonflow frames (nothing copied)."""

import h5py
from sardana.macroserver.recorders.h5storage import NXscanH5_FileRecorder

from photonflow.publishing.frame_reference import parse_frame_reference

MISSING = ("", "None", "nan")  # what Sardana records for a point that has no reference


class PhotonflowNXscanH5_FileRecorder(NXscanH5_FileRecorder):
    """NXscan, with photonflow's indexed frame references linked as a virtual dataset."""

    formats = {"h5": ".h5"}

    def _endRecordList(self, recordlist):
        if self.filename is not None:
            env = self.currentlist.getEnviron()
            measurement = self.fd[self.entryname]["measurement"]
            for dd, dd_env in zip(self.datadesc, env["datadesc"], strict=False):
                if dd.value_ref_enabled and dd.label in measurement and self._link_frames(measurement, dd, dd_env):
                    dd.value_ref_enabled = False  # done: Sardana's own linking skips it
        super()._endRecordList(recordlist)

    def _link_frames(self, measurement, dd, dd_env):
        """Link each point's frame; a point without a reference (a trigger Sardana skipped, as
        a timescan does when a point outlasts its period) reads as zeros. Returns False, leaving
        Sardana's own linking, when the references are not photonflow's."""
        references = [r.decode() if isinstance(r, bytes) else str(r) for r in measurement[dd.label][()]]
        frames = [parse_frame_reference(reference) for reference in references]
        missing = [frame is None and reference in MISSING for frame, reference in zip(frames, references, strict=True)]
        if all(missing) or any(frame is None and not gap for frame, gap in zip(frames, missing, strict=True)):
            return False
        wanted = {}  # (file, dataset) -> frames the references reach
        for frame in filter(None, frames):
            key = (frame.file, frame.dataset)
            wanted[key] = max(wanted.get(key, 0), frame.index + 1)
        sources = {}
        for (file, name), reach in wanted.items():
            with h5py.File(file, "r", swmr=True) as f:
                dataset = f[name]
                # a file still being written may not show its last frames yet: link them anyway
                shape = (max(dataset.shape[0], reach), *dataset.shape[1:])
                sources[(file, name)] = h5py.VirtualSource(file, name, shape=shape, dtype=dataset.dtype)
        first = next(iter(sources.values()))
        layout = h5py.VirtualLayout(shape=(len(frames), *first.shape[1:]), dtype=first.dtype)
        for point, frame in enumerate(frames):
            if frame is not None:
                layout[point] = sources[(frame.file, frame.dataset)][frame.index]
        measurement.create_dataset("_" + dd.label + "_references", data=references, dtype=h5py.string_dtype())
        del measurement[dd.label]
        measurement.create_virtual_dataset(dd.label, layout, fillvalue=0)
        return True
