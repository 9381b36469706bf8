"""Command line: ``python -m trio_sos serve | user | agent``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from .agent.supervisor import AgentOptions, AgentStartError, AgentSupervisor
from .config import ConfigError, load_config
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

    serve = sub.add_parser("serve", help="run an S3 node (embedded: SQLite metadata and a local agent)")
    _node_options(serve)
    serve.add_argument("--listen", help="HOST:PORT to serve S3 on (default 127.0.0.1:9000)")
    serve.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-listen", help="HOST:PORT for HTTPS beside plain HTTP on --listen")

    user = sub.add_parser("user", help="manage users and their keys")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create a user and print its key pair")
    create.add_argument("name", help="user id (also the display name unless --display-name)")
    create.add_argument("--display-name")
    create.add_argument("--email", default="")
    create.add_argument("--access-key", help="default: generated")
    create.add_argument("--secret-key", help="default: generated")
    listing = user_sub.add_parser("list", help="list users")
    listing.add_argument("--secrets", action="store_true", help="also print secret keys")
    delete = user_sub.add_parser("delete", help="delete a user")
    delete.add_argument("name", help="user id")
    for p in (create, listing, delete):
        _node_options(p)

    agent = sub.add_parser("agent", help="run a storage agent under a supervisor that restarts it")
    agent.add_argument("--data-dir", required=True, type=Path, help="where the agent keeps its chunks")
    agent.add_argument("--listen", default="127.0.0.1:7000", help="HOST:PORT (default 127.0.0.1:7000)")
    agent.add_argument("--unix", help="also listen on this Unix socket path")
    agent.add_argument("--capacity", type=_size, help="refuse PUTs beyond this many stored bytes")
    agent.add_argument("--max-chunk", type=_size, help="largest chunk accepted (default 64M)")
    agent.add_argument("--health-interval", type=float, default=1.0, help="seconds between health checks")
    return parser


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="where data and metadata live (default ./trio_sos-data)")


async def _serve(config) -> None:
    from .node import Node

    node = Node(config)
    async with trio.open_nursery() as nursery:
        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s: stopping (grace %.0fs)", signal.Signals(signum).name,
                             config.shutdown_grace)
                    node.stop()
                    break
                async for _ in signals:  # a second signal: stop now
                    nursery.cancel_scope.cancel()

        nursery.start_soon(on_signal)
        await node.run(say=lambda text: print(text, flush=True))
        nursery.cancel_scope.cancel()


async def _user(args: argparse.Namespace, config) -> int:
    from .meta.store import User, UserExists
    from .node import new_access_key, new_secret_key, open_meta

    meta = await open_meta(config)
    try:
        if args.user_command == "create":
            user = User(args.name, args.display_name or args.name, args.access_key or new_access_key(),
                        args.secret_key or new_secret_key(), args.email)
            try:
                await meta.create_user(user)
            except UserExists:
                print(f"trio_sos: a user with id {user.id!r} or that access key exists already", file=sys.stderr)
                return 1
            print(f"user {user.id}\n  access key: {user.access_key}\n  secret key: {user.secret_key}")
        elif args.user_command == "list":
            for user in await meta.list_users():
                secret = f"  secret key: {user.secret_key}" if args.secrets else ""
                print(f"{user.id}  display name: {user.display_name}  access key: {user.access_key}{secret}")
            for u in config.users:
                print(f"{u.id}  display name: {u.display_name}  access key: {u.access_key}  (from the config file)")
        elif args.user_command == "delete":
            if not await meta.delete_user(args.name):
                print(f"trio_sos: no user {args.name!r}", file=sys.stderr)
                return 1
            print(f"deleted user {args.name}")
    finally:
        await meta.aclose()
    return 0


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
        elif args.command in ("serve", "user"):
            overrides = {name: getattr(args, name, None)
                         for name in ("data_dir", "listen", "tls_cert", "tls_key", "tls_listen")}
            config = load_config(args.config, overrides=overrides)
            if args.command == "serve":
                trio.run(_serve, config)
            else:
                return trio.run(_user, args, config)
    except BaseException as exc:
        inner = _unwrap(exc)
        if isinstance(inner, ConfigError):
            print(f"trio_sos: {inner}", file=sys.stderr)
            return 2
        if isinstance(inner, (AgentStartError, FileNotFoundError)):
            print(f"trio_sos: {inner}", file=sys.stderr)
            return 1
        if isinstance(inner, KeyboardInterrupt):
            return 130
        raise
    return 0


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside nested single-exception groups (nurseries wrap what their tasks raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
