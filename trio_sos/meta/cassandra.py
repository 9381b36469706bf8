"""``MetaStore`` on Apache Cassandra (cassandra-driver, protocol v5): the metadata of a cluster of nodes.

Calls run in worker threads (``trio.to_thread``, bounded by a CapacityLimiter): the driver does its own I/O on its
own thread, each call here blocks one worker thread on its futures, and Trio's event loop never waits on a query.
Every statement is prepared once per store. Reads and writes are QUORUM (LOCAL_QUORUM with a local datacenter),
lightweight transactions SERIAL — so a write acknowledged through one node is read and listed through any other.

Cassandra has no transaction across partitions, and a MetaStore step touches several (an object's record, its
listing entry, the chunk index of its chunks, the GC queue, the upload intent). Each change therefore goes:

1. ``pending_ops`` gets a row naming the record (plain write);
2. the record partition is changed by one lightweight transaction, conditional on its ``seq`` (so concurrent
   changes of one key are serialized, and every condition — If-Match, If-None-Match, the bucket's identity — is
   checked against what is replaced). The record keeps, in ``pending``, what the change still has to write
   elsewhere: the manifest it replaced, the GC delay, the intent, the upload it completes;
3. those *follow-ups* are written, each idempotent (derived rows carry the record's ``ts`` as write timestamp, so
   a late or repeated write never overrides a newer one); then ``done = seq`` and the pending_ops row goes.

A node that dies between 2 and 3 leaves the change applied and its follow-ups owed: the next change of the same
record writes them first, and ``recover`` (run by the GC leader) writes those older than a grace. An upload's
intent is marked ``committing`` (lightweight transaction, only if not claimed) before step 2, so the garbage
collector never claims — and deletes the chunks of — an upload whose manifest may be committed.

The schema is in ``cassandra_schema.py``; why every partition stays bounded is in ``docs/metadata.md``.
"""

from __future__ import annotations

import collections
import heapq
import json
import logging
import random
import ssl
import threading
import time
import uuid
from types import SimpleNamespace
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import trio

from .cassandra_schema import SCHEMA_VERSION, TABLES, UPGRADES
from .keys import prefix_successor, walk
from .sqlite import (_dec_manifest, _dec_pairs, _dec_parts, _enc_manifest, _enc_pairs, _enc_parts, _json, _same_version,
                     dec_lock, enc_lock)
from .store import (
    ACTIVE,
    INACTIVE,
    AccessKey,
    VSORT_BASE,
    Bucket,
    Committed,
    ListedVersion,
    Removed,
    VersionListing,
    new_version_id,
    next_vsort,
    version_vsort,
    BucketAlreadyExists,
    BucketNotEmpty,
    ChunkOwner,
    ChunkRef,
    CompletedUpload,
    GcEntry,
    Intent,
    IntentLost,
    ListedObject,
    ListPage,
    MetaStore,
    MetaUnavailable,
    NoSuchBucket,
    NoSuchUpload,
    ObjectListing,
    ObjectLocked,
    ObjectVersion,
    Part,
    PreconditionFailed,
    ReplicaReport,
    Upload,
    UploadListing,
    User,
    UserExists,
)

log = logging.getLogger("trio_sos.meta.cassandra")

T = TypeVar("T")

SLOTS = 256  # chunk lists per agent / per replica count: by the chunk id's first byte (random, and their order)
INTENT_SLOTS = 16
PENDING_SLOTS = 16
REPORT_SLOTS = 16
LWT_RETRIES = 100  # a change losing its transaction this many times to concurrent ones fails (503)
MANY_IN_FLIGHT = 256  # statements of one call in flight at once, at most
RECOVER_GRACE = 120.0  # seconds a change may take between its record's transaction and its follow-ups
GC_SLOTS = 16  # GC queue partitions per minute
COMPLETED_SLOTS = 16  # completed-upload records per hour
TRACKED_REPLICAS = 3  # chunks_by_count holds chunks with fewer replicas than this (the usual R); see under_replicated
_MINUTE = 60.0
_HOUR = 3600.0


@attrs.frozen
class CassandraSettings:
    """How to reach the cluster and what to create. ``hosts``: ``host[:port]`` contact points."""

    hosts: tuple[str, ...]
    keyspace: str = "trio_sos"
    port: int = 9042
    replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"  # used when creating the keyspace
    local_dc: str | None = None
    consistency: str = "QUORUM"  # QUORUM or LOCAL_QUORUM (ONE is refused: no read-after-write)
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None  # a CA file: connect over TLS, verifying the servers' certificates
    request_timeout: float = 12.0
    threads: int = 64  # worker threads blocked on queries at once, at most
    shard_rows: int = 50_000  # a listing shard holding more keys than this is split in two by maintain()


def parse_hosts(hosts: str, default_port: int = 9042) -> tuple[list[str], int]:
    """``"h1,h2:9043"`` -> (["h1", "h2"], port). The driver takes one port for all contact points."""
    names, ports = [], set()
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if sep and port.isdigit() and "]" not in port:
            names.append(host.strip("[]"))
            ports.add(int(port))
        else:
            names.append(item.strip("[]"))
    if not names:
        raise ValueError("no Cassandra host given")
    if len(ports) > 1:
        raise ValueError("every Cassandra contact point must use the same port")
    return names, ports.pop() if ports else default_port


_clock_lock = threading.Lock()
_last_us = 0


def _now_us() -> int:
    """Now in µs, as a write timestamp: strictly increasing within the process (two writes of one row made one
    after the other never share a timestamp, where Cassandra would let a delete win over the insert)."""
    global _last_us
    with _clock_lock:
        _last_us = max(time.time_ns() // 1000, _last_us + 1)
        return _last_us


def _slot(chunk_id: bytes) -> int:
    return chunk_id[0] if chunk_id else 0


def _hash_slot(text: str, n: int) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % n


def _unavailable(exc: Exception) -> MetaUnavailable:
    return MetaUnavailable(f"Cassandra: {type(exc).__name__}: {exc}")


_UNREAD = object()  # _change: the record is to be read


# -- records --

_OBJ_COLS = ("version_id, size, etag, last_modified, owner_id, manifest, content_type, headers, user_meta, checksums, "
             "acl, tags, parts, inline, lock")
_OBJ_NAMES = tuple(c.strip() for c in _OBJ_COLS.split(","))
_RECORD_COLS = _OBJ_COLS + ", vsort, marker, null_vsort"  # a key's record: its latest version, and where "null" is
_VERSION_COLS = _OBJ_COLS + ", marker"  # a row of ``versions`` (keyed by bucket, key, vsort)
_VLIST_COLS = "key, vsort, version_id, marker, size, etag, last_modified, owner_id"
_PART_COLS = "size, etag, last_modified, manifest, checksums"
_REC_COLS = "seq, ts, op, pending, done, deleted"


def _obj_values(o: ObjectVersion) -> tuple:
    return (o.version_id, o.size, o.etag, o.last_modified, o.owner_id, _enc_manifest(o.manifest), o.content_type,
            _enc_pairs(o.headers), _enc_pairs(o.user_meta), _enc_pairs(o.checksums), o.acl, _enc_pairs(o.tags),
            _enc_parts(o), o.inline, enc_lock(o))


def _rec_values(o: ObjectVersion, null_vsort: int | None) -> tuple:
    """A key's record holding ``o`` as its latest version."""
    return (*_obj_values(o), o.vsort, o.delete_marker, null_vsort)


def _obj_from(bucket: str, key: str, r: Any) -> ObjectVersion:
    """A version from its record or its ``versions`` row (both have ``vsort`` and ``marker``)."""
    return ObjectVersion(bucket, key, r.version_id, r.size, r.etag, r.last_modified, r.owner_id,
                         _dec_manifest(r.manifest), r.content_type, _dec_pairs(r.headers), _dec_pairs(r.user_meta),
                         _dec_pairs(r.checksums), r.acl, _dec_pairs(r.tags), inline=r.inline,
                         delete_marker=bool(r.marker), vsort=r.vsort or 0, **dec_lock(r.lock),
                         **_dec_parts(r.parts))


def _check_unlocked(version: ObjectVersion | None, bypass: bool) -> None:
    """A decision about to remove ``version`` for good: ObjectLocked (nothing changes) if object lock forbids it."""
    if version is not None and version.locked(time.time(), bypass):
        raise ObjectLocked(f"{version.bucket}/{version.key} version {version.version_id}")


def _drop_plan(dropped: Sequence[ObjectVersion], not_before: float) -> dict[str, Any]:
    """What a change that removes ``dropped`` for good owes: their rows go, their chunks to the GC queue."""
    return {"drop": [[d.vsort, d.version_id] for d in dropped],
            "old": _enc_manifest([ref for d in dropped for ref in d.manifest]), "nb": not_before}


def _part_values(p: Part) -> tuple:
    return (p.size, p.etag, p.last_modified, _enc_manifest(p.manifest), _enc_pairs(p.checksums))


def _part_from(upload_id: str, number: int, r: Any) -> Part:
    return Part(upload_id, number, r.size, r.etag, r.last_modified, _dec_manifest(r.manifest),
                _dec_pairs(r.checksums))


@attrs.frozen
class _Kind:
    """A table of mutable records (objects, parts) and how to address one."""

    table: str
    key_cols: tuple[str, str]
    cols: str

    def where(self) -> str:
        return " AND ".join(f"{c} = ?" for c in self.key_cols)


_OBJECTS = _Kind("objects", ("bucket", "key"), _RECORD_COLS)
_PARTS = _Kind("parts", ("upload_id", "number"), _PART_COLS)


@attrs.frozen
class _Change:
    """What a change makes of a record: the new values (None: deleted) and what its follow-ups need."""

    values: tuple | None
    manifest: tuple[ChunkRef, ...]  # the new manifest (() when deleted)
    plan: dict[str, Any]  # JSON: old manifest, not_before, intent, upload to complete...
    result: Any = None


class CassandraMetaStore(MetaStore):
    """Open with ``await CassandraMetaStore.open(settings)``; close with ``aclose``."""

    def __init__(self, settings: CassandraSettings, cluster: Any, session: Any, *, owns_cluster: bool = True
                 ) -> None:
        from cassandra import ConsistencyLevel

        self.settings = settings
        self._cluster = cluster
        self._session = session
        self._owns_cluster = owns_cluster
        self._prepared: dict[str, Any] = {}
        self._prepare_lock = threading.Lock()
        self._cl = getattr(ConsistencyLevel, settings.consistency)
        self._serial = ConsistencyLevel.LOCAL_SERIAL if settings.consistency.startswith("LOCAL") \
            else ConsistencyLevel.SERIAL
        self._limiter = trio.CapacityLimiter(settings.threads)
        self._closed = False
        self.schema_version = SCHEMA_VERSION

    # -- lifecycle --

    @classmethod
    async def open(cls, settings: CassandraSettings) -> CassandraMetaStore:
        """Connect, and create what is missing of the schema. Cancellable (a node stopped while Cassandra is slow
        to answer stops at once): the thread is abandoned, and its connection goes with the process."""
        return await trio.to_thread.run_sync(cls._open_sync, settings, abandon_on_cancel=True)

    @classmethod
    def connect(cls, settings: CassandraSettings) -> tuple[Any, Any]:
        """A driver cluster and session (not bound to the keyspace yet)."""
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, RoundRobinPolicy, TokenAwarePolicy

        if settings.consistency not in ("QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL"):
            raise ValueError(f"cassandra consistency {settings.consistency!r}: QUORUM or LOCAL_QUORUM "
                             "(a weaker level loses read-after-write)")
        names, port = parse_hosts(",".join(settings.hosts), settings.port)
        child = DCAwareRoundRobinPolicy(local_dc=settings.local_dc) if settings.local_dc else RoundRobinPolicy()
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(child),
            consistency_level=getattr(ConsistencyLevel, settings.consistency),
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL if settings.consistency.startswith("LOCAL")
            else ConsistencyLevel.SERIAL,
            request_timeout=settings.request_timeout,
        )
        kw: dict[str, Any] = {}
        if settings.username:
            kw["auth_provider"] = PlainTextAuthProvider(settings.username, settings.password or "")
        if settings.tls_ca:
            context = ssl.create_default_context(cafile=settings.tls_ca)
            kw["ssl_context"] = context
        cluster = Cluster(names, port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                          protocol_version=5, connect_timeout=5, control_connection_timeout=5, **kw)
        try:
            return cluster, cluster.connect()
        except BaseException:
            cluster.shutdown()
            raise

    @classmethod
    def _open_sync(cls, settings: CassandraSettings) -> CassandraMetaStore:
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable

        try:
            cluster, session = cls.connect(settings)
        except (NoHostAvailable, DriverException, OSError) as exc:
            raise ConnectionError(f"cannot reach Cassandra at {','.join(settings.hosts)} (port "
                                  f"{settings.port}): {exc}") from exc
        try:
            cls.create_schema(session, settings)
            session.set_keyspace(settings.keyspace)
        except BaseException:
            cluster.shutdown()
            raise
        return cls(settings, cluster, session)

    @classmethod
    def on_session(cls, settings: CassandraSettings, session: Any) -> CassandraMetaStore:
        """A store on an existing session (bound to the keyspace, schema created): tests open many at once."""
        return cls(settings, None, session, owns_cluster=False)

    @classmethod
    def create_schema(cls, session: Any, settings: CassandraSettings) -> None:
        """The keyspace (with ``settings.replication``) and the tables, if missing; the schema version recorded."""
        ks = settings.keyspace
        if not ks.replace("_", "").isalnum():
            raise ValueError(f"keyspace name {ks!r}: letters, digits and _ only")
        present = {r.table_name for r in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (ks,))}
        if not present:
            session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {settings.replication}",
                            timeout=60)
        for statement in TABLES:  # only what is missing: a schema change waits for every node to agree on it
            name = statement.split("CREATE TABLE IF NOT EXISTS ", 1)[1].split(" ", 1)[0]
            if name not in present:
                session.execute(statement.replace("CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {ks}."),
                                timeout=60)
        rows = list(session.execute(f"SELECT value FROM {ks}.meta_info WHERE name = 'schema_version'"))
        if rows and int(rows[0].value) > SCHEMA_VERSION:
            raise RuntimeError(f"keyspace {ks} has schema version {rows[0].value}, newer than this node's "
                               f"{SCHEMA_VERSION}: upgrade the node")
        if rows and int(rows[0].value) < SCHEMA_VERSION:
            from cassandra import InvalidRequest

            for version in range(int(rows[0].value), SCHEMA_VERSION):
                for statement in UPGRADES.get(version, []):
                    try:
                        session.execute(statement.replace("ALTER TABLE ", f"ALTER TABLE {ks}."), timeout=60)
                    except InvalidRequest as exc:  # another node of the new release did it first
                        if "exist" not in str(exc) and "conflict" not in str(exc).lower():
                            raise
            if int(rows[0].value) < 2:
                session.set_keyspace(ks)
                done = cls.on_session(settings, session)._adopt_versions()
                log.info("keyspace %s: %d objects of schema 1 given their version rows", ks, done)
            if int(rows[0].value) < 7:
                session.set_keyspace(ks)
                done = cls.on_session(settings, session)._adopt_keys()
                log.info("keyspace %s: the key pairs of %d users of schema 6 moved", ks, done)
        session.execute(f"INSERT INTO {ks}.meta_info (name, value) VALUES ('schema_version', %s)",
                        (str(SCHEMA_VERSION),))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_cluster and self._cluster is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._cluster.shutdown)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread. Not abandoned on cancellation: a change runs to its end (all or
        nothing, as the caller sees it), and driver errors become MetaUnavailable."""
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable

        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter, abandon_on_cancel=False)
        except (DriverException, NoHostAvailable, OSError) as exc:
            raise _unavailable(exc) from exc

    # -- statements --

    def _stmt(self, cql: str) -> Any:
        stmt = self._prepared.get(cql)
        if stmt is None:
            with self._prepare_lock:
                stmt = self._prepared.get(cql)
                if stmt is None:
                    stmt = self._session.prepare(cql)
                    # the driver may retry these on another node after a connection error: no condition, no
                    # counter (an UPDATE without either sets values, as an INSERT does)
                    if (cql.lstrip().upper().startswith(("SELECT", "INSERT", "DELETE", "UPDATE"))
                            and " IF " not in cql and "= n +" not in cql and "= n -" not in cql):
                        stmt.is_idempotent = True
                    self._prepared[cql] = stmt
        return stmt

    def _x(self, cql: str, params: Sequence[Any] = ()) -> Any:
        return self._session.execute(self._stmt(cql), params)

    def _rows(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self._x(cql, params))

    def _one(self, cql: str, params: Sequence[Any] = ()) -> Any:
        return self._x(cql, params).one()

    def _lwt(self, cql: str, params: Sequence[Any] = ()) -> tuple[bool, Any]:
        rs = self._x(cql, params)
        row = rs.one()
        return bool(rs.was_applied), row

    def _record_lwt(self, kind: _Kind, k: tuple, cql: str, params: Sequence[Any], op: str) -> bool:
        """The record's transaction. When its outcome is unknown (the coordinator timed out, or died with it in
        flight), a SERIAL read of the record settles it — it finishes or supersedes any Paxos round left open — and
        the record says whether it is change ``op``'s."""
        from cassandra import OperationTimedOut, WriteTimeout
        from cassandra.connection import ConnectionException
        try:
            return self._lwt(cql, params)[0]
        except (WriteTimeout, OperationTimedOut, ConnectionException) as exc:
            log.warning("%s %s: outcome of the transaction unknown (%s): reading it back", kind.table, k, exc)
        read = self._stmt(f"SELECT op FROM {kind.table} WHERE {kind.where()}").bind(k)
        read.consistency_level = self._serial
        for _ in range(3):
            try:
                row = self._session.execute(read).one()
                return row is not None and row.op == op
            except (WriteTimeout, OperationTimedOut, ConnectionException):
                time.sleep(0.2)
        raise MetaUnavailable(f"{kind.table} {k}: the outcome of a change is unknown; retry")

    def _many(self, items: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Statements concurrently (each on its own), at most MANY_IN_FLIGHT at a time — a 10,000-part upload's
        chunk index is tens of thousands of statements — and their result sets in order."""
        results: list[Any] = []
        window: collections.deque[Any] = collections.deque()
        for cql, params in items:
            if len(window) >= MANY_IN_FLIGHT:
                results.append(window.popleft().result())
            window.append(self._session.execute_async(self._stmt(cql), params))
        results += [f.result() for f in window]
        return results

    # -- users and keys --
    #
    # A user is one row of ``users``: its keys (a map access key -> JSON [secret, status, created]) and its inline
    # policies (a map name -> document) are in it, so a request's user is one partition read. ``users_by_key``
    # indexes the keys (its lightweight transactions make each unique); an entry counts only while the user's row
    # names the key, so a key is written to the index first and removed from the row first: the row is the truth.

    @staticmethod
    def _key_value(key: AccessKey) -> str:
        return json.dumps([key.secret_key, key.status, key.created])

    def _user_row(self, r: Any) -> User:
        keys = tuple(AccessKey(k, *json.loads(v)) for k, v in sorted((r.keys or {}).items()))
        policies = tuple(sorted((r.policies or {}).items()))
        return User(r.id, r.display_name or "", r.email or "", keys, policies, r.created or 0.0)

    _USER_SELECT = "SELECT id, display_name, email, created, keys, policies FROM users"

    def _claim_key(self, access_key: str, user_id: str) -> None:
        """The key's index entry, for ``user_id``: UserExists if another user's."""
        if not access_key:
            raise ValueError("an access key cannot be empty")
        applied, existing = self._lwt("INSERT INTO users_by_key (access_key, id) VALUES (?, ?) IF NOT EXISTS",
                                      (access_key, user_id))
        if not applied and existing.id != user_id:
            holder = self._one(f"{self._USER_SELECT} WHERE id = ?", (existing.id,))
            if holder is not None and access_key in (holder.keys or {}):
                raise UserExists(existing.id)
            # a stale entry (its user no longer names the key): take it over
            applied, _ = self._lwt("UPDATE users_by_key SET id = ? WHERE access_key = ? IF id = ?",
                                   (user_id, access_key, existing.id))
            if not applied:
                raise UserExists(existing.id)

    def _release_key(self, access_key: str, user_id: str) -> None:
        self._lwt("DELETE FROM users_by_key WHERE access_key = ? IF id = ?", (access_key, user_id))

    async def create_user(self, user: User) -> None:
        def run() -> None:
            claimed: list[str] = []
            try:
                for key in user.keys:
                    if not key.secret_key:
                        raise ValueError("a secret key cannot be empty")
                    self._claim_key(key.access_key, user.id)
                    claimed.append(key.access_key)
                applied, _ = self._lwt(
                    "INSERT INTO users (id, display_name, email, created, keys, policies) VALUES (?, ?, ?, ?, ?, ?) "
                    "IF NOT EXISTS", (user.id, user.display_name, user.email, user.created,
                                      {k.access_key: self._key_value(k) for k in user.keys}, dict(user.policies)))
                if not applied:
                    raise UserExists(user.id)
            except BaseException:
                for access_key in claimed:
                    self._release_key(access_key, user.id)
                raise

        await self._run(run)

    async def delete_user(self, user_id: str) -> bool:
        def run() -> bool:
            row = self._one(f"{self._USER_SELECT} WHERE id = ?", (user_id,))
            if row is None:
                return False
            applied, _ = self._lwt("DELETE FROM users WHERE id = ? IF EXISTS", (user_id,))
            for access_key in row.keys or {}:
                self._release_key(access_key, user_id)
            return applied

        return await self._run(run)

    async def add_access_key(self, user_id: str, key: AccessKey) -> bool:
        def run() -> bool:
            if not key.secret_key:
                raise ValueError("a secret key cannot be empty")
            self._claim_key(key.access_key, user_id)
            applied, _ = self._lwt("UPDATE users SET keys[?] = ? WHERE id = ? IF EXISTS",
                                   (key.access_key, self._key_value(key), user_id))
            if not applied:
                self._release_key(key.access_key, user_id)
            return applied

        return await self._run(run)

    def _change_key(self, user_id: str, access_key: str, new: Callable[[AccessKey], AccessKey | None]) -> bool:
        """Replace (or, ``new`` giving None, remove) one key of the row, by compare-and-set on its value."""
        for _ in range(LWT_RETRIES):
            row = self._one(f"{self._USER_SELECT} WHERE id = ?", (user_id,))
            old = (row.keys or {}).get(access_key) if row is not None else None
            if old is None:
                return False
            changed = new(AccessKey(access_key, *json.loads(old)))
            if changed is None:
                applied, _ = self._lwt("DELETE keys[?] FROM users WHERE id = ? IF keys[?] = ?",
                                       (access_key, user_id, access_key, old))
            else:
                applied, _ = self._lwt("UPDATE users SET keys[?] = ? WHERE id = ? IF keys[?] = ?",
                                       (access_key, self._key_value(changed), user_id, access_key, old))
            if applied:
                return True
        raise MetaUnavailable(f"user {user_id}: too many concurrent changes")

    async def set_access_key_status(self, user_id: str, access_key: str, status: str) -> bool:
        assert status in (ACTIVE, INACTIVE)
        return await self._run(self._change_key, user_id, access_key, lambda k: attrs.evolve(k, status=status))

    async def delete_access_key(self, user_id: str, access_key: str) -> bool:
        def run() -> bool:
            if not self._change_key(user_id, access_key, lambda k: None):
                return False
            self._release_key(access_key, user_id)
            return True

        return await self._run(run)

    async def set_user_keys(self, user_id: str, access_key: str, secret_key: str) -> bool:
        def run() -> bool:
            key = AccessKey(access_key, secret_key, ACTIVE, time.time())
            for _ in range(LWT_RETRIES):
                row = self._one(f"{self._USER_SELECT} WHERE id = ?", (user_id,))
                if row is None:
                    return False
                old = dict(row.keys or {})
                self._claim_key(access_key, user_id)
                applied, _ = self._lwt("UPDATE users SET keys = ? WHERE id = ? IF keys = ?",
                                       ({access_key: self._key_value(key)}, user_id, old or None))
                if applied:
                    for gone in old:
                        if gone != access_key:
                            self._release_key(gone, user_id)
                    return True
                if access_key not in old:  # deleted or changed meanwhile: take the entry back, and look again
                    self._release_key(access_key, user_id)
            raise MetaUnavailable(f"user {user_id}: too many concurrent changes")

        return await self._run(run)

    async def put_user_policy(self, user_id: str, name: str, document: str) -> bool:
        return (await self._run(self._lwt, "UPDATE users SET policies[?] = ? WHERE id = ? IF EXISTS",
                                (name, document, user_id)))[0]

    async def delete_user_policy(self, user_id: str, name: str) -> bool:
        def run() -> bool:
            row = self._one(f"{self._USER_SELECT} WHERE id = ?", (user_id,))
            if row is None or name not in (row.policies or {}):
                return False
            return self._lwt("DELETE policies[?] FROM users WHERE id = ? IF EXISTS", (name, user_id))[0]

        return await self._run(run)

    def _user(self, user_id: str) -> User | None:
        r = self._one(f"{self._USER_SELECT} WHERE id = ?", (user_id,))
        return self._user_row(r) if r else None

    async def user_by_access_key(self, access_key: str) -> User | None:
        if not access_key:
            return None

        def run() -> User | None:
            r = self._one("SELECT id FROM users_by_key WHERE access_key = ?", (access_key,))
            user = self._user(r.id) if r else None
            return user if user is not None and user.key(access_key) is not None else None

        return await self._run(run)

    async def user_by_id(self, user_id: str) -> User | None:
        return await self._run(self._user, user_id) if user_id else None

    async def list_users(self) -> list[User]:
        def run() -> list[User]:
            return sorted((self._user_row(r) for r in self._rows(self._USER_SELECT)), key=lambda u: u.id)

        return await self._run(run)

    # -- buckets --

    _BUCKET_SELECT = ("SELECT name, owner_id, created, region, acl, cors, id, state, versioning, object_lock, tags, "
                      "lifecycle, policy, public_access, ownership, encryption FROM buckets")

    @staticmethod
    def _bucket(r: Any) -> Bucket:
        return Bucket(r.name, r.owner_id, r.created, r.region, r.acl, r.cors, r.id, r.versioning or "",
                      r.object_lock or "", _dec_pairs(r.tags or "[]"), r.lifecycle or "", r.policy or "",
                      r.public_access or "", r.ownership or "", r.encryption or "")

    def _bucket_row(self, name: str) -> Any:
        return self._one(self._BUCKET_SELECT + " WHERE name = ?", (name,))

    async def create_bucket(self, bucket: Bucket) -> None:
        def run() -> None:
            applied, row = self._lwt(
                "INSERT INTO buckets (name, id, owner_id, created, region, acl, cors, state, versioning, object_lock, "
                "tags, lifecycle, policy, public_access, ownership, encryption) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                (bucket.name, bucket.id, bucket.owner_id, bucket.created, bucket.region, bucket.acl, bucket.cors,
                 bucket.versioning, bucket.object_lock, _enc_pairs(bucket.tags), bucket.lifecycle, bucket.policy,
                 bucket.public_access, bucket.ownership, bucket.encryption))
            if not applied:
                raise BucketAlreadyExists(bucket.name, row.owner_id)
            # the listing starts as one shard holding every key; shards are named after the bucket's identity
            self._x("INSERT INTO shards (bucket, lo, shard) VALUES (?, '', ?)", (bucket.name, bucket.id))

        await self._run(run)

    async def get_bucket(self, name: str) -> Bucket | None:
        def run() -> Bucket | None:
            r = self._bucket_row(name)
            return self._bucket(r) if r is not None else None

        return await self._run(run)

    async def list_buckets(self, owner_id: str | None = None) -> list[Bucket]:
        def run() -> list[Bucket]:
            rows = self._rows(self._BUCKET_SELECT)
            found = [self._bucket(r) for r in rows if owner_id is None or r.owner_id == owner_id]
            return sorted(found, key=lambda b: b.name.encode())

        return await self._run(run)

    async def update_bucket(self, bucket: Bucket) -> None:
        def run() -> None:
            applied, _ = self._lwt("UPDATE buckets SET acl = ?, cors = ?, versioning = ?, object_lock = ?, tags = ?, "
                                   "lifecycle = ?, policy = ?, public_access = ?, ownership = ?, encryption = ? "
                                   "WHERE name = ? IF id = ?",
                                   (bucket.acl, bucket.cors, bucket.versioning, bucket.object_lock,
                                    _enc_pairs(bucket.tags), bucket.lifecycle, bucket.policy, bucket.public_access,
                                    bucket.ownership, bucket.encryption, bucket.name, bucket.id))
            if not applied:
                raise NoSuchBucket(bucket.name)

        await self._run(run)

    async def delete_bucket(self, name: str) -> None:
        def run() -> None:
            r = self._bucket_row(name)
            if r is None:
                raise NoSuchBucket(name)
            applied, _ = self._lwt("UPDATE buckets SET state = 'deleting' WHERE name = ? IF id = ?", (name, r.id))
            if not applied:
                raise NoSuchBucket(name)
            # writes that began before the mark re-read the bucket after their listing entry is written (the
            # fence in _commit_object), so an entry not seen here belongs to a write that will undo itself
            if self._any_listed(name) or self._pending_in(name):
                self._lwt("UPDATE buckets SET state = '' WHERE name = ? IF id = ?", (name, r.id))
                raise BucketNotEmpty(name)
            for u in list(self._uploads_from(name, "", True, None)):
                try:
                    self._abort(u.upload_id, time.time())
                except NoSuchUpload:
                    pass
            self._many([("DELETE FROM completed WHERE upload_id = ?", (c.upload_id,))
                        for c in self._rows("SELECT upload_id FROM completed_by_bucket WHERE bucket = ?", (name,))])
            self._x("DELETE FROM completed_by_bucket WHERE bucket = ?", (name,))
            for s in self._rows("SELECT shard, split_to FROM shards WHERE bucket = ?", (name,)):
                for shard in {s.shard, s.split_to} - {None}:
                    self._many([("DELETE FROM listing WHERE bucket = ? AND shard = ?", (name, shard)),
                                ("DELETE FROM version_listing WHERE bucket = ? AND shard = ?", (name, shard)),
                                ("DELETE FROM uploads_by_key WHERE bucket = ? AND shard = ?", (name, shard)),
                                ("DELETE FROM shard_rows WHERE bucket = ? AND shard = ?", (name, shard))])
            self._x("DELETE FROM shards WHERE bucket = ?", (name,))
            self._lwt("DELETE FROM buckets WHERE name = ? IF id = ?", (name, r.id))

        await self._run(run)

    def _any_listed(self, bucket: str) -> bool:
        """Any version or delete marker (every one is in ``version_listing``, the latest too)."""
        for lo, shard, hi in self._shard_ranges(bucket):
            sql, bounds = self._range_cql("SELECT key FROM version_listing", lo, hi)
            if self._one(sql + " LIMIT 1", (bucket, shard, *bounds)):
                return True
        return False

    def _pending_in(self, bucket: str) -> bool:
        """A change of an object of ``bucket`` whose follow-ups (its listing entry) may not be written yet."""
        results = self._many(("SELECT bucket, tbl FROM pending_ops WHERE slot = ?", (s,))
                             for s in range(PENDING_SLOTS))
        return any(r.tbl == "objects" and r.bucket == bucket for rs in results for r in rs)

    # -- the commit protocol (see the module's docstring) --

    def _read_record(self, kind: _Kind, k: tuple) -> Any:
        return self._one(f"SELECT {kind.cols}, {_REC_COLS} FROM {kind.table} WHERE {kind.where()}", k)

    def _change(self, kind: _Kind, k: tuple, decide: Callable[[Any], _Change | None], *,
                intent: bytes | None = None, floor_ts: int = 0,
                fence: tuple[str, tuple, Callable[[Any], bool]] | None = None,
                first: Any = _UNREAD) -> Any:
        """Apply ``decide(current row or None)`` to record ``k`` of ``kind`` (None: change nothing) as one
        lightweight transaction, then its follow-ups. Returns the decision's ``result``.

        ``intent``: marked committing before the transaction (IntentLost if it is gone or claimed), unmarked if
        the decision raises. ``fence``: (query, params, ok): read with the follow-ups' last step; ``ok(row)`` False
        means the record's container went away meanwhile (a bucket deleted, an upload completed): the change is
        undone and the caller raises. ``first``: the record, read already (with the caller's own reads).
        """
        marked = False
        for _attempt in range(LWT_RETRIES):
            row = self._read_record(kind, k) if first is _UNREAD or _attempt else first
            if row is not None and row.seq is not None and row.done != row.seq and row.pending:
                self._follow_up(kind, k, row)  # what the previous change still owed, before it is overwritten
            try:
                change = decide(row if row is not None and not row.deleted else None)
            except BaseException:
                if marked:
                    self._unmark_intent(intent)
                raise
            if change is None:
                if marked:
                    self._unmark_intent(intent)
                return None
            if intent is not None and not marked:
                applied, _ = self._lwt("UPDATE intents SET committing = true WHERE intent_id = ? IF claimed = false",
                                       (intent,))
                if not applied:
                    raise IntentLost(intent.hex())
                marked = True
            op = uuid.uuid4().hex
            old_seq = row.seq if row is not None and row.seq is not None else None
            seq = (old_seq or 0) + 1
            ts = max(_now_us(), (row.ts or 0) + 1 if row is not None else 0, floor_ts + 1)
            plan = dict(change.plan, intent=intent.hex() if intent else "")
            slot = _hash_slot(op, PENDING_SLOTS)
            self._x("INSERT INTO pending_ops (slot, op, created, tbl, bucket, key, upload_id, number) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL 864000",
                    (slot, op, time.time(), kind.table, *self._pending_key(kind, k)))
            rec = (seq, ts, op, _json(plan))
            if change.values is None:
                sets = "deleted = true, manifest = '[]', inline = null, seq = ?, ts = ?, op = ?, pending = ?"
                params: tuple = rec
            else:
                cols = [c.strip() for c in kind.cols.split(",")]
                sets = ", ".join(f"{c} = ?" for c in cols) + ", deleted = false, seq = ?, ts = ?, op = ?, pending = ?"
                params = (*change.values, *rec)
            if old_seq is None:
                cql, args = f"UPDATE {kind.table} SET {sets} WHERE {kind.where()} IF seq = null", (*params, *k)
            else:
                cql, args = (f"UPDATE {kind.table} SET {sets} WHERE {kind.where()} IF seq = ?",
                             (*params, *k, old_seq))
            applied = self._record_lwt(kind, k, cql, args, op)
            if not applied:  # a concurrent change won: back off a random while (up to 200 ms), then again
                self._x("DELETE FROM pending_ops WHERE slot = ? AND op = ?", (slot, op))
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** _attempt)))
                continue
            # the record as the transaction wrote it (no read back: it applied, so this is what it holds)
            cols = [c.strip() for c in kind.cols.split(",")]
            fields: dict[str, Any] = dict.fromkeys(cols)
            if change.values is not None:
                fields.update(zip(cols, change.values, strict=True))
            else:
                fields.update(manifest="[]")
            new_row = SimpleNamespace(**fields, seq=seq, ts=ts, op=op, pending=rec[3], done=None,
                                      deleted=change.values is None)
            fenced = self._follow_up(kind, k, new_row, fence=fence[:2] if fence else None)
            if fence is not None and not fence[2](fenced):
                self._undo(kind, k, op)
                raise _Fenced()
            return change.result
        if marked:
            self._unmark_intent(intent)
        raise MetaUnavailable(f"{kind.table} {k}: too many concurrent changes")

    @staticmethod
    def _pending_key(kind: _Kind, k: tuple) -> tuple:
        return (k[0], k[1], "", 0) if kind is _OBJECTS else ("", "", k[0], k[1])

    def _unmark_intent(self, intent: bytes | None) -> None:
        if intent is not None:
            self._lwt("UPDATE intents SET committing = null WHERE intent_id = ? IF committing = true", (intent,))

    def _undo(self, kind: _Kind, k: tuple, op: str) -> None:
        """Delete the record if it is still change ``op``'s (a later change stands on its own)."""
        def decide(row: Any) -> _Change | None:
            if row is None or row.op != op:
                return None
            if kind is _OBJECTS:  # a write into a bucket being deleted: the key's only version goes
                plan = _drop_plan([_obj_from(k[0], k[1], row)], time.time())
            else:
                plan = {"old": row.manifest, "nb": time.time()}
            return _Change(None, (), dict(plan, count=-1))

        self._change(kind, k, decide)

    def _follow_up(self, kind: _Kind, k: tuple, row: Any, fence: tuple[str, tuple] | None = None) -> Any:
        """Write what change ``row.op`` owes outside its record (idempotent), then mark it done; ``fence``: a
        read made with that last step, after everything else (its row is returned).

        Of a key's record (its latest version): that version's ``versions`` row; the ``versions`` rows of the
        versions the change removed for good (``drop``), their chunks out of the index and to the GC queue; a
        noncurrent version's new metadata (``rewrite``); and, in the key's shards, the listing entry (the latest
        when it is not a delete marker) and the version listing entries."""
        plan = json.loads(row.pending)
        ts = row.ts
        new = () if row.deleted else _dec_manifest(row.manifest)
        old = _dec_manifest(plan.get("old") or "[]")
        work: list[tuple[str, Sequence[Any]]] = []
        if kind is _OBJECTS:
            bucket, key = k
            owner = (bucket, key, "", 0, row.version_id if not row.deleted else "")
            if not row.deleted:
                work.append((f"INSERT INTO versions (bucket, key, vsort, {_VERSION_COLS}) VALUES "
                             f"(?, ?, ?, {', '.join('?' * (len(_OBJ_NAMES) + 1))}) USING TIMESTAMP ?",
                             (bucket, key, row.vsort, *(getattr(row, c) for c in _OBJ_NAMES), bool(row.marker),
                              ts)))
            for vsort, _vid in plan.get("drop", []):
                work.append(("DELETE FROM versions USING TIMESTAMP ? WHERE bucket = ? AND key = ? AND vsort = ?",
                             (ts, bucket, key, vsort)))
            rewrite = plan.get("rewrite")
            if rewrite:  # a noncurrent version's metadata (acl, tags) or replicas (repair)
                work.append(("UPDATE versions USING TIMESTAMP ? SET acl = ?, tags = ?, manifest = ?, lock = ? "
                             "WHERE bucket = ? AND key = ? AND vsort = ?",
                             (ts, rewrite["acl"], rewrite["tags"], rewrite["manifest"], rewrite.get("lock", ""),
                              bucket, key, rewrite["vsort"])))
                work += self._index_work(_dec_manifest(rewrite["manifest"]), _dec_manifest(rewrite["prev"]),
                                         (bucket, key, "", 0, rewrite["vid"]), ts)
        elif plan.get("bucket"):  # a part's change names its upload's bucket and key
            owner = (plan["bucket"], plan.get("key", ""), k[0], k[1], "")
        else:
            upload = self._one("SELECT bucket, key FROM uploads WHERE upload_id = ?", (k[0],))
            owner = (upload.bucket if upload else "", upload.key if upload else "", k[0], k[1], "")
        if kind is _PARTS:
            if row.deleted:
                work.append(("DELETE FROM part_numbers USING TIMESTAMP ? WHERE upload_id = ? AND number = ?",
                             (ts, *k)))
            else:
                work.append(("INSERT INTO part_numbers (upload_id, number) VALUES (?, ?) USING TIMESTAMP ?",
                             (*k, ts)))
        work += self._index_work(new, old, owner, ts)
        intent = bytes.fromhex(plan["intent"]) if plan.get("intent") else b""
        revive = [r.chunk_id for r in new if r.chunk_id[:12] != intent]
        if kind is _OBJECTS:
            self._write_listing(k[0], k[1], row, plan, extra=work)
        else:
            self._many(work)
        # both at the change's timestamp: a follow-up run late (twice: by its own node and by the next change of
        # the record) cannot take out of the queue what a later change of the record put in it
        self._revive(revive, ts)
        kept = {r.chunk_id for r in new}
        retired = [r for r in old if r.chunk_id not in kept]
        self._enqueue([GcEntry(r.chunk_id, r.agents, plan.get("nb", 0.0)) for r in retired], ts)
        if intent:
            self._drop_intent(intent)
        if plan.get("complete"):
            self._finish_complete(plan["complete"], new)
        last = self._many([(f"UPDATE {kind.table} SET done = ? WHERE {kind.where()}", (row.seq, *k)),
                           ("DELETE FROM pending_ops WHERE slot = ? AND op = ?",
                            (_hash_slot(row.op, PENDING_SLOTS), row.op))] + ([fence] if fence else []))
        return last[2].one() if fence else None

    def _index_work(self, new: Sequence[ChunkRef], old: Sequence[ChunkRef],
                    owner: tuple[str, str, str, int, str], ts: int) -> list[tuple[str, Sequence[Any]]]:
        """The chunk index rows of ``new`` (owned by ``owner``: bucket, key, upload id, part, version id), and the
        removal of what ``old`` indexed and ``new`` does not, all at write timestamp ``ts``."""
        bucket, key, upload_id, part, version_id = owner
        work: list[tuple[str, Sequence[Any]]] = []
        before = {r.chunk_id: r for r in old}
        for r in new:
            work.append(("INSERT INTO chunk_index (chunk_id, bucket, key, upload_id, part, size, crc, agents, "
                         "version_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                         (r.chunk_id, bucket, key, upload_id, part, r.size, r.crc32c, _json(list(r.agents)),
                          version_id, ts)))
            for a in r.agents:
                work.append(("INSERT INTO chunks_by_agent (agent_id, slot, chunk_id) VALUES (?, ?, ?) "
                             "USING TIMESTAMP ?", (a, _slot(r.chunk_id), r.chunk_id, ts)))
            if len(r.agents) < TRACKED_REPLICAS:
                work.append(("INSERT INTO chunks_by_count (replicas, slot, chunk_id) VALUES (?, ?, ?) "
                             "USING TIMESTAMP ?", (len(r.agents), _slot(r.chunk_id), r.chunk_id, ts)))
            prev = before.get(r.chunk_id)
            if prev is not None:
                for a in set(prev.agents) - set(r.agents):
                    work.append(("DELETE FROM chunks_by_agent USING TIMESTAMP ? WHERE agent_id = ? AND slot = ? "
                                 "AND chunk_id = ?", (ts, a, _slot(r.chunk_id), r.chunk_id)))
                if len(prev.agents) != len(r.agents) and len(prev.agents) < TRACKED_REPLICAS:
                    work.append(("DELETE FROM chunks_by_count USING TIMESTAMP ? WHERE replicas = ? AND slot = ? "
                                 "AND chunk_id = ?", (ts, len(prev.agents), _slot(r.chunk_id), r.chunk_id)))
        kept = {r.chunk_id for r in new}
        for r in old:
            if r.chunk_id in kept:
                continue
            work.append(("DELETE FROM chunk_index USING TIMESTAMP ? WHERE chunk_id = ?", (ts, r.chunk_id)))
            for a in r.agents:
                work.append(("DELETE FROM chunks_by_agent USING TIMESTAMP ? WHERE agent_id = ? AND slot = ? "
                             "AND chunk_id = ?", (ts, a, _slot(r.chunk_id), r.chunk_id)))
            if len(r.agents) < TRACKED_REPLICAS:
                work.append(("DELETE FROM chunks_by_count USING TIMESTAMP ? WHERE replicas = ? AND slot = ? "
                             "AND chunk_id = ?", (ts, len(r.agents), _slot(r.chunk_id), r.chunk_id)))
        return work

    async def maintain(self) -> int:
        """The GC leader's pass over the store: ``recover`` what dead nodes left half-done, then split the shards
        that grew past ``settings.shard_rows`` keys. Returns the number of changes recovered and splits made."""
        recovered = await self.recover()
        return recovered + await self._run(self.split_shards, self.settings.shard_rows)

    async def recover(self, older_than: float | None = None) -> int:
        """Finish the changes whose node died between their record's transaction and their follow-ups (older than
        ``older_than``, default RECOVER_GRACE ago); an upload intent marked committing by a change that never
        applied becomes collectable again. Returns how many changes were looked at."""
        limit = time.time() - RECOVER_GRACE if older_than is None else older_than

        def run() -> int:
            seen = 0
            for s in range(PENDING_SLOTS):
                for p in self._rows("SELECT op, created, tbl, bucket, key, upload_id, number FROM pending_ops "
                                    "WHERE slot = ?", (s,)):
                    if p.created >= limit:
                        continue
                    seen += 1
                    kind, k = (_OBJECTS, (p.bucket, p.key)) if p.tbl == "objects" else (_PARTS, (p.upload_id,
                                                                                             p.number))
                    row = self._read_record(kind, k)
                    if row is not None and row.op == p.op and row.done != row.seq:
                        self._follow_up(kind, k, row)
                    else:
                        self._x("DELETE FROM pending_ops WHERE slot = ? AND op = ?", (s, p.op))
            for intent in self._committing_intents(limit):
                self._unmark_intent(intent)
            return seen

        return await self._run(run)

    def _committing_intents(self, older_than: float) -> list[bytes]:
        """Intents marked committing, not renewed since ``older_than``, whose change no record shows (it never
        applied; had it applied, its follow-ups would have dropped the intent)."""
        out = []
        for intent in self._stale(older_than, 1000, None):
            if not intent[1].committing:
                continue
            r = intent[1]
            row = self._read_record(_OBJECTS, (r.bucket, r.key)) if r.bucket else None
            if row is not None and row.pending and json.loads(row.pending).get("intent") == r.intent_id.hex():
                continue
            out.append(bytes(r.intent_id))
        return out

    # -- objects --

    def _shard_row(self, bucket: str, key: str) -> Any:
        """The shards row whose range holds ``key`` (None: the bucket has none, or is gone)."""
        return self._one("SELECT lo, shard, split_at, split_to FROM shards WHERE bucket = ? AND lo <= ? "
                         "ORDER BY lo DESC LIMIT 1", (bucket, key))

    def _targets(self, bucket: str, key: str) -> set[str]:
        """The shards a listing entry for ``key`` must be in now: the one whose range holds it, and, while that
        one is being split at or below ``key``, the shard its upper part is being copied to."""
        r = self._shard_row(bucket, key)
        if r is None:
            # no shard row: the bucket's first shard, named after its identity (its row may not be written yet)
            b = self._bucket_row(bucket)
            return {b.id if b is not None else "-"}  # "-": the bucket is gone, a shard no listing reads
        out = {r.shard}
        if r.split_at is not None and key.encode() >= r.split_at.encode():
            out.add(r.split_to)
        return out

    def _write_listing(self, bucket: str, key: str, row: Any, plan: dict[str, Any],
                       extra: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
        """The listing entry of a change (or its removal), at the record's timestamp, in every shard it must be
        in (``_write_sharded``). ``extra``: statements sent with the first write (the change's other
        follow-ups)."""
        ts = row.ts

        def statements(shard: str) -> list[tuple[str, Sequence[Any]]]:
            out: list[tuple[str, Sequence[Any]]] = []
            if row.deleted or row.marker:  # the listing shows the latest version, unless it is a marker
                out.append(("DELETE FROM listing USING TIMESTAMP ? WHERE bucket = ? AND shard = ? AND key = ?",
                            (ts, bucket, shard, key)))
            else:
                out.append(("INSERT INTO listing (bucket, shard, key, version_id, size, etag, last_modified, "
                            "owner_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                            (bucket, shard, key, row.version_id, row.size, row.etag, row.last_modified, row.owner_id,
                             ts)))
            if not row.deleted:
                out.append((f"INSERT INTO version_listing (bucket, shard, {_VLIST_COLS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                            (bucket, shard, key, row.vsort, row.version_id, bool(row.marker), row.size, row.etag,
                             row.last_modified, row.owner_id, ts)))
            out += [("DELETE FROM version_listing USING TIMESTAMP ? WHERE bucket = ? AND shard = ? AND key = ? "
                     "AND vsort = ?", (ts, bucket, shard, key, vsort)) for vsort, _vid in plan.get("drop", [])]
            return out

        self._write_sharded(bucket, key, statements, plan.get("count", 0), extra)

    def _write_sharded(self, bucket: str, key: str, statements: Callable[[str], list[tuple[str, Sequence[Any]]]],
                       count: int, extra: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
        """A row of a key-range-sharded table (the listing, the uploads in progress) written — or removed — in
        every shard it must be in, with the fence against a split running at the same time: after writing, the
        shards row is read again, and a shard that appeared meanwhile (a split began, or finished) gets the write
        too. A split copies what it finds once its mark is written, so a row is either found by its copy or
        written here. ``count``: how the shard's key counter moves (+1 a key added, -1 removed)."""
        written: set[str] = set()
        for _ in range(8):
            todo = self._targets(bucket, key) - written
            if not todo:
                break
            work = [q for shard in sorted(todo) for q in statements(shard)]
            if not written:
                work += extra
                if count:  # a key added or removed: the shard's size moves
                    self._count_async(bucket, min(todo), count)
            self._many(work)
            written |= todo

    def _count_async(self, bucket: str, shard: str, delta: int) -> None:
        """Move a shard's key counter, not waiting for it: the counter only triggers splits (the splitter counts
        for real, and samples shards whose counter fell behind), and a counter write — which goes through one
        replica first — can time out while a Cassandra node is down but not yet known to be: no request waits
        on it or fails for it."""
        future = self._session.execute_async(
            self._stmt("UPDATE shard_rows SET n = n + ? WHERE bucket = ? AND shard = ?"), (delta, bucket, shard))
        future.add_errback(lambda exc: log.debug("shard counter %s/%s not moved: %s", bucket, shard, exc))

    def _shard_ranges(self, bucket: str) -> list[tuple[str, str, str | None]]:
        """Every shard of the bucket as (lo, shard, hi)."""
        rows = self._rows("SELECT lo, shard FROM shards WHERE bucket = ?", (bucket,))
        if not rows:
            b = self._bucket_row(bucket)
            return [("", b.id, None)] if b is not None else []
        return [(r.lo, r.shard, rows[i + 1].lo if i + 1 < len(rows) else None) for i, r in enumerate(rows)]

    def _range_cql(self, select: str, lo: str, hi: str | None) -> tuple[str, tuple]:
        sql = select + " WHERE bucket = ? AND shard = ? AND key >= ?"
        return (sql + " AND key < ?", (lo, hi)) if hi is not None else (sql, (lo,))

    # -- shard splits (run by the GC leader through maintain) --

    def split_shards(self, max_rows: int, *, recount_all: bool = False) -> int:
        """Split every shard that holds more than ``max_rows`` keys (by its counter) in two halves, and finish
        splits a dead maintainer left. Returns how many splits were made. ``recount_all``: count every shard for
        real, not one at random (a full check, whose cost is every shard's rows)."""
        splits = 0
        counted = self._rows("SELECT bucket, shard, n FROM shard_rows")
        for r in counted:
            if r.n > max_rows and self._split(r.bucket, r.shard, max_rows):
                splits += 1
        # counters are best effort: one shard per pass, picked at random, is counted for real (and split if big)
        for r in (counted if recount_all else random.sample(counted, min(1, len(counted)))):
            if r.n <= max_rows and self._split(r.bucket, r.shard, max_rows):
                splits += 1
        for b in {r.bucket for r in self._rows("SELECT bucket, lo, split_at FROM shards") if r.split_at is not None}:
            for row in self._rows("SELECT lo, shard, split_at, split_to FROM shards WHERE bucket = ?", (b,)):
                if row.split_at is not None:
                    self._finish_split(b, row)
        return splits

    def _split(self, bucket: str, shard: str, max_rows: int = 0) -> bool:
        ranges = {s: (lo, hi) for lo, s, hi in self._shard_ranges(bucket)}
        if shard not in ranges:
            return False
        lo, hi = ranges[shard]
        keys = []
        for table in ("version_listing", "uploads_by_key"):  # they live in the shard's key range (with listing)
            sql, bounds = self._range_cql(f"SELECT key FROM {table}", lo, hi)
            keys += [r.key for r in self._rows(sql, (bucket, shard, *bounds))]
        keys.sort(key=str.encode)
        # the counter is approximate: set it to what the shard holds, and split only if it is really too big
        self._x("UPDATE shard_rows SET n = n + ? WHERE bucket = ? AND shard = ?",
                (len(keys) - self._count(bucket, shard), bucket, shard))
        if len(keys) < 2 or len(keys) <= max_rows:
            return False
        middle = keys[len(keys) // 2]
        if middle == keys[0]:  # the first key holds half the rows (its versions): split after it, if anything is
            middle = next((k for k in keys if k != keys[0]), "")
            if not middle:
                return False  # one key's versions: a shard holds a key whole
        applied, _ = self._lwt("UPDATE shards SET split_at = ?, split_to = ? WHERE bucket = ? AND lo = ? "
                               "IF split_at = null", (middle, uuid.uuid4().hex, bucket, lo))
        if not applied:
            return False
        row = self._one("SELECT lo, shard, split_at, split_to FROM shards WHERE bucket = ? AND lo = ?", (bucket, lo))
        self._finish_split(bucket, row)
        return True

    def _count(self, bucket: str, shard: str) -> int:
        r = self._one("SELECT n FROM shard_rows WHERE bucket = ? AND shard = ?", (bucket, shard))
        return r.n if r is not None and r.n is not None else 0

    def _finish_split(self, bucket: str, row: Any) -> None:
        """Copy the shard's rows from ``split_at`` on — listing and version listing entries, uploads in progress —
        to ``split_to``
        (each at its own write timestamp, so a newer write or removal by a fenced writer wins), then make the new
        shard own them, then drop them from the old one. Idempotent: a dead maintainer's split is finished by the
        next."""
        ranges = {s: (lo, hi) for lo, s, hi in self._shard_ranges(bucket)}
        _, hi = ranges.get(row.shard, (row.lo, None))
        cols = "key, version_id, size, etag, last_modified, owner_id"
        sql, bounds = self._range_cql(f"SELECT {cols}, WRITETIME(etag) AS wt FROM listing", row.split_at, hi)
        moved = self._rows(sql, (bucket, row.shard, *bounds))
        for i in range(0, len(moved), 200):
            self._many(("INSERT INTO listing (bucket, shard, key, version_id, size, etag, last_modified, owner_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                        (bucket, row.split_to, m.key, m.version_id, m.size, m.etag, m.last_modified, m.owner_id,
                         m.wt)) for m in moved[i:i + 200])
        sql, bounds = self._range_cql(f"SELECT {_VLIST_COLS}, WRITETIME(version_id) AS wt FROM version_listing",
                                      row.split_at, hi)
        versions = self._rows(sql, (bucket, row.shard, *bounds))
        for i in range(0, len(versions), 200):
            self._many((f"INSERT INTO version_listing (bucket, shard, {_VLIST_COLS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                        (bucket, row.split_to, v.key, v.vsort, v.version_id, v.marker, v.size, v.etag,
                         v.last_modified, v.owner_id, v.wt)) for v in versions[i:i + 200])
        ucols = ("key, initiated, upload_id, owner_id, content_type, headers, user_meta, acl, tags, "
                 "checksum_algorithm")
        sql, bounds = self._range_cql(f"SELECT {ucols}, WRITETIME(owner_id) AS wt FROM uploads_by_key",
                                      row.split_at, hi)
        uploads = self._rows(sql, (bucket, row.shard, *bounds))
        self._many((f"INSERT INTO uploads_by_key (bucket, shard, {ucols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "USING TIMESTAMP ?", (bucket, row.split_to, u.key, u.initiated, u.upload_id, u.owner_id,
                                          u.content_type, u.headers, u.user_meta, u.acl, u.tags,
                                          u.checksum_algorithm, u.wt)) for u in uploads)
        from cassandra.query import BatchStatement

        flip = BatchStatement()  # one partition: both rows change together
        flip.add(self._stmt("INSERT INTO shards (bucket, lo, shard) VALUES (?, ?, ?)"),
                 (bucket, row.split_at, row.split_to))
        flip.add(self._stmt("UPDATE shards SET split_at = null, split_to = null WHERE bucket = ? AND lo = ?"),
                 (bucket, row.lo))
        self._session.execute(flip)
        moved = list(versions) + list(uploads)  # the counters count version listing rows and uploads
        for table in ("listing", "version_listing", "uploads_by_key"):
            if hi is None:
                self._x(f"DELETE FROM {table} WHERE bucket = ? AND shard = ? AND key >= ?",
                        (bucket, row.shard, row.split_at))
            else:
                self._x(f"DELETE FROM {table} WHERE bucket = ? AND shard = ? AND key >= ? AND key < ?",
                        (bucket, row.shard, row.split_at, hi))
        self._many([("UPDATE shard_rows SET n = n - ? WHERE bucket = ? AND shard = ?", (len(moved), bucket, row.shard)),
                    ("UPDATE shard_rows SET n = n + ? WHERE bucket = ? AND shard = ?",
                     (len(moved), bucket, row.split_to))])

    def _adopt_keys(self) -> int:
        """Schema 6 -> 7: each user's one key pair (columns access_key, secret_key) becomes its first Active key;
        the old columns are emptied, so no secret stays where nothing reads it. Idempotent."""
        done = 0
        for r in self._rows("SELECT id, access_key, secret_key, keys FROM users"):
            if not r.access_key and not r.secret_key:
                continue
            keys = dict(r.keys or {})
            if r.access_key and r.secret_key and r.access_key not in keys:
                keys[r.access_key] = json.dumps([r.secret_key, ACTIVE, 0.0])
                done += 1
            self._x("UPDATE users SET keys = ?, access_key = null, secret_key = null WHERE id = ?", (keys, r.id))
        return done

    def _adopt_versions(self) -> int:
        """Schema 1 to 2: give each object record written before versions existed (no ``vsort``) its place among
        versions — the null version, ordered by its modification time — and its version rows, by one change of
        the record each. Run once, by the first node of the new release, before it records schema version 2."""
        done = 0
        for b in self._rows("SELECT name FROM buckets"):
            for lo, shard, hi in self._shard_ranges(b.name):
                sql, bounds = self._range_cql("SELECT key FROM listing", lo, hi)
                for r in self._rows(sql, (b.name, shard, *bounds)):
                    def decide(row: Any, bucket: str = b.name, key: str = r.key) -> _Change | None:
                        if row is None or row.vsort is not None:
                            return None
                        v = _obj_from(bucket, key, row)
                        v = attrs.evolve(v, vsort=VSORT_BASE - int(v.last_modified * 1e9))
                        return _Change(_rec_values(v, v.vsort if v.version_id == "null" else None), v.manifest,
                                       {"old": "[]", "nb": 0.0, "count": 1}, True)

                    done += bool(self._change(_OBJECTS, (b.name, r.key), decide))
        return done

    def _check_bucket(self, name: str, bucket_id: str | None) -> Any:
        r = self._bucket_row(name)
        if r is None or r.state == "deleting" or (bucket_id is not None and r.id != bucket_id):
            raise NoSuchBucket(name)
        return r

    def _bucket_fence(self, name: str, bucket_id: str) -> tuple[str, tuple, Callable[[Any], bool]]:
        """The fence of a write into bucket ``bucket_id``: still there, still that bucket, not being deleted."""
        def ok(r: Any) -> bool:
            return r is not None and r.id == bucket_id and r.state != "deleting"

        return self._BUCKET_SELECT + " WHERE name = ?", (name,), ok

    def _version_row(self, bucket: str, key: str, vsort: int) -> Any:
        return self._one(f"SELECT vsort, {_VERSION_COLS} FROM versions WHERE bucket = ? AND key = ? AND vsort = ?",
                         (bucket, key, vsort))

    def _find_version(self, bucket: str, key: str, row: Any, version_id: str) -> ObjectVersion | None:
        """Version ``version_id`` of the key whose record is ``row`` (read already, its follow-ups done)."""
        if row is None or row.deleted or not row.seq:
            return None
        if row.version_id == version_id:
            return _obj_from(bucket, key, row)
        vsort = row.null_vsort if version_id == "null" else version_vsort(version_id)
        if vsort is None:
            return None
        found = self._version_row(bucket, key, vsort)
        return _obj_from(bucket, key, found) if found is not None and found.version_id == version_id else None

    def _next_version(self, bucket: str, key: str, after: int) -> ObjectVersion | None:
        """The newest version of the key older than vsort ``after`` (the one that becomes the latest when the
        latest goes), from the version listing of the shard that holds the key."""
        r = self._shard_row(bucket, key)
        shard = r.shard if r is not None else (self._bucket_row(bucket) or SimpleNamespace(id="-")).id
        nxt = self._one("SELECT vsort FROM version_listing WHERE bucket = ? AND shard = ? AND key = ? AND vsort > ? "
                        "LIMIT 1", (bucket, shard, key, after))
        if nxt is None:
            return None
        found = self._version_row(bucket, key, nxt.vsort)
        return _obj_from(bucket, key, found) if found is not None else None

    def _commit_object(self, obj: ObjectVersion, *, intent_id: bytes | None, if_match: Sequence[str] | None,
                       if_none_match: Sequence[str] | None, gc_delay: float, bucket_id: str | None,
                       extra: dict[str, Any] | None = None, floor_ts: int = 0, bypass: bool = False) -> Committed:
        # the bucket and the record, read together
        got = self._many([(self._BUCKET_SELECT + " WHERE name = ?", (obj.bucket,)),
                          (f"SELECT {_OBJECTS.cols}, {_REC_COLS} FROM objects WHERE {_OBJECTS.where()}",
                           (obj.bucket, obj.key))])
        b = got[0].one()
        if b is None or b.state == "deleting" or (bucket_id is not None and b.id != bucket_id):
            raise NoSuchBucket(obj.bucket)
        versioning = b.versioning or ""

        def decide(row: Any) -> _Change:
            latest = _obj_from(obj.bucket, obj.key, row) if row is not None else None
            current = latest.etag if latest is not None and not latest.delete_marker else None
            if if_match is not None and (current is None or ("*" not in if_match and current not in if_match)):
                raise PreconditionFailed(f"{obj.bucket}/{obj.key} does not match If-Match")
            if if_none_match is not None and current is not None and ("*" in if_none_match
                                                                      or current in if_none_match):
                raise PreconditionFailed(f"{obj.bucket}/{obj.key} matches If-None-Match")
            vsort = next_vsort(row.vsort if row is not None else None)
            new = attrs.evolve(obj, version_id=new_version_id(vsort) if versioning == "Enabled" else "null",
                               vsort=vsort, delete_marker=False)
            replaced = None if versioning == "Enabled" else self._find_version(obj.bucket, obj.key, row, "null")
            _check_unlocked(replaced, bypass)
            plan = _drop_plan([replaced] if replaced is not None else [], time.time() + gc_delay)
            plan["count"] = 1 - (replaced is not None)
            if extra:
                plan.update(extra)
            null_vsort = vsort if new.version_id == "null" else row.null_vsort if row is not None else None
            return _Change(_rec_values(new, null_vsort), new.manifest, plan, Committed(new, replaced))

        try:
            return self._change(_OBJECTS, (obj.bucket, obj.key), decide, intent=intent_id, floor_ts=floor_ts,
                                fence=self._bucket_fence(obj.bucket, b.id), first=got[1].one())
        except _Fenced:
            raise NoSuchBucket(obj.bucket) from None

    async def put_object(
        self,
        obj: ObjectVersion,
        *,
        intent_id: bytes | None = None,
        if_match: Sequence[str] | None = None,
        if_none_match: Sequence[str] | None = None,
        gc_delay: float = 0.0,
        bucket_id: str | None = None,
        bypass_governance: bool = False,
    ) -> Committed:
        return await self._run(lambda: self._commit_object(
            obj, intent_id=bytes(intent_id) if intent_id is not None else None, if_match=if_match,
            if_none_match=if_none_match, gc_delay=gc_delay, bucket_id=bucket_id, bypass=bypass_governance))

    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion | None:
        def run() -> ObjectVersion | None:
            row = self._read_record(_OBJECTS, (bucket, key))
            if version_id is not None:
                return self._find_version(bucket, key, row, version_id)
            return _obj_from(bucket, key, row) if row is not None and not row.deleted and row.seq else None

        return await self._run(run)

    def _delete(self, bucket: str, key: str, version_id: str | None, versioning: str, owner_id: str,
                gc_delay: float, bypass: bool = False, expected: ObjectVersion | None = None) -> Removed:
        def decide(row: Any) -> _Change | None:
            nb = time.time() + gc_delay
            if expected is not None and not _same_version(_obj_from(bucket, key, row) if row is not None else None,
                                                          expected):
                return None
            null_vsort = row.null_vsort if row is not None else None
            if version_id is not None:  # that version, for good
                target = self._find_version(bucket, key, row, version_id)
                if target is None:
                    return None
                _check_unlocked(target, bypass)
                plan = _drop_plan([target], nb)
                plan["count"] = -1
                if target.version_id == "null":
                    null_vsort = None
                if row.vsort != target.vsort:  # a noncurrent one: the record stays what it is
                    return _Change(_rec_values(_obj_from(bucket, key, row), null_vsort), _dec_manifest(row.manifest),
                                   plan, Removed(target))
                successor = self._next_version(bucket, key, target.vsort)
                if successor is None:
                    return _Change(None, (), plan, Removed(target))
                return _Change(_rec_values(successor, null_vsort), successor.manifest, plan, Removed(target))
            if not versioning:  # the key goes
                if row is None:
                    return None
                plan = _drop_plan([_obj_from(bucket, key, row)], nb)
                plan["count"] = -1
                return _Change(None, (), plan, Removed(_obj_from(bucket, key, row)))
            vsort = next_vsort(row.vsort if row is not None else None)
            removed = self._find_version(bucket, key, row, "null") if versioning == "Suspended" else None
            _check_unlocked(removed, bypass)
            marker = ObjectVersion(bucket, key, new_version_id(vsort) if versioning == "Enabled" else "null", 0, "",
                                   time.time(), owner_id, content_type="", delete_marker=True, vsort=vsort)
            plan = _drop_plan([removed] if removed is not None else [], nb)
            plan["count"] = 1 - (removed is not None)
            if marker.version_id == "null":
                null_vsort = vsort
            return _Change(_rec_values(marker, null_vsort), (), plan, Removed(removed, marker))

        return self._change(_OBJECTS, (bucket, key), decide) or Removed()

    async def delete_object(self, bucket: str, key: str, *, version_id: str | None = None, gc_delay: float = 0.0,
                            bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False,
                            expected: ObjectVersion | None = None) -> Removed:
        def run() -> Removed:
            r = self._bucket_row(bucket)
            if r is None or (bucket_id is not None and r.id != bucket_id):
                return Removed()
            return self._delete(bucket, key, version_id, r.versioning or "", owner_id, gc_delay, bypass_governance,
                                expected)

        return await self._run(run)

    async def delete_objects(self, bucket: str, entries: Sequence[tuple[str, str | None]], *, gc_delay: float = 0.0,
                             bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False
                             ) -> list[Removed]:
        """Each entry its own change, up to 32 at once (threads of this call's own); entries of one key in order."""
        r = await self._run(self._bucket_row, bucket)
        if r is None or (bucket_id is not None and r.id != bucket_id):
            return [Removed()] * len(entries)
        versioning = r.versioning or ""
        out: list[Removed] = [Removed()] * len(entries)
        by_key: dict[str, list[int]] = {}
        for i, (key, _) in enumerate(entries):
            by_key.setdefault(key, []).append(i)
        limiter = trio.CapacityLimiter(32)

        async def one(key: str, indexes: list[int]) -> None:
            async with limiter:
                for i in indexes:
                    try:
                        out[i] = await self._run(self._delete, bucket, key, entries[i][1], versioning, owner_id,
                                                 gc_delay, bypass_governance)
                    except ObjectLocked:
                        out[i] = Removed(locked=True)

        async with trio.open_nursery() as nursery:
            for key, indexes in by_key.items():
                nursery.start_soon(one, key, indexes)
        return out

    async def update_object(self, obj: ObjectVersion, *, read: ObjectVersion | None = None) -> bool:
        def decide(row: Any) -> _Change | None:
            found = self._find_version(obj.bucket, obj.key, row, obj.version_id)
            if found is None or found.delete_marker or (found.etag, found.last_modified) != (obj.etag,
                                                                                          obj.last_modified):
                return None
            if read is not None and found.lock_state() != read.lock_state():
                return None
            locked = attrs.evolve(found, lock_mode=obj.lock_mode, retain_until=obj.retain_until,
                                  legal_hold=obj.legal_hold)
            if row.vsort == found.vsort:  # the latest: the record changes
                new = attrs.evolve(locked, acl=obj.acl, tags=obj.tags)
                return _Change(_rec_values(new, row.null_vsort), new.manifest, {"old": row.manifest, "nb": time.time()},
                               True)
            rewrite = {"vsort": found.vsort, "vid": found.version_id, "acl": obj.acl, "tags": _enc_pairs(obj.tags),
                       "manifest": _enc_manifest(found.manifest), "prev": _enc_manifest(found.manifest),
                       "lock": enc_lock(locked)}
            return _Change(_rec_values(_obj_from(obj.bucket, obj.key, row), row.null_vsort),
                           _dec_manifest(row.manifest), {"old": row.manifest, "nb": time.time(), "rewrite": rewrite},
                           True)

        return bool(await self._run(lambda: self._change(_OBJECTS, (obj.bucket, obj.key), decide)))

    # -- listing --

    def _shards_from(self, bucket: str, start: str) -> Iterator[tuple[str, str, str | None]]:
        """(lo, shard, hi) of the shards holding keys from ``start`` on, in key order."""
        r = self._one("SELECT lo, shard FROM shards WHERE bucket = ? AND lo <= ? ORDER BY lo DESC LIMIT 1",
                      (bucket, start))
        if r is None:
            r = self._one("SELECT lo, shard FROM shards WHERE bucket = ? LIMIT 1", (bucket,))
            if r is None:  # not written yet (see _shard_of): the first shard holds every key
                b = self._bucket_row(bucket)
                if b is not None:
                    yield "", b.id, None
                return
        while True:
            nxt = self._one("SELECT lo, shard FROM shards WHERE bucket = ? AND lo > ? ORDER BY lo LIMIT 1",
                            (bucket, r.lo))
            yield r.lo, r.shard, nxt.lo if nxt else None
            if nxt is None:
                return
            r = nxt

    def _listed(self, bucket: str, start: str, inclusive: bool, upper: str | None) -> Iterator[Any]:
        """Listing rows with key >= start (> if not inclusive) and < upper, in key order, read lazily in pages
        that grow from 32 rows (a walk that only needs one key reads few)."""
        cols = "key, version_id, size, etag, last_modified, owner_id"
        for lo, shard, hi in self._shards_from(bucket, start):
            bound = upper if hi is None else hi if upper is None else min(upper, hi, key=str.encode)
            low, incl = (start, inclusive) if start.encode() >= lo.encode() else (lo, True)
            page = 32
            while True:
                sql = f"SELECT {cols} FROM listing WHERE bucket = ? AND shard = ? AND key {'>=' if incl else '>'} ?"
                args: list[Any] = [bucket, shard, low]
                if bound is not None:
                    sql += " AND key < ?"
                    args.append(bound)
                rows = self._rows(sql + " LIMIT ?", (*args, page))
                yield from rows
                if len(rows) < page:
                    break
                low, incl = rows[-1].key, False
                page = min(page * 4, 2000)
            if hi is None or (upper is not None and hi.encode() >= upper.encode()):
                return

    async def scan_objects(
        self, bucket: str, *, start: str = "", inclusive: bool = True, prefix: str = "", limit: int = 1000
    ) -> ListPage:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> ListPage:
            lower, incl = start, inclusive
            if prefix and prefix.encode() > start.encode():
                lower, incl = prefix, True
            upper = prefix_successor(prefix) if prefix else None
            keys = []
            for r in self._listed(bucket, lower, incl, upper):
                keys.append(r.key)
                if len(keys) > limit:
                    break
            got = self._many((f"SELECT {_RECORD_COLS}, {_REC_COLS} FROM objects WHERE bucket = ? AND key = ?",
                              (bucket, key)) for key in keys[:limit])
            objects = []
            for key, rs in zip(keys[:limit], got, strict=True):
                row = rs.one()
                if row is not None and not row.deleted and row.seq and not row.marker:
                    objects.append(_obj_from(bucket, key, row))
            return ListPage(tuple(objects), len(keys) > limit)

        return await self._run(run)

    async def list_objects(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", marker: str = "", limit: int = 1000
    ) -> ObjectListing:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> ObjectListing:
            def seek(start: str, inclusive: bool, upper: str | None) -> Iterator[Any]:
                return self._listed(bucket, start, inclusive, upper)

            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit,
                        key_of=lambda r: r.key)
            objects = tuple(ListedObject(bucket, r.key, r.version_id, r.size, r.etag, r.last_modified, r.owner_id)
                            for r in page.items)
            last = page.last if isinstance(page.last, str) else page.last.key if page.last else ""
            return ObjectListing(objects, page.prefixes, page.truncated, last, page.read)

        return await self._run(run)

    def _version_rows(self, bucket: str, start: str, inclusive: bool, upper: str | None,
                      after_vsort: int | None = None) -> Iterator[Any]:
        """Version listing rows with key >= start (> if not inclusive; with ``after_vsort``, the versions of key
        ``start`` older than it, then the keys above) and < upper, by (key, vsort), read lazily in pages that grow
        from 32 rows."""
        for lo, shard, hi in self._shards_from(bucket, start):
            bound = upper if hi is None else hi if upper is None else min(upper, hi, key=str.encode)
            if start.encode() >= lo.encode():
                cursor: tuple = (start, after_vsort) if after_vsort is not None else (start,)
                incl = inclusive and after_vsort is None
            else:
                cursor, incl = (lo,), True
            page = 32
            while True:
                if len(cursor) == 2:
                    sql = (f"SELECT {_VLIST_COLS} FROM version_listing WHERE bucket = ? AND shard = ? "
                           "AND (key, vsort) > (?, ?)")
                else:
                    sql = (f"SELECT {_VLIST_COLS} FROM version_listing WHERE bucket = ? AND shard = ? "
                           f"AND key {'>=' if incl else '>'} ?")
                args: list[Any] = [bucket, shard, *cursor]
                if bound is not None:
                    sql += " AND key < ?"
                    args.append(bound)
                rows = self._rows(sql + " LIMIT ?", (*args, page))
                yield from rows
                if len(rows) < page:
                    break
                cursor = (rows[-1].key, rows[-1].vsort)
                page = min(page * 4, 2000)
            if hi is None or (upper is not None and hi.encode() >= upper.encode()):
                return

    async def list_versions(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", version_id_marker: str = "",
        limit: int = 1000,
    ) -> VersionListing:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> VersionListing:
            after_vsort: int | None = None
            marker_row = None
            if key_marker and version_id_marker:
                marker_row = self._read_record(_OBJECTS, (bucket, key_marker))
                found = self._find_version(bucket, key_marker, marker_row, version_id_marker)
                after_vsort = found.vsort if found is not None else version_vsort(version_id_marker)

            def seek(start: str, inclusive: bool, upper: str | None) -> Iterator[Any]:
                return self._version_rows(bucket, start, inclusive, upper,
                                          after_vsort if start == key_marker else None)

            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=key_marker, limit=limit,
                        key_of=lambda r: r.key, marker_inclusive=after_vsort is not None)
            out: list[ListedVersion] = []
            previous = None
            for r in page.items:
                if r.key != previous:  # the newest of its key on this page: the latest unless the page began inside
                    latest = not (r.key == key_marker and after_vsort is not None
                                  and (marker_row is None or marker_row.vsort != r.vsort))
                else:
                    latest = False
                previous = r.key
                out.append(ListedVersion(r.key, r.version_id, latest, bool(r.marker), r.size or 0, r.etag or "",
                                         r.last_modified, r.owner_id or ""))
            last = page.last
            if isinstance(last, str):
                next_key, next_id = last, ""
            elif last is not None:
                next_key, next_id = last.key, last.version_id
            else:
                next_key, next_id = "", ""
            return VersionListing(tuple(out), page.prefixes, page.truncated, next_key, next_id, page.read)

        return await self._run(run)

    async def count_objects(self, bucket: str) -> int:
        def run() -> int:
            total = 0
            for lo, shard, hi in self._shard_ranges(bucket):
                sql, bounds = self._range_cql("SELECT count(*) AS n FROM listing", lo, hi)
                total += self._one(sql, (bucket, shard, *bounds)).n
            return total

        return await self._run(run)

    async def bucket_usage(self, bucket: str) -> tuple[int, int]:
        def run() -> tuple[int, int]:
            objects = size = 0
            for lo, shard, hi in self._shard_ranges(bucket):  # bounded queries per shard (<= shard_rows rows)
                sql, bounds = self._range_cql("SELECT count(*) AS n FROM listing", lo, hi)
                objects += self._one(sql, (bucket, shard, *bounds)).n
                sql, bounds = self._range_cql("SELECT sum(size) AS s FROM version_listing", lo, hi)
                size += self._one(sql, (bucket, shard, *bounds)).s or 0
            return objects, size

        return await self._run(run)

    async def ping(self) -> None:
        await self._run(self._one, "SELECT value FROM meta_info WHERE name = 'schema_version'")

    # -- multipart --

    _UPLOAD_FIELDS = ("bucket, key, upload_id, initiated, owner_id, content_type, headers, user_meta, acl, tags, "
                      "checksum_algorithm")

    @staticmethod
    def _upload(r: Any) -> Upload:
        return Upload(r.bucket, r.key, r.upload_id, r.initiated, r.owner_id, r.content_type, _dec_pairs(r.headers),
                      _dec_pairs(r.user_meta), r.acl, _dec_pairs(r.tags), r.checksum_algorithm)

    async def create_upload(self, upload: Upload, *, bucket_id: str | None = None) -> None:
        def run() -> None:
            b = self._check_bucket(upload.bucket, bucket_id)
            values = (upload.bucket, upload.key, upload.upload_id, upload.initiated, upload.owner_id,
                      upload.content_type, _enc_pairs(upload.headers), _enc_pairs(upload.user_meta), upload.acl,
                      _enc_pairs(upload.tags), upload.checksum_algorithm)
            marks = ", ".join("?" * 11)
            self._x(f"INSERT INTO uploads ({self._UPLOAD_FIELDS}, state) VALUES ({marks}, '')", values)
            ts = self._upload_ts(upload.initiated)
            self._write_sharded(upload.bucket, upload.key, lambda shard: [(
                f"INSERT INTO uploads_by_key (shard, {self._UPLOAD_FIELDS}) VALUES (?, {marks}) USING TIMESTAMP ?",
                (shard, *values, ts))], 1)
            query, params, ok = self._bucket_fence(upload.bucket, b.id)
            if not ok(self._one(query, params)):
                self._drop_upload_rows(upload)
                raise NoSuchBucket(upload.bucket)

        await self._run(run)

    def _get_upload(self, upload_id: str) -> Any:
        return self._one(f"SELECT {self._UPLOAD_FIELDS}, state FROM uploads WHERE upload_id = ?", (upload_id,))

    async def get_upload(self, bucket: str, upload_id: str) -> Upload | None:
        def run() -> Upload | None:
            r = self._get_upload(upload_id)
            return self._upload(r) if r is not None and r.bucket == bucket and not r.state else None

        return await self._run(run)

    def _uploads_from(self, bucket: str, start: str, inclusive: bool, upper: str | None,
                      id_after: tuple[str, str] | None = None) -> Iterator[Upload]:
        """Uploads of ``bucket`` by (key, initiated, upload_id), keys from ``start`` (inclusive or not) below
        ``upper``; with ``id_after`` = (key, upload id), that key's uploads only after that id."""
        cols = self._UPLOAD_FIELDS
        for lo, shard, hi in self._shards_from(bucket, start):
            bound = upper if hi is None else hi if upper is None else min(upper, hi, key=str.encode)
            low, incl = (start, inclusive) if start.encode() >= lo.encode() else (lo, True)
            page = 64
            last: tuple | None = None
            while True:
                where = "WHERE bucket = ? AND shard = ? AND "
                if last is None:
                    sql = f"SELECT {cols} FROM uploads_by_key {where}key {'>=' if incl else '>'} ?"
                    args: list[Any] = [bucket, shard, low]
                else:
                    sql = f"SELECT {cols} FROM uploads_by_key {where}(key, initiated, upload_id) > (?, ?, ?)"
                    args = [bucket, shard, *last]
                if bound is not None:
                    sql += " AND key < ?"
                    args.append(bound)
                rows = self._rows(sql + " LIMIT ?", (*args, page))
                for r in rows:
                    if id_after is not None and r.key == id_after[0] and r.upload_id <= id_after[1]:
                        continue
                    yield self._upload(r)
                if len(rows) < page:
                    break
                last = (rows[-1].key, rows[-1].initiated, rows[-1].upload_id)
                page = min(page * 4, 2000)
            if hi is None or (upper is not None and hi.encode() >= upper.encode()):
                return

    async def list_uploads(
        self, bucket: str, *, prefix: str = "", key_marker: str = "", upload_id_marker: str = "", limit: int = 1000
    ) -> tuple[list[Upload], bool]:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> tuple[list[Upload], bool]:
            upper = prefix_successor(prefix) if prefix else None
            if key_marker and upload_id_marker:
                start, incl, after = key_marker, True, (key_marker, upload_id_marker)
            elif key_marker:
                start, incl, after = key_marker, False, None
            else:
                start, incl, after = "", True, None
            if prefix and prefix.encode() > start.encode():
                start, incl = prefix, True
            out: list[Upload] = []
            for u in self._uploads_from(bucket, start, incl, upper, after):
                if not u.key.startswith(prefix):
                    continue
                out.append(u)
                if len(out) > limit:
                    break
            return out[:limit], len(out) > limit

        return await self._run(run)

    async def list_upload_entries(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", upload_id_marker: str = "",
        limit: int = 1000,
    ) -> UploadListing:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> UploadListing:
            def seek(start: str, inclusive: bool, upper: str | None) -> Iterator[Upload]:
                after = (key_marker, upload_id_marker) if start == key_marker and upload_id_marker else None
                return self._uploads_from(bucket, start, inclusive, upper, after)

            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=key_marker, limit=limit,
                        key_of=lambda u: u.key, marker_inclusive=bool(upload_id_marker))
            last = page.last
            if isinstance(last, Upload):
                next_key, next_id = last.key, last.upload_id
            else:
                next_key, next_id = (last or ""), ""
            return UploadListing(page.items, page.prefixes, page.truncated, next_key, next_id, page.read)

        return await self._run(run)

    def _upload_fence(self, upload_id: str) -> tuple[str, tuple, Callable[[Any], bool]]:
        """The fence of a part: its upload still there and neither completing nor aborting."""
        def ok(r: Any) -> bool:
            return r is not None and not r.state

        return f"SELECT {self._UPLOAD_FIELDS}, state FROM uploads WHERE upload_id = ?", (upload_id,), ok

    async def put_part(self, part: Part, *, gc_delay: float = 0.0, intent_id: bytes | None = None) -> Part | None:
        def run() -> Part | None:
            upload = self._get_upload(part.upload_id)
            if upload is None or upload.state:
                raise NoSuchUpload(part.upload_id)

            def decide(row: Any) -> _Change:
                old = _part_from(part.upload_id, part.number, row) if row is not None else None
                return _Change(_part_values(part), part.manifest,
                               {"old": row.manifest if row is not None else "[]", "nb": time.time() + gc_delay,
                                "bucket": upload.bucket, "key": upload.key}, old)

            try:
                return self._change(_PARTS, (part.upload_id, part.number), decide,
                                    intent=bytes(intent_id) if intent_id is not None else None,
                                    fence=self._upload_fence(part.upload_id))
            except _Fenced:
                raise NoSuchUpload(part.upload_id) from None

        return await self._run(run)

    def _parts(self, upload_id: str, marker: int = 0, limit: int | None = None) -> list[Part]:
        sql = "SELECT number FROM part_numbers WHERE upload_id = ? AND number > ?"
        numbers = [r.number for r in self._rows(sql + (" LIMIT ?" if limit else ""),
                                                (upload_id, marker, limit) if limit else (upload_id, marker))]
        got = self._many((f"SELECT {_PART_COLS}, {_REC_COLS} FROM parts WHERE upload_id = ? AND number = ?",
                          (upload_id, n)) for n in numbers)
        out = []
        for n, rs in zip(numbers, got, strict=True):
            row = rs.one()
            if row is not None and not row.deleted and row.seq:
                out.append(_part_from(upload_id, n, row))
        return out

    async def list_parts(self, upload_id: str, *, marker: int = 0, limit: int = 1000) -> tuple[list[Part], bool]:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run() -> tuple[list[Part], bool]:
            r = self._get_upload(upload_id)
            if r is None or r.state:
                raise NoSuchUpload(upload_id)
            parts = self._parts(upload_id, marker, limit + 1)
            return parts[:limit], len(parts) > limit

        return await self._run(run)

    @staticmethod
    def _upload_ts(initiated: float) -> int:
        """The write timestamp of an upload's row in uploads_by_key; its removal is written at this + 1, so the
        removal wins over the row (and over a split's copy of it) whatever the nodes' clocks say."""
        return int(initiated * 1_000_000)

    def _drop_upload_rows(self, u: Any) -> None:
        ts = self._upload_ts(u.initiated) + 1
        self._write_sharded(u.bucket, u.key, lambda shard: [(
            "DELETE FROM uploads_by_key USING TIMESTAMP ? WHERE bucket = ? AND shard = ? AND key = ? AND "
            "initiated = ? AND upload_id = ?", (ts, u.bucket, shard, u.key, u.initiated, u.upload_id))], -1)
        self._x("DELETE FROM uploads WHERE upload_id = ?", (u.upload_id,))

    def _claim_upload(self, upload_id: str, state: str) -> Any:
        """Mark the upload completing/aborting (one lightweight transaction: one of several racing wins); from
        then on a part committed to it is undone by its fence. NoSuchUpload if it is gone or taken."""
        u = self._get_upload(upload_id)
        if u is None or u.state:
            raise NoSuchUpload(upload_id)
        applied, _ = self._lwt("UPDATE uploads SET state = ? WHERE upload_id = ? IF state = ''", (state, upload_id))
        if not applied:
            raise NoSuchUpload(upload_id)
        return u

    def _retire_parts(self, upload_id: str, keep: Sequence[ChunkRef], not_before: float) -> list[Part]:
        """Drop every stored part of the upload; chunks ``keep`` does not reference go to the GC queue."""
        parts = self._parts(upload_id)
        kept = {r.chunk_id for r in keep}
        gone = [r for p in parts for r in p.manifest if r.chunk_id not in kept]
        work: list[tuple[str, Sequence[Any]]] = []
        ts = _now_us()
        for p in parts:
            work += self._index_work((), [r for r in p.manifest if r.chunk_id not in kept], ("", "", "", 0, ""), ts)
        self._many(work)
        self._enqueue([GcEntry(r.chunk_id, r.agents, not_before) for r in gone])
        self._many([("DELETE FROM parts WHERE upload_id = ? AND number = ?", (upload_id, p.number)) for p in parts]
                   + [("DELETE FROM part_numbers WHERE upload_id = ?", (upload_id,))])
        return parts

    def _parts_floor_ts(self, upload_id: str) -> int:
        numbers = [r.number for r in self._rows("SELECT number FROM part_numbers WHERE upload_id = ?", (upload_id,))]
        got = self._many(("SELECT ts FROM parts WHERE upload_id = ? AND number = ?", (upload_id, n))
                         for n in numbers)
        return max((rs.one().ts or 0 for rs in got if rs.one() is not None), default=0)

    async def complete_upload(
        self, upload_id: str, obj: ObjectVersion, used_parts: Sequence[int], *, gc_delay: float = 0.0
    ) -> Committed:
        def run() -> Committed:
            u = self._get_upload(upload_id)
            if u is None or u.state or (u.bucket, u.key) != (obj.bucket, obj.key):
                raise NoSuchUpload(upload_id)
            self._claim_upload(upload_id, "completing")
            complete = {"upload_id": upload_id, "algo": u.checksum_algorithm, "initiated": u.initiated,
                        "nb": time.time() + gc_delay}
            try:
                return self._commit_object(obj, intent_id=None, if_match=None, if_none_match=None,
                                           gc_delay=gc_delay, bucket_id=None, extra={"complete": complete},
                                           floor_ts=self._parts_floor_ts(upload_id))
            except BaseException:
                self._lwt("UPDATE uploads SET state = '' WHERE upload_id = ? IF state = 'completing'", (upload_id,))
                raise

        return await self._run(run)

    def _finish_complete(self, c: dict[str, Any], manifest: Sequence[ChunkRef]) -> None:
        """Follow-up of a completion: the parts go (their chunks the object does not use to GC), the upload goes,
        the completion's answer is recorded for retries."""
        upload_id = c["upload_id"]
        u = self._get_upload(upload_id)
        if u is None:  # already finished (a repeated follow-up)
            return
        row = self._read_record(_OBJECTS, (u.bucket, u.key))
        self._retire_parts(upload_id, manifest, c["nb"])
        now = time.time()
        tb = int(now // _HOUR)
        etag = row.etag if row is not None else ""
        sums = row.checksums if row is not None else "[]"
        version_id = row.version_id if row is not None else "null"
        self._many([
            ("INSERT INTO completed (upload_id, bucket, key, etag, completed, checksums, checksum_algorithm, "
             "version_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
             (upload_id, u.bucket, u.key, etag, now, sums, c["algo"], version_id)),
            ("INSERT INTO completed_by_time (tb, slot, completed, upload_id) VALUES (?, ?, ?, ?)",
             (tb, _hash_slot(upload_id, COMPLETED_SLOTS), now, upload_id)),
            ("INSERT INTO completed_tbs (one, tb) VALUES (0, ?)", (tb,)),
            ("INSERT INTO completed_by_bucket (bucket, upload_id) VALUES (?, ?)", (u.bucket, upload_id)),
        ])
        self._drop_upload_rows(u)

    async def completed_upload(self, bucket: str, upload_id: str) -> CompletedUpload | None:
        def run() -> CompletedUpload | None:
            r = self._one("SELECT upload_id, bucket, key, etag, completed, checksums, checksum_algorithm, version_id "
                          "FROM completed WHERE upload_id = ?", (upload_id,))
            if r is None or r.bucket != bucket:
                return None
            return CompletedUpload(r.upload_id, r.bucket, r.key, r.etag, r.completed, _dec_pairs(r.checksums),
                                   r.checksum_algorithm, r.version_id or "null")

        return await self._run(run)

    async def prune_completed(self, older_than: float) -> int:
        def run() -> int:
            pruned = 0
            last = int(older_than // _HOUR)
            for t in self._rows("SELECT tb FROM completed_tbs WHERE one = 0 AND tb <= ?", (last,)):
                got = self._many(("SELECT slot, completed, upload_id FROM completed_by_time WHERE tb = ? AND slot = ? "
                                  "AND completed < ?", (t.tb, s, older_than)) for s in range(COMPLETED_SLOTS))
                rows = [r for rs in got for r in rs]
                done = self._many(("SELECT bucket FROM completed WHERE upload_id = ?", (r.upload_id,)) for r in rows)
                work: list[tuple[str, Sequence[Any]]] = []
                for r, rs in zip(rows, done, strict=True):
                    c = rs.one()
                    if c is not None:
                        pruned += 1
                        work += [("DELETE FROM completed WHERE upload_id = ?", (r.upload_id,)),
                                 ("DELETE FROM completed_by_bucket WHERE bucket = ? AND upload_id = ?",
                                  (c.bucket, r.upload_id))]
                    work.append(("DELETE FROM completed_by_time WHERE tb = ? AND slot = ? AND completed = ? AND "
                                 "upload_id = ?", (t.tb, r.slot, r.completed, r.upload_id)))
                self._many(work)
                if t.tb < last:
                    self._x("DELETE FROM completed_tbs WHERE one = 0 AND tb = ?", (t.tb,))
            return pruned

        return await self._run(run)

    def _abort(self, upload_id: str, not_before: float) -> None:
        u = self._claim_upload(upload_id, "aborting")
        self._retire_parts(upload_id, (), not_before)
        self._drop_upload_rows(u)

    async def abort_upload(self, upload_id: str, *, gc_delay: float = 0.0) -> None:
        await self._run(self._abort, upload_id, time.time() + gc_delay)

    # -- upload intents --

    _INTENT_COLS = "intent_id, created, agents, bucket, key, renewed, heartbeat, claimed, committing"

    @staticmethod
    def _intent(r: Any) -> Intent:
        return Intent(bytes(r.intent_id), r.created, tuple(json.loads(r.agents)), r.bucket, r.key, r.renewed,
                      r.heartbeat, bool(r.claimed))

    def _intent_row(self, intent_id: bytes) -> Any:
        return self._one(f"SELECT {self._INTENT_COLS} FROM intents WHERE intent_id = ?", (intent_id,))

    @staticmethod
    def _islot(intent_id: bytes) -> int:
        return intent_id[0] % INTENT_SLOTS if intent_id else 0

    async def add_intent(self, intent: Intent) -> None:
        i = bytes(intent.intent_id)

        def run() -> None:
            self._many([
                (f"INSERT INTO intents ({self._INTENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, null)",
                 (i, intent.created, _json(list(intent.agents)), intent.bucket, intent.key, intent.renewed,
                  intent.heartbeat, intent.claimed)),
                ("INSERT INTO intents_by_renewed (slot, renewed, intent_id) VALUES (?, ?, ?)",
                 (self._islot(i), intent.renewed, i)),
            ])

        await self._run(run)

    def _move_renewed(self, intent_id: bytes, old: float, new: float) -> None:
        s = self._islot(intent_id)
        self._many([("INSERT INTO intents_by_renewed (slot, renewed, intent_id) VALUES (?, ?, ?)", (s, new, intent_id)),
                    ("DELETE FROM intents_by_renewed WHERE slot = ? AND renewed = ? AND intent_id = ?",
                     (s, old, intent_id))])

    async def renew_intent(self, intent_id: bytes, now: float) -> bool:
        i = bytes(intent_id)

        def run() -> bool:
            for _ in range(LWT_RETRIES):
                r = self._intent_row(i)
                if r is None or r.claimed:
                    return False
                applied, _ = self._lwt("UPDATE intents SET heartbeat = ?, renewed = ? WHERE intent_id = ? "
                                       "IF claimed = false AND heartbeat = ?", (r.heartbeat + 1, now, i, r.heartbeat))
                if applied:
                    if now != r.renewed:
                        self._move_renewed(i, r.renewed, now)
                    return True
            raise MetaUnavailable("intent renewal: too many concurrent changes")

        return await self._run(run)

    async def claim_intent(self, intent_id: bytes, heartbeat: int) -> bool:
        i = bytes(intent_id)

        def run() -> bool:
            r = self._intent_row(i)
            if r is None:
                return False
            if r.claimed:
                return True
            if r.heartbeat != heartbeat or r.committing:
                return False
            applied, now = self._lwt("UPDATE intents SET claimed = true, renewed = -1 WHERE intent_id = ? "
                                     "IF heartbeat = ? AND claimed = false AND committing = null", (i, heartbeat))
            if applied:
                self._move_renewed(i, r.renewed, -1.0)
                return True
            return bool(now is not None and getattr(now, "claimed", False))

        return await self._run(run)

    def _drop_intent(self, intent_id: bytes) -> None:
        r = self._intent_row(intent_id)
        if r is None:
            return
        self._many([("DELETE FROM intents WHERE intent_id = ?", (intent_id,)),
                    ("DELETE FROM intents_by_renewed WHERE slot = ? AND renewed = ? AND intent_id = ?",
                     (self._islot(intent_id), r.renewed, intent_id))])

    async def drop_intent(self, intent_id: bytes) -> None:
        await self._run(self._drop_intent, bytes(intent_id))

    def _stale(self, older_than: float, limit: int, after: tuple[float, bytes] | None) -> list[tuple[tuple, Any]]:
        """Intents renewed before ``older_than`` by (renewed, intent_id) after ``after``: the 16 slots' index
        partitions merged, each index row checked against its intent (a stale index row is skipped)."""
        def slot_rows(s: int) -> Iterator[tuple[float, bytes]]:
            cursor = after
            page = max(8, min(limit, 500))
            while True:
                if cursor is None:
                    rows = self._rows("SELECT renewed, intent_id FROM intents_by_renewed WHERE slot = ? AND "
                                      "renewed < ? LIMIT ?", (s, older_than, page))
                else:
                    rows = self._rows("SELECT renewed, intent_id FROM intents_by_renewed WHERE slot = ? AND "
                                      "(renewed, intent_id) > (?, ?) AND renewed < ? LIMIT ?",
                                      (s, cursor[0], bytes(cursor[1]), older_than, page))
                for r in rows:
                    yield (r.renewed, bytes(r.intent_id))
                if len(rows) < page:
                    return
                cursor = (rows[-1].renewed, bytes(rows[-1].intent_id))

        out: list[tuple[tuple, Any]] = []
        for renewed, i in heapq.merge(*(slot_rows(s) for s in range(INTENT_SLOTS))):
            r = self._intent_row(i)
            if r is None or r.renewed != renewed:
                continue
            out.append(((renewed, i), r))
            if len(out) >= limit:
                break
        return out

    async def stale_intents(self, older_than: float, limit: int = 100,
                            after: tuple[float, bytes] | None = None) -> list[Intent]:
        return await self._run(lambda: [self._intent(r) for _, r in self._stale(older_than, limit, after)])

    async def get_state(self, name: str) -> str | None:
        def run() -> str | None:
            r = self._one("SELECT value FROM meta_info WHERE name = ?", ("state:" + name,))
            return r.value if r is not None else None

        return await self._run(run)

    async def set_state(self, name: str, value: str | None) -> None:
        if value is None:
            await self._run(self._x, "DELETE FROM meta_info WHERE name = ?", ("state:" + name,))
        else:
            await self._run(self._x, "INSERT INTO meta_info (name, value) VALUES (?, ?)", ("state:" + name, value))

    async def open_intents(self, intent_ids: Sequence[bytes]) -> set[bytes]:
        def run() -> set[bytes]:
            ids = [bytes(i) for i in intent_ids]
            got = self._many(("SELECT intent_id FROM intents WHERE intent_id = ?", (i,)) for i in ids)
            return {i for i, rs in zip(ids, got, strict=True) if rs.one() is not None}

        return await self._run(run)

    # -- GC queue --

    def _gc_rows(self, chunk_ids: Sequence[bytes]) -> dict[bytes, Any]:
        got = self._many(("SELECT chunk_id, agents, not_before, tb FROM gc WHERE chunk_id = ?", (c,))
                         for c in chunk_ids)
        return {bytes(r.chunk_id): r for rs in got for r in rs}

    @staticmethod
    def _gslot(chunk_id: bytes) -> int:
        return _slot(chunk_id) % GC_SLOTS

    def _enqueue(self, entries: Sequence[GcEntry], ts: int | None = None) -> None:
        """Idempotent per chunk: a repeated chunk keeps one entry, with the later not_before and every agent.
        ``ts``: the write timestamp (µs; default now)."""
        if not entries:
            return
        merged: dict[bytes, GcEntry] = {}
        for e in entries:
            prev = merged.get(bytes(e.chunk_id))
            if prev is not None:
                e = GcEntry(e.chunk_id, prev.agents + tuple(a for a in e.agents if a not in prev.agents),
                            max(prev.not_before, e.not_before))
            merged[bytes(e.chunk_id)] = e
        existing = self._gc_rows(list(merged))
        work: list[tuple[str, Sequence[Any]]] = []
        for cid, e in merged.items():
            agents, nb = list(e.agents), e.not_before
            old = existing.get(cid)
            if old is not None:
                agents = json.loads(old.agents) + [a for a in agents if a not in json.loads(old.agents)]
                nb = max(nb, old.not_before)
                if nb != old.not_before:
                    work.append(("DELETE FROM gc_by_time USING TIMESTAMP ? WHERE tb = ? AND slot = ? "
                                 "AND not_before = ? AND chunk_id = ?",
                                 (ts or _now_us(), old.tb, self._gslot(cid), old.not_before, cid)))
            work += self._gc_put(cid, agents, nb, ts)
        self._many(work)

    def _gc_put(self, cid: bytes, agents: list[str], not_before: float, ts: int | None = None
                ) -> list[tuple[str, Sequence[Any]]]:
        tb = int(not_before // _MINUTE)
        a = _json(agents)
        at = ts or _now_us()
        return [("INSERT INTO gc (chunk_id, agents, not_before, tb) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
                 (cid, a, not_before, tb, at)),
                ("INSERT INTO gc_by_time (tb, slot, not_before, chunk_id, agents) VALUES (?, ?, ?, ?, ?) "
                 "USING TIMESTAMP ?", (tb, self._gslot(cid), not_before, cid, a, at)),
                ("INSERT INTO gc_tbs (one, tb) VALUES (0, ?)", (tb,))]

    def _revive(self, chunk_ids: Sequence[bytes], ts: int | None = None) -> None:
        """Committed manifests reference these chunks: out of the GC queue with them (what was queued before
        ``ts``, the reviving change's timestamp)."""
        self._gc_delete(list(self._gc_rows(chunk_ids).values()), ts)

    def _gc_delete(self, rows: Sequence[Any], ts: int | None = None) -> None:
        at = ts or _now_us()
        self._many([q for r in rows for q in (
            ("DELETE FROM gc USING TIMESTAMP ? WHERE chunk_id = ?", (at, bytes(r.chunk_id))),
            ("DELETE FROM gc_by_time USING TIMESTAMP ? WHERE tb = ? AND slot = ? AND not_before = ? AND chunk_id = ?",
             (at, r.tb, self._gslot(bytes(r.chunk_id)), r.not_before, bytes(r.chunk_id))))])

    async def enqueue_gc(self, entries: Sequence[GcEntry]) -> None:
        entries = list(entries)
        if entries:
            await self._run(self._enqueue, entries)

    async def due_gc(self, now: float, limit: int = 100) -> list[GcEntry]:
        """Minute by minute, oldest first; a minute's slots merged by not_before. A minute found empty well in
        the past is dropped from gc_tbs (entries are queued at or after the present, give or take clock skew)."""
        def run() -> list[GcEntry]:
            out: list[GcEntry] = []
            tbs = [r.tb for r in self._rows("SELECT tb FROM gc_tbs WHERE one = 0 AND tb <= ?",
                                            (int(now // _MINUTE),))]
            stale = int(time.time() // _MINUTE) - 60
            for tb in tbs:
                got = self._many(("SELECT not_before, chunk_id, agents FROM gc_by_time WHERE tb = ? AND slot = ? "
                                  "AND not_before <= ? LIMIT ?", (tb, s, now, limit - len(out)))
                                 for s in range(GC_SLOTS))
                rows = sorted((r for rs in got for r in rs), key=lambda r: (r.not_before, bytes(r.chunk_id)))
                out += [GcEntry(bytes(r.chunk_id), tuple(json.loads(r.agents)), r.not_before)
                        for r in rows[:limit - len(out)]]
                if not rows and tb < stale and not any(rs.one() for rs in self._many(
                        ("SELECT chunk_id FROM gc_by_time WHERE tb = ? AND slot = ? LIMIT 1", (tb, s))
                        for s in range(GC_SLOTS))):
                    self._x("DELETE FROM gc_tbs WHERE one = 0 AND tb = ?", (tb,))
                if len(out) >= limit:
                    break
            return out

        return await self._run(run)

    async def done_gc(self, chunk_ids: Sequence[bytes]) -> None:
        ids = [bytes(c) for c in chunk_ids]
        if ids:
            await self._run(lambda: self._gc_delete(list(self._gc_rows(ids).values())))

    async def update_gc(self, entry: GcEntry) -> None:
        def run() -> None:
            cid = bytes(entry.chunk_id)
            old = self._gc_rows([cid]).get(cid)
            if old is None:
                return
            self._gc_delete([old])
            if entry.agents:
                self._many(self._gc_put(cid, list(entry.agents), entry.not_before))

        await self._run(run)

    # -- the chunk index --

    def _owners(self, chunk_ids: Sequence[bytes]) -> list[ChunkOwner]:
        got = self._many(("SELECT chunk_id, bucket, key, upload_id, part, size, crc, agents, version_id "
                          "FROM chunk_index WHERE chunk_id = ?", (c,)) for c in chunk_ids)
        out = []
        for rs in got:
            r = rs.one()
            if r is not None:
                out.append(ChunkOwner(bytes(r.chunk_id), r.bucket, r.key, r.size, r.crc, tuple(json.loads(r.agents)),
                                      r.upload_id, r.part, r.version_id or "null"))
        return out

    async def chunk_owner(self, chunk_id: bytes) -> ChunkOwner | None:
        def run() -> ChunkOwner | None:
            found = self._owners([bytes(chunk_id)])
            return found[0] if found else None

        return await self._run(run)

    def _slot_scan(self, partitions: Callable[[int], list[tuple]], table_cols: str, after: bytes | None,
                   limit: int) -> list[bytes]:
        """Chunk ids above ``after`` from the slots' partitions (``partitions(slot)``: the partition keys of
        that slot), in chunk id order — which is slot order, so slots are read 32 at a time (concurrently) until
        ``limit`` ids are found, the partitions of one slot merged."""
        out: list[bytes] = []
        first = _slot(after) if after else 0
        for group in range(first, SLOTS, 32):
            want = limit - len(out)
            queries: list[tuple[int, str, tuple]] = []
            for s in range(group, min(group + 32, SLOTS)):
                for k in partitions(s):
                    if after and s == first:
                        queries.append((s, f"SELECT chunk_id FROM {table_cols} AND chunk_id > ? LIMIT ?",
                                        (*k, after, want)))
                    else:
                        queries.append((s, f"SELECT chunk_id FROM {table_cols} LIMIT ?", (*k, want)))
            got = self._many((q, p) for _, q, p in queries)
            ids = sorted({bytes(r.chunk_id) for rs in got for r in rs})
            out += ids[:limit - len(out)]
            if len(out) >= limit:
                break
        return out

    async def chunks_on_agent(self, agent_id: str, *, after: bytes | None = None, limit: int = 1000
                              ) -> list[ChunkOwner]:
        def run() -> list[ChunkOwner]:
            ids = self._slot_scan(lambda s: [(agent_id, s)],
                                  "chunks_by_agent WHERE agent_id = ? AND slot = ?", after, limit)
            return [o for o in self._owners(ids) if agent_id in o.agents]

        return await self._run(run)

    async def count_chunks_on_agent(self, agent_id: str) -> int:
        def run() -> int:
            got = self._many(("SELECT count(*) AS n FROM chunks_by_agent WHERE agent_id = ? AND slot = ?",
                              (agent_id, s)) for s in range(SLOTS))
            return sum(rs.one().n for rs in got)

        return await self._run(run)

    async def under_replicated(self, replicas: int, *, after: bytes | None = None, limit: int = 1000
                               ) -> list[ChunkOwner]:
        """From chunks_by_count when ``replicas`` <= TRACKED_REPLICAS (the counts below it are indexed); above it
        (a cluster with R > 3) every agent's chunk list is walked, slot by slot in chunk id order, which reads
        every replica once over a whole scan instead of only the chunks short of replicas."""
        def run() -> list[ChunkOwner]:
            if replicas <= TRACKED_REPLICAS:
                ids = self._slot_scan(lambda s: [(n, s) for n in range(replicas)],
                                      "chunks_by_count WHERE replicas = ? AND slot = ?", after, limit)
                return [o for o in self._owners(ids) if len(o.agents) < replicas]
            agents = sorted(self._indexed_agents())
            found: list[ChunkOwner] = []
            cursor = after
            while len(found) < limit:
                ids = self._slot_scan(lambda s: [(a, s) for a in agents],
                                      "chunks_by_agent WHERE agent_id = ? AND slot = ?", cursor, 1000)
                if not ids:
                    break
                found += [o for o in self._owners(ids) if len(o.agents) < replicas]
                cursor = ids[-1]
            return found[:limit]

        return await self._run(run)

    async def referenced(self, chunk_ids: Sequence[bytes]) -> set[bytes]:
        return await self._run(lambda: {o.chunk_id for o in self._owners([bytes(c) for c in chunk_ids])})

    async def set_chunk_agents(self, chunk_id: bytes, expected: Sequence[str], agents: Sequence[str]) -> bool:
        cid = bytes(chunk_id)

        def run() -> bool:
            found = self._owners([cid])
            if not found or found[0].agents != tuple(expected):
                return False
            owner = found[0]

            def repaired(manifest_json: str) -> list[ChunkRef] | None:
                manifest = list(_dec_manifest(manifest_json))
                hits = [i for i, ref in enumerate(manifest) if ref.chunk_id == cid]
                if not hits or manifest[hits[0]].agents != tuple(expected):
                    return None
                for i in hits:
                    manifest[i] = attrs.evolve(manifest[i], agents=tuple(agents))
                return manifest

            def decide_part(row: Any) -> _Change | None:
                manifest = repaired(row.manifest) if row is not None else None
                if manifest is None:
                    return None
                part = _part_from(owner.upload_id, owner.part, row)
                return _Change(_part_values(attrs.evolve(part, manifest=tuple(manifest))), tuple(manifest),
                               {"old": row.manifest, "nb": time.time(), "bucket": owner.bucket, "key": owner.key},
                               True)

            def decide_object(row: Any) -> _Change | None:
                version = self._find_version(owner.bucket, owner.key, row, owner.version_id)
                manifest = repaired(_enc_manifest(version.manifest)) if version is not None else None
                if version is None or manifest is None:
                    return None
                if version.vsort == row.vsort:  # the latest: its record
                    values = _rec_values(attrs.evolve(version, manifest=tuple(manifest)), row.null_vsort)
                    return _Change(values, tuple(manifest), {"old": row.manifest, "nb": time.time()}, True)
                rewrite = {"vsort": version.vsort, "vid": version.version_id, "acl": version.acl,
                           "tags": _enc_pairs(version.tags), "manifest": _enc_manifest(manifest),
                           "prev": _enc_manifest(version.manifest), "lock": enc_lock(version)}
                return _Change(_rec_values(_obj_from(owner.bucket, owner.key, row), row.null_vsort),
                               _dec_manifest(row.manifest),
                               {"old": row.manifest, "nb": time.time(), "rewrite": rewrite}, True)

            if owner.upload_id:
                return bool(self._change(_PARTS, (owner.upload_id, owner.part), decide_part))
            return bool(self._change(_OBJECTS, (owner.bucket, owner.key), decide_object))

        return await self._run(run)

    # -- replica reports --

    async def report_replica(self, report: ReplicaReport) -> None:
        cid = bytes(report.chunk_id)
        await self._run(self._x, "INSERT INTO replica_reports (slot, chunk_id, agent_id, reason, reported) "
                        "VALUES (?, ?, ?, ?, ?)", (_slot(cid) % REPORT_SLOTS, cid, report.agent_id, report.reason,
                                                   report.reported))

    async def replica_reports(self, limit: int = 100) -> list[ReplicaReport]:
        def run() -> list[ReplicaReport]:
            got = self._many(("SELECT chunk_id, agent_id, reason, reported FROM replica_reports WHERE slot = ? "
                              "LIMIT 10000", (s,)) for s in range(REPORT_SLOTS))
            reports = [ReplicaReport(bytes(r.chunk_id), r.agent_id, r.reason, r.reported) for rs in got for r in rs]
            return sorted(reports, key=lambda r: r.reported)[:limit]

        return await self._run(run)

    async def drop_replica_report(self, chunk_id: bytes, agent_id: str) -> None:
        cid = bytes(chunk_id)
        await self._run(self._x, "DELETE FROM replica_reports WHERE slot = ? AND chunk_id = ? AND agent_id = ?",
                        (_slot(cid) % REPORT_SLOTS, cid, agent_id))

    async def indexed_agents(self) -> set[str]:
        return await self._run(self._indexed_agents)

    def _indexed_agents(self) -> set[str]:
        """Agents with a live row in some chunks_by_agent partition: one row per (agent, slot) partition is
        listed, whatever it holds (an emptied one may be listed until compaction), so each is checked."""
        candidates = {r.agent_id for r in self._rows("SELECT DISTINCT agent_id, slot FROM chunks_by_agent")}
        found = set()
        for agent in candidates:
            got = self._many(("SELECT chunk_id FROM chunks_by_agent WHERE agent_id = ? AND slot = ? LIMIT 1",
                              (agent, s)) for s in range(SLOTS))
            if any(rs.one() is not None for rs in got):
                found.add(agent)
        return found


class _Fenced(Exception):
    """A change landed after its container (bucket, upload) went away, and was undone."""
