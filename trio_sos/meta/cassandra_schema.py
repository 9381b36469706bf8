"""The Cassandra schema of the metadata (``trio_sos/meta/cassandra.py``), one CQL statement per entry.

Every partition stays bounded whatever a bucket holds (the reasoning, and the bound of each table, is in
``docs/metadata.md``):

- an object's record is a partition of its own (bucket, key), so a GET is one partition read;
- a bucket's key index (``listing``) is spread over *shards*, key ranges listed in ``shards``; a page reads the
  shard that holds its marker and the ones after it, in key order;
- per-agent and per-replica-count chunk lists are split 256 ways by the first byte of the chunk id (random), which
  is also their order, so a scan walks the 256 slots in order;
- the GC queue is split by hour of ``not_before``, intents by a slot of their id.

``SCHEMA_VERSION`` is recorded in ``meta_info``; a migration appends statements (never edits released ones).
"""

from __future__ import annotations

SCHEMA_VERSION = 7

# columns every mutable record (an object, a part) carries for the commit protocol of cassandra.py:
#   seq      incremented by every change (the lightweight transaction compares it)
#   ts       the change's write timestamp (µs) for the derived rows: listing entry, chunk index
#   op       the change's id; pending: what the change still has to do outside the partition (JSON); done: the
#            seq whose follow-ups are all written
_RECORD = "seq bigint, ts bigint, op text, pending text, done bigint"

TABLES = [
    "CREATE TABLE IF NOT EXISTS meta_info (name text PRIMARY KEY, value text)",
    # a user with its key pairs (access key -> JSON [secret, status, created]) and inline policies (name -> JSON);
    # access_key and secret_key are schema 6's one key pair, moved into ``keys`` by the upgrade
    """CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, display_name text, access_key text, secret_key text,
        email text, keys map<text, text>, policies map<text, text>, created double)""",
    "CREATE TABLE IF NOT EXISTS users_by_key (access_key text PRIMARY KEY, id text)",
    """CREATE TABLE IF NOT EXISTS buckets (name text PRIMARY KEY, id text, owner_id text, created double,
        region text, acl text, cors text, state text, versioning text, object_lock text, tags text,
        lifecycle text, policy text, public_access text, ownership text, encryption text)""",
    # the key ranges of a bucket's listing: shard ``shard`` holds the keys from ``lo`` up to the next row's lo;
    # while it is being split at ``split_at``, its keys from there on are copied to shard ``split_to``
    """CREATE TABLE IF NOT EXISTS shards (bucket text, lo text, shard text, split_at text, split_to text,
        PRIMARY KEY (bucket, lo))""",
    # about how many keys each shard holds (counted by the changes; a trigger for splits, not an exact figure)
    "CREATE TABLE IF NOT EXISTS shard_rows (bucket text, shard text, n counter, PRIMARY KEY ((bucket, shard)))",
    # a key's record: its latest version (``marker``: a delete marker), the serialization point of every change
    # of the key; ``null_vsort``: where its "null" version is, if it has one
    f"""CREATE TABLE IF NOT EXISTS objects (bucket text, key text, version_id text, size bigint, etag text,
        last_modified double, owner_id text, manifest text, content_type text, headers text, user_meta text,
        checksums text, acl text, tags text, parts text, inline blob, deleted boolean, {_RECORD},
        vsort bigint, marker boolean, null_vsort bigint, lock text, PRIMARY KEY ((bucket, key)))""",
    # every version of every key (the latest too), one partition each: GET ?versionId= is one partition read
    """CREATE TABLE IF NOT EXISTS versions (bucket text, key text, vsort bigint, version_id text, size bigint,
        etag text, last_modified double, owner_id text, manifest text, content_type text, headers text,
        user_meta text, checksums text, acl text, tags text, parts text, inline blob, marker boolean, lock text,
        PRIMARY KEY ((bucket, key, vsort)))""",
    # ListObjectVersions: every version, by key then newest first, in the listing's key-range shards
    """CREATE TABLE IF NOT EXISTS version_listing (bucket text, shard text, key text, vsort bigint,
        version_id text, marker boolean, size bigint, etag text, last_modified double, owner_id text,
        PRIMARY KEY ((bucket, shard), key, vsort))""",
    """CREATE TABLE IF NOT EXISTS listing (bucket text, shard text, key text, version_id text, size bigint,
        etag text, last_modified double, owner_id text, PRIMARY KEY ((bucket, shard), key))""",
    # changes whose follow-ups may not be written yet (a node died in between): recover() finishes them
    """CREATE TABLE IF NOT EXISTS pending_ops (slot int, op text, created double, tbl text, bucket text, key text,
        upload_id text, number int, PRIMARY KEY (slot, op))""",
    """CREATE TABLE IF NOT EXISTS uploads (upload_id text PRIMARY KEY, bucket text, key text, initiated double,
        owner_id text, content_type text, headers text, user_meta text, acl text, tags text,
        checksum_algorithm text, state text)""",
    # a bucket's uploads in progress, in key order, in the same key-range shards as its listing (split with it)
    """CREATE TABLE IF NOT EXISTS uploads_by_key (bucket text, shard text, key text, initiated double,
        upload_id text, owner_id text, content_type text, headers text, user_meta text, acl text, tags text,
        checksum_algorithm text, PRIMARY KEY ((bucket, shard), key, initiated, upload_id))""",
    f"""CREATE TABLE IF NOT EXISTS parts (upload_id text, number int, size bigint, etag text, last_modified double,
        manifest text, checksums text, deleted boolean, {_RECORD}, PRIMARY KEY ((upload_id, number)))""",
    "CREATE TABLE IF NOT EXISTS part_numbers (upload_id text, number int, PRIMARY KEY (upload_id, number))",
    """CREATE TABLE IF NOT EXISTS completed (upload_id text PRIMARY KEY, bucket text, key text, etag text,
        completed double, checksums text, checksum_algorithm text, version_id text)""",
    # completions by hour (tb) and a slot of the upload id: pruned oldest first
    """CREATE TABLE IF NOT EXISTS completed_by_time (tb bigint, slot int, completed double, upload_id text,
        PRIMARY KEY ((tb, slot), completed, upload_id))""",
    "CREATE TABLE IF NOT EXISTS completed_tbs (one int, tb bigint, PRIMARY KEY (one, tb))",
    "CREATE TABLE IF NOT EXISTS completed_by_bucket (bucket text, upload_id text, PRIMARY KEY (bucket, upload_id))",
    """CREATE TABLE IF NOT EXISTS intents (intent_id blob PRIMARY KEY, created double, agents text, bucket text,
        key text, renewed double, heartbeat bigint, claimed boolean, committing boolean)""",
    """CREATE TABLE IF NOT EXISTS intents_by_renewed (slot int, renewed double, intent_id blob,
        PRIMARY KEY (slot, renewed, intent_id))""",
    # the GC queue by minute of not_before (tb) and a slot of the chunk id; gc_tbs lists the minutes with entries
    "CREATE TABLE IF NOT EXISTS gc (chunk_id blob PRIMARY KEY, agents text, not_before double, tb bigint)",
    """CREATE TABLE IF NOT EXISTS gc_by_time (tb bigint, slot int, not_before double, chunk_id blob, agents text,
        PRIMARY KEY ((tb, slot), not_before, chunk_id))""",
    "CREATE TABLE IF NOT EXISTS gc_tbs (one int, tb bigint, PRIMARY KEY (one, tb))",
    """CREATE TABLE IF NOT EXISTS chunk_index (chunk_id blob PRIMARY KEY, bucket text, key text, upload_id text,
        part int, size bigint, crc bigint, agents text, version_id text)""",
    """CREATE TABLE IF NOT EXISTS chunks_by_agent (agent_id text, slot int, chunk_id blob,
        PRIMARY KEY ((agent_id, slot), chunk_id))""",
    # only chunks with fewer than TRACKED_REPLICAS (3) replicas: the ones repair looks for
    """CREATE TABLE IF NOT EXISTS chunks_by_count (replicas int, slot int, chunk_id blob,
        PRIMARY KEY ((replicas, slot), chunk_id))""",
    """CREATE TABLE IF NOT EXISTS replica_reports (slot int, chunk_id blob, agent_id text, reason text,
        reported double, PRIMARY KEY (slot, chunk_id, agent_id))""",
]

# what a keyspace of an older schema version gets (the tables it lacks are created from TABLES): UPGRADES[n] takes
# it from version n to n + 1. Each statement may have been applied already by another node: "already exists" is
# not an error.
UPGRADES: dict[int, list[str]] = {
    1: [
        "ALTER TABLE buckets ADD versioning text",
        "ALTER TABLE objects ADD (vsort bigint, marker boolean, null_vsort bigint)",
        "ALTER TABLE completed ADD version_id text",
        "ALTER TABLE chunk_index ADD version_id text",
    ],
    2: [  # object lock: a version's retention and legal hold, a bucket's configuration
        "ALTER TABLE objects ADD lock text",
        "ALTER TABLE versions ADD lock text",
        "ALTER TABLE buckets ADD object_lock text",
    ],
    3: ["ALTER TABLE buckets ADD tags text"],  # a bucket's own tags
    4: ["ALTER TABLE buckets ADD lifecycle text"],  # lifecycle rules (workers' state is kept in meta_info)
    5: ["ALTER TABLE buckets ADD (policy text, public_access text, ownership text)"],  # who may do what
    # users' key pairs and inline policies (the one key pair of schema 6 is moved by CassandraMetaStore)
    6: ["ALTER TABLE users ADD (keys map<text, text>, policies map<text, text>, created double)",
        "ALTER TABLE buckets ADD encryption text"],  # and a bucket's default encryption
}
