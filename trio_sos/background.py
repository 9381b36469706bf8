"""The loop every singleton background worker (GC, repair, scrub) runs: a pass, then wait ``interval`` seconds or
until ``wake`` is set, forever; a failed pass is logged and the next one comes as usual.

Operators steer it (``trio_sos.admin``): ``start_pass`` runs a pass now, ``pause`` holds the worker at its next
``checkpoint`` (each worker calls it before each unit of work: a chunk, a GC entry) and between passes until
``resume``, ``cancel_pass`` abandons the pass under way. Each pass counts its units (``done``, ``left`` when the
worker can tell, ``bytes``, ``failed``), which ``report`` gives with a rate and an ETA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio


# the singleton background workers, by the names operators and ZooKeeper know them (one node of a cluster runs each)
WORKERS = ("gc", "repair", "scrub", "lifecycle")


class Periodic:
    interval: float
    wake: trio.Event
    log: logging.Logger
    what: str  # names the pass in the log: "<what> pass failed"
    name: str  # the worker's name for operators: one of WORKERS
    unit = "chunks"

    # steering and the current pass's figures (class defaults; set per instance once used)
    paused = False
    running = False
    passes_run = 0
    pass_started: float | None = None
    last_pass: float | None = None
    done = 0
    left: int | None = None
    bytes = 0
    failed = 0
    # the same, added up over the passes that ended since the worker started in this process
    done_total = 0
    bytes_total = 0
    failed_total = 0
    findings = 0
    on_finding: Callable[[dict[str, Any]], None] | None = None
    _pass_scope: trio.CancelScope | None = None
    _resumed: trio.Event | None = None
    _started_mono = 0.0

    async def run_once(self) -> object:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            await self.checkpoint()
            self.done, self.bytes, self.failed, self.left = 0, 0, 0, None
            self.pass_started, self._started_mono, self.running = time.time(), time.monotonic(), True
            with trio.CancelScope() as scope:
                self._pass_scope = scope
                try:
                    await self.run_once()
                except Exception:
                    self.log.exception("%s pass failed", self.what)
                finally:
                    self._pass_scope = None
                    self.running = False
                    self.done_total += self.done
                    self.bytes_total += self.bytes
                    self.failed_total += self.failed
                    self.last_pass = time.time()
                    self.passes_run += 1
            if scope.cancelled_caught:
                self.log.info("%s pass cancelled by an operator", self.what)
            with trio.move_on_after(self.interval):
                await self.wake.wait()
            self.wake = trio.Event()

    # -- steering --

    async def checkpoint(self) -> None:
        """Wait here while paused (workers call it before each unit of work)."""
        while self.paused:
            if self._resumed is None:
                self._resumed = trio.Event()
            await self._resumed.wait()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    def start_pass(self) -> None:
        """Run a pass now (after the one under way, if any); lifts a pause."""
        self.resume()
        self.wake.set()

    def cancel_pass(self) -> None:
        if self._pass_scope is not None:
            self._pass_scope.cancel()

    def found(self, **finding: Any) -> None:
        """A finding (a corrupt or missing replica, a chunk that could not be repaired) for the operators."""
        self.findings += 1
        if self.on_finding is not None:
            self.on_finding({"worker": self.name, **finding})

    def totals(self) -> tuple[int, int, int]:
        """Units done, bytes and failures since the worker started here, the pass under way included."""
        now = (self.done, self.bytes, self.failed) if self.running else (0, 0, 0)
        return self.done_total + now[0], self.bytes_total + now[1], self.failed_total + now[2]

    def report(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started_mono if self.running else 0.0
        rate = self.done / elapsed if self.running and elapsed > 0 else None
        eta = self.left / rate if rate and self.left is not None else None
        state = "paused" if self.paused else "running" if self.running else "idle"
        return {"state": state, "paused": self.paused, "passes": self.passes_run, "pass_started": self.pass_started,
                "last_pass": self.last_pass, "done": self.done, "left": self.left, "unit": self.unit,
                "done_total": self.totals()[0],
                "bytes": self.bytes, "failed": self.failed, "findings": self.findings,
                "rate": round(rate, 3) if rate is not None else None,
                "eta_s": round(eta, 1) if eta is not None else None}
