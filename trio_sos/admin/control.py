"""Steering the background workers (gc, repair, scrub, lifecycle) and the agents' placement from any node.

Embedded (no ZooKeeper): commands act on this process's workers. In a cluster, each worker runs on the node that
leads it, so commands go through ZooKeeper: ``control/<worker>`` holds ``{"paused": bool, "run": n, "cancel":
n}``; every node applies it to its copy of the worker (only the leader's runs, and a node that becomes leader
later starts paused if it is). ``run`` and ``cancel`` are counters: a node acts on each increase it sees, never
on the value it found at its start. The leader publishes its worker's progress into ``progress/<worker>`` about
once a second while it changes, where every other node reads it (``standby: true``, the leader's figures).

Agents: ``draining/<id>`` (the drain mark, with repair's ``{"left", "drained"}``) and ``removed/<id>``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import trio

log = logging.getLogger("trio_sos.admin")

ACTIONS = ("start", "pause", "resume", "cancel", "status")
POLL = 0.5


class OpError(Exception):
    """An admin operation refused: its protocol error code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Control:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.drains: dict[str, dict | None] = {}  # agent -> its drain mark's progress (cluster mode)
        self._seen: dict[str, dict] = {}  # worker -> the control record as last applied
        self._remote: dict[str, dict] = {}  # worker -> the leader's published progress
        self._published: dict[str, str] = {}
        self.poke = trio.Event()

    def workers(self) -> dict[str, Any]:
        return self.node.background_workers()

    def names(self) -> list[str]:
        return sorted(self.workers())

    def _leading(self, name: str) -> bool:
        lead = self.node.leaderships.get(name)
        return lead is None or lead.leading

    def progress(self, name: str) -> dict[str, Any]:
        worker = self.workers()[name]
        if self._leading(name):
            p = worker.report()
            p["leader"] = self.node.node_id or None
            p["standby"] = False
        else:  # another node runs it: its figures as it last published them
            p = dict(self._remote.get(name) or {"state": "unknown", "done": 0, "left": None, "unit": worker.unit,
                                                "leader": None})
            # paused as the control record says (every node applies it; the leader's publication may lag)
            p["paused"] = worker.paused
            if worker.paused and p.get("state") != "running":
                p["state"] = "paused"
            elif not worker.paused and p.get("state") == "paused":
                p["state"] = "idle"  # resumed: the leader goes on within a poll
            p["standby"] = True
        p["worker"] = name
        return p

    # -- commands --

    async def command(self, name: str, action: str) -> dict[str, Any]:
        if name not in self.workers():
            raise OpError("bad_args", f"no background worker {name!r} runs on this node")
        if action not in ACTIONS:
            raise OpError("unknown_op", f"{name}.{action} is not an operation")
        if action != "status":
            if self.node.zk is None:
                self._apply_local(name, action)
            else:
                await self._write_control(name, action)
        return self.progress(name)

    def _apply_local(self, name: str, action: str) -> None:
        worker = self.workers()[name]
        if action == "start":
            worker.start_pass()
        elif action == "pause":
            worker.pause()
        elif action == "resume":
            worker.resume()
        elif action == "cancel":
            worker.cancel_pass()

    async def _write_control(self, name: str, action: str) -> None:
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

        zk = self.node.zk
        path = zk.path("control", name)

        def update() -> dict:
            while True:
                try:
                    data, stat = zk.client.get(path)
                    record, version = _record(data), stat.version
                except NoNodeError:
                    record, version = {"paused": False, "run": 0, "cancel": 0}, None
                if action == "start":
                    record["run"] += 1
                    record["paused"] = False
                elif action == "pause":
                    record["paused"] = True
                elif action == "resume":
                    record["paused"] = False
                elif action == "cancel":
                    record["cancel"] += 1
                body = json.dumps(record).encode()
                try:
                    if version is None:
                        zk.client.create(path, body, makepath=True)
                    else:
                        zk.client.set(path, body, version=version)
                    return record
                except (BadVersionError, NodeExistsError):
                    continue  # another node's command came first: apply ours on top of it

        record = await trio.to_thread.run_sync(update)
        self._apply_local(name, action)  # at once here; the other nodes within POLL seconds
        self._seen[name] = record

    def _apply_record(self, name: str, record: dict) -> None:
        worker = self.workers().get(name)
        if worker is None:
            return
        seen = self._seen.get(name)
        if record["paused"] and not worker.paused:
            worker.pause()
        elif not record["paused"] and worker.paused:
            worker.resume()
        if seen is not None:
            if record["run"] > seen["run"]:
                worker.start_pass()
            if record["cancel"] > seen["cancel"]:
                worker.cancel_pass()
        self._seen[name] = record

    # -- the cluster's state, followed (cluster mode) --

    async def run(self) -> None:
        zk = self.node.zk
        if zk is None:
            return
        while True:
            if zk.state == "connected":
                try:
                    await self._sync(zk)
                except Exception as exc:  # the session dropped mid-read: the next round retries
                    log.debug("admin: following the control records failed: %r", exc)
            with trio.move_on_after(POLL):
                await self.poke.wait()
            self.poke = trio.Event()

    async def _sync(self, zk: Any) -> None:
        from kazoo.exceptions import NoNodeError

        names = self.names()

        def read() -> tuple[dict, dict, dict]:
            controls: dict[str, bytes] = {}
            progress: dict[str, bytes] = {}
            for name in names:
                for folder, out in (("control", controls), ("progress", progress)):
                    try:
                        out[name] = zk.client.get(zk.path(folder, name))[0]
                    except NoNodeError:
                        pass
            drains = {}
            try:
                for agent in zk.client.get_children(zk.path("draining")):
                    try:
                        drains[agent] = zk.client.get(zk.path("draining", agent))[0]
                    except NoNodeError:
                        pass
            except NoNodeError:
                pass
            return controls, progress, drains

        controls, progress, drains = await trio.to_thread.run_sync(read)
        for name in names:
            self._apply_record(name, _record(controls.get(name, b"")))
            try:
                self._remote[name] = json.loads(progress[name]) if name in progress else {}
            except ValueError:
                self._remote[name] = {}
        self.drains = {agent: _drain_progress(data) for agent, data in drains.items()}
        await self._publish(zk)

    async def _publish(self, zk: Any) -> None:
        """The progress of the workers this node leads, into ``progress/<worker>`` when it changed (at most about
        once per POLL)."""
        for name in self.names():
            if not self._leading(name):
                continue
            p = self.progress(name)
            p["published"] = round(time.time(), 3)
            key = json.dumps({k: v for k, v in p.items() if k not in ("published", "rate", "eta_s")},
                             sort_keys=True)
            if self._published.get(name) == key:
                continue
            body = json.dumps(p).encode()
            path = zk.path("progress", name)

            def write(path: str = path, body: bytes = body) -> None:
                from kazoo.exceptions import NoNodeError

                try:
                    zk.client.set(path, body)
                except NoNodeError:
                    zk.client.create(path, body, makepath=True)

            await trio.to_thread.run_sync(write)
            self._published[name] = key

    # -- agents --

    async def drain(self, agent: str) -> dict[str, Any]:
        zk = self._need_zk()
        self._known(agent)
        from kazoo.exceptions import NodeExistsError

        try:
            await zk.call(zk.client.create, zk.path("draining", agent), json.dumps({"requested": True}).encode(),
                          makepath=True)
        except NodeExistsError:
            pass
        self.poke.set()
        return {"agent": agent, "state": "draining"}

    async def undrain(self, agent: str) -> dict[str, Any]:
        zk = self._need_zk()
        await zk.unregister(zk.path("draining", agent))
        await zk.unregister(zk.path("removed", agent))
        self.poke.set()
        return {"agent": agent, "state": "active"}

    async def remove(self, agent: str) -> dict[str, Any]:
        zk = self._need_zk()
        fleet = self.node.fleet
        if agent in fleet.agents:
            drain = self.drains.get(agent)
            if fleet.agents[agent].writable or not drain or not drain.get("drained"):
                left = drain.get("left") if drain else None
                raise OpError("not_drained", f"agent {agent} is registered and not drained "
                                                  f"({'not draining' if drain is None else f'{left} chunks left'}): "
                                                  "drain it first, or stop it")
        elif agent not in fleet.removed and agent not in self.drains:
            if self.node.meta is None or agent not in await self.node.meta.indexed_agents():
                raise OpError("no_such_agent", f"no agent {agent} is known")
        from kazoo.exceptions import NodeExistsError

        try:
            await zk.call(zk.client.create, zk.path("removed", agent), json.dumps({"at": time.time()}).encode(),
                          makepath=True)
        except NodeExistsError:
            pass
        fleet.removed.add(agent)  # at once on this node; the others (and this one again) through the watch
        if self.node.repairer is not None:
            self.node.repairer.wake.set()
        return {"agent": agent, "state": "removed"}

    def _need_zk(self) -> Any:
        if self.node.zk is None:
            raise OpError("not_cluster", "this node is embedded (one local agent): there is no placement to "
                                              "steer; run a cluster (serve --zk) to drain or remove agents")
        return self.node.zk

    def _known(self, agent: str) -> None:
        if agent not in self.node.fleet.agents:
            raise OpError("no_such_agent", f"no agent {agent} is registered")


def _record(data: bytes) -> dict:
    try:
        rec = json.loads(data) if data else {}
    except ValueError:
        rec = {}
    if not isinstance(rec, dict):
        rec = {}
    return {"paused": bool(rec.get("paused", False)), "run": _count(rec.get("run")),
            "cancel": _count(rec.get("cancel"))}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _drain_progress(data: bytes) -> dict | None:
    try:
        rec = json.loads(data) if data else {}
    except ValueError:
        return None
    if not isinstance(rec, dict) or "left" not in rec:
        return {"left": None, "drained": False}
    return {"left": rec.get("left"), "drained": bool(rec.get("drained"))}
