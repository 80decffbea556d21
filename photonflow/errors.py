"""Domain exceptions of the core.

Each carries a short ``reason`` (a stable, machine-readable word that the Tango layer puts
in ``DevFailed.reason``) and a message that tells the operator what to fix.
"""


class PhotonflowError(Exception):
    """Base of every error the core raises on purpose."""

    reason = "PhotonflowError"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigurationError(PhotonflowError):
    """A request or configuration value the operator must correct."""

    reason = "InvalidConfiguration"


class StateError(PhotonflowError):
    """A command that is not allowed in the current state."""

    reason = "NotAllowedInThisState"


class FilePathError(PhotonflowError):
    """A data file path that is outside the data root, or already exists."""

    reason = "InvalidFilePath"


class StreamMessageError(PhotonflowError):
    """A stream message that does not follow the protocol; it is rejected and counted."""

    reason = "MalformedStreamMessage"


class RecordingError(PhotonflowError):
    """Writing the data file failed (disk, permissions...)."""

    reason = "RecordingFailed"


class DetectorError(PhotonflowError):
    """The detector (or its control unit) refused a request; the message is its own."""

    reason = "DetectorError"


class DetectorConnectionLost(PhotonflowError):
    """The detector did not answer: connection refused, dropped or timed out."""

    reason = "DetectorConnectionLost"


class EventServerError(PhotonflowError):
    """The embedded event-bus server (Redis-compatible) could not be found or did not start."""

    reason = "EventServerNotStarted"


class EventBusError(PhotonflowError):
    """Publishing to (or reading from) the event bus failed: broker down, refused, timed out.

    Callers that publish after the data is safely written record it and carry on: a bus that
    is down never fails an acquisition.
    """

    reason = "EventBusUnavailable"
