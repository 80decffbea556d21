"""What every photonflow Tango device shares: core errors as DevFailed, core states as
DevState, and pushing the change events the core's callbacks announce."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import tango

from photonflow.errors import PhotonflowError

log = logging.getLogger(__name__)

DEV_STATES = {
    name: getattr(tango.DevState, name)
    for name in ("ON", "STANDBY", "RUNNING", "ALARM", "FAULT", "UNKNOWN", "MOVING", "OPEN", "CLOSE", "INIT")
}


def to_dev_state(state: str) -> tango.DevState:
    return DEV_STATES[state]


def operator_errors(method: Callable) -> Callable:
    """Turn core errors into DevFailed whose reason and description tell the operator what to fix."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        origin = f"{type(self).__name__}.{method.__name__}"
        try:
            return method(self, *args, **kwargs)
        except tango.DevFailed:
            raise  # a peer's own reason and description, as it gave them
        except PhotonflowError as error:
            tango.Except.throw_exception(error.reason, str(error), origin)
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            tango.Except.throw_exception("SystemError", f"{error.strerror or error}{where}", origin)
        except Exception as error:  # never a Python traceback as the operator's error
            log.exception("%s failed", origin)
            tango.Except.throw_exception(
                "UnexpectedError",
                f"{origin} failed unexpectedly ({type(error).__name__}: {error}); the request was not carried "
                "out. Check the arguments, try again, and report it with the server's log if it persists.",
                origin,
            )

    return wrapper


class EventPushingMixin:
    """Publishes State/Status and counters as change events pushed by the device itself."""

    event_attributes: tuple[str, ...] = ()

    def enable_events(self) -> None:
        self._pushed_state = None  # the first state after (re)initialisation is always pushed
        for name in ("State", "Status", *self.event_attributes):
            self.set_change_event(name, True, False)

    def publish_state(self, state: str, status: str) -> None:
        """State is pushed when it changes, Status whenever its text does (e.g. frames written)."""
        dev_state = to_dev_state(state)
        state_changed = dev_state != getattr(self, "_pushed_state", None)
        self._pushed_state = dev_state
        self.set_state(dev_state)
        self.set_status(status)
        try:
            if state_changed:
                self.push_change_event("State", dev_state)
            self.push_change_event("Status", status)
        except tango.DevFailed as error:  # no subscriber problem must break the core's thread
            log.debug("state event not pushed: %s", error)

    def publish_value(self, attribute: str, value) -> None:
        try:
            self.push_change_event(attribute, value)
        except tango.DevFailed as error:
            log.debug("event on %s not pushed: %s", attribute, error)


class TangoReader:
    """Reads attributes of other devices through DeviceProxy, one per device, made on first use (a
    peer may start later), each read bounded by ``timeout_s``. Called as ``reader(device, name)``
    it gives the value; ``read(device, name)`` gives (value, UNIX time of the reading). A state
    is given by its name (OPEN), and an INVALID reading is an error, not a value."""

    def __init__(self, timeout_s: float = 3.0):
        self.timeout_ms = int(timeout_s * 1000)
        self._proxies: dict[str, tango.DeviceProxy] = {}
        self._lock = threading.Lock()

    def proxy(self, device: str) -> tango.DeviceProxy:
        with self._lock:
            proxy = self._proxies.get(device)
            if proxy is None:
                proxy = tango.DeviceProxy(device)
                proxy.set_timeout_millis(self.timeout_ms)
                self._proxies[device] = proxy
            return proxy

    def __call__(self, device: str, attribute: str) -> Any:
        proxy = self.proxy(device)
        if attribute == "State":
            return proxy.state()
        return proxy.read_attribute(attribute).value

    def read(self, device: str, attribute: str) -> tuple[Any, float]:
        reading = self.proxy(device).read_attribute(attribute)
        if reading.quality == tango.AttrQuality.ATTR_INVALID:
            raise ValueError(f"{device}/{attribute} is INVALID (the device cannot give a value now)")
        value = reading.value
        if isinstance(value, tango.DevState):
            value = str(value)
        return value, reading.time.totime()


class SeriesEdges:
    """Turns a Controller's State events into series edges: "started" when it becomes busy,
    "ended" when it no longer is, None otherwise (a repeated or same-kind state).

    The first event is what the subscription found. A subscription made late (a loaded host) may
    first see the Controller idle after a whole series ran: when ``missed_end()`` says so (each
    follower asks its SeriesRanSince: the Controller's series id moved on), that series' "ended" is
    not lost."""

    def __init__(self, busy_states: tuple[str, ...]):
        self.busy_states = busy_states
        self._state: str | None = None

    def edge(self, state: str, missed_end: Callable[[], bool] | None = None) -> str | None:
        first = self._state is None
        was_busy, busy = self._state in self.busy_states, state in self.busy_states
        self._state = state
        if busy == was_busy:
            return "ended" if first and not busy and missed_end is not None and missed_end() else None
        return "started" if busy else "ended"


class SeriesRanSince:
    """A ``missed_end`` for a follower of the Controller: a series ran since the follower started,
    i.e. the Controller's SeriesId (``series_now``) moved on since. A Controller that did not
    answer then (a suite's servers start together) started after the follower, and it numbers its
    series from 1 (0: none yet): the follower then starts from 0, so the suite's first series,
    run before the follower's subscription was live, is not lost."""

    def __init__(self, series_now: Callable[[], int]):
        self._series_now = series_now
        try:
            self.at_start = int(series_now())
        except tango.DevFailed:
            self.at_start = 0

    def __call__(self) -> bool:
        return int(self._series_now()) != self.at_start


def wait_unlocked(device, wait: Callable[[float], bool], timeout: float) -> bool:
    """``wait(seconds)`` (a WaitIdle) without the device's monitor: Tango serializes a device's
    commands and reads, and one client's wait must not keep the others out (the Standardizer
    reads the DataManager's role meanwhile). At most 10 minutes; a negative or NaN timeout: no wait."""
    seconds = min(timeout, 600.0) if timeout > 0 else 0.0
    with tango.AutoTangoAllowThreads(device):
        return wait(seconds)


def follow_events(stop: threading.Event, first: tango.DeviceProxy, wanted, wait_at_most: float | None = None) -> None:
    """Subscribe to change events once ``first`` answers (it may start after this server), hold the
    subscriptions until ``stop`` is set, then end them. ``wanted()`` gives (proxy, attribute,
    callback) triples once ``first`` answers, or once ``wait_at_most`` seconds passed without an
    answer; Stateless subscriptions, so Tango subscribes by itself when a peer (re)starts, and a
    peer still down reports it through the callbacks. Runs on a thread of its own, which a failed
    subscription never ends: it is logged and tried again, since a device that follows nothing
    loses every series. Ending the subscriptions here, never under a device's monitor, keeps an
    Init from waiting for an event callback that waits for that monitor."""
    subscriptions: list = []
    deadline = None if wait_at_most is None else time.monotonic() + wait_at_most
    while not stop.is_set() and not subscriptions:
        try:
            first.ping()
        except tango.DevFailed:
            if deadline is None or time.monotonic() < deadline:
                stop.wait(0.2 if deadline is not None else 0.5)
                continue
        try:
            for proxy, attribute, callback in wanted():
                subscriptions.append((proxy, proxy.subscribe_event(
                    attribute, tango.EventType.CHANGE_EVENT, callback, sub_mode=tango.EventSubMode.Stateless)))
        except Exception:
            log.exception("could not subscribe to the events followed; trying again in 5 s")
            unsubscribe(subscriptions)
            subscriptions = []
            stop.wait(5)
    stop.wait()
    unsubscribe(subscriptions)


def unsubscribe(subscriptions: list) -> None:
    """End (proxy, event id) subscriptions; a peer already gone has ended them itself."""
    for proxy, event_id in subscriptions:
        try:
            proxy.unsubscribe_event(event_id)
        except tango.DevFailed:
            pass
