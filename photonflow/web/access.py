"""Who may read and who may write, as a facility needs it (plain Python, tested without a server):

- reading needs no login: the run table is what the team, at home or on the next shift, reads;
- writing (comments) needs the suite's token (``Authorization: Bearer <token>``, the token in a
  file only the suite's account reads) or the facility's login, which a reverse proxy in front
  has done and says in a header it sets (``user_header``, e.g. ``X-Remote-User``); a browser's own
  copy of that header is never trusted unless a proxy is configured;
- the page binds to loopback unless configured, and beyond loopback only with authentication on.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from photonflow.errors import ConfigurationError

TOKEN_BYTES = 24


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0 and every other address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def ensure_token(path: Path) -> str:
    """The suite's write token, made once (random, file mode 0600) and read back after."""
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(token + "\n")
    return token


@dataclass(frozen=True)
class Access:
    """``token``: the write token ("" for none); ``user_header``: the header a trusted reverse proxy
    sets to the logged-in user ("" for none)."""

    token: str = ""
    user_header: str = ""

    @property
    def authenticated(self) -> bool:
        return bool(self.token or self.user_header)

    def check_bind(self, host: str) -> None:
        """Refuse an address beyond loopback unless writing needs authentication."""
        if not is_loopback(host) and not self.authenticated:
            raise ConfigurationError(
                f"the web page would listen on {host}, beyond this computer, with no authentication: give it a "
                "token file (--token-file) or the header your reverse proxy sets to the logged-in user "
                "(--user-header X-Remote-User), or keep it on 127.0.0.1 behind the proxy", reason="UnsafeBind")

    def writer(self, headers: Mapping[str, str]) -> str | None:
        """Who writes, from a request's headers: the proxy's user, "token" for a valid token, None
        when neither (the write is refused)."""
        if self.user_header:
            user = (headers.get(self.user_header) or "").strip()
            if user:
                return user
        if self.token:
            given = (headers.get("Authorization") or "").strip()
            if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), self.token.encode()):
                return "token"
        return None
