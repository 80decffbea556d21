"""Sardana's NXscan recorder, knowing photonflow's value references (add this folder to the
MacroServer's RecorderPath and set ``ScanRecorder`` to ``PhotonflowNXscanH5_FileRecorder``).

A photonflow channel refers to one frame of one file per scan:
``h5file:///<file>::/entry/data/data[<index>]``. Sardana's own recorder links a whole dataset per
point; this one links frame ``index`` of that dataset, so the scan file's measurement holds a
virtual dataset of the photonflow frames (nothing copied)."""

import re

import h5py
from sardana.macroserver.recorders.h5storage import NXscanH5_FileRecorder

MISSING = ("", "None", "nan")  # what Sardana records for a point that has no reference
INDEXED = re.compile(r"^h5file://(?P<file>/[^:]+)::(?P<dataset>/?[\w./\-]+)\[(?P<index>\d+)\]$")


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
        matches = [INDEXED.match(reference) for reference in references]
        missing = [m is None and reference in MISSING for m, reference in zip(matches, references, strict=True)]
        if all(missing) or any(m is None and not gap for m, gap in zip(matches, missing, strict=True)):
            return False
        wanted = {}  # (file, dataset) -> frames the references reach
        for match in filter(None, matches):
            key = (match["file"], match["dataset"])
            wanted[key] = max(wanted.get(key, 0), int(match["index"]) + 1)
        sources = {}
        for (file, dataset), reach in wanted.items():
            with h5py.File(file, "r", swmr=True) as f:
                frames = f[dataset]
                # a file still being written may not show its last frames yet: link them anyway
                shape = (max(frames.shape[0], reach), *frames.shape[1:])
                sources[(file, dataset)] = h5py.VirtualSource(file, dataset, shape=shape, dtype=frames.dtype)
        first = next(iter(sources.values()))
        layout = h5py.VirtualLayout(shape=(len(matches), *first.shape[1:]), dtype=first.dtype)
        for point, match in enumerate(matches):
            if match is not None:
                layout[point] = sources[(match["file"], match["dataset"])][int(match["index"])]
        measurement.create_dataset("_" + dd.label + "_references", data=references, dtype=h5py.string_dtype())
        del measurement[dd.label]
        measurement.create_virtual_dataset(dd.label, layout, fillvalue=0)
        return True
