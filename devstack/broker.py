"""Run a real, throwaway Apache Kafka broker on this machine without Docker.

This module owns the local Kafka used by development, the demo and the test-suite:

* resolving the broker's jars from Maven Central (``pom.xml`` next to this file) into a cache
  outside the work tree: ``${XDG_CACHE_HOME:-~/.cache}/signout-worker/kafka-<version>/libs``;
* rendering ``server.properties`` (single node, KRaft, combined broker + controller, loopback
  only) into a state dir, formatting storage and starting ``kafka.Kafka`` detached;
* readiness (TCP connect, then a raw Kafka ``ApiVersions`` v0 round trip) and shutdown.

Standard library only: it runs before any virtualenv exists. Every ``up`` starts from empty
data. ``KAFKA_VERSION`` picks the release; ``KAFKA_BOOTSTRAP_SERVERS`` means "use that broker
and start nothing".

CLI::

    python3 -m devstack.broker up     [--state-dir DIR]   # bootstrap is the last line
    python3 -m devstack.broker down   [--state-dir DIR]
    python3 -m devstack.broker status [--state-dir DIR]

API (the caller stops what it starts; there is no atexit hook)::

    broker = start(Path(tmp), version=None)   # -> Broker(bootstrap, pid, log_path, ...)
    broker = start(Path(tmp), secured=True)   # also SASL_PLAINTEXT (PLAIN) and SSL listeners:
    # broker.sasl_bootstrap / broker.ssl_bootstrap / broker.ca_file, user SASL_USER/SASL_PASSWORD
    broker.halt(); broker.resume()         # an outage: down, then back on the same ports and data
    broker.stop()
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

DEFAULT_VERSION = "4.2.1"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
HOST = "127.0.0.1"

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".kafka"
POM = HERE / "pom.xml"
TEMPLATE = HERE / "server.properties.template"
LOG4J2_CONFIG = HERE / "log4j2.properties"
RELOAD4J_CONFIG = HERE / "log4j.properties"

# Kafka's own log4j2 version per release (exact version first, then "major.minor").
_LOG4J2_VERSIONS = {"4.2.0": "2.25.3", "4.2": "2.25.4", "4.1": "2.24.3", "4.0": "2.24.3"}
_LOG4J2_NEWEST = "2.25.4"
_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_BIND_ERRORS = ("Address already in use", "BindException", "Failed to bind")

# The secured listeners' fixed test identity (loopback-only throwaway brokers).
SASL_USER = "alice"
SASL_PASSWORD = "alice-secret"  # noqa: S105 - a test broker's fixed user
_KEYSTORE_PASSWORD = "kafka-local"  # noqa: S105 - a throwaway self-signed key

PID_FILE = "broker.pid"
BOOTSTRAP_FILE = "bootstrap"
OUT_FILE = "broker.out"


class KafkaLocalError(RuntimeError):
    """The broker could not be resolved, started, reached or stopped."""


def log(message: str) -> None:
    """Progress goes to stderr; stdout is reserved for the bootstrap address."""
    print(f"[kafka-local] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- versions & tools


def selected_version(version: str | None = None) -> str:
    return version or os.environ.get("KAFKA_VERSION") or DEFAULT_VERSION


def uses_log4j2(version: str) -> bool:
    return int(version.split(".", 1)[0]) >= 4


def log4j2_version(version: str) -> str:
    minor = ".".join(version.split(".")[:2])
    return _LOG4J2_VERSIONS.get(version) or _LOG4J2_VERSIONS.get(minor) or _LOG4J2_NEWEST


def _tool(name: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if name == "java" and java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which(name)
    if not found:
        raise KafkaLocalError(f"'{name}' not found on PATH")
    return found


# --------------------------------------------------------------------------- jar cache


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "signout-worker"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _resolve_fingerprint(version: str) -> dict[str, str]:
    return {
        "kafka_version": version,
        "logging": f"log4j2-{log4j2_version(version)}" if uses_log4j2(version) else "reload4j",
        "pom_sha256": hashlib.sha256(POM.read_bytes()).hexdigest(),
    }


def _maven_command(version: str, libs: Path) -> list[str]:
    cmd = [
        _tool("mvn"),
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
        f"-Dkafka.version={version}",
    ]
    if uses_log4j2(version):
        return [*cmd, f"-Dlog4j2.version={log4j2_version(version)}"]
    return [*cmd, "-Dkafka.logging=reload4j"]


def _run_maven(version: str, libs: Path) -> None:
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    result = subprocess.run(
        _maven_command(version, libs),
        cwd=libs.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not (libs / f"kafka_2.13-{version}.jar").is_file():
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        tail = "\n".join(output.splitlines()[-40:])
        raise KafkaLocalError(f"resolving Kafka {version} with Maven failed:\n{tail}")


def _cache_valid(marker: Path, wanted: dict[str, str], main_jar: Path) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == wanted and main_jar.is_file())
    except (OSError, ValueError):
        return False


def ensure_jars(version: str) -> Path:
    """Return the libs dir for ``version``, resolving it with Maven once (locked, marked)."""
    home = cache_root() / f"kafka-{version}"
    libs, marker = home / "libs", home / "resolved.json"
    wanted = _resolve_fingerprint(version)
    with _locked(home / ".lock"):
        if _cache_valid(marker, wanted, libs / f"kafka_2.13-{version}.jar"):
            return libs
        marker.unlink(missing_ok=True)
        log(f"resolving Kafka {version} jars from Maven Central into {libs} ...")
        began = time.monotonic()
        _run_maven(version, libs)
        marker.write_text(json.dumps(wanted, indent=2) + "\n")
        log(f"resolved {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - began:.1f}s")
    return libs


# --------------------------------------------------------------------------- kafka protocol probe


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def api_versions_probe(host: str, port: int, timeout: float = 2.0) -> int:
    """Send ApiVersions v0 and return how many APIs the broker lists; raise if malformed."""
    correlation_id, client_id = 0x51A7, b"kafka-local"
    # Request header v1: api_key=18, api_version=0, correlation_id, client_id; v0 body is empty.
    request = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 10 <= size <= 1 << 20:
            raise ConnectionError(f"implausible ApiVersions response size {size}")
        payload = _recv_exact(sock, size)
    got_id, error_code, count = struct.unpack_from(">ihi", payload)
    if got_id != correlation_id or error_code != 0 or count <= 0 or size != 10 + 6 * count:
        raise ConnectionError(f"bad ApiVersions response (error={error_code}, apis={count})")
    return int(count)


def tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_ready(host: str, port: int) -> bool:
    if not tcp_reachable(host, port, timeout=1.0):
        return False
    try:
        api_versions_probe(host, port)
    except (OSError, struct.error):
        return False
    return True


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_broker(pid: int, properties: Path) -> bool:
    """Guard against pid reuse: the process must be kafka.Kafka on this state dir's config."""
    if not Path("/proc/self").exists():  # no procfs (e.g. macOS): trust the pid file
        return _pid_alive(pid)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in argv and str(properties).encode() in argv


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(
    pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM the broker's process group, wait ``timeout`` s, then SIGKILL it."""
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, proc, timeout):
        return
    log(f"broker pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    _signal_group(pid, signal.SIGKILL)
    if not _wait_gone(pid, proc, 10.0):
        raise KafkaLocalError(f"broker pid {pid} survived SIGKILL")


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the broker when the starting thread exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- the broker


class Broker:
    """A running broker. ``pid``/``log_path`` are None for an external one (env-provided).

    A plain class rather than a dataclass so the module also works when loaded with
    ``importlib.util.module_from_spec`` without registering it in ``sys.modules``.
    """

    def __init__(
        self,
        bootstrap: str,
        pid: int | None,
        log_path: Path | None,
        state_dir: Path | None = None,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.pid = pid
        self.log_path = log_path
        self.state_dir = state_dir
        self._proc = proc
        # Set only by ``start(..., secured=True)``.
        self.sasl_bootstrap: str | None = None
        self.ssl_bootstrap: str | None = None
        self.ca_file: Path | None = None
        # Set by ``start``: how to launch it again (``resume``).
        self.java: list[str] | None = None
        self.die_with_parent = False

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, pid={self.pid}, log_path={self.log_path})"

    @property
    def external(self) -> bool:
        return self.pid is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker (idempotent; a no-op for an external broker)."""
        if self.pid is None or self.state_dir is None:
            return
        if self._proc is not None or _is_our_broker(self.pid, self.state_dir / "server.properties"):
            terminate(self.pid, self._proc, timeout)
        for name in (PID_FILE, BOOTSTRAP_FILE):
            (self.state_dir / name).unlink(missing_ok=True)

    def halt(self, *, crash: bool = True) -> None:
        """Take the broker down but keep its data, config and ports, for ``resume``.

        ``crash`` sends SIGKILL (no controlled shutdown, like a lost machine); else SIGTERM.
        """
        if self.pid is None:
            raise KafkaLocalError("an external broker cannot be halted")
        if crash:
            _signal_group(self.pid, signal.SIGKILL)
            if not _wait_gone(self.pid, self._proc, 10.0):
                raise KafkaLocalError(f"broker pid {self.pid} survived SIGKILL")
        else:
            terminate(self.pid, self._proc)

    def resume(self) -> None:
        """Start the halted broker again on the same ports, with the same data."""
        if self.java is None or self.state_dir is None:
            raise KafkaLocalError("only a broker started by ``start`` can be resumed")
        properties = self.state_dir / "server.properties"
        proc = _launch(self.java, properties, self.die_with_parent)
        self.pid, self._proc = proc.pid, proc
        (self.state_dir / PID_FILE).write_text(f"{proc.pid}\n")
        port = int(self.bootstrap.rpartition(":")[2])
        problem = _await_ready(proc, port, self.state_dir)
        if problem is not None:
            raise KafkaLocalError(f"broker did not come back: {problem}")


def _external_bootstrap() -> str | None:
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


def _check_external(bootstrap: str) -> Broker:
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if host and port.isdigit() and tcp_reachable(host.strip("[]"), int(port)):
            return Broker(bootstrap=bootstrap, pid=None, log_path=None)
    raise KafkaLocalError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} is not reachable")


def _recorded_pid(state_dir: Path) -> int | None:
    """The pid in ``state_dir`` if it is still our broker (pid reuse is checked), else None."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_broker(pid, state_dir / "server.properties") else None


def running(state_dir: Path) -> Broker | None:
    """The ready broker recorded in ``state_dir`` if it is still alive, else None."""
    state_dir = state_dir.resolve()
    pid = _recorded_pid(state_dir)
    try:
        bootstrap = (state_dir / BOOTSTRAP_FILE).read_text().strip()
    except OSError:
        return None
    if pid is None or not bootstrap:
        return None
    return Broker(bootstrap, pid, state_dir / "logs" / "server.log", state_dir)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cluster_id() -> str:
    """A Kafka ``Uuid`` string (URL-safe base64 of 16 random bytes) like StorageTool's."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def _render_properties(state_dir: Path, port: int, controller_port: int) -> Path:
    text = string.Template(TEMPLATE.read_text()).substitute(
        port=port, controller_port=controller_port, data_dir=state_dir / "data"
    )
    path = state_dir / "server.properties"
    path.write_text(text)
    return path


_GENKEY = (
    *("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30"),
    *("-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-storetype", "PKCS12"),
)


def _secure_listeners(
    properties: Path, port: int, controller_port: int, sasl: int, ssl: int
) -> Path:
    """Add SASL_PLAINTEXT (PLAIN) and SSL listeners; later keys override the template's."""
    state_dir = properties.parent
    keystore, ca_file = state_dir / "broker.p12", state_dir / "ca.pem"
    keytool = [_tool("keytool"), "-storepass", _KEYSTORE_PASSWORD, "-keystore", str(keystore)]
    keystore.unlink(missing_ok=True)
    subprocess.run(
        [*keytool, *_GENKEY, "-keypass", _KEYSTORE_PASSWORD], capture_output=True, check=True
    )
    export = ["-exportcert", "-rfc", "-alias", "broker", "-file", str(ca_file)]
    subprocess.run([*keytool, *export], capture_output=True, check=True)
    users = f'username="{SASL_USER}" password="{SASL_PASSWORD}" user_{SASL_USER}="{SASL_PASSWORD}"'
    served = f"PLAINTEXT://{HOST}:{port},SASL_PLAINTEXT://{HOST}:{sasl},SSL://{HOST}:{ssl}"
    lines = [
        "# Secured listeners (start(secured=True))",
        f"listeners={served},CONTROLLER://{HOST}:{controller_port}",
        f"advertised.listeners={served}",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL",
        "sasl.enabled.mechanisms=PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
        f"ssl.keystore.location={keystore}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.password={_KEYSTORE_PASSWORD}",
        f"ssl.key.password={_KEYSTORE_PASSWORD}",
    ]
    with properties.open("a") as out:
        out.write("\n" + "\n".join(lines) + "\n")
    return ca_file


def _java_base(version: str, libs: Path, state_dir: Path) -> list[str]:
    if uses_log4j2(version):
        logging_opt = f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}"
    else:
        logging_opt = f"-Dlog4j.configuration=file:{RELOAD4J_CONFIG}"
    return [
        _tool("java"),
        *_JVM_OPTS,
        f"-Dkafka.logs.dir={state_dir / 'logs'}",
        logging_opt,
        "-cp",
        f"{libs}/*",
    ]


def _format_storage(java: list[str], properties: Path) -> None:
    cmd = [*java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(properties)]
    result = subprocess.run(cmd, cwd=properties.parent, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaLocalError(f"StorageTool format failed:\n{result.stdout}{result.stderr}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _logs_text(state_dir: Path) -> str:
    parts = []
    for path in (state_dir / OUT_FILE, state_dir / "logs" / "server.log"):
        if path.is_file() and path.stat().st_size:
            parts.append(f"--- last lines of {path} ---\n{_tail(path)}")
    return "\n".join(parts) or "(the broker wrote no log)"


def _bind_failed(state_dir: Path) -> bool:
    text = "\n".join(_tail(p, 400) for p in (state_dir / OUT_FILE, state_dir / "logs/server.log"))
    return any(marker in text for marker in _BIND_ERRORS)


def _launch(java: list[str], properties: Path, die_with_parent: bool) -> subprocess.Popen[bytes]:
    state_dir = properties.parent
    with (state_dir / OUT_FILE).open("wb") as out:
        return subprocess.Popen(
            [*java, "kafka.Kafka", str(properties)],
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def _await_ready(proc: subprocess.Popen[bytes], port: int, state_dir: Path) -> str | None:
    """None when ready; otherwise "bind" (retry on new ports) or a failure description."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "bind" if _bind_failed(state_dir) else f"broker exited with {proc.returncode}"
        if kafka_ready(HOST, port):
            return None
        if _bind_failed(state_dir):
            return "bind"
        time.sleep(0.2)
    return f"broker not ready after {READY_TIMEOUT_S:.0f}s"


def _prepare_state_dir(state_dir: Path) -> None:
    for name in ("data", "logs"):
        shutil.rmtree(state_dir / name, ignore_errors=True)
        (state_dir / name).mkdir(parents=True)
    for name in (PID_FILE, BOOTSTRAP_FILE, OUT_FILE):
        (state_dir / name).unlink(missing_ok=True)


def _attempt(
    version: str, libs: Path, state_dir: Path, die_with_parent: bool, secured: bool = False
) -> Broker | None:
    """One start on fresh ports and fresh data; None means "ports were taken, try again"."""
    _prepare_state_dir(state_dir)
    port, controller_port, *secure_ports = _free_ports(4 if secured else 2)
    properties = _render_properties(state_dir, port, controller_port)
    ca_file = (
        _secure_listeners(properties, port, controller_port, *secure_ports) if secured else None
    )
    java = _java_base(version, libs, state_dir)
    _format_storage(java, properties)
    began = time.monotonic()
    proc = _launch(java, properties, die_with_parent)
    (state_dir / PID_FILE).write_text(f"{proc.pid}\n")
    try:
        problem = _await_ready(proc, port, state_dir)
    except BaseException:  # e.g. KeyboardInterrupt: never leave a half-started broker behind
        terminate(proc.pid, proc, timeout=5.0)
        (state_dir / PID_FILE).unlink(missing_ok=True)
        raise
    if problem is None:
        bootstrap = f"{HOST}:{port}"
        (state_dir / BOOTSTRAP_FILE).write_text(bootstrap + "\n")
        log(
            f"Kafka {version} ready at {bootstrap} in {time.monotonic() - began:.1f}s "
            f"(pid {proc.pid}, log {state_dir / 'logs' / 'server.log'})"
        )
        broker = Broker(bootstrap, proc.pid, state_dir / "logs" / "server.log", state_dir, proc)
        broker.java, broker.die_with_parent = java, die_with_parent
        if ca_file is not None:
            broker.sasl_bootstrap, broker.ssl_bootstrap = (f"{HOST}:{p}" for p in secure_ports)
            broker.ca_file = ca_file
        return broker
    details = _logs_text(state_dir)
    terminate(proc.pid, proc, timeout=5.0)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    if problem == "bind":
        log(f"ports {port}/{controller_port} were taken; retrying on new ports")
        return None
    raise KafkaLocalError(f"Kafka {version} failed to start: {problem}\n{details}")


def start(
    state_dir: Path,
    version: str | None = None,
    *,
    die_with_parent: bool = False,
    secured: bool = False,
) -> Broker:
    """Start a fresh single-node broker whose files live under ``state_dir``.

    Honours ``KAFKA_BOOTSTRAP_SERVERS`` (returns an external ``Broker`` whose ``stop()`` is a
    no-op) and returns the broker already running in ``state_dir`` if there is one.
    ``die_with_parent`` (Linux) SIGTERMs the broker when the *thread* that started it exits;
    only use it from a long-lived thread such as the main thread of a test session.
    ``secured`` also opens a SASL_PLAINTEXT (PLAIN, user ``SASL_USER``) and an SSL listener
    (self-signed key made with ``keytool``; its certificate is ``broker.ca_file``).
    """
    external = _external_bootstrap()
    if external:
        return _check_external(external)
    version = selected_version(version)
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    libs = ensure_jars(version)
    with _locked(state_dir / ".lock"):
        existing = running(state_dir)
        if existing is not None:
            log(f"a broker is already running in {state_dir} (pid {existing.pid})")
            return existing
        stop(state_dir)  # a broker left half-started by a launcher that died
        for _ in range(START_ATTEMPTS):
            broker = _attempt(version, libs, state_dir, die_with_parent, secured)
            if broker is not None:
                return broker
    raise KafkaLocalError(f"could not bind free ports after {START_ATTEMPTS} attempts")


def stop(state_dir: Path) -> bool:
    """Stop the broker recorded in ``state_dir`` (ready or not); False if none was running."""
    state_dir = state_dir.resolve()
    pid = _recorded_pid(state_dir)
    if pid is not None:
        terminate(pid)
    for name in (PID_FILE, BOOTSTRAP_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return pid is not None


# --------------------------------------------------------------------------- CLI


def _cmd_up(state_dir: Path) -> int:
    broker = start(state_dir)
    print(broker.bootstrap, flush=True)
    return 0


def _cmd_down(state_dir: Path) -> int:
    if _external_bootstrap():
        log("KAFKA_BOOTSTRAP_SERVERS is set: nothing to stop")
        return 0
    began = time.monotonic()
    if stop(state_dir):
        log(f"broker stopped in {time.monotonic() - began:.1f}s")
    else:
        log(f"no broker running in {state_dir.resolve()}")
    return 0


def _cmd_status(state_dir: Path) -> int:
    external = _external_bootstrap()
    broker = _check_external(external) if external else running(state_dir)
    if broker is None:
        log(f"no broker running in {state_dir.resolve()}")
        return 1
    print(broker.bootstrap, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the broker's config, data and logs live ({DEFAULT_STATE_DIR})",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a half-started broker is stopped rather than orphaned.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    commands = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}
    try:
        return commands[args.command](args.state_dir)
    except KafkaLocalError as error:
        log(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
