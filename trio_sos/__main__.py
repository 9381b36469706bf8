"""Command line: ``python -m trio_sos serve | user | agent | cluster | admin``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from functools import partial
from pathlib import Path

import trio

from .agent.supervisor import AgentOptions, AgentStartError, AgentSupervisor
from .workers import WorkerStartError
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
    serve.add_argument("--admin-listen", help="HOST:PORT of the admin listener: WebSocket admin API, dashboard, "
                                              "/metrics, /health, /ready (default 127.0.0.1:9001; off: none)")
    serve.add_argument("--zk", help="ZooKeeper HOSTS: serve a cluster's agents instead of running a local one")
    serve.add_argument("--cluster", help="cluster name, its path in ZooKeeper (default: default)")
    serve.add_argument("--zone", help="this node's zone: its reads prefer replicas there")
    serve.add_argument("--workers", type=int, help="node processes sharing the listening socket (default: one per "
                                                   "core; 1: a single process)")
    for hidden in ("--worker-fds", "--worker-agent", "--worker-index"):  # set by the supervisor for its workers
        serve.add_argument(hidden, help=argparse.SUPPRESS)

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
    rotate = user_sub.add_parser("rotate", help="give a user a new key pair (the old one stops working at once)")
    rotate.add_argument("name", help="user id")
    rotate.add_argument("--access-key", help="default: generated")
    rotate.add_argument("--secret-key", help="default: generated")
    for p in (create, listing, delete, rotate):
        _node_options(p)

    agent = sub.add_parser("agent", help="run a storage agent under a supervisor that restarts it")
    agent.add_argument("--data-dir", required=True, type=Path, help="where the agent keeps its chunks")
    agent.add_argument("--listen", default="127.0.0.1:7000", help="HOST:PORT (default 127.0.0.1:7000)")
    agent.add_argument("--unix", help="also listen on this Unix socket path")
    agent.add_argument("--capacity", type=_size, help="refuse PUTs beyond this many stored bytes")
    agent.add_argument("--max-chunk", type=_size, help="largest chunk accepted (default 64M)")
    agent.add_argument("--no-direct", action="store_true",
                       help="write chunks through the page cache (default: O_DIRECT for chunks of a MiB and more)")
    agent.add_argument("--no-direct-reads", action="store_true",
                       help="read chunks through the page cache (default: O_DIRECT for blocks mostly not cached)")
    agent.add_argument("--health-interval", type=float, default=1.0, help="seconds between health checks")
    agent.add_argument("--zk", help="ZooKeeper HOSTS (host:port,...): register the agent there while it is healthy")
    agent.add_argument("--cluster", default="default", help="cluster name: its ZooKeeper path (default: default)")
    agent.add_argument("--zone", default="", help="failure zone (rack, room, machine): replicas spread over zones")
    agent.add_argument("--advertise", help="HOST:PORT nodes reach the agent at (default: --listen)")
    agent.add_argument("--zk-session-timeout", type=float, default=10.0,
                       help="seconds after which ZooKeeper drops the registration of a supervisor it lost")

    cluster = sub.add_parser("cluster", help="look at and steer a cluster's agents through ZooKeeper")
    cluster.add_argument("--zk", required=True, help="ZooKeeper HOSTS (host:port,...)")
    cluster.add_argument("--cluster", default="default", help="cluster name (default: default)")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    cluster_sub.add_parser("agents", help="the registered agents: id, address, zone, capacity, used, state")
    cluster_sub.add_parser("nodes", help="the registered S3 nodes")
    cluster_sub.add_parser("leaders", help="which node runs each background worker (gc, repair, scrub, lifecycle)")
    for verb, text in (("drain", "stop placing new chunks on an agent; repair moves its chunks elsewhere"),
                       ("undrain", "take an agent back into placement")):
        p = cluster_sub.add_parser(verb, help=text)
        p.add_argument("agent_id", help="the agent's id (hex), as `cluster agents` shows it")
    from .admin.client import add_parser

    add_parser(sub)
    return parser


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="where data and metadata live (default ./trio_sos-data)")
    parser.add_argument("--cassandra", help="Cassandra HOSTS (host[:port],...): the metadata lives there, shared by "
                                            "every node of a cluster (default: SQLite in the data dir)")
    parser.add_argument("--keyspace", dest="cassandra_keyspace", help="Cassandra keyspace (default: trio_sos)")


async def _serve(config, args: argparse.Namespace, argv: list[str]) -> None:
    from .node import Node

    if args.worker_fds:
        node = Node(config, role="worker", worker_fds=args.worker_fds, worker_agent=args.worker_agent,
                    worker_index=int(args.worker_index or 0), freeze_gc=True)
    elif config.effective_workers > 1:
        node = Node(config, role="supervisor", argv=tuple(argv), freeze_gc=True)
    else:
        node = Node(config, freeze_gc=True)
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
    from .meta.store import ACTIVE, AccessKey, User, UserExists
    from .node import new_access_key, new_secret_key, open_meta

    meta = await open_meta(config)
    try:
        if args.user_command == "create":
            key = AccessKey(args.access_key or new_access_key(), args.secret_key or new_secret_key(), ACTIVE,
                            time.time())
            user = User(args.name, args.display_name or args.name, args.email, (key,), created=time.time())
            try:
                await meta.create_user(user)
            except UserExists:
                print(f"trio_sos: a user with id {user.id!r} or that access key exists already", file=sys.stderr)
                return 1
            print(f"user {user.id}\n  access key: {key.access_key}\n  secret key: {key.secret_key}")
        elif args.user_command == "list":
            for user in await meta.list_users():
                keys = "".join(f"  access key: {k.access_key}" + (f"  secret key: {k.secret_key}" if args.secrets
                                                                    else "") + ("" if k.status == ACTIVE else
                                                                                f" ({k.status})")
                               for k in user.keys) or "  no access key"
                policies = f"  policies: {', '.join(n for n, _ in user.policies)}" if user.policies else ""
                print(f"{user.id}  display name: {user.display_name}{keys}{policies}")
            for u in config.users:
                print(f"{u.id}  display name: {u.display_name}  access key: {u.access_key}  (from the config file)")
        elif args.user_command == "rotate":
            access, secret = args.access_key or new_access_key(), args.secret_key or new_secret_key()
            try:
                found = await meta.set_user_keys(args.name, access, secret)
            except UserExists:
                print("trio_sos: another user holds that access key", file=sys.stderr)
                return 1
            if not found:
                print(f"trio_sos: no user {args.name!r}", file=sys.stderr)
                return 1
            print(f"user {args.name}\n  access key: {access}\n  secret key: {secret}")
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
                     max_chunk=args.max_chunk, direct_writes=not args.no_direct,
                     direct_reads=not args.no_direct_reads),
        health_interval=args.health_interval,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_signal, nursery.cancel_scope)
        zk = None
        if args.zk:
            from .cluster.zk import ZkSession

            zk = await nursery.start(ZkSession(args.zk, args.cluster, session_timeout=args.zk_session_timeout).run)
        address = await nursery.start(supervisor.run)
        log.info("storage agent serving at %s (data dir %s)", address, args.data_dir)
        if zk is not None:
            from .cluster.registration import keep_registered

            advertise = args.advertise or address
            if advertise.rpartition(":")[0] in ("0.0.0.0", "[::]", "::"):
                raise ConfigError("--advertise HOST:PORT is needed when --listen binds every address")
            nursery.start_soon(partial(keep_registered, zk, supervisor, advertise=advertise, zone=args.zone))


async def _cluster(args: argparse.Namespace) -> int:
    import json

    from .cluster.membership import parse_record
    from .cluster.zk import ZkSession

    async with trio.open_nursery() as nursery:
        zk = await nursery.start(ZkSession(args.zk, args.cluster, start_timeout=10).run)
        try:
            if args.cluster_command == "agents":
                records = await zk.children_with_data(zk.path("agents"))
                marks = await zk.children_with_data(zk.path("draining"))
                print(f"{'agent':32}  {'address':21} {'zone':8} {'capacity':>14} {'used':>14}  state")
                for name in sorted(records):
                    info = parse_record(name, records[name], name in marks)
                    if info is None:
                        continue
                    extra = ""
                    if name in marks and marks[name]:
                        extra = "  " + marks[name].decode(errors="replace")
                    print(f"{info.agent_id:32}  {info.address:21} {info.zone or '-':8} {info.capacity:>14} "
                          f"{info.used:>14}  {info.state}{extra}")
                for name in sorted(set(marks) - set(records)):
                    print(f"{name:32}  (not registered)  draining mark: {marks[name].decode(errors='replace')}")
            elif args.cluster_command == "nodes":
                for name, data in sorted((await zk.children_with_data(zk.path("nodes"))).items()):
                    print(f"{name}  {data.decode(errors='replace')}")
            elif args.cluster_command == "leaders":
                for worker in sorted(await zk.call(zk.client.get_children, zk.path("leaders"))):
                    contenders = await zk.call(lambda w=worker: zk.client.Lock(zk.path("leaders", w)).contenders())
                    print(f"{worker:8} {contenders[0] if contenders else '(none)'}"
                          f"{'  (standing by: ' + ', '.join(contenders[1:]) + ')' if len(contenders) > 1 else ''}")
            elif args.cluster_command in ("drain", "undrain"):
                agent_id = args.agent_id.lower()
                if len(agent_id) != 32 or any(c not in "0123456789abcdef" for c in agent_id):
                    print(f"trio_sos: {args.agent_id!r} is not an agent id (32 hex digits)", file=sys.stderr)
                    return 2
                path = zk.path("draining", agent_id)
                if args.cluster_command == "drain":
                    from kazoo.exceptions import NodeExistsError

                    try:
                        await zk.call(zk.client.create, path, json.dumps({"requested": True}).encode())
                    except NodeExistsError:
                        pass
                    print(f"agent {agent_id} draining: it gets no new chunks; repair moves its chunks elsewhere")
                else:
                    await zk.unregister(path)
                    print(f"agent {agent_id} back in placement")
        finally:
            nursery.cancel_scope.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "admin":
            from .admin.client import main as admin_main

            return admin_main(args)
        if args.command == "agent":
            trio.run(_run_agent, args)
        elif args.command == "cluster":
            return trio.run(_cluster, args)
        elif args.command in ("serve", "user"):
            overrides = {name: getattr(args, name, None)
                         for name in ("data_dir", "listen", "tls_cert", "tls_key", "tls_listen", "zk", "cluster",
                                      "zone", "cassandra", "cassandra_keyspace", "admin_listen", "workers")}
            config = load_config(args.config, overrides=overrides)
            if args.command == "serve":
                trio.run(_serve, config, args, list(sys.argv[1:] if argv is None else argv))
            else:
                return trio.run(_user, args, config)
    except BaseException as exc:
        inner = _unwrap(exc)
        if isinstance(inner, ConfigError):
            print(f"trio_sos: {inner}", file=sys.stderr)
            return 2
        if isinstance(inner, (AgentStartError, WorkerStartError, FileNotFoundError, ConnectionError)):
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
