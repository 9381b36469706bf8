"""The embedded metadata backend: one SQLite file, shared by every node process on the machine.

Durability and sharing:
- WAL journal, ``synchronous=FULL``: a method that returned has its transaction fsynced (survives power loss).
- ``busy_timeout``: several processes may open the same file; a writer waits for another's write lock instead of
  failing. Writes start with ``BEGIN IMMEDIATE`` (take the write lock first), so a transaction never has to upgrade
  a read lock, which is where SQLite would report SQLITE_BUSY without waiting.
- Each interface method is exactly one transaction; a ``MetaError`` raised inside it rolls everything back.

Off the event loop:
- Every call into sqlite3 runs in a worker thread (``trio_sos.threads.run_sync``, a lighter
  ``trio.to_thread.run_sync``; opening and closing use the latter) holding the connection's
  ``CapacityLimiter(1)``; the connections are opened with ``check_same_thread=False`` and are only ever used by
  one thread at a time through that limiter.
- Cancellation never abandons a thread: a caller cancelled while waiting for the limiter has changed nothing,
  and one whose batch was taken gets its transaction committed (or rolled back on error) in full before the
  cancellation is delivered — the batch starts even if the task that took it was cancelled meanwhile.
- Writes go through one writer connection; reads through a second, ``query_only`` connection with its own limiter,
  so reads run beside a write instead of queuing behind it (WAL readers see the last committed state).

Encoding: tuples of pairs, manifests, agent lists and part sizes are JSON text (chunk ids as hex). Keys are TEXT
with the BINARY collation; the database is UTF-8, so key order is UTF-8 byte order, the order S3 lists in.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import mmap
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

import attrs
import trio

from .. import threads
from .keys import prefix_successor, walk
from .store import (
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
    MetaUnavailable,
    MetaStore,
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
    ACTIVE,
    INACTIVE,
    AccessKey,
    User,
    UserExists,
)

__all__ = ["SchemaTooNew", "SqliteMetaStore", "prefix_successor", "schema_version"]

T = TypeVar("T")



class SchemaTooNew(Exception):
    """The file was written by a newer trio_sos (its ``user_version`` is above ``SCHEMA_VERSION``)."""


# -- schema and migrations --
#
# MIGRATIONS[n] takes a database from schema version n to n + 1 (version 0 = empty file). Each step is run inside
# the same BEGIN IMMEDIATE transaction as the ``PRAGMA user_version`` update that records it, so several processes
# opening one file at once migrate it exactly once. A step is a list of SQL statements or a function of the
# connection (for data migrations). Never edit a released step: append a new one.

_SCHEMA_1 = [
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        access_key TEXT NOT NULL UNIQUE,
        secret_key TEXT NOT NULL,
        email TEXT NOT NULL
    ) STRICT""",
    """CREATE TABLE buckets (
        name TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        created REAL NOT NULL,
        region TEXT NOT NULL,
        acl TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX buckets_by_owner ON buckets (owner_id, name)",
    """CREATE TABLE objects (
        bucket TEXT NOT NULL REFERENCES buckets (name),
        key TEXT NOT NULL,
        version_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        last_modified REAL NOT NULL,
        owner_id TEXT NOT NULL,
        manifest TEXT NOT NULL,
        content_type TEXT NOT NULL,
        headers TEXT NOT NULL,
        user_meta TEXT NOT NULL,
        checksums TEXT NOT NULL,
        acl TEXT NOT NULL,
        tags TEXT NOT NULL,
        parts TEXT NOT NULL,
        PRIMARY KEY (bucket, key)
    ) STRICT""",
    """CREATE TABLE uploads (
        upload_id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL REFERENCES buckets (name),
        key TEXT NOT NULL,
        initiated REAL NOT NULL,
        owner_id TEXT NOT NULL,
        content_type TEXT NOT NULL,
        headers TEXT NOT NULL,
        user_meta TEXT NOT NULL,
        acl TEXT NOT NULL,
        tags TEXT NOT NULL,
        checksum_algorithm TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX uploads_by_key ON uploads (bucket, key, initiated, upload_id)",
    """CREATE TABLE parts (
        upload_id TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        last_modified REAL NOT NULL,
        manifest TEXT NOT NULL,
        checksums TEXT NOT NULL,
        PRIMARY KEY (upload_id, number)
    ) STRICT""",
    """CREATE TABLE intents (
        intent_id BLOB PRIMARY KEY,
        created REAL NOT NULL,
        agents TEXT NOT NULL,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX intents_by_created ON intents (created, intent_id)",
    """CREATE TABLE gc (
        chunk_id BLOB PRIMARY KEY,
        agents TEXT NOT NULL,
        not_before REAL NOT NULL
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX gc_by_time ON gc (not_before)",
]

Migration = Sequence[str] | Callable[[sqlite3.Connection], None]
_SCHEMA_2 = [
    # bucket CORS configuration (serialized rules; "" = none)
    "ALTER TABLE buckets ADD COLUMN cors TEXT NOT NULL DEFAULT ''",
]

_SCHEMA_3 = [
    # intents carry a liveness heartbeat (renewed by running uploads) and a claim (by the garbage collector)
    "ALTER TABLE intents ADD COLUMN renewed REAL NOT NULL DEFAULT 0",
    "ALTER TABLE intents ADD COLUMN heartbeat INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE intents ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0",
    "UPDATE intents SET renewed = created",
    "DROP INDEX intents_by_created",
    "CREATE INDEX intents_by_renewed ON intents (renewed, intent_id)",
]

_SCHEMA_4 = [
    # buckets get an identity of their own: a bucket deleted and created again under its name is another bucket
    "ALTER TABLE buckets ADD COLUMN id TEXT NOT NULL DEFAULT ''",
    "UPDATE buckets SET id = lower(hex(randomblob(12)))",
    # what completed multipart uploads answered, for clients that retry CompleteMultipartUpload
    """CREATE TABLE completed_uploads (
        upload_id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        etag TEXT NOT NULL,
        completed REAL NOT NULL,
        checksums TEXT NOT NULL,
        checksum_algorithm TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX completed_by_time ON completed_uploads (completed)",
    "CREATE INDEX completed_by_bucket ON completed_uploads (bucket)",
]

def _schema_5(conn: sqlite3.Connection) -> None:
    """The chunk index (who references each chunk, on which agents) and replica reports; filled from the
    manifests already stored."""
    for statement in [
        """CREATE TABLE chunk_index (
            chunk_id BLOB PRIMARY KEY,
            bucket TEXT NOT NULL,
            key TEXT NOT NULL,
            upload_id TEXT NOT NULL,
            part INTEGER NOT NULL,
            size INTEGER NOT NULL,
            crc INTEGER NOT NULL,
            agents TEXT NOT NULL,
            replicas INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX chunk_index_by_replicas ON chunk_index (replicas, chunk_id)",
        """CREATE TABLE chunk_replicas (
            chunk_id BLOB NOT NULL,
            agent_id TEXT NOT NULL,
            PRIMARY KEY (chunk_id, agent_id)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX chunk_replicas_by_agent ON chunk_replicas (agent_id, chunk_id)",
        """CREATE TABLE replica_reports (
            chunk_id BLOB NOT NULL,
            agent_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            reported REAL NOT NULL,
            PRIMARY KEY (chunk_id, agent_id)
        ) STRICT, WITHOUT ROWID""",
    ]:
        conn.execute(statement)
    def index(chunks: Sequence[ChunkRef], bucket: str, key: str, upload_id: str, part: int) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO chunk_index (chunk_id, bucket, key, upload_id, part, size, crc, agents, replicas) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(bytes(r.chunk_id), bucket, key, upload_id, part, r.size, r.crc32c, _json(list(r.agents)), len(r.agents))
             for r in chunks])
        conn.executemany("INSERT OR IGNORE INTO chunk_replicas (chunk_id, agent_id) VALUES (?, ?)",
                         [(bytes(r.chunk_id), a) for r in chunks for a in r.agents])

    for bucket, key, manifest in conn.execute("SELECT bucket, key, manifest FROM objects").fetchall():
        index(_dec_manifest(manifest), bucket, key, "", 0)
    for upload_id, number, manifest, bucket, key in conn.execute(
            "SELECT p.upload_id, p.number, p.manifest, u.bucket, u.key FROM parts p JOIN uploads u USING (upload_id)"
    ).fetchall():
        index(_dec_manifest(manifest), bucket, key, upload_id, number)


# 6: small bodies kept in the object's row (ObjectVersion.inline) instead of as chunks on the agents
_SCHEMA_6 = ["ALTER TABLE objects ADD COLUMN inline BLOB"]

# 7: listings read a covering index (dense pages of just the listed columns), never the rows with their manifests,
# headers and inline bodies
_SCHEMA_7 = ["CREATE INDEX objects_listed ON objects (bucket, key, version_id, size, etag, last_modified, owner_id)"]

# 8: object versions. ``objects`` keeps the latest version of each key when it is not a delete marker (what
# GET and ListObjects read, at the cost they had); ``versions`` every other version and every delete marker.
# ``vsort`` orders a key's versions, newest first (see store.VSORT_BASE).
_SCHEMA_8 = [
    "ALTER TABLE buckets ADD COLUMN versioning TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE objects ADD COLUMN vsort INTEGER NOT NULL DEFAULT 0",
    f"UPDATE objects SET vsort = {VSORT_BASE} - CAST(last_modified * 1000000000 AS INTEGER)",
    "DROP INDEX objects_listed",
    "CREATE INDEX objects_listed ON objects (bucket, key, version_id, size, etag, last_modified, owner_id, vsort)",
    """CREATE TABLE versions (
        bucket TEXT NOT NULL REFERENCES buckets (name),
        key TEXT NOT NULL,
        version_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        last_modified REAL NOT NULL,
        owner_id TEXT NOT NULL,
        manifest TEXT NOT NULL,
        content_type TEXT NOT NULL,
        headers TEXT NOT NULL,
        user_meta TEXT NOT NULL,
        checksums TEXT NOT NULL,
        acl TEXT NOT NULL,
        tags TEXT NOT NULL,
        parts TEXT NOT NULL,
        inline BLOB,
        vsort INTEGER NOT NULL,
        marker INTEGER NOT NULL,
        PRIMARY KEY (bucket, key, vsort)
    ) STRICT""",
    "CREATE UNIQUE INDEX versions_by_id ON versions (bucket, key, version_id)",
    """CREATE INDEX versions_listed ON versions (bucket, key, vsort, version_id, marker, size, etag, last_modified,
        owner_id)""",
    # a chunk's owner names the version that references it
    "ALTER TABLE chunk_index ADD COLUMN version_id TEXT NOT NULL DEFAULT 'null'",
    "ALTER TABLE completed_uploads ADD COLUMN version_id TEXT NOT NULL DEFAULT 'null'",
]

# 9: object lock — a version's retention and legal hold ("" or JSON [mode, until, hold]), a bucket's configuration
_SCHEMA_9 = [
    "ALTER TABLE objects ADD COLUMN lock TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE versions ADD COLUMN lock TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE buckets ADD COLUMN object_lock TEXT NOT NULL DEFAULT ''",
]

# 10: a bucket's own tags (JSON pairs)
_SCHEMA_10 = ["ALTER TABLE buckets ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'"]

# 11: lifecycle rules of a bucket; named state of background workers (a lifecycle pass's cursor)
_SCHEMA_11 = [
    "ALTER TABLE buckets ADD COLUMN lifecycle TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE state (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
]

# 12: who may do what — a bucket's policy, public access block and object ownership setting
_SCHEMA_12 = [
    "ALTER TABLE buckets ADD COLUMN policy TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE buckets ADD COLUMN public_access TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE buckets ADD COLUMN ownership TEXT NOT NULL DEFAULT ''",
]

# 13: buckets get a default encryption; users get any number of key pairs (with a status and a date) and inline
# user policies; the one key pair of each existing user becomes its first, Active key (a user stored without a
# key — none was ever — gets none)
_SCHEMA_13 = [
    """CREATE TABLE access_keys (
        access_key TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        secret_key TEXT NOT NULL,
        status TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT""",
    "CREATE INDEX access_keys_by_user ON access_keys (user_id, access_key)",
    """CREATE TABLE user_policies (
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (user_id, name)
    ) STRICT, WITHOUT ROWID""",
    """INSERT INTO access_keys (access_key, user_id, secret_key, status, created)
        SELECT access_key, id, secret_key, 'Active', 0 FROM users WHERE access_key != '' AND secret_key != ''""",
    """CREATE TABLE users_13 (
        id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        email TEXT NOT NULL,
        created REAL NOT NULL
    ) STRICT""",
    "INSERT INTO users_13 (id, display_name, email, created) SELECT id, display_name, email, 0 FROM users",
    "DROP TABLE users",
    "ALTER TABLE users_13 RENAME TO users",
    # and a bucket's default encryption
    "ALTER TABLE buckets ADD COLUMN encryption TEXT NOT NULL DEFAULT ''",
]

MIGRATIONS: list[Migration] = [_SCHEMA_1, _SCHEMA_2, _SCHEMA_3, _SCHEMA_4, _schema_5, _SCHEMA_6, _SCHEMA_7,
                               _SCHEMA_8, _SCHEMA_9, _SCHEMA_10, _SCHEMA_11, _SCHEMA_12, _SCHEMA_13]


def schema_version() -> int:
    """The schema version this code writes: the number of migration steps."""
    return len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection) -> int:
    steps = list(MIGRATIONS)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(steps):
            raise SchemaTooNew(f"metadata schema version {version} is newer than this code's ({len(steps)})")
        for step in steps[version:]:
            if callable(step):
                step(conn)
            else:
                for statement in step:
                    conn.execute(statement)
        if version != len(steps):
            conn.execute(f"PRAGMA user_version = {len(steps)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(steps)


# -- encoding --


# json.dumps builds an encoder on every call made with other than the default options: one, made once, does the
# same (the same options, the same text); it keeps no state between calls
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _enc_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:  # most records' tags, user metadata, checksums (``_dec_pairs`` reads it back without a parse)
        return "[]"
    return _json([[k, v] for k, v in pairs])


def _dec_pairs(text: str) -> tuple[tuple[str, str], ...]:
    if text == "[]":  # most records' tags, user metadata, checksums: no JSON parse
        return ()
    return tuple((k, v) for k, v in json.loads(text))


def _enc_parts(o: ObjectVersion) -> str:
    """Part sizes (a JSON list of ints), or [size, checksum] pairs when the parts' checksums are kept (both
    backends store this text)."""
    if o.part_checksums:
        return _json([[size, sum_] for size, sum_ in zip(o.parts, o.part_checksums, strict=True)])
    return _json(list(o.parts))


def _dec_parts(text: str) -> dict:
    if text == "[]":
        return {"parts": ()}
    items = json.loads(text)
    if items and isinstance(items[0], list):
        return {"parts": tuple(size for size, _ in items), "part_checksums": tuple(sum_ for _, sum_ in items)}
    return {"parts": tuple(items)}


def _enc_manifest(manifest: Sequence[ChunkRef]) -> str:
    """[id, size, crc, agents], and offset and length (null: to the end) for a slice of a chunk (both backends
    store this text)."""
    return _json([[c.chunk_id.hex(), c.size, c.crc32c, list(c.agents)]
                  + ([c.offset, c.length] if c.offset or c.length is not None else []) for c in manifest])


def _dec_manifest(text: str) -> tuple[ChunkRef, ...]:
    if text == "[]":  # an inline or empty body
        return ()
    return tuple(
        ChunkRef(bytes.fromhex(h), size, crc, tuple(agents), *piece) for h, size, crc, agents, *piece
        in json.loads(text)
    )


def _agents_union(old: str, new: str) -> str:
    """SQL function: the agent lists (JSON arrays) of two GC entries for one chunk, merged in order."""
    merged = json.loads(old)
    for agent in json.loads(new):
        if agent not in merged:
            merged.append(agent)
    return _json(merged)


_USER_COLS = "id, display_name, email, created"
_BUCKET_COLS = ("name, owner_id, created, region, acl, cors, id, versioning, object_lock, tags, lifecycle, policy, "
                "public_access, ownership, encryption")
_COMPLETED_COLS = "upload_id, bucket, key, etag, completed, checksums, checksum_algorithm, version_id"
_OBJECT_COLS = (
    "bucket, key, version_id, size, etag, last_modified, owner_id, manifest, content_type, headers, user_meta, "
    "checksums, acl, tags, parts, inline, vsort, lock"
)
_N_OBJECT_COLS = len(_OBJECT_COLS.split(","))
# a never-versioned bucket's delete of a key (or of its version "null"): the record as it was; DeleteObjects'
# leaves out its inline body (NULL: not copied out)
_DELETE_WITH_INLINE = (f"DELETE FROM objects WHERE bucket = ? AND key = ? RETURNING {_OBJECT_COLS}",
                       f"DELETE FROM objects WHERE bucket = ? AND key = ? AND version_id = ? RETURNING {_OBJECT_COLS}")
_DELETE = tuple(sql.replace(" inline,", " NULL,") for sql in _DELETE_WITH_INLINE)
_VERSION_COLS = _OBJECT_COLS + ", marker"
# what a version listing reads of a row (covered by objects_listed and versions_listed)
_LISTED_COLS = "key, vsort, version_id, size, etag, last_modified, owner_id"
_UPLOAD_COLS = (
    "bucket, key, upload_id, initiated, owner_id, content_type, headers, user_meta, acl, tags, checksum_algorithm"
)
_PART_COLS = "upload_id, number, size, etag, last_modified, manifest, checksums"
_INTENT_COLS = "intent_id, created, agents, bucket, key, renewed, heartbeat, claimed"


def _present(c: sqlite3.Connection, table: str, column: str, ids: list[bytes]) -> set[bytes]:
    """Which of ``ids`` are in ``table`` (its BLOB key ``column``), asked 500 at a time."""
    found: set[bytes] = set()
    for i in range(0, len(ids), 500):
        batch = ids[i:i + 500]
        found.update(bytes(r[0]) for r in c.execute(
            f"SELECT {column} FROM {table} WHERE {column} IN ({', '.join('?' * len(batch))})", batch))
    return found


def _same_version(found: ObjectVersion | None, expected: ObjectVersion) -> bool:
    return found is not None and (found.version_id, found.etag, found.last_modified, found.delete_marker) == (
        expected.version_id, expected.etag, expected.last_modified, expected.delete_marker)


def _first(row: tuple) -> Any:
    return row[0]


def _user(c: sqlite3.Connection, row: tuple) -> User:
    user_id, display_name, email, created = row
    keys = tuple(AccessKey(*k) for k in c.execute(
        "SELECT access_key, secret_key, status, created FROM access_keys WHERE user_id = ? ORDER BY access_key",
        (user_id,)))
    policies = tuple(c.execute("SELECT name, document FROM user_policies WHERE user_id = ? ORDER BY name",
                               (user_id,)))
    return User(user_id, display_name, email, keys, policies, created)


def _key_taken(c: sqlite3.Connection, access_key: str) -> None:
    holder = c.execute("SELECT user_id FROM access_keys WHERE access_key = ?", (access_key,)).fetchone()
    if holder is not None:
        raise UserExists(holder[0])


def _insert_key(c: sqlite3.Connection, user_id: str, key: AccessKey) -> None:
    if not key.access_key or not key.secret_key:
        raise ValueError("an access key and its secret cannot be empty")
    c.execute("INSERT INTO access_keys (access_key, user_id, secret_key, status, created) VALUES (?, ?, ?, ?, ?)",
              (key.access_key, user_id, key.secret_key, key.status, key.created))


def _bucket(row: tuple) -> Bucket:
    name, owner, created, region, acl, cors, bucket_id, versioning, object_lock, tags, lifecycle, *access = row
    return Bucket(name, owner, created, region, acl, cors, bucket_id, versioning, object_lock, _dec_pairs(tags),
                  lifecycle, *access)


def enc_lock(o: ObjectVersion) -> str:
    """A version's object lock state as one column: "" for none."""
    if not o.lock_mode and not o.legal_hold:
        return ""
    return _json([o.lock_mode, o.retain_until, o.legal_hold])


def dec_lock(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    mode, until, hold = json.loads(text)
    return {"lock_mode": mode, "retain_until": until, "legal_hold": hold}


def _object(row: tuple) -> ObjectVersion:
    """A row of ``objects`` or of ``versions`` (one column more: whether it is a delete marker)."""
    (bucket, key, version_id, size, etag, modified, owner, manifest, ctype, headers, meta, sums, acl, tags,
     parts, inline, vsort, lock) = row[:_N_OBJECT_COLS]
    return ObjectVersion(
        bucket, key, version_id, size, etag, modified, owner, _dec_manifest(manifest), ctype,
        _dec_pairs(headers), _dec_pairs(meta), _dec_pairs(sums), acl, _dec_pairs(tags), inline=inline,
        delete_marker=bool(row[_N_OBJECT_COLS]) if len(row) > _N_OBJECT_COLS else False, vsort=vsort,
        **dec_lock(lock), **_dec_parts(parts),
    )


def _object_params(o: ObjectVersion) -> tuple:
    return (
        o.bucket, o.key, o.version_id, o.size, o.etag, o.last_modified, o.owner_id, _enc_manifest(o.manifest),
        o.content_type, _enc_pairs(o.headers), _enc_pairs(o.user_meta), _enc_pairs(o.checksums), o.acl,
        _enc_pairs(o.tags), _enc_parts(o), o.inline, o.vsort, enc_lock(o),
    )


def _upload(row: tuple) -> Upload:
    bucket, key, upload_id, initiated, owner, ctype, headers, meta, acl, tags, algo = row
    return Upload(bucket, key, upload_id, initiated, owner, ctype, _dec_pairs(headers), _dec_pairs(meta), acl,
                  _dec_pairs(tags), algo)


def _part(row: tuple) -> Part:
    upload_id, number, size, etag, modified, manifest, sums = row
    return Part(upload_id, number, size, etag, modified, _dec_manifest(manifest), _dec_pairs(sums))


def _intent(row: tuple) -> Intent:
    intent_id, created, agents, bucket, key, renewed, heartbeat, claimed = row
    return Intent(intent_id, created, tuple(json.loads(agents)), bucket, key, renewed, heartbeat, bool(claimed))


def _key_range(prefix: str, start: str, inclusive: bool) -> tuple[str, str, str | None]:
    """SQL comparison for the lower bound, the lower bound, and the exclusive upper bound of a key scan."""
    if start > prefix:  # str order is code point order, i.e. UTF-8 byte order
        lower, op = start, ">=" if inclusive else ">"
    elif start == prefix and not inclusive:
        lower, op = start, ">"
    else:
        lower, op = prefix, ">="
    return op, lower, prefix_successor(prefix) if prefix else None


# -- the store --


def _tx(conn: sqlite3.Connection, begin: str, fn: Callable[..., T], args: tuple) -> T:
    """Run ``fn(conn, *args)`` as one transaction (in a worker thread): commit, or roll back on any exception."""
    conn.execute(begin)
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _set_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch to WAL. Several processes doing so on a new file at once can get SQLITE_BUSY at once, without the
    busy handler being consulted (the switch needs an exclusive lock): retry, within the busy timeout."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # a worker thread, never the event loop: _connect runs via to_thread
            delay = min(delay * 2, 0.1)


def _connect(path: str, busy_timeout: float, *, query_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = _set_wal(conn, busy_timeout)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot use the WAL journal (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Debian's SQLite zeroes every freed page (SECURE_DELETE): deleting a 4 KiB inline body then costs a page
        # write to the WAL for nothing, since a deleted chunk on an agent is unlinked, not shredded, either.
        # FAST zeroes what it can on the pages it writes anyway (docs/metadata.md).
        conn.execute("PRAGMA secure_delete = FAST")
        # Reads go through a memory map of the file (the OS page cache, shared by every process, instead of a
        # pread and a copy per page) and a page cache of 16 MiB per connection instead of 2: inline bodies make
        # the objects table large, and a point lookup that misses the cache costs more than the query itself.
        conn.execute("PRAGMA mmap_size = 1073741824")
        conn.execute("PRAGMA cache_size = -16384")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
        conn.create_function("sos_agents_union", 2, _agents_union, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn


# SQLite's errors that say "not now" rather than "bug": the transaction was rolled back and may be retried.
_UNAVAILABLE = ("database is locked", "database or disk is full", "disk i/o error", "unable to open database")


@contextlib.contextmanager
def _unavailable_as_meta_error() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if any(text in str(exc).lower() for text in _UNAVAILABLE):
            raise MetaUnavailable(f"metadata store unavailable: {exc}") from exc
        raise


@attrs.define(eq=False)
class _Job:
    """One transaction waiting for (or run in) a batch: a write for a group commit, or a read."""

    fn: Callable[..., Any]
    args: tuple
    taken: bool = False  # in a batch that has started: its outcome is the batch's
    done: trio.Event = attrs.field(factory=trio.Event)  # that batch has committed or rolled back
    on_commit: Callable[[], None] | None = None  # run (in the worker thread) once the batch has committed
    value: Any = None
    error: BaseException | None = None
    ran: bool = False  # its batch's function ran (value and error are its outcome)


MAX_BATCH = 256  # write transactions committed together at most


def _group(conn: sqlite3.Connection, jobs: list[_Job]) -> None:
    """Run ``jobs`` in one transaction, each inside its own savepoint: a job that raises is rolled back alone
    (its error is its outcome) and the others commit together — one COMMIT, one fsync of the WAL for all. If the
    transaction itself fails (BEGIN, COMMIT: a lock not granted, a full disk), every job gets that error and none
    commits."""
    if len(jobs) == 1:
        job = jobs[0]
        try:
            job.value = _tx(conn, "BEGIN IMMEDIATE", job.fn, job.args)
        except Exception as exc:
            job.error = exc
        else:
            _committed(jobs)
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                job.value = job.fn(conn, *job.args)
                conn.execute("RELEASE job")
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                job.error = exc
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for job in jobs:
            job.value, job.error = None, exc
        if not isinstance(exc, Exception):
            raise
        return
    _committed(jobs)


def _read_group(conn: sqlite3.Connection, jobs: list[_Job]) -> None:
    """Run the read-only ``jobs`` in one transaction (one snapshot, taken after every one of them was asked for):
    each gets its own value or error."""
    try:
        conn.execute("BEGIN")
        try:
            for job in jobs:
                try:
                    job.value = job.fn(conn, *job.args)
                except Exception as exc:
                    job.error = exc
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    except Exception as exc:
        for job in jobs:
            if job.error is None:
                job.value, job.error = None, exc


def _run_batch(run: Callable[[sqlite3.Connection, list[_Job]], None], conn: sqlite3.Connection,
               jobs: list[_Job]) -> None:
    for job in jobs:
        job.ran = True
    run(conn, jobs)


def _committed(jobs: list[_Job]) -> None:
    for hook in {job.on_commit for job in jobs if job.on_commit is not None and job.error is None}:
        hook()


class _Generation:
    """A counter shared by every process that opens the metadata file (an 8-byte file beside it, mapped in
    memory): it is incremented after each committed change to users or buckets, under an exclusive ``flock`` so
    no increment is lost. A process caches users and buckets together with the counter's value read before the
    lookup, and trusts an entry only while the counter still has that value — so any change acknowledged by any
    process invalidates every cache before its client hears back, and an unchanged record costs no thread hop."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def value(self) -> int:
        return int.from_bytes(self._map[:8], "little")

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._map[:8] = ((self.value() + 1) & (2**64 - 1)).to_bytes(8, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


CACHE_ENTRIES = 4096  # users and buckets cached per process, at most (the cache is cleared when full)


class SqliteMetaStore(MetaStore):
    """``MetaStore`` on one SQLite file. Open with ``await SqliteMetaStore.open(path)``; close with ``aclose``."""

    def __init__(
        self, path: str, writer: sqlite3.Connection, reader: sqlite3.Connection | None, version: int
    ) -> None:
        self.path = path
        self.schema_version = version
        self._writer = writer
        self._reader = reader if reader is not None else writer
        self._write_limiter = trio.CapacityLimiter(1)
        self._pending: list[_Job] = []  # write transactions waiting for the next group commit
        self._read_pending: list[_Job] = []  # reads waiting for the next read batch
        self.commits = 0  # group commits run (each one transaction: a figure for tests and benchmarks)
        self._generation = _Generation(path + "-gen") if path != ":memory:" else None
        self._cache: dict[tuple[str, str], tuple[int, Any]] = {}  # (kind, name) -> (generation, record)
        self._read_limiter = trio.CapacityLimiter(1) if reader is not None else self._write_limiter
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, separate_reader: bool = True
    ) -> SqliteMetaStore:
        """Open (creating or migrating it if needed) the metadata file ``path``.

        ``busy_timeout``: seconds a write waits for another process's write lock before failing with
        ``sqlite3.OperationalError`` ("database is locked"). ``separate_reader``: read through a second connection.
        """
        return await trio.to_thread.run_sync(cls._open_sync, os.fspath(path), busy_timeout, separate_reader)

    @classmethod
    def _open_sync(cls, path: str, busy_timeout: float, separate_reader: bool) -> SqliteMetaStore:
        writer = _connect(path, busy_timeout, query_only=False)
        try:
            version = _migrate(writer)
            reader = _connect(path, busy_timeout, query_only=True) if separate_reader else None
        except BaseException:
            writer.close()
            raise
        return cls(path, writer, reader, version)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):  # wait for calls in flight, then close, even when cancelled
            async with self._write_limiter:
                if self._reader is not self._writer:
                    async with self._read_limiter:
                        await trio.to_thread.run_sync(self._reader.close)
                await trio.to_thread.run_sync(self._writer.close)
            if self._generation is not None:
                self._generation.close()

    async def _write(self, fn: Callable[..., T], *args: Any, on_commit: Callable[[], None] | None = None) -> T:
        """Run ``fn(conn, *args)`` as one write transaction, committed with whatever other writes of this process
        are waiting (group commit: one COMMIT and one fsync for all of them, each still atomic on its own — see
        ``_group``). The caller whose turn comes first runs the whole batch in a worker thread; the others find
        their outcome there. Cancellation: a write still waiting is withdrawn (nothing changed); one already in a
        running batch is waited for, so the caller learns nothing until it is committed or rolled back."""
        job = _Job(fn, args, on_commit=on_commit)
        return await self._batched(job, self._pending, self._write_limiter, _group, self._writer, count=True)

    async def _batched(self, job: _Job, pending: list[_Job], limiter: trio.CapacityLimiter,
                       run: Callable[[sqlite3.Connection, list[_Job]], None], conn: sqlite3.Connection,
                       count: bool = False) -> Any:
        """Queue ``job`` on ``pending``; the first waiter to get ``limiter`` takes up to MAX_BATCH queued jobs and
        runs them with ``run`` in one worker-thread call (one thread hop for the batch, not one per job)."""
        pending.append(job)
        try:
            while not job.taken:
                async with limiter:
                    if job.taken:  # a batch before ours ran it
                        break
                    batch = pending[:MAX_BATCH]
                    del pending[:MAX_BATCH]
                    for queued in batch:
                        queued.taken = True
                    if count:
                        self.commits += 1
                    try:
                        # starts even if this task is cancelled by now: the batch is taken, and the other
                        # callers in it wait for its outcome (a hop that checkpointed first, as
                        # ``to_thread.run_sync`` does, could leave them with none)
                        await threads.run_sync(_run_batch, run, conn, batch)
                    finally:
                        for queued in batch:
                            if not queued.ran and queued.error is None:
                                queued.error = MetaUnavailable("metadata batch did not run")
                            queued.done.set()
        except trio.Cancelled:
            if not job.taken:
                pending.remove(job)
            else:
                with trio.CancelScope(shield=True):
                    await job.done.wait()
            raise
        if job.error is not None:
            with _unavailable_as_meta_error():
                raise job.error
        return job.value

    async def _cached(self, kind: str, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` read through the generation-checked cache (see ``_Generation``)."""
        if self._generation is None:
            return await self._read(fn)
        generation = self._generation.value()
        hit = self._cache.get((kind, name))
        if hit is not None and hit[0] == generation:
            return hit[1]
        value = await self._read(fn)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[(kind, name)] = (generation, value)
        return value

    async def _changed(self, fn: Callable[..., T], *args: Any) -> T:
        """A write to users or buckets: once committed, the shared generation moves (every process's cache drops
        what it holds) — in the writer's thread, before any caller of the batch hears back."""
        return await self._write(fn, *args, on_commit=self._generation.bump if self._generation else None)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a read transaction, together with the other reads of this process that are
        waiting (``_read_group``): concurrent small reads share one thread hop."""
        return await self._batched(_Job(fn, args), self._read_pending, self._read_limiter, _read_group,
                                   self._reader)

    # -- users and keys --

    async def create_user(self, user: User) -> None:
        def run(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM users WHERE id = ?", (user.id,)).fetchone():
                raise UserExists(user.id)
            for key in user.keys:
                _key_taken(c, key.access_key)
            c.execute(f"INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?)",
                      (user.id, user.display_name, user.email, user.created))
            for key in user.keys:
                _insert_key(c, user.id, key)
            c.executemany("INSERT INTO user_policies (user_id, name, document) VALUES (?, ?, ?)",
                          [(user.id, n, d) for n, d in user.policies])

        await self._changed(run)

    async def delete_user(self, user_id: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM access_keys WHERE user_id = ?", (user_id,))
            c.execute("DELETE FROM user_policies WHERE user_id = ?", (user_id,))
            return c.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0

        return await self._changed(run)

    async def add_access_key(self, user_id: str, key: AccessKey) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            if not c.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                return False
            _key_taken(c, key.access_key)
            _insert_key(c, user_id, key)
            return True

        return await self._changed(run)

    async def set_access_key_status(self, user_id: str, access_key: str, status: str) -> bool:
        assert status in (ACTIVE, INACTIVE)
        return await self._changed(lambda c: c.execute(
            "UPDATE access_keys SET status = ? WHERE access_key = ? AND user_id = ?",
            (status, access_key, user_id)).rowcount > 0)

    async def delete_access_key(self, user_id: str, access_key: str) -> bool:
        return await self._changed(lambda c: c.execute(
            "DELETE FROM access_keys WHERE access_key = ? AND user_id = ?", (access_key, user_id)).rowcount > 0)

    async def set_user_keys(self, user_id: str, access_key: str, secret_key: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            holder = c.execute("SELECT user_id FROM access_keys WHERE access_key = ?", (access_key,)).fetchone()
            if holder is not None and holder[0] != user_id:
                raise UserExists(holder[0])
            if not c.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                return False
            c.execute("DELETE FROM access_keys WHERE user_id = ?", (user_id,))
            _insert_key(c, user_id, AccessKey(access_key, secret_key, ACTIVE, time.time()))
            return True

        return await self._changed(run)

    async def put_user_policy(self, user_id: str, name: str, document: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            if not c.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone():
                return False
            c.execute("INSERT INTO user_policies (user_id, name, document) VALUES (?, ?, ?) "
                      "ON CONFLICT (user_id, name) DO UPDATE SET document = excluded.document",
                      (user_id, name, document))
            return True

        return await self._changed(run)

    async def delete_user_policy(self, user_id: str, name: str) -> bool:
        return await self._changed(lambda c: c.execute(
            "DELETE FROM user_policies WHERE user_id = ? AND name = ?", (user_id, name)).rowcount > 0)

    async def user_by_access_key(self, access_key: str) -> User | None:
        def run(c: sqlite3.Connection) -> User | None:
            row = c.execute(f"SELECT {', '.join('u.' + n for n in _USER_COLS.split(', '))} FROM access_keys k "
                            "JOIN users u ON u.id = k.user_id WHERE k.access_key = ?", (access_key,)).fetchone()
            return _user(c, row) if row else None

        return await self._cached("key", access_key, run)

    async def user_by_id(self, user_id: str) -> User | None:
        def run(c: sqlite3.Connection) -> User | None:
            row = c.execute(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,)).fetchone()
            return _user(c, row) if row else None

        return await self._cached("user", user_id, run)

    async def list_users(self) -> list[User]:
        return await self._read(
            lambda c: [_user(c, r) for r in c.execute(f"SELECT {_USER_COLS} FROM users ORDER BY id").fetchall()]
        )

    # -- buckets --

    async def create_bucket(self, bucket: Bucket) -> None:
        def run(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT owner_id FROM buckets WHERE name = ?", (bucket.name,)).fetchone()
            if row:
                raise BucketAlreadyExists(bucket.name, row[0])
            c.execute(f"INSERT INTO buckets ({_BUCKET_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (bucket.name, bucket.owner_id, bucket.created, bucket.region, bucket.acl, bucket.cors,
                       bucket.id, bucket.versioning, bucket.object_lock, _enc_pairs(bucket.tags), bucket.lifecycle,
                       bucket.policy, bucket.public_access, bucket.ownership, bucket.encryption))

        await self._changed(run)

    async def get_bucket(self, name: str) -> Bucket | None:
        def run(c: sqlite3.Connection) -> Bucket | None:
            row = c.execute(f"SELECT {_BUCKET_COLS} FROM buckets WHERE name = ?", (name,)).fetchone()
            return _bucket(row) if row else None

        return await self._cached("bucket", name, run)

    async def list_buckets(self, owner_id: str | None = None) -> list[Bucket]:
        def run(c: sqlite3.Connection) -> list[Bucket]:
            if owner_id is None:
                rows = c.execute(f"SELECT {_BUCKET_COLS} FROM buckets ORDER BY name")
            else:
                rows = c.execute(f"SELECT {_BUCKET_COLS} FROM buckets WHERE owner_id = ? ORDER BY name",
                                 (owner_id,))
            return [_bucket(r) for r in rows]

        return await self._read(run)

    async def update_bucket(self, bucket: Bucket) -> None:
        """Replaces every setting (``acl``, ``cors``, ``versioning``, ``object_lock``, ``tags``, ``lifecycle``,
        ``policy``, ``public_access``, ``ownership``, ``encryption``); the name, owner, creation time and region
        of a bucket do not change."""

        def run(c: sqlite3.Connection) -> None:
            if c.execute("UPDATE buckets SET acl = ?, cors = ?, versioning = ?, object_lock = ?, tags = ?, "
                         "lifecycle = ?, policy = ?, public_access = ?, ownership = ?, encryption = ? "
                         "WHERE name = ? AND id = ?",
                         (bucket.acl, bucket.cors, bucket.versioning, bucket.object_lock, _enc_pairs(bucket.tags),
                          bucket.lifecycle, bucket.policy, bucket.public_access, bucket.ownership,
                          bucket.encryption, bucket.name, bucket.id)).rowcount == 0:
                raise NoSuchBucket(bucket.name)

        await self._changed(run)

    async def delete_bucket(self, name: str) -> None:
        def run(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone():
                raise NoSuchBucket(name)
            if (c.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone()
                    or c.execute("SELECT 1 FROM versions WHERE bucket = ? LIMIT 1", (name,)).fetchone()):
                raise BucketNotEmpty(name)
            now = time.time()
            for (upload_id,) in c.execute("SELECT upload_id FROM uploads WHERE bucket = ?", (name,)).fetchall():
                parts = self._drop_upload(c, upload_id)
                self._retire(c, [ref for p in parts for ref in p.manifest], (), now)
            c.execute("DELETE FROM completed_uploads WHERE bucket = ?", (name,))
            c.execute("DELETE FROM buckets WHERE name = ?", (name,))

        await self._changed(run)

    @staticmethod
    def _check_bucket(c: sqlite3.Connection, name: str, bucket_id: str | None) -> str:
        """NoSuchBucket unless bucket ``name`` exists — and, with ``bucket_id``, is still that bucket. Returns its
        versioning state."""
        row = c.execute("SELECT id, versioning FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is None or (bucket_id is not None and row[0] != bucket_id):
            raise NoSuchBucket(name)
        return str(row[1])

    # -- objects and versions --
    #
    # The latest version of a key is its row in ``objects`` when it is not a delete marker; ``versions`` holds
    # every other version and every delete marker (a latest one too). So the latest is the ``objects`` row if there
    # is one, else the newest row of ``versions`` (a marker), and a version id is found in one of the two.

    @staticmethod
    def _get_object(c: sqlite3.Connection, bucket: str, key: str) -> ObjectVersion | None:
        row = c.execute(f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket = ? AND key = ?", (bucket, key)).fetchone()
        return _object(row) if row else None

    @classmethod
    def _latest(cls, c: sqlite3.Connection, bucket: str, key: str) -> ObjectVersion | None:
        obj = cls._get_object(c, bucket, key)
        if obj is not None:
            return obj
        row = c.execute(f"SELECT {_VERSION_COLS} FROM versions WHERE bucket = ? AND key = ? ORDER BY vsort LIMIT 1",
                        (bucket, key)).fetchone()
        return _object(row) if row else None

    @classmethod
    def _find_version(cls, c: sqlite3.Connection, bucket: str, key: str, version_id: str) -> ObjectVersion | None:
        row = c.execute(f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
                        (bucket, key, version_id)).fetchone()
        if row is not None:
            return _object(row)
        vsort = version_vsort(version_id)
        if vsort is not None:  # the id says where it is: one primary-key lookup
            row = c.execute(f"SELECT {_VERSION_COLS} FROM versions WHERE bucket = ? AND key = ? AND vsort = ? "
                            "AND version_id = ?", (bucket, key, vsort, version_id)).fetchone()
        else:
            row = c.execute(f"SELECT {_VERSION_COLS} FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                            (bucket, key, version_id)).fetchone()
        return _object(row) if row else None

    @staticmethod
    def _newest_vsort(c: sqlite3.Connection, bucket: str, key: str) -> int | None:
        row = c.execute("SELECT min(v) FROM (SELECT vsort AS v FROM objects WHERE bucket = ? AND key = ? UNION ALL "
                        "SELECT min(vsort) FROM versions WHERE bucket = ? AND key = ?)",
                        (bucket, key, bucket, key)).fetchone()
        return row[0] if row is not None else None

    @staticmethod
    def _demote(c: sqlite3.Connection, bucket: str, key: str) -> None:
        """The latest version (the ``objects`` row, if any) becomes a noncurrent one: it moves to ``versions``."""
        c.execute(f"INSERT INTO versions ({_VERSION_COLS}) SELECT {_OBJECT_COLS}, 0 FROM objects "
                  "WHERE bucket = ? AND key = ?", (bucket, key))
        c.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))

    @staticmethod
    def _promote(c: sqlite3.Connection, bucket: str, key: str) -> None:
        """After the latest version was removed: the newest remaining one becomes the latest, moving to ``objects``
        if it is not a delete marker."""
        if c.execute("SELECT 1 FROM objects WHERE bucket = ? AND key = ?", (bucket, key)).fetchone():
            return
        row = c.execute("SELECT vsort, marker FROM versions WHERE bucket = ? AND key = ? ORDER BY vsort LIMIT 1",
                        (bucket, key)).fetchone()
        if row is None or row[1]:
            return
        c.execute(f"INSERT INTO objects ({_OBJECT_COLS}) SELECT {_OBJECT_COLS} FROM versions "
                  "WHERE bucket = ? AND key = ? AND vsort = ?", (bucket, key, row[0]))
        c.execute("DELETE FROM versions WHERE bucket = ? AND key = ? AND vsort = ?", (bucket, key, row[0]))

    @classmethod
    def _remove_version(cls, c: sqlite3.Connection, v: ObjectVersion, not_before: float,
                        keep: Sequence[ChunkRef] = (), promote: bool = True, bypass: bool = False) -> None:
        """Remove version ``v`` for good (its chunks, but those of ``keep``, go to the GC queue), and (``promote``)
        give the key its next latest version. ObjectLocked, before anything changed, if ``v`` is locked."""
        if v.locked(time.time(), bypass):
            raise ObjectLocked(f"{v.bucket}/{v.key} version {v.version_id}")
        if v.delete_marker or c.execute("DELETE FROM objects WHERE bucket = ? AND key = ? AND vsort = ?",
                                        (v.bucket, v.key, v.vsort)).rowcount == 0:
            c.execute("DELETE FROM versions WHERE bucket = ? AND key = ? AND vsort = ?", (v.bucket, v.key, v.vsort))
        cls._retire(c, v.manifest, keep, not_before)
        if promote:
            cls._promote(c, v.bucket, v.key)

    @staticmethod
    def _enqueue(c: sqlite3.Connection, entries: Sequence[GcEntry]) -> None:
        """Idempotent per chunk: a repeated chunk keeps one entry, with the later not_before and every agent."""
        if not entries:  # an inline body's record: no statement at all (each one costs, even with no rows)
            return
        c.executemany(
            "INSERT INTO gc (chunk_id, agents, not_before) VALUES (?, ?, ?) ON CONFLICT (chunk_id) DO UPDATE SET "
            "not_before = max(not_before, excluded.not_before), agents = sos_agents_union(agents, excluded.agents)",
            [(bytes(e.chunk_id), _json(list(e.agents)), e.not_before) for e in entries],
        )

    @classmethod
    def _retire(cls, c: sqlite3.Connection, chunks: Sequence[ChunkRef], keep: Sequence[ChunkRef],
                not_before: float) -> None:
        """Queue ``chunks`` for GC, except those ``keep`` (the manifest being committed) still references, and take
        them out of the chunk index."""
        if not chunks:
            return
        kept = {ref.chunk_id for ref in keep}
        gone = [r for r in chunks if r.chunk_id not in kept]
        cls._enqueue(c, [GcEntry(r.chunk_id, r.agents, not_before) for r in gone])
        cls._unindex(c, [r.chunk_id for r in gone])

    @classmethod
    def _revive(cls, c: sqlite3.Connection, chunks: Sequence[ChunkRef], owner: tuple[str, str, str, int, str]
                ) -> None:
        """A committed manifest references its chunks: take them out of the GC queue if they were in it, and index
        them under their owner (bucket, key, upload id, part number, version id)."""
        if not chunks:
            return
        c.executemany("DELETE FROM gc WHERE chunk_id = ?", [(bytes(r.chunk_id),) for r in chunks])
        cls._index(c, chunks, owner)

    @staticmethod
    def _index(c: sqlite3.Connection, chunks: Sequence[ChunkRef], owner: tuple[str, str, str, int, str]) -> None:
        if not chunks:
            return
        bucket, key, upload_id, part, version_id = owner
        ids = [(bytes(r.chunk_id),) for r in chunks]
        c.executemany("DELETE FROM chunk_replicas WHERE chunk_id = ?", ids)
        c.executemany(
            "INSERT OR REPLACE INTO chunk_index (chunk_id, bucket, key, upload_id, part, size, crc, agents, replicas, "
            "version_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(bytes(r.chunk_id), bucket, key, upload_id, part, r.size, r.crc32c, _json(list(r.agents)), len(r.agents),
              version_id) for r in chunks])
        c.executemany("INSERT OR IGNORE INTO chunk_replicas (chunk_id, agent_id) VALUES (?, ?)",
                      [(bytes(r.chunk_id), a) for r in chunks for a in r.agents])

    @staticmethod
    def _unindex(c: sqlite3.Connection, chunk_ids: Sequence[bytes]) -> None:
        if not chunk_ids:
            return
        ids = [(bytes(cid),) for cid in chunk_ids]
        c.executemany("DELETE FROM chunk_index WHERE chunk_id = ?", ids)
        c.executemany("DELETE FROM chunk_replicas WHERE chunk_id = ?", ids)

    @staticmethod
    def _take_intent(c: sqlite3.Connection, intent_id: bytes | None) -> None:
        """The commit of an upload drops its intent; if the intent is gone or claimed by the GC, the upload's
        chunks may be deleted already: IntentLost, and the transaction is rolled back."""
        if intent_id is None:
            return
        if c.execute("DELETE FROM intents WHERE intent_id = ? AND claimed = 0", (bytes(intent_id),)).rowcount == 0:
            raise IntentLost(bytes(intent_id).hex())

    @staticmethod
    def _check_conditions(current: ObjectVersion | None, if_match: Sequence[str] | None,
                          if_none_match: Sequence[str] | None, where: str) -> None:
        etag = current.etag if current is not None and not current.delete_marker else None
        if if_match is not None and (etag is None or ("*" not in if_match and etag not in if_match)):
            raise PreconditionFailed(f"{where} does not match If-Match")
        if if_none_match is not None and etag is not None and ("*" in if_none_match or etag in if_none_match):
            raise PreconditionFailed(f"{where} matches If-None-Match")

    @classmethod
    def _commit_object(cls, c: sqlite3.Connection, obj: ObjectVersion, gc_delay: float, versioning: str,
                       bypass: bool = False) -> Committed:
        """``obj`` as the key's new latest version: with versioning Enabled a version of its own, else the "null"
        version, replacing the one there was."""
        bucket, key = obj.bucket, obj.key
        if not versioning:  # never versioned: the key's one version is its objects row, replaced in place
            old = cls._get_object(c, bucket, key)
            if old is not None and old.locked(time.time(), bypass):
                raise ObjectLocked(f"{bucket}/{key} version null")
            obj = attrs.evolve(obj, version_id="null", vsort=next_vsort(old.vsort if old is not None else None),
                               delete_marker=False)
            c.execute(f"INSERT OR REPLACE INTO objects ({_OBJECT_COLS}) VALUES ({', '.join('?' * _N_OBJECT_COLS)})",
                      _object_params(obj))
            if old is not None:
                cls._retire(c, old.manifest, obj.manifest, time.time() + gc_delay)
            cls._revive(c, obj.manifest, (bucket, key, "", 0, "null"))
            return Committed(obj, old)
        vsort = next_vsort(cls._newest_vsort(c, bucket, key))
        obj = attrs.evolve(obj, version_id=new_version_id(vsort) if versioning == "Enabled" else "null",
                           vsort=vsort, delete_marker=False)
        replaced = None if versioning == "Enabled" else cls._find_version(c, bucket, key, "null")
        if replaced is not None:
            cls._remove_version(c, replaced, time.time() + gc_delay, keep=obj.manifest, promote=False, bypass=bypass)
        cls._demote(c, bucket, key)
        c.execute(f"INSERT INTO objects ({_OBJECT_COLS}) VALUES ({', '.join('?' * _N_OBJECT_COLS)})",
                  _object_params(obj))
        cls._revive(c, obj.manifest, (bucket, key, "", 0, obj.version_id))
        return Committed(obj, replaced)

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
        def run(c: sqlite3.Connection) -> Committed:
            versioning = self._check_bucket(c, obj.bucket, bucket_id)
            if if_match is not None or if_none_match is not None:
                self._check_conditions(self._latest(c, obj.bucket, obj.key), if_match, if_none_match,
                                       f"{obj.bucket}/{obj.key}")
            self._take_intent(c, intent_id)
            return self._commit_object(c, obj, gc_delay, versioning, bypass_governance)

        return await self._write(run)

    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion | None:
        if version_id is None:
            return await self._read(self._latest, bucket, key)
        return await self._read(self._find_version, bucket, key, version_id)

    @classmethod
    def _delete(cls, c: sqlite3.Connection, bucket: str, key: str, version_id: str | None, versioning: str,
                owner_id: str, not_before: float, bypass: bool = False, expected: ObjectVersion | None = None
                ) -> Removed:
        """ObjectLocked, before anything changed, when the version to remove for good is locked."""
        if expected is not None and not _same_version(cls._latest(c, bucket, key), expected):
            return Removed()
        if version_id is not None:
            found = cls._find_version(c, bucket, key, version_id)
            if found is None:
                return Removed()
            cls._remove_version(c, found, not_before, bypass=bypass)
            return Removed(found)
        if not versioning:
            old = cls._get_object(c, bucket, key)
            if old is not None:
                c.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
                cls._retire(c, old.manifest, (), not_before)
            return Removed(old)
        vsort = next_vsort(cls._newest_vsort(c, bucket, key))
        removed = None
        if versioning == "Suspended":
            removed = cls._find_version(c, bucket, key, "null")
            if removed is not None:
                cls._remove_version(c, removed, not_before, promote=False, bypass=bypass)
        cls._demote(c, bucket, key)
        marker = ObjectVersion(bucket, key, new_version_id(vsort) if versioning == "Enabled" else "null", 0, "",
                               time.time(), owner_id, content_type="", delete_marker=True, vsort=vsort)
        c.execute(f"INSERT INTO versions ({_VERSION_COLS}) VALUES ({', '.join('?' * (_N_OBJECT_COLS + 1))})",
                  (*_object_params(marker), 1))
        return Removed(removed, marker)

    async def delete_object(self, bucket: str, key: str, *, version_id: str | None = None, gc_delay: float = 0.0,
                            bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False,
                            expected: ObjectVersion | None = None) -> Removed:
        def run(c: sqlite3.Connection) -> Removed:
            row = c.execute("SELECT id, versioning FROM buckets WHERE name = ?", (bucket,)).fetchone()
            if row is None or (bucket_id is not None and row[0] != bucket_id):
                return Removed()
            if not row[1] and expected is None:
                return self._delete_unversioned(c, bucket, [(key, version_id)], time.time() + gc_delay,
                                                inline=True)[0]
            return self._delete(c, bucket, key, version_id, row[1], owner_id, time.time() + gc_delay,
                                bypass_governance, expected)

        return await self._write(run)

    async def delete_objects(self, bucket: str, entries: Sequence[tuple[str, str | None]], *, gc_delay: float = 0.0,
                             bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False
                             ) -> list[Removed]:
        def run(c: sqlite3.Connection) -> list[Removed]:
            row = c.execute("SELECT id, versioning FROM buckets WHERE name = ?", (bucket,)).fetchone()
            if row is None or (bucket_id is not None and row[0] != bucket_id):
                return [Removed()] * len(entries)
            not_before = time.time() + gc_delay
            if not row[1]:  # never versioned: one statement per key, and the chunks of all retired at once
                return self._delete_unversioned(c, bucket, entries, not_before)
            out = []
            for key, version_id in entries:  # a locked entry raises before changing anything: the others go on
                try:
                    out.append(self._delete(c, bucket, key, version_id, row[1], owner_id, not_before,
                                            bypass_governance))
                except ObjectLocked:
                    out.append(Removed(locked=True))
            return out

        return await self._write(run)

    @classmethod
    def _delete_unversioned(cls, c: sqlite3.Connection, bucket: str, entries: Sequence[tuple[str, str | None]],
                            not_before: float, *, inline: bool = False) -> list[Removed]:
        """Deletes in a bucket that never had versioning: its keys have one row each, in ``objects`` (no delete
        marker, no object lock: a lock needs versioning). Each key is one ``DELETE ... RETURNING`` (not a read,
        then a delete), which returns the inline body only when ``inline``; a version id is "null" or absent."""
        out = []
        retired: list[ChunkRef] = []
        statements = _DELETE_WITH_INLINE if inline else _DELETE
        for key, version_id in entries:
            found = c.execute(statements[bool(version_id)],
                              (bucket, key, version_id) if version_id else (bucket, key)).fetchone()
            old = _object(found) if found is not None else None
            if old is not None:
                retired += old.manifest
            out.append(Removed(old))
        cls._retire(c, retired, (), not_before)
        return out

    async def update_object(self, obj: ObjectVersion, *, read: ObjectVersion | None = None) -> bool:
        """Replaces ``acl``, ``tags`` and the lock state of version ``obj.version_id`` if it is still the one read
        (and, with ``read``, still has its lock state).

        The null version is replaced by each write to it, so "still the one read" also compares the ETag and the
        modification time: a metadata update never lands on a version that replaced the one it was read from.
        """
        def run(c: sqlite3.Connection) -> bool:
            args: tuple = (obj.acl, _enc_pairs(obj.tags), enc_lock(obj), obj.bucket, obj.key, obj.version_id,
                           obj.etag, obj.last_modified)
            where = "bucket = ? AND key = ? AND version_id = ? AND etag = ? AND last_modified = ?"
            if read is not None:
                where += " AND lock = ?"
                args += (enc_lock(read),)
            for table in ("objects", "versions"):
                if c.execute(f"UPDATE {table} SET acl = ?, tags = ?, lock = ? WHERE {where}", args).rowcount > 0:
                    return True
            return False

        return await self._write(run)

    async def list_versions(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", version_id_marker: str = "",
        limit: int = 1000,
    ) -> VersionListing:
        """Two lazy cursors per seek of the walk — the latest versions in ``objects``, the others in ``versions``,
        each read in (key, vsort) order from its covering index — merged. One read transaction: one snapshot."""
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run(c: sqlite3.Connection) -> VersionListing:
            after_vsort: int | None = None
            if key_marker and version_id_marker:
                marked = self._find_version(c, bucket, key_marker, version_id_marker)
                after_vsort = marked.vsort if marked is not None else version_vsort(version_id_marker)

            def cursor(table: str, extra: str, start: str, inclusive: bool, upper: str | None):
                if start == key_marker and after_vsort is not None:
                    sql = (f"SELECT {_LISTED_COLS}, {extra} FROM {table} WHERE bucket = ? AND "
                           "(key > ? OR (key = ? AND vsort > ?))")
                    args: list[Any] = [bucket, start, start, after_vsort]
                else:
                    sql = (f"SELECT {_LISTED_COLS}, {extra} FROM {table} WHERE bucket = ? "
                           f"AND key {'>=' if inclusive else '>'} ?")
                    args = [bucket, start]
                if upper is not None:
                    sql += " AND key < ?"
                    args.append(upper)
                return c.execute(sql + " ORDER BY key, vsort", args)

            def seek(start: str, inclusive: bool, upper: str | None):
                return heapq.merge(cursor("objects", "0, 1", start, inclusive, upper),
                                   cursor("versions", "marker, 0", start, inclusive, upper),
                                   key=lambda r: (r[0].encode("utf-8", "surrogatepass"), r[1]))

            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=key_marker, limit=limit, key_of=_first,
                        marker_inclusive=after_vsort is not None)
            out: list[ListedVersion] = []
            previous = None
            for key, vsort, vid, size, etag, modified, owner, marker, current in page.items:
                if key != previous:  # the newest of its key on this page: the latest unless the page began inside
                    latest = bool(current) or bool(marker) and not (key == key_marker and after_vsort is not None
                                                                    and self._newest_vsort(c, bucket, key) != vsort)
                else:
                    latest = False
                previous = key
                out.append(ListedVersion(key, vid, latest, bool(marker), size, etag, modified, owner))
            last = page.last
            if isinstance(last, str):
                next_key, next_id = last, ""
            elif last is not None:
                next_key, next_id = last[0], last[2]
            else:
                next_key, next_id = "", ""
            return VersionListing(tuple(out), page.prefixes, page.truncated, next_key, next_id, page.read)

        return await self._read(run)

    async def scan_objects(
        self, bucket: str, *, start: str = "", inclusive: bool = True, prefix: str = "", limit: int = 1000
    ) -> ListPage:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        op, lower, upper = _key_range(prefix, start, inclusive)
        sql = f"SELECT {_OBJECT_COLS} FROM objects WHERE bucket = ? AND key {op} ?"
        params: list[Any] = [bucket, lower]
        if upper is not None:
            sql += " AND key < ?"
            params.append(upper)
        sql += " ORDER BY key LIMIT ?"
        params.append(limit + 1)

        def run(c: sqlite3.Connection) -> ListPage:
            rows = c.execute(sql, params).fetchall()
            return ListPage(tuple(_object(r) for r in rows[:limit]), len(rows) > limit)

        return await self._read(run)

    async def list_objects(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", marker: str = "", limit: int = 1000
    ) -> ObjectListing:
        """One lazy cursor per seek of the walk, in primary-key order, reading only the columns a listing shows
        (no manifest or stored headers are decoded). One read transaction: one snapshot."""
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run(c: sqlite3.Connection) -> ObjectListing:
            def seek(start: str, inclusive: bool, upper: str | None):
                sql = (f"SELECT key, version_id, size, etag, last_modified, owner_id FROM objects "
                       f"WHERE bucket = ? AND key {'>=' if inclusive else '>'} ?")
                args: list[Any] = [bucket, start]
                if upper is not None:
                    sql += " AND key < ?"
                    args.append(upper)
                return c.execute(sql + " ORDER BY key", args)

            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit, key_of=_first)
            make = ListedObject._make  # a thousand per page: _make skips the keyword-argument constructor
            objects = tuple([make((bucket, *row)) for row in page.items])
            last = page.last if isinstance(page.last, str) else page.last[0] if page.last else ""
            return ObjectListing(objects, page.prefixes, page.truncated, last, page.read)

        return await self._read(run)

    async def count_objects(self, bucket: str) -> int:
        return await self._read(
            lambda c: c.execute("SELECT count(*) FROM objects WHERE bucket = ?", (bucket,)).fetchone()[0]
        )

    async def bucket_usage(self, bucket: str) -> tuple[int, int]:
        def run(c: sqlite3.Connection) -> tuple[int, int]:
            n, size = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM objects WHERE bucket = ?",
                                (bucket,)).fetchone()
            older = c.execute("SELECT coalesce(sum(size), 0) FROM versions WHERE bucket = ?", (bucket,)).fetchone()[0]
            return int(n), int(size) + int(older)

        return await self._read(run)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1 FROM users LIMIT 1").fetchall())

    # -- multipart --

    async def create_upload(self, upload: Upload, *, bucket_id: str | None = None) -> None:
        def run(c: sqlite3.Connection) -> None:
            self._check_bucket(c, upload.bucket, bucket_id)
            c.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES ({', '.join('?' * 11)})",
                (upload.bucket, upload.key, upload.upload_id, upload.initiated, upload.owner_id,
                 upload.content_type, _enc_pairs(upload.headers), _enc_pairs(upload.user_meta), upload.acl,
                 _enc_pairs(upload.tags), upload.checksum_algorithm),
            )

        await self._write(run)

    @staticmethod
    def _get_upload(c: sqlite3.Connection, upload_id: str) -> Upload | None:
        row = c.execute(f"SELECT {_UPLOAD_COLS} FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        return _upload(row) if row else None

    async def get_upload(self, bucket: str, upload_id: str) -> Upload | None:
        def run(c: sqlite3.Connection) -> Upload | None:
            upload = self._get_upload(c, upload_id)
            return upload if upload is not None and upload.bucket == bucket else None

        return await self._read(run)

    async def list_uploads(
        self, bucket: str, *, prefix: str = "", key_marker: str = "", upload_id_marker: str = "", limit: int = 1000
    ) -> tuple[list[Upload], bool]:
        """As S3's ListMultipartUploads: after ``key_marker`` means keys above it, or, when ``upload_id_marker``
        is given too, the marker's key with upload ids above ``upload_id_marker``."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        sql = f"SELECT {_UPLOAD_COLS} FROM uploads WHERE bucket = ?"
        params: list[Any] = [bucket]
        if prefix:
            sql += " AND key >= ?"
            params.append(prefix)
            upper = prefix_successor(prefix)
            if upper is not None:
                sql += " AND key < ?"
                params.append(upper)
        if key_marker and upload_id_marker:
            sql += " AND (key > ? OR (key = ? AND upload_id > ?))"
            params += [key_marker, key_marker, upload_id_marker]
        elif key_marker:
            sql += " AND key > ?"
            params.append(key_marker)
        sql += " ORDER BY key, initiated, upload_id LIMIT ?"
        params.append(limit + 1)

        def run(c: sqlite3.Connection) -> tuple[list[Upload], bool]:
            rows = c.execute(sql, params).fetchall()
            return [_upload(r) for r in rows[:limit]], len(rows) > limit

        return await self._read(run)

    async def list_upload_entries(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", upload_id_marker: str = "",
        limit: int = 1000,
    ) -> UploadListing:
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run(c: sqlite3.Connection) -> UploadListing:
            def seek(start: str, inclusive: bool, upper: str | None):
                sql = f"SELECT {_UPLOAD_COLS} FROM uploads WHERE bucket = ? AND "
                if start == key_marker and upload_id_marker:  # the marker key's uploads after the id marker
                    sql += "(key > ? OR (key = ? AND upload_id > ?))"
                    args: list[Any] = [bucket, start, start, upload_id_marker]
                else:
                    sql += f"key {'>=' if inclusive else '>'} ?"
                    args = [bucket, start]
                if upper is not None:
                    sql += " AND key < ?"
                    args.append(upper)
                return (_upload(row) for row in c.execute(sql + " ORDER BY key, initiated, upload_id", args))

            # With an id marker, the marker key's own later uploads are still to come: the walk starts at the key
            # (the seek applies the id condition there), not after it.
            page = walk(seek, prefix=prefix, delimiter=delimiter, marker=key_marker, limit=limit,
                        key_of=lambda u: u.key, marker_inclusive=bool(upload_id_marker))
            last = page.last
            if isinstance(last, Upload):
                next_key, next_id = last.key, last.upload_id
            else:
                next_key, next_id = (last or ""), ""
            return UploadListing(page.items, page.prefixes, page.truncated, next_key, next_id, page.read)

        return await self._read(run)

    async def put_part(self, part: Part, *, gc_delay: float = 0.0, intent_id: bytes | None = None) -> Part | None:
        def run(c: sqlite3.Connection) -> Part | None:
            upload = c.execute("SELECT bucket, key FROM uploads WHERE upload_id = ?", (part.upload_id,)).fetchone()
            if upload is None:
                raise NoSuchUpload(part.upload_id)
            self._take_intent(c, intent_id)
            row = c.execute(f"SELECT {_PART_COLS} FROM parts WHERE upload_id = ? AND number = ?",
                            (part.upload_id, part.number)).fetchone()
            old = _part(row) if row else None
            c.execute(
                f"INSERT OR REPLACE INTO parts ({_PART_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (part.upload_id, part.number, part.size, part.etag, part.last_modified,
                 _enc_manifest(part.manifest), _enc_pairs(part.checksums)),
            )
            if old is not None:
                self._retire(c, old.manifest, part.manifest, time.time() + gc_delay)
            self._revive(c, part.manifest, (upload[0], upload[1], part.upload_id, part.number, ""))
            return old

        return await self._write(run)

    async def list_parts(self, upload_id: str, *, marker: int = 0, limit: int = 1000) -> tuple[list[Part], bool]:
        """Parts numbered above ``marker``, in order. Raises NoSuchUpload."""
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def run(c: sqlite3.Connection) -> tuple[list[Part], bool]:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone():
                raise NoSuchUpload(upload_id)
            rows = c.execute(
                f"SELECT {_PART_COLS} FROM parts WHERE upload_id = ? AND number > ? ORDER BY number LIMIT ?",
                (upload_id, marker, limit + 1),
            ).fetchall()
            return [_part(r) for r in rows[:limit]], len(rows) > limit

        return await self._read(run)

    @staticmethod
    def _drop_upload(c: sqlite3.Connection, upload_id: str) -> list[Part]:
        parts = [_part(r) for r in c.execute(f"SELECT {_PART_COLS} FROM parts WHERE upload_id = ?", (upload_id,))]
        c.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
        c.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        return parts

    async def complete_upload(
        self, upload_id: str, obj: ObjectVersion, used_parts: Sequence[int], *, gc_delay: float = 0.0
    ) -> Committed:
        """Also NoSuchUpload when ``obj`` is not in the upload's bucket and key (as S3 does).

        What goes to the GC queue is every stored part's chunk that ``obj.manifest`` does not reference: with a
        manifest made of the used parts that is exactly the chunks of the parts not used, and if a used part was
        replaced after its manifest was read, the replacement's chunks are collected rather than leaked.
        """
        def run(c: sqlite3.Connection) -> Committed:
            upload = self._get_upload(c, upload_id)
            if upload is None or (upload.bucket, upload.key) != (obj.bucket, obj.key):
                raise NoSuchUpload(upload_id)
            versioning = self._check_bucket(c, obj.bucket, None)
            parts = self._drop_upload(c, upload_id)
            done = self._commit_object(c, obj, gc_delay, versioning)
            self._retire(c, [ref for p in parts for ref in p.manifest], obj.manifest, time.time() + gc_delay)
            c.execute(f"INSERT OR REPLACE INTO completed_uploads ({_COMPLETED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (upload_id, obj.bucket, obj.key, obj.etag, time.time(), _enc_pairs(obj.checksums),
                       upload.checksum_algorithm, done.version.version_id))
            return done

        return await self._write(run)

    async def completed_upload(self, bucket: str, upload_id: str) -> CompletedUpload | None:
        def run(c: sqlite3.Connection) -> CompletedUpload | None:
            row = c.execute(f"SELECT {_COMPLETED_COLS} FROM completed_uploads WHERE upload_id = ? AND bucket = ?",
                            (upload_id, bucket)).fetchone()
            if row is None:
                return None
            upload_id_, bucket_, key, etag, completed, sums, spec, version_id = row
            return CompletedUpload(upload_id_, bucket_, key, etag, completed, _dec_pairs(sums), spec, version_id)

        return await self._read(run)

    async def prune_completed(self, older_than: float) -> int:
        return await self._write(lambda c: c.execute("DELETE FROM completed_uploads WHERE completed < ?",
                                                     (older_than,)).rowcount)

    async def abort_upload(self, upload_id: str, *, gc_delay: float = 0.0) -> None:
        def run(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone():
                raise NoSuchUpload(upload_id)
            parts = self._drop_upload(c, upload_id)
            self._retire(c, [ref for p in parts for ref in p.manifest], (), time.time() + gc_delay)

        await self._write(run)

    # -- upload intents --

    async def add_intent(self, intent: Intent) -> None:
        await self._write(lambda c: c.execute(
            f"INSERT OR REPLACE INTO intents ({_INTENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (bytes(intent.intent_id), intent.created, _json(list(intent.agents)), intent.bucket, intent.key,
             intent.renewed, intent.heartbeat, int(intent.claimed)),
        ))

    async def renew_intent(self, intent_id: bytes, now: float) -> bool:
        return await self._write(lambda c: c.execute(
            "UPDATE intents SET heartbeat = heartbeat + 1, renewed = ? WHERE intent_id = ? AND claimed = 0",
            (now, bytes(intent_id)),
        ).rowcount > 0)

    async def claim_intent(self, intent_id: bytes, heartbeat: int) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT heartbeat, claimed FROM intents WHERE intent_id = ?", (bytes(intent_id),)
                            ).fetchone()
            if row is None:
                return False
            if row[1]:
                return True
            if row[0] != heartbeat:
                return False
            # renewed = -1: a claimed intent stays a candidate whatever the clock says, and comes first
            c.execute("UPDATE intents SET claimed = 1, renewed = -1 WHERE intent_id = ?", (bytes(intent_id),))
            return True

        return await self._write(run)

    async def drop_intent(self, intent_id: bytes) -> None:
        await self._write(lambda c: c.execute("DELETE FROM intents WHERE intent_id = ?", (bytes(intent_id),)))

    async def stale_intents(self, older_than: float, limit: int = 100,
                            after: tuple[float, bytes] | None = None) -> list[Intent]:
        """Intents renewed before ``older_than`` (claimed ones have ``renewed = -1``), by (renewed, intent_id)
        after ``after``."""
        sql = f"SELECT {_INTENT_COLS} FROM intents WHERE renewed < ?"
        params: list[Any] = [older_than]
        if after is not None:
            sql += " AND (renewed > ? OR (renewed = ? AND intent_id > ?))"
            params += [after[0], after[0], bytes(after[1])]
        sql += " ORDER BY renewed, intent_id LIMIT ?"
        params.append(limit)
        return await self._read(lambda c: [_intent(r) for r in c.execute(sql, params)])

    # -- GC queue --

    async def enqueue_gc(self, entries: Sequence[GcEntry]) -> None:
        entries = list(entries)
        if entries:
            await self._write(self._enqueue, entries)

    async def due_gc(self, now: float, limit: int = 100) -> list[GcEntry]:
        """Entries whose ``not_before`` is at or before ``now``, earliest first."""
        return await self._read(lambda c: [
            GcEntry(chunk_id, tuple(json.loads(agents)), not_before) for chunk_id, agents, not_before in c.execute(
                "SELECT chunk_id, agents, not_before FROM gc WHERE not_before <= ? ORDER BY not_before LIMIT ?",
                (now, limit),
            )
        ])

    async def done_gc(self, chunk_ids: Sequence[bytes]) -> None:
        ids = [(bytes(cid),) for cid in chunk_ids]
        if ids:
            await self._write(lambda c: c.executemany("DELETE FROM gc WHERE chunk_id = ?", ids))

    async def update_gc(self, entry: GcEntry) -> None:
        def run(c: sqlite3.Connection) -> None:
            if entry.agents:
                c.execute("UPDATE gc SET agents = ?, not_before = ? WHERE chunk_id = ?",
                          (_json(list(entry.agents)), entry.not_before, bytes(entry.chunk_id)))
            else:
                c.execute("DELETE FROM gc WHERE chunk_id = ?", (bytes(entry.chunk_id),))

        await self._write(run)

    # -- the chunk index --

    @staticmethod
    def _owner_row(row: tuple) -> ChunkOwner:
        chunk_id, bucket, key, upload_id, part, size, crc, agents, version_id = row
        return ChunkOwner(bytes(chunk_id), bucket, key, size, crc, tuple(json.loads(agents)), upload_id, part,
                          version_id)

    _OWNER_COLS = "i.chunk_id, i.bucket, i.key, i.upload_id, i.part, i.size, i.crc, i.agents, i.version_id"

    async def chunk_owner(self, chunk_id: bytes) -> ChunkOwner | None:
        def run(c: sqlite3.Connection) -> ChunkOwner | None:
            row = c.execute(f"SELECT {self._OWNER_COLS} FROM chunk_index i WHERE i.chunk_id = ?",
                            (bytes(chunk_id),)).fetchone()
            return self._owner_row(row) if row else None

        return await self._read(run)

    async def chunks_on_agent(self, agent_id: str, *, after: bytes | None = None, limit: int = 1000
                              ) -> list[ChunkOwner]:
        def run(c: sqlite3.Connection) -> list[ChunkOwner]:
            rows = c.execute(
                f"SELECT {self._OWNER_COLS} FROM chunk_replicas r JOIN chunk_index i ON i.chunk_id = r.chunk_id "
                "WHERE r.agent_id = ? AND r.chunk_id > ? ORDER BY r.chunk_id LIMIT ?",
                (agent_id, bytes(after or b""), limit)).fetchall()
            return [self._owner_row(r) for r in rows]

        return await self._read(run)

    async def count_chunks_on_agent(self, agent_id: str) -> int:
        return await self._read(lambda c: c.execute("SELECT count(*) FROM chunk_replicas WHERE agent_id = ?",
                                                    (agent_id,)).fetchone()[0])

    async def under_replicated(self, replicas: int, *, after: bytes | None = None, limit: int = 1000
                               ) -> list[ChunkOwner]:
        def run(c: sqlite3.Connection) -> list[ChunkOwner]:
            rows = c.execute(
                f"SELECT {self._OWNER_COLS} FROM chunk_index i WHERE i.replicas < ? AND i.chunk_id > ? "
                "ORDER BY i.chunk_id LIMIT ?", (replicas, bytes(after or b""), limit)).fetchall()
            return [self._owner_row(r) for r in rows]

        return await self._read(run)

    async def referenced(self, chunk_ids: Sequence[bytes]) -> set[bytes]:
        return await self._read(_present, "chunk_index", "chunk_id", [bytes(cid) for cid in chunk_ids])

    async def set_chunk_agents(self, chunk_id: bytes, expected: Sequence[str], agents: Sequence[str]) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT bucket, key, upload_id, part, agents, version_id FROM chunk_index "
                            "WHERE chunk_id = ?", (bytes(chunk_id),)).fetchone()
            if row is None or tuple(json.loads(row[4])) != tuple(expected):
                return False
            bucket, key, upload_id, part, _, version_id = row
            table = "objects"
            if upload_id:
                found = c.execute("SELECT manifest FROM parts WHERE upload_id = ? AND number = ?",
                                  (upload_id, part)).fetchone()
            else:
                found = c.execute("SELECT manifest FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
                                  (bucket, key, version_id)).fetchone()
                if found is None:
                    table = "versions"
                    found = c.execute("SELECT manifest FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                                      (bucket, key, version_id)).fetchone()
            if found is None:
                return False
            manifest = list(_dec_manifest(found[0]))
            hits = [i for i, ref in enumerate(manifest) if ref.chunk_id == chunk_id]
            if not hits:
                return False
            for i in hits:
                manifest[i] = attrs.evolve(manifest[i], agents=tuple(agents))
            if upload_id:
                c.execute("UPDATE parts SET manifest = ? WHERE upload_id = ? AND number = ?",
                          (_enc_manifest(manifest), upload_id, part))
            else:
                c.execute(f"UPDATE {table} SET manifest = ? WHERE bucket = ? AND key = ? AND version_id = ?",
                          (_enc_manifest(manifest), bucket, key, version_id))
            self._index(c, [manifest[hits[0]]], (bucket, key, upload_id, part, version_id))
            return True

        return await self._write(run)

    # -- replica reports --

    async def report_replica(self, report: ReplicaReport) -> None:
        await self._write(lambda c: c.execute(
            "INSERT OR REPLACE INTO replica_reports (chunk_id, agent_id, reason, reported) VALUES (?, ?, ?, ?)",
            (bytes(report.chunk_id), report.agent_id, report.reason, report.reported)))

    async def replica_reports(self, limit: int = 100) -> list[ReplicaReport]:
        return await self._read(lambda c: [
            ReplicaReport(bytes(cid), agent, reason, reported) for cid, agent, reason, reported in c.execute(
                "SELECT chunk_id, agent_id, reason, reported FROM replica_reports ORDER BY reported LIMIT ?",
                (limit,))])

    async def drop_replica_report(self, chunk_id: bytes, agent_id: str) -> None:
        await self._write(lambda c: c.execute("DELETE FROM replica_reports WHERE chunk_id = ? AND agent_id = ?",
                                              (bytes(chunk_id), agent_id)))

    async def indexed_agents(self) -> set[str]:
        def run(c: sqlite3.Connection) -> set[str]:
            # a skip scan of the (agent_id, chunk_id) index: one seek per agent, not a row per replica
            found: set[str] = set()
            row = c.execute("SELECT min(agent_id) FROM chunk_replicas").fetchone()
            while row is not None and row[0] is not None:
                found.add(row[0])
                row = c.execute("SELECT min(agent_id) FROM chunk_replicas WHERE agent_id > ?", (row[0],)).fetchone()
            return found

        return await self._read(run)

    async def open_intents(self, intent_ids: Sequence[bytes]) -> set[bytes]:
        return await self._read(_present, "intents", "intent_id", [bytes(i) for i in intent_ids])

    async def get_state(self, name: str) -> str | None:
        def run(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
            return str(row[0]) if row else None

        return await self._read(run)

    async def set_state(self, name: str, value: str | None) -> None:
        if value is None:
            await self._write(lambda c: c.execute("DELETE FROM state WHERE name = ?", (name,)))
        else:
            await self._write(lambda c: c.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)",
                                                  (name, value)))
