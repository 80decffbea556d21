"""The one way every stream codec looks at a message part's bytes."""

from __future__ import annotations

from typing import Any


def as_bytes(part: Any) -> memoryview:
    """A flat byte view of a bytes-like object or a ZeroMQ frame, without copying."""
    view = part.buffer if hasattr(part, "buffer") else memoryview(part)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
