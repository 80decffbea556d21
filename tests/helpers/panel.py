"""Driving a Qt panel offscreen: the event loop run until something shows, and screenshots that
must be real renderings."""

from __future__ import annotations

import time

from tests.helpers.paths import REPOSITORY

SCREENSHOTS = REPOSITORY / "var" / "screenshots"


def process_until(condition, timeout: float, what: str, describe=lambda: ""):
    """Run the Qt event loop in short slices until ``condition()`` holds, or fail at the deadline."""
    from taurus.external.qt import QtCore

    deadline = time.monotonic() + timeout
    while True:
        slice_loop = QtCore.QEventLoop()  # processes events (Taurus updates) for 20 ms
        QtCore.QTimer.singleShot(20, slice_loop.quit)
        slice_loop.exec_()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s. {describe()}")


def assert_usable_png(path) -> None:
    """A real rendering: a few KB, and many colours (text, frames, the state colour)."""
    from taurus.external.qt import Qt

    assert path.is_file(), path
    assert path.stat().st_size > 5_000, f"{path} is only {path.stat().st_size} bytes"
    image = Qt.QImage(str(path))
    assert not image.isNull() and image.width() > 300 and image.height() > 300
    colours = {
        image.pixel(x, y)
        for x in range(0, image.width(), 3)
        for y in range(0, image.height(), 3)
    }
    assert len(colours) > 10, f"{path} is nearly uniform: {len(colours)} colours"


def save_screenshot(widget, name: str, tmp_path) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for path in (tmp_path / name, SCREENSHOTS / name):
        assert widget.grab().save(str(path)), path
        assert_usable_png(path)
