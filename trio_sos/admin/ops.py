"""The admin protocol's operations (``docs/admin-protocol.md``): one request in, one reply out."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from ..background import WORKERS
from .. import __version__
from ..meta.store import ACTIVE, AccessKey, MetaUnavailable, User, UserExists
from .control import OpError
from .events import TOPICS, Subscriber

log = logging.getLogger("trio_sos.admin")

SECRET_SETTINGS = ("cassandra_password", "metrics_token")
MAX_ID = 256


def _error(id_: Any, code: str, message: str) -> dict:
    return {"id": id_, "ok": False, "error": {"code": code, "message": message}}


def _str_arg(args: dict, name: str, *, required: bool = True, max_len: int = MAX_ID) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise OpError("bad_args", f"argument {name!r}: a non-empty string of at most {max_len} characters")
    return value


def _agent_arg(args: dict) -> str:
    agent = _str_arg(args, "agent")
    assert agent is not None
    agent = agent.lower()
    if len(agent) != 32 or any(c not in "0123456789abcdef" for c in agent):
        raise OpError("bad_args", f"argument 'agent': {agent!r} is not an agent id (32 hex digits)")
    return agent


class AdminOps:
    def __init__(self, node: Any, control: Any, monitor: Any) -> None:
        self.node = node
        self.control = control
        self.monitor = monitor
        self.started = time.time()
        self.table: dict[str, Callable[[dict, Subscriber], Awaitable[Any]]] = {
            "ping": self.ping, "version": self.version, "config": self.config, "status": self.status,
            "agents.list": self.agents_list, "agents.drain": self.agents_drain,
            "agents.undrain": self.agents_undrain, "agents.remove": self.agents_remove,
            "users.list": self.users_list, "users.create": self.users_create, "users.delete": self.users_delete,
            "users.rotate": self.users_rotate,
            "buckets.list": self.buckets_list, "buckets.usage": self.buckets_usage,
            "subscribe": self.subscribe, "unsubscribe": self.unsubscribe,
        }
        for worker in WORKERS:
            for action in ("start", "pause", "resume", "cancel", "status"):
                self.table[f"{worker}.{action}"] = self._worker_op(worker, action)

    async def handle(self, text: str | bytes, sub: Subscriber) -> dict:
        """One message in, its reply out (never raises for what a client sent)."""
        if not isinstance(text, str):
            return _error(None, "bad_message", "messages are JSON text frames, not binary")
        try:
            msg = json.loads(text)
        except ValueError as exc:
            return _error(None, "bad_message", f"not JSON: {exc}")
        except RecursionError:
            return _error(None, "bad_message", "not JSON this node reads: nested too deeply")
        if not isinstance(msg, dict):
            return _error(None, "bad_message", "a message is a JSON object")
        id_ = msg.get("id")
        if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, (str, int, float))
                                or (isinstance(id_, str) and len(id_) > MAX_ID)):
            return _error(None, "bad_message", "id: a string (at most 256 characters) or a number")
        op = msg.get("op")
        if not isinstance(op, str):
            return _error(id_, "bad_message", "op: the operation's name, a string")
        fn = self.table.get(op)
        if fn is None:
            return _error(id_, "unknown_op", f"no operation {op[:64]!r}")
        args = msg.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return _error(id_, "bad_args", "args: a JSON object")
        try:
            result = await fn(args, sub)
        except OpError as exc:
            return _error(id_, exc.code, exc.message)
        except MetaUnavailable as exc:
            return _error(id_, "unavailable", f"the metadata store is unavailable: {exc}")
        except Exception as exc:
            from kazoo.exceptions import KazooException

            if isinstance(exc, KazooException):
                return _error(id_, "unavailable", f"ZooKeeper did not answer: {exc!r}")
            log.exception("admin operation %s failed", op)
            return _error(id_, "internal", "internal error (the node's log has the details)")
        return {"id": id_, "ok": True, "result": result}

    # -- the node --

    async def ping(self, args: dict, sub: Subscriber) -> dict:
        return {"pong": True, "at": time.time()}

    async def version(self, args: dict, sub: Subscriber) -> dict:
        return {"version": __version__, "python": platform.python_version(), "node": self.node_view()["id"]}

    async def config(self, args: dict, sub: Subscriber) -> dict:
        out: dict[str, Any] = {}
        for name, value in attrs.asdict(self.node.config, recurse=False).items():
            if name == "users":
                out[name] = [{"id": u.id, "display_name": u.display_name, "access_key": u.access_key,
                              "secret_key": "***"} for u in value]
            elif name in SECRET_SETTINGS and value:
                out[name] = "***"
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out

    def node_view(self) -> dict:
        node = self.node
        return {"id": node.node_id or "embedded", "role": node.role, "version": __version__,
                "mode": "cluster" if node.zk is not None else "embedded", "cluster": node.config.cluster,
                "zone": node.config.zone, "endpoint": node.endpoint, "admin": node.admin_endpoint,
                "uptime_s": round(time.time() - self.started, 1),
                "leads": sorted(name for name, lead in node.leaderships.items() if lead.leading)
                if node.zk is not None else self.control.names(),
                "workers": len(node.workers.procs) if node.workers is not None else None,
                "traffic": self.monitor.traffic or None}

    async def status(self, args: dict, sub: Subscriber) -> dict:
        node = self.node
        me = self.node_view()
        if node.zk is not None:
            nodes = sorted(self.monitor.nodes.values(), key=lambda n: n["id"]) or [
                {"id": me["id"], "endpoint": me["endpoint"], "admin": me["admin"], "version": __version__,
                 "zone": me["zone"], "self": True}]
            leaders = dict(self.monitor.leaders)
        else:
            nodes = [{"id": me["id"], "endpoint": me["endpoint"], "admin": me["admin"], "version": __version__,
                      "zone": me["zone"], "self": True}]
            leaders = {name: me["id"] for name in self.control.names()}
        return {"node": me, "nodes": nodes, "agents": self._agents(),
                "workers": {name: self.control.progress(name) for name in self.control.names()},
                "leaders": leaders, "under_replicated": self.monitor.under_replicated}

    def _agents(self) -> list[dict]:
        fleet = self.node.fleet
        ids = sorted(set(fleet.agents) | fleet.removed)
        return [self.monitor.agent_view(a) for a in ids]

    # -- agents --

    async def agents_list(self, args: dict, sub: Subscriber) -> dict:
        return {"agents": self._agents()}

    async def agents_drain(self, args: dict, sub: Subscriber) -> dict:
        return await self.control.drain(_agent_arg(args))

    async def agents_undrain(self, args: dict, sub: Subscriber) -> dict:
        return await self.control.undrain(_agent_arg(args))

    async def agents_remove(self, args: dict, sub: Subscriber) -> dict:
        return await self.control.remove(_agent_arg(args))

    # -- background workers --

    def _worker_op(self, worker: str, action: str) -> Callable[[dict, Subscriber], Awaitable[Any]]:
        async def op(args: dict, sub: Subscriber) -> dict:
            if worker not in self.control.names():
                raise OpError("bad_args", f"{worker} does not run on this node (turned off by its settings)")
            return await self.control.command(worker, action)

        return op

    # -- users --

    async def users_list(self, args: dict, sub: Subscriber) -> dict:
        admins = set(self.node.config.admin_users)
        users = [{"id": u.id, "display_name": u.display_name, "email": u.email, "access_key": u.access_key,
                  "keys": [{"access_key": u.access_key, "status": ACTIVE}], "policies": [],
                  "admin": u.id in admins, "source": "config"} for u in self.node.config.users]
        users += [{"id": u.id, "display_name": u.display_name, "email": u.email,
                   "access_key": u.keys[0].access_key if u.keys else "",
                   "keys": [{"access_key": k.access_key, "status": k.status, "created": k.created} for k in u.keys],
                   "policies": [n for n, _ in u.policies],
                   "admin": u.id in admins, "source": "metadata"} for u in await self.node.meta.list_users()]
        return {"users": users}

    async def users_create(self, args: dict, sub: Subscriber) -> dict:
        from ..node import new_access_key, new_secret_key

        user_id = _str_arg(args, "id", max_len=64)
        assert user_id is not None
        display = _str_arg(args, "display_name", required=False, max_len=128) or user_id
        email = _str_arg(args, "email", required=False, max_len=256) or ""
        access = _str_arg(args, "access_key", required=False, max_len=128) or new_access_key()
        secret = _str_arg(args, "secret_key", required=False, max_len=128) or new_secret_key()
        if len(secret) < 8:
            raise OpError("bad_args", "argument 'secret_key': at least 8 characters")
        if any(u.id == user_id or u.access_key == access for u in self.node.config.users):
            raise OpError("user_exists", f"a user with id {user_id!r} or that access key exists (config file)")
        try:
            await self.node.meta.create_user(User(user_id, display, email, (AccessKey(access, secret, ACTIVE,
                                                                                      time.time()),),
                                                  created=time.time()))
        except UserExists:
            raise OpError("user_exists", f"a user with id {user_id!r} or that access key exists") from None
        return {"id": user_id, "display_name": display, "email": email, "access_key": access,
                "secret_key": secret, "admin": user_id in self.node.config.admin_users}

    async def users_delete(self, args: dict, sub: Subscriber) -> dict:
        user_id = _str_arg(args, "id", max_len=64)
        assert user_id is not None
        if any(u.id == user_id for u in self.node.config.users):
            raise OpError("bad_args", f"user {user_id!r} comes from the config file: remove it there")
        if not await self.node.meta.delete_user(user_id):
            raise OpError("no_such_user", f"no user {user_id!r}")
        return {"id": user_id, "deleted": True}

    async def users_rotate(self, args: dict, sub: Subscriber) -> dict:
        from ..node import new_access_key, new_secret_key

        user_id = _str_arg(args, "id", max_len=64)
        assert user_id is not None
        access = _str_arg(args, "access_key", required=False, max_len=128) or new_access_key()
        secret = _str_arg(args, "secret_key", required=False, max_len=128) or new_secret_key()
        if len(secret) < 8:
            raise OpError("bad_args", "argument 'secret_key': at least 8 characters")
        if any(u.id == user_id for u in self.node.config.users):
            raise OpError("bad_args", f"user {user_id!r} comes from the config file: change its keys there")
        if any(u.access_key == access for u in self.node.config.users):
            raise OpError("user_exists", "a user of the config file holds that access key")
        try:
            if not await self.node.meta.set_user_keys(user_id, access, secret):
                raise OpError("no_such_user", f"no user {user_id!r}")
        except UserExists:
            raise OpError("user_exists", "another user holds that access key") from None
        return {"id": user_id, "access_key": access, "secret_key": secret}

    # -- buckets --

    async def buckets_list(self, args: dict, sub: Subscriber) -> dict:
        return {"buckets": [{"name": b.name, "owner": b.owner_id, "created": b.created}
                            for b in await self.node.meta.list_buckets()]}

    async def buckets_usage(self, args: dict, sub: Subscriber) -> dict:
        name = _str_arg(args, "bucket", max_len=63)
        assert name is not None
        if await self.node.meta.get_bucket(name) is None:
            raise OpError("no_such_bucket", f"no bucket {name!r}")
        objects, size = await self.node.meta.bucket_usage(name)
        return {"bucket": name, "objects": objects, "bytes": size}

    # -- events --

    async def subscribe(self, args: dict, sub: Subscriber) -> dict:
        topics = self._topics(args)
        sub.topics |= set(topics)
        return {"topics": sorted(sub.topics)}

    async def unsubscribe(self, args: dict, sub: Subscriber) -> dict:
        topics = self._topics(args)
        sub.topics -= set(topics)
        if "*" in topics:
            sub.topics.clear()
        return {"topics": sorted(sub.topics)}

    @staticmethod
    def _topics(args: dict) -> list[str]:
        topics = args.get("topics")
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
            raise OpError("bad_args", "argument 'topics': a non-empty list of topic names")
        unknown = [t for t in topics if t != "*" and t not in TOPICS]
        if unknown:
            raise OpError("bad_args", f"unknown topic {unknown[0][:64]!r}; topics: {', '.join(TOPICS)}, or *")
        return topics
