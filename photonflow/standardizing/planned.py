"""What the DataManager says a series is, and the tomographies the Standardizer joins from it.

A structure (``config/structures/tomography.yaml``) sequences a tomography as acquisitions with
roles: dark (shutter closed), flat or white (sample out), data (the projections, while the sample
turns). The Standardizer only writes: each series gets its file, and when the data series of a
structure node ends, its NXtomo joins the darks and flats taken before it in that node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from photonflow.standardizing.nxtomo import TomographyPart

# a structure role -> what its frames are in an NXtomo (image_key)
TOMOGRAPHY_KINDS = {"dark": "dark", "flat": "flat", "white": "flat", "data": "projection"}


@dataclass(frozen=True)
class PlannedAcquisition:
    """An acquisition of the DataManager's structure: its node ("tomo/darks"), its role, its
    dataset (the stem of the file the data policy names, which ties it to the series' file) and
    the sample (the data policy's name)."""

    node: str
    role: str
    dataset: str
    sample: str = ""

    @classmethod
    def from_data_policy(cls, text: str) -> PlannedAcquisition | None:
        """From the DataManager's ``DataPolicy`` JSON; None when no structure acquisition is under way."""
        policy = json.loads(text or "{}")
        if not isinstance(policy, dict) or not policy.get("node"):
            return None
        return cls(str(policy["node"]), str(policy.get("role", "")), str(policy.get("dataset", "")),
                   str(policy.get("sample", "")))

    @property
    def tomography(self) -> str:
        """The structure node the acquisition belongs to (its parent): one tomography per node."""
        return self.node.rsplit("/", 1)[0]

    @property
    def image_kind(self) -> str | None:
        """dark, flat or projection; None for a role a tomography does not join (e.g. alignment)."""
        return TOMOGRAPHY_KINDS.get(self.role)


class TomographyJoiner:
    """The dark and flat series of the tomography under way, kept until its data series ends.

    A tomography is the series of one structure node, in the order they were taken; a series of
    another node, or a node taken a second time (the structure run again), starts a new one."""

    def __init__(self) -> None:
        self._tomography: str | None = None
        self._parts: list[TomographyPart] = []
        self._nodes: set[str] = set()

    def add(self, planned: PlannedAcquisition, part: TomographyPart) -> list[TomographyPart]:
        """The series to write in ``part``'s file: ``part`` alone for a dark or a flat, the whole
        tomography (darks, flats, projections) for the projections."""
        if planned.tomography != self._tomography or planned.node in self._nodes:
            self._tomography, self._parts, self._nodes = planned.tomography, [], set()
        if part.kind != "projection":
            self._parts.append(part)
            self._nodes.add(planned.node)
            return [part]
        joined = [*self._parts, part]
        self._tomography, self._parts, self._nodes = None, [], set()
        return joined
