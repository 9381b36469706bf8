"""A lighter ``trio.to_thread.run_sync`` for the node's hot paths.

``trio.to_thread.run_sync`` does more per call than a hop needs when the caller already bounds its own threads:
it takes a CapacityLimiter, builds a thread name from the task's name and has the worker set the OS thread name
and back (two ``prctl`` calls through ctypes) around every job. On the 2-core VM this project is measured on, a
call that does nothing cost 252–254 µs of CPU through ``to_thread.run_sync`` and 181–184 µs through
:func:`run_sync` (``docs/performance.md``, "A lighter thread hop"); the rest of both is the kernel waking a thread
on the other core and back.

The semantics are those of ``to_thread.run_sync(fn, *args, abandon_on_cancel=False)`` with no limiter, but for
one difference: the call runs in one of Trio's cached worker threads, in a copy of the caller's context, and
cannot be cancelled — not even before it starts. ``to_thread.run_sync`` checks for a cancellation first and may
wait for its limiter, so a caller cancelled by then gets Cancelled and the function never runs; here it always
runs, the caller waits for it and sees its result or exception, and a cancellation is delivered at the caller's
next checkpoint. The SQLite store relies on that: a batch of transactions, once taken from the queue, runs in full
whatever happens to the task that took it. Callers bound concurrency themselves (the SQLite store holds its
connection's limiter; a hash worker is one per upload).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

if TYPE_CHECKING:
    import outcome

T = TypeVar("T")

__all__ = ["run_sync"]


def _abort(_: Any) -> trio.lowlevel.Abort:
    # started work is waited for, as with abandon_on_cancel=False; the cancellation is delivered at the caller's
    # next checkpoint
    return trio.lowlevel.Abort.FAILED


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; its result, or its exception raised here."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    context = contextvars.copy_context()

    def deliver(result: outcome.Outcome[T]) -> None:
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(lambda: context.run(fn, *args), deliver)
    return await trio.lowlevel.wait_task_rescheduled(_abort)  # type: ignore[no-any-return]
