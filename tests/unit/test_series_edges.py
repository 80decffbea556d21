"""A follower of the Controller's State (the Standardizer, the DataManager) turns its events into
series edges, and a subscription made late, after a whole series ran, still sees that series end."""

from __future__ import annotations

from photonflow.devices.common import SeriesEdges, series_ran_since

BUSY = ("RUNNING", "STANDBY")


def test_busy_then_idle_is_a_series_started_then_ended():
    edges = SeriesEdges(BUSY)
    series = {"ON": 4, "RUNNING": 5}
    assert [edges.edge(state, series_ran_since(4, lambda state=state: series[state]))
            for state in ("ON", "RUNNING", "RUNNING", "ON")] == [None, "started", None, "ended"]


def test_a_subscription_that_first_sees_idle_after_a_whole_series_still_sees_it_end():
    edges = SeriesEdges(BUSY)
    assert edges.edge("ON", series_ran_since(4, lambda: 5)) == "ended"  # series 5 began and ended before
    assert edges.edge("ON", series_ran_since(4, lambda: 6)) is None  # only the first event looks back


def test_no_series_since_the_start_or_an_unknown_start_is_no_edge():
    assert SeriesEdges(BUSY).edge("ON", series_ran_since(4, lambda: 4)) is None
    assert SeriesEdges(BUSY).edge("ON", series_ran_since(None, lambda: 9)) is None
    assert SeriesEdges(BUSY).edge("ALARM", None) is None
