"""Ending a photonflow Qt window the way operators end programs: closing it, Ctrl-C in its
terminal, or SIGTERM (``timeout``, a session ending, systemd), each a clean exit with status 0.

Why this is needed: Qt's event loop runs in C++, where Python's signal handlers never run, so
Ctrl-C did nothing; and SIGTERM's default action killed the process mid-loop, after which Taurus'
and PyTango's threads and Qt's objects were torn down in no safe order ("double free or
corruption", a segmentation fault, in 3 of 4 kills). Here a signal asks the loop to quit, a timer
lets the interpreter run its handlers every 200 ms, and once the loop has ended the window is
closed and the process leaves without the interpreter's teardown of those extension objects.
"""

from __future__ import annotations

import os
import signal
import sys

from taurus.external.qt import QtCore

SIGNAL_CHECK_MS = 200


def run_until_closed(app, window, ready: str = "") -> int:
    """Show ``window``, run ``app``'s loop until the window closes or SIGINT/SIGTERM comes, and
    exit the process with the loop's status. ``ready`` is printed once the window is shown (the
    line a supervisor or a test waits for)."""
    for number in (signal.SIGINT, signal.SIGTERM):
        # queued, not called: a quit() before the loop runs would be lost, and the loop run forever
        signal.signal(number, lambda *_: QtCore.QTimer.singleShot(0, app.quit))
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)  # control returns to Python, which runs pending signal handlers
    wake.start(SIGNAL_CHECK_MS)
    window.show()
    if ready:  # said from inside the loop: whoever reads it may signal at once
        QtCore.QTimer.singleShot(0, lambda: print(ready, flush=True))
    status = app.exec_()
    wake.stop()
    window.close()
    app.processEvents()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
