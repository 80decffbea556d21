"""A follower of the Controller's State (the Standardizer, the DataManager) turns its events into
series edges, and a subscription made late, after a whole series ran, still sees that series end."""

from __future__ import annotations

import tango

from photonflow.devices.common import SeriesEdges, SeriesRanSince

BUSY = ("RUNNING", "STANDBY")


class ControllerSeries:
    """The Controller's SeriesId as a follower reads it: a number, or a DevFailed while its
    server is not up."""

    def __init__(self, value: int | None):
        self.value = value

    def __call__(self) -> int:
        if self.value is None:
            tango.Except.throw_exception("API_CantConnectToDevice", "not running yet", "test")
        return self.value


def test_busy_then_idle_is_a_series_started_then_ended():
    edges = SeriesEdges(BUSY)
    controller = ControllerSeries(4)
    missed = SeriesRanSince(controller)
    seen = []
    for state, series in (("ON", 4), ("RUNNING", 5), ("RUNNING", 5), ("ON", 5)):
        controller.value = series
        seen.append(edges.edge(state, missed))
    assert seen == [None, "started", None, "ended"]


def test_a_subscription_that_first_sees_idle_after_a_whole_series_still_sees_it_end():
    edges = SeriesEdges(BUSY)
    controller = ControllerSeries(4)
    missed = SeriesRanSince(controller)
    controller.value = 5  # series 5 began and ended before the subscription was live
    assert edges.edge("ON", missed) == "ended"
    controller.value = 6
    assert edges.edge("ON", missed) is None  # only the first event looks back


def test_a_controller_that_did_not_answer_when_the_follower_started_has_run_every_series_since():
    controller = ControllerSeries(None)  # the suite's servers start together: the Controller later
    missed = SeriesRanSince(controller)
    controller.value = 1  # its first series, over before the follower's subscription was live
    assert SeriesEdges(BUSY).edge("ON", missed) == "ended"
    controller.value = 0  # up, no series yet
    assert SeriesEdges(BUSY).edge("ON", missed) is None


def test_no_series_since_the_start_is_no_edge():
    assert SeriesEdges(BUSY).edge("ON", SeriesRanSince(ControllerSeries(4))) is None
    assert SeriesEdges(BUSY).edge("ALARM", None) is None
