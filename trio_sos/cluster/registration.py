"""An agent's ZooKeeper registration, held by its supervisor only while the agent is healthy.

The C agent knows nothing of ZooKeeper. Its supervisor (``python -m trio_sos agent --zk ...``) writes the
ephemeral ``agents/<agent id>`` when the agent passes its health checks, refreshes the usage figures in it every
``interval`` seconds, deletes it when the agent turns unhealthy or stops, and writes it again under a new session
after an expiry (the old one vanished with the old session).
"""

from __future__ import annotations

import logging

import trio
from kazoo.exceptions import KazooException

from .. import __version__
from ..agent import AgentConnectionError, AgentError, open_agent_pool
from ..agent.supervisor import AgentSupervisor
from .membership import agent_record
from .placement import AgentInfo
from .zk import CONNECTED, ZkSession

log = logging.getLogger("trio_sos.cluster.registration")


async def keep_registered(zk: ZkSession, supervisor: AgentSupervisor, *, advertise: str, zone: str = "",
                          interval: float = 5.0) -> None:
    assert supervisor.address is not None
    async with open_agent_pool(supervisor.address, size=1, timeout=5.0, max_backoff=0.5) as pool:
        registered_in: int | None = None  # the session the registration was written in
        written: dict | None = None
        path = ""
        while True:
            try:
                healthy = supervisor.healthy
                if healthy and zk.state == CONNECTED:
                    hello = await pool.hello()
                    info = await pool.info()
                    agent_id = hello.agent_id.hex()
                    path = zk.path("agents", agent_id)
                    record = agent_record(AgentInfo(agent_id, advertise, zone=zone, capacity=info.capacity,
                                                    used=info.used), __version__)
                    if registered_in != zk.session_id or record != written:
                        await zk.register_ephemeral(path, record)
                        if registered_in != zk.session_id:
                            log.info("agent %s registered at %s (zone %r) in ZooKeeper", agent_id, advertise, zone)
                        registered_in, written = zk.session_id, record
                elif not healthy and registered_in is not None and zk.state == CONNECTED:
                    await zk.unregister(path)
                    log.warning("agent unhealthy: registration %s withdrawn", path)
                    registered_in = written = None
            except (KazooException, AgentConnectionError, AgentError) as exc:
                log.warning("agent registration: %r; retrying", exc)
            with trio.move_on_after(interval):
                async with trio.open_nursery() as waits:
                    async def on(event: trio.Event) -> None:
                        await event.wait()
                        waits.cancel_scope.cancel()

                    waits.start_soon(on, supervisor.changed)
                    waits.start_soon(on, zk.changed)
