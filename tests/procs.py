"""Starting and stopping the real processes the tests run against. Every process started here is stopped here."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import re

import attrs

from trio_sos.agent.binary import agent_binary

READY_TIMEOUT = 15.0

# What a server must never write to its log during a test, unless the test says it expects it (``allow_log``):
# Python tracebacks, ERROR-level lines (the node logs every failed GC pass and every 500 at ERROR), and what
# AddressSanitizer/UBSan print (the agent's stderr is part of the node's log when the node supervises it).
LOG_PROBLEMS = re.compile(
    r"Traceback \(most recent call last\)|^\S+ ERROR |ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:",
    re.MULTILINE,
)


def log_problems(text: str, allowed: list[re.Pattern] | tuple = ()) -> list[str]:
    """The lines of a server log that show a problem (see LOG_PROBLEMS), those matching ``allowed`` aside."""
    found = []
    for match in LOG_PROBLEMS.finditer(text):
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        line = text[start:end if end >= 0 else len(text)]
        if not any(pattern.search(line) for pattern in allowed):
            found.append(line)
    return found


def check_log_file(path: Path, allowed: list[re.Pattern] | tuple = (), what: str = "server") -> None:
    """Fail (AssertionError) if the log at ``path`` shows a problem."""
    text = path.read_text(errors="replace") if path.exists() else ""
    problems = log_problems(text, allowed)
    if problems:
        raise AssertionError(f"{what} log {path} shows a problem: {problems[0]!r}\n--- log tail ---\n{text[-6000:]}")


def read_ready_line(proc: subprocess.Popen, timeout: float = READY_TIMEOUT) -> str:
    """Wait for the ``READY host:port`` line a freshly started agent prints on stdout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no READY line from pid {proc.pid} within {timeout}s (got {line!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            byte = os.read(fd, 1)
            if not byte:
                raise RuntimeError(f"pid {proc.pid} exited before READY (code {proc.wait()}), got {line!r}")
            line += byte
    text = line.decode().strip()
    assert text.startswith("READY "), text
    return text.split(" ", 1)[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    code = proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return code


@attrs.define
class AgentProcess:
    """A real C agent on 127.0.0.1 with its own data dir; ``restart`` keeps the data dir and the port."""

    base: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    address: str = ""
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "agent.log"

    def start(self, crash_at: str | None = None) -> AgentProcess:
        """Start (again) on the same data dir and port; ``crash_at`` arms one of the agent's crash points
        (TRIO_SOS_AGENT_CRASH_AT: it SIGKILLs itself there)."""
        self.base.mkdir(parents=True, exist_ok=True)
        cmd = [str(agent_binary()), "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
               *self.args]
        env = {k: v for k, v in os.environ.items() if k != "TRIO_SOS_AGENT_CRASH_AT"}
        if crash_at:
            env["TRIO_SOS_AGENT_CRASH_AT"] = crash_at
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=log, env=env)
        self.address = read_ready_line(self.proc)
        self.port = int(self.address.rsplit(":", 1)[1])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.reap()

    def reap(self) -> int:
        """Collect an agent that died by itself (a crash point); returns its exit code."""
        assert self.proc is not None
        code = self.proc.wait(30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None
        self.check_log()
        return code

    def stop(self) -> int | None:
        """SIGTERM and wait; a clean stop is exit code 0, anything else fails the test."""
        if self.proc is None:
            return None
        code = stop_process(self.proc)
        self.proc = None
        self.check_log()
        assert code == 0, f"agent exited with code {code} on SIGTERM; log:\n{self.log_tail()}"
        return code

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def check_log(self) -> None:
        """Fail on anything AddressSanitizer/UBSan reported (the CI runs the agent tests on such a build)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            if marker in text:
                raise AssertionError(f"agent log {self.log_path} has a sanitizer report:\n{text[-4000:]}")

    def restart(self) -> AgentProcess:
        self.stop()
        return self.start()

    # -- on-disk layout (docs/agent-protocol.md) --

    def chunk_path(self, chunk_id: bytes) -> Path:
        return self.data_dir / "chunks" / chunk_id[:1].hex() / chunk_id.hex()

    def temp_files(self) -> list[Path]:
        return sorted((self.data_dir / "tmp").iterdir())

    def chunk_files(self) -> list[Path]:
        return sorted(p for d in (self.data_dir / "chunks").iterdir() for p in d.iterdir())


TEST_USERS = (
    {"access_key": "AKIDTESTALICE0000001", "secret_key": "alice-secret-key-0123456789abcdefghijklm", "id": "alice",
     "display_name": "Alice", "email": "alice@example.com"},
    {"access_key": "AKIDTESTBOB000000002", "secret_key": "bob-secret-key-0123456789abcdefghijklmnop", "id": "bob",
     "display_name": "Bob"},
)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@attrs.define
class NodeProcess:
    """A real ``python -m trio_sos serve`` on 127.0.0.1 with its own data dir and a configured test user."""

    base: Path
    settings: dict = attrs.field(factory=dict)
    proc: subprocess.Popen | None = None
    endpoint: str = ""
    port: int = 0
    users: tuple = TEST_USERS
    stdout_lines: list = attrs.field(factory=list)
    endpoints: list = attrs.field(factory=list)
    allowed_log: list = attrs.field(factory=list)  # patterns of problem lines this test expects (allow_log)
    admin_endpoint: str = ""  # the admin listener (tests set TRIO_SOS_ADMIN_LISTEN=127.0.0.1:0: a free port)
    prefix: tuple = ()  # a program the node runs under (benchmarks/instructions.py: valgrind)
    cwd: str | None = None  # where it runs, and so which trio_sos ``-m`` imports (default: this process's)

    def allow_log(self, pattern: str) -> None:
        """Declare that a log line matching ``pattern`` (a regex) is expected by this test, not a failure."""
        self.allowed_log.append(re.compile(pattern))

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "node.log"

    def write_config(self) -> Path:
        path = self.base / "config.toml"
        lines = [f"{k} = {_toml_value(v)}" for k, v in self.settings.items()]
        for user in self.users:
            lines.append("[[users]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in user.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 30.0) -> NodeProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        cmd = [*self.prefix, sys.executable, "-m", "trio_sos", "serve", "--config", str(config),
               "--data-dir", str(self.data_dir),
               "--listen", f"127.0.0.1:{self.port}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=log,
                                         cwd=self.cwd)
        self.stdout_lines = []
        self.endpoints = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TimeoutError(f"node did not start in {timeout}s; log:\n{self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                code = self.proc.wait()
                raise RuntimeError(f"node exited with {code} before serving; log:\n{self.log_tail()}")
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.stdout_lines.append(text)
                if text.startswith("Admin endpoint: "):
                    self.admin_endpoint = text.split(": ", 1)[1].strip()
                if text.startswith("S3 endpoint: "):
                    self.endpoints.append(text.split(": ", 1)[1].strip())
                    if len(self.endpoints) == (2 if self.settings.get("tls_listen") else 1):
                        self.endpoint = self.endpoints[0]
                        self.port = int(self.endpoint.rsplit(":", 1)[1])
                        return self

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self, *, children: bool = True) -> None:
        """SIGKILL the node and, like a machine crash would, its agent too (``children=False``: the node only)."""
        import psutil

        assert self.proc is not None
        kids = psutil.Process(self.proc.pid).children(recursive=True) if children else []
        self.proc.kill()
        for child in kids:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait()
        psutil.wait_procs(kids, timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None
        self.check_log()

    def agent_pid(self) -> int:
        """The pid of the node's local agent (its one child running the agent program; the others are workers)."""
        import psutil

        kids = [c for c in psutil.Process(self.pid).children()
                if c.status() != psutil.STATUS_ZOMBIE and c.name().startswith("trio-sos-agent")]
        assert len(kids) == 1, kids
        return kids[0].pid

    def stop(self) -> int | None:
        """SIGTERM and wait: a node that stops by itself exits 0; any other code, or a problem in its log, fails
        the test."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout=30)
        self.proc = None
        self.check_log()
        assert code == 0, f"node exited with code {code} on SIGTERM; log:\n{self.log_tail()}"
        return code

    def check_log(self) -> None:
        check_log_file(self.log_path, self.allowed_log, "node")

    def restart(self) -> NodeProcess:
        self.stop()
        return self.start()

    def client(self, user: int = 0, *, endpoint: str | None = None, verify=None, **config):
        """boto3 on this node, path-style, and with no retries (``total_max_attempts`` 1: botocore reads
        ``max_attempts`` as retries, so max_attempts 1 still retried once and hid failed requests from tests)."""
        import boto3
        from botocore.config import Config

        u = self.users[user]
        config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1", verify=verify,
            aws_access_key_id=u["access_key"], aws_secret_access_key=u["secret_key"],
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key) that the tests tell their clients to trust."""
    key, crt = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return crt, key


ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def zookeeper_installed() -> bool:
    return os.path.exists("/usr/share/java/zookeeper.jar") and os.path.exists("/usr/share/java/slf4j-simple.jar")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _JavaServer:
    """kill9 and stop of a test server that is one process in ``self.proc`` (ZooKeeper, Cassandra)."""

    proc: subprocess.Popen | None
    stop_timeout: float = 20.0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=self.stop_timeout)
            self.proc = None


@attrs.define
class ZooKeeperProcess(_JavaServer):
    """A real ZooKeeper (Debian's package) on 127.0.0.1, standalone, with its own data dir; ``restart`` keeps both
    the port and the data (so sessions and znodes survive, as they would a ZooKeeper restart)."""

    base: Path
    tick_ms: int = 200
    proc: subprocess.Popen | None = None
    port: int = 0

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "zookeeper.log"

    def start(self, timeout: float = 30.0) -> ZooKeeperProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "data").mkdir(exist_ok=True)
        self.port = self.port or _free_port()
        cfg = self.base / "zoo.cfg"
        cfg.write_text(
            f"tickTime={self.tick_ms}\ndataDir={self.base / 'data'}\nclientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\nadmin.enableServer=false\nforceSync=no\n"
            "4lw.commands.whitelist=ruok,srvr,mntr\n"
            # sessions of 1-4 s are allowed (minSessionTimeout defaults to 2 ticks)
            f"maxSessionTimeout={20 * self.tick_ms}\n"
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["java", "-Xms64m", "-Xmx256m", "-cp", ZK_CLASSPATH,
                 "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"ZooKeeper not serving in {timeout}s")
            time.sleep(0.05)
        return self

    def serving(self) -> bool:
        """The ``srvr`` four-letter command answers ``Mode: standalone`` (``ruok`` answers too early)."""
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"srvr")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            return b"Mode: standalone" in data
        except OSError:
            return False


    def restart(self) -> ZooKeeperProcess:
        self.stop()
        return self.start()


@attrs.define
class SupervisedAgent:
    """``python -m trio_sos agent --zk ...``: a supervisor registering its C agent in ZooKeeper, as operators run
    it. The agent listens on an ephemeral port that the supervisor keeps across the agent's restarts."""

    base: Path
    zk: str
    cluster: str
    zone: str = ""
    session_timeout: float = 2.0
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    allowed_log: list = attrs.field(factory=list)

    def allow_log(self, pattern: str) -> None:
        self.allowed_log.append(re.compile(pattern))

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "supervisor.log"

    def start(self) -> SupervisedAgent:
        self.base.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "trio_sos", "agent", "--data-dir", str(self.data_dir), "--listen",
               "127.0.0.1:0", "--zk", self.zk, "--cluster", self.cluster, "--zone", self.zone,
               "--health-interval", "0.2", "--zk-session-timeout", str(self.session_timeout), *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def agent_id(self, timeout: float = 30.0) -> str:
        """The agent's id, once the supervisor has registered it (read from its log)."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"agent ([0-9a-f]{32}) registered at")
        while True:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            found = pattern.findall(text)
            if found:
                return found[-1]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.proc.returncode}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent not registered in {timeout}s:\n{text[-3000:]}")
            time.sleep(0.05)

    def agent_processes(self) -> list:
        """The supervisor's live agent processes: none between a restart's exit and its start."""
        import psutil

        assert self.proc is not None
        return [c for c in psutil.Process(self.proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE]

    def agent_process(self):
        kids = self.agent_processes()
        assert len(kids) == 1, kids
        return kids[0]

    def chunk_files(self) -> list[Path]:
        root = self.data_dir / "chunks"
        return sorted(p for d in root.iterdir() for p in d.iterdir()) if root.exists() else []

    def kill9(self) -> None:
        """SIGKILL the supervisor (its agent exits with it): the machine lost."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout=30)
        self.proc = None
        check_log_file(self.log_path, self.allowed_log, "supervisor")
        assert code == 0, f"supervisor exited with {code}"
        return code


CASSANDRA_VERSION = "5.0.9"
# the JVM flags of Cassandra 5.0's conf/jvm-server.options and conf/jvm17-server.options that it needs to start on
# Java 17 (the JPMS exports and opens), then what makes a throwaway test node start fast and small
CASSANDRA_JVM_FLAGS = [
    "-ea", "-Xss256k", "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m", "-Djdk.attach.allowAttachSelf=true",
    *[f"--add-exports={m}=ALL-UNNAMED" for m in (
        "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref",
        "jdk.unsupported/sun.misc", "jdk.compiler/com.sun.tools.javac.file", "jdk.attach/sun.tools.attach")],
    *[f"--add-opens={m}=ALL-UNNAMED" for m in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch",
        "java.base/java.io", "java.base/java.lang.reflect", "jdk.compiler/com.sun.tools.javac",
        "java.base/java.lang", "java.base/java.util")],
    "-Dio.netty.tryReflectionSetAccessible=true", "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
    "-Xms256m", "-Xmx1g", "-XX:TieredStopAtLevel=1", "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.ring_delay_ms=1000", "-Dcassandra.skip_sync=true",
    "-Dcassandra.shutdown_announce_in_ms=0",
]


def cassandra_home() -> Path | None:
    """Where scripts/fetch-cassandra.sh put Cassandra's jars (None: not fetched)."""
    home = Path(os.environ.get("TRIO_SOS_CASSANDRA_HOME")
                or Path.home() / ".cache" / "trio-sos" / f"cassandra-{CASSANDRA_VERSION}")
    return home if (home / "lib" / ".complete").exists() else None


def cassandra_required() -> bool:
    """In CI (and when asked) a Cassandra that cannot start fails the run instead of skipping its tests."""
    return os.environ.get("CI", "") not in ("", "0", "false") or bool(os.environ.get("TRIO_SOS_REQUIRE_CASSANDRA"))


@attrs.define
class CassandraProcess(_JavaServer):
    """A real Apache Cassandra 5.0 node on 127.0.0.x, started from the jars scripts/fetch-cassandra.sh resolved
    from Maven Central, with its data under ``base``. Several of them on 127.0.0.1, .2, .3 make a cluster (the
    first is the seed; start it first). ``restart`` keeps the ports and the data."""

    base: Path
    home: Path
    address: str = "127.0.0.1"
    seed: str = ""  # "ADDRESS:STORAGE_PORT" of the seed; "" = this node is the seed
    cluster_name: str = "trio-sos-test"
    extra_yaml: str = ""  # more cassandra.yaml lines (e.g. an authenticator)
    proc: subprocess.Popen | None = None
    port: int = 0  # CQL
    storage_port: int = 0
    auth: tuple[str, str] | None = None  # credentials for the readiness query
    stop_timeout: float = 30.0
    tls_ca: str | None = None  # the readiness query over TLS, verifying against this CA

    @property
    def log_path(self) -> Path:
        return self.base / "cassandra.log"

    @property
    def contact(self) -> str:
        return f"{self.address}:{self.port}"

    def _free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind((self.address, 0))
            return s.getsockname()[1]

    def write_config(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or self._free_port()
        self.storage_port = self.storage_port or self._free_port()
        seed = self.seed or f"{self.address}:{self.storage_port}"
        d = self.base
        yaml = f"""cluster_name: {self.cluster_name}
num_tokens: 1
allocate_tokens_for_local_replication_factor: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
auto_bootstrap: false
data_file_directories: [{d}/data]
commitlog_directory: {d}/commitlog
saved_caches_directory: {d}/saved_caches
hints_directory: {d}/hints
cdc_raw_directory: {d}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seed}"
listen_address: {self.address}
rpc_address: {self.address}
storage_port: {self.storage_port}
native_transport_port: {self.port}
start_native_transport: true
endpoint_snitch: SimpleSnitch
concurrent_compactors: 1
auto_snapshot: false
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 10000ms
counter_write_request_timeout: 10000ms
cas_contention_timeout: 5000ms
truncate_request_timeout: 60000ms
request_timeout: 10000ms
"""
        if not self.seed:
            yaml += "initial_token: 0\n"
        yaml += self.extra_yaml
        (d / "cassandra.yaml").write_text(yaml)
        (d / "logback.xml").write_text(
            '<configuration><appender name="F" class="ch.qos.logback.core.FileAppender">'
            f'<file>{d}/system.log</file><encoder><pattern>%-5level [%thread] %date %F:%L - %msg%n</pattern>'
            '</encoder></appender><root level="INFO"><appender-ref ref="F"/></root></configuration>')
        return d / "cassandra.yaml"

    def start(self, timeout: float = 120.0, peers: int = 0) -> CassandraProcess:
        """Start it and wait until a CQL round trip answers (and, with ``peers``, until it sees that many)."""
        self.write_config()
        cmd = ["java", *CASSANDRA_JVM_FLAGS, f"-Dcassandra.config=file://{self.base}/cassandra.yaml",
               f"-Dlogback.configurationFile=file://{self.base}/logback.xml",
               f"-Dcassandra.storagedir={self.base}", "-Dcassandra.superuser_setup_delay_ms=0",
               "-cp", f"{self.home}/lib/*",
               "org.apache.cassandra.service.CassandraDaemon"]
        if os.geteuid() == 0 and shutil.which("setpriv"):
            # as root, Cassandra's mlockall pins ~350 MiB more: drop the capability
            cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *cmd]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.serving(peers):
            if self.proc.poll() is not None:
                raise RuntimeError(f"Cassandra exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Cassandra not serving CQL in {timeout}s:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        return self

    def serving(self, peers: int = 0) -> bool:
        """A real CQL round trip (the port alone opens before the node can answer)."""
        from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
        from cassandra.policies import WhiteListRoundRobinPolicy

        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([self.address]),
                                   request_timeout=5)
        kw = {}
        if self.auth:
            from cassandra.auth import PlainTextAuthProvider

            kw["auth_provider"] = PlainTextAuthProvider(*self.auth)
        if self.tls_ca:
            import ssl

            kw["ssl_context"] = ssl.create_default_context(cafile=self.tls_ca)
        cluster = Cluster([self.address], port=self.port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                          connect_timeout=2, control_connection_timeout=2, **kw)
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local")
            if peers:
                return len(list(session.execute("SELECT peer FROM system.peers_v2"))) >= peers
            return True
        except Exception:
            return False
        finally:
            cluster.shutdown()


    def restart(self, **kw) -> CassandraProcess:
        self.stop()
        return self.start(**kw)
