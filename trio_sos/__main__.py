"""Command line: ``python -m trio_sos agent ...``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from .agent.supervisor import AgentOptions, AgentStartError, AgentSupervisor
from .logs import setup_logging

log = logging.getLogger("trio_sos")


def _size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in units else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1048576, 512M, 2G)")
    return int(number) * units[unit]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trio_sos", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    agent = sub.add_parser("agent", help="run a storage agent under a supervisor that restarts it")
    agent.add_argument("--data-dir", required=True, type=Path, help="where the agent keeps its chunks")
    agent.add_argument("--listen", default="127.0.0.1:7000", help="HOST:PORT (default 127.0.0.1:7000)")
    agent.add_argument("--unix", help="also listen on this Unix socket path")
    agent.add_argument("--capacity", type=_size, help="refuse PUTs beyond this many stored bytes")
    agent.add_argument("--max-chunk", type=_size, help="largest chunk accepted (default 64M)")
    agent.add_argument("--health-interval", type=float, default=1.0, help="seconds between health checks")
    return parser


async def _until_signal(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, stopping", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


async def _run_agent(args: argparse.Namespace) -> None:
    supervisor = AgentSupervisor(
        AgentOptions(data_dir=args.data_dir, listen=args.listen, unix=args.unix, capacity=args.capacity,
                     max_chunk=args.max_chunk),
        health_interval=args.health_interval,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_signal, nursery.cancel_scope)
        address = await nursery.start(supervisor.run)
        log.info("storage agent serving at %s (data dir %s)", address, args.data_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "agent":
            trio.run(_run_agent, args)
    except AgentStartError as exc:
        print(f"trio_sos: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"trio_sos: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
