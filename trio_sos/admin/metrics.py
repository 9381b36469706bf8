"""Prometheus metrics (``prometheus_client``): what the S3 path counts, and what the admin listener reads off the
node's state at each scrape.

- **Request figures** (requests by operation and status, latency histograms, bytes in and out, connections,
  metadata call latency) are counted where they happen: in the process that serves S3. With ``serve --workers
  N`` that is N worker processes, which count into ``prometheus_client``'s multi-process files (a directory the
  supervisor makes and names in ``PROMETHEUS_MULTIPROC_DIR`` for its workers); the supervisor's ``/metrics`` adds
  them up (``MultiProcessCollector``).
- **State** (agents, background workers, ZooKeeper, the workers' CPU and memory) is read at scrape time by
  :class:`StateCollector` from the process that owns it (the supervisor, or the single process).

Labels are bounded: operations come from the operation table, statuses are HTTP codes, agents are the cluster's
agents; no bucket or key is ever a label.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Where this process counts its requests: registered in REGISTRY (one process), or written to the multi-process
# files when PROMETHEUS_MULTIPROC_DIR was set before this module was imported (a worker of ``serve --workers``).
REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("trio_sos_s3_requests", "S3 requests answered, by operation and HTTP status",
                   ["operation", "status"], registry=REGISTRY)
REQUEST_SECONDS = Histogram("trio_sos_s3_request_duration_seconds",
                            "Time from a request's head to the end of its response, by operation", ["operation"],
                            buckets=LATENCY_BUCKETS, registry=REGISTRY)
RECEIVED = Counter("trio_sos_s3_received_bytes", "Request body bytes received", registry=REGISTRY)
SENT = Counter("trio_sos_s3_sent_bytes", "Response body bytes sent", registry=REGISTRY)
CONNECTIONS = Gauge("trio_sos_s3_connections", "Open S3 client connections", registry=REGISTRY,
                    multiprocess_mode="livesum")
META_SECONDS = Histogram("trio_sos_metadata_operation_duration_seconds",
                         "Metadata store calls, by method", ["method"], registry=REGISTRY,
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
META_ERRORS = Counter("trio_sos_metadata_errors", "Metadata store calls that failed as unavailable",
                      ["method"], registry=REGISTRY)
ADMIN_DROPPED = Counter("trio_sos_admin_events_dropped", "Admin events dropped for subscribers that did not read",
                        registry=REGISTRY)


@functools.lru_cache(maxsize=1024)  # operations and statuses are few: each pair's children are looked up once
def _request_children(operation: str, status: int) -> tuple[Any, Any]:
    return REQUESTS.labels(operation, str(status)), REQUEST_SECONDS.labels(operation)


def observe_request(operation: str, status: int, seconds: float, received: int, sent: int) -> None:
    counter, histogram = _request_children(operation, status)
    counter.inc()
    histogram.observe(seconds)
    if received:
        RECEIVED.inc(received)
    if sent:
        SENT.inc(sent)


class TimedMeta:
    """A MetaStore whose every call is timed into ``trio_sos_metadata_operation_duration_seconds``."""

    def __init__(self, meta: Any) -> None:
        self._meta = meta

    def __getattr__(self, name: str) -> Any:
        # called only for a name not looked up before: a wrapped method is then kept as this object's attribute
        attr = getattr(self._meta, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        histogram = META_SECONDS.labels(name)
        errors = META_ERRORS.labels(name)
        from ..meta.store import MetaUnavailable

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            except MetaUnavailable:
                errors.inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - started)

        setattr(self, name, timed)
        return timed


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class StateCollector(Collector):
    """Reads the node's state at each scrape: agents, background workers, ZooKeeper, worker processes. ``node`` is
    the :class:`trio_sos.node.Node` (single process or supervisor); ``monitor`` its admin Monitor."""

    def __init__(self, node: Any, monitor: Any) -> None:
        self.node = node
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        from .. import __version__

        node, monitor = self.node, self.monitor
        info = _gauge("trio_sos_info", "This node: its version and role", ["version", "role"])
        info.add_metric([__version__, node.role], 1)
        yield info
        yield from self._agents(node, monitor)
        yield from self._workers(node)
        if monitor.under_replicated is not None:
            g = _gauge("trio_sos_chunks_under_replicated",
                       "Chunks with fewer replicas than R, as last counted (at most 10,000 are counted)")
            g.add_metric([], monitor.under_replicated)
            yield g
        zk = node.zk
        if zk is not None:
            g = _gauge("trio_sos_zookeeper_connected", "1 while the ZooKeeper session is connected")
            g.add_metric([], 1 if zk.state == "connected" else 0)
            yield g
            states = _gauge("trio_sos_zookeeper_state", "The ZooKeeper session's state", ["state"])
            for state in ("connected", "suspended", "lost"):
                states.add_metric([state], 1 if zk.state == state else 0)
            yield states
        admin = _gauge("trio_sos_admin_connections", "Open admin WebSocket sessions")
        admin.add_metric([], monitor.admin_sessions)
        yield admin
        yield from self._processes(node)

    def _agents(self, node: Any, monitor: Any) -> Iterable[Metric]:
        fleet = node.fleet
        if fleet is None:
            return
        up = _gauge("trio_sos_agent_up", "1 if the agent answered the node's last probe", ["agent", "zone"])
        latency = _gauge("trio_sos_agent_probe_latency_seconds", "Round trip of the node's last probe", ["agent"])
        capacity = _gauge("trio_sos_agent_capacity_bytes", "The agent's capacity as it registered", ["agent"])
        used = _gauge("trio_sos_agent_used_bytes", "Bytes the agent stores, as it last registered", ["agent"])
        draining = _gauge("trio_sos_agent_draining", "1 if the agent is draining", ["agent"])
        states = _gauge("trio_sos_agents", "Agents by state", ["state"])
        counts = {"active": 0, "draining": 0, "removed": len(fleet.removed)}
        for agent_id, agent in sorted(fleet.agents.items()):
            health = monitor.health.get(agent_id)
            up.add_metric([agent_id, agent.zone], 1 if health is None or health.ok else 0)
            if health is not None and health.latency is not None:
                latency.add_metric([agent_id], health.latency)
            capacity.add_metric([agent_id], agent.capacity)
            used.add_metric([agent_id], agent.used)
            draining.add_metric([agent_id], 0 if agent.writable else 1)
            counts[agent.state] = counts.get(agent.state, 0) + 1
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        yield from (up, latency, capacity, used, draining, states)

    def _workers(self, node: Any) -> Iterable[Metric]:
        workers = node.background_workers()
        if not workers:
            return
        passes = CounterMetricFamily("trio_sos_background_passes", "Passes run on this node", labels=["worker"])
        running = _gauge("trio_sos_background_running", "1 while a pass runs on this node", ["worker"])
        paused = _gauge("trio_sos_background_paused", "1 while an operator holds the worker", ["worker"])
        leading = _gauge("trio_sos_background_leader", "1 if this node runs the worker (leads it)", ["worker"])
        done = _gauge("trio_sos_background_pass_done", "Units done in the current or last pass", ["worker"])
        left = _gauge("trio_sos_background_pass_left", "Units left in the current pass (when known)", ["worker"])
        findings = CounterMetricFamily("trio_sos_background_findings",
                                       "Corrupt or missing replicas found (scrub), chunks not repaired (repair)",
                                       labels=["worker"])
        for name, w in sorted(workers.items()):
            lead = node.leaderships.get(name)
            passes.add_metric([name], w.passes_run)
            running.add_metric([name], 1 if w.running else 0)
            paused.add_metric([name], 1 if w.paused else 0)
            leading.add_metric([name], 1 if lead is None or lead.leading else 0)
            done.add_metric([name], w.done)
            if w.left is not None:
                left.add_metric([name], w.left)
            findings.add_metric([name], w.findings)
        yield from (passes, running, paused, leading, done, left, findings)
        if node.repairer is not None:
            chunks, copied, failed = node.repairer.totals()
            c = CounterMetricFamily("trio_sos_repair_chunks", "Chunks repaired on this node")
            c.add_metric([], chunks)
            b = CounterMetricFamily("trio_sos_repair_copied_bytes", "Bytes copied by repair on this node")
            b.add_metric([], copied)
            f = CounterMetricFamily("trio_sos_repair_failed_chunks", "Chunks repair could not bring to R")
            f.add_metric([], failed)
            yield from (c, b, f)
        if node.scrubber is not None:
            s = node.scrubber.stats
            v = CounterMetricFamily("trio_sos_scrub_verified_bytes", "Bytes verified by scrub on this node")
            v.add_metric([], node.scrubber.totals()[1])
            r = CounterMetricFamily("trio_sos_scrub_findings", "Replicas scrub found bad", labels=["reason"])
            r.add_metric(["corrupt"], s.corrupt)
            r.add_metric(["missing"], s.missing)
            o = CounterMetricFamily("trio_sos_scrub_orphans_deleted", "Orphan chunks scrub handed to the GC")
            o.add_metric([], s.orphans_deleted)
            yield from (v, r, o)
        if node.gc is not None:
            d = CounterMetricFamily("trio_sos_gc_deleted_chunks", "Chunks the GC deleted on this node")
            d.add_metric([], node.gc.totals()[0])
            yield d

    def _processes(self, node: Any) -> Iterable[Metric]:
        pool = node.workers
        if pool is None:
            return
        cpu = CounterMetricFamily("trio_sos_worker_cpu_seconds", "CPU time of each worker process",
                                  labels=["worker"])
        rss = _gauge("trio_sos_worker_resident_memory_bytes", "Resident memory of each worker process", ["worker"])
        for index, proc in sorted(pool.procs.items()):
            figures = _proc_figures(proc.pid) if proc.returncode is None else None
            if figures is not None:
                cpu.add_metric([str(index)], figures[0])
                rss.add_metric([str(index)], figures[1])
        restarts = CounterMetricFamily("trio_sos_worker_restarts", "Worker processes restarted after they died")
        restarts.add_metric([], pool.restarts)
        yield from (cpu, rss, restarts)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


def _proc_figures(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # after the command: state is field 3; utime and stime are 14 and 15, rss 24 (1-based, man 5 proc)
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE


def request_figures(multiproc_dir: str | None) -> Collector:
    """The S3 request figures: this process's, or (``serve --workers``) the workers', added up."""
    if multiproc_dir:
        from prometheus_client.multiprocess import MultiProcessCollector

        return MultiProcessCollector(None, path=multiproc_dir)
    return _Forward(REGISTRY)


def scrape_registry(node: Any, monitor: Any, requests: Collector) -> CollectorRegistry:
    """The registry ``/metrics`` renders: the request figures, the state collector, and this process's own CPU
    and memory."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry()
    registry.register(requests)
    registry.register(StateCollector(node, monitor))
    ProcessCollector(registry=registry)
    return registry


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def traffic_totals(requests: Collector) -> dict[str, float]:
    """Sums for the dashboard's traffic figures: requests, 5xx answers, bytes in and out, latency sum and count,
    open connections (read from the request figures ``/metrics`` renders)."""
    totals = {"requests": 0.0, "errors": 0.0, "bytes_in": 0.0, "bytes_out": 0.0, "latency_sum": 0.0,
              "latency_count": 0.0, "connections": 0.0}
    for metric in requests.collect():
        for sample in metric.samples:
            name = sample.name
            if name == "trio_sos_s3_requests_total":
                totals["requests"] += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    totals["errors"] += sample.value
            elif name == "trio_sos_s3_received_bytes_total":
                totals["bytes_in"] += sample.value
            elif name == "trio_sos_s3_sent_bytes_total":
                totals["bytes_out"] += sample.value
            elif name == "trio_sos_s3_request_duration_seconds_sum":
                totals["latency_sum"] += sample.value
            elif name == "trio_sos_s3_request_duration_seconds_count":
                totals["latency_count"] += sample.value
            elif name == "trio_sos_s3_connections":
                totals["connections"] += sample.value
    return totals
