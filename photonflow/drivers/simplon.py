"""The SIMPLON API of a DECTRIS detector control unit (DCU), version 1.8.0, over HTTP.

Why: an EIGER2 or PILATUS4 is configured, armed and triggered through the DCU's REST interface
as DECTRIS' SIMPLON API reference (1.8.0) describes it: ``/{subsystem}/api/{version}/{config|
status|command}/{name}``; every value is read as SIMPLON's JSON description and written as
``{"value": ...}``. A refusal (HTTP 4xx/5xx) becomes ``DetectorError`` carrying the DCU's own
message; a connection that fails or times out becomes ``DetectorConnectionLost``. Nothing here
imports Tango.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from photonflow.errors import ConfigurationError, DetectorConnectionLost, DetectorError

API_VERSION = "1.8.0"


class SimplonClient:
    """One keep-alive HTTP connection to a DCU's SIMPLON API, safe to share between threads."""

    def __init__(self, url: str, timeout: float = 5.0, api_version: str = API_VERSION):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError(f"the DCU address must look like http://host[:port], got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.url = f"http://{self.host}:{self.port}"
        self.timeout = timeout
        self.api_version = api_version
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._connection.timeout = timeout or self.timeout
                if self._connection.sock is not None:
                    self._connection.sock.settimeout(self._connection.timeout)
                self._connection.request(method, path, data, headers)
                response = self._connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as error:
                self._drop_connection()
                cause = "timed out" if isinstance(error, (socket.timeout, TimeoutError)) else (
                    str(error) or type(error).__name__)
                raise DetectorConnectionLost(
                    f"no answer from the DCU at {self.url} ({method} {path}): {cause}"
                ) from None
        text = payload.decode(errors="replace").strip()
        if response.status >= 400:
            raise DetectorError(f"the DCU refused {method} {path} (HTTP {response.status}): {text or response.reason}")
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _path(self, subsystem: str, task: str, name: str) -> str:
        return f"/{subsystem}/api/{self.api_version}/{task}/{name}"

    def describe(self, subsystem: str, name: str) -> dict[str, Any]:
        """A config parameter's SIMPLON description: value, value_type, min, max, unit, access_mode."""
        return self._request("GET", self._path(subsystem, "config", name))

    def get(self, subsystem: str, name: str) -> Any:
        return self.describe(subsystem, name)["value"]

    def set(self, subsystem: str, name: str, value: Any) -> list[str]:
        """Write a config value; returns the parameters the DCU changed with it."""
        return self._request("PUT", self._path(subsystem, "config", name), {"value": value}) or []

    def status(self, subsystem: str, name: str) -> Any:
        return self._request("GET", self._path(subsystem, "status", name))["value"]

    def command(self, name: str, value: Any = None, timeout: float | None = None, subsystem: str = "detector") -> Any:
        body = None if value is None else {"value": value}
        return self._request("PUT", self._path(subsystem, "command", name), body, timeout)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def __enter__(self) -> SimplonClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
