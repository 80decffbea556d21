"""The embedded event bus needs a password exactly when it is bound beyond loopback: generated,
kept in its run directory for its owner only, never on the server's command line."""

from __future__ import annotations

import stat

import psutil
import pytest
import redis

from photonflow.events.redis_server import EmbeddedRedis, is_loopback, redacted


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                                ("beamline-ctrl", False)])
def test_a_server_bound_beyond_loopback_requires_a_password(host, loopback, tmp_path):
    assert is_loopback(host) is loopback
    assert EmbeddedRedis(tmp_path, host=host).require_password is not loopback


def test_a_password_protected_server_refuses_a_client_without_it_and_never_shows_it_to_ps(tmp_path):
    # bound to loopback, as every test server, but with the password it gets beyond loopback
    with EmbeddedRedis(tmp_path / "bus", require_password=True) as server:
        password = (tmp_path / "bus" / "password").read_text().strip()
        assert server.password == password and len(password) >= 32
        assert server.url == f"redis://:{password}@127.0.0.1:{server.port}"
        for private in (server.password_file, tmp_path / "bus" / "redis.conf"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        assert redis.Redis.from_url(server.url).ping()
        assert password not in " ".join(psutil.Process(server.pid).cmdline())
        assert redacted(server.event_bus_url) == f"redis://:***@127.0.0.1:{server.port}/1"


def test_on_loopback_no_password_is_made(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        assert server.password is None and not server.password_file.exists()
        assert server.url == f"redis://127.0.0.1:{server.port}" == redacted(server.url)
        assert redis.Redis(host="127.0.0.1", port=server.port).ping()
