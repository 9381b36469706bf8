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


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _ask_agent(pool, interrupted: trio.Event, limit: float) -> tuple[str, int, int] | None:
    """The agent's id and usage, or None if it did not answer (within ``limit``, or before ``interrupted``).

    Asking a hung agent takes the pool's timeout: a change of health interrupts the asking, so that a registration
    is never held for an agent that turned unhealthy meanwhile. Errors are caught inside the nursery, not around it
    (there they would arrive wrapped in an ExceptionGroup)."""
    answer = None
    with trio.move_on_after(limit):
        async with trio.open_nursery() as asking:
            asking.start_soon(_cancel_on, interrupted, asking.cancel_scope)
            try:
                hello = await pool.hello()
                info = await pool.info()
                answer = (hello.agent_id.hex(), info.capacity, info.used)
            except (AgentConnectionError, AgentError) as exc:
                log.warning("agent registration: asking the agent failed: %r; retrying", exc)
            asking.cancel_scope.cancel()
    return answer


async def keep_registered(zk: ZkSession, supervisor: AgentSupervisor, *, advertise: str, zone: str = "",
                          interval: float = 5.0) -> None:
    assert supervisor.address is not None
    async with open_agent_pool(supervisor.address, size=1, timeout=2.0, max_backoff=0.5) as pool:
        registered_in: int | None = None  # the session the registration was written in
        written: dict | None = None
        path = ""
        while True:
            changed = supervisor.changed
            try:
                if not supervisor.healthy:
                    if registered_in is not None and zk.state == CONNECTED:
                        await zk.unregister(path)
                        log.warning("agent unhealthy: registration %s withdrawn", path)
                        registered_in = written = None
                elif zk.state == CONNECTED:
                    record = None
                    answer = await _ask_agent(pool, changed, interval)
                    if answer is not None:
                        agent_id, capacity, used = answer
                        path = zk.path("agents", agent_id)
                        record = agent_record(AgentInfo(agent_id, advertise, zone=zone, capacity=capacity, used=used),
                                              __version__)
                    if record is not None and supervisor.healthy and (registered_in != zk.session_id
                                                                      or record != written):
                        await zk.register_ephemeral(path, record)
                        if registered_in != zk.session_id:
                            log.info("agent %s registered at %s (zone %r) in ZooKeeper", agent_id, advertise, zone)
                        registered_in, written = zk.session_id, record
            except (KazooException, AgentConnectionError, AgentError) as exc:
                log.warning("agent registration: %r; retrying", exc)
            if supervisor.changed is not changed:
                continue  # the health changed while this round ran: act on it now
            with trio.move_on_after(interval):
                async with trio.open_nursery() as waits:
                    async def on(event: trio.Event) -> None:
                        await event.wait()
                        waits.cancel_scope.cancel()

                    waits.start_soon(on, changed)
                    waits.start_soon(on, zk.changed)
