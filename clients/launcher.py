"""Starts and stops the suite the way a beamline runs it: a Tango database (pytango-db,
SQLite) and every device server as its own process.

Used by ``photonflow demo``/``up``/``down`` and by the integration tests, so the tests run
the servers exactly as the demo does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tango

from photonflow.clients.tango_database import apply_deployment
from photonflow.deployment import EMBEDDED_EVENT_BUS, Deployment, ServerSpec, simulator_environment
from photonflow.events.redis_server import EmbeddedRedis

# The variable that carries the event bus's URL to every server the suite starts (and to the
# deployment's properties, as ${PHOTONFLOW_EVENT_BUS}).
EVENT_BUS_VARIABLE = "PHOTONFLOW_EVENT_BUS"
# The suite's folder (logs, database, run/): a deployment names its trigger lines under it as
# ipc://${PHOTONFLOW_VAR}/run/<line>.trigger, so it must be set, absolute, before the deployment loads.
VAR_VARIABLE = "PHOTONFLOW_VAR"


def bind_host() -> str:
    """The interface servers listen on: ``PHOTONFLOW_BIND_HOST``, loopback unless a deployment says."""
    return os.environ.get("PHOTONFLOW_BIND_HOST", "127.0.0.1")


def orb_endpoint_arguments() -> list[str]:
    """A Tango server's request port (CORBA) and, following it, its ZeroMQ event ports, on ``bind_host``
    only, each on a free port."""
    return ["-ORBendPoint", f"giop:tcp:{bind_host()}:0"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def executable(name: str) -> str:
    """A console script of this environment (next to the running Python), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run 'make venv' (pip install -e .)")
    return found


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except Exception as error:  # noqa: BLE001 - not ready yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout} s" + (f": {last_error}" if last_error else ""))


JOB_ENGINE_VARIABLE = "PHOTONFLOW_JOB_ENGINE"


@dataclass
class ManagedProcess:
    name: str
    pid: int
    log: str
    group: bool = True  # the leader of its own process group (we started it); False: the Starter did


# Debian's tango-starter (apt install tango-starter): Astor's agent, which starts servers by level
STARTER_BINARY = "/usr/lib/tango/Starter"


def starter_binary() -> str | None:
    """The Tango Starter's executable: $PHOTONFLOW_STARTER, else Debian's, else None."""
    candidate = os.environ.get("PHOTONFLOW_STARTER", STARTER_BINARY)
    return candidate if os.access(candidate, os.X_OK) else None


def register_starter(database: tango.Database, host: str, start_ds_path: str) -> bool:
    """Register ``Starter/<host>`` with its device ``tango/admin/<host>`` and ``StartDsPath`` (where the
    servers' executables are), as Astor does. Re-adding the device of a running Starter unexports it:
    it is added only when missing. Returns True when it was added."""
    device = f"tango/admin/{host}"
    try:
        info = database.get_device_info(device)
        added = not (info.class_name == "Starter" and info.ds_full_name.lower() == f"starter/{host}".lower())
    except tango.DevFailed:
        added = True
    if added:
        entry = tango.DbDevInfo()
        entry.name, entry._class, entry.server = device, "Starter", f"Starter/{host}"
        database.add_device(entry)
    # photonflow up starts the levels itself, in order; a facility that wants its Starter to start
    # them at boot sets StartServersAtStartup to true (Jive)
    database.put_device_property(device, {"StartDsPath": [start_ds_path], "StartServersAtStartup": ["false"]})
    return added


@dataclass
class Suite:
    """The processes started for one session, and the database they use (``tango_host``).

    The suite never changes this process's TANGO_HOST: its servers get theirs through
    ``environment()``, and a client here names devices in full with ``device_url``."""

    tango_host: str
    var_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    event_bus: str = ""  # the URL servers publish to, once start_event_bus chose it
    _popens: dict[int, subprocess.Popen] = field(default_factory=dict, repr=False)

    def environment(self) -> dict[str, str]:
        """The environment of a process of this suite: this one's, with the suite's TANGO_HOST and its
        folder as PHOTONFLOW_VAR (absolute: where its trigger lines' ipc:// sockets are)."""
        return {**os.environ, "TANGO_HOST": self.tango_host, VAR_VARIABLE: str(Path(self.var_dir).resolve())}

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_dir = self.var_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name.replace('/', '_')}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.processes.append(ManagedProcess(name, process.pid, str(log_path)))
        self._popens[process.pid] = process
        return process

    def _check_alive(self, process: subprocess.Popen, name: str) -> None:
        if process.poll() is not None:
            log = next(p.log for p in self.processes if p.pid == process.pid)
            tail = Path(log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with code {process.returncode}; end of {log}:\n{tail}")

    def start_event_bus(self, setting: str = EMBEDDED_EVENT_BUS) -> str:
        """The event bus, before the servers: ``embedded`` starts a Redis-compatible server (with
        ReJSON and RediSearch) on loopback, stopped with the suite, the events on database 1 and
        blissdata's scans on 0; a URL is used as it is. Its URL goes into this process's
        environment as PHOTONFLOW_EVENT_BUS, and so to every server."""
        if setting == EMBEDDED_EVENT_BUS:
            server = EmbeddedRedis(self.var_dir / "eventbus", log_file=self.var_dir / "log" / "event_bus.log",
                                   host=bind_host())  # with a password beyond loopback
            server.start()
            # stopped like every other process of the suite (SIGTERM: it keeps nothing on disk)
            self.processes.append(ManagedProcess("event_bus", server.pid, str(server.log_file)))
            self._popens[server.pid] = server.process
            self.event_bus = server.event_bus_url
        else:
            self.event_bus = setting
        os.environ[EVENT_BUS_VARIABLE] = self.event_bus
        return self.event_bus

    def start_job_engine(self, workers: int = 2) -> str:
        """The DataManager's job engine: a Dask scheduler and ``workers`` workers on ``bind_host()``, as
        processes of the suite (stopped with it). Its address goes into this process's environment
        as PHOTONFLOW_JOB_ENGINE, and so to every server."""
        from photonflow.datamanager.jobs import EmbeddedDask

        engine = EmbeddedDask(self.var_dir / "dask", workers=workers, host=bind_host())
        address = engine.start()
        for name, process in engine.processes.items():
            log = str(self.var_dir / "dask" / f"{name}.log")
            self.processes.append(ManagedProcess(f"dask-{name}", process.pid, log))
            self._popens[process.pid] = process
        os.environ[JOB_ENGINE_VARIABLE] = address
        return address

    def start_web(self, catalogues: Path, controller: str = "", recorder: str = "", datamanager: str = "",
                  timeout: float = 30) -> str:
        """The web page (``photonflow-web``) beside the suite, on ``bind_host()`` and a free port, as a
        process of the suite; writing needs the token it keeps in ``<var>/run/web.token`` (mode
        0600). Returns its address."""
        host = bind_host()
        port = free_port(host)
        command = [executable("photonflow-web"), "--catalogues", str(catalogues), "--bind", host, "--port", str(port),
                   "--token-file", str(self.web_token_file), "--controller", controller, "--recorder", recorder,
                   "--datamanager", datamanager,
                   "--event-bus", self.event_bus if self.event_bus.startswith("redis") else ""]
        process = self._spawn("photonflow-web", command, self.environment())

        def answering():
            self._check_alive(process, "photonflow-web")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                return probe.connect_ex((host, port)) == 0

        wait_for(answering, timeout, "the web page")
        return f"http://{host}:{port}/"

    @property
    def web_token_file(self) -> Path:
        return self.var_dir / "run" / "web.token"

    def start_database(self, database_file: Path, port: int | None = None) -> None:
        """Start pytango-db's DataBaseds on ``bind_host()`` (loopback unless configured); its content
        persists in ``database_file``."""
        host = bind_host()
        port = port or free_port(host)
        database_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTANGO_DATABASE_NAME": str(database_file)}
        env.pop("TANGO_HOST", None)
        process = self._spawn(
            "DataBaseds", [executable("PyDatabaseds"), "--host", host, "--port", str(port), "2"], env
        )
        self.tango_host = f"{host}:{port}"

        def answering():
            self._check_alive(process, "the Tango database")
            return tango.Database(host, port).get_info()

        wait_for(answering, 30, f"Tango database on {self.tango_host}")

    def start_deployment(self, deployment: Deployment, database_file: Path) -> None:
        """An embedded database at ``database_file``, the deployment written to it, then its servers."""
        self.start_database(database_file)
        apply_deployment(self.database(), deployment)
        self.start_servers(deployment)

    def device_url(self, name: str) -> str:
        """The device's full name on this suite's database, as clients in this process name it (its
        TANGO_HOST, if any, may be another database's)."""
        return f"tango://{self.tango_host}/{name}"

    def database(self) -> tango.Database:
        host, port = self.tango_host.rsplit(":", 1)
        return tango.Database(host, int(port))

    def start_simulators(self, deployment: Deployment, timeout: float = 60) -> dict[str, str]:
        """Start the deployment's simulated hardware; returns (and sets in this process's
        environment) the variables their announcements define, for the servers' properties."""
        variables: dict[str, str] = {}
        for simulator in deployment.simulators:
            command = [executable(simulator.command[0]), *simulator.command[1:]]
            process = self._spawn(f"simulator_{simulator.name}", command, self.environment())
            log = Path(self.processes[-1].log)
            start = log.stat().st_size  # the log is appended to: read only this run's lines

            def announced(process=process, name=simulator.name, log=log, start=start):
                self._check_alive(process, name)
                with open(log, "rb") as text:
                    text.seek(start)
                    first = text.readline()
                return json.loads(first) if first.endswith(b"\n") else None

            variables.update(simulator_environment(simulator.name, wait_for(
                announced, timeout, f"simulator {simulator.name}", interval=0.1)))
        os.environ.update(variables)
        return variables

    def start_servers(self, deployment: Deployment, timeout: float = 60) -> list[ServerSpec]:
        """Start each server as its own process, then wait until all its devices answer.

        A server whose devices already answer (on a shared TANGO_HOST) is left running and
        not started twice; the servers skipped that way are returned.
        """
        running = [server for server in deployment.servers if _answers(server, self.device_url)]
        started = [(server, self._spawn_server(server)) for server in deployment.servers if server not in running]
        for server, process in started:
            self._wait_for_devices(server, process, timeout)
        self.wait_until_ready([server for server, _ in started], timeout)
        return running

    def wait_until_ready(self, servers: list[ServerSpec], timeout: float = 60) -> None:
        """Until no device of these servers is in FAULT or UNKNOWN (a Controller has contacted its
        peers, a Recorder opened its data root...): a suite is handed over ready, or with the reason
        it is not."""
        for server in servers:
            for device in server.devices:
                proxy = tango.DeviceProxy(self.device_url(device.name))

                def ready(proxy=proxy):
                    return proxy.state() not in (tango.DevState.FAULT, tango.DevState.UNKNOWN)

                try:
                    wait_for(ready, timeout, f"device {device.name} to leave FAULT", interval=0.1)
                except TimeoutError:
                    raise RuntimeError(
                        f"{device.name} is still {proxy.state()} after {timeout:g} s: {proxy.status()}"
                    ) from None

    def start_server(self, server: ServerSpec, timeout: float = 60) -> None:
        """(Re)start one server, e.g. after it was killed."""
        self._wait_for_devices(server, self._spawn_server(server), timeout)

    def _spawn_server(self, server: ServerSpec) -> subprocess.Popen:
        return self._spawn(
            server.name, [executable(server.executable), server.instance, *orb_endpoint_arguments()], self.environment()
        )

    def _wait_for_devices(self, server: ServerSpec, process: subprocess.Popen, timeout: float) -> None:
        for device in server.devices:
            def answering(name=device.name):
                self._check_alive(process, server.name)
                tango.DeviceProxy(self.device_url(name)).ping()
                return True

            wait_for(answering, timeout, f"device {device.name} of {server.name}", interval=0.2)

    def start_starter(self, host: str, binary: str, timeout: float = 30) -> tango.DeviceProxy:
        """Run the Tango Starter for ``host`` (registered first: register_starter), listening on
        bind_host() only, like every server it starts (omniORB reads ORBendPoint from the environment)."""
        env = {**self.environment(), "ORBendPoint": f"giop:tcp:{bind_host()}:0"}
        process = self._spawn(f"Starter/{host}", [binary, host], env)
        starter = tango.DeviceProxy(self.device_url(f"tango/admin/{host}"))

        def answering():
            self._check_alive(process, f"Starter {host}")
            starter.ping()
            return True

        wait_for(answering, timeout, f"Starter tango/admin/{host}", interval=0.2)
        starter.set_timeout_millis(15000)
        return starter

    def start_levels(self, deployment: Deployment, starter: tango.DeviceProxy, timeout: float = 60,
                     on_level: Callable[[int, list[str]], None] | None = None) -> None:
        """Have the Starter start the deployment's servers level by level, each level once every device
        of the one before answers; the servers it started are stopped with the suite."""
        levels: dict[int, list[ServerSpec]] = {}
        by_name = {server.name: server for server in deployment.servers}
        for entry in deployment.starter:
            if entry.level > 0:
                levels.setdefault(entry.level, []).append(by_name[entry.server])
        for level in sorted(levels):
            # DevStart, one server after the other: a Starter lists (and DevStartAll starts) only servers
            # that already ran on its host once; DevStart starts any server its StartDsPath holds
            for server in levels[level]:
                try:
                    starter.command_inout("DevStart", server.name)
                except tango.DevFailed as error:
                    raise RuntimeError(f"the Tango Starter cannot start {server.name} (level {level}): "
                                       f"{error.args[0].desc.strip()}") from None
            for server in levels[level]:
                self._wait_for_started(starter, server, level, timeout)
                pid = wait_for(lambda name=server.name: self.database().get_device_info(f"dserver/{name}").pid or None,
                               timeout, f"the process id of {server.name} in the database")
                # stopped right after the Starter (which stop() ends first, so it restarts nothing)
                starter_at = max((i for i, p in enumerate(self.processes) if p.name.startswith("Starter/")),
                                 default=len(self.processes))
                self.processes.insert(starter_at, ManagedProcess(server.name, pid, "", group=False))
            if on_level is not None:
                on_level(level, [server.name for server in levels[level]])
        self.wait_until_ready([server for servers in levels.values() for server in servers], timeout)

    def _wait_for_started(self, starter: tango.DeviceProxy, server: ServerSpec, level: int, timeout: float) -> None:
        """Until every device of a server the Starter started answers; a server that ended, or never
        answered, fails with the Starter's own record of it (what the server wrote where the Starter
        keeps its output), not only a timeout."""
        deadline = time.monotonic() + timeout
        seen_running = False
        while not _answers(server, self.device_url):
            running = server.name in servers_running_on_this_host([server])
            seen_running = seen_running or running
            ended = seen_running and not running
            if ended or time.monotonic() > deadline:
                what = "ended" if ended else f"did not answer within {timeout:g} s"
                raise RuntimeError(f"{server.name}, started by the Tango Starter (level {level}), {what}; "
                                   f"the Starter's log of it: {_starter_log(starter, server.name)}")
            time.sleep(0.2)

    def kill(self, server_name: str) -> None:
        """SIGKILL a server, as a crash would (for tests of recovery)."""
        for managed in [p for p in self.processes if p.name == server_name]:
            os.killpg(managed.pid, signal.SIGKILL)
            popen = self._popens.pop(managed.pid, None)
            if popen is not None:
                popen.wait(10)
            self.processes.remove(managed)

    def stop(self, timeout: float = 10) -> None:
        """Stop servers first, the database last; SIGKILL whatever ignores SIGTERM."""
        for managed in reversed(self.processes):
            if not managed.group:  # the Starter started it with SIGTERM blocked: its admin device's Kill
                try:
                    admin = tango.DeviceProxy(self.device_url(f"dserver/{managed.name}"))
                    admin.set_timeout_millis(3000)
                    admin.command_inout("Kill")
                except tango.DevFailed:
                    pass  # gone already, or the database is: SIGTERM, then SIGKILL
            _terminate(managed.pid, self._popens.get(managed.pid), timeout, managed.group)
        self.processes.clear()
        self._popens.clear()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "tango_host": self.tango_host,
            "event_bus": self.event_bus,
            "processes": [p.__dict__ for p in self.processes],
        }, indent=2))

    @classmethod
    def load(cls, path: Path, var_dir: Path) -> Suite:
        data = json.loads(path.read_text())
        return cls(data["tango_host"], var_dir, [ManagedProcess(**p) for p in data["processes"]],
                   event_bus=data.get("event_bus", ""))


def var_directory(instance: str | None = None) -> Path:
    """The suite's folder (PHOTONFLOW_VAR, else ./var, or ./var/<instance> for a suite of its own
    instance), made absolute in this process's environment too: a deployment's ${PHOTONFLOW_VAR} (its
    trigger lines, ipc://.../run/omega.trigger) then names the same folder for every server whatever
    its working directory, and two suites never share one."""
    folder = Path(os.environ.get("PHOTONFLOW_VAR", f"var/{instance}" if instance else "var")).resolve()
    os.environ["PHOTONFLOW_VAR"] = str(folder)
    return folder


def prepare_environment(var_dir: Path, config: str | None = None) -> None:
    """The variables a deployment file may use, defaulted as ``make up`` does."""
    os.environ.setdefault("PHOTONFLOW_DATA_ROOT", str(var_dir / "data"))
    if config:  # files a deployment names (e.g. a Standardizer's mapping) sit beside it
        os.environ.setdefault("PHOTONFLOW_CONFIG_DIR", str(Path(config).resolve().parent))


def panel_deployment(config: str | None) -> Deployment | None:
    """For a panel: the deployment ``config`` names (as ``make up`` was given it), and TANGO_HOST
    set to the database of the suite ``make up`` started when it is not set already."""
    if not os.environ.get("TANGO_HOST"):
        suite = running_suite()
        if suite is not None:
            os.environ["TANGO_HOST"] = suite.tango_host
    if not config:
        return None
    from photonflow.deployment import load_deployment_file

    prepare_environment(var_directory(), config)
    return load_deployment_file(config)


def running_suite() -> Suite | None:
    """The suite ``photonflow up`` started in this folder (``var/run/suite.json``), or None."""
    state_file = var_directory() / "run" / "suite.json"
    return Suite.load(state_file, var_directory()) if state_file.exists() else None


def servers_running_on_this_host(servers: Iterable[ServerSpec]) -> dict[str, int]:
    """Which of these servers some process of this computer runs, found as a Tango Starter finds them:
    ``<executable> <instance>`` at the start of its command line (after the Python that runs a console
    script). Returns {server name: pid}."""
    wanted = {(server.executable, server.instance): server.name for server in servers}
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = [part.decode(errors="replace") for part in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue  # ended meanwhile, or not ours to read
        for position in range(min(2, len(arguments) - 1)):
            name = wanted.get((Path(arguments[position]).name, arguments[position + 1]))
            if name is not None:
                found.setdefault(name, int(entry.name))
                break
    return found


def _starter_log(starter: tango.DeviceProxy, server_name: str, limit: int = 1500) -> str:
    """The end of what a server wrote to the log its Starter keeps (DevReadLog: the file's path, the
    start's date, then the server's output)."""
    try:
        text = starter.command_inout("DevReadLog", server_name)
    except tango.DevFailed as error:
        return f"(the Starter could not read it: {error.args[0].desc.strip()})"
    path, _, output = text.partition("\n")
    output = " ".join(line.strip() for line in output.splitlines()[1:] if line.strip())  # after the date
    return f"{output[-limit:] or '(empty)'} ({path})"


def _answers(server: ServerSpec, device_url: Callable[[str], str]) -> bool:
    """True when every device of the server is exported and answers a ping."""
    try:
        for device in server.devices:
            tango.DeviceProxy(device_url(device.name)).ping()
    except tango.DevFailed:
        return False
    return True


def _alive(pid: int) -> bool:
    """Running (a zombie no parent of ours will reap, e.g. a server the Starter started, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _terminate(pid: int, popen: subprocess.Popen | None, timeout: float, group: bool = True) -> None:
    if pid <= 0:  # no process known: kill(0) or kill(-1) would signal our own group, or every process
        return
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.05)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if popen is not None:
        popen.wait(5)
