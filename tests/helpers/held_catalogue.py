"""Another process holding a catalogue with ``BEGIN EXCLUSIVE`` (a backup, a careless script) until the
test lets it go: longer than a DataManager's busy timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HOLDER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("held", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
    db.close()
""")


class HeldCatalogue:
    """Held once constructed, until ``release()`` (also on leaving a ``with``)."""

    def __init__(self, path: str | Path):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "held":
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"no process could hold {path}")

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.communicate("go\n", timeout=30)

    def __enter__(self) -> HeldCatalogue:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
