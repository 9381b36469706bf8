"""What a node watches for its operators, and turns into events: agents (probed every ``PROBE_INTERVAL`` for
health and latency; joined, left, draining...), nodes and leaders of the cluster (ZooKeeper), background
workers' progress, under-replicated chunks, and the S3 traffic figures (``stats``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import attrs
import trio

from ..background import WORKERS
from .. import __version__
from ..agent import AgentConnectionError, AgentError
from ..agent.protocol import ProtocolError
from .events import EventHub

log = logging.getLogger("trio_sos.admin")

PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 2.0
PROBES_PER_SECOND = 50
PROBES_IN_FLIGHT = 16
STATS_INTERVAL = 2.0
UNDER_REPLICATED_CAP = 10_000


@attrs.define
class Health:
    ok: bool
    latency: float | None = None
    error: str = ""
    used: int | None = None
    capacity: int | None = None
    fs_free: int | None = None
    chunks: int | None = None


class Monitor:
    def __init__(self, node: Any, hub: EventHub, control: Any, requests: Any = None) -> None:
        self.node = node
        self.hub = hub
        self.control = control
        self.requests = requests  # the request figures /metrics renders, for the traffic figures
        self.health: dict[str, Health] = {}
        self.under_replicated: int | None = None
        self.admin_sessions = 0
        self.traffic: dict[str, Any] = {}
        self.nodes: dict[str, dict] = {}
        self.leaders: dict[str, str | None] = {}
        self._agents: dict[str, str] = {}  # agent -> state, as last seen
        self._removed: set[str] = set()
        self._progress: dict[str, dict] = {}

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe_loop)
            nursery.start_soon(self._membership_loop)
            nursery.start_soon(self._stats_loop)
            nursery.start_soon(self._progress_loop)
            nursery.start_soon(self._replicas_loop)
            if self.node.zk is not None:
                nursery.start_soon(self._cluster_loop)

    # -- agents --

    async def _probe_loop(self) -> None:
        limiter = trio.CapacityLimiter(PROBES_IN_FLIGHT)
        while True:
            fleet = self.node.fleet
            started = trio.current_time()
            agents = list(fleet.agents)

            async def probe(agent_id: str, pool: Any) -> None:
                async with limiter:
                    await self._probe(agent_id, pool)

            async with trio.open_nursery() as nursery:
                for agent_id in agents:
                    pool = fleet.pool(agent_id)
                    if pool is not None:
                        nursery.start_soon(probe, agent_id, pool)
            for gone in set(self.health) - set(fleet.agents):
                del self.health[gone]
            # every PROBE_INTERVAL, or slower in a large cluster: at most PROBES_PER_SECOND from this node
            await trio.sleep_until(started + max(PROBE_INTERVAL, len(agents) / PROBES_PER_SECOND))

    async def _probe(self, agent_id: str, pool: Any) -> None:
        started = time.perf_counter()
        error = ""
        info = None
        with trio.move_on_after(PROBE_TIMEOUT) as scope:
            try:
                info = await pool.info()
            except (AgentConnectionError, AgentError, ProtocolError, OSError) as exc:
                error = str(exc) or type(exc).__name__
        if scope.cancelled_caught:
            error = f"no answer within {PROBE_TIMEOUT:.0f}s"
        latency = time.perf_counter() - started
        old = self.health.get(agent_id)
        if info is not None:
            new = Health(True, latency, "", info.used, info.capacity, info.fs_free, info.chunks)
            if old is not None and not old.ok:
                self.hub.publish("agent.healthy", {"agent": agent_id, "latency_ms": round(latency * 1000, 2)})
        else:
            new = Health(False, None, error)
            if old is None or old.ok:
                log.warning("agent %s unhealthy: %s", agent_id, error)
                self.hub.publish("agent.unhealthy", {"agent": agent_id, "error": error})
            if old is not None:
                new.used, new.capacity, new.fs_free, new.chunks = old.used, old.capacity, old.fs_free, old.chunks
        if agent_id in self.node.fleet.agents:
            self.health[agent_id] = new

    async def _membership_loop(self) -> None:
        first = True
        while True:
            fleet = self.node.fleet
            changed = fleet.changed
            now = {a: info.state for a, info in fleet.agents.items()}
            if not first:
                for agent_id in sorted(set(now) - set(self._agents)):
                    self.hub.publish("agent.joined", self.agent_view(agent_id))
                for agent_id in sorted(set(self._agents) - set(now)):
                    if agent_id not in fleet.removed:
                        self.hub.publish("agent.left", {"agent": agent_id})
                for agent_id in sorted(set(now) & set(self._agents)):
                    if now[agent_id] != self._agents[agent_id]:
                        event = "agent.draining" if now[agent_id] == "draining" else "agent.undrained"
                        self.hub.publish(event, {"agent": agent_id})
                for agent_id in sorted(fleet.removed - self._removed):
                    self.hub.publish("agent.removed", {"agent": agent_id})
            self._agents, self._removed, first = now, set(fleet.removed), False
            with trio.move_on_after(1.0):
                await changed.wait()

    def agent_view(self, agent_id: str) -> dict[str, Any]:
        fleet = self.node.fleet
        info = fleet.agents.get(agent_id)
        health = self.health.get(agent_id)
        drain = self.control.drains.get(agent_id) if self.control is not None else None
        if info is None:
            return {"id": agent_id, "address": None, "zone": None, "capacity": None, "used": None, "fs_free": None,
                    "chunks": None, "fill": None, "state": "removed" if agent_id in fleet.removed else "absent",
                    "health": "unknown", "latency_ms": None, "version": None, "drain": drain}
        used = health.used if health is not None and health.used is not None else info.used
        capacity = info.capacity or (health.capacity if health is not None and health.capacity else 0)
        fs_free = health.fs_free if health is not None else None
        room = capacity or ((used + fs_free) if fs_free is not None else 0)
        return {
            "id": agent_id, "address": info.address, "zone": info.zone, "capacity": capacity, "used": used,
            "fs_free": fs_free, "chunks": health.chunks if health is not None else None,
            "fill": round(used / room, 4) if room else None, "state": info.state,
            "health": "unknown" if health is None else "ok" if health.ok else "unhealthy",
            "error": health.error if health is not None and not health.ok else None,
            "latency_ms": round(health.latency * 1000, 2) if health is not None and health.latency else None,
            "version": info.version or (__version__ if self.node.zk is None else None), "drain": drain,
        }

    # -- the cluster (ZooKeeper): nodes, leaders --

    async def _cluster_loop(self) -> None:
        zk = self.node.zk
        first = True
        while True:
            try:
                if zk.state == "connected":
                    await self._read_cluster(zk, announce=not first)
                    first = False
            except Exception as exc:  # a read that failed as the session dropped: the next round retries
                log.debug("admin: reading the cluster from ZooKeeper failed: %r", exc)
            await trio.sleep(PROBE_INTERVAL)

    async def _read_cluster(self, zk: Any, *, announce: bool) -> None:
        records = await zk.children_with_data(zk.path("nodes"))
        nodes = {}
        for name, data in records.items():
            try:
                rec = json.loads(data)
            except ValueError:
                rec = {}
            nodes[name] = {"id": name, "endpoint": rec.get("endpoint"), "admin": rec.get("admin"),
                           "version": rec.get("version"), "zone": rec.get("zone"), "self": name == self.node.node_id}
        if announce:
            for name in sorted(set(nodes) - set(self.nodes)):
                self.hub.publish("node.joined", nodes[name])
            for name in sorted(set(self.nodes) - set(nodes)):
                self.hub.publish("node.left", {"node": name})
        self.nodes = nodes
        leaders = await self.read_leaders(zk)
        if announce:
            for worker, leader in sorted(leaders.items()):
                if self.leaders.get(worker) != leader:
                    self.hub.publish("leader.changed", {"worker": worker, "leader": leader})
        self.leaders = leaders

    async def read_leaders(self, zk: Any) -> dict[str, str | None]:
        def read() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for worker in WORKERS:
                contenders = zk.client.Lock(zk.path("leaders", worker)).contenders()
                out[worker] = contenders[0] if contenders else None
            return out

        return await trio.to_thread.run_sync(read)

    # -- background workers, replicas --

    async def _progress_loop(self) -> None:
        while True:
            for name in self.control.names():
                p = self.control.progress(name)
                key = {k: v for k, v in p.items() if k not in ("rate", "eta_s")}
                if key != self._progress.get(name):
                    self._progress[name] = key
                    self.hub.publish("progress", p)
            await trio.sleep(1.0)

    async def _replicas_loop(self) -> None:
        """Chunks short of R, counted every 10 s by the node that leads repair (the others report None)."""
        node = self.node
        counted_at: float | None = None
        while True:
            lead = node.leaderships.get("repair")
            leading = node.repairer is not None and node.meta is not None and (lead is None or lead.leading)
            if not leading:
                self.under_replicated, counted_at = None, None
            elif counted_at is None or trio.current_time() - counted_at >= 10.0:
                try:
                    target = node.repairer.target()
                    total, after = 0, None
                    while total < UNDER_REPLICATED_CAP:
                        page = await node.meta.under_replicated(target, after=after, limit=1000)
                        total += len(page)
                        if len(page) < 1000:
                            break
                        after = page[-1].chunk_id
                    self.under_replicated, counted_at = total, trio.current_time()
                except Exception as exc:
                    log.debug("admin: counting under-replicated chunks failed: %r", exc)
            await trio.sleep(1.0)

    # -- traffic --

    async def _stats_loop(self) -> None:
        from . import metrics

        last: dict[str, float] | None = None
        last_at = time.monotonic()
        while True:
            await trio.sleep(STATS_INTERVAL)
            if self.requests is None:
                continue
            totals = metrics.traffic_totals(self.requests)
            now = time.monotonic()
            if last is not None:
                dt = max(1e-6, now - last_at)
                count = totals["latency_count"] - last["latency_count"]
                self.traffic = {
                    "requests_per_s": round((totals["requests"] - last["requests"]) / dt, 2),
                    "errors_per_s": round((totals["errors"] - last["errors"]) / dt, 2),
                    "bytes_in_per_s": round((totals["bytes_in"] - last["bytes_in"]) / dt, 1),
                    "bytes_out_per_s": round((totals["bytes_out"] - last["bytes_out"]) / dt, 1),
                    "latency_ms": round((totals["latency_sum"] - last["latency_sum"]) / count * 1000, 2)
                    if count > 0 else None,
                    "connections": int(totals["connections"]),
                    "requests_total": int(totals["requests"]),
                }
                self.hub.publish("stats", self.traffic)
            last, last_at = totals, now
