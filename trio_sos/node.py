"""One S3 node process: a root nursery that owns the metadata store, the local agent (embedded mode), the agent
pool, the garbage collector and the HTTP listener, and that shuts them down in order.

Shutdown (SIGINT/SIGTERM, or :meth:`Node.stop`): stop accepting connections and requests, give requests in flight
``shutdown_grace`` seconds, cancel what is left, stop the GC and the agent, close the metadata store.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket
import ssl
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from . import __version__
from .agent import AgentPool
from .agent.supervisor import AgentOptions, AgentSupervisor
from .config import Config, ConfigError
from .data.gc import GarbageCollector
from .cluster.fleet import Fleet
from .cluster.repair import Repairer
from .cluster.scrub import Scrubber
from .data.lifecycle import LifecycleWorker
from .cluster.placement import AgentInfo
from .data.objects import DataStore, WriteTuning
from .data.replicas import ReadTuning
from .http.server import HttpServer, Limits, graceful_stop
from .meta.sqlite import SqliteMetaStore
from .meta.store import ACTIVE, AccessKey, MetaStore, ReplicaReport, User, UserExists
from .s3.app import S3App
from .s3.context import Services

if TYPE_CHECKING:
    from .data.sse import MasterKeys

log = logging.getLogger("trio_sos.node")


def new_access_key() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20))


def new_secret_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))


def meta_path(config: Config) -> Path:
    return Path(config.metadata) if config.metadata else config.data_dir / "meta.sqlite3"


async def open_meta(config: Config) -> MetaStore:
    """The metadata store: Cassandra when ``cassandra`` is set (the nodes of a cluster share it), else the SQLite
    file of ``meta_path``."""
    if config.cassandra:
        from .meta.cassandra import CassandraMetaStore, CassandraSettings, parse_hosts

        hosts, port = parse_hosts(config.cassandra)
        return await CassandraMetaStore.open(CassandraSettings(
            tuple(hosts), keyspace=config.cassandra_keyspace, port=port, replication=config.cassandra_replication,
            local_dc=config.cassandra_local_dc, consistency=config.cassandra_consistency,
            username=config.cassandra_username, password=config.cassandra_password, tls_ca=config.cassandra_tls_ca))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    path = meta_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    return await SqliteMetaStore.open(path)


def load_master_keys(config: Config) -> MasterKeys | None:
    """The SSE-S3 master keys: the configured file's; with embedded metadata and none configured, DATA_DIR's own
    (made on the first start); in a cluster without the setting, none (SSE-S3 is then refused)."""
    from .data.sse import MasterKeys

    try:
        if config.sse_master_key_file:
            return MasterKeys.load(Path(config.sse_master_key_file))
        if config.cassandra:
            return None
        return MasterKeys.create(config.data_dir / "sse-master.key")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"setting sse_master_key_file: {exc}") from None


async def ensure_admin(meta: MetaStore, config: Config, say: Callable[[str], None]) -> None:
    """First start without configured users: create an admin key pair, store it, print it once."""
    if config.users or await meta.list_users():
        return
    key = AccessKey(new_access_key(), new_secret_key(), ACTIVE, time.time())
    user = User("admin", "admin", "", (key,), created=time.time())
    try:
        await meta.create_user(user)
    except UserExists:  # another worker process of this node won the race
        return
    say("Created the admin user (stored in the metadata; `python -m trio_sos user list` shows it again):\n"
        f"  access key: {key.access_key}\n  secret key: {key.secret_key}")


async def _tcp_listeners(address: str, setting: str) -> list[trio.SocketListener]:
    host, _, port = address.rpartition(":")
    try:
        return await trio.open_tcp_listeners(int(port), host=host.strip("[]"))
    except OSError as exc:
        raise ConfigError(f"setting {setting}: cannot listen on {address}: {exc.strerror}") from None


def _bound(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_tls(config: Config) -> ssl.SSLContext | None:
    """The node's TLS context (its certificate and key), or None without ``tls_cert``."""
    if not config.tls_cert:
        return None
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"setting tls_cert: cannot load {config.tls_cert} / {config.tls_key}: {exc}") from None
    return tls


async def open_listeners(config: Config) -> tuple[list[trio.abc.Listener], list[str]]:
    """Plain HTTP on ``listen`` — or TLS there when a certificate is configured without ``tls_listen`` — and TLS
    on ``tls_listen``. Returns the listeners and their endpoint URLs."""
    tls = server_tls(config)
    plain = await _tcp_listeners(config.listen, "listen")
    if tls is not None and not config.tls_listen:
        return ([trio.SSLListener(lst, tls, https_compatible=True) for lst in plain],
                [f"https://{_bound(plain[0])}"])
    listeners: list[trio.abc.Listener] = list(plain)
    endpoints = [f"http://{_bound(plain[0])}"]
    if tls is not None and config.tls_listen:
        secure = await _tcp_listeners(config.tls_listen, "tls_listen")
        listeners += [trio.SSLListener(lst, tls, https_compatible=True) for lst in secure]
        endpoints.append(f"https://{_bound(secure[0])}")
    return listeners, endpoints



def listener_fds(listeners: list[trio.abc.Listener]) -> str:
    """The listening sockets, for workers to inherit: ``FD:h`` (plain HTTP) or ``FD:s`` (TLS), comma-separated."""
    out = []
    for listener in listeners:
        if isinstance(listener, trio.SSLListener):
            inner = listener.transport_listener
            assert isinstance(inner, trio.SocketListener)
            out.append(f"{inner.socket.fileno()}:s")
        else:
            assert isinstance(listener, trio.SocketListener)
            out.append(f"{listener.socket.fileno()}:h")
    return ",".join(out)


def inherited_listeners(config: Config, spec: str) -> tuple[list[trio.abc.Listener], list[str]]:
    """A worker's listeners: the sockets its supervisor opened (see :func:`listener_fds`)."""
    tls = None
    listeners: list[trio.abc.Listener] = []
    endpoints: dict[str, str] = {}
    for item in spec.split(","):
        fd, kind = item.split(":")
        if kind == "l":
            continue  # the workers' shared connection counts (workers.Load), not a listener
        sock = trio.socket.from_stdlib_socket(socket.socket(fileno=int(fd)))  # family and type read off the fd
        plain = trio.SocketListener(sock)
        if kind == "s":
            if tls is None:
                tls = server_tls(config)
                assert tls is not None
            listeners.append(trio.SSLListener(plain, tls, https_compatible=True))
            endpoints.setdefault("https", f"https://{_bound(plain)}")
        else:
            listeners.append(plain)
            endpoints.setdefault("http", f"http://{_bound(plain)}")
    return listeners, [endpoints[k] for k in ("http", "https") if k in endpoints]


def worker_load(spec: str, count: int, index: int):
    """A worker's view of the shared connection counts (``workers.Load``), if its supervisor passed them."""
    from .workers import Load

    for item in spec.split(","):
        fd, kind = item.split(":")
        if kind == "l":
            return Load(int(fd), count, index)
    return None


@attrs.define
class Node:
    """One node. ``role``: ``single`` (one process does everything), ``supervisor`` (``serve --workers N``: owns
    the listening sockets, the local agent and the background work, and keeps N ``worker`` processes, which
    serve S3 on the inherited sockets; see :mod:`trio_sos.workers`)."""

    config: Config
    role: str = "single"
    argv: tuple[str, ...] = ()  # supervisor: the serve command line, given to the workers again
    worker_fds: str = ""  # worker: the inherited listening sockets (listener_fds)
    worker_agent: str | None = None  # worker, embedded mode: the supervisor's local agent
    worker_index: int = 0
    # the process is this node's (``serve``): once set up, what start-up made is frozen out of the garbage
    # collector's generations; a node run inside another program leaves that program's collector as it is
    freeze_gc: bool = False
    endpoint: str = ""
    server: HttpServer | None = None
    gc: GarbageCollector | None = None
    repairer: Repairer | None = None
    scrubber: Scrubber | None = None
    lifecycle: LifecycleWorker | None = None
    supervisor: AgentSupervisor | None = None
    workers: Any = None  # supervisor: the WorkerPool
    zk: Any = None  # cluster mode: the ZooKeeper session, membership, this node's id and its leaderships
    membership: Any = None
    node_id: str = ""
    leaderships: dict = attrs.field(factory=dict)
    meta: Any = None
    fleet: Fleet | None = None
    admin_endpoint: str | None = None
    admin: Any = None  # the admin pieces (trio_sos.admin.Admin): events, control, monitor, listener
    _scope: trio.CancelScope | None = None

    def background_workers(self) -> dict[str, Any]:
        """This process's GC, repair, scrub and lifecycle (none in a worker process), by name."""
        return {w.name: w for w in (self.gc, self.repairer, self.scrubber, self.lifecycle) if w is not None}

    def stop(self) -> None:
        """Begin a graceful shutdown."""
        if self.workers is not None:
            self.workers.stop()  # the supervisor's tasks end once every worker has stopped
        elif self.server is not None and self._scope is not None:
            trio.lowlevel.spawn_system_task(graceful_stop, self.server, self._scope, self.config.shutdown_grace)

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
                  say: Callable[[str], None] = print) -> None:
        config = self.config
        from .admin.metrics import TimedMeta

        raw_meta = await open_meta(config)
        meta = self.meta = cast(MetaStore, TimedMeta(raw_meta))
        listeners: list[trio.abc.Listener] = []
        admin_listeners: list[trio.abc.Listener] = []
        try:
            if self.role == "worker":
                listeners, endpoints = inherited_listeners(config, self.worker_fds)
            else:
                await ensure_admin(meta, config, say)
                listeners, endpoints = await open_listeners(config)
                if config.admin_listen:
                    from .admin.setup import open_admin_listeners

                    admin_listeners, self.admin_endpoint = await open_admin_listeners(config)
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                write_tuning = WriteTuning(lag_timeout=config.replica_lag_timeout)
                read_tuning = ReadTuning(hedge_delay=config.read_hedge_ms / 1000)
                if self.role == "worker":
                    fleet, where = await self._worker_fleet(nursery, config)
                    leads = None
                elif config.zk:
                    fleet, where, leads = await self._join_cluster(nursery, config, endpoints[0])
                else:
                    fleet, where = await self._start_local_agent(nursery, config)
                    leads = None

                events: Any = None  # where this process's events go: the admin's hub, or (a worker) its pipe

                def report_bad(chunk_id: bytes, agent_id: str, reason: str) -> None:
                    # a reader found a replica missing or corrupt: repair replaces it (reported off the read path)
                    nursery.start_soon(meta.report_replica, ReplicaReport(chunk_id, agent_id, reason, time.time()))
                    if self.repairer is not None:
                        self.repairer.wake.set()
                    if events is not None:
                        events.publish("finding", {"worker": "read", "chunk": chunk_id.hex(), "agent": agent_id,
                                                   "reason": reason})

                self.fleet = fleet
                if self.role != "worker":
                    self._start_background(nursery, meta, fleet, leads)
                    from .admin.setup import Admin

                    self.admin = Admin(self)
                    if admin_listeners:
                        await nursery.start(self.admin.run, admin_listeners)
                if self.role == "supervisor":
                    from .workers import WorkerPool

                    from .workers import Load

                    load = Load.create(config.effective_workers)  # kept open for the process: restarts need it
                    self.workers = WorkerPool(config.effective_workers, self.argv,
                                              listener_fds(listeners) + f",{load.fd}:l",
                                              agent=self.supervisor.address if self.supervisor else None,
                                              endpoints_per_worker=len(endpoints),
                                              env=self.admin.worker_env(), on_line=self.admin.hub.publish_line,
                                              on_exit=self.admin.worker_exited)

                    async def keep_workers(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                        await self.workers.run(task_status=task_status)
                        nursery.cancel_scope.cancel()  # every worker stopped: so does the rest

                    await nursery.start(keep_workers)  # the listeners stay open: restarted workers inherit them
                    where += f", {config.effective_workers} workers"
                else:
                    data = DataStore(meta, fleet, chunk_size=config.chunk_size, inline_max=config.inline_max,
                                     intent_refresh=config.intent_grace / 4, zone=config.zone,
                                     read_tuning=read_tuning, write_tuning=write_tuning, report_bad=report_bad)
                    master_keys = await trio.to_thread.run_sync(load_master_keys, config)
                    app = S3App(Services(meta, data, config, master_keys))
                    limits = Limits(idle_timeout=config.http_idle_timeout, head_timeout=config.http_head_timeout,
                                    body_timeout=config.http_body_timeout, zero_copy=config.zero_copy_get)
                    from .admin.observe import RequestObserver

                    balance = None
                    if self.role == "worker":
                        from .admin.events import EventPipe

                        balance = worker_load(self.worker_fds, config.effective_workers, self.worker_index)
                        events = EventPipe()  # to the supervisor's hub, through this process's stdout
                        nursery.start_soon(events.run)
                    else:
                        events = self.admin.hub
                    observer = RequestObserver(events, slow_ms=config.slow_request_ms)
                    self.server = HttpServer(app.handle, limits=limits, render_error=app.render_http_error,
                                             balance=balance, observer=observer)
                    await nursery.start(self.server.serve, listeners)
                    if self.role == "worker":
                        from .workers import exit_with_parent

                        nursery.start_soon(exit_with_parent, self.stop)
                self.endpoint = endpoints[0]
                if self.admin_endpoint:
                    log.info("admin endpoint %s (WebSocket /ws, dashboard /, /metrics, /health, /ready)",
                             self.admin_endpoint)
                    say(f"Admin endpoint: {self.admin_endpoint}")
                for endpoint in endpoints:
                    if self.role != "worker":
                        log.info("S3 endpoint %s, data dir %s, %s", endpoint, config.data_dir, where)
                    say(f"S3 endpoint: {endpoint}")
                # What start-up made (modules, configuration, pools) lives as long as the process: moved out of the
                # collector's generations, a full collection no longer walks it (docs/performance.md, "Less for
                # the garbage collector, one JSON encoder, and the chunk path").
                if self.freeze_gc:
                    gc.freeze()
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners + admin_listeners:
                    await listener.aclose()
                if self.admin is not None:
                    self.admin.close()
                await meta.aclose()

    def _start_background(self, nursery: trio.Nursery, meta: MetaStore, fleet: Fleet, leads) -> None:
        config = self.config
        self.gc = GarbageCollector(meta, fleet, interval=config.gc_interval,
                                   intent_grace=config.intent_grace, dead_grace=config.dead_grace)
        self.repairer = Repairer(meta, fleet, replicas=config.effective_replicas,
                                 interval=config.repair_interval, dead_grace=config.dead_grace,
                                 rate=config.repair_rate, gc_delay=config.gc_delay, zk=self.zk)
        self.scrubber = Scrubber(meta, fleet, rate=config.scrub_rate, interval=config.scrub_interval,
                                 orphan_grace=config.orphan_grace)
        self.lifecycle = LifecycleWorker(meta, interval=config.lifecycle_interval,
                                         day_seconds=config.lifecycle_day_seconds, gc_delay=config.gc_delay)
        workers = [("gc", self.gc.run), ("repair", self.repairer.run), ("lifecycle", self.lifecycle.run)]
        if config.scrub_rate:
            workers.append(("scrub", self.scrubber.run))
        for name, worker in workers:
            nursery.start_soon(worker if leads is None else leads(name, worker))

    async def _worker_fleet(self, nursery: trio.Nursery, config: Config) -> tuple[Fleet, str]:
        """A worker process: its supervisor's local agent, or the cluster's agents as ZooKeeper lists them (the
        supervisor registers the node and runs the background work)."""
        if config.zk:
            from .cluster.membership import ZkMembership
            from .cluster.zk import ZkSession

            zk: ZkSession = await nursery.start(ZkSession(config.zk, config.cluster,
                                                          session_timeout=config.zk_session_timeout).run)
            fleet = Fleet(nursery, replicas=config.effective_replicas, write_quorum=config.write_quorum or None,
                          pool_options=dict(size=8, patience=0.5, min_backoff=0.05, max_backoff=1.0))
            await nursery.start(ZkMembership(zk, fleet.apply, on_removed=fleet.set_removed).run)
            return fleet, f"worker {self.worker_index}, cluster {config.cluster!r}"
        assert self.worker_agent is not None
        pool = AgentPool(nursery, self.worker_agent, size=8, patience=config.agent_wait, min_backoff=0.02,
                         max_backoff=0.25)
        fleet = Fleet(nursery, replicas=config.effective_replicas, write_quorum=config.write_quorum or None)
        info = await pool.info()
        fleet.add_static(AgentInfo((await pool.hello()).agent_id.hex(), self.worker_agent,
                                   capacity=info.capacity), pool)
        return fleet, f"worker {self.worker_index}, agent {self.worker_agent}"

    async def _start_local_agent(self, nursery: trio.Nursery, config: Config) -> tuple[Fleet, str]:
        """Embedded mode: one agent of the node's own, supervised, and a fleet of that one agent."""
        self.supervisor = AgentSupervisor(AgentOptions(
            data_dir=config.data_dir / "agent", listen="127.0.0.1:0", max_chunk=config.agent_max_chunk,
            direct_writes=config.agent_direct_writes, direct_reads=config.agent_direct_reads))
        agent_address = await nursery.start(self.supervisor.run)
        # The local agent is the only copy: while its supervisor restarts it, requests wait (agent_wait) for it to
        # come back rather than fail at once.
        pool = AgentPool(nursery, agent_address, size=8, patience=config.agent_wait, min_backoff=0.02,
                         max_backoff=0.25)
        fleet = Fleet(nursery, replicas=config.effective_replicas, write_quorum=config.write_quorum or None)
        info = await pool.info()
        fleet.add_static(AgentInfo((await pool.hello()).agent_id.hex(), agent_address, capacity=info.capacity), pool)
        return fleet, f"local agent {agent_address}"

    async def _join_cluster(self, nursery: trio.Nursery, config: Config, endpoint: str):
        """Cluster mode: the agents registered in ZooKeeper, this node registered there too, and the singleton
        workers run under leadership."""
        from .cluster.leader import Leadership
        from .cluster.membership import ZkMembership
        from .cluster.zk import ZkSession

        assert config.zk is not None
        zk: ZkSession = await nursery.start(ZkSession(config.zk, config.cluster,
                                                      session_timeout=config.zk_session_timeout).run)
        self.zk = zk
        # several replicas: a request turns to another rather than wait long for one agent to come back
        fleet = Fleet(nursery, replicas=config.effective_replicas, write_quorum=config.write_quorum or None,
                      pool_options=dict(size=8, patience=0.5, min_backoff=0.05, max_backoff=1.0))
        membership = ZkMembership(zk, fleet.apply, on_removed=fleet.set_removed)
        await nursery.start(membership.run)
        self.membership = membership
        node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.node_id = node_id
        record = {"endpoint": endpoint, "version": __version__, "zone": config.zone, "admin": self.admin_endpoint}
        await zk.register_ephemeral(zk.path("nodes", node_id), record)
        nursery.start_soon(zk.keep_ephemeral, zk.path("nodes", node_id), record)
        self.leaderships: dict[str, Leadership] = {}

        def leads(name: str, worker):
            leadership = Leadership(zk, name, worker, identifier=node_id)
            self.leaderships[name] = leadership
            return leadership.run

        return fleet, (f"cluster {config.cluster!r} at {config.zk} ({len(fleet.agents)} agents, "
                       f"R={config.effective_replicas})"), leads
