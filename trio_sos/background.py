"""The loop every singleton background worker (GC, repair, scrub) runs: a pass, then wait ``interval`` seconds or
until ``wake`` is set, forever; a failed pass is logged and the next one comes as usual."""

from __future__ import annotations

import logging

import trio


class Periodic:
    interval: float
    wake: trio.Event
    log: logging.Logger
    what: str  # names the pass in the log: "<what> pass failed"

    async def run_once(self) -> object:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                self.log.exception("%s pass failed", self.what)
            with trio.move_on_after(self.interval):
                await self.wake.wait()
            self.wake = trio.Event()
