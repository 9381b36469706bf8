"""The metadata interface: what every metadata backend (SQLite embedded, Cassandra in a cluster) provides.

Owns the records (users and keys, buckets, object versions with their chunk manifests, multipart uploads and
parts, upload intents, the GC queue) and the atomic steps on them. Knows nothing of HTTP, S3 XML or agents' sockets.

Rules every implementation keeps, so that the Cassandra one fits:
- each method is one atomic step on one partition-sized thing (a bucket row, one object key, one upload), never a
  transaction spanning several buckets or keys;
- listing is an ordered range scan over a bucket's keys (UTF-8 binary order), resumable from any key;
- all methods are async; blocking work runs off the event loop.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

import attrs


class MetaError(Exception):
    """Base of the metadata errors that map to S3 errors."""


class BucketAlreadyExists(MetaError):
    def __init__(self, name: str, owner_id: str) -> None:
        super().__init__(name)
        self.name, self.owner_id = name, owner_id


class NoSuchBucket(MetaError):
    pass


class BucketNotEmpty(MetaError):
    pass


class NoSuchUpload(MetaError):
    pass


class UserExists(MetaError):
    pass


class NoSuchVersion(MetaError):
    """A version id that names no version of the key."""


class ObjectLocked(MetaError):
    """The step would remove or replace a version under retention or legal hold (object lock): nothing changed."""


class PreconditionFailed(MetaError):
    """A conditional write (expected ETag, or must-not-exist) did not hold when it was applied."""


class MetaUnavailable(MetaError):
    """The backend cannot serve the call right now (its storage is full or failing, a lock is held for too long):
    nothing was changed, and the request may be retried."""


class IntentLost(MetaError):
    """A commit named an upload intent that no longer exists or that the garbage collector has claimed: the
    upload's chunks may be gone, so nothing was committed."""


ACTIVE, INACTIVE = "Active", "Inactive"  # an access key's status (IAM's words); only an Active key signs requests


@attrs.frozen
class AccessKey:
    access_key: str
    secret_key: str = attrs.field(repr=False)
    status: str = ACTIVE
    created: float = 0.0  # seconds since the epoch (0: made before keys had dates)


@attrs.frozen
class User:
    """A user: its key pairs (any number in the store; the IAM API allows two) and its inline user policies
    (name, JSON document), both in name order."""

    id: str
    display_name: str
    email: str = ""
    keys: tuple[AccessKey, ...] = ()
    policies: tuple[tuple[str, str], ...] = ()
    created: float = 0.0

    def key(self, access_key: str) -> AccessKey | None:
        for k in self.keys:
            if k.access_key == access_key:
                return k
        return None

    def policy(self, name: str) -> str | None:
        return dict(self.policies).get(name)


def new_bucket_id() -> str:
    return os.urandom(12).hex()


@attrs.frozen
class Bucket:
    name: str
    owner_id: str
    created: float  # seconds since the epoch
    region: str = "us-east-1"
    acl: str = ""  # serialized access-control policy; "" = private to the owner
    cors: str = ""  # serialized CORS rules; "" = no CORS configuration
    # The bucket's identity: a bucket deleted and created again under the same name is another bucket. A write
    # that read the bucket when it began commits only into that same bucket (``bucket_id=`` of the writes).
    id: str = attrs.field(factory=new_bucket_id)
    versioning: str = ""  # "" (never enabled), "Enabled" or "Suspended"
    # object lock: "" not enabled, else its configuration (JSON: the default retention, if any; s3/objectlock.py)
    object_lock: str = ""
    tags: tuple[tuple[str, str], ...] = ()  # the bucket's own tags (PutBucketTagging)
    lifecycle: str = ""  # lifecycle rules (JSON, s3/lifecycle.py); "" = none
    policy: str = ""  # the bucket policy (JSON, as PutBucketPolicy sent it; s3/policy.py); "" = none
    public_access: str = ""  # the public access block (JSON of its four flags, s3/bucketaccess.py); "" = none
    ownership: str = ""  # object ownership: "", "BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"
    encryption: str = ""  # default encryption of new objects (JSON, s3/sse.py); "" = none


VERSIONING = ("", "Enabled", "Suspended")

# Version order. Every version of a key has a ``vsort``, an integer that is smaller the newer the version: the
# writes of one key are serialized by the store, and each new version gets ``min(clock, newest - 1)``, so the order
# is the order of the commits whatever the clocks of the nodes say. A version id other than "null" is the vsort in
# 16 hex digits followed by 16 random ones: opaque to clients, URL-safe, unique, and it tells the store where the
# version is without an index.
VSORT_BASE = 2**63 - 1


def clock_vsort() -> int:
    return VSORT_BASE - time.time_ns()


def next_vsort(newest: int | None) -> int:
    """The vsort of a new version of a key whose newest version has vsort ``newest`` (None: it has none)."""
    now = clock_vsort()
    return now if newest is None or now < newest else newest - 1


def new_version_id(vsort: int) -> str:
    return f"{vsort:016x}{os.urandom(8).hex()}"


def version_vsort(version_id: str) -> int | None:
    """The vsort a (non-null) version id names; None when it is not one of ours (then it names no version)."""
    if len(version_id) != 32 or not all(c in "0123456789abcdef" for c in version_id):
        return None
    return int(version_id[:16], 16)


def valid_version_id(version_id: str) -> bool:
    return version_id == "null" or version_vsort(version_id) is not None


@attrs.frozen
class ChunkRef:
    """One piece of an object body: chunk ``chunk_id`` of ``size`` bytes (whole-chunk CRC ``crc32c``) on each of
    ``agents`` — all of it, or (a range copied by UploadPartCopy) the slice of ``length`` bytes from ``offset``."""

    chunk_id: bytes
    size: int  # the chunk's own length (what repair copies and the scrubber checks)
    crc32c: int
    agents: tuple[str, ...]  # agent ids (hex) holding a replica
    offset: int = 0
    length: int | None = None  # None: to the chunk's end

    @property
    def used(self) -> int:
        """How many bytes of the body this piece is."""
        return self.size - self.offset if self.length is None else self.length


@attrs.frozen
class ObjectVersion:
    bucket: str
    key: str
    version_id: str  # "null" while buckets are unversioned
    size: int
    etag: str  # without quotes
    last_modified: float
    owner_id: str
    manifest: tuple[ChunkRef, ...] = ()
    content_type: str = "binary/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()  # stored response headers: content-encoding, cache-control...
    user_meta: tuple[tuple[str, str], ...] = ()  # x-amz-meta-* (names lower-cased, without the prefix)
    checksums: tuple[tuple[str, str], ...] = ()  # algorithm (e.g. "CRC32") -> base64 value
    acl: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    parts: tuple[int, ...] = ()  # multipart: size of each part, in order; () for a single-part object
    # a small body kept in the metadata record itself (then ``manifest`` is empty): no chunk, no agent round trip
    inline: bytes | None = attrs.field(default=None, repr=False)
    delete_marker: bool = False  # a delete marker of a versioned bucket: no body, no metadata
    # object lock: a retention ("GOVERNANCE" or "COMPLIANCE" until ``retain_until``, UTC seconds) and a legal hold
    lock_mode: str = ""
    retain_until: float = 0.0
    legal_hold: bool = False
    # multipart with an upload checksum: each part's checksum of the object's algorithm (base64), in part order
    part_checksums: tuple[str, ...] = ()
    # the version's place among the key's versions (see VSORT_BASE), assigned by the store: a storage detail, not
    # part of what a version is (versions compare by their fields, their id among them)
    vsort: int = attrs.field(default=0, eq=False)

    def locked(self, now: float, bypass_governance: bool = False) -> bool:
        """Whether object lock forbids removing this version at ``now``: a legal hold, or a retention not past —
        GOVERNANCE yielding to ``bypass_governance``, COMPLIANCE to nobody."""
        if self.legal_hold:
            return True
        if self.lock_mode and self.retain_until > now:
            return not (self.lock_mode == "GOVERNANCE" and bypass_governance)
        return False

    def lock_state(self) -> tuple[str, float, bool]:
        return self.lock_mode, self.retain_until, self.legal_hold


@attrs.frozen
class Committed:
    """What a write committed (``version``: its version id assigned by the store — "null" unless the bucket's
    versioning is Enabled) and the version it removed for good, if any: the key's former null version, in a bucket
    that is unversioned or whose versioning is suspended."""

    version: ObjectVersion
    replaced: ObjectVersion | None


@attrs.frozen
class Removed:
    """What a delete did: the version (or delete marker) it removed for good, and the delete marker it put (a
    delete without a version id, in a bucket with versioning)."""

    removed: ObjectVersion | None = None
    marker: ObjectVersion | None = None
    locked: bool = False  # (delete_objects) nothing done: the version is under object lock

    def __bool__(self) -> bool:
        return self.removed is not None or self.marker is not None


@attrs.frozen
class ListPage:
    """Objects in key order from an ordered scan; ``truncated`` when more keys follow the last one."""

    objects: tuple[ObjectVersion, ...]
    truncated: bool


class ListedObject(NamedTuple):
    """What a listing shows of an object (not its body's manifest or stored headers: a page reads only this).
    A named tuple: a page builds a thousand of them, at a quarter of an attrs instance's cost."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: float
    owner_id: str


@attrs.frozen
class ObjectListing:
    """A page of a listing with a delimiter: objects and common prefixes above the marker, in key order.

    ``last`` is the last entry returned (a key or a common prefix: the next marker); ``rows_read`` how many
    index entries and rows the backend read to build the page — about the page's size, whatever the bucket holds.
    """

    objects: tuple[ListedObject, ...]
    prefixes: tuple[str, ...]
    truncated: bool
    last: str
    rows_read: int = 0


class ListedVersion(NamedTuple):
    """An entry of ListObjectVersions: a version or a delete marker, and whether it is the key's latest."""

    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool
    size: int
    etag: str
    last_modified: float
    owner_id: str


@attrs.frozen
class VersionListing:
    """A page of ListObjectVersions: versions and markers (by key, newest first) and common prefixes after the
    (key, version id) markers; ``next_key_marker``/``next_version_id_marker`` resume after the last entry."""

    versions: tuple[ListedVersion, ...]
    prefixes: tuple[str, ...]
    truncated: bool
    next_key_marker: str
    next_version_id_marker: str
    rows_read: int = 0


@attrs.frozen
class UploadListing:
    """A page of ListMultipartUploads: uploads and common prefixes after the (key, upload id) markers."""

    uploads: tuple[Upload, ...]
    prefixes: tuple[str, ...]
    truncated: bool
    next_key_marker: str
    next_upload_id_marker: str
    rows_read: int = 0


@attrs.frozen
class Upload:
    """A multipart upload in progress."""

    bucket: str
    key: str
    upload_id: str
    initiated: float
    owner_id: str
    content_type: str = "binary/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    user_meta: tuple[tuple[str, str], ...] = ()
    acl: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    checksum_algorithm: str = ""


@attrs.frozen
class CompletedUpload:
    """What a completed multipart upload answered, kept for a while so that a client retrying its
    CompleteMultipartUpload (after a timeout, say) gets the same answer instead of NoSuchUpload."""

    upload_id: str
    bucket: str
    key: str
    etag: str
    completed: float
    checksums: tuple[tuple[str, str], ...] = ()
    checksum_algorithm: str = ""  # the upload's "ALGORITHM:TYPE", as Upload.checksum_algorithm
    version_id: str = "null"  # the version it committed


@attrs.frozen
class Part:
    upload_id: str
    number: int
    size: int
    etag: str
    last_modified: float
    manifest: tuple[ChunkRef, ...] = ()
    checksums: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Intent:
    """Recorded before the first chunk of an upload is written, so that a crashed upload's chunks are found.

    Its chunks are named ``intent_id (12 bytes) + sequence (4 bytes, big-endian)``, so an agent's ordered LIST from
    ``intent_id + 0000`` finds every chunk it wrote, without a metadata write per chunk.

    Liveness: a running upload renews its intent on a timer (``renew_intent``), which bumps ``heartbeat`` and sets
    ``renewed``. The garbage collector never decides from a wall clock alone that an upload is dead: ``renewed``
    only preselects candidates; an intent is abandoned when the collector has watched its ``heartbeat`` stand still
    for the grace period on its own monotonic clock. It then ``claim_intent``s it (conditional on that heartbeat)
    before deleting a chunk, and a claimed intent can neither be renewed nor committed.
    """

    intent_id: bytes  # 12 bytes
    created: float
    agents: tuple[str, ...]  # agent ids the upload may have written to
    bucket: str = ""
    key: str = ""
    renewed: float = attrs.field(default=attrs.Factory(lambda self: self.created, takes_self=True))
    heartbeat: int = 0
    claimed: bool = False


@attrs.frozen
class ChunkOwner:
    """The one committed record that references a chunk — an object, or a part of an upload in progress — and the
    agents its manifest says hold it: the chunk index, which repair, drain and scrub work from."""

    chunk_id: bytes
    bucket: str
    key: str
    size: int
    crc32c: int
    agents: tuple[str, ...]
    upload_id: str = ""  # "" for an object; else the part ``part`` of this upload
    part: int = 0
    version_id: str = "null"  # the object's version that references the chunk (when upload_id is "")


@attrs.frozen
class ReplicaReport:
    """A replica found bad by a reader or the scrubber ("missing" or "corrupt"), for repair."""

    chunk_id: bytes
    agent_id: str
    reason: str
    reported: float


@attrs.frozen
class GcEntry:
    """A chunk no committed record references any more; delete it from ``agents`` once ``not_before`` is past."""

    chunk_id: bytes
    agents: tuple[str, ...]
    not_before: float


class MetaStore(abc.ABC):
    """One metadata backend. Instances are opened and closed by their owner (``open``/``aclose``)."""

    # -- lifecycle --
    @abc.abstractmethod
    async def aclose(self) -> None: ...

    # -- users and keys --
    @abc.abstractmethod
    async def create_user(self, user: User) -> None:
        """The user with its keys and policies. Raises UserExists if the id or one of the access keys is taken."""

    @abc.abstractmethod
    async def delete_user(self, user_id: str) -> bool:
        """The user, its keys and its policies; False if there is no such user."""

    @abc.abstractmethod
    async def add_access_key(self, user_id: str, key: AccessKey) -> bool:
        """One more key pair for the user. False if there is no such user; raises UserExists if any user holds
        ``key.access_key`` already."""

    @abc.abstractmethod
    async def set_access_key_status(self, user_id: str, access_key: str, status: str) -> bool:
        """ACTIVE or INACTIVE; False if the user has no such key."""

    @abc.abstractmethod
    async def delete_access_key(self, user_id: str, access_key: str) -> bool:
        """The key stops working at once; False if the user has no such key."""

    @abc.abstractmethod
    async def set_user_keys(self, user_id: str, access_key: str, secret_key: str) -> bool:
        """Replace all the user's key pairs by this one (rotation): the old access keys stop working at once.
        False if there is no such user; raises UserExists if another user holds ``access_key``."""

    @abc.abstractmethod
    async def put_user_policy(self, user_id: str, name: str, document: str) -> bool:
        """Add or replace the user's inline policy ``name``; False if there is no such user."""

    @abc.abstractmethod
    async def delete_user_policy(self, user_id: str, name: str) -> bool:
        """False if the user has no policy of that name."""

    @abc.abstractmethod
    async def user_by_access_key(self, access_key: str) -> User | None:
        """The user holding that key, whatever its status (the caller checks it)."""

    @abc.abstractmethod
    async def user_by_id(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    async def list_users(self) -> list[User]: ...

    # -- buckets --
    @abc.abstractmethod
    async def create_bucket(self, bucket: Bucket) -> None:
        """Create it if no bucket has that name; else raise BucketAlreadyExists with the current owner."""

    @abc.abstractmethod
    async def get_bucket(self, name: str) -> Bucket | None: ...

    @abc.abstractmethod
    async def list_buckets(self, owner_id: str | None = None) -> list[Bucket]:
        """Buckets in name order, all of them or one owner's."""

    @abc.abstractmethod
    async def update_bucket(self, bucket: Bucket) -> None:
        """Replace a bucket's mutable fields (acl, cors, versioning, object_lock, tags, lifecycle). Raises
        NoSuchBucket, also when the bucket of that name is not ``bucket.id`` any more (deleted and created
        again)."""

    @abc.abstractmethod
    async def delete_bucket(self, name: str) -> None:
        """Raises NoSuchBucket, or BucketNotEmpty when it holds objects. Multipart uploads still in progress do not
        keep a bucket (as in S3): they are aborted in the same step, their parts' chunks queued for GC, and the
        records of completed uploads go too."""

    # -- objects and their versions --
    #
    # A key has versions, newest first (``vsort``); its latest is what GET answers. In a bucket whose versioning
    # was never enabled, a key has one version, "null", replaced by each write. With versioning Enabled, a write
    # adds a version with an id of its own and a delete without a version id adds a delete marker; Suspended, a
    # write or such a delete replaces the key's "null" version (wherever it is in the order) with a new latest one
    # (a delete marker for a delete). A delete with a version id removes that version for good. Each of these is
    # one atomic step on the key, and the bucket's versioning state is read in that step.

    @abc.abstractmethod
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
        """Make ``obj`` the latest version of its key, atomically (its ``version_id`` and ``vsort`` are assigned
        here: "null" unless the bucket's versioning is Enabled).

        A version removed for good (the former null version) has its chunks queued for GC (not before ``now +
        gc_delay``), and the upload intent ``intent_id`` is dropped, in the same step. The conditions are checked
        in that step too, against the latest version (a delete marker: no object), PreconditionFailed (nothing
        changes) if one does not hold: ``if_match`` — ETags, one of which the current object must have, or
        ``("*",)``: the key must exist; ``if_none_match`` — ETags the current object must not have (an absent key
        passes), or ``("*",)``: the key must not exist. Raises NoSuchBucket, also when ``bucket_id`` is given and
        the bucket of that name is another one now; and IntentLost (nothing changes) when ``intent_id`` is given
        but that intent is gone or claimed by the garbage collector. Raises ObjectLocked (nothing changes) when the
        version it would remove for good is locked (``ObjectVersion.locked(now, bypass_governance)``).
        """

    @abc.abstractmethod
    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion | None:
        """The latest version of the key (which may be a delete marker), or version ``version_id`` of it."""

    @abc.abstractmethod
    async def delete_object(self, bucket: str, key: str, *, version_id: str | None = None, gc_delay: float = 0.0,
                            bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False,
                            expected: ObjectVersion | None = None) -> Removed:
        """Without ``version_id``: remove the key (unversioned bucket), or put a delete marker owned by
        ``owner_id`` (see above). With it: remove that version or marker for good (the next one becomes the
        latest). ``expected``: only if the key's latest version is still that one (same version id, ETag and
        modification time) — the lifecycle's expiration of what it looked at, never of a newer write. Removed
        chunks go to the GC queue in the same step. Nothing happens (an empty Removed) when there
        is nothing to remove, or when ``bucket_id`` is given and the bucket of that name is another one now.
        Raises ObjectLocked (nothing changes) when the version to remove for good is locked."""

    async def delete_objects(self, bucket: str, entries: Sequence[tuple[str, str | None]], *, gc_delay: float = 0.0,
                             bucket_id: str | None = None, owner_id: str = "", bypass_governance: bool = False
                             ) -> list[Removed]:
        """``delete_object`` for each (key, version id or None) of ``entries``, in order (an entry given twice is
        done twice: a second delete marker, or nothing found); a backend may do them as one step. A locked entry
        is ``Removed(locked=True)`` and the others go on. A removed version may come back without its inline body
        (``inline`` None): a backend need not read bodies it deletes."""
        out = []
        for key, version_id in entries:
            try:
                out.append(await self.delete_object(bucket, key, version_id=version_id, gc_delay=gc_delay,
                                                    bucket_id=bucket_id, owner_id=owner_id,
                                                    bypass_governance=bypass_governance))
            except ObjectLocked:
                out.append(Removed(locked=True))
        return out

    @abc.abstractmethod
    async def update_object(self, obj: ObjectVersion, *, read: ObjectVersion | None = None) -> bool:
        """Replace metadata (acl, tags, retention and legal hold) of version ``obj.version_id`` if it is still the
        one read (same ETag and modification time; with ``read``, also the lock state ``read`` had: a retention
        change decided from what it was never lands over another). False when it is gone or changed."""

    @abc.abstractmethod
    async def list_versions(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", version_id_marker: str = "",
        limit: int = 1000,
    ) -> VersionListing:
        """ListObjectVersions: every version and delete marker, by key then newest first, and common prefixes,
        after the markers (keys above ``key_marker``; with ``version_id_marker``, that key's versions older than
        it first), at most ``limit`` entries, a common prefix skipped with one seek — its cost follows the page."""

    @abc.abstractmethod
    async def scan_objects(
        self, bucket: str, *, start: str = "", inclusive: bool = True, prefix: str = "", limit: int = 1000
    ) -> ListPage:
        """Up to ``limit`` objects whose key starts with ``prefix`` and is >= ``start`` (> if not inclusive), in
        UTF-8 binary key order. ``truncated`` says whether a further key matches."""

    @abc.abstractmethod
    async def list_objects(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", marker: str = "", limit: int = 1000
    ) -> ObjectListing:
        """S3's listing: objects and common prefixes (keys rolled up at the first ``delimiter`` after ``prefix``)
        strictly above ``marker``, at most ``limit`` entries in all. Its cost follows the page: a common prefix is
        skipped with one seek past it (``keys.walk``), never by reading the keys under it."""

    @abc.abstractmethod
    async def count_objects(self, bucket: str) -> int: ...

    @abc.abstractmethod
    async def bucket_usage(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) of the bucket: its current objects, and the bytes of every version it keeps, counted
        from its listing — the cost grows with the bucket (an admin figure, not for the request path)."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Reach the store as a write would (raises MetaUnavailable if it cannot): the node's /ready."""

    # -- multipart --
    @abc.abstractmethod
    async def create_upload(self, upload: Upload, *, bucket_id: str | None = None) -> None:
        """Raises NoSuchBucket (also when ``bucket_id`` is given and the bucket is another one now)."""

    @abc.abstractmethod
    async def get_upload(self, bucket: str, upload_id: str) -> Upload | None: ...

    @abc.abstractmethod
    async def list_uploads(
        self, bucket: str, *, prefix: str = "", key_marker: str = "", upload_id_marker: str = "", limit: int = 1000
    ) -> tuple[list[Upload], bool]:
        """Uploads ordered by (key, initiated, upload_id) after the markers, and whether more follow."""

    @abc.abstractmethod
    async def list_upload_entries(
        self, bucket: str, *, prefix: str = "", delimiter: str = "", key_marker: str = "", upload_id_marker: str = "",
        limit: int = 1000,
    ) -> UploadListing:
        """ListMultipartUploads: uploads and common prefixes after the markers (keys above ``key_marker``, or with
        ``upload_id_marker`` the marker's key with upload ids above it), at most ``limit`` entries, a common
        prefix skipped with one seek."""

    @abc.abstractmethod
    async def put_part(self, part: Part, *, gc_delay: float = 0.0, intent_id: bytes | None = None) -> Part | None:
        """Store or replace a part; a replaced part's chunks go to the GC queue. Raises NoSuchUpload.

        The upload intent ``intent_id`` under which the part's chunks were written is dropped in the same step, as
        in ``put_object`` (else a crash between the two would leave a stale intent whose chunks a part references),
        and IntentLost is raised, changing nothing, if it is gone or claimed.
        """

    @abc.abstractmethod
    async def list_parts(
        self, upload_id: str, *, marker: int = 0, limit: int = 1000
    ) -> tuple[list[Part], bool]: ...

    @abc.abstractmethod
    async def complete_upload(
        self, upload_id: str, obj: ObjectVersion, used_parts: Sequence[int], *, gc_delay: float = 0.0
    ) -> Committed:
        """Commit ``obj`` (whose manifest is made of the used parts' chunks) as in ``put_object``, drop the upload
        and its parts — the chunks of parts not used go to the GC queue — and record what it answered
        (``completed_upload``). Raises NoSuchUpload."""

    @abc.abstractmethod
    async def completed_upload(self, bucket: str, upload_id: str) -> CompletedUpload | None:
        """The record of an upload completed in ``bucket`` (and not yet pruned), or None."""

    @abc.abstractmethod
    async def prune_completed(self, older_than: float) -> int:
        """Forget the records of uploads completed before ``older_than``; returns how many."""

    @abc.abstractmethod
    async def abort_upload(self, upload_id: str, *, gc_delay: float = 0.0) -> None:
        """Drop the upload and its parts; their chunks go to the GC queue. Raises NoSuchUpload."""

    # -- upload intents --
    @abc.abstractmethod
    async def add_intent(self, intent: Intent) -> None: ...

    @abc.abstractmethod
    async def renew_intent(self, intent_id: bytes, now: float) -> bool:
        """Bump the intent's heartbeat and set ``renewed = now``; False (nothing changed) if it is gone or claimed:
        the upload must then stop, its chunks are being collected."""

    @abc.abstractmethod
    async def claim_intent(self, intent_id: bytes, heartbeat: int) -> bool:
        """For the garbage collector: mark the intent claimed if its heartbeat is still ``heartbeat`` (the upload
        did not renew it meanwhile), and set its ``renewed`` to -1 so that it stays a candidate whatever the clock
        says. True if it is claimed now (or was already: a collection that did not finish); False if it was
        renewed or is gone."""

    @abc.abstractmethod
    async def drop_intent(self, intent_id: bytes) -> None: ...

    @abc.abstractmethod
    async def stale_intents(self, older_than: float, limit: int = 100,
                            after: tuple[float, bytes] | None = None) -> list[Intent]:
        """Intents renewed (or created) before ``older_than`` — claimed ones, whose ``renewed`` is -1, first —
        ordered by (renewed, intent_id), starting after the ``(renewed, intent_id)`` cursor ``after``."""

    # -- GC queue --
    @abc.abstractmethod
    async def enqueue_gc(self, entries: Sequence[GcEntry]) -> None: ...

    @abc.abstractmethod
    async def due_gc(self, now: float, limit: int = 100) -> list[GcEntry]: ...

    @abc.abstractmethod
    async def update_gc(self, entry: GcEntry) -> None:
        """Replace an entry's agents and ``not_before`` (the agents still to delete from, and when to try again);
        with no agents left, the entry is done."""

    @abc.abstractmethod
    async def done_gc(self, chunk_ids: Sequence[bytes]) -> None: ...

    # -- the chunk index: who references each chunk, and where its replicas are --
    # Every method that commits or drops a manifest keeps it in the same step: a chunk is in the index exactly
    # while a committed object or a stored part references it.

    @abc.abstractmethod
    async def chunk_owner(self, chunk_id: bytes) -> ChunkOwner | None: ...

    @abc.abstractmethod
    async def chunks_on_agent(self, agent_id: str, *, after: bytes | None = None, limit: int = 1000
                              ) -> list[ChunkOwner]:
        """The indexed chunks with a replica on ``agent_id``, by chunk id, after ``after``."""

    @abc.abstractmethod
    async def count_chunks_on_agent(self, agent_id: str) -> int: ...

    @abc.abstractmethod
    async def under_replicated(self, replicas: int, *, after: bytes | None = None, limit: int = 1000
                               ) -> list[ChunkOwner]:
        """Indexed chunks with fewer than ``replicas`` agents, by chunk id, after ``after``."""

    @abc.abstractmethod
    async def referenced(self, chunk_ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``chunk_ids`` a committed object or stored part references."""

    @abc.abstractmethod
    async def set_chunk_agents(self, chunk_id: bytes, expected: Sequence[str], agents: Sequence[str]) -> bool:
        """Repair's commit: the chunk's replicas are now ``agents`` — in the manifest that references it and in the
        index, in one step — if they still are ``expected``. False (nothing changed) if the chunk is no longer
        referenced or its agents changed meanwhile."""

    # -- replica reports --

    @abc.abstractmethod
    async def report_replica(self, report: ReplicaReport) -> None: ...

    @abc.abstractmethod
    async def replica_reports(self, limit: int = 100) -> list[ReplicaReport]: ...

    @abc.abstractmethod
    async def drop_replica_report(self, chunk_id: bytes, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def indexed_agents(self) -> set[str]:
        """Every agent some indexed chunk has a replica on (repair notices agents that are gone from these)."""

    async def maintain(self) -> int:
        """The backend's own upkeep, run by the garbage collector (one node of a cluster) once per pass: for
        Cassandra, finishing what changes interrupted by a dead node left undone and splitting listing shards
        that grew too big (see ``cassandra.py``). Returns how much it did. SQLite's steps are transactions and
        its index needs no splitting: nothing to do."""
        return 0

    # -- small named state of background workers (a lifecycle pass's cursor) --

    @abc.abstractmethod
    async def get_state(self, name: str) -> str | None: ...

    @abc.abstractmethod
    async def set_state(self, name: str, value: str | None) -> None:
        """Set (None: remove) a value read back by ``get_state`` from any node."""

    @abc.abstractmethod
    async def open_intents(self, intent_ids: Sequence[bytes]) -> set[bytes]:
        """Which of these upload intents exist (uploads in progress, or crashed and not yet collected)."""
