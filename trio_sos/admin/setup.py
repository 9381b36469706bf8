"""The admin pieces of a node (single process, or the supervisor of ``serve --workers``), put together: the event
hub, worker control, the monitor, the metrics registry, and the admin listener."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import trio

from ..config import Config
from . import metrics
from .control import Control
from .events import EventHub
from .monitor import Monitor
from .ops import AdminOps
from .server import AdminServer

log = logging.getLogger("trio_sos.admin")


async def open_admin_listeners(config: Config) -> tuple[list[trio.abc.Listener], str]:
    """The admin listener (TLS when the node has a certificate) and its URL."""
    from ..node import _bound, _tcp_listeners, server_tls

    assert config.admin_listen is not None
    tls = server_tls(config)
    plain = await _tcp_listeners(config.admin_listen, "admin_listen")
    if tls is not None:
        return [trio.SSLListener(lst, tls, https_compatible=True) for lst in plain], f"https://{_bound(plain[0])}"
    return list(plain), f"http://{_bound(plain[0])}"


def _metrics_dir(data_dir: Path) -> str:
    """DATA_DIR/run/metrics-<pid>, new; those of supervisors that died without cleaning up (kill -9) go."""
    run = data_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    for old in run.glob("metrics-*"):
        pid = old.name.removeprefix("metrics-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    path = run / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return str(path)


class Admin:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.hub = EventHub()
        self.control = Control(node)
        # serve --workers: the workers count their requests into files here, which /metrics adds up
        self.multiproc_dir = _metrics_dir(node.config.data_dir) if node.role == "supervisor" else None
        requests = metrics.request_figures(self.multiproc_dir)
        self.monitor = Monitor(node, self.hub, self.control, requests)
        self.registry = metrics.scrape_registry(node, self.monitor, requests)
        for worker in self.control.workers().values():
            worker.on_finding = self._finding
        self.ops = AdminOps(node, self.control, self.monitor)

    def _finding(self, finding: dict) -> None:
        self.hub.publish("finding", finding)

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.multiproc_dir:
            env[metrics.MULTIPROC_ENV] = self.multiproc_dir
        return env

    def worker_exited(self, pid: int) -> None:
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.multiproc_dir)  # its live gauges (connections) go

    def close(self) -> None:
        if self.multiproc_dir:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)

    async def ready(self) -> tuple[bool, dict]:
        """Whether this node can serve writes: the metadata answers, enough healthy agents accept writes for a
        write quorum, and (``--workers``) a worker serves."""
        node = self.node
        why: dict[str, Any] = {}
        ok = True
        with trio.move_on_after(2.0) as scope:
            try:
                await node.meta.ping()
                why["metadata"] = "ok"
            except Exception as exc:
                why["metadata"] = f"unavailable: {exc}"
                ok = False
        if scope.cancelled_caught:
            why["metadata"] = "no answer within 2s"
            ok = False
        # as the write path sees it: a chunk goes to min(R, writable agents) of the registered writable agents and
        # needs the write quorum of that many; the healthy ones among them must be enough
        fleet = node.fleet
        writable = [a for a, info in fleet.agents.items() if info.writable]
        usable = [a for a in writable if self.monitor.health.get(a) is None or self.monitor.health[a].ok]
        quorum = fleet.write_quorum(max(1, min(fleet.replicas, len(writable))))
        why["agents"] = {"writable": len(writable), "writable_healthy": len(usable), "write_quorum": quorum}
        if not usable or len(usable) < quorum:
            ok = False
        if node.workers is not None:
            serving = sum(1 for p in node.workers.procs.values() if p.returncode is None)
            why["workers"] = {"running": serving, "configured": node.workers.count}
            if serving == 0:
                ok = False
        if node.zk is not None:
            why["zookeeper"] = node.zk.state
        return ok, why

    def render_metrics(self) -> bytes:
        return metrics.render(self.registry)

    def _sessions(self, n: int) -> None:
        self.monitor.admin_sessions = n

    async def run(self, listeners: list[trio.abc.Listener], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from functools import partial

        from ..s3.context import signing_key

        node = self.node
        users = partial(signing_key, node.config, node.meta)
        server = AdminServer(self.ops, self.hub, users=users, admins=node.config.admin_users,
                             render_metrics=self.render_metrics, ready=self.ready,
                             metrics_token=node.config.metrics_token, on_sessions=self._sessions)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.control.run)
            nursery.start_soon(self.monitor.run)
            await nursery.start(server.serve, listeners)
            task_status.started()
