"""Node configuration: defaults, then the TOML file, then ``TRIO_SOS_*`` environment variables, then the command
line. Every bad setting is one ``ConfigError`` line naming the setting."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs


class ConfigError(Exception):
    pass


@attrs.frozen
class UserConfig:
    access_key: str
    secret_key: str = attrs.field(repr=False)
    id: str
    display_name: str
    email: str = ""


def _size(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        unit = units.get(text[-1:], 1)
        number = text[:-1] if text[-1:] in units else text
        if number.isdigit():
            return int(number) * unit
    raise ConfigError(f"setting {name}: {value!r} is not a size (e.g. 8388608, 8M, 1G)")


def _float(value: Any, name: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: {value!r} is not a number") from None
    if result < 0:
        raise ConfigError(f"setting {name}: must not be negative")
    return result


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"setting {name}: {value!r} is not true or false")


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"setting {name}: {value!r} is not a whole number")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise ConfigError(f"setting {name}: {value!r} is not a whole number")
    if result < 0:
        raise ConfigError(f"setting {name}: must not be negative")
    return result


def _listen(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"setting {name}: {value!r} is not HOST:PORT")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConfigError(f"setting {name}: {value!r} is not HOST:PORT")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"setting {name}: {value!r} is not a string")
    return value


def _opt_str(value: Any, name: str) -> str | None:
    return None if value in (None, "") else _str(value, name)


def _optional_listen(value: Any, name: str) -> str | None:
    """HOST:PORT, or ``off`` (or empty): no such listener."""
    if value in (None, "") or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    return _listen(value, name)


def _names(value: Any, name: str) -> tuple[str, ...]:
    """A list of names: a TOML array of strings, or a comma-separated string (environment variables)."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return tuple(item for item in items if item)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"setting {name}: {value!r} is not a list of names")


# setting name -> (converter, default)
SETTINGS: dict[str, tuple[Any, Any]] = {
    "listen": (_listen, "127.0.0.1:9000"),
    "data_dir": (lambda v, n: Path(_str(v, n) if not isinstance(v, Path) else str(v)), Path("trio_sos-data")),
    "region": (_str, "us-east-1"),
    "base_domain": (_opt_str, None),
    # the SQLite metadata file (default DATA_DIR/meta.sqlite3); the nodes of one machine may share one
    "metadata": (_opt_str, None),
    # Cassandra metadata (a cluster of nodes): contact points HOST[:PORT],...; unset = the SQLite file above
    "cassandra": (_opt_str, None),
    "cassandra_keyspace": (_str, "trio_sos"),
    # CQL replication map used when the keyspace is created (an existing keyspace is left as it is)
    "cassandra_replication": (_str, "{'class': 'SimpleStrategy', 'replication_factor': 3}"),
    "cassandra_local_dc": (_opt_str, None),
    "cassandra_consistency": (_str, "QUORUM"),  # QUORUM or LOCAL_QUORUM (with cassandra_local_dc)
    "cassandra_username": (_opt_str, None),
    "cassandra_password": (_opt_str, None),
    "cassandra_tls_ca": (_opt_str, None),  # CA file: connect to Cassandra over TLS, verifying its certificate
    "chunk_size": (_size, 8 << 20),
    # bodies up to this size live in the metadata record (durable with it), not on the agents; 0: never
    "inline_max": (_size, 16 << 10),
    "gc_delay": (_float, 300.0),
    "gc_interval": (_float, 10.0),
    "intent_grace": (_float, 3600.0),
    "shutdown_grace": (_float, 10.0),
    "agent_max_chunk": (_size, 64 << 20),
    # the local agent writes chunks of a MiB and more with O_DIRECT (false: through the page cache)
    "agent_direct_writes": (_bool, True),
    # the local agent reads chunks mostly not in the page cache with O_DIRECT (false: through the page cache)
    "agent_direct_reads": (_bool, True),
    "tls_cert": (_opt_str, None),
    "tls_key": (_opt_str, None),
    "tls_listen": (lambda v, n: None if v in (None, "") else _listen(v, n), None),
    "http_idle_timeout": (_float, 75.0),
    "http_head_timeout": (_float, 30.0),
    "http_body_timeout": (_float, 60.0),
    "agent_wait": (_float, 5.0),
    # plain-HTTP GETs move chunk bytes agent socket -> client socket in the kernel (splice), not through Python
    "zero_copy_get": (_bool, True),
    "workers": (_int, 0),  # node processes sharing the listening socket; 0: one per core
    # cluster mode (zk set): no local agent; the agents registered in ZooKeeper under /trio_sos/<cluster>
    "zk": (_opt_str, None),
    "cluster": (_str, "default"),
    "zone": (_str, ""),
    "zk_session_timeout": (_float, 10.0),
    "replicas": (_int, 0),  # 0: 3 in a cluster (fewer while fewer agents accept writes), 1 embedded
    "write_quorum": (_int, 0),  # 0: a majority of the replicas
    "read_hedge_ms": (_float, 50.0),
    "replica_lag_timeout": (_float, 5.0),
    # background work (one node of a cluster runs each: a ZooKeeper lock)
    "repair_interval": (_float, 10.0),
    "repair_rate": (_size, 64 << 20),  # bytes copied per second, at most
    "dead_grace": (_float, 300.0),  # an agent gone this long has its chunks re-replicated
    "scrub_rate": (_size, 16 << 20),  # bytes verified per second, at most; 0 turns scrubbing off
    "scrub_interval": (_float, 86400.0),
    "orphan_grace": (_float, 3600.0),
    "lifecycle_interval": (_float, 3600.0),  # seconds between passes of the lifecycle worker
    "lifecycle_day_seconds": (_float, 0.0),  # > 0: a lifecycle "day" lasts this many seconds (tests); 0: real days
    # operating the node (trio_sos/admin): the admin listener (WebSocket admin API, dashboard, /metrics, /health,
    # /ready; never S3), the users it lets in, an optional bearer token for /metrics, the slow-request threshold
    "admin_listen": (_optional_listen, "127.0.0.1:9001"),
    "admin_users": (_names, ("admin",)),
    "metrics_token": (_opt_str, None),
    "slow_request_ms": (_float, 1000.0),
    # server-side encryption (docs/encryption.md): the SSE-S3 master key file (default: DATA_DIR/sse-master.key,
    # made on the first start, with embedded metadata; a cluster must name one file all its nodes share), and
    # whether SSE-C keys may come over plain HTTP (AWS refuses them; a TLS-terminating proxy in front may need it)
    "sse_master_key_file": (_opt_str, None),
    "sse_c_over_http": (_bool, False),
}


@attrs.frozen
class Config:
    listen: str = "127.0.0.1:9000"
    data_dir: Path = Path("trio_sos-data")
    region: str = "us-east-1"
    base_domain: str | None = None
    metadata: str | None = None
    cassandra: str | None = None
    cassandra_keyspace: str = "trio_sos"
    cassandra_replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    cassandra_local_dc: str | None = None
    cassandra_consistency: str = "QUORUM"
    cassandra_username: str | None = None
    cassandra_password: str | None = None
    cassandra_tls_ca: str | None = None
    chunk_size: int = 8 << 20
    inline_max: int = 16 << 10
    gc_delay: float = 300.0
    gc_interval: float = 10.0
    intent_grace: float = 3600.0
    shutdown_grace: float = 10.0
    agent_max_chunk: int = 64 << 20
    agent_direct_writes: bool = True
    agent_direct_reads: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_listen: str | None = None
    http_idle_timeout: float = 75.0
    http_head_timeout: float = 30.0
    http_body_timeout: float = 60.0
    agent_wait: float = 5.0
    zero_copy_get: bool = True
    workers: int = 0
    zk: str | None = None
    cluster: str = "default"
    zone: str = ""
    zk_session_timeout: float = 10.0
    replicas: int = 0
    write_quorum: int = 0
    read_hedge_ms: float = 50.0
    replica_lag_timeout: float = 5.0
    repair_interval: float = 10.0
    repair_rate: int = 64 << 20
    dead_grace: float = 300.0
    scrub_rate: int = 16 << 20
    scrub_interval: float = 86400.0
    orphan_grace: float = 3600.0
    lifecycle_interval: float = 3600.0
    lifecycle_day_seconds: float = 0.0
    admin_listen: str | None = "127.0.0.1:9001"
    admin_users: tuple[str, ...] = ("admin",)
    metrics_token: str | None = None
    sse_master_key_file: str | None = None
    sse_c_over_http: bool = False
    slow_request_ms: float = 1000.0
    users: tuple[UserConfig, ...] = ()

    @property
    def effective_workers(self) -> int:
        if self.workers:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    @property
    def effective_replicas(self) -> int:
        return self.replicas or (3 if self.zk else 1)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _users(value: Any) -> tuple[UserConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError("setting users: expected [[users]] tables")
    out = []
    for i, table in enumerate(value):
        if not isinstance(table, dict):
            raise ConfigError(f"setting users[{i}]: expected a table")
        unknown = set(table) - {"access_key", "secret_key", "id", "display_name", "email"}
        if unknown:
            raise ConfigError(f"setting users[{i}].{sorted(unknown)[0]}: unknown setting")
        for field in ("access_key", "secret_key"):
            if not isinstance(table.get(field), str) or not table[field]:
                raise ConfigError(f"setting users[{i}].{field}: required, a non-empty string")
        if len(table["secret_key"]) < 8:
            raise ConfigError(f"setting users[{i}].secret_key: must be at least 8 characters")
        user_id = table.get("id") or table["access_key"]
        out.append(UserConfig(table["access_key"], table["secret_key"], _str(user_id, f"users[{i}].id"),
                              _str(table.get("display_name", user_id), f"users[{i}].display_name"),
                              _str(table.get("email", ""), f"users[{i}].email")))
    keys = [u.access_key for u in out]
    if len(set(keys)) != len(keys):
        raise ConfigError("setting users: an access_key appears twice")
    return tuple(out)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    raw: dict[str, Any] = {}
    users: tuple[UserConfig, ...] = ()
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for name, value in doc.items():
            if name == "users":
                users = _users(value)
            elif name in SETTINGS:
                raw[name] = value
            else:
                raise ConfigError(f"setting {name}: unknown setting (in {path})")
    env = os.environ if env is None else env
    for name in SETTINGS:
        var = "TRIO_SOS_" + name.upper()
        if var in env:
            raw[name] = env[var]
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = value
    values = {name: conv(raw[name], name) if name in raw else default
              for name, (conv, default) in SETTINGS.items()}
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("setting tls_cert: tls_cert and tls_key go together")
    if values["tls_listen"] and not values["tls_cert"]:
        raise ConfigError("setting tls_listen: needs tls_cert and tls_key")
    if values["cluster"] in ("", ".", "..") or "/" in values["cluster"]:
        raise ConfigError("setting cluster: a name without '/'")
    if values["write_quorum"] and values["replicas"] and values["write_quorum"] > values["replicas"]:
        raise ConfigError("setting write_quorum: more than replicas")
    if values["chunk_size"] < 64 * 1024 or values["chunk_size"] > values["agent_max_chunk"]:
        raise ConfigError("setting chunk_size: must be between 64K and agent_max_chunk")
    if values["inline_max"] > 1 << 20:
        raise ConfigError("setting inline_max: must be at most 1M (bodies above it go to the agents)")
    if values["cassandra_consistency"] not in ("QUORUM", "LOCAL_QUORUM"):
        raise ConfigError("setting cassandra_consistency: QUORUM or LOCAL_QUORUM (a weaker level loses "
                          "read-after-write)")
    if values["cassandra_consistency"] == "LOCAL_QUORUM" and not values["cassandra_local_dc"]:
        raise ConfigError("setting cassandra_consistency: LOCAL_QUORUM needs cassandra_local_dc")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", values["cassandra_keyspace"]):
        raise ConfigError("setting cassandra_keyspace: a letter, then letters, digits or _ (at most 48)")
    if values["cassandra"]:
        from .meta.cassandra import parse_hosts

        try:
            parse_hosts(values["cassandra"])
        except ValueError as exc:
            raise ConfigError(f"setting cassandra: {exc}") from None
    return Config(**values, users=users)
